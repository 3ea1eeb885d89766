//! Whether a process shares its address space with another: a vfork child until it execs or
//! exits, its parent meanwhile, and processes cloned with CLONE_VM. Moving one of them would
//! take the memory from under the other (the shell left behind releases it), so such a
//! process does not move. A thread count does not show it: each is a process of its own.

use std::io;

use crate::ptrace::Pid;

/// kcmp(2)'s type for "same address space" (linux/kcmp.h).
const KCMP_VM: libc::c_long = 1;

/// The first of `others` whose address space is `pid`'s, if any. Processes that are gone
/// meanwhile share nothing.
pub fn sharer(pid: Pid, others: impl IntoIterator<Item = Pid>) -> io::Result<Option<Pid>> {
    for other in others.into_iter().filter(|&other| other != pid) {
        // SAFETY: kcmp takes plain integers and touches no memory of ours.
        let order = unsafe { libc::syscall(libc::SYS_kcmp, pid, other, KCMP_VM, 0, 0) };
        match order {
            0 => return Ok(Some(other)),
            -1 => {
                let err = io::Error::last_os_error();
                if err.raw_os_error() != Some(libc::ESRCH) {
                    return Err(err);
                }
            }
            _ => {}
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_vfork_child_shares_its_parents_memory_and_a_fork_child_does_not() {
        // SAFETY: the children only wait for a signal and are killed below.
        let forked = unsafe { libc::fork() };
        if forked == 0 {
            // SAFETY: async-signal-safe calls only, in the child.
            unsafe {
                libc::pause();
                libc::_exit(0);
            }
        }
        // A CLONE_VM child (what vfork makes, without the parent's wait): it shares ours.
        let mut stack = vec![0u8; 64 << 10];
        extern "C" fn rest(_: *mut libc::c_void) -> libc::c_int {
            // SAFETY: pause touches no memory.
            unsafe { libc::pause() }
        }
        // SAFETY: the child runs `rest` on its own stack, which outlives it (killed below).
        let cloned = unsafe {
            libc::clone(
                rest,
                stack.as_mut_ptr().add(stack.len()).cast(),
                libc::CLONE_VM | libc::SIGCHLD,
                std::ptr::null_mut(),
            )
        };
        assert!(forked > 0 && cloned > 0);
        let me = std::process::id() as Pid;
        assert_eq!(sharer(me, [forked, cloned]).unwrap(), Some(cloned));
        assert_eq!(sharer(forked, [me, cloned]).unwrap(), None);
        for child in [forked, cloned] {
            // SAFETY: killing and reaping our own children.
            unsafe {
                libc::kill(child, libc::SIGKILL);
                libc::waitpid(child, std::ptr::null_mut(), 0);
            }
        }
        // Gone: shares nothing, and is no error.
        assert_eq!(sharer(me, [forked]).unwrap(), None);
    }
}
