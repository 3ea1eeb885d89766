//! A signal as Linux describes it to its receiver: the 128 bytes of a `siginfo_t`, carried
//! whole so that a signal pending when a process moves (or relayed to it) arrives with its
//! sender, code and value (a POSIX timer's `si_value`, say).

use serde::{Deserialize, Serialize};

/// Bytes of a `siginfo_t` on Linux.
pub const SIGINFO_LEN: usize = 128;

/// One signal with its `siginfo_t`, as the kernel lays it out (the number at byte 0, the
/// code at byte 8). Bytes from a peer are checked with [`SigInfo::is_valid`] before use.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigInfo(Vec<u8>);

impl std::fmt::Debug for SigInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SigInfo(sig {}, code {})", self.signo(), self.code())
    }
}

impl SigInfo {
    /// The code kill(2) gives a signal (SI_USER).
    const SI_USER: i32 = 0;

    /// From the bytes of a `siginfo_t`.
    pub fn from_bytes(bytes: Vec<u8>) -> SigInfo {
        SigInfo(bytes)
    }

    /// A signal of which only the number is known, described as kill(2) from nobody would
    /// describe it.
    pub fn bare(sig: i32) -> SigInfo {
        let mut bytes = vec![0; SIGINFO_LEN];
        bytes[..4].copy_from_slice(&sig.to_le_bytes());
        bytes[8..12].copy_from_slice(&Self::SI_USER.to_le_bytes());
        SigInfo(bytes)
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether the bytes describe a signal: a whole `siginfo_t` with a signal number.
    pub fn is_valid(&self) -> bool {
        self.0.len() == SIGINFO_LEN && (1..=64).contains(&self.signo())
    }

    /// The signal number (`si_signo`).
    pub fn signo(&self) -> i32 {
        self.word(0)
    }

    /// Its code (`si_code`).
    pub fn code(&self) -> i32 {
        self.word(8)
    }

    fn word(&self, at: usize) -> i32 {
        self.0
            .get(at..at + 4)
            .map_or(0, |b| i32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_signal_is_a_whole_valid_siginfo() {
        let info = SigInfo::bare(10);
        assert!(info.is_valid());
        assert_eq!(
            (info.signo(), info.code(), info.bytes().len()),
            (10, 0, SIGINFO_LEN)
        );
        assert!(!SigInfo::from_bytes(vec![1, 0, 0]).is_valid());
        assert!(!SigInfo::bare(0).is_valid() && !SigInfo::bare(65).is_valid());
        let json = serde_json::to_string(&info).unwrap();
        assert_eq!(serde_json::from_str::<SigInfo>(&json).unwrap(), info);
    }
}
