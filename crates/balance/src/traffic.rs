//! Where a process's file traffic goes: bytes a second to each node's files (`/mfs/N`),
//! decayed by the process's class as its CPU statistics are, and the node that serves most
//! of it ([`DataNode`], which rule 4b of [`crate::decide`] draws the process to).

use std::collections::BTreeMap;
use std::time::Duration;

use rmosix_config::NodeId;

use crate::{DataNode, DecayClass};

/// Below this many bytes a second a node's share is forgotten: a file read once long ago
/// does not keep an entry for ever.
const FORGET_BELOW: f64 = 1024.0;

/// A process's decayed file traffic by serving node.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Traffic {
    by_node: BTreeMap<NodeId, f64>,
}

impl Traffic {
    /// Folds in what the process moved to and from each node's files during `interval`:
    /// every node's rate decays, and those it used rise by this interval's rate.
    pub fn update(&mut self, class: DecayClass, interval: Duration, moved: &[(NodeId, u64)]) {
        let seconds = interval.as_secs_f64();
        if seconds <= 0.0 {
            return;
        }
        let keep = class.keep_per_second().powf(seconds);
        for rate in self.by_node.values_mut() {
            *rate *= keep;
        }
        for &(node, bytes) in moved {
            *self.by_node.entry(node).or_insert(0.0) += (1.0 - keep) * bytes as f64 / seconds;
        }
        self.by_node.retain(|_, rate| *rate >= FORGET_BELOW);
    }

    /// The node serving most of the traffic, if any.
    pub fn top(&self) -> Option<DataNode> {
        self.by_node
            .iter()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .map(|(&node, &bytes_per_second)| DataNode {
                node,
                bytes_per_second,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(id: u16) -> NodeId {
        NodeId::new(id).unwrap()
    }

    #[test]
    fn the_node_serving_most_is_the_data_node_and_old_traffic_fades() {
        let mut traffic = Traffic::default();
        assert_eq!(traffic.top(), None);
        let second = Duration::from_secs(1);
        for _ in 0..60 {
            traffic.update(
                DecayClass::Fast,
                second,
                &[(n(3), 100 << 20), (n(2), 1 << 20)],
            );
        }
        let top = traffic.top().unwrap();
        assert_eq!(top.node, n(3));
        // Fast decay keeps 926/1000 a second: after a minute the rate is near its input.
        assert!(top.bytes_per_second > 0.95 * (100 << 20) as f64, "{top:?}");
        // The process turns to node 2's files: node 2 takes over as node 3's rate fades.
        for _ in 0..60 {
            traffic.update(DecayClass::Fast, second, &[(n(2), 10 << 20)]);
        }
        assert_eq!(traffic.top().unwrap().node, n(2));
        // Silence: everything is forgotten in the end.
        for _ in 0..300 {
            traffic.update(DecayClass::Fast, second, &[]);
        }
        assert_eq!(traffic.top(), None);
    }
}
