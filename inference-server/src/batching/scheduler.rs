//! The model thread: takes batches from the shared queue, runs them, answers each caller.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::queue::{run_now, select_batch, BatchLimits, Pending, Waiting};
use crate::error::{Error, Kind};
use crate::metrics::Metrics;

/// Runs one batch on the model. Owned by the model thread, so it needs no locking.
pub trait Worker: Send + 'static {
    type Input: Send + 'static;
    type Output: Send + 'static;
    /// One output per input, in order.
    fn run(&mut self, batch: Vec<Self::Input>) -> anyhow::Result<Vec<Self::Output>>;
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("the server is busy: its queue is full")]
    QueueFull,
    #[error("the server is shutting down")]
    ShuttingDown,
    #[error("inference failed: {0}")]
    Failed(String),
}

impl From<BatchError> for Error {
    fn from(e: BatchError) -> Self {
        let message = e.to_string();
        match e {
            BatchError::QueueFull => Error::new(Kind::Unavailable, "overloaded", message).retry_after(1),
            BatchError::ShuttingDown => {
                Error::new(Kind::Unavailable, "shutting_down", message).retry_after(1)
            }
            BatchError::Failed(_) => Error::internal(message),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: BatchLimits,
    pub max_wait: Duration,
    /// Most token positions of the requests in flight (`--max-queue-tokens`).
    pub max_queue_tokens: usize,
}

/// One sequence for the model and what its cost is.
pub struct Job<I> {
    pub input: I,
    /// Sequence length in tokens.
    pub tokens: usize,
}

pub type Reply<O> = oneshot::Receiver<Result<O, BatchError>>;

struct Entry<I, O> {
    input: I,
    tokens: usize,
    group: Group,
    enqueued: Instant,
    reply: oneshot::Sender<Result<O, BatchError>>,
}

struct State<I, O> {
    waiting: Vec<Entry<I, O>>,
    /// Requests that announced work they are still preparing (tokenizing, decoding).
    arriving: usize,
    /// Requests in the batch taken last ([`Pending::expected`]).
    last_batch_requests: usize,
    /// Token positions of the admitted requests still in flight, every level of their work
    /// counted from when it is known until the request ends.
    in_flight_tokens: usize,
    closed: bool,
}

/// Whose work a sequence is: requests of one tenant take turns, tenants take turns first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Group {
    request: u64,
    tenant: u64,
}

struct Shared<I, O> {
    state: Mutex<State<I, O>>,
    wake: Condvar,
    settings: Settings,
    metrics: Arc<Metrics>,
}

/// Handle to the queue and its model thread.
pub struct Batcher<I, O> {
    shared: Arc<Shared<I, O>>,
    next_group: AtomicU64,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    /// Starts the model thread that owns `worker`.
    pub fn start<W>(worker: W, settings: Settings, metrics: Arc<Metrics>) -> Self
    where
        W: Worker<Input = I, Output = O>,
    {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                waiting: Vec::new(),
                arriving: 0,
                last_batch_requests: 1,
                in_flight_tokens: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            settings,
            metrics,
        });
        let thread_shared = shared.clone();
        let thread = std::thread::Builder::new()
            .name("model".into())
            .spawn(move || model_loop(worker, &thread_shared))
            .expect("spawning the model thread");
        Batcher {
            shared,
            next_group: AtomicU64::new(0),
            thread: Mutex::new(Some(thread)),
        }
    }

    /// Admits a request whose first work costs `tokens`, for `tenant` (any stable id; requests
    /// of one tenant take turns, and tenants take turns before them). Refused at once when the
    /// work in flight would then pass `--max-queue-tokens`, unless nothing is in flight (so a
    /// request larger than the whole bound still runs, alone; `--max-request-cost` bounds it).
    pub fn admit(&self, tenant: u64, tokens: usize) -> Result<Admitted<'_, I, O>, BatchError> {
        let mut state = self.shared.state.lock().expect("queue lock");
        if state.closed {
            return Err(BatchError::ShuttingDown);
        }
        let in_flight = state.in_flight_tokens;
        if in_flight > 0 && in_flight.saturating_add(tokens) > self.shared.settings.max_queue_tokens
        {
            self.shared.metrics.queue_rejections.inc();
            return Err(BatchError::QueueFull);
        }
        set_in_flight(
            &mut state,
            &self.shared.metrics,
            in_flight.saturating_add(tokens),
        );
        Ok(Admitted {
            batcher: self,
            group: Group {
                request: self.next_group.fetch_add(1, Ordering::Relaxed),
                tenant,
            },
            tokens,
        })
    }

    /// Queues all `jobs` of `group`.
    fn submit(&self, group: Group, jobs: Vec<Job<I>>) -> Result<Vec<Reply<O>>, BatchError> {
        let mut state = self.shared.state.lock().expect("queue lock");
        if state.closed {
            return Err(BatchError::ShuttingDown);
        }
        let now = Instant::now();
        let replies = jobs
            .into_iter()
            .map(|job| {
                let (reply, rx) = oneshot::channel();
                state.waiting.push(Entry {
                    input: job.input,
                    tokens: job.tokens,
                    group,
                    enqueued: now,
                    reply,
                });
                rx
            })
            .collect();
        self.shared
            .metrics
            .queue_depth
            .set(state.waiting.len() as i64);
        drop(state);
        self.shared.wake.notify_one();
        Ok(replies)
    }

    /// Refuses new work, lets the model thread finish everything queued, and waits for it.
    pub fn shutdown(&self) {
        self.shared.state.lock().expect("queue lock").closed = true;
        self.shared.wake.notify_one();
        if let Some(thread) = self.thread.lock().expect("thread lock").take() {
            // The loop catches inference panics itself, so a join error cannot carry news.
            let _ = thread.join();
        }
    }
}

impl<I, O> Drop for Batcher<I, O> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.shared.state.lock() {
            state.closed = true;
        }
        self.shared.wake.notify_one();
    }
}

/// An admitted request: its work counts against `--max-queue-tokens` until it is dropped.
/// Dropping it (the request answered, failed, timed out, or its client went away) also drops
/// its sequences that have not run yet ([`next_batch`]).
pub struct Admitted<'a, I, O> {
    batcher: &'a Batcher<I, O>,
    group: Group,
    tokens: usize,
}

impl<I, O> Admitted<'_, I, O> {
    /// Counts `tokens` more work of this request (a later UniNLU level). Never refused: a
    /// request is not failed half-way for a reason it could not have been told up front.
    pub fn grow(&mut self, tokens: usize) {
        let mut state = self.batcher.shared.state.lock().expect("queue lock");
        let in_flight = state.in_flight_tokens.saturating_add(tokens);
        set_in_flight(&mut state, &self.batcher.shared.metrics, in_flight);
        self.tokens += tokens;
    }
}

impl<I, O> Drop for Admitted<'_, I, O> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.batcher.shared.state.lock() {
            let in_flight = state.in_flight_tokens.saturating_sub(self.tokens);
            set_in_flight(&mut state, &self.batcher.shared.metrics, in_flight);
        }
    }
}

/// The work in flight and its gauge change together.
fn set_in_flight<I, O>(state: &mut State<I, O>, metrics: &Metrics, tokens: usize) {
    state.in_flight_tokens = tokens;
    metrics.queue_tokens.set(tokens as i64);
}

/// Work a request is preparing and will submit shortly. While any is announced, queued
/// sequences wait (up to `max_wait`) for it so they can share a batch; with none announced,
/// waiting could not grow the batch, so it runs at once and a lone request pays no wait.
pub struct Arrival<'a, I, O> {
    batcher: &'a Batcher<I, O>,
}

impl<I: Send + 'static, O: Send + 'static> Batcher<I, O> {
    pub fn announce(&self) -> Arrival<'_, I, O> {
        self.shared.state.lock().expect("queue lock").arriving += 1;
        Arrival { batcher: self }
    }
}

impl<I: Send + 'static, O: Send + 'static> Arrival<'_, I, O> {
    /// Queues `jobs` of `request`, ends the announcement and waits for all the outputs, in
    /// order.
    pub async fn run_all(
        self,
        request: &Admitted<'_, I, O>,
        jobs: Vec<Job<I>>,
    ) -> Result<Vec<O>, BatchError> {
        let replies = self.batcher.submit(request.group, jobs);
        drop(self);
        wait_all(replies?).await
    }
}

impl<I, O> Drop for Arrival<'_, I, O> {
    fn drop(&mut self) {
        if let Ok(mut state) = self.batcher.shared.state.lock() {
            state.arriving -= 1;
        }
        self.batcher.shared.wake.notify_one();
    }
}

async fn wait_all<O>(replies: Vec<Reply<O>>) -> Result<Vec<O>, BatchError> {
    let mut outputs = Vec::with_capacity(replies.len());
    for reply in replies {
        // A dropped sender means the model thread is gone: report it instead of hanging.
        outputs.push(reply.await.map_err(|_| BatchError::ShuttingDown)??);
    }
    Ok(outputs)
}

fn model_loop<W: Worker>(mut worker: W, shared: &Shared<W::Input, W::Output>) {
    while let Some(batch) = next_batch(shared) {
        run_batch(&mut worker, batch, &shared.metrics);
    }
}

/// Blocks until a batch is due ([`run_now`]). `None` once closed and drained.
fn next_batch<I, O>(shared: &Shared<I, O>) -> Option<Vec<Entry<I, O>>> {
    let settings = &shared.settings;
    let mut state = shared.state.lock().expect("queue lock");
    loop {
        drop_abandoned(&mut state.waiting, &shared.metrics);
        if state.waiting.is_empty() {
            if state.closed {
                return None;
            }
            state = shared.wake.wait(state).expect("queue lock");
            continue;
        }
        let oldest = state
            .waiting
            .iter()
            .map(|e| e.enqueued)
            .min()
            .expect("non-empty");
        let deadline = oldest + settings.max_wait;
        let now = Instant::now();
        let pending = Pending {
            requests: distinct_groups(state.waiting.iter().map(|e| e.group)),
            arriving: state.arriving,
            expected: state.last_batch_requests,
            full: is_full(&state.waiting, settings.limits),
            waited_enough: now >= deadline,
            closing: state.closed,
        };
        if run_now(pending) {
            let waiting: Vec<Waiting> = state
                .waiting
                .iter()
                .map(|e| Waiting {
                    tokens: e.tokens,
                    group: e.group.request,
                    tenant: e.group.tenant,
                })
                .collect();
            let chosen = select_batch(&waiting, settings.limits);
            let batch = take_indices(&mut state.waiting, &chosen);
            state.last_batch_requests = distinct_groups(batch.iter().map(|e| e.group));
            shared.metrics.queue_depth.set(state.waiting.len() as i64);
            return Some(batch);
        }
        state = shared
            .wake
            .wait_timeout(state, deadline - now)
            .expect("queue lock")
            .0;
    }
}

fn is_full<I, O>(waiting: &[Entry<I, O>], limits: BatchLimits) -> bool {
    waiting.len() >= limits.max_sequences
        || waiting.iter().map(|e| e.tokens).sum::<usize>() >= limits.max_tokens
}

fn distinct_groups(groups: impl Iterator<Item = Group>) -> usize {
    let mut requests: Vec<u64> = groups.map(|g| g.request).collect();
    requests.sort_unstable();
    requests.dedup();
    requests.len()
}

/// Drops the sequences nobody waits for any more: their request ended (its client went away,
/// it timed out, or another of its sequences failed), so running them would be wasted work.
fn drop_abandoned<I, O>(waiting: &mut Vec<Entry<I, O>>, metrics: &Metrics) {
    let before = waiting.len();
    waiting.retain(|e| !e.reply.is_closed());
    let dropped = before - waiting.len();
    if dropped > 0 {
        metrics.dropped_sequences.inc_by(dropped as u64);
        metrics.queue_depth.set(waiting.len() as i64);
    }
}

/// Removes the entries at `sorted` (ascending) indices, keeping the others in order.
fn take_indices<T>(items: &mut Vec<T>, sorted: &[usize]) -> Vec<T> {
    let mut taken = Vec::with_capacity(sorted.len());
    for &i in sorted.iter().rev() {
        taken.push(items.remove(i));
    }
    taken.reverse();
    taken
}

fn run_batch<W: Worker>(worker: &mut W, batch: Vec<Entry<W::Input, W::Output>>, metrics: &Metrics) {
    let started = Instant::now();
    metrics.batch_size.observe(batch.len() as f64);
    metrics
        .batch_tokens
        .observe(batch.iter().map(|e| e.tokens).sum::<usize>() as f64);
    let mut inputs = Vec::with_capacity(batch.len());
    let mut replies = Vec::with_capacity(batch.len());
    for entry in batch {
        metrics
            .queue_seconds
            .observe(started.duration_since(entry.enqueued).as_secs_f64());
        inputs.push(entry.input);
        replies.push(entry.reply);
    }
    let expected = inputs.len();
    let result = match catch_unwind(AssertUnwindSafe(|| worker.run(inputs))) {
        Ok(Ok(outputs)) if outputs.len() == expected => Ok(outputs),
        Ok(Ok(outputs)) => Err(format!(
            "the model returned {} outputs for {expected} inputs",
            outputs.len()
        )),
        Ok(Err(e)) => Err(format!("{e:#}")),
        Err(panic) => Err(panic_message(panic.as_ref())),
    };
    metrics
        .inference_seconds
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(outputs) => {
            for (reply, output) in replies.into_iter().zip(outputs) {
                // The caller may have gone away (client disconnected): nothing to do then.
                let _ = reply.send(Ok(output));
            }
        }
        Err(message) => {
            tracing::error!(error = %message, "inference failed for a batch");
            for reply in replies {
                let _ = reply.send(Err(BatchError::Failed(message.clone())));
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let text = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    format!("panic in the model thread: {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles numbers; panics on 13 to prove a bad batch does not take the thread down.
    struct Doubler {
        batches: Arc<Mutex<Vec<Vec<u32>>>>,
    }

    impl Worker for Doubler {
        type Input = u32;
        type Output = u32;
        fn run(&mut self, batch: Vec<u32>) -> anyhow::Result<Vec<u32>> {
            self.batches.lock().unwrap().push(batch.clone());
            assert!(!batch.contains(&13), "unlucky input");
            Ok(batch.into_iter().map(|x| x * 2).collect())
        }
    }

    /// Every batch the worker ran, in order.
    type Seen = Arc<Mutex<Vec<Vec<u32>>>>;

    fn batcher(max_queue_tokens: usize, max_wait_ms: u64) -> (Batcher<u32, u32>, Seen) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let settings = Settings {
            limits: BatchLimits {
                max_tokens: 1000,
                max_sequences: 4,
            },
            max_wait: Duration::from_millis(max_wait_ms),
            max_queue_tokens,
        };
        (
            Batcher::start(
                Doubler {
                    batches: batches.clone(),
                },
                settings,
                Arc::new(Metrics::new()),
            ),
            batches,
        )
    }

    const TOKENS: usize = 10;

    fn jobs(xs: &[u32]) -> Vec<Job<u32>> {
        xs.iter()
            .map(|&x| Job {
                input: x,
                tokens: TOKENS,
            })
            .collect()
    }

    /// One request of tenant 0 through the whole path: admitted, queued, answered.
    async fn run(b: &Batcher<u32, u32>, xs: &[u32]) -> Result<Vec<u32>, BatchError> {
        let request = b.admit(0, xs.len() * TOKENS)?;
        b.announce().run_all(&request, jobs(xs)).await
    }

    #[tokio::test]
    async fn answers_every_caller_in_order_and_batches() {
        let (b, batches) = batcher(100, 50);
        assert_eq!(
            run(&b, &[1, 2, 3, 4, 5]).await.unwrap(),
            vec![2, 4, 6, 8, 10]
        );
        let sizes: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 1]);
    }

    #[tokio::test]
    async fn panic_fails_only_its_batch() {
        let (b, _) = batcher(100, 0);
        let err = run(&b, &[13]).await.unwrap_err();
        assert!(
            matches!(err, BatchError::Failed(ref m) if m.contains("unlucky input")),
            "{err:?}"
        );
        assert_eq!(run(&b, &[7]).await.unwrap(), vec![14]);
    }

    #[tokio::test]
    async fn lone_request_does_not_wait_but_announced_work_is_awaited() {
        let (b, batches) = batcher(100, 10_000);
        let started = Instant::now();
        assert_eq!(run(&b, &[1]).await.unwrap(), vec![2]);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no max_wait for a lone request"
        );

        // A second request announced before the first submits: they share one batch.
        let b = Arc::new(b);
        let second = b.announce();
        let first = {
            let b = b.clone();
            tokio::spawn(async move { run(&b, &[3]).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let request = b.admit(0, TOKENS).unwrap();
        let out = second.run_all(&request, jobs(&[4])).await.unwrap();
        assert_eq!((first.await.unwrap().unwrap(), out), (vec![6], vec![8]));
        assert_eq!(batches.lock().unwrap().last().unwrap(), &vec![3, 4]);
    }

    #[tokio::test]
    async fn after_a_batch_of_two_requests_a_lone_one_waits_once() {
        let (b, batches) = batcher(100, 300);
        // Two requests in one batch: the announcement holds the first until the second is in.
        let holder = b.announce();
        let (r1, r2) = (b.admit(0, TOKENS).unwrap(), b.admit(0, TOKENS).unwrap());
        let first = b.submit(r1.group, jobs(&[1])).unwrap();
        let second = b.submit(r2.group, jobs(&[2])).unwrap();
        drop(holder);
        assert_eq!(wait_all(first).await.unwrap(), vec![2]);
        assert_eq!(wait_all(second).await.unwrap(), vec![4]);
        assert_eq!(batches.lock().unwrap().last().unwrap(), &vec![1, 2]);

        let lone = |x| {
            let b = &b;
            async move {
                let started = Instant::now();
                assert_eq!(run(b, &[x]).await.unwrap(), vec![x * 2]);
                started.elapsed()
            }
        };
        // Expecting a second request, the batcher waits for it, but only up to max_wait...
        assert!(lone(3).await >= Duration::from_millis(300));
        // ...and then expects one request per batch again.
        assert!(lone(4).await < Duration::from_millis(300));
    }

    #[tokio::test]
    async fn admission_is_bounded_by_the_tokens_in_flight_not_by_later_levels() {
        let (b, _) = batcher(25, 10_000);
        let mut first = b.admit(0, 20).unwrap();
        assert_eq!(b.admit(1, 10).err(), Some(BatchError::QueueFull));
        // A later level of an admitted request is never refused, and counts.
        first.grow(30);
        assert_eq!(b.admit(1, 1).err(), Some(BatchError::QueueFull));
        drop(first);
        // Nothing in flight: even a request over the whole bound runs (alone).
        let big = b.admit(1, 100).unwrap();
        assert_eq!(b.admit(2, 1).err(), Some(BatchError::QueueFull));
        drop(big);
        assert!(b.admit(2, 25).is_ok());
    }

    #[tokio::test]
    async fn sequences_of_an_abandoned_request_never_run() {
        let (b, batches) = batcher(1000, 10_000);
        let metrics = b.shared.metrics.clone();
        // Holds the queue (an announced arrival) while one request gives up.
        let holder = b.announce();
        let gone = b.admit(0, 3 * TOKENS).unwrap();
        let replies = b.submit(gone.group, jobs(&[1, 2, 3])).unwrap();
        drop((replies, gone));
        let stays = b.admit(1, TOKENS).unwrap();
        let answer = holder.run_all(&stays, jobs(&[4]));
        assert_eq!(answer.await.unwrap(), vec![8]);
        assert_eq!(*batches.lock().unwrap(), vec![vec![4]]);
        assert_eq!(metrics.dropped_sequences.get(), 3);
    }

    #[tokio::test]
    async fn shutdown_drains_queued_work() {
        let (b, _) = batcher(100, 10_000);
        let request = b.admit(0, 2 * TOKENS).unwrap();
        let replies = b.submit(request.group, jobs(&[1, 2])).unwrap();
        b.shutdown();
        for (reply, want) in replies.into_iter().zip([2, 4]) {
            assert_eq!(reply.await.unwrap().unwrap(), want);
        }
        assert_eq!(b.admit(0, TOKENS).err(), Some(BatchError::ShuttingDown));
    }

    #[test]
    fn a_full_queue_says_when_to_retry() {
        let e = Error::from(BatchError::QueueFull);
        assert_eq!((e.kind, e.retry_after), (Kind::Unavailable, Some(1)));
        assert_eq!(Error::from(BatchError::Failed("x".into())).kind, Kind::Internal);
    }
}
