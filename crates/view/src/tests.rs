//! Scenarios on real UDP sockets, all on loopback: each test puts its nodes on a /24 of its
//! own in 127.0.0.0/8 (Linux answers on all of it without setup), all on one port, as a
//! cluster's nodes share one. Each waits for what it expects with a deadline, never a bare
//! sleep.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket as StdUdpSocket};
use std::path::Path;
use std::time::Duration;

use foca::{Codec, Header, Message};
use tokio::net::UdpSocket;
use tokio::time::Instant;

use rmosix_config::{Map, NodeId};
use rmosix_transport::ClusterKey;

use crate::message;
use crate::seal::{Sealer, Sender};
use crate::state::Entry;
use crate::swim::{Id, SwimCodec};
use crate::{Liveness, NodeState, NodeView, Tuning, View, ViewHandle};

/// A cluster key made of one repeated byte.
pub(crate) fn key(byte: u8) -> ClusterKey {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, format!("{}\n", format!("{byte:02x}").repeat(32))).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    ClusterKey::load(&path).unwrap()
}

fn node(n: u16) -> NodeId {
    NodeId::new(n).unwrap()
}

/// Node `n`'s address in test `net`.
fn ip(net: u8, n: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, net, n)
}

/// Nodes 1..=count at 127.0.net.1.., as one range line of a map.
fn map(net: u8, count: u16) -> Map {
    Map::parse(
        &format!("1 {} {count}\n", ip(net, 1)),
        Path::new("test.map"),
    )
    .unwrap()
}

/// A UDP port free on the test's first address; every node of the test binds it on its own
/// address.
fn free_port(net: u8) -> u16 {
    StdUdpSocket::bind((ip(net, 1), 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Cluster {
    net: u8,
    port: u16,
    map: Map,
}

impl Cluster {
    fn new(net: u8, count: u16) -> Cluster {
        Cluster {
            net,
            port: free_port(net),
            map: map(net, count),
        }
    }

    fn addr(&self, n: u8) -> SocketAddr {
        SocketAddr::from((ip(self.net, n), self.port))
    }

    async fn start(&self, n: u8, key: &ClusterKey) -> ViewHandle {
        View::start_tuned(
            node(u16::from(n)),
            &self.map,
            key,
            self.addr(n),
            sample(u32::from(n)),
            Tuning::default(),
        )
        .await
        .unwrap()
    }

    /// A socket at node `n`'s address (another port), to send crafted datagrams from.
    async fn socket_at(&self, n: u8) -> UdpSocket {
        UdpSocket::bind((ip(self.net, n), 0)).await.unwrap()
    }
}

fn load(state: NodeState, load: u32) -> NodeState {
    NodeState { load, ..state }
}

fn sample(n: u32) -> NodeState {
    NodeState {
        load: 100 * n,
        speed: 10_000,
        milli_cpus: 2000,
        mem_total: 4 << 30,
        mem_free: 1 << 30,
        utilisation_pct: 50,
        compat: vec![n as u8; 32],
        ..NodeState::default()
    }
}

fn seen(view: &ViewHandle, n: u16) -> NodeView {
    view.snapshot()
        .into_iter()
        .find(|v| v.node == node(n))
        .unwrap_or_else(|| panic!("node {n} not in the view of node {}", view.node()))
}

/// Polls `ready` every 20 ms until it holds or `within` passes; returns how long it took.
async fn wait_for(what: &str, within: Duration, mut ready: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    loop {
        if ready() {
            return start.elapsed();
        }
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether `view` sees node `n` alive with `state`.
fn sees(view: &ViewHandle, n: u16, state: &NodeState) -> bool {
    view.snapshot().iter().any(|v| {
        v.node == node(n) && v.liveness == Liveness::Alive && v.state.as_ref() == Some(state)
    })
}

/// `plain` sealed by `sealer` as node `from` (generation 1), datagram number `seq`.
fn sealed_as(sealer: &Sealer, from: u16, seq: u64, plain: &[u8]) -> Vec<u8> {
    sealer
        .seal(
            Sender {
                node: node(from),
                generation: 1,
                seq,
            },
            plain,
        )
        .unwrap()
}

/// Node `from`'s entry and profile, offering load `offered`, as an answer to a want: what a
/// forger would send to draw processes to it. Sealed by `sealer` as `from`, number `seq`.
fn injection(sealer: &Sealer, from: u16, offered: u32, seq: u64) -> Vec<u8> {
    let (figures, profile) = load(sample(from.into()), offered).split();
    let entry = Entry {
        node: node(from),
        age: Duration::ZERO,
        tag: 1,
        figures,
    };
    let plain = message::profiles(&[(entry, profile)]).remove(0);
    sealed_as(sealer, from, seq, &plain)
}

/// A foca message from node `from` (as if it ran under generation 1) to `to`, then `tail`.
fn foca_gossip(from: u16, to: &ViewHandle, tail: &[u8]) -> Vec<u8> {
    let header = Header {
        src: Id {
            node: node(from),
            generation: 1,
        },
        src_incarnation: 0,
        dst: Id {
            node: to.node(),
            generation: to.generation,
        },
        message: Message::Gossip,
    };
    let mut plain = Vec::new();
    SwimCodec.encode_header(&header, &mut plain).unwrap();
    plain.extend_from_slice(tail);
    message::foca(&plain)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_learn_each_others_state_within_seconds() {
    let cluster = Cluster::new(11, 3);
    let key = key(1);
    let mut views = Vec::new();
    for n in 1..=3u8 {
        let view = cluster.start(n, &key).await;
        views.push(view);
    }
    let took = wait_for(
        "every node sees the others' load",
        Duration::from_secs(5),
        || {
            views
                .iter()
                .all(|v| (1..=3).all(|n| sees(v, n, &sample(u32::from(n)))))
        },
    )
    .await;
    eprintln!("converged in {took:?}");
    // A new figure reaches the others too.
    views[1].publish(load(sample(2), 777)).unwrap();
    wait_for(
        "node 2's new load reaches 1 and 3",
        Duration::from_secs(5),
        || {
            [0, 2]
                .iter()
                .all(|&i| sees(&views[i], 2, &load(sample(2), 777)))
        },
    )
    .await;
    for view in &views {
        let counters = view.counters();
        assert!(counters.accepted > 0 && counters.sent > 0, "{counters:?}");
        assert_eq!(
            counters.bad_seal + counters.unknown_source + counters.wrong_sender,
            0
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_node_is_marked_dead_by_the_others_within_seconds() {
    let cluster = Cluster::new(12, 3);
    let key = key(1);
    let mut views = Vec::new();
    for n in 1..=3u8 {
        let view = cluster.start(n, &key).await;
        views.push(view);
    }
    wait_for("convergence", Duration::from_secs(5), || {
        views
            .iter()
            .all(|v| (1..=3).all(|n| sees(v, n, &sample(u32::from(n)))))
    })
    .await;
    // Dropping the handle stops node 3 as a crash would: no goodbye.
    drop(views.pop());
    let took = wait_for(
        "nodes 1 and 2 see node 3 dead",
        Duration::from_secs(8),
        || views.iter().all(|v| seen(v, 3).liveness == Liveness::Dead),
    )
    .await;
    eprintln!("node 3 marked dead everywhere {took:?} after it stopped");
    // Its last state stays, ageing, for tools to show.
    let last = seen(&views[0], 3);
    assert_eq!(last.state, Some(sample(3)));
    assert!(last.age.unwrap() >= took);
    // The others still see each other.
    assert!(sees(&views[0], 2, &sample(2)) && sees(&views[1], 1, &sample(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_leaves_is_dead_at_once_and_a_restart_is_welcome() {
    let cluster = Cluster::new(13, 2);
    let key = key(1);
    let one = cluster.start(1, &key).await;
    let two = cluster.start(2, &key).await;
    wait_for("node 1 sees node 2", Duration::from_secs(5), || {
        sees(&one, 2, &sample(2))
    })
    .await;
    two.leave().await;
    wait_for("node 1 sees node 2 gone", Duration::from_secs(1), || {
        seen(&one, 2).liveness == Liveness::Dead
    })
    .await;
    // The same node, restarted (a new generation), is taken again with its new state.
    let two = cluster.start(2, &key).await;
    two.publish(sample(5)).unwrap();
    wait_for("node 1 sees node 2 back", Duration::from_secs(5), || {
        sees(&one, 2, &sample(5))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_without_the_key_never_joins_and_is_never_seen() {
    let cluster = Cluster::new(14, 3);
    let one = cluster.start(1, &key(1)).await;
    let two = cluster.start(2, &key(1)).await;
    // Node 3 is in the map, at its address, but has another key; it offers load 0.
    let stranger = cluster.start(3, &key(2)).await;
    stranger.publish(load(sample(3), 0)).unwrap();

    wait_for(
        "nodes 1 and 2 have each dropped the stranger's datagrams, and it theirs",
        Duration::from_secs(10),
        || {
            [&one, &two, &stranger]
                .iter()
                .all(|v| v.counters().bad_seal >= 1)
        },
    )
    .await;
    wait_for(
        "nodes 1 and 2 see each other",
        Duration::from_secs(5),
        || sees(&one, 2, &sample(2)) && sees(&two, 1, &sample(1)),
    )
    .await;
    for view in [&one, &two] {
        let v = seen(view, 3);
        assert_eq!((v.liveness, v.state), (Liveness::Dead, None));
    }
    // And the stranger reads nothing of the view.
    for n in [1, 2] {
        let v = seen(&stranger, n);
        assert_eq!((v.liveness, v.state), (Liveness::Dead, None));
    }
    assert_eq!(stranger.counters().accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_tampered_datagrams_inject_nothing_and_replays_are_dropped() {
    let cluster = Cluster::new(15, 3);
    let right = Sealer::new(&key(1));
    let wrong = Sealer::new(&key(2));
    let one = cluster.start(1, &key(1)).await;
    // Node 3 does not run: the test speaks for it, from its address.
    let from3 = cluster.socket_at(3).await;
    let to1 = cluster.addr(1);

    // Sealed with another key.
    from3
        .send_to(&injection(&wrong, 3, 0, 1), to1)
        .await
        .unwrap();
    wait_for("a wrong key is dropped", Duration::from_secs(5), || {
        one.counters().bad_seal == 1
    })
    .await;
    // Sealed with the right key, one bit of the ciphertext changed: the entry's load.
    let mut tampered = injection(&right, 3, 0, 2);
    let at = tampered.len() - 20;
    tampered[at] ^= 0x01;
    from3.send_to(&tampered, to1).await.unwrap();
    wait_for("a changed byte is dropped", Duration::from_secs(5), || {
        one.counters().bad_seal == 2
    })
    .await;
    assert_eq!(seen(&one, 3).state, None);
    assert_eq!(one.counters().accepted, 0);

    // The control: the same forgery sealed with the right key is taken, which is what the
    // seal prevents.
    let sealed = injection(&right, 3, 0, 3);
    from3.send_to(&sealed, to1).await.unwrap();
    wait_for(
        "a keyed sender's entry is taken",
        Duration::from_secs(5),
        || seen(&one, 3).state.is_some_and(|s| s.load == 0),
    )
    .await;
    // The same datagram again is a replay.
    from3.send_to(&sealed, to1).await.unwrap();
    wait_for("a replay is dropped", Duration::from_secs(5), || {
        one.counters().replayed == 1
    })
    .await;
    assert_eq!(one.counters().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_gossip_from_a_keyed_peer_is_counted_and_changes_nothing() {
    let cluster = Cluster::new(16, 3);
    let right = Sealer::new(&key(1));
    let one = cluster.start(1, &key(1)).await;
    let from3 = cluster.socket_at(3).await;
    let to1 = cluster.addr(1);
    let (figures, profile) = load(sample(3), 0).split();
    let good = message::profiles(&[(
        Entry {
            node: node(3),
            age: Duration::ZERO,
            tag: 1,
            figures,
        },
        profile,
    )])
    .remove(0);
    // A window whose count says more than it holds.
    let mut lying = message::window([]);
    lying[1] = 5;
    let plains: [&[u8]; 5] = [
        // foca's gossip with no news: well formed, and says nothing.
        &foca_gossip(3, &one, &[0, 0]),
        &lying,
        // A kind no version defines.
        &[9, 0],
        // Profiles cut short.
        &good[..good.len() / 2],
        // A window cut in its first entry.
        &[1, 2, 3],
    ];
    for (seq, plain) in (1..).zip(plains) {
        from3
            .send_to(&sealed_as(&right, 3, seq, plain), to1)
            .await
            .unwrap();
    }
    wait_for(
        "malformed datagrams are counted",
        Duration::from_secs(5),
        || one.counters().malformed == 4,
    )
    .await;
    let counters = one.counters();
    assert_eq!(
        (counters.malformed, counters.accepted),
        (4, 1),
        "{counters:?}"
    );
    assert_eq!(seen(&one, 3).state, None, "{counters:?}");
    // The view goes on: a well-formed entry after them is taken.
    from3
        .send_to(&sealed_as(&right, 3, 11, &good), to1)
        .await
        .unwrap();
    wait_for(
        "a good entry is still taken",
        Duration::from_secs(5),
        || seen(&one, 3).state.is_some_and(|s| s.load == 0),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn datagrams_from_outside_the_map_or_claiming_another_node_are_refused() {
    let cluster = Cluster::new(16, 3);
    let right = Sealer::new(&key(1));
    let one = cluster.start(1, &key(1)).await;
    let to1 = cluster.addr(1);

    // Correctly sealed, from an address no node of the map has (node 3 is 127.0.16.3).
    let outsider = cluster.socket_at(99).await;
    outsider
        .send_to(&injection(&right, 3, 0, 1), to1)
        .await
        .unwrap();
    wait_for(
        "an address outside the map is refused",
        Duration::from_secs(5),
        || one.counters().unknown_source == 1,
    )
    .await;

    // From node 2's address, claiming to be node 3.
    let from2 = cluster.socket_at(2).await;
    from2
        .send_to(&injection(&right, 3, 0, 2), to1)
        .await
        .unwrap();
    wait_for(
        "another node's claim is refused",
        Duration::from_secs(5),
        || one.counters().wrong_sender == 1,
    )
    .await;

    // From node 2's address, sealed as node 2, but foca's header inside speaks for node 3.
    let resealed = sealed_as(&right, 2, 4, &foca_gossip(3, &one, &[0, 0]));
    from2.send_to(&resealed, to1).await.unwrap();
    wait_for(
        "a claim inside the seal is refused",
        Duration::from_secs(5),
        || one.counters().wrong_sender == 2,
    )
    .await;
    for n in [2, 3] {
        assert_eq!(seen(&one, n).state, None, "node {n}");
    }
    assert_eq!(one.counters().accepted, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_removed_from_the_map_leaves_the_view_and_is_refused() {
    let cluster = Cluster::new(17, 3);
    let key = key(1);
    let mut views = Vec::new();
    for n in 1..=3u8 {
        let view = cluster.start(n, &key).await;
        views.push(view);
    }
    wait_for("convergence", Duration::from_secs(5), || {
        views
            .iter()
            .all(|v| (1..=3).all(|n| sees(v, n, &sample(u32::from(n)))))
    })
    .await;
    // Node 1's map loses node 3 (as after editing the map and SIGHUP).
    views[0].reload_map(map(17, 2)).unwrap();
    wait_for(
        "node 3 leaves node 1's view",
        Duration::from_secs(2),
        || {
            views[0]
                .snapshot()
                .iter()
                .map(|v| v.node)
                .collect::<Vec<_>>()
                == [node(1), node(2)]
        },
    )
    .await;
    // Node 3 still gossips to node 1 (its own map has node 1): refused now.
    let before = views[0].counters().unknown_source;
    wait_for(
        "node 3's datagrams are refused",
        Duration::from_secs(5),
        || views[0].counters().unknown_source > before,
    )
    .await;
    assert!(views[0].snapshot().iter().all(|v| v.node != node(3)));
    assert!(sees(&views[0], 2, &sample(2)));
    // Put back, it is seen again.
    views[0].reload_map(map(17, 3)).unwrap();
    let took = wait_for(
        "node 3 back in node 1's view",
        Duration::from_secs(8),
        || sees(&views[0], 3, &sample(3)),
    )
    .await;
    eprintln!("node 3 seen again {took:?} after the map gave it back");
}

#[tokio::test]
async fn a_node_missing_from_its_own_map_cannot_start() {
    let map = map(18, 2);
    let err = View::start(
        node(3),
        &map,
        &key(1),
        SocketAddr::from((ip(18, 1), 0)),
        sample(3),
    )
    .await
    .err()
    .unwrap();
    assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
}
