//! Newline-delimited JSON framing with a line size limit, usable blocking or non-blocking.

use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Reply;

/// Largest line, newline included, that [`LineReader::new`] accepts and [`encode_line`]
/// writes: every request, report and command.
///
/// Control messages are a few hundred bytes; 64 KiB leaves room for a long error text while
/// keeping what a misbehaving client can make the daemon hold per connection small.
pub const MAX_LINE: usize = 64 * 1024;

/// Largest reply line, newline included, that [`encode_reply`] writes and
/// [`LineReader::for_replies`] accepts.
///
/// Replies come from the daemon, which the tools check runs as root or a user they trust,
/// and one of them grows with the map: a status lists every other node, about 30 bytes each,
/// so the largest map (65535 nodes) gives a 1.9 MB line. 4 MiB holds it with room to spare;
/// requests, which the daemon takes from anyone, stay at [`MAX_LINE`].
pub const MAX_REPLY: usize = 4 << 20;

/// How much [`LineReader::read_from`] asks the kernel for at once.
const READ_CHUNK: usize = 8 * 1024;

/// Why a line could not be read or decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// A line grew past the reader's limit ([`MAX_LINE`] or [`MAX_REPLY`]) without a newline.
    #[error("message longer than {limit} bytes")]
    TooLong {
        /// The limit that was exceeded.
        limit: usize,
    },
    /// A complete line was not a valid message of the expected type.
    #[error("malformed message")]
    Malformed(#[source] serde_json::Error),
    /// The stream ended in the middle of a line.
    #[error("connection closed in the middle of a message ({bytes} bytes)")]
    Truncated {
        /// How many bytes of the unfinished line had arrived.
        bytes: usize,
    },
    /// Reading from the stream failed (this includes `WouldBlock` on non-blocking streams).
    #[error("read failed")]
    Read(#[source] io::Error),
}

impl DecodeError {
    /// True when a non-blocking read found no data: not a failure, try again later.
    pub fn is_would_block(&self) -> bool {
        matches!(self, DecodeError::Read(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

/// Encode `msg` as one line (JSON plus `\n`).
///
/// Fails with `InvalidInput` if the line would be longer than [`MAX_LINE`], because the
/// receiving side would reject it.
pub fn encode_line<T: Serialize>(msg: &T) -> io::Result<Vec<u8>> {
    encode_within(msg, MAX_LINE)
}

/// Encode a daemon's reply as one line, which may be up to [`MAX_REPLY`] bytes long.
pub fn encode_reply(reply: &Reply) -> io::Result<Vec<u8>> {
    encode_within(reply, MAX_REPLY)
}

fn encode_within<T: Serialize>(msg: &T, limit: usize) -> io::Result<Vec<u8>> {
    let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
    line.push(b'\n');
    if line.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes is over the {limit}-byte limit",
                line.len()
            ),
        ));
    }
    Ok(line)
}

/// Write `msg` to `w` as one line. The whole line goes out with one `write_all`.
pub fn send_line<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    w.write_all(&encode_line(msg)?)
}

/// Collects bytes from a stream and hands out complete messages, one per line.
///
/// It is sans-I/O at heart ([`feed`](Self::feed) / [`next_message`](Self::next_message)), so the daemon can
/// feed it from async reads and a poll loop from non-blocking ones; [`recv`](Self::recv) is the
/// blocking convenience for the tools. Bytes that follow the last decoded line stay buffered
/// and can be taken back with [`take_buffered`](Self::take_buffered), which matters when a
/// connection turns into a raw byte pipe after a reply line.
#[derive(Debug)]
pub struct LineReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already handed out as messages.
    consumed: usize,
    /// The longest line accepted, newline included.
    limit: usize,
}

impl Default for LineReader {
    fn default() -> Self {
        Self {
            buf: Vec::new(),
            consumed: 0,
            limit: MAX_LINE,
        }
    }
}

impl LineReader {
    /// An empty reader for lines of up to [`MAX_LINE`] bytes.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty reader for a daemon's replies, lines of up to [`MAX_REPLY`] bytes.
    pub fn for_replies() -> Self {
        Self {
            limit: MAX_REPLY,
            ..Self::default()
        }
    }

    /// Append `bytes`. Fails, buffering nothing, if any line in the result would exceed the
    /// reader's limit; after that error the stream cannot be resynchronised and should be
    /// closed.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<(), DecodeError> {
        let tail = self.unfinished_len();
        let mut line_len = tail;
        for &b in bytes {
            line_len += 1;
            if line_len > self.limit {
                return Err(DecodeError::TooLong { limit: self.limit });
            }
            if b == b'\n' {
                line_len = 0;
            }
        }
        if self.consumed > 0 {
            self.buf.drain(..self.consumed);
            self.consumed = 0;
        }
        self.buf.extend_from_slice(bytes);
        Ok(())
    }

    /// The next complete message, or `None` if no complete line is buffered yet.
    ///
    /// A malformed line is consumed and reported; the caller may go on reading.
    pub fn next_message<T: DeserializeOwned>(&mut self) -> Result<Option<T>, DecodeError> {
        let pending = &self.buf[self.consumed..];
        let Some(end) = pending.iter().position(|&b| b == b'\n') else {
            return Ok(None);
        };
        let line = &pending[..end];
        self.consumed += end + 1;
        serde_json::from_slice(line)
            .map(Some)
            .map_err(DecodeError::Malformed)
    }

    /// Read once from `r` (at most a few KiB) and buffer what came. Returns the number of bytes
    /// read, 0 at end of stream. On a non-blocking stream with nothing to read the error
    /// satisfies [`DecodeError::is_would_block`].
    pub fn read_from(&mut self, r: &mut impl Read) -> Result<usize, DecodeError> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = loop {
            match r.read(&mut chunk) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(DecodeError::Read(e)),
            }
        };
        self.feed(&chunk[..n])?;
        Ok(n)
    }

    /// Block until a whole message has arrived from `r`. `None` means the stream ended cleanly
    /// between messages.
    pub fn recv<T: DeserializeOwned>(
        &mut self,
        r: &mut impl Read,
    ) -> Result<Option<T>, DecodeError> {
        loop {
            if let Some(msg) = self.next_message()? {
                return Ok(Some(msg));
            }
            if self.read_from(r)? == 0 {
                return match self.unfinished_len() {
                    0 => Ok(None),
                    bytes => Err(DecodeError::Truncated { bytes }),
                };
            }
        }
    }

    /// Take the bytes buffered after the last message handed out, leaving the reader empty.
    pub fn take_buffered(&mut self) -> Vec<u8> {
        let rest = self.buf.split_off(self.consumed);
        self.buf.clear();
        self.consumed = 0;
        rest
    }

    /// Length of the line currently being collected (after the last buffered newline).
    fn unfinished_len(&self) -> usize {
        let pending = &self.buf[self.consumed..];
        match pending.iter().rposition(|&b| b == b'\n') {
            Some(last) => pending.len() - last - 1,
            None => pending.len(),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Msg {
        n: u32,
        text: String,
    }

    fn msg(n: u32) -> Msg {
        Msg {
            n,
            text: format!("line {n} with \"quotes\" and \n newline"),
        }
    }

    #[test]
    fn lines_round_trip_through_a_stream() {
        let mut bytes = Vec::new();
        for n in 0..3 {
            send_line(&mut bytes, &msg(n)).unwrap();
        }
        assert_eq!(bytes.iter().filter(|&&b| b == b'\n').count(), 3);
        let mut reader = LineReader::new();
        let mut stream = bytes.as_slice();
        for n in 0..3 {
            assert_eq!(reader.recv::<Msg>(&mut stream).unwrap(), Some(msg(n)));
        }
        assert!(reader.recv::<Msg>(&mut stream).unwrap().is_none());
    }

    #[test]
    fn bytes_fed_one_at_a_time_make_whole_messages() {
        let line = encode_line(&msg(7)).unwrap();
        let mut reader = LineReader::new();
        for (i, b) in line.iter().enumerate() {
            assert!(
                reader.next_message::<Msg>().unwrap().is_none(),
                "message before byte {i}"
            );
            reader.feed(std::slice::from_ref(b)).unwrap();
        }
        assert_eq!(reader.next_message::<Msg>().unwrap(), Some(msg(7)));
        assert!(reader.next_message::<Msg>().unwrap().is_none());
    }

    #[test]
    fn truncated_stream_is_reported() {
        let line = encode_line(&msg(1)).unwrap();
        for cut in 1..line.len() {
            let mut stream = &line[..cut];
            let err = LineReader::new().recv::<Msg>(&mut stream).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { bytes } if bytes == cut),
                "cut {cut}"
            );
        }
    }

    #[test]
    fn junk_is_malformed_and_the_next_line_still_decodes() {
        let mut bytes = b"{not json\n\x00\xff\xfe\n{\"n\":1}\n".to_vec();
        send_line(&mut bytes, &msg(2)).unwrap();
        let mut reader = LineReader::new();
        let mut stream = bytes.as_slice();
        for _ in 0..3 {
            let err = reader.recv::<Msg>(&mut stream).unwrap_err();
            assert!(matches!(err, DecodeError::Malformed(_)), "{err:?}");
        }
        assert_eq!(reader.recv::<Msg>(&mut stream).unwrap(), Some(msg(2)));
    }

    #[test]
    fn a_line_over_the_limit_is_refused_before_it_is_buffered() {
        let mut reader = LineReader::new();
        reader.feed(&vec![b'x'; MAX_LINE - 1]).unwrap();
        reader.feed(b"\n").unwrap();
        assert!(matches!(
            reader.next_message::<Msg>(),
            Err(DecodeError::Malformed(_))
        ));
        reader.feed(&vec![b'x'; MAX_LINE]).unwrap();
        let err = reader.feed(b"x").unwrap_err();
        assert!(matches!(err, DecodeError::TooLong { limit: MAX_LINE }));
        // One big feed holding short lines is fine; one long line inside it is not.
        let mut reader = LineReader::new();
        reader.feed(&b"{}\n".repeat(MAX_LINE)).unwrap();
        let mut big = b"{}\n".to_vec();
        big.extend(vec![b' '; MAX_LINE + 1]);
        assert!(reader.feed(&big).is_err());
    }

    #[test]
    fn oversized_messages_are_not_sent() {
        let huge = Msg {
            n: 0,
            text: "a".repeat(MAX_LINE),
        };
        let mut out = Vec::new();
        let err = send_line(&mut out, &huge).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(out.is_empty());
    }

    #[test]
    fn replies_may_be_longer_than_requests() {
        let long = Reply::Error {
            message: "a".repeat(MAX_LINE),
        };
        assert_eq!(
            encode_line(&long).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        let line = encode_reply(&long).unwrap();
        assert!(matches!(
            LineReader::new().feed(&line),
            Err(DecodeError::TooLong { limit: MAX_LINE })
        ));
        let mut reader = LineReader::for_replies();
        reader.feed(&line).unwrap();
        assert_eq!(reader.next_message::<Reply>().unwrap(), Some(long));
        let huge = Reply::Error {
            message: "a".repeat(MAX_REPLY),
        };
        assert!(encode_reply(&huge).is_err());
        let mut reader = LineReader::for_replies();
        reader.feed(&vec![b' '; MAX_REPLY]).unwrap();
        assert!(matches!(
            reader.feed(b" "),
            Err(DecodeError::TooLong { limit: MAX_REPLY })
        ));
    }

    #[test]
    fn bytes_after_a_message_are_kept_for_the_pipe() {
        let mut bytes = encode_line(&msg(1)).unwrap();
        bytes.extend_from_slice(b"raw session bytes\0\n\xff");
        let mut reader = LineReader::new();
        reader.feed(&bytes).unwrap();
        assert_eq!(reader.next_message::<Msg>().unwrap(), Some(msg(1)));
        assert_eq!(reader.take_buffered(), b"raw session bytes\0\n\xff");
        assert!(reader.next_message::<Msg>().unwrap().is_none());
    }

    #[test]
    fn would_block_is_recognised() {
        struct Empty;
        impl Read for Empty {
            fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
                Err(io::ErrorKind::WouldBlock.into())
            }
        }
        let err = LineReader::new().read_from(&mut Empty).unwrap_err();
        assert!(err.is_would_block());
    }
}
