//! What users see through the real server's published API: `kubectl get` with our printer
//! columns, `kubectl explain` with our field docs.

use http::StatusCode;
use serde_json::{json, Value};

use crate::common::{create_ok, placed, replace, root, sample, with};

const NAMESPACE: &str = "kubectl";

/// A `kubectl get` table: cells cut at the header's column starts (cells may be empty).
fn table(block: &str) -> Vec<Vec<String>> {
    let mut lines = block.lines();
    let header = lines.next().expect("a header line");
    let mut starts: Vec<usize> = header
        .char_indices()
        .filter(|&(i, c)| c != ' ' && (i == 0 || header.as_bytes()[i - 1] == b' '))
        .map(|(i, _)| i)
        .collect();
    starts.push(usize::MAX);
    std::iter::once(header)
        .chain(lines)
        .map(|line| {
            starts
                .windows(2)
                .map(|w| {
                    line.get(w[0]..w[1].min(line.len()))
                        .unwrap_or("")
                        .trim()
                        .to_owned()
                })
                .collect()
        })
        .collect()
}

fn row<'a>(table: &'a [Vec<String>], name: &str) -> &'a [String] {
    table
        .iter()
        .find(|r| r[0] == name)
        .unwrap_or_else(|| panic!("no row {name} in {table:?}"))
}

fn is_age(cell: &str) -> bool {
    cell.len() >= 2
        && cell.ends_with('s')
        && cell[..cell.len() - 1].chars().all(|c| c.is_ascii_digit())
}

#[tokio::test]
async fn get_shows_the_printer_columns_with_their_values() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let client = server.client().await;
    let uninlu = create_ok(
        &client,
        &placed(sample("nluservice-uninlu.yaml"), NAMESPACE, "uninlu"),
    )
    .await;
    let status = json!({
        "conditions": [
            {"type": "Progressing", "status": "False", "reason": "Done", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "Ready", "status": "True", "reason": "Up", "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "replicas": 3, "readyReplicas": 3, "url": "https://nlu.example.com/",
    });
    let (code, answer) = replace(&client, &with(uninlu, "/status", status), Some("status")).await;
    assert_eq!(code, StatusCode::OK, "{answer:#}");
    create_ok(
        &client,
        &placed(sample("nluservice-embedding.yaml"), NAMESPACE, "gte"),
    )
    .await;
    let tenant = create_ok(&client, &placed(sample("tenant.yaml"), NAMESPACE, "acme")).await;
    let usage = json!({"usage": {"date": "2026-11-23", "requests": 42, "remaining": 9958, "tokens": 31337}});
    let (code, answer) = replace(&client, &with(tenant, "/status", usage), Some("status")).await;
    assert_eq!(code, StatusCode::OK, "{answer:#}");

    let out = server.kubectl_ok(&["get", "nlus,nlt", "-n", NAMESPACE]);
    let blocks: Vec<&str> = out.split("\n\n").filter(|b| !b.trim().is_empty()).collect();
    assert_eq!(blocks.len(), 2, "one table per kind:\n{out}");

    let services = table(blocks[0]);
    assert_eq!(
        services[0],
        ["NAME", "TASK", "READY", "REPLICAS", "URL", "AGE"],
        "\n{out}"
    );
    let row_uninlu = row(&services, "nluservice.nlu.dev/uninlu");
    assert_eq!(
        row_uninlu[1..5],
        ["uninlu", "True", "3", "https://nlu.example.com/"],
        "\n{out}"
    );
    let row_gte = row(&services, "nluservice.nlu.dev/gte");
    assert_eq!(
        row_gte[1..5],
        ["embedding", "", "", ""],
        "no status yet: empty cells\n{out}"
    );
    assert!(is_age(&row_uninlu[5]) && is_age(&row_gte[5]), "\n{out}");

    let tenants = table(blocks[1]);
    assert_eq!(
        tenants[0],
        ["NAME", "QUOTA", "USAGE", "TOKENS", "SUSPENDED", "AGE"],
        "\n{out}"
    );
    let acme = row(&tenants, "tenant.nlu.dev/acme");
    assert_eq!(acme[1..5], ["10000", "42", "31337", "false"], "\n{out}");
    assert!(is_age(&acme[5]), "\n{out}");
}

fn words(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn schema(file: &str) -> Value {
    let text = std::fs::read_to_string(root().join("manifests/crds").join(file)).unwrap();
    let crd: Value = serde_yaml::from_str(&text).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The first sentence of a description (kubectl wraps lines; compare words only).
fn opening(description: &str) -> String {
    let text = words(description);
    let end = text.find(". ").map_or(text.len(), |i| i + 1);
    text[..end].to_owned()
}

#[test]
fn explain_shows_our_field_docs() {
    let Some(server) = nlu_testkit::api_server() else {
        return;
    };
    let nlus = schema("nluservices.nlu.dev.yaml");
    let tenants = schema("tenants.nlu.dev.yaml");
    let targets = [
        ("nluservice", &nlus),
        ("nluservice.spec", &nlus["properties"]["spec"]),
        (
            "nluservice.spec.model.source",
            &nlus["properties"]["spec"]["properties"]["model"]["properties"]["source"],
        ),
        ("tenant.spec", &tenants["properties"]["spec"]),
        (
            "tenant.spec.token",
            &tenants["properties"]["spec"]["properties"]["token"],
        ),
    ];
    for (path, node) in targets {
        let shown = words(&server.kubectl_ok(&["explain", path]));
        let own = opening(node["description"].as_str().unwrap());
        assert!(
            shown.contains(&own),
            "kubectl explain {path} lacks {own:?}:\n{shown}"
        );
        for (field, property) in node["properties"].as_object().unwrap() {
            if path == "nluservice" && ["apiVersion", "kind", "metadata"].contains(&field.as_str())
            {
                continue;
            }
            let doc = opening(
                property["description"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{path}.{field} has no doc")),
            );
            assert!(
                shown.contains(&format!("{field} <")),
                "kubectl explain {path} lacks the field {field}:\n{shown}"
            );
            assert!(
                shown.contains(&doc),
                "kubectl explain {path} lacks the doc of {field} ({doc:?}):\n{shown}"
            );
        }
    }
}
