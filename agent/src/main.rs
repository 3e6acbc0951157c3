use clap::Parser as _;

fn main() -> std::process::ExitCode {
    schedlat::cli::main_with(schedlat::cli::Cli::parse_from(
        schedlat::cli::args_with_negative_durations_joined(std::env::args_os()),
    ))
}
