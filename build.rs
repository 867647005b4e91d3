//! Links the `rxnc` executable as position-dependent on Linux.
//!
//! A position-independent executable of this size (Cranelift, pest, plotting) makes the dynamic
//! loader apply ~15 500 relative relocations at every start, touching pages it then copies: a third
//! of the start-up of a short command (`rxnc grad` on 3 trajectories: 3.1 -> 2.1 ms, 283 -> 219
//! page faults; docs/performance.md). Scripts and fitting loops start the binary many times.
//! The library and the test executables are unaffected.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
