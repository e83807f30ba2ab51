//! Credential generation (`gen`): `spec.token.generation` plus the number of revocations asked
//! for with the `nlu.dev/revoke` annotation. Each new annotation value is counted once: the
//! operator records it in `nlu.dev/revoke-handled` together with the new count in
//! `nlu.dev/revocations`, in one patch. The generation is thus derived from the Tenant object
//! alone (Redis can be rebuilt from it) and never goes down.

use kube::ResourceExt;
use nlu_crds::Tenant;

/// Set to a new value (any text, e.g. a timestamp) to revoke every token issued so far.
pub const REVOKE_ANNOTATION: &str = "nlu.dev/revoke";
/// The last `nlu.dev/revoke` value acted on.
pub const REVOKE_HANDLED_ANNOTATION: &str = "nlu.dev/revoke-handled";
/// How many revocations were acted on.
pub const REVOCATIONS_ANNOTATION: &str = "nlu.dev/revocations";

/// Revocations already counted.
pub fn revocations(tenant: &Tenant) -> u64 {
    tenant
        .annotations()
        .get(REVOCATIONS_ANNOTATION)
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `nlu.dev/revoke` value not acted on yet, if any.
pub fn pending_revoke(tenant: &Tenant) -> Option<String> {
    let a = tenant.annotations();
    let asked = a.get(REVOKE_ANNOTATION)?;
    (a.get(REVOKE_HANDLED_ANNOTATION) != Some(asked)).then(|| asked.clone())
}

/// The generation tokens must carry: `spec.token.generation` (at least 1) plus revocations.
pub fn generation(tenant: &Tenant, revocations: u64) -> u64 {
    u64::try_from(tenant.spec.token_generation())
        .unwrap_or(1)
        .max(1)
        + revocations
}

/// Merge patch recording a handled revocation.
pub fn handled_patch(value: &str, revocations: u64) -> serde_json::Value {
    serde_json::json!({"metadata": {"annotations": {
        REVOKE_HANDLED_ANNOTATION: value,
        REVOCATIONS_ANNOTATION: revocations.to_string(),
    }}})
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tenant(generation: Option<i64>, annotations: &[(&str, &str)]) -> Tenant {
        let mut spec = serde_json::json!({"services": ["gte"]});
        if let Some(g) = generation {
            spec["token"] = serde_json::json!({"generation": g});
        }
        let mut t = Tenant::new("acme", serde_json::from_value(spec).unwrap());
        t.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        t
    }

    #[test]
    fn generation_adds_counted_revocations_to_the_spec() {
        assert_eq!(generation(&tenant(None, &[]), 0), 1);
        let t = tenant(Some(4), &[(REVOCATIONS_ANNOTATION, "2")]);
        assert_eq!(generation(&t, revocations(&t)), 6);
    }

    #[test]
    fn a_revoke_value_is_pending_until_recorded_as_handled() {
        assert_eq!(pending_revoke(&tenant(None, &[])), None);
        let asked = tenant(None, &[(REVOKE_ANNOTATION, "now")]);
        assert_eq!(pending_revoke(&asked), Some("now".into()));
        let mut handled = asked.clone();
        let patch = handled_patch("now", 1);
        let annotations = patch["metadata"]["annotations"].as_object().unwrap();
        for (k, v) in annotations {
            handled
                .annotations_mut()
                .insert(k.clone(), v.as_str().unwrap().to_owned());
        }
        assert_eq!(pending_revoke(&handled), None);
        assert_eq!(revocations(&handled), 1);
    }
}
