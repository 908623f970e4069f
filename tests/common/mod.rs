//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Environment variable naming the child role a re-executed test binary should play.
pub(crate) const CHILD_ROLE: &str = "AWAITLET_TEST_CHILD";

/// True when this process was started by [`run_child`] to play `role`.
pub(crate) fn is_child(role: &str) -> bool {
    std::env::var(CHILD_ROLE).is_ok_and(|value| value == role)
}

/// Re-runs this test binary, running only `test_name`, with [`CHILD_ROLE`] set to `role`.
pub(crate) fn child_command(test_name: &str, role: &str) -> Command {
    let mut command = Command::new(std::env::current_exe().expect("test binary path"));
    command
        .args(["--exact", test_name, "--nocapture", "--test-threads=1"])
        .env(CHILD_ROLE, role)
        .env_remove("RUST_BACKTRACE");
    command
}

/// Runs [`child_command`] to completion and returns its output.
pub(crate) fn run_child(test_name: &str, role: &str) -> Output {
    child_command(test_name, role)
        .output()
        .expect("spawn the test binary again")
}

/// The signal that ended a child, if one did.
pub(crate) fn terminating_signal(output: &Output) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    output.status.signal()
}

/// Runs `f`, catching a panic.
pub(crate) fn catch<T>(f: impl FnOnce() -> T) -> Result<T, Box<dyn std::any::Any + Send>> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f))
}

/// The text of a `&str` or `String` panic payload.
pub(crate) fn text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        panic!("payload is not text")
    }
}
