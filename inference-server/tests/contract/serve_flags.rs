//! The pod contract as the server reads it: every Deployment in the operator's snapshots
//! (`operator/tests/snapshots/`) is parsed here with the server's own command line, and every
//! name the operator's children point at (environment variables, the HPA's Pods metric) must be
//! one the server reads or exports. A flag, variable or metric renamed on one side only fails.

use std::path::{Path, PathBuf};

use clap::{CommandFactory, Parser};
use nlu_server::config::{Cli, Command};
use nlu_server::metrics::Metrics;
use serde::Deserialize;
use serde_json::Value;

fn snapshot_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../operator/tests/snapshots")
}

/// Every object of every snapshot, with the snapshot's file name.
fn snapshot_objects() -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(snapshot_dir())
        .expect("operator snapshots")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(
        files.len() >= 4,
        "expected the operator's snapshots, found {files:?}"
    );
    let mut objects = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            objects.push((name.clone(), Value::deserialize(doc).unwrap()));
        }
    }
    objects
}

fn of_kind<'a>(objects: &'a [(String, Value)], kind: &str) -> Vec<(&'a str, &'a Value)> {
    objects
        .iter()
        .filter(|(_, o)| o["kind"] == kind)
        .map(|(f, o)| (f.as_str(), o))
        .collect()
}

/// The containers of a Deployment's pod template, init containers first.
fn containers(deployment: &Value) -> Vec<&Value> {
    let spec = &deployment["spec"]["template"]["spec"];
    ["initContainers", "containers"]
        .iter()
        .filter_map(|k| spec[k].as_array())
        .flatten()
        .collect()
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

/// The container's environment as the flags it stands for (clap reads variables from the
/// process environment, which a test cannot set per container): `--redis-url <value>` for
/// `NLU_REDIS_URL`. A value from a Secret stands in as a placeholder URL.
fn env_as_args(container: &Value) -> Vec<String> {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let mut args = Vec::new();
    for env in container["env"].as_array().into_iter().flatten() {
        let name = env["name"].as_str().unwrap();
        let Some(arg) = serve
            .get_arguments()
            .find(|a| a.get_env().is_some_and(|e| e == name))
        else {
            panic!("the server reads no flag from {name}");
        };
        args.push(format!("--{}", arg.get_long().unwrap()));
        args.push(
            env["value"]
                .as_str()
                .unwrap_or("redis://from-secret:6379/0")
                .to_owned(),
        );
    }
    args
}

#[test]
fn every_operator_deployment_parses_with_the_server_command_line() {
    let objects = snapshot_objects();
    let deployments = of_kind(&objects, "Deployment");
    assert!(!deployments.is_empty());
    let mut serves = 0;
    for (file, deployment) in deployments {
        for container in containers(deployment) {
            let mut args = strings(&container["args"]);
            if args.first().is_some_and(|a| a == "serve") {
                args.extend(env_as_args(container));
            }
            let argv = std::iter::once("nlu-server".to_owned()).chain(args.iter().cloned());
            let cli = Cli::try_parse_from(argv).unwrap_or_else(|e| {
                panic!("{file}: the server refuses the operator's args {args:?}:\n{e}")
            });
            if let Command::Serve(serve) = cli.command {
                serves += 1;
                serve
                    .batching
                    .validate()
                    .unwrap_or_else(|e| panic!("{file}: {e}"));
            }
        }
    }
    assert!(serves >= 4, "every snapshot has a serving container");
}

#[test]
fn every_environment_variable_the_operator_sets_is_read_by_the_server() {
    let cli = Cli::command();
    let serve = cli.find_subcommand("serve").unwrap();
    let read: Vec<String> = serve
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let objects = snapshot_objects();
    let mut seen = 0;
    for (file, deployment) in of_kind(&objects, "Deployment") {
        for container in containers(deployment) {
            for env in container["env"].as_array().into_iter().flatten() {
                let name = env["name"].as_str().unwrap();
                assert!(
                    read.iter().any(|r| r == name),
                    "{file}: the server does not read {name}"
                );
                seen += 1;
            }
        }
    }
    assert!(seen > 0, "some snapshot sets the Redis URL variable");
}

#[test]
fn every_hpa_pods_metric_is_exported_by_the_server() {
    let exported = Metrics::new().render();
    let objects = snapshot_objects();
    let mut seen = 0;
    for (file, hpa) in of_kind(&objects, "HorizontalPodAutoscaler") {
        for metric in hpa["spec"]["metrics"].as_array().unwrap() {
            if metric["type"] != "Pods" {
                continue;
            }
            let name = metric["pods"]["metric"]["name"].as_str().unwrap();
            assert!(
                exported.contains(&format!("# TYPE {name} gauge")),
                "{file}: the HPA scales on {name}, which the server does not export:\n{exported}"
            );
            seen += 1;
        }
    }
    assert!(seen > 0, "some snapshot scales on in-flight requests");
}
