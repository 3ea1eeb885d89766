//! What a node tells the others about itself: [`NodeState`], and its encoding inside a
//! gossiped entry.
//!
//! An entry (one node's state, as it travels in foca's custom broadcasts):
//!
//! ```text
//! offset size
//!      0    2  node id (big endian, as all numbers here)
//!      2    8  generation: the publishing daemon's start, unique per run (see engine)
//!     10    8  sequence number within the generation, one more per publication
//!     18    4  load, MOSIX units (100 = one CPU-busy process on a standard CPU)
//!     22    4  speed (MOSIX units: 10000 = a standard CPU)
//!     26    4  CPUs, in thousandths (a cgroup quota of 1.5 CPUs is 1500)
//!     30    8  total memory, bytes
//!     38    8  free memory, bytes
//!     46    1  utilisation, percent (0-100)
//!     47    1  status flags: 1 stay, 2 lstay, 4 block, 8 quiet, 16 expel
//!     48    1  length n of the compatibility key (at most MAX_COMPAT)
//!     49    n  compatibility key
//! ```
//!
//! Entries from other versions are told apart by the datagram's version byte (see `seal`),
//! not here.

use rmosix_config::NodeId;

/// The longest compatibility key a node may publish. A digest of the node's `KernelFacts`
/// (SHA-256: 32 bytes) fits twice; a bound keeps an entry small enough that a datagram
/// carries a dozen of them.
pub const MAX_COMPAT: usize = 64;

/// Bytes of an entry before its compatibility key.
const FIXED_LEN: usize = 49;

/// MOSIX's node modes, as `mosctl` sets them. A node in none of them is simply up.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug, Default)]
pub struct Status {
    /// `mosctl stay`: processes here do not leave automatically.
    pub stay: bool,
    /// `mosctl lstay`: local processes do not leave automatically.
    pub lstay: bool,
    /// `mosctl block`: no new guests are accepted.
    pub block: bool,
    /// `mosctl quiet`: this node stops balancing and is not offered load.
    pub quiet: bool,
    /// `mosctl expel`: guests are being sent away.
    pub expel: bool,
}

impl Status {
    fn bits(self) -> u8 {
        u8::from(self.stay)
            | u8::from(self.lstay) << 1
            | u8::from(self.block) << 2
            | u8::from(self.quiet) << 3
            | u8::from(self.expel) << 4
    }

    /// `None` for bits no version defines: a newer peer's entry is refused rather than
    /// half-understood.
    fn from_bits(bits: u8) -> Option<Status> {
        (bits & !0x1f == 0).then_some(Status {
            stay: bits & 1 != 0,
            lstay: bits & 2 != 0,
            block: bits & 4 != 0,
            quiet: bits & 8 != 0,
            expel: bits & 16 != 0,
        })
    }
}

/// One node's figures, as its daemon publishes them ([`crate::ViewHandle::publish`]).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct NodeState {
    /// Load in MOSIX units: 100 is one CPU-busy process on a standard CPU.
    pub load: u32,
    /// Speed in MOSIX units (10000: a standard CPU), as `mosctl setspeed` sets it.
    pub speed: u32,
    /// CPUs this node's processes may use (its cgroup's quota, or affinity), in thousandths.
    pub milli_cpus: u32,
    /// Memory this node's processes may use, bytes.
    pub mem_total: u64,
    /// Of which free, bytes.
    pub mem_free: u64,
    /// CPU utilisation, percent.
    pub utilisation_pct: u8,
    /// `mosctl` modes.
    pub status: Status,
    /// What a move to this node needs to match (a digest of its `KernelFacts`); opaque here,
    /// at most [`MAX_COMPAT`] bytes.
    pub compat: Vec<u8>,
}

/// One gossiped entry: whose, which publication, and the figures.
#[derive(Clone, PartialEq, Eq, Debug)]
pub(crate) struct Entry {
    pub node: NodeId,
    pub generation: u64,
    pub seq: u64,
    pub state: NodeState,
}

/// Why an entry could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("entry of {0} bytes is shorter than its fixed part")]
    Short(usize),
    #[error("entry names node 0")]
    NodeZero,
    #[error("entry has unknown status bits {0:#04x}")]
    Status(u8),
    #[error("entry's compatibility key of {0} bytes is longer than {MAX_COMPAT}")]
    CompatTooLong(usize),
    #[error("entry length {len} does not match its compatibility key ({compat} bytes)")]
    Length { len: usize, compat: usize },
    #[error("utilisation {0}% is above 100%")]
    Utilisation(u8),
}

impl Entry {
    /// The entry's bytes. The compatibility key is cut to [`MAX_COMPAT`] bytes
    /// ([`crate::ViewHandle::publish`] refuses longer ones before this).
    pub fn encode(&self) -> Vec<u8> {
        let s = &self.state;
        let compat = &s.compat[..s.compat.len().min(MAX_COMPAT)];
        let mut out = Vec::with_capacity(FIXED_LEN + compat.len());
        out.extend_from_slice(&self.node.get().to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&s.load.to_be_bytes());
        out.extend_from_slice(&s.speed.to_be_bytes());
        out.extend_from_slice(&s.milli_cpus.to_be_bytes());
        out.extend_from_slice(&s.mem_total.to_be_bytes());
        out.extend_from_slice(&s.mem_free.to_be_bytes());
        out.push(s.utilisation_pct.min(100));
        out.push(s.status.bits());
        out.push(compat.len() as u8);
        out.extend_from_slice(compat);
        out
    }

    /// Reads an entry that fills `bytes` exactly.
    pub fn decode(bytes: &[u8]) -> Result<Entry, EntryError> {
        let fixed: &[u8; FIXED_LEN] = bytes
            .get(..FIXED_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(EntryError::Short(bytes.len()))?;
        let u16_at = |at: usize| u16::from_be_bytes([fixed[at], fixed[at + 1]]);
        let u32_at = |at: usize| {
            u32::from_be_bytes(
                fixed[at..at + 4]
                    .try_into()
                    .expect("4 bytes in the fixed part"),
            )
        };
        let u64_at = |at: usize| {
            u64::from_be_bytes(
                fixed[at..at + 8]
                    .try_into()
                    .expect("8 bytes in the fixed part"),
            )
        };
        let node = NodeId::new(u16_at(0)).ok_or(EntryError::NodeZero)?;
        let utilisation_pct = fixed[46];
        if utilisation_pct > 100 {
            return Err(EntryError::Utilisation(utilisation_pct));
        }
        let status = Status::from_bits(fixed[47]).ok_or(EntryError::Status(fixed[47]))?;
        let compat_len = usize::from(fixed[48]);
        if compat_len > MAX_COMPAT {
            return Err(EntryError::CompatTooLong(compat_len));
        }
        if bytes.len() != FIXED_LEN + compat_len {
            return Err(EntryError::Length {
                len: bytes.len(),
                compat: compat_len,
            });
        }
        Ok(Entry {
            node,
            generation: u64_at(2),
            seq: u64_at(10),
            state: NodeState {
                load: u32_at(18),
                speed: u32_at(22),
                milli_cpus: u32_at(26),
                mem_total: u64_at(30),
                mem_free: u64_at(38),
                utilisation_pct,
                status,
                compat: bytes[FIXED_LEN..].to_vec(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Entry {
        Entry {
            node: NodeId::new(3).unwrap(),
            generation: 0x0102_0304_0506_0708,
            seq: 42,
            state: NodeState {
                load: 250,
                speed: 10_000,
                milli_cpus: 1500,
                mem_total: 8 << 30,
                mem_free: 3 << 30,
                utilisation_pct: 87,
                status: Status {
                    lstay: true,
                    quiet: true,
                    ..Status::default()
                },
                compat: vec![0xab; 32],
            },
        }
    }

    #[test]
    fn round_trips() {
        let entry = sample();
        let bytes = entry.encode();
        assert_eq!(bytes.len(), FIXED_LEN + 32);
        assert_eq!(Entry::decode(&bytes), Ok(entry));
    }

    #[test]
    fn every_status_flag_round_trips_alone() {
        for bit in 0..5 {
            let status = Status::from_bits(1 << bit).unwrap();
            assert_eq!(status.bits(), 1 << bit);
        }
        assert_eq!(Status::from_bits(0x20), None);
    }

    #[test]
    fn truncated_entries_are_refused_at_every_length() {
        let bytes = sample().encode();
        for len in 0..bytes.len() {
            assert!(Entry::decode(&bytes[..len]).is_err(), "length {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert!(matches!(
            Entry::decode(&long),
            Err(EntryError::Length { .. })
        ));
    }

    #[test]
    fn bad_fields_are_refused() {
        let bytes = sample().encode();
        let with = |at: usize, value: u8| {
            let mut b = bytes.clone();
            b[at] = value;
            Entry::decode(&b)
        };
        let mut zero = bytes.clone();
        zero[..2].fill(0);
        assert_eq!(Entry::decode(&zero), Err(EntryError::NodeZero));
        assert_eq!(with(46, 101), Err(EntryError::Utilisation(101)));
        assert_eq!(with(47, 0x40), Err(EntryError::Status(0x40)));
        assert_eq!(with(48, 65), Err(EntryError::CompatTooLong(65)));
    }

    #[test]
    fn junk_never_panics() {
        // A cheap stand-in for a property test: every byte value at every offset of a valid
        // entry, and a spread of lengths of one repeated byte.
        let bytes = sample().encode();
        for at in 0..bytes.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] = value;
                let _ = Entry::decode(&b);
            }
        }
        for len in 0..200 {
            let _ = Entry::decode(&vec![0xff; len]);
        }
    }
}
