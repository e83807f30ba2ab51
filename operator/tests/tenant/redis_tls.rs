//! The operator writes tenant records over `rediss://` to a real TLS-only redis-server,
//! trusting only the CA given as --redis-ca-file.

use nlu_crds::access::{QualifiedName, RedisKeys, TenantRecord};
use nlu_operator::tenant::redis_sync::{connect, write_record};
use nlu_testkit::RedisServer;

fn record() -> TenantRecord {
    TenantRecord {
        enabled: true,
        gen: 1,
        uid: "uid-clustered".into(),
        ..TenantRecord::default()
    }
}

#[tokio::test]
async fn records_are_written_over_tls_with_the_given_ca_only() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let tenant: QualifiedName = "team-a/tls".parse().unwrap();
    let keys = RedisKeys::default();
    let ca = redis.ca_pem().expect("a TLS server").as_bytes().to_vec();

    let mut trusted = connect(&redis.url(), Some(ca)).unwrap();
    write_record(&mut trusted, &keys, &tenant, &record())
        .await
        .expect("written over TLS");
    let fields: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.tenant(&tenant))
        .query_async(&mut trusted)
        .await
        .unwrap();
    assert_eq!(TenantRecord::from_fields(&fields).unwrap(), record());

    // The system's roots do not know the test CA: the handshake fails, nothing is written.
    let mut untrusted = connect(&redis.url(), None).unwrap();
    assert!(write_record(&mut untrusted, &keys, &tenant, &record())
        .await
        .is_err());
    // A CA for a plain URL is a configuration error, said at start.
    let plain = connect("redis://127.0.0.1:1/", Some(b"pem".to_vec()));
    assert!(plain.err().unwrap().to_string().contains("rediss://"));
}
