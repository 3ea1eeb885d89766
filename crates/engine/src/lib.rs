//! rmosix engine room: ptrace, injection, freeze, dump, restore and forwarding.

mod dump;
mod guest;
mod home;
mod session;
mod facts;
mod inject;
mod maps;
mod mem;
mod ptrace;
mod restore;
mod spawn;
mod seccomp;
mod sys;
mod syscalls;

pub use dump::{NotMovable, check_movable, dump};
pub use facts::probe;
pub use inject::Injector;
pub use restore::{read_header, restore_into};
pub use spawn::{spawn_husk, spawn_program};
pub use ptrace::{Pid, Stop};
/// Low-level tracer calls for the supervisors.
pub mod trace {
    pub use crate::ptrace::{cont, interrupt, wait, get_regs};
}

pub use guest::serve_guest;
pub use home::{Daemon, JobEnd, Order, supervise};
