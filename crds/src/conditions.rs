//! Status conditions shared by both resources: type names and the one rule for updating them.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// The resource serves: for an NluService its pods are ready, for a Tenant its token and record
/// are in place.
pub const READY: &str = "Ready";
/// A rollout is under way.
pub const PROGRESSING: &str = "Progressing";
/// The spec cannot work as written (bad reference, impossible path); the reason says why.
pub const DEGRADED: &str = "Degraded";
/// At least one pod loaded the model.
pub const MODEL_LOADED: &str = "ModelLoaded";
/// The Ingress has an address.
pub const INGRESS_READY: &str = "IngressReady";
/// The tenant is suspended.
pub const SUSPENDED: &str = "Suspended";
/// The tenant used up today's quota.
pub const QUOTA_EXCEEDED: &str = "QuotaExceeded";
/// The keys of the tenant's identity provider (`spec.identity`) are read and published; absent
/// without one.
pub const IDENTITY_PROVIDER_READY: &str = "IdentityProviderReady";

/// Put `new` into `conditions`, replacing the condition of the same type. The previous
/// `lastTransitionTime` is kept unless the status flipped, so clients can tell how long a state
/// has held; an unchanged condition leaves the list equal, so callers can skip the status write.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

/// A condition with the given fields, stamped `now`.
pub fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: Time,
) -> Condition {
    Condition {
        type_: type_.to_owned(),
        status: if status { "True" } else { "False" }.to_owned(),
        reason: reason.to_owned(),
        message: message.into(),
        observed_generation,
        last_transition_time: now,
    }
}

/// Whether the condition of `type_` is present with status `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn keeps_transition_time_when_status_holds() {
        let mut list = vec![condition(READY, true, "Up", "ok", Some(1), at(100))];
        set_condition(&mut list, condition(READY, true, "Up", "still ok", Some(2), at(200)));
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].last_transition_time, at(100));
        assert_eq!(list[0].message, "still ok");
        assert_eq!(list[0].observed_generation, Some(2));
    }

    #[test]
    fn stamps_new_time_when_status_flips() {
        let mut list = vec![condition(READY, true, "Up", "ok", Some(1), at(100))];
        set_condition(&mut list, condition(READY, false, "Down", "gone", Some(1), at(200)));
        assert_eq!(list[0].last_transition_time, at(200));
        assert!(!is_true(&list, READY));
    }

    #[test]
    fn appends_new_types_in_order() {
        let mut list = Vec::new();
        set_condition(&mut list, condition(READY, false, "Wait", "", None, at(1)));
        set_condition(&mut list, condition(DEGRADED, true, "Bad", "", None, at(1)));
        let types: Vec<_> = list.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, [READY, DEGRADED]);
        assert!(is_true(&list, DEGRADED));
    }
}
