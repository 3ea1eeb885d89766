//! DFSA: file calls that run where the process runs. A path on a file system that is the same
//! on every node (MFS's `/mfs/N`, and mounts the operators declare, such as a shared NFS) names
//! the same file at home and here, so a remote opens it, stats it and reads it here instead of
//! sending each call home. See docs/forwarding.md, "Files that are the same everywhere".
//!
//! - **Which paths.** Both ends must say the file system is the same: home lists its own in
//!   the session's opening ([`Terms`]), this node has its own ([`Consistent`]), and a path
//!   runs here only under a prefix both list. `/mfs/N/...` counts for a numbered node only;
//!   `/mfs/home`, `/mfs/here` and the other per-process directories resolve differently for
//!   each caller and go home. Paths are resolved with `openat2(RESOLVE_BENEATH)` under their
//!   prefix, so neither `..` nor a symlink can lead out of it: such a path goes home.
//! - **Whose rights.** The guest runs with the uid, gid and groups of the process's owner,
//!   and opens here only while home says the process has those (a set-user-ID program at home
//!   does not); a call that changes its ids makes it go home first.
//! - **Which numbers.** A descriptor opened here gets the number home would give it: home's
//!   shell opens a placeholder (`/`, `O_PATH`) and its number is the one the program gets, set
//!   into the process with `SECCOMP_IOCTL_NOTIF_ADDFD`. Home's table so keeps the number taken,
//!   and a descriptor opened at home later never clashes with it. A close here closes the
//!   placeholder too, without waiting for the answer.
//! - **Which calls.** Calls on a local descriptor that depend on nothing but the descriptor
//!   (read, write, seek, fstat, getdents, fsync, truncate, mmap but shared writable) run in
//!   the process as they are (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`: the descriptor
//!   number is in a register, which nothing can change after the check). A duplicate of a
//!   local descriptor is local too: home runs the dup on its placeholder, so that its table
//!   takes the number the program gets, and the process gets its own open file under it.
//!   Path calls are run by the guest itself, on the path it read once, never by the process
//!   after a check (the process could change the path in between). Any other call that names a local descriptor
//!   makes the process go home, where the descriptor is an ordinary one: taking a lock among
//!   them, as a lock belongs to the open file, which the next move would open anew.
//! - **Moves.** The image lists the local descriptors (path, flags, offset, number,
//!   [`LocalFile`]); wherever the process resumes, each is opened again by its path beneath
//!   a root that node holds the same (at home over the placeholder), and a duplicate is
//!   made again from the descriptor it shares an open file with. A file of a tree the
//!   next node does not share goes back to home instead: home, which relays the image, knows
//!   the trees that node shares from its `Ready`, opens the file over its placeholder
//!   ([`take_back`]) and takes it out of the image before the node gets it. A file that
//!   cannot be opened where it should be (removed meanwhile, or not a regular file or
//!   directory) fails the move, and the process stays where it was.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use rmosix_image::LocalFile;
use serde::{Deserialize, Serialize};

use crate::inject::{Injector, Scratch};
use crate::mem::Memory;
use crate::ptrace::Pid;
use crate::sys::answer_of;
use crate::sysfiles::{self, SystemFiles};
use crate::table::{self, Arg, PATH_MAX, Route};
use tracing::{debug, warn};

mod mutate;

/// What home says of its files in a session's opening: which of its file systems are the
/// same on every node, and whose rights the process has there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Terms {
    /// Home's file systems that are the same everywhere.
    pub consistent: Consistent,
    /// The process's file-system uid at home.
    pub uid: u32,
    /// Its file-system gid.
    pub gid: u32,
    /// Its supplementary groups, sorted.
    pub groups: Vec<u32>,
    /// Its umask at home, which files it creates away get too (None: an older home; files
    /// are then created at home).
    #[serde(default)]
    pub umask: Option<u32>,
}

impl Terms {
    /// Home's terms for process `pid`: its file-system ids as the kernel has them now.
    pub fn of(pid: Pid, consistent: Consistent) -> io::Result<Terms> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        let field = |name: &str| -> Vec<u32> {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .map(|rest| rest.split_whitespace().filter_map(|w| w.parse().ok()))
                .into_iter()
                .flatten()
                .collect()
        };
        let (uids, gids, mut groups) = (field("Uid:"), field("Gid:"), field("Groups:"));
        let umask = (status.lines())
            .find_map(|line| line.strip_prefix("Umask:"))
            .and_then(|mask| u32::from_str_radix(mask.trim(), 8).ok());
        let (Some(&uid), Some(&gid)) = (uids.get(3), gids.get(3)) else {
            return Err(io::Error::other(format!("/proc/{pid}/status has no ids")));
        };
        groups.sort_unstable();
        Ok(Terms {
            consistent,
            uid,
            gid,
            groups,
            umask,
        })
    }

    /// Whether this process's own file-system rights are the ones home says the process has.
    fn match_ours(&self) -> bool {
        // SAFETY: plain calls that read this process's ids.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut groups = vec![0 as libc::gid_t; 65536];
        // SAFETY: getgroups writes at most `groups.len()` gids into it.
        let n = unsafe { libc::getgroups(groups.len() as i32, groups.as_mut_ptr()) };
        groups.truncate(n.max(0) as usize);
        groups.sort_unstable();
        groups.dedup();
        let mut theirs = self.groups.clone();
        theirs.dedup();
        (uid, gid, groups) == (self.uid, self.gid, theirs)
    }
}

/// File systems that are the same on every node: an MFS mount point, whose numbered
/// directories are the nodes' roots, and mount points declared so.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistent {
    /// Where MFS is mounted, if it is.
    pub mfs: Option<String>,
    /// Other mount points that are the same on every node.
    pub mounts: Vec<String>,
    /// The node that lists them, if known: its own MFS directory is its local tree, which a
    /// process of its reaches faster by forwarding (one round trip, then local calls at
    /// home) than through another node's MFS (a round trip for each name looked up).
    #[serde(default)]
    pub node: Option<u16>,
    /// Prefixes of system files, which are opened where the process runs when they are the
    /// same there as at home (see `sysfiles`). Not a file system the same everywhere: each
    /// file is checked.
    #[serde(default)]
    pub system: Vec<String>,
}

impl Consistent {
    /// `mfs` and `mounts`, as absolute paths without a trailing slash; others are dropped.
    pub fn new(mfs: Option<&Path>, mounts: &[impl AsRef<Path>]) -> Consistent {
        let clean = |p: &Path| -> Option<String> {
            let s = p.to_str()?.trim_end_matches('/');
            (s.starts_with('/') && s.len() > 1).then(|| s.to_owned())
        };
        Consistent {
            mfs: mfs.and_then(clean),
            mounts: mounts.iter().filter_map(|m| clean(m.as_ref())).collect(),
            node: None,
            system: Vec::new(),
        }
    }

    /// The same, with these prefixes of system files (see `sysfiles`).
    pub fn with_system(self, prefixes: &[impl AsRef<str>]) -> Consistent {
        Consistent {
            system: crate::sysfiles::clean(prefixes),
            ..self
        }
    }

    /// The same, listed by node `node`.
    pub fn at_node(self, node: u16) -> Consistent {
        Consistent {
            node: Some(node),
            ..self
        }
    }

    /// What both `self` and `other` hold, `self` being home's: home's own MFS directory
    /// stays out.
    pub fn shared_with(&self, other: &Consistent) -> Consistent {
        Consistent {
            node: self.node,
            mfs: self.mfs.clone().filter(|m| other.mfs.as_ref() == Some(m)),
            mounts: (self.mounts.iter())
                .filter(|m| other.mounts.contains(m))
                .cloned()
                .collect(),
            system: (self.system.iter())
                .filter(|m| other.system.contains(m))
                .cloned()
                .collect(),
        }
    }

    /// Whether no file system is shared: nothing is opened here but system files.
    pub fn is_empty(&self) -> bool {
        self.mfs.is_none() && self.mounts.is_empty()
    }

    /// The root `path` lies under and the rest of it, relative to that root ("." for the
    /// root itself). None: not under one (or under a per-process MFS directory).
    pub fn split<'a>(&self, path: &'a str) -> Option<(String, &'a str)> {
        let rest_of = |prefix: &str| -> Option<&'a str> {
            let rest = path.strip_prefix(prefix)?;
            match rest {
                "" => Some("."),
                _ => rest.strip_prefix('/'),
            }
        };
        if let Some(mfs) = &self.mfs
            && let Some(rest) = rest_of(mfs)
        {
            let (node, rest) = rest.split_once('/').unwrap_or((rest, "."));
            let numbered = !node.is_empty() && node.bytes().all(|b| b.is_ascii_digit());
            let own = self.node.is_some_and(|own| node.parse() == Ok(own));
            return (numbered && !own).then(|| (format!("{mfs}/{node}"), nonempty(rest)));
        }
        self.mounts
            .iter()
            .find_map(|m| rest_of(m).map(|rest| (m.clone(), nonempty(rest))))
    }
}

fn nonempty(rest: &str) -> &str {
    if rest.is_empty() { "." } else { rest }
}

/// What to do with a trapped call, as far as local files go.
pub enum Verdict {
    /// Not a local file's business: on as usual (forwarded, or whatever its route says).
    Pass,
    /// Let it run in the process as it is.
    Run,
    /// Answered here: the call returns this (a negative errno on failure).
    Answer(i64),
    /// Opened here: `file` goes into the process under the number home gives.
    Open {
        file: OwnedFd,
        cloexec: bool,
        path: String,
    },
    /// An open of a system file (see `sysfiles`): it goes home, and the same file here may
    /// stand in for home's.
    System { path: String, flags: u64 },
    /// A local descriptor closes: in the process, and its placeholder at home.
    Close(i32),
    /// Local descriptor `source` is duplicated (dup, dup2, dup3, fcntl's `F_DUPFD`): home
    /// runs the call on its placeholder or copy, which gives the number the program gets,
    /// and the process gets its own open file under that number, `cloexec` or not.
    Dup { source: i32, cloexec: bool },
    /// It names a local descriptor in a way only home can serve: the process goes home.
    GoHome(String),
}

/// A local descriptor.
#[derive(Clone)]
struct Opened {
    /// The path it was opened by.
    path: String,
    /// A system file's digest, the same as home's file (see `sysfiles`); None: a file of a
    /// file system that is the same everywhere.
    digest: Option<String>,
}

/// The remote's local files: which paths may be opened here, and what is open.
pub struct LocalFiles {
    /// Shared by both ends; empty: none, every call goes home.
    consistent: Consistent,
    /// Open directories of the roots, by path.
    roots: HashMap<String, OwnedFd>,
    /// Local descriptors, what they were opened by.
    open: HashMap<i32, Opened>,
    /// The system files that may be opened here when they are the same as at home.
    system: SystemFiles,
    /// The process's umask, which its `umask` calls (run at home) change: what a file it
    /// creates here gets. None: unknown, files are created at home.
    umask: Option<u32>,
}

impl LocalFiles {
    /// For a session whose home said `terms` (None: an older home, or none), on a node whose
    /// own consistent file systems are `ours`.
    pub fn new(terms: Option<&Terms>, ours: &Consistent) -> LocalFiles {
        let consistent = match terms {
            Some(terms) if terms.match_ours() => terms.consistent.shared_with(ours),
            _ => Consistent::default(),
        };
        // Home opens system files as the process, whatever the guest's own ids.
        let theirs = terms.map_or(&[][..], |t| &t.consistent.system[..]);
        LocalFiles {
            consistent,
            system: SystemFiles::agreed(theirs, &ours.system),
            roots: HashMap::new(),
            open: HashMap::new(),
            umask: terms.and_then(|t| t.umask),
        }
    }

    /// The descriptors an image brought, now open in the process.
    pub fn adopt(&mut self, files: &[LocalFile]) {
        for file in files {
            let (path, digest) = (file.path.clone(), file.digest.clone());
            self.open.insert(file.fd, Opened { path, digest });
        }
    }

    /// The file systems both ends share.
    pub fn consistent(&self) -> &Consistent {
        &self.consistent
    }

    /// The system files both ends list.
    pub fn system(&self) -> &SystemFiles {
        &self.system
    }

    /// Whether any descriptor is local.
    pub fn holds_any(&self) -> bool {
        !self.open.is_empty()
    }

    /// Whether `fd` is a local descriptor.
    pub fn holds(&self, fd: i32) -> bool {
        self.open.contains_key(&fd)
    }

    /// Descriptor `fd` went into the process, opened by `path`; `digest`: a system file's.
    pub fn opened(&mut self, fd: i32, path: String, digest: Option<String>) {
        self.open.insert(fd, Opened { path, digest });
    }

    /// The digests of the system files open here, by descriptor, for an image.
    pub fn system_digests(&self) -> HashMap<i32, String> {
        (self.open.iter())
            .filter_map(|(&fd, o)| Some((fd, o.digest.clone()?)))
            .collect()
    }

    /// Whether `fd` is a local system file.
    fn is_system(&self, fd: i32) -> bool {
        self.open.get(&fd).is_some_and(|o| o.digest.is_some())
    }

    /// Local descriptor `fd` was duplicated under number `to` (over whatever it held).
    pub fn duplicated(&mut self, fd: i32, to: i32) {
        if let Some(opened) = self.open.get(&fd).cloned() {
            self.open.insert(to, opened);
        }
    }

    /// Descriptor `fd` closed.
    pub fn closed(&mut self, fd: i32) {
        self.open.remove(&fd);
    }

    /// What to do with call `nr`; `mem` reads its paths from the process.
    pub fn judge(&mut self, nr: i64, args: &[u64; 6], mem: &Memory) -> Verdict {
        if self.consistent.is_empty() && self.open.is_empty() && self.system.is_empty() {
            return Verdict::Pass;
        }
        if let Some(verdict) = self.on_descriptor(nr, args, mem) {
            return verdict;
        }
        if nr == libc::SYS_umask {
            // It runs at home as well, and cannot fail.
            self.umask = Some(args[0] as u32 & 0o777);
            return Verdict::Pass;
        }
        if is_id_change(nr) {
            // Rights here would no longer be the process's: no more local files. System
            // files stay: home opened them as the process, and their bytes are home's.
            self.consistent = Consistent::default();
            if self.open.values().any(|o| o.digest.is_none()) {
                return Verdict::GoHome("a change of ids with files open here".into());
            }
            return Verdict::Pass;
        }
        if let Some(verdict) = self.on_path(nr, args, mem) {
            return verdict;
        }
        if let Some(verdict) = self.on_mutation(nr, args, mem) {
            return verdict;
        }
        if let Some(verdict) = self.on_system_open(nr, args, mem) {
            return verdict;
        }
        // Home would take the placeholder for the file, and a path relative to one for a
        // path relative to `/`.
        match self.names_local(nr, args) {
            true => Verdict::GoHome(format!("system call {nr} on a file opened here")),
            false => Verdict::Pass,
        }
    }

    /// Whether call `nr` names a local descriptor as a descriptor or a directory.
    fn names_local(&self, nr: i64, args: &[u64; 6]) -> bool {
        if self.open.is_empty() {
            return false;
        }
        let mut at: Vec<usize> = match table::route(nr, args) {
            Route::Forward(row) => (row.args.iter().enumerate())
                .filter(|(_, arg)| matches!(arg, Arg::Fd))
                .map(|(i, _)| i)
                .collect(),
            Route::Vector | Route::Message | Route::Batch => vec![0],
            Route::MmapFile => vec![4],
            _ => Vec::new(),
        };
        at.extend(directory_args(nr));
        // The ioctl rows of the call table describe the request's argument only: the
        // descriptor in argument 0 is a plain value there.
        if nr == libc::SYS_ioctl {
            at.push(0);
        }
        at.iter().any(|&i| self.holds(args[i] as i32))
    }

    /// Calls that name a local descriptor. None: the call names none.
    fn on_descriptor(&self, nr: i64, args: &[u64; 6], mem: &Memory) -> Option<Verdict> {
        if self.open.is_empty() {
            return None;
        }
        let fd0 = args[0] as i32;
        let local = |fd: u64| self.holds(fd as i32);
        let go = |what: &str| Some(Verdict::GoHome(format!("{what} on a file opened here")));
        let verdict = match nr {
            libc::SYS_close if local(args[0]) => Some(Verdict::Close(fd0)),
            libc::SYS_read
            | libc::SYS_write
            | libc::SYS_pread64
            | libc::SYS_pwrite64
            | libc::SYS_readv
            | libc::SYS_writev
            | libc::SYS_preadv
            | libc::SYS_pwritev
            | libc::SYS_preadv2
            | libc::SYS_pwritev2
            | libc::SYS_lseek
            | libc::SYS_fstat
            | libc::SYS_getdents64
            | libc::SYS_fsync
            | libc::SYS_fdatasync
            | libc::SYS_ftruncate
            | libc::SYS_fallocate
            | libc::SYS_fadvise64
            | libc::SYS_readahead
            | libc::SYS_fstatfs
            | libc::SYS_fchmod
            | libc::SYS_fchown
            | libc::SYS_fgetxattr
            | libc::SYS_flistxattr
            | libc::SYS_sync_file_range
                if local(args[0]) =>
            {
                Some(Verdict::Run)
            }
            // A lock belongs to the open file that took it, and a move opens the file anew
            // wherever the process resumes: a lock taken here would be gone after the next
            // move. So it is taken at home, where the file then stays (a descriptor opened at
            // home is never moved away), and holds wherever the process goes.
            libc::SYS_flock if local(args[0]) => go("flock"),
            libc::SYS_fcntl if local(args[0]) => match args[1] as i32 {
                libc::F_GETFD
                | libc::F_SETFD
                | libc::F_GETFL
                | libc::F_SETFL
                | libc::F_GETLK
                | libc::F_OFD_GETLK => Some(Verdict::Run),
                libc::F_SETLK | libc::F_SETLKW | libc::F_OFD_SETLK | libc::F_OFD_SETLKW => {
                    go("a lock")
                }
                libc::F_DUPFD => Some(Verdict::Dup {
                    source: fd0,
                    cloexec: false,
                }),
                libc::F_DUPFD_CLOEXEC => Some(Verdict::Dup {
                    source: fd0,
                    cloexec: true,
                }),
                _ => go("fcntl"),
            },
            // isatty(3) of a file opened here, which a regular file or a directory is not,
            // here as at home: Python asks it of every file it opens.
            libc::SYS_ioctl if local(args[0]) && args[1] as u32 == libc::TCGETS as u32 => {
                Some(Verdict::Run)
            }
            libc::SYS_mmap if local(args[4]) => {
                let shared = args[3] & libc::MAP_SHARED as u64 != 0;
                if shared && args[2] & libc::PROT_WRITE as u64 != 0 {
                    go("a shared writable mapping")
                } else {
                    Some(Verdict::Run)
                }
            }
            // fstat (glibc's, by newfstatat) and statx of the descriptor itself.
            libc::SYS_newfstatat | libc::SYS_statx
                if local(args[0]) && is_empty_path(mem, args[1]) =>
            {
                Some(Verdict::Run)
            }
            // Path calls relative to a local directory are `on_path`'s.
            libc::SYS_openat
            | libc::SYS_newfstatat
            | libc::SYS_statx
            | libc::SYS_faccessat
            | libc::SYS_faccessat2
            | libc::SYS_readlinkat => None,
            libc::SYS_dup if local(args[0]) => Some(Verdict::Dup {
                source: fd0,
                cloexec: false,
            }),
            // A descriptor over itself: nothing changes, close-on-exec included (dup3 fails
            // so at home).
            libc::SYS_dup2 if local(args[0]) && args[0] == args[1] => {
                Some(Verdict::Answer(i64::from(fd0)))
            }
            // Over whatever the number held, here or at home.
            libc::SYS_dup2 | libc::SYS_dup3 if local(args[0]) => Some(Verdict::Dup {
                source: fd0,
                cloexec: nr == libc::SYS_dup3 && args[2] & libc::O_CLOEXEC as u64 != 0,
            }),
            // Home's descriptor over a local one: the process would have to drop its own
            // file under that number, which only a call of its own does.
            libc::SYS_dup2 | libc::SYS_dup3 if local(args[1]) => go("dup2 of a home file"),
            libc::SYS_close_range
                if self
                    .open
                    .keys()
                    .any(|&fd| fd as u64 >= args[0] && fd as u64 <= args[1]) =>
            {
                go("close_range")
            }
            libc::SYS_epoll_ctl if local(args[2]) => go("epoll_ctl"),
            libc::SYS_splice | libc::SYS_tee | libc::SYS_copy_file_range
                if local(args[0]) || local(args[2]) =>
            {
                go("splice")
            }
            libc::SYS_sendfile if local(args[0]) || local(args[1]) => go("sendfile"),
            libc::SYS_poll | libc::SYS_ppoll if self.polls_local(mem, args[0], args[1]) => {
                go("poll")
            }
            libc::SYS_select | libc::SYS_pselect6 if self.selects_local(mem, args) => go("select"),
            // Descriptors passed in a message: a placeholder must not go in their place.
            libc::SYS_sendmsg | libc::SYS_sendmmsg => go("sendmsg"),
            _ => None,
        };
        match verdict {
            // Anything but reading a system file is home's: its locks, its mode, ...
            Some(Verdict::Run) if self.is_system(fd0) && !reads_only(nr, args) => {
                go(&format!("system call {nr}"))
            }
            verdict => verdict,
        }
    }

    /// Whether a poll array of `count` entries at `addr` names a local descriptor.
    fn polls_local(&self, mem: &Memory, addr: u64, count: u64) -> bool {
        let Ok(raw) = mem.read_vec(addr, (count.min(1 << 16) * 8) as usize) else {
            return false;
        };
        raw.chunks_exact(8)
            .any(|p| self.holds(i32::from_le_bytes([p[0], p[1], p[2], p[3]])))
    }

    /// Whether select's descriptor sets name a local descriptor.
    fn selects_local(&self, mem: &Memory, args: &[u64; 6]) -> bool {
        let nfds = args[0].min(1 << 16);
        self.open.keys().any(|&fd| {
            (fd as u64) < nfds
                && args[1..4].iter().any(|&set| {
                    set != 0
                        && mem
                            .read_vec(set + fd as u64 / 8, 1)
                            .is_ok_and(|b| b[0] & (1 << (fd % 8)) != 0)
                })
        })
    }

    /// Path calls under a consistent file system, run here by the guest. None: not ours.
    fn on_path(&mut self, nr: i64, args: &[u64; 6], mem: &Memory) -> Option<Verdict> {
        const CWD: u64 = libc::AT_FDCWD as u64;
        // (directory, path pointer) of each path call.
        let (dir, at) = match nr {
            libc::SYS_open
            | libc::SYS_stat
            | libc::SYS_lstat
            | libc::SYS_access
            | libc::SYS_readlink => (CWD, args[0]),
            libc::SYS_openat
            | libc::SYS_newfstatat
            | libc::SYS_statx
            | libc::SYS_faccessat
            | libc::SYS_faccessat2
            | libc::SYS_readlinkat => (args[0], args[1]),
            _ => return None,
        };
        let path = self.full_path(dir, at, mem)?;
        let (root, rest) = self.consistent.split(&path)?;
        let (root, rest) = (root, rest.to_owned());
        match nr {
            libc::SYS_open | libc::SYS_openat => {
                let (flags, mode) = match nr {
                    libc::SYS_open => (args[1], args[2]),
                    _ => (args[2], args[3]),
                };
                // An unnamed file is home's business; a file created gets the process's
                // umask, which this node's kernel applies with the guest's own.
                let creates = flags & libc::O_CREAT as u64 != 0;
                let umask = match (creates, self.umask) {
                    _ if flags & libc::O_TMPFILE as u64 == libc::O_TMPFILE as u64 => return None,
                    (true, None) => return None,
                    (true, Some(mask)) => Some(mask),
                    (false, _) => None,
                };
                let cloexec = flags & libc::O_CLOEXEC as u64 != 0;
                let flags = flags & !(libc::O_CLOEXEC as u64);
                let file = with_umask(umask, || self.open_under(&root, &rest, flags, mode));
                match file {
                    Ok(file) => Some(Verdict::Open {
                        file,
                        cloexec,
                        path,
                    }),
                    Err(err) => answer_or_pass(err),
                }
            }
            libc::SYS_stat | libc::SYS_lstat | libc::SYS_newfstatat => {
                let (buf, nofollow) = match nr {
                    libc::SYS_stat => (args[1], false),
                    libc::SYS_lstat => (args[1], true),
                    _ => (args[2], args[3] & libc::AT_SYMLINK_NOFOLLOW as u64 != 0),
                };
                let file = match self.handle_under(&root, &rest, nofollow) {
                    Ok(file) => file,
                    Err(err) => return answer_or_pass(err),
                };
                let mut st = [0u8; std::mem::size_of::<libc::stat>()];
                // SAFETY: fstatat writes one struct stat into `st`, which is that size.
                let ret = unsafe {
                    libc::fstatat(
                        file.as_raw_fd(),
                        c"".as_ptr(),
                        st.as_mut_ptr().cast(),
                        libc::AT_EMPTY_PATH,
                    )
                };
                Some(written(ret, mem, buf, &st))
            }
            libc::SYS_statx => {
                let nofollow = args[2] & libc::AT_SYMLINK_NOFOLLOW as u64 != 0;
                let file = match self.handle_under(&root, &rest, nofollow) {
                    Ok(file) => file,
                    Err(err) => return answer_or_pass(err),
                };
                let mut stx = [0u8; std::mem::size_of::<libc::statx>()];
                let sync = args[2] as i32 & libc::AT_STATX_SYNC_TYPE;
                // SAFETY: statx writes one struct statx into `stx`, which is that size.
                let ret = unsafe {
                    libc::statx(
                        file.as_raw_fd(),
                        c"".as_ptr(),
                        libc::AT_EMPTY_PATH | sync,
                        args[3] as u32,
                        stx.as_mut_ptr().cast(),
                    )
                };
                Some(written(ret, mem, args[4], &stx))
            }
            libc::SYS_access | libc::SYS_faccessat | libc::SYS_faccessat2 => {
                let (mode, flags) = match nr {
                    libc::SYS_access => (args[1], 0),
                    libc::SYS_faccessat => (args[2], 0),
                    _ => (args[2], args[3] as i32),
                };
                let nofollow = flags & libc::AT_SYMLINK_NOFOLLOW != 0;
                let file = match self.handle_under(&root, &rest, nofollow) {
                    Ok(file) => file,
                    Err(err) => return answer_or_pass(err),
                };
                let flags = libc::AT_EMPTY_PATH | (flags & libc::AT_EACCESS);
                // SAFETY: plain call on our own descriptor with an empty path.
                let ret = unsafe {
                    libc::syscall(
                        libc::SYS_faccessat2,
                        file.as_raw_fd(),
                        c"".as_ptr(),
                        mode as i32,
                        flags,
                    )
                };
                Some(Verdict::Answer(answer_of(ret)))
            }
            libc::SYS_readlink | libc::SYS_readlinkat => {
                let (buf, len) = match nr {
                    libc::SYS_readlink => (args[1], args[2]),
                    _ => (args[2], args[3]),
                };
                let file = match self.handle_under(&root, &rest, true) {
                    Ok(file) => file,
                    Err(err) => return answer_or_pass(err),
                };
                if (len as i32) <= 0 {
                    return Some(Verdict::Answer(-i64::from(libc::EINVAL)));
                }
                let mut target = vec![0u8; (len as usize).min(PATH_MAX as usize)];
                // SAFETY: readlinkat writes at most target.len() bytes into it.
                let n = unsafe {
                    libc::readlinkat(
                        file.as_raw_fd(),
                        c"".as_ptr(),
                        target.as_mut_ptr().cast(),
                        target.len(),
                    )
                };
                if n < 0 {
                    return Some(Verdict::Answer(answer_of(-1)));
                }
                Some(match mem.write(buf, &target[..n as usize]) {
                    Ok(()) => Verdict::Answer(n as i64),
                    Err(_) => Verdict::Answer(-i64::from(libc::EFAULT)),
                })
            }
            _ => None,
        }
    }

    /// The absolute path a path call names: its own if absolute, else under a local
    /// directory descriptor. None: relative to home's working directory or to a home
    /// descriptor, not readable, or not UTF-8.
    fn full_path(&self, dir: u64, at: u64, mem: &Memory) -> Option<String> {
        let raw = mem.read_cstr(at, PATH_MAX as usize - 1).ok()?;
        let path = String::from_utf8(raw).ok()?;
        if path.starts_with('/') {
            return Some(path);
        }
        let base = self
            .open
            .get(&(dir as i32))
            .filter(|o| o.digest.is_none())?;
        if path.is_empty() {
            return None;
        }
        Some(format!("{}/{path}", base.path))
    }

    /// An open of a system file, by absolute path, read-only: it goes home, with the same
    /// file here to stand in for home's (see `sysfiles`). None: not one.
    fn on_system_open(&self, nr: i64, args: &[u64; 6], mem: &Memory) -> Option<Verdict> {
        let (at, flags) = match nr {
            libc::SYS_open => (args[0], args[1]),
            libc::SYS_openat => (args[1], args[2]),
            _ => return None,
        };
        if self.system.is_empty() || !sysfiles::accepts(flags) {
            return None;
        }
        let raw = mem.read_cstr(at, PATH_MAX as usize - 1).ok()?;
        let path = String::from_utf8(raw).ok()?;
        // An absolute path ignores openat's directory, be it home's or one opened here.
        self.system
            .covers(&path)
            .then_some(Verdict::System { path, flags })
    }

    /// An `O_PATH` handle on `rest` beneath `root`, or on the symlink itself if `nofollow`:
    /// what the guest stats, checks or reads a link through.
    fn handle_under(&mut self, root: &str, rest: &str, nofollow: bool) -> io::Result<OwnedFd> {
        let nofollow = if nofollow { libc::O_NOFOLLOW } else { 0 };
        self.open_under(root, rest, (libc::O_PATH | nofollow) as u64, 0)
    }

    /// Open `rest` beneath `root` with `flags`: never outside it.
    fn open_under(&mut self, root: &str, rest: &str, flags: u64, mode: u64) -> io::Result<OwnedFd> {
        let dir = match self.roots.get(root) {
            Some(dir) => dir.as_raw_fd(),
            None => {
                let opened = File::open(root)?;
                let fd = OwnedFd::from(opened);
                let raw = fd.as_raw_fd();
                self.roots.insert(root.to_owned(), fd);
                raw
            }
        };
        open_beneath(dir, rest, flags, mode)
    }
}

/// Run `f` with this process's umask set to `mask` (if any), and the old one back after.
/// Only the thread that serves calls creates files in a guest, so none is created meanwhile
/// with the wrong mask.
fn with_umask<T>(mask: Option<u32>, f: impl FnOnce() -> T) -> T {
    let Some(mask) = mask else {
        return f();
    };
    // SAFETY: umask cannot fail; it changes only this process's file creation mask.
    let old = unsafe { libc::umask(mask as libc::mode_t) };
    let result = f();
    // SAFETY: as above.
    unsafe { libc::umask(old) };
    result
}

/// `openat2(dir, rest, flags, mode)` confined beneath `dir`: `..` and symlinks cannot leave it.
fn open_beneath(dir: i32, rest: &str, flags: u64, mode: u64) -> io::Result<OwnedFd> {
    openat2(
        dir,
        rest,
        flags,
        mode,
        RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
    )
}

/// `openat2(dir, rest, flags, mode)` resolved as `resolve` says; the descriptor is
/// close-on-exec.
pub(crate) fn openat2(
    dir: i32,
    rest: &str,
    flags: u64,
    mode: u64,
    resolve: u64,
) -> io::Result<OwnedFd> {
    let path = CString::new(rest).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    let how = OpenHow {
        flags: flags | libc::O_CLOEXEC as u64,
        mode,
        resolve,
    };
    // SAFETY: openat2 reads the NUL-terminated path and `how`, both live for the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `struct open_how` of openat2(2).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
/// No symlink at all on the way (`sysfiles`: then the path opened is the file's own).
pub(crate) const RESOLVE_NO_SYMLINKS: u64 = 0x04;
const RESOLVE_BENEATH: u64 = 0x08;
const RESOLVE_IN_ROOT: u64 = 0x10;
/// Resolution from a root directory, which absolute symlinks resolve against too, with no
/// magic link on the way (what `sysfiles` opens system files with, from `/`).
pub(crate) const IN_ROOT: u64 = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS;

/// A path that could not be opened here: errors that say something of the file are the
/// call's answer (home would say the same of the same file); those that say the path left
/// its root (`EXDEV`), met a magic link (`ELOOP`) or that this kernel cannot confine it
/// (`ENOSYS`) send the call home.
fn answer_or_pass(err: io::Error) -> Option<Verdict> {
    match err.raw_os_error() {
        Some(libc::EXDEV | libc::ELOOP | libc::ENOSYS | libc::EAGAIN) | None => None,
        Some(errno) => Some(Verdict::Answer(-i64::from(errno))),
    }
}

/// The answer of a call that filled `bytes` for the process at `buf`.
fn written(ret: i32, mem: &Memory, buf: u64, bytes: &[u8]) -> Verdict {
    if ret < 0 {
        return Verdict::Answer(answer_of(-1));
    }
    match mem.write(buf, bytes) {
        Ok(()) => Verdict::Answer(0),
        Err(_) => Verdict::Answer(-i64::from(libc::EFAULT)),
    }
}

/// Whether the string at `at` is empty (AT_EMPTY_PATH calls on the descriptor itself).
fn is_empty_path(mem: &Memory, at: u64) -> bool {
    mem.read_cstr(at, 1).is_ok_and(|s| s.is_empty())
}

/// Whether call `nr`, which may run in the process on a local descriptor, only reads it: a
/// system file opened here takes no other (a mapping of a file opened read-only cannot
/// write it; `newfstatat` and `statx` come here only for the descriptor itself).
fn reads_only(nr: i64, args: &[u64; 6]) -> bool {
    match nr {
        libc::SYS_mmap | libc::SYS_newfstatat | libc::SYS_statx => true,
        libc::SYS_ioctl => args[1] as u32 == libc::TCGETS as u32,
        libc::SYS_read
        | libc::SYS_pread64
        | libc::SYS_readv
        | libc::SYS_preadv
        | libc::SYS_preadv2
        | libc::SYS_lseek
        | libc::SYS_fstat
        | libc::SYS_fadvise64
        | libc::SYS_readahead
        | libc::SYS_fstatfs
        | libc::SYS_fgetxattr
        | libc::SYS_flistxattr => true,
        // Its flags are home's descriptor's, which a file handed back to home keeps.
        libc::SYS_fcntl => matches!(args[1] as i32, libc::F_GETFD | libc::F_GETFL),
        _ => false,
    }
}

/// The arguments of call `nr` that are directory descriptors for a path (and the table
/// passes as plain values).
fn directory_args(nr: i64) -> &'static [usize] {
    match nr {
        libc::SYS_openat
        | libc::SYS_openat2
        | libc::SYS_mkdirat
        | libc::SYS_mknodat
        | libc::SYS_unlinkat
        | libc::SYS_fchmodat
        | libc::SYS_fchownat
        | libc::SYS_newfstatat
        | libc::SYS_statx
        | libc::SYS_faccessat
        | libc::SYS_faccessat2
        | libc::SYS_readlinkat
        | libc::SYS_utimensat
        | libc::SYS_futimesat
        | libc::SYS_name_to_handle_at
        | libc::SYS_execveat
        | libc::SYS_open_tree
        | libc::SYS_fspick => &[0],
        libc::SYS_symlinkat => &[1],
        libc::SYS_renameat | libc::SYS_renameat2 | libc::SYS_linkat | libc::SYS_move_mount => {
            &[0, 2]
        }
        _ => &[],
    }
}

/// Calls that change the process's ids (they run at home, in the shell).
pub(crate) fn is_id_change(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_setuid
            | libc::SYS_setgid
            | libc::SYS_setreuid
            | libc::SYS_setregid
            | libc::SYS_setresuid
            | libc::SYS_setresgid
            | libc::SYS_setfsuid
            | libc::SYS_setfsgid
            | libc::SYS_setgroups
            | libc::SYS_capset
    )
}

/// The local descriptors of stopped `pid` at a remote, for its image: every descriptor a
/// husk holds is one (it inherits none, and forwarded calls open theirs at home), but for
/// anonymous ones the supervisor itself may have put there (a userfaultfd while pages move).
/// `system`: the digests of the system files among them (see `sysfiles`).
pub fn list(pid: Pid, system: &HashMap<i32, String>) -> io::Result<Vec<LocalFile>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(format!("/proc/{pid}/fd"))? {
        let entry = entry?;
        let Some(fd) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let Some(path) = target.to_str().filter(|p| p.starts_with('/')) else {
            continue;
        };
        let state = fd_state(pid, fd)?;
        files.push(LocalFile {
            fd,
            path: path.to_owned(),
            flags: state.flags.unwrap_or(0),
            pos: state.pos.unwrap_or(0),
            digest: system.get(&fd).cloned(),
            shares: None,
        });
    }
    files.sort_by_key(|f| f.fd);
    // Duplicates of one open file share it again wherever the process resumes.
    for i in 1..files.len() {
        let (before, rest) = files.split_at_mut(i);
        let file = &mut rest[0];
        file.shares = (before.iter())
            .filter(|first| first.shares.is_none() && first.path == file.path)
            .find(|first| one_open_file(pid, first.fd, file.fd))
            .map(|first| first.fd);
    }
    Ok(files)
}

/// Whether descriptors `a` and `b` of `pid` are one open file (kcmp(2), `KCMP_FILE`). Where
/// the kernel cannot tell, they are taken for two: each is then opened again on its own.
fn one_open_file(pid: Pid, a: i32, b: i32) -> bool {
    const KCMP_FILE: libc::c_long = 0;
    // SAFETY: kcmp reads nothing of ours; it compares two of pid's descriptors.
    let ret = unsafe { libc::syscall(libc::SYS_kcmp, pid, pid, KCMP_FILE, a, b) };
    ret == 0
}

/// What `/proc/PID/fdinfo/FD` says of a descriptor: its offset and its open flags (`None`
/// where a field is missing).
pub(crate) struct FdState {
    pub pos: Option<u64>,
    pub flags: Option<i32>,
}

/// Reads descriptor `fd` of `pid`'s [`FdState`]; fails if the process does not hold it.
pub(crate) fn fd_state(pid: Pid, fd: i32) -> io::Result<FdState> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}"))?;
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    Ok(FdState {
        pos: field("pos:").and_then(|v| v.parse().ok()),
        flags: field("flags:").and_then(|v| i32::from_str_radix(v, 8).ok()),
    })
}

/// Where a process resumes with its local files.
pub enum Resume<'a> {
    /// At home, whose trees that are the same everywhere are these. Its system files are
    /// home's own descriptors still, the files the process opened (see `sysfiles`).
    Home(&'a Consistent),
    /// At a remote, which shares these trees and system files with home.
    Remote(&'a Consistent, &'a SystemFiles),
}

/// Open `files` again in stopped `pid`, each under its number, with its flags and offset
/// (wherever the process resumes: the paths came from the node it left); the files it holds
/// where it resumes. A file of a tree that is the same everywhere is opened beneath a root
/// both ends share; a path that leaves them is refused, as a device or a FIFO is: only
/// regular files and directories are opened away. A system file is opened by its path where
/// the node lists its prefix too, and kept only if its digest is the one it had; one that
/// differs there, or is missing, is handed back to home's descriptor of it, which the node
/// the process left set to its offset (`ToHome::Offset`): its calls go home from then on.
pub fn reopen(
    pid: Pid,
    inj: &Injector,
    files: &[LocalFile],
    at: Resume<'_>,
) -> io::Result<Vec<LocalFile>> {
    if files.is_empty() {
        return Ok(Vec::new());
    }
    let scratch = Scratch::map(inj, pid, 2 * PATH_MAX + 4096)?;
    let mut kept: Vec<LocalFile> = Vec::new();
    let result = (files.iter()).try_for_each(|file| {
        let first = file
            .shares
            .filter(|&first| kept.iter().any(|k| k.fd == first));
        let here = match (&file.digest, &at, first) {
            // Home's descriptors of system files are duplicates of one another already.
            (Some(_), Resume::Home(_), _) => Ok(true),
            (_, _, Some(first)) => share(pid, inj, first, file).map(|()| true),
            (None, Resume::Home(consistent) | Resume::Remote(consistent, _), None) => {
                reopen_one(pid, inj, &scratch, file, consistent).map(|()| true)
            }
            // Home's descriptor is the file, with its flags (calls that change them run at
            // home) and at the offset the remote sent before the image (`ToHome::Offset`).
            (Some(digest), Resume::Remote(_, system), None) => {
                reopen_system(pid, inj, &scratch, file, digest, system)
            }
        }?;
        if here {
            kept.push(file.clone());
        }
        Ok::<(), io::Error>(())
    });
    scratch.unmap(inj, pid)?;
    result.map(|()| kept)
}

/// Take out of an image's `files` those of trees that are the same everywhere which the
/// process's next node does not share with home (`shares`, as that node said in its
/// `ToHome::Ready`): it could not open them again, so home's shell takes them back
/// ([`take_back`]) and their calls go home from then on. System files stay: the next node
/// checks each itself and hands back what differs there.
pub fn take_unshared(files: &mut Vec<LocalFile>, shares: &Consistent) -> Vec<LocalFile> {
    let (kept, unshared) = (std::mem::take(files).into_iter())
        .partition(|file| file.digest.is_some() || shares.split(&file.path).is_some());
    *files = kept;
    unshared
}

/// The numbers of the files home's shell took back from a process moving on (see
/// [`take_back`]), which held placeholders before.
#[derive(Debug, Default)]
pub struct TakenBack {
    fds: Vec<i32>,
}

impl TakenBack {
    /// The descriptor numbers.
    pub fn fds(&self) -> &[i32] {
        &self.fds
    }

    /// The move failed: placeholders hold the numbers in home's stopped shell `pid` again,
    /// as before it, the files being the process's where it runs still.
    pub fn undo(self, pid: Pid, inj: &Injector) -> io::Result<()> {
        if self.fds.is_empty() {
            return Ok(());
        }
        let scratch = Scratch::map(inj, pid, 4096)?;
        let put = Memory::open(pid)
            .and_then(|mem| mem.write(scratch.addr, b"/\0"))
            .and_then(|()| {
                (self.fds.iter()).try_for_each(|&fd| put_placeholder(pid, inj, scratch.addr, fd))
            });
        scratch.unmap(inj, pid)?;
        put
    }
}

/// Open `files`, local files of a process moving on to a node that does not share their
/// trees, again in home's stopped shell `pid` over their placeholders, as a return home does:
/// beneath home's trees `home`, with their flags and at their offsets. Home shares their
/// trees, as the node the process leaves opened them. A file that cannot be opened (removed
/// meanwhile) fails them all, and placeholders hold every number again.
pub fn take_back(
    pid: Pid,
    inj: &Injector,
    files: &[LocalFile],
    home: &Consistent,
) -> io::Result<TakenBack> {
    let back = TakenBack {
        fds: files.iter().map(|file| file.fd).collect(),
    };
    match reopen(pid, inj, files, Resume::Home(home)) {
        Ok(_) => Ok(back),
        Err(err) => {
            // A number left holding the file instead changes nothing the process sees: it
            // holds the file where it runs, and a close there closes this one too.
            if let Err(undo) = back.undo(pid, inj) {
                warn!(pid, %undo, "a file taken back stays in home's shell");
            }
            Err(err)
        }
    }
}

/// A placeholder (`/` as a path handle, at `root_at` in stopped `pid`) under number `fd`.
fn put_placeholder(pid: Pid, inj: &Injector, root_at: u64, fd: i32) -> io::Result<()> {
    let what = format!("put a placeholder under {fd} again");
    let flags = (libc::O_PATH | libc::O_CLOEXEC) as u64;
    let cwd = libc::AT_FDCWD as u64;
    let opened = inj.call_ok(pid, libc::SYS_openat, [cwd, root_at, flags, 0, 0, 0], &what)?;
    let cloexec = libc::O_CLOEXEC as u64;
    let placed = inj.call_ok(
        pid,
        libc::SYS_dup3,
        [opened, fd as u64, cloexec, 0, 0, 0],
        &what,
    );
    inj.call(pid, libc::SYS_close, [opened, 0, 0, 0, 0, 0])?;
    placed.map(drop)
}

/// A file of a tree that is the same everywhere, opened again beneath a root of `consistent`.
fn reopen_one(
    pid: Pid,
    inj: &Injector,
    scratch: &Scratch,
    file: &LocalFile,
    consistent: &Consistent,
) -> io::Result<()> {
    let what = format!("open {} again", file.path);
    let Some((root, rest)) = consistent.split(&file.path) else {
        return Err(io::Error::other(format!(
            "{what}: not on a file system that is the same at both nodes"
        )));
    };
    let resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS;
    open_in(pid, inj, scratch, file, (&root, rest, resolve), &what)
}

/// A system file, opened again by its path from this node's root where it is the same
/// still: whether it is here now. Not: it is home's descriptor again.
fn reopen_system(
    pid: Pid,
    inj: &Injector,
    scratch: &Scratch,
    file: &LocalFile,
    digest: &str,
    system: &SystemFiles,
) -> io::Result<bool> {
    let what = format!("open system file {} again", file.path);
    let hand_back = |why: &str| {
        debug!(
            path = file.path,
            fd = file.fd,
            why,
            "a system file goes back to home's"
        );
        Ok(false)
    };
    if !system.covers(&file.path) {
        return hand_back("not under a system prefix both nodes list");
    }
    let rest = file.path.trim_start_matches('/');
    if let Err(err) = open_in(pid, inj, scratch, file, ("/", rest, IN_ROOT), &what) {
        return hand_back(&err.to_string());
    }
    let why = match sysfiles::digest_of_fd(pid, file.fd) {
        Ok(here) if here == digest => return Ok(true),
        Ok(_) => "it differs here".to_owned(),
        Err(err) => err.to_string(),
    };
    inj.call_ok(pid, libc::SYS_close, [file.fd as u64, 0, 0, 0, 0, 0], &what)?;
    hand_back(&why)
}

/// Open `rest` beneath `root` as `resolve` says in stopped `pid`, and put it under `file`'s
/// number with its flags and offset.
fn open_in(
    pid: Pid,
    inj: &Injector,
    scratch: &Scratch,
    file: &LocalFile,
    (root, rest, resolve): (&str, &str, u64),
    what: &str,
) -> io::Result<()> {
    let mem = Memory::open(pid)?;
    let cstr = |s: &str| -> io::Result<Vec<u8>> {
        let mut raw = s.as_bytes().to_vec();
        raw.push(0);
        match raw.len() as u64 <= PATH_MAX {
            true => Ok(raw),
            false => Err(io::Error::other(format!("{what}: path too long"))),
        }
    };
    let (root_at, rest_at) = (scratch.addr, scratch.addr + PATH_MAX);
    let (how_at, stat_at) = (
        scratch.addr + 2 * PATH_MAX,
        scratch.addr + 2 * PATH_MAX + 64,
    );
    // Opened with the flags it had, but that creating or truncating it again would change
    // what the first open did once; never as a controlling terminal, and without waiting (a
    // FIFO would hold the process's supervisor): the mode is checked next.
    let strip = libc::O_CREAT | libc::O_EXCL | libc::O_TRUNC | libc::O_CLOEXEC;
    let flags = (file.flags & !strip | libc::O_NOCTTY | libc::O_NONBLOCK | libc::O_CLOEXEC) as u64;
    let dir_flags = (libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
    let cwd = libc::AT_FDCWD as u64;
    mem.write(root_at, &cstr(root)?)?;
    mem.write(rest_at, &cstr(rest)?)?;
    let mut how = Vec::with_capacity(24);
    for word in [flags, 0, resolve] {
        how.extend_from_slice(&word.to_le_bytes());
    }
    mem.write(how_at, &how)?;
    let dir = inj.call_ok(
        pid,
        libc::SYS_openat,
        [cwd, root_at, dir_flags, 0, 0, 0],
        what,
    )?;
    let opened = inj.call_ok(
        pid,
        libc::SYS_openat2,
        [dir, rest_at, how_at, 24, 0, 0],
        what,
    );
    inj.call(pid, libc::SYS_close, [dir, 0, 0, 0, 0, 0])?;
    let opened = opened?;
    let placed = place(pid, inj, &mem, opened, stat_at, file, what);
    inj.call(pid, libc::SYS_close, [opened, 0, 0, 0, 0, 0])?;
    placed
}

/// Put a duplicate of descriptor `first` of stopped `pid`, opened again already, under
/// `file`'s number: the two share one open file, as they did where the process was.
fn share(pid: Pid, inj: &Injector, first: i32, file: &LocalFile) -> io::Result<()> {
    let what = format!("duplicate {} as {}", first, file.fd);
    let cloexec = (file.flags & libc::O_CLOEXEC) as u64;
    let args = [first as u64, file.fd as u64, cloexec, 0, 0, 0];
    inj.call_ok(pid, libc::SYS_dup3, args, &what).map(drop)
}

/// Put descriptor `opened` of `pid` under `file`'s number, with its flags and offset, if it
/// is a regular file or a directory.
fn place(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    opened: u64,
    stat_at: u64,
    file: &LocalFile,
    what: &str,
) -> io::Result<()> {
    inj.call_ok(pid, libc::SYS_fstat, [opened, stat_at, 0, 0, 0, 0], what)?;
    // st_mode lies at offset 24 of x86-64's struct stat.
    let raw = mem.read_vec(stat_at + 24, 4)?;
    let mode = u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) & libc::S_IFMT;
    if mode != libc::S_IFREG && mode != libc::S_IFDIR {
        return Err(io::Error::other(format!(
            "{what}: neither a regular file nor a directory"
        )));
    }
    let fd = file.fd as u64;
    let cloexec = (file.flags & libc::O_CLOEXEC) as u64;
    inj.call_ok(pid, libc::SYS_dup3, [opened, fd, cloexec, 0, 0, 0], what)?;
    let status = (file.flags & !libc::O_CLOEXEC) as u64;
    inj.call_ok(
        pid,
        libc::SYS_fcntl,
        [fd, libc::F_SETFL as u64, status, 0, 0, 0],
        what,
    )?;
    // A directory's offset is its own business: only what a seek accepts is set.
    let _ = inj.call(
        pid,
        libc::SYS_lseek,
        [fd, file.pos, libc::SEEK_SET as u64, 0, 0, 0],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cluster() -> Consistent {
        Consistent::new(Some(Path::new("/mfs/")), &["/shared", "relative", "/"])
    }

    #[test]
    fn only_absolute_prefixes_count_and_trailing_slashes_go() {
        let c = cluster();
        assert_eq!(c.mfs.as_deref(), Some("/mfs"));
        assert_eq!(c.mounts, ["/shared"]);
    }

    #[test]
    fn paths_split_into_a_root_both_ends_share_and_the_rest() {
        let c = cluster();
        assert_eq!(
            c.split("/mfs/1/usr/include"),
            Some(("/mfs/1".into(), "usr/include"))
        );
        assert_eq!(c.split("/mfs/12"), Some(("/mfs/12".into(), ".")));
        assert_eq!(c.split("/mfs/12/"), Some(("/mfs/12".into(), ".")));
        assert_eq!(c.split("/shared/a/b"), Some(("/shared".into(), "a/b")));
        assert_eq!(c.split("/shared"), Some(("/shared".into(), ".")));
        // Per-process MFS directories resolve differently at home: not local.
        for path in [
            "/mfs/home/x",
            "/mfs/here",
            "/mfs/selected/y",
            "/mfs",
            "/mfs//1/x",
        ] {
            assert_eq!(c.split(path), None, "{path}");
        }
        // A prefix is a whole component.
        assert_eq!(c.split("/sharedother/x"), None);
        assert_eq!(c.split("/mfsx/1/y"), None);
        // `..` stays in the rest, where openat2(RESOLVE_BENEATH) refuses to leave the root.
        assert_eq!(c.split("/mfs/1/../2/x"), Some(("/mfs/1".into(), "../2/x")));
    }

    #[test]
    fn a_prefix_counts_only_where_both_ends_list_it() {
        let home = Consistent::new(Some(Path::new("/mfs")), &["/shared", "/nfs"]);
        let here = Consistent::new(None, &["/nfs", "/other"]);
        let both = home.shared_with(&here);
        assert_eq!(both.mfs, None);
        assert_eq!(both.mounts, ["/nfs"]);
        assert_eq!(both.split("/shared/x"), None);
    }

    #[test]
    fn home_own_mfs_directory_is_no_local_tree_away() {
        let home = Consistent::new(Some(Path::new("/mfs")), &[] as &[&str]).at_node(1);
        let here = Consistent::new(Some(Path::new("/mfs")), &[] as &[&str]).at_node(2);
        let both = home.shared_with(&here);
        assert_eq!(both.split("/mfs/1/tmp/x"), None);
        assert_eq!(both.split("/mfs/2/tmp/x"), Some(("/mfs/2".into(), "tmp/x")));
        assert_eq!(both.split("/mfs/3/tmp/x"), Some(("/mfs/3".into(), "tmp/x")));
    }

    fn local(fd: i32, path: &str, digest: Option<&str>) -> LocalFile {
        LocalFile {
            fd,
            path: path.to_owned(),
            flags: libc::O_RDONLY,
            pos: 0,
            digest: digest.map(str::to_owned),
            shares: None,
        }
    }

    #[test]
    fn files_of_trees_the_next_node_does_not_share_leave_the_image_and_system_files_stay() {
        let home = Consistent::new(Some(Path::new("/mfs")), &["/shared", "/nfs"]).at_node(1);
        let next = Consistent::new(Some(Path::new("/mfs")), &["/nfs"]).at_node(3);
        let shares = home.shared_with(&next);
        let mut files = vec![
            local(3, "/shared/data", None),
            local(4, "/nfs/data", None),
            local(5, "/mfs/2/tmp/data", None),
            local(6, "/usr/lib/libc.so.6", Some("digest")),
            local(7, "/shared", None),
        ];
        let unshared = take_unshared(&mut files, &shares);
        let fds = |files: &[LocalFile]| files.iter().map(|f| f.fd).collect::<Vec<_>>();
        assert_eq!(fds(&unshared), [3, 7]);
        assert_eq!(fds(&files), [4, 5, 6]);
        // A node that shares nothing (its ids differ from the process's) takes none back.
        let mut files = vec![local(4, "/nfs/data", None)];
        assert_eq!(fds(&take_unshared(&mut files, &Consistent::default())), [4]);
        assert!(files.is_empty());
    }

    /// Where descriptor `fd` of `pid` points, and its offset.
    fn target_and_pos(pid: Pid, fd: i32) -> (String, Option<u64>) {
        let link = std::fs::read_link(format!("/proc/{pid}/fd/{fd}")).unwrap();
        (link.display().to_string(), fd_state(pid, fd).unwrap().pos)
    }

    /// A placeholder under `fd` of a husk, as home's shell holds for a file opened away.
    fn with_placeholder(husk: &crate::testing::Husk, fd: i32) {
        let scratch = Scratch::map(&husk.inj, husk.pid, 4096).unwrap();
        husk.mem.write(scratch.addr, b"/\0").unwrap();
        put_placeholder(husk.pid, &husk.inj, scratch.addr, fd).unwrap();
        scratch.unmap(&husk.inj, husk.pid).unwrap();
    }

    #[test]
    fn a_file_taken_back_replaces_its_placeholder_at_its_offset_and_a_failure_puts_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("data"), b"0123456789").unwrap();
        let home = Consistent::new(None, &[&root]);
        let husk = crate::testing::Husk::new(1);
        let (pid, inj) = (husk.pid, &husk.inj);
        for fd in [20, 21] {
            with_placeholder(&husk, fd);
            assert_eq!(target_and_pos(pid, fd).0, "/");
        }
        let data = format!("{}/data", root.display());
        let file = LocalFile {
            pos: 4,
            ..local(20, &data, None)
        };
        let back = take_back(pid, inj, std::slice::from_ref(&file), &home).unwrap();
        assert_eq!(back.fds(), [20]);
        assert_eq!(target_and_pos(pid, 20), (data.clone(), Some(4)));

        back.undo(pid, inj).unwrap();
        assert_eq!(target_and_pos(pid, 20).0, "/");
        // One file that cannot be opened: every number holds its placeholder again.
        let missing = local(21, &format!("{}/gone (deleted)", root.display()), None);
        let err = take_back(pid, inj, &[file, missing], &home).unwrap_err();
        assert!(err.to_string().contains("gone (deleted) again"), "{err}");
        for fd in [20, 21] {
            assert_eq!(target_and_pos(pid, fd).0, "/", "{fd}");
        }
    }

    #[test]
    fn open_beneath_never_leaves_its_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::write(root.join("sub/f"), b"in").unwrap();
        std::fs::write(dir.path().join("outside"), b"out").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../outside", root.join("up")).unwrap();
        let root_fd = File::open(&root).unwrap();
        let rd = libc::O_RDONLY as u64;
        assert!(open_beneath(root_fd.as_raw_fd(), "sub/f", rd, 0).is_ok());
        assert!(open_beneath(root_fd.as_raw_fd(), "sub/../sub/f", rd, 0).is_ok());
        for escape in ["../outside", "up", "abs", "sub/../../outside"] {
            let err = open_beneath(root_fd.as_raw_fd(), escape, rd, 0).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EXDEV), "{escape}");
            assert!(answer_or_pass(err).is_none(), "{escape} must go home");
        }
        let missing = open_beneath(root_fd.as_raw_fd(), "sub/none", rd, 0).unwrap_err();
        assert!(matches!(
            answer_or_pass(missing),
            Some(Verdict::Answer(e)) if e == -i64::from(libc::ENOENT)
        ));
    }

    /// Local files for a session whose home lists `/usr/` as system files, as this node does,
    /// holding system file 5.
    fn with_system_files() -> LocalFiles {
        let me = std::process::id() as Pid;
        let system = Consistent::default().with_system(&["/usr/", "/etc/ld.so.cache"]);
        let terms = Terms::of(me, system.clone()).unwrap();
        let mut local = LocalFiles::new(Some(&terms), &system);
        local.opened(5, "/usr/lib/libx.so".into(), Some("0".repeat(64)));
        local
    }

    /// This process's memory, and local files holding DFSA file 6.
    fn with_dfsa_file() -> (Memory, LocalFiles) {
        let me = std::process::id() as Pid;
        let consistent = Consistent::default();
        let terms = Terms::of(me, consistent.clone()).unwrap();
        let mut local = LocalFiles::new(Some(&terms), &consistent);
        local.opened(6, "/mfs/3/tmp/data".into(), None);
        (Memory::open(me).unwrap(), local)
    }

    #[test]
    fn a_lock_on_a_file_opened_here_is_taken_at_home_and_a_test_for_one_runs_here() {
        let (mem, mut local) = with_dfsa_file();
        let on = |nr: i64, more: i32| (nr, [6, more as u64, 0, 0, 0, 0]);
        for (nr, args) in [
            on(libc::SYS_flock, libc::LOCK_SH),
            on(libc::SYS_fcntl, libc::F_SETLK),
            on(libc::SYS_fcntl, libc::F_SETLKW),
            on(libc::SYS_fcntl, libc::F_OFD_SETLK),
            on(libc::SYS_fcntl, libc::F_OFD_SETLKW),
        ] {
            let verdict = local.judge(nr, &args, &mem);
            assert!(matches!(verdict, Verdict::GoHome(_)), "{nr} {}", args[1]);
        }
        for (nr, args) in [
            on(libc::SYS_fcntl, libc::F_GETLK),
            on(libc::SYS_fcntl, libc::F_OFD_GETLK),
            on(libc::SYS_fcntl, libc::F_GETFL),
            on(libc::SYS_read, 0),
        ] {
            let verdict = local.judge(nr, &args, &mem);
            assert!(matches!(verdict, Verdict::Run), "{nr} {}", args[1]);
        }
    }

    #[test]
    fn a_read_only_open_of_a_system_path_asks_home_and_anything_else_passes() {
        let me = std::process::id() as Pid;
        let mem = Memory::open(me).unwrap();
        let mut local = with_system_files();
        let paths = [
            "/usr/lib/libx.so\0",
            "/usr/../etc/shadow\0",
            "/etc/passwd\0",
            "usr/x\0",
        ];
        let at = |p: &str| p.as_ptr() as u64;
        let cwd = libc::AT_FDCWD as u64;
        let rd = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        let openat = |path: &str, flags: u64| [cwd, at(path), flags, 0, 0, 0];
        assert!(matches!(
            local.judge(libc::SYS_openat, &openat(paths[0], rd), &mem),
            Verdict::System { ref path, flags } if path == "/usr/lib/libx.so" && flags == rd
        ));
        assert!(matches!(
            local.judge(libc::SYS_open, &[at(paths[0]), 0, 0, 0, 0, 0], &mem),
            Verdict::System { .. }
        ));
        for path in &paths[1..] {
            let verdict = local.judge(libc::SYS_openat, &openat(path, rd), &mem);
            assert!(matches!(verdict, Verdict::Pass), "{path}");
        }
        for flags in [libc::O_RDWR, libc::O_WRONLY | libc::O_CREAT, libc::O_PATH] {
            let verdict = local.judge(libc::SYS_openat, &openat(paths[0], flags as u64), &mem);
            assert!(matches!(verdict, Verdict::Pass), "{flags:#o}");
        }
    }

    #[test]
    fn a_system_file_opened_here_is_only_read_here() {
        let me = std::process::id() as Pid;
        let mem = Memory::open(me).unwrap();
        let mut local = with_system_files();
        let on = |fd: u64, more: u64| [fd, more, 0, 0, 0, 0];
        for nr in [
            libc::SYS_read,
            libc::SYS_pread64,
            libc::SYS_lseek,
            libc::SYS_fstat,
        ] {
            assert!(
                matches!(local.judge(nr, &on(5, 0), &mem), Verdict::Run),
                "{nr}"
            );
        }
        let getfl = on(5, libc::F_GETFL as u64);
        assert!(matches!(
            local.judge(libc::SYS_fcntl, &getfl, &mem),
            Verdict::Run
        ));
        let isatty = on(5, libc::TCGETS);
        assert!(matches!(
            local.judge(libc::SYS_ioctl, &isatty, &mem),
            Verdict::Run
        ));
        // What would change the file, lock it or change its flags is home's.
        for (nr, more) in [
            (libc::SYS_fcntl, libc::F_SETFD as u64),
            (libc::SYS_fcntl, libc::F_SETFL as u64),
            (libc::SYS_fchmod, 0o777),
            (libc::SYS_flock, libc::LOCK_EX as u64),
            (libc::SYS_fcntl, libc::F_SETLK as u64),
            (libc::SYS_write, 0),
            (libc::SYS_fsync, 0),
            (libc::SYS_ioctl, libc::TIOCGWINSZ),
        ] {
            let verdict = local.judge(nr, &on(5, more), &mem);
            assert!(matches!(verdict, Verdict::GoHome(_)), "{nr}");
        }
        // A call whose argument 0 is no descriptor is no business of the file's.
        assert!(matches!(
            local.judge(libc::SYS_kill, &on(5, 0), &mem),
            Verdict::Pass
        ));
        // A change of ids keeps system files here: home opened them as the process.
        assert!(matches!(
            local.judge(libc::SYS_setuid, &on(0, 0), &mem),
            Verdict::Pass
        ));
        assert!(local.holds(5));
        assert_eq!(local.system_digests().get(&5), Some(&"0".repeat(64)));
        assert!(matches!(
            local.judge(libc::SYS_close, &on(5, 0), &mem),
            Verdict::Close(5)
        ));
        // isatty of a DFSA file runs here, where it is the same file; any other ioctl
        // brings the process home (home holds only a placeholder).
        local.opened(6, "/mfs/3/data".into(), None);
        assert!(matches!(
            local.judge(libc::SYS_ioctl, &on(6, libc::TCGETS), &mem),
            Verdict::Run
        ));
        assert!(matches!(
            local.judge(libc::SYS_ioctl, &on(6, libc::TIOCGWINSZ), &mem),
            Verdict::GoHome(_)
        ));
    }

    #[test]
    fn a_duplicate_of_a_file_opened_here_is_made_here_but_home_file_over_one_goes_home() {
        let (mem, mut local) = with_dfsa_file();
        let cloexec = libc::O_CLOEXEC as u64;
        let dup =
            |nr: i64, args: [u64; 6], local: &mut LocalFiles| match local.judge(nr, &args, &mem) {
                Verdict::Dup { source, cloexec } => Some((source, cloexec)),
                _ => None,
            };
        for (nr, args, with_cloexec) in [
            (libc::SYS_dup, [6, 0, 0, 0, 0, 0], false),
            (
                libc::SYS_fcntl,
                [6, libc::F_DUPFD as u64, 10, 0, 0, 0],
                false,
            ),
            (
                libc::SYS_fcntl,
                [6, libc::F_DUPFD_CLOEXEC as u64, 10, 0, 0, 0],
                true,
            ),
            (libc::SYS_dup2, [6, 1, 0, 0, 0, 0], false),
            (libc::SYS_dup3, [6, 1, cloexec, 0, 0, 0], true),
            (libc::SYS_dup3, [6, 7, 0, 0, 0, 0], false),
        ] {
            assert_eq!(
                dup(nr, args, &mut local),
                Some((6, with_cloexec)),
                "{nr} {args:?}"
            );
        }
        assert!(matches!(
            local.judge(libc::SYS_dup2, &[6, 6, 0, 0, 0, 0], &mem),
            Verdict::Answer(6)
        ));
        // Home's descriptor over a local one needs home; home's own duplicates pass.
        for nr in [libc::SYS_dup2, libc::SYS_dup3] {
            let verdict = local.judge(nr, &[1, 6, 0, 0, 0, 0], &mem);
            assert!(matches!(verdict, Verdict::GoHome(_)), "{nr}");
        }
        assert!(matches!(
            local.judge(libc::SYS_dup, &[1, 0, 0, 0, 0, 0], &mem),
            Verdict::Pass
        ));
        // The duplicate is local too, and lives on when the first closes.
        local.duplicated(6, 9);
        local.closed(6);
        assert!(local.holds(9) && !local.holds(6));
        assert!(matches!(
            local.judge(libc::SYS_read, &[9, 0, 0, 0, 0, 0], &mem),
            Verdict::Run
        ));
    }

    /// Opens `path` in stopped husk `pid` under `fd`.
    fn open_in_husk(husk: &crate::testing::Husk, path: &str, fd: i32) {
        let scratch = Scratch::map(&husk.inj, husk.pid, 4096).unwrap();
        husk.mem
            .write(scratch.addr, format!("{path}\0").as_bytes())
            .unwrap();
        let cwd = libc::AT_FDCWD as u64;
        let args = [cwd, scratch.addr, libc::O_RDONLY as u64, 0, 0, 0];
        let opened = husk
            .inj
            .call_ok(husk.pid, libc::SYS_openat, args, "open")
            .unwrap();
        let args = [opened, fd as u64, 0, 0, 0, 0];
        husk.inj
            .call_ok(husk.pid, libc::SYS_dup3, args, "dup3")
            .unwrap();
        husk.inj
            .call_ok(husk.pid, libc::SYS_close, [opened, 0, 0, 0, 0, 0], "close")
            .unwrap();
        scratch.unmap(&husk.inj, husk.pid).unwrap();
    }

    #[test]
    fn duplicates_of_one_open_file_share_it_again_where_the_process_resumes() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        std::fs::write(root.join("data"), b"0123456789").unwrap();
        let data = format!("{}/data", root.display());
        let (from, to) = crate::testing::Husk::pair(1);
        // 20 and 21 are one open file (21 a dup of 20); 22 the same path, opened again.
        open_in_husk(&from, &data, 20);
        let dup = [20, 21, 0, 0, 0, 0];
        from.inj
            .call_ok(from.pid, libc::SYS_dup3, dup, "dup3")
            .unwrap();
        open_in_husk(&from, &data, 22);
        let seek = [21, 4, libc::SEEK_SET as u64, 0, 0, 0];
        from.inj
            .call_ok(from.pid, libc::SYS_lseek, seek, "lseek")
            .unwrap();
        let files: Vec<LocalFile> = (list(from.pid, &HashMap::new()).unwrap().into_iter())
            .filter(|f| f.fd >= 20)
            .collect();
        let shares: Vec<_> = files.iter().map(|f| (f.fd, f.shares, f.pos)).collect();
        assert_eq!(shares, [(20, None, 4), (21, Some(20), 4), (22, None, 0)]);

        let home = Consistent::new(None, &[&root]);
        let kept = reopen(to.pid, &to.inj, &files, Resume::Home(&home)).unwrap();
        assert_eq!(kept, files);
        assert!(one_open_file(to.pid, 20, 21));
        assert!(!one_open_file(to.pid, 20, 22));
        let seek = [20, 7, libc::SEEK_SET as u64, 0, 0, 0];
        to.inj
            .call_ok(to.pid, libc::SYS_lseek, seek, "lseek")
            .unwrap();
        assert_eq!(target_and_pos(to.pid, 21), (data.clone(), Some(7)));
        assert_eq!(target_and_pos(to.pid, 22), (data, Some(0)));
    }

    #[test]
    fn home_terms_are_the_file_system_ids_of_the_process() {
        let terms = Terms::of(std::process::id() as Pid, Consistent::default()).unwrap();
        assert!(terms.match_ours());
        let other = Terms {
            uid: terms.uid + 1,
            ..terms.clone()
        };
        assert!(!other.match_ours());
    }
}
