use std::io::{self, Read, Write};

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Largest frame body accepted; checked before anything is allocated.
pub const MAX_FRAME: usize = 8 << 20;

/// Set in a page frame's address when the bytes are the content of the file the area maps,
/// for pages the process never wrote: a receiver that maps that file itself has them, one
/// that cannot find it keeps them in a copy of the file. User addresses never have it set.
pub const FILE_PAGES: u64 = 1 << 63;

const KIND_MESSAGE: u8 = 1;
const KIND_PAGES: u8 = 2;

/// One decoded frame.
#[derive(Debug)]
pub enum Frame {
    /// A JSON control message, still undecoded.
    Message(Vec<u8>),
    /// Bytes to place at a guest address.
    Pages {
        /// Guest address of the first byte.
        addr: u64,
        /// The bytes.
        data: Vec<u8>,
    },
}

/// What a frame read with [`FrameReader::next_frame_into`] was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameHead {
    /// A JSON control message.
    Message,
    /// Bytes to place at this guest address.
    Pages {
        /// Guest address of the first byte.
        addr: u64,
    },
}

/// What can go wrong reading a frame.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The stream ended or failed.
    #[error("session stream: {0}")]
    Io(#[from] io::Error),
    /// The peer sent a frame larger than MAX_FRAME.
    #[error("frame of {0} bytes exceeds the limit of {MAX_FRAME}")]
    TooLarge(usize),
    /// Unknown frame kind.
    #[error("unknown frame kind {0}")]
    Kind(u8),
    /// A message that does not decode as the expected type.
    #[error("bad message: {0}")]
    Json(#[from] serde_json::Error),
}

/// Reads frames from a byte stream.
pub struct FrameReader<R> {
    inner: R,
}

impl<R: Read> FrameReader<R> {
    /// Wrap a stream.
    pub fn new(inner: R) -> Self {
        FrameReader { inner }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Read the next frame.
    pub fn next_frame(&mut self) -> Result<Frame, FrameError> {
        let mut body = Vec::new();
        Ok(match self.next_frame_into(&mut body)? {
            FrameHead::Message => Frame::Message(body),
            FrameHead::Pages { addr } => Frame::Pages { addr, data: body },
        })
    }

    /// Read the next frame's body into `body` (reusing its allocation, which matters when
    /// gigabytes of pages stream through) and say what it was.
    pub fn next_frame_into(&mut self, body: &mut Vec<u8>) -> Result<FrameHead, FrameError> {
        let mut head = [0u8; 5];
        self.inner.read_exact(&mut head)?;
        let len = u32::from_le_bytes(head[..4].try_into().expect("4 bytes")) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        match head[4] {
            KIND_MESSAGE => {
                body.resize(len, 0);
                self.inner.read_exact(body)?;
                Ok(FrameHead::Message)
            }
            KIND_PAGES if len >= 8 => {
                let mut addr = [0u8; 8];
                self.inner.read_exact(&mut addr)?;
                body.resize(len - 8, 0);
                self.inner.read_exact(body)?;
                Ok(FrameHead::Pages {
                    addr: u64::from_le_bytes(addr),
                })
            }
            kind => Err(FrameError::Kind(kind)),
        }
    }

    /// Read the next frame, which must be a message of type `T`.
    pub fn message<T: DeserializeOwned>(&mut self) -> Result<T, FrameError> {
        match self.next_frame()? {
            Frame::Message(body) => Ok(serde_json::from_slice(&body)?),
            Frame::Pages { .. } => Err(FrameError::Kind(KIND_PAGES)),
        }
    }
}

/// Write one JSON message frame.
pub fn write_message<W: Write, T: Serialize>(out: &mut W, msg: &T) -> io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(io::Error::other)?;
    let mut buf = Vec::with_capacity(5 + body.len());
    buf.extend_from_slice(&(body.len() as u32).to_le_bytes());
    buf.push(KIND_MESSAGE);
    buf.extend_from_slice(&body);
    out.write_all(&buf)
}

/// Write one page frame. `data` must be at most MAX_FRAME - 8 bytes.
pub fn write_pages<W: Write>(out: &mut W, addr: u64, data: &[u8]) -> io::Result<()> {
    debug_assert!(data.len() + 8 <= MAX_FRAME);
    let mut head = [0u8; 13];
    head[..4].copy_from_slice(&((data.len() + 8) as u32).to_le_bytes());
    head[4] = KIND_PAGES;
    head[5..].copy_from_slice(&addr.to_le_bytes());
    out.write_all(&head)?;
    out.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let mut buf = Vec::new();
        write_message(&mut buf, &vec![1u32, 2, 3]).unwrap();
        write_pages(&mut buf, 0x1000, &[7; 4096]).unwrap();
        let mut r = FrameReader::new(&buf[..]);
        assert_eq!(r.message::<Vec<u32>>().unwrap(), vec![1, 2, 3]);
        match r.next_frame().unwrap() {
            Frame::Pages { addr, data } => {
                assert_eq!(addr, 0x1000);
                assert_eq!(data, vec![7; 4096]);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(r.next_frame(), Err(FrameError::Io(_))));
    }

    #[test]
    fn refuses_oversized_and_unknown_frames_and_truncation() {
        let mut big = Vec::new();
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        big.push(KIND_MESSAGE);
        assert!(matches!(
            FrameReader::new(&big[..]).next_frame(),
            Err(FrameError::TooLarge(_))
        ));
        let unknown = [0, 0, 0, 0, 9];
        assert!(matches!(
            FrameReader::new(&unknown[..]).next_frame(),
            Err(FrameError::Kind(9))
        ));
        let mut buf = Vec::new();
        write_pages(&mut buf, 1, &[1; 100]).unwrap();
        for cut in 0..buf.len() {
            assert!(FrameReader::new(&buf[..cut]).next_frame().is_err());
        }
        let short_pages = [4, 0, 0, 0, KIND_PAGES, 0, 0, 0, 0];
        assert!(FrameReader::new(&short_pages[..]).next_frame().is_err());
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// A frame as a test writes it.
        #[derive(Debug, Clone, PartialEq)]
        enum Written {
            Message(Vec<u32>),
            Pages(u64, Vec<u8>),
        }

        fn written() -> impl Strategy<Value = Written> {
            prop_oneof![
                prop::collection::vec(any::<u32>(), 0..16).prop_map(Written::Message),
                (any::<u64>(), prop::collection::vec(any::<u8>(), 0..600))
                    .prop_map(|(addr, data)| Written::Pages(addr, data)),
            ]
        }

        fn encode(frames: &[Written]) -> Vec<u8> {
            let mut buf = Vec::new();
            for frame in frames {
                match frame {
                    Written::Message(words) => write_message(&mut buf, words).unwrap(),
                    Written::Pages(addr, data) => write_pages(&mut buf, *addr, data).unwrap(),
                }
            }
            buf
        }

        /// Frames read until the first error.
        fn decode(bytes: &[u8]) -> (Vec<Written>, Option<FrameError>) {
            let mut reader = FrameReader::new(bytes);
            let mut frames = Vec::new();
            loop {
                match reader.next_frame() {
                    Ok(Frame::Message(body)) => match serde_json::from_slice(&body) {
                        Ok(words) => frames.push(Written::Message(words)),
                        Err(err) => return (frames, Some(err.into())),
                    },
                    Ok(Frame::Pages { addr, data }) => frames.push(Written::Pages(addr, data)),
                    Err(err) => return (frames, Some(err)),
                }
            }
        }

        proptest! {
            #[test]
            fn frames_come_back_as_written(frames in prop::collection::vec(written(), 0..12)) {
                let (back, end) = decode(&encode(&frames));
                prop_assert_eq!(back, frames);
                prop_assert!(matches!(end, Some(FrameError::Io(_))));
            }

            #[test]
            fn a_cut_stream_yields_the_whole_frames_before_the_cut_then_an_error(
                frames in prop::collection::vec(written(), 1..8),
                cut in any::<prop::sample::Index>(),
            ) {
                let bytes = encode(&frames);
                let cut = cut.index(bytes.len());
                let (back, end) = decode(&bytes[..cut]);
                prop_assert!(back.len() < frames.len());
                prop_assert_eq!(&back[..], &frames[..back.len()]);
                prop_assert!(end.is_some());
            }

            #[test]
            fn junk_never_panics_nor_yields_an_oversized_frame(
                junk in prop::collection::vec(any::<u8>(), 0..2048),
            ) {
                let mut reader = FrameReader::new(&junk[..]);
                let mut body = Vec::new();
                while reader.next_frame_into(&mut body).is_ok() {
                    prop_assert!(body.len() <= MAX_FRAME);
                }
            }

            /// The length is checked before the body is read or room made for it: the head
            /// alone, with nothing after it, is refused as too large, not as a short stream.
            #[test]
            fn an_oversized_frame_is_refused_from_its_head_alone(
                len in (MAX_FRAME as u32 + 1)..=u32::MAX,
                kind in prop_oneof![Just(KIND_MESSAGE), Just(KIND_PAGES)],
            ) {
                let mut head = len.to_le_bytes().to_vec();
                head.push(kind);
                let mut body = Vec::new();
                let err = FrameReader::new(&head[..]).next_frame_into(&mut body).unwrap_err();
                prop_assert!(matches!(err, FrameError::TooLarge(n) if n == len as usize));
                prop_assert_eq!(body.capacity(), 0);
            }
        }
    }
}
