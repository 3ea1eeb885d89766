//! What the unit tests of several modules share: a husk with one empty area to work on.

use std::sync::{Mutex, MutexGuard};

use rmosix_image::Area;

use crate::inject::Injector;
use crate::maps;
use crate::mem::Memory;
use crate::ptrace::Pid;
use crate::spawn::spawn_husk;

pub const PAGE: u64 = 4096;

/// Serialises the tests that give a husk a userfaultfd. A husk forked while another test
/// holds its userfaultfd copy inherits that copy until it closes its descriptors, and for
/// that moment the other test's areas stay registered.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A husk with one empty private anonymous read-write area.
pub struct Husk {
    /// None for the second husk of a [`Husk::pair`], whose first holds the turn.
    _turn: Option<MutexGuard<'static, ()>>,
    pub pid: Pid,
    pub mem: Memory,
    pub inj: Injector,
    pub area: Area,
}

impl Husk {
    /// A husk whose area has `pages` pages.
    pub fn new(pages: u64) -> Husk {
        let turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        Husk::spawn(Some(turn), pages)
    }

    /// Two husks, as [`Husk::new`] makes them: a process and the one it moves into.
    pub fn pair(pages: u64) -> (Husk, Husk) {
        let first = Husk::new(pages);
        let second = Husk::spawn(None, pages);
        (first, second)
    }

    fn spawn(turn: Option<MutexGuard<'static, ()>>, pages: u64) -> Husk {
        let pid = spawn_husk(false).unwrap();
        let mem = Memory::open(pid).unwrap();
        let inj = Injector::find(&mem, &maps::read(pid).unwrap()).unwrap();
        let prot = (libc::PROT_READ | libc::PROT_WRITE) as u64;
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        let args = [0, pages * PAGE, prot, flags, u64::MAX, 0];
        let start = inj.call_ok(pid, libc::SYS_mmap, args, "mmap").unwrap();
        let area = maps::read(pid)
            .unwrap()
            .into_iter()
            .find(|a| a.start <= start && start < a.end)
            .unwrap();
        Husk {
            _turn: turn,
            pid,
            mem,
            inj,
            area,
        }
    }
}

impl Drop for Husk {
    fn drop(&mut self) {
        // SAFETY: killing our own traced child.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let _ = crate::ptrace::wait(self.pid, 0);
    }
}
