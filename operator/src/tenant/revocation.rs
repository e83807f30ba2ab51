//! Credential generation (`gen`): `spec.token.generation` plus the number of revocations asked
//! for with the `nlu.dev/revoke` annotation. Each new annotation value is counted once, in
//! `status.revocations` and `status.revokeHandled`, which only the operator writes: editing the
//! Tenant can raise the generation (revoke) but never lower it. The Redis record's `gen` is only
//! ever raised too (`redis_sync::Stored::never_lower`), and tokens carry the Tenant's uid, so a
//! Tenant deleted and created again starts with none of the old tokens valid.

use kube::ResourceExt;
use nlu_crds::access::redis_keys::MAX_LIMIT;
use nlu_crds::{Tenant, TenantStatus};

/// Set to a new value (any text, e.g. a timestamp) to revoke every token issued so far.
pub const REVOKE_ANNOTATION: &str = "nlu.dev/revoke";
/// Where operators before status kept the count and the last value handled; read only for a
/// Tenant whose status has no count yet, so an upgrade keeps revoked tokens revoked.
const LEGACY_HANDLED_ANNOTATION: &str = "nlu.dev/revoke-handled";
const LEGACY_COUNT_ANNOTATION: &str = "nlu.dev/revocations";

/// Revocations already counted (at most [`MAX_LIMIT`]).
pub fn revocations(tenant: &Tenant) -> u64 {
    let counted = match tenant.status.as_ref().and_then(|s| s.revocations) {
        Some(n) => u64::try_from(n).unwrap_or(0),
        None => tenant
            .annotations()
            .get(LEGACY_COUNT_ANNOTATION)
            .and_then(|v| v.parse().ok())
            .unwrap_or(0),
    };
    counted.min(MAX_LIMIT)
}

/// The `nlu.dev/revoke` value not acted on yet, if any.
pub fn pending_revoke(tenant: &Tenant) -> Option<String> {
    let a = tenant.annotations();
    let asked = a.get(REVOKE_ANNOTATION)?;
    let handled = match tenant.status.as_ref() {
        Some(TenantStatus {
            revocations: Some(_),
            revoke_handled,
            ..
        }) => revoke_handled.as_ref(),
        _ => a.get(LEGACY_HANDLED_ANNOTATION),
    };
    (handled != Some(asked)).then(|| asked.clone())
}

/// The Tenant as it is once the revocation asked for with `value` is counted in its status.
pub fn handled(tenant: &Tenant, value: String) -> Tenant {
    let count = revocations(tenant).saturating_add(1).min(MAX_LIMIT);
    let mut tenant = tenant.clone();
    let status = tenant.status.get_or_insert_with(Default::default);
    status.revocations = Some(i64::try_from(count).unwrap_or(i64::MAX));
    status.revoke_handled = Some(value);
    tenant
}

/// The generation tokens must carry: `spec.token.generation` (at least 1) plus revocations,
/// saturating (the CRD bounds both far below the limit).
pub fn generation(tenant: &Tenant) -> u64 {
    u64::try_from(tenant.spec.token_generation())
        .unwrap_or(1)
        .clamp(1, MAX_LIMIT)
        .saturating_add(revocations(tenant))
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
        assert_eq!(generation(&tenant(None, &[])), 1);
        let once = handled(&tenant(Some(4), &[]), "now".into());
        assert_eq!(generation(&once), 5);
        assert_eq!(generation(&handled(&once, "later".into())), 6);
    }

    #[test]
    fn a_revoke_value_is_pending_until_counted_in_status() {
        assert_eq!(pending_revoke(&tenant(None, &[])), None);
        let asked = tenant(None, &[(REVOKE_ANNOTATION, "now")]);
        assert_eq!(pending_revoke(&asked), Some("now".into()));
        let counted = handled(&asked, "now".into());
        assert_eq!(pending_revoke(&counted), None);
        assert_eq!(revocations(&counted), 1);
    }

    #[test]
    fn annotations_cannot_lower_the_count_once_status_keeps_it() {
        let counted = handled(&tenant(None, &[(REVOKE_ANNOTATION, "a")]), "a".into());
        for hostile in ["0", "18446744073709551615", "-1"] {
            let mut edited = counted.clone();
            edited
                .annotations_mut()
                .insert(LEGACY_COUNT_ANNOTATION.into(), hostile.into());
            edited
                .annotations_mut()
                .insert(LEGACY_HANDLED_ANNOTATION.into(), "b".into());
            assert_eq!(generation(&edited), 2, "{hostile}");
            assert_eq!(pending_revoke(&edited), None, "{hostile}");
        }
    }

    #[test]
    fn an_upgraded_tenant_keeps_its_annotation_count_and_nothing_wraps() {
        let legacy = tenant(
            Some(3),
            &[
                (REVOKE_ANNOTATION, "x"),
                (LEGACY_HANDLED_ANNOTATION, "x"),
                (LEGACY_COUNT_ANNOTATION, "2"),
            ],
        );
        assert_eq!((generation(&legacy), pending_revoke(&legacy)), (5, None));
        let huge = tenant(
            Some(999_999_999_999_999),
            &[(LEGACY_COUNT_ANNOTATION, "18446744073709551615")],
        );
        assert_eq!(
            generation(&huge),
            2 * MAX_LIMIT,
            "saturates, never wraps to 0"
        );
    }
}
