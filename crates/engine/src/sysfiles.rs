//! System files opened where the process runs, when they are the same there as at home: a
//! program away from home that loads a library (`dlopen`), reads `/etc/ld.so.cache` or a
//! locale or a Python module reads bytes every node has, and each of its reads and mappings
//! would otherwise go home. See docs/forwarding.md, "System files that are the same".
//!
//! - **Which opens.** An `open` or `openat` of an absolute path under one of the configured
//!   system prefixes (`mosixd --same-files`; both ends must list the prefix), read-only, with
//!   no flag but those that change nothing of what is read ([`accepts`]).
//! - **Same, not trusted by path.** The open goes home as any forwarded open: home opens the
//!   real file with the process's credentials, so what the process may open is home's to say.
//!   Home answers with the descriptor and, for a regular file opened read-only, its content
//!   digest and the path it resolved to ([`SameAs`]). Meanwhile the guest opens the path here
//!   and digests what it opened. Only where both digests and both resolved paths are equal
//!   does the local file go into the process under home's number; otherwise home's descriptor
//!   is the answer, as for any forwarded open: the call "went home".
//! - **Home keeps its descriptor** under that number, which reserves it, and which the
//!   process's file is again wherever the local one cannot be: when the process leaves a
//!   node, home's descriptor takes the offset its reads reached (`ToHome::Offset`), and a
//!   node where the file differs hands it back to home's (`dfsa::reopen`).
//! - **Home trusts no peer.** The guest's word changes nothing at home: home only ever opens
//!   what the process asked, as the process, and tells the digest of a file the process
//!   opened for reading, whose bytes it could read anyway.

use std::borrow::Cow;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

use crate::dfsa::{IN_ROOT, RESOLVE_NO_SYMLINKS};
use crate::ptrace::Pid;
use crate::samefile;

/// The prefixes whose files are the same on every node of a usual cluster: the installed
/// programs and libraries, and the dynamic loader's cache and list of libraries to preload
/// (which every dynamic program looks for as it starts, and which is seldom there). A prefix
/// that ends with `/` holds what lies under it; any other names one file.
pub const DEFAULT_PREFIXES: &[&str] = &[
    "/usr/",
    "/lib/",
    "/lib64/",
    "/lib32/",
    "/libx32/",
    "/etc/ld.so.cache",
    "/etc/ld.so.preload",
];

/// Files larger than this are not digested, at home, whose supervisor would wait for the
/// hash, nor here: they are served through home.
const MAX_DIGESTED: u64 = 512 << 20;

/// The open flags a system file may be opened with here: none changes what is read.
const HARMLESS: i32 = libc::O_CLOEXEC | libc::O_LARGEFILE | libc::O_NOCTTY | libc::O_NONBLOCK;

/// `prefixes` that are absolute paths, other than `/` itself, in the order given.
pub fn clean(prefixes: &[impl AsRef<str>]) -> Vec<String> {
    (prefixes.iter())
        .map(|p| p.as_ref().to_owned())
        .filter(|p| p.starts_with('/') && p.len() > 1)
        .collect()
}

/// What home says of a file it opened for a remote that asked: its digest and the path its
/// descriptor resolves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SameAs {
    /// The digest of its content, in hex (see `samefile`).
    pub digest: String,
    /// Where it lies, as `/proc/PID/fd` shows it.
    pub path: String,
}

/// The system files both ends list: which opens may be served here.
#[derive(Debug, Clone, Default)]
pub struct SystemFiles {
    prefixes: Vec<String>,
}

impl SystemFiles {
    /// The prefixes home listed (`theirs`) that this node lists too.
    pub fn agreed(theirs: &[String], ours: &[String]) -> SystemFiles {
        SystemFiles {
            prefixes: theirs
                .iter()
                .filter(|p| ours.contains(p))
                .cloned()
                .collect(),
        }
    }

    /// This node's own prefixes, `ours`: what home vouches for lookups under (see
    /// `pathcache`).
    pub fn listed(ours: &[String]) -> SystemFiles {
        SystemFiles {
            prefixes: clean(ours),
        }
    }

    /// Whether no prefix is agreed.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// Whether absolute `path` lies under an agreed prefix. A path with a `..` component
    /// never does: it may leave the prefix before it ends.
    pub fn covers(&self, path: &str) -> bool {
        if !path.starts_with('/') || has_dot_dot(path.as_bytes()) {
            return false;
        }
        self.prefixes
            .iter()
            .any(|prefix| match prefix.ends_with('/') {
                true => path.starts_with(prefix.as_str()) && path.len() > prefix.len(),
                false => path == prefix,
            })
    }

    /// Whether home may vouch for a lookup of absolute `path` (see `pathcache`): one under a
    /// prefix, or of a prefix's own directory (`/usr` of `/usr/`), which every lookup under
    /// it walks through anyway. A lookup's answer is home's, kept while home watches it, so
    /// unlike an open it needs no file the same here, and a path with `..` components
    /// (`/usr/lib/gcc/x86_64-linux-gnu/12/../../../../include`, which every `cc1` looks up)
    /// is one too where it stays under a prefix as written, each `..` dropping the name
    /// before it. Where a symbolic link on the way takes it elsewhere, home finds out as it
    /// walks the path, and does not vouch (`homepaths::PathWatch::arm`).
    pub fn covers_lookup(&self, path: &str) -> bool {
        let path = as_written(path).map_or(Cow::Borrowed(path), Cow::Owned);
        self.covers(&path)
            || (self.prefixes.iter()).any(|prefix| {
                prefix
                    .strip_suffix('/')
                    .is_some_and(|dir| path.trim_end_matches('/') == dir)
            })
    }

    /// Whether directory `dir` is on the way to a prefix (`/`, `/etc` of `/etc/ld.so.cache`):
    /// every lookup under that prefix walks through it.
    pub fn leads_to_a_prefix(&self, dir: &str) -> bool {
        let dir = dir.trim_end_matches('/');
        (self.prefixes.iter()).any(|prefix| {
            prefix
                .strip_prefix(dir)
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }
}

/// Whether `path` has a `..` component.
pub fn has_dot_dot(path: &[u8]) -> bool {
    path.split(|&b| b == b'/').any(|part| part == b"..")
}

/// Absolute `path` with its `..` components taken as written, each dropping the name before
/// it (never above `/`), and its `.` components dropped; None if it has no `..`.
fn as_written(path: &str) -> Option<String> {
    if !path.starts_with('/') || !has_dot_dot(path.as_bytes()) {
        return None;
    }
    let mut names: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                names.pop();
            }
            name => names.push(name),
        }
    }
    Some(format!("/{}", names.join("/")))
}

/// Whether an open with `flags` may be served here: read-only, neither creating,
/// truncating, nor asking a directory, a path handle or a file of its own (`O_DIRECT`,
/// `O_NOATIME`, `O_NOFOLLOW` and the sync flags go home too, where they mean what they say).
pub fn accepts(flags: u64) -> bool {
    let Ok(flags) = i32::try_from(flags) else {
        return false;
    };
    flags & libc::O_ACCMODE == libc::O_RDONLY && flags & !HARMLESS & !libc::O_ACCMODE == 0
}

/// A system file opened here, not yet in the process.
pub struct Candidate {
    /// The file, opened with the process's status flags.
    pub file: OwnedFd,
    /// What home must have said of its own for this one to stand in for it.
    pub same: SameAs,
}

impl Candidate {
    /// Open `path` here as an open with `flags` would, and digest it. Resolved from this
    /// node's root without magic links (a link into `/proc` would name the guest's own
    /// files), first as a path handle: only what is a regular file then is opened for
    /// reading, so that opening a device never acts. The open for reading takes the path
    /// again (there is no system call that reopens a handle but through `/proc/self/fd`,
    /// which costs as much as the rest of this function), nonblocking so that a FIFO put
    /// there meanwhile cannot make it wait, and must find the handle's file. Only root can
    /// put a device under a system prefix in that moment, and root owns the node anyway.
    pub fn open(path: &str, flags: u64) -> io::Result<Candidate> {
        // Without a symlink on the way, the path is the file's own; else the kernel says it.
        let path_handle = (libc::O_PATH | libc::O_CLOEXEC) as u64;
        let (handle, own_path) = match open_in_root(path, path_handle, RESOLVE_NO_SYMLINKS) {
            Ok(handle) => (handle, Some(lexical(path))),
            Err(err) if err.raw_os_error() == Some(libc::ELOOP) => {
                (open_in_root(path, path_handle, 0)?, None)
            }
            Err(err) => return Err(err),
        };
        let meta = File::from(handle).metadata()?;
        if !meta.file_type().is_file() {
            return Err(io::Error::other("not a regular file"));
        }
        if meta.len() > MAX_DIGESTED {
            return Err(io::Error::other("too large for home to digest"));
        }
        let reading = (libc::O_RDONLY | libc::O_NONBLOCK | libc::O_NOCTTY) as u64;
        let file = File::from(open_in_root(path, reading, 0)?);
        let opened = file.metadata()?;
        if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) {
            return Err(io::Error::other("the file changed while it was opened"));
        }
        if flags as i32 & libc::O_NONBLOCK == 0 {
            // The process's status flags, as its own open would have set them.
            // SAFETY: F_SETFL on a descriptor we hold.
            if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETFL, 0) } < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        let digest = samefile::digest_with(&file, &opened)?;
        let path = match own_path {
            Some(path) => path,
            None => std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))?
                .into_os_string()
                .into_string()
                .map_err(|_| io::Error::other("a path that is not UTF-8"))?,
        };
        Ok(Candidate {
            file: OwnedFd::from(file),
            same: SameAs { digest, path },
        })
    }
}

/// Absolute `path` as the kernel names the file it resolves to when no symlink is on the
/// way: without empty and `.` components (`covers` lets no `..` through).
fn lexical(path: &str) -> String {
    let mut own = String::with_capacity(path.len());
    for part in path.split('/').filter(|p| !p.is_empty() && *p != ".") {
        own.push('/');
        own.push_str(part);
    }
    own
}

/// Home's word on descriptor `fd` of shell `pid`, whose copy is `copy`: its digest and path
/// if it is a regular file opened read-only. None: it is not, or it cannot be read now.
pub fn same_at_home(pid: Pid, fd: i32, copy: BorrowedFd<'_>) -> Option<SameAs> {
    // SAFETY: F_GETFL on a descriptor we hold.
    let flags = unsafe { libc::fcntl(copy.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 || flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_PATH != 0 {
        return None;
    }
    let file = File::from(copy.try_clone_to_owned().ok()?);
    let meta = file.metadata().ok()?;
    if !meta.file_type().is_file() || meta.len() > MAX_DIGESTED {
        return None;
    }
    let digest = samefile::digest_with(&file, &meta)
        .inspect_err(|err| tracing::debug!(pid, fd, %err, "no digest of a system file"))
        .ok()?;
    let path = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).ok()?;
    Some(SameAs {
        digest,
        path: path.to_str()?.to_owned(),
    })
}

/// The digest of descriptor `fd` of `pid`, read through `/proc/PID/fd` (the same file).
pub fn digest_of_fd(pid: Pid, fd: i32) -> io::Result<String> {
    let file = File::open(format!("/proc/{pid}/fd/{fd}"))?;
    samefile::digest_of(&file)
}

/// `openat2` of absolute `path` from the root, which its symlinks resolve against, with no
/// magic link on the way, and with the further `RESOLVE_` flags of `resolve`.
fn open_in_root(path: &str, flags: u64, resolve: u64) -> io::Result<OwnedFd> {
    // This process's root, opened once: it never changes, and a system open asks for it at
    // every call.
    static ROOT: OnceLock<File> = OnceLock::new();
    let root = match ROOT.get() {
        Some(root) => root,
        None => {
            let opened = File::open("/")?;
            ROOT.get_or_init(|| opened)
        }
    };
    let rest = path.trim_start_matches('/');
    crate::dfsa::openat2(root.as_raw_fd(), rest, flags, 0, IN_ROOT | resolve)
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn system() -> SystemFiles {
        let ours = clean(&["/usr/", "/etc/ld.so.cache", "/opt/"]);
        SystemFiles::agreed(&clean(DEFAULT_PREFIXES), &ours)
    }

    #[test]
    fn only_prefixes_both_ends_list_count() {
        let system = system();
        assert!(system.covers("/usr/lib/x86_64-linux-gnu/libc.so.6"));
        assert!(system.covers("/etc/ld.so.cache"));
        // Listed here only, or at home only.
        assert!(!system.covers("/opt/tool/lib.so"));
        assert!(!system.covers("/lib64/ld-linux-x86-64.so.2"));
        assert!(SystemFiles::agreed(&[], &clean(DEFAULT_PREFIXES)).is_empty());
    }

    #[test]
    fn a_path_is_covered_only_under_a_whole_prefix_and_without_dot_dot() {
        let system = system();
        for path in [
            "/usr",
            "/usr/",
            "/usrx/lib",
            "/etc/ld.so.cache.old",
            "/etc/ld.so.cache/x",
            "usr/lib/x",
            "/usr/../etc/shadow",
            "/usr/lib/../../home/x",
        ] {
            assert!(!system.covers(path), "{path}");
        }
        assert!(system.covers("/usr/lib/./x"));
        assert_eq!(clean(&["relative", "/", "/usr/"]), ["/usr/"]);
    }

    #[test]
    fn a_lookup_is_covered_under_a_prefix_and_of_its_own_directory() {
        let system = system();
        for dir in ["/", "/etc", "/etc/", "/usr"] {
            assert!(system.leads_to_a_prefix(dir), "{dir}");
        }
        for dir in ["/us", "/usr/lib", "/etc/ld.so.cache", "/opt"] {
            assert!(!system.leads_to_a_prefix(dir), "{dir}");
        }
        for path in [
            "/usr",
            "/usr/",
            "/usr//",
            "/usr/include",
            "/etc/ld.so.cache",
        ] {
            assert!(system.covers_lookup(path), "{path}");
        }
        for path in [
            "/",
            "/usrx",
            "/etc",
            "/etc/ld.so.cache/x",
            "/usr/..",
            "/usr/lib/../../home/x",
            "/usr/../etc/shadow",
            "/../usrx/lib",
            "/opt",
        ] {
            assert!(!system.covers_lookup(path), "{path}");
        }
        // As written, these stay under `/usr/` (or name a prefix's file).
        for path in [
            "/usr/lib/gcc/x86_64-linux-gnu/12/../../../../x86_64-linux-gnu/include",
            "/usr/lib/../include/stdio.h",
            "/../usr/include",
            "/usr/../etc/ld.so.cache",
        ] {
            assert!(system.covers_lookup(path), "{path}");
        }
    }

    #[test]
    fn only_plain_read_only_opens_are_accepted() {
        for ok in [
            libc::O_RDONLY,
            libc::O_RDONLY | libc::O_CLOEXEC,
            libc::O_RDONLY | libc::O_CLOEXEC | libc::O_LARGEFILE | libc::O_NONBLOCK,
            libc::O_NOCTTY,
        ] {
            assert!(accepts(ok as u64), "{ok:#o}");
        }
        for no in [
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_RDONLY | libc::O_CREAT,
            libc::O_RDONLY | libc::O_TRUNC,
            libc::O_RDONLY | libc::O_APPEND,
            libc::O_RDONLY | libc::O_DIRECTORY,
            libc::O_PATH,
            libc::O_TMPFILE,
            libc::O_RDONLY | libc::O_DIRECT,
            libc::O_RDONLY | libc::O_NOATIME,
            libc::O_RDONLY | libc::O_NOFOLLOW,
            libc::O_RDONLY | libc::O_SYNC,
            libc::O_RDONLY | libc::O_ASYNC,
        ] {
            assert!(!accepts(no as u64), "{no:#o}");
        }
        assert!(!accepts(1 << 40));
    }

    #[test]
    fn a_candidate_is_a_regular_file_with_its_digest_and_resolved_path() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("lib.so");
        std::fs::write(&file, b"the same bytes").unwrap();
        std::os::unix::fs::symlink("lib.so", dir.path().join("link.so")).unwrap();
        let link = dir.path().join("link.so");
        let got = Candidate::open(link.to_str().unwrap(), libc::O_RDONLY as u64).unwrap();
        assert_eq!(got.same.path, file.to_str().unwrap());
        let expected = samefile::digest_at(file.to_str().unwrap()).unwrap();
        assert_eq!(got.same.digest, expected);
        // Without a symlink on the way, the path opened is the file's, cleaned as the kernel
        // names it.
        let roundabout = format!("{}//./lib.so", dir.path().to_str().unwrap());
        let direct = Candidate::open(&roundabout, libc::O_RDONLY as u64).unwrap();
        assert_eq!(direct.same, got.same);
        // SAFETY: F_GETFL on a descriptor the test holds.
        let flags = unsafe { libc::fcntl(got.file.as_raw_fd(), libc::F_GETFL) };
        assert_eq!(flags & libc::O_NONBLOCK, 0, "the process's status flags");
        let nonblocking = libc::O_RDONLY | libc::O_NONBLOCK;
        let asked = Candidate::open(link.to_str().unwrap(), nonblocking as u64).unwrap();
        // SAFETY: as above.
        let flags = unsafe { libc::fcntl(asked.file.as_raw_fd(), libc::F_GETFL) };
        assert_ne!(flags & libc::O_NONBLOCK, 0);
        // Neither a directory nor a FIFO, which is never opened for reading (it would wait).
        assert!(Candidate::open(dir.path().to_str().unwrap(), 0).is_err());
        let fifo = dir.path().join("fifo");
        let name = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo reads the NUL-terminated name.
        assert_eq!(unsafe { libc::mkfifo(name.as_ptr(), 0o644) }, 0);
        assert!(Candidate::open(fifo.to_str().unwrap(), 0).is_err());
        // Home's word on the same file, opened read-only, is the same.
        let opened = File::open(&file).unwrap();
        let me = std::process::id() as Pid;
        let home = same_at_home(me, opened.as_raw_fd(), opened.as_fd()).unwrap();
        assert_eq!(home, got.same);
        // Not for a file opened for writing.
        let written = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        assert!(same_at_home(me, written.as_raw_fd(), written.as_fd()).is_none());
    }
}
