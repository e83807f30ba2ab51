//! End-to-end helpers for the kind suite (see e2e/run.sh).
