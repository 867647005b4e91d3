//! The `rxnc` command line. All the work is in the library; see `rxnc::cli`.

fn main() {
    std::process::exit(rxnc::cli::main());
}

/// Notes a standard output closed at start (`rxnc ... >&-`) before Rust's runtime reopens it on
/// `/dev/null`, where the output would vanish with exit status 0 (see
/// `rxnc::cli::note_stdout_closed`). Constructors in `.init_array` run before `main`.
#[cfg(target_os = "linux")]
#[used]
#[unsafe(link_section = ".init_array")]
static CHECK_STDOUT_AT_START: extern "C" fn() = {
    extern "C" fn check() {
        // SAFETY: F_GETFD only asks whether descriptor 1 is open.
        if unsafe { libc::fcntl(1, libc::F_GETFD) } == -1 {
            rxnc::cli::note_stdout_closed();
        }
    }
    check
};
