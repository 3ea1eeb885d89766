//! Flood prevention: many nodes must not pick the same under-loaded node at once (Barak,
//! Shiloh, Wheeler, "Flood prevention in the MOSIX load-balancing scheme", 1989; the
//! mechanism here is ours, reference 5.4).
//!
//! Every node sees about the same view, so each can work out, for a target, which nodes would
//! like to send to it this round (its *senders*) and how many processes it can take before it
//! is as loaded as the cluster's mean (its *room*, at least one). The senders are ranked by a hash of the round number,
//! the target and the sender, and the room's slots are dealt out in rank order: with one slot
//! and ten senders, one sender (a different one each round) sends. No messages are needed.
//! Where views differ a little, a target may get a process more or fewer than its room; the
//! next round corrects it.

use rmosix_config::NodeId;

use crate::decide::{Policy, Round};
use crate::view::{ClusterView, NodeInfo};

/// A small, fixed mixing function (SplitMix64's finaliser), so that decisions depend only on
/// their inputs, on every platform and Rust version.
pub(crate) fn mix(values: &[u64]) -> u64 {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    for &value in values {
        state = state
            .wrapping_add(value)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        state = z ^ (z >> 31);
    }
    state
}

/// Whether `info` describes a node that would send a CPU-bound process to `target` this round,
/// judged from the view alone: it takes part in balancing and its load exceeds the target's by
/// more than the hysteresis asks for one whole process.
pub(crate) fn would_send(policy: &Policy, info: &NodeInfo, target: &NodeInfo) -> bool {
    info.alive
        && !info.modes.quiet
        && !info.modes.stay
        && f64::from(info.load) > policy.move_threshold(target, f64::from(target.load), 1.0)
}

/// The load every node would have if all work were spread evenly over the nodes that take
/// part in balancing, weighted by capacity: no target should be filled beyond it.
pub(crate) fn mean_load(policy: &Policy, round: &Round, view: &ClusterView) -> f64 {
    let (mut work, mut capacity) = (0.0, 0.0);
    for (&id, node) in &view.nodes {
        if id == round.here || (node.alive && !node.modes.quiet && policy.is_fresh(round, node)) {
            work += f64::from(node.load) * node.capacity();
            capacity += node.capacity();
        }
    }
    if capacity > 0.0 { work / capacity } else { 0.0 }
}

/// How many processes this round's node (`round.here`) may send to `target` for balance or
/// placement this round, given the cluster's [`mean_load`]. 0 when the target is not in the
/// view.
pub(crate) fn allowance(
    policy: &Policy,
    round: &Round,
    view: &ClusterView,
    target: NodeId,
    mean_load: f64,
) -> u32 {
    let Some(info) = view.get(target) else {
        return 0;
    };
    let share = info.process_share();
    if !share.is_finite() {
        return 0;
    }
    let mut senders: Vec<(u64, NodeId)> = view
        .nodes
        .iter()
        .filter(|&(&id, _)| id != target)
        .filter(|&(&id, node)| {
            id == round.here || (policy.is_fresh(round, node) && would_send(policy, node, info))
        })
        .map(|(&id, _)| {
            let rank_key = mix(&[round.number, u64::from(target.get()), u64::from(id.get())]);
            (rank_key, id)
        })
        .collect();
    senders.sort();
    let room = (((mean_load - f64::from(info.load)) / share)
        .floor()
        .max(1.0)) as u32;
    let count = senders.len() as u32;
    let Some(rank) = senders.iter().position(|&(_, id)| id == round.here) else {
        return 0;
    };
    let rank = rank as u32;
    if rank < room {
        (room - rank).div_ceil(count)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mix_is_fixed_and_spreads() {
        assert_eq!(mix(&[1, 2, 3]), mix(&[1, 2, 3]));
        assert_ne!(mix(&[1, 2, 3]), mix(&[1, 3, 2]));
        assert_ne!(mix(&[0]), mix(&[1]));
        // Low bits differ across consecutive inputs (we take them modulo small counts).
        let odd = (0..1000).filter(|&i| mix(&[i]) % 2 == 1).count();
        assert!((400..600).contains(&odd), "{odd}");
    }
}
