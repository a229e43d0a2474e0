//! `cargo xtask gen-docs`: man pages and shell completions, generated from the same clap
//! definitions the binary parses with, so they cannot drift from it.
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::CommandFactory;
use clap_complete::Shell;

/// Writes `OUT/man/man1/gil-trace.1` (and one page per subcommand, `gil-trace-record.1`, …)
/// and `OUT/completions/{gil-trace.bash,_gil-trace,gil-trace.fish}`; returns the files.
pub fn run(out: &Path) -> Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    let man_dir = out.join("man/man1");
    std::fs::create_dir_all(&man_dir).with_context(|| format!("creating {}", man_dir.display()))?;
    let cli = gil_trace::cli::args::Cli::command();
    // `generate_to` names each page after its command path: gil-trace.1, gil-trace-report.1, …
    clap_mangen::generate_to(cli.clone(), &man_dir)
        .with_context(|| format!("writing man pages into {}", man_dir.display()))?;
    for entry in std::fs::read_dir(&man_dir)? {
        written.push(entry?.path());
    }

    let completions = out.join("completions");
    std::fs::create_dir_all(&completions)
        .with_context(|| format!("creating {}", completions.display()))?;
    for shell in [Shell::Bash, Shell::Zsh, Shell::Fish] {
        let mut cmd = cli.clone();
        let path = clap_complete::generate_to(shell, &mut cmd, "gil-trace", &completions)
            .with_context(|| format!("writing {shell} completions"))?;
        written.push(path);
    }
    written.sort();
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path).unwrap()
    }

    #[test]
    fn man_pages_and_completions_cover_every_subcommand_and_its_examples() {
        let dir = tempfile::tempdir().unwrap();
        let files = run(dir.path()).unwrap();
        let names: Vec<String> = files
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        for page in [
            "gil-trace.1",
            "gil-trace-record.1",
            "gil-trace-report.1",
            "gil-trace-dump.1",
            "gil-trace-export.1",
        ] {
            assert!(names.iter().any(|n| n == page), "{page} missing: {names:?}");
        }
        let record = read(&dir.path().join("man/man1/gil-trace-record.1"));
        assert!(record.contains("\\-\\-duration"), "{record}");
        assert!(
            record.contains("125"),
            "exit status missing from the page:\n{record}"
        );
        let report = read(&dir.path().join("man/man1/gil-trace-report.1"));
        assert!(report.contains("Examples"), "{report}");
        assert!(report.contains("DURATION"), "{report}");

        let bash = read(&dir.path().join("completions/gil-trace.bash"));
        for word in [
            "record",
            "report",
            "dump",
            "export",
            "--convoy-threshold",
            "--all-threads",
        ] {
            assert!(bash.contains(word), "bash completion lacks {word}");
        }
        assert!(read(&dir.path().join("completions/_gil-trace")).contains("--window"));
        assert!(read(&dir.path().join("completions/gil-trace.fish")).contains("chrome-json"));
    }
}
