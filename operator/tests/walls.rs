//! The operator's rooms import only what ARCHITECTURE.md's "Walls of nlu-operator" table allows.

#[test]
fn the_operator_keeps_to_the_walls_architecture_md_draws() {
    nlu_testkit::walls::assert_kept(std::path::Path::new(env!("CARGO_MANIFEST_DIR")), "nlu-operator");
}
