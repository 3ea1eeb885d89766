//! Messages of a migration session between a home supervisor and a guest supervisor. They travel
//! as image frames (JSON messages and page frames, see the image room); buffers never go inside
//! JSON: a message announces how many page frames follow it.

use std::io::{self, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use rmosix_image::{Area, KernelFacts};
use rmosix_seal::{self as sealed, End, SealedReader, SessionKeys};
use serde::{Deserialize, Serialize};

/// Home supervisor to guest supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToGuest {
    /// Opens a session; an image follows once the guest answers `Ready`.
    Hello {
        /// The home node's facts, for the compatibility check.
        facts: KernelFacts,
    },
    /// The whole image follows (header, page frames, end marker), with the process frozen.
    Image,
    /// Pre-copy: the pages of these areas follow, then an end marker, sent while the process
    /// runs on at home. Once the guest has placed them (`Prepared`), the final round follows:
    /// header, what changed, end marker (see `precopy`).
    Precopy {
        /// The process's areas when the first round began.
        areas: Vec<Area>,
    },
    /// The result of a forwarded call, followed by `backs` page frames addressed in remote memory.
    Reply {
        /// The call this answers (its `Call::id`). After a relayed signal the remote may have
        /// moved on to another call; an answer for an older one is dropped.
        id: u64,
        /// Return value (negative errno on failure).
        ret: i64,
        /// How many page frames follow.
        backs: u32,
    },
    /// A signal arrived at the shell: deliver it to the remote.
    Signal {
        /// Signal number.
        sig: i32,
    },
    /// Home wants the process's image, to restore it or to relay it to another node: send a
    /// pre-copy first round (`ToHome::Precopy`) while it runs, or, where writes cannot be
    /// tracked, the whole image frozen (`ToHome::Going`).
    SendImage,
    /// The first round is in place at the next node: freeze, and send the final round after
    /// `ToHome::Going`.
    Prepared,
    /// The process ended at home, or its image came home and runs there: drop the remote.
    Ended,
    /// The image that came home could not be restored there: the remote runs on.
    Stay {
        /// Why home could not take it.
        reason: String,
    },
}

/// Guest supervisor to home supervisor.
#[derive(Debug, Serialize, Deserialize)]
pub enum ToHome {
    /// Compatible: send the image.
    Ready,
    /// This node will not take the process.
    Refused {
        /// Why.
        reason: String,
    },
    /// The first round of a pre-copy is in place: send the final round.
    Prepared,
    /// Pre-copy from a remote: the pages of these areas follow, then an end marker, sent while
    /// the process runs on. Home relays them to the next node.
    Precopy {
        /// The process's areas when the first round began.
        areas: Vec<Area>,
    },
    /// The image is restored and runs.
    Running,
    /// Restore failed; nothing runs here.
    Failed {
        /// Why.
        reason: String,
    },
    /// Run this call in the shell. Followed by one page frame per buffer with `send`.
    Call {
        /// The seccomp notification it came from.
        id: u64,
        /// Syscall number.
        nr: i64,
        /// Arguments as the remote passed them.
        args: [u64; 6],
        /// Buffers the call reads or writes.
        bufs: Vec<BufSpec>,
    },
    /// The process is coming home (an image follows).
    Going {
        /// Why it goes.
        reason: String,
        /// It goes for a call that only home can run: home must restore it, even when an
        /// order would move it on to another node.
        needs_home: bool,
    },
    /// The remote entered a group stop (SIGSTOP, SIGTSTP, ...): the shell stops too, so job
    /// control at home sees it.
    Stopped {
        /// The stopping signal.
        sig: i32,
    },
    /// A signal killed the remote.
    Died {
        /// The signal.
        sig: i32,
    },
    /// The last word of a remote that went home: signals home relayed after the image was
    /// taken, which the image therefore does not hold.
    Late {
        /// The signals, in the order they came.
        signals: Vec<i32>,
    },
}

/// Out-buffers of a call, each with the remote address it goes to.
pub type Backs = Vec<(u64, Vec<u8>)>;

/// One buffer argument of a forwarded call.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BufSpec {
    /// Which argument points at it.
    pub arg: u8,
    /// Its length.
    pub len: u64,
    /// Its contents travel home (a page frame follows the call).
    pub send: bool,
    /// How much of it travels back after the call, if anything.
    pub back: Option<Back>,
}

/// How much of a buffer comes back.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum Back {
    /// All of it, when the call succeeds.
    All,
    /// As many bytes as the call returned.
    Ret,
    /// As many records of this size as the call returned.
    RetTimes(u64),
}

impl Back {
    /// Bytes to send back for a buffer of `len` after a call returned `ret`.
    pub fn bytes(self, len: u64, ret: i64) -> u64 {
        if ret < 0 {
            return 0;
        }
        match self {
            Back::All => len,
            Back::Ret => (ret as u64).min(len),
            Back::RetTimes(size) => (ret as u64).saturating_mul(size).min(len),
        }
    }
}

/// The receiving half of a session stream: bytes, the fd to poll, and whether bytes are
/// already buffered above that fd (a poll would not show them).
pub trait SessionRead: Read + Send {
    /// The fd that becomes readable when more bytes arrive.
    fn raw_fd(&self) -> RawFd;
    /// Bytes are waiting in user space.
    fn buffered(&self) -> bool;
}

impl SessionRead for UnixStream {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn buffered(&self) -> bool {
        false
    }
}

impl SessionRead for SealedReader {
    fn raw_fd(&self) -> RawFd {
        self.as_raw_fd()
    }

    fn buffered(&self) -> bool {
        SealedReader::buffered(self)
    }
}

/// Both halves of a session stream. In a cluster it is a sealed TCP session handed over by
/// the daemons; tests use a Unix socket pair.
pub struct Channel {
    /// What the peer sends.
    pub reader: Box<dyn SessionRead>,
    /// Where we send; flushed after every message that expects an answer.
    pub writer: Box<dyn Write + Send>,
}

impl Channel {
    /// A channel over one end of a Unix socket pair.
    pub fn unix(stream: UnixStream) -> io::Result<Channel> {
        let reader = Box::new(stream.try_clone()?);
        Ok(Channel {
            reader,
            writer: Box::new(BufWriter::with_capacity(1 << 20, stream)),
        })
    }

    /// A channel over a sealed session socket (see rmosix_seal).
    pub fn sealed(socket: TcpStream, keys: &SessionKeys, end: End) -> io::Result<Channel> {
        let (reader, writer) = sealed::open(socket, keys, end)?;
        Ok(Channel {
            reader: Box::new(reader),
            writer: Box::new(writer),
        })
    }
}
