//! Files a move need not carry: those the receiver holds with the same content.
//!
//! A file mapping's pages that the process never wrote are the file's own (`FILE_PAGES`).
//! When the receiving node has a file at the same path with the same content, it maps its
//! own file and those pages need not travel. Sameness is a content digest, never a path or
//! an inode: across machines they mean nothing, and on one machine a path can name another
//! file by the time the process arrives.
//!
//! The digest is BLAKE3 (the `blake3` crate): collision-resistant, so a peer cannot make two
//! different files look alike, and fast: the receiver of every move digests every file it
//! says it holds, 40 MB for a `cc1`, in the move's critical path. With SHA-256 (the CPU's SHA
//! extensions) that took about as long as sending the pages would (README, the samefile
//! row); BLAKE3's SIMD runs several times faster on one core. Each supervisor keeps the
//! digests it computed, each under
//! the file's `stat` identity (device, inode, size, mtime, ctime), so a file is read once
//! however often its processes move; a changed file has a new identity (ctime cannot be set
//! back) and is read again. A guest supervisor lives for one process's stay, so guests also
//! keep their digests in a file of their user's on the node (`keep_digests_in`): the next
//! guest of that user starts with them, and a freshly exec'd `cc1` placed on a node where
//! one ran before is not read again (40 MB, some 15 ms of CPU, on the placement's path).
//! Only that user (and root) can write there, so a digest it holds is one of that user's
//! guests computed: a user can only mislead their own processes.
//!
//! The exchange (see docs/engine.md, "Pre-copy"): the sender announces the areas (each file
//! mapping with its [`FileId`](rmosix_image::FileId), digest included), the receiver answers
//! [`Held`]: the digests of those it has at the same path, computed by itself. The sender then
//! leaves out the file pages of those files, in every round. The receiver maps its own file
//! only if its digest, computed again at the restore, is the image's; a file it said it held
//! that changed since fails the restore (the process stays where it was).

use std::collections::VecDeque;
use std::fs::{File, Metadata, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;
use std::sync::{Mutex, OnceLock};

use rmosix_image::Area;
use serde::{Deserialize, Serialize};

/// The environment variable that turns the exchange off at the sender when set to `off`:
/// no digest is computed and every file page is sent (the bench's baseline).
pub const SWITCH: &str = "RMOSIX_SAMEFILE";

/// How many digests a supervisor keeps: a process maps a few dozen files, but one away from
/// home may open thousands of system files (a Python's modules, see `sysfiles`). A lookup
/// compares stamps one by one, a few microseconds at this size.
const CACHE_ENTRIES: usize = 4096;

/// Bytes read at a time to hash a file.
const CHUNK: usize = 1 << 20;

/// The name of a user's digests file in the directory the daemon gives the user.
const STORE_NAME: &str = "digests";

/// Most bytes of a digests file read: one past it is emptied and begun anew (some 150 bytes
/// a file: thousands of files).
const STORE_BYTES: u64 = 1 << 20;

/// Whether this sender leaves out the pages of files the receiver holds.
pub fn enabled() -> bool {
    std::env::var(SWITCH).map_or(true, |v| v != "off")
}

/// What a file's digest is kept under: a file with all of these unchanged has not changed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Stamp {
    dev: u64,
    inode: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl Stamp {
    fn of(meta: &Metadata) -> Stamp {
        Stamp {
            dev: meta.dev(),
            inode: meta.ino(),
            size: meta.size(),
            mtime: (meta.mtime(), meta.mtime_nsec()),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        }
    }

    /// The stamp and digest of a line of a digests file, if it is one.
    fn parse(line: &str) -> Option<(Stamp, String)> {
        let words: Vec<&str> = line.split(' ').collect();
        let [dev, inode, size, m_s, m_ns, c_s, c_ns, digest] = words[..] else {
            return None;
        };
        let unsigned = |w: &str| w.parse::<u64>().ok();
        let signed = |w: &str| w.parse::<i64>().ok();
        let hex = digest.len() == 64 && digest.bytes().all(|b| b.is_ascii_hexdigit());
        let stamp = Stamp {
            dev: unsigned(dev)?,
            inode: unsigned(inode)?,
            size: unsigned(size)?,
            mtime: (signed(m_s)?, signed(m_ns)?),
            ctime: (signed(c_s)?, signed(c_ns)?),
        };
        hex.then(|| (stamp, digest.to_owned()))
    }

    /// The line of a digests file that keeps `digest` under this stamp.
    fn line(&self, digest: &str) -> String {
        let Stamp {
            dev,
            inode,
            size,
            mtime,
            ctime,
        } = self;
        format!(
            "{dev} {inode} {size} {} {} {} {} {digest}\n",
            mtime.0, mtime.1, ctime.0, ctime.1
        )
    }
}

/// The digests computed so far, newest last.
static DIGESTS: Mutex<VecDeque<(Stamp, String)>> = Mutex::new(VecDeque::new());

/// Keep `digest` under `stamp` among the digests `known`, the oldest going past
/// [`CACHE_ENTRIES`].
fn keep(known: &mut VecDeque<(Stamp, String)>, stamp: Stamp, digest: String) {
    if known.len() >= CACHE_ENTRIES {
        known.pop_front();
    }
    known.push_back((stamp, digest));
}

/// The digests file of this process's user on this node, once given (see
/// `keep_digests_in`).
static STORE: OnceLock<File> = OnceLock::new();

/// Start with the digests kept in `dir` (the daemon's directory for this process's user)
/// and keep there those computed from now on. A file too large is emptied first; lines
/// that do not parse (one cut short) are passed over.
pub fn keep_digests_in(dir: &Path) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(dir.join(STORE_NAME))?;
    if file.metadata()?.len() > STORE_BYTES {
        file.set_len(0)?;
    }
    let mut text = String::new();
    (&mut file).take(STORE_BYTES).read_to_string(&mut text)?;
    let mut known = DIGESTS.lock().unwrap_or_else(|e| e.into_inner());
    for (stamp, digest) in text.lines().filter_map(Stamp::parse) {
        keep(&mut known, stamp, digest);
    }
    drop(known);
    STORE
        .set(file)
        .map_err(|_| io::Error::other("digests are kept in a file already"))
}

/// The BLAKE3 digest of regular file `file`'s content, in hex: from the cache if its identity is
/// unchanged, else read whole. A file that changes while it is read has no digest.
pub fn digest_of(file: &File) -> io::Result<String> {
    digest_with(file, &file.metadata()?)
}

/// As [`digest_of`], for a caller that has just read `file`'s metadata `meta`.
pub fn digest_with(file: &File, meta: &Metadata) -> io::Result<String> {
    if !meta.file_type().is_file() {
        return Err(io::Error::other("not a regular file"));
    }
    let stamp = Stamp::of(meta);
    let known = DIGESTS.lock().unwrap_or_else(|e| e.into_inner());
    if let Some((_, digest)) = known.iter().find(|(s, _)| *s == stamp) {
        return Ok(digest.clone());
    }
    drop(known);
    let digest = hash(file, stamp.size)?;
    if Stamp::of(&file.metadata()?) != stamp {
        return Err(io::Error::other("the file changed while it was read"));
    }
    keep(
        &mut DIGESTS.lock().unwrap_or_else(|e| e.into_inner()),
        stamp,
        digest.clone(),
    );
    if let Some(mut store) = STORE.get() {
        // One write of one line, appended: guests of the user writing at once do not mix
        // their lines. A failure only costs the next guest a read.
        if let Err(err) = store.write_all(stamp.line(&digest).as_bytes()) {
            tracing::debug!(%err, "cannot keep a digest for the next guests");
        }
    }
    Ok(digest)
}

/// The BLAKE3 digest of the first `size` bytes of `file`, in hex.
fn hash(file: &File, size: u64) -> io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; CHUNK];
    let mut at = 0u64;
    while at < size {
        let len = (size - at).min(CHUNK as u64) as usize;
        let got = file.read_at(&mut buf[..len], at)?;
        if got == 0 {
            return Err(io::Error::other("the file shrank while it was read"));
        }
        hasher.update(&buf[..got]);
        at += got as u64;
    }
    Ok(hasher.finalize().to_hex().to_string())
}

/// The digest of the file at `path` here, if it can be opened and read.
pub fn digest_at(path: &str) -> Option<String> {
    File::open(path)
        .and_then(|file| digest_of(&file))
        .inspect_err(|err| tracing::debug!(%err, path, "no digest of the file here"))
        .ok()
}

/// The files of an image that the receiver holds: their file pages do not travel. Each is a
/// path and the digest of what the receiver found there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    files: Vec<(String, String)>,
}

impl Held {
    /// The files among those `areas` map that this node has at the same path with the same
    /// digest, as it computes them.
    pub fn here(areas: &[Area]) -> Held {
        let mut held = Held::default();
        for id in areas.iter().filter_map(|a| a.file.as_ref()) {
            let Some(theirs) = &id.digest else { continue };
            if held.holds_file(&id.path, theirs) {
                continue;
            }
            if digest_at(&id.path).as_ref() == Some(theirs) {
                held.files.push((id.path.clone(), theirs.clone()));
            }
        }
        held
    }

    /// What a sender with the exchange turned off takes the answer for: nothing held.
    pub fn unless_switched_off(self) -> Held {
        match enabled() {
            true => self,
            false => Held::default(),
        }
    }

    /// Whether the receiver holds the file `area` maps: its file pages stay here.
    pub fn holds(&self, area: &Area) -> bool {
        let file = area.file.as_ref();
        file.and_then(|f| Some((&f.path, f.digest.as_ref()?)))
            .is_some_and(|(path, digest)| self.holds_file(path, digest))
    }

    /// Whether the receiver said it holds the file at `path` with this digest.
    pub fn holds_file(&self, path: &str, digest: &str) -> bool {
        self.files
            .iter()
            .any(|(p, d)| (p.as_str(), d.as_str()) == (path, digest))
    }

    /// How many files are held.
    pub fn len(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use rmosix_image::FileId;

    use super::*;

    fn mapping(path: &str, digest: Option<String>) -> Area {
        Area {
            start: 0x1000,
            end: 0x3000,
            read: true,
            write: false,
            exec: false,
            shared: false,
            offset: 0,
            inode: 1,
            name: path.to_owned(),
            advice: Vec::new(),
            guards: Vec::new(),
            file: Some(FileId {
                path: path.to_owned(),
                kept: None,
                dev: 1,
                inode: 1,
                size: 8192,
                mtime: (0, 0),
                boot: String::new(),
                digest,
            }),
        }
    }

    #[test]
    fn a_digests_file_line_gives_back_its_stamp_and_digest_and_others_give_nothing() {
        let stamp = Stamp {
            dev: u64::MAX,
            inode: 1 << 63,
            size: 40 << 20,
            mtime: (-1, 999_999_999),
            ctime: (1_765_000_000, 0),
        };
        let digest = "ab".repeat(32);
        let line = stamp.line(&digest);
        assert!(line.ends_with('\n'));
        assert_eq!(Stamp::parse(line.trim_end()), Some((stamp, digest.clone())));
        let cut = &line[..line.len() - 10];
        for bad in [cut, "", "1 2 3 4 5 6 7", &line.replace(&digest, "xyz")] {
            assert_eq!(Stamp::parse(bad), None, "{bad:?}");
        }
        let extra = format!("{} more", line.trim_end());
        assert_eq!(Stamp::parse(&extra), None);
    }

    #[test]
    fn a_digest_follows_the_content_and_a_changed_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        std::fs::write(&a, vec![7u8; 3 * CHUNK + 5]).unwrap();
        std::fs::write(&b, vec![7u8; 3 * CHUNK + 5]).unwrap();
        let of = |p: &std::path::Path| digest_of(&File::open(p).unwrap()).unwrap();
        let first = of(&a);
        assert_eq!(first.len(), 64);
        assert_eq!(of(&b), first, "same content, another inode");
        // One byte changed in place, size kept: the cached digest must not stand.
        let mut file = std::fs::OpenOptions::new().write(true).open(&a).unwrap();
        file.write_all_at(&[8], CHUNK as u64).unwrap();
        file.flush().unwrap();
        drop(file);
        assert_ne!(of(&a), first);
        assert_eq!(of(&b), first);
    }

    #[test]
    fn the_receiver_holds_only_files_whose_digest_it_finds_at_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let here = dir.path().join("here");
        std::fs::write(&here, b"the same bytes").unwrap();
        let path = here.to_str().unwrap();
        let right = digest_at(path).unwrap();
        let areas = [
            mapping(path, Some(right.clone())),
            mapping(path, Some("0".repeat(64))),
            mapping(
                dir.path().join("absent").to_str().unwrap(),
                Some(right.clone()),
            ),
            mapping(path, None),
        ];
        let held = Held::here(&areas);
        assert_eq!(held.len(), 1);
        assert!(held.holds(&areas[0]));
        assert!(!held.holds(&areas[1]));
        // The same content at a path where the receiver has nothing is not held.
        assert!(!held.holds(&areas[2]));
        assert!(!held.holds(&areas[3]));
        assert!(held.holds_file(path, &right));
    }
}
