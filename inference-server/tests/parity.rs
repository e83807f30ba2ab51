//! Numerical parity of the model layer and the UniNLU pipeline with the reference fixtures
//! computed by the original Python code (`../shared/fixtures`, and `tests/fixtures` for the
//! rerank / XLM-RoBERTa models), plus hub download against a loopback stand-in and robustness
//! on odd input. One test binary (linking is slow).

mod parity {
    pub mod common;
    mod gte;
    mod hub;
    mod low_precision;
    mod minilm;
    mod rerank;
    mod robustness;
    mod uninlu;
}
