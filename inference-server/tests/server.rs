//! Server integration tests: the real server in-process on a loopback port, real HTTP, the
//! fixture models of `../shared/fixtures`.

mod server {
    pub mod connections;
    pub mod harness;

    mod bge_m3;
    mod embeddings;
    mod errors;
    mod lifecycle;
    mod listener;
    mod models;
    mod rerank;
    mod tokens;
    mod uninlu;
}
