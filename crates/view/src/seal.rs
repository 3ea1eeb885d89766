//! The sealed datagram: every byte of gossip that crosses the network.
//!
//! ```text
//! offset size
//!      0    4  magic "RMVw"
//!      4    1  version (3)
//!      5    1  zero (reserved)
//!      6    2  sender's node id (big endian, as all numbers here)
//!      8    8  sender's generation (its daemon's start, see engine)
//!     16    8  sequence number within the generation, one more per datagram
//!     24   10  random part of the nonce
//!     34    n  a message (see `message`), AES-256-GCM encrypted
//!   34+n   16  GCM tag
//! ```
//!
//! The key is [`GOSSIP_LABEL`]'s key derived from the cluster key (HKDF-SHA256), never the
//! cluster key itself, which the Noise links use. The 96-bit GCM nonce is the sender's node
//! id (2 bytes) and 10 random bytes: nodes never share a nonce, and one node would need about
//! 2^40 datagrams (centuries at gossip rates) before two of its random parts are likely to
//! meet. Bytes 0-33 are authenticated as associated data, so nobody without the key can
//! change who a datagram claims to come from, or its sequence number.
//!
//! Size: [`MAX_PLAIN`] bytes of foca message make a 1450-byte datagram, which fits one
//! Ethernet frame over IPv4 (1472 bytes of UDP payload) and IPv6 (1452).

use ring::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};

use rmosix_config::NodeId;
use rmosix_transport::ClusterKey;

/// What the gossip key is derived for, from the cluster key.
pub(crate) const GOSSIP_LABEL: &[u8] = b"rmosix gossip v1";

/// First bytes of every datagram.
const MAGIC: [u8; 4] = *b"RMVw";

/// The layout above, with entries of `state`'s layout: 3 since entries carry the processes
/// ready to leave (2 had none; 1 carried entries inside foca).
const VERSION: u8 = 3;

/// Bytes before the ciphertext.
pub(crate) const HEADER_LEN: usize = 34;

/// Bytes of the nonce sent in the clear; the other two are the sender's node id.
const RANDOM_NONCE_LEN: usize = NONCE_LEN - 2;

/// Bytes of the GCM tag.
pub(crate) const TAG_LEN: usize = 16;

/// Largest foca message sealed in one datagram (foca's `max_packet_size`).
pub(crate) const MAX_PLAIN: usize = 1400;

/// Largest datagram we send or read.
pub(crate) const MAX_DATAGRAM: usize = HEADER_LEN + MAX_PLAIN + TAG_LEN;

/// Who claims to have sent a datagram, and when in its run: read before opening it, trusted
/// only once it opened.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Sender {
    pub node: NodeId,
    pub generation: u64,
    pub seq: u64,
}

/// Why a datagram was dropped before foca saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Refusal {
    /// Too short or long, wrong magic or version, node 0.
    Malformed,
    /// Does not open with our key: a sender without it, or bytes changed on the way.
    BadSeal,
}

/// Seals and opens datagrams with the cluster's gossip key.
pub(crate) struct Sealer {
    key: LessSafeKey,
    random: SystemRandom,
}

impl Sealer {
    pub fn new(cluster: &ClusterKey) -> Sealer {
        let bytes = cluster.derive(GOSSIP_LABEL);
        let key = UnboundKey::new(&AES_256_GCM, &bytes).expect("32 bytes is an AES-256 key");
        Sealer {
            key: LessSafeKey::new(key),
            random: SystemRandom::new(),
        }
    }

    /// The datagram carrying `plain` from `from`. Fails only if the system gives no random
    /// bytes.
    pub fn seal(&self, from: Sender, plain: &[u8]) -> Result<Vec<u8>, ring::error::Unspecified> {
        let mut out = Vec::with_capacity(HEADER_LEN + plain.len() + TAG_LEN);
        out.extend_from_slice(&MAGIC);
        out.push(VERSION);
        out.push(0);
        out.extend_from_slice(&from.node.get().to_be_bytes());
        out.extend_from_slice(&from.generation.to_be_bytes());
        out.extend_from_slice(&from.seq.to_be_bytes());
        let mut random = [0u8; RANDOM_NONCE_LEN];
        self.random.fill(&mut random)?;
        out.extend_from_slice(&random);
        let nonce = nonce(from.node, &random);
        out.extend_from_slice(plain);
        let (header, body) = out.split_at_mut(HEADER_LEN);
        let tag = self
            .key
            .seal_in_place_separate_tag(nonce, Aad::from(&header[..]), body)?;
        out.extend_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Who a datagram claims to come from, without opening it: lets the caller check the
    /// source address against the map before spending a decryption on it.
    pub fn peek(datagram: &[u8]) -> Result<Sender, Refusal> {
        if datagram.len() < HEADER_LEN + TAG_LEN
            || datagram.len() > MAX_DATAGRAM
            || datagram[..4] != MAGIC
            || datagram[4] != VERSION
            || datagram[5] != 0
        {
            return Err(Refusal::Malformed);
        }
        let node = NodeId::new(u16::from_be_bytes([datagram[6], datagram[7]]))
            .ok_or(Refusal::Malformed)?;
        let u64_at = |at: usize| {
            u64::from_be_bytes(datagram[at..at + 8].try_into().expect("8 header bytes"))
        };
        Ok(Sender {
            node,
            generation: u64_at(8),
            seq: u64_at(16),
        })
    }

    /// The foca message inside, if the datagram is well formed and opens with our key.
    pub fn open<'a>(&self, datagram: &'a mut [u8]) -> Result<(Sender, &'a [u8]), Refusal> {
        let sender = Self::peek(datagram)?;
        let (header, body) = datagram.split_at_mut(HEADER_LEN);
        let random: &[u8; RANDOM_NONCE_LEN] = header[24..HEADER_LEN]
            .try_into()
            .expect("10 nonce bytes in the header");
        let plain = self
            .key
            .open_in_place(nonce(sender.node, random), Aad::from(&header[..]), body)
            .map_err(|_| Refusal::BadSeal)?;
        Ok((sender, plain))
    }
}

fn nonce(node: NodeId, random: &[u8; RANDOM_NONCE_LEN]) -> Nonce {
    let mut bytes = [0u8; NONCE_LEN];
    bytes[..2].copy_from_slice(&node.get().to_be_bytes());
    bytes[2..].copy_from_slice(random);
    Nonce::assume_unique_for_key(bytes)
}

/// The datagrams of one sender already taken, so that none is taken twice: the newest
/// generation seen, and within it a window of the last 64 sequence numbers (as IPsec's
/// anti-replay window, RFC 4303 section 3.4.3). Datagrams may arrive out of order within the
/// window; older ones are dropped, as are those of an older generation.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ReplayWindow {
    generation: u64,
    /// The highest sequence number taken.
    top: u64,
    /// Bit i set: `top - i` was taken.
    seen: u64,
}

impl ReplayWindow {
    const WIDTH: u64 = 64;

    /// A window that has taken `first` only.
    pub fn starting_at(first: Sender) -> ReplayWindow {
        ReplayWindow {
            generation: first.generation,
            top: first.seq,
            seen: 1,
        }
    }

    /// Whether the datagram is new; if so, it is marked taken. Call only for datagrams that
    /// opened: a forged one must not move the window.
    pub fn take(&mut self, sender: Sender) -> bool {
        if sender.generation < self.generation {
            return false;
        }
        if sender.generation > self.generation {
            *self = ReplayWindow::starting_at(sender);
            return true;
        }
        if sender.seq > self.top {
            let shift = sender.seq - self.top;
            self.seen = if shift >= Self::WIDTH {
                0
            } else {
                self.seen << shift
            };
            self.seen |= 1;
            self.top = sender.seq;
            return true;
        }
        let age = self.top - sender.seq;
        if age >= Self::WIDTH || self.seen & (1 << age) != 0 {
            return false;
        }
        self.seen |= 1 << age;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tests::key;

    fn sender(seq: u64) -> Sender {
        Sender {
            node: NodeId::new(3).unwrap(),
            generation: 77,
            seq,
        }
    }

    #[test]
    fn sealed_datagrams_open_with_the_same_key_only() {
        let ours = Sealer::new(&key(1));
        let mut datagram = ours.seal(sender(5), b"hello").unwrap();
        assert_eq!(datagram.len(), HEADER_LEN + 5 + TAG_LEN);
        let theirs = Sealer::new(&key(2));
        let mut copy = datagram.clone();
        assert_eq!(theirs.open(&mut copy).unwrap_err(), Refusal::BadSeal);
        let (from, plain) = ours.open(&mut datagram).unwrap();
        assert_eq!(from, sender(5));
        assert_eq!(plain, b"hello");
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let sealer = Sealer::new(&key(1));
        let datagram = sealer.seal(sender(5), b"some gossip").unwrap();
        for at in 0..datagram.len() {
            let mut bent = datagram.clone();
            bent[at] ^= 0x01;
            assert!(sealer.open(&mut bent).is_err(), "byte {at}");
        }
    }

    #[test]
    fn short_long_and_foreign_datagrams_are_malformed() {
        let sealer = Sealer::new(&key(1));
        for len in [0, 1, HEADER_LEN, HEADER_LEN + TAG_LEN - 1, MAX_DATAGRAM + 1] {
            assert_eq!(
                sealer.open(&mut vec![0u8; len]).unwrap_err(),
                Refusal::Malformed,
                "length {len}"
            );
        }
        let mut other = sealer.seal(sender(1), b"x").unwrap();
        for previous in [1, 2] {
            // 1 carried entries inside foca; 2's entries had no processes ready to leave.
            other[4] = previous;
            assert_eq!(sealer.open(&mut other).unwrap_err(), Refusal::Malformed);
        }
    }

    #[test]
    fn the_gossip_key_is_not_the_cluster_key() {
        // A datagram sealed with the raw cluster key bytes (as if the link PSK were reused)
        // does not open.
        let cluster = key(1);
        let raw = Sealer {
            key: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[1u8; 32]).unwrap()),
            random: SystemRandom::new(),
        };
        let mut datagram = raw.seal(sender(1), b"x").unwrap();
        assert_eq!(
            Sealer::new(&cluster).open(&mut datagram).unwrap_err(),
            Refusal::BadSeal
        );
    }

    #[test]
    fn the_replay_window_takes_each_datagram_once() {
        let mut window = ReplayWindow::starting_at(sender(10));
        assert!(!window.take(sender(10)));
        assert!(window.take(sender(12)));
        assert!(window.take(sender(11)), "late but inside the window");
        assert!(!window.take(sender(11)));
        assert!(window.take(sender(100)));
        assert!(!window.take(sender(12)), "behind the window");
        assert!(window.take(sender(40)));
        assert!(!window.take(sender(40)));
        let older = Sender {
            generation: 76,
            ..sender(1000)
        };
        assert!(!window.take(older));
        let newer = Sender {
            generation: 78,
            ..sender(0)
        };
        assert!(window.take(newer));
        assert!(!window.take(sender(101)), "the old generation is over");
    }
}
