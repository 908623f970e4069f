//! What the crate does in a build that aborts on panic (`panic = "abort"`), where nothing can
//! unwind: a program built that way (`tests/fixtures/panic_abort`) runs each scenario in a child
//! process. Dropping what would be unwound (a pending `AsyncDef`, the last handle to a
//! suspended greenlet, at thread exit too) leaks it with one line on stderr and goes on;
//! throwing into a greenlet aborts with a line naming the cause. Nothing ends silently.

use std::path::Path;
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Builds the fixture once per test run; returns its executable.
fn fixture() -> &'static Path {
    static BUILT: OnceLock<std::path::PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/panic_abort");
        let target = Path::new(env!("CARGO_TARGET_TMPDIR")).join("panic-abort-fixture");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let built = Command::new(cargo)
            .args(["build", "--quiet", "--manifest-path"])
            .arg(manifest.join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .expect("cargo runs");
        assert!(
            built.status.success(),
            "the panic = \"abort\" fixture did not build: {}",
            String::from_utf8_lossy(&built.stderr)
        );
        // A cross build (`CARGO_BUILD_TARGET`, which the cargo above inherits) puts the
        // executable under the target's triple.
        let target = match std::env::var_os("CARGO_BUILD_TARGET") {
            Some(triple) => target.join(triple),
            None => target,
        };
        target.join("debug/awaitlet-panic-abort-check")
    })
}

fn run(scenario: &str) -> (Output, String, String) {
    let output = Command::new(fixture())
        .arg(scenario)
        .output()
        .expect("the fixture runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (output, stdout, stderr)
}

/// The scenario went on past the drop, after exactly one line about the leak, and ran no
/// destructor on the leaked stack.
fn assert_leaked_with_one_line(scenario: &str, line: &str) {
    let (output, stdout, stderr) = run(scenario);
    assert!(output.status.success(), "{scenario}: {output:?}");
    assert!(stdout.contains(&format!("survived {scenario}")), "{stdout}");
    assert!(
        !stdout.contains("dropped"),
        "a destructor ran on a leaked stack: {stdout}"
    );
    let lines: Vec<_> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains(line) && lines[0].contains("panic = \"abort\""),
        "{stderr}"
    );
}

#[test]
fn dropping_a_pending_async_def_without_unwinding_leaks_it_with_a_line() {
    assert_leaked_with_one_line(
        "drop-pending-async-def",
        "an AsyncDef was dropped while its function was waiting",
    );
}

#[test]
fn dropping_the_last_handle_of_a_suspended_greenlet_without_unwinding_leaks_it_with_a_line() {
    assert_leaked_with_one_line("drop-suspended-greenlet", "was dropped, but this build");
}

#[test]
fn a_thread_exiting_with_a_suspended_greenlet_without_unwinding_leaks_it_with_a_line() {
    assert_leaked_with_one_line("thread-exit", "was dropped, but this build");
}

#[test]
fn throwing_or_killing_without_unwinding_aborts_with_a_line_naming_the_cause() {
    for (scenario, what) in [("throw", "a panic (stop)"), ("kill", "a GreenletExit")] {
        let (output, stdout, stderr) = run(scenario);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            output.status.signal(),
            Some(libc::SIGABRT),
            "{scenario}: {output:?}"
        );
        assert!(!stdout.contains("survived"), "{stdout}");
        assert!(
            stderr.contains(what) && stderr.contains("cannot unwind it: aborting"),
            "{scenario}: {stderr}"
        );
    }
}
