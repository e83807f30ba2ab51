//! `--dtype bf16` (AMX) and `--dtype int8`: embeddings of the fixture texts stay within cosine
//! 0.999 of the references computed in f32 by the original code, and UniNLU's answers on its
//! fixture cases are the f32 ones. Each dtype is skipped, with a message, on CPUs without it.

use std::path::Path;

use nlu_server::model::kernels::linear::runnable;
use nlu_server::model::{Dtype, Embedder, ModelFiles, Pooling, UniNluModel};
use nlu_server::uninlu::{predict, Limits};
use serde_json::Value;

use super::common::{case_ids, cosine, f64s, fixtures, read_json};
use super::minilm::model_dir;

/// Embeds every case of `expected` in `dtype` and compares with its `field` reference; returns
/// the lowest cosine.
fn check(model: &Path, expected: &Path, pooling: Pooling, field: &str, dtype: Dtype) -> f64 {
    let embedder =
        Embedder::load(&ModelFiles::from_dir(model).unwrap(), Some(pooling), dtype).unwrap();
    assert_eq!(embedder.info().dtype, dtype);
    let expected = read_json(expected);
    let max_len = expected["max_length"].as_u64().unwrap() as usize;
    let cases = expected["cases"].as_array().unwrap();
    let ids = case_ids(&embedder, cases, max_len);
    let vectors = embedder.embed(&ids, true).unwrap();
    let mut lowest = 1f64;
    for (case, got) in cases.iter().zip(&vectors) {
        let cos = cosine(got, &f64s(&case[field]));
        assert!(
            cos > 0.999,
            "{dtype} {}: {field} of {}: cosine {cos}",
            model.display(),
            case["text"]
        );
        lowest = lowest.min(cos);
    }
    lowest
}

/// Whether this CPU runs `dtype`; says so on stderr when not.
fn runs(dtype: Dtype) -> bool {
    match runnable(dtype) {
        (_, Some(why)) => {
            eprintln!("skipping: {why}");
            false
        }
        _ => true,
    }
}

/// Both embedding fixtures: real MiniLM (mean pooling) and gte-tiny (CLS).
fn check_embeddings(dtype: Dtype) {
    let minilm = check(
        &model_dir(),
        &fixtures().join("minilm-reference.json"),
        Pooling::Mean,
        "mean_normalized",
        dtype,
    );
    let gte = check(
        &fixtures().join("gte-tiny/model"),
        &fixtures().join("gte-tiny/expected.json"),
        Pooling::Cls,
        "cls_normalized",
        dtype,
    );
    eprintln!(
        "{dtype}: lowest cosine to the f32 references: MiniLM {minilm:.6}, gte-tiny {gte:.6}"
    );
}

#[test]
fn bf16_embeddings_stay_close_to_the_f32_references() {
    if runs(Dtype::Bf16) {
        check_embeddings(Dtype::Bf16);
    }
}

#[test]
fn int8_embeddings_stay_close_to_the_f32_references() {
    if runs(Dtype::Int8) {
        check_embeddings(Dtype::Int8);
    }
}

/// Every UniNLU fixture case answered in int8 gives the answer of the original (f32) code, but
/// for a few chains of the cases with dozens of them: `uninlu-tiny` has random weights, so many
/// of its span scores sit next to the threshold, where int8's error flips them. The differing
/// chains are printed (docs/benchmarks.md reports them).
#[test]
fn int8_uninlu_answers_are_the_f32_ones() {
    if !runs(Dtype::Int8) {
        return;
    }
    let files = ModelFiles::from_dir(&fixtures().join("uninlu-tiny/model")).unwrap();
    let model = UniNluModel::load(&files, Dtype::Int8).unwrap();
    let cases = read_json(&fixtures().join("uninlu-tiny/expected.json"));
    let (mut chains, mut differing) = (0, 0);
    for case in cases.as_array().unwrap() {
        let (text, schema) = (case["text"].as_str().unwrap(), &case["schema"]);
        let got = predict(&model, text, schema, &Limits::default()).unwrap();
        let got = serde_json::to_value(got.without_scores().output).unwrap();
        let (got, want) = (got.as_array().unwrap(), case["output"].as_array().unwrap());
        let only_got: Vec<&Value> = got.iter().filter(|c| !want.contains(c)).collect();
        let only_want: Vec<&Value> = want.iter().filter(|c| !got.contains(c)).collect();
        let name = &case["name"];
        if !only_got.is_empty() || !only_want.is_empty() {
            eprintln!("int8 {name}: {} of {} chains differ; int8 only: {only_got:?}; f32 only: {only_want:?}", only_got.len() + only_want.len(), want.len());
        }
        // At most one chain in ten differs, and none of a case with fewer than ten.
        assert!(
            10 * (only_got.len() + only_want.len()) <= want.len(),
            "int8 {name}: got {got:?}, want {want:?}"
        );
        chains += want.len();
        differing += only_got.len() + only_want.len();
    }
    eprintln!("int8: {differing} of {chains} UniNLU chains differ from f32");
}
