//! A throwaway `redis-server` on a free loopback port, without persistence. One implementation
//! for every test tier that needs a real Redis (server auth, Tenant controller, API-server tier).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::skip;

/// A running `redis-server`, killed on drop (and, through a watchdog, when the test process dies
/// without running destructors).
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts one; `None` (after a visible `SKIP` line) when `redis-server` is not installed, a
    /// panic instead when `NLU_REQUIRE_REDIS=1`.
    #[track_caller]
    pub fn start() -> Option<RedisServer> {
        let mut redis = RedisServer {
            port: free_port(),
            child: None,
        };
        if Command::new("redis-server").arg("--version").output().is_err() {
            skip::missing(
                "redis-server",
                "NLU_REQUIRE_REDIS",
                "apt-get install -y redis-server",
            );
            return None;
        }
        redis.restart();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stops the server: a Redis outage, until [`RedisServer::restart`].
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server could not be started");
        // The watchdog outlives the test by design, so nobody waits for it.
        #[allow(clippy::zombie_processes)]
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "while kill -0 {} 2>/dev/null; do sleep 1; done; kill {} 2>/dev/null",
                std::process::id(),
                child.id()
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh for the redis watchdog");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not listen on port {} within 10 s",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("bound address").port()
}
