//! The image format and the session framing it travels in. This crate owns every byte of it:
//! the frames, the header, the register set and the end marker.
//!
//! An *image* is what moves when a process migrates: its memory areas and their contents,
//! what the process holds once (mm layout, auxv, dispositions, CPU-time timers, signals
//! pending for all of it, membarrier registrations) and the state of each of its tasks (registers, the whole XSAVE area,
//! signal mask and pending signals, altstack, rseq, robust list, tid address, name, the
//! settings `prctl` reads). It is
//! never written to a file: the engine streams it over the session connection while it reads
//! it.
//!
//! Layout of a session stream, one frame after another:
//!
//! ```text
//! frame    := len:u32le kind:u8 body[len]       (len counts body only, at most MAX_FRAME)
//! kind 1   := Message, a JSON document (control messages, the header, the end marker)
//! kind 2   := Pages, addr:u64le then raw page bytes to place at addr; addr | FILE_PAGES:
//!             the file's own content, for pages of a file mapping the process never wrote
//!             (left out for a file the receiver said it holds, by digest)
//! image    := Message(Header) Pages* Message(EndOfImage { more_rounds: false })
//! running  := round* Pages* Message(EndOfImage { more_rounds: false })
//! round    := Pages* Message(EndOfImage { more_rounds: true })
//! Header   := { version, facts, mm, auxv, areas, sigactions, cpu_timers, cpu,
//!               shared_pending: [SigInfo], membarrier, tasks: [Task] }
//!                                        (one task today; threads can come without a new format)
//! Task     := { regs: Registers (27 named words), xstate, sigmask, altstack, rseq,
//!               robust_list, tid_address, pending: [SigInfo], comm,
//!               prctl: [{ option, which, value }] }
//! SigInfo  := the 128 bytes of a pending signal's siginfo_t (sender, code, value)
//! Area     := { start, end, read, write, exec, shared, offset, inode, name,
//!               advice: [Advice], guards: [(start, end)], file: FileId? }
//! FileId   := { path, kept, dev, inode, size, mtime, boot, digest }   (digest: SHA-256, hex)
//! ```
//!
//! A pre-copy sends `running` (every page while the process runs, then what it wrote since,
//! round after round) and then, frozen, a final round shaped like `image` that carries only
//! what changed. Each end marker lists the runs the receiver must empty (zapped or zeroed
//! since an earlier round). Pages that are all zero are not sent: the target maps anonymous
//! memory, which is zero (the pages a process wrote in a file mapping are sent all the same,
//! since the file shows through where nothing lands). The header carries [`FORMAT_VERSION`];
//! a peer with another version is refused before any memory is touched.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod frame;
mod header;
mod siginfo;

pub use frame::{
    FILE_PAGES, Frame, FrameError, FrameHead, FrameReader, MAX_FRAME, write_message, write_pages,
};
pub use header::{
    Advice, Area, CpuTimer, CpuUse, EndOfImage, FileId, Header, KernelFacts, Limit, LocalFile,
    MmLayout, PrctlValue, Registers, Sched, SigAction, Task, Usage,
};
pub use siginfo::{SIGINFO_LEN, SigInfo};

/// Version of the image and session format; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 14;
