//! Noise links over TCP.
//!
//! # Layout
//!
//! ```text
//! handshake (Noise_NNpsk0_25519_AESGCM_SHA256), each message framed as length:u16be message:
//!            initiator → e (psk0 mixed in, AEAD tag over an empty payload)   48 bytes
//!            responder → e, ee                                               48 bytes
//! transport: frame = head  ciphertext[len]  tag[16]
//!            head  = len:u32be  rest:u32be     len:  this frame's bytes of the message
//!                                              rest: the message's bytes after this frame
//!            AES-256-GCM, key: the handshake's split for this direction,
//!                         nonce: 0u32 ‖ counter:u64be, additional data: head
//! ```
//!
//! A message of any size up to [`MAX_MESSAGE`] is cut into frames of at most [`MAX_CHUNK`]
//! bytes; it ends with the frame whose `rest` is 0, so message boundaries survive. The head is
//! authenticated with its frame, and every frame of a message must announce the rest the one
//! before it left, so a head that lies about a length fails before anything is used.
//!
//! The handshake is Noise's, through snow; the frames after it are sealed with ring under the
//! two keys of Noise's split, one per direction. Noise's own transport messages would do the
//! same work with a copy more on each side and a 64 KiB limit; sealed in place, a message
//! crosses with one copy into the kernel at the sender and none but the kernel's at the
//! receiver, which reads each frame straight into the message it belongs to. That is what MFS
//! reads, whose bytes all cross a link, are bound by.
//!
//! Each direction's counter is owned by the half that uses it ([`LinkWriter`] for sending,
//! [`LinkReader`] for receiving). TCP delivers in order, so the receiver knows the next nonce
//! without it being sent, and no nonce is ever used twice for one key because only one task
//! holds each counter.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BufMut;
use rmosix_seal::{StreamKey, TAG_LEN};
use snow::{Builder, HandshakeState};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::ClusterKey;

/// The Noise protocol of every link. NN: no static keys, the cluster key alone authenticates;
/// psk0: it is mixed in before the first message, so that message already proves the key.
const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";

/// Bound into the handshake hash, so a link of another protocol or version cannot complete it.
const PROLOGUE: &[u8] = b"rmosix link 2";

/// How long either side waits for the whole handshake (TCP connect included for [`connect`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest message [`Link::send`] and [`Link::recv`] accept. A session carries a process image
/// in chunks well below this; the limit bounds what an authenticated but buggy peer can make
/// the receiver buffer.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Most bytes of a message in one frame. Small enough that a frame is sealed, sent and copied
/// while it stays in the CPU's cache, and that the receiver opens one frame while the sender
/// seals the next; large enough that a 1 MiB MFS read is 16 frames.
const MAX_CHUNK: usize = 64 << 10;
/// A frame's head.
const HEAD_LEN: usize = 8;
/// Handshake messages here are 48 bytes; anything much longer is not our protocol.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// The receiver's buffer: a small message arrives, head and all, in one read, while the bulk of
/// a large frame goes straight from the socket into its message.
const READ_BUFFER: usize = 4096;

/// Why a link could not be set up or used.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The TCP connection could not be made.
    #[error("cannot connect")]
    Connect(#[source] io::Error),
    /// The handshake did not finish in [`HANDSHAKE_TIMEOUT`].
    #[error("handshake timed out after {}s", HANDSHAKE_TIMEOUT.as_secs())]
    HandshakeTimeout,
    /// The peer closed the connection before the handshake finished (as a peer with another
    /// key does when it rejects ours).
    #[error("peer closed the connection during the handshake (wrong cluster key?)")]
    HandshakeClosed,
    /// A handshake message failed to authenticate or was malformed: the peer does not hold
    /// the cluster key, or does not speak this protocol.
    #[error("handshake failed (peer lacks the cluster key or speaks another protocol)")]
    Handshake(#[source] snow::Error),
    /// A handshake frame was longer than any handshake message.
    #[error("handshake message of {0} bytes is not ours")]
    HandshakeFrame(usize),
    /// Reading or writing the socket failed.
    #[error("connection failed")]
    Io(#[source] io::Error),
    /// The connection ended in the middle of a message.
    #[error("connection closed in the middle of a message")]
    Truncated,
    /// A frame failed authentication: it was forged, damaged, replayed or reordered.
    #[error("message failed authentication")]
    Decrypt,
    /// Sealing a frame failed.
    #[error("cannot encrypt message")]
    Encrypt(#[source] io::Error),
    /// A message is larger than [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The peer sent more than the link protocol allowed before a hand-over.
    #[error("{0} unexpected bytes before handing the connection over")]
    UnreadData(usize),
    /// A frame's head announced lengths no sender of this protocol writes.
    #[error(
        "malformed frame head: {len} bytes with {rest} to follow (at most {MAX_CHUNK} a frame, \
         {MAX_MESSAGE} a message, and what the frame before announced)"
    )]
    Malformed {
        /// The frame's length as announced.
        len: usize,
        /// The rest of the message as announced.
        rest: usize,
    },
}

/// An authenticated, encrypted, message-oriented connection to another node's daemon.
pub struct Link {
    reader: LinkReader,
    writer: LinkWriter,
}

/// The receiving half of a [`Link`].
pub struct LinkReader {
    stream: BufReader<OwnedReadHalf>,
    key: StreamKey,
}

/// The sending half of a [`Link`].
pub struct LinkWriter {
    stream: OwnedWriteHalf,
    key: StreamKey,
    /// One frame: head, then the plaintext sealed in place, then its tag.
    frame: Vec<u8>,
}

/// Connect to the daemon at `addr` and run the handshake as initiator, all within
/// [`HANDSHAKE_TIMEOUT`].
pub async fn connect(addr: impl ToSocketAddrs, key: &ClusterKey) -> Result<Link, LinkError> {
    let attempt = async {
        let stream = TcpStream::connect(addr).await.map_err(LinkError::Connect)?;
        handshake(stream, key, true).await
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, attempt)
        .await
        .map_err(|_| LinkError::HandshakeTimeout)?
}

/// Run the handshake as responder on a freshly accepted connection, within
/// [`HANDSHAKE_TIMEOUT`]. On failure the connection is closed and nothing the peer sent has
/// been handed to the caller.
pub async fn accept(stream: TcpStream, key: &ClusterKey) -> Result<Link, LinkError> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(stream, key, false))
        .await
        .map_err(|_| LinkError::HandshakeTimeout)?
}

/// A peer whose machine dies sends no FIN. Keepalive probes notice an idle link to it within
/// about IDLE + 3 × PROBE, and TCP_USER_TIMEOUT fails a write it never acknowledges, so a dead
/// node turns into an error on its peers instead of a hang.
fn detect_dead_peers(stream: &TcpStream) -> std::io::Result<()> {
    const IDLE: Duration = Duration::from_secs(5);
    const PROBE: Duration = Duration::from_secs(2);
    const UNACKED: Duration = Duration::from_secs(15);
    let sock = socket2::SockRef::from(stream);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(IDLE)
        .with_interval(PROBE)
        .with_retries(3);
    sock.set_tcp_keepalive(&keepalive)?;
    sock.set_tcp_user_timeout(Some(UNACKED))
}

async fn handshake(
    mut stream: TcpStream,
    key: &ClusterKey,
    initiator: bool,
) -> Result<Link, LinkError> {
    // Links carry forwarded system calls: latency matters more than packet count, and every
    // send flushes whole messages anyway.
    stream.set_nodelay(true).map_err(LinkError::Io)?;
    detect_dead_peers(&stream).map_err(LinkError::Io)?;
    let mut hs = new_handshake(key, initiator)?;
    // Handshake messages carry no payload: a small buffer holds either, so a peer that never
    // completes the handshake costs the listener little memory while it waits.
    let mut buf = [0u8; MAX_HANDSHAKE_FRAME];
    if initiator {
        write_handshake(&mut stream, &mut hs, &mut buf).await?;
        read_handshake(&mut stream, &mut hs, &mut buf).await?;
    } else {
        read_handshake(&mut stream, &mut hs, &mut buf).await?;
        write_handshake(&mut stream, &mut hs, &mut buf).await?;
    }
    if !hs.is_handshake_finished() {
        return Err(LinkError::Handshake(snow::Error::State(
            snow::error::StateProblem::HandshakeNotFinished,
        )));
    }
    // Noise's split: the first key seals what the initiator sends, the second what it receives.
    let (initiator_sends, responder_sends) = hs.dangerously_get_raw_split();
    let (send_key, recv_key) = if initiator {
        (initiator_sends, responder_sends)
    } else {
        (responder_sends, initiator_sends)
    };
    let (read, write) = stream.into_split();
    Ok(Link {
        reader: LinkReader {
            stream: BufReader::with_capacity(READ_BUFFER, read),
            key: StreamKey::new(&recv_key),
        },
        writer: LinkWriter {
            stream: write,
            key: StreamKey::new(&send_key),
            frame: Vec::with_capacity(HEAD_LEN + MAX_CHUNK + TAG_LEN),
        },
    })
}

fn new_handshake(key: &ClusterKey, initiator: bool) -> Result<HandshakeState, LinkError> {
    let params = NOISE_PARAMS.parse().map_err(LinkError::Handshake)?;
    let builder = Builder::new(params)
        .psk(0, key.psk())
        .and_then(|b| b.prologue(PROLOGUE))
        .map_err(LinkError::Handshake)?;
    if initiator {
        builder.build_initiator()
    } else {
        builder.build_responder()
    }
    .map_err(LinkError::Handshake)
}

async fn write_handshake(
    stream: &mut TcpStream,
    hs: &mut HandshakeState,
    buf: &mut [u8],
) -> Result<(), LinkError> {
    let len = hs.write_message(&[], buf).map_err(LinkError::Handshake)?;
    let mut frame = Vec::with_capacity(2 + len);
    frame.extend_from_slice(&(len as u16).to_be_bytes());
    frame.extend_from_slice(&buf[..len]);
    stream.write_all(&frame).await.map_err(LinkError::Io)
}

async fn read_handshake(
    stream: &mut TcpStream,
    hs: &mut HandshakeState,
    buf: &mut [u8],
) -> Result<(), LinkError> {
    let eof = |e: io::Error| match e.kind() {
        io::ErrorKind::UnexpectedEof | io::ErrorKind::ConnectionReset => LinkError::HandshakeClosed,
        _ => LinkError::Io(e),
    };
    let mut len = [0u8; 2];
    stream.read_exact(&mut len).await.map_err(eof)?;
    let len = usize::from(u16::from_be_bytes(len));
    if len > MAX_HANDSHAKE_FRAME {
        return Err(LinkError::HandshakeFrame(len));
    }
    let mut msg = [0u8; MAX_HANDSHAKE_FRAME];
    stream.read_exact(&mut msg[..len]).await.map_err(eof)?;
    hs.read_message(&msg[..len], buf)
        .map_err(LinkError::Handshake)?;
    Ok(())
}

impl Link {
    /// Address of the other end.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.reader.stream.get_ref().peer_addr()
    }

    /// Send one message (see [`LinkWriter::send`]).
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        self.writer.send(msg).await
    }

    /// Receive one message (see [`LinkReader::recv`]).
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        self.reader.recv().await
    }

    /// Split into halves that two tasks can use at once.
    pub fn split(self) -> (LinkReader, LinkWriter) {
        (self.reader, self.writer)
    }

    /// Give the connection up for a sealed session (see `rmosix_seal`): the socket, in
    /// blocking mode, for a supervisor to speak on directly. Both sides must have agreed that
    /// nothing more of the link protocol follows; bytes already read past the last message
    /// would be lost, so they make this fail.
    pub async fn into_socket(self) -> Result<std::net::TcpStream, LinkError> {
        let Link { reader, writer } = self;
        if !reader.stream.buffer().is_empty() {
            return Err(LinkError::UnreadData(reader.stream.buffer().len()));
        }
        let tcp = reader
            .stream
            .into_inner()
            .reunite(writer.stream)
            .map_err(|e| LinkError::Io(io::Error::other(e)))?;
        let socket = tcp.into_std().map_err(LinkError::Io)?;
        socket.set_nonblocking(false).map_err(LinkError::Io)?;
        Ok(socket)
    }
}

impl LinkWriter {
    /// Send `msg` (at most [`MAX_MESSAGE`] bytes) as one message, in as many frames as it
    /// needs, each written to the socket as soon as it is sealed.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        if msg.len() > MAX_MESSAGE {
            return Err(LinkError::TooLarge);
        }
        let mut rest = msg.len();
        let mut chunks = msg.chunks(MAX_CHUNK);
        loop {
            // An empty message is one empty frame.
            let chunk = chunks.next().unwrap_or_default();
            rest -= chunk.len();
            self.send_frame(chunk, rest).await?;
            if rest == 0 {
                return Ok(());
            }
        }
    }

    /// Close the sending direction (TCP FIN); the peer's [`LinkReader::recv`] returns `None`.
    pub async fn shutdown(&mut self) -> Result<(), LinkError> {
        self.stream.shutdown().await.map_err(LinkError::Io)
    }

    async fn send_frame(&mut self, chunk: &[u8], rest: usize) -> Result<(), LinkError> {
        self.seal_frame(chunk, rest)?;
        self.stream
            .write_all(&self.frame)
            .await
            .map_err(LinkError::Io)
    }

    /// Build the frame of `chunk` in `self.frame`, sealed.
    fn seal_frame(&mut self, chunk: &[u8], rest: usize) -> Result<(), LinkError> {
        self.frame.clear();
        self.frame
            .extend_from_slice(&(chunk.len() as u32).to_be_bytes());
        self.frame.extend_from_slice(&(rest as u32).to_be_bytes());
        self.frame.extend_from_slice(chunk);
        let (head, data) = self.frame.split_at_mut(HEAD_LEN);
        let tag = self.key.seal(head, data).map_err(LinkError::Encrypt)?;
        self.frame.extend_from_slice(&tag);
        Ok(())
    }
}

impl LinkReader {
    /// The next message, or `None` if the peer closed the link cleanly between messages.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        let mut msg = Vec::new();
        // The bytes of the message still to come, once its first frame has announced them.
        let mut announced: Option<usize> = None;
        loop {
            let Some(head) = self.read_head(announced.is_none()).await? else {
                return Ok(None);
            };
            let len = u32::from_be_bytes(head[..4].try_into().expect("4 bytes")) as usize;
            let rest = u32::from_be_bytes(head[4..].try_into().expect("4 bytes")) as usize;
            let fits = len <= MAX_CHUNK
                && match announced {
                    None => len + rest <= MAX_MESSAGE,
                    Some(left) => len + rest == left,
                };
            if !fits {
                return Err(LinkError::Malformed { len, rest });
            }
            if announced.is_none() {
                // The whole message, and the last frame's tag, without growing it again.
                msg.reserve_exact(len + rest + TAG_LEN);
            }
            let start = msg.len();
            self.read_into(&mut msg, len + TAG_LEN).await?;
            let opened = self
                .key
                .open(&head, &mut msg[start..])
                .ok_or(LinkError::Decrypt)?;
            msg.truncate(start + opened);
            if rest == 0 {
                return Ok(Some(msg));
            }
            announced = Some(rest);
        }
    }

    /// A frame's head; `None` at a clean EOF where a message may start.
    async fn read_head(
        &mut self,
        at_message_start: bool,
    ) -> Result<Option<[u8; HEAD_LEN]>, LinkError> {
        if self
            .stream
            .fill_buf()
            .await
            .map_err(LinkError::Io)?
            .is_empty()
        {
            return if at_message_start {
                Ok(None)
            } else {
                Err(LinkError::Truncated)
            };
        }
        let mut head = [0u8; HEAD_LEN];
        match self.stream.read_exact(&mut head).await {
            Ok(_) => Ok(Some(head)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(LinkError::Truncated),
            Err(e) => Err(LinkError::Io(e)),
        }
    }

    /// Append the next `n` bytes of the stream to `msg`: what the buffer holds, then the rest
    /// read from the socket straight into `msg`'s spare room.
    async fn read_into(&mut self, msg: &mut Vec<u8>, n: usize) -> Result<(), LinkError> {
        let buffered = self.stream.buffer();
        let taken = buffered.len().min(n);
        msg.extend_from_slice(&buffered[..taken]);
        self.stream.consume(taken);
        let mut room = msg.limit(n - taken);
        while room.has_remaining_mut() {
            match self.stream.get_mut().read_buf(&mut room).await {
                Ok(0) => return Err(LinkError::Truncated),
                Ok(_) => {}
                Err(e) => return Err(LinkError::Io(e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use tokio::net::TcpListener;

    use super::*;

    const KEY: [u8; 32] = [7; 32];

    async fn listener() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// A payload whose every byte depends on its position, so a reordered chunk shows.
    fn payload(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i % 251) as u8 ^ (i >> 16) as u8)
            .collect()
    }

    #[tokio::test]
    async fn right_key_carries_messages_both_ways() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut link = accept(tcp, &ClusterKey::from_bytes(KEY)).await.unwrap();
            assert_eq!(link.recv().await.unwrap().unwrap(), b"hello");
            assert_eq!(link.recv().await.unwrap().unwrap(), b"");
            link.send(b"welcome").await.unwrap();
            let big = link.recv().await.unwrap().unwrap();
            assert!(big == payload(10 << 20), "10 MB payload damaged");
            link.send(&big).await.unwrap();
            assert!(
                link.recv().await.unwrap().is_none(),
                "expected a clean close"
            );
        });
        let mut link = connect(addr, &ClusterKey::from_bytes(KEY)).await.unwrap();
        assert_eq!(link.peer_addr().unwrap(), addr);
        link.send(b"hello").await.unwrap();
        link.send(b"").await.unwrap();
        assert_eq!(link.recv().await.unwrap().unwrap(), b"welcome");
        // Send and receive 10 MB at once from two tasks, through the split halves.
        let (mut reader, mut writer) = link.split();
        let sending = tokio::spawn(async move {
            writer.send(&payload(10 << 20)).await.unwrap();
            writer
        });
        let echoed = reader.recv().await.unwrap().unwrap();
        assert!(echoed == payload(10 << 20), "echoed 10 MB payload damaged");
        sending.await.unwrap().shutdown().await.unwrap();
        server.await.unwrap();
    }

    #[tokio::test]
    async fn wrong_key_fails_on_both_sides() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            accept(tcp, &ClusterKey::from_bytes(KEY)).await.map(|_| ())
        });
        let client = connect(addr, &ClusterKey::from_bytes([8; 32])).await;
        assert!(
            matches!(client, Err(LinkError::HandshakeClosed)),
            "{:?}",
            client.err()
        );
        let server = server.await.unwrap();
        assert!(matches!(server, Err(LinkError::Handshake(_))), "{server:?}");
    }

    #[tokio::test]
    async fn garbage_is_refused() {
        let (listener, addr) = listener().await;
        for junk in [
            // A frame of the right length whose contents are not a Noise message under our key.
            [&[0u8, 48][..], &[0x5a; 48]].concat(),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            vec![0u8, 0],
        ] {
            let mut raw = TcpStream::connect(addr).await.unwrap();
            raw.write_all(&junk).await.unwrap();
            let (tcp, _) = listener.accept().await.unwrap();
            let err = accept(tcp, &ClusterKey::from_bytes(KEY))
                .await
                .err()
                .unwrap();
            assert!(
                matches!(err, LinkError::Handshake(_) | LinkError::HandshakeFrame(_)),
                "{junk:?}: {err:?}"
            );
            // The server closed its end: the raw peer reads EOF (or a reset).
            let mut rest = Vec::new();
            let _ = raw.read_to_end(&mut rest).await;
            assert!(rest.is_empty());
        }
    }

    #[tokio::test(start_paused = true)]
    async fn silent_peer_times_out() {
        let (listener, addr) = listener().await;
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (tcp, _) = listener.accept().await.unwrap();
        let err = accept(tcp, &ClusterKey::from_bytes(KEY))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, LinkError::HandshakeTimeout), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_server_times_out() {
        let (listener, addr) = listener().await;
        let err = connect(addr, &ClusterKey::from_bytes(KEY))
            .await
            .err()
            .unwrap();
        assert!(matches!(err, LinkError::HandshakeTimeout), "{err:?}");
        drop(listener);
    }

    #[tokio::test]
    async fn a_cut_message_is_truncated_not_eof() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let link = accept(tcp, &ClusterKey::from_bytes(KEY)).await.unwrap();
            let (_, mut writer) = link.split();
            // Only the first frame of a two-frame message, then close.
            writer.send_frame(&[1; 10], 10).await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let mut link = connect(addr, &ClusterKey::from_bytes(KEY)).await.unwrap();
        let err = link.recv().await.unwrap_err();
        assert!(matches!(err, LinkError::Truncated), "{err:?}");
        server.await.unwrap();
    }

    /// Connect a pair of links and have the accepting side's writer send the bytes `frames`
    /// makes with it; returns the messages the other side receives before the first error.
    async fn receive_after(
        frames: impl FnOnce(&mut LinkWriter) -> Vec<u8> + Send + 'static,
    ) -> (Vec<Vec<u8>>, Result<Option<Vec<u8>>, LinkError>) {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let link = accept(tcp, &ClusterKey::from_bytes(KEY)).await.unwrap();
            let (_, mut writer) = link.split();
            let raw = frames(&mut writer);
            writer.stream.write_all(&raw).await.unwrap();
            writer
        });
        let mut link = connect(addr, &ClusterKey::from_bytes(KEY)).await.unwrap();
        let mut received = Vec::new();
        let end = loop {
            match link.recv().await {
                Ok(Some(msg)) => received.push(msg),
                end => break end,
            }
        };
        drop(server.await.unwrap());
        (received, end)
    }

    /// The sealed frame of `chunk`, announcing `rest` bytes after it.
    fn sealed(writer: &mut LinkWriter, chunk: &[u8], rest: usize) -> Vec<u8> {
        writer.seal_frame(chunk, rest).unwrap();
        writer.frame.clone()
    }

    #[tokio::test]
    async fn a_damaged_or_replayed_frame_fails_authentication() {
        let (received, flipped) = receive_after(|w| {
            let mut frame = sealed(w, b"payload", 0);
            frame[HEAD_LEN + 3] ^= 1;
            frame
        })
        .await;
        assert!(received.is_empty());
        assert!(matches!(flipped, Err(LinkError::Decrypt)), "{flipped:?}");
        // A head changed in transit: it is bound to its frame.
        let (received, relabelled) = receive_after(|w| {
            let mut frame = sealed(w, b"payload", 0);
            frame[HEAD_LEN - 1] = 5;
            [frame, sealed(w, b"extra", 0)].concat()
        })
        .await;
        assert!(received.is_empty());
        assert!(
            matches!(relabelled, Err(LinkError::Decrypt)),
            "{relabelled:?}"
        );
        // The same frame twice: the copy is opened under the next nonce and fails.
        let (received, replayed) = receive_after(|w| {
            let frame = sealed(w, b"once", 0);
            [frame.clone(), frame].concat()
        })
        .await;
        assert_eq!(received, [b"once"]);
        assert!(matches!(replayed, Err(LinkError::Decrypt)), "{replayed:?}");
    }

    #[tokio::test]
    async fn a_head_that_lies_about_lengths_is_refused() {
        // More bytes in one frame than any sender puts there: refused before it is read.
        let (_, oversized) = receive_after(|w| {
            let mut frame = sealed(w, b"x", 0);
            frame[..4].copy_from_slice(&(MAX_CHUNK as u32 + 1).to_be_bytes());
            frame
        })
        .await;
        assert!(
            matches!(oversized, Err(LinkError::Malformed { len, .. }) if len == MAX_CHUNK + 1),
            "{oversized:?}"
        );
        // A message announced larger than MAX_MESSAGE.
        let (_, huge) = receive_after(|w| sealed(w, b"x", MAX_MESSAGE)).await;
        assert!(matches!(huge, Err(LinkError::Malformed { .. })), "{huge:?}");
        // A second frame whose lengths disagree with what the first announced.
        let (received, inconsistent) =
            receive_after(|w| [sealed(w, &[1; 10], 100), sealed(w, &[2; 10], 5)].concat()).await;
        assert!(received.is_empty());
        assert!(
            matches!(inconsistent, Err(LinkError::Malformed { len: 10, rest: 5 })),
            "{inconsistent:?}"
        );
    }

    #[tokio::test]
    async fn oversized_messages_are_refused_before_sending() {
        let (listener, addr) = listener().await;
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut link = accept(tcp, &ClusterKey::from_bytes(KEY)).await.unwrap();
            link.recv().await.unwrap()
        });
        let mut link = connect(addr, &ClusterKey::from_bytes(KEY)).await.unwrap();
        let err = link.send(&vec![0; MAX_MESSAGE + 1]).await.unwrap_err();
        assert!(matches!(err, LinkError::TooLarge));
        link.send(b"still fine").await.unwrap();
        assert_eq!(server.await.unwrap().unwrap(), b"still fine");
    }
}
