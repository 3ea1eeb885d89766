//! The `prctl(2)` settings a process keeps when it moves.
//!
//! At a remote, `prctl` runs in the husk (the filter lets it through), so what the process
//! sets there takes effect there. What it set anywhere must then be where it resumes: the
//! settings of the running process below are read with injected GET calls at the freeze,
//! travel in the image (`Task::prctl`), and are set again with injected SET calls at each
//! restore, where they differ from what the target has (a fresh husk has its guest's, a shell
//! the ones the process had when it left). A SET the target refuses (one that needs a
//! privilege it lacks, a value only the kernel sets) fails the restore with its reason, and
//! the process stays where it was.
//!
//! Settings about the process's relations at home are not here: its parent and children,
//! and its credentials, are the shell's, so those calls run there (see `table::prctl`).

use std::io;

use rmosix_image::PrctlValue;

use crate::inject::Injector;
use crate::mem::Memory;
use crate::ptrace::Pid;

/// uapi linux/prctl.h options the libc crate may not have yet.
const PR_SET_IO_FLUSHER: i32 = 57;
const PR_GET_IO_FLUSHER: i32 = 58;
const PR_SET_MDWE: i32 = 65;
const PR_GET_MDWE: i32 = 66;
const PR_SET_MEMORY_MERGE: i32 = 67;
const PR_GET_MEMORY_MERGE: i32 = 68;
/// The `which` of `PR_GET_SPECULATION_CTRL`: store bypass, indirect branch, L1D flush.
const SPECULATION_KINDS: [u64; 3] = [0, 1, 2];
/// `PR_GET_SPECULATION_CTRL` bits: the setting is per task, and its state bits (enable,
/// disable, force disable, disable on exec).
const PR_SPEC_PRCTL: u64 = 1;
const PR_SPEC_STATE: u64 = 2 | 4 | 8 | 16;
/// `PR_MCE_KILL` with `PR_MCE_KILL_CLEAR` or `PR_MCE_KILL_SET`; `PR_MCE_KILL_GET` answers
/// `PR_MCE_KILL_DEFAULT` when none is set.
const PR_MCE_KILL_CLEAR: u64 = 0;
const PR_MCE_KILL_SET: u64 = 1;
const PR_MCE_KILL_DEFAULT: u64 = 2;
/// `PR_SET_THP_DISABLE`'s flags travel in its third argument, above the bit GET reports
/// for "disabled".
const THP_DISABLED: u64 = 1;

/// A setting, by its GET option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Knob {
    ThpDisable,
    TimerSlack,
    Tsc,
    MceKill,
    IoFlusher,
    Mdwe,
    MemoryMerge,
    Dumpable,
    Speculation(u64),
}

impl Knob {
    /// Every setting carried.
    fn all() -> impl Iterator<Item = Knob> {
        [
            Knob::ThpDisable,
            Knob::TimerSlack,
            Knob::Tsc,
            Knob::MceKill,
            Knob::IoFlusher,
            Knob::Mdwe,
            Knob::MemoryMerge,
            Knob::Dumpable,
        ]
        .into_iter()
        .chain(SPECULATION_KINDS.map(Knob::Speculation))
    }

    /// Its GET option and `which`, as the image names it.
    fn key(self) -> (i32, u64) {
        match self {
            Knob::ThpDisable => (libc::PR_GET_THP_DISABLE, 0),
            Knob::TimerSlack => (libc::PR_GET_TIMERSLACK, 0),
            Knob::Tsc => (libc::PR_GET_TSC, 0),
            Knob::MceKill => (libc::PR_MCE_KILL_GET, 0),
            Knob::IoFlusher => (PR_GET_IO_FLUSHER, 0),
            Knob::Mdwe => (PR_GET_MDWE, 0),
            Knob::MemoryMerge => (PR_GET_MEMORY_MERGE, 0),
            Knob::Dumpable => (libc::PR_GET_DUMPABLE, 0),
            Knob::Speculation(which) => (libc::PR_GET_SPECULATION_CTRL, which),
        }
    }

    fn of(value: &PrctlValue) -> Option<Knob> {
        Knob::all().find(|k| k.key() == (value.option, value.which))
    }

    /// The GET call's arguments; PR_GET_TSC writes its answer at `out`, the others return it.
    fn get_args(self, out: u64) -> [u64; 6] {
        let (option, which) = self.key();
        let arg2 = if self == Knob::Tsc { out } else { which };
        [option as u64, arg2, 0, 0, 0, 0]
    }

    /// The SET call that gives a task `value`, as GET read it.
    fn set_args(self, value: u64) -> [u64; 6] {
        let (option, arg2, arg3) = match self {
            Knob::ThpDisable => (
                libc::PR_SET_THP_DISABLE,
                value & THP_DISABLED,
                value & !THP_DISABLED,
            ),
            Knob::TimerSlack => (libc::PR_SET_TIMERSLACK, value, 0),
            Knob::Tsc => (libc::PR_SET_TSC, value, 0),
            Knob::MceKill if value == PR_MCE_KILL_DEFAULT => {
                (libc::PR_MCE_KILL, PR_MCE_KILL_CLEAR, 0)
            }
            Knob::MceKill => (libc::PR_MCE_KILL, PR_MCE_KILL_SET, value),
            Knob::IoFlusher => (PR_SET_IO_FLUSHER, value, 0),
            Knob::Mdwe => (PR_SET_MDWE, value, 0),
            Knob::MemoryMerge => (PR_SET_MEMORY_MERGE, value, 0),
            Knob::Dumpable => (libc::PR_SET_DUMPABLE, value, 0),
            Knob::Speculation(which) => {
                (libc::PR_SET_SPECULATION_CTRL, which, value & PR_SPEC_STATE)
            }
        };
        [option as u64, arg2, arg3, 0, 0, 0]
    }

    /// What the image keeps of a GET's answer, if anything: a GET that fails (one that needs
    /// a privilege the process lacks, which it then could not have used to set it either)
    /// and a speculation control the task cannot change keep nothing.
    fn kept(self, ret: i64, out: u64) -> Option<u64> {
        if ret < 0 {
            return None;
        }
        match self {
            Knob::Tsc => Some(out),
            Knob::Speculation(_) if ret as u64 & PR_SPEC_PRCTL == 0 => None,
            _ => Some(ret as u64),
        }
    }
}

/// Read the settings of stopped `pid`, with `scratch` (8 bytes at least) for an answer.
pub fn read(pid: Pid, inj: &Injector, mem: &Memory, scratch: u64) -> io::Result<Vec<PrctlValue>> {
    let mut values = Vec::new();
    for knob in Knob::all() {
        let (ret, out) = get(pid, inj, mem, scratch, knob)?;
        if let Some(value) = knob.kept(ret, out) {
            let (option, which) = knob.key();
            values.push(PrctlValue {
                option,
                which,
                value,
            });
        }
    }
    Ok(values)
}

/// Give stopped `pid` the settings of an image where its own differ.
pub fn restore(
    pid: Pid,
    inj: &Injector,
    mem: &Memory,
    scratch: u64,
    values: &[PrctlValue],
) -> io::Result<()> {
    for value in values {
        let knob = Knob::of(value).ok_or_else(|| {
            io::Error::other(format!(
                "the image holds prctl option {} ({}), unknown here",
                value.option, value.which
            ))
        })?;
        let (ret, out) = get(pid, inj, mem, scratch, knob)?;
        if knob.kept(ret, out) == Some(value.value) {
            continue;
        }
        let what = format!("prctl({knob:?}, {})", value.value);
        inj.call_ok(pid, libc::SYS_prctl, knob.set_args(value.value), &what)?;
    }
    Ok(())
}

/// `knob`'s GET in `pid`: its result, and what it wrote at `scratch` (PR_GET_TSC).
fn get(pid: Pid, inj: &Injector, mem: &Memory, scratch: u64, knob: Knob) -> io::Result<(i64, u64)> {
    mem.write(scratch, &[0; 8])?;
    let ret = inj.call(pid, libc::SYS_prctl, knob.get_args(scratch))?;
    let out = mem.read_words(scratch, 1)?[0] & u64::from(u32::MAX);
    Ok((ret, out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_setting_is_set_again_as_it_was_read() {
        let set = |knob: Knob, value| knob.set_args(value)[..3].to_vec();
        let opt = |o: i32| o as u64;
        assert_eq!(
            set(Knob::ThpDisable, 1),
            [opt(libc::PR_SET_THP_DISABLE), 1, 0]
        );
        assert_eq!(
            set(Knob::ThpDisable, 0),
            [opt(libc::PR_SET_THP_DISABLE), 0, 0]
        );
        // Disabled except where advised (flag 1 << 1).
        assert_eq!(
            set(Knob::ThpDisable, 3),
            [opt(libc::PR_SET_THP_DISABLE), 1, 2]
        );
        assert_eq!(set(Knob::MceKill, 2), [opt(libc::PR_MCE_KILL), 0, 0]);
        assert_eq!(set(Knob::MceKill, 1), [opt(libc::PR_MCE_KILL), 1, 1]);
        // The PR_SPEC_PRCTL bit is a fact, not part of the state that is set.
        let spec = set(Knob::Speculation(1), PR_SPEC_PRCTL | 4);
        assert_eq!(spec, [opt(libc::PR_SET_SPECULATION_CTRL), 1, 4]);
        assert_eq!(Knob::Speculation(0).kept(2, 0), None);
        assert_eq!(Knob::Speculation(0).kept(3, 0), Some(3));
        assert_eq!(Knob::Tsc.kept(0, 2), Some(2));
        assert_eq!(Knob::IoFlusher.kept(-i64::from(libc::EPERM), 0), None);
    }

    #[test]
    fn every_setting_has_its_own_key() {
        let knobs: Vec<Knob> = Knob::all().collect();
        for knob in &knobs {
            let (option, which) = knob.key();
            let value = PrctlValue {
                option,
                which,
                value: 0,
            };
            assert_eq!(Knob::of(&value), Some(*knob));
        }
        let unknown = PrctlValue {
            option: libc::PR_GET_NAME,
            which: 0,
            value: 0,
        };
        assert_eq!(Knob::of(&unknown), None);
    }
}
