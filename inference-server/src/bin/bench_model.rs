//! Model-only benchmark (no HTTP): embeddings throughput and latency for batch 1/8/32 x sequence
//! 16/64/256 on MiniLM (real weights) and a BERT-base-shaped random model, and UniNLU requests
//! (NER with 3 types, relation extraction with 4 relations) on a StructBERT-base-shaped random
//! model. Prints markdown tables and the machine load.
//!
//! `cargo run -p nlu-server --bin bench_model --release -- [--minilm DIR] [--seconds S] [--skip-base] [--skip-uninlu] [--shapes 8x64,1x16]`
//! MiniLM defaults to the folder `scripts/fetch-minilm.sh` prints.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use candle_core::{DType, Device, Tensor};
use nlu_server::model::{Embedder, ModelFiles, UniNluModel};
use nlu_server::uninlu::{predict, Limits};
use serde_json::json;

const BATCHES: [usize; 3] = [1, 8, 32];
const LENGTHS: [usize; 3] = [16, 64, 256];

struct Args {
    minilm: Option<PathBuf>,
    seconds: f64,
    skip_base: bool,
    skip_uninlu: bool,
    /// `BATCHxLEN` pairs to run instead of the full grid (quick A/B comparisons).
    shapes: Option<Vec<(usize, usize)>>,
}

fn args() -> Result<Args> {
    let mut args = Args {
        minilm: None,
        seconds: 3.0,
        skip_base: false,
        skip_uninlu: false,
        shapes: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--minilm" => args.minilm = Some(it.next().context("--minilm DIR")?.into()),
            "--seconds" => args.seconds = it.next().context("--seconds S")?.parse()?,
            "--skip-base" => args.skip_base = true,
            "--skip-uninlu" => args.skip_uninlu = true,
            "--shapes" => {
                args.shapes = Some(parse_shapes(&it.next().context("--shapes 8x64,1x16")?)?)
            }
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    Ok(args)
}

fn parse_shapes(list: &str) -> Result<Vec<(usize, usize)>> {
    list.split(',')
        .map(|s| {
            let (b, t) = s.split_once('x').context("shape BATCHxLEN")?;
            Ok((b.parse()?, t.parse()?))
        })
        .collect()
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

fn bench_embedder(
    name: &str,
    embedder: &Embedder,
    budget: Duration,
    shapes: &[(usize, usize)],
) -> Result<()> {
    println!("\n### Embeddings: {name}\n");
    println!("| batch | seq | inputs/s | tokens/s | p50 ms | p99 ms | runs |");
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    for &(batch, len) in shapes {
        {
            // Plain word-piece ids in the common range of both vocabularies.
            let ids: Vec<Vec<u32>> = (0..batch)
                .map(|b| {
                    let mut seq = vec![101u32];
                    seq.extend((0..len - 2).map(|i| 2000 + ((i * 31 + b * 7) % 5000) as u32));
                    seq.push(102);
                    seq
                })
                .collect();
            let times = measure(budget, || {
                embedder.embed(&ids, true).map(drop).map_err(Into::into)
            })?;
            let mean = mean_secs(&times);
            println!(
                "| {batch} | {len} | {:.1} | {:.0} | {:.2} | {:.2} | {} |",
                batch as f64 / mean,
                (batch * len) as f64 / mean,
                ms(percentile(&times, 0.5)),
                ms(percentile(&times, 0.99)),
                times.len()
            );
        }
    }
    Ok(())
}

fn bench_uninlu(model: &UniNluModel, budget: Duration) -> Result<()> {
    println!("\n### UniNLU requests (StructBERT-base shape, random weights)\n");
    println!("| request | text chars | prompts | requests/s | p50 ms | p99 ms | runs |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let limits = Limits::default();
    let report = |name: &str, text: &str, prompts: usize, times: &[Duration]| {
        println!(
            "| {name} | {} | {prompts} | {:.2} | {:.1} | {:.1} | {} |",
            text.chars().count(),
            1.0 / mean_secs(times),
            ms(percentile(times, 0.5)),
            ms(percentile(times, 0.99)),
            times.len()
        );
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
        let states = model.encode_text(&nlu_server::uninlu::windows::split(&text.ids))?;
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

fn minilm_dir(arg: Option<PathBuf>) -> Option<PathBuf> {
    arg.or_else(|| std::env::var_os("NLU_MINILM_DIR").map(PathBuf::from))
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
    let args = args()?;
    let budget = Duration::from_secs_f64(args.seconds);
    let grid: Vec<(usize, usize)> = LENGTHS
        .iter()
        .flat_map(|&t| BATCHES.iter().map(move |&b| (b, t)))
        .collect();
    let shapes = args.shapes.as_deref().unwrap_or(&grid);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "# bench_model\n\nthreads: {}, loadavg at start: {}",
        candle_core::utils::get_num_threads(),
        load.trim()
    );
    match minilm_dir(args.minilm) {
        Some(dir) => bench_embedder(
            "all-MiniLM-L6-v2",
            &Embedder::load(&ModelFiles::from_dir(&dir)?, None)?,
            budget,
            shapes,
        )?,
        None => println!("\nMiniLM skipped: run scripts/fetch-minilm.sh or pass --minilm DIR"),
    }
    if !args.skip_base {
        let tmp = tempfile_dir("bert-base")?;
        let files = random_model(&tmp, 12, false)?;
        bench_embedder(
            "BERT-base shape (random weights)",
            &Embedder::load(&files, None)?,
            budget,
            shapes,
        )?;
        std::fs::remove_dir_all(&tmp)?;
    }
    if !args.skip_uninlu {
        let tmp = tempfile_dir("uninlu-base")?;
        let files = random_model(&tmp, 12, true)?;
        bench_uninlu(&UniNluModel::load(&files)?, budget)?;
        std::fs::remove_dir_all(&tmp)?;
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("\nloadavg at end: {}", load.trim());
    Ok(())
}

fn tempfile_dir(name: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("nlu-bench-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
