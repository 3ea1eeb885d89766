//! MFS in 2-node labs with real daemons: `/mfs/N/path` is node N's `/path`. Each node has a
//! private /tmp, so a file under /mfs/1/tmp is node 1's alone, and what node 2 reads there
//! can only have come through MFS. Every wait has a deadline; shell scripts run inside the
//! nodes and say what they saw on stdout.

use std::process::Stdio;
use std::time::{Duration, Instant};

use rmosix_lab::{
    Captured, Job, Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, require_root, wait_until,
};

/// Deadline of one script or tool.
const STEP: Duration = Duration::from_secs(60);
/// Two ordinary users.
const ANA: u32 = 1001;
const BEN: u32 = 1002;
/// A group neither user has as its own.
const TEAM: u32 = 1003;

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
    assert_eq!(
        ok_as(n2, BEN, "ls /mfs"),
        "1\n2\nhere\nhome\nlastexec\nmagic\nselect\nselected\n"
    );
}

#[test]
fn large_reads_arrive_whole_in_order_and_stop_at_the_end_of_the_file() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    // Three MiB and some: each read of a MiB goes as parts asked for at once, and the file
    // ends inside a part.
    const SIZE: usize = 3 * (1 << 20) + 12_345;
    ok_as(
        n1,
        ANA,
        &format!("head -c {SIZE} /dev/urandom > /tmp/large"),
    );
    let at_home = ok_as(n1, ANA, "sha256sum < /tmp/large");
    for bs in ["1M", "300k", "4k"] {
        let through_mfs = ok_as(
            n2,
            ANA,
            &format!("dd if=/mfs/1/tmp/large bs={bs} status=none | sha256sum"),
        );
        assert_eq!(through_mfs, at_home, "read in blocks of {bs}");
    }
    // From inside the last MiB: the tail and nothing more.
    let tail = ok_as(
        n2,
        ANA,
        "dd if=/mfs/1/tmp/large bs=1M skip=3 status=none | wc -c",
    );
    assert_eq!(tail.trim(), (SIZE - 3 * (1 << 20)).to_string());
}

#[test]
fn a_user_reaches_through_mfs_exactly_what_they_could_at_the_serving_node() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    ok_as(
        n1,
        ANA,
        "echo secret > /tmp/s; chmod 600 /tmp/s; echo open > /tmp/p; chmod 644 /tmp/p",
    );
    assert_eq!(ok_as(n2, ANA, "cat /mfs/1/tmp/s"), "secret\n");
    assert_eq!(ok_as(n2, BEN, "cat /mfs/1/tmp/p"), "open\n");
    for (uid, script, error) in [
        (BEN, "cat /mfs/1/tmp/s", "ermission denied"),
        (BEN, "echo x >> /mfs/1/tmp/p", "ermission denied"),
        (BEN, "chmod 666 /mfs/1/tmp/p", "not permitted"),
        // /tmp is sticky: only the owner removes.
        (BEN, "rm -f /mfs/1/tmp/s", "not permitted"),
        // Root of another node is nobody here: no more than any stranger.
        (0, "cat /mfs/1/tmp/s", "ermission denied"),
        (0, "echo x >> /mfs/1/tmp/p", "ermission denied"),
        (0, "chmod 666 /mfs/1/tmp/p", "not permitted"),
    ] {
        let done = sh_as(n2, uid, script);
        assert!(
            !done.status.success() && done.stderr.contains(error),
            "uid {uid}: {script}: {done:?}"
        );
    }
    assert_eq!(ok_as(n1, ANA, "cat /tmp/s /tmp/p"), "secret\nopen\n");
    // A group the caller holds besides its own counts as at the serving node.
    ok_as(
        n1,
        0,
        &format!("echo team > /tmp/g; chown {ANA}:{TEAM} /tmp/g; chmod 660 /tmp/g"),
    );
    let in_team = |script: &str| {
        let mut cmd = n2.command("setpriv");
        cmd.args([
            format!("--reuid={BEN}"),
            format!("--regid={BEN}"),
            format!("--groups={TEAM}"),
            "--".to_owned(),
            "sh".to_owned(),
            "-c".to_owned(),
            script.to_owned(),
        ]);
        cmd.output().expect("setpriv at node 2")
    };
    let read = in_team("echo more >> /mfs/1/tmp/g && cat /mfs/1/tmp/g");
    assert!(read.status.success(), "{read:?}");
    assert_eq!(String::from_utf8_lossy(&read.stdout), "team\nmore\n");
    let stranger = sh_as(n2, BEN, "cat /mfs/1/tmp/g");
    assert!(
        !stranger.status.success() && stranger.stderr.contains("ermission denied"),
        "{stranger:?}"
    );
    // What root makes through MFS belongs to nobody at the serving node.
    ok_as(n2, 0, "echo made > /mfs/1/tmp/by-root");
    assert_eq!(ok_as(n1, 0, "stat -c %u:%g /tmp/by-root"), "65534:65534\n");
}

#[test]
fn paths_resolve_as_at_the_serving_node_and_never_outside() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    wait_mfs(n1, 2);
    ok_as(
        n1,
        0,
        "echo at-1 > /tmp/only; ln -s /tmp/only /tmp/abs; ln -s ../../../../tmp/only /tmp/up; \
                  ln -s /mfs/2/tmp/only /tmp/into; mkdir /tmp/d; chmod 755 /tmp/d /tmp/only",
    );
    ok_as(n2, 0, "echo at-2 > /tmp/only");
    // Absolute and climbing symlinks lead to node 1's file, not to the reader's.
    assert_eq!(
        ok_as(
            n2,
            ANA,
            "cat /mfs/1/tmp/abs /mfs/1/tmp/up /mfs/1/tmp/d/../../tmp/only"
        ),
        "at-1\nat-1\nat-1\n"
    );
    assert_eq!(
        ok_as(n2, ANA, "readlink /mfs/1/tmp/abs"),
        "/mfs/1/tmp/only\n"
    );
    // `..` at a node's root stays there: /mfs/1/.. is /mfs, as the kernel walks it.
    assert_eq!(
        ok_as(n2, ANA, "cd /mfs/1/tmp && cd ../../1/tmp && cat only"),
        "at-1\n"
    );
    for (script, error) in [
        // Node 1's own /mfs is not served, directly or through a symlink.
        ("ls /mfs/1/mfs/2/tmp", "ermission denied"),
        ("cat /mfs/1/tmp/into", "ermission denied"),
        // Node 1's processes and devices are not files to serve.
        ("cat /mfs/1/proc/1/status", "ermission denied"),
        ("ls /mfs/1/proc", "ermission denied"),
        ("head -c 1 /mfs/1/dev/zero", "ermission denied"),
        ("touch /mfs/1/tmp/$(printf 'n%.0s' $(seq 256))", "too long"),
    ] {
        let done = sh_as(n2, ANA, script);
        assert!(
            !done.status.success() && done.stderr.contains(error),
            "{script}: {done:?}"
        );
    }
}

/// A private mapping, and a shared one read-only, of another node's file read its bytes; a
/// shared writable mapping's stores reach the serving node at msync(2).
#[test]
fn mappings_of_an_mfs_file_read_its_bytes_and_a_shared_ones_stores_reach_it_at_msync() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    ok_as(n1, ANA, "head -c 20000 /dev/urandom > /tmp/m");
    let expected = ok_as(n1, ANA, "sha256sum < /tmp/m");
    let script = "import mmap, hashlib, sys\n\
        f = open('/mfs/1/tmp/m', 'rb')\n\
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)\n\
        print(hashlib.sha256(m[:]).hexdigest() + '  -')\n\
        s = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)\n\
        print(hashlib.sha256(s[:]).hexdigest() + '  -')\n\
        g = open('/mfs/1/tmp/m', 'r+b')\n\
        w = mmap.mmap(g.fileno(), 0, flags=mmap.MAP_SHARED)\n\
        w[0:6] = b'stored'\n\
        w.flush()\n\
        print('flushed')\n";
    let out = ok_as(n2, ANA, &format!("python3 -c \"{script}\""));
    let expected = expected.lines().next();
    let mut lines = out.lines();
    assert_eq!(lines.next(), expected, "private");
    assert_eq!(lines.next(), expected, "shared, read-only");
    assert_eq!(lines.next(), Some("flushed"));
    assert_eq!(ok_as(n1, ANA, "head -c 6 /tmp/m"), "stored");
}

#[test]
fn here_home_and_lastexec_name_where_the_caller_runs_and_where_it_belongs() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n1, 2);
    assert_eq!(
        ok_as(n2, ANA, "readlink /mfs/here /mfs/home /mfs/lastexec"),
        "2\n2\n2\n"
    );
    ok_as(n2, ANA, "echo mine > /tmp/mine");
    assert_eq!(ok_as(n2, ANA, "cat /mfs/here/tmp/mine"), "mine\n");
    let script = "import os, sys\n\
        for line in sys.stdin:\n    print(*(os.readlink(f'/mfs/{s}') for s in ('here', 'home', 'lastexec')), flush=True)\n";
    let mut cmd = n1.command("mosrun");
    cmd.args(["python3", "-c", script]).stdin(Stdio::piped());
    let job = Job::spawn(n1, cmd).unwrap_or_else(|e| panic!("mosrun: {e}"));
    job.send(b"?\n").unwrap();
    job.wait_output("1 1 1\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    // Its calls are answered at home, by its husk, which the home daemon knows runs at 2.
    job.send(b"?\n").unwrap();
    job.wait_output("2 1 1\n", STEP)
        .unwrap_or_else(|e| panic!("{e}\n{}", n1.log()));
    job.close_stdin();
    job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
}

/// A job for `/mfs/magic`: each line of its stdin is a verb and a name, `make NAME` (create
/// /mfs/magic/tmp/NAME, write into it), `read NAME` (open it without O_CREAT, read it),
/// `child NAME` (read it by a child, `cat`, forked now) or `where -`; it answers with the verb, the name, what it read or did, and where
/// `/mfs/magic` leads afterwards for a call that creates nothing (readlink).
const MAGIC_JOB: &str = r#"
import os, subprocess, sys
for line in sys.stdin:
    verb, name = line.split()
    path = f'/mfs/magic/tmp/{name}'
    said = '-'
    if verb == 'make':
        with open(path, 'w') as f:
            f.write(f'{name}-contents')
        said = 'made'
    elif verb == 'read':
        with open(path) as f:
            said = f.read()
    elif verb == 'child':
        said = subprocess.run(['cat', path], capture_output=True, text=True).stdout
    print(verb, name, said, 'magic', os.readlink('/mfs/magic'), flush=True)
"#;

#[test]
fn magic_is_where_a_file_is_created_and_then_where_the_last_one_was() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));
    wait_mfs(n1, 2);
    wait_mfs(n1, 3);
    // A process that never created a file through magic: where it runs.
    assert_eq!(ok_as(n2, ANA, "readlink /mfs/magic"), "2\n");
    let mut cmd = n1.command("mosrun");
    cmd.args(["python3", "-c", MAGIC_JOB]).stdin(Stdio::piped());
    let job = Job::spawn(n1, cmd).unwrap_or_else(|e| panic!("mosrun: {e}"));
    let answer = |line: &str, expected: &str| {
        job.send(format!("{line}\n").as_bytes()).unwrap();
        job.wait_output(&format!("{expected}\n"), STEP)
            .unwrap_or_else(|e| panic!("{line}: {e}\n{}", n1.log()));
    };
    answer("where -", "where - - magic 1");
    job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    answer("where -", "where - - magic 2");
    // Created away: the call runs at home, by its husk, and the file is made where the
    // process runs. Each node's /tmp is its own.
    let name = format!("magic-{}", std::process::id());
    answer(
        &format!("make {name}"),
        &format!("make {name} made magic 2"),
    );
    let at = |node: &Node| sh(node, &format!("cat /tmp/{name}")).stdout;
    assert_eq!(at(n2), format!("{name}-contents"));
    assert_eq!((at(n1), at(n3)), (String::new(), String::new()));
    // Elsewhere, an open that creates nothing goes to the node of the last creation.
    job.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    answer(
        &format!("read {name}"),
        &format!("read {name} {name}-contents magic 2"),
    );
    answer(
        &format!("make {name}-b"),
        &format!("make {name}-b made magic 3"),
    );
    assert_eq!(
        sh(n3, &format!("cat /tmp/{name}-b")).stdout,
        format!("{name}-b-contents")
    );
    // A child forked after the creation inherits its node. The fork takes the job home
    // first, so the child runs at node 1 and finds node 3's file only through the job's node.
    answer(
        &format!("child {name}-b"),
        &format!("child {name}-b {name}-b-contents magic 3"),
    );
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 1);
    job.close_stdin();
    job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_process_selects_a_node_for_itself_and_the_children_it_forks_afterwards() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    ok_as(n1, ANA, "echo at-1 > /tmp/sel");
    let none = sh_as(n2, ANA, "readlink /mfs/selected");
    assert!(!none.status.success(), "{none:?}");
    // The background child is forked before the write (a clock tick before at least: start
    // times count in ticks, and a child of the tick of the write counts as forked after it):
    // it does not inherit the selection.
    let out = ok_as(
        n2,
        ANA,
        "(sleep 1; readlink /mfs/selected || echo early-child-none) & sleep 0.1; \
         echo 1 > /mfs/select; cat /mfs/select; readlink /mfs/selected; \
         sh -c 'cat /mfs/selected/tmp/sel'; wait",
    );
    assert_eq!(out, "1\n1\nat-1\nearly-child-none\n");
    let bad = sh_as(n2, ANA, "/bin/echo 9 > /mfs/select");
    assert!(
        !bad.status.success() && bad.stderr.contains("nvalid argument"),
        "{bad:?}"
    );
}

#[test]
fn nomfs_closes_a_nodes_files_to_the_others_and_mfs_opens_them_again() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    ok_as(n1, ANA, "echo f > /tmp/f");
    let denied = sh_as(n1, ANA, "mosctl nomfs");
    assert!(!denied.status.success(), "{denied:?}");
    ok_as(n1, 0, "mosctl nomfs");
    let closed = sh_as(n2, ANA, "cat /mfs/1/tmp/f");
    assert!(
        !closed.status.success() && closed.stderr.contains("ermission denied"),
        "{closed:?}"
    );
    // Node 1's own processes still reach its files through its MFS.
    assert_eq!(ok_as(n1, ANA, "cat /mfs/1/tmp/f"), "f\n");
    ok_as(n1, 0, "mosctl mfs");
    assert_eq!(ok_as(n2, ANA, "cat /mfs/1/tmp/f"), "f\n");
}

#[test]
fn a_node_killed_mid_read_fails_its_readers_within_seconds_and_the_rest_of_mfs_works() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    wait_mfs(n2, 3);
    ok_as(n1, ANA, "head -c 1000000 /dev/zero > /tmp/big");
    let script = "import sys, time\n\
        f = open('/mfs/1/tmp/big', 'rb')\n\
        print('read', len(f.read(4096)), flush=True)\n\
        sys.stdin.readline()\n\
        t = time.monotonic()\n\
        try:\n    f.read(4096)\n    print('read again')\n\
        except OSError as e:\n    print('failed', e.strerror, round(time.monotonic() - t), flush=True)\n";
    let mut cmd = n2.command("mosrun");
    cmd.args(["python3", "-c", script]).stdin(Stdio::piped());
    let job = Job::spawn(n2, cmd).unwrap_or_else(|e| panic!("mosrun: {e}"));
    job.wait_output("read 4096\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    n1.kill();
    job.send(b"go\n").unwrap();
    // The call waits at most the daemon's call timeout (5 s); allow for a busy machine.
    let out = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let line = out.lines().last().unwrap_or_default();
    let words: Vec<&str> = line.split(' ').collect();
    assert!(
        line.starts_with("failed Input/output error")
            || line.starts_with("failed Transport endpoint"),
        "{out}"
    );
    let waited: u64 = words.last().unwrap().parse().unwrap();
    assert!(waited <= 10, "the read failed only after {waited} s");
    let fresh = sh_as(n2, ANA, "ls /mfs/1/tmp");
    assert!(!fresh.status.success(), "{fresh:?}");
    ok_as(
        n2,
        ANA,
        "echo still > /mfs/3/tmp/x; cat /mfs/3/tmp/x; cat /mfs/2/tmp/x 2>/dev/null || true",
    );
}

#[test]
fn removed_open_files_and_renames_racing_lookups_give_clear_answers() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    ok_as(n1, ANA, "echo kept > /tmp/r; echo a > /tmp/a");
    let script = "import os, sys\n\
        f = open('/mfs/1/tmp/r', 'rb')\n\
        print('open', flush=True)\n\
        sys.stdin.readline()\n\
        print(f.read().decode().strip(), os.fstat(f.fileno()).st_nlink, flush=True)\n";
    let mut cmd = n2.command("mosrun");
    cmd.args(["python3", "-c", script]).stdin(Stdio::piped());
    let job = Job::spawn(n2, cmd).unwrap_or_else(|e| panic!("mosrun: {e}"));
    job.wait_output("open\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    ok_as(n1, ANA, "rm /tmp/r");
    job.send(b"go\n").unwrap();
    // As with a local file: the open file is still read, and has no name left.
    job.wait_output("kept 0\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));

    // Node 1 renames the file back and forth while node 2 reads it by both names: each read
    // finds the file or says it is not there, and both loops end.
    let mut renamer = n1.command("setpriv");
    renamer.args([
        &format!("--reuid={ANA}"),
        &format!("--regid={ANA}"),
        "--clear-groups",
        "sh",
        "-c",
        "cd /tmp; for i in $(seq 300); do mv a b; mv b a; done",
    ]);
    let mut renamer = renamer.spawn().expect("spawn renamer");
    let reads = ok_as(
        n2,
        ANA,
        "for i in $(seq 300); do cat /mfs/1/tmp/a /mfs/1/tmp/b 2>&1; done | sort -u",
    );
    let deadline = Instant::now() + STEP;
    while renamer.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the renames did not end");
        std::thread::sleep(Duration::from_millis(50));
    }
    for line in reads.lines() {
        assert!(
            line.trim() == "a" || line.contains("No such file or directory"),
            "unexpected: {line}\n{reads}"
        );
    }
    assert!(
        reads.lines().any(|l| l == "a"),
        "never read the file:\n{reads}"
    );
    assert_eq!(ok_as(n1, ANA, "cat /tmp/a"), "a\n");
}

/// How many mounts a node has at /mfs.
fn mfs_mounts(node: &Node) -> String {
    ok_as(node, 0, "awk '$2 == \"/mfs\"' /proc/self/mounts | wc -l")
}

#[test]
fn the_daemon_unmounts_mfs_as_it_stops_and_mounts_over_a_crashed_ones() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let n1 = lab.node(1);
    wait_mfs(n1, 2);
    assert_eq!(mfs_mounts(n1), "1\n");
    n1.stop_daemon().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(mfs_mounts(n1), "0\n");
    n1.start_daemon().unwrap_or_else(|e| panic!("{e}"));
    wait_mfs(n1, 2);

    // A daemon killed outright leaves its mount behind, which answers no more.
    ok_as(
        n1,
        0,
        "for p in $(cat /proc/1/task/1/children); do \
             if tr '\\0' ' ' < /proc/$p/cmdline | grep -q -- ' --map '; then kill -9 $p; fi; done",
    );
    let deadline = Instant::now() + STEP;
    loop {
        let stale = sh_as(n1, ANA, "ls /mfs/2/");
        if stale.stderr.contains("not connected") {
            break;
        }
        assert!(Instant::now() < deadline, "no stale mount: {stale:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(mfs_mounts(n1), "1\n");
    n1.start_daemon().unwrap_or_else(|e| panic!("{e}"));
    wait_mfs(n1, 2);
    assert_eq!(mfs_mounts(n1), "1\n");

    // A second daemon in the node leaves the first one's live mount alone.
    let mut second = n1.command("mosixd");
    second
        .args([
            "--map",
            path(&lab.map_path()),
            "--key",
            path(&lab.key_path()),
        ])
        .args([
            "--node",
            "1",
            "--socket",
            "/run/mosix/second.sock",
            "--port",
            "4662",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut second = second.spawn().expect("start a second daemon");
    // Its log is read on a thread, so that a daemon that never says it stays within STEP.
    let log = std::io::BufReader::new(second.stderr.take().expect("piped"));
    let (lines, said) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(log).map_while(Result::ok) {
            if lines.send(line).is_err() {
                return;
            }
        }
    });
    let deadline = Instant::now() + STEP;
    let mut seen = String::new();
    let refused = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match said.recv_timeout(left) {
            Ok(line)
                if line.contains("cannot mount MFS at /mfs: another file system is mounted") =>
            {
                break true;
            }
            Ok(line) => seen.push_str(&line),
            Err(_) => break false,
        }
    };
    let _ = second.kill();
    let _ = second.wait();
    assert!(refused, "{seen}");
    assert_eq!(mfs_mounts(n1), "1\n");
    wait_mfs(n1, 2);
}

fn path(p: &std::path::Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// A Python program that tries a write lock on byte 0 of the file it is given (fcntl) and a
/// flock on it, without waiting, lets each go at once, and says of each whether it was
/// `taken` or `held` by another.
const TRY_LOCKS: &str = r#"import fcntl, sys
f = open(sys.argv[1], 'r+')
for name, take, free in [
        ('lockf', lambda: fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 0),
         lambda: fcntl.lockf(f, fcntl.LOCK_UN, 1, 0)),
        ('flock', lambda: fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB),
         lambda: fcntl.flock(f, fcntl.LOCK_UN))]:
    try:
        take()
        free()
        print(name, 'taken')
    except OSError:
        print(name, 'held')
"#;

/// What [`TRY_LOCKS`] says of `file` at `node`, run as ana.
fn try_locks(node: &Node, file: &str) -> String {
    ok_as(node, ANA, &format!("python3 -c \"{TRY_LOCKS}\" {file}"))
}

/// `python3 -c SCRIPT` as root in `node`, its outputs collected; killed when dropped.
fn python(node: &Node, script: &str) -> Captured {
    let mut cmd = node.command("python3");
    cmd.args(["-c", script]);
    Captured::spawn(cmd, format!("node {}: python3", node.id()))
}

/// A process at `node` that holds fcntl's write lock on the whole of `file` (length 0) until
/// it is dropped.
fn hold_lock(node: &Node, file: &str) -> Captured {
    let holder = python(
        node,
        &format!(
            "import fcntl, time\n\
             f = open('{file}', 'r+')\n\
             fcntl.lockf(f, fcntl.LOCK_EX)\n\
             print('locked', flush=True)\n\
             time.sleep(600)\n"
        ),
    );
    holder.wait_stdout("locked\n", STEP);
    holder
}

/// A file at node 1 that everyone may read and write, also root's processes elsewhere
/// (nobody at node 1).
fn shared_file(n1: &Node, file: &str) {
    ok_as(n1, ANA, &format!("echo lock > {file} && chmod 666 {file}"));
}

#[test]
fn locks_through_mfs_hold_across_nodes() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    shared_file(n1, "/tmp/lk");
    shared_file(n1, "/tmp/fl");
    // A process at node 1 holds a write lock (fcntl, on byte 0) on its own file, and a flock
    // through its MFS on another, until told to let go. (On one file they would conflict:
    // a flock through MFS is a lock on the whole file.)
    let script = "import fcntl, sys\n\
        f = open('/tmp/lk', 'r+')\n\
        fcntl.lockf(f, fcntl.LOCK_EX, 1, 0)\n\
        g = open('/mfs/1/tmp/fl', 'r')\n\
        fcntl.flock(g, fcntl.LOCK_EX)\n\
        print('locked', flush=True)\n\
        sys.stdin.readline()\n";
    let mut cmd = n1.command("mosrun");
    cmd.args(["python3", "-c", script]).stdin(Stdio::piped());
    let holder = Job::spawn(n1, cmd).unwrap_or_else(|e| panic!("mosrun: {e}"));
    holder
        .wait_output("locked\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    for file in ["/mfs/1/tmp/lk", "/mfs/1/tmp/fl"] {
        assert_eq!(try_locks(n2, file), "lockf held\nflock held\n", "{file}");
    }
    holder.close_stdin();
    holder.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    for file in ["/mfs/1/tmp/lk", "/mfs/1/tmp/fl"] {
        assert_eq!(try_locks(n2, file), "lockf taken\nflock taken\n", "{file}");
    }
    // A lock that waits gets it once the holder lets go.
    let waits = ok_as(
        n2,
        ANA,
        "flock /mfs/1/tmp/lk sleep 1 & sleep 0.3; flock /mfs/1/tmp/lk echo waited; wait",
    );
    assert_eq!(waits, "waited\n");
}

#[test]
fn a_whole_file_lock_through_mfs_holds_against_range_locks_of_other_nodes_and_the_serving_node() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));
    wait_mfs(n2, 1);
    wait_mfs(n3, 1);
    shared_file(n1, "/tmp/w");
    // fcntl's write lock on the whole file (length 0), through MFS from node 2.
    let holder = hold_lock(n2, "/mfs/1/tmp/w");
    // A range lock and a flock through MFS from node 3 are refused, and so is a process of
    // node 1 itself with a range lock; a flock at node 1 is not (Linux never makes flock and
    // POSIX locks meet, and MFS holds its locks as POSIX locks there).
    assert_eq!(try_locks(n3, "/mfs/1/tmp/w"), "lockf held\nflock held\n");
    assert_eq!(try_locks(n1, "/tmp/w"), "lockf held\nflock taken\n");
    // The holder's death frees the file.
    drop(holder);
    wait_until(
        "the dead holder's lock gone",
        STEP,
        || try_locks(n3, "/mfs/1/tmp/w") == "lockf taken\nflock taken\n",
        || n2.log(),
    );
    assert_eq!(try_locks(n1, "/tmp/w"), "lockf taken\nflock taken\n");
}

#[test]
fn a_process_that_opens_a_file_twice_through_mfs_is_one_lock_owner() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    shared_file(n1, "/tmp/w");
    // Overlapping write locks through two opens of one process: POSIX locks are the
    // process's, so the second replaces part of the first. A close of either descriptor then
    // drops both (as a close does locally). flock locks belong to an open file: the process's
    // second open is refused one.
    let script = "import fcntl, sys\n\
        f = open('/mfs/1/tmp/w', 'r+')\n\
        g = open('/mfs/1/tmp/w', 'r+')\n\
        fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB, 10, 0)\n\
        fcntl.lockf(g, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, 5)\n\
        print('locked twice', flush=True)\n\
        sys.stdin.readline()\n\
        g.close()\n\
        print('closed one', flush=True)\n\
        sys.stdin.readline()\n\
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
        h = open('/mfs/1/tmp/w', 'r+')\n\
        try:\n\
        \x20   fcntl.flock(h, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
        \x20   print('second flock taken', flush=True)\n\
        except OSError:\n\
        \x20   print('second flock held', flush=True)\n";
    let job = Job::start(n2, &["python3", "-c", script], Stdio::piped())
        .unwrap_or_else(|e| panic!("mosrun: {e}"));
    job.wait_output("locked twice\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(try_locks(n2, "/mfs/1/tmp/w"), "lockf held\nflock held\n");
    job.send(b"\n").unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("closed one\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(try_locks(n2, "/mfs/1/tmp/w"), "lockf taken\nflock taken\n");
    job.send(b"\n").unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("second flock held\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
}

/// How long a process that waits for a lock through MFS may take to act on a signal: the
/// daemon looks at it every 50 ms; this bounds a wait that would otherwise last as long as
/// the lock is held.
const SIGNAL_BOUND: Duration = Duration::from_secs(20);

/// The PID (in its node) that a [`python`] program printed as its first line.
fn printed_pid(program: &Captured) -> u32 {
    program.wait_stdout("\n", STEP);
    let out = program.stdout();
    out.lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or_else(|| panic!("no PID printed first:\n{}", program.outputs()))
}

/// Waits until `program`, process `pid` of `node`, is blocked in system call `nr`.
fn wait_in_syscall(node: &Node, program: &Captured, pid: u32, nr: libc::c_long) {
    let syscall = format!("/proc/{pid}/syscall");
    wait_until(
        &format!("node {}: process {pid} in system call {nr}", node.id()),
        STEP,
        || {
            let now = sh(node, &format!("cat {syscall}")).stdout;
            now.split_whitespace().next() == Some(nr.to_string().as_str())
        },
        || {
            let status = sh(node, &format!("cat {syscall} /proc/{pid}/status")).stdout;
            format!("{status}\n{}", program.outputs())
        },
    );
}

#[test]
fn a_process_waiting_for_a_lock_through_mfs_takes_its_signals() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    shared_file(n1, "/tmp/w");
    let _holder = hold_lock(n1, "/tmp/w");

    // F_SETLKW through MFS, and a signal with a handler: the call ends with EINTR (Python
    // runs the handler, which raises, only once the call returned EINTR; a handler that
    // returned would have Python call it again).
    let waiter = python(
        n2,
        "import fcntl, os, signal\n\
         class Interrupted(Exception): pass\n\
         def interrupted(signum, frame): raise Interrupted()\n\
         signal.signal(signal.SIGUSR1, interrupted)\n\
         f = open('/mfs/1/tmp/w', 'r+')\n\
         print(os.getpid(), flush=True)\n\
         try:\n\
         \x20   fcntl.lockf(f, fcntl.LOCK_EX)\n\
         \x20   print('locked', flush=True)\n\
         except Interrupted:\n\
         \x20   print('interrupted', flush=True)\n",
    );
    let pid = printed_pid(&waiter);
    wait_in_syscall(n2, &waiter, pid, libc::SYS_fcntl);
    assert!(sh(n2, &format!("kill -USR1 {pid}")).status.success());
    waiter.wait_stdout("interrupted\n", SIGNAL_BOUND);
    let waited = waiter.finish(STEP);
    assert!(waited.status.success(), "{waited:?}");

    // A blocking flock through MFS, and SIGKILL: the process dies and is reaped.
    let waiter = python(
        n2,
        "import fcntl, os\n\
         f = open('/mfs/1/tmp/w', 'r+')\n\
         print(os.getpid(), flush=True)\n\
         fcntl.flock(f, fcntl.LOCK_EX)\n\
         print('locked', flush=True)\n",
    );
    let pid = printed_pid(&waiter);
    wait_in_syscall(n2, &waiter, pid, libc::SYS_flock);
    assert!(sh(n2, &format!("kill -KILL {pid}")).status.success());
    wait_until(
        "the killed waiter reaped",
        SIGNAL_BOUND,
        || !sh(n2, &format!("test -e /proc/{pid}")).status.success(),
        || waiter.outputs(),
    );
    let killed = waiter.finish(STEP);
    assert_eq!(killed.stdout, format!("{pid}\n"), "{killed:?}");
    // The holder still holds: neither waiter took the lock.
    assert_eq!(try_locks(n2, "/mfs/1/tmp/w"), "lockf held\nflock held\n");
}

/// mknod through MFS makes a regular file, a FIFO or a socket at the serving node, as the
/// caller, and refuses a device; a directory's fsync reaches the serving node (refused
/// there once it closed its files) rather than being dropped as a call MFS lacks.
#[test]
fn mknod_makes_files_but_no_device_and_a_directory_fsync_reaches_the_serving_node() {
    if !require_root() {
        return;
    }
    let lab = start_lab(2);
    let (n1, n2) = (lab.node(1), lab.node(2));
    wait_mfs(n2, 1);
    ok_as(n1, ANA, "mkdir /tmp/made");
    let go = "/tmp/fsync-go";
    let program = python(
        n2,
        &format!(
            "import os, stat, time\n\
             os.setgid({ANA}); os.setuid({ANA})\n\
             d = '/mfs/1/tmp/made'\n\
             os.mknod(d + '/file', 0o640 | stat.S_IFREG)\n\
             os.mkfifo(d + '/fifo')\n\
             try:\n    os.mknod(d + '/null', 0o600 | stat.S_IFCHR, os.makedev(1, 3))\n    print('device made', flush=True)\n\
             except PermissionError:\n    print('device refused', flush=True)\n\
             fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)\n\
             os.fsync(fd)\n\
             print('synced', flush=True)\n\
             while not os.path.exists('{go}'):\n    time.sleep(0.02)\n\
             try:\n    os.fsync(fd)\n    print('synced again', flush=True)\n\
             except OSError as e:\n    print('refused', e.errno, flush=True)\n"
        ),
    );
    program.wait_stdout("synced\n", STEP);
    assert!(
        program.stdout().contains("device refused"),
        "{}",
        program.outputs()
    );
    let made = ok_as(n1, 0, "stat -c '%F %u %a' /tmp/made/file /tmp/made/fifo");
    assert_eq!(made, "regular empty file 1001 640\nfifo 1001 644\n");
    assert!(!sh(n1, "test -e /tmp/made/null").status.success());
    ok_as(n1, 0, "mosctl nomfs");
    ok_as(n2, 0, &format!("touch {go}"));
    let done = program.finish(STEP);
    assert!(
        done.stdout.contains(&format!("refused {}", libc::EACCES)),
        "{done:?}"
    );
}
