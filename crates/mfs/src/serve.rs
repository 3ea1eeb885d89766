//! Executing file requests at this node, each as its caller.
//!
//! A [`Server`] owns a few worker threads. Each worker has its own file-system context
//! (`creds::Worker::start`) and takes on the caller's fsuid, fsgid and groups before every
//! request (`Worker::become_caller`), so the kernel checks the access exactly as for a process
//! of that user here. Root is mapped to `nobody` unless the server trusts root
//! ([`Policy::trust_root`]). A [`Session`] is one requester (a peer's link, or this node's own
//! MFS): the files it opened are its own, and close when it ends.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use tokio::sync::oneshot;
use tracing::warn;

use crate::creds;
use crate::locks::{self, FileId, OwnerKey, Owners};
use crate::protocol::{Answer, Attr, Caller, Entry, HEAD_ROOM, MAX_IO, Request, Statfs, Time};
use crate::resolve::{self, Errno, check, last};

/// The uid and gid root is mapped to, unless trusted.
pub const NOBODY: u32 = 65534;

/// Open flags a requester may pass on; the others (O_CREAT, O_DIRECT, O_PATH, ...) are
/// this server's to choose.
const PASSED_FLAGS: i32 = libc::O_ACCMODE
    | libc::O_APPEND
    | libc::O_TRUNC
    | libc::O_SYNC
    | libc::O_DSYNC
    | libc::O_NOATIME
    | libc::O_LARGEFILE;

/// What a server allows.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// Run root's requests as root. Off by default: a root on one node would otherwise be root
    /// on every node's files.
    pub trust_root: bool,
}

/// One request for a worker.
struct Job {
    session: u64,
    caller: Caller,
    request: Request,
    data: Vec<u8>,
    answer: oneshot::Sender<(Answer, Vec<u8>)>,
}

/// The workers and the files every session holds open.
pub struct Server {
    root: OwnedFd,
    policy: Policy,
    jobs: Mutex<mpsc::Sender<Job>>,
    handles: Mutex<HashMap<u64, Handle>>,
    /// The descriptions that hold each lock owner's locks (`locks`). Locked while a lock is
    /// set, so that a lock and an unlock of one owner never cross.
    owners: Mutex<Owners<OwnedFd>>,
    next_handle: AtomicU64,
    next_session: AtomicU64,
}

/// An open file and the session it belongs to.
struct Handle {
    session: u64,
    file: Arc<OwnedFd>,
    id: FileId,
}

/// One requester of a [`Server`].
pub struct Session {
    server: Arc<Server>,
    id: u64,
}

impl Server {
    /// Serve the tree at `root` (`/` in the daemon) with `workers` threads.
    pub fn start(root: &Path, policy: Policy, workers: usize) -> std::io::Result<Arc<Server>> {
        let root = std::fs::File::open(root)?.into();
        let (tx, rx) = mpsc::channel::<Job>();
        let server = Arc::new(Server {
            root,
            policy,
            jobs: Mutex::new(tx),
            handles: Mutex::default(),
            owners: Mutex::default(),
            next_handle: AtomicU64::new(1),
            next_session: AtomicU64::new(1),
        });
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..workers.max(1) {
            let (server, rx) = (Arc::downgrade(&server), rx.clone());
            std::thread::Builder::new()
                .name(format!("mfs-{i}"))
                .spawn(move || work(&server, &rx))?;
        }
        Ok(server)
    }

    /// A new requester.
    pub fn session(self: &Arc<Self>) -> Session {
        Session {
            server: self.clone(),
            id: self.next_session.fetch_add(1, Ordering::Relaxed),
        }
    }

    fn root(&self) -> RawFd {
        self.root.as_raw_fd()
    }

    /// The ids a request runs with.
    fn identity(&self, caller: Caller) -> Caller {
        if caller.uid == 0 && !self.policy.trust_root {
            return Caller {
                uid: NOBODY,
                gid: NOBODY,
                groups: Vec::new(),
            };
        }
        caller
    }

    fn file(&self, session: u64, fh: u64) -> Result<Arc<OwnedFd>, Errno> {
        self.file_and_id(session, fh).map(|(file, _)| file)
    }

    fn file_and_id(&self, session: u64, fh: u64) -> Result<(Arc<OwnedFd>, FileId), Errno> {
        match lock(&self.handles).get(&fh) {
            Some(h) if h.session == session => Ok((h.file.clone(), h.id)),
            _ => Err(libc::EBADF),
        }
    }

    /// Keep `file` (which `st` describes) open for `session`: its handle.
    fn keep(&self, session: u64, file: OwnedFd, st: &libc::stat) -> u64 {
        let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
        let handle = Handle {
            session,
            file: Arc::new(file),
            id: FileId::of(st),
        };
        lock(&self.handles).insert(fh, handle);
        fh
    }

    /// Close handle `fh` of `session`. The session's last handle of a file takes the locks
    /// of its owners on that file with it: no process of the requesting node has the file
    /// open any more, so none can hold a lock on it.
    fn close(&self, session: u64, fh: u64) -> Result<(), Errno> {
        let (_, id) = self.file_and_id(session, fh)?;
        let mut handles = lock(&self.handles);
        handles.remove(&fh);
        if !handles.values().any(|h| h.session == session && h.id == id) {
            lock(&self.owners).forget_file(session, id);
        }
        Ok(())
    }

    /// Open `path` (relative to the root) as an O_PATH descriptor of the object itself.
    fn object(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        resolve::open_below(
            self.root(),
            &resolve::path(path)?,
            libc::O_PATH | libc::O_NOFOLLOW,
            0,
        )
    }

    fn directory(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        resolve::open_below(
            self.root(),
            &resolve::path(path)?,
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )
    }

    /// Attributes of `name` in `dir`.
    fn attr_in(&self, dir: &OwnedFd, name: &CString) -> Result<Attr, Errno> {
        let fd = resolve::open_below(dir.as_raw_fd(), name, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
        Ok(attr(&resolve::stat(&fd)?))
    }

    /// A regular file, opened as asked. Anything else (device, fifo, socket) is EACCES: its
    /// meaning is the serving node's hardware or processes, and opening a fifo would block.
    /// The type is checked before the open (no open of a device at all) and again after it
    /// (the object may have been replaced in between).
    fn open_regular(
        &self,
        dir: RawFd,
        path: &CString,
        flags: i32,
        mode: u32,
    ) -> Result<OwnedFd, Errno> {
        if flags & libc::O_CREAT == 0 {
            let probe = resolve::open_below(dir, path, libc::O_PATH | libc::O_NOFOLLOW, 0)?;
            regular(&resolve::stat(&probe)?)?;
        }
        let flags = (flags & PASSED_FLAGS)
            | (flags & (libc::O_CREAT | libc::O_EXCL))
            | libc::O_NOFOLLOW
            | libc::O_NOCTTY
            | libc::O_NONBLOCK;
        let fd = resolve::open_below(dir, path, flags, mode)?;
        regular(&resolve::stat(&fd)?)?;
        Ok(fd)
    }

    fn execute(
        &self,
        session: u64,
        request: Request,
        data: &[u8],
    ) -> Result<(Answer, Vec<u8>), Errno> {
        let done = |answer| Ok((answer, Vec::new()));
        match request {
            Request::Lookup { path } => {
                done(Answer::Attr(attr(&resolve::stat(&self.object(&path)?)?)))
            }
            Request::Fstat { fh } => done(Answer::Attr(attr(&resolve::stat(
                &*self.file(session, fh)?,
            )?))),
            Request::Setattr {
                path,
                fh,
                mode,
                uid,
                gid,
                size,
                atime,
                mtime,
            } => {
                let fd = self.object(&path)?;
                if let Some(mode) = mode {
                    // SAFETY: a valid C string.
                    check(unsafe { libc::chmod(resolve::fd_path(&fd).as_ptr(), mode & 0o7777) })?;
                }
                if uid.is_some() || gid.is_some() {
                    // SAFETY: an empty C string and a valid descriptor; -1 leaves an id as is.
                    check(unsafe {
                        libc::fchownat(
                            fd.as_raw_fd(),
                            c"".as_ptr(),
                            uid.unwrap_or(u32::MAX),
                            gid.unwrap_or(u32::MAX),
                            libc::AT_EMPTY_PATH | libc::AT_SYMLINK_NOFOLLOW,
                        )
                    })?;
                }
                if let Some(size) = size {
                    let file = match fh {
                        Some(fh) => self.file(session, fh)?,
                        None => Arc::new(self.open_regular(
                            self.root(),
                            &resolve::path(&path)?,
                            libc::O_WRONLY,
                            0,
                        )?),
                    };
                    // SAFETY: a valid descriptor.
                    check(unsafe { libc::ftruncate(file.as_raw_fd(), size as libc::off_t) })?;
                }
                if atime.is_some() || mtime.is_some() {
                    let times = [timespec(atime), timespec(mtime)];
                    // SAFETY: a valid C string and two timespecs.
                    check(unsafe {
                        libc::utimensat(
                            libc::AT_FDCWD,
                            resolve::fd_path(&fd).as_ptr(),
                            times.as_ptr(),
                            0,
                        )
                    })?;
                }
                done(Answer::Attr(attr(&resolve::stat(&fd)?)))
            }
            Request::Readlink { path } => {
                let fd = self.object(&path)?;
                let mut buf = vec![0u8; libc::PATH_MAX as usize];
                // SAFETY: the buffer is as long as said; an empty path reads the O_PATH
                // descriptor's own link.
                let n = unsafe {
                    libc::readlinkat(
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        buf.as_mut_ptr().cast(),
                        buf.len(),
                    )
                };
                if n < 0 {
                    return Err(last());
                }
                buf.truncate(n as usize);
                done(Answer::Target(buf))
            }
            Request::Readdir { path } => done(Answer::Entries(self.read_dir(&path)?)),
            Request::Open { path, flags } => {
                let fd = self.open_regular(
                    self.root(),
                    &resolve::path(&path)?,
                    flags & !libc::O_CREAT,
                    0,
                )?;
                let st = resolve::stat(&fd)?;
                done(Answer::Opened {
                    fh: self.keep(session, fd, &st),
                    attr: attr(&st),
                })
            }
            Request::Create {
                parent,
                name,
                mode,
                flags,
            } => {
                let dir = self.directory(&parent)?;
                let fd = self.open_regular(
                    dir.as_raw_fd(),
                    &resolve::name(&name)?,
                    flags | libc::O_CREAT,
                    mode,
                )?;
                let st = resolve::stat(&fd)?;
                done(Answer::Opened {
                    fh: self.keep(session, fd, &st),
                    attr: attr(&st),
                })
            }
            Request::Read { fh, offset, size } => {
                let file = self.file(session, fh)?;
                let size = size.min(MAX_IO) as usize;
                // Room for the reply's head after the bytes (protocol::encode), and no
                // zeroing of what pread fills.
                let mut buf: Vec<u8> = Vec::with_capacity(size + HEAD_ROOM);
                // SAFETY: the buffer has room for `size` bytes; pread writes at most that.
                let n = unsafe {
                    libc::pread(
                        file.as_raw_fd(),
                        buf.as_mut_ptr().cast(),
                        size,
                        offset as libc::off_t,
                    )
                };
                if n < 0 {
                    return Err(last());
                }
                // SAFETY: pread initialised the first `n` bytes (n <= size <= capacity).
                unsafe { buf.set_len(n as usize) };
                Ok((Answer::Data, buf))
            }
            Request::Write { fh, offset } => {
                let file = self.file(session, fh)?;
                // SAFETY: `data` is valid for its length.
                let n = unsafe {
                    libc::pwrite(
                        file.as_raw_fd(),
                        data.as_ptr().cast(),
                        data.len(),
                        offset as libc::off_t,
                    )
                };
                if n < 0 {
                    return Err(last());
                }
                done(Answer::Written(n as u32))
            }
            Request::Lock {
                fh,
                owner,
                typ,
                start,
                end,
            } => {
                let (file, id) = self.file_and_id(session, fh)?;
                let key = owner_key(session, id, owner);
                locks::set(&mut lock(&self.owners), key, &file, typ, start, end)?;
                done(Answer::Done)
            }
            Request::GetLock {
                fh,
                owner,
                typ,
                start,
                end,
            } => {
                let (file, id) = self.file_and_id(session, fh)?;
                let key = owner_key(session, id, owner);
                let (typ, start, end) =
                    locks::get(&lock(&self.owners), &key, &file, typ, start, end)?;
                done(Answer::Lock { typ, start, end })
            }
            Request::Release { fh } => {
                self.close(session, fh)?;
                done(Answer::Done)
            }
            Request::Fsync { fh, datasync } => {
                sync(self.file(session, fh)?.as_raw_fd(), datasync)?;
                done(Answer::Done)
            }
            Request::FsyncDir { path, datasync } => {
                sync(self.open_dir(&path)?.as_raw_fd(), datasync)?;
                done(Answer::Done)
            }
            Request::Mknod { parent, name, mode } => {
                // A device's meaning is this node's hardware: MFS makes none, as it opens
                // none. A FIFO or socket may be made (`cp -a` of a tree makes them), not
                // opened through MFS.
                match mode & libc::S_IFMT {
                    libc::S_IFREG | libc::S_IFIFO | libc::S_IFSOCK => {}
                    _ => return Err(libc::EPERM),
                }
                let (dir, name) = (self.directory(&parent)?, resolve::name(&name)?);
                // SAFETY: a valid descriptor and C string.
                check(unsafe { libc::mknodat(dir.as_raw_fd(), name.as_ptr(), mode, 0) })?;
                done(Answer::Attr(self.attr_in(&dir, &name)?))
            }
            Request::Mkdir { parent, name, mode } => {
                let (dir, name) = (self.directory(&parent)?, resolve::name(&name)?);
                // SAFETY: a valid descriptor and C string.
                check(unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode) })?;
                done(Answer::Attr(self.attr_in(&dir, &name)?))
            }
            Request::Rmdir { parent, name } => {
                self.remove(&parent, &name, libc::AT_REMOVEDIR)?;
                done(Answer::Done)
            }
            Request::Unlink { parent, name } => {
                self.remove(&parent, &name, 0)?;
                done(Answer::Done)
            }
            Request::Rename {
                parent,
                name,
                new_parent,
                new_name,
                flags,
            } => {
                let (dir, name) = (self.directory(&parent)?, resolve::name(&name)?);
                let (new_dir, new_name) = (self.directory(&new_parent)?, resolve::name(&new_name)?);
                // SAFETY: valid descriptors and C strings.
                check(unsafe {
                    libc::renameat2(
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        new_dir.as_raw_fd(),
                        new_name.as_ptr(),
                        flags,
                    )
                })?;
                done(Answer::Done)
            }
            Request::Symlink {
                parent,
                name,
                target,
            } => {
                let (dir, name) = (self.directory(&parent)?, resolve::name(&name)?);
                let target = CString::new(target).map_err(|_| libc::EINVAL)?;
                // SAFETY: a valid descriptor and C strings.
                check(unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) })?;
                done(Answer::Attr(self.attr_in(&dir, &name)?))
            }
            Request::Link {
                path,
                new_parent,
                new_name,
            } => {
                let (old_parent, old_name) = resolve::split(&path);
                let (old_dir, old_name) = (self.directory(old_parent)?, resolve::name(old_name)?);
                let (dir, name) = (self.directory(&new_parent)?, resolve::name(&new_name)?);
                // SAFETY: valid descriptors and C strings.
                check(unsafe {
                    libc::linkat(
                        old_dir.as_raw_fd(),
                        old_name.as_ptr(),
                        dir.as_raw_fd(),
                        name.as_ptr(),
                        0,
                    )
                })?;
                done(Answer::Attr(self.attr_in(&dir, &name)?))
            }
            Request::Statfs { path } => {
                let fd = self.object(&path)?;
                // SAFETY: an all-zero statvfs is valid for the kernel to overwrite.
                let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
                // SAFETY: a valid descriptor and statvfs.
                check(unsafe { libc::fstatvfs(fd.as_raw_fd(), &mut st) })?;
                done(Answer::Statfs(Statfs {
                    blocks: st.f_blocks,
                    bfree: st.f_bfree,
                    bavail: st.f_bavail,
                    files: st.f_files,
                    ffree: st.f_ffree,
                    bsize: st.f_bsize as u32,
                    namelen: st.f_namemax as u32,
                    frsize: st.f_frsize as u32,
                }))
            }
            Request::Access { path, mask } => {
                let fd = self.object(&path)?;
                // SAFETY: a valid descriptor and an empty C string. AT_EACCESS: check with the
                // thread's file-system ids, which are the caller's.
                check(unsafe {
                    libc::syscall(
                        libc::SYS_faccessat2,
                        fd.as_raw_fd(),
                        c"".as_ptr(),
                        mask,
                        libc::AT_EACCESS | libc::AT_EMPTY_PATH,
                    ) as i32
                })?;
                done(Answer::Done)
            }
        }
    }

    /// unlinkat(2) of `name` in `parent`.
    fn remove(&self, parent: &[u8], name: &[u8], flags: i32) -> Result<(), Errno> {
        let (dir, name) = (self.directory(parent)?, resolve::name(name)?);
        // SAFETY: a valid descriptor and C string.
        check(unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags) })
    }

    /// Directory `path`, opened to read it.
    fn open_dir(&self, path: &[u8]) -> Result<OwnedFd, Errno> {
        resolve::open_below(
            self.root(),
            &resolve::path(path)?,
            libc::O_RDONLY | libc::O_DIRECTORY,
            0,
        )
    }

    fn read_dir(&self, path: &[u8]) -> Result<Vec<Entry>, Errno> {
        let fd = self.open_dir(path)?;
        let raw = std::os::fd::IntoRawFd::into_raw_fd(fd);
        // SAFETY: fdopendir takes ownership of the descriptor, closed by closedir below.
        let dir = unsafe { libc::fdopendir(raw) };
        if dir.is_null() {
            let e = last();
            // SAFETY: fdopendir failed, so the descriptor is still ours to close.
            unsafe { libc::close(raw) };
            return Err(e);
        }
        let mut entries = Vec::new();
        loop {
            // SAFETY: `dir` is an open directory stream; readdir's entry is valid until the
            // next call on it, and is copied before that.
            let ent = unsafe { libc::readdir64(dir) };
            if ent.is_null() {
                break;
            }
            // SAFETY: d_name is NUL-terminated.
            let name = unsafe { std::ffi::CStr::from_ptr((*ent).d_name.as_ptr()) }.to_bytes();
            if name == b"." || name == b".." {
                continue;
            }
            // SAFETY: as above.
            let kind = dtype_to_mode(unsafe { (*ent).d_type });
            entries.push(Entry {
                name: name.to_vec(),
                // SAFETY: as above.
                ino: unsafe { (*ent).d_ino },
                kind,
            });
        }
        // SAFETY: `dir` is open and closed once.
        unsafe { libc::closedir(dir) };
        Ok(entries)
    }
}

impl Session {
    /// Run `request` as `caller` on a worker; `data` is a write's bytes. The answer comes with
    /// the bytes of a read.
    pub async fn call(&self, caller: Caller, request: Request, data: Vec<u8>) -> (Answer, Vec<u8>) {
        let (tx, rx) = oneshot::channel();
        let job = Job {
            session: self.id,
            caller,
            request,
            data,
            answer: tx,
        };
        if lock(&self.server.jobs).send(job).is_err() {
            return (Answer::Error(libc::EIO), Vec::new());
        }
        rx.await.unwrap_or((Answer::Error(libc::EIO), Vec::new()))
    }
}

impl Drop for Session {
    /// Close the files the requester left open and drop its locks (its link ended).
    fn drop(&mut self) {
        lock(&self.server.handles).retain(|_, h| h.session != self.id);
        lock(&self.server.owners).forget_session(self.id);
    }
}

/// A worker: take jobs until the server is gone.
fn work(server: &std::sync::Weak<Server>, jobs: &Mutex<mpsc::Receiver<Job>>) {
    let worker = match creds::Worker::start() {
        Ok(worker) => worker,
        Err(e) => {
            warn!("MFS worker cannot have a file-system context of its own: {e}");
            return;
        }
    };
    loop {
        let job = match lock(jobs).recv() {
            Ok(job) => job,
            Err(_) => return,
        };
        let Some(server) = server.upgrade() else {
            return;
        };
        let identity = server.identity(job.caller);
        let result = match worker.become_caller(&identity) {
            Ok(()) => server.execute(job.session, job.request, &job.data),
            Err(e) => {
                warn!(
                    uid = identity.uid,
                    "MFS worker cannot take the caller's ids: {e}"
                );
                Err(libc::EACCES)
            }
        };
        let answer = result.unwrap_or_else(|errno| (Answer::Error(errno), Vec::new()));
        // The requester may have gone; nothing to do then.
        let _ = job.answer.send(answer);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// fsync(2), or fdatasync(2) if `datasync`, of descriptor `fd`.
fn sync(fd: RawFd, datasync: bool) -> Result<(), Errno> {
    // SAFETY: plain system calls on a descriptor the caller holds.
    check(unsafe {
        if datasync {
            libc::fdatasync(fd)
        } else {
            libc::fsync(fd)
        }
    })
}

fn regular(st: &libc::stat) -> Result<(), Errno> {
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => Ok(()),
        libc::S_IFDIR => Err(libc::EISDIR),
        _ => Err(libc::EACCES),
    }
}

fn owner_key(session: u64, file: FileId, owner: u64) -> OwnerKey {
    OwnerKey {
        session,
        file,
        owner,
    }
}

fn timespec(time: Option<Time>) -> libc::timespec {
    match time {
        None => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_OMIT,
        },
        Some(Time::Now) => libc::timespec {
            tv_sec: 0,
            tv_nsec: libc::UTIME_NOW,
        },
        Some(Time::At { secs, nanos }) => libc::timespec {
            tv_sec: secs,
            tv_nsec: i64::from(nanos),
        },
    }
}

/// The attributes of a stat.
fn attr(st: &libc::stat) -> Attr {
    Attr {
        ino: st.st_ino,
        size: st.st_size as u64,
        blocks: st.st_blocks as u64,
        atime: (st.st_atime, st.st_atime_nsec as u32),
        mtime: (st.st_mtime, st.st_mtime_nsec as u32),
        ctime: (st.st_ctime, st.st_ctime_nsec as u32),
        mode: st.st_mode,
        nlink: st.st_nlink as u32,
        uid: st.st_uid,
        gid: st.st_gid,
        rdev: st.st_rdev as u32,
        blksize: st.st_blksize as u32,
    }
}

fn dtype_to_mode(d_type: u8) -> u32 {
    match d_type {
        libc::DT_REG => libc::S_IFREG,
        libc::DT_DIR => libc::S_IFDIR,
        libc::DT_LNK => libc::S_IFLNK,
        libc::DT_CHR => libc::S_IFCHR,
        libc::DT_BLK => libc::S_IFBLK,
        libc::DT_FIFO => libc::S_IFIFO,
        libc::DT_SOCK => libc::S_IFSOCK,
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{PermissionsExt, symlink};

    use super::*;

    fn caller(uid: u32) -> Caller {
        Caller {
            uid,
            gid: uid,
            groups: Vec::new(),
        }
    }

    /// Run `request` as `who` on `session`.
    fn ask(session: &Session, who: u32, request: Request) -> (Answer, Vec<u8>) {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(session.call(caller(who), request, Vec::new()))
    }

    fn path(p: &str) -> crate::protocol::Bytes {
        p.as_bytes().to_vec()
    }

    /// Workers change their ids, which only root may do; the CI runs as root.
    fn is_root() -> bool {
        // SAFETY: geteuid has no failure mode.
        unsafe { libc::geteuid() == 0 }
    }

    /// A tree: tmp/f ("inside"), up -> ../../.. , abs -> / , secret (0600, root's).
    fn tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("tmp")).unwrap();
        std::fs::write(dir.path().join("tmp/f"), "inside").unwrap();
        symlink("../../..", dir.path().join("up")).unwrap();
        symlink("/", dir.path().join("abs")).unwrap();
        std::fs::write(dir.path().join("secret"), "s").unwrap();
        std::fs::set_permissions(
            dir.path().join("secret"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        dir
    }

    fn read_all(session: &Session, who: u32, p: &str) -> Result<Vec<u8>, i32> {
        let fh = match ask(
            session,
            who,
            Request::Open {
                path: path(p),
                flags: libc::O_RDONLY,
            },
        ) {
            (Answer::Opened { fh, .. }, _) => fh,
            (Answer::Error(e), _) => return Err(e),
            other => panic!("{other:?}"),
        };
        let (answer, data) = ask(
            session,
            who,
            Request::Read {
                fh,
                offset: 0,
                size: 4096,
            },
        );
        assert_eq!(answer, Answer::Data);
        Ok(data)
    }

    #[test]
    fn a_read_larger_than_any_kernel_asks_is_cut_to_the_largest() {
        if !is_root() {
            return;
        }
        let dir = tree();
        std::fs::write(
            dir.path().join("tmp/big"),
            vec![7u8; MAX_IO as usize + 4096],
        )
        .unwrap();
        let server = Server::start(dir.path(), Policy::default(), 1).unwrap();
        let session = server.session();
        let open = Request::Open {
            path: path("tmp/big"),
            flags: libc::O_RDONLY,
        };
        let (Answer::Opened { fh, .. }, _) = ask(&session, 1000, open) else {
            panic!("not opened");
        };
        // A peer that says it wants 4 GiB gets what one call carries, not an allocation of
        // what it said.
        let read = Request::Read {
            fh,
            offset: 0,
            size: u32::MAX,
        };
        let (answer, data) = ask(&session, 1000, read);
        assert_eq!(answer, Answer::Data);
        assert_eq!(data.len(), MAX_IO as usize);
    }

    #[test]
    fn dot_dots_and_symlinks_stay_below_the_root() {
        if !is_root() {
            return;
        }
        let dir = tree();
        let server = Server::start(dir.path(), Policy::default(), 1).unwrap();
        let session = server.session();
        for p in [
            "tmp/f",
            "../../tmp/f",
            "tmp/../../tmp/f",
            "up/tmp/f",
            "abs/tmp/f",
            "abs/../tmp/f",
        ] {
            assert_eq!(read_all(&session, 1000, p).unwrap(), b"inside", "{p}");
        }
        // The host's /etc is not below the root: not found, as at a node without one.
        assert_eq!(
            read_all(&session, 1000, "abs/etc/hostname"),
            Err(libc::ENOENT)
        );
    }

    #[test]
    fn long_names_proc_and_devices_are_refused() {
        if !is_root() {
            return;
        }
        let dir = tree();
        let server = Server::start(dir.path(), Policy::default(), 1).unwrap();
        let session = server.session();
        let long = "n".repeat(resolve::NAME_MAX + 1);
        let mkdir = Request::Mkdir {
            parent: path("tmp"),
            name: path(&long),
            mode: 0o755,
        };
        assert_eq!(
            ask(&session, 1000, mkdir).0,
            Answer::Error(libc::ENAMETOOLONG)
        );
        assert_eq!(
            ask(
                &session,
                1000,
                Request::Lookup {
                    path: path(&format!("tmp/{long}"))
                }
            )
            .0,
            Answer::Error(libc::ENAMETOOLONG)
        );
        let host = Server::start(Path::new("/"), Policy::default(), 1).unwrap();
        let host = host.session();
        for p in ["proc", "proc/self/status", "proc/1"] {
            assert_eq!(
                ask(&host, 1000, Request::Lookup { path: path(p) }).0,
                Answer::Error(libc::EACCES),
                "{p}"
            );
        }
        assert_eq!(read_all(&host, 1000, "dev/null"), Err(libc::EACCES));
        assert_eq!(read_all(&host, 1000, "dev/zero"), Err(libc::EACCES));
    }

    #[test]
    fn root_is_nobody_unless_trusted_and_handles_are_their_sessions_own() {
        if !is_root() {
            return;
        }
        let dir = tree();
        let mapped = Server::start(dir.path(), Policy::default(), 1).unwrap();
        let session = mapped.session();
        assert_eq!(read_all(&session, 0, "secret"), Err(libc::EACCES));
        assert_eq!(read_all(&session, 1000, "secret"), Err(libc::EACCES));
        let trusted = Server::start(dir.path(), Policy { trust_root: true }, 1).unwrap();
        assert_eq!(read_all(&trusted.session(), 0, "secret").unwrap(), b"s");

        let (answer, _) = ask(
            &session,
            1000,
            Request::Open {
                path: path("tmp/f"),
                flags: libc::O_RDONLY,
            },
        );
        let Answer::Opened { fh, .. } = answer else {
            panic!("{answer:?}")
        };
        let other = mapped.session();
        let read = Request::Read {
            fh,
            offset: 0,
            size: 1,
        };
        assert_eq!(
            ask(&other, 1000, read.clone()).0,
            Answer::Error(libc::EBADF)
        );
        drop(session);
        // The session's end closed its files.
        assert_eq!(lock(&mapped.handles).len(), 0);
        assert_eq!(read_all(&other, 1000, "tmp/none"), Err(libc::ENOENT));
    }

    fn open_rw(session: &Session, p: &str) -> u64 {
        let open = Request::Open {
            path: path(p),
            flags: libc::O_RDWR,
        };
        match ask(session, 0, open).0 {
            Answer::Opened { fh, .. } => fh,
            other => panic!("{other:?}"),
        }
    }

    /// Owner `owner`'s lock of type `typ` on bytes `start..=end` through `fh`.
    fn set_lock(session: &Session, fh: u64, owner: u64, typ: i32, range: (u64, u64)) -> Answer {
        let (start, end) = range;
        let request = Request::Lock {
            fh,
            owner,
            typ,
            start,
            end,
        };
        ask(session, 0, request).0
    }

    /// Whether a traditional fcntl write lock of this process on byte 5 is refused.
    fn local_lock_refused(file: &std::fs::File) -> bool {
        let mut lock = crate::locks::flock(libc::F_WRLCK, 5, 5);
        // SAFETY: a valid descriptor and flock.
        let refused = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut lock) } < 0;
        lock.l_type = libc::F_UNLCK as libc::c_short;
        // SAFETY: as above.
        unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut lock) };
        refused
    }

    #[test]
    fn locks_belong_to_their_owner_across_its_handles_and_go_with_it() {
        if !is_root() {
            return;
        }
        let dir = tree();
        let server = Server::start(dir.path(), Policy { trust_root: true }, 1).unwrap();
        let (node_a, node_b) = (server.session(), server.session());
        let (whole, byte_5) = ((0, u64::MAX), (5, 5));
        let (first, second) = (open_rw(&node_a, "tmp/f"), open_rw(&node_a, "tmp/f"));
        let refused = Answer::Error(libc::EAGAIN);
        // Owner 1 (a process) locks the whole file through one handle, then a range through
        // its other handle: its own locks do not conflict.
        assert_eq!(
            set_lock(&node_a, first, 1, libc::F_WRLCK, whole),
            Answer::Done
        );
        assert_eq!(
            set_lock(&node_a, second, 1, libc::F_WRLCK, byte_5),
            Answer::Done
        );
        // Another owner of the same node, or owner 1 of another node, is refused; so is a
        // process of the serving node (this one) with a traditional fcntl lock.
        assert_eq!(set_lock(&node_a, second, 2, libc::F_RDLCK, byte_5), refused);
        let other = open_rw(&node_b, "tmp/f");
        assert_eq!(set_lock(&node_b, other, 1, libc::F_WRLCK, byte_5), refused);
        let local = std::fs::File::options()
            .read(true)
            .write(true)
            .open(dir.path().join("tmp/f"))
            .unwrap();
        assert!(local_lock_refused(&local));
        let get = |session: &Session, fh, owner| {
            let request = Request::GetLock {
                fh,
                owner,
                typ: libc::F_WRLCK,
                start: 5,
                end: 5,
            };
            match ask(session, 0, request).0 {
                Answer::Lock { typ, .. } => typ,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(get(&node_a, second, 1), libc::F_UNLCK, "its own lock");
        assert_eq!(get(&node_a, second, 2), libc::F_WRLCK);

        // Clearing the whole file (as at a close) frees it for the others.
        assert_eq!(
            set_lock(&node_a, first, 1, libc::F_UNLCK, whole),
            Answer::Done
        );
        assert!(!local_lock_refused(&local));
        assert_eq!(
            set_lock(&node_b, other, 1, libc::F_WRLCK, byte_5),
            Answer::Done
        );
        assert_eq!(
            set_lock(&node_b, other, 1, libc::F_UNLCK, byte_5),
            Answer::Done
        );

        // The session's last handle of the file takes its owners' locks with it.
        assert_eq!(
            set_lock(&node_a, first, 1, libc::F_WRLCK, byte_5),
            Answer::Done
        );
        assert_eq!(
            ask(&node_a, 0, Request::Release { fh: first }).0,
            Answer::Done
        );
        assert!(
            local_lock_refused(&local),
            "a handle of the file is still open"
        );
        assert_eq!(
            ask(&node_a, 0, Request::Release { fh: second }).0,
            Answer::Done
        );
        assert!(!local_lock_refused(&local));

        // So does the end of the session (its link broke).
        assert_eq!(
            set_lock(&node_b, other, 3, libc::F_WRLCK, byte_5),
            Answer::Done
        );
        assert!(local_lock_refused(&local));
        drop(node_b);
        assert!(!local_lock_refused(&local));
    }
}
