//! End-to-end benchmark through HTTP: the real server (in-process on a loopback port, or an
//! external one with `--url`) on MiniLM, driven by closed-loop clients. Prints markdown tables:
//! server overhead for one 16-token input (HTTP p50 minus the model's own p50), a batch x length
//! grid, and the mixed-length workload of the performance target (8-60 words per input, 32 inputs
//! per request). Records /proc/loadavg before and after: these machines are shared.
//!
//! `cargo run --release -p nlu-server --bin bench_http -- [--model DIR] [--url URL] [--seconds S] [--clients N]`
//! The model defaults to the folder `scripts/fetch-minilm.sh` prints.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::{json, Value};

use nlu_server::config::{Cli, Command};
use nlu_server::model::{Embedder, ModelFiles};

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
    /// Concurrent clients of the mixed workload.
    #[arg(long, default_value_t = 4)]
    clients: usize,
}

/// Words that are one token each in the MiniLM (bert-base-uncased) vocabulary.
const WORDS: &[&str] = &[
    "the", "cat", "sat", "on", "mat", "while", "people", "walked", "through", "city", "after",
    "rain", "and", "market", "was", "busy", "with", "fresh", "fruit", "from", "farms", "near",
    "river", "music", "played", "in", "old", "square", "children", "laughed", "at", "small", "dog",
    "running", "around", "tree", "under", "bright", "blue", "sky",
];

/// Deterministic text of `words` words (xorshift, so runs are comparable).
fn text(words: usize, seed: &mut u64) -> String {
    (0..words)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            WORDS[(*seed % WORDS.len() as u64) as usize]
        })
        .collect::<Vec<_>>()
        .join(" ")
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

/// `clients` closed-loop clients, each sending requests made by `make` until `seconds` pass.
async fn closed_loop(
    client: &reqwest::Client,
    url: &str,
    clients: usize,
    seconds: f64,
    make: impl Fn(&mut u64) -> Vec<String> + Send + Sync + 'static,
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
                    let batch = make(&mut seed);
                    let t = Instant::now();
                    let r = client
                        .post(&url)
                        .json(&json!({ "input": batch }))
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 200, "status {}", r.status());
                    let body: Value = r.json().await?;
                    latencies.push(t.elapsed());
                    inputs += batch.len();
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

fn row(label: &str, run: &Run) -> String {
    let secs = run.elapsed.as_secs_f64();
    format!(
        "| {label} | {:.1} | {:.0} | {} | {} | {} |",
        run.inputs as f64 / secs,
        run.tokens as f64 / secs,
        ms(percentile(&run.latencies, 0.5)),
        ms(percentile(&run.latencies, 0.99)),
        run.latencies.len()
    )
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

/// The model's own p50 for one 16-token input, to subtract from the HTTP latency.
fn model_only_p50(dir: &std::path::Path, seconds: f64) -> Result<Duration> {
    let embedder = Embedder::load(&ModelFiles::from_dir(dir)?, None)?;
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
    println!("load before: {}", loadavg());

    let base = match &args.url {
        Some(url) => url.trim_end_matches('/').to_owned(),
        None => {
            let model = model.display().to_string();
            let argv = [
                "nlu-server",
                "serve",
                "--model",
                &model,
                "--task",
                "embedding",
                "--max-batch-inputs",
                "1024",
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

    println!("\n### Server overhead: one 16-token input, one client\n");
    let model_p50 = model_only_p50(&model, args.seconds)?;
    let single = closed_loop(&client, &url, 1, args.seconds, |seed| vec![text(14, seed)]).await?;
    let http_p50 = percentile(&single.latencies, 0.5);
    println!("{header}\n{}", row("HTTP, 1 x 16 tokens", &single));
    println!(
        "\nmodel alone p50 {} ms; HTTP p50 {} ms; overhead (HTTP + JSON + queue) {} ms",
        ms(model_p50),
        ms(http_p50),
        ms(http_p50.saturating_sub(model_p50))
    );

    println!("\n### Batch x length, one client\n\n{header}");
    for batch in [1usize, 8, 32] {
        for len in [16usize, 64, 256] {
            let run = closed_loop(&client, &url, 1, args.seconds, move |seed| {
                (0..batch).map(|_| text(len - 2, seed)).collect()
            })
            .await?;
            println!("{}", row(&format!("{batch} x {len} tokens"), &run));
        }
    }

    println!("\n### Mixed lengths (8-60 words per input, 32 inputs per request)\n\n{header}");
    for clients in [1, args.clients] {
        let run = closed_loop(&client, &url, clients, args.seconds, |seed| {
            (0..32)
                .map(|_| {
                    let words = 8 + (*seed % 53) as usize;
                    text(words, seed)
                })
                .collect()
        })
        .await?;
        println!("{}", row(&format!("{clients} client(s)"), &run));
    }
    println!("\nload after: {}", loadavg());
    Ok(())
}
