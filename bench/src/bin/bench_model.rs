//! Model-only benchmark (no HTTP): embeddings throughput and latency for batch 1/8/32 x sequence
//! 16/64/256 on MiniLM (real weights, or any BERT folder given with `--model`) and a
//! BERT-base-shaped random model, and UniNLU requests (NER with 3 types, relation extraction with
//! 4 relations) on a StructBERT-base-shaped random model. Prints markdown tables and the machine
//! load, or JSON lines (`--json`, read by `bench/side_by_side.py`).
//!
//! `cargo run -p nlu-bench --bin bench_model --release -- [--model DIR] [--seconds S] [--skip-base] [--skip-uninlu] [--shapes 8x64,1x16] [--dtype bf16|int8] [--json]`
//! The model defaults to MiniLM in the cache of `scripts/fetch-minilm.sh`. Threads: `RAYON_NUM_THREADS`.
//! Kernels: the CPU's best, or at most `NLU_KERNEL`'s (`avx-vnni`, `avx2`, `gemm`: docs/server.md).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use clap::Parser;
use nlu_server::model::kernels::linear::{kernel_path, runnable};
use nlu_server::model::{Dtype, Embedder, ModelFiles, UniNluModel};
use nlu_server::uninlu::{predict, Limits};
use serde_json::json;

const BATCHES: [usize; 3] = [1, 8, 32];
const LENGTHS: [usize; 3] = [16, 64, 256];

#[derive(Parser)]
#[command(about = "Model-only benchmark of nlu-server's encoder")]
struct Args {
    /// BERT model folder (config.json, model.safetensors, tokenizer) to benchmark; default:
    /// MiniLM from $NLU_MINILM_DIR or the cache of scripts/fetch-minilm.sh (skipped if absent).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Seconds per measurement (after one warm-up run; at least 3 timed runs).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Skip the BERT-base-shaped random model.
    #[arg(long)]
    skip_base: bool,
    /// Skip the UniNLU requests.
    #[arg(long)]
    skip_uninlu: bool,
    /// `BATCHxLEN` pairs to run instead of the full grid, e.g. `8x128,1x16`.
    #[arg(long, value_parser = parse_shapes)]
    shapes: Option<Shapes>,
    /// Number format of the weight matrices: `f32`, `bf16` (AMX tiles, f32 accumulation) or
    /// `int8` (AVX-512 VNNI or AVX2, i32 accumulation); the library falls back to f32 with the
    /// server's warning where the CPU lacks what the dtype needs.
    #[arg(long, default_value = "f32")]
    dtype: Dtype,
    /// Print one JSON object per measurement (with the load before and after it) instead of
    /// markdown tables.
    #[arg(long)]
    json: bool,
}

#[derive(Clone)]
struct Shapes(Vec<(usize, usize)>);

fn parse_shapes(list: &str) -> Result<Shapes> {
    list.split(',')
        .map(|s| {
            let (b, t) = s.split_once('x').context("shape BATCHxLEN")?;
            let (b, t) = (b.parse()?, t.parse()?);
            anyhow::ensure!(b > 0 && t >= 2, "shape {s}: batch >= 1 and length >= 2");
            Ok((b, t))
        })
        .collect::<Result<_>>()
        .map(Shapes)
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// Runs `f` once to warm up, then until `budget` is spent (at least 3 runs); returns sorted
/// latencies.
fn measure(budget: Duration, mut f: impl FnMut() -> Result<()>) -> Result<Vec<Duration>> {
    f()?;
    let start = Instant::now();
    let mut times = Vec::new();
    while times.len() < 3 || start.elapsed() < budget {
        let t = Instant::now();
        f()?;
        times.push(t.elapsed());
    }
    times.sort();
    Ok(times)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn mean_secs(times: &[Duration]) -> f64 {
    times.iter().map(Duration::as_secs_f64).sum::<f64>() / times.len() as f64
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Token ids of `batch` sequences of `len` tokens ([CLS], plain word pieces in the common range
/// of the BERT vocabularies, [SEP]); `bench/side_by_side.py` builds the same ids for its peers.
fn synthetic_ids(batch: usize, len: usize) -> Vec<Vec<u32>> {
    (0..batch)
        .map(|b| {
            let mut seq = vec![101u32];
            seq.extend((0..len - 2).map(|i| 2000 + ((i * 31 + b * 7) % 5000) as u32));
            seq.push(102);
            seq
        })
        .collect()
}

fn bench_embedder(
    name: &str,
    dtype: Dtype,
    embedder: &Embedder,
    budget: Duration,
    shapes: &[(usize, usize)],
    json: bool,
) -> Result<()> {
    if !json {
        println!("\n### Embeddings: {name}, {dtype}\n");
        println!("| batch | seq | inputs/s | tokens/s | p50 ms | p99 ms | runs |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
    }
    for &(batch, len) in shapes {
        let ids = synthetic_ids(batch, len);
        let load_before = loadavg();
        let times = measure(budget, || {
            embedder.embed(&ids, true).map(drop).map_err(Into::into)
        })?;
        let mean = mean_secs(&times);
        let (inputs_s, tokens_s) = (batch as f64 / mean, (batch * len) as f64 / mean);
        let (p50, p99) = (ms(percentile(&times, 0.5)), ms(percentile(&times, 0.99)));
        if json {
            let row = json!({
                "kind": "embeddings", "model": name, "dtype": dtype.to_string(), "batch": batch, "seq": len,
                "inputs_per_s": inputs_s, "tokens_per_s": tokens_s, "p50_ms": p50, "p99_ms": p99,
                "runs": times.len(), "threads": candle_core::utils::get_num_threads(),
                "load_before": load_before, "load_after": loadavg(),
            });
            println!("{row}");
        } else {
            println!(
                "| {batch} | {len} | {inputs_s:.1} | {tokens_s:.0} | {p50:.2} | {p99:.2} | {} |",
                times.len()
            );
        }
    }
    Ok(())
}

fn bench_uninlu(model: &UniNluModel, budget: Duration, json: bool) -> Result<()> {
    if !json {
        println!("\n### UniNLU requests (StructBERT-base shape, random weights)\n");
        println!("| request | text chars | prompts | requests/s | p50 ms | p99 ms | runs |");
        println!("|---|---:|---:|---:|---:|---:|---:|");
    }
    let limits = Limits::default();
    let report = |name: &str, text: &str, prompts: usize, times: &[Duration]| {
        let (chars, per_s) = (text.chars().count(), 1.0 / mean_secs(times));
        let (p50, p99) = (ms(percentile(times, 0.5)), ms(percentile(times, 0.99)));
        if json {
            let row = json!({
                "kind": "uninlu", "request": name, "text_chars": chars, "prompts": prompts,
                "requests_per_s": per_s, "p50_ms": p50, "p99_ms": p99, "runs": times.len(),
                "load_after": loadavg(),
            });
            println!("{row}");
        } else {
            println!(
                "| {name} | {chars} | {prompts} | {per_s:.2} | {p50:.1} | {p99:.1} | {} |",
                times.len()
            );
        }
    };

    let ner_text = "1944年毕业于北大的名古屋铁道会长谷口清太郎等人在日本积极筹资，共筹款2.7亿日元，参加捐款的日本企业有69家。";
    let ner = json!({"人物": null, "地理位置": null, "组织机构": null});
    let times = measure(budget, || {
        predict(model, ner_text, &ner, &limits)
            .map(drop)
            .map_err(Into::into)
    })?;
    report("NER, 3 types (predict)", ner_text, 3, &times);

    // Relation extraction as the pipeline runs it when one person is found: the root prompt,
    // then the 4 relation prompts under that person. Spelled out with the model calls because
    // random weights find an arbitrary number of spans.
    let rel_text =
        "在北京冬奥会自由式中，2月8日上午，滑雪女子大跳台决赛中中国选手谷爱凌以188.25分获得金牌。";
    let tok = model.tokenizer();
    let ids = |p: &str| tok.encode(p, Some(128)).map(|e| e.ids);
    let root = vec![ids("人物: ")?];
    let relations = [
        "比赛项目(赛事名称)",
        "参赛地点(城市)",
        "获奖时间(时间)",
        "选手国籍(国籍)",
    ]
    .iter()
    .map(|r| ids(&format!("人物: 谷爱凌, {r}: ")))
    .collect::<Result<Vec<_>, _>>()?;
    let times = measure(budget, || {
        let text = tok.encode(rel_text, None)?;
        let states = model.encode_text(&nlu_server::model::windows::split(&text.ids))?;
        model.score(&states, &root)?;
        model.score(&states, &relations)?;
        Ok(())
    })?;
    report("relation, 1 person x 4 relations", rel_text, 5, &times);
    Ok(())
}

/// Writes a model folder with random weights (normal, std 0.02) of the given BERT shape:
/// `prefix`-ed encoder layers, or the SiameseUniNLU split when `uninlu` is set. The vocabulary
/// is the fixtures' Chinese BERT vocab (21,128 entries).
fn random_model(dir: &Path, layers: usize, uninlu: bool) -> Result<ModelFiles> {
    let (h, heads, inter, vocab, positions) = (768usize, 12usize, 3072usize, 21128usize, 512usize);
    let dev = Device::Cpu;
    let mut t = HashMap::new();
    let mut rand = |name: String, shape: &[usize]| -> Result<()> {
        let tensor = if name.ends_with("LayerNorm.weight") {
            Tensor::ones(shape, DType::F32, &dev)?
        } else if name.ends_with("bias") {
            Tensor::zeros(shape, DType::F32, &dev)?
        } else {
            Tensor::randn(0f32, 0.02, shape, &dev)?
        };
        t.insert(name, tensor);
        Ok(())
    };
    let emb = if uninlu {
        "plm.embeddings"
    } else {
        "embeddings"
    };
    rand(format!("{emb}.word_embeddings.weight"), &[vocab, h])?;
    rand(format!("{emb}.position_embeddings.weight"), &[positions, h])?;
    rand(format!("{emb}.token_type_embeddings.weight"), &[2, h])?;
    rand(format!("{emb}.LayerNorm.weight"), &[h])?;
    rand(format!("{emb}.LayerNorm.bias"), &[h])?;
    for i in 0..layers {
        let p = match (uninlu, i < layers / 2) {
            (false, _) => format!("encoder.layer.{i}"),
            (true, true) => format!("plm.encoder.layer.{i}"),
            (true, false) => format!("crossattention.layer.{}", i - layers / 2),
        };
        for (sub, out, inp) in [
            ("attention.self.query", h, h),
            ("attention.self.key", h, h),
            ("attention.self.value", h, h),
            ("attention.output.dense", h, h),
            ("intermediate.dense", inter, h),
            ("output.dense", h, inter),
        ] {
            rand(format!("{p}.{sub}.weight"), &[out, inp])?;
            rand(format!("{p}.{sub}.bias"), &[out])?;
        }
        for ln in ["attention.output.LayerNorm", "output.LayerNorm"] {
            rand(format!("{p}.{ln}.weight"), &[h])?;
            rand(format!("{p}.{ln}.bias"), &[h])?;
        }
    }
    if uninlu {
        for head in ["head_clsf", "tail_clsf"] {
            rand(format!("{head}.weight"), &[1, h])?;
            rand(format!("{head}.bias"), &[1])?;
        }
    }
    candle_core::safetensors::save(&t, dir.join("model.safetensors"))?;
    let config = json!({
        "vocab_size": vocab, "hidden_size": h, "num_hidden_layers": layers,
        "num_attention_heads": heads, "intermediate_size": inter, "hidden_act": "gelu",
        "max_position_embeddings": positions, "type_vocab_size": 2, "layer_norm_eps": 1e-12,
    });
    std::fs::write(dir.join("config.json"), serde_json::to_vec_pretty(&config)?)?;
    let fixtures =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/uninlu-tiny/model");
    for f in ["tokenizer.json", "vocab.txt", "tokenizer_config.json"] {
        std::fs::copy(fixtures.join(f), dir.join(f))
            .with_context(|| format!("copy {f} from the fixtures"))?;
    }
    Ok(ModelFiles::from_dir(dir)?)
}

fn minilm_dir() -> Option<PathBuf> {
    std::env::var_os("NLU_MINILM_DIR")
        .map(PathBuf::from)
        .or_else(|| {
            let cache = std::env::var_os("NLU_TEST_CACHE")
                .map(PathBuf::from)
                .or_else(|| {
                    std::env::var_os("HOME")
                        .map(|h| PathBuf::from(h).join(".cache/nlu-test/minilm"))
                })?;
            Some(cache.join("model"))
        })
        .filter(|d| d.join("config.json").is_file())
}

fn main() -> Result<()> {
    let args = Args::parse();
    nlu_bench::log_warnings();
    let budget = Duration::from_secs_f64(args.seconds);
    let grid: Vec<(usize, usize)> = LENGTHS
        .iter()
        .flat_map(|&t| BATCHES.iter().map(move |&b| (b, t)))
        .collect();
    let shapes = args.shapes.as_ref().map_or(&grid, |s| &s.0);
    // The server's fallback, not the AMX kernel's panic, on a CPU without AMX-BF16.
    let (dtype, fallback) = runnable(args.dtype);
    if let Some(why) = fallback {
        eprintln!("{why}");
    }
    if !args.json {
        println!(
            "# bench_model\n\nthreads: {}, kernel: {}, loadavg at start: {}",
            candle_core::utils::get_num_threads(),
            kernel_path(dtype),
            loadavg()
        );
    }
    let model = match args.model {
        Some(dir) => Some((ModelFiles::from_dir(&dir)?.name(), dir)),
        None => minilm_dir().map(|dir| ("all-MiniLM-L6-v2".to_owned(), dir)),
    };
    match model {
        Some((name, dir)) => {
            let embedder = Embedder::load(&ModelFiles::from_dir(&dir)?, None, dtype)?;
            bench_embedder(&name, dtype, &embedder, budget, shapes, args.json)?
        }
        None => eprintln!("MiniLM skipped: run scripts/fetch-minilm.sh or pass --model DIR"),
    }
    if !args.skip_base {
        let tmp = tempfile_dir("bert-base")?;
        let files = random_model(&tmp, 12, false)?;
        let embedder = Embedder::load(&files, None, dtype)?;
        let name = "BERT-base shape (random weights)";
        bench_embedder(name, dtype, &embedder, budget, shapes, args.json)?;
        std::fs::remove_dir_all(&tmp)?;
    }
    if !args.skip_uninlu {
        let tmp = tempfile_dir("uninlu-base")?;
        let files = random_model(&tmp, 12, true)?;
        bench_uninlu(&UniNluModel::load(&files, dtype)?, budget, args.json)?;
        std::fs::remove_dir_all(&tmp)?;
    }
    if !args.json {
        println!("\nloadavg at end: {}", loadavg());
    }
    Ok(())
}

fn tempfile_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("nlu-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
