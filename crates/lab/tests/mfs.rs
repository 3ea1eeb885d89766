//! MFS in 2-node labs with real daemons: `/mfs/N/path` is node N's `/path`. Each node has a
//! private /tmp, so a file under /mfs/1/tmp is node 1's alone, and what node 2 reads there
//! can only have come through MFS. Every wait has a deadline; shell scripts run inside the
//! nodes and say what they saw on stdout.

use std::time::{Duration, Instant};

use rmosix_lab::{Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, require_root};

/// Deadline of one script or tool.
const STEP: Duration = Duration::from_secs(60);
/// Two ordinary users.
const ANA: u32 = 1001;
const BEN: u32 = 1002;

fn start_lab(nodes: usize) -> Lab {
    match Lab::start(LabConfig::new(nodes, bin_dir_of_current_test())) {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start a {nodes}-node lab: {e}"),
    }
}

/// `sh -c SCRIPT` as root at `node`.
fn sh(node: &Node, script: &str) -> ToolRun {
    node.run("sh", &["-c", script], STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// `sh -c SCRIPT` as `uid` at `node`.
fn sh_as(node: &Node, uid: u32, script: &str) -> ToolRun {
    node.run_as(uid, "sh", &["-c", script], STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()))
}

/// `sh -c SCRIPT` as `uid` at `node`, which must succeed; its stdout.
fn ok_as(node: &Node, uid: u32, script: &str) -> String {
    let done = sh_as(node, uid, script);
    assert!(
        done.status.success(),
        "node {}: {script}: {done:?}\n{}",
        node.id(),
        node.log()
    );
    done.stdout
}

/// Wait until node `node`'s MFS shows node `other`'s root (the mount is made as the daemon
/// starts, the peer link at the first call).
fn wait_mfs(node: &Node, other: u16) {
    let deadline = Instant::now() + STEP;
    loop {
        if sh(node, &format!("ls /mfs/{other}/ >/dev/null"))
            .status
            .success()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no /mfs/{other} at node {}:\n{}",
            node.id(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn each_node_reads_and_writes_the_others_files_and_sees_every_change_at_once() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    wait_mfs(n1, 2);
    ok_as(n1, ANA, "echo one > /tmp/f");
    // Node 2's own /tmp has no such file: what it reads is node 1's (as ana, who owns it).
    assert!(!sh(n2, "test -e /tmp/f").status.success());
    assert_eq!(ok_as(n2, ANA, "cat /mfs/1/tmp/f"), "one\n");
    // A write through node 2 is read at node 1 right after, and the reverse.
    ok_as(n2, ANA, "echo two >> /mfs/1/tmp/f");
    assert_eq!(ok_as(n1, ANA, "cat /tmp/f"), "one\ntwo\n");
    ok_as(n1, ANA, "echo three > /tmp/f");
    assert_eq!(
        ok_as(n2, ANA, "cat /mfs/1/tmp/f; stat -c %s /mfs/1/tmp/f"),
        "three\n6\n"
    );
    ok_as(n1, ANA, "echo from-node-1 > /mfs/2/tmp/g");
    assert_eq!(ok_as(n2, ANA, "cat /tmp/g"), "from-node-1\n");

    // Directories, renames, links, modes and sizes, all through MFS, checked at the owner.
    ok_as(
        n2,
        ANA,
        "set -e; cd /mfs/1/tmp; mkdir d; echo x > d/a; mv d/a d/b; ln -s b d/l; \
         chmod 640 d/b; truncate -s 1 d/b; mkdir gone; rmdir gone; echo y > u; rm u",
    );
    assert_eq!(
        ok_as(
            n1,
            ANA,
            "cd /tmp/d; ls; stat -c '%a %s' b; readlink l; cat l; test ! -e /tmp/gone; test ! -e /tmp/u"
        ),
        "b\nl\n640 1\nb\nx"
    );
    assert_eq!(
        ok_as(n2, ANA, "ls /mfs/1/tmp/d; readlink /mfs/1/tmp/d/l"),
        "b\nl\nb\n"
    );
    assert_eq!(ok_as(n2, BEN, "ls /mfs"), "1\n2\nhere\nhome\n");
}
