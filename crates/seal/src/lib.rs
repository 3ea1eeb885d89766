//! Sealed sessions: the encrypted byte stream a home supervisor and a guest supervisor speak
//! directly, once their daemons have authenticated the link and handed its socket over.
//!
//! The daemons run the Noise handshake (which proves the cluster key) and agree on two fresh
//! random keys over it, one per direction; then each hands the TCP socket and the keys to its
//! supervisor and steps out of the data path. Process images then cross with one copy into
//! and one out of the kernel per side, and no daemon parses them.
//!
//! ```text
//! frame := len:u32le ciphertext[len]     (AES-256-GCM, tag included; len ≤ MAX_SEALED)
//! nonce := 0u32 ‖ counter:u64be          (per direction, from 0; never reused: one key per
//!                                         direction, fresh per session)
//! ```
//!
//! A frame that does not open (wrong key, replay, truncation) ends the session.
//!
//! This room is synchronous and small on purpose: the supervisors that speak sessions (the
//! engine's) link it without an async runtime. The daemons' authenticated links live in the
//! transport room, which seals its frames with this room's [`StreamKey`]. The door:
//! [`SessionKeys`], [`End`], [`open`], [`SealedReader`], [`SealedWriter`], [`StreamKey`], and
//! [`hex`] for keys that travel as text.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod hex;

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, RawFd};

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

/// Socket buffer asked for in each direction of a session.
const SOCKET_BUFFER: usize = 8 << 20;

/// AES-GCM's tag, sent after each frame's ciphertext.
pub const TAG_LEN: usize = 16;
/// Largest plaintext in one frame.
pub const MAX_PLAIN: usize = 128 << 10;
/// Largest frame on the wire: plaintext plus the tag.
pub const MAX_SEALED: usize = MAX_PLAIN + TAG_LEN;

/// The two keys of one session.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKeys {
    /// Seals what home sends to the guest.
    pub to_guest: [u8; 32],
    /// Seals what the guest sends home.
    pub to_home: [u8; 32],
}

impl std::fmt::Debug for SessionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionKeys(..)")
    }
}

impl SessionKeys {
    /// Fresh random keys.
    pub fn generate() -> io::Result<SessionKeys> {
        let rng = SystemRandom::new();
        let mut keys = SessionKeys {
            to_guest: [0; 32],
            to_home: [0; 32],
        };
        rng.fill(&mut keys.to_guest)
            .map_err(|_| io::Error::other("no randomness"))?;
        rng.fill(&mut keys.to_home)
            .map_err(|_| io::Error::other("no randomness"))?;
        Ok(keys)
    }

    /// As 128 hex digits (for the control reply that hands a session over).
    pub fn to_hex(&self) -> String {
        hex::encode(&self.to_bytes())
    }

    /// From 128 hex digits.
    pub fn from_hex(digits: &str) -> io::Result<SessionKeys> {
        let raw: [u8; 64] = hex::decode(digits.as_bytes()).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                "session keys must be 128 hex digits",
            )
        })?;
        SessionKeys::from_bytes(&raw)
    }

    /// The 64 raw bytes, to_guest first.
    pub fn to_bytes(&self) -> [u8; 64] {
        let mut raw = [0u8; 64];
        raw[..32].copy_from_slice(&self.to_guest);
        raw[32..].copy_from_slice(&self.to_home);
        raw
    }

    /// From the 64 raw bytes.
    pub fn from_bytes(raw: &[u8]) -> io::Result<SessionKeys> {
        if raw.len() != 64 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "session keys must be 64 bytes",
            ));
        }
        let mut keys = SessionKeys {
            to_guest: [0; 32],
            to_home: [0; 32],
        };
        keys.to_guest.copy_from_slice(&raw[..32]);
        keys.to_home.copy_from_slice(&raw[32..]);
        Ok(keys)
    }
}

/// Which end of the session this process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The home supervisor.
    Home,
    /// The guest supervisor.
    Guest,
}

/// Split a handed-over session socket into its reading and writing halves.
pub fn open(
    socket: TcpStream,
    keys: &SessionKeys,
    end: End,
) -> io::Result<(SealedReader, SealedWriter)> {
    let (rx, tx) = match end {
        End::Home => (&keys.to_home, &keys.to_guest),
        End::Guest => (&keys.to_guest, &keys.to_home),
    };
    // Deep socket buffers let the sender seal the next frames while the receiver still opens
    // and places the last ones: an image moves as a pipeline, not in lockstep. The kernel
    // caps the sizes at net.core.{w,r}mem_max, so this is a request, not a promise.
    let sock = socket2::SockRef::from(&socket);
    sock.set_send_buffer_size(SOCKET_BUFFER)?;
    sock.set_recv_buffer_size(SOCKET_BUFFER)?;
    let reader = SealedReader {
        socket: socket.try_clone()?,
        key: StreamKey::new(rx),
        plain: Vec::new(),
        at: 0,
        frame: Vec::new(),
    };
    let mut buf = Vec::with_capacity(4 + MAX_SEALED);
    buf.extend_from_slice(&[0; 4]);
    let writer = SealedWriter {
        socket,
        key: StreamKey::new(tx),
        buf,
    };
    Ok((reader, writer))
}

/// One direction of a sealed stream: its AES-256-GCM key and the counter that numbers its
/// frames. A frame's nonce is `0u32 ‖ counter:u64be`, so a key seals one direction of one
/// connection and nothing else, and the receiver opens frames in the order they were sealed
/// (TCP keeps that order; a frame replayed, dropped or moved does not open).
pub struct StreamKey {
    key: LessSafeKey,
    counter: u64,
}

impl StreamKey {
    /// The key of one direction, its counter at 0.
    pub fn new(raw: &[u8; 32]) -> StreamKey {
        StreamKey {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, raw).expect("32-byte AES-256 key")),
            counter: 0,
        }
    }

    fn next_nonce(&mut self) -> Nonce {
        let mut n = [0u8; 12];
        n[4..].copy_from_slice(&self.counter.to_be_bytes());
        self.counter += 1;
        Nonce::assume_unique_for_key(n)
    }

    /// Seal the next frame in place, `data` becoming its ciphertext, with `aad` (sent in the
    /// clear) bound to it. Returns the tag, which follows the ciphertext on the wire.
    pub fn seal(&mut self, aad: &[u8], data: &mut [u8]) -> io::Result<[u8; TAG_LEN]> {
        let nonce = self.next_nonce();
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(aad), data)
            .map_err(|_| io::Error::other("cannot seal a frame that large"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Open the next frame in place: `sealed` is its ciphertext and tag, `aad` what was bound
    /// to it. Returns the length of the plaintext now at the start of `sealed`, or `None` if
    /// the frame does not authenticate (forged, damaged, replayed or out of order).
    pub fn open(&mut self, aad: &[u8], sealed: &mut [u8]) -> Option<usize> {
        let nonce = self.next_nonce();
        self.key
            .open_in_place(nonce, Aad::from(aad), sealed)
            .ok()
            .map(|plain| plain.len())
    }
}

/// The receiving half.
pub struct SealedReader {
    socket: TcpStream,
    key: StreamKey,
    plain: Vec<u8>,
    at: usize,
    frame: Vec<u8>,
}

impl SealedReader {
    /// Plaintext already decrypted and not yet read: poll(2) on the socket would not show it.
    pub fn buffered(&self) -> bool {
        self.at < self.plain.len()
    }

    fn fill(&mut self) -> io::Result<bool> {
        let mut head = [0u8; 4];
        match self.socket.read_exact(&mut head) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(false),
            Err(e) => return Err(e),
        }
        let len = u32::from_le_bytes(head) as usize;
        if !(TAG_LEN..=MAX_SEALED).contains(&len) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("sealed frame of {len} bytes"),
            ));
        }
        self.frame.resize(len, 0);
        self.socket.read_exact(&mut self.frame)?;
        let n = self.key.open(&[], &mut self.frame).ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidData, "sealed frame does not open")
        })?;
        // Swap buffers rather than copy: the frame buffer becomes the plaintext buffer.
        std::mem::swap(&mut self.plain, &mut self.frame);
        self.plain.truncate(n);
        self.at = 0;
        Ok(true)
    }
}

impl Read for SealedReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while !self.buffered() {
            if !self.fill()? {
                return Ok(0);
            }
        }
        let n = out.len().min(self.plain.len() - self.at);
        out[..n].copy_from_slice(&self.plain[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

impl AsRawFd for SealedReader {
    fn as_raw_fd(&self) -> RawFd {
        self.socket.as_raw_fd()
    }
}

/// The sending half. Buffers up to MAX_PLAIN bytes; `flush` seals and sends them.
pub struct SealedWriter {
    socket: TcpStream,
    key: StreamKey,
    /// 4 bytes of length, then plaintext (sealed in place on flush, the tag appended).
    buf: Vec<u8>,
}

impl SealedWriter {
    fn seal_and_send(&mut self) -> io::Result<()> {
        if self.buf.len() <= 4 {
            return Ok(());
        }
        // Sealed in place: the plaintext after the 4 length bytes becomes ciphertext.
        let tag = self.key.seal(&[], &mut self.buf[4..])?;
        self.buf.extend_from_slice(&tag);
        let sealed_len = (self.buf.len() - 4) as u32;
        self.buf[..4].copy_from_slice(&sealed_len.to_le_bytes());
        let result = self.socket.write_all(&self.buf);
        self.buf.truncate(4);
        result
    }

    /// Shut the sending direction down (the peer reads EOF).
    pub fn shutdown(&mut self) -> io::Result<()> {
        self.flush()?;
        self.socket.shutdown(std::net::Shutdown::Write)
    }
}

impl Write for SealedWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let room = MAX_PLAIN + 4 - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == MAX_PLAIN + 4 {
            self.seal_and_send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.seal_and_send()?;
        self.socket.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::net::TcpListener;

    use super::*;

    fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (b, _) = listener.accept().unwrap();
        (a, b)
    }

    #[test]
    fn bytes_cross_both_ways_in_any_sizes() {
        let keys = SessionKeys::generate().unwrap();
        let (a, b) = pair();
        let (mut home_rx, mut home_tx) = open(a, &keys, End::Home).unwrap();
        let (mut guest_rx, mut guest_tx) = open(b, &keys, End::Guest).unwrap();
        let big: Vec<u8> = (0..3 * MAX_PLAIN + 12345)
            .map(|i| (i * 7 % 251) as u8)
            .collect();
        let sender = std::thread::spawn(move || {
            home_tx.write_all(b"hello").unwrap();
            home_tx.flush().unwrap();
            home_tx.write_all(&big).unwrap();
            home_tx.shutdown().unwrap();
            big
        });
        let mut hello = [0u8; 5];
        guest_rx.read_exact(&mut hello).unwrap();
        assert_eq!(&hello, b"hello");
        let mut rest = Vec::new();
        guest_rx.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, sender.join().unwrap());
        guest_tx.write_all(b"back").unwrap();
        guest_tx.flush().unwrap();
        let mut back = [0u8; 4];
        home_rx.read_exact(&mut back).unwrap();
        assert_eq!(&back, b"back");
    }

    #[test]
    fn a_wrong_key_or_a_tampered_frame_ends_the_session() {
        let keys = SessionKeys::generate().unwrap();
        let other = SessionKeys::generate().unwrap();
        let (a, b) = pair();
        let (_, mut tx) = open(a, &keys, End::Home).unwrap();
        let (mut rx, _) = open(b, &other, End::Guest).unwrap();
        tx.write_all(b"secret").unwrap();
        tx.flush().unwrap();
        let err = rx.read(&mut [0u8; 6]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);

        let (a, mut b) = pair();
        let (mut rx, _) = open(a, &keys, End::Guest).unwrap();
        b.write_all(&32u32.to_le_bytes()).unwrap();
        b.write_all(&[0u8; 32]).unwrap();
        assert_eq!(
            rx.read(&mut [0u8; 1]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );

        let (a, mut b) = pair();
        let (mut rx, _) = open(a, &keys, End::Guest).unwrap();
        b.write_all(&u32::MAX.to_le_bytes()).unwrap();
        assert_eq!(
            rx.read(&mut [0u8; 1]).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
    }

    #[test]
    fn keys_round_trip_and_reject_bad_lengths() {
        let keys = SessionKeys::generate().unwrap();
        assert_eq!(SessionKeys::from_bytes(&keys.to_bytes()).unwrap(), keys);
        assert!(SessionKeys::from_bytes(&[0; 63]).is_err());
        assert_eq!(SessionKeys::from_hex(&keys.to_hex()).unwrap(), keys);
        assert!(SessionKeys::from_hex("zz").is_err());
        assert_ne!(keys.to_guest, keys.to_home);
    }
}
