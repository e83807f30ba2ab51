//! SiameseUniNLU against `uninlu-tiny/expected.json`: tokenization, every traced prompt's ids and
//! merged logits, and the final output, from both weight formats and both tokenizer sources.

use std::collections::HashMap;

use nlu_server::model::{Dtype, ModelFiles, UniNluModel};
use nlu_server::uninlu::{predict, Limits, Schema, Traversal};
use serde_json::Value;

use super::common::{f64s, fixtures, read_json, select, u32s};

const TOLERANCE: f64 = 1e-3;

fn load(names: &[&str]) -> (tempfile::TempDir, UniNluModel) {
    let dir = select(&fixtures().join("uninlu-tiny/model"), names);
    let files = ModelFiles::from_dir(dir.path()).unwrap();
    let model = UniNluModel::load(&files, Dtype::F32).unwrap();
    (dir, model)
}

fn check_all_cases(model: &UniNluModel, source: &str) {
    let cases = read_json(&fixtures().join("uninlu-tiny/expected.json"));
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 13);
    let mut max_diff = 0f64;
    for case in cases {
        let name = format!("{source}/{}", case["name"].as_str().unwrap());
        let text = case["text"].as_str().unwrap();
        let limits = Limits::default();
        let tok = model.tokenizer();

        let enc = tok.encode(text, None).unwrap();
        assert_eq!(enc.ids, u32s(&case["text_ids"]), "{name}: text ids");
        let offsets: Vec<(usize, usize)> = case["text_offsets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| {
                (
                    o[0].as_u64().unwrap() as usize,
                    o[1].as_u64().unwrap() as usize,
                )
            })
            .collect();
        assert_eq!(enc.offsets, offsets, "{name}: text offsets");

        // The trace by prompt text: a prompt repeats only with an identical ancestor chain,
        // hence identical logits.
        let trace: HashMap<&str, &Value> = case["trace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| (t["prompt"].as_str().unwrap(), t))
            .collect();
        let mut expected_prompts: Vec<&str> = case["trace"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["prompt"].as_str().unwrap())
            .collect();

        let schema = Schema::parse(&case["schema"], &limits).unwrap();
        let mut traversal = Traversal::new(tok, text, schema, &limits).unwrap();
        let states = model.encode_text(traversal.text_windows()).unwrap();
        let mut ran = Vec::new();
        loop {
            let jobs = traversal.next_prompts(tok).unwrap();
            if jobs.is_empty() {
                break;
            }
            let ids: Vec<Vec<u32>> = jobs.iter().map(|j| j.ids.clone()).collect();
            let logits = model.score(&states, &ids).unwrap();
            for (job, l) in jobs.iter().zip(&logits) {
                let t = trace.get(job.prompt.as_str()).unwrap_or_else(|| {
                    panic!("{name}: prompt {:?} is not in the trace", job.prompt)
                });
                assert_eq!(
                    job.ids,
                    u32s(&t["prompt_ids"]),
                    "{name}: ids of {:?}",
                    job.prompt
                );
                for (what, got, want) in
                    [("head", &l.head, &t["head"]), ("tail", &l.tail, &t["tail"])]
                {
                    let want = f64s(want);
                    assert_eq!(got.len(), want.len(), "{name}: {what} length");
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        max_diff = max_diff.max((f64::from(*g) - w).abs());
                        assert!(
                            (f64::from(*g) - w).abs() <= TOLERANCE,
                            "{name}: {what}[{i}] of {:?}: got {g}, want {w}",
                            job.prompt
                        );
                    }
                }
                ran.push(job.prompt.clone());
            }
            traversal.accept(&logits).unwrap();
        }
        let mut ran: Vec<&str> = ran.iter().map(String::as_str).collect();
        ran.sort_unstable();
        expected_prompts.sort_unstable();
        assert_eq!(ran, expected_prompts, "{name}: prompts run");
        let prediction = traversal.finish().without_scores();
        assert_eq!(
            serde_json::to_value(&prediction.output).unwrap(),
            case["output"],
            "{name}: output"
        );

        // The convenience driver gives the same answer.
        let direct = predict(model, text, &case["schema"], &limits)
            .unwrap()
            .without_scores();
        assert_eq!(direct, prediction, "{name}: predict()");
    }
    eprintln!("{source}: largest logit difference from the reference: {max_diff:.2e}");
}

#[test]
fn pytorch_bin_and_vocab_txt() {
    let (_dir, model) = load(&[
        "config.json",
        "pytorch_model.bin",
        "vocab.txt",
        "tokenizer_config.json",
    ]);
    check_all_cases(&model, "pth+vocab");
}

#[test]
fn safetensors_and_tokenizer_json() {
    let (_dir, model) = load(&["config.json", "model.safetensors", "tokenizer.json"]);
    check_all_cases(&model, "safetensors+json");
}

#[test]
fn layer_counts_come_from_the_checkpoint() {
    let (_dir, model) = load(&["config.json", "model.safetensors", "tokenizer.json"]);
    let info = model.info();
    assert_eq!(
        (info.lower_layers, info.upper_layers, info.hidden_size),
        (6, 6, 32)
    );
}

#[test]
fn classification_cases_report_labels_from_the_label_list() {
    let (_dir, model) = load(&["config.json", "model.safetensors", "tokenizer.json"]);
    let cases = read_json(&fixtures().join("uninlu-tiny/expected.json"));
    for case in cases.as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let p = predict(&model, text, &case["schema"], &Limits::default()).unwrap();
        let Some((label_list, _)) = text.split_once('|') else {
            assert_eq!(p.labels, None);
            continue;
        };
        // Recomputed from the fixture's output: leaf spans equal to a listed label.
        let listed: Vec<&str> = label_list.split(',').collect();
        let mut want: Vec<String> = Vec::new();
        for chain in case["output"].as_array().unwrap() {
            let leaf = chain.as_array().unwrap().last().unwrap();
            let span = leaf["span"].as_str().unwrap();
            let end = leaf["offset"][1].as_u64().unwrap() as usize;
            if listed.contains(&span)
                && end <= label_list.chars().count()
                && !want.iter().any(|w| w == span)
            {
                want.push(span.to_string());
            }
        }
        assert_eq!(p.labels, Some(want), "{}", case["name"]);
    }
}

#[test]
fn batched_jobs_of_different_texts_equal_separate_scoring() {
    let (_dir, model) = load(&["config.json", "model.safetensors", "tokenizer.json"]);
    let tok = model.tokenizer();
    let short = tok.encode("谷爱凌在北京冬奥会获得金牌", None).unwrap();
    let long_text = "北京冬奥会期间，来自世界各地的运动员齐聚张家口。".repeat(20);
    let long = tok.encode(&long_text, None).unwrap();
    let windows = |ids: &[u32]| nlu_server::model::windows::split(ids);
    let a = model.encode_text(&windows(&short.ids)).unwrap();
    let b = model.encode_text(&windows(&long.ids)).unwrap();
    assert_eq!(b.windows(), 2);
    let pa: Vec<Vec<u32>> = ["人物: ", "地点: "]
        .iter()
        .map(|p| tok.encode(p, Some(128)).unwrap().ids)
        .collect();
    let pb: Vec<Vec<u32>> = ["人物: 谷爱凌, 时间: "]
        .iter()
        .map(|p| tok.encode(p, Some(128)).unwrap().ids)
        .collect();
    let together = model.score_many(&[(&a, &pa), (&b, &pb)]).unwrap();
    let separate = [model.score(&a, &pa).unwrap(), model.score(&b, &pb).unwrap()];
    for (t, s) in together.iter().zip(&separate) {
        assert_eq!(t.len(), s.len());
        for (x, y) in t.iter().zip(s) {
            for (u, v) in x
                .head
                .iter()
                .chain(&x.tail)
                .zip(y.head.iter().chain(&y.tail))
            {
                assert!((u - v).abs() < 1e-4, "{u} vs {v}");
            }
        }
    }
}
