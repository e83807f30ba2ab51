//! Processes a test starts outlive it unless something kills them: statics are never dropped,
//! and a test process may die of a signal. A small shell loop per process does it instead.

use std::process::{Command, Stdio};

/// Kills `pid` once this test process is gone, however it ends.
pub fn kill_when_this_process_ends(pid: u32) {
    // The watchdog outlives the test by design, so nobody waits for it.
    #[allow(clippy::zombie_processes)]
    Command::new("sh")
        .arg("-c")
        .arg(format!(
            "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {pid} 2>/dev/null",
            std::process::id()
        ))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh for the watchdog");
}
