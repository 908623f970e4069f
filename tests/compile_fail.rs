//! Compile-fail tests: what the compiler says to code that misuses the crate's types.
//!
//! Each case under `tests/compile_fail/` has its expected output beside it (`.stderr`). What these
//! tests guard is the first error; the later ones name the crate's private parts, which the
//! compiler lists too, so a change to those parts changes the expected output. After checking
//! that the first error still names the public type, regenerate the files with
//! `TRYBUILD=overwrite cargo test --test compile_fail`.

/// `tokio::spawn` of an `AsyncDef` (or of its `assert_await_occurs()`): the first type that the
/// compiler names as not `Send` is the public `StaysOnItsThread`, whose docs say why and what to
/// do, not a private part of the crate.
#[test]
fn spawning_an_async_def_names_stays_on_its_thread_first() {
    // The expected files name the standard library's sources as trybuild normalises rustup's
    // paths (`$RUST/...`); a toolchain that prints other paths (Debian's rustc, in
    // `.ci/aarch64`) cannot match them, whatever the crate does. The diagnostics do not depend
    // on the target, and the x86_64 runs check them.
    if let Ok(why) = std::env::var("AWAITLET_SKIP_COMPILE_FAIL") {
        println!("skipped: {why}");
        return;
    }
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/compile_fail/spawn_async_def.rs");
    cases.compile_fail("tests/compile_fail/spawn_assert_await_occurs.rs");
}
