//! Home's half of the answers a remote keeps (`pathcache`): before a lookup it vouches for
//! runs, home watches every directory the lookup goes through and what it reaches, so that
//! any change that could alter the answer (an entry created, removed or renamed, attributes
//! or contents changed, a symbolic link replaced) is heard of, and the remote told to forget
//! (`ToGuest::Forget`).
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
//! the same for every compiler, and the first few start together. A change anywhere watched
//! empties the book, and every remote forgets.

use std::collections::{HashMap, HashSet, VecDeque};
use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tracing::debug;

use crate::inotify::Inotify;
use crate::pathcache::{Answer, Key, Listing};
use crate::ptrace::Pid;
use crate::sysfiles::{self, SystemFiles};

/// What changes a lookup's answer, on a directory (its entries, their attributes and
/// contents) or a file (its attributes and contents). The kernel adds IN_IGNORED when a
/// watch goes, and IN_UNMOUNT.
const CHANGES: u32 = libc::IN_ATTRIB
    | libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// The kernel's limit of symbolic links followed in one lookup.
const MAX_LINKS: usize = 40;

/// Most watches the lookups of one job's processes away may hold together: past it, home
/// vouches for nothing new until the next change empties the watch.
const MAX_WATCHES: usize = 4096;
/// Most names, and bytes of names, of a directory listed for a remote: a header directory
/// fits; a larger one is not listed.
const MAX_LISTED: usize = 8192;
const MAX_LISTED_BYTES: usize = 256 << 10;

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

/// The watches behind the answers the job's remotes keep, and the book of those answers.
#[derive(Default)]
pub struct PathWatch {
    /// Made at the first vouch.
    inotify: Option<Inotify>,
    /// Paths watched since the last change.
    watched: HashSet<PathBuf>,
    /// Lookups vouched for since the last change, whose paths are all watched, with the
    /// directory each found a name missing in, if it did.
    armed: HashMap<Vec<u8>, Option<PathBuf>>,
    /// How many changes were heard: an answer is vouched for only if none was heard between
    /// its arming and its answer (told at once or not, it may have come during the call).
    generation: u64,
    /// The answers vouched for since the last change, by who asked.
    books: HashMap<Asker, Book>,
    /// Bytes of the answers and listings in `books`.
    book_bytes: usize,
}

impl PathWatch {
    /// Watch what a lookup of absolute `path` depends on, before it runs: the generation
    /// its answer may be vouched for in ([`PathWatch::generation`]). None: it cannot be
    /// watched, and its answer must not be vouched for. A path with `..` components is
    /// vouched for only where the way the kernel walks it stays under `system`'s prefixes:
    /// a symbolic link before a `..` may take it where nothing written says (and where
    /// things change often, as in `/tmp`, whose changes would make every remote forget).
    pub fn arm(&mut self, path: &[u8], system: &SystemFiles) -> Option<u64> {
        if self.armed.contains_key(path) {
            return Some(self.generation);
        }
        if !path.starts_with(b"/") || self.watched.len() >= MAX_WATCHES {
            return None;
        }
        if self.inotify.is_none() {
            match Inotify::new() {
                Ok(inotify) => self.inotify = Some(inotify),
                Err(err) => {
                    debug!(%err, "no inotify: no lookup is vouched for");
                    return None;
                }
            }
        }
        let inotify = self.inotify.as_ref()?;
        let walk = walk(Path::new(OsStr::from_bytes(path)));
        let within = |went: &PathBuf| {
            went.to_str()
                .is_some_and(|p| system.covers_lookup(p) || system.leads_to_a_prefix(p))
        };
        if sysfiles::has_dot_dot(path) && !walk.went.iter().all(within) {
            return None;
        }
        for watched in walk.went {
            if self.watched.contains(&watched) {
                continue;
            }
            let c_path = CString::new(watched.as_os_str().as_bytes()).ok()?;
            if let Err(err) = inotify.watch(&c_path, CHANGES) {
                debug!(path = %watched.display(), %err, "cannot watch: not vouched for");
                return None;
            }
            self.watched.insert(watched);
        }
        self.armed.insert(path.to_vec(), walk.missing_in);
        Some(self.generation)
    }

    /// How many changes were heard so far.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether anything watched changed since the last time this said so: then no answer
    /// vouched for before holds, and the remote must forget them.
    pub fn changed(&mut self) -> bool {
        let Some(inotify) = &self.inotify else {
            return false;
        };
        let changed = match inotify.drain() {
            Some(fired) => !fired.is_empty(),
            // Events may be lost: anything may have changed.
            None => true,
        };
        if changed {
            // The remote forgets every answer: nothing needs watching any more, and a watch
            // left would only make it forget again. The next vouch starts anew.
            self.inotify = None;
            self.watched.clear();
            self.armed.clear();
            self.books.clear();
            self.book_bytes = 0;
            self.generation += 1;
        }
        changed
    }

    /// Keep `answer` to `asker`'s lookup `key`, vouched for in this generation (with
    /// `listing` if a name was missing) to process `by`, for the job's other remotes.
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
        self.book_bytes += bytes;
        let book = self.books.entry(asker.clone()).or_default();
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

    /// The answers and listings vouched for to `asker` since the last change, from its
    /// book's entry `since` on, but those found by process `except`'s own lookups; and how
    /// many entries the book holds, where the next call may start.
    pub fn known_since(&self, asker: &Asker, since: usize, except: Option<Pid>) -> Known {
        let mut known = Known::default();
        let Some(book) = self.books.get(asker) else {
            return known;
        };
        for (added, by) in book.added.iter().skip(since) {
            if Some(*by) == except {
                continue;
            }
            match added {
                Added::Answer(key) => {
                    let answer = book.answers[key].clone();
                    known.answers.push((key.clone(), answer));
                }
                Added::Listing(dir) => known.listings.push(book.listings[dir].clone()),
            }
        }
        known.upto = book.added.len();
        known
    }

    /// The names in the directory where a lookup of `path`, vouched for and found missing,
    /// found a name missing, as its walk when it was armed found it (a change since then
    /// keeps the answer from being vouched for): only where the path leads there by itself,
    /// with no symbolic link on the way, so that the directory's path is the start of
    /// `path` at the remote too. None: no such directory, or too large, or not readable.
    pub fn listing(&self, path: &[u8]) -> Option<Listing> {
        let dir = self.armed.get(path)?.as_ref()?;
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
        self.inotify.as_ref().map(|inotify| inotify.as_raw_fd())
    }
}

/// A lookup's way, as the kernel walks it.
struct Walk {
    /// `/`, each directory, the targets of symbolic links, and what it reaches if it exists.
    went: Vec<PathBuf>,
    /// The directory a name was missing in, if one was.
    missing_in: Option<PathBuf>,
}

/// The way of a lookup of absolute `path`. Where a name is missing or not a directory the
/// walk ends: the answer is an error or that entry, both told by its directory's watch.
fn walk(path: &Path) -> Walk {
    let mut walked = vec![PathBuf::from("/")];
    let mut missing_in = None;
    let mut at = PathBuf::from("/");
    let mut names: VecDeque<OsString> = components(path).collect();
    let mut links = 0;
    while let Some(name) = names.pop_front() {
        if name == ".." {
            at.pop();
            continue;
        }
        let next = at.join(&name);
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
            }
            Ok(meta) => {
                walked.push(next.clone());
                if !meta.is_dir() {
                    break;
                }
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
        missing_in,
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
    use std::os::unix::fs::symlink;

    use super::*;

    #[test]
    fn a_walk_goes_through_links_and_parents_as_the_kernel_does() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("real/include")).unwrap();
        fs::write(root.join("real/include/a.h"), "a").unwrap();
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
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("sys/lib/gcc")).unwrap();
        fs::create_dir_all(root.join("sys/include")).unwrap();
        fs::create_dir_all(root.join("out/deep")).unwrap();
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

    /// Whether `watch` ever reports no change after arming `path`. The walk watches the
    /// test's ancestors (`/tmp`) too, where other tests make their own directories: a quiet
    /// moment is waited for, not assumed.
    fn quiet_after_arming(watch: &mut PathWatch, path: &Path) -> bool {
        (0..200).any(|_| {
            watch.changed();
            assert!(
                watch
                    .arm(path.as_os_str().as_bytes(), &SystemFiles::default())
                    .is_some()
            );
            let quiet = !watch.changed();
            if !quiet {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            quiet
        })
    }

    #[test]
    fn a_change_anywhere_a_vouched_lookup_went_is_heard() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("real/include")).unwrap();
        fs::create_dir_all(root.join("elsewhere")).unwrap();
        fs::write(root.join("real/include/a.h"), "a").unwrap();
        symlink("real", root.join("link")).unwrap();
        let path = root.join("link/include/a.h");
        let mut watch = PathWatch::default();
        let changes: [&dyn Fn(); 4] = [
            &|| fs::write(root.join("real/include/a.h"), "changed").unwrap(),
            &|| fs::write(root.join("real/include/b.h"), "new").unwrap(),
            &|| fs::rename(root.join("real"), root.join("moved")).unwrap(),
            &|| symlink("moved", root.join("link2")).unwrap(),
        ];
        for (n, change) in changes.iter().enumerate() {
            assert!(quiet_after_arming(&mut watch, &path), "change {n}");
            // Not on the lookup's way: not heard of, for all the watch knows.
            fs::write(root.join("elsewhere/c.h"), format!("{n}")).unwrap();
            let armed = watch.generation();
            change();
            assert!(watch.changed(), "change {n} is heard");
            assert!(
                watch.generation() > armed,
                "an answer armed before is not vouched for"
            );
            if n == 2 {
                fs::remove_file(root.join("link")).unwrap();
                symlink("moved", root.join("link")).unwrap();
            }
        }
        // A change off the lookup's way alone is not heard of.
        let unheard = (0..200).any(|n| {
            if !quiet_after_arming(&mut watch, &path) {
                return false;
            }
            fs::write(root.join("elsewhere/c.h"), format!("again {n}")).unwrap();
            !watch.changed()
        });
        assert!(unheard, "a change off the way is heard of every time");
    }

    #[test]
    fn the_book_gives_each_asker_its_own_answers_until_a_change_empties_it() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("include")).unwrap();
        fs::write(root.join("include/a.h"), "a").unwrap();
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
        let recorded = (0..200).any(|_| {
            watch.changed();
            assert!(
                watch
                    .arm(path.as_bytes(), &SystemFiles::default())
                    .is_some()
            );
            watch.record(&me, 7, key.clone(), answer.clone(), None);
            !watch.changed()
        });
        assert!(recorded, "the directory never stayed quiet");
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
        fs::write(root.join("include/b.h"), "b").unwrap();
        assert!(watch.changed());
        assert_eq!(watch.known_since(&me, 0, None), Known::default(), "emptied");
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
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        fs::create_dir_all(root.join("real/include")).unwrap();
        fs::write(root.join("real/include/a.h"), "a").unwrap();
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
    }
}
