//! The image format and the session framing it travels in.
//!
//! An *image* is what moves when a process migrates: its memory areas and their contents,
//! registers (general, the whole XSAVE area, fs_base), signal state and the small per-task kernel
//! state a program can see (rseq, robust list, tid address, brk, auxv). It is never written to a
//! file: the engine streams it over the session connection while it reads it.
//!
//! Layout of a session stream, one frame after another:
//!
//! ```text
//! frame   := len:u32le kind:u8 body[len]       (len counts body only, at most MAX_FRAME)
//! kind 1  := Message, a JSON document (control messages and the image header)
//! kind 2  := Pages, addr:u64le then raw page bytes to place at addr
//! image   := Message(Header) Pages* Message(EndOfImage)
//! ```
//!
//! Pages that are all zero are never sent: the target maps anonymous memory, which is zero.
//! The header carries [`FORMAT_VERSION`]; a peer with another version is refused before any
//! memory is touched.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod frame;
mod header;

pub use frame::{Frame, FrameError, FrameHead, FrameReader, MAX_FRAME, write_message, write_pages};
pub use header::{Area, CpuTimer, Header, KernelFacts, MmLayout, Registers, SigAction};

/// Version of the image and session format; bumped on any incompatible change.
pub const FORMAT_VERSION: u32 = 4;
