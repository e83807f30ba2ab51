//! The API listener over raw sockets: slow and idle clients are cut off on time (and only
//! then), the connection cap holds, and a thousand slowloris connections do not hold up a
//! normal client.

use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{Request, Version};
use http_body_util::Empty;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::connections::*;
use super::harness::{error_code, gte_tiny, TestServer};

const HEALTHZ: &str = "GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n";

/// The start of a request head that never ends (slowloris).
const UNFINISHED_HEAD: &[u8] = b"POST /embed HTTP/1.1\r\nHost: slow\r\nContent-Type: appl";

/// The GTE-tiny server with the listener `flags`; ready when `ready`.
async fn server(flags: &[&str], ready: bool) -> TestServer {
    let model = gte_tiny();
    let mut args = vec!["--model", &model, "--task", "embedding"];
    args.extend(flags);
    if ready {
        TestServer::start(&args).await
    } else {
        TestServer::spawn(&args).await
    }
}

/// One HTTP/1.1 response (`Content-Length` framed): status and body.
async fn read_response(stream: &mut (impl AsyncRead + Unpin)) -> (u16, String) {
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&bytes[..end]).to_lowercase();
            let status = head[9..12].parse().unwrap();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .map_or(0, |v| v.trim().parse().unwrap());
            if bytes.len() >= end + 4 + length {
                let body = String::from_utf8_lossy(&bytes[end + 4..end + 4 + length]);
                return (status, body.into_owned());
            }
        }
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "closed before a whole response: {bytes:?}");
        bytes.extend_from_slice(&buf[..n]);
    }
}

async fn exchange(stream: &mut TcpStream, request: &str) -> (u16, String) {
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await
}

/// Writes `chunk` every `every` until the connection fails.
fn trickle(
    mut to: tokio::net::tcp::OwnedWriteHalf,
    chunk: &'static [u8],
    every: Duration,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while to.write_all(chunk).await.is_ok() {
            tokio::time::sleep(every).await;
        }
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slowloris_connections_do_not_hold_up_a_normal_client() {
    // A header-read timeout longer than the test: the slow connections stay open throughout.
    let server = server(&["--header-read-timeout", "120s"], true).await;
    // A new connection for every request: each one shows the server still accepts.
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let embed = || async {
        let r = fresh
            .post(server.url("/embed"))
            .json(&json!({ "inputs": "你好" }))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    };
    let baseline = median_latency(20, embed).await;
    let slow = hold_connections(server.addr, 1000, UNFINISHED_HEAD).await;
    let loaded = median_latency(20, embed).await;
    assert_usual_latency(baseline, loaded);

    let (_, metrics) = server.get("/metrics").await;
    let open: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("nlu_open_connections "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(open > 1000, "the slow connections are still open: {open}");
    drop(slow);
}

/// Starts a request head on `stream` and keeps adding to it without ever ending it; returns how
/// long after its first byte the server closed the connection (without an answer).
async fn unfinished_head_lasts(mut stream: TcpStream) -> Duration {
    let started = Instant::now();
    stream.write_all(UNFINISHED_HEAD).await.unwrap();
    let (mut from, to) = stream.into_split();
    // Bytes keep coming, but the head never ends: the deadline is for the whole head.
    let writer = trickle(to, b"s\r\nX-Slow: ", Duration::from_millis(50));
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(30), from.read(&mut buf)).await;
    writer.abort();
    assert!(
        matches!(read, Ok(Ok(0) | Err(_))),
        "closed without an answer: {read:?}"
    );
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_head_that_never_ends_is_cut_off_at_the_header_read_timeout() {
    let timeout = Duration::from_millis(300);
    let flags = ["--header-read-timeout", "300ms", "--idle-timeout", "10s"];
    let server = server(&flags, false).await;
    let fresh = TcpStream::connect(server.addr).await.unwrap();
    let elapsed = unfinished_head_lasts(fresh).await;
    assert_timed_out(elapsed, timeout, "a new connection closed");

    // On a kept-alive connection the clock starts with the next request's first byte: the
    // idle wait before it does not count, the idle timeout does not apply after it.
    let mut kept = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut kept, HEALTHZ).await.0, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    let elapsed = unfinished_head_lasts(kept).await;
    assert_timed_out(elapsed, timeout, "a kept-alive connection closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_too_slowly_gets_408() {
    let timeout = Duration::from_millis(500);
    let server = server(&["--body-read-timeout", "500ms"], true).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                Content-Length: 10000\r\n\r\n{\"inputs\": \"";
    stream.write_all(head.as_bytes()).await.unwrap();
    let started = Instant::now();
    let (mut from, to) = stream.into_split();
    // A byte every 50 ms: never a long pause, yet the body would take minutes.
    let writer = trickle(to, b"a", Duration::from_millis(50));
    let (status, body) = tokio::time::timeout(Duration::from_secs(30), read_response(&mut from))
        .await
        .expect("an answer");
    let elapsed = started.elapsed();
    writer.abort();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!((status, error_code(&body)), (408, "body_timeout"), "{body}");
    assert_timed_out(elapsed, timeout, "answered");
}

/// Starts timing, in a task, how long the server keeps `stream` open from now.
fn time_until_closed(mut stream: TcpStream) -> tokio::task::JoinHandle<Duration> {
    let since = Instant::now();
    tokio::spawn(async move {
        wait_closed(&mut stream).await;
        since.elapsed()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_close_at_the_idle_timeout_busy_ones_do_not() {
    let idle_timeout = Duration::from_secs(1);
    let flags = ["--header-read-timeout", "300ms", "--idle-timeout", "1s"];
    let server = server(&flags, true).await;
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut idle, HEALTHZ).await.0, 200);
    // Waiting for the next request longer than the header-read timeout is not a slow head.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(exchange(&mut idle, HEALTHZ).await.0, 200);
    let idle = time_until_closed(idle);

    // Meanwhile a request whose body takes twice the idle timeout (within the default
    // body-read timeout) is in flight, and its connection stays open until it is answered.
    let mut busy = TcpStream::connect(server.addr).await.unwrap();
    let head = "POST /embed HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n\
                Content-Length: 34\r\n\r\n{\"inputs\": \"";
    busy.write_all(head.as_bytes()).await.unwrap();
    for _ in 0..20 {
        tokio::time::sleep(idle_timeout / 10).await;
        busy.write_all(b"a").await.unwrap();
    }
    busy.write_all(b"\"}").await.unwrap();
    let (status, body) = read_response(&mut busy).await;
    assert_eq!(status, 200, "{body}");
    // Answered, it is idle in turn.
    let busy = time_until_closed(busy);

    for (name, closed) in [("idle", idle), ("busy", busy)] {
        let elapsed = closed.await.unwrap();
        assert_timed_out(
            elapsed,
            idle_timeout,
            &format!("the {name} connection closed"),
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_pings_between_requests_are_idle_time_not_a_request_arriving() {
    let idle_timeout = Duration::from_secs(1);
    let flags = [
        "--header-read-timeout",
        "300ms",
        "--idle-timeout",
        "1s",
        "--http2-keep-alive-interval",
        "100ms",
    ];
    let server = server(&flags, false).await;
    let tcp = TcpStream::connect(server.addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    let connection = tokio::spawn(connection);
    let request = Request::get(server.url("/healthz"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    assert_eq!(
        (response.status().as_u16(), response.version()),
        (200, Version::HTTP_2)
    );
    let answered = Instant::now();
    // The server's pings, answered every 100 ms, keep bytes coming; it closes when idle.
    let _ = tokio::time::timeout(Duration::from_secs(30), connection)
        .await
        .expect("closed by the server");
    assert_timed_out(answered.elapsed(), idle_timeout, "closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_the_next_connection_waits_for_a_free_slot() {
    // Not waiting for readiness: the harness's client would hold a slot.
    let server = server(&["--max-connections", "2"], false).await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut first, HEALTHZ).await.0, 200);
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert_eq!(exchange(&mut second, HEALTHZ).await.0, 200);

    // Connected (the kernel's backlog holds it), but not served.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third.write_all(HEALTHZ.as_bytes()).await.unwrap();
    let waiting = tokio::time::timeout(Duration::from_millis(500), read_response(&mut third)).await;
    assert!(waiting.is_err(), "served beyond the cap: {waiting:?}");

    drop(first);
    let served = tokio::time::timeout(Duration::from_secs(5), read_response(&mut third)).await;
    assert_eq!(served.expect("served once a slot is free").0, 200);
    assert_eq!(exchange(&mut second, HEALTHZ).await.0, 200);
}
