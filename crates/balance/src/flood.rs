//! Flood prevention: many nodes must not pick the same under-loaded node at once (Barak,
//! Shiloh, Wheeler, "Flood prevention in the MOSIX load-balancing scheme", 1989; the
//! mechanism here is ours, reference 5.4).
//!
//! Every node sees about the same view, so each can work out, for a target, which nodes would
//! like to send to it this round (its *senders*) and how many processes it can take before it
//! is as loaded as the cluster's mean (its *room*, at least one). The senders are ranked by a
//! hash of the round number, the target and the sender, and the room's slots are dealt out in
//! rank order. The view shows the other senders' moves only a few rounds later, so with
//! several senders the room is dealt over [`Policy::flood_rounds`] rounds: with one slot and
//! ten senders, one sender (a different one each time) sends in any three rounds in a row.
//! No messages are needed. Where views differ a little, a target may get a process more or
//! fewer than its room; the next rounds correct it.

use rmosix_config::NodeId;

use crate::decide::{Policy, Round};
use crate::view::ClusterView;

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

/// The nodes that may send work this round, as [`allowance`] ranks them: alive, fresh, not
/// `quiet` or `stay`, by load, highest first, each with whether it has a process ready to
/// leave ([`crate::NodeInfo::ready`]). Worked out once a round, so that finding a target's
/// senders looks at the loaded nodes only.
pub(crate) fn possible_senders(
    policy: &Policy,
    round: &Round,
    view: &ClusterView,
) -> Vec<(u32, NodeId, bool)> {
    let mut senders: Vec<(u32, NodeId, bool)> = view
        .nodes
        .iter()
        .filter(|&(_, node)| {
            node.alive && !node.modes.quiet && !node.modes.stay && policy.is_fresh(round, node)
        })
        .map(|(&id, node)| (node.load, id, node.ready > 0))
        .collect();
    senders.sort_by(|a, b| b.cmp(a));
    senders
}

/// How many processes this round's node (`round.here`) may send to `target` for balance or
/// placement this round, given the cluster's [`mean_load`] and the [`possible_senders`]. 0
/// when the target is not in the view.
pub(crate) fn allowance(
    policy: &Policy,
    round: &Round,
    view: &ClusterView,
    target: NodeId,
    mean_load: f64,
    possible_senders: &[(u32, NodeId, bool)],
) -> u32 {
    let Some(info) = view.get(target) else {
        return 0;
    };
    let share = info.process_share();
    if !share.is_finite() || target == round.here {
        return 0;
    }
    // The senders are ranked by a hash of the round, the target and the sender; this node
    // always counts as one.
    let rank_key = |id: NodeId| {
        (
            mix(&[round.number, u64::from(target.get()), u64::from(id.get())]),
            id,
        )
    };
    let mine = rank_key(round.here);
    let bar = policy.move_threshold(info, f64::from(info.load), 1.0);
    let (mut count, mut rank, mut others_ready) = (1u32, 0u32, false);
    for &(load, id, ready) in possible_senders {
        if f64::from(load) <= bar {
            break;
        }
        if id == target || id == round.here {
            continue;
        }
        count += 1;
        others_ready |= ready;
        if rank_key(id) < mine {
            rank += 1;
        }
    }
    let room = (((mean_load - f64::from(info.load)) / share)
        .floor()
        .max(1.0)) as u32;
    // A lone sender needs no pacing: its daemon adds its own recent moves to the view. Nor
    // does one of a few senders whose others have no process ready to leave (held for their
    // residence time, or locked): dealing the room among them too left an idle node idle for
    // seconds in a small cluster (docs/balancing.md, "Flood prevention"). Among more senders
    // every loaded node keeps its place in the ranking and the pacing below, ready or not:
    // the ready ones alone, at scale, filled rooms over and over from views a few rounds
    // old, and guests moved on more (the simulation, the burst on 300 nodes: 2.2 moves a
    // job against 1.8).
    if !others_ready && count <= policy.flood_rounds {
        return room;
    }
    // Other senders' moves show in the view only some rounds later, so each round would deal
    // the same room again: deal it over that many rounds instead, a target's share of it each
    // round, by a phase of its own.
    let rounds = u64::from(policy.flood_rounds.max(1));
    let phase = round.number.wrapping_add(mix(&[u64::from(target.get())])) % rounds;
    let room = ((u64::from(room) + phase) / rounds) as u32;
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
