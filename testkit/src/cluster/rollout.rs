//! The Deployment controller's decisions (pure): which pods to create or delete next for a
//! rolling update within `maxSurge`/`maxUnavailable`, and the Deployment's status. ReplicaSets
//! are not modelled: pods carry the template hash directly.

use serde_json::{json, Value};

/// A pod as the rollout sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct PodView {
    pub name: String,
    pub template_hash: String,
    pub ready: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Create one pod of the current template.
    Create,
    /// Delete (terminate) this pod.
    Delete(String),
}

/// `maxSurge` and `maxUnavailable` resolved against the replica count (default 25 % each;
/// surge rounds up, unavailability down; both zero is read as one surge pod, as the API
/// server would refuse it).
pub fn limits(strategy: &Value, desired: u32) -> (u32, u32) {
    let resolve = |v: &Value, round_up: bool| -> u32 {
        match v {
            Value::Number(n) => n.as_u64().unwrap_or(0) as u32,
            Value::String(s) => {
                let pct: u32 = s.trim_end_matches('%').parse().unwrap_or(25);
                let scaled = desired * pct;
                if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                }
            }
            _ => {
                let scaled = desired * 25;
                if round_up {
                    scaled.div_ceil(100)
                } else {
                    scaled / 100
                }
            }
        }
    };
    let rolling = &strategy["rollingUpdate"];
    let surge = resolve(&rolling["maxSurge"], true);
    let unavailable = resolve(&rolling["maxUnavailable"], false);
    if surge == 0 && unavailable == 0 {
        (1, 0)
    } else {
        (surge, unavailable)
    }
}

/// The steps that move `pods` (live, not terminating) towards `desired` pods of `hash`.
pub fn next_steps(
    desired: u32,
    (max_surge, max_unavailable): (u32, u32),
    hash: &str,
    pods: &[PodView],
) -> Vec<Step> {
    let mut steps = Vec::new();
    let (mut new, old): (Vec<&PodView>, Vec<&PodView>) =
        pods.iter().partition(|p| p.template_hash == hash);
    let desired_n = desired as usize;
    // Scale down the current template first where it has too many: unready ones go first.
    new.sort_by_key(|p| p.ready);
    while new.len() > desired_n {
        steps.push(Step::Delete(new.remove(0).name.clone()));
    }
    let live = new.len() + old.len();
    let room = (desired_n + max_surge as usize).saturating_sub(live);
    for _ in 0..room.min(desired_n - new.len()) {
        steps.push(Step::Create);
    }
    // Old pods go while enough ready pods remain; unready old pods serve nobody and go at once.
    let mut ready = new.iter().filter(|p| p.ready).count() + old.iter().filter(|p| p.ready).count();
    let min_available = desired_n.saturating_sub(max_unavailable as usize);
    let mut old_sorted = old.clone();
    old_sorted.sort_by_key(|p| p.ready);
    for pod in old_sorted {
        if !pod.ready {
            steps.push(Step::Delete(pod.name.clone()));
        } else if ready > min_available {
            ready -= 1;
            steps.push(Step::Delete(pod.name.clone()));
        }
    }
    steps
}

/// The Deployment's `status` for `pods` (live ones) at `generation`.
pub fn status(
    desired: u32,
    max_unavailable: u32,
    hash: &str,
    generation: i64,
    pods: &[PodView],
    now: &str,
) -> Value {
    let updated = pods.iter().filter(|p| p.template_hash == hash).count();
    let ready = pods.iter().filter(|p| p.ready).count();
    let updated_ready = pods
        .iter()
        .filter(|p| p.ready && p.template_hash == hash)
        .count();
    let desired = desired as usize;
    let available = ready >= desired.saturating_sub(max_unavailable as usize);
    let complete = updated == desired && updated_ready == desired && pods.len() == desired;
    let condition = |type_: &str, ok: bool, reason: &str, message: String| {
        json!({"type": type_, "status": if ok { "True" } else { "False" },
               "reason": reason, "message": message,
               "lastUpdateTime": now, "lastTransitionTime": now})
    };
    json!({
        "observedGeneration": generation,
        "replicas": pods.len(),
        "updatedReplicas": updated,
        "readyReplicas": ready,
        "availableReplicas": ready,
        "unavailableReplicas": desired.saturating_sub(ready),
        "conditions": [
            condition("Available", available,
                if available { "MinimumReplicasAvailable" } else { "MinimumReplicasUnavailable" },
                format!("{ready} of {desired} replicas ready")),
            condition("Progressing", true,
                if complete { "NewReplicaSetAvailable" } else { "ReplicaSetUpdated" },
                format!("{updated_ready} of {desired} updated replicas ready")),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(name: &str, hash: &str, ready: bool) -> PodView {
        PodView {
            name: name.into(),
            template_hash: hash.into(),
            ready,
        }
    }

    #[test]
    fn limits_resolve_numbers_percentages_and_defaults() {
        let strategy = json!({"rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}});
        assert_eq!(limits(&strategy, 3), (1, 0));
        let strategy = json!({"rollingUpdate": {"maxSurge": "50%", "maxUnavailable": "50%"}});
        assert_eq!(limits(&strategy, 3), (2, 1));
        assert_eq!(limits(&json!({}), 4), (1, 1));
        assert_eq!(limits(&json!({}), 1), (1, 0));
    }

    #[test]
    fn rolling_update_steps_as_a_table() {
        use Step::*;
        let d = |n: &str| Delete(n.to_owned());
        // (desired, (surge, unavailable), pods, expected steps)
        type Case = (u32, (u32, u32), Vec<PodView>, Vec<Step>);
        let cases: Vec<Case> = vec![
            // Scale from zero: as many as the surge allows beyond the current count.
            (2, (1, 0), vec![], vec![Create, Create]),
            // Steady state: nothing to do.
            (1, (1, 0), vec![pod("a", "h", true)], vec![]),
            // A new template: surge one new pod, keep the old ready one.
            (1, (1, 0), vec![pod("old", "o", true)], vec![Create]),
            // The new pod is not ready yet: wait.
            (
                1,
                (1, 0),
                vec![pod("old", "o", true), pod("new", "h", false)],
                vec![],
            ),
            // The new pod is ready: the old one goes.
            (
                1,
                (1, 0),
                vec![pod("old", "o", true), pod("new", "h", true)],
                vec![d("old")],
            ),
            // An unready old pod goes at once.
            (
                1,
                (1, 0),
                vec![pod("old", "o", false), pod("new", "h", false)],
                vec![d("old")],
            ),
            // Scale down: unready pods first.
            (
                1,
                (1, 0),
                vec![pod("a", "h", true), pod("b", "h", false)],
                vec![d("b")],
            ),
            // maxUnavailable 1 without surge: an old pod may go before its replacement is up.
            (
                2,
                (0, 1),
                vec![pod("o1", "o", true), pod("o2", "o", true)],
                vec![d("o1")],
            ),
            // Scale to zero.
            (0, (1, 0), vec![pod("a", "h", true)], vec![d("a")]),
        ];
        for (desired, limits, pods, expected) in cases {
            assert_eq!(
                next_steps(desired, limits, "h", &pods),
                expected,
                "{pods:?}"
            );
        }
    }

    #[test]
    fn status_counts_and_conditions() {
        let pods = [pod("old", "o", true), pod("new", "h", false)];
        let s = status(1, 0, "h", 3, &pods, "t");
        assert_eq!(s["replicas"], 2);
        assert_eq!(s["updatedReplicas"], 1);
        assert_eq!(s["readyReplicas"], 1);
        assert_eq!(s["observedGeneration"], 3);
        assert_eq!(s["conditions"][0]["status"], "True");
        assert_eq!(s["conditions"][1]["reason"], "ReplicaSetUpdated");
        let done = status(1, 0, "h", 3, &[pod("new", "h", true)], "t");
        assert_eq!(done["conditions"][1]["reason"], "NewReplicaSetAvailable");
        assert_eq!(done["unavailableReplicas"], 0);
    }
}
