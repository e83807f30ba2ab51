//! Reconcile: read the NluService -> check the spec -> build every child (pure) -> apply ->
//! delete the children switched off -> compute status (pure) -> write status if it changed.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::NamespaceResourceScope;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use nlu_crds::conditions::{is_true, DEGRADED, READY};
use nlu_crds::NluService;
use serde::de::DeserializeOwned;
use tokio_util::sync::CancellationToken;

use super::build::deployment::{redis_secret, stamp_redis_credential};
use super::build::{self, labels::APP_NAME};
use super::policy;
use super::status::{self, Observed};
use super::validate::{self, Problem};
use crate::apply::{apply_status, apply_unless_taken, delete_owned, holder_of, NameTaken};
use crate::context::Context;
use crate::controller_kit::{self as kit, status_change, RetryPolicy};
use crate::ownership::{Holder, Mark};
use crate::tenant::jwks_publish::{auth_on, JWKS_CONFIGMAP};
use crate::tenant::redis_acl::uses_operator_redis;

/// The `controller` label of this controller's metrics.
pub const CONTROLLER: &str = "nluservice";
/// Re-check a healthy service this often even without events (drift repair).
const RESYNC: Duration = Duration::from_secs(300);
/// Re-check an invalid spec this often: a missing Secret may appear without touching the CR.
const RECHECK_INVALID: Duration = Duration::from_secs(60);
/// API errors: retried after 5 s, then doubling.
const RETRY: RetryPolicy = RetryPolicy {
    controller: CONTROLLER,
    first_delay: Duration::from_secs(5),
};

/// Why a reconcile failed; the variant name is the metrics `reason`.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("reading {kind} {name}: {source}")]
    Read {
        kind: &'static str,
        name: String,
        source: kube::Error,
    },
    #[error("applying {kind}: {source}")]
    Apply {
        kind: &'static str,
        source: kube::Error,
    },
    #[error("deleting {kind}: {source}")]
    Delete {
        kind: &'static str,
        source: kube::Error,
    },
    #[error("writing status: {0}")]
    Status(kube::Error),
}

impl Error {
    /// Short, bounded label for the failures metric.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Read { .. } => "ReadFailed",
            Error::Apply { .. } => "ApplyFailed",
            Error::Delete { .. } => "DeleteFailed",
            Error::Status(_) => "StatusFailed",
        }
    }
}

/// One reconcile of `svc`.
pub async fn reconcile(svc: Arc<NluService>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ctx.metrics.reconcile_started(CONTROLLER);
    if svc.metadata.deletion_timestamp.is_some() {
        // Garbage collection removes the children; re-applying them would fight it.
        return Ok(Action::await_change());
    }
    let checked = validate::check(&svc.spec).and_then(|()| policy::check(&svc.spec, &ctx.config));
    let (problem, redis_url) = match checked {
        Ok(()) => check_redis_secret(&svc, &ctx).await?,
        Err(problem) => (Some(problem), None),
    };
    if !still_wanted(&svc, &current(&svc, &ctx).await?) {
        // Deleted (or deleted and re-created) since the cache saw it: children written now
        // would be orphans for the garbage collector to remove again.
        return Ok(Action::await_change());
    }
    let applied = match &problem {
        Some(_) => Applied::default(),
        None => apply_children(&svc, &ctx, redis_url.as_deref()).await?,
    };
    let seen = Observed {
        problem: problem.as_ref(),
        taken: &applied.taken,
        deployment: applied.deployment.as_ref(),
        ingress: applied.ingress.as_ref(),
    };
    let new_status = status::compute(&svc, &seen, ctx.now_time());
    let old_status = svc.status.clone().unwrap_or_default();
    if let Some(new_status) = status_change(Some(&old_status), new_status) {
        apply_status(&ctx.client, svc.as_ref(), &new_status)
            .await
            .map_err(Error::Status)?;
        publish_flips(&svc, &ctx, &old_status.conditions, &new_status.conditions).await;
    }
    RETRY.succeeded(&ctx, svc.as_ref());
    Ok(Action::requeue(
        if problem.is_some() || !applied.taken.is_empty() {
            RECHECK_INVALID
        } else {
            RESYNC
        },
    ))
}

/// Requeue with a growing delay and count the failure by reason.
pub fn error_policy(svc: Arc<NluService>, error: &Error, ctx: Arc<Context>) -> Action {
    RETRY.failed(&ctx, svc.as_ref(), error.reason(), error)
}

/// Whether the object the reconcile started from is still the live one, not being deleted.
pub fn still_wanted(seen: &NluService, live: &Option<NluService>) -> bool {
    live.as_ref()
        .is_some_and(|live| live.metadata.deletion_timestamp.is_none() && live.uid() == seen.uid())
}

/// The NluService as the API server holds it now (the reconcile's copy comes from a cache).
async fn current(svc: &NluService, ctx: &Context) -> Result<Option<NluService>, Error> {
    let api: Api<NluService> =
        Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
    api.get_opt(&svc.name_any())
        .await
        .map_err(|source| Error::Read {
            kind: "NluService",
            name: svc.name_any(),
            source,
        })
}

/// With auth on, the Secret holding the Redis URL must exist with its key: otherwise every pod
/// would fail to start, so the service is Degraded instead; the namespace's credential Secret,
/// which the operator writes itself (`tenant::redis_acl`), may be missing for a moment (the pods
/// start once it exists). Also returns the URL the pods will read, when there is one.
async fn check_redis_secret(
    svc: &NluService,
    ctx: &Context,
) -> Result<(Option<Problem>, Option<Vec<u8>>), Error> {
    let Some((name, key)) = redis_secret(&svc.spec, &ctx.config) else {
        return Ok((None, None));
    };
    let api: Api<Secret> =
        Api::namespaced(ctx.client.clone(), &svc.namespace().unwrap_or_default());
    let secret = api.get_opt(&name).await.map_err(|source| Error::Read {
        kind: "Secret",
        name: name.clone(),
        source,
    })?;
    let url = secret.as_ref().and_then(|s| {
        let data = s
            .data
            .as_ref()
            .and_then(|d| d.get(&key))
            .map(|v| v.0.clone());
        data.or_else(|| {
            let text = s.string_data.as_ref()?.get(&key)?;
            Some(text.clone().into_bytes())
        })
    });
    let written_by_operator = ctx.config.redis_url.is_some() && uses_operator_redis(svc);
    let problem = match secret {
        _ if url.is_some() || written_by_operator => None,
        None => Some(Problem::new(
            "RedisSecretMissing",
            format!(
                "Secret {name:?} (the Redis URL for tenant auth) does not exist in this namespace"
            ),
        )),
        Some(_) => Some(Problem::new(
            "RedisSecretKeyMissing",
            format!("Secret {name:?} has no key {key:?} with the Redis URL"),
        )),
    };
    Ok((problem, url))
}

/// What applying the children gave: the Deployment and Ingress as the API server answered
/// (with their status), and the objects of a child's name that someone else holds.
#[derive(Default)]
struct Applied {
    deployment: Option<Deployment>,
    ingress: Option<Ingress>,
    taken: Vec<NameTaken>,
}

/// Applies the wanted children, deletes the unwanted ones, and checks the JWK Set ConfigMap the
/// pods mount. Objects of a child's name that this NluService does not control are left alone
/// and listed in `taken`. `redis_url`: the Redis Secret's value, whose digest the pod template
/// carries so that a new one rolls the pods.
async fn apply_children(
    svc: &NluService,
    ctx: &Context,
    redis_url: Option<&[u8]>,
) -> Result<Applied, Error> {
    let mut want = build::children(svc, &ctx.config);
    if let Some(url) = redis_url {
        stamp_redis_credential(&mut want.deployment, url);
    }
    let mut taken = Vec::new();
    let deployment = ensure(svc, ctx, Some(want.deployment), &mut taken).await?;
    ensure(svc, ctx, Some(want.service), &mut taken).await?;
    ensure(svc, ctx, Some(want.network_policy), &mut taken).await?;
    let ingress = ensure(svc, ctx, want.ingress, &mut taken).await?;
    ensure(svc, ctx, want.hpa, &mut taken).await?;
    ensure(svc, ctx, want.pdb, &mut taken).await?;
    if auth_on(svc) {
        let ns = svc.namespace().unwrap_or_default();
        let jwks = holder_of::<ConfigMap>(&ctx.client, &ns, JWKS_CONFIGMAP, Mark::Managed)
            .await
            .map_err(|source| Error::Read {
                kind: "ConfigMap",
                name: JWKS_CONFIGMAP.into(),
                source,
            })?;
        if jwks == Holder::Foreign {
            taken.push(NameTaken {
                kind: "ConfigMap".into(),
                name: JWKS_CONFIGMAP.into(),
            });
        }
    }
    Ok(Applied {
        deployment,
        ingress,
        taken,
    })
}

/// Applies a child unless someone else holds its name (then it is added to `taken`), or deletes
/// it (if this NluService controls it) when it is `None`.
async fn ensure<K>(
    svc: &NluService,
    ctx: &Context,
    want: Option<K>,
    taken: &mut Vec<NameTaken>,
) -> Result<Option<K>, Error>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + k8s_openapi::Resource
        + serde::Serialize
        + DeserializeOwned
        + Clone
        + std::fmt::Debug,
{
    let kind = <K as k8s_openapi::Resource>::KIND;
    match want {
        Some(obj) => match apply_unless_taken(&ctx.client, &obj).await {
            Ok(Ok(applied)) => Ok(Some(applied)),
            Ok(Err(name_taken)) => {
                taken.push(name_taken);
                Ok(None)
            }
            Err(source) => Err(Error::Apply { kind, source }),
        },
        None => {
            let ns = svc.namespace().unwrap_or_default();
            let uid = svc.uid().unwrap_or_default();
            let deleted = delete_owned::<K>(&ctx.client, &ns, &svc.name_any(), &uid)
                .await
                .map_err(|source| Error::Delete { kind, source })?;
            if deleted {
                publish(
                    svc,
                    ctx,
                    EventType::Normal,
                    "Deleted",
                    format!("Deleted {kind} {}: its feature is off", svc.name_any()),
                )
                .await;
            }
            Ok(None)
        }
    }
}

/// Events for the transitions people act on: Degraded on/off, Ready on/off.
async fn publish_flips(
    svc: &NluService,
    ctx: &Context,
    old: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    new: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) {
    let reason_of = |t: &str| {
        new.iter()
            .find(|c| c.type_ == t)
            .map(|c| (c.reason.clone(), c.message.clone()))
            .unwrap_or_default()
    };
    if is_true(new, DEGRADED) && !is_true(old, DEGRADED) {
        let (reason, message) = reason_of(DEGRADED);
        publish(svc, ctx, EventType::Warning, &reason, message).await;
    }
    if is_true(new, READY) != is_true(old, READY) {
        let (reason, message) = reason_of(READY);
        let kind = if is_true(new, READY) {
            EventType::Normal
        } else {
            EventType::Warning
        };
        publish(svc, ctx, kind, &reason, message).await;
    }
}

/// Publishes an Event about `svc` (never failing the reconcile).
async fn publish(svc: &NluService, ctx: &Context, type_: EventType, reason: &str, note: String) {
    kit::publish(
        &ctx.recorder,
        &svc.object_ref(&()),
        &kit::event(type_, reason, note),
    )
    .await;
}

/// Runs the controller until `stop` is cancelled, then lets running reconciles finish.
pub async fn run(ctx: Arc<Context>, stop: CancellationToken) {
    let client = ctx.client.clone();
    let ns = ctx.config.namespace.clone();
    // Only our children: the label keeps the watches (and the operator's memory) small.
    let children = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/name={APP_NAME},app.kubernetes.io/managed-by={}",
        crate::context::OPERATOR_NAME
    ));
    let controller = Controller::new(
        scoped::<NluService>(&client, &ns),
        watcher::Config::default().any_semantic(),
    );
    let services = controller.store();
    // A new namespace credential (written or renewed by `tenant::redis_acl`) rolls the pods of
    // the services that read it. Secrets of one's own Redis are noticed at the next resync.
    let credentials = watcher::Config::default().labels(&format!(
        "app.kubernetes.io/component={}",
        crate::tenant::redis_acl::COMPONENT
    ));
    controller
        .watches(scoped::<Secret>(&client, &ns), credentials, move |secret| {
            let ns = secret.namespace();
            services
                .state()
                .into_iter()
                .filter(|svc| svc.namespace() == ns && uses_operator_redis(svc))
                .map(|svc| ObjectRef::from_obj(svc.as_ref()))
                .collect::<Vec<_>>()
        })
        .owns(scoped::<Deployment>(&client, &ns), children.clone())
        .owns(scoped::<Service>(&client, &ns), children.clone())
        .owns(scoped::<NetworkPolicy>(&client, &ns), children.clone())
        .owns(scoped::<Ingress>(&client, &ns), children.clone())
        .owns(
            scoped::<HorizontalPodAutoscaler>(&client, &ns),
            children.clone(),
        )
        .owns(scoped::<PodDisruptionBudget>(&client, &ns), children)
        .graceful_shutdown_on(stop.cancelled_owned())
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile error"),
            }
        })
        .await;
}

/// An Api over one namespace, or all namespaces when the operator watches everything.
fn scoped<K>(client: &Client, ns: &Option<String>) -> Api<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}
