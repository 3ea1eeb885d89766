//! rmosix engine room: ptrace, injection, freeze, dump, restore and forwarding.

mod dump;
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

/// Serve one guest session on the target node: `stream` carries the session protocol from the
/// home supervisor (through the daemons' link). Runs in a process that already has the owner's
/// uid and gids. Returns when the guest leaves (exits, dies or goes home).
pub fn serve_guest(stream: std::os::unix::net::UnixStream) -> std::io::Result<()> {
    drop(stream);
    Err(std::io::Error::other("guest sessions are not built yet"))
}
