//! A throwaway Redis Cluster: three masters and a replica each, real `redis-server` processes in
//! cluster mode on free loopback ports, joined by `redis-cli --cluster create`. Its masters can be
//! killed to watch a replica take over. Talks to the nodes through `redis-cli` so the testkit
//! needs no Redis client of its own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use crate::redis::{free_port, kill, redis_installed, spawn_server};

/// How long a node may be unreachable before the others call it failed; short, so a failover
/// takes a few seconds.
const NODE_TIMEOUT_MS: &str = "1000";

/// A running cluster, every node killed on drop (and by a watchdog when the test process dies).
pub struct RedisCluster {
    nodes: Vec<Node>,
    dir: PathBuf,
}

struct Node {
    port: u16,
    child: Option<Child>,
}

/// What the tests need of one line of `CLUSTER NODES`.
struct NodeLine {
    port: u16,
    master: bool,
    failed: bool,
    slots: Vec<(u16, u16)>,
}

impl RedisCluster {
    /// Starts six nodes and creates the cluster; returns once every node reports
    /// `cluster_state:ok`. `None` (after a visible `SKIP` line) when Redis is not installed, a
    /// panic instead when `NLU_REQUIRE_REDIS=1`.
    #[track_caller]
    pub fn start() -> Option<RedisCluster> {
        if !redis_installed() {
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "nlu-redis-cluster-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("cluster folder");
        let nodes = (0..6).map(|_| Node::start(&dir)).collect();
        let cluster = RedisCluster { nodes, dir };
        let addresses: Vec<String> = cluster
            .nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let created = Command::new("redis-cli")
            .arg("--cluster")
            .arg("create")
            .args(&addresses)
            .args(["--cluster-replicas", "1", "--cluster-yes"])
            .output()
            .expect("redis-cli could not be started");
        assert!(
            created.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        cluster.wait_until_ok("the new cluster");
        Some(cluster)
    }

    /// `redis+cluster://` with every master as a seed node.
    pub fn url(&self) -> String {
        let seeds: Vec<String> = self
            .lines()
            .iter()
            .filter(|l| l.master && !l.failed)
            .map(|l| format!("127.0.0.1:{}", l.port))
            .collect();
        format!("redis+cluster://{}/", seeds.join(","))
    }

    /// Kills the master that holds `key`'s slot once its replica has every write it acknowledged
    /// (so the test knows what the new master holds: Redis replicates asynchronously, and a crash
    /// can lose the writes the replica had not received yet). Returns once the replica is the
    /// slot's master and every live node reports `cluster_state:ok`; panics after 30 s.
    pub fn kill_master_of(&mut self, key: &str) {
        let slot: u16 = self
            .cli(self.live_port(), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("CLUSTER KEYSLOT answers a number");
        let holds = |line: &NodeLine| {
            line.master && line.slots.iter().any(|&(a, b)| (a..=b).contains(&slot))
        };
        let master = self
            .lines()
            .into_iter()
            .find(holds)
            .expect("a master holds every slot")
            .port;
        let replica = self.replica_in_sync(master);
        self.nodes
            .iter_mut()
            .find(|n| n.port == master)
            .expect("the master is one of ours")
            .stop();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.lines().iter().any(|l| l.port == replica && holds(l)) {
            assert!(
                Instant::now() < deadline,
                "replica {replica} did not take over slot {slot} within 30 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        self.wait_until_ok("the failover");
    }

    /// The port of `master`'s replica, once it is online and at the master's replication offset
    /// (polls the master's `INFO replication`, 10 s at most).
    fn replica_in_sync(&self, master: u16) -> u16 {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let info = self.cli(master, &["INFO", "replication"]);
            let offset = info
                .lines()
                .find_map(|l| l.strip_prefix("master_repl_offset:"))
                .map(str::trim);
            // `slave0:ip=127.0.0.1,port=7001,state=online,offset=1234,lag=0`
            let in_sync = info
                .lines()
                .filter(|l| l.starts_with("slave"))
                .find_map(|l| {
                    let field = |name: &str| {
                        l.split([':', ','])
                            .find_map(|f| f.strip_prefix(name)?.strip_prefix('='))
                    };
                    (field("state") == Some("online") && field("offset") == offset)
                        .then(|| field("port")?.parse().ok())
                        .flatten()
                });
            if let Some(port) = in_sync {
                return port;
            }
            assert!(
                Instant::now() < deadline,
                "no replica of {master} caught up within 10 s: {info}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (30 s at most) until every live node says `cluster_state:ok`.
    fn wait_until_ok(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            while !self
                .cli(node.port, &["CLUSTER", "INFO"])
                .contains("cluster_state:ok")
            {
                assert!(
                    Instant::now() < deadline,
                    "node {} is not ok 30 s after {what}",
                    node.port
                );
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }

    fn live_port(&self) -> u16 {
        self.nodes
            .iter()
            .find(|n| n.child.is_some())
            .expect("a live node")
            .port
    }

    /// `CLUSTER NODES` as one live node sees it.
    fn lines(&self) -> Vec<NodeLine> {
        self.cli(self.live_port(), &["CLUSTER", "NODES"])
            .lines()
            .filter_map(NodeLine::parse)
            .collect()
    }

    /// Runs one command against a node; its reply as text.
    fn cli(&self, port: u16, args: &[&str]) -> String {
        let output = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli could not be started");
        assert!(output.status.success(), "redis-cli {args:?} failed");
        String::from_utf8_lossy(&output.stdout).into_owned()
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.stop();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Node {
    /// A cluster-mode server on a free port, its cluster bus on another, its node table in `dir`.
    fn start(dir: &Path) -> Node {
        let port = free_port();
        let args = [
            "--port".into(),
            port.to_string(),
            "--cluster-port".into(),
            free_port().to_string(),
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-config-file".into(),
            format!("nodes-{port}.conf"),
            "--cluster-node-timeout".into(),
            NODE_TIMEOUT_MS.into(),
            "--dir".into(),
            dir.to_str().expect("a UTF-8 temp folder").into(),
        ];
        Node {
            port,
            child: Some(spawn_server(port, &args)),
        }
    }

    fn stop(&mut self) {
        kill(&mut self.child);
    }
}

impl NodeLine {
    /// `<id> <ip:port@cport[,hostname]> <flags> <master-id or -> <ping> <pong> <epoch> <link>
    /// <slot range>...`
    fn parse(line: &str) -> Option<NodeLine> {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let [_id, address, flags, _master_id, _, _, _, _, slots @ ..] = fields.as_slice() else {
            return None;
        };
        let port = address.split(['@', ',']).next()?.rsplit_once(':')?.1;
        let flags: Vec<&str> = flags.split(',').collect();
        Some(NodeLine {
            port: port.parse().ok()?,
            master: flags.contains(&"master"),
            failed: flags.contains(&"fail"),
            // Slots being migrated (`[slot->-id]`) do not occur in these tests.
            slots: slots
                .iter()
                .filter_map(|range| {
                    let (a, b) = range.split_once('-').unwrap_or((range, range));
                    Some((a.parse().ok()?, b.parse().ok()?))
                })
                .collect(),
        })
    }
}
