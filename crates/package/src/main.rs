//! `rmosix-package`: write rmosix's man pages and shell completions, or build its Debian
//! package (`./dev package` runs `rmosix-package deb`).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Write rmosix's man pages and shell completions from the programs' own command lines, or
/// build its Debian package.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Write the man pages and bash, zsh and fish completions under DIR as under /usr/share
    /// (DIR/man/man1/mosctl.1, DIR/bash-completion/completions/mosctl, ...); ~/.local/share
    /// suits an install by `cargo install`.
    Docs {
        /// The share directory to write under.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Stage the Debian package from the release binaries and build it with dpkg-deb: writes
    /// OUT/rmosix_VERSION_ARCH/ and OUT/rmosix_VERSION_ARCH.deb, and prints the latter's path.
    Deb {
        /// Where cargo put the release binaries.
        #[arg(long, value_name = "DIR", default_value = "target/release")]
        binaries: PathBuf,
        /// Where to stage and build the package.
        #[arg(long, value_name = "DIR", default_value = "target/package")]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let args = Args::parse();
    let done = match &args.command {
        Cmd::Docs { out } => rmosix_package::write_docs(out).map(|_| ()),
        Cmd::Deb { binaries, out } => {
            rmosix_package::build_deb(binaries, out).map(|deb| println!("{}", deb.file.display()))
        }
    };
    match done {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rmosix-package: {e:#}");
            ExitCode::FAILURE
        }
    }
}
