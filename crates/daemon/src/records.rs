//! The record of the guests this node's daemon started: one empty file per guest in a
//! directory that only the daemon's user may write, named for the guest process and what it
//! was started for, `PID-START-UID-HOME`.
//!
//! A guest connects back to its daemon to report the process it hosts, and the daemon must
//! tell it from every other process of the same user: she can run `mosixd guest` herself and
//! make it claim anything. It must still tell them after a restart, when the guests the old
//! daemon started are no longer any daemon's children. The kernel names a process for as long
//! as the machine runs by its PID and start time (a PID is reused, never with the same start
//! time). So when the daemon starts a guest it writes that pair here, with the uid and home
//! node it started the guest for; a registration is a guest's if the process that connected
//! matches a record (see guests::identify). Nothing here is secret, and no user can add a
//! record. The directory lives next to the control socket, under /run: a reboot, which ends
//! every guest, empties it.
//!
//! Every operation goes through the directory's descriptor, opened and checked once at start,
//! so the path cannot be switched under the daemon afterwards.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{AtFlags, OFlag, openat};
use nix::sys::stat::{Mode, fstatat};
use nix::unistd::{UnlinkatFlags, unlinkat};

/// Mode bits that would let other users add or remove records.
const OPEN_TO_OTHERS: u32 = 0o077;

/// A guest as the daemon started it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct Spawned {
    /// The guest process.
    pub pid: i32,
    /// Its start time, in clock ticks after boot (procfs::Stat::start_ticks).
    pub start_ticks: u64,
    /// The user it runs as.
    pub uid: u32,
    /// The node its session came from.
    pub home_node: u16,
}

impl Spawned {
    fn file_name(&self) -> String {
        format!(
            "{}-{}-{}-{}",
            self.pid, self.start_ticks, self.uid, self.home_node
        )
    }

    fn from_file_name(name: &str) -> Option<Spawned> {
        let mut parts = name.split('-');
        let spawned = Spawned {
            pid: parts.next()?.parse().ok()?,
            start_ticks: parts.next()?.parse().ok()?,
            uid: parts.next()?.parse().ok()?,
            home_node: parts.next()?.parse().ok()?,
        };
        (parts.next().is_none() && spawned.file_name() == name).then_some(spawned)
    }
}

/// Why the record directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    /// It could not be created or opened.
    #[error("{}: cannot create or open the guests' directory", path.display())]
    Open {
        /// The directory.
        path: PathBuf,
        /// What the kernel said.
        #[source]
        source: io::Error,
    },
    /// It belongs to someone else, who could add records of processes of theirs.
    #[error("{}: owned by uid {owner}, not by uid {user} who runs mosixd; remove it", path.display())]
    Owner {
        /// The directory.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// The daemon's effective uid.
        user: u32,
    },
    /// Others may write in it (or list it).
    #[error("{}: mode {mode:04o} lets other users change the guests' directory; chmod 700 it", path.display())]
    Exposed {
        /// The directory.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
}

/// The record directory, open.
#[derive(Debug)]
pub(crate) struct Records {
    dir: File,
    path: PathBuf,
}

impl Records {
    /// Create the directory (mode 0700) unless it exists, open it, and check that it belongs
    /// to the daemon's user and that nobody else may use it. A symbolic link is refused.
    pub fn open(path: &Path) -> Result<Records, RecordsError> {
        let failed = |source| RecordsError::Open {
            path: path.to_owned(),
            source,
        };
        match DirBuilder::new().mode(0o700).create(path) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(failed(e)),
            _ => {}
        }
        let dir = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
            .open(path)
            .map_err(failed)?;
        // Checked on the open directory, so a rename in between cannot fool us.
        let meta = dir.metadata().map_err(failed)?;
        let user = nix::unistd::geteuid().as_raw();
        if meta.uid() != user {
            return Err(RecordsError::Owner {
                path: path.to_owned(),
                owner: meta.uid(),
                user,
            });
        }
        let mode = meta.mode() & 0o7777;
        if mode & OPEN_TO_OTHERS != 0 {
            return Err(RecordsError::Exposed {
                path: path.to_owned(),
                mode,
            });
        }
        Ok(Records {
            dir,
            path: path.to_owned(),
        })
    }

    /// Record a guest just started.
    pub fn add(&self, guest: &Spawned) -> io::Result<()> {
        let flags = OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_WRONLY | OFlag::O_CLOEXEC;
        let file = openat(
            &self.dir,
            guest.file_name().as_str(),
            flags,
            Mode::from_bits_truncate(0o600),
        )?;
        drop(file);
        Ok(())
    }

    /// Whether this daemon or an earlier one of this node started `guest`.
    pub fn contains(&self, guest: &Spawned) -> bool {
        fstatat(
            &self.dir,
            guest.file_name().as_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .is_ok()
    }

    /// Forget a guest that has ended.
    pub fn remove(&self, guest: &Spawned) {
        // Already gone (removed by another path of the same end) is fine.
        let _ = unlinkat(
            &self.dir,
            guest.file_name().as_str(),
            UnlinkatFlags::NoRemoveDir,
        );
    }

    /// Forget every recorded guest for which `ended` holds: at start, the guests that ended
    /// while no daemon ran, or whose daemon stopped before it could reap them.
    pub fn sweep(&self, ended: impl Fn(&Spawned) -> bool) -> io::Result<usize> {
        let mut removed = 0;
        for entry in std::fs::read_dir(&self.path)? {
            let name = entry?.file_name();
            if let Some(guest) = name.to_str().and_then(Spawned::from_file_name)
                && ended(&guest)
            {
                self.remove(&guest);
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn guest(pid: i32) -> Spawned {
        Spawned {
            pid,
            start_ticks: 123_456,
            uid: 1000,
            home_node: 3,
        }
    }

    #[test]
    fn names_round_trip_and_nothing_else_parses() {
        let g = guest(4711);
        assert_eq!(g.file_name(), "4711-123456-1000-3");
        assert_eq!(Spawned::from_file_name(&g.file_name()), Some(g));
        for bad in [
            "",
            "4711-123456-1000",
            "4711-123456-1000-3-9",
            "4711-123456-1000-70000",
            "04711-123456-1000-3",
            "x-1-2-3",
            ".tmp",
        ] {
            assert_eq!(Spawned::from_file_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_record_is_found_only_for_the_same_process_user_and_home() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("guests")).unwrap();
        let g = guest(4711);
        assert!(!records.contains(&g));
        records.add(&g).unwrap();
        assert!(records.contains(&g));
        for other in [
            Spawned { pid: 4712, ..g },
            Spawned {
                start_ticks: 123_457,
                ..g
            },
            Spawned { uid: 0, ..g },
            Spawned { home_node: 1, ..g },
        ] {
            assert!(!records.contains(&other), "{other:?}");
        }
        // A second daemon of the same socket (a restart) finds it.
        let again = Records::open(&dir.path().join("guests")).unwrap();
        assert!(again.contains(&g));
        again.remove(&g);
        assert!(!records.contains(&g));
        records.remove(&g);
    }

    #[test]
    fn a_sweep_forgets_the_guests_that_ended() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::open(&dir.path().join("guests")).unwrap();
        for pid in 1..=4 {
            records.add(&guest(pid)).unwrap();
        }
        std::fs::write(dir.path().join("guests/stray"), "").unwrap();
        assert_eq!(records.sweep(|g| g.pid % 2 == 0).unwrap(), 2);
        let left: Vec<bool> = (1..=4).map(|pid| records.contains(&guest(pid))).collect();
        assert_eq!(left, [true, false, true, false]);
        assert!(dir.path().join("guests/stray").exists());
    }

    #[test]
    fn a_directory_others_may_use_or_a_link_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("guests");
        Records::open(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o733)).unwrap();
        let err = Records::open(&path).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: mode 0733 lets other users change the guests' directory; chmod 700 it",
                path.display()
            )
        );
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&path, &link).unwrap();
        assert!(matches!(
            Records::open(&link),
            Err(RecordsError::Open { .. })
        ));
    }
}
