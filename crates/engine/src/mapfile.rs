//! File mappings: which file an area maps, read where the process is dumped, and the file a
//! restore maps the area of again.
//!
//! The image names the file (`FileId`: path, device, inode, size, modification time, the
//! boot id of the kernel that stat'ed it, and a digest of its content, see `samefile`). A
//! restore on the same running kernel opens the path (or, for an unlinked file, the
//! descriptor the dumping supervisor kept of it) inside the process and maps it if it is
//! that file, unchanged; on any kernel, it maps the file at the path if its content has the
//! image's digest. Elsewhere, or if the file changed, the area maps a copy: a memfd that the image's file pages fill, marked with the identity
//! (an extended attribute), so that a later dump names the original file again and home
//! maps that once the process is back. Either way the pages the process never wrote stay
//! file pages, and those it wrote stay its own: the kernel tells them apart by itself.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::{Mutex, OnceLock};

use rmosix_image::{Area, FileId};

use crate::inject::{Injector, Scratch};
use crate::mem::Memory;
use crate::pidfd::PidFd;
use crate::ptrace::Pid;
use crate::samefile::{self, Held};

/// The name of a copy (maps shows `/memfd:rmosix-file (deleted)`).
const COPY_NAME: &str = "rmosix-file";
/// The extended attribute of a copy that holds the original file's identity, as JSON.
const IDENTITY_XATTR: &str = "user.rmosix.file";
/// Room for a path and its NUL in the process, for the injected calls that open one.
const PATH_ROOM: u64 = 8192;

/// This kernel's boot id: a device and inode name one file only while it runs.
fn boot_id() -> &'static str {
    static BOOT: OnceLock<String> = OnceLock::new();
    BOOT.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|id| id.trim().to_owned())
            .unwrap_or_default()
    })
}

/// Set `area.file` where `area` maps a regular file that can be named. A copy made by an
/// earlier restore names the original file, and the area takes the original's name and inode
/// again. An area whose file cannot be identified (its entry in /proc/PID/map_files needs
/// CAP_CHECKPOINT_RESTORE, and an unlinked file has no path) keeps `file` empty: it moves as
/// memory alone.
pub fn identify(pid: Pid, area: &mut Area) {
    if area.inode == 0 || !area.name.starts_with('/') {
        return;
    }
    let link = format!("/proc/{pid}/map_files/{:x}-{:x}", area.start, area.end);
    if area.name.starts_with(&format!("/memfd:{COPY_NAME} ")) {
        if let Some(id) = copied_identity(&link) {
            area.name.clone_from(&id.path);
            area.inode = id.inode;
            area.file = Some(id);
        }
        return;
    }
    let (path, unlinked) = match area.name.strip_suffix(" (deleted)") {
        Some(path) => (path, true),
        None => (area.name.as_str(), false),
    };
    let opened = File::open(&link).or_else(|err| match unlinked {
        true => Err(err),
        // Without the privilege map_files needs: the path, if it still names that inode.
        false => File::open(path).and_then(|file| match file.metadata()?.ino() == area.inode {
            true => Ok(file),
            false => Err(io::Error::other("the path names another file now")),
        }),
    });
    let (file, meta) = match opened.and_then(|file| file.metadata().map(|meta| (file, meta))) {
        Ok((file, meta)) if meta.file_type().is_file() => (file, meta),
        Ok(_) => return,
        Err(err) => {
            tracing::debug!(pid, %err, path, "a file mapping moves as memory alone");
            return;
        }
    };
    // Without a digest, the file's pages always travel (see `samefile`).
    let digest = match samefile::enabled() {
        true => samefile::digest_of(&file)
            .inspect_err(|err| tracing::debug!(pid, %err, path, "no digest of a mapped file"))
            .ok(),
        false => None,
    };
    let kept = match unlinked {
        true => match keep(&link, &meta) {
            Ok(kept) => Some(kept),
            Err(err) => {
                tracing::debug!(pid, %err, path, "an unlinked file cannot be kept");
                return;
            }
        },
        false => None,
    };
    area.file = Some(FileId {
        path: path.to_owned(),
        kept,
        dev: meta.dev(),
        inode: meta.ino(),
        size: meta.size(),
        mtime: (meta.mtime(), meta.mtime_nsec()),
        boot: boot_id().to_owned(),
        digest,
    });
}

/// Compute the digests of the files running `pid` maps, so that a dump in a freeze finds
/// them known (see `samefile`): reading a compiler's tens of MB takes tens of ms.
pub fn learn_digests(pid: Pid) {
    if !samefile::enabled() {
        return;
    }
    for mut area in crate::maps::read(pid).unwrap_or_default() {
        identify(pid, &mut area);
    }
}

/// Whether `meta` is what `stat` said of the file `id` names, on this kernel.
fn same_stat(id: &FileId, meta: &Metadata) -> bool {
    (id.dev, id.inode, id.size, id.mtime, id.boot.as_str())
        == (
            meta.dev(),
            meta.ino(),
            meta.size(),
            (meta.mtime(), meta.mtime_nsec()),
            boot_id(),
        )
}

/// The identity a copy holds, if it is one of ours.
fn copied_identity(link: &str) -> Option<FileId> {
    let path = CString::new(link).ok()?;
    let name = CString::new(IDENTITY_XATTR).expect("no NUL");
    let mut value = vec![0u8; 64 << 10];
    // SAFETY: getxattr writes at most `value.len()` bytes into our live buffer.
    let len = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_mut_ptr().cast(),
            value.len(),
        )
    };
    let len = usize::try_from(len).ok()?;
    serde_json::from_slice(&value[..len]).ok()
}

/// Keep an unlinked file open for as long as this supervisor runs, so that the process finds
/// it again when it comes back: the path under /proc of our descriptor. One descriptor per
/// file, however often it moves.
fn keep(link: &str, meta: &Metadata) -> io::Result<String> {
    static KEPT: Mutex<Vec<(u64, u64, File)>> = Mutex::new(Vec::new());
    let mut kept = KEPT.lock().unwrap_or_else(|e| e.into_inner());
    let known = kept
        .iter()
        .find(|(dev, ino, _)| (*dev, *ino) == (meta.dev(), meta.ino()));
    let fd = match known {
        Some((_, _, file)) => file.as_raw_fd(),
        None => {
            let file = File::open(link)?;
            let fd = file.as_raw_fd();
            kept.push((meta.dev(), meta.ino(), file));
            fd
        }
    };
    Ok(format!("/proc/{}/fd/{fd}", std::process::id()))
}

/// The files the file mappings of a restore map, each open in the process being restored.
pub struct Backings {
    files: Vec<Backing>,
}

/// One file, open in the process.
struct Backing {
    id: FileId,
    /// Its descriptor in the process, closed once the areas are mapped.
    theirs: i32,
    /// Our descriptor of a copy, which the file pages go into; None for the file itself.
    copy: Option<File>,
}

/// Files are told apart by inode, device and kernel.
fn key(id: &FileId) -> (u64, u64, &str) {
    (id.dev, id.inode, &id.boot)
}

impl Backings {
    /// Open, in stopped `pid`, the file of each of `areas` that maps one: the file itself if
    /// it can be found unchanged on this kernel or with the same content, else a copy to
    /// fill. A file in `held` (the sender leaves its pages out) that is not found so fails
    /// the restore: it changed since this node said it held it.
    pub fn open(pid: Pid, inj: &Injector, areas: &[&Area], held: &Held) -> io::Result<Backings> {
        let mut backings = Backings { files: Vec::new() };
        let mut ids = HashMap::new();
        for id in areas.iter().filter_map(|a| a.file.as_ref()) {
            ids.entry(key(id)).or_insert(id);
        }
        if ids.is_empty() {
            return Ok(backings);
        }
        let scratch = Scratch::map(inj, pid, PATH_ROOM)?;
        let mut opened = Ok(());
        for id in ids.into_values() {
            let backing = match find_unchanged(pid, inj, &scratch, id) {
                Ok(Some(theirs)) => Ok(Backing {
                    id: id.clone(),
                    theirs,
                    copy: None,
                }),
                Ok(None) if held_by(held, id) => Err(io::Error::other(format!(
                    "{} changed since this node said it held it",
                    id.path
                ))),
                Ok(None) => make_copy(pid, inj, &scratch, id),
                Err(err) => Err(err),
            };
            match backing {
                Ok(backing) => backings.files.push(backing),
                Err(err) => {
                    opened = Err(err);
                    break;
                }
            }
        }
        let unmapped = scratch.unmap(inj, pid);
        match opened.and(unmapped) {
            Ok(()) => Ok(backings),
            Err(err) => {
                backings.close(pid, inj)?;
                Err(err)
            }
        }
    }

    /// The process's descriptor of the file `area` maps.
    pub fn fd_of(&self, area: &Area) -> Option<i32> {
        let id = area.file.as_ref()?;
        let backing = self.files.iter().find(|b| key(&b.id) == key(id))?;
        Some(backing.theirs)
    }

    /// File content for `data.len()` bytes at `addr`, which must lie in one of `areas`, a
    /// file mapping: written into the copy that area maps; the file itself holds it already.
    pub fn place(&self, areas: &[&Area], addr: u64, data: &[u8]) -> io::Result<()> {
        let stop = addr.saturating_add(data.len() as u64);
        let area = areas
            .iter()
            .find(|a| a.file.is_some() && a.start <= addr && stop <= a.end)
            .ok_or_else(|| {
                io::Error::other(format!(
                    "image file pages at {addr:#x} lie outside its file mappings"
                ))
            })?;
        let id = area.file.as_ref().expect("a file mapping");
        let backing = self.files.iter().find(|b| key(&b.id) == key(id));
        match backing.and_then(|b| b.copy.as_ref()) {
            Some(copy) => copy.write_all_at(data, area.offset + (addr - area.start)),
            None => Ok(()),
        }
    }

    /// Close the process's descriptors (the mappings keep the files); our copies go too.
    pub fn close(self, pid: Pid, inj: &Injector) -> io::Result<()> {
        let mut closed = Ok(());
        for backing in self.files {
            closed = closed.and(close_in(pid, inj, backing.theirs));
        }
        closed
    }
}

/// Whether `held` names the file `id` names.
fn held_by(held: &Held, id: &FileId) -> bool {
    id.digest
        .as_ref()
        .is_some_and(|d| held.holds_file(&id.path, d))
}

/// Open the file `id` names inside `pid`, by its kept descriptor (on the kernel that named
/// it) or its path: the process's descriptor of it, if it is that file unchanged, or a file
/// with the same content (the digest this node computes of it is the image's).
fn find_unchanged(
    pid: Pid,
    inj: &Injector,
    scratch: &Scratch,
    id: &FileId,
) -> io::Result<Option<i32>> {
    let here = id.boot == boot_id();
    if !here && id.digest.is_none() {
        return Ok(None);
    }
    let kept = id.kept.iter().filter(|_| here);
    for path in kept.chain([&id.path]) {
        let mut raw = path.as_bytes().to_vec();
        raw.push(0);
        if raw.len() as u64 > PATH_ROOM {
            continue;
        }
        Memory::open(pid)?.write(scratch.addr, &raw)?;
        let flags = (libc::O_RDONLY | libc::O_CLOEXEC) as u64;
        let cwd = libc::AT_FDCWD as u64;
        let fd = inj.call(pid, libc::SYS_openat, [cwd, scratch.addr, flags, 0, 0, 0])?;
        if fd < 0 {
            continue;
        }
        let theirs = fd as i32;
        let file = File::from(PidFd::open(pid)?.get_fd(theirs)?);
        let same = file.metadata().is_ok_and(|meta| same_stat(id, &meta))
            || id
                .digest
                .as_ref()
                .is_some_and(|digest| samefile::digest_of(&file).is_ok_and(|ours| ours == *digest));
        if same {
            return Ok(Some(theirs));
        }
        close_in(pid, inj, theirs)?;
    }
    tracing::debug!(
        pid,
        path = id.path,
        "the file is not here unchanged: mapping a copy"
    );
    Ok(None)
}

/// A copy of the file `id` names, inside `pid`: a memfd of the file's size that holds the
/// identity, empty until the image's file pages fill it.
fn make_copy(pid: Pid, inj: &Injector, scratch: &Scratch, id: &FileId) -> io::Result<Backing> {
    let mut name = COPY_NAME.as_bytes().to_vec();
    name.push(0);
    Memory::open(pid)?.write(scratch.addr, &name)?;
    let flags = libc::MFD_CLOEXEC as u64;
    let args = [scratch.addr, flags, 0, 0, 0, 0];
    let theirs = inj.call_ok(pid, libc::SYS_memfd_create, args, "memfd_create")? as i32;
    let made = PidFd::open(pid)
        .and_then(|pidfd| pidfd.get_fd(theirs))
        .map(File::from)
        .and_then(|copy| {
            copy.set_len(id.size)?;
            let value = serde_json::to_vec(id).map_err(io::Error::other)?;
            let name = CString::new(IDENTITY_XATTR).expect("no NUL");
            // SAFETY: fsetxattr reads `value` and the name, both live.
            let set = unsafe {
                libc::fsetxattr(
                    copy.as_raw_fd(),
                    name.as_ptr(),
                    value.as_ptr().cast(),
                    value.len(),
                    0,
                )
            };
            if set != 0 {
                let err = io::Error::last_os_error();
                return Err(io::Error::new(err.kind(), format!("a file's copy: {err}")));
            }
            Ok(copy)
        });
    match made {
        Ok(copy) => Ok(Backing {
            id: id.clone(),
            theirs,
            copy: Some(copy),
        }),
        Err(err) => {
            close_in(pid, inj, theirs)?;
            Err(err)
        }
    }
}

/// Close descriptor `fd` of stopped `pid`.
fn close_in(pid: Pid, inj: &Injector, fd: i32) -> io::Result<()> {
    let what = "close a mapped file";
    inj.call_ok(pid, libc::SYS_close, [fd as u64, 0, 0, 0, 0, 0], what)
        .map(drop)
}
