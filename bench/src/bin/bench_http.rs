//! End-to-end benchmark through HTTP: the real server (in-process on a loopback port, or an
//! external one with `--url`) on MiniLM, driven by closed-loop clients. Prints markdown tables
//! (or JSON lines with `--json`, read by `bench/side_by_side.py`) of the chosen workloads:
//! server overhead for one 16-token input (HTTP p50 minus the model's own p50), a batch x length
//! grid, and the two mixed-length workloads of 32 inputs per request: 8-60 words per input, and
//! 16-256 characters per input (the target of issue 9). `--workloads rerank` instead runs a
//! reranker (`--task rerank`): a query and 32 passages of 16-256 characters per `/v1/rerank`
//! request. Records /proc/loadavg before and after every figure: these machines are shared.
//!
//! `cargo run --release -p nlu-bench --bin bench_http -- [--model DIR] [--url URL] [--seconds S] [--clients N] [--workloads mixed-chars,...] [--dtype bf16|int8] [--json]`
//! The model defaults to the folder `scripts/fetch-minilm.sh` prints. Threads: `RAYON_NUM_THREADS`.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use nlu_server::config::{Cli, Command};
use nlu_server::model::{Dtype, Embedder, ModelFiles};

#[derive(Parser)]
#[command(about = "HTTP benchmark of nlu-server on MiniLM")]
struct Args {
    /// Model folder (default: what scripts/fetch-minilm.sh prints).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Benchmark a running server instead of starting one in-process.
    #[arg(long)]
    url: Option<String>,
    /// Seconds per measurement.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Concurrent clients of the mixed workloads (which also run with one client).
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Workloads to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Workload::ALL)]
    workloads: Vec<Workload>,
    /// Number format of the in-process server's weights (`serve --dtype`): `f32`, `bf16` or
    /// `int8` (the server falls back to f32, with its warning, where the CPU lacks what it needs).
    #[arg(long, default_value = "f32")]
    dtype: Dtype,
    /// Print one JSON object per figure (with the load before and after it) instead of markdown.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Workload {
    /// One 16-token input, one client: HTTP p50 against the model's own p50.
    Overhead,
    /// Batch 1/8/32 x 16/64/256 tokens, one client.
    Grid,
    /// 32 inputs of 8-60 words per request.
    MixedWords,
    /// 32 inputs of 16-256 characters per request.
    MixedChars,
    /// A query of 8 words and 32 passages of 16-256 characters per `/v1/rerank` request; needs
    /// a reranker model and runs alone (its server runs `--task rerank`).
    Rerank,
}

impl Workload {
    const ALL: [Workload; 4] = [
        Workload::Overhead,
        Workload::Grid,
        Workload::MixedWords,
        Workload::MixedChars,
    ];
}

impl std::fmt::Display for Workload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum;
        f.write_str(
            self.to_possible_value()
                .expect("no skipped variants")
                .get_name(),
        )
    }
}

/// Words that are one token each in the MiniLM (bert-base-uncased) vocabulary.
const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "mat", "while", "people", "walked", "through", "city", "after",
    "rain", "and", "market", "was", "busy", "with", "fresh", "fruit", "from", "farms", "near",
    "river", "music", "played", "in", "old", "square", "children", "laughed", "at", "small", "dog",
    "running", "around", "tree", "under", "bright", "blue", "sky",
];

/// xorshift64: deterministic texts, so runs (and bench/side_by_side.py, which copies this
/// generator) see the same inputs.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

fn word(seed: &mut u64) -> &'static str {
    WORDS[(next(seed) % WORDS.len() as u64) as usize]
}

/// Text of `words` words.
fn text(words: usize, seed: &mut u64) -> String {
    (0..words).map(|_| word(seed)).collect::<Vec<_>>().join(" ")
}

/// Text of 16-256 characters: words until that length, cut there (so the last word may be a
/// fragment, as in real truncated texts).
fn text_chars(seed: &mut u64) -> String {
    let chars = 16 + (next(seed) % 241) as usize;
    let mut out = String::new();
    while out.len() < chars {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(word(seed));
    }
    out.truncate(chars);
    out
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

struct Run {
    latencies: Vec<Duration>,
    inputs: usize,
    tokens: usize,
    elapsed: Duration,
}

/// A request body and the number of inputs (texts or pairs) it holds.
type Request = (Value, usize);

/// `/v1/embeddings` requests of the texts `make` gives.
fn embeddings(
    make: impl Fn(&mut u64) -> Vec<String> + Send + Sync + 'static,
) -> impl Fn(&mut u64) -> Request + Send + Sync + 'static {
    move |seed| {
        let batch = make(seed);
        let inputs = batch.len();
        (json!({ "input": batch }), inputs)
    }
}

/// `clients` closed-loop clients, each sending requests made by `make` until `seconds` pass;
/// every answer must be 200 with OpenAI's (and Cohere's) `usage.prompt_tokens`.
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    seconds: f64,
    make: impl Fn(&mut u64) -> Request + Send + Sync + 'static,
) -> Result<Run> {
    let make = Arc::new(make);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (client, url, make) = (client.clone(), url.to_owned(), make.clone());
            tokio::spawn(async move {
                let mut seed = 0x9E37_79B9_7F4A_7C15u64 ^ (c as u64 + 1);
                let (mut latencies, mut inputs, mut tokens) = (Vec::new(), 0, 0);
                while Instant::now() < deadline {
                    let (body, n) = make(&mut seed);
                    let t = Instant::now();
                    let r = client.post(&url).json(&body).send().await?;
                    anyhow::ensure!(r.status() == 200, "status {}", r.status());
                    let body: Value = r.json().await?;
                    latencies.push(t.elapsed());
                    inputs += n;
                    tokens += body["usage"]["prompt_tokens"].as_u64().context("usage")? as usize;
                }
                anyhow::Ok((latencies, inputs, tokens))
            })
        })
        .collect();
    let mut run = Run {
        latencies: Vec::new(),
        inputs: 0,
        tokens: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (l, i, t) = task.await??;
        run.latencies.extend(l);
        run.inputs += i;
        run.tokens += t;
    }
    run.elapsed = started.elapsed();
    run.latencies.sort();
    Ok(run)
}

/// One figure: a markdown row, or a JSON object with the load before and after it.
fn report(
    json: bool,
    workload: Workload,
    label: &str,
    clients: usize,
    run: &Run,
    load_before: &str,
) {
    let secs = run.elapsed.as_secs_f64();
    let (inputs_s, tokens_s) = (run.inputs as f64 / secs, run.tokens as f64 / secs);
    let (p50, p99) = (
        percentile(&run.latencies, 0.5),
        percentile(&run.latencies, 0.99),
    );
    if json {
        let row = json!({
            "workload": workload.to_string(), "label": label, "clients": clients,
            "inputs_per_s": inputs_s, "tokens_per_s": tokens_s,
            "p50_ms": p50.as_secs_f64() * 1e3, "p99_ms": p99.as_secs_f64() * 1e3,
            "requests": run.latencies.len(), "load_before": load_before, "load_after": loadavg(),
        });
        println!("{row}");
    } else {
        println!(
            "| {label} | {inputs_s:.1} | {tokens_s:.0} | {} | {} | {} |",
            ms(p50),
            ms(p99),
            run.latencies.len()
        );
    }
}

fn minilm_dir() -> Result<PathBuf> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-minilm.sh");
    let out = std::process::Command::new("bash").arg(script).output()?;
    anyhow::ensure!(
        out.status.success(),
        "fetch-minilm.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(PathBuf::from(
        String::from_utf8(out.stdout)?
            .lines()
            .last()
            .context("no folder printed")?
            .trim(),
    ))
}

/// The model's own p50 for one 16-token input, to subtract from the HTTP latency (in the dtype
/// the server runs: `runnable` is the server's own fallback).
fn model_only_p50(dir: &std::path::Path, dtype: Dtype, seconds: f64) -> Result<Duration> {
    let (dtype, _) = nlu_server::model::kernels::linear::runnable(dtype);
    let embedder = Embedder::load(&ModelFiles::from_dir(dir)?, None, dtype)?;
    let ids = embedder.tokenizer().encode(&text(14, &mut 7), None)?.ids;
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut latencies = Vec::new();
    while Instant::now() < deadline || latencies.len() < 10 {
        let t = Instant::now();
        embedder.embed(std::slice::from_ref(&ids), true)?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    Ok(percentile(&latencies, 0.5))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let model = match &args.model {
        Some(m) => m.clone(),
        None => minilm_dir()?,
    };
    if !args.json {
        println!("load before: {}", loadavg());
    }

    let rerank = args.workloads.contains(&Workload::Rerank);
    anyhow::ensure!(
        !rerank || args.workloads.len() == 1,
        "the rerank workload runs alone: its server runs --task rerank"
    );
    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let (model, dtype) = (model.display().to_string(), args.dtype.to_string());
            let argv = [
                "nlu-server",
                "serve",
                "--model",
                &model,
                "--task",
                if rerank { "rerank" } else { "embedding" },
                "--max-batch-inputs",
                "1024",
                "--dtype",
                &dtype,
            ];
            let Command::Serve(serve) = Cli::try_parse_from(argv)?.command else {
                unreachable!()
            };
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let base = format!("http://{}", listener.local_addr()?);
            tokio::spawn(nlu_server::server::serve(
                *serve,
                listener,
                std::future::pending(),
            ));
            base
        }
    };
    let client = reqwest::Client::new();
    while client
        .get(format!("{base}/readyz"))
        .send()
        .await
        .map(|r| r.status() != 200)
        .unwrap_or(true)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let url = format!("{base}/v1/embeddings");
    let header = "| workload | inputs/s | tokens/s | p50 ms | p99 ms | requests |\n|---|---|---|---|---|---|";
    let json = args.json;
    let section = |title: &str| {
        if !json {
            println!("\n### {title}\n\n{header}");
        }
    };

    for &workload in &args.workloads {
        match workload {
            Workload::Overhead => {
                section("Server overhead: one 16-token input, one client");
                let model_p50 = model_only_p50(&model, args.dtype, args.seconds)?;
                let load = loadavg();
                let single = closed_loop(
                    &client,
                    &url,
                    1,
                    args.seconds,
                    embeddings(|seed| vec![text(14, seed)]),
                )
                .await?;
                report(json, workload, "HTTP, 1 x 16 tokens", 1, &single, &load);
                let http_p50 = percentile(&single.latencies, 0.5);
                let overhead = http_p50.saturating_sub(model_p50);
                if json {
                    let row = json!({
                        "workload": "overhead-model", "model_p50_ms": model_p50.as_secs_f64() * 1e3,
                        "http_p50_ms": http_p50.as_secs_f64() * 1e3,
                        "overhead_ms": overhead.as_secs_f64() * 1e3,
                    });
                    println!("{row}");
                } else {
                    println!(
                        "\nmodel alone p50 {} ms; HTTP p50 {} ms; overhead (HTTP + JSON + queue) {} ms",
                        ms(model_p50),
                        ms(http_p50),
                        ms(overhead)
                    );
                }
            }
            Workload::Grid => {
                section("Batch x length, one client");
                for batch in [1usize, 8, 32] {
                    for len in [16usize, 64, 256] {
                        let load = loadavg();
                        let run = closed_loop(
                            &client,
                            &url,
                            1,
                            args.seconds,
                            embeddings(move |seed| {
                                (0..batch).map(|_| text(len - 2, seed)).collect()
                            }),
                        )
                        .await?;
                        report(
                            json,
                            workload,
                            &format!("{batch} x {len} tokens"),
                            1,
                            &run,
                            &load,
                        );
                    }
                }
            }
            Workload::MixedWords => {
                section("Mixed lengths (8-60 words per input, 32 inputs per request)");
                for clients in [1, args.clients] {
                    let load = loadavg();
                    let run = closed_loop(
                        &client,
                        &url,
                        clients,
                        args.seconds,
                        embeddings(|seed| {
                            (0..32)
                                .map(|_| {
                                    let words = 8 + (*seed % 53) as usize;
                                    text(words, seed)
                                })
                                .collect()
                        }),
                    )
                    .await?;
                    report(
                        json,
                        workload,
                        &format!("{clients} client(s)"),
                        clients,
                        &run,
                        &load,
                    );
                }
            }
            Workload::MixedChars | Workload::Rerank => {
                let (title, url) = match workload {
                    Workload::Rerank => (
                        "Rerank (a query of 8 words and 32 passages of 16-256 characters per request)",
                        format!("{base}/v1/rerank"),
                    ),
                    _ => (
                        "Mixed lengths (16-256 characters per input, 32 inputs per request)",
                        url.clone(),
                    ),
                };
                section(title);
                for clients in [1, args.clients] {
                    let load = loadavg();
                    let passages = |seed: &mut u64| (0..32).map(|_| text_chars(seed)).collect();
                    let run = match workload {
                        Workload::Rerank => {
                            closed_loop(&client, &url, clients, args.seconds, move |seed| {
                                let query = text(8, seed);
                                let documents: Vec<String> = passages(seed);
                                (json!({ "query": query, "documents": documents }), 32)
                            })
                            .await?
                        }
                        _ => {
                            closed_loop(&client, &url, clients, args.seconds, embeddings(passages))
                                .await?
                        }
                    };
                    report(
                        json,
                        workload,
                        &format!("{clients} client(s)"),
                        clients,
                        &run,
                        &load,
                    );
                }
            }
        }
    }
    if !json {
        println!("\nload after: {}", loadavg());
    }
    Ok(())
}
