//! Calls that change a tree by path, on a file system that is the same everywhere, run by the
//! guest where the process runs (reference 4.2's `mkdir`, `rmdir`, `unlink`, `rename`,
//! `link`, `symlink`, `chmod`, `chown`, `truncate`, `utimensat`): they would otherwise go
//! home to reach the same files through home's MFS or mount. See docs/forwarding.md, "Files
//! that are the same everywhere (DFSA)".
//!
//! The guest runs them with its own ids, which are the process's (`Terms::match_ours`), and
//! never outside the tree: the directory holding the last name is opened beneath the tree's
//! root (`RESOLVE_BENEATH`: `..` and symbolic links cannot leave it), and the call names
//! that one name in it, which calls that change a name never follow. Calls that follow the
//! last name (`chmod`, `chown`, `truncate`, `utimensat`) act on a path handle opened beneath
//! the root. Whatever cannot be confined so goes home: two trees in one call, a last name
//! that is `.` or `..` or ends in `/`, `linkat` following a link, a flag not known here.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::{LocalFiles, Verdict, answer_or_pass, nonempty, with_umask};
use crate::mem::Memory;
use crate::sys::answer_of;

/// Where a path call's path lies: a directory argument and the path's address.
#[derive(Clone, Copy)]
struct At {
    dir: u64,
    path: u64,
}

const CWD: u64 = libc::AT_FDCWD as u64;

/// The directory holding a path's last name, as a path handle, and that name.
type Parent = (OwnedFd, CString);

/// A change run here (its answer), or the verdict the call gets instead: its answer (a
/// path that cannot be reached here for a reason home would give too), or None, on as
/// usual to home.
type Done = Result<Verdict, Option<Verdict>>;

fn at(dir: u64, path: u64) -> At {
    At { dir, path }
}

fn cwd(path: u64) -> At {
    at(CWD, path)
}

impl LocalFiles {
    /// A call that changes a tree by a path in a local tree: run here. None: not one (or it
    /// cannot be run here), on as usual.
    pub(super) fn on_mutation(
        &mut self,
        nr: i64,
        args: &[u64; 6],
        mem: &Memory,
    ) -> Option<Verdict> {
        let nofollow = |flags: u64| flags & libc::AT_SYMLINK_NOFOLLOW as u64 != 0;
        let only_nofollow = |flags: u64| flags & !(libc::AT_SYMLINK_NOFOLLOW as u64) == 0;
        let remove_dir = libc::AT_REMOVEDIR as u64;
        let done = match nr {
            libc::SYS_mkdir => self.mkdir(cwd(args[0]), args[1], mem),
            libc::SYS_mkdirat => self.mkdir(at(args[0], args[1]), args[2], mem),
            libc::SYS_unlink => self.unlink(cwd(args[0]), 0, mem),
            libc::SYS_rmdir => self.unlink(cwd(args[0]), remove_dir, mem),
            libc::SYS_unlinkat if args[2] & !remove_dir == 0 => {
                self.unlink(at(args[0], args[1]), args[2], mem)
            }
            libc::SYS_rename => self.rename(cwd(args[0]), cwd(args[1]), 0, mem),
            libc::SYS_renameat => self.rename(at(args[0], args[1]), at(args[2], args[3]), 0, mem),
            libc::SYS_renameat2 => {
                self.rename(at(args[0], args[1]), at(args[2], args[3]), args[4], mem)
            }
            libc::SYS_link => self.link(cwd(args[0]), cwd(args[1]), mem),
            // Following a link, or linking a descriptor, could reach outside the tree.
            libc::SYS_linkat if args[4] == 0 => {
                self.link(at(args[0], args[1]), at(args[2], args[3]), mem)
            }
            libc::SYS_symlink => self.symlink(args[0], cwd(args[1]), mem),
            libc::SYS_symlinkat => self.symlink(args[0], at(args[1], args[2]), mem),
            libc::SYS_chmod => self.chmod(cwd(args[0]), args[1], mem),
            // The system call has no flags: it always follows the last name.
            libc::SYS_fchmodat => self.chmod(at(args[0], args[1]), args[2], mem),
            libc::SYS_chown => self.chown(cwd(args[0]), [args[1], args[2]], false, mem),
            libc::SYS_lchown => self.chown(cwd(args[0]), [args[1], args[2]], true, mem),
            libc::SYS_fchownat if only_nofollow(args[4]) => {
                let owner = [args[2], args[3]];
                self.chown(at(args[0], args[1]), owner, nofollow(args[4]), mem)
            }
            libc::SYS_truncate => self.truncate(cwd(args[0]), args[1], mem),
            // A null path is the descriptor's own; a link's times are set at home.
            libc::SYS_utimensat if args[1] != 0 && args[3] == 0 => {
                self.utimens(at(args[0], args[1]), args[2], mem)
            }
            _ => return None,
        };
        done.map_or_else(|instead| instead, Some)
    }

    /// The tree a path lies in, and the path beneath its root. None: in no local tree.
    fn beneath(&self, at: At, mem: &Memory) -> Option<(String, String)> {
        let path = self.full_path(at.dir, at.path, mem)?;
        let (root, rest) = self.consistent.split(&path)?;
        Some((root, rest.to_owned()))
    }

    /// The directory holding the last name of `rest` beneath `root`, as a path handle, and
    /// that name. None: the last name is no plain name, and the call goes home. Err: the
    /// directory could not be opened; the call's answer, or home's.
    fn parent_of(&mut self, root: &str, rest: &str) -> Option<io::Result<(OwnedFd, CString)>> {
        let (dir, name) = rest.rsplit_once('/').unwrap_or((".", rest));
        if matches!(name, "" | "." | "..") {
            return None;
        }
        let name = CString::new(name).ok()?;
        let flags = (libc::O_PATH | libc::O_DIRECTORY) as u64;
        Some(
            self.open_under(root, nonempty(dir), flags, 0)
                .map(|dir| (dir, name)),
        )
    }

    /// The parent of the path at `at` and its last name, or the verdict the call gets.
    fn parent_at(
        &mut self,
        at: At,
        mem: &Memory,
    ) -> Result<(String, OwnedFd, CString), Option<Verdict>> {
        let (root, rest) = self.beneath(at, mem).ok_or(None)?;
        match self.parent_of(&root, &rest) {
            Some(Ok((dir, name))) => Ok((root, dir, name)),
            Some(Err(err)) => Err(answer_or_pass(err)),
            None => Err(None),
        }
    }

    fn mkdir(&mut self, at: At, mode: u64, mem: &Memory) -> Done {
        // A directory made gets the process's umask, which this node's kernel applies.
        let umask = self.umask.ok_or(None)?;
        // A parent that cannot be opened here sends the call home.
        let (_, dir, name) = self.parent_at(at, mem).map_err(|_| None)?;
        // SAFETY: a directory descriptor and a NUL-terminated name.
        let ret = with_umask(Some(umask), || unsafe {
            libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), mode as libc::mode_t)
        });
        Ok(Verdict::Answer(answer_of(ret.into())))
    }

    fn unlink(&mut self, at: At, flags: u64, mem: &Memory) -> Done {
        let (_, dir, name) = self.parent_at(at, mem)?;
        // SAFETY: as above; the flags are AT_REMOVEDIR or none.
        let ret = unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), flags as i32) };
        Ok(Verdict::Answer(answer_of(ret.into())))
    }

    fn rename(&mut self, from: At, to: At, flags: u64, mem: &Memory) -> Done {
        let ((from_dir, from_name), (to_dir, to_name)) = self.parents_in_one_tree(from, to, mem)?;
        // SAFETY: two directory descriptors, two NUL-terminated names, the caller's flags.
        let ret = unsafe {
            libc::syscall(
                libc::SYS_renameat2,
                from_dir.as_raw_fd(),
                from_name.as_ptr(),
                to_dir.as_raw_fd(),
                to_name.as_ptr(),
                flags as libc::c_uint,
            )
        };
        Ok(Verdict::Answer(answer_of(ret)))
    }

    fn link(&mut self, from: At, to: At, mem: &Memory) -> Done {
        let ((from_dir, from_name), (to_dir, to_name)) = self.parents_in_one_tree(from, to, mem)?;
        // SAFETY: as for rename; no flag, so the last name is not followed.
        let ret = unsafe {
            libc::linkat(
                from_dir.as_raw_fd(),
                from_name.as_ptr(),
                to_dir.as_raw_fd(),
                to_name.as_ptr(),
                0,
            )
        };
        Ok(Verdict::Answer(answer_of(ret.into())))
    }

    /// The parents and last names of two paths of a call that must stay in one tree (a
    /// rename, a link), or the verdict the call gets. Across two trees home's kernel says
    /// what it says (EXDEV, or a move between two of its own mounts).
    fn parents_in_one_tree(
        &mut self,
        from: At,
        to: At,
        mem: &Memory,
    ) -> Result<(Parent, Parent), Option<Verdict>> {
        let (root, from_dir, from_name) = self.parent_at(from, mem)?;
        let (to_root, to_dir, to_name) = self.parent_at(to, mem)?;
        if root != to_root {
            return Err(None);
        }
        Ok(((from_dir, from_name), (to_dir, to_name)))
    }

    fn symlink(&mut self, target: u64, at: At, mem: &Memory) -> Done {
        // The target is only a string kept in the link: it may name anything. One that
        // cannot be read is home's to answer.
        let target = (mem
            .read_cstr(target, crate::table::PATH_MAX as usize - 1)
            .ok())
        .and_then(|target| CString::new(target).ok())
        .ok_or(None)?;
        let (_, dir, name) = self.parent_at(at, mem)?;
        // SAFETY: a NUL-terminated target, a directory descriptor and a name.
        let ret = unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) };
        Ok(Verdict::Answer(answer_of(ret.into())))
    }

    /// A path handle on what the path at `at` names beneath its root (the link itself if
    /// `nofollow`), or the verdict the call gets.
    fn handle_at(
        &mut self,
        at: At,
        nofollow: bool,
        mem: &Memory,
    ) -> Result<OwnedFd, Option<Verdict>> {
        let (root, rest) = self.beneath(at, mem).ok_or(None)?;
        self.handle_under(&root, &rest, nofollow)
            .map_err(answer_or_pass)
    }

    fn chmod(&mut self, at: At, mode: u64, mem: &Memory) -> Done {
        let file = self.handle_at(at, false, mem)?;
        let path = magic_link(&file);
        // SAFETY: a NUL-terminated path, which names the handle's own file.
        let ret = unsafe { libc::chmod(path.as_ptr(), mode as libc::mode_t) };
        Ok(Verdict::Answer(answer_of(ret.into())))
    }

    fn chown(&mut self, at: At, owner: [u64; 2], nofollow: bool, mem: &Memory) -> Done {
        let file = self.handle_at(at, nofollow, mem)?;
        // SAFETY: an empty path with AT_EMPTY_PATH acts on the handle itself; -1 (as the
        // 32-bit value the kernel reads) leaves an id as it is.
        let ret = unsafe {
            libc::fchownat(
                file.as_raw_fd(),
                c"".as_ptr(),
                owner[0] as libc::uid_t,
                owner[1] as libc::gid_t,
                libc::AT_EMPTY_PATH,
            )
        };
        Ok(Verdict::Answer(answer_of(ret.into())))
    }

    fn truncate(&mut self, at: At, len: u64, mem: &Memory) -> Done {
        let file = self.handle_at(at, false, mem)?;
        // SAFETY: a stat buffer is plain data; zeroes are a valid one.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fstat fills the live buffer from our own descriptor.
        if unsafe { libc::fstat(file.as_raw_fd(), &mut st) } != 0 {
            return Ok(Verdict::Answer(answer_of(-1)));
        }
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {}
            libc::S_IFDIR => return Ok(Verdict::Answer(-i64::from(libc::EISDIR))),
            _ => return Ok(Verdict::Answer(-i64::from(libc::EINVAL))),
        }
        // Opened for writing through the handle's link: the kernel checks the right to
        // write, as truncate(2) does.
        let path = magic_link(&file);
        // SAFETY: a NUL-terminated path and flags.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
        if fd < 0 {
            return Ok(Verdict::Answer(answer_of(-1)));
        }
        // SAFETY: `fd` is ours, closed right after.
        let ret = unsafe { libc::ftruncate(fd, len as libc::off_t) };
        let ret = answer_of(ret.into());
        // SAFETY: as above.
        unsafe { libc::close(fd) };
        Ok(Verdict::Answer(ret))
    }

    fn utimens(&mut self, at: At, times: u64, mem: &Memory) -> Done {
        let times = match times {
            0 => None,
            addr => match mem.read_vec(addr, 2 * std::mem::size_of::<libc::timespec>()) {
                Ok(bytes) => Some(bytes),
                Err(_) => return Ok(Verdict::Answer(-i64::from(libc::EFAULT))),
            },
        };
        let file = self.handle_at(at, false, mem)?;
        let path = magic_link(&file);
        let times_ptr = times
            .as_ref()
            .map_or(std::ptr::null(), |t| t.as_ptr().cast::<libc::timespec>());
        // SAFETY: a NUL-terminated path naming the handle's file, and null or two timespecs
        // read from the process (read unaligned by the kernel, which copies them in).
        let ret = unsafe { libc::utimensat(libc::AT_FDCWD, path.as_ptr(), times_ptr, 0) };
        Ok(Verdict::Answer(answer_of(ret.into())))
    }
}

/// `/proc/self/fd/N` of a path handle: the magic link that names its very file.
fn magic_link(file: &OwnedFd) -> CString {
    CString::new(format!("/proc/self/fd/{}", file.as_raw_fd())).expect("no NUL in a number")
}

#[cfg(test)]
mod tests {
    use std::ffi::CString;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    use super::super::{Consistent, Terms};
    use super::*;
    use crate::ptrace::Pid;

    /// Local files whose one tree is `root`, for this process, whose memory holds the paths.
    fn tree(root: &std::path::Path) -> (LocalFiles, Memory) {
        let me = std::process::id() as Pid;
        let consistent = Consistent::new(None, &[root]);
        let terms = Terms::of(me, consistent.clone()).unwrap();
        (
            LocalFiles::new(Some(&terms), &consistent),
            Memory::open(me).unwrap(),
        )
    }

    fn run(local: &mut LocalFiles, mem: &Memory, nr: i64, args: &[u64]) -> Option<i64> {
        let mut all = [0u64; 6];
        all[..args.len()].copy_from_slice(args);
        match local.on_mutation(nr, &all, mem)? {
            Verdict::Answer(ret) => Some(ret),
            _ => panic!("a change is answered or goes home"),
        }
    }

    #[test]
    fn changes_run_beneath_their_tree_and_what_could_leave_it_goes_home() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap().join("tree");
        fs::create_dir_all(&root).unwrap();
        let outside = dir.path().join("outside");
        fs::write(&outside, "out").unwrap();
        fs::set_permissions(&outside, fs::Permissions::from_mode(0o644)).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("out")).unwrap();
        let (mut local, mem) = tree(&root);
        let path = |rest: &str| CString::new(format!("{}/{rest}", root.display())).unwrap();
        let (made, moved, up, slash, out) = (
            path("made"),
            path("moved"),
            path("moved/.."),
            path("moved/"),
            path("out"),
        );
        let addr = |c: &CString| c.as_ptr() as u64;

        assert_eq!(
            run(&mut local, &mem, libc::SYS_mkdir, &[addr(&made), 0o755]),
            Some(0)
        );
        assert!(root.join("made").is_dir());
        let rename = [addr(&made), addr(&moved)];
        assert_eq!(run(&mut local, &mem, libc::SYS_rename, &rename), Some(0));
        assert!(root.join("moved").is_dir() && !root.join("made").exists());
        let enoent = -i64::from(libc::ENOENT);
        assert_eq!(
            run(&mut local, &mem, libc::SYS_rmdir, &[addr(&made)]),
            Some(enoent)
        );

        // `..` or a trailing `/` as the last name, and a link out of the tree: home's.
        assert_eq!(run(&mut local, &mem, libc::SYS_rmdir, &[addr(&up)]), None);
        assert_eq!(
            run(&mut local, &mem, libc::SYS_rmdir, &[addr(&slash)]),
            None
        );
        assert_eq!(
            run(&mut local, &mem, libc::SYS_chmod, &[addr(&out), 0o600]),
            None
        );
        let mode = fs::metadata(&outside).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
        // The link itself, named by its last name, is the tree's.
        assert_eq!(
            run(&mut local, &mem, libc::SYS_unlink, &[addr(&out)]),
            Some(0)
        );
        assert!(outside.exists());
    }
}
