//! A request's cost: the token positions its model work runs (embeddings: the inputs' tokens;
//! UniNLU: the text's windows in the lower layers, then every prompt over every window in the
//! upper layers). Each piece of work is costed before it runs, checked against
//! `--max-request-cost` and charged to the tenant's token quotas, so no work runs unpaid and a
//! refusal comes before the work it refuses.

use futures::future::BoxFuture;
use nlu_crds::access::UninluTask;

use crate::error::{Error, Kind};

/// Who pays for a request's model work: its tenant's token quotas (auth's `Meter`).
pub trait Payer: Send + Sync {
    /// Charges `tokens`, or says why the work may not run.
    fn charge(&self, tokens: u64) -> BoxFuture<'_, Result<(), Error>>;

    /// Says whether the tenant's scopes allow UniNLU work of `task` (`None`: a request whose
    /// task cannot be told); asked once per UniNLU request, before its first charge.
    fn allow_task(&mut self, task: Option<UninluTask>) -> Result<(), Error>;

    /// A stable number for the payer, under which its work takes turns with other payers' in
    /// the batcher.
    fn turn_key(&self) -> u64;
}

/// The running bill of one request.
pub struct Bill {
    /// `None` under `--auth none`.
    payer: Option<Box<dyn Payer>>,
    /// `--max-request-cost`.
    limit: u64,
    total: u64,
}

impl Bill {
    pub fn new(payer: Option<Box<dyn Payer>>, limit: u64) -> Self {
        Self {
            payer,
            limit,
            total: 0,
        }
    }

    /// Admits `tokens` more of this request's work: refused (`TooLarge`) when the request would
    /// then cost more than `--max-request-cost`, else charged to the payer.
    pub async fn charge(&mut self, tokens: usize) -> Result<(), Error> {
        let tokens = u64::try_from(tokens).unwrap_or(u64::MAX);
        let total = over_limit(self.total, tokens, self.limit)?;
        if let Some(payer) = &self.payer {
            payer.charge(tokens).await?;
        }
        self.total = total;
        Ok(())
    }

    /// Refuses UniNLU work of `task` the payer's scopes do not allow ([`Payer::allow_task`]);
    /// under `--auth none` every task is allowed.
    pub fn allow_task(&mut self, task: Option<UninluTask>) -> Result<(), Error> {
        self.payer
            .as_mut()
            .map_or(Ok(()), |payer| payer.allow_task(task))
    }

    /// Under which key the request's work takes turns in the batcher (one key for all under
    /// `--auth none`).
    pub fn tenant_key(&self) -> u64 {
        self.payer.as_ref().map_or(0, |p| p.turn_key())
    }

    /// What the request has cost so far: the `X-Request-Cost` of its answer.
    pub fn cost(&self) -> RequestCost {
        RequestCost(self.total)
    }
}

/// Pure: the new total, or the refusal that names it and the limit.
fn over_limit(spent: u64, tokens: u64, limit: u64) -> Result<u64, Error> {
    let total = spent.saturating_add(tokens);
    if total > limit {
        return Err(Error::new(
            Kind::TooLarge,
            "request_too_costly",
            format!(
                "this request costs at least {total} token positions; the limit is {limit} \
                 (--max-request-cost): send a shorter text, fewer inputs or a smaller schema"
            ),
        ));
    }
    Ok(total)
}

/// The token positions a request's model work ran (sent as `X-Request-Cost`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestCost(pub u64);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_inclusive_and_names_the_total() {
        assert_eq!(over_limit(0, 100, 100).unwrap(), 100);
        assert_eq!(over_limit(60, 40, 100).unwrap(), 100);
        let e = over_limit(60, 41, 100).unwrap_err();
        assert_eq!((e.kind, e.code), (Kind::TooLarge, "request_too_costly"));
        assert!(
            e.message.contains("at least 101") && e.message.contains("is 100"),
            "{}",
            e.message
        );
        assert!(
            over_limit(u64::MAX, 1, u64::MAX).is_ok(),
            "saturates instead of wrapping"
        );
    }

    #[tokio::test]
    async fn without_a_meter_only_the_limit_applies() {
        let mut bill = Bill::new(None, 10);
        bill.charge(4).await.unwrap();
        bill.charge(6).await.unwrap();
        assert_eq!(bill.cost(), RequestCost(10));
        assert_eq!(bill.charge(1).await.unwrap_err().code, "request_too_costly");
        assert_eq!(
            bill.cost(),
            RequestCost(10),
            "a refused charge costs nothing"
        );
    }
}
