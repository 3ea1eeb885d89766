//! The remote's half of read-ahead: bytes of home files that home lent this remote
//! (`ToGuest::Filled`), which serve the process's `read`, `readv` and `pread64` here without
//! a round trip. Home's half, which decides what it lends and tells of changes, is
//! `homefill`. docs/forwarding.md, "Fewer round trips: reads", says when a read is served
//! here, what drops the bytes and why the result is the one home would give.
//!
//! A `read` served here moves the program's offset here only: home's offset of the
//! description lags by what was consumed, and is advanced (`ToHome::Consumed`) before
//! anything else goes home. Home lends for `read` only where no other descriptor or process
//! shares the description, so nobody can see the lag but through something that goes home.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::table::MAX_BUF;

/// Lent bytes older than this serve no read: a change home's watch cannot see (a write
/// through a shared mapping, a change made by another host of a network file system) shows
/// after this long at most.
pub const LENT_FOR: Duration = Duration::from_secs(3);
/// The first fill for `read`: sequential reading is the common case.
pub(crate) const FIRST_READ_FILL: u64 = 256 << 10;
/// The first fill for `pread64`, which is often random (a database's pages): a page, so
/// that a random read moves no more bytes than the plain call would; a run of reads doubles
/// it.
const FIRST_PREAD_FILL: u64 = 4 << 10;
/// Fills double while reading goes on where the last one ended, up to this.
const MAX_FILL: u64 = 1 << 20;
/// After this many `pread64` misses of a descriptor that do not continue its last fill,
/// each miss asks for the whole aligned chunk around it: a database reads its file all over,
/// and a page a round trip made sqlite3 30 times slower away than at home (`./dev bench
/// io`), where chunks hold a 100 MiB file after 25 round trips.
const SCATTERED: u32 = 4;
/// Size and alignment of those chunks.
const CHUNK: u64 = MAX_BUF;
/// Most bytes a process holds; the oldest fills go first.
const MAX_HELD: usize = 128 << 20;

/// Bytes of a file home lent for one read (see `ToGuest::Filled`).
#[derive(Debug)]
pub struct Loan {
    /// The file offset they start at.
    pub start: u64,
    /// The file's bytes from there.
    pub bytes: Vec<u8>,
    /// They reach the end of the file.
    pub eof: bool,
    /// The file did not change while they were read: the remote may keep them.
    pub keep: bool,
}

/// Bytes of a file from `start`, as home read them at `filled`.
struct Extent {
    start: u64,
    bytes: Vec<u8>,
    /// The file ended where the bytes end.
    eof: bool,
    filled: Instant,
}

impl Extent {
    fn end(&self) -> u64 {
        self.start + self.bytes.len() as u64
    }

    /// The `count` bytes at `at`, fewer only where the file ends; None if they are not all
    /// here, or are too old.
    fn read(&self, at: u64, count: u64, now: Instant) -> Option<&[u8]> {
        if at < self.start || at > self.end() || now.duration_since(self.filled) > LENT_FOR {
            return None;
        }
        let wanted = at.saturating_add(count);
        if wanted > self.end() && !self.eof {
            return None;
        }
        let from = (at - self.start) as usize;
        let to = (wanted.min(self.end()) - self.start) as usize;
        Some(&self.bytes[from..to])
    }
}

/// What the remote knows of one descriptor.
enum Descriptor {
    /// Home does not lend its bytes (not a regular file, or a shared description, ...): its
    /// reads go home as calls until a call on it may have changed that.
    Refused,
    Lent(Lent),
}

/// A descriptor whose bytes home lends.
#[derive(Default)]
struct Lent {
    /// The description's offset as the program sees it, once a `read` told it.
    offset: Option<u64>,
    /// Bytes `read` here that home's offset does not count yet.
    unsettled: u64,
    extents: Vec<Extent>,
    /// Size of the last fill.
    fill: u64,
    /// What the last fill covered: a miss there continues a sequential run.
    last_fill: Option<(u64, u64)>,
    /// `pread64` misses that did not continue the last fill.
    scattered: u32,
    /// The file's `struct stat`, lent at its open, and when: an `fstat` is answered from it
    /// until home tells of a change, or it is older than [`LENT_FOR`].
    status: Option<(Vec<u8>, Instant)>,
    /// Opened read-only, a regular file home lent at its open: its `close` cannot fail and
    /// goes home behind the program (see "Opens lent ahead" in docs/forwarding.md).
    closes_behind: bool,
}

/// How a read is served.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// From these bytes, held here.
    Here(Vec<u8>),
    /// Ask home for the bytes (`ToHome::Read`), lending up to `ahead` from the read's offset,
    /// or, for a `pread64`, from `from`, before it.
    Ask { from: Option<u64>, ahead: u64 },
    /// As an ordinary call.
    Call,
}

/// The bytes home lent this process, by descriptor.
#[derive(Default)]
pub struct ReadCache {
    fds: HashMap<i32, Descriptor>,
    /// Bytes held, all descriptors together.
    held: usize,
}

impl ReadCache {
    /// A read of `count` bytes of `fd` at `at` (pread64), or at the description's offset.
    pub fn lookup(&mut self, fd: i32, at: Option<u64>, count: u64) -> Lookup {
        let lent = match self
            .fds
            .entry(fd)
            .or_insert(Descriptor::Lent(Lent::default()))
        {
            Descriptor::Refused => return Lookup::Call,
            Descriptor::Lent(lent) => lent,
        };
        let first = if at.is_some() {
            FIRST_PREAD_FILL
        } else {
            FIRST_READ_FILL
        };
        let Some(from) = at.or(lent.offset) else {
            lent.fill = first;
            return Lookup::Ask {
                from: None,
                ahead: first,
            };
        };
        let now = Instant::now();
        if let Some(bytes) = lent.extents.iter().find_map(|e| e.read(from, count, now)) {
            return Lookup::Here(bytes.to_vec());
        }
        let sequential = lent
            .last_fill
            .is_some_and(|(start, end)| (start..=end).contains(&from));
        lent.fill = if sequential {
            (lent.fill * 2).clamp(first, MAX_FILL)
        } else {
            lent.scattered += u32::from(at.is_some());
            first
        };
        let chunk = from & !(CHUNK - 1);
        if at.is_some() && lent.scattered >= SCATTERED && from + count <= chunk + CHUNK {
            return Lookup::Ask {
                from: Some(chunk),
                ahead: CHUNK,
            };
        }
        Lookup::Ask {
            from: None,
            ahead: lent.fill.max(count).min(MAX_BUF),
        }
    }

    /// The program consumed `n` bytes of `fd` through a `read` served here.
    pub fn consumed(&mut self, fd: i32, n: u64) {
        if let Some(Descriptor::Lent(lent)) = self.fds.get_mut(&fd)
            && let Some(offset) = lent.offset.as_mut()
        {
            *offset += n;
            lent.unsettled += n;
        }
    }

    /// Home lent `loan` of `fd` for a read of `count` at `at` (pread64), at or after where
    /// the loan starts, or at the description's offset, where it starts. Returns the bytes
    /// that read gets; keeps them all if `keep`. A `read` then calls `consumed`.
    pub fn filled(&mut self, fd: i32, at: Option<u64>, count: u64, loan: Loan) -> Vec<u8> {
        let Loan {
            start,
            bytes,
            eof,
            keep,
        } = loan;
        let skip = at.map_or(0, |at| at.saturating_sub(start)) as usize;
        let from = skip.min(bytes.len());
        let read = bytes[from..bytes.len().min(from.saturating_add(count as usize))].to_vec();
        if !matches!(self.fds.get(&fd), Some(Descriptor::Lent(_))) {
            self.fds.insert(fd, Descriptor::Lent(Lent::default()));
        }
        let Some(Descriptor::Lent(lent)) = self.fds.get_mut(&fd) else {
            return read;
        };
        if at.is_none() {
            lent.offset = Some(start);
        }
        let end = start + bytes.len() as u64;
        lent.last_fill = Some((start, end));
        if keep {
            // Where the new bytes overlap older ones, the older are older news.
            lent.extents.retain(|e| e.end() <= start || e.start >= end);
            lent.extents.push(Extent {
                start,
                eof,
                filled: Instant::now(),
                bytes,
            });
            self.held = self.recount();
            self.trim();
        }
        read
    }

    /// Home lent ahead what an open put under `fd`: the file's `status` and its first bytes
    /// from the description's offset, for a read still to come. The status is kept with the
    /// bytes, if they are kept.
    pub fn opened(&mut self, fd: i32, status: Vec<u8>, loan: Loan) {
        self.forget(fd);
        let fits = status.len() == std::mem::size_of::<libc::stat>();
        let lent = Lent {
            status: (loan.keep && fits).then(|| (status, Instant::now())),
            closes_behind: true,
            ..Lent::default()
        };
        self.fds.insert(fd, Descriptor::Lent(lent));
        self.filled(fd, None, 0, loan);
    }

    /// The `struct stat` of `fd`'s file as home lent it, if it is still good.
    pub fn status(&self, fd: i32) -> Option<Vec<u8>> {
        match self.fds.get(&fd) {
            Some(Descriptor::Lent(Lent {
                status: Some((status, at)),
                ..
            })) if at.elapsed() <= LENT_FOR => Some(status.clone()),
            _ => None,
        }
    }

    /// Whether `fd`'s close may go home behind the program (see [`Lent::closes_behind`]).
    pub fn closes_behind(&self, fd: i32) -> bool {
        matches!(
            self.fds.get(&fd),
            Some(Descriptor::Lent(Lent {
                closes_behind: true,
                ..
            }))
        )
    }

    /// Home ran a read of `fd` as an ordinary call: it does not lend its bytes.
    pub fn refused(&mut self, fd: i32) {
        self.forget(fd);
        self.fds.insert(fd, Descriptor::Refused);
    }

    /// What home's offsets must still count, by descriptor; counted from now on.
    pub fn settle(&mut self) -> Vec<(i32, u64)> {
        let mut owed = Vec::new();
        for (&fd, descriptor) in &mut self.fds {
            if let Descriptor::Lent(lent) = descriptor
                && lent.unsettled > 0
            {
                owed.push((fd, std::mem::take(&mut lent.unsettled)));
            }
        }
        owed
    }

    /// Call `nr` goes home (settled first): forget what it may change of the descriptors it
    /// names: their offset, what they refer to, whether the description is shared. The fd
    /// is argument 0 of nearly every call on one; the others are listed. A `sendmsg` may pass
    /// any descriptor to another process.
    pub fn before_call(&mut self, nr: i64, args: &[u64; 6]) {
        let fd = |i: usize| args[i] as i32;
        match nr {
            // Only a refused descriptor's reads go home as calls: it stays refused.
            libc::SYS_read | libc::SYS_readv | libc::SYS_pread64 => {}
            // Calls that move no offset and share nothing: locks (a database takes one per
            // transaction), fstat, fsync, advice. What they may tell of a change comes after
            // home's Stale anyway.
            libc::SYS_fstat
            | libc::SYS_flock
            | libc::SYS_fsync
            | libc::SYS_fdatasync
            | libc::SYS_fadvise64 => {}
            libc::SYS_fcntl if is_lock(args[1]) => {}
            libc::SYS_sendmsg | libc::SYS_sendmmsg => self.clear(),
            libc::SYS_close_range => {
                let (first, last) = (args[0] as u32, args[1] as u32);
                let gone: Vec<i32> = (self.fds.keys().copied())
                    .filter(|&fd| (first..=last).contains(&(fd as u32)))
                    .collect();
                gone.into_iter().for_each(|fd| self.forget(fd));
            }
            libc::SYS_dup2 | libc::SYS_dup3 | libc::SYS_sendfile => {
                self.forget(fd(0));
                self.forget(fd(1));
            }
            libc::SYS_splice | libc::SYS_tee | libc::SYS_copy_file_range => {
                self.forget(fd(0));
                self.forget(fd(2));
            }
            _ if keeps_bytes(nr, args) => self.forget_offset(fd(0)),
            _ => self.forget(fd(0)),
        }
    }

    /// Home says the files of `fds` changed: drop their bytes (offsets stay right).
    pub fn stale(&mut self, fds: &[i32]) {
        for fd in fds {
            if let Some(Descriptor::Lent(lent)) = self.fds.get_mut(fd) {
                lent.extents.clear();
                lent.last_fill = None;
                lent.status = None;
            }
        }
        self.held = self.recount();
    }

    /// Drop every byte held, and what is known of every descriptor. For a move (settle
    /// first), and for a write kept at the remote, which may be to any of these files.
    pub fn clear(&mut self) {
        self.fds.clear();
        self.held = 0;
    }

    /// The description's offset of `fd` may have moved: a `read` asks home again, a
    /// `pread64` is still served from the bytes held.
    fn forget_offset(&mut self, fd: i32) {
        if let Some(Descriptor::Lent(lent)) = self.fds.get_mut(&fd) {
            lent.offset = None;
        }
    }

    fn forget(&mut self, fd: i32) {
        if self.fds.remove(&fd).is_some() {
            self.held = self.recount();
        }
    }

    fn recount(&self) -> usize {
        self.fds
            .values()
            .filter_map(|d| match d {
                Descriptor::Lent(lent) => Some(lent.extents.iter().map(|e| e.bytes.len())),
                Descriptor::Refused => None,
            })
            .flatten()
            .sum()
    }

    /// Drop the oldest fills until at most MAX_HELD bytes are held.
    fn trim(&mut self) {
        while self.held > MAX_HELD {
            let oldest = self
                .fds
                .iter()
                .filter_map(|(&fd, d)| match d {
                    Descriptor::Lent(lent) => Some((fd, lent)),
                    Descriptor::Refused => None,
                })
                .flat_map(|(fd, lent)| {
                    lent.extents
                        .iter()
                        .enumerate()
                        .map(move |(i, e)| (e.filled, fd, i))
                })
                .min();
            let Some((_, fd, i)) = oldest else {
                return;
            };
            if let Some(Descriptor::Lent(lent)) = self.fds.get_mut(&fd) {
                self.held -= lent.extents.remove(i).bytes.len();
            }
        }
    }
}

/// Whether call `nr` on the descriptor in argument 0 leaves what the remote holds of it
/// right but for the offset: it changes no byte of the file, nor what the descriptor
/// refers to, nor whether its description is shared (`lseek`, and `fcntl`'s flag reads).
/// Whether home may lend ahead what open `nr` with `args` opens (`ToHome::Call`'s `lend`):
/// an `open` or `openat` for reading only, of a file that exists (no `O_CREAT`,
/// `O_TMPFILE`, `O_TRUNC`), not `O_PATH` or `O_DIRECT`. Home lends only if it is a regular
/// file; its close cannot fail then, and may go home behind the program.
pub fn lends_at_open(nr: i64, args: &[u64; 6]) -> bool {
    let flags = match nr {
        libc::SYS_open => args[1],
        libc::SYS_openat => args[2],
        _ => return false,
    } as i32;
    let refused = libc::O_CREAT | libc::O_TMPFILE | libc::O_TRUNC | libc::O_PATH | libc::O_DIRECT;
    flags & libc::O_ACCMODE == libc::O_RDONLY && flags & refused == 0
}

fn keeps_bytes(nr: i64, args: &[u64; 6]) -> bool {
    match nr {
        libc::SYS_lseek => true,
        libc::SYS_fcntl => matches!(args[1] as i32, libc::F_GETFL | libc::F_GETFD),
        _ => false,
    }
}

/// fcntl command `cmd` takes, tests or drops a record lock. What others wrote before they
/// released their lock is told by home's `Stale`, which comes before the lock call's reply
/// (see docs/forwarding.md).
fn is_lock(cmd: u64) -> bool {
    [
        libc::F_GETLK,
        libc::F_SETLK,
        libc::F_SETLKW,
        libc::F_OFD_GETLK,
        libc::F_OFD_SETLK,
        libc::F_OFD_SETLKW,
    ]
    .contains(&(cmd as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loan(start: u64, bytes: Vec<u8>, eof: bool, keep: bool) -> Loan {
        Loan {
            start,
            bytes,
            eof,
            keep,
        }
    }

    fn bytes(start: u64, n: usize) -> Vec<u8> {
        (0..n).map(|i| (start as usize + i) as u8).collect()
    }

    #[test]
    fn a_sequential_reader_is_served_from_one_fill_and_owes_what_it_consumed() {
        let mut cache = ReadCache::default();
        assert_eq!(
            cache.lookup(3, None, 4096),
            Lookup::Ask {
                from: None,
                ahead: FIRST_READ_FILL
            }
        );
        let first = cache.filled(3, None, 4096, loan(100, bytes(100, 10000), false, true));
        assert_eq!(first, bytes(100, 4096));
        cache.consumed(3, 4096);
        assert_eq!(cache.lookup(3, None, 4096), Lookup::Here(bytes(4196, 4096)));
        cache.consumed(3, 4096);
        // 10000 - 8192 bytes are left: not enough, and the file goes on.
        assert_eq!(
            cache.lookup(3, None, 4096),
            Lookup::Ask {
                from: None,
                ahead: 2 * FIRST_READ_FILL
            }
        );
        assert_eq!(cache.settle(), vec![(3, 8192)]);
        assert_eq!(cache.settle(), vec![]);
    }

    fn status() -> Vec<u8> {
        vec![7; std::mem::size_of::<libc::stat>()]
    }

    #[test]
    fn a_file_lent_at_its_open_serves_its_status_and_first_read_until_a_change() {
        let mut cache = ReadCache::default();
        cache.opened(5, status(), loan(0, bytes(0, 300), true, true));
        assert_eq!(cache.status(5), Some(status()));
        assert!(cache.closes_behind(5));
        assert_eq!(cache.lookup(5, None, 4096), Lookup::Here(bytes(0, 300)));
        cache.consumed(5, 300);
        assert_eq!(cache.lookup(5, None, 4096), Lookup::Here(Vec::new()));
        // A change at home: the status and the bytes go; the close may still go behind.
        cache.stale(&[5]);
        assert_eq!(cache.status(5), None);
        assert!(matches!(cache.lookup(5, None, 4096), Lookup::Ask { .. }));
        assert!(cache.closes_behind(5));
        assert_eq!(cache.settle(), vec![(5, 300)]);
    }

    #[test]
    fn a_loan_at_an_open_that_may_be_torn_keeps_nothing_and_a_dup_ends_the_close_behind() {
        let mut cache = ReadCache::default();
        cache.opened(5, status(), loan(0, bytes(0, 300), true, false));
        assert_eq!(cache.status(5), None);
        assert!(matches!(cache.lookup(5, None, 10), Lookup::Ask { .. }));
        cache.opened(6, status(), loan(0, bytes(0, 300), true, true));
        // A status of another size is not this architecture's: never written out.
        cache.opened(7, vec![0; 16], loan(0, bytes(0, 300), true, true));
        assert_eq!(cache.status(7), None);
        // dup shares the description: its close no longer ends it.
        cache.before_call(libc::SYS_dup, &[6, 0, 0, 0, 0, 0]);
        assert!(!cache.closes_behind(6));
        assert_eq!(cache.status(6), None);
        assert!(!cache.closes_behind(4));
    }

    #[test]
    fn only_read_only_opens_of_existing_files_are_lent_at_the_open() {
        let openat = |flags: i32| [libc::AT_FDCWD as u64, 0x1000, flags as u64, 0, 0, 0];
        assert!(lends_at_open(libc::SYS_openat, &openat(libc::O_RDONLY)));
        let cloexec = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY;
        assert!(lends_at_open(libc::SYS_openat, &openat(cloexec)));
        assert!(lends_at_open(libc::SYS_open, &[0x1000, 0, 0, 0, 0, 0]));
        for refused in [
            libc::O_WRONLY,
            libc::O_RDWR,
            libc::O_RDONLY | libc::O_CREAT,
            libc::O_RDONLY | libc::O_PATH,
            libc::O_RDONLY | libc::O_DIRECT,
            libc::O_RDWR | libc::O_TMPFILE,
        ] {
            assert!(
                !lends_at_open(libc::SYS_openat, &openat(refused)),
                "{refused:#o}"
            );
        }
        assert!(!lends_at_open(libc::SYS_openat2, &openat(libc::O_RDONLY)));
    }

    #[test]
    fn the_end_of_the_file_is_served_short_then_empty() {
        let mut cache = ReadCache::default();
        cache.lookup(3, None, 4096);
        cache.filled(3, None, 4096, loan(0, bytes(0, 5000), true, true));
        cache.consumed(3, 4096);
        assert_eq!(cache.lookup(3, None, 4096), Lookup::Here(bytes(4096, 904)));
        cache.consumed(3, 904);
        assert_eq!(cache.lookup(3, None, 4096), Lookup::Here(Vec::new()));
    }

    #[test]
    fn preads_are_served_where_bytes_are_held_and_stale_drops_them() {
        let mut cache = ReadCache::default();
        assert_eq!(
            cache.lookup(4, Some(8192), 4096),
            Lookup::Ask {
                from: None,
                ahead: FIRST_PREAD_FILL
            }
        );
        cache.filled(
            4,
            Some(8192),
            4096,
            loan(8192, bytes(8192, 65536), false, true),
        );
        assert_eq!(
            cache.lookup(4, Some(12288), 100),
            Lookup::Here(bytes(12288, 100))
        );
        assert!(matches!(cache.lookup(4, Some(0), 100), Lookup::Ask { .. }));
        cache.stale(&[4]);
        assert!(matches!(
            cache.lookup(4, Some(12288), 100),
            Lookup::Ask { .. }
        ));
        assert_eq!(cache.held, 0);
    }

    #[test]
    fn bytes_that_may_be_torn_serve_their_read_only() {
        let mut cache = ReadCache::default();
        let got = cache.filled(4, Some(0), 10, loan(0, bytes(0, 100), false, false));
        assert_eq!(got, bytes(0, 10));
        assert!(matches!(cache.lookup(4, Some(10), 10), Lookup::Ask { .. }));
    }

    #[test]
    fn a_call_on_a_descriptor_forgets_it_and_a_refusal_holds_for_reads() {
        let mut cache = ReadCache::default();
        cache.filled(3, None, 10, loan(0, bytes(0, 100), false, true));
        cache.consumed(3, 10);
        cache.before_call(libc::SYS_ioctl, &[3, 0, 0, 0, 0, 0]);
        assert_eq!(cache.settle(), vec![]);
        assert!(matches!(cache.lookup(3, None, 10), Lookup::Ask { .. }));
        cache.refused(5);
        cache.before_call(libc::SYS_read, &[5, 0, 0, 0, 0, 0]);
        assert_eq!(cache.lookup(5, None, 10), Lookup::Call);
        cache.before_call(libc::SYS_dup2, &[7, 5, 0, 0, 0, 0]);
        assert!(matches!(cache.lookup(5, None, 10), Lookup::Ask { .. }));
    }

    #[test]
    fn a_lock_or_a_seek_keeps_the_bytes_and_a_write_drops_them() {
        let mut cache = ReadCache::default();
        cache.filled(3, Some(0), 10, loan(0, bytes(0, 100), false, true));
        let setlkw = [3, libc::F_SETLKW as u64, 0x1000, 0, 0, 0];
        cache.before_call(libc::SYS_fcntl, &setlkw);
        cache.before_call(libc::SYS_lseek, &[3, 50, 0, 0, 0, 0]);
        assert_eq!(cache.lookup(3, Some(20), 10), Lookup::Here(bytes(20, 10)));
        // The offset moved: a read asks home where it is now.
        assert!(matches!(cache.lookup(3, None, 10), Lookup::Ask { .. }));
        cache.before_call(libc::SYS_pwrite64, &[3, 0x1000, 10, 20, 0, 0]);
        assert!(matches!(cache.lookup(3, Some(20), 10), Lookup::Ask { .. }));
        // Duplicating a descriptor shares its description: forgotten.
        cache.filled(3, Some(0), 10, loan(0, bytes(0, 100), false, true));
        cache.before_call(libc::SYS_fcntl, &[3, libc::F_DUPFD as u64, 0, 0, 0, 0]);
        assert!(matches!(cache.lookup(3, Some(20), 10), Lookup::Ask { .. }));
    }

    #[test]
    fn old_bytes_serve_nothing() {
        let extent = Extent {
            start: 0,
            bytes: bytes(0, 100),
            eof: true,
            filled: Instant::now(),
        };
        let later = extent.filled + LENT_FOR + Duration::from_millis(1);
        assert!(extent.read(0, 10, extent.filled).is_some());
        assert!(extent.read(0, 10, later).is_none());
    }

    #[test]
    fn at_most_max_held_bytes_are_kept() {
        let mut cache = ReadCache::default();
        let fills = (MAX_HELD as u64 / CHUNK) + 4;
        for i in 0..fills {
            let start = i * CHUNK;
            let held = vec![1; CHUNK as usize];
            cache.filled(3, Some(start), 1, loan(start, held, false, true));
        }
        assert!(cache.held <= MAX_HELD);
        assert_eq!(cache.held, cache.recount());
        // The newest is still there, the oldest went.
        assert!(matches!(
            cache.lookup(3, Some((fills - 1) * CHUNK), 1),
            Lookup::Here(_)
        ));
        assert!(matches!(cache.lookup(3, Some(0), 1), Lookup::Ask { .. }));
    }

    #[test]
    fn scattered_preads_ask_for_aligned_chunks_that_serve_reads_all_over_them() {
        let mut cache = ReadCache::default();
        let page = |n: u32| u64::from(n) * 7919 * 4096;
        for n in 1..SCATTERED {
            let asked = cache.lookup(5, Some(page(n)), 4096);
            assert_eq!(
                asked,
                Lookup::Ask {
                    from: None,
                    ahead: FIRST_PREAD_FILL
                },
                "miss {n}: a page, as the plain call would"
            );
            cache.filled(
                5,
                Some(page(n)),
                4096,
                loan(page(n), bytes(page(n), 4096), false, true),
            );
        }
        let at = page(SCATTERED) + 100;
        let chunk = at & !(CHUNK - 1);
        assert_eq!(
            cache.lookup(5, Some(at), 4096),
            Lookup::Ask {
                from: Some(chunk),
                ahead: CHUNK
            }
        );
        // The chunk begins before the read: the read gets its own bytes.
        let got = cache.filled(
            5,
            Some(at),
            4096,
            loan(chunk, bytes(chunk, CHUNK as usize), false, true),
        );
        assert_eq!(got, bytes(at, 4096));
        // Anywhere in the chunk is served here.
        assert_eq!(
            cache.lookup(5, Some(chunk), 10),
            Lookup::Here(bytes(chunk, 10))
        );
        let last = chunk + CHUNK - 10;
        assert_eq!(
            cache.lookup(5, Some(last), 10),
            Lookup::Here(bytes(last, 10))
        );
        // A read across the chunk's end asks from its own offset.
        assert!(matches!(
            cache.lookup(5, Some(last), 4096),
            Lookup::Ask { from: None, .. }
        ));
    }
}
