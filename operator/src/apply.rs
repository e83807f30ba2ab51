//! Writing to the API: server-side apply with the operator's single field manager (forced, so
//! the operator wins conflicts over fields it owns) of objects that are absent or its own (never
//! adopting one of the same name that someone else holds), status apply, and deletion of
//! children whose feature was switched off.

use std::fmt::Debug;

use kube::api::{DeleteParams, Patch, PatchParams};
use kube::core::NamespaceResourceScope;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::context::OPERATOR_NAME;
use crate::ownership::{holder, Holder, Mark};

/// The field manager of every write the operator makes.
pub const FIELD_MANAGER: &str = OPERATOR_NAME;

/// `?fieldManager=nlu-operator&force=true`.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(FIELD_MANAGER).force()
}

/// Applies `obj` (named, with its namespace in metadata) and returns the object the server
/// answered with (including its current status).
pub async fn apply<K>(client: &Client, obj: &K) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    api.patch(&obj.name_any(), &apply_params(), &Patch::Apply(obj))
        .await
}

/// An object of the wanted name exists and is not the operator's: it was left as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTaken {
    pub kind: String,
    pub name: String,
}

impl std::fmt::Display for NameTaken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?} exists and is not managed by this resource; left as it is (delete or rename it)",
            self.kind, self.name
        )
    }
}

/// Who holds the object `name` of kind `K` in `ns` by `mark` (one GET).
pub async fn holder_of<K>(
    client: &Client,
    ns: &str,
    name: &str,
    mark: Mark<'_>,
) -> Result<Holder, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let existing = api.get_opt(name).await?;
    Ok(holder(existing.as_ref().map(|o| o.meta()), mark))
}

/// Applies `obj` like [`apply`] unless an object of its name exists that is not the operator's
/// (by [`Mark::of`] the desired object): that one is not written, and the answer says so.
pub async fn apply_unless_taken<K>(
    client: &Client,
    obj: &K,
) -> Result<Result<K, NameTaken>, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Serialize + DeserializeOwned + Clone + Debug,
    K::DynamicType: Default,
{
    let ns = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    match holder_of::<K>(client, &ns, &name, Mark::of(obj.meta())).await? {
        Holder::Foreign => {
            let kind = K::kind(&K::DynamicType::default()).into_owned();
            tracing::warn!(%kind, ns, name, "not writing an object of the same name that someone else holds");
            Ok(Err(NameTaken { kind, name }))
        }
        Holder::Absent | Holder::Ours => apply(client, obj).await.map(Ok),
    }
}

/// Applies `status` to the `/status` subresource of `owner`. The body carries apiVersion, kind
/// and name only besides the status, so spec fields stay untouched.
pub async fn apply_status<K, S>(client: &Client, owner: &K, status: &S) -> Result<K, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
    S: Serialize,
{
    let dt = K::DynamicType::default();
    let body = serde_json::json!({
        "apiVersion": K::api_version(&dt),
        "kind": K::kind(&dt),
        "metadata": { "name": owner.name_any() },
        "status": status,
    });
    let api: Api<K> = Api::namespaced(client.clone(), &owner.namespace().unwrap_or_default());
    api.patch_status(&owner.name_any(), &apply_params(), &Patch::Apply(&body))
        .await
}

/// Deletes child `name` of kind `K` if it exists and `owner_uid` is its controller. Returns
/// whether it deleted something. An object of that name that someone else owns is left alone.
pub async fn delete_owned<K>(
    client: &Client,
    ns: &str,
    name: &str,
    owner_uid: &str,
) -> Result<bool, kube::Error>
where
    K: Resource<Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(client.clone(), ns);
    let Some(existing) = api.get_opt(name).await? else {
        return Ok(false);
    };
    if holder(Some(existing.meta()), Mark::ControlledBy(owner_uid)) != Holder::Ours {
        tracing::warn!(kind = %K::kind(&K::DynamicType::default()), ns, name, "not deleting an object this resource does not control");
        return Ok(false);
    }
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(true),
        // Gone between the read and the delete: the outcome we wanted.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(false),
        Err(e) => Err(e),
    }
}
