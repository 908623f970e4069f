//! gdb's `bt` inside a greenlet stack continues into the stack that resumed it (native backend).
//!
//! Runs this test binary under `gdb -batch`, stops three calls deep inside a fiber, and reads
//! the backtrace gdb prints. Skipped, saying why, when gdb is not installed.

mod common;

use std::hint::black_box;
use std::process::Command;

use awaitlet::engine::Fiber;
use awaitlet::stack::{DEFAULT_STACK_SIZE, Stack};
use common::{CHILD_ROLE, is_child, skip_under_qemu};

/// gdb stops here.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn awaitlet_gdb_probe_point(value: usize) -> usize {
    black_box(value) + 1
}

#[inline(never)]
fn two_below_the_root(value: usize) -> usize {
    black_box(awaitlet_gdb_probe_point(value))
}

#[inline(never)]
fn one_below_the_root(value: usize) -> usize {
    black_box(two_below_the_root(value))
}

#[inline(never)]
fn resumer_seen_by_gdb() -> usize {
    let mut fiber = Fiber::new(Stack::new(DEFAULT_STACK_SIZE).unwrap(), |_, value| {
        one_below_the_root(value)
    });
    match fiber.resume(41) {
        awaitlet::engine::Resumed::Returned(value) => value,
        other => panic!("{other:?}"),
    }
}

/// The frame gdb must reach past the resumer's (a test function itself may be inlined into the
/// harness when optimised).
#[inline(never)]
fn caller_of_the_resumer() -> usize {
    black_box(resumer_seen_by_gdb())
}

/// The function a gdb frame line (`#N  0x... in path::name (args) at file:line`, without the
/// address for a frame stopped at a line's start) names, without its path, and without the hash
/// suffix that frames lacking debug information carry.
fn frame_function(frame: &str) -> Option<&str> {
    let (_, located) = frame.split_once(' ')?;
    let located = located.trim_start();
    let function = match located.split_once(" in ") {
        Some((address, function)) if address.starts_with("0x") => function,
        _ => located,
    };
    let (path, _) = function.split_once(" (")?;
    let path = match path.rsplit_once("::h") {
        Some((rest, hash)) if hash.len() == 16 && hash.chars().all(|c| c.is_ascii_hexdigit()) => {
            rest
        }
        _ => path,
    };
    Some(path.rsplit("::").next().unwrap_or(path))
}

#[test]
fn gdb_backtrace_crosses_from_a_greenlet_into_its_resumer() {
    if is_child("gdb") {
        assert_eq!(caller_of_the_resumer(), 42);
        return;
    }
    if skip_under_qemu("gdb cannot trace a program that qemu-user emulates") {
        return;
    }
    if Command::new("gdb").arg("--version").output().is_err() {
        println!("skipped: gdb is not installed");
        return;
    }
    let output = Command::new("gdb")
        .args([
            "-batch",
            "-nx",
            "-ex",
            "set debuginfod enabled off",
            "-ex",
            "set breakpoint pending on",
        ])
        .args([
            "-ex",
            "break awaitlet_gdb_probe_point",
            "-ex",
            "run",
            "-ex",
            "bt",
            "-ex",
            "kill",
        ])
        .arg("--args")
        .arg(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "gdb_backtrace_crosses_from_a_greenlet_into_its_resumer",
            "--nocapture",
        ])
        .env(CHILD_ROLE, "gdb")
        .output()
        .expect("run gdb");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let frames: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with('#'))
        .collect();
    // The name exactly, not a closure inside it (`name::{closure#0}`).
    let position = |name: &str| {
        frames
            .iter()
            .position(|frame| frame_function(frame) == Some(name))
    };
    let probe =
        position("awaitlet_gdb_probe_point").unwrap_or_else(|| panic!("no stop:\n{stdout}"));
    let two = position("two_below_the_root").expect("caller frames inside the fiber");
    assert!(two > probe);
    let resumer = position("resumer_seen_by_gdb");
    if awaitlet::BACKEND != "context" {
        let resumer =
            resumer.unwrap_or_else(|| panic!("gdb stopped at the fiber's root:\n{stdout}"));
        assert!(resumer > two, "{stdout}");
        assert_eq!(
            position("caller_of_the_resumer"),
            Some(resumer + 1),
            "{stdout}"
        );
    } else {
        assert_eq!(resumer, None, "{stdout}");
    }
}
