//! A throwaway `redis-server` on a free loopback port, without persistence. One implementation
//! for every test tier that needs a real Redis (server auth, Tenant controller, API-server tier).
//! [`RedisServer::start_tls`] runs it TLS-only (`rediss://`) with a certificate from a CA made
//! for that one server.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::skip;

/// A running `redis-server`, killed on drop (and, through a watchdog, when the test process dies
/// without running destructors).
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
    tls: Option<Tls>,
}

/// The certificate files of a TLS-only server, in a folder removed on drop.
struct Tls {
    dir: PathBuf,
    ca_pem: String,
}

impl RedisServer {
    /// Starts one; `None` (after a visible `SKIP` line) when `redis-server` is not installed, a
    /// panic instead when `NLU_REQUIRE_REDIS=1`.
    #[track_caller]
    pub fn start() -> Option<RedisServer> {
        Self::start_with(None)
    }

    /// Starts one that accepts only TLS (`rediss://127.0.0.1:PORT/`), with a server
    /// certificate for 127.0.0.1 signed by a new CA ([`RedisServer::ca_pem`]).
    #[track_caller]
    pub fn start_tls() -> Option<RedisServer> {
        Self::start_with(Some(Tls::new()))
    }

    #[track_caller]
    fn start_with(tls: Option<Tls>) -> Option<RedisServer> {
        let mut redis = RedisServer {
            port: free_port(),
            child: None,
            tls,
        };
        if !redis_installed() {
            return None;
        }
        redis.restart();
        Some(redis)
    }

    /// `redis://127.0.0.1:PORT/`, or `rediss://...` for a TLS server.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        format!("{scheme}://127.0.0.1:{}/", self.port)
    }

    /// The PEM of the CA that signed a TLS server's certificate (`None` for plain TCP).
    pub fn ca_pem(&self) -> Option<&str> {
        self.tls.as_ref().map(|t| t.ca_pem.as_str())
    }

    /// Stops the server: a Redis outage, until [`RedisServer::restart`].
    pub fn stop(&mut self) {
        kill(&mut self.child);
    }

    /// Starts the server (again) on the same port, empty, and waits until it accepts connections.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is already running");
        let port = self.port.to_string();
        let listen: Vec<String> = match &self.tls {
            None => vec!["--port".into(), port],
            Some(tls) => {
                let file = |name: &str| tls.dir.join(name).to_string_lossy().into_owned();
                vec![
                    "--port".into(),
                    "0".into(),
                    "--tls-port".into(),
                    port,
                    "--tls-cert-file".into(),
                    file("server.pem"),
                    "--tls-key-file".into(),
                    file("server.key"),
                    "--tls-ca-cert-file".into(),
                    file("ca.pem"),
                    "--tls-auth-clients".into(),
                    "no".into(),
                ]
            }
        };
        self.child = Some(spawn_server(self.port, &listen));
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Tls {
    fn new() -> Tls {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let key = KeyPair::generate().expect("server key");
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .expect("server params")
            .signed_by(&key, &ca)
            .expect("server certificate");
        let dir = std::env::temp_dir().join(format!(
            "nlu-redis-tls-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("certificate folder");
        let ca_pem = ca.pem();
        for (name, pem) in [
            ("ca.pem", &ca_pem),
            ("server.pem", &cert.pem()),
            ("server.key", &key.serialize_pem()),
        ] {
            std::fs::write(dir.join(name), pem).expect("certificate file");
        }
        Tls { dir, ca_pem }
    }
}

impl Drop for Tls {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether `redis-server` and `redis-cli` can be run; reports them missing (a `SKIP` line, or a
/// panic under `NLU_REQUIRE_REDIS=1`) when not.
#[track_caller]
pub(crate) fn redis_installed() -> bool {
    let runs = |program: &str| Command::new(program).arg("--version").output().is_ok();
    let installed = runs("redis-server") && runs("redis-cli");
    if !installed {
        skip::missing(
            "redis-server",
            "NLU_REQUIRE_REDIS",
            "apt-get install -y redis-server",
        );
    }
    installed
}

/// Starts `redis-server <args>` on loopback without persistence (killed by a watchdog when the
/// test process ends) and waits until it accepts connections on `port`, which `args` name.
pub(crate) fn spawn_server(port: u16, args: &[String]) -> Child {
    let child = Command::new("redis-server")
        .args(args)
        .args(["--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server could not be started");
    crate::watchdog::kill_when_this_process_ends(child.id());
    wait_until_listening(port);
    child
}

/// Kills a server started by [`spawn_server`], if it runs, and reaps it.
pub(crate) fn kill(child: &mut Option<Child>) {
    if let Some(mut child) = child.take() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Waits (10 s at most) until a server accepts connections on the loopback `port`.
fn wait_until_listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "redis-server did not listen on port {port} within 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub(crate) fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free loopback port");
    listener.local_addr().expect("bound address").port()
}
