//! The `rxnc` command line. All the work is in the library; see `rxnc::cli`.

fn main() {
    std::process::exit(rxnc::cli::main());
}
