use clap::Parser as _;

fn main() -> std::process::ExitCode {
    schedlat::main_with(schedlat::Cli::parse_from(
        schedlat::args_with_negative_durations_joined(std::env::args_os()),
    ))
}
