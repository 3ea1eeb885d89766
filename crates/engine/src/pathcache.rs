//! Answers about paths, kept where the process runs: a compiler looks up hundreds of
//! names under `/usr` (`stat`, `access`, `readlink` of each component of a header's path, opens
//! of headers that are not there), most of them many times, and each would cross the link.
//! See docs/forwarding.md, "Answers home vouches for".
//!
//! - **Home's answers, not this node's.** A lookup of an absolute path outside the kernel's
//!   trees (an open: under an agreed system prefix, `sysfiles`) goes home once, as any
//!   forwarded call, asking home to vouch for it. A path relative to the working directory
//!   is kept under the directory's path as home walked it (`ToGuest::Vouched`'s `cwd`),
//!   until the process changes directory or home says that path changed.
//!   Home watches every directory the lookup went through and the file it reached (inotify,
//!   `homepaths`) before it runs the call; if nothing changed meanwhile it says so
//!   (`ToGuest::Vouched`) before its reply, and the reply is kept here. The same lookup again
//!   is answered here with the same result and bytes: what home would answer.
//! - **Names that are not there.** When home vouches that a name is missing, it lists the
//!   directory it was missing in (`Listing`), if the path leads there without a symbolic
//!   link: any other name missing from that listing, looked up by a path that starts with
//!   the directory's, is missing too, as long as the directory is watched. A compiler probes
//!   a few include directories for every header; the probes that fail are answered here.
//! - **Until home says otherwise.** A change of a name a lookup went through makes home send
//!   `ToGuest::ForgetPart` ahead of whatever it sends next, and at once when the change
//!   happens while nothing is under way; the answers it names go (`Forget`: all of them).
//!   The process's own changes run at home and are seen there before home answers the call
//!   that made them.
//! - **Only what the credentials allow.** Answers depend on the process's credentials, which
//!   only home's shell holds: a call that may change them (or the root) forgets everything
//!   first.
//! - **Opens that succeed.** Of an open of a system file that succeeded, what is kept is
//!   what home said it opened (`sysfiles::SameAs`, its digest and resolved path), when the
//!   file here was the same. The same open again opens the file here, checks it is still
//!   that one, and gives it a number home told free (`numbers`); home's shell opens its own
//!   copy under that number when it hears of it.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::mem::Memory;
use crate::sysfiles::{SameAs, SystemFiles};
use crate::table::PATH_MAX;

/// The most bytes of paths and answers kept: a compiler's lookups fit many times over.
const MAX_KEPT_BYTES: usize = 4 << 20;

/// Where a lookup call keeps its path and its answer's bytes: argument indices.
struct Lookup {
    path: usize,
    out: Option<usize>,
    /// The call's first argument is a directory descriptor, unused for an absolute path.
    dirfd: bool,
    /// How many arguments it takes: the registers past them hold whatever they held.
    arity: usize,
    /// An open: asked only with flags `sysfiles` accepts.
    opens: bool,
}

/// The lookup calls home may vouch for, and where their arguments lie. None: not one.
fn lookup(nr: i64) -> Option<Lookup> {
    let (path, out, dirfd, arity) = match nr {
        libc::SYS_stat | libc::SYS_lstat => (0, Some(1), false, 2),
        libc::SYS_readlink => (0, Some(1), false, 3),
        libc::SYS_access => (0, None, false, 2),
        libc::SYS_open => (0, None, false, 3),
        libc::SYS_newfstatat | libc::SYS_readlinkat => (1, Some(2), true, 4),
        libc::SYS_statx => (1, Some(4), true, 5),
        libc::SYS_faccessat => (1, None, true, 3),
        libc::SYS_faccessat2 | libc::SYS_openat => (1, None, true, 4),
        _ => return None,
    };
    Some(Lookup {
        path,
        out,
        dirfd,
        arity,
        opens: matches!(nr, libc::SYS_open | libc::SYS_openat),
    })
}

/// Whether home may vouch for call `nr`: one of the lookups this module keeps.
pub fn vouchable(nr: i64) -> bool {
    lookup(nr).is_some()
}

/// Whether lookup `nr` of absolute `path` is one home vouches for: an open only of a path
/// under one of `system`'s prefixes (what it opens is a system file), any other lookup of
/// any path outside the kernel's trees, such as the `readlink("/usr")` a compiler makes for
/// every header it resolves and the `stat`s of a project's headers.
pub fn covered(nr: i64, path: &str, system: &SystemFiles) -> bool {
    match lookup(nr) {
        Some(at) if at.opens => system.covers(path),
        Some(_) => system.covers_lookup(path) || outside_kernel_trees(path),
        None => false,
    }
}

/// Whether absolute `path` is outside the kernel's own trees (`/proc`, `/sys`, `/dev`),
/// whose answers change without any event or depend on who asks. A lookup of any other
/// path may be vouched for, as a project's `stat`s and `realpath`s are: home refuses where
/// the walk reaches a file system whose changes it cannot hear (`homepaths`), and forgets an
/// answer when a name it went through changes, not when anything watched does.
fn outside_kernel_trees(path: &str) -> bool {
    path.starts_with('/')
        && !["/proc", "/sys", "/dev"].iter().any(|tree| {
            path.strip_prefix(tree)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
}

/// Whether call `nr` may change what the process may look up: its credentials, its root or
/// its mount namespace.
pub fn changes_lookups(nr: i64) -> bool {
    crate::dfsa::is_id_change(nr)
        || matches!(
            nr,
            libc::SYS_chroot
                | libc::SYS_unshare
                | libc::SYS_setns
                | libc::SYS_execve
                | libc::SYS_execveat
        )
}

/// A lookup as it is kept: the call, its path, and the arguments that are not addresses.
/// Home makes the same key of the call it ran for the remote, to hand its answer to the
/// job's other remotes (`homepaths::PathWatch::known_since`).
#[derive(Clone, PartialEq, Eq, Hash, Debug, Serialize, Deserialize)]
pub struct Key {
    nr: i64,
    path: String,
    args: [u64; 6],
}

impl Key {
    /// The key of lookup `nr` of absolute `path` with `args` (as the process passed them),
    /// if it is one whose answer may be kept: an open only with flags `sysfiles` accepts.
    pub fn of(nr: i64, args: &[u64; 6], path: String) -> Option<Key> {
        let at = lookup(nr)?;
        if at.opens && !crate::sysfiles::accepts(args[at.path + 1]) {
            return None;
        }
        let mut args = *args;
        args[at.arity..].fill(0);
        args[at.path] = 0;
        if let Some(out) = at.out {
            args[out] = 0;
        }
        if at.dirfd {
            args[0] = 0;
        }
        // An open's mode means nothing without O_CREAT, which is not accepted.
        if at.opens {
            args[at.path + 2] = 0;
        }
        Some(Key { nr, path, args })
    }

    /// The path looked up.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Whether it asks for the status of what the path names, which changes with the
    /// entries of a directory (its times, size and links) as well as with the object.
    pub fn is_status(&self) -> bool {
        matches!(
            self.nr,
            libc::SYS_stat | libc::SYS_lstat | libc::SYS_newfstatat | libc::SYS_statx
        )
    }

    /// Whether part `forgotten` of what home vouched for takes this answer.
    pub fn forgotten_in(&self, forgotten: &Forgotten) -> bool {
        forgotten.paths.contains(&self.path)
            || (self.is_status() && forgotten.stats_of.contains(&self.path))
    }

    /// What a keeper keeps of its answer `ret` with `backs` (as the call's buffers came back,
    /// at the addresses of `args`): the result and the out-buffer's bytes, if they went there
    /// alone; for an open that succeeded, what it opened, `opened`, if that is known. None:
    /// an answer that cannot be kept (a restart code, bytes elsewhere, an open of a file not
    /// known to be the same).
    pub fn kept_answer(
        &self,
        ret: i64,
        args: &[u64; 6],
        backs: &[(u64, Vec<u8>)],
        opened: Option<&SameAs>,
    ) -> Option<Answer> {
        let at = lookup(self.nr)?;
        if crate::sys::is_restart(ret) {
            return None;
        }
        if at.opens && ret >= 0 {
            return opened.cloned().map(Answer::Opened);
        }
        let out = match (backs, at.out) {
            ([], _) => None,
            ([(addr, bytes)], Some(out)) if *addr == args[out] => Some(bytes.clone()),
            _ => return None,
        };
        Some(Answer::Result { ret, out })
    }
}

/// A kept answer; home hands those it vouched for to the job's next remotes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Answer {
    /// The call's result and the bytes it wrote to its out-buffer.
    Result { ret: i64, out: Option<Vec<u8>> },
    /// An open that succeeded, of this file.
    Opened(SameAs),
}

impl Answer {
    /// The bytes it holds, as a keeper counts them.
    pub fn bytes(&self) -> usize {
        match self {
            Answer::Result { out, .. } => out.as_ref().map_or(0, Vec::len),
            Answer::Opened(same) => same.path.len() + same.digest.len(),
        }
    }
}

/// What a change at home took of the answers home vouched for (`ToGuest::ForgetPart`): a
/// change of one name forgets only the lookups that went through it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Forgotten {
    /// Every answer kept for a lookup of these paths.
    pub paths: HashSet<String>,
    /// The status answers of these paths, which reach a directory whose entries changed.
    pub stats_of: HashSet<String>,
    /// The listings of these directories, whose entries changed.
    pub listings: HashSet<String>,
}

impl Forgotten {
    /// Whether it takes nothing.
    pub fn is_empty(&self) -> bool {
        self.paths.is_empty() && self.stats_of.is_empty() && self.listings.is_empty()
    }

    /// Take what `later` takes too.
    pub fn add(&mut self, later: &Forgotten) {
        self.paths.extend(later.paths.iter().cloned());
        self.stats_of.extend(later.stats_of.iter().cloned());
        self.listings.extend(later.listings.iter().cloned());
    }
}

/// The names a directory holds, as home listed them for a lookup that found a name missing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listing {
    /// The directory, as the lookup's path names it.
    pub dir: String,
    /// Every name in it.
    pub names: Vec<String>,
}

impl Listing {
    /// The bytes of its directory's path and names, as a keeper counts them.
    pub fn bytes(&self) -> usize {
        self.dir.len() + self.names.iter().map(String::len).sum::<usize>()
    }
}

/// A kept answer as a call gets it: its result, and the bytes to write where they go.
pub type Given<'a> = (i64, Option<(u64, &'a [u8])>);

/// What the process may be answered here, and the lookup asked of home.
#[derive(Default)]
pub struct PathAnswers {
    kept: HashMap<Key, Answer>,
    /// Bytes of the paths, answers and listings kept.
    kept_bytes: usize,
    /// How many of the answers kept are opens that succeeded.
    opens: usize,
    /// Directories listed, by path: the names each holds.
    listed: HashMap<String, HashSet<String>>,
    /// The lookup under way, until its reply comes.
    asked: Option<Asked>,
    /// Home vouched for this call's answer, with this listing, and for a path relative to
    /// the working directory, under this directory's path.
    vouched: Option<(u64, Option<Listing>, Option<String>)>,
    /// The path of the process's working directory, as home last vouched under it: its
    /// relative lookups are kept under it. None until home said, and after a `chdir`, a
    /// change of that path, or anything forgotten whole.
    cwd: Option<String>,
}

/// A lookup asked of home: its call, key and arguments, and the path as the process gave
/// it if it is relative to the working directory.
struct Asked {
    id: u64,
    key: Key,
    args: [u64; 6],
    relative: Option<String>,
}

/// A lookup call's key, and its path as the process gave it if that is relative.
pub struct Keyed {
    pub key: Key,
    relative: Option<String>,
}

impl From<Key> for Keyed {
    /// The key of a lookup of an absolute path.
    fn from(key: Key) -> Keyed {
        Keyed {
            key,
            relative: None,
        }
    }
}

/// `relative` under directory `dir`, as a path.
pub fn under(dir: &str, relative: &str) -> String {
    format!("{}/{relative}", dir.trim_end_matches('/'))
}

/// Whether lookup `nr` with `args`, of a relative path, walks from the working directory:
/// a call with a directory descriptor only when that is `AT_FDCWD`.
pub fn relative_to_cwd(nr: i64, args: &[u64; 6]) -> bool {
    lookup(nr).is_some_and(|at| !at.dirfd || args[0] as i32 == libc::AT_FDCWD)
}

impl PathAnswers {
    /// The key of call `nr` with `args` if it is a lookup whose answer may be kept
    /// ([`covered`]); an open only with flags `sysfiles` accepts. A path relative to the
    /// working directory is keyed under the directory's path home last vouched under, or,
    /// until home said, as it is (nothing kept answers it then).
    pub fn key(
        &self,
        nr: i64,
        args: &[u64; 6],
        mem: &Memory,
        system: &SystemFiles,
    ) -> Option<Keyed> {
        let at = lookup(nr)?;
        let path = mem.read_cstr(args[at.path], PATH_MAX as usize - 1).ok()?;
        let path = String::from_utf8(path).ok()?;
        if path.starts_with('/') || path.is_empty() {
            let key = Key::of(nr, args, path).filter(|key| covered(nr, &key.path, system))?;
            return Some(Keyed {
                key,
                relative: None,
            });
        }
        if at.opens || !relative_to_cwd(nr, args) {
            return None;
        }
        let keyed = match &self.cwd {
            Some(cwd) => under(cwd, &path),
            None => path.clone(),
        };
        let key = Key::of(nr, args, keyed)
            .filter(|key| !key.path.starts_with('/') || covered(nr, &key.path, system))?;
        Some(Keyed {
            key,
            relative: Some(path),
        })
    }

    /// The answer kept for `key`, for the call with `args`: its result, and the bytes to
    /// write at the address they go to.
    pub fn answer(&self, key: &Key, args: &[u64; 6]) -> Option<Given<'_>> {
        let (ret, out) = match self.kept.get(key) {
            Some(Answer::Result { ret, out }) => (*ret, out),
            Some(Answer::Opened(_)) => return None,
            None => {
                return self
                    .missing(&key.path)
                    .then_some((-i64::from(libc::ENOENT), None));
            }
        };
        let out = match (out, lookup(key.nr)?.out) {
            (Some(bytes), Some(at)) => Some((args[at], bytes.as_slice())),
            (None, _) => None,
            (Some(_), None) => return None,
        };
        Some((ret, out))
    }

    /// What the open `key` opened when it last succeeded, if that is kept.
    pub fn opened(&self, key: &Key) -> Option<&SameAs> {
        match self.kept.get(key)? {
            Answer::Opened(same) => Some(same),
            Answer::Result { .. } => None,
        }
    }

    /// Whether an open that succeeded is kept: then the numbers home tells are of use.
    pub fn keeps_opens(&self) -> bool {
        self.opens > 0
    }

    /// The file open `key` opened is not the same here any more: the open goes home again.
    pub fn differs(&mut self, key: &Key) {
        if let Some(Answer::Opened(_)) = self.kept.remove(key) {
            self.opens -= 1;
        }
    }

    /// Call `id`, lookup `keyed` with `args`, goes home asking for a vouch.
    pub fn asked(&mut self, id: u64, keyed: Keyed, args: [u64; 6]) {
        let Keyed { key, relative } = keyed;
        self.asked = Some(Asked {
            id,
            key,
            args,
            relative,
        });
        self.vouched = None;
    }

    /// Home vouched for call `id`'s answer, listing the directory a name was missing in,
    /// and, for a relative path, under the path of the working directory `cwd`; its reply
    /// follows.
    pub fn vouched(&mut self, id: u64, listing: Option<Listing>, cwd: Option<String>) {
        self.vouched = Some((id, listing, cwd));
    }

    /// The process changes its working directory (`chdir`, `fchdir`): its relative lookups
    /// are keyed anew once home says where.
    pub fn forget_cwd(&mut self) {
        self.cwd = None;
    }

    /// Whether a listed directory lacks a name `path` goes through: the lookup fails there.
    fn missing(&self, path: &str) -> bool {
        self.listed.iter().any(|(dir, names)| {
            let rest = match dir.as_str() {
                "/" => path.strip_prefix('/'),
                dir => path
                    .strip_prefix(dir)
                    .and_then(|rest| rest.strip_prefix('/')),
            };
            rest.and_then(|rest| rest.split('/').next())
                .is_some_and(|name| !matches!(name, "" | "." | "..") && !names.contains(name))
        })
    }

    /// Call `id` was answered `ret`, with `backs`, by home: keep it if home vouched for it,
    /// it is the lookup asked, and its bytes went where its out-buffer is. An open that
    /// succeeded only as `opened`: what home said it opened, when the file here is the same.
    pub fn replied(
        &mut self,
        id: u64,
        ret: i64,
        backs: &[(u64, Vec<u8>)],
        opened: Option<&SameAs>,
    ) {
        let (vouched, listing, cwd) = match self.vouched.take() {
            Some((said, listing, cwd)) if said == id => (true, listing, cwd),
            _ => (false, None, None),
        };
        let Some(Asked {
            mut key,
            args,
            relative,
            ..
        }) = self.asked.take_if(|asked| asked.id == id)
        else {
            return;
        };
        if !vouched {
            return;
        }
        // A relative lookup is kept under the directory home walked it from, which home's
        // word names as it is now.
        if let Some(relative) = relative {
            let Some(cwd) = cwd else {
                return;
            };
            key.path = under(&cwd, &relative);
            self.cwd = Some(cwd);
        }
        let Some(answer) = key.kept_answer(ret, &args, backs, opened) else {
            return;
        };
        self.keep(key, answer);
        if let Some(listing) = listing.filter(|_| ret == -i64::from(libc::ENOENT)) {
            self.list(listing);
        }
    }

    /// Keep what home knew of the job's lookups as this process arrived (`ToGuest::Known`):
    /// answers it vouched for to the job's other remotes, and the directories it listed for
    /// them, all still watched at home. Only lookups this node's prefixes cover are kept:
    /// no other is ever asked here.
    pub fn known(
        &mut self,
        answers: Vec<(Key, Answer)>,
        listings: Vec<Listing>,
        system: &SystemFiles,
    ) {
        for (key, answer) in answers {
            if covered(key.nr, &key.path, system) {
                self.keep(key, answer);
            }
        }
        for listing in listings {
            if covered(libc::SYS_stat, &listing.dir, system) {
                self.list(listing);
            }
        }
    }

    /// Keep the names directory `listing.dir` holds.
    fn list(&mut self, listing: Listing) {
        self.make_room(listing.bytes());
        let Listing { dir, names } = listing;
        self.listed.insert(dir, names.into_iter().collect());
    }

    /// Keep `answer` for `key`.
    fn keep(&mut self, key: Key, answer: Answer) {
        self.make_room(key.path.len() + answer.bytes());
        if let Answer::Opened(_) = answer {
            self.opens += 1;
        }
        if let Some(Answer::Opened(_)) = self.kept.insert(key, answer) {
            self.opens -= 1;
        }
    }

    /// Count `bytes` more kept: within [`MAX_KEPT_BYTES`], past which everything kept before
    /// is forgotten.
    fn make_room(&mut self, bytes: usize) {
        if self.kept_bytes + bytes > MAX_KEPT_BYTES {
            self.forget();
        }
        self.kept_bytes += bytes;
    }

    /// Home's word that a change took part of what it vouched for: the working directory's
    /// path too, if it names it.
    pub fn forget_part(&mut self, forgotten: &Forgotten) {
        if self
            .cwd
            .as_ref()
            .is_some_and(|cwd| forgotten.paths.contains(cwd))
        {
            self.cwd = None;
        }
        let mut freed = 0;
        self.kept.retain(|key, answer| {
            let keep = !key.forgotten_in(forgotten);
            if !keep {
                freed += key.path.len() + answer.bytes();
                if let Answer::Opened(_) = answer {
                    self.opens -= 1;
                }
            }
            keep
        });
        for dir in &forgotten.listings {
            if let Some(names) = self.listed.remove(dir) {
                freed += dir.len() + names.iter().map(String::len).sum::<usize>();
            }
        }
        self.kept_bytes = self.kept_bytes.saturating_sub(freed);
    }

    /// Home's word, or a call that may change what lookups find: nothing kept holds.
    pub fn forget(&mut self) {
        self.kept.clear();
        self.opens = 0;
        self.listed.clear();
        self.kept_bytes = 0;
        self.vouched = None;
        self.cwd = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(nr: i64, path: &str, args: [u64; 6]) -> Key {
        Key {
            nr,
            path: path.to_owned(),
            args,
        }
    }

    #[test]
    fn a_vouched_answer_is_kept_with_its_bytes_and_given_at_the_next_calls_buffer() {
        let mut answers = PathAnswers::default();
        let k = key(libc::SYS_newfstatat, "/usr/x", [0, 0, 0, 0, 0, 0]);
        let first = [3, 0x1000, 0x2000, 0, 0, 0];
        answers.asked(7, k.clone().into(), first);
        answers.vouched(7, None, None);
        answers.replied(7, 0, &[(0x2000, vec![1, 2, 3])], None);
        let next = [3, 0x5000, 0x6000, 0, 0, 0];
        assert_eq!(
            answers.answer(&k, &next),
            Some((0, Some((0x6000, &[1u8, 2, 3][..]))))
        );
        answers.forget();
        assert_eq!(answers.answer(&k, &next), None);
    }

    #[test]
    fn an_answer_home_did_not_vouch_for_or_of_another_call_is_not_kept() {
        let mut answers = PathAnswers::default();
        let k = key(libc::SYS_access, "/usr/x", [0, 4, 0, 0, 0, 0]);
        answers.asked(7, k.clone().into(), [0; 6]);
        answers.replied(7, -2, &[], None);
        assert_eq!(answers.answer(&k, &[0; 6]), None, "not vouched");
        answers.asked(8, k.clone().into(), [0; 6]);
        answers.vouched(7, None, None);
        answers.replied(8, -2, &[], None);
        assert_eq!(
            answers.answer(&k, &[0; 6]),
            None,
            "vouched for another call"
        );
        answers.asked(9, k.clone().into(), [0; 6]);
        answers.vouched(9, None, None);
        answers.replied(9, -2, &[], None);
        assert_eq!(answers.answer(&k, &[0; 6]), Some((-2, None)));
    }

    #[test]
    fn an_open_that_succeeded_gives_no_result_and_a_restart_is_never_kept() {
        let mut answers = PathAnswers::default();
        let k = key(libc::SYS_openat, "/usr/x", [0, 0, 0, 0, 0, 0]);
        for (id, ret) in [(1, 3), (2, crate::sys::ERESTARTNOINTR)] {
            answers.asked(id, k.clone().into(), [0; 6]);
            answers.vouched(id, None, None);
            answers.replied(id, ret, &[], None);
            assert_eq!(answers.answer(&k, &[0; 6]), None, "{ret}");
        }
        answers.asked(3, k.clone().into(), [0; 6]);
        answers.vouched(3, None, None);
        answers.replied(3, -i64::from(libc::ENOENT), &[], None);
        assert_eq!(
            answers.answer(&k, &[0; 6]),
            Some((-i64::from(libc::ENOENT), None))
        );
    }

    #[test]
    fn an_open_that_succeeded_keeps_what_it_opened_only_when_the_same_here() {
        let mut answers = PathAnswers::default();
        let k = key(libc::SYS_openat, "/usr/x", [0; 6]);
        let same = SameAs {
            digest: "ab".into(),
            path: "/usr/x".into(),
        };
        answers.asked(1, k.clone().into(), [0; 6]);
        answers.vouched(1, None, None);
        answers.replied(1, 3, &[], None);
        assert_eq!(answers.opened(&k), None, "not the same here");
        answers.asked(2, k.clone().into(), [0; 6]);
        answers.replied(2, 3, &[], Some(&same));
        assert_eq!(answers.opened(&k), None, "not vouched for");
        answers.asked(3, k.clone().into(), [0; 6]);
        answers.vouched(3, None, None);
        answers.replied(3, 3, &[], Some(&same));
        assert_eq!(answers.opened(&k), Some(&same));
        assert!(answers.keeps_opens());
        assert_eq!(
            answers.answer(&k, &[0; 6]),
            None,
            "no result is given for it"
        );
        answers.differs(&k);
        assert_eq!(answers.opened(&k), None);
        assert!(!answers.keeps_opens());
    }

    #[test]
    fn bytes_that_went_anywhere_but_the_out_buffer_are_not_kept() {
        let mut answers = PathAnswers::default();
        let k = key(libc::SYS_stat, "/usr/x", [0; 6]);
        answers.asked(1, k.clone().into(), [0x10, 0x20, 0, 0, 0, 0]);
        answers.vouched(1, None, None);
        answers.replied(1, 0, &[(0x30, vec![1])], None);
        assert_eq!(answers.answer(&k, &[0; 6]), None);
    }

    #[test]
    fn what_home_knew_for_the_job_is_kept_outside_the_kernels_trees_until_forgotten() {
        let mut answers = PathAnswers::default();
        let system = SystemFiles::listed(&["/usr/".to_owned()]);
        let stat = |path: &str| key(libc::SYS_newfstatat, path, [0; 6]);
        let found = Answer::Result {
            ret: 0,
            out: Some(vec![7; 4]),
        };
        let listing = |dir: &str| Listing {
            dir: dir.into(),
            names: vec!["stdio.h".into()],
        };
        answers.known(
            vec![
                (stat("/usr/x"), found.clone()),
                (stat("/opt/y"), found.clone()),
                (stat("/proc/1/status"), found),
            ],
            vec![listing("/usr/include"), listing("/proc/sys")],
            &system,
        );
        let args = [0, 0, 0x100, 0, 0, 0];
        let given = Some((0, Some((0x100, &[7u8; 4][..]))));
        assert_eq!(answers.answer(&stat("/usr/x"), &args), given);
        assert_eq!(answers.answer(&stat("/opt/y"), &args), given, "a project's");
        assert_eq!(
            answers.answer(&stat("/proc/1/status"), &args),
            None,
            "the kernel's"
        );
        let enoent = Some((-i64::from(libc::ENOENT), None));
        assert_eq!(answers.answer(&stat("/usr/include/z.h"), &args), enoent);
        assert_eq!(answers.answer(&stat("/proc/sys/z"), &args), None);
        answers.forget();
        assert_eq!(answers.answer(&stat("/usr/x"), &args), None);
        assert_eq!(answers.answer(&stat("/usr/include/z.h"), &args), None);
    }

    #[test]
    fn a_change_in_part_forgets_the_paths_it_names_the_status_of_a_directory_and_its_listing() {
        let mut answers = PathAnswers::default();
        let system = SystemFiles::listed(&["/usr/".to_owned()]);
        let found = Answer::Result {
            ret: 0,
            out: Some(vec![7; 4]),
        };
        let stat = |path: &str| key(libc::SYS_newfstatat, path, [0; 6]);
        let readlink = key(libc::SYS_readlink, "/p", [0, 0, 64, 0, 0, 0]);
        let not_a_link = Answer::Result {
            ret: -i64::from(libc::EINVAL),
            out: None,
        };
        answers.known(
            vec![
                (stat("/p/a.h"), found.clone()),
                (stat("/p/b.h"), found.clone()),
                (stat("/p"), found),
                (readlink.clone(), not_a_link),
            ],
            vec![Listing {
                dir: "/p".into(),
                names: vec!["a.h".into(), "b.h".into()],
            }],
            &system,
        );
        let args = [0, 0, 0x100, 0, 0, 0];
        let missing = stat("/p/c.h");
        let enoent = Some((-i64::from(libc::ENOENT), None));
        assert_eq!(answers.answer(&missing, &args), enoent);
        // c.h was made in /p: its entries changed.
        let part = Forgotten {
            paths: ["/p/c.h".to_owned()].into(),
            stats_of: ["/p".to_owned()].into(),
            listings: ["/p".to_owned()].into(),
        };
        answers.forget_part(&part);
        assert_eq!(answers.answer(&missing, &args), None, "asked again");
        assert_eq!(
            answers.answer(&stat("/p"), &args),
            None,
            "its times changed"
        );
        assert!(answers.answer(&readlink, &args).is_some(), "still no link");
        assert!(answers.answer(&stat("/p/a.h"), &args).is_some());
        answers.forget_part(&Forgotten {
            paths: ["/p/a.h".to_owned()].into(),
            ..Forgotten::default()
        });
        assert_eq!(answers.answer(&stat("/p/a.h"), &args), None);
        assert!(answers.answer(&stat("/p/b.h"), &args).is_some());
    }

    #[test]
    fn a_relative_lookup_is_kept_under_the_directory_home_walked_it_from_until_that_goes() {
        let mem = Memory::open(std::process::id() as crate::ptrace::Pid).unwrap();
        let system = SystemFiles::listed(&["/usr/".to_owned()]);
        let mut answers = PathAnswers::default();
        let rel = "lua.h\0";
        let out = [0u8; 8];
        let cwd = libc::AT_FDCWD as u64;
        let args = [cwd, rel.as_ptr() as u64, out.as_ptr() as u64, 0, 0, 0];
        let keyed = |answers: &PathAnswers| {
            (answers.key(libc::SYS_newfstatat, &args, &mem, &system)).expect("a lookup")
        };
        let first = keyed(&answers);
        assert_eq!(first.key.path(), "lua.h", "where is not known yet");
        assert_eq!(answers.answer(&first.key, &args), None);
        answers.asked(7, first, args);
        answers.vouched(7, None, Some("/p".into()));
        answers.replied(7, 0, &[(args[2], vec![1, 2])], None);
        let again = keyed(&answers);
        assert_eq!(again.key.path(), "/p/lua.h");
        assert_eq!(
            answers.answer(&again.key, &args),
            Some((0, Some((args[2], &[1u8, 2][..]))))
        );
        // The directory's path changed at home: its relative lookups are keyed anew.
        answers.forget_part(&Forgotten {
            paths: ["/p".to_owned()].into(),
            ..Forgotten::default()
        });
        assert_eq!(keyed(&answers).key.path(), "lua.h");
        // Another directory descriptor than the working directory's: not kept.
        let at_dir = [3, args[1], args[2], 0, 0, 0];
        assert!(
            answers
                .key(libc::SYS_newfstatat, &at_dir, &mem, &system)
                .is_none()
        );
        // Vouched without the directory's path: not kept.
        answers.asked(8, keyed(&answers), args);
        answers.vouched(8, None, None);
        answers.replied(8, 0, &[(args[2], vec![3])], None);
        assert_eq!(keyed(&answers).key.path(), "lua.h");
    }

    #[test]
    fn home_makes_the_key_the_remote_makes_and_keeps_only_out_buffer_bytes() {
        let args = [libc::AT_FDCWD as u64, 0x1000, 0x2000, 0x100, 0, 0];
        let k = Key::of(libc::SYS_newfstatat, &args, "/usr/x".into()).unwrap();
        assert_eq!(
            k,
            key(libc::SYS_newfstatat, "/usr/x", [0, 0, 0, 0x100, 0, 0])
        );
        assert_eq!(
            k.kept_answer(0, &args, &[(0x2000, vec![1])], None),
            Some(Answer::Result {
                ret: 0,
                out: Some(vec![1])
            })
        );
        assert_eq!(k.kept_answer(0, &args, &[(0x1000, vec![1])], None), None);
        let restart = crate::sys::ERESTARTNOINTR;
        assert_eq!(k.kept_answer(restart, &args, &[], None), None);
        let open = Key::of(libc::SYS_openat, &[0, 0x1000, 0, 0, 0, 0], "/usr/x".into());
        assert_eq!(
            open.clone().unwrap().kept_answer(3, &args, &[], None),
            None,
            "a file, not a result"
        );
        let same = SameAs {
            digest: "ab".into(),
            path: "/usr/x".into(),
        };
        assert_eq!(
            open.unwrap().kept_answer(3, &args, &[], Some(&same)),
            Some(Answer::Opened(same)),
            "the file it opened"
        );
        let writes = (libc::O_WRONLY | libc::O_CREAT) as u64;
        assert_eq!(
            Key::of(
                libc::SYS_openat,
                &[0, 0x1000, writes, 0, 0, 0],
                "/usr/x".into()
            ),
            None
        );
    }

    #[test]
    fn a_name_missing_from_a_listed_directory_is_missing_and_a_listed_one_is_asked() {
        let mut answers = PathAnswers::default();
        let probe = key(libc::SYS_openat, "/usr/include/a/x.h", [0; 6]);
        answers.asked(1, probe.clone().into(), [0; 6]);
        let listing = Listing {
            dir: "/usr/include".into(),
            names: vec!["b".into(), "stdio.h".into()],
        };
        answers.vouched(1, Some(listing), None);
        answers.replied(1, -i64::from(libc::ENOENT), &[], None);
        let enoent = Some((-i64::from(libc::ENOENT), None));
        for missing in ["/usr/include/x.h", "/usr/include/c/d.h", "/usr/include/a"] {
            let k = key(libc::SYS_newfstatat, missing, [0; 6]);
            assert_eq!(answers.answer(&k, &[0; 6]), enoent, "{missing}");
        }
        let asked = [
            "/usr/include/stdio.h",
            "/usr/include/b/x.h",
            "/usr/include/../x.h",
            "/usr/includex/y.h",
            "/usr/include",
            "/usr/x.h",
        ];
        for there in asked {
            let k = key(libc::SYS_newfstatat, there, [0; 6]);
            assert_eq!(answers.answer(&k, &[0; 6]), None, "{there}");
        }
        answers.forget();
        let k = key(libc::SYS_newfstatat, "/usr/include/x.h", [0; 6]);
        assert_eq!(answers.answer(&k, &[0; 6]), None);
    }
}
