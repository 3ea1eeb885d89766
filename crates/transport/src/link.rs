//! Noise links over TCP.
//!
//! # Layout
//!
//! ```text
//! frame    = length:u16be  noise-message[length]          (length <= 65535)
//! handshake: initiator → e (psk0 mixed in, AEAD tag over an empty payload)   48 bytes
//!            responder → e, ee                                               48 bytes
//! transport: noise-message = AES-256-GCM(plaintext) + 16-byte tag
//!            plaintext     = more:u8  data[..]               more = 1 if the message continues
//! ```
//!
//! A message of any size up to [`MAX_MESSAGE`] is cut into chunks that fit one Noise message;
//! the receiver joins them again, so message boundaries survive.
//!
//! Nonces are explicit counters, one per direction, each owned by the half that uses it
//! ([`LinkWriter`] for sending, [`LinkReader`] for receiving). TCP delivers in order, so the
//! receiver knows the next nonce without it being sent, and no nonce is ever used twice for
//! one key because only one task holds each counter.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use snow::{Builder, HandshakeState, StatelessTransportState};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, ToSocketAddrs};

use crate::ClusterKey;

/// The Noise protocol of every link. NN: no static keys, the cluster key alone authenticates;
/// psk0: it is mixed in before the first message, so that message already proves the key.
const NOISE_PARAMS: &str = "Noise_NNpsk0_25519_AESGCM_SHA256";

/// Bound into the handshake hash, so a link of another protocol or version cannot complete it.
const PROLOGUE: &[u8] = b"rmosix link 1";

/// How long either side waits for the whole handshake (TCP connect included for [`connect`]).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest message [`Link::send`] and [`Link::recv`] accept. A session carries a process image
/// in chunks well below this; the limit bounds what an authenticated but buggy peer can make
/// the receiver buffer.
pub const MAX_MESSAGE: usize = 64 << 20;

/// Noise's limit on one message, which the 2-byte frame length also expresses.
const MAX_NOISE: usize = 65535;
/// AES-GCM tag.
const TAG_LEN: usize = 16;
/// Data bytes per chunk: a Noise message less the tag and the `more` byte.
const MAX_CHUNK: usize = MAX_NOISE - TAG_LEN - 1;
/// Handshake messages here are 48 bytes; anything much longer is not our protocol.
const MAX_HANDSHAKE_FRAME: usize = 256;
/// Socket buffering on each side, enough for several full frames per system call.
const IO_BUFFER: usize = 256 * 1024;

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
    /// A message failed authentication: it was forged, damaged or replayed.
    #[error("message failed authentication")]
    Decrypt(#[source] snow::Error),
    /// Encrypting a message failed (the nonce counter ran out).
    #[error("cannot encrypt message")]
    Encrypt(#[source] snow::Error),
    /// A message is larger than [`MAX_MESSAGE`].
    #[error("message larger than {MAX_MESSAGE} bytes")]
    TooLarge,
    /// The peer sent more than the link protocol allowed before a hand-over.
    #[error("{0} unexpected bytes before handing the connection over")]
    UnreadData(usize),
    /// An authenticated chunk had an invalid header.
    #[error("malformed chunk header {0}")]
    Malformed(u8),
}

/// An authenticated, encrypted, message-oriented connection to another node's daemon.
pub struct Link {
    reader: LinkReader,
    writer: LinkWriter,
}

/// The receiving half of a [`Link`].
pub struct LinkReader {
    stream: BufReader<OwnedReadHalf>,
    noise: Arc<StatelessTransportState>,
    nonce: u64,
    frame: Vec<u8>,
    plain: Vec<u8>,
}

/// The sending half of a [`Link`].
pub struct LinkWriter {
    stream: BufWriter<OwnedWriteHalf>,
    noise: Arc<StatelessTransportState>,
    nonce: u64,
    plain: Vec<u8>,
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
    let noise = Arc::new(
        hs.into_stateless_transport_mode()
            .map_err(LinkError::Handshake)?,
    );
    let (read, write) = stream.into_split();
    Ok(Link {
        reader: LinkReader {
            stream: BufReader::with_capacity(IO_BUFFER, read),
            noise: noise.clone(),
            nonce: 0,
            frame: vec![0; MAX_NOISE],
            plain: vec![0; MAX_NOISE],
        },
        writer: LinkWriter {
            stream: BufWriter::with_capacity(IO_BUFFER, write),
            noise,
            nonce: 0,
            plain: Vec::with_capacity(MAX_CHUNK + 1),
            frame: vec![0; MAX_NOISE],
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
        let Link { reader, mut writer } = self;
        writer.stream.flush().await.map_err(LinkError::Io)?;
        if !reader.stream.buffer().is_empty() {
            return Err(LinkError::UnreadData(reader.stream.buffer().len()));
        }
        let tcp = reader
            .stream
            .into_inner()
            .reunite(writer.stream.into_inner())
            .map_err(|e| LinkError::Io(io::Error::other(e)))?;
        let socket = tcp.into_std().map_err(LinkError::Io)?;
        socket.set_nonblocking(false).map_err(LinkError::Io)?;
        Ok(socket)
    }
}

impl LinkWriter {
    /// Send `msg` (at most [`MAX_MESSAGE`] bytes) as one message, cut into as many Noise
    /// messages as it needs, and flush it to the socket.
    pub async fn send(&mut self, msg: &[u8]) -> Result<(), LinkError> {
        if msg.len() > MAX_MESSAGE {
            return Err(LinkError::TooLarge);
        }
        let mut chunks = msg.chunks(MAX_CHUNK).peekable();
        if chunks.peek().is_none() {
            self.send_chunk(&[], false).await?;
        }
        while let Some(chunk) = chunks.next() {
            let more = chunks.peek().is_some();
            self.send_chunk(chunk, more).await?;
        }
        self.stream.flush().await.map_err(LinkError::Io)
    }

    /// Close the sending direction (TCP FIN); the peer's [`LinkReader::recv`] returns `None`.
    pub async fn shutdown(&mut self) -> Result<(), LinkError> {
        self.stream.shutdown().await.map_err(LinkError::Io)
    }

    async fn send_chunk(&mut self, data: &[u8], more: bool) -> Result<(), LinkError> {
        self.plain.clear();
        self.plain.push(u8::from(more));
        self.plain.extend_from_slice(data);
        let len = self
            .noise
            .write_message(self.nonce, &self.plain, &mut self.frame)
            .map_err(LinkError::Encrypt)?;
        self.nonce += 1;
        self.stream
            .write_all(&(len as u16).to_be_bytes())
            .await
            .map_err(LinkError::Io)?;
        self.stream
            .write_all(&self.frame[..len])
            .await
            .map_err(LinkError::Io)
    }
}

impl LinkReader {
    /// The next message, or `None` if the peer closed the link cleanly between messages.
    pub async fn recv(&mut self) -> Result<Option<Vec<u8>>, LinkError> {
        let mut msg = Vec::new();
        let mut first = true;
        loop {
            let Some(len) = self.read_frame(first).await? else {
                return Ok(None);
            };
            first = false;
            let n = self
                .noise
                .read_message(self.nonce, &self.frame[..len], &mut self.plain)
                .map_err(LinkError::Decrypt)?;
            self.nonce += 1;
            let (&more, data) = self.plain[..n]
                .split_first()
                .ok_or(LinkError::Malformed(0))?;
            if msg.len() + data.len() > MAX_MESSAGE {
                return Err(LinkError::TooLarge);
            }
            msg.extend_from_slice(data);
            match more {
                0 => return Ok(Some(msg)),
                1 => {}
                other => return Err(LinkError::Malformed(other)),
            }
        }
    }

    /// Read one frame into `self.frame`; `None` at a clean EOF where a message may start.
    async fn read_frame(&mut self, at_message_start: bool) -> Result<Option<usize>, LinkError> {
        let mut len = [0u8; 2];
        // The first byte alone tells a clean close (EOF before it) from a cut one.
        let got = loop {
            match self.stream.read(&mut len[..1]).await {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(LinkError::Io(e)),
            }
        };
        if got == 0 {
            return if at_message_start {
                Ok(None)
            } else {
                Err(LinkError::Truncated)
            };
        }
        match self.stream.read_exact(&mut len[1..]).await {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Err(LinkError::Truncated),
            Err(e) => return Err(LinkError::Io(e)),
        }
        let len = usize::from(u16::from_be_bytes(len));
        match self.stream.read_exact(&mut self.frame[..len]).await {
            Ok(_) => Ok(Some(len)),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(LinkError::Truncated),
            Err(e) => Err(LinkError::Io(e)),
        }
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
            // Only the first chunk of a two-chunk message, then close.
            writer.send_chunk(&[1; 10], true).await.unwrap();
            writer.stream.flush().await.unwrap();
            writer.shutdown().await.unwrap();
        });
        let mut link = connect(addr, &ClusterKey::from_bytes(KEY)).await.unwrap();
        let err = link.recv().await.unwrap_err();
        assert!(matches!(err, LinkError::Truncated), "{err:?}");
        server.await.unwrap();
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
