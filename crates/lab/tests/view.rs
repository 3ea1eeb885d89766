//! The cluster view in 3-node labs, as an operator sees it through `mosctl`: every node lists
//! the others up with their figures, a stopped or killed node is shown dead by the others
//! within a bound, a busy node's load rises and gossip carries it, `setspeed` (root only)
//! changes the speed everyone sees, and SIGHUP reloads the map (a broken one is logged and
//! the old one kept). Every wait has a deadline; nothing sleeps and hopes.

use std::collections::BTreeMap;
use std::fs;
use std::time::Duration;

use rmosix_lab::{
    BusyLoop, Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, require_root, wait_until,
};

/// Deadline of one tool run.
const STEP: Duration = Duration::from_secs(30);
/// How long a new lab may take until every node sees every other up: the first gossip round
/// after start, plus a loaded test machine's slack.
const VIEW_BOUND: Duration = Duration::from_secs(20);
/// How long a stopped or killed node may stay alive in the others' view: the view's
/// suspicion timeout and probe period are a few seconds (docs/gossip.md).
const DEAD_BOUND: Duration = Duration::from_secs(15);
/// How long a busy node's load may take to rise everywhere: a second of gauge, a second of
/// publishing, and gossip.
const LOAD_BOUND: Duration = Duration::from_secs(20);
/// An idle node's load stays below half a busy process on one standard CPU.
const IDLE_LOAD: u32 = 50;
/// An ordinary user.
const NOBODY: u32 = 65534;

fn start_lab(nodes: usize) -> Lab {
    match Lab::start(LabConfig::new(nodes, bin_dir_of_current_test())) {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start a {nodes}-node lab: {e}"),
    }
}

/// `mosctl ARGS` inside `node` as root, to its end within [`STEP`].
fn mosctl(node: &Node, args: &[&str]) -> ToolRun {
    node.run("mosctl", args, STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// `mosctl ARGS` inside `node` as user and group `uid`.
fn mosctl_as(node: &Node, uid: u32, args: &[&str]) -> ToolRun {
    node.run_as(uid, "mosctl", args, STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// A node's line in `mosctl status`.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    liveness: String,
    load: Option<u32>,
    cpus: Option<f64>,
}

/// `mosctl status` at `node`, node by node (the first line, about this node's processes, is
/// checked and left out).
fn status(node: &Node) -> BTreeMap<u16, Seen> {
    let done = mosctl(node, &["status"]);
    assert!(done.status.success(), "{done:?}");
    let mut lines = done.stdout.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(&format!("node {}: this node, ", node.id())),
        "{done:?}"
    );
    lines
        .map(|line| {
            let (head, rest) = line.split_once(": ").expect("node N: ...");
            let id = head
                .strip_prefix("node ")
                .and_then(|n| n.parse().ok())
                .expect("node number");
            let mut fields = rest.split(", ");
            let liveness = fields.next().unwrap_or_default().to_owned();
            let mut seen = Seen {
                liveness,
                load: None,
                cpus: None,
            };
            for field in fields {
                if let Some(load) = field.strip_prefix("load ") {
                    seen.load = load.parse().ok();
                }
                if let Some(cpus) = field.strip_suffix(" CPUs") {
                    seen.cpus = cpus.parse().ok();
                }
            }
            (id, seen)
        })
        .collect()
}

/// One number `mosctl VERB NODE` prints at `at`; `None` if it fails.
fn get(at: &Node, verb: &str, node: u16) -> Option<u64> {
    let done = mosctl(at, &[verb, &node.to_string()]);
    done.status
        .success()
        .then(|| done.stdout.trim().parse().expect("a number alone"))
}

/// Waits until every node's status lists every node up, each with a load.
fn wait_all_up(lab: &Lab) {
    let ids: Vec<u16> = lab.nodes().iter().map(Node::id).collect();
    for node in lab.nodes() {
        wait_until(
            &format!("node {} sees every node up", node.id()),
            VIEW_BOUND,
            || {
                let seen = status(node);
                seen.keys().copied().collect::<Vec<_>>() == ids
                    && seen
                        .values()
                        .all(|s| s.liveness == "up" && s.load.is_some())
            },
            || format!("{:?}\n{}", status(node), node.log()),
        );
    }
}

/// A CPU-busy loop in `node`, killed when dropped.
fn busy(node: &Node) -> BusyLoop {
    node.busy_loop().unwrap_or_else(|e| panic!("{e}"))
}

/// SIGHUP to `node`'s daemon: it reads the map again.
fn reload(node: &Node) {
    node.hangup_daemon().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn every_node_sees_the_others_up_with_their_figures() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    wait_all_up(&lab);
    for node in lab.nodes() {
        for (id, seen) in status(node) {
            let load = seen.load.expect("a load");
            assert!(load < IDLE_LOAD, "node {}: node {id}: {seen:?}", node.id());
            assert!(seen.cpus.is_some_and(|c| c > 0.0), "{seen:?}");
        }
    }
    // The per-node queries print one number each, for any node, to anyone.
    let (n1, n2) = (lab.node(1), lab.node(2));
    for verb in ["getload", "getspeed", "getmem", "getfree", "getutil"] {
        let done = mosctl_as(n1, NOBODY, &[verb, "2"]);
        assert!(done.status.success(), "{verb}: {done:?}");
        assert!(
            done.stdout.trim().parse::<u64>().is_ok(),
            "{verb}: {done:?}"
        );
        assert_eq!(done.stdout.lines().count(), 1, "{verb}: {done:?}");
    }
    assert!(get(n1, "getspeed", 2).is_some_and(|s| s > 0));
    assert!(get(n1, "getmem", 2).is_some_and(|m| m > 0));
    assert!(get(n1, "getutil", 2).is_some_and(|u| u <= 100));
    // Without NODE: this node, as the others see it.
    let own = mosctl(n2, &["getspeed"]);
    assert!(own.status.success(), "{own:?}");
    assert_eq!(
        own.stdout.trim().parse::<u64>().ok(),
        get(n1, "getspeed", 2)
    );
    // A node the map lacks is an error naming it.
    let done = mosctl(n1, &["getload", "9"]);
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert_eq!(
        done.stderr,
        format!(
            "mosctl: getload: no node 9 in {}\n",
            lab.map_path().display()
        )
    );
}

#[test]
fn stopped_and_killed_nodes_are_shown_dead_by_the_others() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    wait_all_up(&lab);
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));

    // A daemon stopped as a service manager stops it says goodbye.
    if let Err(e) = n3.stop_daemon() {
        panic!("{e}");
    }
    for node in [n1, n2] {
        let took = wait_until(
            &format!("node {} sees node 3 dead", node.id()),
            DEAD_BOUND,
            || status(node)[&3].liveness == "dead",
            || format!("{:?}\n{}", status(node), node.log()),
        );
        eprintln!("node {}: node 3 dead after {took:?}", node.id());
    }
    let done = mosctl(n1, &["getload", "3"]);
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert_eq!(done.stderr, "mosctl: getload: node 3 is dead\n");
    assert_eq!(status(n1)[&2].liveness, "up");

    // A node that dies says nothing: the failure detector finds out.
    n2.kill();
    let took = wait_until(
        "node 1 sees the killed node 2 dead",
        DEAD_BOUND,
        || status(n1)[&2].liveness == "dead",
        || format!("{:?}\n{}", status(n1), n1.log()),
    );
    eprintln!("node 1: node 2 dead after {took:?}");

    // Node 3's daemon comes back and is up again.
    if let Err(e) = n3.start_daemon() {
        panic!("{e}");
    }
    wait_until(
        "node 1 sees node 3 up again",
        VIEW_BOUND,
        || status(n1)[&3].liveness == "up",
        || format!("{:?}\n{}", status(n1), n1.log()),
    );
}

#[test]
fn a_busy_nodes_load_rises_and_the_others_see_it() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));
    // At the standard speed, load is 100 per busy process per CPU, whatever this CPU's speed.
    let done = mosctl(n2, &["setspeed", "10000"]);
    assert!(done.status.success(), "{done:?}");
    wait_all_up(&lab);
    let cpus = status(n2)[&2].cpus.expect("node 2's CPUs");
    wait_until(
        "node 2 is idle",
        LOAD_BOUND,
        || get(n2, "getload", 2).is_some_and(|l| l < u64::from(IDLE_LOAD)),
        || format!("{:?}", status(n2)),
    );

    // At least as many busy processes as CPUs (two at least): each adds 100 / CPUs. Ask for
    // most of it (a sample may straddle the start).
    let n = (cpus.ceil() as usize).max(2);
    let _busy: Vec<BusyLoop> = (0..n).map(|_| busy(n2)).collect();
    let expected = (0.8 * 100.0 * n as f64 / cpus) as u64;
    assert!(expected > u64::from(IDLE_LOAD));
    for at in [n2, n1, n3] {
        let took = wait_until(
            &format!("node {} sees node 2's load reach {expected}", at.id()),
            LOAD_BOUND,
            || get(at, "getload", 2).is_some_and(|l| l >= expected),
            || format!("{:?}\n{}", status(at), n2.log()),
        );
        eprintln!("node {}: node 2's load {expected}+ after {took:?}", at.id());
    }
    // The others stay idle.
    for id in [1, 3] {
        assert!(
            get(n2, "getload", id).is_some_and(|l| l < u64::from(IDLE_LOAD)),
            "{:?}",
            status(n2)
        );
    }
}

#[test]
fn setspeed_and_block_as_root_are_seen_everywhere_and_refused_to_others() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    wait_all_up(&lab);
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));
    let done = mosctl(n2, &["setspeed", "12345"]);
    assert!(done.status.success(), "{done:?}");
    assert_eq!(done.stdout, "");
    for at in [n2, n1, n3] {
        wait_until(
            &format!("node {} sees node 2's speed 12345", at.id()),
            VIEW_BOUND,
            || get(at, "getspeed", 2) == Some(12345),
            || format!("{:?}", get(at, "getspeed", 2)),
        );
    }

    let refused = mosctl_as(n2, NOBODY, &["setspeed", "999"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert_eq!(
        refused.stderr,
        "mosctl: setspeed: permission denied (root only)\n"
    );
    // Modes travel too: node 1 sees node 2 blocked, then not.
    let line_of_2 = |at: &Node| {
        let done = mosctl(at, &["status"]);
        let line = done.stdout.lines().find(|l| l.starts_with("node 2: "));
        line.unwrap_or_default().to_owned()
    };
    assert!(mosctl(n2, &["block"]).status.success());
    wait_until(
        "node 1 sees node 2 blocked",
        VIEW_BOUND,
        || line_of_2(n1).ends_with(", block"),
        || line_of_2(n1),
    );
    assert!(mosctl(n2, &["noblock"]).status.success());
    wait_until(
        "node 1 sees node 2 unblocked",
        VIEW_BOUND,
        || line_of_2(n1).ends_with('%'),
        || line_of_2(n1),
    );

    // Speed 0 is a usage error, caught before the daemon.
    let zero = mosctl(n2, &["setspeed", "0"]);
    assert_eq!(zero.status.code(), Some(2), "{zero:?}");
    assert_eq!(get(n2, "getspeed", 2), Some(12345));
    assert_eq!(get(n1, "getspeed", 2), Some(12345));
}

/// SIGHUP makes a daemon read its map again. A map it cannot use, broken or without the node
/// itself, is refused with the reason and the old map kept; a good one takes effect.
#[test]
fn sighup_reloads_the_map_and_a_broken_map_keeps_the_old_one() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    wait_all_up(&lab);
    let n1 = lab.node(1);
    let map = lab.map_path();

    // A broken map: logged with its file and line, the old one kept.
    fs::write(&map, "1 10.231.0.1 2\nnot a map line\n").expect("write the map");
    reload(n1);
    let broken = format!(
        "map not reloaded, keeping the old one: {}:2: ",
        map.display()
    );
    if let Err(e) = n1.wait_log(&broken, STEP) {
        panic!("{e}");
    }
    let seen = status(n1);
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(seen[&3].liveness, "up");

    // A map without node 1 itself: refused the same way, the old one kept.
    fs::write(&map, "2 10.231.0.2 2\n").expect("write the map");
    reload(n1);
    let not_own = format!(
        "map not reloaded, keeping the old one: {}: node 1 is not in the map",
        map.display()
    );
    if let Err(e) = n1.wait_log(&not_own, STEP) {
        panic!("{e}");
    }
    let seen = status(n1);
    assert_eq!(seen.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(seen[&3].liveness, "up");

    // A map without node 3: node 1 lists it no more, and refuses questions about it.
    fs::write(&map, "1 10.231.0.1 2\n").expect("write the map");
    reload(n1);
    wait_until(
        "node 1 lists node 3 no more",
        STEP,
        || status(n1).keys().copied().collect::<Vec<_>>() == [1, 2],
        || format!("{:?}\n{}", status(n1), n1.log()),
    );
    let done = mosctl(n1, &["getload", "3"]);
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert_eq!(
        done.stderr,
        format!("mosctl: getload: no node 3 in {}\n", map.display())
    );
    assert_eq!(status(n1)[&2].liveness, "up");
}
