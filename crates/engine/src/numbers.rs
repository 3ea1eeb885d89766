//! Descriptor numbers for files opened where the process runs, without asking home for each.
//!
//! The program must get the number it would get at home: the lowest free one of home's table,
//! which the shell holds. A file opened away (a DFSA file, or a system file home vouched for,
//! see `pathcache`) used to cost a round trip for that number alone. Instead home tells the
//! remote the lowest free numbers of its table (`ToGuest::Numbers`) with the answer to a call
//! that may have changed the table, and the remote gives them out itself, lowest first,
//! telling home of each one-way (`ToHome::Opened`), so that the shell takes the same number
//! for its own copy or placeholder.
//!
//! The list holds because the shell's table changes only by the process's own calls: those
//! it forwards, which home runs in order, and the opens and closes made away, which home
//! hears of in order before any later call. A process away is single-threaded, so nothing
//! of its own runs between a call and its answer. So the remote drops its list before any
//! call that may change the table goes home ([`leaves_numbers`] says which do not), takes the
//! list home sends with that call's answer, gives a number out per open made away, and takes
//! back the number of a file closed away.

use std::collections::BTreeSet;
use std::io;

use serde::{Deserialize, Serialize};

use crate::ptrace::Pid;

/// How many free numbers home tells: more than a program holds open at once away, in the
/// usual open, read, close of one file after another.
pub const TOLD: usize = 16;

/// Whether call `nr` leaves the descriptor table as it was, whatever its arguments: the
/// remote's list of free numbers still holds after it.
pub fn leaves_numbers(nr: i64) -> bool {
    sees_its_descriptor_only(nr)
        || matches!(
            nr,
            libc::SYS_stat
                | libc::SYS_lstat
                | libc::SYS_newfstatat
                | libc::SYS_statx
                | libc::SYS_access
                | libc::SYS_faccessat
                | libc::SYS_faccessat2
                | libc::SYS_readlink
                | libc::SYS_readlinkat
                | libc::SYS_getcwd
        )
}

/// Free numbers of home's table, as home tells them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Free {
    /// Every number free below `below`, lowest first.
    pub numbers: Vec<i32>,
    /// Where the list stops: the number after the last, or the limit of open files.
    pub below: i32,
}

/// Whether call `nr` sees nothing of the descriptor table but the descriptor it names: home
/// may run it before its shell follows the opens made away (whose numbers the remote never
/// forwards a call on), where a lookup (of `/proc/self/fd`, say) or an open must come after.
pub fn sees_its_descriptor_only(nr: i64) -> bool {
    matches!(
        nr,
        libc::SYS_read
            | libc::SYS_write
            | libc::SYS_pread64
            | libc::SYS_pwrite64
            | libc::SYS_readv
            | libc::SYS_writev
            | libc::SYS_lseek
            | libc::SYS_fstat
            | libc::SYS_getdents64
            | libc::SYS_fsync
            | libc::SYS_fdatasync
    )
}

/// The `count` lowest numbers free in the descriptor table of `pid`, below its limit of open
/// files.
pub fn lowest_free(pid: Pid, count: usize) -> io::Result<Free> {
    let used: BTreeSet<i32> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let limit = open_files_limit(pid)?;
    let numbers: Vec<i32> = (0..limit)
        .filter(|fd| !used.contains(fd))
        .take(count)
        .collect();
    let below = match numbers.last() {
        Some(&last) if numbers.len() == count => last + 1,
        _ => limit,
    };
    Ok(Free { numbers, below })
}

/// The soft limit of open files of `pid` (`/proc/PID/limits`): the first number the kernel
/// never gives.
fn open_files_limit(pid: Pid) -> io::Result<i32> {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits"))?;
    let soft = limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_whitespace().next())
        .ok_or_else(|| io::Error::other("no limit of open files in /proc/PID/limits"))?;
    Ok(match soft {
        "unlimited" => i32::MAX,
        n => n
            .parse::<u64>()
            .map_or(i32::MAX, |n| n.min(i32::MAX as u64) as i32),
    })
}

/// The remote's list of numbers free in home's table. Empty until home tells one, and
/// dropped with any call that may change the table.
#[derive(Debug, Default)]
pub struct FreeNumbers {
    /// Every number free below `below` (which the list says nothing beyond).
    free: BTreeSet<i32>,
    below: i32,
}

impl FreeNumbers {
    /// A call that may change home's table goes home: the list no longer holds.
    pub fn stale(&mut self) {
        self.free.clear();
        self.below = 0;
    }

    /// Home's list, told with the answer to the call the process waited on.
    pub fn told(&mut self, told: Free) {
        self.free = (told.numbers.into_iter())
            .filter(|&fd| (0..told.below).contains(&fd))
            .collect();
        self.below = told.below;
    }

    /// The number the next open gets, if the list holds one: the lowest.
    pub fn lowest(&self) -> Option<i32> {
        self.free.first().copied()
    }

    /// Number `fd` is taken by an open.
    pub fn take(&mut self, fd: i32) {
        self.free.remove(&fd);
    }

    /// Descriptor `fd` closed: free again, at home too by the time home runs a later call.
    /// Past the list's end it is not known to be the lowest, and left out.
    pub fn freed(&mut self, fd: i32) {
        if (0..self.below).contains(&fd) {
            self.free.insert(fd);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lowest_free_numbers_skip_those_in_use_and_stop_at_the_limit() {
        // A process holding 0, 1, 2, 4 and 6, allowed 9 open files. The others below 9 are
        // closed first: a descriptor another test thread made without close-on-exec can
        // leak into the child at its fork.
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "ulimit -n 9 && exec 3<&- 5<&- 7<&- 8<&- 4</ 6</ && exec sleep 60",
            ])
            .spawn()
            .unwrap();
        let pid = child.id() as Pid;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let free = loop {
            // Once it sleeps, its descriptors and limit are set: read them only then (not as
            // soon as it is `sleep`, which opens files of its own as it starts).
            let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
            let nr: i64 = call
                .split(' ')
                .next()
                .and_then(|nr| nr.parse().ok())
                .unwrap_or(-1);
            if [libc::SYS_nanosleep, libc::SYS_clock_nanosleep].contains(&nr) {
                break lowest_free(pid, 3).unwrap();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the child never slept"
            );
            std::thread::yield_now();
        };
        assert_eq!(
            free,
            Free {
                numbers: vec![3, 5, 7],
                below: 8
            }
        );
        assert_eq!(
            lowest_free(pid, 16).unwrap(),
            Free {
                numbers: vec![3, 5, 7, 8],
                below: 9
            },
            "fewer than asked: the list reaches the limit"
        );
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn calls_that_make_or_free_a_descriptor_change_the_numbers() {
        for nr in [
            libc::SYS_open,
            libc::SYS_openat,
            libc::SYS_close,
            libc::SYS_dup,
            libc::SYS_dup2,
            libc::SYS_fcntl,
            libc::SYS_pipe2,
            libc::SYS_socket,
            libc::SYS_recvmsg,
            libc::SYS_execve,
        ] {
            assert!(!leaves_numbers(nr), "{nr}");
            assert!(!sees_its_descriptor_only(nr), "{nr}");
        }
        // A lookup leaves the table as it was, but may see it (/proc/self/fd).
        assert!(
            leaves_numbers(libc::SYS_readlink) && !sees_its_descriptor_only(libc::SYS_readlink)
        );
        assert!(leaves_numbers(libc::SYS_write) && sees_its_descriptor_only(libc::SYS_write));
    }

    #[test]
    fn numbers_are_given_lowest_first_and_a_close_gives_one_back() {
        let mut numbers = FreeNumbers::default();
        assert_eq!(numbers.lowest(), None, "nothing is given before home tells");
        numbers.told(Free {
            numbers: vec![3, 5, 6],
            below: 7,
        });
        assert_eq!(numbers.lowest(), Some(3));
        numbers.take(3);
        assert_eq!(numbers.lowest(), Some(5));
        numbers.freed(3);
        assert_eq!(numbers.lowest(), Some(3));
        numbers.take(3);
        numbers.take(5);
        numbers.take(6);
        assert_eq!(numbers.lowest(), None, "past the list the opens go home");
        numbers.freed(9);
        assert_eq!(
            numbers.lowest(),
            None,
            "8 may be free: 9 is not known the lowest"
        );
        numbers.freed(4);
        assert_eq!(numbers.lowest(), Some(4));
        numbers.stale();
        numbers.freed(2);
        assert_eq!(numbers.lowest(), None, "a stale list stays empty");
    }
}
