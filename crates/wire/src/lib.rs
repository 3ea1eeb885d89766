//! rmosix wire room: the messages that cross a socket, and how they are framed.
//!
//! Two protocols live here:
//!
//! * the **control protocol** between the tools (`migrate`, `mosctl`, `mosrun`'s supervisor),
//!   the guests (`mosixd guest`) and the local daemon `mosixd`, over a Unix stream socket
//!   ([`Request`], [`Reply`], [`Report`], [`Command`], [`GuestReport`], [`Tally`]), and the blocking
//!   client that reaches the daemon ([`DaemonSocket`]);
//! * the **link hello** that one daemon sends to another as the first message on an
//!   authenticated link ([`LinkHello`], [`Purpose`]). Encryption and framing of links are the
//!   transport room's job; this room only says what the bytes mean.
//!
//! # Layout
//!
//! Every message is one JSON object (serde's externally tagged enums) on one line, ended by
//! `\n`. JSON never contains a raw newline, so the newline is an unambiguous frame end.
//!
//! ```text
//! tool → mosixd   {"migrate":{"pid":4711,"target":{"node":3}}}\n
//! mosixd → tool   {"error":{"message":"process 4711 is not running under mosrun"}}\n
//! daemon → daemon {"version":1,"from_node":2,"purpose":{"session":{"uid":1000,...}}}
//! ```
//!
//! A line may be at most [`MAX_LINE`] bytes including its newline; [`LineReader`] checks this
//! before it buffers more, so a peer cannot make the reader allocate without bound. Replies
//! of the daemon, which grow with the map, may be up to [`MAX_REPLY`] bytes: the tools read
//! them with [`LineReader::for_replies`] from a daemon whose user they checked first.
//!
//! # Versions
//!
//! The control protocol only ever connects a daemon with tools of the same installation; an
//! unknown message fails to decode and is answered with [`Reply::Error`]. Links join
//! different machines, so [`LinkHello`] carries [`LINK_VERSION`] and a daemon drops a peer
//! that speaks another.
//!
//! The door: the message types, the typed outcome of a move ([`MoveError`], [`NotMovable`]),
//! [`send_line`], [`encode_line`], [`encode_reply`], [`LineReader`], [`DecodeError`],
//! [`DEFAULT_SOCKET`], [`SOCKET_ENV`], [`DAEMON_USER_ENV`], [`MAX_LINE`], [`MAX_REPLY`],
//! [`LINK_VERSION`], [`Recalled`]; a supervisor's [`Tally`] for the daemon's metrics, with
//! [`Buckets`], [`MoveCount`], [`MoveKind`], [`MoveOutcome`] and the buckets' bounds; the client: [`DaemonSocket`], [`exchange`], [`AskError`], [`Backoff`],
//! [`spawn_unsignalled`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod client;
mod codec;
mod control;
mod link;
mod outcome;
mod tally;

pub use client::{AskError, Backoff, DaemonSocket, exchange, spawn_unsignalled};
pub use codec::{
    DecodeError, LineReader, MAX_LINE, MAX_REPLY, encode_line, encode_reply, send_line,
};
pub use control::{
    Advice, Command, DAEMON_USER_ENV, DEFAULT_SOCKET, Decay, Departure, GuestReport, HostedProcess,
    Liveness, NodeFigures, NodeMode, NodeModes, NodeStatus, ParseTargetError, ProcessEntry, Reply,
    Report, Request, SOCKET_ENV, Target,
};
pub use link::{HostedHere, LINK_VERSION, LinkHello, Purpose, Recalled};
pub use outcome::{MoveError, NotMovable};
pub use tally::{
    Buckets, FORWARDED_US_BOUNDS, FREEZE_US_BOUNDS, IMAGE_BYTES_BOUNDS, MoveCount, MoveKind,
    MoveOutcome, Tally,
};
