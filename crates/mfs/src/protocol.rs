//! What a node asks another for its files, and what it gets back.
//!
//! One message of the link is a frame: a little-endian `u32` length, that many bytes of JSON
//! (a [`Call`] or a [`Reply`] with its number), then the raw bytes that travel with it (the
//! data of a write, or of a read's answer). Data never goes through JSON, which would spell
//! every byte as a number.
//!
//! Paths are those of the serving node relative to its root (`b"tmp/x"`; empty: the root),
//! as bytes, since a Linux name need not be UTF-8. Names are single components.

use serde::{Deserialize, Serialize};

/// A path or a name, as the kernel has it.
pub type Bytes = Vec<u8>;

/// The most bytes one read or write carries: what the requesting kernel sends at most, and
/// what a serving node reads for one call whatever size a peer asks for (a shorter read, as
/// any read may be). A MiB and 64 KiB: the kernel cuts a read into requests of whole pages of
/// the reader's buffer, and a MiB buffer that does not start on a page boundary spans one page
/// more than a MiB; with room for it (for pages up to 64 KiB), a MiB read is one request, not
/// a MiB less a sliver and then the sliver, each a round trip.
pub const MAX_IO: u32 = (1 << 20) + (64 << 10);

/// Who asks: the calling process's identity at the requesting node. The serving node runs the
/// request with exactly these ids (root mapped, see `serve`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    /// File-system uid.
    pub uid: u32,
    /// File-system gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// A time to set, as `utimensat` takes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Time {
    /// The serving node's clock at the call.
    Now,
    /// Seconds and nanoseconds since the epoch.
    At {
        /// Seconds.
        secs: i64,
        /// Nanoseconds.
        nanos: u32,
    },
}

/// One file call. `fh` is a handle an [`Request::Open`] or [`Request::Create`] returned on
/// the same link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// The attributes of `path` itself (a symlink is not followed): [`Answer::Attr`].
    Lookup { path: Bytes },
    /// The attributes of an open file, which may have been removed or renamed since:
    /// [`Answer::Attr`].
    Fstat { fh: u64 },
    /// Change attributes, in this order: mode, owner, size, times. [`Answer::Attr`].
    Setattr {
        path: Bytes,
        fh: Option<u64>,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<Time>,
        mtime: Option<Time>,
    },
    /// A symlink's target, as stored: [`Answer::Target`].
    Readlink { path: Bytes },
    /// Every entry of a directory but `.` and `..`: [`Answer::Entries`].
    Readdir { path: Bytes },
    /// Open a regular file (`flags` of open(2) without O_CREAT): [`Answer::Opened`].
    Open { path: Bytes, flags: i32 },
    /// Create and open `name` in directory `parent`: [`Answer::Opened`].
    Create {
        parent: Bytes,
        name: Bytes,
        mode: u32,
        flags: i32,
    },
    /// Up to `size` bytes at `offset`: [`Answer::Data`] with the bytes after the frame.
    Read { fh: u64, offset: u64, size: u32 },
    /// Write the bytes after the frame at `offset`: [`Answer::Written`].
    Write { fh: u64, offset: u64 },
    /// Close a handle: [`Answer::Done`].
    Release { fh: u64 },
    /// fsync(2) or fdatasync(2) a handle: [`Answer::Done`].
    Fsync { fh: u64, datasync: bool },
    /// Set or clear lock owner `owner`'s lock of type `typ` (F_RDLCK, F_WRLCK, F_UNLCK) on
    /// bytes `start..=end` of the file of `fh` without waiting (`end` of `i64::MAX` or more:
    /// to the end of the file). `owner` is the requesting kernel's FUSE `lock_owner`; the
    /// serving node holds each owner's locks of a file on one open file description of its
    /// own, as open-file-description locks (`locks`). Clearing the whole file closes that
    /// description. [`Answer::Done`], or EAGAIN while another holds a conflicting lock.
    Lock {
        fh: u64,
        owner: u64,
        typ: i32,
        start: u64,
        end: u64,
    },
    /// The first lock of another owner that would conflict with the one described
    /// (F_OFD_GETLK): [`Answer::Lock`], of type F_UNLCK if none.
    GetLock {
        fh: u64,
        owner: u64,
        typ: i32,
        start: u64,
        end: u64,
    },
    /// [`Answer::Attr`] of the new directory.
    Mkdir {
        parent: Bytes,
        name: Bytes,
        mode: u32,
    },
    /// [`Answer::Done`].
    Rmdir { parent: Bytes, name: Bytes },
    /// [`Answer::Done`].
    Unlink { parent: Bytes, name: Bytes },
    /// renameat2(2) with `flags`: [`Answer::Done`].
    Rename {
        parent: Bytes,
        name: Bytes,
        new_parent: Bytes,
        new_name: Bytes,
        flags: u32,
    },
    /// [`Answer::Attr`] of the new symlink.
    Symlink {
        parent: Bytes,
        name: Bytes,
        target: Bytes,
    },
    /// A hard link to `path`: [`Answer::Attr`].
    Link {
        path: Bytes,
        new_parent: Bytes,
        new_name: Bytes,
    },
    /// [`Answer::Statfs`] of the file system `path` is on.
    Statfs { path: Bytes },
    /// access(2) with the caller's ids: [`Answer::Done`].
    Access { path: Bytes, mask: i32 },
    /// A regular file, FIFO or socket `name` in directory `parent` (mknod(2); `mode` holds
    /// the type): [`Answer::Attr`]. A device is EPERM: MFS makes none.
    Mknod {
        parent: Bytes,
        name: Bytes,
        mode: u32,
    },
    /// fsync(2) or fdatasync(2) of a directory: [`Answer::Done`].
    FsyncDir { path: Bytes, datasync: bool },
}

/// What a file is, as stat(2) says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attr {
    /// The serving node's inode number (not the requester's).
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: (i64, u32),
    pub mtime: (i64, u32),
    pub ctime: (i64, u32),
    /// Type and permission bits.
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
}

/// One directory entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: Bytes,
    /// The serving node's inode number.
    pub ino: u64,
    /// The `S_IFMT` bits of its type (0: unknown).
    pub kind: u32,
}

/// statfs(2) of a file system.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// The answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Answer {
    Attr(Attr),
    Entries(Vec<Entry>),
    Target(Bytes),
    Opened {
        fh: u64,
        attr: Attr,
    },
    /// The bytes read follow the frame.
    Data,
    Written(u32),
    Done,
    Statfs(Statfs),
    Lock {
        typ: i32,
        start: u64,
        end: u64,
    },
    /// It failed with this errno.
    Error(i32),
}

/// A request with who asks, as it crosses the link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Call {
    /// Chosen by the requester; the reply carries it back.
    pub id: u64,
    pub caller: Caller,
    pub request: Request,
}

/// The answer to the [`Call`] numbered `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    pub answer: Answer,
}

/// Why a frame could not be read.
#[derive(Debug)]
pub struct BadFrame;

impl std::fmt::Display for BadFrame {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("malformed MFS frame")
    }
}

impl std::error::Error for BadFrame {}

/// Room to leave after a message's data for its head: [`encode`] then appends the head
/// without moving the data (a read's head is a few dozen bytes).
pub const HEAD_ROOM: usize = 256;

/// One link message: `data`, then `head` as JSON, then the JSON's length (4 bytes, little
/// endian). The head goes last so that neither end copies the data, up to 1 MiB a read: the
/// sender appends the head to the bytes it read (allocated with [`HEAD_ROOM`] to spare), the
/// receiver cuts it off.
pub fn encode<T: Serialize>(head: &T, mut data: Vec<u8>) -> Vec<u8> {
    let json = serde_json::to_vec(head).expect("MFS messages always serialise");
    let len = u32::try_from(json.len()).expect("an MFS header is far below 4 GiB");
    data.reserve(json.len() + 4);
    data.extend_from_slice(&json);
    data.extend_from_slice(&len.to_le_bytes());
    data
}

/// The head and the data of one link message.
pub fn decode<T: for<'de> Deserialize<'de>>(mut frame: Vec<u8>) -> Result<(T, Vec<u8>), BadFrame> {
    let at = frame.len().checked_sub(4).ok_or(BadFrame)?;
    let len: [u8; 4] = frame[at..].try_into().map_err(|_| BadFrame)?;
    let start = at
        .checked_sub(u32::from_le_bytes(len) as usize)
        .ok_or(BadFrame)?;
    let head = serde_json::from_slice(&frame[start..at]).map_err(|_| BadFrame)?;
    frame.truncate(start);
    Ok((head, frame))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_and_data_round_trip() {
        let call = Call {
            id: 7,
            caller: Caller {
                uid: 1000,
                gid: 100,
                groups: vec![4, 27],
            },
            request: Request::Write { fh: 3, offset: 9 },
        };
        let data = b"\x00\xffbytes".to_vec();
        let (back, tail): (Call, _) = decode(encode(&call, data.clone())).unwrap();
        assert_eq!(back, call);
        assert_eq!(tail, data);
    }

    #[test]
    fn data_with_room_is_not_moved() {
        let mut data = Vec::with_capacity(64 + HEAD_ROOM);
        data.extend_from_slice(&[9; 64]);
        let at = data.as_ptr();
        let frame = encode(
            &Reply {
                id: 2,
                answer: Answer::Data,
            },
            data,
        );
        assert_eq!(frame.as_ptr(), at, "the head was appended in place");
        let (_, data): (Reply, _) = decode(frame).unwrap();
        assert_eq!(
            (data.as_ptr(), data.len()),
            (at, 64),
            "the head was cut off in place"
        );
    }

    #[test]
    fn truncated_and_junk_frames_are_refused() {
        let frame = encode(
            &Reply {
                id: 1,
                answer: Answer::Data,
            },
            b"some bytes read".to_vec(),
        );
        for cut in 0..frame.len() {
            assert!(decode::<Reply>(frame[..cut].to_vec()).is_err(), "cut {cut}");
        }
        assert!(decode::<Reply>(b"junk\xff\xff\xff\xff".to_vec()).is_err());
    }
}
