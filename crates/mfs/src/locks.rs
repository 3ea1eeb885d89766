//! Locks through MFS, held at the serving node.
//!
//! Every lock through MFS is a POSIX byte-range lock, held here as an open-file-description
//! (OFD) lock, as the Linux NFS client has its locks held by the server: OFD locks conflict
//! with each other and with the fcntl(2) locks of this node's own processes. flock(2) through
//! MFS arrives as a lock on the whole file (the requesting kernel emulates it so, and fuser
//! does not pass on `FUSE_LK_FLOCK`), so it conflicts with fcntl locks through MFS too, and
//! not with flock locks taken here directly (Linux never makes flock and POSIX locks meet).
//!
//! An OFD lock belongs to the open file description it was set through, and POSIX locks
//! belong to a process. So the locks of one lock owner (the requesting kernel's FUSE
//! `lock_owner`: a process's file table for fcntl locks, one open file for flock locks) on
//! one file are held on a description opened for that owner alone ([`Owners`]), whatever
//! handle they came through: a process that opens a file twice does not conflict with itself.
//! Clearing the whole file (the requesting node does so when the owner closes the file)
//! closes the description, and with it every lock on it; so does the release of the
//! session's last handle of the file, and the end of the session (a link that broke).

use std::collections::HashMap;
use std::hash::Hash;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::resolve::{self, Errno, check, last};

/// A file of this node, whatever name or handle it is reached by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    /// The file a stat describes.
    pub fn of(st: &libc::stat) -> FileId {
        FileId {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    }
}

/// Whose locks on which file: a lock owner of the requesting kernel of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct OwnerKey {
    /// The session (requesting node) the owner belongs to: owners of different kernels may
    /// have the same number.
    pub session: u64,
    pub file: FileId,
    /// The requesting kernel's FUSE `lock_owner`.
    pub owner: u64,
}

/// The description each lock owner's locks are held on, one per [`OwnerKey`]. Generic over
/// the description so that the bookkeeping is tested without files; a description dropped
/// from the table is closed, and its locks with it.
pub struct Owners<D> {
    held: HashMap<OwnerKey, D>,
}

impl<D> Default for Owners<D> {
    fn default() -> Self {
        Owners {
            held: HashMap::new(),
        }
    }
}

impl<D> Owners<D> {
    /// The description of `key`, if it has one.
    pub fn get(&self, key: &OwnerKey) -> Option<&D> {
        self.held.get(key)
    }

    /// The description of `key`, opened with `open` if it has none yet.
    pub fn get_or_open(
        &mut self,
        key: OwnerKey,
        open: impl FnOnce() -> Result<D, Errno>,
    ) -> Result<&D, Errno> {
        match self.held.entry(key) {
            std::collections::hash_map::Entry::Occupied(held) => Ok(held.into_mut()),
            std::collections::hash_map::Entry::Vacant(slot) => Ok(slot.insert(open()?)),
        }
    }

    /// `key` holds no lock any more: its description goes.
    pub fn forget(&mut self, key: &OwnerKey) {
        self.held.remove(key);
    }

    /// The session closed its last handle of `file`: no process of its node has the file
    /// open, so none holds a lock on it.
    pub fn forget_file(&mut self, session: u64, file: FileId) {
        self.held
            .retain(|key, _| key.session != session || key.file != file);
    }

    /// The session ended (its link broke, its node may be dead): its locks go.
    pub fn forget_session(&mut self, session: u64) {
        self.held.retain(|key, _| key.session != session);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.held.len()
    }
}

/// Set or clear the lock of `key` (type `typ`: F_RDLCK, F_WRLCK or F_UNLCK) on bytes
/// `start..=end` of the file of `handle`, without waiting: EAGAIN while another owner holds a
/// conflicting lock.
pub fn set(
    owners: &mut Owners<OwnedFd>,
    key: OwnerKey,
    handle: &OwnedFd,
    typ: i32,
    start: u64,
    end: u64,
) -> Result<(), Errno> {
    if typ == libc::F_UNLCK {
        if start == 0 && end >= i64::MAX as u64 {
            owners.forget(&key);
            return Ok(());
        }
        return match owners.get(&key) {
            Some(description) => ofd_setlk(description, typ, start, end),
            None => Ok(()),
        };
    }
    let description = owners.get_or_open(key, || description_for_locks(handle))?;
    ofd_setlk(description, typ, start, end)
}

/// The first lock of another owner that conflicts with the one described, as
/// (type, start, end); type F_UNLCK if none. The process that holds it may be on any node.
pub fn get(
    owners: &Owners<OwnedFd>,
    key: &OwnerKey,
    handle: &OwnedFd,
    typ: i32,
    start: u64,
    end: u64,
) -> Result<(i32, u64, u64), Errno> {
    // The owner's own description, so that its own locks are no conflict; an owner without
    // one holds no lock, and any other description of the file sees every lock.
    let description = owners.get(key).unwrap_or(handle);
    let mut lock = flock(typ, start, end);
    // SAFETY: a valid descriptor and flock.
    check(unsafe { libc::fcntl(description.as_raw_fd(), libc::F_OFD_GETLK, &mut lock) })?;
    let end = match lock.l_len {
        0 => i64::MAX as u64,
        len => (lock.l_start + len - 1) as u64,
    };
    Ok((i32::from(lock.l_type), lock.l_start as u64, end))
}

fn ofd_setlk(description: &OwnedFd, typ: i32, start: u64, end: u64) -> Result<(), Errno> {
    let mut lock = flock(typ, start, end);
    // SAFETY: a valid descriptor and flock.
    check(unsafe { libc::fcntl(description.as_raw_fd(), libc::F_OFD_SETLK, &mut lock) })
}

/// A new open file description of the file of `handle`, for one owner's locks, opened by the
/// calling worker (so as the caller). Read and write if the caller may open the file so: any
/// lock can then be set on it whichever of the owner's handles the lock came through (the
/// requesting kernel checked that handle's mode for fcntl, and flock needs none). Else with
/// the handle's own access mode, which the caller has.
fn description_for_locks(handle: &OwnedFd) -> Result<OwnedFd, Errno> {
    let path = resolve::fd_path(handle);
    let flags = libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
    let open = |mode: i32| {
        // SAFETY: a valid C string; the magic link of a descriptor this process holds leads
        // to that very file, even if it has been removed or renamed since.
        let fd = unsafe { libc::open(path.as_ptr(), mode | flags) };
        if fd < 0 {
            return Err(last());
        }
        // SAFETY: open returned a new descriptor that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    };
    open(libc::O_RDWR).or_else(|_| {
        // SAFETY: a valid descriptor.
        let status = unsafe { libc::fcntl(handle.as_raw_fd(), libc::F_GETFL) };
        if status < 0 {
            return Err(last());
        }
        open(status & libc::O_ACCMODE)
    })
}

/// A lock on bytes `start..=end`; an `end` the kernel gives as OFFSET_MAX means "to the end".
pub(crate) fn flock(typ: i32, start: u64, end: u64) -> libc::flock {
    // SAFETY: all-zero is a valid flock; the fields are set below.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = typ as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = start.min(i64::MAX as u64) as libc::off_t;
    lock.l_len = if end >= i64::MAX as u64 {
        0
    } else {
        end.saturating_sub(start) as libc::off_t + 1
    };
    lock
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: FileId = FileId { dev: 1, ino: 10 };
    const OTHER_FILE: FileId = FileId { dev: 1, ino: 11 };

    fn key(session: u64, file: FileId, owner: u64) -> OwnerKey {
        OwnerKey {
            session,
            file,
            owner,
        }
    }

    #[test]
    fn an_owner_has_one_description_per_file_and_session() {
        let mut owners = Owners::default();
        let mut opened = 0;
        let mut open = || {
            opened += 1;
            Ok(opened)
        };
        assert_eq!(owners.get_or_open(key(1, FILE, 7), &mut open), Ok(&1));
        // The same owner through another handle of the same file: the same description.
        assert_eq!(owners.get_or_open(key(1, FILE, 7), &mut open), Ok(&1));
        // Another owner, another file, or the same owner number of another node: new ones.
        assert_eq!(owners.get_or_open(key(1, FILE, 8), &mut open), Ok(&2));
        assert_eq!(owners.get_or_open(key(1, OTHER_FILE, 7), &mut open), Ok(&3));
        assert_eq!(owners.get_or_open(key(2, FILE, 7), &mut open), Ok(&4));
        assert_eq!(owners.len(), 4);
    }

    #[test]
    fn a_description_that_cannot_be_opened_is_not_kept() {
        let mut owners = Owners::<u32>::default();
        assert_eq!(
            owners.get_or_open(key(1, FILE, 7), || Err(libc::EACCES)),
            Err(libc::EACCES)
        );
        assert_eq!(owners.get(&key(1, FILE, 7)), None);
    }

    #[test]
    fn owners_go_by_key_by_file_of_a_session_and_by_session() {
        let mut owners = Owners::default();
        for (n, k) in [
            key(1, FILE, 7),
            key(1, FILE, 8),
            key(1, OTHER_FILE, 7),
            key(2, FILE, 7),
            key(2, OTHER_FILE, 9),
        ]
        .into_iter()
        .enumerate()
        {
            owners.get_or_open(k, || Ok(n)).unwrap();
        }
        owners.forget(&key(1, FILE, 8));
        assert_eq!(owners.get(&key(1, FILE, 8)), None);
        assert_eq!(owners.len(), 4);
        owners.forget_file(1, FILE);
        assert_eq!(owners.get(&key(1, FILE, 7)), None);
        assert_eq!(owners.get(&key(1, OTHER_FILE, 7)), Some(&2));
        assert_eq!(owners.get(&key(2, FILE, 7)), Some(&3));
        owners.forget_session(2);
        assert_eq!(owners.len(), 1);
        assert_eq!(owners.get(&key(1, OTHER_FILE, 7)), Some(&2));
    }

    #[test]
    fn a_range_to_offset_max_is_a_lock_to_the_end_of_the_file() {
        let whole = flock(libc::F_WRLCK, 0, u64::MAX);
        assert_eq!((whole.l_start, whole.l_len), (0, 0));
        let whole = flock(libc::F_WRLCK, 0, i64::MAX as u64);
        assert_eq!((whole.l_start, whole.l_len), (0, 0));
        let bytes = flock(libc::F_RDLCK, 4, 9);
        assert_eq!((bytes.l_start, bytes.l_len), (4, 6));
    }
}
