//! The Debian package: staged as a tree of the files it installs plus `DEBIAN/`, then built
//! by `dpkg-deb`, which owns the format. Files get their modes here and root as their owner
//! from `dpkg-deb --root-owner-group`, so the package is the same whoever builds it.
//!
//! ```text
//! usr/bin/{mosrun,migrate,mosctl}     usr/sbin/mosixd         (PROGRAMS)
//! usr/share/man/man{1,7,8}/*.gz       usr/share/{bash-completion,zsh,fish}/...
//! usr/lib/systemd/system/mosixd.service
//! usr/share/doc/rmosix/{copyright,examples/mosix.map}
//! etc/mosix/                          (where the key goes; empty)
//! DEBIAN/{control,postinst,prerm,postrm}
//! ```

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use flate2::Compression;
use flate2::write::GzEncoder;

use crate::{PROGRAMS, write_docs, write_file};

/// The package's name.
const PACKAGE: &str = "rmosix";
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The systemd unit, and where systemd looks for the units of packages.
const UNIT: (&str, &str) = (
    "usr/lib/systemd/system/mosixd.service",
    include_str!("../../../packaging/mosixd.service"),
);

/// Other files installed as they are written in `packaging/`.
const FILES: &[(&str, &str)] = &[
    UNIT,
    (
        "usr/share/doc/rmosix/copyright",
        include_str!("../../../packaging/copyright"),
    ),
    (
        "usr/share/doc/rmosix/examples/mosix.map",
        include_str!("../../../packaging/mosix.map"),
    ),
];

/// The maintainer scripts: reload systemd, restart a running daemon on upgrade, stop it on
/// removal.
const SCRIPTS: &[(&str, &str)] = &[
    ("postinst", include_str!("../../../packaging/postinst")),
    ("prerm", include_str!("../../../packaging/prerm")),
    ("postrm", include_str!("../../../packaging/postrm")),
];

/// Directories the package creates though no file of its own is in them.
const EMPTY_DIRS: &[&str] = &["etc/mosix"];

/// What the package says about itself (the control file's `Description`).
const DESCRIPTION: &str = "\
MOSIX-style process migration for Linux clusters
 rmosix moves running processes between the nodes of a cluster, as MOSIX
 did, in user space: a process started with mosrun may run on another node
 while its system calls that need its home (files, sockets, its parent) go
 home. mosixd, one per node, balances the load and hosts guests; migrate and
 mosctl move processes and administer the node.";

/// A package [`build_deb`] made.
#[derive(Debug)]
pub struct Deb {
    /// The staged tree, `out/rmosix_VERSION_ARCH/`.
    pub tree: PathBuf,
    /// The package file, `out/rmosix_VERSION_ARCH.deb`.
    pub file: PathBuf,
}

/// Stage the package from the binaries cargo built in `binaries` (e.g. `target/release`) into
/// `out`, replacing an earlier staging of the same version, and build it with `dpkg-deb`.
pub fn build_deb(binaries: &Path, out: &Path) -> anyhow::Result<Deb> {
    let arch = debian_arch(std::env::consts::ARCH)?;
    let name = format!("{PACKAGE}_{VERSION}_{arch}");
    let tree = out.join(&name);
    if tree.exists() {
        fs::remove_dir_all(&tree).with_context(|| format!("cannot remove {}", tree.display()))?;
    }
    let mut glibc = Vec::new();
    for program in PROGRAMS {
        let from = binaries.join(program.name);
        let bytes = fs::read(&from).with_context(|| {
            format!(
                "cannot read {}: build the release binaries first",
                from.display()
            )
        })?;
        if let Some(version) = glibc_needed(&bytes) {
            glibc = glibc.max(version);
        }
        let to = Path::new(program.install_dir()).join(program.name);
        write_file(&tree, &to, &bytes)?;
        let to = tree.join(to);
        set_mode(&to, 0o755)?;
        strip_debug(&to)?;
    }
    let share = tree.join("usr/share");
    for page in write_docs(&share)? {
        if page.starts_with("man") {
            gzip_in_place(&share.join(page))?;
        }
    }
    for (path, text) in FILES {
        write_file(&tree, Path::new(path), text.as_bytes())?;
    }
    for dir in EMPTY_DIRS {
        let dir = tree.join(dir);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let control = control(arch, installed_kib(&tree)?, &glibc);
    write_file(&tree, Path::new("DEBIAN/control"), control.as_bytes())?;
    for (script, text) in SCRIPTS {
        let path = Path::new("DEBIAN").join(script);
        write_file(&tree, &path, text.as_bytes())?;
        set_mode(&tree.join(path), 0o755)?;
    }
    set_modes(&tree)?;
    let file = out.join(format!("{name}.deb"));
    run(Command::new("dpkg-deb")
        .arg("--root-owner-group")
        .arg("--build")
        .arg(&tree)
        .arg(&file))
    .with_context(|| {
        format!(
            "cannot build {} (Debian's dpkg has dpkg-deb)",
            file.display()
        )
    })?;
    Ok(Deb { tree, file })
}

/// Remove the debug information the release profile keeps (`debug = 1`: line tables, for
/// profiling and backtraces while developing), as Debian's packages ship binaries: about 85 %
/// of their size. The symbol table stays, so a backtrace still names the functions.
fn strip_debug(binary: &Path) -> anyhow::Result<()> {
    run(Command::new("strip").arg("--strip-debug").arg(binary)).with_context(|| {
        format!(
            "cannot strip {} (Debian's binutils has strip)",
            binary.display()
        )
    })
}

/// Run `command`; its error output becomes the error if it fails.
fn run(command: &mut Command) -> anyhow::Result<()> {
    let program = command.get_program().to_string_lossy().into_owned();
    let done = command
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !done.status.success() {
        bail!(
            "{program} failed ({}): {}",
            done.status,
            String::from_utf8_lossy(&done.stderr).trim()
        );
    }
    Ok(())
}

/// Debian's name for the architecture Rust calls `arch`.
fn debian_arch(arch: &str) -> anyhow::Result<&'static str> {
    Ok(match arch {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => bail!("no Debian architecture known for {other}"),
    })
}

/// The control file. `glibc` is the newest glibc symbol version the binaries need, as
/// [`glibc_needed`] finds it (empty: none found, so any libc6 will do).
fn control(arch: &str, installed_kib: u64, glibc: &[u32]) -> String {
    let depends = if glibc.is_empty() {
        "libc6".to_owned()
    } else {
        let version: Vec<String> = glibc.iter().map(u32::to_string).collect();
        format!("libc6 (>= {})", version.join("."))
    };
    format!(
        "Package: {PACKAGE}\n\
         Version: {VERSION}\n\
         Architecture: {arch}\n\
         Maintainer: rmosix developers <rmosix@localhost>\n\
         Installed-Size: {installed_kib}\n\
         Depends: {depends}\n\
         Section: admin\n\
         Priority: optional\n\
         Description: {DESCRIPTION}\n"
    )
}

/// The newest glibc symbol version a binary names (`GLIBC_2.34` as `[2, 34]`): what its
/// package must depend on. The dynamic linker refuses to start a binary whose version
/// references the installed glibc lacks, and every reference is spelled out in the binary's
/// `.gnu.version_r` as such a string; dpkg-shlibdeps reads the same, through symbols files a
/// staged tree lacks.
fn glibc_needed(binary: &[u8]) -> Option<Vec<u32>> {
    const PREFIX: &[u8] = b"GLIBC_";
    let mut newest: Option<Vec<u32>> = None;
    let mut rest = binary;
    while let Some(at) = rest.windows(PREFIX.len()).position(|w| w == PREFIX) {
        rest = &rest[at + PREFIX.len()..];
        let len = rest
            .iter()
            .position(|&b| !(b.is_ascii_digit() || b == b'.'))
            .unwrap_or(rest.len());
        let text = std::str::from_utf8(&rest[..len]).unwrap_or_default();
        let version: Option<Vec<u32>> = text.split('.').map(|part| part.parse().ok()).collect();
        if let Some(version) = version.filter(|v| v.len() >= 2)
            && newest.as_ref().is_none_or(|newest| version > *newest)
        {
            newest = Some(version);
        }
    }
    newest
}

/// Replace `path` by `path.gz`, compressed as Debian wants man pages (maximum compression,
/// no name or time in the header, so the package is the same each time it is built).
fn gzip_in_place(path: &Path) -> anyhow::Result<()> {
    let text = fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut gz = GzEncoder::new(Vec::new(), Compression::best());
    gz.write_all(&text)?;
    let mut zipped = path.as_os_str().to_owned();
    zipped.push(".gz");
    fs::write(&zipped, gz.finish()?)
        .with_context(|| format!("cannot write {}", Path::new(&zipped).display()))?;
    fs::remove_file(path).with_context(|| format!("cannot remove {}", path.display()))
}

/// What the files of `tree` outside `DEBIAN/` take on disk, in KiB, for `Installed-Size`.
fn installed_kib(tree: &Path) -> anyhow::Result<u64> {
    let mut bytes = 0;
    for entry in walk(tree)? {
        if !entry.starts_with(tree.join("DEBIAN")) && entry.is_file() {
            bytes += entry.metadata()?.len();
        }
    }
    Ok(bytes.div_ceil(1024))
}

/// Directories 0755, and files 0644 unless already executable (the binaries, the scripts).
fn set_modes(tree: &Path) -> anyhow::Result<()> {
    set_mode(tree, 0o755)?;
    for entry in walk(tree)? {
        let mode = entry.metadata()?.permissions().mode();
        if entry.is_dir() || mode & 0o100 != 0 {
            set_mode(&entry, 0o755)?;
        } else {
            set_mode(&entry, 0o644)?;
        }
    }
    Ok(())
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set the mode of {}", path.display()))
}

/// Every file and directory under `dir`, not `dir` itself.
fn walk(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        let entries =
            fs::read_dir(&dir).with_context(|| format!("cannot list {}", dir.display()))?;
        for entry in entries {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path.clone());
            }
            found.push(path);
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_newest_glibc_version_named_is_the_one_needed() {
        let binary = b"\0GLIBC_2.2.5\0GLIBC_2.34\0GLIBC_PRIVATE\0GLIBC_2.3.4\0GLIBC_2.9";
        assert_eq!(glibc_needed(binary), Some(vec![2, 34]));
        assert_eq!(glibc_needed(b"GLIBC_PRIVATE GLIBC_ GLIBC_2"), None);
        assert_eq!(glibc_needed(b"#!/bin/sh\n"), None);
    }

    #[test]
    fn the_control_file_depends_on_the_glibc_found() {
        let control = control("amd64", 9000, &[2, 34]);
        assert!(
            control.contains("\nDepends: libc6 (>= 2.34)\n"),
            "{control}"
        );
        assert!(control.contains("\nInstalled-Size: 9000\n"), "{control}");
        assert!(control.ends_with(" administer the node.\n"), "{control}");
        let control = super::control("arm64", 1, &[]);
        assert!(control.contains("\nDepends: libc6\n"), "{control}");
    }

    #[test]
    fn architectures_take_debian_names() {
        assert_eq!(debian_arch("x86_64").unwrap(), "amd64");
        assert!(debian_arch("sparc64").is_err());
    }
}
