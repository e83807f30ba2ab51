//! Writes the CRD YAML generated from the Rust types into every folder that ships it.
//! Run from anywhere: paths are resolved against the workspace root.

use std::path::Path;

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in nlu_crds::crdgen::CRD_DIRS {
        let dir = root.join(dir);
        std::fs::create_dir_all(&dir)?;
        for file in nlu_crds::crdgen::crd_files() {
            let path = dir.join(file.file_name);
            std::fs::write(&path, file.yaml)?;
            println!("wrote {}", path.display());
        }
    }
    Ok(())
}
