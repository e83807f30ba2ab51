//! Fixture paths and model folders that select one weights file and one tokenizer source.

use std::path::{Path, PathBuf};

pub fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures")
}

pub fn read_json(path: &Path) -> serde_json::Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

/// A temporary model folder holding symlinks to `names` of `src` only, so that
/// `ModelFiles::from_dir` picks exactly those sources.
pub fn select(src: &Path, names: &[&str]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for name in names {
        let target = dir.path().join(name);
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(src.join(name), &target).unwrap();
    }
    dir
}

pub fn cosine(a: &[f32], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len(), "dimensions differ");
    let dot: f64 = a.iter().zip(b).map(|(x, y)| f64::from(*x) * y).sum();
    let na: f64 = a.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = b.iter().map(|y| y.powi(2)).sum::<f64>().sqrt();
    dot / (na * nb)
}

pub fn f64s(v: &serde_json::Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

pub fn u32s(v: &serde_json::Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The ids of every case's `text`, truncated to `max_len`, by the embedder's tokenizer.
pub fn case_ids(
    embedder: &nlu_server::model::Embedder,
    cases: &[serde_json::Value],
    max_len: usize,
) -> Vec<Vec<u32>> {
    cases
        .iter()
        .map(|c| {
            embedder
                .tokenizer()
                .encode(c["text"].as_str().unwrap(), Some(max_len))
                .unwrap()
                .ids
        })
        .collect()
}
