//! `ordo-faulty`: the `ordo` command line built with test-only faults (`ordo_node::faults`),
//! for the tests and the nemesis runs of a misbehaving validator. Never shipped.

fn main() -> std::process::ExitCode {
    ordo_cli::main()
}
