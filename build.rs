//! Links the `rxnc` executable as position-dependent on Linux.
//!
//! A position-independent executable of this size (Cranelift, pest, plotting) makes the dynamic
//! loader apply ~15 000 relative relocations and copy-on-write about 60 pages at every start,
//! which is a third of the start-up of a short command (`rxnc grad` on 256 trajectories:
//! 3.1 -> 2.1 ms; docs/performance.md). Scripts and fitting loops start the binary many times.
//! The library and the test executables are unaffected.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
