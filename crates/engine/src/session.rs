//! The migration session between a home supervisor and a guest supervisor: its messages and
//! the stream they travel on. Messages are image frames (JSON messages and page frames, see
//! the image room); buffers never go inside JSON: a message announces how many page frames
//! follow it.
//!
//! A session opens with [`Opening`], from home. The guest reads its two versions before
//! anything else of it ([`Session::read_opening`]), and refuses a peer that speaks another
//! protocol or image format before any memory is touched.

use std::io::{self, BufWriter, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;

use rmosix_image::{Area, FORMAT_VERSION, FrameError, FrameReader, KernelFacts, SigInfo};
use rmosix_seal::{self as sealed, End, SealedReader, SessionKeys};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::dfsa::{Consistent, Terms};
use crate::numbers::Free;
use crate::pathcache::{Answer, Forgotten, Key, Listing};
use crate::samefile::Held;
use crate::sysfiles::SameAs;

/// Version of the session protocol (these messages and their order); bumped on any
/// incompatible change.
pub const PROTOCOL_VERSION: u32 = 14;

/// The first message of a session, from home.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Opening {
    /// [`PROTOCOL_VERSION`] of home.
    pub protocol: u32,
    /// The image [`FORMAT_VERSION`] home writes.
    pub format: u32,
    /// Home's kernel facts, for the compatibility check.
    pub facts: KernelFacts,
    /// The process's PID at home, for the guest's reports.
    pub pid: i32,
    /// Home's file systems that are the same everywhere, and the process's rights there:
    /// what the remote may open itself (see `dfsa`). None: nothing, every file call goes home.
    #[serde(default)]
    pub dfsa: Option<Terms>,
}

/// The part of an [`Opening`] every version can read.
#[derive(Deserialize)]
struct Versions {
    protocol: u32,
    format: u32,
}

impl Opening {
    /// An opening of this version.
    pub fn new(facts: KernelFacts, pid: i32, dfsa: Option<Terms>) -> Opening {
        Opening {
            protocol: PROTOCOL_VERSION,
            format: FORMAT_VERSION,
            facts,
            pid,
            dfsa,
        }
    }
}

/// What the remote asked of a call besides its answer (see `ToHome::Call`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Asking {
    /// What an open of a system file opened (see `sysfiles`).
    pub same: bool,
    /// A vouch for a lookup's answer (see `pathcache`).
    pub vouch: bool,
    /// The free numbers of home's table once the call ran (see `numbers`).
    pub numbers: bool,
    /// What an open opened, if home lends it (see `readahead`, "Opens lent ahead").
    pub lend: bool,
}

/// Home supervisor to guest supervisor, after the [`Opening`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ToGuest {
    /// The whole image follows (header, page frames, end marker), with the process frozen.
    Image,
    /// Pre-copy: once the guest answers which of their files it holds (`ToHome::Held`), the
    /// pages of these areas follow, then an end marker, sent while the process runs on at
    /// home. Once the guest has placed them (`Prepared`), the final round follows: header,
    /// what changed, end marker (see `precopy`).
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
    /// The answer to a `ToHome::Read` that home lent data for: one page frame follows, the
    /// file's bytes from offset `start` (the frame's address), up to the end of the file if
    /// `eof` (see `readahead`).
    Filled {
        /// The call this answers.
        id: u64,
        /// The file offset the bytes start at.
        start: u64,
        /// The bytes reach the end of the file.
        eof: bool,
        /// The remote may keep the bytes for later reads; false: the file changed while
        /// they were read, so they serve this call only.
        keep: bool,
    },
    /// The open `id`, asked with `lend`, opened a regular file that home lends: its status
    /// (the `struct stat` an `fstat` of it gives) and its first bytes from the description's
    /// offset, in the one page frame that follows, as a `Filled` would lend them (see
    /// `readahead`, "Opens lent ahead"). Sent just before the open's `Reply`.
    Lent {
        /// The open it answers.
        id: u64,
        /// The descriptor the open returns (its `Reply` follows).
        fd: i32,
        /// The file's `struct stat`, as this architecture lays it out.
        status: Vec<u8>,
        /// The file offset the bytes start at.
        start: u64,
        /// The bytes reach the end of the file.
        eof: bool,
        /// The file did not change while they were read: the remote may keep them, and the
        /// status.
        keep: bool,
    },
    /// What the file an open asked with `same` opened is: sent just before its `Reply`, for
    /// a regular file opened read-only (see `sysfiles`).
    Same {
        /// The call it answers.
        id: u64,
        /// The file's digest and path.
        same: SameAs,
    },
    /// Home watches what the lookup call `id` depends on: the remote may keep its answer,
    /// which follows, until a `Forget` (see `pathcache`).
    Vouched {
        /// The call it answers.
        id: u64,
        /// For an answer that a name is missing: the directory the lookup found it missing
        /// in and every name that directory holds, so that any other name missing there is
        /// known missing too (see `pathcache`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        listing: Option<Listing>,
        /// For a lookup of a path relative to the working directory: the directory's path,
        /// which home walked it from and watches (see `pathcache`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        cwd: Option<String>,
    },
    /// The lowest free numbers of the shell's descriptor table once call `id` ran, which the
    /// remote gives out to the files it opens itself (see `numbers`): sent just before its
    /// `Reply`, for a call that asked.
    Numbers {
        /// The call it answers.
        id: u64,
        /// The numbers.
        free: Free,
    },
    /// The lowest free numbers of the shell's descriptor table as a process stopped since its
    /// exec leaves home (placed at its exec: nothing changes its table before it runs away),
    /// sent ahead of its image: its first open of a file it may open where it runs (a
    /// system file it shares with home) then needs no round trip for a number (see
    /// `numbers`).
    NumbersAhead {
        /// The numbers.
        free: Free,
    },
    /// Something a vouched answer depended on changed at home: drop every answer kept. Sent
    /// before any later reply or signal, and at once when home hears of the change.
    Forget,
    /// A change at home took these of the answers vouched for: drop them, keep the rest.
    /// Sent as `Forget` is (see `homepaths`).
    ForgetPart(Forgotten),
    /// What home vouched for to the job's other remotes that this process would get: sent
    /// ahead of its image (before `Image` or `Precopy`), again for what the book gained once
    /// it runs, and before the answer to each of its lookups that goes home; kept as if home
    /// had vouched for each to it, until a `Forget` (see `pathcache`, `homepaths`).
    Known {
        /// Lookups and their answers.
        answers: Vec<(Key, Answer)>,
        /// Directories listed, for names missing in them.
        listings: Vec<Listing>,
    },
    /// Files the remote holds bytes of changed: drop what it holds for these descriptors.
    /// Sent before any later reply or signal (see `homefill`).
    Stale {
        /// The descriptors.
        fds: Vec<i32>,
    },
    /// The answer to a `ToHome::Precopy`: the files of its areas that the next node (home, or
    /// the node home relays to) holds; their file pages stay at the remote (see `samefile`).
    Held(Held),
    /// A signal arrived at the shell: deliver it to the remote, as it came.
    Signal {
        /// The signal and its siginfo.
        info: SigInfo,
    },
    /// Home wants the process's image, to restore it or to relay it to another node: send a
    /// pre-copy first round (`ToHome::Precopy`) while it runs, or, where writes cannot be
    /// tracked, the whole image frozen (`ToHome::Going`).
    SendImage,
    /// The first round is in place at the next node: freeze, and send the final round after
    /// `ToHome::Going`.
    Prepared,
    /// Room to write behind to descriptor `fd` (see `writebehind`): home wrote `written`
    /// bytes written behind to it (0: it answers a forwarded write, whose `Reply` follows),
    /// and `room` more would fit now without blocking (0: write behind no more to it).
    Room {
        /// The shell's descriptor.
        fd: i32,
        /// Bytes of writes behind that ran (or were dropped with a reader that went).
        written: u64,
        /// Bytes a write could add now without blocking.
        room: u64,
    },
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
    Ready {
        /// The trees that are the same everywhere this node shares with home, where it opens
        /// again the files of an image (see `dfsa`): home, relaying an image from another
        /// node, takes back the files of trees outside them.
        shares: Consistent,
    },
    /// This node will not take the process.
    Refused {
        /// Why.
        reason: String,
    },
    /// The first round of a pre-copy is in place: send the final round.
    Prepared,
    /// The answer to a `ToGuest::Precopy`: the files of its areas this node holds; their
    /// file pages stay at home (see `samefile`).
    Held(Held),
    /// Pre-copy from a remote: once home answers `ToGuest::Held`, the pages of these areas
    /// follow, then an end marker, sent while the process runs on. Home relays them to the
    /// next node.
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
    /// Run this call in the shell. Followed by `sends` page frames: the buffers the call reads,
    /// in the order the table gives them (`table::Row::buffers`), each addressed where it
    /// came from in remote memory. Home derives every length from the table and checks these
    /// against it.
    Call {
        /// The seccomp notification it came from.
        id: u64,
        /// Syscall number.
        nr: i64,
        /// Arguments as the remote passed them (lengths over the limits shortened).
        args: [u64; 6],
        /// How many page frames follow.
        sends: u32,
        /// An open of a system file the remote may serve itself: where it opens a file, home
        /// says what it is (`ToGuest::Same`) before its `Reply` (see `sysfiles`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        same: bool,
        /// A lookup of a system path whose answer the remote would keep: home watches what
        /// it depends on and says so (`ToGuest::Vouched`) before its `Reply` (see
        /// `pathcache`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        vouch: bool,
        /// If the call may change the shell's descriptor table, home tells its free numbers
        /// (`ToGuest::Numbers`) before its `Reply` (see `numbers`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        numbers: bool,
        /// An open whose file home lends ahead if it is a regular file it may lend: its
        /// status and first bytes (`ToGuest::Lent`) come before its `Reply` (see
        /// `readahead`).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        lend: bool,
    },
    /// The process's open `id` put a file here under number `fd`, one home told free: the
    /// shell opens `path` with `flags` (a system file home vouched for, or the placeholder
    /// of a file opened away, see `numbers`) under that number too, before any later call
    /// runs there, or never if a close of `fd` comes first. Home answers it (a `Reply`
    /// with its id) once the shell holds the number, or knows it never will.
    Opened {
        /// The open's notification.
        id: u64,
        /// The number the program got.
        fd: i32,
        /// What the shell opens.
        path: String,
        /// With these open flags.
        flags: u64,
    },
    /// A `read`, `readv` or `pread64` whose bytes home may lend (see `ReadAsk`).
    Read(ReadAsk),
    /// The program's reads of `fd` served at the remote consumed `bytes` that home's offset
    /// of the description does not count yet: advance it (sent before anything else goes
    /// home, see `readahead`).
    Consumed {
        /// The descriptor.
        fd: i32,
        /// Bytes consumed.
        bytes: u64,
    },
    /// The process leaves: its reads of system file `fd` here (see `sysfiles`) reached
    /// offset `pos`; home's own descriptor of the file takes it, so that a node where the
    /// file differs can hand it back to home (sent before `Going`).
    Offset {
        /// The descriptor.
        fd: i32,
        /// Its offset here.
        pos: u64,
    },
    /// A write the program was told succeeded (see `writebehind`): write the one page frame
    /// that follows to `fd`, after everything sent before it; answered by `ToGuest::Room`.
    WriteBehind {
        /// The shell's descriptor.
        fd: i32,
    },
    /// The process's call `id` closed file `fd`, opened here: the shell closes its copy or
    /// placeholder too, before any later call that may see its table runs there, whatever
    /// moves are asked for, or not at all if its open has not run yet. Home answers it (a
    /// `Reply` with its id) once the number is free.
    Closed {
        /// The close's notification.
        id: u64,
        /// The descriptor.
        fd: i32,
    },
    /// The program's call `id` closed `fd`, a regular file home lent ahead at its open
    /// (`ToGuest::Lent`), and was told it succeeded: the shell closes it too, in order,
    /// before any later call of the process runs there, whatever moves are asked for. Home
    /// answers it (a `Reply` with its id) once it ran (see `readahead`).
    CloseBehind {
        /// The close's notification.
        id: u64,
        /// The descriptor.
        fd: i32,
    },
    /// The process leaves: the shell follows every open and close made here (`Opened`,
    /// `Closed`) now, and home answers each once it ran, before the process goes.
    Follow,
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
        signals: Vec<SigInfo>,
    },
}

/// A `read`, `readv` or `pread64` (`at`: its offset) of `count` bytes into `buf` (for readv,
/// the iovec array's address stands for the buffer): home lends up to `ahead` bytes of the
/// file from there (`ToGuest::Filled`), or runs the call as any other when the descriptor
/// does not qualify (`ToGuest::Reply`). See `readahead`.
#[derive(Debug, Serialize, Deserialize)]
pub struct ReadAsk {
    /// The seccomp notification it came from.
    pub id: u64,
    /// The descriptor.
    pub fd: i32,
    /// Where the data goes in remote memory.
    pub buf: u64,
    /// Bytes the program asked for (at most `table::MAX_BUF`).
    pub count: u64,
    /// pread64's offset; None: the description's own offset.
    pub at: Option<u64>,
    /// For a pread64: where the bytes lent may begin, before `at` (the aligned chunk around
    /// a scattered read). Home lends from `at` where this is later or too far before it.
    pub from: Option<u64>,
    /// Bytes home may read from there for the remote to keep.
    pub ahead: u64,
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

/// Most bytes of messages sent later ([`Session::send_later`]) that wait unflushed: far
/// below the sealed stream's own frame (`rmosix_seal::MAX_PLAIN`), which it seals and sends
/// when full, message boundary or not. A message cut so would wait half-sent for the next
/// flush while its reader waits for the rest; with less than a frame waiting, none is cut.
const LATER_MAX: usize = 16 << 10;

/// An open session: frames in, frames out.
pub struct Session {
    /// What the peer sends, frame by frame.
    pub frames: FrameReader<Box<dyn SessionRead>>,
    /// Where we send.
    pub out: Box<dyn Write + Send>,
    /// Bytes sent later since the last [`Session::send`] or flush of them.
    later: usize,
}

impl Session {
    /// A session over `channel`.
    pub fn new(channel: Channel) -> Session {
        Session {
            frames: FrameReader::new(channel.reader),
            out: channel.writer,
            later: 0,
        }
    }

    /// Send `msg` and flush: the peer can act on it at once.
    pub fn send<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        rmosix_image::write_message(&mut self.out, msg)?;
        self.later = 0;
        self.out.flush()
    }

    /// Send `msg`, which nothing waits for, with the next flush: at the latest once
    /// [`LATER_MAX`] bytes of such messages wait.
    pub fn send_later<T: Serialize>(&mut self, msg: &T) -> io::Result<()> {
        let mut bytes = Vec::new();
        rmosix_image::write_message(&mut bytes, msg)?;
        self.out.write_all(&bytes)?;
        self.later += bytes.len();
        if self.later >= LATER_MAX {
            self.later = 0;
            self.out.flush()?;
        }
        Ok(())
    }

    /// The next message, which must be a `T`.
    pub fn recv<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        self.frames.message()
    }

    /// The fd to poll for what the peer sends.
    pub fn raw_fd(&self) -> RawFd {
        self.frames.get_ref().raw_fd()
    }

    /// Bytes from the peer wait above the fd (a poll would not show them).
    pub fn buffered(&self) -> bool {
        self.frames.get_ref().buffered()
    }

    /// Read the session's [`Opening`]: its versions first, which must be ours; only then the
    /// rest. The error says what differs, for the refusal.
    pub fn read_opening(&mut self) -> Result<Opening, OpeningError> {
        let mut body = Vec::new();
        if self.frames.next_frame_into(&mut body)? != rmosix_image::FrameHead::Message {
            return Err(OpeningError::NotOpening);
        }
        let versions: Versions =
            serde_json::from_slice(&body).map_err(|_| OpeningError::NotOpening)?;
        if versions.protocol != PROTOCOL_VERSION {
            return Err(OpeningError::Protocol(versions.protocol));
        }
        if versions.format != FORMAT_VERSION {
            return Err(OpeningError::Format(versions.format));
        }
        serde_json::from_slice(&body).map_err(|_| OpeningError::NotOpening)
    }
}

/// Why a session did not open.
#[derive(Debug, thiserror::Error)]
pub enum OpeningError {
    /// The stream failed or ended before the opening.
    #[error(transparent)]
    Stream(#[from] FrameError),
    /// The first message is not an opening.
    #[error("the session did not open with an opening message")]
    NotOpening,
    /// Home speaks another protocol.
    #[error("home speaks session protocol {0}, this node {PROTOCOL_VERSION}")]
    Protocol(u32),
    /// Home writes another image format.
    #[error("home writes image format {0}, this node reads {FORMAT_VERSION}")]
    Format(u32),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> KernelFacts {
        KernelFacts {
            xcr0: 7,
            xsave_size: 832,
            cpu_features: [0; 5],
            vdso_layout: vec![],
            vdso_hash: 1,
        }
    }

    fn pair() -> (Session, Session) {
        let (a, b) = UnixStream::pair().unwrap();
        (
            Session::new(Channel::unix(a).unwrap()),
            Session::new(Channel::unix(b).unwrap()),
        )
    }

    #[test]
    fn an_opening_of_this_version_is_read() {
        let (mut home, mut guest) = pair();
        home.send(&Opening::new(facts(), 42, None)).unwrap();
        let opening = guest.read_opening().unwrap();
        assert_eq!((opening.pid, opening.facts), (42, facts()));
    }

    #[test]
    fn another_version_is_refused_before_the_rest_is_read() {
        let (mut home, mut guest) = pair();
        // A future opening with fields this version does not know, and no facts.
        home.send(&serde_json::json!({"protocol": PROTOCOL_VERSION + 1, "format": 1, "x": 1}))
            .unwrap();
        assert!(matches!(
            guest.read_opening(),
            Err(OpeningError::Protocol(v)) if v == PROTOCOL_VERSION + 1
        ));
        home.send(&serde_json::json!({"protocol": PROTOCOL_VERSION, "format": 0}))
            .unwrap();
        assert!(matches!(guest.read_opening(), Err(OpeningError::Format(0))));
        home.send(&ToGuest::Ended).unwrap();
        assert!(matches!(
            guest.read_opening(),
            Err(OpeningError::NotOpening)
        ));
    }
}
