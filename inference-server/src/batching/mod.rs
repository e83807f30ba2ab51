//! Dynamic batching: a bounded queue shared by all requests and one model thread.

pub mod queue;
pub mod scheduler;

pub use queue::BatchLimits;
pub use scheduler::{Arrival, BatchError, Batcher, Job, Settings, Worker};
