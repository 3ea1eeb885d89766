//! What `getsockopt` and `setsockopt` read and write at `optval`, by level and option name.
//!
//! Most options are plain bytes: `setsockopt` reads `optlen` of them, and `getsockopt` writes
//! at most `optlen` and says how many in `optlen`. A few read a request from `optval` before
//! they answer in it (`IP_MSFILTER`, `MCAST_MSFILTER`, netlink's and netfilter's queries), so
//! a forwarded getsockopt sends its buffer home and brings it back whole: what the kernel
//! did not write comes back as the program had it, as if the call had run where it is.
//! The rest differ in shape:
//!
//! - `SO_GET_FILTER` counts its buffer in `struct sock_filter` records of 8 bytes, not bytes
//!   (net/core/filter.c, `sk_get_filter`).
//! - Options whose `optval` holds pointers to more memory: `SO_ATTACH_FILTER` and
//!   `SO_ATTACH_REUSEPORT_CBPF` (a `struct sock_fprog`), netfilter's table replacements
//!   (`ipt_replace.counters`, `ebt_replace.entries`), `TCP_ZEROCOPY_RECEIVE` (an address in
//!   the caller's mappings), every SCTP option (`sctp_getaddrs_old`, `connectx3`), and the
//!   packet rings that are then mapped (`PACKET_RX_RING`, `PACKET_TX_RING`). Home cannot
//!   follow a remote's pointer: these run after the process went home.

/// How a socket option's `optval` crosses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptShape {
    /// `optlen` bytes.
    Bytes,
    /// `optlen` classic BPF instructions of [`SOCK_FILTER`] bytes each.
    Filter,
    /// It holds pointers: only home can run the call.
    Home,
}

/// Bytes of a classic BPF instruction, `struct sock_filter`.
pub const SOCK_FILTER: u64 = 8;
/// netfilter's control options: iptables and ip6tables from 64, arptables from 96, ebtables
/// from 128 to 133 (uapi linux/netfilter_ipv4/ip_tables.h, arp_tables.h, bridge/ebtables.h).
const NETFILTER_CTL: std::ops::RangeInclusive<i32> = 64..=133;
/// uapi linux/tcp.h.
const TCP_ZEROCOPY_RECEIVE: i32 = 35;

/// The shape of `optval` for `getsockopt(level, name)`.
pub fn get(level: u64, name: u64) -> OptShape {
    match (level as i32, name as i32) {
        (libc::SOL_SOCKET, libc::SO_GET_FILTER) => OptShape::Filter,
        (libc::IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE) => OptShape::Home,
        (level, name) => common(level, name),
    }
}

/// The shape of `optval` for `setsockopt(level, name)`.
pub fn set(level: u64, name: u64) -> OptShape {
    match (level as i32, name as i32) {
        (libc::SOL_SOCKET, libc::SO_ATTACH_FILTER | libc::SO_ATTACH_REUSEPORT_CBPF) => {
            OptShape::Home
        }
        (libc::SOL_PACKET, libc::PACKET_RX_RING | libc::PACKET_TX_RING) => OptShape::Home,
        (level, name) => common(level, name),
    }
}

/// What both calls share: SCTP and netfilter's control options carry pointers.
fn common(level: i32, name: i32) -> OptShape {
    match level {
        libc::IPPROTO_SCTP => OptShape::Home,
        libc::IPPROTO_IP | libc::IPPROTO_IPV6 if NETFILTER_CTL.contains(&name) => OptShape::Home,
        _ => OptShape::Bytes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get_of(level: i32, name: i32) -> OptShape {
        get(level as u64, name as u64)
    }

    fn set_of(level: i32, name: i32) -> OptShape {
        set(level as u64, name as u64)
    }

    #[test]
    fn options_cross_in_their_own_shape() {
        use OptShape::{Bytes, Filter, Home};
        let cases = [
            (get_of(libc::SOL_SOCKET, libc::SO_TYPE), Bytes),
            (get_of(libc::SOL_SOCKET, libc::SO_PEERGROUPS), Bytes),
            (get_of(libc::SOL_SOCKET, libc::SO_GET_FILTER), Filter),
            (get_of(libc::IPPROTO_TCP, libc::TCP_INFO), Bytes),
            (get_of(libc::IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE), Home),
            (get_of(libc::IPPROTO_IP, libc::IP_MULTICAST_IF), Bytes),
            (get_of(libc::IPPROTO_IP, libc::IP_MSFILTER), Bytes),
            (get_of(libc::IPPROTO_IP, 64), Home),
            (get_of(libc::IPPROTO_IPV6, 130), Home),
            (get_of(libc::IPPROTO_SCTP, 1), Home),
            // SO_GET_FILTER is SO_ATTACH_FILTER's number: what a setsockopt of it means.
            (set_of(libc::SOL_SOCKET, libc::SO_GET_FILTER), Home),
            (set_of(libc::SOL_SOCKET, libc::SO_ATTACH_FILTER), Home),
            (
                set_of(libc::SOL_SOCKET, libc::SO_ATTACH_REUSEPORT_CBPF),
                Home,
            ),
            (set_of(libc::SOL_SOCKET, libc::SO_ATTACH_BPF), Bytes),
            (set_of(libc::SOL_PACKET, libc::PACKET_RX_RING), Home),
            (set_of(libc::IPPROTO_IP, libc::IP_TTL), Bytes),
            (set_of(libc::IPPROTO_IP, 64), Home),
            (set_of(libc::IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE), Bytes),
        ];
        for (i, (got, want)) in cases.into_iter().enumerate() {
            assert_eq!(got, want, "case {i}");
        }
    }

    #[test]
    fn levels_and_names_are_compared_as_ints() {
        // The kernel takes both as int: the high half of the register means nothing.
        let level = (1u64 << 32) | libc::SOL_SOCKET as u64;
        assert_eq!(get(level, libc::SO_GET_FILTER as u64), OptShape::Filter);
    }
}
