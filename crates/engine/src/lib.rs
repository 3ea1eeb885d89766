//! rmosix engine room: ptrace, injection, freeze, dump, restore and forwarding.

mod dump;
mod facts;
mod files;
mod guest;
mod home;
mod inject;
mod maps;
mod mem;
mod ptrace;
mod restore;
mod seccomp;
mod session;
mod spawn;
mod sys;
mod syscalls;

pub use dump::{NotMovable, check_movable, dump};
pub use facts::probe;
pub use inject::Injector;
pub use ptrace::{Pid, Stop};
pub use restore::{read_header, restore_into};
pub use spawn::{spawn_husk, spawn_program};
/// Low-level tracer calls for the supervisors.
pub mod trace {
    pub use crate::ptrace::{cont, get_regs, interrupt, wait};
}

pub use guest::serve_guest;
pub use home::{Daemon, JobEnd, Order, supervise};
pub use session::{Channel, SessionRead};
