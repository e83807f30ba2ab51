//! `--request-timeout`: a model request that has not answered in time gets 504. Its handler is
//! dropped with the timer, and with it the request's admission and every reply channel, so the
//! batcher drops the request's work that has not run yet.

use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::error::{Error, Kind};

pub async fn deadline(State(state): State<AppState>, request: Request, next: Next) -> Response {
    match tokio::time::timeout(state.request_timeout, next.run(request)).await {
        Ok(response) => response,
        Err(_) => timed_out(state.request_timeout).into_response(),
    }
}

fn timed_out(limit: Duration) -> Error {
    Error::new(
        Kind::TimedOut,
        "request_timeout",
        format!(
            "the request did not finish within {limit:?} (--request-timeout); send less work \
             (a shorter text, fewer inputs or a smaller schema) or retry when the server is less busy"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_answer_names_the_limit() {
        let e = timed_out(Duration::from_secs(90));
        assert_eq!((e.kind, e.code), (Kind::TimedOut, "request_timeout"));
        assert!(e.message.contains("within 90s"), "{}", e.message);
    }
}
