//! The FUSE file system at `/mfs`.
//!
//! `/mfs/N/path` is node N's `/path`. Each inode is a (node, path) pair; every kernel request
//! becomes one [`Request`] for that node, sent through the [`Cluster`] the daemon supplies,
//! with the calling process's uid, gid and groups. The answer is sent back to the kernel from
//! a tokio task: fuser's replies may be sent from any thread, so a slow or dead node holds up
//! only the requests for it.
//!
//! Nothing is cached: entries and attributes have a TTL of 0 and open files use direct I/O,
//! so a write through one node is read through any other right after it. With direct I/O the
//! kernel still maps files MAP_PRIVATE (through the page cache, filled when mapped); a shared
//! mapping is refused with ENODEV, as fuser does not ask for FUSE_DIRECT_IO_ALLOW_MMAP.
//!
//! Locks are forwarded with the kernel's lock owner and held at the serving node (see
//! `locks`); a lock that must wait is tried again from here, never waited for there, until the
//! waiting thread has a signal to take (see `signals`).
//!
//! The root lists the map's nodes, the special symlinks `here`, `home`, `lastexec`, `magic`
//! and `selected`, whose targets depend on the process that reads them (see [`Places`] and
//! the modules `remember` and `magic`), and the file `select` a process writes a node
//! number to.
//!
//! Every request its own daemon makes is refused (EACCES): a path the daemon serves for
//! another node can then never lead into this node's `/mfs` (as `/mfs/1/mfs/2/...` would), and
//! the daemon never waits on itself.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::future::Future;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, InitFlags, KernelConfig, LockOwner, MountOption, OpenFlags, RenameFlags, ReplyAttr,
    ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyLock, ReplyOpen,
    ReplyStatfs, ReplyWrite, Request as FuseRequest, SessionACL, TimeOrNow, WriteFlags,
};
use tokio::runtime::Handle;
use tracing::{info, warn};

use crate::magic;
use crate::protocol::{Answer, Attr, Bytes, Caller, HEAD_ROOM, MAX_IO, Request, Time};
use crate::remember::{Proc, Remembered};
use crate::signals;

/// Neither entries nor attributes are cached (see the module's doc).
const TTL: Duration = Duration::ZERO;
/// How often a lock that must wait is tried again at the serving node (which never waits: a
/// waiting lock would hold one of its few workers), and how often the waiting thread is
/// looked at for a signal.
const LOCK_RETRY: Duration = Duration::from_millis(50);
/// A read larger than this goes to the serving node as reads of this size, all sent at once.
/// The serving node then reads and seals one part while the link carries another and this
/// node opens a third; as one request, these steps would follow one another for the whole.
const READ_PART: u32 = 256 << 10;

const ROOT: u64 = 1;
const HERE: u64 = 2;
const HOME: u64 = 3;
const SELECTED: u64 = 4;
/// `/mfs/select`, the file a process writes a node number to (see `select`).
const SELECT: u64 = 5;
const LASTEXEC: u64 = 6;
const MAGIC: u64 = 7;
/// The first inode number of (node, path) pairs.
const FIRST_PLACE: u64 = 16;

/// The special symlinks of the root, with their inodes.
const SPECIAL: [(&str, u64); 5] = [
    ("here", HERE),
    ("home", HOME),
    ("lastexec", LASTEXEC),
    ("magic", MAGIC),
    ("selected", SELECTED),
];

/// A future the [`Cluster`] returns.
pub type Answered = Pin<Box<dyn Future<Output = (Answer, Vec<u8>)> + Send>>;

/// Where a process runs and where its home is, by node number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Places {
    /// `here`: the node it runs on.
    pub here: u16,
    /// `home`: its home node.
    pub home: u16,
}

/// What only the daemon knows.
pub trait Cluster: Send + Sync + 'static {
    /// The nodes of the map, listed in the root.
    fn nodes(&self) -> Vec<u16>;
    /// Run `request` at `node` as `caller` (this node's own server for this node); an
    /// unreachable node answers [`Answer::Error`] with EIO within a few seconds.
    fn call(&self, node: u16, caller: Caller, request: Request, data: Vec<u8>) -> Answered;
    /// Where process `pid` (a thread group id of the daemon's PID namespace) runs and its home.
    fn places(&self, pid: i32) -> Places;
    /// Process `pid` read or wrote `bytes` of `node`'s files: what draws a process to its
    /// data (docs/balancing.md, rule 4b).
    fn transferred(&self, pid: i32, node: u16, bytes: u64);
}

/// A mounted MFS; unmounted (lazily, so open files do not keep it) when dropped.
pub struct Mounted {
    dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl Drop for Mounted {
    fn drop(&mut self) {
        detach(&self.dir);
        // The kernel's side is gone; fuser finds it unmounted and ends its thread.
        drop(self.session.take());
    }
}

/// The kernel's cap on the pages of one FUSE request, read as a connection is made (Linux
/// 6.12 and later; a fixed 256 before).
const MAX_PAGES_LIMIT: &str = "/proc/sys/fs/fuse/max_pages_limit";

/// Raise the kernel's cap on one FUSE request to `bytes` if it is lower, so that the kernel
/// asks for a MiB read into any buffer in one request (see [`MAX_IO`]). The cap is the whole
/// machine's, and only ever raised here; where it cannot be, such reads take two requests.
fn allow_requests_of(bytes: u32) {
    // SAFETY: sysconf reads a constant of the system.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as u32;
    let needed = bytes.div_ceil(page);
    let Ok(text) = std::fs::read_to_string(MAX_PAGES_LIMIT) else {
        return;
    };
    let limit = text.trim().parse::<u32>().unwrap_or(0);
    if limit >= needed {
        return;
    }
    match std::fs::write(MAX_PAGES_LIMIT, needed.to_string()) {
        Ok(()) => info!("MFS: raised {MAX_PAGES_LIMIT} from {limit} to {needed} pages"),
        Err(e) => warn!(
            "MFS: cannot raise {MAX_PAGES_LIMIT} from {limit} to {needed} pages ({e}): a MiB \
             read into a buffer that does not start on a page boundary takes two requests"
        ),
    }
}

/// Mount MFS at `dir` (created if missing), after a lazy unmount of the dead mount a crashed
/// daemon left there (it answers ENOTCONN). A live file system mounted there (another
/// daemon's MFS, in the same mount namespace) is left alone: AlreadyExists. Requests are
/// answered on `runtime`.
pub fn mount(dir: &Path, cluster: Arc<dyn Cluster>, runtime: Handle) -> io::Result<Mounted> {
    match std::fs::metadata(dir) {
        Err(e) if e.raw_os_error() == Some(libc::ENOTCONN) => detach(dir),
        Ok(meta) if is_mount_point(dir, &meta) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "another file system is mounted there",
            ));
        }
        _ => {}
    }
    std::fs::create_dir_all(dir)?;
    let fs = Mfs {
        inner: Arc::new(Inner {
            cluster,
            runtime,
            inodes: Mutex::new(Inodes::default()),
            listings: Mutex::default(),
            next_listing: AtomicU64::new(1),
            open: Mutex::default(),
            selections: Mutex::default(),
            made_by_magic: Mutex::default(),
            locked: Mutex::default(),
            mountpoint: dir.to_path_buf(),
            own_pid: std::process::id(),
        }),
    };
    allow_requests_of(MAX_IO);
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName("mfs".to_owned()),
        MountOption::Subtype("rmosix".to_owned()),
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    config.acl = SessionACL::All;
    let session = fuser::spawn_mount(fs, dir, &config)?;
    Ok(Mounted {
        dir: dir.to_path_buf(),
        session: Some(session),
    })
}

/// Whether `dir` is on another device than its parent: something is mounted on it.
fn is_mount_point(dir: &Path, meta: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::MetadataExt;
    let parent = dir.parent().unwrap_or(Path::new("/"));
    std::fs::metadata(parent).is_ok_and(|p| p.dev() != meta.dev())
}

/// umount2(MNT_DETACH), ignoring "not mounted".
fn detach(dir: &Path) {
    let Ok(c) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return;
    };
    // SAFETY: a valid C string.
    if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
        let e = io::Error::last_os_error();
        if !matches!(e.raw_os_error(), Some(libc::EINVAL | libc::ENOENT)) {
            warn!("cannot unmount {}: {e}", dir.display());
        }
    }
}

/// A directory's entries as readdir gives them: inode, type, name.
type Listing = Vec<(u64, FileType, Bytes)>;

/// A (node, path) pair.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Place {
    node: u16,
    path: Bytes,
}

impl Place {
    fn child(&self, name: &OsStr) -> Place {
        let mut path = self.path.clone();
        if !path.is_empty() {
            path.push(b'/');
        }
        path.extend_from_slice(name.as_bytes());
        Place {
            node: self.node,
            path,
        }
    }
}

/// The inodes the kernel knows, with how many lookups each has had (it forgets them by
/// those counts).
#[derive(Default)]
struct Inodes {
    by_ino: HashMap<u64, (Place, u64)>,
    by_place: HashMap<Place, u64>,
    next: u64,
}

impl Inodes {
    /// The inode of `place`, counting one lookup.
    fn looked_up(&mut self, place: Place) -> u64 {
        if let Some(&ino) = self.by_place.get(&place) {
            if let Some(entry) = self.by_ino.get_mut(&ino) {
                entry.1 += 1;
            }
            return ino;
        }
        let ino = FIRST_PLACE + self.next;
        self.next += 1;
        self.by_place.insert(place.clone(), ino);
        self.by_ino.insert(ino, (place, 1));
        ino
    }

    fn forget(&mut self, ino: u64, n: u64) {
        if let Some(entry) = self.by_ino.get_mut(&ino) {
            entry.1 = entry.1.saturating_sub(n);
            if entry.1 == 0 {
                let (place, _) = self.by_ino.remove(&ino).expect("just seen");
                if self.by_place.get(&place) == Some(&ino) {
                    self.by_place.remove(&place);
                }
            }
        }
    }

    /// `from` was renamed to `to`: it and everything below it are known by the new path.
    fn renamed(&mut self, from: &Place, to: &Place) {
        let moved: Vec<u64> = self
            .by_ino
            .iter()
            .filter(|(_, (p, _))| p.node == from.node && below(&p.path, &from.path))
            .map(|(&ino, _)| ino)
            .collect();
        for ino in moved {
            let entry = self.by_ino.get_mut(&ino).expect("just listed");
            let mut path = to.path.clone();
            path.extend_from_slice(&entry.0.path[from.path.len()..]);
            let old = std::mem::replace(&mut entry.0.path, path);
            let new = entry.0.clone();
            let old = Place {
                node: from.node,
                path: old,
            };
            if self.by_place.get(&old) == Some(&ino) {
                self.by_place.remove(&old);
            }
            self.by_place.insert(new, ino);
        }
    }
}

/// Whether `path` is `top` or below it.
fn below(path: &[u8], top: &[u8]) -> bool {
    path == top || (path.starts_with(top) && path.get(top.len()) == Some(&b'/'))
}

struct Inner {
    cluster: Arc<dyn Cluster>,
    runtime: Handle,
    inodes: Mutex<Inodes>,
    /// Directory listings taken at opendir, by handle.
    listings: Mutex<HashMap<u64, Listing>>,
    next_listing: AtomicU64,
    /// The handles open on each inode: fstat(2) of a file removed while open is asked by
    /// one of them, since the kernel sends no handle with it.
    open: Mutex<HashMap<u64, Vec<u64>>>,
    /// The nodes selected through `/mfs/select`.
    selections: Mutex<Remembered>,
    /// The node of each process's last file created through `magic`.
    made_by_magic: Mutex<Remembered>,
    /// The lock owners that set a lock on an inode, as (inode, owner): their locks on it go
    /// when they close it (flush for a process's fcntl locks, release for an open file's
    /// flock locks).
    locked: Mutex<std::collections::HashSet<(u64, u64)>>,
    mountpoint: PathBuf,
    own_pid: u32,
}

struct Mfs {
    inner: Arc<Inner>,
}

impl Inner {
    fn inodes(&self) -> MutexGuard<'_, Inodes> {
        self.inodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn place(&self, ino: INodeNo) -> Option<Place> {
        self.inodes().by_ino.get(&ino.0).map(|(p, _)| p.clone())
    }

    /// Ask `node` and turn an error answer into an errno.
    async fn ask(
        &self,
        node: u16,
        caller: Caller,
        request: Request,
        data: Vec<u8>,
    ) -> Result<(Answer, Vec<u8>), Errno> {
        match self.cluster.call(node, caller, request, data).await {
            (Answer::Error(errno), _) => Err(Errno::from_i32(errno)),
            answer => Ok(answer),
        }
    }

    /// Read up to `size` bytes of open file `fh` at `node` from `offset`, in parts of
    /// [`READ_PART`] asked for at once. Like a read, the result is short at the end of the
    /// file, and a part that fails after others succeeded shortens it instead of failing it.
    async fn read(
        self: Arc<Self>,
        node: u16,
        caller: Caller,
        fh: u64,
        offset: u64,
        size: u32,
    ) -> Result<Vec<u8>, Errno> {
        let parts: Vec<_> = (0..size)
            .step_by(READ_PART as usize)
            .map(|start| {
                let part = READ_PART.min(size - start);
                let request = Request::Read {
                    fh,
                    offset: offset + u64::from(start),
                    size: part,
                };
                let (inner, caller) = (self.clone(), caller.clone());
                let asked = self
                    .runtime
                    .spawn(async move { inner.ask(node, caller, request, Vec::new()).await });
                (part as usize, asked)
            })
            .collect();
        // One part's answer is the read's as it came; more are joined.
        let joined = parts.len() > 1;
        let mut data = Vec::with_capacity(if joined { size as usize } else { 0 });
        for (part, asked) in parts {
            let got = match asked.await {
                Ok(Ok((Answer::Data, got))) => got,
                Ok(Err(e)) if data.is_empty() => return Err(e),
                Ok(Err(_)) => break,
                Ok(Ok(_)) | Err(_) => return Err(Errno::EIO),
            };
            let short = got.len() < part;
            if joined {
                data.extend_from_slice(&got);
            } else {
                data = got;
            }
            if short {
                // The end of the file: the parts after this one hold nothing.
                break;
            }
        }
        Ok(data)
    }

    /// Tells the cluster that `process` (if it still exists) moved `bytes` of `node`'s files.
    fn count(&self, process: Option<i32>, node: u16, bytes: usize) {
        if let Some(process) = process {
            self.cluster.transferred(process, node, bytes as u64);
        }
    }

    /// The target of a special symlink for thread `tid` of process `pid`; `None`: it leads
    /// nowhere for it (`selected` of a process that selected nothing).
    fn readlink_special(&self, ino: u64, tid: u32, pid: i32) -> Option<Bytes> {
        let node = match ino {
            HERE => self.cluster.places(pid).here,
            // A process execs at home (execve takes a process away home first), so the
            // node of its last exec is its home.
            HOME | LASTEXEC => self.cluster.places(pid).home,
            MAGIC => self.magic_node(tid, pid),
            _ => lock(&self.selections).of(&Proc, pid)?,
        };
        Some(node.to_string().into_bytes())
    }

    /// `magic` for thread `tid` of process `pid`: where the process runs if the thread
    /// resolves it to create a file (remembered for the process, as if the creation
    /// succeeded); otherwise the node of its last such creation, or inherited (see
    /// `remember`), and where it runs if it has none.
    fn magic_node(&self, tid: u32, pid: i32) -> u16 {
        if magic::creates_a_file(tid) {
            let here = self.cluster.places(pid).here;
            lock(&self.made_by_magic).remember(&Proc, pid, here);
            return here;
        }
        let made = lock(&self.made_by_magic).of(&Proc, pid);
        made.unwrap_or_else(|| self.cluster.places(pid).here)
    }

    /// What `/mfs/select` reads for process `pid`: its selection, if any.
    fn selection_text(&self, pid: i32) -> String {
        match lock(&self.selections).of(&Proc, pid) {
            Some(node) => format!("{node}\n"),
            None => String::new(),
        }
    }
}

/// The target a symlink of `place` shows: as stored when it stays within the node's tree,
/// else made to lead into `/mfs/N`, so that it resolves as at node N and never to a file of
/// the node that reads it.
fn confine(mountpoint: &Path, place: &Place, target: Bytes) -> Bytes {
    let (dir, _) = crate::resolve::split(&place.path);
    let absolute = target.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = if absolute {
        Vec::new()
    } else {
        dir.split(|&b| b == b'/')
            .filter(|c| !c.is_empty())
            .collect()
    };
    let mut climbs_out = false;
    for part in target.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => climbs_out |= parts.pop().is_none(),
            name => parts.push(name),
        }
    }
    if !absolute && !climbs_out {
        return target;
    }
    let mut out = mountpoint.as_os_str().as_bytes().to_vec();
    out.extend_from_slice(format!("/{}", place.node).as_bytes());
    for part in parts {
        out.push(b'/');
        out.extend_from_slice(part);
    }
    out
}

/// The process a per-process answer is for: the calling thread's group as
/// [`Mfs::caller_and_process`] read it, or the thread itself once it has gone (FUSE names the
/// calling thread).
fn process_of(req: &FuseRequest, process: Option<i32>) -> i32 {
    process.unwrap_or(req.pid() as i32)
}

/// What `/proc/PID/status` says of a calling thread, read once.
struct ThreadStatus {
    /// Its thread group: the process.
    process: i32,
    /// Its file-system uid and gid (the last of the `Uid` and `Gid` fields).
    fs_ids: Option<(u32, u32)>,
    /// Its supplementary groups.
    groups: Vec<u32>,
}

/// The [`ThreadStatus`] of thread `pid`; `None` once it has gone.
fn status_of(pid: u32) -> Option<ThreadStatus> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| crate::status::field(&status, name);
    let ids = |name: &str| -> Option<u32> { field(name)?.split_whitespace().last()?.parse().ok() };
    let groups = field("Groups")
        .map(|g| {
            g.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    Some(ThreadStatus {
        process: field("Tgid")?.parse().ok()?,
        fs_ids: ids("Uid").zip(ids("Gid")),
        groups,
    })
}

impl Mfs {
    /// Who calls, or EACCES for this daemon itself (see the module's doc). The groups come
    /// from /proc; a caller that has gone by now (pid 0: the kernel itself) keeps its gid alone.
    fn caller(&self, req: &FuseRequest) -> Result<Caller, Errno> {
        self.caller_and_process(req).map(|(caller, _)| caller)
    }

    /// [`Mfs::caller`], and the calling process (thread group) if it still exists: both from
    /// one read of its status.
    fn caller_and_process(&self, req: &FuseRequest) -> Result<(Caller, Option<i32>), Errno> {
        let pid = req.pid();
        let status = if pid == 0 { None } else { status_of(pid) };
        if status
            .as_ref()
            .is_some_and(|status| status.process == self.inner.own_pid as i32)
        {
            return Err(Errno::EACCES);
        }
        let (uid, gid) = (req.uid(), req.gid());
        // The groups are the caller's only if the thread read is still the caller: one that
        // changed its ids since, or another process under a number used again, has other
        // groups, and the caller keeps its gid alone.
        let process = status.as_ref().map(|status| status.process);
        let groups = (status.filter(|status| status.fs_ids == Some((uid, gid))))
            .map(|status| status.groups)
            .unwrap_or_default();
        let caller = Caller { uid, gid, groups };
        Ok((caller, process))
    }

    /// Run `work` on the runtime with the inner state.
    fn spawn<F, Fut>(&self, work: F)
    where
        F: FnOnce(Arc<Inner>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let fut = work(self.inner.clone());
        self.inner.runtime.spawn(fut);
    }

    fn node_dir(&self, name: &OsStr) -> Option<u16> {
        let node: u16 = name.to_str()?.parse().ok()?;
        self.inner.cluster.nodes().contains(&node).then_some(node)
    }

    /// Process `pid` selects the node written: a number of the map, else EINVAL.
    fn select(&self, pid: i32, data: &[u8]) -> Result<(), Errno> {
        let node = std::str::from_utf8(data)
            .ok()
            .and_then(|t| t.trim().parse::<u16>().ok())
            .filter(|n| self.inner.cluster.nodes().contains(n))
            .ok_or(Errno::from_i32(libc::EINVAL))?;
        lock(&self.inner.selections).remember(&Proc, pid, node);
        Ok(())
    }

    /// A path request for `ino` answered with attributes, as for lookup and getattr.
    fn place_or_error(&self, ino: INodeNo) -> Result<Place, Errno> {
        self.inner.place(ino).ok_or(Errno::ENOENT)
    }
}

macro_rules! try_or_reply {
    ($reply:ident, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => return $reply.error(e),
        }
    };
}

impl Mfs {
    /// Make `name` in directory `parent` at its node, as `request` of the directory's path
    /// and the name asks, and answer with the new entry.
    fn make(
        &self,
        req: &FuseRequest,
        parent: INodeNo,
        name: &OsStr,
        reply: ReplyEntry,
        request: impl FnOnce(Bytes, Bytes) -> Request,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        let dir = try_or_reply!(reply, self.place_or_error(parent));
        let place = dir.child(name);
        let request = request(dir.path, name.as_bytes().to_vec());
        self.spawn(|inner| entry_answer(inner, place, caller, request, reply));
    }
}

impl Filesystem for Mfs {
    fn init(&mut self, _req: &FuseRequest, config: &mut KernelConfig) -> io::Result<()> {
        if let Err(max) = config.set_max_write(MAX_IO) {
            config.set_max_write(max).ok();
        }
        // Without these the kernel keeps locks to itself: they would hold within this node.
        if let Err(missing) =
            config.add_capabilities(InitFlags::FUSE_POSIX_LOCKS | InitFlags::FUSE_FLOCK_LOCKS)
        {
            warn!("MFS: this kernel keeps locks node-local: it lacks {missing:?}");
        }
        // Without it the kernel refuses every shared mapping of a direct-I/O file, read-only
        // ones too (docs/mfs.md says what a shared mapping sees).
        if let Err(missing) = config.add_capabilities(InitFlags::FUSE_DIRECT_IO_ALLOW_MMAP) {
            warn!("MFS: shared mappings of its files fail: this kernel lacks {missing:?}");
        }
        Ok(())
    }

    fn lookup(&self, req: &FuseRequest, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let caller = try_or_reply!(reply, self.caller(req));
        let place = if parent.0 == ROOT {
            if let Some(&(_, ino)) = SPECIAL.iter().find(|(n, _)| name == OsStr::new(n)) {
                return reply.entry(&TTL, &special_attr(ino), Generation(0));
            }
            if name == OsStr::new("select") {
                return reply.entry(&TTL, &special_attr(SELECT), Generation(0));
            }
            match self.node_dir(name) {
                Some(node) => Place {
                    node,
                    path: Vec::new(),
                },
                None => return reply.error(Errno::ENOENT),
            }
        } else {
            try_or_reply!(reply, self.place_or_error(parent)).child(name)
        };
        if name.len() > 255 {
            return reply.error(Errno::from_i32(libc::ENAMETOOLONG));
        }
        self.spawn(|inner| async move {
            let request = Request::Lookup {
                path: place.path.clone(),
            };
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Attr(a), _)) => {
                    let ino = inner.inodes().looked_up(place);
                    reply.entry(&TTL, &file_attr(ino, &a), Generation(0));
                }
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn forget(&self, _req: &FuseRequest, ino: INodeNo, nlookup: u64) {
        self.inner.inodes().forget(ino.0, nlookup);
    }

    fn getattr(&self, req: &FuseRequest, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let caller = try_or_reply!(reply, self.caller(req));
        if ino.0 < FIRST_PLACE {
            return reply.attr(&TTL, &special_attr(ino.0));
        }
        let place = try_or_reply!(reply, self.place_or_error(ino));
        // An open file is asked by its handle: it may have been removed or renamed since.
        let handle = fh.map(|fh| fh.0).or_else(|| {
            lock(&self.inner.open)
                .get(&ino.0)
                .and_then(|fhs| fhs.first().copied())
        });
        let request = match handle {
            Some(fh) => Request::Fstat { fh },
            None => Request::Lookup {
                path: place.path.clone(),
            },
        };
        self.spawn(|inner| async move {
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Attr(a), _)) => reply.attr(&TTL, &file_attr(ino.0, &a)),
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setattr(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        if ino.0 == SELECT {
            // `echo N > /mfs/select` truncates first; there is nothing to truncate.
            return reply.attr(&TTL, &special_attr(SELECT));
        }
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let request = Request::Setattr {
            path: place.path.clone(),
            fh: fh.map(|f| f.0),
            mode,
            uid,
            gid,
            size,
            atime: atime.map(time),
            mtime: mtime.map(time),
        };
        self.spawn(|inner| async move {
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Attr(a), _)) => reply.attr(&TTL, &file_attr(ino.0, &a)),
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readlink(&self, req: &FuseRequest, ino: INodeNo, reply: ReplyData) {
        let (caller, process) = try_or_reply!(reply, self.caller_and_process(req));
        let (tid, pid) = (req.pid(), process_of(req, process));
        if ino.0 == MAGIC {
            // Reading the caller's /proc/TID/syscall or memory waits while its process execs
            // (the kernel's exec_update_lock), and an exec may wait for this session to answer
            // the close of an MFS file: off the session's thread, which goes on answering.
            let inner = self.inner.clone();
            self.inner
                .runtime
                .spawn_blocking(move || reply_special(&inner, MAGIC, tid, pid, reply));
            return;
        }
        if ino.0 < FIRST_PLACE {
            return reply_special(&self.inner, ino.0, tid, pid, reply);
        }
        let place = try_or_reply!(reply, self.place_or_error(ino));
        self.spawn(|inner| async move {
            let request = Request::Readlink {
                path: place.path.clone(),
            };
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Target(t), _)) => reply.data(&confine(&inner.mountpoint, &place, t)),
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn mkdir(
        &self,
        req: &FuseRequest,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = mode & !umask;
        self.make(req, parent, name, reply, |parent, name| Request::Mkdir {
            parent,
            name,
            mode,
        });
    }

    fn mknod(
        &self,
        req: &FuseRequest,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // A device is refused here already; the serving node refuses it too.
        if !matches!(
            mode & libc::S_IFMT,
            libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK
        ) {
            return reply.error(Errno::EPERM);
        }
        let mode = mode & !umask;
        self.make(req, parent, name, reply, |parent, name| Request::Mknod {
            parent,
            name,
            mode,
        });
    }

    fn unlink(&self, req: &FuseRequest, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let caller = try_or_reply!(reply, self.caller(req));
        let dir = try_or_reply!(reply, self.place_or_error(parent));
        let request = Request::Unlink {
            parent: dir.path,
            name: name.as_bytes().to_vec(),
        };
        self.spawn(|inner| done_answer(inner, dir.node, caller, request, reply));
    }

    fn rmdir(&self, req: &FuseRequest, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let caller = try_or_reply!(reply, self.caller(req));
        let dir = try_or_reply!(reply, self.place_or_error(parent));
        let request = Request::Rmdir {
            parent: dir.path,
            name: name.as_bytes().to_vec(),
        };
        self.spawn(|inner| done_answer(inner, dir.node, caller, request, reply));
    }

    fn symlink(
        &self,
        req: &FuseRequest,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let target = target.as_os_str().as_bytes().to_vec();
        self.make(req, parent, link_name, reply, |parent, name| {
            Request::Symlink {
                parent,
                name,
                target,
            }
        });
    }

    fn rename(
        &self,
        req: &FuseRequest,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        let from = try_or_reply!(reply, self.place_or_error(parent));
        let to = try_or_reply!(reply, self.place_or_error(newparent));
        if from.node != to.node {
            return reply.error(Errno::from_i32(libc::EXDEV));
        }
        let (old, new) = (from.child(name), to.child(newname));
        let request = Request::Rename {
            parent: from.path,
            name: name.as_bytes().to_vec(),
            new_parent: to.path,
            new_name: newname.as_bytes().to_vec(),
            flags: flags.bits(),
        };
        self.spawn(|inner| async move {
            match inner.ask(old.node, caller, request, Vec::new()).await {
                Ok(_) => {
                    inner.inodes().renamed(&old, &new);
                    reply.ok();
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn link(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        let old = try_or_reply!(reply, self.place_or_error(ino));
        let dir = try_or_reply!(reply, self.place_or_error(newparent));
        if old.node != dir.node {
            return reply.error(Errno::from_i32(libc::EXDEV));
        }
        let place = dir.child(newname);
        let request = Request::Link {
            path: old.path,
            new_parent: dir.path,
            new_name: newname.as_bytes().to_vec(),
        };
        self.spawn(|inner| entry_answer(inner, place, caller, request, reply));
    }

    fn open(&self, req: &FuseRequest, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let caller = try_or_reply!(reply, self.caller(req));
        if ino.0 == SELECT {
            return reply.opened(FileHandle(0), FopenFlags::FOPEN_DIRECT_IO);
        }
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let request = Request::Open {
            path: place.path,
            flags: flags.0,
        };
        self.spawn(|inner| async move {
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Opened { fh, .. }, _)) => {
                    lock(&inner.open).entry(ino.0).or_default().push(fh);
                    reply.opened(FileHandle(fh), FopenFlags::FOPEN_DIRECT_IO);
                }
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn create(
        &self,
        req: &FuseRequest,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        let dir = try_or_reply!(reply, self.place_or_error(parent));
        let place = dir.child(name);
        let request = Request::Create {
            parent: dir.path,
            name: name.as_bytes().to_vec(),
            mode: mode & !umask,
            flags,
        };
        self.spawn(|inner| async move {
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Opened { fh, attr }, _)) => {
                    let ino = inner.inodes().looked_up(place);
                    lock(&inner.open).entry(ino).or_default().push(fh);
                    reply.created(
                        &TTL,
                        &file_attr(ino, &attr),
                        Generation(0),
                        FileHandle(fh),
                        FopenFlags::FOPEN_DIRECT_IO,
                    );
                }
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn read(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let (caller, process) = try_or_reply!(reply, self.caller_and_process(req));
        if ino.0 == SELECT {
            let text = self.inner.selection_text(process_of(req, process));
            let start = (offset as usize).min(text.len());
            return reply.data(&text.as_bytes()[start..]);
        }
        let place = try_or_reply!(reply, self.place_or_error(ino));
        self.spawn(|inner| async move {
            let read = inner
                .clone()
                .read(place.node, caller, fh.0, offset, size.min(MAX_IO))
                .await;
            match read {
                Ok(data) => {
                    reply.data(&data);
                    inner.count(process, place.node, data.len());
                }
                Err(e) => reply.error(e),
            }
        });
    }

    fn write(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let (caller, process) = try_or_reply!(reply, self.caller_and_process(req));
        if ino.0 == SELECT {
            return match self.select(process_of(req, process), data) {
                Ok(()) => reply.written(data.len() as u32),
                Err(e) => reply.error(e),
            };
        }
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let request = Request::Write { fh: fh.0, offset };
        // With room for the call's head (protocol::encode).
        let data = {
            let mut owned = Vec::with_capacity(data.len() + HEAD_ROOM);
            owned.extend_from_slice(data);
            owned
        };
        self.spawn(|inner| async move {
            match inner.ask(place.node, caller, request, data).await {
                Ok((Answer::Written(n), _)) => {
                    reply.written(n);
                    inner.count(process, place.node, n as usize);
                }
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn flush(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        fh: FileHandle,
        owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is buffered here: every write has reached the serving node already. A
        // process's close of any descriptor of a file drops the process's fcntl locks on it,
        // and the kernel leaves that to a file system with locks of its own (libfuse's flush:
        // "remove all locks belonging to 'lock_owner'").
        if !lock(&self.inner.locked).remove(&(ino.0, owner.0)) {
            return reply.ok();
        }
        let caller = try_or_reply!(reply, self.caller(req));
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let request = unlock_all(fh.0, owner.0);
        self.spawn(|inner| done_answer(inner, place.node, caller, request, reply));
    }

    fn getlk(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        reply: ReplyLock,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let request = Request::GetLock {
            fh: fh.0,
            owner: lock_owner.0,
            typ,
            start,
            end,
        };
        self.spawn(|inner| async move {
            match inner.ask(place.node, caller, request, Vec::new()).await {
                // The holder is a process of another node, or another open: no PID to name.
                Ok((Answer::Lock { typ, start, end }, _)) => reply.locked(start, end, typ, 0),
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn setlk(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        fh: FileHandle,
        lock_owner: LockOwner,
        start: u64,
        end: u64,
        typ: i32,
        _pid: u32,
        sleep: bool,
        reply: ReplyEmpty,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let (owner, thread) = (lock_owner.0, req.pid());
        let request = Request::Lock {
            fh: fh.0,
            owner,
            typ,
            start,
            end,
        };
        self.spawn(|inner| async move {
            loop {
                match inner
                    .ask(place.node, caller.clone(), request.clone(), Vec::new())
                    .await
                {
                    Ok(_) => {
                        if typ != libc::F_UNLCK {
                            lock(&inner.locked).insert((ino.0, owner));
                        }
                        return reply.ok();
                    }
                    // Held by another: try again while the caller waits, until it has a signal
                    // to take (the kernel no longer ends its wait: see `signals`).
                    Err(e) if sleep && (e == Errno::EAGAIN || e == Errno::EACCES) => {
                        if signals::pending_for(thread) {
                            return reply.error(Errno::EINTR);
                        }
                        tokio::time::sleep(LOCK_RETRY).await;
                    }
                    Err(e) => return reply.error(e),
                }
            }
        });
    }

    fn release(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // The kernel does not wait for the serving node: a dead node's handles are gone anyway.
        reply.ok();
        // The last close of an open file that set flock locks: the kernel names the open file
        // as their owner. (The serving node drops them with the handle too, unless the node
        // still has another handle of the file open.)
        let flock_owner = lock_owner.filter(|o| lock(&self.inner.locked).remove(&(ino.0, o.0)));
        if let Some(fhs) = lock(&self.inner.open).get_mut(&ino.0) {
            fhs.retain(|&h| h != fh.0);
        }
        lock(&self.inner.open).retain(|_, fhs| !fhs.is_empty());
        let Some(place) = self.inner.place(ino) else {
            return;
        };
        let caller = Caller {
            uid: req.uid(),
            gid: req.gid(),
            groups: Vec::new(),
        };
        self.spawn(|inner| async move {
            if let Some(owner) = flock_owner {
                let unlock = unlock_all(fh.0, owner.0);
                let _ = inner
                    .ask(place.node, caller.clone(), unlock, Vec::new())
                    .await;
            }
            let _ = inner
                .ask(
                    place.node,
                    caller,
                    Request::Release { fh: fh.0 },
                    Vec::new(),
                )
                .await;
        });
    }

    fn fsync(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let caller = try_or_reply!(reply, self.caller(req));
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let request = Request::Fsync { fh: fh.0, datasync };
        self.spawn(|inner| done_answer(inner, place.node, caller, request, reply));
    }

    fn fsyncdir(
        &self,
        req: &FuseRequest,
        ino: INodeNo,
        _fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // MFS's root and the per-process directories hold nothing of any node's disk.
        if ino.0 == ROOT {
            return reply.ok();
        }
        let caller = try_or_reply!(reply, self.caller(req));
        let place = try_or_reply!(reply, self.place_or_error(ino));
        let request = Request::FsyncDir {
            path: place.path,
            datasync,
        };
        self.spawn(|inner| done_answer(inner, place.node, caller, request, reply));
    }

    fn opendir(&self, req: &FuseRequest, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let caller = try_or_reply!(reply, self.caller(req));
        let listing = self.inner.next_listing.fetch_add(1, Ordering::Relaxed);
        if ino.0 == ROOT {
            let mut entries: Listing = SPECIAL
                .iter()
                .map(|&(name, ino)| (ino, FileType::Symlink, name.as_bytes().to_vec()))
                .collect();
            entries.push((SELECT, FileType::RegularFile, b"select".to_vec()));
            for node in self.inner.cluster.nodes() {
                entries.push((ROOT, FileType::Directory, node.to_string().into_bytes()));
            }
            lock(&self.inner.listings).insert(listing, with_dots(ino.0, entries));
            return reply.opened(FileHandle(listing), FopenFlags::empty());
        }
        let place = try_or_reply!(reply, self.place_or_error(ino));
        self.spawn(|inner| async move {
            let request = Request::Readdir { path: place.path };
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Entries(list), _)) => {
                    let entries = list
                        .into_iter()
                        .map(|e| (e.ino.max(1), kind(e.kind), e.name))
                        .collect();
                    lock(&inner.listings).insert(listing, with_dots(ino.0, entries));
                    reply.opened(FileHandle(listing), FopenFlags::empty());
                }
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn readdir(
        &self,
        _req: &FuseRequest,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let listings = lock(&self.inner.listings);
        let Some(entries) = listings.get(&fh.0) else {
            return reply.error(Errno::EBADF);
        };
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), i as u64 + 1, *kind, OsStr::from_bytes(name)) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &FuseRequest,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        lock(&self.inner.listings).remove(&fh.0);
        reply.ok();
    }

    fn statfs(&self, req: &FuseRequest, ino: INodeNo, reply: ReplyStatfs) {
        let caller = try_or_reply!(reply, self.caller(req));
        let Some(place) = self.inner.place(ino) else {
            return reply.statfs(0, 0, 0, 0, 0, 4096, 255, 4096);
        };
        self.spawn(|inner| async move {
            let request = Request::Statfs { path: place.path };
            match inner.ask(place.node, caller, request, Vec::new()).await {
                Ok((Answer::Statfs(s), _)) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                Ok(_) => reply.error(Errno::EIO),
                Err(e) => reply.error(e),
            }
        });
    }

    fn access(&self, req: &FuseRequest, ino: INodeNo, mask: AccessFlags, reply: ReplyEmpty) {
        let caller = try_or_reply!(reply, self.caller(req));
        let Some(place) = self.inner.place(ino) else {
            // The root and the special symlinks: everyone may look, nobody may write but
            // to `select`.
            return match mask.bits() & libc::W_OK {
                _ if ino.0 == SELECT => reply.ok(),
                0 => reply.ok(),
                _ => reply.error(Errno::EACCES),
            };
        };
        let request = Request::Access {
            path: place.path,
            mask: mask.bits(),
        };
        self.spawn(|inner| done_answer(inner, place.node, caller, request, reply));
    }
}

/// Answer a request that creates `place` with its entry.
async fn entry_answer(
    inner: Arc<Inner>,
    place: Place,
    caller: Caller,
    request: Request,
    reply: ReplyEntry,
) {
    match inner.ask(place.node, caller, request, Vec::new()).await {
        Ok((Answer::Attr(a), _)) => {
            let ino = inner.inodes().looked_up(place);
            reply.entry(&TTL, &file_attr(ino, &a), Generation(0));
        }
        Ok(_) => reply.error(Errno::EIO),
        Err(e) => reply.error(e),
    }
}

/// Answer the readlink of special symlink `ino` by thread `tid` of process `pid`.
fn reply_special(inner: &Inner, ino: u64, tid: u32, pid: i32, reply: ReplyData) {
    match inner.readlink_special(ino, tid, pid) {
        Some(target) => reply.data(&target),
        None => reply.error(Errno::ENOENT),
    }
}

/// Answer a request that returns nothing.
async fn done_answer(
    inner: Arc<Inner>,
    node: u16,
    caller: Caller,
    request: Request,
    reply: ReplyEmpty,
) {
    match inner.ask(node, caller, request, Vec::new()).await {
        Ok(_) => reply.ok(),
        Err(e) => reply.error(e),
    }
}

/// Clear every lock of `owner` on the file of `fh`.
fn unlock_all(fh: u64, owner: u64) -> Request {
    Request::Lock {
        fh,
        owner,
        typ: libc::F_UNLCK,
        start: 0,
        end: u64::MAX,
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn with_dots(ino: u64, mut entries: Listing) -> Listing {
    let mut all = vec![
        (ino, FileType::Directory, b".".to_vec()),
        (ino, FileType::Directory, b"..".to_vec()),
    ];
    all.append(&mut entries);
    all
}

fn time(t: TimeOrNow) -> Time {
    match t {
        TimeOrNow::Now => Time::Now,
        TimeOrNow::SpecificTime(at) => match at.duration_since(UNIX_EPOCH) {
            Ok(d) => Time::At {
                secs: d.as_secs() as i64,
                nanos: d.subsec_nanos(),
            },
            Err(before) => Time::At {
                secs: -(before.duration().as_secs_f64().ceil() as i64),
                nanos: 0,
            },
        },
    }
}

fn kind(mode: u32) -> FileType {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => FileType::Directory,
        libc::S_IFLNK => FileType::Symlink,
        libc::S_IFCHR => FileType::CharDevice,
        libc::S_IFBLK => FileType::BlockDevice,
        libc::S_IFIFO => FileType::NamedPipe,
        libc::S_IFSOCK => FileType::Socket,
        _ => FileType::RegularFile,
    }
}

fn system_time((secs, nanos): (i64, u32)) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

fn file_attr(ino: u64, a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(ino),
        size: a.size,
        blocks: a.blocks,
        atime: system_time(a.atime),
        mtime: system_time(a.mtime),
        ctime: system_time(a.ctime),
        crtime: UNIX_EPOCH,
        kind: kind(a.mode),
        perm: (a.mode & 0o7777) as u16,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev,
        blksize: a.blksize,
        flags: 0,
    }
}

/// The root (a directory nobody writes) and the special symlinks.
fn special_attr(ino: u64) -> FileAttr {
    let (kind, perm, size) = match ino {
        ROOT => (FileType::Directory, 0o555, 0),
        SELECT => (FileType::RegularFile, 0o666, 0),
        _ => (FileType::Symlink, 0o777, 5),
    };
    FileAttr {
        ino: INodeNo(ino),
        size,
        blocks: 0,
        atime: UNIX_EPOCH,
        mtime: UNIX_EPOCH,
        ctime: UNIX_EPOCH,
        crtime: UNIX_EPOCH,
        kind,
        perm,
        nlink: if ino == ROOT { 2 } else { 1 },
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 4096,
        flags: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_move_what_lies_below() {
        let mut inodes = Inodes::default();
        let at = |p: &str| Place {
            node: 1,
            path: p.as_bytes().to_vec(),
        };
        let dir = inodes.looked_up(at("tmp/a"));
        let file = inodes.looked_up(at("tmp/a/f"));
        let other = inodes.looked_up(at("tmp/ab"));
        inodes.renamed(&at("tmp/a"), &at("tmp/b"));
        assert_eq!(inodes.by_ino[&dir].0, at("tmp/b"));
        assert_eq!(inodes.by_ino[&file].0, at("tmp/b/f"));
        assert_eq!(inodes.by_ino[&other].0, at("tmp/ab"));
        assert_eq!(inodes.by_place.get(&at("tmp/a/f")), None);
        inodes.forget(file, 1);
        assert!(!inodes.by_ino.contains_key(&file));
    }

    #[test]
    fn symlinks_that_leave_a_node_tree_are_led_back_into_it() {
        let link = Place {
            node: 3,
            path: b"tmp/d/l".to_vec(),
        };
        let shown =
            |t: &str| String::from_utf8(confine(Path::new("/mfs"), &link, t.into())).unwrap();
        // Within the tree: as stored.
        assert_eq!(shown("x"), "x");
        assert_eq!(shown("../../etc/x"), "../../etc/x");
        // Absolute, or climbing above the node's root (where `..` stays at the root).
        assert_eq!(shown("/etc/passwd"), "/mfs/3/etc/passwd");
        assert_eq!(shown("../../../../etc/./x"), "/mfs/3/etc/x");
        assert_eq!(shown("/mfs/2/tmp"), "/mfs/3/mfs/2/tmp");
    }
}
