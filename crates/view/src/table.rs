//! The view itself: the latest entry of every node of the map, what foca thinks of each
//! node's liveness, and the counters of what was dropped. The engine writes it; the
//! handle reads it.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use foca::State;
use tokio::time::Instant;

use rmosix_config::NodeId;

use crate::state::{Entry, Figures, MAX_AGE, NodeState, Profile};

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
    /// How old that state is: how long ago its node published it, as far as gossip tells
    /// (the age it had when it reached this node, plus the time since; zero for this node's
    /// own). MOSIX's "age" of an entry: it grows while the node is dead or gossip is slow.
    /// No clocks are compared, so it needs no clock sync.
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

/// How long a node waits for a profile it asked for before asking again (of whoever sends
/// the next entry that needs it): a few round trips, so a lost answer costs little and a
/// slow one is not asked for twice.
pub(crate) const ASK_AGAIN_AFTER: Duration = Duration::from_millis(500);

/// The youngest entry known of a node: its figures and profile, and when they were
/// measured, on this node's clock (when they came, less how old they were then).
#[derive(Clone, Debug)]
struct Known {
    tag: u16,
    figures: Figures,
    profile: Profile,
    born: Instant,
}

impl Known {
    fn age(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.born)
    }
}

/// When figures `age` old at `now` were measured. (An age beyond this clock's start, which
/// only a node started seconds after boot could meet, counts from the start.)
fn born(now: Instant, age: Duration) -> Instant {
    now.checked_sub(age).unwrap_or(now)
}

/// Everything the handle reads; see the module doc. This is MOSIX's information vector: the
/// engine refreshes this node's own entry, sends windows of it, and merges what comes.
#[derive(Debug)]
pub(crate) struct Table {
    own: NodeId,
    nodes: BTreeSet<NodeId>,
    /// Ordered by node: quick to scan for each window, to search for each entry that
    /// comes, and the same from run to run in the simulation.
    entries: Vec<(NodeId, Known)>,
    members: HashMap<NodeId, State>,
    /// Profiles asked for and not come yet: which tag, and when.
    asked: HashMap<NodeId, (u16, Instant)>,
    pub counters: Counters,
}

/// The table, shared between the engine and the handle.
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
            entries: Vec::new(),
            members: HashMap::new(),
            asked: HashMap::new(),
            counters: Counters::default(),
        }
    }

    /// A new map: nodes no longer in it leave the view.
    pub fn set_nodes(&mut self, nodes: impl IntoIterator<Item = NodeId>) {
        self.nodes = nodes.into_iter().collect();
        let nodes = &self.nodes;
        self.entries.retain(|(node, _)| nodes.contains(node));
        self.members.retain(|node, _| nodes.contains(node));
        self.asked.retain(|node, _| nodes.contains(node));
    }

    fn find(&self, node: NodeId) -> Option<&Known> {
        let at = self.entries.binary_search_by_key(&node, |(n, _)| *n).ok()?;
        Some(&self.entries[at].1)
    }

    fn find_mut(&mut self, node: NodeId) -> Option<&mut Known> {
        let at = self.entries.binary_search_by_key(&node, |(n, _)| *n).ok()?;
        Some(&mut self.entries[at].1)
    }

    fn put(&mut self, node: NodeId, known: Known) {
        match self.entries.binary_search_by_key(&node, |(n, _)| *n) {
            Ok(at) => self.entries[at].1 = known,
            Err(at) => self.entries.insert(at, (node, known)),
        }
    }

    /// Forgets what this node holds of `node`, which came back as a new run: the new run's
    /// profile tags start at random, and one that happens to equal the old run's would
    /// otherwise never be asked for. Its next entry brings its figures and profile anew.
    pub fn forget(&mut self, node: NodeId) {
        if let Ok(at) = self.entries.binary_search_by_key(&node, |(n, _)| *n) {
            self.entries.remove(at);
        }
        self.asked.remove(&node);
    }

    /// This node's own state, now. Its profile keeps its tag while it stays the same, and
    /// takes the next one when it changes (`first_tag` for the first); so the others ask
    /// for it again exactly when it changed.
    pub fn publish_own(&mut self, state: &NodeState, first_tag: u16, now: Instant) {
        let (figures, profile) = state.split();
        let tag = match self.find(self.own) {
            Some(known) if known.profile == profile => known.tag,
            Some(known) => known.tag.wrapping_add(1),
            None => first_tag,
        };
        self.put(
            self.own,
            Known {
                tag,
                figures,
                profile,
                born: now,
            },
        );
    }

    /// MOSIX's window: this node's own entry, refreshed (age zero), then the `size - 1`
    /// youngest others, none older than [`MAX_AGE`].
    pub fn window(&self, size: usize, now: Instant) -> Vec<Entry> {
        // Youngest first is latest born first; ties go to the lower node.
        let oldest = born(now, MAX_AGE);
        let mut others: Vec<(Reverse<Instant>, usize)> = self
            .entries
            .iter()
            .enumerate()
            .filter(|(_, (node, known))| *node != self.own && known.born >= oldest)
            .map(|(at, (_, known))| (Reverse(known.born), at))
            .collect();
        let room = size.saturating_sub(1);
        if others.len() > room {
            others.select_nth_unstable(room);
            others.truncate(room);
        }
        others.sort_unstable();
        let own = self.find(self.own).map(|known| Entry {
            node: self.own,
            age: Duration::ZERO,
            tag: known.tag,
            figures: known.figures,
        });
        own.into_iter()
            .chain(others.into_iter().map(|(_, at)| {
                let (node, known) = &self.entries[at];
                Entry {
                    node: *node,
                    age: known.age(now),
                    tag: known.tag,
                    figures: known.figures,
                }
            }))
            .collect()
    }

    /// Takes each of `entries` younger than what this node holds of its node (a node of the
    /// map, not this one) whose profile it holds; returns the profiles to ask for, for the
    /// others (unless asked for within [`ASK_AGAIN_AFTER`]).
    pub fn merge(&mut self, entries: &[Entry], now: Instant) -> Vec<(NodeId, u16)> {
        let mut wants = Vec::new();
        for entry in entries {
            if entry.node == self.own || !self.nodes.contains(&entry.node) {
                continue;
            }
            match self.find_mut(entry.node) {
                Some(known) if entry.age >= known.age(now) => {}
                Some(known) if known.tag == entry.tag => {
                    known.figures = entry.figures;
                    known.born = born(now, entry.age);
                }
                _ => {
                    let asked = self.asked.get(&entry.node).is_some_and(|&(tag, at)| {
                        tag == entry.tag && now.saturating_duration_since(at) < ASK_AGAIN_AFTER
                    });
                    if !asked {
                        self.asked.insert(entry.node, (entry.tag, now));
                        wants.push((entry.node, entry.tag));
                    }
                }
            }
        }
        wants
    }

    /// The entries and profiles of `wants` that this node holds, as they are now.
    pub fn profiles(&self, wants: &[(NodeId, u16)], now: Instant) -> Vec<(Entry, Profile)> {
        wants
            .iter()
            .filter_map(|&(node, tag)| {
                let known = self.find(node).filter(|k| k.tag == tag)?;
                let age = if node == self.own {
                    Duration::ZERO
                } else {
                    known.age(now)
                };
                (age <= MAX_AGE).then(|| {
                    let entry = Entry {
                        node,
                        age,
                        tag,
                        figures: known.figures,
                    };
                    (entry, known.profile.clone())
                })
            })
            .collect()
    }

    /// Takes an entry with its profile if it is younger than what this node holds of its
    /// node (a node of the map, not this one). Returns whether it was taken.
    pub fn take(&mut self, entry: Entry, profile: Profile, now: Instant) -> bool {
        if entry.node == self.own || !self.nodes.contains(&entry.node) {
            return false;
        }
        if let Some(known) = self.find(entry.node)
            && entry.age >= known.age(now)
        {
            return false;
        }
        if self
            .asked
            .get(&entry.node)
            .is_some_and(|&(tag, _)| tag == entry.tag)
        {
            self.asked.remove(&entry.node);
        }
        self.put(
            entry.node,
            Known {
                tag: entry.tag,
                figures: entry.figures,
                profile,
                born: born(now, entry.age),
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

    /// How old the figures this node holds of `node` are (zero for its own).
    pub fn age(&self, node: NodeId, now: Instant) -> Option<Duration> {
        if node == self.own {
            return self.find(node).map(|_| Duration::ZERO);
        }
        self.find(node).map(|known| known.age(now))
    }

    /// Every node of the map, lowest number first.
    pub fn snapshot(&self, now: Instant) -> Vec<NodeView> {
        self.nodes
            .iter()
            .map(|&node| {
                let known = self.find(node);
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
                    state: known.map(|k| NodeState::join(k.figures, &k.profile)),
                    liveness,
                    age: self.age(node, now),
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::AGE_UNIT;

    fn node(n: u16) -> NodeId {
        NodeId::new(n).unwrap()
    }

    fn state(load: u32, speed: u32) -> NodeState {
        NodeState {
            load,
            speed,
            ..NodeState::default()
        }
    }

    fn entry(n: u16, age_units: u32, tag: u16, load: u32) -> Entry {
        Entry {
            node: node(n),
            age: AGE_UNIT * age_units,
            tag,
            figures: Figures {
                load,
                ..Figures::default()
            },
        }
    }

    #[test]
    fn younger_entries_are_taken_and_an_unknown_profile_is_asked_for_once() {
        let now = Instant::now();
        let mut table = Table::new(node(1), [node(1), node(2), node(3)]);
        // Nothing held of node 2: its profile is wanted, once within ASK_AGAIN_AFTER.
        assert_eq!(table.merge(&[entry(2, 5, 7, 100)], now), [(node(2), 7)]);
        assert_eq!(table.merge(&[entry(2, 4, 7, 100)], now), []);
        let later = now + ASK_AGAIN_AFTER;
        assert_eq!(table.merge(&[entry(2, 4, 7, 100)], later), [(node(2), 7)]);
        assert!(table.take(entry(2, 5, 7, 100), Profile::default(), now));
        // Older, or as old: ignored; younger with the profile held: taken as it is.
        assert!(!table.take(entry(2, 6, 7, 1), Profile::default(), now));
        assert_eq!(table.merge(&[entry(2, 5, 7, 1)], now), []);
        assert_eq!(table.merge(&[entry(2, 1, 7, 200)], now), []);
        assert_eq!(table.snapshot(now)[1].state.as_ref().unwrap().load, 200);
        // A new profile (tag) is asked for even when the held one is fresh.
        assert_eq!(table.merge(&[entry(2, 0, 8, 300)], now), [(node(2), 8)]);
        assert_eq!(table.snapshot(now)[1].state.as_ref().unwrap().load, 200);
        // Held figures age as time passes: the same entry is younger than them later.
        let much_later = now + Duration::from_secs(1);
        assert_eq!(
            table.age(node(2), much_later),
            Some(AGE_UNIT + Duration::from_secs(1))
        );
        assert_eq!(table.merge(&[entry(2, 40, 7, 400)], much_later), []);
        assert_eq!(
            table.snapshot(much_later)[1].state.as_ref().unwrap().load,
            400
        );
        // Not in the map, or about us: never taken.
        assert!(!table.take(entry(4, 0, 1, 0), Profile::default(), now));
        assert!(!table.take(entry(1, 0, 1, 0), Profile::default(), now));
        assert_eq!(
            table.merge(&[entry(4, 0, 1, 0), entry(1, 0, 1, 0)], now),
            []
        );
    }

    #[test]
    fn a_node_back_as_a_new_run_is_asked_for_its_profile_under_the_old_tag() {
        let now = Instant::now();
        let mut table = Table::new(node(1), [node(1), node(2)]);
        assert_eq!(table.merge(&[entry(2, 0, 7, 100)], now), [(node(2), 7)]);
        assert!(table.take(entry(2, 0, 7, 100), Profile::default(), now));
        let later = now + Duration::from_secs(1);
        assert_eq!(table.merge(&[entry(2, 0, 7, 300)], later), []);
        table.forget(node(2));
        assert_eq!(table.merge(&[entry(2, 0, 7, 300)], later), [(node(2), 7)]);
    }

    #[test]
    fn the_own_profile_keeps_its_tag_until_it_changes() {
        let now = Instant::now();
        let mut table = Table::new(node(1), [node(1), node(2)]);
        table.publish_own(&state(100, 10_000), 65535, now);
        let tag = |t: &Table| t.window(1, now)[0].tag;
        assert_eq!(tag(&table), 65535);
        table.publish_own(&state(200, 10_000), 1, now);
        assert_eq!(tag(&table), 65535, "a new load is no new profile");
        table.publish_own(&state(200, 5_000), 1, now);
        assert_eq!(tag(&table), 0, "a new speed is");
        let asked = table.profiles(&[(node(1), 0), (node(1), 65535)], now);
        assert_eq!(asked.len(), 1);
        assert_eq!(asked[0].1.speed, 5_000);
    }

    #[test]
    fn a_window_is_the_own_entry_then_the_youngest() {
        let start = Instant::now();
        let mut table = Table::new(node(1), (1..=6).map(node));
        table.publish_own(&state(1, 1), 0, start);
        for (n, age) in [(2, 30), (3, 10), (4, 20), (5, 50)] {
            assert!(table.take(entry(n, age, 0, 0), Profile::default(), start));
        }
        let later = start + Duration::from_millis(100);
        let window = table.window(3, later);
        let nodes: Vec<_> = window.iter().map(|e| e.node).collect();
        assert_eq!(nodes, [node(1), node(3), node(4)]);
        assert_eq!(window[0].age, Duration::ZERO);
        assert_eq!(window[1].age, AGE_UNIT * 10 + Duration::from_millis(100));
        // Entries older than MAX_AGE stay home.
        let old = start + MAX_AGE;
        let nodes: Vec<_> = table.window(10, old).iter().map(|e| e.node).collect();
        assert_eq!(nodes, [node(1)]);
        assert_eq!(table.profiles(&[(node(2), 0)], old), []);
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
        assert_eq!(view[1].liveness, Liveness::Suspect);
        table.take(entry(3, 1, 1, 5), Profile::default(), now);
        table.set_nodes([node(1), node(2)]);
        let view = table.snapshot(now);
        assert_eq!(
            view.iter().map(|v| v.node).collect::<Vec<_>>(),
            [node(1), node(2)]
        );
        assert!(!table.take(entry(3, 0, 1, 5), Profile::default(), now));
    }
}
