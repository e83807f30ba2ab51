//! GTE-layout BERT embeddings against `gte-tiny/expected.json`: ids from both tokenizer sources,
//! CLS (normalised and raw) and mean pooling, all texts in one padded batch.

use nlu_server::model::{Dtype, Embedder, ModelFiles, Pooling};

use super::common::{cosine, f64s, fixtures, read_json, select, u32s};

fn check(names: &[&str], source: &str) {
    let model_dir = fixtures().join("gte-tiny/model");
    let dir = select(&model_dir, names);
    let files = ModelFiles::from_dir(dir.path()).unwrap();
    let expected = read_json(&fixtures().join("gte-tiny/expected.json"));
    let max_len = expected["max_length"].as_u64().unwrap() as usize;
    let cases = expected["cases"].as_array().unwrap();

    let default = Embedder::load(&files, None, Dtype::F32).unwrap();
    assert_eq!(
        default.info().pooling,
        Pooling::Cls,
        "pooling from 1_Pooling/config.json"
    );
    assert_eq!(default.info().dims, 64);
    let mean = Embedder::load(&files, Some(Pooling::Mean), Dtype::F32).unwrap();

    let ids: Vec<Vec<u32>> = cases
        .iter()
        .map(|c| {
            let enc = default
                .tokenizer()
                .encode(c["text"].as_str().unwrap(), Some(max_len))
                .unwrap();
            assert_eq!(enc.ids, u32s(&c["ids"]), "{source}: ids of {}", c["text"]);
            enc.ids
        })
        .collect();
    let outputs = [
        ("cls_normalized", default.embed(&ids, true).unwrap()),
        ("cls_raw", default.embed(&ids, false).unwrap()),
        ("mean_normalized", mean.embed(&ids, true).unwrap()),
    ];
    for (field, vectors) in &outputs {
        for (case, got) in cases.iter().zip(vectors) {
            let want = f64s(&case[*field]);
            let cos = cosine(got, &want);
            assert!(
                cos > 0.9999,
                "{source}: {field} of {}: cosine {cos}",
                case["text"]
            );
            if *field == "cls_raw" {
                // Not normalised: the length must match too.
                let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
                let got64: Vec<f64> = got.iter().map(|&x| x.into()).collect();
                assert!((norm(&got64) / norm(&want) - 1.0).abs() < 1e-3);
            }
        }
    }
}

#[test]
fn safetensors_and_tokenizer_json() {
    check(
        &[
            "config.json",
            "model.safetensors",
            "tokenizer.json",
            "1_Pooling/config.json",
        ],
        "json",
    );
}

#[test]
fn safetensors_and_vocab_txt() {
    check(
        &[
            "config.json",
            "model.safetensors",
            "vocab.txt",
            "tokenizer_config.json",
            "1_Pooling/config.json",
        ],
        "vocab",
    );
}
