//! sendmsg(2) and recvmsg(2) across the session. Their `struct msghdr` points to three more
//! buffers: the address, the data (an iovec array) and the ancillary data. Each must be
//! copied and pointed at anew in the shell.
//!
//! The guest sends the msghdr and the three buffers, the data gathered into one, and puts
//! the data's length (the sum of the iovec lengths) in the call's unused argument 3. Home
//! takes every nested length from the msghdr it got and from that argument (see
//! `table::Shape`), lays the buffers out in the shell's scratch area and points a copy of the
//! msghdr at them, with a one-element iovec. For recvmsg it sends back what the kernel filled
//! in, addressed where the remote's own msghdr points. The data goes back to the address of
//! the remote's iovec array, and the guest scatters it from there. Descriptors passed with
//! SCM_RIGHTS mean the same at both ends: every descriptor of a remote process lives in its
//! shell.
//!
//! sendmmsg(2) goes as one sendmsg per message, in order. The guest writes each result into
//! the message's `msg_len` and stops at the first failure, which the call reports only if no
//! message went, as the kernel does.

use crate::mem::{le_u32, le_u64};

/// Size of `struct msghdr`.
pub const HDR_LEN: u64 = 56;
/// Size of `struct mmsghdr` (sendmmsg's array): a msghdr, then `msg_len` (u32) and padding.
pub const MMSGHDR_LEN: u64 = 64;
/// recvmmsg's flag: wait for the first message only (linux/socket.h).
pub const MSG_WAITFORONE: i32 = 0x10000;
/// Most messages one sendmmsg sends (UIO_MAXIOV, as the kernel caps `vlen`).
pub const MAX_BATCH: u64 = 1024;
/// The buffers a msghdr points to, in the order they travel after the msghdr itself.
pub const NAME: usize = 1;
pub const DATA: usize = 2;
pub const CONTROL: usize = 3;
/// The argument of a shipped sendmsg/recvmsg that carries the data's length.
pub const DATA_LEN_ARG: usize = 3;

/// Whether `nr` is a call this module ships.
pub fn is_message(nr: i64) -> bool {
    nr == libc::SYS_sendmsg || nr == libc::SYS_recvmsg
}

/// The fields of a `struct msghdr`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MsgHdr {
    pub name: u64,
    pub namelen: u32,
    pub iov: u64,
    pub iovlen: u64,
    pub control: u64,
    pub controllen: u64,
    pub flags: i32,
}

impl MsgHdr {
    /// Decode the first HDR_LEN bytes of `raw`.
    pub fn parse(raw: &[u8]) -> Option<MsgHdr> {
        let raw = raw.get(..HDR_LEN as usize)?;
        Some(MsgHdr {
            name: le_u64(raw, 0),
            namelen: le_u32(raw, 8),
            iov: le_u64(raw, 16),
            iovlen: le_u64(raw, 24),
            control: le_u64(raw, 32),
            controllen: le_u64(raw, 40),
            flags: le_u32(raw, 48) as i32,
        })
    }

    /// Encode, with zeroed padding.
    pub fn to_bytes(self) -> [u8; HDR_LEN as usize] {
        let mut raw = [0u8; HDR_LEN as usize];
        raw[0..8].copy_from_slice(&self.name.to_le_bytes());
        raw[8..12].copy_from_slice(&self.namelen.to_le_bytes());
        raw[16..24].copy_from_slice(&self.iov.to_le_bytes());
        raw[24..32].copy_from_slice(&self.iovlen.to_le_bytes());
        raw[32..40].copy_from_slice(&self.control.to_le_bytes());
        raw[40..48].copy_from_slice(&self.controllen.to_le_bytes());
        raw[48..52].copy_from_slice(&self.flags.to_le_bytes());
        raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn msghdr_round_trips_through_its_bytes() {
        let hdr = MsgHdr {
            name: 0x1000,
            namelen: 16,
            iov: 0x2000,
            iovlen: 3,
            control: 0x3000,
            controllen: 24,
            flags: libc::MSG_TRUNC,
        };
        assert_eq!(MsgHdr::parse(&hdr.to_bytes()), Some(hdr));
        assert_eq!(MsgHdr::parse(&[0; 55]), None);
        // The layout is the C one.
        assert_eq!(HDR_LEN as usize, std::mem::size_of::<libc::msghdr>());
    }
}
