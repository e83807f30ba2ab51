//! The operator's side of Redis on a real Redis Cluster (`redis+cluster://`, three masters with a
//! replica each): the tenant record is written, usage read and every key deleted, each command
//! routed to the master of the tenant's slot.

use std::collections::HashMap;

use nlu_crds::access::redis_keys::{usage_field, DayUsage};
use nlu_crds::access::{QualifiedName, RedisKeys, TenantRecord};
use nlu_operator::tenant::redis_sync::{connect, delete_tenant, read_days, write_record};
use nlu_testkit::RedisCluster;

#[tokio::test]
async fn records_usage_and_deletion_work_on_a_cluster() {
    let Some(cluster) = RedisCluster::start() else {
        return;
    };
    let tenant: QualifiedName = "team-a/clustered".parse().unwrap();
    let keys = RedisKeys::default();
    let today = chrono::Utc::now().date_naive();
    let record = TenantRecord {
        enabled: true,
        requests_per_day: 100,
        gen: 3,
        uid: "uid-clustered".into(),
        ..TenantRecord::default()
    };
    let mut conn = connect(&cluster.url(), None).unwrap();

    write_record(&mut conn, &keys, &tenant, &record)
        .await
        .expect("written to the cluster");
    let fields: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(keys.tenant(&tenant))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(TenantRecord::from_fields(&fields).unwrap(), record);

    // What the servers would have counted, and a minute log, so deletion has several keys.
    let _: () = redis::cmd("HSET")
        .arg(keys.usage(&tenant, today))
        .arg(usage_field::REQUESTS)
        .arg(7)
        .arg(usage_field::TOKENS)
        .arg(300)
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("ZADD")
        .arg(keys.rate(&tenant))
        .arg(1)
        .arg("1:nonce")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        read_days(
            &mut conn,
            &keys,
            &tenant,
            &[today, today.pred_opt().unwrap()]
        )
        .await
        .unwrap(),
        [
            DayUsage {
                requests: 7,
                tokens: 300,
                ..DayUsage::default()
            },
            DayUsage::default()
        ],
        "one pipeline on the tenant's slot"
    );

    delete_tenant(&mut conn, &keys, &tenant, today)
        .await
        .expect("deleted on the cluster");
    let left: u64 = redis::cmd("EXISTS")
        .arg(keys.all(&tenant, today))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
