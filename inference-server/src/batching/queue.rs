//! Which waiting sequences form the next model batch: pure decisions, no locks, no clocks.

/// Bounds on one model batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// Tokens of all sequences together (the model runs batches packed, without padding).
    pub max_tokens: usize,
    pub max_sequences: usize,
}

/// What the selection needs to know about one waiting sequence.
#[derive(Debug, Clone, Copy)]
pub struct Waiting {
    /// Sequence length in tokens.
    pub tokens: usize,
    /// The request it belongs to: requests of a tenant take turns.
    pub group: u64,
    /// The tenant it belongs to: tenants take turns before requests do.
    pub tenant: u64,
}

/// What the scheduler knows when it decides whether queued work runs now or waits briefly
/// for more to join its batch.
#[derive(Debug, Clone, Copy)]
pub struct Pending {
    /// Requests with sequences in the queue.
    pub requests: usize,
    /// Requests that are tokenizing and about to queue.
    pub arriving: usize,
    /// Requests in the previous batch: under load, clients answered together come back
    /// together, so about as many are worth a short wait.
    pub expected: usize,
    /// The queue holds a full batch.
    pub full: bool,
    /// The oldest queued sequence has waited `max_wait`.
    pub waited_enough: bool,
    pub closing: bool,
}

/// Runs when waiting cannot grow the batch or must not go on: the batch is full, its oldest
/// sequence waited long enough, the queue closes, or no request is arriving and as many are
/// queued as the previous batch held (so a lone client never waits, and a burst of clients
/// does not run one by one).
pub fn run_now(p: Pending) -> bool {
    p.full || p.waited_enough || p.closing || (p.arriving == 0 && p.requests >= p.expected)
}

/// Indices (ascending) of the waiting sequences to run next.
///
/// Tenants take turns, and within a tenant its requests do (round-robin, oldest first), so a
/// request with hundreds of prompts cannot starve one with two, and a tenant with many requests
/// cannot starve one with few. The first sequence in that order is always taken, so
/// nothing waits forever; the others are chosen from a look-ahead window by closeness of length
/// to it, so that short inputs are not held up behind long ones and attention work (quadratic
/// in length) stays even across the batch, without reordering across the whole queue.
pub fn select_batch(waiting: &[Waiting], limits: BatchLimits) -> Vec<usize> {
    let fair = fair_order(waiting);
    let Some((&anchor, rest)) = fair.split_first() else {
        return Vec::new();
    };
    let anchor_len = waiting[anchor].tokens;
    let lookahead = limits.max_sequences.saturating_mul(4);
    let mut candidates: Vec<usize> = rest.iter().copied().take(lookahead).collect();
    // Stable sort: among equal lengths the fair order decides.
    candidates.sort_by_key(|&i| waiting[i].tokens.abs_diff(anchor_len));

    let mut chosen = vec![anchor];
    let mut tokens = anchor_len;
    for i in candidates {
        if chosen.len() == limits.max_sequences {
            break;
        }
        if tokens + waiting[i].tokens <= limits.max_tokens {
            chosen.push(i);
            tokens += waiting[i].tokens;
        }
    }
    chosen.sort_unstable();
    chosen
}

/// Round-robin order, two levels deep: each tenant's sequences in request round robin (the
/// first sequence of each of its requests by arrival, then the second of each, ...), then the
/// tenants interleaved the same way over those lists.
fn fair_order(waiting: &[Waiting]) -> Vec<usize> {
    let by_request = round_robin(waiting.iter().map(|w| (w.tenant, w.group)));
    let by_tenant = round_robin(by_request.iter().map(|&i| waiting[i].tenant));
    by_tenant.into_iter().map(|j| by_request[j]).collect()
}

/// Indices in round-robin order over the keys: the first item of every key (keys by first
/// appearance), then the second of each, and so on.
fn round_robin<K: PartialEq>(keys: impl Iterator<Item = K>) -> Vec<usize> {
    let rank = arrival_ranks(keys);
    let mut taken = vec![0; rank.len()];
    let mut keyed: Vec<(usize, usize, usize)> = rank
        .iter()
        .enumerate()
        .map(|(i, &r)| {
            taken[r] += 1;
            (taken[r], r, i)
        })
        .collect();
    keyed.sort_unstable();
    keyed.into_iter().map(|(_, _, i)| i).collect()
}

/// For each item, the rank of its key by first appearance.
fn arrival_ranks<K: PartialEq>(keys: impl Iterator<Item = K>) -> Vec<usize> {
    let mut first_seen: Vec<K> = Vec::new();
    keys.map(|k| match first_seen.iter().position(|f| *f == k) {
        Some(rank) => rank,
        None => {
            first_seen.push(k);
            first_seen.len() - 1
        }
    })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(tokens: usize, group: u64) -> Waiting {
        Waiting {
            tokens,
            group,
            tenant: 0,
        }
    }

    fn t(tenant: u64, group: u64) -> Waiting {
        Waiting {
            tokens: 1,
            group,
            tenant,
        }
    }

    const WIDE: BatchLimits = BatchLimits {
        max_tokens: 10_000,
        max_sequences: 4,
    };

    #[test]
    fn empty_queue_gives_empty_batch() {
        assert!(select_batch(&[], WIDE).is_empty());
    }

    #[test]
    fn count_limit_holds() {
        let q: Vec<_> = (0..10).map(|i| w(8, i)).collect();
        assert_eq!(select_batch(&q, WIDE), vec![0, 1, 2, 3]);
    }

    #[test]
    fn token_limit_counts_real_tokens() {
        // 100 + 100 > 150, but 100 + 10 + 30 fits: no padding is counted.
        let q = [w(100, 1), w(100, 2), w(10, 3), w(30, 4)];
        let limits = BatchLimits {
            max_tokens: 150,
            max_sequences: 8,
        };
        assert_eq!(select_batch(&q, limits), vec![0, 2, 3]);
        let limits = BatchLimits {
            max_tokens: 200,
            max_sequences: 8,
        };
        assert_eq!(select_batch(&q, limits), vec![0, 1]);
    }

    #[test]
    fn waits_only_while_the_batch_can_grow() {
        let idle = Pending {
            requests: 1,
            arriving: 0,
            expected: 1,
            full: false,
            waited_enough: false,
            closing: false,
        };
        assert!(run_now(idle), "a lone request runs at once");
        assert!(
            !run_now(Pending {
                arriving: 1,
                ..idle
            }),
            "one is tokenizing"
        );
        let burst = Pending {
            expected: 4,
            ..idle
        };
        assert!(!run_now(burst), "the previous batch had 4 requests");
        assert!(run_now(Pending {
            requests: 4,
            ..burst
        }));
        assert!(run_now(Pending {
            waited_enough: true,
            ..burst
        }));
        assert!(run_now(Pending {
            full: true,
            arriving: 3,
            ..burst
        }));
        assert!(run_now(Pending {
            closing: true,
            ..burst
        }));
    }

    #[test]
    fn oversized_head_still_runs_alone() {
        let q = [w(500, 1), w(5, 2)];
        let limits = BatchLimits {
            max_tokens: 100,
            max_sequences: 8,
        };
        assert_eq!(select_batch(&q, limits), vec![0]);
    }

    #[test]
    fn similar_lengths_are_grouped() {
        let q = [w(10, 1), w(200, 2), w(12, 3), w(190, 4), w(11, 5)];
        let limits = BatchLimits {
            max_tokens: 10_000,
            max_sequences: 3,
        };
        assert_eq!(select_batch(&q, limits), vec![0, 2, 4]);
    }

    #[test]
    fn requests_take_turns() {
        // Request 1 queued 6 prompts before request 2 queued 1: request 2 still gets into the
        // first batch of 2.
        let mut q: Vec<_> = (0..6).map(|_| w(20, 1)).collect();
        q.push(w(20, 2));
        let limits = BatchLimits {
            max_tokens: 10_000,
            max_sequences: 2,
        };
        assert_eq!(select_batch(&q, limits), vec![0, 6]);
    }

    #[test]
    fn fair_order_interleaves_requests() {
        let q = [w(1, 7), w(1, 7), w(1, 7), w(1, 9), w(1, 8)];
        assert_eq!(fair_order(&q), vec![0, 3, 4, 1, 2]);
    }

    #[test]
    fn tenants_take_turns_before_requests_do() {
        // Tenant 1 has three requests (groups 10, 11, 12) of two sequences each queued before
        // tenant 2's one request: tenant 2 still runs second, then tenant 1's requests rotate.
        let q = [
            t(1, 10),
            t(1, 10),
            t(1, 11),
            t(1, 11),
            t(1, 12),
            t(1, 12),
            t(2, 20),
            t(2, 20),
        ];
        assert_eq!(fair_order(&q), vec![0, 6, 2, 7, 4, 1, 3, 5]);
        let limits = BatchLimits {
            max_tokens: 10_000,
            max_sequences: 2,
        };
        assert_eq!(select_batch(&q, limits), vec![0, 6]);
    }
}
