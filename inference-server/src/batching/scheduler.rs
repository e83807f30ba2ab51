//! The model thread: takes batches from the shared queue, runs them, answers each caller.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use super::queue::{run_now, select_batch, BatchLimits, Pending, Waiting};
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

#[derive(Debug, Clone)]
pub struct Settings {
    pub limits: BatchLimits,
    pub max_wait: Duration,
    pub max_queue: usize,
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
    group: u64,
    enqueued: Instant,
    reply: oneshot::Sender<Result<O, BatchError>>,
}

struct State<I, O> {
    waiting: Vec<Entry<I, O>>,
    /// Requests that announced work they are still preparing (tokenizing, decoding).
    arriving: usize,
    /// Requests in the batch taken last ([`Pending::expected`]).
    last_batch_requests: usize,
    closed: bool,
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

    /// A fresh id under which one request's sequences take their turns.
    pub fn new_group(&self) -> u64 {
        self.next_group.fetch_add(1, Ordering::Relaxed)
    }

    /// Queues all `jobs` or none. With `admit`, a queue that cannot take them all refuses at
    /// once; follow-up work of an already admitted request (`admit == false`) is always taken,
    /// so a request never fails half-way for a reason it could not have been told up front.
    pub fn submit(
        &self,
        group: u64,
        jobs: Vec<Job<I>>,
        admit: bool,
    ) -> Result<Vec<Reply<O>>, BatchError> {
        let mut state = self.shared.state.lock().expect("queue lock");
        if state.closed {
            return Err(BatchError::ShuttingDown);
        }
        if admit && state.waiting.len() + jobs.len() > self.shared.settings.max_queue {
            self.shared.metrics.queue_rejections.inc();
            return Err(BatchError::QueueFull);
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
    /// Submits `jobs` (see [`Batcher::submit`]), ends the announcement and waits for all the
    /// outputs, in order.
    pub async fn run_all(
        self,
        group: u64,
        jobs: Vec<Job<I>>,
        admit: bool,
    ) -> Result<Vec<O>, BatchError> {
        let replies = self.batcher.submit(group, jobs, admit);
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
                    group: e.group,
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

fn distinct_groups(groups: impl Iterator<Item = u64>) -> usize {
    let mut groups: Vec<u64> = groups.collect();
    groups.sort_unstable();
    groups.dedup();
    groups.len()
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

    fn batcher(max_queue: usize, max_wait_ms: u64) -> (Batcher<u32, u32>, Seen) {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let settings = Settings {
            limits: BatchLimits {
                max_tokens: 1000,
                max_sequences: 4,
            },
            max_wait: Duration::from_millis(max_wait_ms),
            max_queue,
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

    fn jobs(xs: &[u32]) -> Vec<Job<u32>> {
        xs.iter()
            .map(|&x| Job {
                input: x,
                tokens: 10,
            })
            .collect()
    }

    #[tokio::test]
    async fn answers_every_caller_in_order_and_batches() {
        let (b, batches) = batcher(100, 50);
        let g = b.new_group();
        let out = b
            .announce()
            .run_all(g, jobs(&[1, 2, 3, 4, 5]), true)
            .await
            .unwrap();
        assert_eq!(out, vec![2, 4, 6, 8, 10]);
        let sizes: Vec<usize> = batches.lock().unwrap().iter().map(Vec::len).collect();
        assert_eq!(sizes, vec![4, 1]);
    }

    #[tokio::test]
    async fn panic_fails_only_its_batch() {
        let (b, _) = batcher(100, 0);
        let err = b
            .announce()
            .run_all(b.new_group(), jobs(&[13]), true)
            .await
            .unwrap_err();
        assert!(
            matches!(err, BatchError::Failed(ref m) if m.contains("unlucky input")),
            "{err:?}"
        );
        assert_eq!(
            b.announce()
                .run_all(b.new_group(), jobs(&[7]), true)
                .await
                .unwrap(),
            vec![14]
        );
    }

    #[tokio::test]
    async fn lone_request_does_not_wait_but_announced_work_is_awaited() {
        let (b, batches) = batcher(100, 10_000);
        let started = Instant::now();
        assert_eq!(
            b.announce()
                .run_all(b.new_group(), jobs(&[1]), true)
                .await
                .unwrap(),
            vec![2]
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "no max_wait for a lone request"
        );

        // A second request announced before the first submits: they share one batch.
        let b = Arc::new(b);
        let second = b.announce();
        let first = {
            let b = b.clone();
            tokio::spawn(async move { b.announce().run_all(b.new_group(), jobs(&[3]), true).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        let out = second
            .run_all(b.new_group(), jobs(&[4]), true)
            .await
            .unwrap();
        assert_eq!((first.await.unwrap().unwrap(), out), (vec![6], vec![8]));
        assert_eq!(batches.lock().unwrap().last().unwrap(), &vec![3, 4]);
    }

    #[tokio::test]
    async fn after_a_batch_of_two_requests_a_lone_one_waits_once() {
        let (b, batches) = batcher(100, 300);
        // Two requests in one batch: the announcement holds the first until the second is in.
        let holder = b.announce();
        let first = b.submit(b.new_group(), jobs(&[1]), true).unwrap();
        let second = b.submit(b.new_group(), jobs(&[2]), true).unwrap();
        drop(holder);
        assert_eq!(wait_all(first).await.unwrap(), vec![2]);
        assert_eq!(wait_all(second).await.unwrap(), vec![4]);
        assert_eq!(batches.lock().unwrap().last().unwrap(), &vec![1, 2]);

        let lone = |x| {
            let b = &b;
            async move {
                let started = Instant::now();
                let out = b.announce().run_all(b.new_group(), jobs(&[x]), true).await;
                assert_eq!(out.unwrap(), vec![x * 2]);
                started.elapsed()
            }
        };
        // Expecting a second request, the batcher waits for it, but only up to max_wait...
        assert!(lone(3).await >= Duration::from_millis(300));
        // ...and then expects one request per batch again.
        assert!(lone(4).await < Duration::from_millis(300));
    }

    #[tokio::test]
    async fn full_queue_refuses_admission_but_not_follow_ups() {
        let (b, _) = batcher(2, 10_000);
        let _pending = b.submit(b.new_group(), jobs(&[1, 2]), true).unwrap();
        assert_eq!(
            b.submit(b.new_group(), jobs(&[3]), true).unwrap_err(),
            BatchError::QueueFull
        );
        assert!(b.submit(b.new_group(), jobs(&[3]), false).is_ok());
    }

    #[tokio::test]
    async fn shutdown_drains_queued_work() {
        let (b, _) = batcher(100, 10_000);
        let replies = b.submit(b.new_group(), jobs(&[1, 2]), true).unwrap();
        b.shutdown();
        for (reply, want) in replies.into_iter().zip([2, 4]) {
            assert_eq!(reply.await.unwrap().unwrap(), want);
        }
        assert_eq!(
            b.submit(b.new_group(), jobs(&[1]), true).unwrap_err(),
            BatchError::ShuttingDown
        );
    }
}
