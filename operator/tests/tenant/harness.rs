//! Test harness: a real `redis-server` per test (on a free loopback port, no persistence); the
//! Kubernetes API is nlu-testkit's fake (`nlu_testkit::FakeApi`, behind `tower-test`).
//!
//! What is real: Redis, the controller code, kube's client and finalizer helper, the access
//! contract's verifier and quota script. What is not: the API server (`testkit/src/fake_api/`
//! lists what its fake does and does not do).

use nlu_testkit::RedisServer;

/// A real `redis-server` for one test.
pub fn redis() -> RedisServer {
    RedisServer::start()
        .expect("the Tenant tests need redis-server (apt-get install -y redis-server)")
}

/// A plain synchronous connection for assertions.
pub fn redis_conn(redis: &RedisServer) -> redis::Connection {
    redis::Client::open(redis.url())
        .unwrap()
        .get_connection()
        .unwrap()
}
