//! Home's half of the answers a remote keeps (`pathcache`): before a lookup it vouches for
//! runs, home watches every directory the lookup goes through and what it reaches, so that
//! any change that could alter the answer (an entry created, removed or renamed, attributes
//! or contents changed, a symbolic link replaced) is heard of, and the remote told to forget
//! the lookups that went through the name that changed (`ToGuest::ForgetPart`), and no
//! other: a build writes its objects beside the headers it looks up.
//!
//! The path is walked here, by the supervisor, as the kernel walks it for the shell: `..`
//! goes to the physical parent, symbolic links are followed wherever they lead (up to the
//! kernel's 40). A mount or unmount under a watched directory changes answers without an
//! event; system prefixes are not remounted under running programs.
//!
//! One watch serves every process of the job away, and keeps the answers it vouched for to
//! any of them (the job's book), by who asked: a process placed away later starts with
//! those its credentials would get (`ToGuest::Known`), instead of asking each again, and a
//! process away is told what the others' lookups found since, before the answer to each
//! lookup of its own. A compiler under `mosrun make -j8` looks up some 400 system paths,
//! the same for every compiler, and the first few start together. A change takes out of the
//! book what it takes from the remotes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::inotify::LazyInotify;
use crate::pathcache::{Answer, Forgotten, Key, Listing};
use crate::ptrace::Pid;
use crate::sysfiles::{self, SystemFiles};

/// What changes a lookup's answer that reached a file: its attributes and contents, or the
/// file itself removed or renamed. The kernel adds IN_IGNORED when a watch goes, and
/// IN_UNMOUNT.
const CHANGES: u32 = libc::IN_ATTRIB
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// What changes a lookup's answer that went through a directory: its entries and its own
/// attributes. Not the contents of the files in it: a file a lookup reached is watched
/// itself, and writes beside a header (a build's objects, a thousand jobs' outputs) would
/// wake the supervisor for nothing.
const DIRECTORY_CHANGES: u32 = libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR;

/// The kernel's limit of symbolic links followed in one lookup.
const MAX_LINKS: usize = 40;

/// Most watches the lookups of one job's processes away may hold together: past it, home
/// vouches for nothing new until the next change empties the watch.
const MAX_WATCHES: usize = 4096;
/// Most names, and bytes of names, of a directory listed for a remote: a header directory
/// fits; a larger one is not listed.
const MAX_LISTED: usize = 8192;
const MAX_LISTED_BYTES: usize = 256 << 10;

/// Most lookups vouched for at once (each keeps the names it went through): a remote that
/// looks up ever new names in the same directories makes home start anew past it.
const MAX_ARMED: usize = 1 << 16;

/// Most generations whose forgotten lookups are remembered, for the remotes not told them
/// yet: one further behind forgets everything.
const MAX_FORGOTTEN: usize = 256;

/// Most entries a book's order of arrival holds: an entry forgotten and vouched for again
/// is added again. Past it, nothing more is kept until the watch starts anew.
const MAX_ADDED: usize = 1 << 16;

/// Most bytes of paths, answers and listings the job's book keeps: a compiler's lookups (some
/// 50 KiB) fit many times over. Past it, nothing more is kept until the next change empties
/// it. A remote is told the book in one message, whose JSON spells each byte in up to four
/// characters: the whole book must stay well within a frame (`rmosix_image::MAX_FRAME`).
const MAX_BOOK_BYTES: usize = 512 << 10;

/// What a lookup's answer depends on besides the files: the credentials it is made with
/// (user and group ids, supplementary groups, effective capabilities), the root it starts
/// from and the mount namespace it walks, as the process's `/proc` entry shows them. Two
/// processes with the same get the same answers.
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Asker {
    ids: String,
    root: (u64, u64),
    mounts: (u64, u64),
}

impl Asker {
    /// Whether this asker's lookups walk paths as this supervisor's do: from the same root,
    /// in the same mount namespace. Home walks each path itself to watch what its answer
    /// depends on (`PathWatch::arm`): for a shell chrooted, or in a mount namespace of its
    /// own, it would watch other directories than those the answer came from.
    pub fn walks_as_here(&self) -> bool {
        static HERE: std::sync::OnceLock<Option<Asker>> = std::sync::OnceLock::new();
        let here = HERE.get_or_init(|| Asker::of(std::process::id() as Pid).ok());
        here.as_ref()
            .is_some_and(|here| here.root == self.root && here.mounts == self.mounts)
    }

    /// Who process `pid` asks as, now.
    pub fn of(pid: Pid) -> std::io::Result<Asker> {
        use std::os::unix::fs::MetadataExt;
        let status = fs::read_to_string(format!("/proc/{pid}/status"))?;
        let ids = status
            .lines()
            .filter(|l| {
                ["Uid:", "Gid:", "Groups:", "CapEff:"]
                    .iter()
                    .any(|k| l.starts_with(k))
            })
            .collect::<Vec<_>>()
            .join("\n");
        let identity = |path: String| fs::metadata(path).map(|m| (m.dev(), m.ino()));
        Ok(Asker {
            ids,
            root: identity(format!("/proc/{pid}/root"))?,
            mounts: identity(format!("/proc/{pid}/ns/mnt"))?,
        })
    }
}

/// The answers vouched for to one asker since the last change.
#[derive(Default)]
struct Book {
    answers: HashMap<Key, Answer>,
    listings: HashMap<String, Listing>,
    /// What came in, in order, with the process whose lookup found it: a remote already
    /// told the first entries is told the rest (`PathWatch::known_since`).
    added: Vec<(Added, Pid)>,
}

/// An entry of a book.
enum Added {
    Answer(Key),
    Listing(String),
}

/// Part of a book (`PathWatch::known_since`).
#[derive(Default, Debug, PartialEq)]
pub struct Known {
    pub answers: Vec<(Key, Answer)>,
    pub listings: Vec<Listing>,
    /// How many entries the book holds.
    pub upto: usize,
}

/// How far the watch has gone: `epoch` counts the times it forgot everything (the book
/// emptied with it), `generation` every change heard, whole or in part.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stamp {
    pub epoch: u64,
    pub generation: u64,
}

/// A lookup vouched for: what its answer depends on.
struct Armed {
    /// The generation it was armed in.
    since: u64,
    /// The last generation that changed the entries of the directory it reached or found a
    /// name missing in: its status and its listing hold only from then.
    entries_since: u64,
    /// The directory a name was missing in, if one was.
    missing_in: Option<PathBuf>,
    /// Every name it looked up (`/`, then each directory joined with the name).
    steps: Vec<PathBuf>,
    /// The directory whose entries its answer tells of: the one it reached, or the one a
    /// name was missing in.
    entries_of: Option<PathBuf>,
    /// Whether an answer telling of those entries (a directory's status, a listing) was
    /// vouched for since they last changed: only then does their next change go to the
    /// remotes. A thousand jobs' outputs made beside the name they look for would
    /// otherwise tell each of them a thousand times what it no longer holds.
    entries_told: bool,
}

/// The watches behind the answers the job's remotes keep, and the book of those answers.
#[derive(Default)]
pub struct PathWatch {
    /// Made at the first vouch.
    inotify: LazyInotify,
    /// What is watched, by path, with its watch descriptor.
    watched: HashMap<PathBuf, i32>,
    /// The paths each watch descriptor was added for (one inode may have several).
    paths_of: HashMap<i32, Vec<PathBuf>>,
    /// Lookups vouched for and not forgotten since, by path.
    armed: HashMap<Vec<u8>, Armed>,
    /// The armed lookups that looked up each name: a change of that entry, or of what it
    /// names, forgets them.
    through: HashMap<PathBuf, HashSet<Vec<u8>>>,
    /// The armed lookups whose answers tell of each directory's entries.
    entries: HashMap<PathBuf, HashSet<Vec<u8>>>,
    /// The watched directories whose entries changed while watched: no longer listed for
    /// the remotes, whose listings each change would take back (a build's output directory,
    /// where a compiler looks for a precompiled header). Quiet directories (headers) are.
    busy: HashSet<PathBuf>,
    stamp: Stamp,
    /// What each generation since the last epoch forgot, the latest `MAX_FORGOTTEN`: how a
    /// remote told up to an earlier one is told what it must forget.
    forgotten: VecDeque<(u64, Forgotten)>,
    /// The answers vouched for, by who asked.
    books: HashMap<Asker, Book>,
    /// Bytes of the answers and listings in `books`.
    book_bytes: usize,
}

impl PathWatch {
    /// Watch what a lookup of absolute `path` depends on, before it runs: the generation
    /// its answer may be vouched for in ([`PathWatch::holds`]). None: it cannot be watched,
    /// and its answer must not be vouched for: the walk reaches a file system whose changes
    /// inotify may not hear, or a path with `..` components leaves `system`'s prefixes (a
    /// symbolic link before a `..` may take it where nothing written says).
    pub fn arm(&mut self, path: &[u8], system: &SystemFiles) -> Option<u64> {
        if self.armed.contains_key(path) {
            return Some(self.stamp.generation);
        }
        if !path.starts_with(b"/") {
            return None;
        }
        if self.watched.len() >= MAX_WATCHES || self.armed.len() >= MAX_ARMED {
            // Watches and lookups are kept while nothing they depend on changes: start
            // anew rather than stop vouching for good, or grow without bound.
            self.forget_all();
        }
        let inotify = match self.inotify.get_or_make() {
            Ok(inotify) => inotify,
            Err(err) => {
                debug!(%err, "no inotify: no lookup is vouched for");
                return None;
            }
        };
        let walk = walk(Path::new(OsStr::from_bytes(path)));
        let within = |went: &PathBuf| {
            went.to_str()
                .is_some_and(|p| system.covers_lookup(p) || system.leads_to_a_prefix(p))
        };
        if sysfiles::has_dot_dot(path) && !walk.went.iter().all(within) {
            return None;
        }
        for watched in &walk.went {
            if self.watched.contains_key(watched) {
                continue;
            }
            let c_path = CString::new(watched.as_os_str().as_bytes()).ok()?;
            if !changes_heard(&c_path) {
                debug!(path = %watched.display(), "changes there may go unheard: not vouched for");
                return None;
            }
            // Watched as a directory only if it is one still: what the walk found a
            // directory may have been replaced since by a file, whose writes must be heard.
            let wd = match inotify.watch(&c_path, DIRECTORY_CHANGES) {
                Err(err) if err.raw_os_error() == Some(libc::ENOTDIR) => {
                    inotify.watch(&c_path, CHANGES)
                }
                done => done,
            };
            let wd = match wd {
                Ok(wd) => wd,
                Err(err) => {
                    debug!(path = %watched.display(), %err, "cannot watch: not vouched for");
                    return None;
                }
            };
            self.watched.insert(watched.clone(), wd);
            self.paths_of.entry(wd).or_default().push(watched.clone());
        }
        for step in &walk.steps {
            let lookups = self.through.entry(step.clone()).or_default();
            lookups.insert(path.to_vec());
        }
        let entries_of = walk.missing_in.clone().or(walk.reached_dir);
        if let Some(dir) = &entries_of {
            self.entries
                .entry(dir.clone())
                .or_default()
                .insert(path.to_vec());
        }
        let generation = self.stamp.generation;
        let armed = Armed {
            since: generation,
            entries_since: generation,
            missing_in: walk.missing_in,
            steps: walk.steps,
            entries_of,
            entries_told: false,
        };
        self.armed.insert(path.to_vec(), armed);
        Some(generation)
    }

    /// Whether the answer to a lookup of `path` armed in generation `since` still holds:
    /// nothing it depends on changed since. `entries`: the answer tells of a directory's
    /// entries too (the status of a directory it reached, or the listing of the one a name
    /// was missing in).
    pub fn holds(&self, path: &[u8], since: u64, entries: bool) -> bool {
        self.armed
            .get(path)
            .is_some_and(|armed| armed.since <= since && (!entries || armed.entries_since <= since))
    }

    /// An answer to the lookup of `path` that tells of its directory's entries was vouched
    /// for: their next change must take it back.
    pub fn told_entries(&mut self, path: &[u8]) {
        if let Some(armed) = self.armed.get_mut(path) {
            armed.entries_told = true;
        }
    }

    /// How far the watch has gone.
    pub fn stamp(&self) -> Stamp {
        self.stamp
    }

    /// How many changes were heard so far, whole or in part.
    pub fn generation(&self) -> u64 {
        self.stamp.generation
    }

    /// What the generations after `generation` of this epoch forgot, together. None: they
    /// are no longer all known; the remote must forget everything.
    pub fn forgotten_since(&self, generation: u64) -> Option<Forgotten> {
        if generation >= self.stamp.generation {
            return Some(Forgotten::default());
        }
        let oldest = self.forgotten.front().map_or(u64::MAX, |(at, _)| *at);
        if oldest > generation + 1 {
            return None;
        }
        let mut all = Forgotten::default();
        for (_, part) in self.forgotten.iter().filter(|(at, _)| *at > generation) {
            all.add(part);
        }
        Some(all)
    }

    /// Read what changed since the last time: the lookups that went through a name that
    /// changed are forgotten, with their answers in the book; a lookup that reached a
    /// directory, or found a name missing in it, whose entries changed no longer holds for
    /// its status and listing. Whether anything was forgotten. Events lost, or a file
    /// system unmounted, forget everything.
    pub fn changed(&mut self) -> bool {
        let Some(inotify) = self.inotify.get() else {
            return false;
        };
        let Some(events) = inotify.events() else {
            // Events may be lost: anything may have changed.
            self.forget_all();
            return true;
        };
        let generation = self.stamp.generation + 1;
        let mut forgotten = Forgotten::default();
        for event in events {
            if event.mask & libc::IN_UNMOUNT != 0 {
                self.forget_all();
                return true;
            }
            let Some(paths) = self.paths_of.get(&event.wd).cloned() else {
                // A watch removed: what it served was forgotten then.
                continue;
            };
            let entry_changed = event.mask
                & (libc::IN_CREATE | libc::IN_DELETE | libc::IN_MOVED_FROM | libc::IN_MOVED_TO)
                != 0;
            let self_gone = event.name.is_empty()
                && event.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF | libc::IN_IGNORED) != 0;
            for at in paths {
                let changed = if event.name.is_empty() {
                    at.clone()
                } else {
                    at.join(&event.name)
                };
                if entry_changed {
                    self.busy.insert(at.clone());
                    for lookup in self.entries.get(&at).into_iter().flatten() {
                        let Some(armed) = self.armed.get_mut(lookup) else {
                            continue;
                        };
                        armed.entries_since = generation;
                        if !std::mem::take(&mut armed.entries_told) {
                            continue;
                        }
                        // A name missing stays missing (its own entry is a step); the
                        // directory's listing goes.
                        if armed.missing_in.as_ref() == Some(&at) {
                            forgotten.listings.insert(at.to_string_lossy().into_owned());
                        } else {
                            forgotten.stats_of.insert(lossy(lookup));
                        }
                    }
                }
                for lookup in self.through.get(&changed).cloned().into_iter().flatten() {
                    // A listing stands on the way to its directory as much as on its entries.
                    if let Some(dir) = self.disarm(&lookup).and_then(|armed| armed.missing_in) {
                        forgotten
                            .listings
                            .insert(dir.to_string_lossy().into_owned());
                    }
                    forgotten.paths.insert(lossy(&lookup));
                }
                // What the name held is gone or replaced: whatever is there next is
                // watched anew when a lookup reaches it.
                if entry_changed || self_gone {
                    self.unwatch_under(&changed);
                }
            }
        }
        if forgotten.is_empty() {
            return false;
        }
        self.forget_in_books(&forgotten);
        self.stamp.generation = generation;
        self.forgotten.push_back((generation, forgotten));
        if self.forgotten.len() > MAX_FORGOTTEN {
            self.forgotten.pop_front();
        }
        true
    }

    /// Stop watching `path` and everything watched under it.
    fn unwatch_under(&mut self, path: &Path) {
        if !self.watched.contains_key(path) {
            return;
        }
        let under: Vec<PathBuf> = (self.watched.keys())
            .filter(|watched| watched.starts_with(path))
            .cloned()
            .collect();
        for watched in under {
            self.busy.remove(&watched);
            let Some(wd) = self.watched.remove(&watched) else {
                continue;
            };
            let Some(paths) = self.paths_of.get_mut(&wd) else {
                continue;
            };
            paths.retain(|p| *p != watched);
            if paths.is_empty() {
                self.paths_of.remove(&wd);
                if let Some(inotify) = self.inotify.get() {
                    inotify.unwatch(wd);
                }
            }
        }
    }

    /// Stop vouching for `lookup`: nothing it depended on keeps it any more. What it was.
    fn disarm(&mut self, lookup: &[u8]) -> Option<Armed> {
        let armed = self.armed.remove(lookup)?;
        for step in &armed.steps {
            if let Some(lookups) = self.through.get_mut(step) {
                lookups.remove(lookup);
                if lookups.is_empty() {
                    self.through.remove(step);
                }
            }
        }
        if let Some(dir) = &armed.entries_of
            && let Some(lookups) = self.entries.get_mut(dir)
        {
            lookups.remove(lookup);
            if lookups.is_empty() {
                self.entries.remove(dir);
            }
        }
        Some(armed)
    }

    /// Take out of every book what `forgotten` takes.
    fn forget_in_books(&mut self, forgotten: &Forgotten) {
        let mut freed = 0;
        for book in self.books.values_mut() {
            book.answers.retain(|key, answer| {
                let keep = !key.forgotten_in(forgotten);
                if !keep {
                    freed += key.path().len() + answer.bytes();
                }
                keep
            });
            book.listings.retain(|dir, listing| {
                let keep = !forgotten.listings.contains(dir);
                if !keep {
                    freed += listing.bytes();
                }
                keep
            });
        }
        self.book_bytes = self.book_bytes.saturating_sub(freed);
    }

    /// Forget everything: the remotes forget every answer, nothing needs watching any more,
    /// and the next vouch starts anew.
    fn forget_all(&mut self) {
        self.inotify.reset();
        self.watched.clear();
        self.paths_of.clear();
        self.armed.clear();
        self.through.clear();
        self.entries.clear();
        self.busy.clear();
        self.books.clear();
        self.book_bytes = 0;
        self.forgotten.clear();
        self.stamp.epoch += 1;
        self.stamp.generation += 1;
    }

    /// Keep `answer` to `asker`'s lookup `key`, vouched for (with `listing` if a name was
    /// missing) to process `by`, for the job's other remotes.
    pub fn record(
        &mut self,
        asker: &Asker,
        by: Pid,
        key: Key,
        answer: Answer,
        listing: Option<Listing>,
    ) {
        let bytes = key.path().len() + answer.bytes() + listing.as_ref().map_or(0, Listing::bytes);
        if self.book_bytes + bytes > MAX_BOOK_BYTES {
            return;
        }
        let book = self.books.entry(asker.clone()).or_default();
        if book.added.len() >= MAX_ADDED {
            return;
        }
        self.book_bytes += bytes;
        if book.answers.insert(key.clone(), answer).is_none() {
            book.added.push((Added::Answer(key), by));
        }
        if let Some(listing) = listing {
            let dir = listing.dir.clone();
            if book.listings.insert(dir.clone(), listing).is_none() {
                book.added.push((Added::Listing(dir), by));
            }
        }
    }

    /// The answers and listings vouched for to `asker` in this epoch and not forgotten since,
    /// from its book's entry `since` on, but those found by process `except`'s own lookups;
    /// and how many entries the book holds, where the next call may start.
    pub fn known_since(&self, asker: &Asker, since: usize, except: Option<Pid>) -> Known {
        let mut known = Known::default();
        let Some(book) = self.books.get(asker) else {
            return known;
        };
        for (added, by) in book.added.iter().skip(since) {
            if Some(*by) == except {
                continue;
            }
            // An entry forgotten and vouched for again is in the order twice: told once.
            match added {
                Added::Answer(key) => {
                    if let Some(answer) = book.answers.get(key)
                        && !known.answers.iter().any(|(told, _)| told == key)
                    {
                        known.answers.push((key.clone(), answer.clone()));
                    }
                }
                Added::Listing(dir) => {
                    if let Some(listing) = book.listings.get(dir)
                        && !known.listings.contains(listing)
                    {
                        known.listings.push(listing.clone());
                    }
                }
            }
        }
        known.upto = book.added.len();
        known
    }

    /// The names in the directory where a lookup of `path`, vouched for and found missing,
    /// found a name missing, as its walk when it was armed found it (a change since then
    /// keeps the answer from being vouched for): only where the path leads there by itself,
    /// with no symbolic link on the way, so that the directory's path is the start of
    /// `path` at the remote too; and only a directory anyone may list, as home reads it
    /// with its own rights, not the asker's (a process that dropped root's must not learn
    /// the names of a directory it may only search). None: no such directory, or too
    /// large, or not readable by all.
    pub fn listing(&self, path: &[u8]) -> Option<Listing> {
        use std::os::unix::fs::PermissionsExt;
        let dir = self.armed.get(path)?.missing_in.as_ref()?;
        if self.busy.contains(dir) {
            return None;
        }
        let listable_by_all = 0o005;
        if fs::metadata(dir).ok()?.permissions().mode() & listable_by_all != listable_by_all {
            return None;
        }
        let dir_text = dir.to_str()?;
        let starts = std::str::from_utf8(path).ok()?.strip_prefix(dir_text)?;
        if !(starts.starts_with('/') || dir_text == "/") {
            return None;
        }
        let mut names = Vec::new();
        let mut bytes = 0;
        for entry in fs::read_dir(dir).ok()? {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            bytes += name.len();
            names.push(name);
            if names.len() > MAX_LISTED || bytes > MAX_LISTED_BYTES {
                return None;
            }
        }
        Some(Listing {
            dir: dir_text.to_owned(),
            names,
        })
    }

    /// The descriptor to poll for changes, once something is watched.
    pub fn fd(&self) -> Option<RawFd> {
        self.inotify.get().map(|inotify| inotify.as_raw_fd())
    }
}

/// A path as a remote's keys spell it.
fn lossy(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// Whether every change of the file system `path` lies on is heard by inotify here: a local
/// one, where every change goes through this kernel. A network or FUSE file system changes
/// under it unheard, and the kernel's own trees change without events.
fn changes_heard(path: &CStr) -> bool {
    const LOCAL: &[i64] = &[
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x8584_58F6, // ramfs
        0x794C_7630, // overlayfs
        0xF2F5_2010, // f2fs
        0x2FC1_2FC1, // zfs
    ];
    // SAFETY: struct statfs is plain data, for which all zeroes is a value.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: statfs fills a live struct for a NUL-terminated path.
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return false;
    }
    LOCAL.contains(&(fs.f_type as i64))
}

/// A lookup's way, as the kernel walks it.
struct Walk {
    /// `/`, each directory, the targets of symbolic links, and what it reaches if it exists.
    went: Vec<PathBuf>,
    /// `/` and every name looked up, joined to the directory it was looked up in: links and
    /// names missing too.
    steps: Vec<PathBuf>,
    /// The directory a name was missing in, if one was.
    missing_in: Option<PathBuf>,
    /// The directory it reached, if it reached one.
    reached_dir: Option<PathBuf>,
}

/// The way of a lookup of absolute `path`. Where a name is missing or not a directory the
/// walk ends: the answer is an error or that entry, both told by its directory's watch.
fn walk(path: &Path) -> Walk {
    let mut walked = vec![PathBuf::from("/")];
    let mut steps = vec![PathBuf::from("/")];
    let mut missing_in = None;
    let mut reached_dir = Some(PathBuf::from("/"));
    let mut at = PathBuf::from("/");
    let mut names: VecDeque<OsString> = components(path).collect();
    let mut links = 0;
    while let Some(name) = names.pop_front() {
        if name == ".." {
            at.pop();
            reached_dir = Some(at.clone());
            continue;
        }
        let next = at.join(&name);
        steps.push(next.clone());
        reached_dir = None;
        match fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                let Ok(target) = fs::read_link(&next) else {
                    break;
                };
                if links > MAX_LINKS {
                    break;
                }
                if target.is_absolute() {
                    at = PathBuf::from("/");
                }
                for name in components(&target).rev() {
                    names.push_front(name);
                }
                // A link to `/` or `.` names the directory the walk is at.
                if names.is_empty() {
                    reached_dir = Some(at.clone());
                }
            }
            Ok(meta) => {
                walked.push(next.clone());
                if !meta.is_dir() {
                    break;
                }
                reached_dir = Some(next.clone());
                at = next;
            }
            Err(err) => {
                if err.kind() == std::io::ErrorKind::NotFound {
                    missing_in = Some(at);
                }
                break;
            }
        }
    }
    Walk {
        went: walked,
        steps,
        missing_in,
        reached_dir,
    }
}

/// The names of `path`, without `/` and `.`.
fn components(path: &Path) -> impl DoubleEndedIterator<Item = OsString> + '_ {
    path.as_os_str()
        .as_bytes()
        .split(|&b| b == b'/')
        .filter(|name| !name.is_empty() && *name != b".")
        .map(|name| OsStr::from_bytes(name).to_owned())
}

#[cfg(test)]
mod tests {
    use std::fs::Permissions;
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    /// A fresh directory, removed when the guard goes, and its canonical path, holding
    /// `entries`: a name ending in `/` a directory, any other a file (its directories made).
    fn tree(entries: &[&str]) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for entry in entries {
            let path = root.join(entry);
            if entry.ends_with('/') {
                fs::create_dir_all(&path).unwrap();
            } else {
                fs::create_dir_all(path.parent().unwrap()).unwrap();
                fs::write(&path, "a").unwrap();
            }
        }
        (dir, root)
    }

    #[test]
    fn a_walk_goes_through_links_and_parents_as_the_kernel_does() {
        let (_dir, root) = tree(&["real/include/a.h"]);
        symlink("real", root.join("link")).unwrap();
        symlink(root.join("real/include"), root.join("abs")).unwrap();

        let via_link = walk(&root.join("link/include/a.h")).went;
        assert!(
            via_link.contains(&root.join("real/include")),
            "{via_link:?}"
        );
        assert!(via_link.contains(&root.join("real/include/a.h")));
        assert!(
            !via_link.contains(&root.join("link")),
            "a link is told by its directory"
        );

        let via_parent = walk(&root.join("abs/../include/a.h")).went;
        assert!(
            via_parent.contains(&root.join("real/include/a.h")),
            "{via_parent:?}"
        );

        let missing = walk(&root.join("real/nothing/a.h"));
        assert_eq!(missing.went.last(), Some(&root.join("real")));
        assert_eq!(missing.missing_in, Some(root.join("real")));
        assert_eq!(walk(&root.join("real/include/a.h")).missing_in, None);
    }

    #[test]
    fn a_path_with_dot_dot_is_armed_only_where_its_walk_stays_under_the_prefixes() {
        let (_dir, root) = tree(&["sys/lib/gcc/", "sys/include/", "out/deep/"]);
        // Written under the prefix, but the link takes `..` outside it.
        symlink(root.join("out/deep"), root.join("sys/lib/away")).unwrap();
        let system = SystemFiles::listed(&[format!("{}/sys/", root.display())]);
        let bytes = |p: PathBuf| p.as_os_str().as_bytes().to_vec();
        let mut watch = PathWatch::default();
        let within = bytes(root.join("sys/lib/gcc/../../include/a.h"));
        assert!(system.covers_lookup(std::str::from_utf8(&within).unwrap()));
        assert!(watch.arm(&within, &system).is_some());
        let away = bytes(root.join("sys/lib/away/../include/a.h"));
        assert!(system.covers_lookup(std::str::from_utf8(&away).unwrap()));
        assert!(watch.arm(&away, &system).is_none(), "its walk went to out/");
        // Without `..`, a link's target is watched wherever it is, as before.
        let plain = bytes(root.join("sys/lib/away/a.h"));
        assert!(watch.arm(&plain, &system).is_some());
    }

    #[test]
    fn a_change_of_a_name_a_vouched_lookup_went_through_is_heard_and_only_that() {
        let (_dir, root) = tree(&["elsewhere/", "real/include/a.h"]);
        symlink("real", root.join("link")).unwrap();
        let bytes = |p: &Path| p.as_os_str().as_bytes().to_vec();
        let path = bytes(&root.join("link/include/a.h"));
        let include = bytes(&root.join("real/include"));
        let system = SystemFiles::default();
        let mut watch = PathWatch::default();
        let chmod = |mode| {
            fs::set_permissions(root.join("real/include"), Permissions::from_mode(mode)).unwrap()
        };
        let on_the_way: [&dyn Fn(); 4] = [
            &|| fs::write(root.join("real/include/a.h"), "changed").unwrap(),
            &|| chmod(0o700),
            &|| fs::rename(root.join("real"), root.join("moved")).unwrap(),
            &|| {
                fs::remove_file(root.join("link")).unwrap();
                symlink("real", root.join("link")).unwrap();
            },
        ];
        for (n, change) in on_the_way.iter().enumerate() {
            let armed = watch.arm(&path, &system).expect("armed");
            assert!(watch.holds(&path, armed, false));
            change();
            assert!(watch.changed(), "change {n} is heard");
            assert!(
                !watch.holds(&path, armed, false),
                "change {n} is not vouched for"
            );
            if n == 2 {
                fs::rename(root.join("moved"), root.join("real")).unwrap();
            }
            watch.changed();
        }
        // Changes of other names, even in the directories the lookup went through.
        let armed = watch.arm(&path, &system).expect("armed");
        let armed_include = watch.arm(&include, &system).expect("armed");
        fs::write(root.join("real/include/b.h"), "new").unwrap();
        symlink("real", root.join("link2")).unwrap();
        fs::write(root.join("elsewhere/c.h"), "c").unwrap();
        watch.changed();
        assert!(watch.holds(&path, armed, false), "other names");
        // A new name changed the directory's entries: its status, not its way.
        assert!(!watch.holds(&include, armed_include, true));
        assert!(watch.holds(&include, armed_include, false));
        chmod(0o755);
    }

    #[test]
    fn the_book_gives_each_asker_its_own_answers_until_a_change_of_what_they_depend_on() {
        let (_dir, root) = tree(&["include/a.h"]);
        let path = root.join("include/a.h").to_str().unwrap().to_owned();
        let key = Key::of(libc::SYS_access, &[0, 0, 4, 0, 0, 0], path.clone()).unwrap();
        let answer = Answer::Result { ret: 0, out: None };
        let me = Asker::of(std::process::id() as Pid).unwrap();
        // Another user asks as another asker.
        let mut other = std::process::Command::new("sleep");
        std::os::unix::process::CommandExt::uid(&mut other, 65534);
        let mut other = other.arg("5").spawn().unwrap();
        let them = Asker::of(other.id() as Pid).unwrap();
        other.kill().unwrap();
        other.wait().unwrap();
        assert_ne!(me, them);
        assert_eq!(me, Asker::of(std::process::id() as Pid).unwrap());

        let mut watch = PathWatch::default();
        let armed = watch.arm(path.as_bytes(), &SystemFiles::default());
        watch.record(&me, 7, key.clone(), answer.clone(), None);
        assert!(watch.holds(path.as_bytes(), armed.expect("armed"), false));
        let known = |answers| Known {
            answers,
            listings: Vec::new(),
            upto: 1,
        };
        assert_eq!(
            watch.known_since(&me, 0, None),
            known(vec![(key.clone(), answer.clone())])
        );
        assert_eq!(
            watch.known_since(&me, 0, Some(7)),
            known(Vec::new()),
            "its own"
        );
        assert_eq!(watch.known_since(&me, 1, None), known(Vec::new()), "told");
        assert_eq!(watch.known_since(&them, 0, None), Known::default());
        // Another name of the same directory: the answer holds.
        let stamp = watch.stamp();
        fs::write(root.join("include/b.h"), "b").unwrap();
        assert!(!watch.changed());
        assert_eq!(watch.stamp(), stamp);
        assert_eq!(watch.known_since(&me, 0, None).answers.len(), 1, "kept");
        fs::write(&path, "changed").unwrap();
        assert!(watch.changed());
        assert_eq!(watch.known_since(&me, 0, None).answers, [], "forgotten");
        let part = watch.forgotten_since(stamp.generation).expect("in the log");
        assert_eq!(part.paths, [path.clone()].into());
        assert_eq!(watch.stamp().epoch, stamp.epoch, "in part");
    }

    #[test]
    fn a_process_chrooted_elsewhere_does_not_walk_paths_as_home_does() {
        let me = Asker::of(std::process::id() as Pid).unwrap();
        assert!(me.walks_as_here());
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let root = CString::new(dir.path().as_os_str().as_bytes()).unwrap();
        // A child that chroots into an empty directory and waits there.
        // SAFETY: the child calls only async-signal-safe functions, on memory made before.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: chroot, pause and _exit in the forked child.
            unsafe {
                libc::chroot(root.as_ptr());
                libc::pause();
                libc::_exit(0);
            }
        }
        let asker = (0..500)
            .find_map(|_| {
                let asker = Asker::of(pid).ok()?;
                if asker.root == me.root {
                    std::thread::sleep(std::time::Duration::from_millis(2));
                    return None;
                }
                Some(asker)
            })
            .expect("the child chrooted");
        assert!(!asker.walks_as_here());
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
    }

    #[test]
    fn a_listing_goes_with_the_way_to_its_directory_as_with_its_entries() {
        let (_dir, root) = tree(&["a/include/"]);
        let missing = root.join("a/include/x.h");
        let mut watch = PathWatch::default();
        let armed = watch.arm(missing.as_os_str().as_bytes(), &SystemFiles::default());
        assert!(armed.is_some());
        let listed = root.join("a/include").to_str().unwrap().to_owned();
        assert_eq!(
            watch.listing(missing.as_os_str().as_bytes()).map(|l| l.dir),
            Some(listed.clone())
        );
        // The directory moved away, and another made in its place holding the name.
        let stamp = watch.stamp();
        fs::rename(root.join("a/include"), root.join("a/moved")).unwrap();
        fs::create_dir(root.join("a/include")).unwrap();
        fs::write(&missing, "x").unwrap();
        assert!(watch.changed());
        let part = watch.forgotten_since(stamp.generation).expect("in the log");
        assert!(part.listings.contains(&listed), "{part:?}");
        assert!(part.paths.contains(missing.to_str().unwrap()));
    }

    #[test]
    fn a_busy_directory_is_told_forgotten_once_per_answer_and_listed_no_more() {
        let (_dir, root) = tree(&["out/log"]);
        let missing = root.join("out/job.stop");
        let missing = missing.as_os_str().as_bytes();
        let listed = root.join("out").to_str().unwrap().to_owned();
        let mut watch = PathWatch::default();
        assert!(watch.arm(missing, &SystemFiles::default()).is_some());
        assert!(
            watch.listing(missing).is_some(),
            "a quiet directory is listed"
        );
        watch.told_entries(missing);
        // Writes beside the name, into a file no lookup reached, do not wake the watch (its
        // other directories, `/tmp` among them, hear other tests).
        fs::write(root.join("out/log"), "ready").unwrap();
        let out_wd = watch.watched[&root.join("out")];
        let inotify = watch.inotify.get().expect("watching");
        let events = inotify.events().expect("events");
        assert!(
            !events.iter().any(|event| event.wd == out_wd),
            "a write in a watched directory was heard: {events:?}"
        );
        // A new name takes back the listing told, once.
        let stamp = watch.stamp();
        fs::write(root.join("out/out.1"), "").unwrap();
        assert!(watch.changed());
        let part = watch.forgotten_since(stamp.generation).expect("in the log");
        assert_eq!(part.listings, [listed.clone()].into());
        assert!(
            part.paths.is_empty() && part.stats_of.is_empty(),
            "{part:?}"
        );
        // Nothing told since: the next new names tell nothing, and it is listed no more.
        fs::write(root.join("out/out.2"), "").unwrap();
        assert!(!watch.changed(), "nothing was told since");
        assert_eq!(
            watch.listing(missing),
            None,
            "a busy directory is not listed"
        );
        // The name's own answer holds throughout: it is still missing.
        assert!(watch.holds(missing, stamp.generation, false));
        // The directory's status, told, is taken back at its next change.
        let out = root.join("out");
        let out = out.as_os_str().as_bytes();
        let armed = watch.arm(out, &SystemFiles::default()).expect("armed");
        watch.told_entries(out);
        fs::write(root.join("out/out.3"), "").unwrap();
        assert!(watch.changed());
        let part = watch.forgotten_since(armed).expect("in the log");
        assert_eq!(part.stats_of, [listed].into());
    }

    #[test]
    fn a_full_book_told_in_one_message_fits_in_a_frame() {
        let asker = Asker::of(std::process::id() as Pid).unwrap();
        let mut watch = PathWatch::default();
        // Every byte of every answer spelled "255,": the longest JSON a book can make.
        for n in 0.. {
            let path = format!("/usr/include/{n:06}.h");
            let key = Key::of(libc::SYS_newfstatat, &[0; 6], path).unwrap();
            let answer = Answer::Result {
                ret: -1,
                out: Some(vec![255; 144]),
            };
            let before = watch.book_bytes;
            watch.record(&asker, 1, key, answer, None);
            if watch.book_bytes == before {
                break;
            }
        }
        let Known {
            answers, listings, ..
        } = watch.known_since(&asker, 0, None);
        let told = crate::session::ToGuest::Known { answers, listings };
        let mut message = Vec::new();
        rmosix_image::write_message(&mut message, &told).unwrap();
        assert!(
            message.len() < rmosix_image::MAX_FRAME / 2,
            "{} bytes",
            message.len()
        );
    }

    #[test]
    fn a_missing_name_lists_its_directory_only_where_the_path_leads_there_itself() {
        let (_dir, root) = tree(&["real/include/a.h"]);
        symlink("real", root.join("link")).unwrap();
        let mut watch = PathWatch::default();
        let bytes = |p: &Path| p.as_os_str().as_bytes().to_vec();
        let (missing, via_link, there) = (
            bytes(&root.join("real/include/b.h")),
            bytes(&root.join("link/include/b.h")),
            bytes(&root.join("real/include/a.h")),
        );
        for path in [&missing, &via_link, &there] {
            assert!(watch.arm(path, &SystemFiles::default()).is_some());
        }
        let listing = watch.listing(&missing).expect("a listing");
        assert_eq!(listing.dir, root.join("real/include").to_str().unwrap());
        assert_eq!(listing.names, ["a.h"]);
        assert_eq!(watch.listing(&via_link), None, "a link on the way");
        assert_eq!(watch.listing(&there), None, "nothing missing");
        assert_eq!(watch.listing(&bytes(&root.join("never-armed"))), None);
        // A directory others may only search is not listed: home reads it with its rights.
        let include = root.join("real/include");
        fs::set_permissions(&include, Permissions::from_mode(0o711)).unwrap();
        assert_eq!(watch.listing(&missing), None, "not listable by all");
    }
}
