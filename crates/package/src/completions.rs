//! Shell completions for bash, zsh and fish, where each shell's packages put theirs.

use std::path::{Path, PathBuf};

use clap_complete::Shell;

use crate::{PROGRAMS, write_file};

/// Each shell, and where under `share` its completion for a program goes, as what comes
/// before and after the program's name: the directories bash-completion, zsh (Debian's vendor
/// directory) and fish load completions from.
const SHELLS: &[(Shell, &str, &str)] = &[
    (Shell::Bash, "bash-completion/completions/", ""),
    (Shell::Zsh, "zsh/vendor-completions/_", ""),
    (Shell::Fish, "fish/vendor_completions.d/", ".fish"),
];

/// Write every program's completions under `share`; returns their paths relative to it.
pub(crate) fn write_all(share: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    for program in PROGRAMS {
        for &(shell, before, after) in SHELLS {
            let mut command = program.command();
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut command, program.name, &mut script);
            let path = PathBuf::from(format!("{before}{}{after}", program.name));
            write_file(share, &path, &script)?;
            written.push(path);
        }
    }
    Ok(written)
}
