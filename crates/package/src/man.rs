//! Man pages: one per program, one per visible subcommand (`mosctl-status(1)`, as git has
//! `git-log(1)`), and the hand-written overview mosix(7). Each generated page ends with a SEE
//! ALSO section naming the overview and the other programs.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Command;
use clap_mangen::Man;

use crate::{PROGRAMS, Program, write_file};

/// Pages written by hand, as (file name, section, roff text).
pub const HAND_WRITTEN_PAGES: &[(&str, &str, &str)] =
    &[("mosix.7", "7", include_str!("../../../packaging/mosix.7"))];

/// The manual the pages belong to, shown in the centre of each page's header.
const MANUAL: &str = "rmosix";

/// Write all man pages under `share/man/manN/`; returns their paths relative to `share`.
pub(crate) fn write_pages(share: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for program in PROGRAMS {
        let mut command = program.command().disable_help_subcommand(true);
        command.build();
        written.push(write_page(share, program, &command)?);
        for sub in command.get_subcommands().filter(|sub| !sub.is_hide_set()) {
            written.push(write_page(share, program, sub)?);
        }
    }
    for (name, section, text) in HAND_WRITTEN_PAGES {
        let path = Path::new("man").join(format!("man{section}")).join(name);
        write_file(share, &path, text.as_bytes())?;
        written.push(path);
    }
    Ok(written)
}

/// Write the page of `command`, which is `program` itself or one of its subcommands.
fn write_page(share: &Path, program: &Program, command: &Command) -> anyhow::Result<PathBuf> {
    let section = program.section();
    let man = Man::new(command.clone())
        .section(section)
        .manual(MANUAL)
        .source(format!("rmosix {}", env!("CARGO_PKG_VERSION")));
    let mut text = Vec::new();
    man.render(&mut text)
        .with_context(|| format!("cannot render the page of {}", command.get_name()))?;
    text.extend_from_slice(see_also(program, command).as_bytes());
    let path = Path::new("man")
        .join(format!("man{section}"))
        .join(man.get_filename());
    write_file(share, &path, &text)?;
    Ok(path)
}

/// The SEE ALSO section of `command`'s page: the program's own page for a subcommand's, the
/// overview, and the other programs' pages.
fn see_also(program: &Program, command: &Command) -> String {
    let mut refs = Vec::new();
    if command.get_name() != program.name {
        refs.push((program.name, program.section()));
    }
    for (name, section, _) in HAND_WRITTEN_PAGES {
        let stem = name.rsplit_once('.').map_or(*name, |(stem, _)| stem);
        refs.push((stem, section));
    }
    for other in PROGRAMS.iter().filter(|other| other.name != program.name) {
        refs.push((other.name, other.section()));
    }
    let mut roff = String::from(".SH \"SEE ALSO\"\n");
    for (i, (name, section)) in refs.iter().enumerate() {
        let comma = if i + 1 < refs.len() { "," } else { "" };
        roff.push_str(&format!(".BR {name} ({section}){comma}\n"));
    }
    roff
}
