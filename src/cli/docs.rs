//! `airgap completion SHELL` and `airgap man --dir DIR`: shell completions and man pages
//! generated from the CLI's own definition, so they never drift from it.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

#[derive(Debug, clap::Args)]
pub struct CompletionArgs {
    /// The shell to complete for; the script goes to standard output (e.g. `airgap completion
    /// bash > /etc/bash_completion.d/airgap`).
    pub shell: clap_complete::Shell,
}

#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Where to write `airgap.1` and one `airgap-<command>.1` per command (e.g.
    /// /usr/local/share/man/man1).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
}

/// What `scripts/third-party-notices.py` wrote from Cargo.lock (CI checks it is current).
pub const THIRD_PARTY_NOTICES: &str = include_str!("../../THIRD-PARTY-NOTICES.txt");

pub fn completion(args: CompletionArgs) -> anyhow::Result<()> {
    let mut cmd = super::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "airgap", &mut std::io::stdout());
    Ok(())
}

pub fn man(args: ManArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let mut cmd = super::Cli::command();
    cmd.build();
    let written = write_pages(&cmd, "airgap", &args.dir)?;
    println!("wrote {written} man pages to {}", args.dir.display());
    Ok(())
}

/// `name.1` for `cmd`, then one page per visible subcommand, named by its path.
fn write_pages(cmd: &clap::Command, name: &str, dir: &Path) -> anyhow::Result<usize> {
    let page = dir.join(format!("{name}.1"));
    let mut bytes = Vec::new();
    clap_mangen::Man::new(cmd.clone().name(name.to_string()))
        .render(&mut bytes)
        .with_context(|| format!("rendering {}", page.display()))?;
    std::fs::write(&page, bytes).with_context(|| format!("writing {}", page.display()))?;
    let mut written = 1;
    for sub in cmd
        .get_subcommands()
        .filter(|s| !s.is_hide_set() && s.get_name() != "help")
    {
        written += write_pages(sub, &format!("{name}-{}", sub.get_name()), dir)?;
    }
    Ok(written)
}
