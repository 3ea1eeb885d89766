//! The view itself: the latest entry of every node of the map, what foca thinks of each
//! node's liveness, and the counters of what was dropped. The engine writes it; the
//! handle reads it.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foca::{BroadcastHandler, Invalidates, State};
use tokio::time::Instant;

use rmosix_config::NodeId;

use crate::state::{Entry, EntryError, NodeState};
use crate::swim::Id;

/// Whether a node answers, as this node's failure detector and the gossip of the others
/// have it.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Liveness {
    /// It answers probes, directly or through others.
    Alive,
    /// A probe went unanswered; it is dead unless it refutes within the suspicion timeout.
    Suspect,
    /// Declared dead (by this node or another), never heard of, or left. Nothing should be
    /// sent there.
    Dead,
}

/// One node of the map as this node sees it ([`crate::ViewHandle::snapshot`]).
#[derive(Clone, PartialEq, Debug)]
pub struct NodeView {
    /// The node.
    pub node: NodeId,
    /// Its latest published state; `None` until one arrived. A dead node keeps its last one.
    pub state: Option<NodeState>,
    /// Whether it answers.
    pub liveness: Liveness,
    /// How long ago this node received that state (zero for its own). MOSIX's "age" of an
    /// entry: it grows while the node is dead or gossip is slow.
    pub age: Option<Duration>,
}

/// What the view dropped, and why, since it started. Counters rather than log lines (the
/// log has one line per reason per window): a stranger can send as many bad datagrams as
/// he likes.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Counters {
    /// Datagrams sent.
    pub sent: u64,
    /// Datagrams taken: well formed, from a node of the map at its address, sealed with the
    /// cluster key, new, and understood.
    pub accepted: u64,
    /// Too short or long, unknown magic or version, or (once opened) not a message foca
    /// understands.
    pub malformed: u64,
    /// From an address that is no node's in the map.
    pub unknown_source: u64,
    /// From one node's address, claiming to be another node.
    pub wrong_sender: u64,
    /// Not sealed with the cluster key, or changed on the way.
    pub bad_seal: u64,
    /// A datagram already taken, or older than the ones taken from its sender.
    pub replayed: u64,
}

/// The newest entry known of a node, and when it came.
#[derive(Clone, Debug)]
struct Known {
    generation: u64,
    seq: u64,
    state: NodeState,
    received: Instant,
}

/// Everything the handle reads; see the module doc.
#[derive(Debug)]
pub(crate) struct Table {
    own: NodeId,
    nodes: BTreeSet<NodeId>,
    entries: HashMap<NodeId, Known>,
    members: HashMap<NodeId, State>,
    pub counters: Counters,
}

/// The table, shared between the engine, foca's broadcast handler and the handle.
pub(crate) type Shared = Arc<Mutex<Table>>;

/// Locks the table. Nothing leaves it half-updated across a panic, so a poisoned lock is
/// used as it is.
pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, Table> {
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Table {
    pub fn new(own: NodeId, nodes: impl IntoIterator<Item = NodeId>) -> Table {
        Table {
            own,
            nodes: nodes.into_iter().collect(),
            entries: HashMap::new(),
            members: HashMap::new(),
            counters: Counters::default(),
        }
    }

    pub fn in_map(&self, node: NodeId) -> bool {
        self.nodes.contains(&node)
    }

    /// A new map: nodes no longer in it leave the view.
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeId>) {
        self.nodes = nodes.into_iter().collect();
        let nodes = &self.nodes;
        self.entries.retain(|node, _| nodes.contains(node));
        self.members.retain(|node, _| nodes.contains(node));
    }

    /// Takes `entry` if it is about a node of the map and newer than what we hold of it.
    /// Returns whether it was taken (and so should be passed on).
    pub fn offer(&mut self, entry: Entry, now: Instant) -> bool {
        if !self.in_map(entry.node) {
            return false;
        }
        if let Some(known) = self.entries.get(&entry.node)
            && (entry.generation, entry.seq) <= (known.generation, known.seq)
        {
            return false;
        }
        self.entries.insert(
            entry.node,
            Known {
                generation: entry.generation,
                seq: entry.seq,
                state: entry.state,
                received: now,
            },
        );
        true
    }

    /// foca's opinion of each member, replacing the previous one.
    pub fn set_members(&mut self, members: impl IntoIterator<Item = (NodeId, State)>) {
        self.members.clear();
        for (node, state) in members {
            if self.nodes.contains(&node) {
                self.members.insert(node, state);
            }
        }
    }

    /// Every node of the map, lowest number first.
    pub fn snapshot(&self, now: Instant) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|&node| {
                let known = self.entries.get(&node);
                let liveness = if node == self.own {
                    Liveness::Alive
                } else {
                    match self.members.get(&node) {
                        Some(State::Alive) => Liveness::Alive,
                        Some(State::Suspect) => Liveness::Suspect,
                        Some(State::Down) | None => Liveness::Dead,
                    }
                };
                NodeView {
                    node,
                    state: known.map(|k| k.state.clone()),
                    liveness,
                    age: known.map(|k| now.saturating_duration_since(k.received)),
                }
            })
            .collect()
    }
}

/// Which entry a broadcast carries, so that foca stops passing on one a newer entry of the
/// same node replaced.
#[derive(Clone, Copy, Debug)]
pub(crate) struct EntryKey {
    node: NodeId,
    generation: u64,
    seq: u64,
}

impl Invalidates for EntryKey {
    fn invalidates(&self, other: &Self) -> bool {
        self.node == other.node && (self.generation, self.seq) >= (other.generation, other.seq)
    }
}

/// foca's custom broadcasts are our entries: it hands each one received to this handler,
/// which keeps it in the table if it is new and tells foca to pass it on.
pub(crate) struct Entries {
    pub shared: Shared,
}

impl BroadcastHandler<Id> for Entries {
    type Key = EntryKey;
    type Error = EntryError;

    fn receive_item(
        &mut self,
        data: &[u8],
        sender: Option<&Id>,
    ) -> Result<Option<EntryKey>, EntryError> {
        let entry = Entry::decode(data)?;
        let key = EntryKey {
            node: entry.node,
            generation: entry.generation,
            seq: entry.seq,
        };
        let mut table = lock(&self.shared);
        if sender.is_none() {
            // Our own entry, added by the engine, which has already put it in the table.
            return Ok(Some(key));
        }
        if entry.node == table.own {
            // Others' word about us is never news.
            return Ok(None);
        }
        Ok(table.offer(entry, Instant::now()).then_some(key))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn entry(n: u16, generation: u64, seq: u64, load: u32) -> Entry {
        Entry {
            node: node(n),
            generation,
            seq,
            state: NodeState {
                load,
                ..NodeState::default()
            },
        }
    }

    #[test]
    fn only_newer_entries_of_map_nodes_are_taken() {
        let now = Instant::now();
        let mut table = Table::new(node(1), [node(1), node(2)]);
        assert!(table.offer(entry(2, 5, 1, 100), now));
        assert!(!table.offer(entry(2, 5, 1, 0), now), "same entry again");
        assert!(!table.offer(entry(2, 4, 99, 0), now), "older generation");
        assert!(table.offer(entry(2, 5, 2, 200), now));
        assert!(table.offer(entry(2, 6, 0, 300), now), "a restart");
        assert!(!table.offer(entry(3, 1, 1, 0), now), "not in the map");
        let view = table.snapshot(now);
        assert_eq!(view.len(), 2);
        assert_eq!(view[1].state.as_ref().unwrap().load, 300);
        assert_eq!(view[1].liveness, Liveness::Dead, "never heard by foca");
        assert_eq!(view[0].liveness, Liveness::Alive, "ourselves");
    }

    #[test]
    fn liveness_follows_foca_and_the_map() {
        let now = Instant::now();
        let mut table = Table::new(node(1), [node(1), node(2), node(3)]);
        table.set_members([
            (node(2), State::Suspect),
            (node(3), State::Alive),
            (node(9), State::Alive),
        ]);
        let view = table.snapshot(now);
        assert_eq!(
            view.iter().map(|v| v.liveness).collect::<Vec<_>>(),
            [Liveness::Alive, Liveness::Suspect, Liveness::Alive]
        );
        table.offer(entry(3, 1, 1, 5), now);
        table.set_nodes([node(1), node(2)]);
        let view = table.snapshot(now);
        assert_eq!(
            view.iter().map(|v| v.node).collect::<Vec<_>>(),
            [node(1), node(2)]
        );
        assert!(!table.offer(entry(3, 1, 2, 5), now));
    }

    #[test]
    fn a_newer_entry_invalidates_older_ones_of_its_node_only() {
        let key = |n, g, s| EntryKey {
            node: node(n),
            generation: g,
            seq: s,
        };
        assert!(key(2, 1, 5).invalidates(&key(2, 1, 4)));
        assert!(key(2, 2, 0).invalidates(&key(2, 1, 4)));
        assert!(!key(2, 1, 3).invalidates(&key(2, 1, 4)));
        assert!(!key(3, 9, 9).invalidates(&key(2, 1, 4)));
    }
}
