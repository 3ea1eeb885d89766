//! How many connections each kind of client may hold, so that no user, and no stranger on
//! the network, can take every file descriptor of the daemon and stop it serving the others.
//!
//! Every connection costs the daemon one descriptor. At start the daemon raises its soft
//! RLIMIT_NOFILE to the hard limit; of that, less [`OWN_FDS`] for its own files, it grants:
//!
//! * ordinary users, together, at most three quarters, and each user at most `per_user`
//!   (`mosixd --max-user-connections`);
//! * peers (other nodes' daemons, and anyone on the network until the handshake unmasks them),
//!   together, at most an eighth, and each address at most [`PER_ADDRESS`];
//! * root, whatever is left.
//!
//! So whatever the users hold, an eighth stays for peers and another for root; whatever the
//! network sends, peers cannot crowd out root or the users. Nothing here does I/O: the accept
//! loops ask [`Limits::admit`] and keep the [`Ticket`] for as long as the connection lives.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

/// Descriptors the daemon keeps for itself: runtime, listeners, log, and the pipes and
/// sockets of guests being started. It holds about 20; the rest is margin.
const OWN_FDS: usize = 64;

/// Connections one address may have open at once. A node's daemon opens one per session and
/// closes it once the session is handed over, within milliseconds; 64 lets a node start that
/// many moves at the same instant, and keeps a host without the key from holding more than 64
/// descriptors for the handshake timeout.
const PER_ADDRESS: usize = 64;

/// Who holds a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Holder {
    /// A local process running as root.
    Root,
    /// A local process running as this ordinary uid.
    User(u32),
    /// A TCP connection from this address.
    Peer(IpAddr),
}

impl Holder {
    /// The holder of a control connection from `uid`.
    pub fn local(uid: u32) -> Holder {
        if uid == 0 {
            Holder::Root
        } else {
            Holder::User(uid)
        }
    }
}

/// Why a connection was turned away. The texts are sent to refused local clients verbatim.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum Refusal {
    #[error("uid {uid} has {limit} connections to mosixd open, the most one user may have")]
    User { uid: u32, limit: usize },
    #[error(
        "ordinary users have {limit} connections to mosixd open, the most they may have together"
    )]
    Users { limit: usize },
    #[error("{addr} has {limit} connections open, the most one address may have")]
    Address { addr: IpAddr, limit: usize },
    #[error("peers have {limit} connections open, the most they may have together")]
    Peers { limit: usize },
    #[error("mosixd has {limit} connections open, the most its file descriptor limit allows")]
    Full { limit: usize },
}

/// The connection budget of one daemon.
#[derive(Debug)]
pub(crate) struct Limits {
    /// Connections of all kinds together.
    capacity: usize,
    /// Connections of ordinary users together.
    users: usize,
    /// Connections of one ordinary user.
    per_user: usize,
    /// TCP connections together.
    peers: usize,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    open: usize,
    users: usize,
    peers: usize,
    by_uid: HashMap<u32, usize>,
    by_addr: HashMap<IpAddr, usize>,
}

/// One admitted connection; dropping it gives its place back.
#[derive(Debug)]
pub(crate) struct Ticket {
    limits: Arc<Limits>,
    holder: Holder,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.limits.release(self.holder);
    }
}

impl Limits {
    /// The budget of a daemon that may open `nofile` descriptors, letting each ordinary user
    /// hold `per_user` connections.
    pub fn new(nofile: u64, per_user: usize) -> Limits {
        let capacity = usize::try_from(nofile)
            .unwrap_or(usize::MAX)
            .saturating_sub(OWN_FDS);
        Limits {
            capacity,
            users: capacity / 4 * 3,
            per_user,
            peers: capacity / 8,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// Connections of all kinds the daemon takes at once.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Admit a connection of `holder`, or say why not.
    pub fn admit(self: &Arc<Self>, holder: Holder) -> Result<Ticket, Refusal> {
        let mut counts = self.counts();
        if counts.open >= self.capacity {
            return Err(Refusal::Full {
                limit: self.capacity,
            });
        }
        match holder {
            Holder::Root => {}
            Holder::User(uid) => {
                if count(&counts.by_uid, &uid) >= self.per_user {
                    return Err(Refusal::User {
                        uid,
                        limit: self.per_user,
                    });
                }
                if counts.users >= self.users {
                    return Err(Refusal::Users { limit: self.users });
                }
                counts.users += 1;
                *counts.by_uid.entry(uid).or_default() += 1;
            }
            Holder::Peer(addr) => {
                if count(&counts.by_addr, &addr) >= PER_ADDRESS {
                    return Err(Refusal::Address {
                        addr,
                        limit: PER_ADDRESS,
                    });
                }
                if counts.peers >= self.peers {
                    return Err(Refusal::Peers { limit: self.peers });
                }
                counts.peers += 1;
                *counts.by_addr.entry(addr).or_default() += 1;
            }
        }
        counts.open += 1;
        Ok(Ticket {
            limits: self.clone(),
            holder,
        })
    }

    fn release(&self, holder: Holder) {
        let mut counts = self.counts();
        counts.open -= 1;
        match holder {
            Holder::Root => {}
            Holder::User(uid) => {
                counts.users -= 1;
                decrement(&mut counts.by_uid, uid);
            }
            Holder::Peer(addr) => {
                counts.peers -= 1;
                decrement(&mut counts.by_addr, addr);
            }
        }
    }

    /// The counts. Every update is one step under the lock, so a poisoned lock still holds
    /// consistent counts.
    fn counts(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn count<K: Eq + Hash>(map: &HashMap<K, usize>, key: &K) -> usize {
    map.get(key).copied().unwrap_or(0)
}

/// One fewer for `key`; keys at zero are forgotten, so the maps hold only current holders.
fn decrement<K: Eq + Hash>(map: &mut HashMap<K, usize>, key: K) {
    if let Some(n) = map.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            map.remove(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A budget of 80 connections: users 60 together, peers 10 together.
    fn limits(per_user: usize) -> Arc<Limits> {
        Arc::new(Limits::new((OWN_FDS + 80) as u64, per_user))
    }

    fn admit_n(limits: &Arc<Limits>, holder: Holder, n: usize) -> Vec<Ticket> {
        (0..n)
            .map(|i| {
                limits
                    .admit(holder)
                    .unwrap_or_else(|e| panic!("{holder:?} #{i}: {e}"))
            })
            .collect()
    }

    #[test]
    fn one_user_cannot_pass_their_own_limit() {
        let limits = limits(5);
        let held = admit_n(&limits, Holder::User(1000), 5);
        assert_eq!(
            limits.admit(Holder::User(1000)).unwrap_err(),
            Refusal::User {
                uid: 1000,
                limit: 5
            }
        );
        // Others are not affected, and a closed connection frees a place.
        let _other = admit_n(&limits, Holder::User(1001), 5);
        drop(held);
        let _again = admit_n(&limits, Holder::User(1000), 5);
        assert_eq!(
            Refusal::User {
                uid: 1000,
                limit: 5
            }
            .to_string(),
            "uid 1000 has 5 connections to mosixd open, the most one user may have"
        );
    }

    #[test]
    fn users_together_leave_room_for_root_and_peers() {
        let limits = limits(1000);
        let _a = admit_n(&limits, Holder::User(1), 30);
        let _b = admit_n(&limits, Holder::User(2), 30);
        assert_eq!(
            limits.admit(Holder::User(3)).unwrap_err(),
            Refusal::Users { limit: 60 }
        );
        let _peers = admit_n(&limits, Holder::Peer([10, 0, 0, 2].into()), 10);
        let _root = admit_n(&limits, Holder::Root, 10);
        assert_eq!(
            limits.admit(Holder::Root).unwrap_err(),
            Refusal::Full { limit: 80 }
        );
    }

    #[test]
    fn peers_are_held_per_address_and_together() {
        let limits = Arc::new(Limits::new((OWN_FDS + 8 * 200) as u64, 10));
        let one: IpAddr = [10, 0, 0, 2].into();
        let _held = admit_n(&limits, Holder::Peer(one), PER_ADDRESS);
        assert_eq!(
            limits.admit(Holder::Peer(one)).unwrap_err(),
            Refusal::Address {
                addr: one,
                limit: PER_ADDRESS
            }
        );
        let _more: Vec<Ticket> = (3..=4)
            .flat_map(|last| admit_n(&limits, Holder::Peer([10, 0, 0, last].into()), PER_ADDRESS))
            .collect();
        let five: IpAddr = [10, 0, 0, 5].into();
        let _rest = admit_n(&limits, Holder::Peer(five), 200 - 3 * PER_ADDRESS);
        assert_eq!(
            limits.admit(Holder::Peer(five)).unwrap_err(),
            Refusal::Peers { limit: 200 }
        );
        // Root and users still get in.
        let _root = admit_n(&limits, Holder::Root, 3);
        let _user = admit_n(&limits, Holder::User(1000), 3);
    }

    #[test]
    fn root_has_no_per_user_limit_and_uid_0_is_root() {
        let limits = limits(1);
        let _root = admit_n(&limits, Holder::local(0), 70);
        assert_eq!(Holder::local(0), Holder::Root);
        assert_eq!(Holder::local(65534), Holder::User(65534));
    }

    #[test]
    fn released_tickets_leave_nothing_counted() {
        let limits = limits(3);
        drop(admit_n(&limits, Holder::User(7), 3));
        drop(admit_n(&limits, Holder::Peer([10, 0, 0, 9].into()), 3));
        drop(admit_n(&limits, Holder::Root, 3));
        let counts = limits.counts();
        assert_eq!((counts.open, counts.users, counts.peers), (0, 0, 0));
        assert!(counts.by_uid.is_empty() && counts.by_addr.is_empty());
    }

    #[test]
    fn a_tiny_descriptor_limit_admits_nothing_rather_than_failing() {
        let limits = Arc::new(Limits::new(10, 5));
        assert_eq!(limits.capacity(), 0);
        assert_eq!(
            limits.admit(Holder::Root).unwrap_err(),
            Refusal::Full { limit: 0 }
        );
    }
}
