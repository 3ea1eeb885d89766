//! The engine room: everything that touches another process through the kernel. ptrace
//! (seize, interrupt, registers, XSAVE, signal masks, rseq), injection of system calls,
//! freeze, dump and restore of images, the remote's seccomp filter and the table of system
//! calls behind it, and the two supervisors built on them: the home supervisor (the
//! deputy, run by `mosrun`) and the guest supervisor (run by `mosixd guest`).
//!
//! It is synchronous on purpose: ptrace requests must come from the thread that seized the
//! tracee, so each supervisor is one thread with one poll loop. Other rooms see only the door
//! below: [`supervise`] with its [`Daemon`] trait, [`serve_guest`], the session [`Channel`],
//! and the lower-level [`dump`], [`restore_into`], [`spawn_program`], [`spawn_husk`] and
//! [`trace`] calls that the engine's own tests drive. The reasoning lives in
//! docs/engine.md and docs/forwarding.md.
#![warn(missing_docs)]

mod cmdline;
mod converge;
mod cputime;
mod deputy;
mod dfsa;
mod dump;
mod event_loop;
mod facts;
mod files;
mod fill;
mod forward;
mod guest;
mod halt;
mod home;
mod homefill;
mod homepaths;
mod inject;
mod inotify;
mod ioctls;
mod legs;
mod limits;
mod mapfile;
mod maps;
mod mem;
mod membarrier;
mod moves;
mod msg;
mod numbers;
mod pathcache;
mod pidfd;
mod prctl;
mod precopy;
mod ptrace;
mod readahead;
mod relay_out;
mod restore;
mod samefile;
mod sched;
mod seccomp;
mod session;
mod sharing;
mod signals;
mod sockopts;
mod spawn;
mod sys;
mod sysfiles;
mod table;
#[cfg(test)]
mod testing;
mod throttle;
mod track;
mod userfault;
mod writebehind;

pub use cputime::Carry;
pub use dfsa::Consistent;
pub use dump::{check_movable, dump};
pub use facts::probe;
pub use inject::Injector;
pub use ptrace::{Pid, Stop};
pub use restore::{read_header, restore_into};
pub use samefile::keep_digests_in;
pub use spawn::{spawn_husk, spawn_program};
pub use sysfiles::DEFAULT_PREFIXES as SYSTEM_PREFIXES;
/// Low-level tracer calls for the supervisors.
pub mod trace {
    pub use crate::ptrace::{cont, get_regs, interrupt, wait};
}

pub use guest::{Left, Reports, serve_guest};
pub use home::{Daemon, ExecPlacement, JobEnd, Order, Placement, TALLY_EVERY, supervise};
pub use session::{Channel, SessionRead};
