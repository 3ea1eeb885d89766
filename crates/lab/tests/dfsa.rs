//! DFSA in a 3-node lab with real daemons: a process away from home opens, stats and reads
//! files under MFS's numbered directories where it runs, with the descriptor numbers home
//! would give, and its files go with it to another node and home again at their offsets.
//! Each node has a private /tmp, so node 3's /tmp/dfsa is reachable from the others only as
//! /mfs/3/tmp/dfsa. The process's home is node 1, whose own tree (/mfs/1) stays at home.
//! Whether a descriptor lives where the process runs or at home shows in /proc: home's shell
//! holds a placeholder (`/`) for a file opened away, and the husk at the remote holds the
//! file itself.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use rmosix_lab::{Job, Lab, LabConfig, Node, bin_dir_of_current_test, processes_in, require_root};

/// The programs of these tests.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/dfsa");
/// Deadline of one step: a command, a migration, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// Lines of `seq` in the data file (about 2.7 MB).
const LINES: u32 = 400_000;
/// Node 3's data file, as every node names it.
const DATA: &str = "/mfs/3/tmp/dfsa/data";

fn files_program() -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dfsa")
        .join("files");
    rmosix_lab::compiled(format!("{PROGS}/files.c"), out, &["-Wextra", "-Werror"])
}

/// What `seq 1 LINES` prints: the data file's content.
fn data() -> Vec<u8> {
    (1..=LINES)
        .map(|i| format!("{i}\n"))
        .collect::<String>()
        .into_bytes()
}

/// FNV-1a, as files.c sums what it reads.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |sum, &b| {
        (sum ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// `sh -c SCRIPT` as root at `node`, which must succeed.
fn sh(node: &Node, script: &str) -> String {
    let done = node
        .run("sh", &["-c", script], STEP)
        .unwrap_or_else(|e| panic!("node {}: {e}", node.id()));
    assert!(
        done.status.success(),
        "node {}: {script}: {done:?}",
        node.id()
    );
    done.stdout
}

/// Wait until `node`'s MFS shows node 3's data.
fn wait_data(node: &Node) {
    let deadline = Instant::now() + STEP;
    while !node
        .run("test", &["-r", DATA], STEP)
        .is_ok_and(|r| r.status.success())
    {
        assert!(
            Instant::now() < deadline,
            "no {DATA} at node {}:\n{}",
            node.id(),
            node.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The program's conversation: each command goes with a fresh tag, and its answer is the
/// rest of the line that starts with it.
struct Files<'lab> {
    job: Job<'lab>,
    said: u32,
}

impl Files<'_> {
    fn ask(&mut self, command: &str) -> String {
        self.said += 1;
        let tag = format!("t{}", self.said);
        self.job
            .send(format!("{tag} {command}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        let head = format!("\n{tag} ");
        self.job
            .wait_output(&head, STEP)
            .unwrap_or_else(|e| panic!("{command}: {e}"));
        // The line may still be arriving: wait for its end.
        let deadline = Instant::now() + STEP;
        loop {
            let out = String::from_utf8_lossy(&self.job.stdout()).into_owned();
            let at = out.find(&head).expect("the answer") + head.len();
            if let Some((line, _)) = out[at..].split_once('\n') {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "{command}: no whole answer");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Opens `path` and returns its descriptor.
    fn open(&mut self, path: &str) -> i32 {
        self.open_like(&format!("open {path}"))
    }

    /// Runs `command`, which answers with a new descriptor, and returns it.
    fn open_like(&mut self, command: &str) -> i32 {
        let answer = self.ask(command);
        let fd = answer.strip_prefix("fd ").and_then(|n| n.parse().ok());
        fd.unwrap_or_else(|| panic!("{command}: {answer}\n{}", self.job.outputs()))
    }

    /// Reads `len` bytes of `fd`: how many came and their sum.
    fn read(&mut self, fd: i32, len: usize) -> (usize, u64) {
        let answer = self.ask(&format!("read {fd} {len}"));
        let words: Vec<&str> = answer.split_whitespace().collect();
        match words.as_slice() {
            ["read", n, "sum", sum] => (n.parse().unwrap(), sum.parse().unwrap()),
            _ => panic!("read {fd}: {answer}\n{}", self.job.outputs()),
        }
    }

    fn pos(&mut self, fd: i32) -> u64 {
        let answer = self.ask(&format!("pos {fd}"));
        let pos = answer.strip_prefix("pos ").and_then(|n| n.parse().ok());
        pos.unwrap_or_else(|| panic!("pos {fd}: {answer}"))
    }

    fn close(&mut self, fd: i32) {
        let answer = self.ask(&format!("close {fd}"));
        assert_eq!(answer, "closed 0", "close {fd}");
    }

    /// Where descriptor `fd` of the process points in its home shell.
    fn at_home(&self, fd: i32) -> String {
        let link = format!("/proc/{}/fd/{fd}", self.job.pid());
        let shown = self.job.tool("readlink", &[&link]);
        shown.unwrap_or_else(|e| panic!("{e}")).trim().to_owned()
    }

    /// The husk of the process at `node`, by its host PID.
    fn husk(&self, node: &Node) -> u32 {
        let husk = processes_in(node).into_iter().find(|p| p.name == "files");
        husk.unwrap_or_else(|| panic!("no husk at node {}", node.id()))
            .host_pid
    }

    /// The open flags of descriptor `fd` in the husk at `node`, as its fdinfo shows them.
    fn husk_flags(&self, node: &Node, fd: i32) -> i32 {
        let info = std::fs::read_to_string(format!("/proc/{}/fdinfo/{fd}", self.husk(node)));
        let info = info.unwrap_or_else(|e| panic!("fdinfo {fd} at node {}: {e}", node.id()));
        let flags = info.lines().find_map(|l| l.strip_prefix("flags:"));
        i32::from_str_radix(flags.expect("flags").trim(), 8).expect("octal flags")
    }

    /// Whether the husk at `node` holds descriptor `fd`: a file opened where it runs (a
    /// forwarded descriptor lives in home's shell only).
    fn husk_holds(&self, node: &Node, fd: i32) -> bool {
        Path::new(&format!("/proc/{}/fd/{fd}", self.husk(node))).exists()
    }

    /// Where descriptor `fd` points in the husk at `node`.
    fn at_remote(&self, node: &Node, fd: i32) -> String {
        let link = std::fs::read_link(format!("/proc/{}/fd/{fd}", self.husk(node)));
        link.map(|p| p.display().to_string())
            .unwrap_or_else(|e| panic!("fd {fd} of the husk at node {}: {e}", node.id()))
    }
}

/// Waits until home's daemon says `job` runs at home again, as it does once the process
/// came home on its own (its table follows the process's report).
fn comes_home(job: &Job) {
    let deadline = Instant::now() + STEP;
    while job.location().unwrap_or_else(|e| panic!("{e}")) != 1 {
        assert!(Instant::now() < deadline, "not home:\n{}", job.outputs());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A 3-node lab whose node 3 holds the data, visible at every node.
fn data_lab() -> Lab {
    let lab = Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"));
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));
    sh(
        n3,
        &format!(
            "mkdir -p /tmp/dfsa && seq 1 {LINES} > /tmp/dfsa/data \
             && ln -s /etc/hostname /tmp/dfsa/away && chmod -R a+rX /tmp/dfsa && chmod 1777 /tmp/dfsa"
        ),
    );
    sh(n1, "echo home > /tmp/home-file && chmod a+r /tmp/home-file");
    for node in [n1, n2, n3] {
        wait_data(node);
    }
    lab
}

/// Each node's own tree of system files (its /tmp is private), listed as a prefix of
/// system files by every daemon.
const SAME: &str = "/tmp/same";

/// A 3-node lab whose nodes each hold `SAME/data`, the same everywhere, and `SAME/differs`,
/// which differs by one byte (the node's number) at each.
fn same_files_lab() -> Lab {
    let mut cfg = LabConfig::new(3, bin_dir_of_current_test());
    cfg.daemon_args = vec![format!("--same-files={SAME}/")];
    let lab = Lab::start(cfg).unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"));
    for node in lab.nodes() {
        let id = node.id();
        sh(
            node,
            &format!(
                "mkdir -p {SAME} && seq 1 {LINES} > {SAME}/data \
                 && echo 'from node {id}' > {SAME}/differs && chmod -R a+rX {SAME}"
            ),
        );
    }
    lab
}

/// `files` under mosrun at node 1, ready for commands.
fn start_files(lab: &Lab) -> Files<'_> {
    let program = files_program();
    let mut cmd = lab.node(1).command("mosrun");
    cmd.arg(&program)
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    Files { job, said: 0 }
}

/// Ends the program, which must exit with 0.
fn end_files(files: Files<'_>) {
    files.job.send(b"end\n").unwrap_or_else(|e| panic!("{e}"));
    let done = files.job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
}

#[test]
fn files_of_mfs_are_opened_and_read_where_the_process_runs_and_follow_it() {
    if !require_root() {
        return;
    }
    let lab = data_lab();
    tour_files(&lab);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A lock belongs to the open file that took it, and a move opens a file held away anew: so a
/// lock on a file opened away is taken at home, the process brought home with its files, and
/// the file stays at home while the process moves on. The lock then holds at every step: a
/// process at node 2 cannot take a write lock on it.
#[test]
fn a_lock_on_a_file_opened_away_is_taken_at_home_and_holds_wherever_the_process_goes() {
    if !require_root() {
        return;
    }
    let lab = data_lab();
    let (n2, n3) = (lab.node(2), lab.node(3));
    sh(
        n3,
        "echo locked > /tmp/dfsa/locked && chmod 666 /tmp/dfsa/locked",
    );
    let path = "/mfs/3/tmp/dfsa/locked";
    let held = || {
        sh(
            n2,
            &format!(
                "python3 -c 'import fcntl
f = open(\"{path}\", \"r+\")
try:
    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    print(\"free\")
except OSError:
    print(\"held\")'"
            ),
        )
    };
    let mut files = start_files(&lab);
    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    let fd = files.open(path);
    assert_eq!(files.at_home(fd), "/", "opened away");
    assert_eq!(held(), "free\n");
    assert_eq!(files.ask(&format!("lock {fd}")), "locked 0");
    comes_home(&files.job);
    assert_eq!(files.at_home(fd), path);
    assert_eq!(held(), "held\n");
    files.job.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.at_home(fd), path, "the file stays at home");
    assert_eq!(held(), "held\n");
    assert_eq!(files.read(fd, 7), (7, fnv(b"locked\n")));
    end_files(files);
    assert_eq!(held(), "free\n");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A directory of the host's, removed when dropped.
struct HostDir(std::path::PathBuf);

impl Drop for HostDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A directory every daemon declares the same everywhere (`mosixd --dfsa DIR`, as a shared
/// NFS mount would be): its files are opened and read where the process runs, under home's
/// numbers, and opened again at home, at their offset, when it returns. The lab's nodes share
/// the host's file system outside /tmp, so a directory of the target's is one tree for all.
#[test]
fn files_of_a_declared_consistent_tree_are_read_where_the_process_runs_and_follow_it_home() {
    if !require_root() {
        return;
    }
    let shared = HostDir(
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("dfsa-shared-{}", std::process::id())),
    );
    std::fs::create_dir_all(&shared.0).unwrap_or_else(|e| panic!("{}: {e}", shared.0.display()));
    let path = shared.0.join("data");
    let data = data();
    std::fs::write(&path, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let path = path.display().to_string();
    let mut cfg = LabConfig::new(3, bin_dir_of_current_test());
    cfg.daemon_args = vec![format!("--dfsa={}", shared.0.display())];
    let lab = Lab::start(cfg).unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"));
    let mut files = start_files(&lab);
    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    let fd = files.open(&path);
    assert_eq!(files.at_home(fd), "/", "home holds a placeholder only");
    assert_eq!(files.at_remote(lab.node(2), fd), path);
    let first = 1_000_000;
    assert_eq!(files.read(fd, first), (first, fnv(&data[..first])));
    files.job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.at_home(fd), path);
    assert_eq!(files.pos(fd), first as u64);
    let rest = data.len() - first;
    assert_eq!(files.read(fd, rest), (rest, fnv(&data[first..])));
    end_files(files);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A tree nodes 1 and 2 declare the same everywhere and node 3 does not: a file of it that
/// the process holds at node 2 cannot be opened again at node 3, so it goes back through home
/// when the process moves there. Home's shell opens it over its placeholder, at its offset,
/// before node 3 runs the process, which reads on through home; and home again, the file is
/// home's already. A file of the tree removed meanwhile cannot be opened at home either: the
/// move fails, and the process runs on at node 2 with its file and home's placeholder.
#[test]
fn a_file_of_a_tree_the_next_node_does_not_share_goes_back_through_home() {
    if !require_root() {
        return;
    }
    let shared = HostDir(
        Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("dfsa-unshared-{}", std::process::id())),
    );
    std::fs::create_dir_all(&shared.0).unwrap_or_else(|e| panic!("{}: {e}", shared.0.display()));
    let (path, gone) = (shared.0.join("data"), shared.0.join("gone"));
    let data = data();
    std::fs::write(&path, &data).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    std::fs::write(&gone, "gone\n").unwrap_or_else(|e| panic!("{}: {e}", gone.display()));
    let (path, gone) = (path.display().to_string(), gone.display().to_string());
    let mut cfg = LabConfig::new(3, bin_dir_of_current_test());
    cfg.daemon_args = vec![format!("--dfsa={}", shared.0.display())];
    cfg.node_daemon_args.insert(3, Vec::new());
    let lab = Lab::start(cfg).unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"));
    let (n2, n3) = (lab.node(2), lab.node(3));
    let mut files = start_files(&lab);
    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    let fd = files.open(&path);
    assert_eq!(files.at_home(fd), "/", "home holds a placeholder only");
    assert_eq!(files.at_remote(n2, fd), path);
    let first = 1_000_000;
    assert_eq!(files.read(fd, first), (first, fnv(&data[..first])));

    // Removed meanwhile: home cannot open it, and the process stays with both files.
    let removed = files.open(&gone);
    std::fs::remove_file(&gone).unwrap_or_else(|e| panic!("{gone}: {e}"));
    let refused = files
        .job
        .migrate("3")
        .expect_err("a removed file cannot go home");
    let why = refused.to_string();
    assert!(
        why.contains(&gone) && why.contains("runs on at node 2"),
        "{why}"
    );
    assert_eq!(files.job.location().unwrap_or_else(|e| panic!("{e}")), 2);
    assert_eq!(files.at_home(fd), "/", "the placeholder is back");
    assert_eq!(files.at_home(removed), "/");
    assert_eq!(files.at_remote(n2, fd), path);
    assert_eq!(files.read(removed, 5), (5, fnv(b"gone\n")));
    files.close(removed);

    // On to node 3, which does not share the tree: home's shell holds the file now.
    files.job.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.job.location().unwrap_or_else(|e| panic!("{e}")), 3);
    assert_eq!(files.at_home(fd), path, "home took the file back");
    assert!(
        !files.husk_holds(n3, fd),
        "node 3 holds no file of the tree"
    );
    assert_eq!(files.pos(fd), first as u64);
    let second = 500_000;
    let upto = first + second;
    assert_eq!(files.read(fd, second), (second, fnv(&data[first..upto])));

    files.job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.at_home(fd), path);
    assert_eq!(files.pos(fd), upto as u64);
    let rest = data.len() - upto;
    assert_eq!(files.read(fd, rest + 1), (rest, fnv(&data[upto..])));
    end_files(files);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A call only home can serve on a file opened away (`dup2` of home's file over it) brings
/// the process home, where its files replace their placeholders and the call runs.
#[test]
fn a_call_only_home_serves_brings_the_process_home_with_its_files() {
    if !require_root() {
        return;
    }
    let lab = data_lab();
    let mut files = start_files(&lab);
    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    let fd = files.open(DATA);
    assert_eq!(files.at_home(fd), "/");
    let data = data();
    assert_eq!(files.read(fd, 1000), (1000, fnv(&data[..1000])));
    let copy = files.open_like(&format!("dup {fd}"));
    // Node 1's own /tmp: opened at home.
    let home = files.open("/tmp/home-file");
    assert_eq!(files.at_home(home), "/tmp/home-file");
    assert_eq!(files.open_like(&format!("dup2 {home} {fd}")), fd);
    comes_home(&files.job);
    assert_eq!(files.at_home(fd), "/tmp/home-file");
    assert_eq!(files.at_home(copy), DATA);
    // The copy kept the offset the file had away.
    assert_eq!(files.read(copy, 1000), (1000, fnv(&data[1000..2000])));
    end_files(files);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A duplicate of a file opened away (dup, fcntl's F_DUPFD and F_DUPFD_CLOEXEC, dup2 over a
/// free number, over one of home's descriptors and over another file opened away, dup3) is
/// made where the process runs, under the number home gives, with the close-on-exec flag
/// the call asks for, and shares the file's offset: there, at the next node and at home.
#[test]
fn duplicates_of_a_file_opened_away_are_made_there_and_share_it_wherever_the_process_goes() {
    if !require_root() {
        return;
    }
    let lab = data_lab();
    let (n2, n3) = (lab.node(2), lab.node(3));
    let data = data();
    let mut files = start_files(&lab);
    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    let fd = files.open(DATA);
    let home = files.open("/tmp/home-file");
    assert_eq!(files.read(fd, 1000), (1000, fnv(&data[..1000])));
    let copy = files.open_like(&format!("dup {fd}"));
    let high = files.open_like(&format!("dupfd {fd} 50"));
    let free = files.open_like(&format!("dup2 {fd} 40"));
    let over = files.open_like(&format!("dup2 {fd} {home}"));
    let other = files.open(DATA);
    let onto_other = files.open_like(&format!("dup2 {fd} {other}"));
    let exec3 = files.open_like(&format!("dup3 {fd} 45"));
    let exec_fd = files.open_like(&format!("dupfdx {fd} 60"));
    assert_eq!(
        (high, free, over, onto_other, exec3, exec_fd),
        (50, 40, home, other, 45, 60)
    );
    // dup2 of a descriptor over itself changes nothing, its close-on-exec flag included.
    assert_eq!(files.open_like(&format!("dup2 {exec3} {exec3}")), exec3);
    assert_eq!(files.job.location().unwrap_or_else(|e| panic!("{e}")), 2);
    let dups = [copy, high, free, over, other, exec3, exec_fd];
    for dup in dups {
        assert_eq!(files.at_home(dup), "/", "{dup}: a placeholder at home");
        assert_eq!(files.at_remote(n2, dup), DATA, "{dup}");
    }
    // The numbers home gave: the lowest it had free.
    assert_eq!((home, copy, other), (fd + 1, fd + 2, fd + 3));
    let close_on_exec = |files: &mut Files, at: &str| {
        for dup in dups {
            let want = if dup == exec3 || dup == exec_fd { 1 } else { 0 };
            let got = files.ask(&format!("cloexec {dup}"));
            assert_eq!(got, format!("cloexec {want}"), "{dup} at {at}");
        }
    };
    close_on_exec(&mut files, "node 2");
    // One open file: the first closes, and a read of one moves them all on.
    files.close(fd);
    assert_eq!(files.read(copy, 1000), (1000, fnv(&data[1000..2000])));
    assert_eq!(files.pos(over), 2000);
    assert_eq!(
        files.pos(other),
        2000,
        "dup2 put the file over the other one"
    );

    files.job.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    for dup in dups {
        assert_eq!(files.at_remote(n3, dup), DATA, "{dup}");
    }
    close_on_exec(&mut files, "node 3");
    assert_eq!(files.read(high, 1000), (1000, fnv(&data[2000..3000])));
    assert_eq!(files.pos(copy), 3000, "still one open file after the move");

    files.job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    for dup in dups {
        assert_eq!(files.at_home(dup), DATA, "{dup}");
    }
    close_on_exec(&mut files, "home");
    assert_eq!(files.read(free, 1000), (1000, fnv(&data[3000..4000])));
    assert_eq!(files.pos(exec_fd), 4000, "still one open file at home");
    end_files(files);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A system file that is the same where the process runs is opened and read there, under
/// home's number, and follows the process; one that differs is read at home. At a node
/// where the file it holds differs, it goes back to home's descriptor, at its offset.
#[test]
fn system_files_are_read_where_the_process_runs_only_where_they_are_the_same() {
    if !require_root() {
        return;
    }
    let lab = same_files_lab();
    let (n2, n3) = (lab.node(2), lab.node(3));
    let data = data();
    let path = format!("{SAME}/data");
    let mut files = start_files(&lab);
    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));

    // The same at node 2: the husk holds it, under the number home's own open took.
    let same = files.open(&path);
    assert_eq!(files.at_remote(n2, same), path);
    assert_eq!(files.at_home(same), path);
    let first = 1_000_000;
    assert_eq!(files.read(same, first), (first, fnv(&data[..first])));
    // A duplicate is made here too, home's copy duplicated under the number it gives.
    let twin = files.open_like(&format!("dup {same}"));
    assert_eq!(files.at_remote(n2, twin), path);
    assert_eq!(files.at_home(twin), path);
    assert_eq!(files.pos(twin), first as u64);

    // Different at node 2: read through home, with home's bytes.
    let differs = files.open(&format!("{SAME}/differs"));
    assert!(!files.husk_holds(n2, differs));
    assert_eq!(files.at_home(differs), format!("{SAME}/differs"));
    let home_bytes = b"from node 1\n";
    assert_eq!(
        files.read(differs, 100),
        (home_bytes.len(), fnv(home_bytes))
    );

    // The same at node 3: opened there again, at its offset.
    files.job.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.at_remote(n3, same), path);
    assert_eq!(files.pos(same), first as u64);
    let second = 500_000;
    let upto = first + second;
    assert_eq!(files.read(same, second), (second, fnv(&data[first..upto])));
    assert_eq!(files.pos(twin), upto as u64, "one open file still");

    // Node 2's copy now differs by a byte ahead of the offset: back at node 2 the file is
    // home's descriptor again, at the offset the process reached, and reads home's bytes.
    let at = upto + 10;
    sh(
        n2,
        &format!("printf X | dd of={path} bs=1 seek={at} conv=notrunc 2>/dev/null"),
    );
    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    assert!(!files.husk_holds(n2, same));
    assert_eq!(files.pos(same), upto as u64);
    let third = 300_000;
    let further = upto + third;
    assert_eq!(files.read(same, third), (third, fnv(&data[upto..further])));
    assert!(!files.husk_holds(n2, twin));
    assert_eq!(
        files.pos(twin),
        further as u64,
        "home's copies are one open file"
    );

    // Home again: home's own descriptor, at the offset.
    files.job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.at_home(same), path);
    assert_eq!(files.pos(same), further as u64);
    let rest = data.len() - further;
    assert_eq!(files.read(same, rest + 1), (rest, fnv(&data[further..])));
    end_files(files);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

fn lookups_program() -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("dfsa")
        .join("lookups");
    rmosix_lab::compiled(format!("{PROGS}/lookups.c"), out, &["-Wextra", "-Werror"])
}

/// The conversation with `lookups`, through its memory where it runs.
struct Lookups {
    /// `/proc/PID/mem` of the process where it runs.
    mem: std::fs::File,
    /// Where its words lie: asked, command, answered, answer.
    at: [u64; 4],
    said: i32,
}

impl Lookups {
    /// The process `job` runs as at `node`, which said where its words lie.
    fn at(job: &Job<'_>, node: &Node) -> Lookups {
        let out = String::from_utf8_lossy(&job.stdout()).into_owned();
        // The last program the process runs said it last.
        let line = out
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("ready "))
            .expect("ready");
        let at: Vec<u64> = line
            .split_whitespace()
            .map(|a| u64::from_str_radix(a.trim_start_matches("0x"), 16).expect("address"))
            .collect();
        let process = processes_in(node).into_iter().find(|p| p.name == "lookups");
        let pid = process.expect("the process at its node").host_pid;
        let mem = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("/proc/{pid}/mem"))
            .expect("its memory");
        Lookups {
            mem,
            at: at.try_into().expect("four addresses"),
            said: 0,
        }
    }

    /// Give the next command; its number.
    fn say(&mut self, command: &str) -> i32 {
        use std::os::unix::fs::FileExt;
        self.said += 1;
        let mut text = command.as_bytes().to_vec();
        text.push(0);
        self.mem
            .write_all_at(&text, self.at[1])
            .expect("write the command");
        (self.mem.write_all_at(&self.said.to_ne_bytes(), self.at[0])).expect("ask");
        self.said
    }

    /// The answer to command `n`, if it came within `within`.
    fn answer_within(&self, n: i32, within: Duration) -> Option<String> {
        use std::os::unix::fs::FileExt;
        let deadline = Instant::now() + within;
        loop {
            let mut word = [0u8; 4];
            self.mem.read_exact_at(&mut word, self.at[2]).expect("read");
            if i32::from_ne_bytes(word) == n {
                let mut answer = [0u8; 128];
                self.mem
                    .read_exact_at(&mut answer, self.at[3])
                    .expect("read");
                let len = answer.iter().position(|&b| b == 0).unwrap_or(answer.len());
                return Some(String::from_utf8_lossy(&answer[..len]).into_owned());
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    fn ask(&mut self, command: &str) -> String {
        let n = self.say(command);
        (self.answer_within(n, STEP)).unwrap_or_else(|| panic!("{command}: no answer"))
    }
}

/// Stop or continue (`sig`) the mosrun of `job`: its home supervisor, which answers every
/// call the process sends home. Its parent, nsenter, stops with it as a shell would (it
/// waits with WUNTRACED), and is continued with it.
fn signal_home(job: &Job<'_>, sig: i32) {
    let mosrun = job.mosrun_host_pid();
    let stat = std::fs::read_to_string(format!("/proc/{mosrun}/stat")).expect("mosrun's stat");
    let parent: u32 = stat[stat.rfind(')').unwrap() + 2..]
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .expect("mosrun's parent");
    let order = if sig == libc::SIGCONT {
        [mosrun, parent]
    } else {
        [mosrun, mosrun]
    };
    for pid in order {
        let pid = libc::pid_t::try_from(pid).unwrap();
        // SAFETY: kill sends a signal; the lab's mosrun and its nsenter are ours.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0, "signal {sig} to {pid}");
    }
}

/// Lookups of a system path by a process away (stat, an open of a name that is not there)
/// go home once; home vouches for the answer, which is kept where the process runs and
/// answers the same lookup again there, even while home answers nothing; so is a lookup of
/// another name missing from the directory the first missing one was looked up in. A change at home,
/// by the process itself or by anyone, makes it ask home again.
#[test]
fn lookups_of_system_paths_are_answered_where_the_process_runs_until_home_changes() {
    if !require_root() {
        return;
    }
    let lab = same_files_lab();
    let n1 = lab.node(1);
    let (job, mut lookups, path, size) = same_file_lookups(&lab);
    let enoent = format!("err {}", libc::ENOENT);

    // Answered at node 2 while home is stopped: kept there. Home's directory /tmp has
    // other writers (any change under a directory a lookup went through makes the answers
    // go), so the stop is tried again until the answers held across it.
    // The prefix's own directory (`/usr` of `/usr/`) is kept too: a compiler resolves it
    // for every header.
    let prefix_dir = format!("stat {SAME}");
    let prefix_dir_size = format!("size {}", sh(n1, &format!("stat -c %s {SAME}")).trim());
    let kept = (0..5).any(|attempt| {
        assert_eq!(lookups.ask("stat"), format!("size {size}"));
        assert_eq!(lookups.ask("missing"), enoent);
        assert_eq!(lookups.ask(&prefix_dir), prefix_dir_size);
        // A name never asked is missing from the directory home listed with `missing`.
        let never_asked = format!("stat {SAME}/never-asked-{attempt}.h");
        let commands = [
            ("stat", format!("size {size}")),
            ("missing", enoent.clone()),
            (prefix_dir.as_str(), prefix_dir_size.clone()),
            (never_asked.as_str(), enoent.clone()),
        ];
        answered_with_home_stopped(&job, &mut lookups, &commands)
    });
    assert!(kept, "no lookup was answered away while home was stopped");

    // The process's own change, made at home: seen at once.
    assert_eq!(lookups.ask("append"), "appended");
    assert_eq!(lookups.ask("stat"), format!("size {}", size + 2));

    // Another's change at home: the kept answer goes without any call of the process's
    // going home (it asks only kept lookups), so home tells of the change by itself.
    sh(n1, &format!("echo more >> {path} && touch {path}.missing"));
    let deadline = Instant::now() + STEP;
    while lookups.ask("stat") != format!("size {}", size + 7) {
        assert!(Instant::now() < deadline, "home never told of the change");
    }
    assert!(lookups.ask("missing").starts_with("fd "));
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 2);
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// Lookups of a project's own paths (node 1's private /tmp, under no system prefix) by a
/// process away are kept where it runs while other names of their directory come and go,
/// as a build's objects do: a `stat` of a header and of its `.gch` that is not there are
/// answered away while home answers nothing. A change of the header, or the `.gch` made,
/// makes it ask home again, and home tells of each by itself.
#[test]
fn lookups_of_a_projects_paths_are_kept_away_while_other_names_of_their_directory_change() {
    if !require_root() {
        return;
    }
    let dir = "/tmp/project";
    let lab = lab_with_file(dir, "lapi.h", "header");
    let n1 = lab.node(1);
    let (job, mut lookups) = lookups_at(&lab, &format!("{dir}/lapi.h"), lab.node(2));
    let enoent = format!("err {}", libc::ENOENT);
    let gch = format!("stat {dir}/lapi.h.gch");
    assert_eq!(lookups.ask("stat"), "size 7");
    assert_eq!(lookups.ask(&gch), enoent);

    // Objects made and removed beside the header, and the directory's own status asked.
    sh(
        n1,
        &format!(
            "for i in 1 2 3; do echo o > {dir}/l$i.o; done; rm {dir}/l2.o; mv {dir}/l1.o {dir}/l4.o"
        ),
    );
    let commands = [
        ("stat", "size 7".to_owned()),
        (gch.as_str(), enoent.clone()),
    ];
    assert!(
        answered_with_home_stopped(&job, &mut lookups, &commands),
        "a lookup went home after other names changed"
    );

    // The header changed, then its .gch made, by another process at home: told by home.
    for (command, change, expected) in [
        ("stat", format!("echo more >> {dir}/lapi.h"), "size 12"),
        (
            gch.as_str(),
            format!("echo pch > {dir}/lapi.h.gch"),
            "size 4",
        ),
    ] {
        sh(n1, &change);
        let deadline = Instant::now() + STEP;
        while lookups.ask(command) != expected {
            assert!(Instant::now() < deadline, "home never told of {change}");
        }
    }
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 2);
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A job whose process came home keeps its watch, for the job's next remotes: what it hears
/// then is read, and the supervisor waits again. It once left the watch unread with no
/// process away to drain it, and its loop polled the readable descriptor at full speed for
/// as long as the job lived: a thousand jobs' supervisors starved their node (recovery.rs,
/// the crowd test). Checked from outside: a copy of each inotify descriptor of home's
/// mosrun, polled without reading, turns quiet after new names appear in the watched
/// directory.
#[test]
fn home_reads_the_changes_it_hears_when_no_process_is_away() {
    if !require_root() {
        return;
    }
    let dir = "/tmp/outputs";
    let lab = lab_with_file(dir, "x.log", "log");
    let n1 = lab.node(1);
    let (job, mut lookups) = lookups_at(&lab, &format!("{dir}/x.log"), lab.node(2));
    assert_eq!(lookups.ask("stat"), "size 4");
    assert_eq!(
        lookups.ask(&format!("stat {dir}/job.stop")),
        format!("err {}", libc::ENOENT)
    );
    job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 1);
    let watches = inotify_copies(job.mosrun_host_pid());
    assert!(!watches.is_empty(), "home's mosrun watches nothing");

    sh(
        n1,
        &format!("for i in 1 2 3 4; do echo o > {dir}/out.$i; done"),
    );
    let deadline = Instant::now() + STEP;
    while watches.iter().any(readable) {
        assert!(
            Instant::now() < deadline,
            "home's mosrun left the changes unread for {STEP:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut lookups = Lookups::at(&job, n1);
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A 2-node lab whose node 1 holds `dir/file`, a line `text`, in its private /tmp, where
/// anyone may read and list them.
fn lab_with_file(dir: &str, file: &str, text: &str) -> Lab {
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    sh(
        lab.node(1),
        &format!("mkdir -p {dir} && echo {text} > {dir}/{file} && chmod -R a+rX {dir}"),
    );
    lab
}

/// A copy of each inotify descriptor process `pid` holds (`pidfd_getfd`).
fn inotify_copies(pid: u32) -> Vec<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: pidfd_open of a pid, no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    assert!(
        pidfd >= 0,
        "pidfd_open {pid}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the descriptor was just opened and is owned here.
    let pidfd = unsafe { std::os::fd::OwnedFd::from_raw_fd(pidfd as i32) };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("mosrun's descriptors");
    fds.filter_map(|entry| {
        let entry = entry.ok()?;
        let target = std::fs::read_link(entry.path()).ok()?;
        if target.as_os_str() != "anon_inode:inotify" {
            return None;
        }
        let fd: i32 = entry.file_name().to_str()?.parse().ok()?;
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_getfd copies a descriptor of the process; root may.
        let copy = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), fd, 0) };
        // SAFETY: a descriptor just made, owned here.
        (copy >= 0).then(|| unsafe { std::os::fd::OwnedFd::from_raw_fd(copy as i32) })
    })
    .collect()
}

/// Whether `fd` has something to read now.
fn readable(fd: &std::os::fd::OwnedFd) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    use std::os::fd::AsFd;
    let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
    poll(&mut fds, PollTimeout::ZERO).expect("poll") > 0
}

/// Lookups relative to the working directory are kept where the process runs, under the
/// path home walked them from. When that path stops naming the directory (renamed at home,
/// and another made in its place), the process's relative lookups are asked of home again:
/// never answered from what the new directory's names answered to its absolute lookups.
#[test]
fn relative_lookups_are_kept_under_the_working_directory_and_follow_it_when_it_moves() {
    if !require_root() {
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let n1 = lab.node(1);
    sh(
        n1,
        "mkdir -p /tmp/project && echo header > /tmp/project/lapi.h",
    );
    let mut cmd = n1.command("sh");
    let program = lookups_program();
    cmd.args([
        "-c",
        &format!("cd /tmp/project && exec mosrun {program} lapi.h"),
    ])
    .env("NO_COLOR", "1");
    let job = Job::spawn(n1, cmd).expect("start mosrun");
    job.wait_output("ready ", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    let mut lookups = Lookups::at(&job, lab.node(2));
    let enoent = format!("err {}", libc::ENOENT);
    assert_eq!(lookups.ask("stat lapi.h"), "size 7");
    assert_eq!(lookups.ask("stat lapi.h.gch"), enoent);
    let commands = [
        ("stat lapi.h", "size 7".to_owned()),
        ("stat lapi.h.gch", enoent),
    ];
    assert!(
        answered_with_home_stopped(&job, &mut lookups, &commands),
        "a relative lookup went home"
    );

    sh(
        n1,
        "mv /tmp/project /tmp/moved && mkdir /tmp/project \
         && echo 'another header' > /tmp/project/lapi.h",
    );
    // Once node 2 heard of it, the new directory's header answers by its path...
    let deadline = Instant::now() + STEP;
    while lookups.ask("stat /tmp/project/lapi.h") != "size 15" {
        assert!(Instant::now() < deadline, "home never told of the rename");
    }
    // ... and the process's own directory is still the one it was in.
    assert_eq!(lookups.ask("stat lapi.h"), "size 7");
    assert_eq!(lookups.ask("stat lapi.h"), "size 7");
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A process of the job that goes away later starts with the answers home vouched for to
/// the job's earlier remotes (`ToGuest::Known`): its first lookups of system paths, a
/// stat, an open of a name that is not there and the stat of another name missing from the
/// same directory, are answered where it runs while home answers nothing, though this
/// program never asked them of home.
#[test]
fn a_process_sent_away_starts_with_the_answers_home_vouched_for_to_the_job() {
    if !require_root() {
        return;
    }
    let lab = same_files_lab();
    let n2 = lab.node(2);
    let (job, mut lookups, _, size) = same_file_lookups(&lab);
    let enoent = format!("err {}", libc::ENOENT);
    // As in the lookups test, home's /tmp has other writers (a change anywhere a vouched
    // lookup went empties the job's book): tried again until the answers held.
    let known = (0..5).any(|attempt| {
        // Asked of home by this program, which vouches and keeps the answers for the job.
        assert_eq!(lookups.ask("stat"), format!("size {size}"));
        assert_eq!(lookups.ask("missing"), enoent);
        // The same process runs a new program: it goes home to exec, and away again.
        let readies = |out: &[u8]| String::from_utf8_lossy(out).matches("ready ").count();
        let before = readies(&job.stdout());
        lookups.say("exec");
        job.wait_stdout("a new ready line", STEP, |out| {
            readies(out) > before && out.ends_with(b"\n")
        })
        .unwrap_or_else(|e| panic!("{e}"));
        job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
        lookups = Lookups::at(&job, n2);
        let never_asked = format!("stat {SAME}/never-asked-{attempt}.h");
        let commands = [
            ("stat", format!("size {size}")),
            ("missing", enoent.clone()),
            (never_asked.as_str(), enoent.clone()),
        ];
        answered_with_home_stopped(&job, &mut lookups, &commands)
    });
    assert!(
        known,
        "no lookup was answered away from what home knew for the job"
    );
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A process away that moves on to another node (home relays the move) finds there the
/// answers home vouched for to the job, though the guest of its last node kept them: the
/// next node is told the job's book as it starts, and answers the same lookups while home
/// answers nothing.
#[test]
fn a_process_that_moves_on_takes_the_jobs_book_to_its_next_node() {
    if !require_root() {
        return;
    }
    let lab = same_files_lab();
    let (job, mut lookups, _, size) = same_file_lookups(&lab);
    let enoent = format!("err {}", libc::ENOENT);
    // As in the lookups test, home's /tmp has other writers (a change anywhere a vouched
    // lookup went empties the job's book): tried again until the answers held.
    let mut node = 2;
    let known = (0..5).any(|_| {
        assert_eq!(lookups.ask("stat"), format!("size {size}"));
        assert_eq!(lookups.ask("missing"), enoent);
        node = 5 - node;
        job.migrate(&node.to_string())
            .unwrap_or_else(|e| panic!("{e}"));
        lookups = Lookups::at(&job, lab.node(node));
        let commands = [
            ("stat", format!("size {size}")),
            ("missing", enoent.clone()),
        ];
        answered_with_home_stopped(&job, &mut lookups, &commands)
    });
    assert!(
        known,
        "no lookup was answered at the next node from the job's book"
    );
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// Two processes of one job away at once, at nodes 2 and 3: what home vouched for to one
/// reaches the other before the answer to its next lookup that goes home, and answers the
/// same lookup there while home answers nothing, though the other never asked it of home.
/// (The first compilers of `mosrun make -j8` start together and look up the same paths.)
#[test]
fn what_one_process_away_looked_up_reaches_the_others_of_its_job() {
    if !require_root() {
        return;
    }
    let lab = same_files_lab();
    let n1 = lab.node(1);
    let path = format!("{SAME}/data");
    // A file for each attempt below, of its own size, which neither process asked of home
    // before it.
    let attempts = 5;
    for n in 0..attempts {
        sh(
            n1,
            &format!("head -c {} /dev/zero > {SAME}/seen-{n}", 100 + n),
        );
    }
    // Both with the same addresses (no randomisation), which `Lookups::at` reads from the
    // last "ready" line.
    let program = lookups_program();
    let script = format!("{program} {path} & {program} {path} & wait");
    let mut cmd = n1.command("mosrun");
    cmd.args(["setarch", "-R", "sh", "-c", &script])
        .current_dir(lab.work_dir())
        .env("NO_COLOR", "1");
    let job = Job::spawn(n1, cmd).expect("start mosrun");
    job.wait_stdout("two ready lines", STEP, |out| {
        String::from_utf8_lossy(out).matches("ready ").count() == 2 && out.ends_with(b"\n")
    })
    .unwrap_or_else(|e| panic!("{e}"));
    let pids = job.tool("pgrep", &["-x", "lookups"]).expect("pgrep");
    let pids: Vec<&str> = pids.split_whitespace().collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    for (pid, to) in pids.iter().zip(["2", "3"]) {
        job.tool("migrate", &[pid, to])
            .unwrap_or_else(|e| panic!("migrate {pid} {to}: {e}"));
    }
    let mut first = Lookups::at(&job, lab.node(2));
    let mut second = Lookups::at(&job, lab.node(3));
    // As in the lookups test, home's /tmp has other writers (a change anywhere a vouched
    // lookup went empties the job's book): tried again until the answers held.
    let reached = (0..attempts).any(|n| {
        let seen = format!("stat {SAME}/seen-{n}");
        let size = format!("size {}", 100 + n);
        assert_eq!(first.ask(&seen), size);
        // A lookup of its own, which goes home: the first's answer comes before its own.
        let own = format!("stat {SAME}/never-asked-{n}.h");
        assert_eq!(second.ask(&own), format!("err {}", libc::ENOENT));
        answered_with_home_stopped(&job, &mut second, &[(seen.as_str(), size)])
    });
    assert!(
        reached,
        "no answer home vouched for to one process reached the other"
    );
    first.say("end");
    second.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// Opens of a system file that home vouched for run where the process runs, while home
/// answers nothing, under the numbers the program would get at home (home told them free
/// ahead); home's shell follows with its own copy under the same number before the next
/// call it runs, skips an open closed away meanwhile, and holds the copy when the process
/// goes on to another node and comes home with the file open.
#[test]
fn opens_of_system_files_run_where_the_process_runs_under_home_numbers() {
    if !require_root() {
        return;
    }
    let lab = same_files_lab();
    let n1 = lab.node(1);
    let (job, mut lookups, path, size) = same_file_lookups(&lab);
    let at_home = |fd: i32| {
        let link = format!("/proc/{}/fd/{fd}", job.pid());
        let shown = job.tool("readlink", &[&link]);
        shown.map(|s| s.trim().to_owned()).unwrap_or_default()
    };

    // As in the lookups test, home's /tmp has other writers: the stop is tried again until
    // the opens held across it.
    let held_away = (0..5).any(|_| {
        // The first open goes home and is vouched for, the next runs here.
        assert_eq!(lookups.ask("cat"), format!("fd 3 bytes {size}"));
        assert_eq!(lookups.ask("cat"), format!("fd 3 bytes {size}"));
        let commands = [
            ("open", "fd 3".to_owned()),
            ("cat", format!("fd 4 bytes {size}")),
            ("read", format!("bytes {size}")),
        ];
        let away = answered_with_home_stopped(&job, &mut lookups, &commands);
        if !away {
            assert_eq!(lookups.ask("close"), "closed");
        }
        away
    });
    assert!(held_away, "no open was made away while home was stopped");

    // The next call home runs in the shell has the shell follow first: the held file under
    // its number, and nothing under the number of the one opened and closed away.
    assert!(lookups.ask("stat /etc/hostname").starts_with("size "));
    assert_eq!(at_home(3), path);
    assert_eq!(at_home(4), "");

    // On to node 3 with the file open, then home, at its offset (the end): it reads on
    // from there. An open made at node 3 just before it leaves is followed first.
    job.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    let said = lookups.said;
    let mut lookups = Lookups::at(&job, lab.node(3));
    lookups.said = said;
    assert_eq!(lookups.ask("read"), "bytes 0");
    assert_eq!(lookups.ask("cat"), format!("fd 4 bytes {size}"));
    assert_eq!(lookups.ask("cat"), format!("fd 4 bytes {size}"));
    job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    let said = lookups.said;
    let mut lookups = Lookups::at(&job, n1);
    lookups.said = said;
    assert_eq!(lookups.ask("read"), "bytes 0");
    assert_eq!(lookups.ask("close"), "closed");
    assert_eq!(lookups.ask("cat"), format!("fd 3 bytes {size}"));
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// `lookups` of `SAME/data` in `lab` (a `same_files_lab`), moved to node 2: the
/// conversation with it there, the path and the file's size at home.
fn same_file_lookups(lab: &Lab) -> (Job<'_>, Lookups, String, u64) {
    let path = format!("{SAME}/data");
    let (job, lookups) = lookups_at(lab, &path, lab.node(2));
    let size = sh(lab.node(1), &format!("stat -c %s {path}"));
    (job, lookups, path, size.trim().parse().unwrap())
}

/// Give `commands` to `lookups` while its home's mosrun is stopped, each expecting its
/// answer: whether every one was answered within 5 s, away from home. One that was not (it
/// went home) must be answered once home goes on; home goes on in any case.
fn answered_with_home_stopped(
    job: &Job<'_>,
    lookups: &mut Lookups,
    commands: &[(&str, String)],
) -> bool {
    signal_home(job, libc::SIGSTOP);
    let mut stopped = true;
    for (command, expected) in commands {
        let n = lookups.say(command);
        let mut answer = lookups.answer_within(n, Duration::from_secs(5));
        if answer.is_none() && stopped {
            // Asked of home: answered once home goes on.
            signal_home(job, libc::SIGCONT);
            stopped = false;
            answer = lookups.answer_within(n, STEP);
        }
        assert_eq!(answer.as_deref(), Some(expected.as_str()), "{command}");
    }
    if stopped {
        signal_home(job, libc::SIGCONT);
    }
    stopped
}

/// `lookups` of `path`, under mosrun at node 1, moved to `to`: the conversation with it
/// there.
fn lookups_at<'lab>(lab: &'lab Lab, path: &str, to: &'lab Node) -> (Job<'lab>, Lookups) {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.arg(lookups_program())
        .arg(path)
        .current_dir(lab.work_dir())
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready ", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.migrate(&to.id().to_string())
        .unwrap_or_else(|e| panic!("{e}"));
    let lookups = Lookups::at(&job, to);
    (job, lookups)
}

/// Changes of a tree by path (mkdir, symlink, rename, link, chmod, chown, truncate,
/// utimensat, unlink, rmdir) in a tree that is the same everywhere (node 3's, through MFS)
/// run where the process runs: every one is done while its home answers nothing.
#[test]
fn changes_by_path_in_a_tree_the_same_everywhere_run_where_the_process_runs() {
    if !require_root() {
        return;
    }
    let lab = data_lab();
    let n3 = lab.node(3);
    sh(n3, "touch /tmp/dfsa/mine && chmod 666 /tmp/dfsa/mine");
    let (job, mut lookups) = lookups_at(&lab, DATA, lab.node(2));
    let dir = "/mfs/3/tmp/dfsa";
    signal_home(&job, libc::SIGSTOP);
    let changes = [
        format!("mkdir {dir}/made"),
        format!("rename {dir}/made {dir}/moved"),
        format!("symlink moved {dir}/link"),
        format!("mkdir {dir}/moved/inner"),
        format!("link {dir}/mine {dir}/moved/mine-too"),
        format!("chmod 700 {dir}/link"),
        format!("chown {dir}/moved"),
        format!("truncate 10 {dir}/mine"),
        format!("rmdir {dir}/moved/inner"),
        format!("unlink {dir}/link"),
        // Last: a change of an entry of `moved` would set its times anew.
        format!("utime {dir}/moved"),
    ];
    let mut away = Vec::new();
    for change in &changes {
        let n = lookups.say(change);
        away.push(lookups.answer_within(n, Duration::from_secs(10)));
        if away.last() == Some(&None) {
            break;
        }
    }
    signal_home(&job, libc::SIGCONT);
    for (change, answer) in changes.iter().zip(&away) {
        assert_eq!(
            answer.as_deref(),
            Some("ok"),
            "{change}, while home was stopped"
        );
    }
    // A link out of the tree is never followed where the process runs: the file it names
    // outside (on the file system every lab node shares) keeps its mode.
    let outside = lab.work_dir().join("outside");
    std::fs::write(&outside, "outside").unwrap();
    let mode = |path: &Path| {
        std::os::unix::fs::PermissionsExt::mode(&path.metadata().unwrap().permissions())
    };
    let before = mode(&outside);
    sh(n3, &format!("ln -s {} /tmp/dfsa/out", outside.display()));
    lookups.ask(&format!("chmod 600 {dir}/out"));
    assert_eq!(
        mode(&outside),
        before,
        "chmod followed a link out of the tree"
    );
    // The link went, and what it named changed through it.
    let seen = sh(
        n3,
        "cd /tmp/dfsa && ls -d link made moved/inner 2>&1; \
         stat -c '%n %F %a %s %Y %h' moved mine moved/mine-too",
    );
    let moved = seen.lines().find(|l| l.starts_with("moved ")).unwrap_or("");
    assert!(
        moved.starts_with("moved directory 700 ") && moved.contains(" 1000000000 "),
        "{seen}"
    );
    assert!(seen.contains("mine regular file 666 10 "), "{seen}");
    assert!(
        seen.contains("moved/mine-too regular file 666 10 "),
        "{seen}"
    );
    assert_eq!(
        seen.matches("No such file or directory").count(),
        3,
        "{seen}"
    );
    lookups.say("end");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// The system's python (a pyenv shim on PATH would run another one).
const PYTHON: &str = "/usr/bin/python3";

/// A Python moved to node 2 imports a module it had not loaded, with a C extension: its
/// files are system files the same at node 2 (the host's /usr), so the extension is mapped
/// there from node 2's own file (a home file's bytes would be copied into anonymous memory),
/// and the process runs on there.
#[test]
fn a_python_away_from_home_loads_its_modules_where_it_runs() {
    if !require_root() {
        return;
    }
    if !Path::new(PYTHON).exists() {
        eprintln!("skipped: no {PYTHON}");
        return;
    }
    let lab = Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"));
    let script = "import sys\nprint('ready', flush=True)\nsys.stdin.readline()\n\
                  import decimal\nprint('seventh', decimal.Decimal(1) / 7, flush=True)\n\
                  sys.stdin.readline()\n";
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args([PYTHON, "-c", script])
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped());
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    job.send(b"\n").unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("seventh 0.1428571428571428571428571429\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 2);
    let husk = processes_in(lab.node(2))
        .into_iter()
        .find(|p| p.name == "python3");
    let husk = husk.unwrap_or_else(|| panic!("no python3 at node 2"));
    let maps = std::fs::read_to_string(format!("/proc/{}/maps", husk.host_pid));
    let maps = maps.unwrap_or_else(|e| panic!("maps of the husk: {e}"));
    assert!(
        maps.lines()
            .any(|l| l.contains("lib-dynload/_decimal") && l.ends_with(".so")),
        "_decimal is not mapped from a file at node 2:\n{maps}"
    );
    job.send(b"\n").unwrap_or_else(|e| panic!("{e}"));
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(done.status.success(), "{done:?}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// The steps of the first test, at home, at node 2, on at node 3, home again.
fn tour_files(lab: &Lab) {
    let (n2, n3) = (lab.node(2), lab.node(3));
    let data = data();
    let mut files = start_files(lab);

    files.job.migrate("2").unwrap_or_else(|e| panic!("{e}"));
    // Opened at node 2, under the number home gives: home holds a placeholder.
    let here = files.open(DATA);
    assert_eq!(here, 3);
    assert_eq!(files.at_home(here), "/");
    assert_eq!(files.at_remote(n2, here), DATA);
    // A file of node 1's own /tmp is no MFS path: opened at home, after the placeholder.
    let home_file = files.open("/tmp/home-file");
    assert_eq!(home_file, 4);
    assert_eq!(files.at_home(home_file), "/tmp/home-file");
    // Nor is home's own tree through MFS: its files are local at home.
    let home_tree = files.open("/mfs/1/tmp/home-file");
    assert_eq!(home_tree, 5);
    assert_eq!(files.at_home(home_tree), "/mfs/1/tmp/home-file");
    files.close(home_tree);
    // A file created there gets the process's umask, which it set at home.
    assert!(files.ask("umask 027").starts_with("umask "));
    // Opened under a number home told free ahead: home's shell follows with its placeholder
    // before it runs a call that may see its table, so the next open at home takes 6.
    let created = files.open_like("create /mfs/3/tmp/dfsa/new");
    assert_eq!(created, 5);
    let next = files.open("/tmp/home-file");
    assert_eq!(next, 6);
    assert_eq!(files.at_home(created), "/");
    files.close(next);
    files.close(created);
    assert_eq!(sh(n3, "stat -c %a /tmp/dfsa/new"), "640\n");
    let size = files.ask(&format!("stat {DATA}"));
    assert_eq!(size, format!("size {}", data.len()));
    let first = 1_000_000;
    assert_eq!(files.read(here, first), (first, fnv(&data[..first])));

    // On to node 3, the data's own node: the file is opened there again, at its offset.
    files.job.migrate("3").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.at_remote(n3, here), DATA);
    assert_eq!(files.at_home(here), "/");
    assert_eq!(files.pos(here), first as u64);
    let second = 500_000;
    let upto = first + second;
    assert_eq!(files.read(here, second), (second, fnv(&data[first..upto])));

    // A close here frees the number at home too: the next home open takes it.
    files.close(here);
    files.close(home_file);
    assert_eq!(files.open("/tmp/home-file"), 3);
    let again = files.open(DATA);
    assert_eq!(again, 4);
    assert_eq!(files.read(again, upto), (upto, fnv(&data[..upto])));
    // A symlink that leaves node 3's tree is followed at home, never here.
    let away = files.open("/mfs/3/tmp/dfsa/away");
    assert_eq!(away, 5);
    assert_eq!(files.at_home(away), "/mfs/3/etc/hostname");
    // Close-on-exec goes into the process with the file.
    let shut = files.open_like(&format!("openx {DATA}"));
    assert_eq!(files.at_remote(n3, shut), DATA);
    assert!(files.husk_flags(n3, shut) & libc::O_CLOEXEC != 0);
    assert!(files.husk_flags(n3, again) & libc::O_CLOEXEC == 0);
    files.close(shut);
    // The dynamic loader's cache, a system file by default, is the host's at every node:
    // read here, with home's number and bytes.
    let cache = "/etc/ld.so.cache";
    let cached = std::fs::read(cache).unwrap_or_else(|e| panic!("{cache}: {e}"));
    let loader = files.open(cache);
    assert_eq!(files.at_remote(n3, loader), cache);
    assert_eq!(files.at_home(loader), cache);
    let all = cached.len();
    assert_eq!(files.read(loader, all + 1), (all, fnv(&cached)));
    files.close(loader);

    // Home again: the file opened away replaces its placeholder, at its offset.
    files.job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files.at_home(again), DATA);
    assert_eq!(files.pos(again), upto as u64);
    let rest = data.len() - upto;
    assert_eq!(files.read(again, rest + 1), (rest, fnv(&data[upto..])));
    end_files(files);
}
