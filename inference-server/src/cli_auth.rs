//! `nlu-server keygen` and `nlu-server token`: run multi-tenant auth locally, without the
//! operator, using the same key and token code the operator uses.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use nlu_crds::access::jwks::jwk_set;
use nlu_crds::access::tokens::DEFAULT_ISSUER;
use nlu_crds::access::{QualifiedName, Scope, SigningKey, TokenRequest};

pub const SIGNING_KEY_FILE: &str = "signing-key.pem";
pub const JWKS_FILE: &str = "jwks.json";

#[derive(Debug, Clone, Args)]
pub struct KeygenArgs {
    /// Folder to write signing-key.pem (PKCS#8 Ed25519, keep private) and jwks.json (public,
    /// for --jwks) into; created if missing. Existing files are not overwritten.
    #[arg(long)]
    pub out_dir: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// PKCS#8 PEM Ed25519 private key (from `nlu-server keygen`).
    #[arg(long)]
    pub signing_key: PathBuf,

    /// The tenant, `namespace/name` (the `sub` claim; its Redis record must exist).
    #[arg(long)]
    pub tenant: QualifiedName,

    /// Service the token is for, `namespace/name` (the server's --service-id); repeatable.
    #[arg(long = "audience", required = true)]
    pub audience: Vec<QualifiedName>,

    /// Operations granted, comma-separated: predict, embed, rerank; or UniNLU narrowed to
    /// tasks: predict:ner, predict:relation, predict:event, predict:sentiment,
    /// predict:classification, predict:match, predict:nli, predict:mrc.
    #[arg(long, default_value = "predict,embed,rerank", value_parser = parse_scopes)]
    pub scope: Scopes,

    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl: u64,

    /// Credential generation; tokens below the tenant record's `gen` are revoked.
    #[arg(long, default_value_t = 1)]
    pub gen: u64,

    /// The tenant record's `uid` (the `tid` claim): tokens of another uid are revoked. The
    /// operator uses the Tenant's `metadata.uid`; locally, any text you also write to the record.
    #[arg(long, value_parser = clap::builder::NonEmptyStringValueParser::new())]
    pub tenant_uid: String,

    /// The `iss` claim (the server's --jwt-issuer).
    #[arg(long, default_value = DEFAULT_ISSUER)]
    pub issuer: String,
}

/// A parsed `--scope` list.
#[derive(Debug, Clone)]
pub struct Scopes(pub Vec<Scope>);

fn parse_scopes(s: &str) -> Result<Scopes, String> {
    let scopes = Scope::parse_list(s).map_err(|e| e.to_string())?;
    if scopes.is_empty() {
        return Err("at least one scope is needed: predict, predict:<task>, embed, rerank".into());
    }
    Ok(Scopes(scopes))
}

/// Writes a new key pair; returns the two paths.
pub fn keygen(args: &KeygenArgs) -> anyhow::Result<(PathBuf, PathBuf)> {
    std::fs::create_dir_all(&args.out_dir)?;
    let key_path = args.out_dir.join(SIGNING_KEY_FILE);
    let jwks_path = args.out_dir.join(JWKS_FILE);
    for p in [&key_path, &jwks_path] {
        anyhow::ensure!(
            !p.exists(),
            "{} already exists; not overwriting a key",
            p.display()
        );
    }
    let key = SigningKey::generate();
    write_private(&key_path, key.to_pkcs8_pem().as_bytes())?;
    std::fs::write(
        &jwks_path,
        serde_json::to_string_pretty(&jwk_set([&key.verifying_key()]))? + "\n",
    )?;
    Ok((key_path, jwks_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(bytes)?;
    Ok(())
}

/// Mints a token as `nlu-server token` prints it.
pub fn token(args: &TokenArgs) -> anyhow::Result<String> {
    let pem = std::fs::read_to_string(&args.signing_key)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.signing_key.display()))?;
    let key = SigningKey::from_pkcs8_pem(&pem)?;
    let request = TokenRequest {
        issuer: args.issuer.clone(),
        tenant: args.tenant.clone(),
        audience: args.audience.clone(),
        scopes: args.scope.0.clone(),
        ttl: Duration::from_secs(args.ttl),
        gen: args.gen,
        tenant_uid: args.tenant_uid.clone(),
    };
    Ok(request.mint(&key)?.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use nlu_crds::access::jwks::ed25519_keys;
    use nlu_crds::access::{UninluTask, Verifier};

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        cmd: Cmd,
    }
    #[derive(clap::Subcommand)]
    enum Cmd {
        Keygen(KeygenArgs),
        Token(TokenArgs),
    }

    #[test]
    fn keygen_then_token_verifies_against_the_written_jwks() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("keys");
        let Cmd::Keygen(k) =
            Cli::parse_from(["x", "keygen", "--out-dir", out.to_str().unwrap()]).cmd
        else {
            panic!()
        };
        let (key_path, jwks_path) = keygen(&k).unwrap();
        assert!(keygen(&k).is_err(), "never overwrites a key");
        #[cfg(unix)]
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(
                &std::fs::metadata(&key_path).unwrap().permissions()
            ) & 0o777,
            0o600
        );

        let Cmd::Token(t) = Cli::parse_from([
            "x",
            "token",
            "--signing-key",
            key_path.to_str().unwrap(),
            "--tenant",
            "ns/alice",
            "--audience",
            "ns/gte",
            "--audience",
            "ns/uninlu",
            "--scope",
            "embed,predict:ner",
            "--ttl",
            "60",
            "--gen",
            "4",
            "--tenant-uid",
            "local-alice-1",
        ])
        .cmd
        else {
            panic!()
        };
        let token = token(&t).unwrap();
        let keys = ed25519_keys(&std::fs::read(&jwks_path).unwrap()).unwrap();
        let claims = Verifier::new(keys, DEFAULT_ISSUER, &"ns/uninlu".parse().unwrap(), 0)
            .verify(&token)
            .unwrap();
        assert_eq!(
            (claims.sub.as_str(), claims.gen, claims.scope.clone()),
            (
                "ns/alice",
                4,
                vec![Scope::PredictTask(UninluTask::Ner), Scope::Embed]
            )
        );
        assert_eq!(claims.tid, "local-alice-1");
        assert_eq!(claims.exp - claims.iat, 60);
    }

    #[test]
    fn bad_token_arguments_are_refused() {
        // A valid command line with `flag` set to `value` (`None`: left out).
        let with = |flag: &str, value: Option<&str>| -> Vec<String> {
            let mut args: Vec<String> = ["x", "token", "--signing-key", "k"]
                .map(String::from)
                .into();
            for (f, v) in [
                ("--tenant", "ns/a"),
                ("--audience", "ns/s"),
                ("--tenant-uid", "u"),
                ("--scope", "embed"),
            ] {
                let v = if f == flag { value } else { Some(v) };
                if let Some(v) = v {
                    args.extend([f.to_owned(), v.to_owned()]);
                }
            }
            args
        };
        assert!(Cli::try_parse_from(with("", None)).is_ok());
        for args in [
            with("--tenant", Some("alice")),
            with("--scope", Some("admin")),
            with("--scope", Some("predict:summary")),
            with("--scope", Some("")),
            with("--audience", None),
            with("--tenant-uid", Some("")),
            with("--tenant-uid", None),
        ] {
            assert!(Cli::try_parse_from(&args).is_err(), "{args:?}");
        }
    }
}
