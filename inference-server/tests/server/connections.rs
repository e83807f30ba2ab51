//! Raw client sockets for the listener tests of both test binaries: slow clients held open,
//! connections timed until the server closes them, latency compared with and without load.

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// `n` connections to `addr` that have sent `prefix` and nothing more.
pub async fn hold_connections(addr: SocketAddr, n: usize, prefix: &[u8]) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream.write_all(prefix).await.unwrap();
        held.push(stream);
    }
    held
}

/// Reads and discards until the server closes the connection (at most 30 s).
pub async fn wait_closed(stream: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    let until_eof = async {
        // An error (reset) is a close too.
        while stream.read(&mut buf).await.is_ok_and(|n| n > 0) {}
    };
    tokio::time::timeout(Duration::from_secs(30), until_eof)
        .await
        .expect("the server closes the connection");
}

/// The median time of `n` calls of `request`, one after the other.
pub async fn median_latency<F, Fut>(n: usize, mut request: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        tokio::time::timeout(Duration::from_secs(10), request())
            .await
            .expect("answered within 10 s");
        times.push(started.elapsed());
    }
    times.sort();
    times[n / 2]
}

/// Loaded latency close to the baseline. Generous (10x, floored at 50 ms for a sub-millisecond
/// baseline, under 1 s): this shows the client is not held up, it is no benchmark.
pub fn assert_usual_latency(baseline: Duration, loaded: Duration) {
    let bound = (baseline * 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
    assert!(
        loaded < bound,
        "median latency {loaded:?} under load, {baseline:?} without"
    );
}

/// `elapsed` is the server's `timeout`: not much less (the server's clock may start a little
/// before the test's) and not seconds more (a loaded machine is slow, not that slow).
pub fn assert_timed_out(elapsed: Duration, timeout: Duration, what: &str) {
    let early = timeout.saturating_sub(Duration::from_millis(100));
    let late = timeout + Duration::from_secs(4);
    assert!(
        elapsed >= early && elapsed < late,
        "{what} after {elapsed:?}, the timeout being {timeout:?}"
    );
}
