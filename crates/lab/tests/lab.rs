//! The lab itself, tested in real namespaces with a stand-in daemon (a shell script that
//! checks its arguments and listens on the daemon socket), so these tests need root but not
//! a working `mosixd`. Each test builds its own lab; they run in parallel.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;
use std::{fs, io, thread};

use rmosix_lab::{Lab, LabConfig, LabError, Node, child_of, pid_in_node, wait_child_of};

mod common;

use common::{FAKE_MOSIXD, bin_dir_with_daemon};

/// A bin dir holding the stand-in mosixd (outside /tmp, which nodes replace).
fn fake_bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| bin_dir_with_daemon("fake-bin", FAKE_MOSIXD))
        .clone()
}

fn start(nodes: usize, cpu_quota: Option<f64>) -> Lab {
    let cfg = LabConfig {
        cpu_quota,
        ..LabConfig::new(nodes, fake_bin_dir())
    };
    match Lab::start(cfg) {
        Ok(lab) => lab,
        Err(e) => panic!("lab start: {e}"),
    }
}

/// Runs `sh -c script` in `node` and returns its stdout; fails the test on a non-zero exit.
fn sh(node: &Node, script: &str) -> String {
    let out = node
        .command("sh")
        .args(["-c", script])
        .stdin(Stdio::null())
        .output()
        .expect("spawn in node");
    assert!(
        out.status.success(),
        "node {}: `{script}` failed ({}): {}",
        node.id(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A TCP server in `node` on port 7000: prints `listening`, then for each connection
/// prints the peer address and sends a greeting; it never closes connections itself.
fn serve(node: &Node) -> (std::process::Child, impl Iterator<Item = String> + use<>) {
    let mut server = node
        .command("python3")
        .args([
            "-c",
            "import socket, sys\n\
             s = socket.socket(); s.bind((sys.argv[1], 7000)); s.listen()\n\
             print('listening', flush=True)\n\
             held = []\n\
             while True:\n\
             \x20   c, peer = s.accept(); held.append(c)\n\
             \x20   print('peer', peer[0], flush=True); c.sendall(b'hello from ' + sys.argv[1].encode() + b'\\n')\n",
            &node.addr().to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn server");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout"))
        .lines()
        .map(|l| l.expect("server output"));
    assert_eq!(lines.next().as_deref(), Some("listening"));
    (server, lines)
}

#[test]
fn nodes_reach_each_other_and_the_host_cannot() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start(2, None);
    let (mut server, mut lines) = serve(lab.node(2));
    let greeting = sh(
        lab.node(1),
        "python3 -c \"import socket; s = socket.create_connection(('10.231.0.2', 7000), timeout=10); print(s.makefile().readline().strip())\"",
    );
    assert_eq!(greeting.trim(), "hello from 10.231.0.2");
    assert_eq!(lines.next().as_deref(), Some("peer 10.231.0.1"));

    // The host has no way into the lab subnet: the route is `unreachable`, so a connect
    // fails at once instead of sending anything.
    let route = Command::new("ip")
        .args(["route", "get", "10.231.0.2"])
        .output()
        .expect("ip route get");
    let said = String::from_utf8_lossy(&route.stdout) + String::from_utf8_lossy(&route.stderr);
    assert!(
        !route.status.success() || said.contains("unreachable"),
        "host route to the lab: {said}"
    );
    let addr: SocketAddr = "10.231.0.2:7000".parse().expect("addr");
    let err = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .expect_err("host reached the lab");
    assert_eq!(err.kind(), io::ErrorKind::HostUnreachable, "{err}");

    server.kill().expect("kill server");
    server.wait().expect("reap server");
    lab.stop().expect("teardown");
}

#[test]
fn each_node_has_its_own_hostname_tmp_and_pids() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start(2, None);
    let map = lab.map_path();
    // A file in the host's /tmp, and one in node 1's: no node may see the first, node 2 not
    // the second. (A node does see a checkout that lives under /tmp: the lab carries it in.)
    let marker = format!("/tmp/rmosix-lab-marker-{}", std::process::id());
    let node_marker = format!("/tmp/rmosix-lab-node-marker-{}", std::process::id());
    std::fs::write(&marker, "host").expect("host marker");
    sh(lab.node(1), &format!("echo node1 > {node_marker}"));
    for node in lab.nodes() {
        let report = sh(
            node,
            &format!(
                "uname -n; echo \"$(test -e {marker} && echo host)$(test -e {node_marker} && echo node1)\"; \
                 echo $$; ls /proc | grep -c '^[0-9]'; \
                 tr '\\0\\n' '  ' < /proc/1/cmdline; echo; test -r {} && test -S /run/mosix/mosixd.sock && echo shared",
                map.display()
            ),
        );
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines[0], format!("node{}", node.id()), "{report}");
        let expected = if node.id() == 1 { "node1" } else { "" };
        assert_eq!(
            lines[1],
            expected,
            "/tmp of node {} is not private: {report}",
            node.id()
        );
        let pid: u32 = lines[2].parse().expect("pid");
        assert!(pid < 100, "a fresh PID namespace gives low PIDs, got {pid}");
        let processes: u32 = lines[3].parse().expect("process count");
        assert!(
            processes < 20,
            "node {} sees {processes} processes",
            node.id()
        );
        assert!(
            lines[4].contains("rmosix-lab-node"),
            "PID 1 of the node is {}",
            lines[4]
        );
        assert_eq!(lines[5], "shared", "{report}");
    }
    // ... nor the host what a node writes in its /tmp.
    assert!(!Path::new(&node_marker).exists());
    std::fs::remove_file(&marker).expect("remove host marker");
    // The work dir is shared.
    sh(
        lab.node(1),
        &format!("echo from-node1 > {}/shared", lab.work_dir().display()),
    );
    assert_eq!(
        sh(
            lab.node(2),
            &format!("cat {}/shared", lab.work_dir().display())
        )
        .trim(),
        "from-node1"
    );
    lab.stop().expect("teardown");
}

#[test]
fn process_helpers_find_the_program_and_its_pid_in_the_node() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start(1, None);
    let node = lab.node(1);
    let mut child = node
        .command("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    let host = wait_child_of(child.id(), Duration::from_secs(10)).expect("program under nsenter");
    let inner = pid_in_node(host).expect("pid in node");
    assert_ne!(inner, host);
    // The PID is the program's from the start; it may take a moment to exec `sleep`.
    sh(
        node,
        &format!(
            "for i in $(seq 500); do [ \"$(cat /proc/{inner}/comm)\" = sleep ] && exit 0; sleep 0.01; done; exit 1"
        ),
    );
    assert_eq!(child_of(host), None, "sleep has no children");
    // Killing the Child the caller holds (nsenter) takes the program with it.
    child.kill().expect("kill nsenter");
    child.wait().expect("reap nsenter");
    // Dead (a zombie until the host's init, nsenter's reaper, reaps it) or gone.
    sh(
        node,
        &format!(
            "for i in $(seq 500); do grep -qs '^State:.*Z' /proc/{inner}/status || ! test -e /proc/{inner} && exit 0; sleep 0.01; done; exit 1"
        ),
    );
    lab.stop().expect("teardown");
}

#[test]
fn cpu_quota_is_set_and_commands_join_the_node_cgroup() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start(2, Some(0.5));
    for node in lab.nodes() {
        let cg = node.cgroup_path().expect("node cgroup");
        let quota = fs::read_to_string(cg.join("cpu.cfs_quota_us"))
            .or_else(|_| fs::read_to_string(cg.join("cpu.max")))
            .expect("quota file");
        assert!(
            quota.trim() == "50000" || quota.trim() == "50000 100000",
            "node {} quota {quota}",
            node.id()
        );
        let name = cg
            .file_name()
            .expect("cgroup name")
            .to_string_lossy()
            .into_owned();
        let membership = sh(node, "cat /proc/self/cgroup");
        assert!(
            membership.lines().any(|l| l.ends_with(&format!("/{name}"))),
            "node {}: {membership}",
            node.id()
        );
        // The daemon is in it too (it inherits the node's cgroup from the launcher).
        let procs = fs::read_to_string(cg.join("cgroup.procs")).expect("cgroup.procs");
        assert!(
            procs.lines().count() >= 2,
            "node {} cgroup holds {procs:?}",
            node.id()
        );
    }
    let unlimited = start(1, None);
    let cg = unlimited.node(1).cgroup_path().expect("cgroup").to_owned();
    let quota = fs::read_to_string(cg.join("cpu.cfs_quota_us"))
        .or_else(|_| fs::read_to_string(cg.join("cpu.max")))
        .expect("quota file");
    assert!(
        quota.trim() == "-1" || quota.starts_with("max"),
        "unlimited quota {quota}"
    );
    unlimited.stop().expect("teardown");
    lab.stop().expect("teardown");
}

/// What a lab made, to look for after it is gone.
#[derive(Debug, Clone)]
struct Traces {
    netns: Vec<String>,
    cgroups: Vec<PathBuf>,
    dir: PathBuf,
}

impl Traces {
    fn of(lab: &Lab) -> Traces {
        let mut netns: Vec<String> = lab.nodes().iter().map(|n| n.netns().to_owned()).collect();
        netns.push(format!("{}-hub", lab.name()));
        Traces {
            netns,
            cgroups: lab
                .nodes()
                .iter()
                .filter_map(|n| n.cgroup_path().map(Path::to_owned))
                .collect(),
            dir: lab.dir().to_owned(),
        }
    }

    fn assert_gone(&self) {
        let listed = String::from_utf8(
            Command::new("ip")
                .args(["netns", "list"])
                .output()
                .expect("ip netns list")
                .stdout,
        )
        .expect("utf8");
        for ns in &self.netns {
            assert!(
                !listed
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(ns)),
                "netns {ns} left"
            );
        }
        for cg in &self.cgroups {
            assert!(!cg.exists(), "cgroup {} left", cg.display());
        }
        assert!(!self.dir.exists(), "lab dir {} left", self.dir.display());
    }
}

#[test]
fn teardown_leaves_nothing_behind() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start(2, Some(1.0));
    let traces = Traces::of(&lab);
    assert!(traces.dir.join("mosix.map").exists());
    // A program still running in a node must not keep anything alive.
    let mut sleeper = lab
        .node(2)
        .command("sleep")
        .arg("1000")
        .spawn()
        .expect("spawn sleep");
    wait_child_of(sleeper.id(), Duration::from_secs(10)).expect("sleep started");
    lab.stop().expect("teardown");
    let status = sleeper.wait().expect("reap nsenter");
    assert!(!status.success());
    traces.assert_gone();
}

#[test]
fn teardown_also_runs_when_a_test_panics() {
    if !rmosix_lab::require_root() {
        return;
    }
    let seen: &'static Mutex<Option<Traces>> = Box::leak(Box::new(Mutex::new(None)));
    let outcome = thread::spawn(move || {
        let lab = start(2, Some(0.5));
        *seen.lock().expect("lock") = Some(Traces::of(&lab));
        panic!("a test failing with a lab up");
    })
    .join();
    assert!(outcome.is_err());
    let traces = seen.lock().expect("lock").clone().expect("lab was started");
    traces.assert_gone();
}

#[test]
fn a_killed_node_fails_fast_for_its_peers() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start(2, None);
    let (mut server, mut lines) = serve(lab.node(2));
    // Node 1 holds a connection to node 2, then reconnects once node 2 is dead.
    let mut client = lab
        .node(1)
        .command("python3")
        .args([
            "-c",
            "import socket, sys\n\
             s = socket.create_connection(('10.231.0.2', 7000), timeout=10)\n\
             print(s.makefile().readline().strip(), flush=True)\n\
             sys.stdin.readline()\n\
             try:\n\
             \x20   print('after kill: read', repr(s.recv(100)), flush=True)\n\
             except OSError as e:\n\
             \x20   print('after kill: read error', type(e).__name__, flush=True)\n\
             try:\n\
             \x20   socket.create_connection(('10.231.0.2', 7000), timeout=10)\n\
             \x20   print('reconnect: connected', flush=True)\n\
             except OSError as e:\n\
             \x20   print('reconnect:', type(e).__name__, e.errno, flush=True)\n",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut out = BufReader::new(client.stdout.take().expect("stdout"))
        .lines()
        .map(|l| l.expect("client output"));
    assert_eq!(out.next().as_deref(), Some("hello from 10.231.0.2"));
    assert_eq!(lines.next().as_deref(), Some("peer 10.231.0.1"));

    lab.node(2).kill();
    drop(client.stdin.take()); // lets the client go on
    let read = out.next().expect("client read line");
    assert!(
        read == "after kill: read b''" || read == "after kill: read error ConnectionResetError",
        "held connection after the kill: {read}"
    );
    // EHOSTUNREACH (113), not a timeout.
    assert_eq!(out.next().as_deref(), Some("reconnect: OSError 113"));
    assert!(client.wait().expect("client").success());
    assert!(
        !server.wait().expect("server").success(),
        "server died with its node"
    );

    // Commands for a dead node fail clearly; its log stays readable.
    let status = lab.node(2).command("true").status().expect("spawn");
    assert_eq!(status.code(), Some(126));
    lab.node(2)
        .wait_log("fake mosixd", Duration::from_secs(1))
        .expect("log kept");
    lab.node(2).kill(); // idempotent
    lab.stop().expect("teardown");
}

#[test]
fn wait_log_sees_the_daemon_and_times_out_with_the_tail() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start(2, None);
    lab.node(2)
        .wait_log("fake mosixd node 2 listening", Duration::from_secs(10))
        .expect("daemon log");
    assert!(lab.node(1).log().contains("--node 1"));
    match lab
        .node(1)
        .wait_log("never printed", Duration::from_millis(100))
    {
        Err(LabError::LogTimeout { node: 1, tail, .. }) => assert!(tail.contains("fake mosixd")),
        other => panic!("expected a log timeout, got {other:?}"),
    }
    lab.stop().expect("teardown");
}

#[test]
fn a_daemon_that_exits_fails_the_start_with_its_log() {
    if !rmosix_lab::require_root() {
        return;
    }
    let dir = bin_dir_with_daemon(
        "failing-bin",
        "#!/bin/sh\necho 'mosixd: cannot read map' >&2\nexit 1\n",
    );
    match Lab::start(LabConfig::new(2, &dir)) {
        Err(LabError::DaemonExited { node: 1, tail }) => {
            assert!(tail.contains("cannot read map"), "{tail}")
        }
        other => panic!("expected DaemonExited, got {other:?}"),
    }
}

#[test]
fn stale_leftovers_of_a_dead_creator_are_removed() {
    if !rmosix_lab::require_root() {
        return;
    }
    // A PID that just died stands for a crashed test run.
    let mut gone = Command::new("true").spawn().expect("spawn true");
    let dead = gone.id();
    gone.wait().expect("reap true");
    let ns = format!("rmx-{dead}-0-hub");
    let status = Command::new("ip")
        .args(["netns", "add", &ns])
        .status()
        .expect("ip netns add");
    assert!(status.success());
    let dir = PathBuf::from(format!("/var/tmp/rmosix-lab-{dead}-0"));
    fs::create_dir_all(dir.join("work")).expect("stale dir");
    let cgroup = start(1, None)
        .node(1)
        .cgroup_path()
        .map(|p| p.with_file_name(format!("rmosix-lab-{dead}-0-n1")));
    if let Some(cg) = &cgroup {
        fs::create_dir(cg).expect("stale cgroup");
    }
    rmosix_lab::cleanup_stale().expect("cleanup");
    Traces {
        netns: vec![ns],
        cgroups: cgroup.into_iter().collect(),
        dir,
    }
    .assert_gone();
}

/// The workspace's own mosixd comes up in every node of a 3-node lab, and the tools can
/// reach it on the default socket inside the node.
#[test]
fn real_mosixd_listens_in_every_node() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = match Lab::start(LabConfig::new(3, rmosix_lab::bin_dir_of_current_test())) {
        Ok(lab) => lab,
        Err(e) => panic!("lab start with the real mosixd: {e}"),
    };
    for node in lab.nodes() {
        assert_eq!(
            sh(node, "test -S /run/mosix/mosixd.sock && echo up").trim(),
            "up"
        );
        assert!(node.log().len() < 1_000_000);
    }
    lab.stop().expect("teardown");
}

/// A node's memory limit (`LabConfig::node_memory_mib` over `memory_mib`) is set on its
/// cgroup (v1 `memory.limit_in_bytes`, v2 `memory.max`), which its commands join, and its
/// daemon gauges it: `mosctl status` shows it as the node's total memory, and the free memory
/// `mosctl getmem` prints stays within it. Teardown removes the memory cgroups too.
#[test]
fn memory_limit_is_set_and_the_daemon_reports_it_as_the_nodes_memory() {
    if !rmosix_lab::require_root() {
        return;
    }
    const MIB: u64 = 1 << 20;
    let mut cfg = LabConfig::new(2, rmosix_lab::bin_dir_of_current_test());
    cfg.memory_mib = Some(512);
    cfg.node_memory_mib.insert(1, 256);
    let lab = Lab::start(cfg).unwrap_or_else(|e| panic!("lab start: {e}"));
    let mut memory_cgroups = Vec::new();
    for (node, mib) in lab.nodes().iter().zip([256, 512]) {
        let cg = node.memory_cgroup_path().expect("memory cgroup").to_owned();
        let limit = fs::read_to_string(cg.join("memory.limit_in_bytes"))
            .or_else(|_| fs::read_to_string(cg.join("memory.max")))
            .expect("memory limit file");
        assert_eq!(limit.trim(), (mib * MIB).to_string(), "node {}", node.id());
        let name = cg.file_name().expect("cgroup name").to_string_lossy();
        let membership = sh(node, "cat /proc/self/cgroup");
        assert!(
            membership
                .lines()
                .any(|l| (l.contains(":memory:") || l.starts_with("0::"))
                    && l.ends_with(&format!("/{name}"))),
            "node {} memory cgroup {name}: {membership}",
            node.id()
        );
        memory_cgroups.push(cg);
    }
    // Node 1 sees both nodes' figures once the gossip has brought node 2's.
    rmosix_lab::wait_until(
        "node 2's figures at node 1",
        Duration::from_secs(30),
        || sh(lab.node(1), "mosctl status").contains("node 2: up, load"),
        || sh(lab.node(1), "mosctl status"),
    );
    let status = sh(lab.node(1), "mosctl status");
    for (k, mib) in [(1, 256), (2, 512)] {
        assert!(
            status
                .lines()
                .any(|l| l.starts_with(&format!("node {k}: up"))
                    && l.contains(&format!(" of {mib} MiB free"))),
            "node {k} should have {mib} MiB:\n{status}"
        );
    }
    for (k, mib) in [(1u64, 256u64), (2, 512)] {
        let free: u64 = sh(lab.node(1), &format!("mosctl getmem {k}"))
            .trim()
            .parse()
            .expect("getmem prints bytes");
        // The node's daemon and init use some of it; most is free.
        assert!(
            free <= mib * MIB && free >= mib * MIB / 2,
            "node {k}: {free} bytes free of a {mib} MiB limit"
        );
    }
    lab.stop().expect("teardown");
    for cg in memory_cgroups {
        assert!(!cg.exists(), "{} left behind", cg.display());
    }
}
