use clap::Parser as _;

fn main() -> std::process::ExitCode {
    schedlat::cli::main_with(schedlat::cli::Cli::parse())
}
