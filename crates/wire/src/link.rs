//! The first message on a node-to-node link.

use serde::{Deserialize, Serialize};

/// Version of the link protocol spoken after the handshake. A daemon drops a peer whose
/// [`LinkHello::version`] differs.
pub const LINK_VERSION: u32 = 3;

/// Sent by the connecting daemon as the first encrypted message on a link; the accepting
/// daemon answers a [`Purpose::Ping`] with its own hello.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkHello {
    /// [`LINK_VERSION`] of the sender.
    pub version: u32,
    /// The sender's node number.
    pub from_node: u16,
    /// What the link is for.
    pub purpose: Purpose,
}

impl LinkHello {
    /// A hello of the current version.
    pub fn new(from_node: u16, purpose: Purpose) -> Self {
        Self {
            version: LINK_VERSION,
            from_node,
            purpose,
        }
    }

    /// Encode as JSON (one link message; the link keeps message boundaries).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a LinkHello always serialises")
    }

    /// Decode one link message.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Why a daemon opened a link.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Purpose {
    /// Start a guest with these credentials; afterwards the link carries the session's bytes.
    Session {
        /// Real, effective and saved uid of the guest.
        uid: u32,
        /// Real, effective and saved gid of the guest.
        gid: u32,
        /// Supplementary groups of the guest.
        groups: Vec<u32>,
    },
    /// Are you there? The peer answers with its own hello and closes.
    Ping,
    /// The sender hosts process `pid` of the receiver and sends it away: home (`mosctl
    /// expel`, or the sender's balancer), or on to node `to` (the sender's balancer). The
    /// receiver orders the move only if its table says the process runs at the sender, and
    /// answers with one [`Recalled`] once the move has ended.
    Recall {
        /// The process, by its PID at home (the receiver).
        pid: i32,
        /// Where it should go; `None`: home.
        #[serde(default)]
        to: Option<u16>,
        /// The share of its time it waited at the sender for calls forwarded home, per mille,
        /// when the sender's balancer sends it (`None`: `expel`). Home keeps the estimate,
        /// so that a process sent home for its calls is not sent out again at once.
        #[serde(default)]
        forwarded_per_mille: Option<u16>,
    },
    /// Which processes of the sender run at the receiver, and what they use there (for
    /// `mosps`)? Answered with one [`HostedHere`].
    Hosted,
    /// MFS: the sender's processes reach the receiver's files. Afterwards the link carries
    /// MFS calls and replies (rmosix-mfs's protocol), each with its caller's ids, for as
    /// long as the sender keeps it open.
    Files,
}

/// The answer to a [`Purpose::Hosted`]: the receiver's guests whose home is the sender.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedHere {
    /// One entry per process.
    pub processes: Vec<crate::HostedProcess>,
}

impl HostedHere {
    /// Encode as JSON (one link message).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a HostedHere always serialises")
    }

    /// Decode one link message.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// The answer to a [`Purpose::Recall`]: the outcome of the move home, as the home daemon's
/// supervisor reported it, or why no move was ordered.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recalled {
    /// The process is where it was sent.
    Arrived,
    /// The move failed; the process runs on where it was unless the error says otherwise.
    Failed(crate::MoveError),
    /// No move was made, for this reason: the process does not run at the sender, its
    /// supervisor has gone, or it did not come home in time.
    Refused(String),
}

impl Recalled {
    /// Encode as JSON (one link message).
    pub fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a Recalled always serialises")
    }

    /// Decode one link message.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hellos_round_trip() {
        for purpose in [
            Purpose::Ping,
            Purpose::Recall {
                pid: 4711,
                to: None,
                forwarded_per_mille: None,
            },
            Purpose::Recall {
                pid: 4711,
                to: Some(3),
                forwarded_per_mille: Some(250),
            },
            Purpose::Hosted,
            Purpose::Files,
            Purpose::Session {
                uid: 1000,
                gid: 100,
                groups: vec![4, 27, 1000],
            },
        ] {
            let hello = LinkHello::new(7, purpose);
            assert_eq!(LinkHello::decode(&hello.encode()).unwrap(), hello);
        }
    }

    #[test]
    fn recall_answers_round_trip() {
        for answer in [
            Recalled::Arrived,
            Recalled::Failed(crate::MoveError::Busy),
            Recalled::Refused("process 4711 does not run at node 2".into()),
        ] {
            assert_eq!(Recalled::decode(&answer.encode()).unwrap(), answer);
        }
        assert!(Recalled::decode(b"{\"home\":1}").is_err());
    }

    #[test]
    fn junk_and_truncated_hellos_are_refused() {
        let bytes = LinkHello::new(1, Purpose::Ping).encode();
        for cut in 0..bytes.len() {
            assert!(LinkHello::decode(&bytes[..cut]).is_err(), "cut {cut}");
        }
        assert!(LinkHello::decode(b"\xff\x00garbage").is_err());
        assert!(LinkHello::decode(br#"{"version":1,"from_node":70000,"purpose":"ping"}"#).is_err());
    }
}
