//! rmosix packaging room: what an installed rmosix consists of, besides its binaries.
//!
//! Man pages and shell completions are written from the programs' own clap definitions
//! (`rmosix_tools::cli`, `rmosix_daemon::cli`), so they say what the binaries parse. The
//! Debian package is staged as a tree and built with `dpkg-deb`; the hand-written files it
//! carries (the systemd unit, mosix(7), an example map, the copyright) live in `packaging/`
//! at the top of the workspace and are compiled in.
//!
//! A new program is one line in [`PROGRAMS`]: its man page, its completions and its place in
//! the package follow from it.
//!
//! The door: [`PROGRAMS`] and [`Program`], [`write_docs`] (man pages and completions under a
//! `share` directory), [`build_deb`] (stage the package and build it).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod completions;
mod deb;
mod man;

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{Command, CommandFactory};

pub use deb::{Deb, build_deb};
pub use man::HAND_WRITTEN_PAGES;

/// Every program rmosix installs.
pub const PROGRAMS: &[Program] = &[
    Program::user("mosrun", rmosix_tools::cli::mosrun::Args::command),
    Program::user("migrate", rmosix_tools::cli::migrate::Args::command),
    Program::user("mosctl", rmosix_tools::cli::mosctl::Args::command),
    Program::user("mosps", rmosix_tools::cli::mosps::Args::command),
    Program::user("mosmon", rmosix_tools::cli::mosmon::Args::command),
    Program::daemon("mosixd", rmosix_daemon::cli::Args::command),
];

/// A program rmosix installs: its name, whom it is for, and its command line.
#[derive(Clone, Copy, Debug)]
pub struct Program {
    /// The binary's name, as cargo builds it and as it is installed.
    pub name: &'static str,
    /// True for the daemon: installed in `/usr/sbin`, its page in section 8 (system
    /// administration), as Debian places daemons. Otherwise `/usr/bin` and section 1.
    pub daemon: bool,
    definition: fn() -> Command,
}

impl Program {
    const fn user(name: &'static str, definition: fn() -> Command) -> Self {
        Self {
            name,
            daemon: false,
            definition,
        }
    }

    const fn daemon(name: &'static str, definition: fn() -> Command) -> Self {
        Self {
            name,
            daemon: true,
            definition,
        }
    }

    /// The program's clap command under its installed name, not yet built. (The tools'
    /// definitions leave clap to name them after their package, `rmosix-tools`, and take
    /// their name from argv[0] at run time.)
    pub fn command(&self) -> Command {
        (self.definition)().name(self.name).bin_name(self.name)
    }

    /// The manual section of the program's page.
    pub fn section(&self) -> &'static str {
        if self.daemon { "8" } else { "1" }
    }

    /// Where the package installs the binary, relative to `/`.
    pub fn install_dir(&self) -> &'static str {
        if self.daemon { "usr/sbin" } else { "usr/bin" }
    }
}

/// Write every program's man pages and shell completions under `share`, laid out as under
/// `/usr/share` or `~/.local/share`: `man/man1/mosctl.1`, `man/man1/mosctl-status.1`,
/// `bash-completion/completions/mosctl`, `zsh/vendor-completions/_mosctl`,
/// `fish/vendor_completions.d/mosctl.fish`, and so on. Returns the files written, relative to
/// `share`.
pub fn write_docs(share: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = man::write_pages(share)?;
    written.extend(completions::write_all(share)?);
    Ok(written)
}

/// Write `bytes` to `relative` under `root`, creating the directories on the way.
fn write_file(root: &Path, relative: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let path = root.join(relative);
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
