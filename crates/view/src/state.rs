//! What a node tells the others about itself: [`NodeState`], and how it travels.
//!
//! A state is cut in two. The *figures* (load, processes ready to leave, free memory,
//! utilisation) change every
//! second and travel in every entry, which is small; the *profile* (speed, CPUs, total
//! memory, modes, compatibility key) changes rarely and travels only to a node that asks
//! for it, named in entries by a 2-byte tag (see `board`). Big endian, as all numbers here;
//! a varint is LEB128 (7 bits a byte, low first, high bit set on all bytes but the last).
//!
//! ```text
//! entry:   node id (2) · age (1) · profile tag (2) · load (varint) ·
//!          processes ready to leave (varint) · free memory, MiB (varint) ·
//!          utilisation, percent (1)
//! profile: speed (4) · milli-CPUs (4) · total memory, bytes (8) · status flags (1) ·
//!          length n of the compatibility key (1) · compatibility key (n)
//! ```
//!
//! - age: how old the figures are as the sender knows them (age when it received them plus
//!   the time it held them), in [`AGE_UNIT`]s, rounded up so that an entry passed back and
//!   forth only ever ages; no clock is compared, so nodes need no clock sync. Entries older
//!   than [`MAX_AGE`] are not passed on.
//! - load in MOSIX units (100 = one CPU-busy process on a standard CPU), speed in MOSIX
//!   units (10000 = a standard CPU), CPUs in thousandths.
//! - free memory travels in whole MiB, rounded down: a node sees the others' free memory to
//!   the MiB, its own to the byte.
//! - status flags: 1 stay, 2 lstay, 4 block, 8 quiet, 16 expel.
//!
//! Entries from other versions are told apart by the datagram's version byte (see `seal`),
//! not here.

use std::time::Duration;

use rmosix_config::NodeId;

/// The longest compatibility key a node may publish. A digest of the node's `KernelFacts`
/// (SHA-256: 32 bytes) fits twice; a bound keeps an entry small enough that a datagram
/// carries a dozen of them.
pub const MAX_COMPAT: usize = 64;

/// The unit of an entry's age on the wire.
pub(crate) const AGE_UNIT: Duration = Duration::from_millis(20);

/// The oldest age an entry can say (255 units, 5.1 s). Older figures are not passed on: a
/// live node's own entry is refreshed every gossip step, so anything this old is of a node
/// that stopped, and each node ages the copy it holds by itself.
pub(crate) const MAX_AGE: Duration = AGE_UNIT.saturating_mul(255);

/// Bytes of free memory in a unit of the wire's figure.
const MIB: u64 = 1 << 20;

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
    /// How many of its processes could leave by balance now (unlocked, CPU-bound, past their
    /// residence time), as its balancer counted them at its last round. Flood prevention
    /// deals a target's room among the nodes that could use it.
    pub ready: u32,
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

/// The part of a state that changes every second: it travels in every entry.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(crate) struct Figures {
    pub load: u32,
    pub ready: u32,
    pub mem_free: u64,
    pub utilisation_pct: u8,
}

/// The part of a state that changes rarely: it travels only to nodes that ask for it.
#[derive(Clone, PartialEq, Eq, Hash, Debug, Default)]
pub(crate) struct Profile {
    pub speed: u32,
    pub milli_cpus: u32,
    pub mem_total: u64,
    pub status: Status,
    pub compat: Vec<u8>,
}

impl NodeState {
    /// The state cut in two; see the module doc.
    pub(crate) fn split(&self) -> (Figures, Profile) {
        (
            Figures {
                load: self.load,
                ready: self.ready,
                mem_free: self.mem_free,
                utilisation_pct: self.utilisation_pct,
            },
            Profile {
                speed: self.speed,
                milli_cpus: self.milli_cpus,
                mem_total: self.mem_total,
                status: self.status,
                compat: self.compat.clone(),
            },
        )
    }

    /// The state put together again.
    pub(crate) fn join(figures: Figures, profile: &Profile) -> NodeState {
        NodeState {
            load: figures.load,
            ready: figures.ready,
            speed: profile.speed,
            milli_cpus: profile.milli_cpus,
            mem_total: profile.mem_total,
            mem_free: figures.mem_free,
            utilisation_pct: figures.utilisation_pct,
            status: profile.status,
            compat: profile.compat.clone(),
        }
    }
}

/// One gossiped entry: whose, how old, which profile, and the figures.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Entry {
    pub node: NodeId,
    pub age: Duration,
    pub tag: u16,
    pub figures: Figures,
}

/// Why an entry, a profile or a message could not be read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum EntryError {
    #[error("ends early")]
    Short,
    #[error("a varint longer than its type")]
    Varint,
    #[error("entry names node 0")]
    NodeZero,
    #[error("entry has unknown status bits {0:#04x}")]
    Status(u8),
    #[error("compatibility key of {0} bytes is longer than {MAX_COMPAT}")]
    CompatTooLong(usize),
    #[error("utilisation {0}% is above 100%")]
    Utilisation(u8),
    #[error("{0} bytes left over")]
    Trailing(usize),
    #[error("unknown message kind {0}")]
    Kind(u8),
}

/// Reads the layouts above from the front of a byte slice.
pub(crate) struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        if self.bytes.len() < n {
            return Err(EntryError::Short);
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    pub fn u8(&mut self) -> Result<u8, EntryError> {
        Ok(self.take(1)?[0])
    }

    pub fn u16(&mut self) -> Result<u16, EntryError> {
        Ok(u16::from_be_bytes(
            self.take(2)?.try_into().expect("2 bytes"),
        ))
    }

    fn u32(&mut self) -> Result<u32, EntryError> {
        Ok(u32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> Result<u64, EntryError> {
        Ok(u64::from_be_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn varint(&mut self) -> Result<u64, EntryError> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.u8()?;
            let bits = u64::from(byte & 0x7f);
            if shift == 63 && bits > 1 {
                return Err(EntryError::Varint);
            }
            value |= bits << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(EntryError::Varint)
    }

    pub fn node(&mut self) -> Result<NodeId, EntryError> {
        NodeId::new(self.u16()?).ok_or(EntryError::NodeZero)
    }

    /// Fails if anything is left.
    pub fn finish(self) -> Result<(), EntryError> {
        match self.bytes.len() {
            0 => Ok(()),
            n => Err(EntryError::Trailing(n)),
        }
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// An age in [`AGE_UNIT`]s, rounded up, at most 255.
fn age_units(age: Duration) -> u8 {
    let units = age.as_nanos().div_ceil(AGE_UNIT.as_nanos());
    u8::try_from(units).unwrap_or(u8::MAX)
}

impl Entry {
    /// Appends the entry's bytes to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.node.get().to_be_bytes());
        out.push(age_units(self.age));
        out.extend_from_slice(&self.tag.to_be_bytes());
        put_varint(out, u64::from(self.figures.load));
        put_varint(out, u64::from(self.figures.ready));
        put_varint(out, self.figures.mem_free / MIB);
        out.push(self.figures.utilisation_pct.min(100));
    }

    pub fn decode(reader: &mut Reader<'_>) -> Result<Entry, EntryError> {
        let node = reader.node()?;
        let age = AGE_UNIT * u32::from(reader.u8()?);
        let tag = reader.u16()?;
        let load = u32::try_from(reader.varint()?).map_err(|_| EntryError::Varint)?;
        let ready = u32::try_from(reader.varint()?).map_err(|_| EntryError::Varint)?;
        let mem_free = reader.varint()?.saturating_mul(MIB);
        let utilisation_pct = reader.u8()?;
        if utilisation_pct > 100 {
            return Err(EntryError::Utilisation(utilisation_pct));
        }
        Ok(Entry {
            node,
            age,
            tag,
            figures: Figures {
                load,
                ready,
                mem_free,
                utilisation_pct,
            },
        })
    }
}

impl Profile {
    /// Appends the profile's bytes to `out`. The compatibility key is cut to [`MAX_COMPAT`]
    /// bytes ([`crate::ViewHandle::publish`] refuses longer ones before this).
    pub fn encode(&self, out: &mut Vec<u8>) {
        let compat = &self.compat[..self.compat.len().min(MAX_COMPAT)];
        out.extend_from_slice(&self.speed.to_be_bytes());
        out.extend_from_slice(&self.milli_cpus.to_be_bytes());
        out.extend_from_slice(&self.mem_total.to_be_bytes());
        out.push(self.status.bits());
        out.push(compat.len() as u8);
        out.extend_from_slice(compat);
    }

    pub fn decode(reader: &mut Reader<'_>) -> Result<Profile, EntryError> {
        let speed = reader.u32()?;
        let milli_cpus = reader.u32()?;
        let mem_total = reader.u64()?;
        let bits = reader.u8()?;
        let status = Status::from_bits(bits).ok_or(EntryError::Status(bits))?;
        let len = usize::from(reader.u8()?);
        if len > MAX_COMPAT {
            return Err(EntryError::CompatTooLong(len));
        }
        Ok(Profile {
            speed,
            milli_cpus,
            mem_total,
            status,
            compat: reader.take(len)?.to_vec(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Entry, Profile) {
        let state = NodeState {
            load: 250,
            ready: 3,
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
        };
        let (figures, profile) = state.split();
        assert_eq!(NodeState::join(figures, &profile), state);
        let entry = Entry {
            node: NodeId::new(3).unwrap(),
            age: AGE_UNIT * 7,
            tag: 0xbeef,
            figures,
        };
        (entry, profile)
    }

    fn bytes() -> Vec<u8> {
        let (entry, profile) = sample();
        let mut out = Vec::new();
        entry.encode(&mut out);
        profile.encode(&mut out);
        out
    }

    fn decode(bytes: &[u8]) -> Result<(Entry, Profile), EntryError> {
        let mut reader = Reader::new(bytes);
        let entry = Entry::decode(&mut reader)?;
        let profile = Profile::decode(&mut reader)?;
        reader.finish()?;
        Ok((entry, profile))
    }

    #[test]
    fn round_trips_and_an_entry_is_small() {
        let (entry, _) = sample();
        let mut out = Vec::new();
        entry.encode(&mut out);
        // node 2, age 1, tag 2, load 2, ready 1, 3072 MiB 2, utilisation 1.
        assert_eq!(out.len(), 11);
        assert_eq!(decode(&bytes()), Ok(sample()));
    }

    #[test]
    fn ages_round_up_and_saturate() {
        assert_eq!(age_units(Duration::ZERO), 0);
        assert_eq!(age_units(Duration::from_nanos(1)), 1);
        assert_eq!(age_units(AGE_UNIT), 1);
        assert_eq!(age_units(AGE_UNIT + Duration::from_nanos(1)), 2);
        assert_eq!(age_units(MAX_AGE), 255);
        assert_eq!(age_units(Duration::from_secs(3600)), 255);
    }

    #[test]
    fn varints_round_trip_at_their_edges() {
        for value in [
            0,
            1,
            0x7f,
            0x80,
            0x3fff,
            0x4000,
            u64::from(u32::MAX),
            u64::MAX,
        ] {
            let mut out = Vec::new();
            put_varint(&mut out, value);
            let mut reader = Reader::new(&out);
            assert_eq!(reader.varint(), Ok(value), "{value:#x}");
            reader.finish().unwrap();
        }
        let too_long = [0xff; 11];
        assert_eq!(Reader::new(&too_long).varint(), Err(EntryError::Varint));
    }

    #[test]
    fn free_memory_travels_in_whole_mib() {
        let (mut entry, _) = sample();
        entry.figures.mem_free = (5 << 20) + 12345;
        let mut out = Vec::new();
        entry.encode(&mut out);
        let back = Entry::decode(&mut Reader::new(&out)).unwrap();
        assert_eq!(back.figures.mem_free, 5 << 20);
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
    fn truncated_and_long_ones_are_refused_at_every_length() {
        let bytes = bytes();
        for len in 0..bytes.len() {
            assert!(decode(&bytes[..len]).is_err(), "length {len}");
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(decode(&long), Err(EntryError::Trailing(1)));
    }

    #[test]
    fn bad_fields_are_refused() {
        let bytes = bytes();
        let with = |at: usize, value: u8| {
            let mut b = bytes.clone();
            b[at] = value;
            decode(&b)
        };
        let mut zero = bytes.clone();
        zero[..2].fill(0);
        assert_eq!(decode(&zero), Err(EntryError::NodeZero));
        // The entry is 11 bytes: utilisation is its last; the profile's status follows 16
        // bytes of speed, CPUs and memory, then the key's length.
        assert_eq!(with(10, 101), Err(EntryError::Utilisation(101)));
        assert_eq!(with(11 + 16, 0x40), Err(EntryError::Status(0x40)));
        assert_eq!(with(11 + 17, 65), Err(EntryError::CompatTooLong(65)));
    }

    #[test]
    fn junk_never_panics() {
        // A cheap stand-in for a property test: every byte value at every offset of a valid
        // entry and profile, and a spread of lengths of one repeated byte.
        let bytes = bytes();
        for at in 0..bytes.len() {
            for value in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] = value;
                let _ = decode(&b);
            }
        }
        for len in 0..200 {
            let _ = decode(&vec![0xff; len]);
        }
    }
}
