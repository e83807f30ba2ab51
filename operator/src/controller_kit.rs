//! What both controllers do the same way around their own decisions: retry a failing object
//! after a growing delay, publish Events that never fail a reconcile, and write status only when
//! it changed.

use std::collections::HashMap;
use std::fmt::Display;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::ResourceExt;

use crate::context::Context;

/// Longest wait between retries of a failing object.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);

/// How a controller retries an object whose reconcile failed: after `first_delay`, doubling
/// with each further failure up to [`MAX_RETRY_DELAY`], from the first delay again after a
/// success. So a broken object neither spins nor, once fixed, waits long.
pub struct RetryPolicy {
    /// The `controller` label of the failure metric and the logs.
    pub controller: &'static str,
    pub first_delay: Duration,
}

impl RetryPolicy {
    /// The controller's error policy: counts the failure by `reason`, logs it and requeues
    /// `obj` after its next delay.
    pub fn failed<K: ResourceExt>(
        &self,
        ctx: &Context,
        obj: &K,
        reason: &str,
        error: &dyn Display,
    ) -> Action {
        ctx.metrics.reconcile_failed(self.controller, reason);
        let object = object_key(obj);
        let failures = ctx.backoff.count(self.controller, &object);
        let wait = retry_delay(self.first_delay, failures);
        tracing::warn!(controller = self.controller, %object, %error, retry_in = ?wait, "reconcile failed");
        Action::requeue(wait)
    }

    /// After a successful reconcile of `obj`: its next failure waits the first delay again.
    pub fn succeeded<K: ResourceExt>(&self, ctx: &Context, obj: &K) {
        ctx.backoff.reset(self.controller, &object_key(obj));
    }
}

/// The wait after the `failures`-th consecutive failure (1 = the first).
pub fn retry_delay(first: Duration, failures: u32) -> Duration {
    first
        .saturating_mul(1 << failures.saturating_sub(1).min(10))
        .min(MAX_RETRY_DELAY)
}

/// Consecutive failures per controller and object, shared by the controllers (in [`Context`]).
#[derive(Default)]
pub struct FailureBackoff {
    failures: Mutex<HashMap<(&'static str, String), u32>>,
}

impl FailureBackoff {
    /// Counts one more failure of `object`; returns how many there have been in a row.
    fn count(&self, controller: &'static str, object: &str) -> u32 {
        let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        let n = failures.entry((controller, object.to_owned())).or_insert(0);
        *n = n.saturating_add(1);
        *n
    }

    fn reset(&self, controller: &'static str, object: &str) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(controller, object.to_owned()));
    }
}

/// `namespace/name`: how logs and per-object memories name an object.
pub fn object_key<K: ResourceExt>(obj: &K) -> String {
    format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any())
}

/// An Event about the reconciled object.
pub fn event(type_: EventType, reason: &str, note: String) -> Event {
    Event {
        type_,
        reason: reason.to_owned(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    }
}

/// Publishes `event` about `regarding`. Events inform people; a failure to record one is logged
/// and never fails the caller.
pub async fn publish(recorder: &Recorder, regarding: &ObjectReference, event: &Event) {
    if let Err(error) = recorder.publish(event, regarding).await {
        let object = regarding.name.as_deref().unwrap_or_default();
        tracing::warn!(object, reason = %event.reason, %error, "could not publish event");
    }
}

/// The status to write: `new`, unless the object already shows it. Every status write is an API
/// call and a watch event that triggers another reconcile, so an unchanged status is not written.
pub fn status_change<S: PartialEq>(shown: Option<&S>, new: S) -> Option<S> {
    (shown != Some(&new)).then_some(new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_delays_double_from_the_first_and_cap() {
        let secs =
            |first: u64, failures: u32| retry_delay(Duration::from_secs(first), failures).as_secs();
        // The Tenant controller (first 2 s) and the NluService controller (first 5 s).
        assert_eq!([secs(2, 1), secs(2, 2), secs(2, 3)], [2, 4, 8]);
        assert_eq!([secs(5, 1), secs(5, 2), secs(5, 6)], [5, 10, 160]);
        assert_eq!(secs(2, 20), MAX_RETRY_DELAY.as_secs());
        assert_eq!(secs(5, u32::MAX), MAX_RETRY_DELAY.as_secs());
    }

    #[test]
    fn failures_count_per_controller_and_object_until_a_success() {
        let backoff = FailureBackoff::default();
        assert_eq!(backoff.count("a", "ns/x"), 1);
        assert_eq!(backoff.count("a", "ns/x"), 2);
        assert_eq!(backoff.count("b", "ns/x"), 1, "another controller's object");
        assert_eq!(backoff.count("a", "ns/y"), 1);
        backoff.reset("a", "ns/x");
        assert_eq!(backoff.count("a", "ns/x"), 1);
    }

    #[test]
    fn only_a_changed_status_is_written() {
        assert_eq!(status_change(Some(&1), 1), None);
        assert_eq!(status_change(Some(&1), 2), Some(2));
        assert_eq!(status_change(None, 1), Some(1));
    }
}
