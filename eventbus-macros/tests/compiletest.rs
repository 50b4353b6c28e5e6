//! trybuild UI tests: `tests/ui/<derive>/{pass,fail}/*.rs`.
//!
//! The `.stderr` snapshots depend on the compiler's wording, so they are
//! pinned to the toolchain in `rust-toolchain.toml`; other toolchains skip
//! this test. Regenerate snapshots with
//! `TRYBUILD=overwrite cargo test -p eventbus-macros --test compiletest`.

#[rustversion::attr(
    not(stable(1.95)),
    ignore = "UI snapshots are pinned to Rust 1.95 (rust-toolchain.toml)"
)]
#[cfg_attr(miri, ignore)]
#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("tests/ui/*/pass/*.rs");
    t.compile_fail("tests/ui/*/fail/*.rs");
}
