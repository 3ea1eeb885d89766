//! Where the gauge reads `/proc` and `/sys` from, and for which process.

use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::{CgroupPath, GaugeError};

/// The file system the gauge reads, the process it reads it as, and the node's cgroup.
///
/// [`Root::host`] is this machine and this process, whose own cgroup is the node. Tests point
/// [`Root::at`] at a fixture tree that holds `proc/...` and `sys/...` as the kernel would, and
/// [`Root::for_pid`] reads as another process (a test's child placed in a fresh cgroup).
/// [`Root::with_cgroup`] names the node's cgroup instead of taking the process's own: a
/// daemon started by systemd sits in its service's cgroup, apart from the jobs of its node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root {
    fs: PathBuf,
    pid: Option<u32>,
    cgroup: Option<CgroupPath>,
}

impl Root {
    /// This machine, measured for the calling process (`/proc/self`).
    pub fn host() -> Root {
        Root {
            fs: PathBuf::from("/"),
            pid: None,
            cgroup: None,
        }
    }

    /// A tree laid out like `/`: `DIR/proc/self/cgroup`, `DIR/sys/fs/cgroup/...`. Absolute
    /// paths found in it (mount points in `mountinfo`) are taken relative to `dir`.
    pub fn at(dir: impl Into<PathBuf>) -> Root {
        Root {
            fs: dir.into(),
            pid: None,
            cgroup: None,
        }
    }

    /// The same tree, measured for the node that holds process `pid` (its cgroups, its
    /// affinity). If that process exits, the gauge goes on measuring the cgroups it was in.
    pub fn for_pid(self, pid: u32) -> Root {
        Root {
            pid: Some(pid),
            ..self
        }
    }

    /// The same tree and process, measuring the node whose cgroup is `cgroup`, taken in every
    /// hierarchy; [`CgroupPath::root`] is the whole machine. Its tasks and those below it are the node's work, and its limits (with
    /// its ancestors') and the process's affinity the node's capacity. [`Gauge::with_speed`]
    /// fails if no cgroup of that path holds the `cpu` controller.
    ///
    /// [`Gauge::with_speed`]: crate::Gauge::with_speed
    pub fn with_cgroup(self, cgroup: CgroupPath) -> Root {
        Root {
            cgroup: Some(cgroup),
            ..self
        }
    }

    /// The node's cgroup if named by [`Root::with_cgroup`]; `None`: the process's own.
    pub(crate) fn cgroup(&self) -> Option<&CgroupPath> {
        self.cgroup.as_ref()
    }

    /// `path` (absolute, as the kernel names it) inside this tree.
    pub(crate) fn path(&self, path: impl AsRef<Path>) -> PathBuf {
        let path = path.as_ref();
        self.fs.join(path.strip_prefix("/").unwrap_or(path))
    }

    /// `/proc/<pid or self>/name`.
    pub(crate) fn proc_own(&self, name: &str) -> PathBuf {
        match self.pid {
            Some(pid) => self.path(format!("/proc/{pid}/{name}")),
            None => self.path(format!("/proc/self/{name}")),
        }
    }
}

/// The whole text of `path`.
pub(crate) fn read(path: &Path) -> Result<String, GaugeError> {
    fs::read_to_string(path).map_err(|source| GaugeError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The text of `path`, or `None` if it does not exist: a cgroup file the kernel leaves out
/// when a controller is off, or a task that exited since it was listed.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, GaugeError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        // ESRCH: /proc/TID of a task that died while we opened it.
        Err(e) if e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc_esrch()) => {
            Ok(None)
        }
        Err(source) => Err(GaugeError::Read {
            path: path.to_owned(),
            source,
        }),
    }
}

/// Like [`read_optional`] for a small `/proc` file, with one `read(2)` into `buf`: three
/// system calls instead of `read_to_string`'s five (it also asks the size, and reads until a
/// read returns 0). A procfs `seq_file` hands over all it has in one read when it fits; if it
/// fills `buf`, the rest is read too.
pub(crate) fn read_proc_small<'a>(
    path: &Path,
    buf: &'a mut [u8; 256],
) -> Result<Option<&'a str>, GaugeError> {
    let gone = |e: &io::Error| {
        e.kind() == io::ErrorKind::NotFound || e.raw_os_error() == Some(libc_esrch())
    };
    let fail = |source| GaugeError::Read {
        path: path.to_owned(),
        source,
    };
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    let n = match file.read(buf) {
        Ok(n) => n,
        Err(e) if gone(&e) => return Ok(None),
        Err(e) => return Err(fail(e)),
    };
    if n == buf.len() {
        return Err(malformed(path, "longer than 256 bytes"));
    }
    std::str::from_utf8(&buf[..n])
        .map(Some)
        .map_err(|_| malformed(path, "not UTF-8"))
}

/// ESRCH without depending on libc for one constant.
fn libc_esrch() -> i32 {
    nix::errno::Errno::ESRCH as i32
}

/// A malformed-file error for `path`.
pub(crate) fn malformed(path: &Path, what: impl Into<String>) -> GaugeError {
    GaugeError::Parse {
        path: path.to_owned(),
        what: what.into(),
    }
}
