//! Paths and names as the serving node resolves them, and what it refuses.
//!
//! Every path is opened with openat2(2) below a descriptor of the served root, with
//! RESOLVE_IN_ROOT (`..` at the root stays at the root, an absolute symlink starts again at
//! the root) and RESOLVE_NO_MAGICLINKS (no jumping through /proc/PID/fd links). What is found
//! is then checked: nothing on a proc file system is served. The node's own /mfs is refused
//! one level down: its MFS answers EACCES to every request its own daemon makes (`fs`).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Longest name of one component (NAME_MAX).
pub const NAME_MAX: usize = 255;

/// The magic number of proc file systems in statfs(2).
const PROC_SUPER_MAGIC: libc::c_long = 0x9fa0;

/// An errno.
pub type Errno = i32;

/// The errno of the last failed call.
pub fn last() -> Errno {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// A system call's return code: the errno it left if it failed.
pub fn check(rc: i32) -> Result<(), Errno> {
    if rc < 0 { Err(last()) } else { Ok(()) }
}

/// A path of the serving node as a C string: every component at most [`NAME_MAX`] bytes
/// (ENAMETOOLONG), no NUL (EINVAL). The empty path is the root.
pub fn path(path: &[u8]) -> Result<CString, Errno> {
    if path.split(|&b| b == b'/').any(|c| c.len() > NAME_MAX) {
        return Err(libc::ENAMETOOLONG);
    }
    let path = if path.is_empty() { b"." } else { path };
    CString::new(path).map_err(|_| libc::EINVAL)
}

/// One name in a directory: not empty, `.`, `..` or with a `/` (EINVAL), at most
/// [`NAME_MAX`] bytes (ENAMETOOLONG).
pub fn name(name: &[u8]) -> Result<CString, Errno> {
    if name.len() > NAME_MAX {
        return Err(libc::ENAMETOOLONG);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') {
        return Err(libc::EINVAL);
    }
    CString::new(name).map_err(|_| libc::EINVAL)
}

/// openat2(2) of `path` below `dir`, confined to it, and refused on /proc.
pub fn open_below(dir: RawFd, path: &CString, flags: i32, mode: u32) -> Result<OwnedFd, Errno> {
    // SAFETY: all-zero is a valid open_how (no flags); the fields are set below.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    // openat2 refuses a mode without O_CREAT.
    if flags & libc::O_CREAT != 0 {
        // FUSE passes the type bits (S_IFREG) too, which openat2 refuses.
        how.mode = u64::from(mode & 0o7777);
    }
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    // SAFETY: `how` and `path` outlive the call, and the size is that of `how`.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(last());
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as RawFd) };
    refuse_proc(&fd)?;
    Ok(fd)
}

/// EACCES for anything on a proc file system: a node's processes are not files to serve.
fn refuse_proc(fd: &OwnedFd) -> Result<(), Errno> {
    // SAFETY: an all-zero statfs is a valid value for the kernel to overwrite.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid statfs and `fd` an open descriptor.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last());
    }
    if st.f_type as libc::c_long == PROC_SUPER_MAGIC {
        return Err(libc::EACCES);
    }
    Ok(())
}

/// fstat(2) of a descriptor (of an O_PATH one too: the object itself, a symlink included).
pub fn stat(fd: &impl AsRawFd) -> Result<libc::stat, Errno> {
    // SAFETY: an all-zero stat is a valid value for the kernel to overwrite.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid stat and `fd` an open descriptor.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(last());
    }
    Ok(st)
}

/// Split a path into its directory and its last name (`b"a/b/c"` -> `b"a/b"`, `b"c"`).
pub fn split(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (b"", path),
    }
}

/// The path through which a descriptor's object can be named to calls that take no
/// descriptor (chmod, utimensat): the kernel's /proc/self/fd link of this process.
pub fn fd_path(fd: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd())).expect("no NUL in a number")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_single_components_of_bounded_length() {
        assert!(name(b"ok.txt").is_ok());
        assert_eq!(name(&[b'a'; NAME_MAX]).unwrap().as_bytes().len(), NAME_MAX);
        assert_eq!(name(&[b'a'; NAME_MAX + 1]), Err(libc::ENAMETOOLONG));
        for bad in [&b""[..], b".", b"..", b"a/b", b"a\0b"] {
            assert_eq!(name(bad), Err(libc::EINVAL), "{bad:?}");
        }
    }

    #[test]
    fn paths_bound_every_component() {
        let long = [b'x'; NAME_MAX + 1];
        let mut p = b"tmp/".to_vec();
        p.extend_from_slice(&long);
        assert_eq!(path(&p), Err(libc::ENAMETOOLONG));
        assert_eq!(path(b"").unwrap().as_bytes(), b".");
        assert_eq!(path(b"a/b").unwrap().as_bytes(), b"a/b");
    }

    #[test]
    fn split_takes_the_last_name() {
        assert_eq!(split(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
        assert_eq!(split(b"c"), (&b""[..], &b"c"[..]));
    }
}
