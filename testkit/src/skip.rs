//! Skipping a test visibly, or failing it where the environment demands the missing component.

use std::io::Write;

/// Reports that `component` is missing for the calling test. Panics when the environment variable
/// `require_var` is `1` (CI sets it); otherwise prints a `SKIP` line straight to the process's
/// stderr (not the test harness's captured output, which `cargo test` hides for passing tests).
#[track_caller]
pub(crate) fn missing(component: &str, require_var: &str, how_to_fix: &str) {
    let at = std::panic::Location::caller();
    if std::env::var(require_var).as_deref() == Ok("1") {
        panic!("{require_var}=1 but {component} is not available: {how_to_fix}");
    }
    let _ = writeln!(
        std::io::stderr().lock(),
        "SKIP {}:{}: {component} is not available ({how_to_fix}); set {require_var}=1 to fail instead",
        at.file(),
        at.line()
    );
}
