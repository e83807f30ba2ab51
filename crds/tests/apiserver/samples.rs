//! Every sample of `manifests/samples/` is accepted by the real server as written: nothing
//! refused, nothing pruned, nothing defaulted away.

use crate::common::{create_ok, placed, root, sample};

#[tokio::test]
async fn every_sample_is_accepted_unchanged() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let client = server.client().await;
    let mut files: Vec<String> = std::fs::read_dir(root().join("manifests/samples"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    files.sort();
    let mut kinds = Vec::new();
    for file in &files {
        let original = sample(file);
        let name = original["metadata"]["name"].as_str().unwrap().to_owned();
        let stored = create_ok(&client, &placed(original.clone(), "samples", &name)).await;
        assert_eq!(
            stored["spec"], original["spec"],
            "{file}: the server changed the spec (pruned or defaulted fields)"
        );
        kinds.push(original["kind"].as_str().unwrap().to_owned());
    }
    kinds.sort();
    kinds.dedup();
    assert_eq!(
        kinds,
        ["NluService", "Tenant"],
        "samples of both kinds exist: {files:?}"
    );
}
