//! The walls between a crate's rooms, as `ARCHITECTURE.md` draws them. A room is a top-level
//! module of the crate's `src/` (a file or a folder); the document's table for the crate lists,
//! for every room, the rooms it may import. [`check`] reads that table and every `crate::room`
//! path in the sources, and reports each import across a wall and each room the table lacks, so
//! the drawing and the code cannot drift apart.
//!
//! Test modules (from the first `#[cfg(test)]` line of a file on) and comment lines are not
//! read: tests may reach into any room.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What a room may import: the rooms named, or (`any`) every room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Allowed {
    Any,
    Rooms(BTreeSet<String>),
}

/// The walls of `crate_name` from the table under the heading `### Walls of <crate_name>` of
/// the Markdown `document`: rows of `| `room` | `other` `rooms` |`, or `any`.
pub fn table(document: &str, crate_name: &str) -> Result<BTreeMap<String, Allowed>, String> {
    let heading = format!("### Walls of {crate_name}");
    let mut lines = document.lines().skip_while(|l| l.trim() != heading);
    if lines.next().is_none() {
        return Err(format!("no heading {heading:?}"));
    }
    let rows = lines
        .skip_while(|l| !l.starts_with('|'))
        .take_while(|l| l.starts_with('|'))
        .skip(2); // the header and its separator
    let mut walls = BTreeMap::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').collect();
        let [room, imports, ..] = cells[..] else {
            return Err(format!("row {row:?} has fewer than two cells"));
        };
        let room = ticked(room)
            .into_iter()
            .next()
            .ok_or_else(|| format!("row {row:?} names no room"))?;
        let allowed = if imports.trim() == "any" {
            Allowed::Any
        } else {
            Allowed::Rooms(ticked(imports).into_iter().collect())
        };
        walls.insert(room, allowed);
    }
    if walls.is_empty() {
        return Err(format!("the table under {heading:?} has no rows"));
    }
    Ok(walls)
}

/// The words in backticks of a table cell.
fn ticked(cell: &str) -> Vec<String> {
    cell.split('`')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

/// The rooms a source file imports, read from its `crate::room` paths.
pub fn imports(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .take_while(|l| l.trim() != "#[cfg(test)]")
        .filter(|l| !l.trim_start().starts_with("//"))
        .flat_map(|l| l.match_indices("crate::").map(move |(i, _)| &l[i + 7..]))
        .filter_map(|rest| {
            let room: String = rest
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            (!room.is_empty()).then_some(room)
        })
        .collect()
}

/// Every wall crossed in the crate at `crate_dir`, and every room of its `src/` the table
/// lacks, as sentences; empty when the code keeps to the drawing. `lib.rs`, `main.rs` and
/// `src/bin/` are the crate's doors, not rooms.
pub fn check(crate_dir: &Path, walls: &BTreeMap<String, Allowed>) -> Vec<String> {
    let src = crate_dir.join("src");
    let mut problems = Vec::new();
    for file in rust_files(&src) {
        let relative = file.strip_prefix(&src).expect("under src");
        let first = relative.components().next().expect("a path");
        let room = Path::new(first.as_os_str())
            .file_stem()
            .expect("a name")
            .to_string_lossy()
            .into_owned();
        if ["lib", "main", "bin"].contains(&room.as_str()) {
            continue;
        }
        let Some(allowed) = walls.get(&room) else {
            problems.push(format!(
                "room `{room}` ({}) is not in the table",
                relative.display()
            ));
            continue;
        };
        let source = std::fs::read_to_string(&file).expect("readable source");
        for import in imports(&source) {
            let permitted = match allowed {
                Allowed::Any => true,
                Allowed::Rooms(rooms) => import == room || rooms.contains(&import),
            };
            if !permitted {
                problems.push(format!(
                    "{} imports `{import}`, which room `{room}` may not",
                    relative.display()
                ));
            }
        }
    }
    problems
}

/// Panics, naming every problem, unless the crate at `crate_dir` keeps to the walls the
/// workspace's `ARCHITECTURE.md` (beside the crate's folder) draws for `crate_name`.
pub fn assert_kept(crate_dir: &Path, crate_name: &str) {
    let document = std::fs::read_to_string(crate_dir.join("../ARCHITECTURE.md"))
        .expect("ARCHITECTURE.md beside the crate's folder");
    let walls = table(&document, crate_name).unwrap_or_else(|e| panic!("ARCHITECTURE.md: {e}"));
    let problems = check(crate_dir, &walls);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .expect("readable folder")
        .map(|e| e.expect("readable entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            files.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCUMENT: &str = "\
# Architecture

### Walls of demo

| room | may import |
|---|---|
| `top` | any |
| `http` | `engine` `error` |
| `engine` | `error` |
| `error` | |

After the table.
";

    #[test]
    fn the_table_is_read_from_the_crate_heading() {
        let walls = table(DOCUMENT, "demo").unwrap();
        assert_eq!(walls["top"], Allowed::Any);
        assert_eq!(
            walls["http"],
            Allowed::Rooms(["engine".to_owned(), "error".to_owned()].into())
        );
        assert_eq!(walls["error"], Allowed::Rooms(BTreeSet::new()));
        assert_eq!(walls.len(), 4);
        assert!(table(DOCUMENT, "other").is_err());
    }

    #[test]
    fn imports_skip_comments_and_tests() {
        let source = "\
use crate::engine::Engine;
// see crate::http
/// [`crate::auth::Meter`]
fn f() { crate::error::Error::internal(\"x\"); }
#[cfg(test)]
mod tests { use crate::http::errors; }
";
        assert_eq!(
            imports(source),
            ["engine".to_owned(), "error".to_owned()].into()
        );
    }

    #[test]
    fn a_crossed_wall_and_a_missing_room_are_reported() {
        let dir = std::env::temp_dir().join(format!("walls-{}", std::process::id()));
        let src = dir.join("src");
        std::fs::create_dir_all(src.join("engine")).unwrap();
        std::fs::write(src.join("lib.rs"), "use crate::http;").unwrap();
        std::fs::write(src.join("engine/mod.rs"), "use crate::http::X;\nuse crate::error::E;").unwrap();
        std::fs::write(src.join("http.rs"), "use crate::engine::Y;").unwrap();
        std::fs::write(src.join("extra.rs"), "").unwrap();
        let problems = check(&dir, &table(DOCUMENT, "demo").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(
            problems,
            [
                "engine/mod.rs imports `http`, which room `engine` may not",
                "room `extra` (extra.rs) is not in the table",
            ]
        );
    }
}
