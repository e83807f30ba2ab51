//! `--dtype bf16` (AMX): embeddings of the fixture texts stay within cosine 0.999 of the
//! references computed in f32 by the original code. Skipped, with a message, on CPUs without
//! AMX-BF16.

use std::path::Path;

use nlu_server::model::kernels::linear::bf16_available;
use nlu_server::model::{Dtype, Embedder, ModelFiles, Pooling};

use super::common::{cosine, f64s, fixtures, read_json};
use super::minilm::model_dir;

/// Embeds every case of `expected` in bf16 and compares with its `field` reference.
fn check(model: &Path, expected: &Path, pooling: Pooling, field: &str) {
    let embedder = Embedder::load(
        &ModelFiles::from_dir(model).unwrap(),
        Some(pooling),
        Dtype::Bf16,
    )
    .unwrap();
    assert_eq!(embedder.info().dtype, Dtype::Bf16);
    let expected = read_json(expected);
    let max_len = expected["max_length"].as_u64().unwrap() as usize;
    let cases = expected["cases"].as_array().unwrap();
    let ids: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            embedder
                .tokenizer()
                .encode(c["text"].as_str().unwrap(), Some(max_len))
                .unwrap()
                .ids
        })
        .collect();
    let vectors = embedder.embed(&ids, true).unwrap();
    for (case, got) in cases.iter().zip(&vectors) {
        let cos = cosine(got, &f64s(&case[field]));
        assert!(
            cos > 0.999,
            "{}: {field} of {}: cosine {cos}",
            model.display(),
            case["text"]
        );
    }
}

#[test]
fn bf16_embeddings_stay_close_to_the_f32_references() {
    if !bf16_available() {
        eprintln!("skipping: this CPU has no AMX-BF16 (or the kernel refused the tile permission)");
        return;
    }
    check(
        &model_dir(),
        &fixtures().join("minilm-reference.json"),
        Pooling::Mean,
        "mean_normalized",
    );
    check(
        &fixtures().join("gte-tiny/model"),
        &fixtures().join("gte-tiny/expected.json"),
        Pooling::Cls,
        "cls_normalized",
    );
}
