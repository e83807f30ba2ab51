//! Starts the process cluster for a person: prints the kubeconfig to use with `kubectl` and
//! `nlu-operator`, the HTTPS Ingress address and the model hub, then runs until Ctrl-C.
//!
//!   cargo build -p nlu-server && cargo run -p nlu-testkit --bin process-cluster -- \
//!       --claim models=/path/to/folder --model thenlper/gte-base-zh=../shared/fixtures/gte-tiny/model

use std::path::PathBuf;

use nlu_testkit::{workspace_binary, ClusterOptions, ProcessCluster};

fn main() {
    let mut options = ClusterOptions::new(
        std::env::var_os("NLU_CLUSTER_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("nlu-process-cluster")),
    );
    options.images.insert(
        "nlu-server".into(),
        workspace_binary("nlu-server", "nlu-server"),
    );
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        let Some((key, path)) = value.split_once('=') else {
            eprintln!("usage: process-cluster [--claim NAME=FOLDER]... [--model REPO=FOLDER]...");
            std::process::exit(2);
        };
        let path = std::fs::canonicalize(path).unwrap_or_else(|e| {
            eprintln!("{path}: {e}");
            std::process::exit(2)
        });
        match flag.as_str() {
            "--claim" => options.claims.insert(key.into(), path),
            "--model" => options.models.insert(key.into(), path),
            _ => {
                eprintln!("unknown flag {flag}");
                std::process::exit(2)
            }
        };
    }
    let Some(cluster) = ProcessCluster::start(options) else {
        std::process::exit(1)
    };
    println!("export KUBECONFIG={}", cluster.kubeconfig().display());
    let ingress = cluster.ingress_address();
    println!(
        "# HTTPS Ingress front: {ingress} (curl --connect-to HOST:443:{ingress} https://HOST/...)"
    );
    println!("# model hub: {}", cluster.hub());
    println!("# running; Ctrl-C stops the cluster and every pod");
    loop {
        std::thread::park();
    }
}
