//! `nlu-operator rotate-key`: asks the running operator to rotate its token signing key by
//! setting the `nlu.dev/rotate` annotation on the key Secret, then waits until the operator has
//! done it. The operator is the only writer of key material (see [`super::signing_key`]).

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, ResourceExt};

use super::signing_key::{KeyRing, ROTATED_ANNOTATION, ROTATE_ANNOTATION, SIGNING_KEY_SECRET};

/// Flags of `nlu-operator rotate-key`.
#[derive(clap::Args, Clone, Debug)]
pub struct RotateKeyArgs {
    /// Namespace the operator runs in (holds the signing key Secret).
    #[arg(long, env = "NLU_OPERATOR_NAMESPACE", default_value = "nlu-system")]
    pub operator_namespace: String,

    /// Seconds to wait for the operator to carry out the rotation; 0 only files the request.
    #[arg(long, default_value_t = 60)]
    pub wait_seconds: u64,
}

/// Files the rotation request and, unless told not to, waits for the new key id.
pub async fn rotate_key(client: Client, args: &RotateKeyArgs) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client, &args.operator_namespace);
    let request = chrono::Utc::now().to_rfc3339();
    let patch = serde_json::json!({"metadata": {"annotations": {ROTATE_ANNOTATION: request}}});
    match api.patch(SIGNING_KEY_SECRET, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(
            "no Secret {SIGNING_KEY_SECRET} in namespace {}: is the operator installed there (--operator-namespace)?",
            args.operator_namespace
        ),
        Err(e) => return Err(e.into()),
    }
    println!("rotation requested ({ROTATE_ANNOTATION}={request})");
    if args.wait_seconds == 0 {
        return Ok(());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(args.wait_seconds);
    while tokio::time::Instant::now() < deadline {
        let secret = api.get(SIGNING_KEY_SECRET).await?;
        if secret.annotations().get(ROTATED_ANNOTATION) == Some(&request) {
            let ring = KeyRing::from_secret(&secret)?;
            println!("tokens are now signed with key {}; earlier keys stay published until their tokens expire", ring.signing.kid());
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!(
        "the operator did not rotate the key within {} s; the request stays filed and is carried out when it runs",
        args.wait_seconds
    )
}
