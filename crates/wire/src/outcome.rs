//! Why a move did not happen: a typed value carried from the engine through the daemon to
//! `migrate` (and, later, to the balancer, which acts on the kind of failure rather than on
//! its text). Each message reads well after "cannot move 4242 to node 3: ".

use serde::{Deserialize, Serialize};

/// What keeps a process from moving at all, found before it is touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum NotMovable {
    /// More than one thread.
    #[error("it has {0} threads")]
    Threads(u32),
    /// A shared writable mapping would need coherent shared memory across nodes.
    #[error("it has a shared writable mapping ({0})")]
    SharedWritable(String),
    /// System V shared memory.
    #[error("it is attached to System V shared memory")]
    SysvShm,
    /// Locked memory cannot be promised on another node.
    #[error("it has locked memory (mlock)")]
    Locked,
    /// A real-time scheduling policy.
    #[error("it uses real-time scheduling")]
    RealTime,
    /// A device mapping.
    #[error("it maps a device ({0})")]
    Device(String),
    /// A mapping whose pages only this node's kernel can back (a packet socket's ring,
    /// io_uring's rings, a perf buffer, I/O or PFN-mapped memory): elsewhere it would be a
    /// dead copy.
    #[error("it maps memory only this node's kernel can back ({0})")]
    KernelMapping(String),
    /// A seccomp filter or strict mode of its own, which the kernel lets no unprivileged
    /// supervisor read to carry along, and which could refuse the calls a move injects.
    #[error("it has a seccomp policy of its own (mode {0})")]
    Seccomp(u32),
    /// It shares its address space with another process of the job: a vfork child that has
    /// not yet exec'd or exited, its parent, or a process cloned with CLONE_VM.
    #[error(
        "it shares its memory with process {0} (vfork or CLONE_VM) until one of them execs or exits"
    )]
    SharesMemory(i32),
    /// It did not come to a stop within the bound (seconds): a parent in vfork waits for its
    /// child to exec or exit, and a few calls cannot be interrupted. It runs on where it was.
    #[error(
        "it did not come to a stop within {0} s (a vfork parent waits for its child to exec or exit)"
    )]
    NoStop(u64),
}

/// Why a move failed. Every variant but [`MoveError::Lost`] leaves the process running where
/// it was before the order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(rename_all = "snake_case")]
pub enum MoveError {
    /// The process cannot move; it was not touched.
    #[error(transparent)]
    NotMovable(#[from] NotMovable),
    /// It is already being moved by another order.
    #[error("it is already moving")]
    Busy,
    /// Whoever asked for the move gave up waiting before it started, so it was not made.
    #[error("the order was cancelled before the move started (its caller gave up)")]
    Cancelled,
    /// It ended while it moved.
    #[error("it ended during its move")]
    Ended,
    /// The target node cannot be reached, or has no daemon to take it.
    #[error("node {node} is down ({reason})")]
    TargetDown {
        /// The target.
        node: u16,
        /// What the connection attempt found.
        reason: String,
    },
    /// The target node is blocked (`mosctl block` or `expel`): it takes no new guests.
    #[error("node {node} is blocked")]
    Blocked {
        /// The target.
        node: u16,
    },
    /// The target node answered and will not take the process (an incompatible CPU or kernel,
    /// say).
    #[error("node {node} refused: {reason}")]
    Refused {
        /// The target.
        node: u16,
        /// The target's reason.
        reason: String,
    },
    /// The link to a node broke while the image travelled.
    #[error("the link to node {node} broke: {reason}")]
    LinkBroken {
        /// The node at the far end of the broken link.
        node: u16,
        /// What the link reported.
        reason: String,
    },
    /// The target received the image and could not restore it.
    #[error("restoring it on node {node} failed: {reason}")]
    RestoreFailed {
        /// The target.
        node: u16,
        /// The target's reason.
        reason: String,
    },
    /// Home could not take the process back; it runs on at its remote `node`.
    #[error("home cannot hold it ({reason}); it runs on at node {node}")]
    HomeCannotHold {
        /// Where it runs on.
        node: u16,
        /// Why home could not restore it.
        reason: String,
    },
    /// A process away failed to move on to another node, for `why`; it runs on where it was.
    #[error("{why}; it runs on at node {at}")]
    RunsOn {
        /// Where it runs.
        at: u16,
        /// Why the move on failed.
        why: Box<MoveError>,
    },
    /// Something failed on this node before the image left (freezing or reading the process).
    #[error("{0}")]
    Local(String),
    /// The process was lost with its remote node or link, and its shell was killed.
    #[error("it was lost: {0}")]
    Lost(String),
}

impl MoveError {
    /// Whether the process still runs where it was before the order.
    pub fn process_kept(&self) -> bool {
        !matches!(self, MoveError::Lost(_) | MoveError::Ended)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_after_cannot_move() {
        let threads = MoveError::from(NotMovable::Threads(2));
        assert_eq!(threads.to_string(), "it has 2 threads");
        let refused = MoveError::Refused {
            node: 3,
            reason: "CPU features differ".into(),
        };
        assert_eq!(refused.to_string(), "node 3 refused: CPU features differ");
        assert!(refused.process_kept());
        assert!(!MoveError::Lost("node 2 died".into()).process_kept());
        let blocked = MoveError::Blocked { node: 3 };
        assert_eq!(blocked.to_string(), "node 3 is blocked");
        assert!(blocked.process_kept());
    }

    #[test]
    fn errors_round_trip_as_json() {
        for err in [
            MoveError::NotMovable(NotMovable::Device("/dev/fb0".into())),
            MoveError::NotMovable(NotMovable::SharesMemory(4243)),
            MoveError::NotMovable(NotMovable::NoStop(5)),
            MoveError::Busy,
            MoveError::Cancelled,
            MoveError::Blocked { node: 3 },
            MoveError::TargetDown {
                node: 2,
                reason: "no route to host".into(),
            },
            MoveError::HomeCannotHold {
                node: 4,
                reason: "out of memory".into(),
            },
        ] {
            let json = serde_json::to_string(&err).unwrap();
            assert_eq!(serde_json::from_str::<MoveError>(&json).unwrap(), err);
        }
    }
}
