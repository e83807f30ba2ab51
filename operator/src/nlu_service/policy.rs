//! What an NluService may ask for, as the operator's flags allow ([`Policy`]): the image, the
//! IngressClass, the cert-manager issuer, the host, and scheduling overrides. A namespace editor
//! writes NluServices; the cluster admin who installs the operator sets these flags. A refusal is
//! a [`Problem`] whose message names the flag, so the service is `Degraded` and nothing is
//! applied (running children stay as they are).

use nlu_crds::nlu_service::NluServiceSpec;

use super::validate::Problem;
use crate::config::{OperatorConfig, Policy};

/// The first thing `spec` asks for that the policy does not allow, if any.
pub fn check(spec: &NluServiceSpec, cfg: &OperatorConfig) -> Result<(), Problem> {
    let policy = &cfg.policy;
    if let Some(image) = &spec.image {
        check_image(image, policy, &cfg.image)?;
    }
    if !policy.allow_scheduling_overrides {
        let set = |present: bool, field: &str| present.then(|| field.to_owned());
        let asked: Vec<String> = [
            set(
                spec.node_selector.as_ref().is_some_and(|m| !m.is_empty()),
                "nodeSelector",
            ),
            set(
                spec.tolerations.as_ref().is_some_and(|t| !t.is_empty()),
                "tolerations",
            ),
        ]
        .into_iter()
        .flatten()
        .collect();
        if !asked.is_empty() {
            return Err(Problem::new(
                "SchedulingNotAllowed",
                format!(
                    "{} may not be set: --allow-scheduling-overrides is false",
                    asked.join(" and ")
                ),
            ));
        }
    }
    let Some(ingress) = &spec.ingress else {
        return Ok(());
    };
    if let Some(class) = &ingress.class_name {
        if !listed(&policy.allowed_ingress_classes, |c| c == class) {
            return Err(refused(
                "IngressClassNotAllowed",
                format!("ingress.className {class:?}"),
                "--allowed-ingress-classes",
                &policy.allowed_ingress_classes,
            ));
        }
    }
    if !policy.allowed_host_suffixes.is_empty() {
        let host = ingress.host.as_deref().unwrap_or("");
        if !listed(&policy.allowed_host_suffixes, |s| host_under(host, s)) {
            let what = if host.is_empty() {
                "an Ingress without ingress.host (every host name)".to_owned()
            } else {
                format!("ingress.host {host:?}")
            };
            return Err(refused(
                "HostNotAllowed",
                what,
                "--allowed-host-suffixes",
                &policy.allowed_host_suffixes,
            ));
        }
    }
    if let Some(tls) = &ingress.tls {
        let issuers = [
            ("ClusterIssuer", tls.cluster_issuer.as_deref()),
            ("Issuer", tls.issuer.as_deref()),
        ];
        for (kind, name) in issuers {
            let Some(name) = name else { continue };
            if !listed(&policy.allowed_issuers, |entry| {
                issuer_matches(entry, kind, name)
            }) {
                return Err(refused(
                    "IssuerNotAllowed",
                    format!("{kind} {name:?} (ingress.tls)"),
                    "--allowed-issuers",
                    &policy.allowed_issuers,
                ));
            }
        }
    }
    Ok(())
}

/// `spec.image` must be a well-formed reference whose repository the policy lists; with no list,
/// only the repository of the operator's own `--image`.
fn check_image(image: &str, policy: &Policy, default_image: &str) -> Result<(), Problem> {
    let allowed = &policy.allowed_image_repositories;
    if allowed.iter().any(|a| a == "*") {
        return Ok(());
    }
    let Some(repository) = image_repository(image) else {
        return Err(Problem::new(
            "ImageNotAllowed",
            format!("image {image:?} is not an image reference (<repository>[:<tag>][@sha256:<digest>])"),
        ));
    };
    if allowed.is_empty() {
        let own = image_repository(default_image).unwrap_or(default_image);
        if repository == own {
            return Ok(());
        }
        return Err(Problem::new(
            "ImageNotAllowed",
            format!("image {image:?} is not in --allowed-image-repositories (unset: the repository of --image, {own})"),
        ));
    }
    if allowed
        .iter()
        .any(|entry| repository_matches(entry, repository))
    {
        return Ok(());
    }
    Err(refused(
        "ImageNotAllowed",
        format!("image {image:?}"),
        "--allowed-image-repositories",
        allowed,
    ))
}

/// `"<what> is not in <flag> (<list>)"` as the problem `reason`.
fn refused(reason: &'static str, what: String, flag: &str, list: &[String]) -> Problem {
    Problem::new(
        reason,
        format!("{what} is not in {flag} ({})", list.join(", ")),
    )
}

/// An empty list or `*` allows anything; otherwise an entry must match.
fn listed(list: &[String], matches: impl Fn(&str) -> bool) -> bool {
    list.is_empty() || list.iter().any(|entry| entry == "*" || matches(entry))
}

/// An entry names one repository exactly, or ends in `/` and allows every repository under it:
/// `ghcr.io/x/nlu-server` allows neither `ghcr.io/x/nlu-server-evil` nor `ghcr.io/x/nlu-server/evil`.
pub fn repository_matches(entry: &str, repository: &str) -> bool {
    if entry.ends_with('/') {
        repository.starts_with(entry)
    } else {
        repository == entry
    }
}

/// `host` is `suffix` or a name under it (`a.example.com` under `example.com`, `badexample.com`
/// not), compared without case.
pub fn host_under(host: &str, suffix: &str) -> bool {
    let host = host.to_ascii_lowercase();
    let suffix = suffix.trim_start_matches('.').to_ascii_lowercase();
    !host.is_empty()
        && (host == suffix
            || host
                .strip_suffix(&suffix)
                .is_some_and(|rest| rest.ends_with('.')))
}

/// An entry `<name>` or `ClusterIssuer/<name>` names a ClusterIssuer, `Issuer/<name>` an Issuer.
fn issuer_matches(entry: &str, kind: &str, name: &str) -> bool {
    match entry.split_once('/') {
        Some((entry_kind, entry_name)) => entry_kind == kind && entry_name == name,
        None => kind == "ClusterIssuer" && entry == name,
    }
}

/// The repository of an image reference, `<repository>[:<tag>][@sha256:<hex>]`, or `None` when
/// `image` is not one. The repository is `[host[:port]/]path/components`, each component
/// starting and ending with a letter or digit.
pub fn image_repository(image: &str) -> Option<&str> {
    let (name, digest) = match image.split_once('@') {
        Some((name, digest)) => (name, Some(digest)),
        None => (image, None),
    };
    if let Some(digest) = digest {
        let hex = digest.strip_prefix("sha256:")?;
        if hex.len() != 64
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return None;
        }
    }
    let last = name.rfind('/').map_or(0, |i| i + 1);
    let repository = match name[last..].find(':') {
        Some(colon) => {
            let tag = &name[last + colon + 1..];
            let tag_ok = (1..=128).contains(&tag.len())
                && tag.bytes().enumerate().all(|(i, b)| {
                    b.is_ascii_alphanumeric() || b == b'_' || (i > 0 && (b == b'.' || b == b'-'))
                });
            if !tag_ok {
                return None;
            }
            &name[..last + colon]
        }
        None => name,
    };
    let component_ok = |(i, c): (usize, &str)| {
        let edges_ok = c.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
            && c.bytes().last().is_some_and(|b| b.is_ascii_alphanumeric());
        // A port only in the first component (the registry host).
        let chars_ok = c.bytes().all(|b| {
            b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') || (i == 0 && b == b':')
        });
        edges_ok && chars_ok
    };
    repository
        .split('/')
        .enumerate()
        .all(component_ok)
        .then_some(repository)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    fn spec(yaml: &str) -> NluServiceSpec {
        let model = "model: {task: embedding, source: {url: 'https://a'}}\n";
        serde_yaml::from_str(&format!("{model}{yaml}")).unwrap()
    }

    fn cfg(policy: Policy) -> OperatorConfig {
        OperatorConfig {
            policy,
            ..OperatorConfig::default()
        }
    }

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn image_repositories_of_references() {
        let digest = format!("ghcr.io/x/nlu-server@{DIGEST}");
        let both = format!("ghcr.io/x/nlu-server:1.2@{DIGEST}");
        let cases: &[(&str, Option<&str>)] = &[
            ("ghcr.io/x/nlu-server:0.1.0", Some("ghcr.io/x/nlu-server")),
            ("ghcr.io/x/nlu-server", Some("ghcr.io/x/nlu-server")),
            (&digest, Some("ghcr.io/x/nlu-server")),
            (&both, Some("ghcr.io/x/nlu-server")),
            (
                "localhost:5000/nlu-server:dev",
                Some("localhost:5000/nlu-server"),
            ),
            ("nlu-server", Some("nlu-server")),
            ("ghcr.io/x/nlu-server:", None),
            ("ghcr.io/x/nlu-server:-x", None),
            ("ghcr.io/x/nlu-server@sha256:abc", None),
            (
                "ghcr.io/x/nlu-server@md5:0123456789abcdef0123456789abcdef",
                None,
            ),
            ("ghcr.io/x/nlu-server:1/../evil", None),
            ("ghcr.io//nlu-server:1", None),
            ("ghcr.io/x/../nlu-server:1", None),
            ("/nlu-server:1", None),
            ("ghcr.io/x/nlu server:1", None),
            ("", None),
        ];
        for (image, repository) in cases {
            assert_eq!(image_repository(image), *repository, "{image:?}");
        }
    }

    #[test]
    fn images_default_to_the_operators_own_repository() {
        let defaults = cfg(Policy::default());
        assert_eq!(defaults.image, "ghcr.io/nlu-dev/nlu-server:0.1.0");
        let digest = format!("image: ghcr.io/nlu-dev/nlu-server@{DIGEST}");
        for fine in ["", "image: ghcr.io/nlu-dev/nlu-server:0.2.0", &digest] {
            assert_eq!(check(&spec(fine), &defaults), Ok(()), "{fine}");
        }
        for bad in [
            "image: evil.io/x:1",
            "image: ghcr.io/nlu-dev/nlu-server-evil:0.1.0",
            "image: ghcr.io/nlu-dev/nlu-server/evil:0.1.0",
            "image: ghcr.io/nlu-dev:0.1.0",
            "image: 'ghcr.io/nlu-dev/nlu-server:0.1.0 '",
        ] {
            let problem = check(&spec(bad), &defaults).unwrap_err();
            assert_eq!(problem.reason, "ImageNotAllowed", "{bad}");
            assert!(
                problem.message.contains("--allowed-image-repositories")
                    || problem.message.contains("not an image reference"),
                "{problem:?}"
            );
        }
        let message = check(&spec("image: evil.io/x:1"), &defaults)
            .unwrap_err()
            .message;
        assert_eq!(message, "image \"evil.io/x:1\" is not in --allowed-image-repositories (unset: the repository of --image, ghcr.io/nlu-dev/nlu-server)");
    }

    #[test]
    fn listed_image_repositories_and_prefixes() {
        let policy = cfg(Policy {
            allowed_image_repositories: list(&["registry.internal/nlu/", "ghcr.io/x/nlu-server"]),
            ..Policy::default()
        });
        for fine in [
            "registry.internal/nlu/server:1",
            "registry.internal/nlu/a/b:2",
            "ghcr.io/x/nlu-server:3",
        ] {
            assert_eq!(
                check(&spec(&format!("image: {fine}")), &policy),
                Ok(()),
                "{fine}"
            );
        }
        for bad in [
            "registry.internal/nlu-evil/server:1",
            "ghcr.io/x/nlu-server-evil:1",
            "ghcr.io/nlu-dev/nlu-server:0.1.0",
        ] {
            let problem = check(&spec(&format!("image: {bad}")), &policy).unwrap_err();
            assert_eq!(
                problem.message,
                format!("image {bad:?} is not in --allowed-image-repositories (registry.internal/nlu/, ghcr.io/x/nlu-server)")
            );
        }
        let any = cfg(Policy {
            allowed_image_repositories: list(&["*"]),
            ..Policy::default()
        });
        assert_eq!(check(&spec("image: anything.io/at:all"), &any), Ok(()));
    }

    #[test]
    fn ingress_classes_issuers_and_hosts() {
        let policy = cfg(Policy {
            allowed_ingress_classes: list(&["nginx"]),
            allowed_issuers: list(&["letsencrypt", "Issuer/team-ca"]),
            allowed_host_suffixes: list(&["nlu.example.com"]),
            ..Policy::default()
        });
        let fine = [
            "ingress: {host: a.nlu.example.com, className: nginx, tls: {clusterIssuer: letsencrypt}}",
            "ingress: {host: NLU.example.com, tls: {issuer: team-ca}}",
            "ingress: {host: a.nlu.example.com, tls: {secretName: own-cert}}",
        ];
        for yaml in fine {
            assert_eq!(check(&spec(yaml), &policy), Ok(()), "{yaml}");
        }
        let refused = [
            ("ingress: {host: a.nlu.example.com, className: public}", "IngressClassNotAllowed",
             "ingress.className \"public\" is not in --allowed-ingress-classes (nginx)"),
            ("ingress: {host: evil.com}", "HostNotAllowed",
             "ingress.host \"evil.com\" is not in --allowed-host-suffixes (nlu.example.com)"),
            ("ingress: {host: evilnlu.example.com}", "HostNotAllowed",
             "ingress.host \"evilnlu.example.com\" is not in --allowed-host-suffixes (nlu.example.com)"),
            ("ingress: {path: /x}", "HostNotAllowed",
             "an Ingress without ingress.host (every host name) is not in --allowed-host-suffixes (nlu.example.com)"),
            ("ingress: {host: a.nlu.example.com, tls: {clusterIssuer: selfsigned}}", "IssuerNotAllowed",
             "ClusterIssuer \"selfsigned\" (ingress.tls) is not in --allowed-issuers (letsencrypt, Issuer/team-ca)"),
            ("ingress: {host: a.nlu.example.com, tls: {issuer: letsencrypt}}", "IssuerNotAllowed",
             "Issuer \"letsencrypt\" (ingress.tls) is not in --allowed-issuers (letsencrypt, Issuer/team-ca)"),
            ("ingress: {host: a.nlu.example.com, tls: {clusterIssuer: team-ca}}", "IssuerNotAllowed",
             "ClusterIssuer \"team-ca\" (ingress.tls) is not in --allowed-issuers (letsencrypt, Issuer/team-ca)"),
        ];
        for (yaml, reason, message) in refused {
            assert_eq!(
                check(&spec(yaml), &policy),
                Err(Problem::new(reason, message)),
                "{yaml}"
            );
        }
        // Unset lists allow any class, issuer and host.
        let open = cfg(Policy::default());
        assert_eq!(
            check(&spec("ingress: {className: x, tls: {issuer: y}}"), &open),
            Ok(())
        );
    }

    #[test]
    fn hosts_under_suffixes() {
        assert!(host_under("example.com", "example.com"));
        assert!(host_under("a.b.example.com", ".example.com"));
        assert!(host_under("*.example.com", "example.com"));
        assert!(!host_under("badexample.com", "example.com"));
        assert!(!host_under("example.com.evil.io", "example.com"));
        assert!(!host_under("", "example.com"));
    }

    #[test]
    fn scheduling_overrides_when_allowed() {
        let off = cfg(Policy {
            allow_scheduling_overrides: false,
            ..Policy::default()
        });
        let both = "nodeSelector: {pool: gpu}\ntolerations: [{key: dedicated, operator: Exists}]";
        assert_eq!(
            check(&spec(both), &off),
            Err(Problem::new("SchedulingNotAllowed", "nodeSelector and tolerations may not be set: --allow-scheduling-overrides is false"))
        );
        assert_eq!(
            check(&spec("nodeSelector: {}\ntolerations: []"), &off),
            Ok(())
        );
        assert_eq!(check(&spec(both), &cfg(Policy::default())), Ok(()));
    }
}
