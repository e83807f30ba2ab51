//! What the bench binaries share.

/// Sends the library's warnings (a dtype fallback, an `NLU_KERNEL` naming no cap) to stderr,
/// plain, and nothing below them: without a subscriber they would be dropped. Not for
/// `bench_http`, whose in-process server installs the server's own.
pub fn log_warnings() {
    tracing_subscriber::fmt()
        .with_max_level(tracing_subscriber::filter::LevelFilter::WARN)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
