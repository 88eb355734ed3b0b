//! `host`: the deploy host's command line.

fn main() {
    std::process::exit(host::cli::main());
}
