//! The server's rooms import only what ARCHITECTURE.md's "Walls of nlu-server" table allows.

use std::path::Path;

#[test]
fn the_server_keeps_to_the_walls_architecture_md_draws() {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let document = std::fs::read_to_string(crate_dir.join("../ARCHITECTURE.md")).unwrap();
    let walls = nlu_testkit::walls::table(&document, "nlu-server").unwrap();
    let problems = nlu_testkit::walls::check(crate_dir, &walls);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
