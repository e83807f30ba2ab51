//! `nlu-operator rotate-key`: asks the running operator to rotate its token signing key by
//! setting the `nlu.dev/rotate` annotation on the key Secret, then waits until the operator has
//! done it. The operator is the only writer of key material (see [`super::signing_key`]).
//! With `--revoke-old` the request also drops every earlier key at once; when the key Secret is
//! gone, that request is filed as a new Secret without a key, which the operator fills.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};

use super::signing_key::{
    KeyRing, REVOKE_OLD_ANNOTATION, ROTATED_ANNOTATION, ROTATE_ANNOTATION, SIGNING_KEY_SECRET,
};

/// Flags of `nlu-operator rotate-key`.
#[derive(clap::Args, Clone, Debug)]
pub struct RotateKeyArgs {
    /// Namespace the operator runs in (holds the signing key Secret).
    #[arg(long, env = "NLU_OPERATOR_NAMESPACE", default_value = "nlu-system")]
    pub operator_namespace: String,

    /// Seconds to wait for the operator to carry out the rotation; 0 only files the request.
    #[arg(long, default_value_t = 60)]
    pub wait_seconds: u64,

    /// Drop every earlier key at once (a key leaked, or its Secret was lost): tokens they
    /// signed stop verifying as soon as the servers reload the key set, and the operator
    /// re-issues every Tenant's token. Without it, earlier keys stay published until their
    /// tokens expire.
    #[arg(long)]
    pub revoke_old: bool,
}

/// Files the rotation request and, unless told not to, waits for the new key id.
pub async fn rotate_key(client: Client, args: &RotateKeyArgs) -> anyhow::Result<()> {
    let api: Api<Secret> = Api::namespaced(client, &args.operator_namespace);
    let request = chrono::Utc::now().to_rfc3339();
    let mut annotations = BTreeMap::from([(ROTATE_ANNOTATION.to_owned(), request.clone())]);
    if args.revoke_old {
        annotations.insert(REVOKE_OLD_ANNOTATION.to_owned(), request.clone());
    }
    let patch = serde_json::json!({"metadata": {"annotations": annotations}});
    match api.patch(SIGNING_KEY_SECRET, &PatchParams::default(), &Patch::Merge(&patch)).await {
        Ok(_) => {}
        Err(kube::Error::Api(e)) if e.code == 404 && args.revoke_old => {
            let mut secret = Secret::default();
            secret.metadata.name = Some(SIGNING_KEY_SECRET.into());
            secret.metadata.annotations = Some(annotations);
            api.create(&PostParams::default(), &secret).await?;
        }
        Err(kube::Error::Api(e)) if e.code == 404 => anyhow::bail!(
            "no Secret {SIGNING_KEY_SECRET} in namespace {}: is the operator installed there (--operator-namespace)? If the Secret was lost, --revoke-old makes a new key",
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
            let earlier = if args.revoke_old {
                "earlier keys are dropped and every token is re-issued"
            } else {
                "earlier keys stay published until their tokens expire"
            };
            println!(
                "tokens are now signed with key {}; {earlier}",
                ring.signing.kid()
            );
            return Ok(());
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    anyhow::bail!(
        "the operator did not rotate the key within {} s; the request stays filed and is carried out when it runs",
        args.wait_seconds
    )
}
