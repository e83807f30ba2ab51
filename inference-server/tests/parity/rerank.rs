//! XLM-RoBERTa embeddings, bge-m3's sparse and multi-vector heads, and cross-encoders (XLM-R and
//! BERT) against `tests/fixtures/rerank/expected.json`, which `scripts/make-rerank-fixtures.py`
//! computed with transformers (and FlagEmbedding's head code) on tiny random models.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use nlu_server::model::{
    CrossEncoder, Dtype, Embedder, Family, ModelError, ModelFiles, Outputs, PairEncoding, Pooling,
    ScoreActivation,
};

use super::common::{cosine, f64s, read_json, select, u32s};

fn rerank_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rerank")
}

fn expected() -> serde_json::Value {
    read_json(&rerank_fixtures().join("expected.json"))
}

fn max_len(expected: &serde_json::Value) -> usize {
    expected["max_length"].as_u64().unwrap() as usize
}

const M3_BASE: &[&str] = &[
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "1_Pooling/config.json",
];

fn m3_embedder(extra: &[&str]) -> (tempfile::TempDir, Embedder) {
    let names: Vec<&str> = M3_BASE.iter().chain(extra).copied().collect();
    let dir = select(&rerank_fixtures().join("xlmr-m3-tiny"), &names);
    let embedder =
        Embedder::load(&ModelFiles::from_dir(dir.path()).unwrap(), None, Dtype::F32).unwrap();
    (dir, embedder)
}

/// The texts' ids from our tokenizer, checked against the fixture's.
fn text_ids(embedder: &Embedder, expected: &serde_json::Value) -> Vec<Vec<u32>> {
    expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| {
            let enc = embedder
                .tokenizer()
                .encode(case["text"].as_str().unwrap(), Some(max_len(expected)))
                .unwrap();
            assert_eq!(enc.ids, u32s(&case["ids"]), "ids of {}", case["text"]);
            enc.ids
        })
        .collect()
}

fn assert_close_vector(got: &[f32], want: &[f64], what: &str) {
    let cos = cosine(got, want);
    assert!(cos > 0.9999, "{what}: cosine {cos}");
    let norm = |v: &mut dyn Iterator<Item = f64>| v.map(|x| x * x).sum::<f64>().sqrt();
    let ratio = norm(&mut got.iter().map(|&x| f64::from(x))) / norm(&mut want.iter().copied());
    assert!((ratio - 1.0).abs() < 1e-3, "{what}: norm ratio {ratio}");
}

#[test]
fn xlmr_embeddings_match_transformers() {
    let expected = expected();
    let (_dir, cls) = m3_embedder(&[]);
    assert_eq!(cls.info().pooling, Pooling::Cls);
    assert_eq!(cls.info().dims, 32);
    // 514 position rows, numbered from padding index 1 + 1.
    assert_eq!(cls.info().max_positions, 512);
    let ids = text_ids(&cls, &expected);
    assert!(
        ids.iter().any(|s| s.len() == max_len(&expected)),
        "one text is truncated"
    );
    let files = ModelFiles::from_dir(_dir.path()).unwrap();
    let mean = Embedder::load(&files, Some(Pooling::Mean), Dtype::F32).unwrap();
    let cases = expected["texts"].as_array().unwrap();
    for (field, vectors) in [
        ("cls", cls.embed(&ids, false).unwrap()),
        ("mean", mean.embed(&ids, false).unwrap()),
    ] {
        for (case, got) in cases.iter().zip(&vectors) {
            assert_close_vector(
                got,
                &f64s(&case[field]),
                &format!("{field} of {}", case["text"]),
            );
        }
    }
    // Packed batches give what one-by-one calls give.
    let alone = cls.embed(&ids[1..2], false).unwrap();
    assert_close_vector(&alone[0], &f64s(&cases[1]["cls"]), "cls alone");
}

#[test]
fn xlmr_special_tokens_come_from_the_post_processor() {
    let (_dir, embedder) = m3_embedder(&[]);
    let tok = embedder.tokenizer();
    let (s, pad, eos) = (
        tok.token_id("<s>").unwrap(),
        tok.token_id("<pad>").unwrap(),
        tok.token_id("</s>").unwrap(),
    );
    assert_eq!((s, pad, eos), (0, 1, 2));
    let a = tok.encode("北京", None).unwrap().ids;
    let b = tok.encode("weather", None).unwrap().ids;
    let pair = tok.encode_pair("北京", "weather", None).unwrap();
    // <s> A </s></s> B </s>
    let mut want = a.clone();
    want.push(eos);
    want.extend_from_slice(&b[1..]);
    assert_eq!(pair.ids, want);
    assert_eq!(a[0], s);
    assert_eq!(*a.last().unwrap(), eos);
    assert!(pair.segments.iter().all(|&t| t == 0), "{:?}", pair.segments);
}

fn check_m3_heads(extra: &[&str]) {
    let expected = expected();
    let (_dir, embedder) = m3_embedder(extra);
    assert!(embedder.has_sparse());
    assert_eq!(embedder.colbert_dims(), Some(32));
    let ids = text_ids(&embedder, &expected);
    let all = Outputs {
        dense: true,
        sparse: true,
        colbert: true,
    };
    let got = embedder.encode(&ids, all, true).unwrap();
    let dense = embedder.embed(&ids, true).unwrap();
    for ((case, got), dense) in expected["texts"]
        .as_array()
        .unwrap()
        .iter()
        .zip(&got)
        .zip(&dense)
    {
        let text = &case["text"];
        assert_eq!(got.dense.as_ref(), Some(dense), "dense of {text}");
        let cls = f64s(&case["cls"]);
        let norm = cls.iter().map(|x| x * x).sum::<f64>().sqrt();
        let unit: Vec<f64> = cls.iter().map(|x| x / norm).collect();
        assert_close_vector(dense, &unit, &format!("dense of {text}"));

        let want: BTreeMap<u32, f64> = case["sparse"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(id, w)| (id.parse().unwrap(), w.as_f64().unwrap()))
            .collect();
        let sparse = got.sparse.as_ref().unwrap();
        let got_ids: Vec<u32> = sparse.iter().map(|&(id, _)| id).collect();
        assert_eq!(
            got_ids,
            want.keys().copied().collect::<Vec<_>>(),
            "sparse ids of {text}"
        );
        for &(id, w) in sparse {
            let diff = (f64::from(w) - want[&id]).abs();
            assert!(
                diff < 1e-4,
                "sparse weight of {id} in {text}: {w} vs {}",
                want[&id]
            );
        }

        let want = case["colbert"].as_array().unwrap();
        let colbert = got.colbert.as_ref().unwrap();
        assert_eq!(
            colbert.len(),
            ids_len(case) - 1,
            "colbert vectors of {text}"
        );
        assert_eq!(colbert.len(), want.len());
        for (i, (v, w)) in colbert.iter().zip(want).enumerate() {
            assert_close_vector(v, &f64s(w), &format!("colbert vector {i} of {text}"));
        }
    }
}

fn ids_len(case: &serde_json::Value) -> usize {
    case["ids"].as_array().unwrap().len()
}

#[test]
fn bge_m3_heads_from_safetensors_match_flagembedding() {
    check_m3_heads(&["sparse_linear.safetensors", "colbert_linear.safetensors"]);
}

#[test]
fn bge_m3_heads_from_torch_files_match_flagembedding() {
    // As the hub ships them: `sparse_linear.pt`, `colbert_linear.pt`.
    check_m3_heads(&["sparse_linear.pt", "colbert_linear.pt"]);
}

#[test]
fn absent_heads_are_skipped_cleanly() {
    let expected = expected();
    let (_dir, embedder) = m3_embedder(&["colbert_linear.safetensors"]);
    assert!(!embedder.has_sparse());
    assert_eq!(embedder.colbert_dims(), Some(32));
    let ids = text_ids(&embedder, &expected);
    let dense_only = Outputs {
        dense: true,
        ..Outputs::default()
    };
    let got = embedder.encode(&ids, dense_only, false).unwrap();
    assert!(got
        .iter()
        .all(|e| e.sparse.is_none() && e.colbert.is_none()));
    let sparse = Outputs {
        sparse: true,
        ..Outputs::default()
    };
    let err = embedder.encode(&ids, sparse, false).unwrap_err();
    assert!(matches!(err, ModelError::Input(_)), "{err}");
}

fn pair_cases(expected: &serde_json::Value) -> &Vec<serde_json::Value> {
    expected["pairs"].as_array().unwrap()
}

/// Encodes the fixture's pairs (checking ids and segments) and scores them in one batch.
fn check_reranker(model: &CrossEncoder, field: &str, source: &str) {
    let expected = expected();
    let max = max_len(&expected);
    let pairs: Vec<PairEncoding> = pair_cases(&expected)
        .iter()
        .map(|case| {
            let enc = model
                .tokenizer()
                .encode_pair(
                    case["query"].as_str().unwrap(),
                    case["passage"].as_str().unwrap(),
                    Some(max),
                )
                .unwrap();
            let want = &case[field];
            assert_eq!(
                enc.ids,
                u32s(&want["ids"]),
                "{source}: ids of {}",
                case["query"]
            );
            assert_eq!(
                enc.segments,
                u32s(&want["segments"]),
                "{source}: segments of {}",
                case["query"]
            );
            enc
        })
        .collect();
    assert!(
        pairs.iter().any(|p| p.ids.len() == max),
        "one pair is truncated"
    );
    let logits = model.score(&pairs).unwrap();
    for (case, logit) in pair_cases(&expected).iter().zip(&logits) {
        let want = &case[field];
        let diff = (f64::from(*logit) - want["logit"].as_f64().unwrap()).abs();
        assert!(
            diff < 1e-4,
            "{source}: logit of {}: {logit} vs {}",
            case["query"],
            want["logit"]
        );
        let score = model.info().activation.apply(*logit);
        assert!((f64::from(score) - want["sigmoid"].as_f64().unwrap()).abs() < 1e-4);
    }
    // Packed batches give what one-by-one calls give.
    let alone = model.score(&pairs[2..3]).unwrap();
    assert!((alone[0] - logits[2]).abs() < 1e-5);
}

#[test]
fn xlmr_reranker_matches_transformers() {
    let dir = select(
        &rerank_fixtures().join("xlmr-reranker-tiny"),
        &["config.json", "model.safetensors", "tokenizer.json"],
    );
    let model = CrossEncoder::load(&ModelFiles::from_dir(dir.path()).unwrap(), Dtype::F32).unwrap();
    assert_eq!(model.info().family, Family::Roberta);
    assert_eq!(model.info().max_positions, 512);
    // No saved activation, one label: sigmoid.
    assert_eq!(model.info().activation, ScoreActivation::Sigmoid);
    check_reranker(&model, "xlmr", "xlmr");
}

#[test]
fn bert_reranker_matches_transformers_with_both_tokenizer_sources() {
    for (source, tokenizer) in [
        ("json", &["tokenizer.json"][..]),
        ("vocab", &["vocab.txt", "tokenizer_config.json"][..]),
    ] {
        let mut names = vec!["config.json", "model.safetensors"];
        names.extend_from_slice(tokenizer);
        let dir = select(&rerank_fixtures().join("bert-reranker-tiny"), &names);
        let model =
            CrossEncoder::load(&ModelFiles::from_dir(dir.path()).unwrap(), Dtype::F32).unwrap();
        assert_eq!(model.info().family, Family::Bert);
        // Saved as sentence_transformers.activation_fn.
        assert_eq!(model.info().activation, ScoreActivation::Sigmoid);
        check_reranker(&model, "bert", source);
    }
}

#[test]
fn an_embedding_model_is_not_a_cross_encoder() {
    let dir = select(&rerank_fixtures().join("xlmr-m3-tiny"), M3_BASE);
    let err = CrossEncoder::load(&ModelFiles::from_dir(dir.path()).unwrap(), Dtype::F32)
        .err()
        .expect("XLMRobertaModel has no classification head");
    assert!(matches!(err, ModelError::Config(_)), "{err}");
}

#[test]
fn pair_truncation_keeps_the_special_tokens() {
    let dir = select(
        &rerank_fixtures().join("xlmr-reranker-tiny"),
        &["config.json", "model.safetensors", "tokenizer.json"],
    );
    let model = CrossEncoder::load(&ModelFiles::from_dir(dir.path()).unwrap(), Dtype::F32).unwrap();
    let tok = model.tokenizer();
    let long = "向量数据库".repeat(50);
    let pair = tok.encode_pair("北京的天气", &long, Some(16)).unwrap();
    assert_eq!(pair.ids.len(), 16);
    assert_eq!(pair.ids[0], 0);
    assert_eq!(*pair.ids.last().unwrap(), 2);
    // The short query is kept whole: longest_first cuts the passage.
    let query = tok.encode("北京的天气", None).unwrap().ids;
    assert_eq!(&pair.ids[..query.len()], &query[..]);
    assert!(matches!(
        tok.encode_pair("a", "b", Some(4)),
        Err(ModelError::Input(_))
    ));
    // Too long without truncation: a clear input error, not a panic.
    let many_words: String = (0..600).map(|i| format!("天气{i} ")).collect();
    let untruncated = tok.encode_pair("北京的天气", &many_words, None).unwrap();
    assert!(untruncated.ids.len() > 512);
    assert!(matches!(
        model.score(&[untruncated]),
        Err(ModelError::Input(_))
    ));
}
