//! The `ordo` binary: the command line of `ordo_cli`.

fn main() -> std::process::ExitCode {
    ordo_cli::main()
}
