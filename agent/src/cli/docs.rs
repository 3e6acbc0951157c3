//! Man pages and shell completions generated from the clap definitions, so that they never
//! drift from the flags: the packages (`cargo xtask deb`) ship what these write.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, Result};
use clap::CommandFactory as _;

use super::Cli;

/// Writes `schedlat.1` and one page per visible subcommand (`schedlat-trace.1`,
/// `schedlat-incidents-list.1`, ...) into `dir`, creating it if needed; returns the pages
/// written, sorted.
pub fn write_man_pages(dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    clap_mangen::generate_to(Cli::command(), dir)
        .with_context(|| format!("writing man pages into {}", dir.display()))?;
    let mut pages = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        let is_page = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("schedlat") && n.ends_with(".1"));
        if is_page {
            pages.push(path);
        }
    }
    pages.sort();
    Ok(pages)
}

/// The CLI without its hidden subcommands: `clap_complete` completes hidden subcommands too,
/// and the packagers' commands have no business in a user's tab completion.
fn visible_command() -> clap::Command {
    let full = Cli::command();
    let mut visible = clap::Command::new("schedlat")
        .version(env!("CARGO_PKG_VERSION"))
        .args(full.get_arguments().cloned())
        .subcommands(full.get_subcommands().filter(|s| !s.is_hide_set()).cloned());
    if let Some(about) = full.get_about() {
        visible = visible.about(about.clone());
    }
    visible
}

/// Writes the completion script for `shell` (the command is completed as `schedlat`).
pub fn write_completions(shell: clap_complete::Shell, out: &mut dyn Write) -> Result<()> {
    let mut buffer = Vec::new();
    clap_complete::generate(shell, &mut visible_command(), "schedlat", &mut buffer);
    out.write_all(&buffer)
        .and_then(|()| out.flush())
        .context("writing the completion script")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("schedlat-docs-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn man_pages_cover_every_visible_subcommand_and_no_hidden_one() {
        let dir = temp_dir("man");
        let pages = write_man_pages(&dir.join("nested")).unwrap();
        let names: Vec<String> = pages
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for expected in [
            "schedlat.1",
            "schedlat-trace.1",
            "schedlat-run.1",
            "schedlat-flamegraph.1",
            "schedlat-check.1",
            "schedlat-incidents.1",
            "schedlat-incidents-list.1",
            "schedlat-incidents-show.1",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "no {expected} in {names:?}"
            );
        }
        assert!(
            !names.iter().any(|n| n.contains("generate")),
            "hidden commands got pages: {names:?}"
        );
        let main = std::fs::read_to_string(dir.join("nested/schedlat.1")).unwrap();
        assert!(main.contains(".SH NAME"), "no NAME section:\n{main}");
        assert!(
            main.contains("schedlat\\-trace"),
            "subcommands not listed:\n{main}"
        );
        let run = std::fs::read_to_string(dir.join("nested/schedlat-run.1")).unwrap();
        assert!(
            run.contains("check\\-config"),
            "run's flags missing:\n{run}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn man_pages_into_an_unwritable_place_is_an_error() {
        let err = write_man_pages(Path::new("/proc/schedlat-man")).unwrap_err();
        assert!(format!("{err:#}").contains("/proc/schedlat-man"), "{err:#}");
    }

    #[test]
    fn completions_complete_the_subcommands_and_flags() {
        for (shell, marker) in [
            (clap_complete::Shell::Bash, "complete -F _schedlat"),
            (clap_complete::Shell::Zsh, "#compdef schedlat"),
            (clap_complete::Shell::Fish, "complete -c schedlat"),
        ] {
            let mut out = Vec::new();
            write_completions(shell, &mut out).unwrap();
            let script = String::from_utf8(out).unwrap();
            assert!(
                script.contains(marker),
                "{shell}: no `{marker}` in:\n{script}"
            );
            assert!(script.contains("trace"), "{shell}: no `trace` subcommand");
            assert!(
                script.contains("check-config"),
                "{shell}: no --check-config"
            );
            assert!(
                !script.contains("generate-man"),
                "{shell}: hidden command completed"
            );
        }
    }
}
