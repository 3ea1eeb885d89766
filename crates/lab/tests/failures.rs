//! Failures and edges of migration in real labs: a target node that dies during a move, a
//! host node that dies while it runs a remote, a supervisor killed under its job, signals
//! and timers at the remote, processes that cannot move, `migrate`'s errors, ordinary users,
//! a peer without the cluster key, a bad map file.
//!
//! Each test builds its own small lab (node deaths cannot be shared) and drives the real
//! binaries. Programs live in `tests/progs/failures/`: Python scripts run by the system's
//! python3, C programs compiled once per test run. Most of them wait for a "go" file before
//! they finish, so the test, not a clock, decides when a job ends.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use rmosix_lab::{Captured, Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, wait_until};

/// The programs of these tests.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/failures");
/// The system's python: readable by every user (a pyenv under /root would not be).
const PYTHON: &str = "/usr/bin/python3";
/// Deadline of one step: a tool run, a migration, a job's end, a process to appear or go.
const STEP: Duration = Duration::from_secs(60);
/// Mebibytes the big program fills: enough for its transfer to take a noticeable time.
const BIG_MIB: &str = "1024";
/// The uid and gid an ordinary user's job runs as, and another ordinary user's.
const NOBODY: u32 = 65534;
const OTHER_USER: u32 = 65533;

fn start_lab(nodes: usize) -> Lab {
    match Lab::start(LabConfig::new(nodes, bin_dir_of_current_test())) {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start a {nodes}-node lab: {e}"),
    }
}

fn script(name: &str) -> String {
    format!("{PROGS}/{name}")
}

/// `progs/failures/NAME.c`, compiled into the target's tmp dir, which every node sees.
fn c_program(name: &str) -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("failures")
        .join(name);
    rmosix_lab::compiled(format!("{PROGS}/{name}.c"), out, &[])
}

/// Runs `tool ARGS` inside `node` to its end.
fn run(node: &Node, tool: &str, args: &[&str]) -> ToolRun {
    let mut cmd = node.command(tool);
    cmd.args(args);
    Captured::spawn(
        cmd,
        format!("node {}: {tool} {}", node.id(), args.join(" ")),
    )
    .finish(STEP)
}

/// Runs `tool ARGS` inside `node` as user and group `uid` (no supplementary groups).
fn run_as(node: &Node, uid: u32, tool: &str, args: &[&str]) -> ToolRun {
    let mut cmd = node.command("setpriv");
    cmd.args(setpriv(uid)).arg(tool).args(args);
    let what = format!("node {}: uid {uid}: {tool} {}", node.id(), args.join(" "));
    Captured::spawn(cmd, what).finish(STEP)
}

fn setpriv(uid: u32) -> Vec<String> {
    vec![
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
        "--".to_owned(),
    ]
}

/// Sends `sig` (a name like `KILL`) to a host process.
fn host_kill(sig: &str, host_pid: u32) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(host_pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {host_pid} failed");
}

/// A program run under `mosrun` in a node: the lab's [`rmosix_lab::Job`], with the exit codes
/// and messages of the tools kept for assertions.
struct Job<'a> {
    home: &'a Node,
    job: rmosix_lab::Job<'a>,
    /// Host PIDs of mosrun and of the program.
    mosrun: u32,
    program: u32,
    /// The program's PID inside its home node.
    pid: String,
}

impl<'a> Job<'a> {
    /// `mosrun ARGV` in `home`, from the lab's work dir, logging engine events to stderr.
    fn start(lab: &Lab, home: &'a Node, argv: &[&str]) -> Job<'a> {
        Job::start_as(home, None, &lab.work_dir(), argv)
    }

    /// Like [`Job::start`], as user `uid` (if given) and in `dir`.
    fn start_as(home: &'a Node, uid: Option<u32>, dir: &Path, argv: &[&str]) -> Job<'a> {
        let mut cmd = match uid {
            Some(uid) => {
                let mut cmd = home.command("setpriv");
                cmd.args(setpriv(uid)).arg("mosrun");
                cmd
            }
            None => home.command("mosrun"),
        };
        cmd.args(argv)
            .current_dir(dir)
            .stdin(Stdio::null())
            .env("MOSRUN_LOG", "info")
            .env("NO_COLOR", "1");
        let job = rmosix_lab::Job::spawn(home, cmd)
            .unwrap_or_else(|e| panic!("node {}: mosrun {}: {e}", home.id(), argv.join(" ")));
        Job {
            home,
            mosrun: job.mosrun_host_pid(),
            program: job.host_pid(),
            pid: job.pid().to_string(),
            job,
        }
    }

    fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.job.stdout()).into_owned()
    }

    fn outputs(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout(),
            String::from_utf8_lossy(&self.job.stderr())
        )
    }

    /// Waits until the program printed `needle`; fails at once if its output ends without.
    fn wait_output(&self, needle: &str) {
        if let Err(e) = self.job.wait_output(needle, STEP) {
            panic!("{e}");
        }
    }

    /// `migrate PID TARGET` run at home, to its end.
    fn migrate(&self, target: &str) -> ToolRun {
        run(self.home, "migrate", &[&self.pid, target])
    }

    /// Moves the job, which must succeed.
    fn move_to(&self, target: &str) {
        let done = self.migrate(target);
        assert!(
            done.status.success(),
            "migrate {} {target}: {done:?}\n{}",
            self.pid,
            self.outputs()
        );
    }

    /// `mosctl where PID`.
    fn location(&self) -> String {
        match self.job.location() {
            Ok(node) => node.to_string(),
            Err(e) => panic!("{e}"),
        }
    }

    /// `kill -SIG PID` run at home.
    fn signal(&self, sig: &str) {
        if let Err(e) = self.job.signal(sig) {
            panic!("{e}");
        }
    }

    fn finish(self) -> ToolRun {
        match self.job.finish(STEP) {
            Ok(out) => ToolRun {
                status: out.status,
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            },
            Err(e) => panic!("{e}"),
        }
    }
}

/// A process as `/proc` shows it from the host.
#[derive(Debug, Clone)]
struct ProcInfo {
    pid: u32,
    ppid: u32,
    /// Real, effective, saved and filesystem uid.
    uids: Vec<u32>,
    state: char,
    args: Vec<String>,
}

/// Every process of `node`'s PID namespace (its init included).
fn procs_in(node: &Node) -> Vec<ProcInfo> {
    let Ok(ns) = fs::read_link(format!("/proc/{}/ns/pid", node.init_pid())) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| fs::read_link(format!("/proc/{pid}/ns/pid")).is_ok_and(|n| n == ns))
        .filter_map(proc_info)
        .collect()
}

fn proc_info(pid: u32) -> Option<ProcInfo> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(str::trim)
    };
    let ppid = field("PPid:")?.parse().ok()?;
    let uids = field("Uid:")?
        .split_whitespace()
        .filter_map(|u| u.parse().ok())
        .collect();
    let state = field("State:")?.chars().next()?;
    let args = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()?
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(ProcInfo {
        pid,
        ppid,
        uids,
        state,
        args,
    })
}

/// The `mosixd guest` processes of a node: one per session.
fn guests(node: &Node) -> Vec<ProcInfo> {
    procs_in(node)
        .into_iter()
        .filter(|p| p.args.get(1).is_some_and(|a| a == "guest"))
        .collect()
}

/// The husks of a node: the children of its guests, where remotes run.
fn husks(node: &Node) -> Vec<ProcInfo> {
    let procs = procs_in(node);
    let guests: Vec<u32> = procs
        .iter()
        .filter(|p| p.args.get(1).is_some_and(|a| a == "guest"))
        .map(|p| p.pid)
        .collect();
    procs
        .into_iter()
        .filter(|p| guests.contains(&p.ppid))
        .collect()
}

fn the_husk(node: &Node) -> ProcInfo {
    let mut found = Vec::new();
    wait_until(
        &format!("one husk on node {}", node.id()),
        STEP,
        || {
            found = husks(node);
            found.len() == 1
        },
        || format!("{:#?}", procs_in(node)),
    );
    found.remove(0)
}

/// Whether a host process is gone (a zombie counts: it runs no code).
fn is_gone(host_pid: u32) -> bool {
    proc_info(host_pid).is_none_or(|p| matches!(p.state, 'Z' | 'X'))
}

fn assert_cannot_move(done: &ToolRun, pid: &str, target: &str, reason: &str) {
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    let prefix = format!("migrate: cannot move {pid} to node {target}: ");
    assert!(
        done.stderr.starts_with(&prefix) && done.stderr.contains(reason),
        "expected {prefix}…{reason}…, got {done:?}"
    );
}

fn go_file(lab: &Lab, name: &str) -> PathBuf {
    lab.work_dir().join(name)
}

fn release(path: &Path) {
    fs::write(path, "").expect("write go file");
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

/// Two runs of big.c at `home`, each waiting for its own go file: one to move, one to stay,
/// so that the moved run's end can be compared with an unmoved run's.
struct BigPair<'a> {
    moved: Job<'a>,
    still: Job<'a>,
    go: [PathBuf; 2],
}

impl<'a> BigPair<'a> {
    fn start(lab: &Lab, home: &'a Node) -> BigPair<'a> {
        let big = c_program("big");
        let go = ["go-moved", "go-still"].map(|name| go_file(lab, name));
        let [moved, still] = go
            .each_ref()
            .map(|go| Job::start(lab, home, &[&big, BIG_MIB, path_str(go)]));
        moved.wait_output("ready\n");
        still.wait_output("ready\n");
        BigPair { moved, still, go }
    }

    /// Lets both finish; the moved one must end as the unmoved one does.
    fn finish_alike(self) {
        self.go.iter().for_each(|go| release(go));
        let (moved, still) = (self.moved.finish(), self.still.finish());
        assert_eq!(moved.status.code(), Some(3), "{moved:?}");
        assert_eq!(moved.status, still.status);
        assert!(moved.stdout.contains("\nsum "), "{moved:?}");
        assert_eq!(moved.stdout, still.stdout);
    }
}

// ---- 1. The target dies during a migration ----

#[test]
fn a_target_dying_during_a_migration_leaves_the_process_running_at_home() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, target) = (lab.node(1), lab.node(2));
    let pair = BigPair::start(&lab, home);
    let moved = &pair.moved;

    let mut cmd = home.command("migrate");
    cmd.args([moved.pid.as_str(), "2"]);
    let migrate = Captured::spawn(cmd, format!("migrate {} 2", moved.pid));
    if let Err(e) = target.wait_log("guest started", STEP) {
        panic!("the session never started: {e}\n{}", migrate.outputs());
    }
    target.kill();
    let done = migrate.finish(STEP);
    assert_cannot_move(&done, &moved.pid, "2", "");
    let prefix = format!("migrate: cannot move {} to node 2: ", moved.pid);
    assert!(
        done.stderr.trim().len() > prefix.len(),
        "no reason: {done:?}"
    );
    assert_eq!(moved.location(), "1");

    pair.finish_alike();
}

/// Home cannot take its process back (here its shell's address-space limit is lowered
/// below the process's size while it is away): the process runs on at its remote, whether
/// `migrate` called it home or it went home by itself for a fork, which then fails as
/// Linux fails a fork short of memory. With the limit raised, it comes home and finishes
/// as an unmoved run does, with the same descriptors it left with.
#[test]
fn a_process_home_cannot_take_back_runs_on_at_its_remote() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let home = lab.node(1);
    let comeback = c_program("comeback");
    let gos = ["moved-1", "moved-2", "still-1", "still-2"].map(|name| go_file(&lab, name));
    let [moved_1, moved_2, still_1, still_2] = gos.each_ref().map(|go| path_str(go));
    let moved = Job::start(&lab, home, &[&comeback, SOME_MIB, moved_1, moved_2]);
    let still = Job::start(&lab, home, &[&comeback, SOME_MIB, still_1, still_2]);
    moved.wait_output("ready\n");
    still.wait_output("ready\n");
    let descriptors = open_fds(moved.program);
    moved.move_to("2");

    // The shell keeps the PID at home; its limit is what a restore there must fit in.
    set_address_space_limit(moved.program, "64MiB");
    let done = moved.migrate("home");
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert!(
        done.stderr.contains("Cannot allocate memory")
            && done.stderr.contains("it runs on at node 2"),
        "{done:?}"
    );
    assert_eq!(moved.location(), "2");

    release(&gos[0]);
    moved.wait_output("fork: Cannot allocate memory\n");
    assert_eq!(moved.location(), "2");

    set_address_space_limit(moved.program, "unlimited");
    moved.move_to("home");
    assert_eq!(moved.location(), "1");
    assert_eq!(open_fds(moved.program), descriptors);

    release(&gos[1]);
    release(&gos[2]);
    release(&gos[3]);
    let (moved, still) = (moved.finish(), still.finish());
    assert_eq!(moved.status.code(), Some(3), "{moved:?}");
    assert_eq!(moved.status, still.status);
    let sum = |done: &ToolRun| done.stdout.lines().last().map(str::to_owned);
    assert!(moved.stdout.contains("\nsum "), "{moved:?}");
    assert_eq!(sum(&moved), sum(&still), "{moved:?}\n{still:?}");
}

/// A remote moves straight on to another node: home relays its image (a first round while it
/// runs, then the final one) without restoring it, and the node it leaves keeps nothing.
/// When the next node dies during such a move, the process runs on where it was, and later
/// finishes as an unmoved run does.
#[test]
fn a_remote_moves_on_directly_and_a_dying_next_node_leaves_it_where_it_was() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(4);
    let home = lab.node(1);
    let pair = BigPair::start(&lab, home);
    let moved = &pair.moved;
    let (migrate, _) = order_on_from_3_to_4(&lab, moved);
    // Node 4 takes the first round (sent while the process runs on at node 3) when it dies.
    let next = lab.node(4);
    next.kill();
    let done = migrate.finish(STEP);
    assert_cannot_move(&done, &moved.pid, "4", "it runs on at node 3");
    assert_eq!(moved.location(), "3");

    moved.move_to("home");
    pair.finish_alike();
}

/// A next node that takes the session and then reads nothing more (its guest is stopped, so
/// its link stays up and only its window shuts) holds the relay for a frame's time at most:
/// the move fails with that reason, before node 3's link to home gives up on an unread
/// window, and the process runs on at node 3.
#[test]
fn a_next_node_that_stops_taking_the_image_leaves_the_process_where_it_was() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(4);
    let home = lab.node(1);
    let pair = BigPair::start(&lab, home);
    let moved = &pair.moved;
    let (migrate, husk) = order_on_from_3_to_4(&lab, moved);
    let next_guest = husk.ppid;
    host_kill("STOP", next_guest);
    let done = migrate.finish(STEP);
    host_kill("CONT", next_guest);
    assert_cannot_move(&done, &moved.pid, "4", "it runs on at node 3");
    assert!(
        done.stderr.contains("took more than"),
        "{done:?}\n{}",
        moved.outputs()
    );
    assert_eq!(moved.location(), "3");

    moved.move_to("home");
    pair.finish_alike();
}

/// Moves `moved` out to node 2 and on to node 3 (pre-copied, through home), waits until node
/// 2 has let go of it, and orders it on to node 4. Returns the running `migrate` once node 4
/// has made a husk for the process, and that husk.
fn order_on_from_3_to_4(lab: &Lab, moved: &Job) -> (Captured, ProcInfo) {
    moved.move_to("2");
    moved.move_to("3");
    assert_eq!(moved.location(), "3");
    assert!(
        moved.outputs().contains("moved on") && moved.outputs().contains("precopied=true"),
        "no pre-copied direct move was logged:\n{}",
        moved.outputs()
    );
    let left = lab.node(2);
    wait_until(
        "node 2 to let go of the process",
        STEP,
        || guests(left).is_empty() && husks(left).is_empty(),
        || format!("{:#?}", procs_in(left)),
    );
    let mut cmd = moved.home.command("migrate");
    cmd.args([moved.pid.as_str(), "4"]);
    let migrate = Captured::spawn(cmd, format!("migrate {} 4", moved.pid));
    (migrate, the_husk(lab.node(4)))
}

/// A process that keeps rewriting, zeroing and zapping its pages, mapping, unmapping and
/// re-protecting areas and moving its heap's end while it moves (pre-copy sends the first
/// round while it runs) holds exactly what it wrote when it checks itself after each move:
/// out, home, out to another node and on to a third.
#[test]
fn memory_that_changes_during_a_move_arrives_as_the_freeze_found_it() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(4);
    let go = go_file(&lab, "go");
    let churn = c_program("churn");
    let job = Job::start(&lab, lab.node(1), &[&churn, SOME_MIB, path_str(&go)]);
    job.wait_output("ready\n");
    for (round, target) in ["2", "home", "3", "4"].into_iter().enumerate() {
        job.move_to(target);
        job.signal("USR1");
        let verified = |out: &str| out.matches("verified ").count();
        wait_until(
            &format!("a check after the move to {target}"),
            STEP,
            || verified(&job.stdout()) > round || job.stdout().contains("corrupt"),
            || job.outputs(),
        );
        assert!(!job.stdout().contains("corrupt"), "{}", job.outputs());
    }
    let first_round: u64 = job
        .outputs()
        .split("first_bytes=")
        .nth(1)
        .and_then(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or(0);
    assert!(
        first_round > 64 << 20,
        "the move out sent {first_round} bytes while the process ran:\n{}",
        job.outputs()
    );
    for what in ["came home", "moved on"] {
        let logged = job.outputs();
        let line = logged.lines().find(|l| l.contains(what)).unwrap_or("");
        assert!(
            line.contains("precopied=true"),
            "{what}: not pre-copied:\n{logged}"
        );
    }
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(
        done.stdout.ends_with("\n")
            && done
                .stdout
                .lines()
                .last()
                .is_some_and(|l| l.starts_with("verified ")),
        "{done:?}"
    );
}

/// While a move's first round streams, the home supervisor goes on serving the job: a signal
/// the moving process gets meanwhile is handled at home. The target's guest is stopped as
/// soon as it has taken the session, so that the round cannot end before the test lets it.
#[test]
fn the_job_is_served_while_a_first_round_streams() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, target) = (lab.node(1), lab.node(2));
    let big = c_program("big");
    let go = go_file(&lab, "go");
    let job = Job::start(&lab, home, &[&big, BIG_MIB, path_str(&go)]);
    job.wait_output("ready\n");
    let mut cmd = home.command("migrate");
    cmd.args([job.pid.as_str(), "2"]);
    let migrate = Captured::spawn(cmd, format!("migrate {} 2", job.pid));
    // The husk comes after the guest's Ready, when the first round begins.
    the_husk(target);
    let guest = guests(target).first().map(|g| g.pid).expect("a guest");
    host_kill("STOP", guest);
    job.signal("USR1");
    job.wait_output("usr1\n");
    host_kill("CONT", guest);
    let done = migrate.finish(STEP);
    assert!(done.status.success(), "{done:?}\n{}", job.outputs());
    assert_eq!(job.location(), "2");
    release(&go);
    let done = job.finish();
    assert_eq!(done.status.code(), Some(3), "{done:?}");
    assert!(done.stdout.contains("\nsum "), "{done:?}");
}

/// Mebibytes of a program that must not fit in a 64 MiB address space.
const SOME_MIB: &str = "256";

/// `prlimit --as` on host process `pid`: its soft RLIMIT_AS (raising a hard limit again
/// takes CAP_SYS_RESOURCE, which a container's root may lack).
fn set_address_space_limit(pid: u32, limit: &str) {
    let bytes = match limit {
        "unlimited" => "unlimited".to_owned(),
        mib => format!(
            "{}",
            mib.trim_end_matches("MiB").parse::<u64>().expect("MiB") << 20
        ),
    };
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--as={bytes}:")])
        .status()
        .expect("run prlimit (util-linux)");
    assert!(status.success(), "prlimit --as={bytes} on {pid} failed");
}

/// The descriptor numbers host process `pid` has open, and what each refers to.
fn open_fds(pid: u32) -> Vec<(String, PathBuf)> {
    let mut fds: Vec<_> = fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read the process's fd dir")
        .filter_map(|e| {
            let e = e.ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                fs::read_link(e.path()).ok()?,
            ))
        })
        .collect();
    fds.sort();
    fds
}

/// One remote's failure stays with its process. A job of four children: two moved to node
/// 2, one to node 3, one at home. While they wait in a read that runs in their shells at
/// home, and while mosrun is stopped so that all of it reaches the supervisor at once, the
/// remote of child 0 is killed (its shell dies the same way), and the guest of child 1 is
/// killed and signals are sent to child 1's shell, whose relay then meets the broken link
/// (its process is lost, and mosrun says why; this used to end the whole job). The rest of
/// the job runs on: children 2 and 3 finish with the right results, and so does the job.
#[test]
fn remotes_killed_mid_call_take_only_their_processes() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(3);
    let home = lab.node(1);
    let family = c_program("family");
    let go = go_file(&lab, "go");
    let job = Job::start(&lab, home, &[&family, path_str(&go), "4"]);
    job.wait_output("ready\n");
    let pids: Vec<String> = (0..4)
        .map(|k| {
            job.wait_output(&format!("child {k} pid "));
            let out = job.stdout();
            let line = out
                .lines()
                .find_map(|l| l.strip_prefix(&format!("child {k} pid ")))
                .expect("the line waited for");
            line.to_owned()
        })
        .collect();
    let migrate = |pid: &str, node: &str| {
        let done = run(home, "migrate", &[pid, node]);
        assert!(done.status.success(), "migrate {pid} {node}: {done:?}");
    };
    // Child 0's remote is the one husk of node 2 until child 2 comes.
    migrate(&pids[0], "2");
    let remote_of_child_0 = the_husk(lab.node(2));
    migrate(&pids[1], "3");
    migrate(&pids[2], "2");
    // Each waits away in a read that runs in its shell at home.
    let shells: Vec<u32> = pids[..3].iter().map(|pid| host_pid_in(home, pid)).collect();
    for &shell in &shells {
        wait_until(
            "a read to run in a shell",
            STEP,
            || {
                fs::read_to_string(format!("/proc/{shell}/syscall"))
                    .is_ok_and(|s| s.starts_with("0 "))
            },
            || job.outputs(),
        );
    }
    host_kill("STOP", job.mosrun);
    host_kill("KILL", remote_of_child_0.pid);
    let guest = guests(lab.node(3));
    assert_eq!(guest.len(), 1, "{guest:?}");
    host_kill("KILL", guest[0].pid);
    wait_until(
        "node 3's guest to go",
        STEP,
        || is_gone(guest[0].pid),
        || job.outputs(),
    );
    for sig in ["USR1", "USR2", "HUP", "TERM", "ALRM"] {
        host_kill(sig, shells[1]);
    }
    host_kill("CONT", job.mosrun);
    // nsenter, mosrun's parent outside the node, stopped itself when mosrun stopped.
    let nsenter = proc_info(job.mosrun).expect("mosrun runs").ppid;
    host_kill("CONT", nsenter);
    for shell in &shells[..2] {
        wait_until("a shell to go", STEP, || is_gone(*shell), || job.outputs());
    }
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(done.stdout.contains("child 0 killed 9\n"), "{done:?}");
    assert!(done.stdout.contains("child 1 killed 9\n"), "{done:?}");
    assert!(
        done.stderr.contains(&format!("process {} lost: ", pids[1])),
        "{done:?}"
    );
    for k in [2u64, 3] {
        let sum: u64 = (1..=20_000_000u64).map(|i| i % (7 + k)).sum();
        assert!(
            done.stdout.contains(&format!("child {k} sum {sum}\n")),
            "{done:?}"
        );
        assert!(
            done.stdout.contains(&format!("child {k} exited 0\n")),
            "{done:?}"
        );
    }
    for node in [lab.node(2), lab.node(3)] {
        assert!(husks(node).is_empty(), "{:#?}", procs_in(node));
    }
}

/// The host PID of the process that is `pid` in `node`.
fn host_pid_in(node: &Node, pid: &str) -> u32 {
    let pid: u32 = pid.parse().expect("a PID");
    procs_in(node)
        .into_iter()
        .find(|p| rmosix_lab::pid_in_node(p.pid) == Some(pid))
        .unwrap_or_else(|| panic!("no process {pid} in node {}", node.id()))
        .pid
}

// ---- 2. The host node dies while it runs the remote ----

#[test]
fn a_host_node_dying_ends_the_job_with_sigkill_and_a_reason() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let home = lab.node(1);
    let go = go_file(&lab, "go");
    let job = Job::start(&lab, home, &[PYTHON, &script("ticks.py"), path_str(&go)]);
    job.wait_output("ready\n");
    job.move_to("2");
    assert_eq!(job.location(), "2");
    lab.node(2).kill();
    let done = job.finish();
    assert_eq!(done.status.signal(), Some(9), "{done:?}");
    assert!(
        done.stderr
            .contains(&format!("mosrun: process {} lost", done_pid(&done))),
        "{done:?}"
    );
    let status = run(home, "mosctl", &["status"]);
    assert!(status.status.success(), "{status:?}");
    assert!(status.stdout.contains("node 1: this node"), "{status:?}");
}

/// The PID mosrun names in its "process N lost" line (any PID; the line's shape matters).
fn done_pid(done: &ToolRun) -> String {
    done.stderr
        .split("mosrun: process ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .unwrap_or("?")
        .to_owned()
}

// ---- 3. The supervisor dies ----

#[test]
fn a_killed_supervisor_takes_its_shell_and_its_remote_along() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let go = go_file(&lab, "go");

    // (a) while the program runs on node 2
    let job = Job::start(&lab, home, &[PYTHON, &script("ticks.py"), path_str(&go)]);
    job.wait_output("ready\n");
    job.move_to("2");
    the_husk(host);
    host_kill("KILL", job.mosrun);
    let shell = job.program;
    wait_until(
        "the shell on node 1 is gone",
        STEP,
        || is_gone(shell),
        || format!("{:#?}", procs_in(home)),
    );
    wait_until(
        "no guest or husk is left on node 2",
        STEP,
        || guests(host).is_empty() && husks(host).is_empty(),
        || format!("{:#?}\n{}", procs_in(host), host.log()),
    );
    if let Err(e) = host.wait_log("guest exited", STEP) {
        panic!("{e}");
    }
    let done = job.finish();
    assert_eq!(done.status.signal(), Some(9), "{done:?}");

    // (b) while the program is at home
    let job = Job::start(&lab, home, &[PYTHON, &script("ticks.py"), path_str(&go)]);
    job.wait_output("ready\n");
    host_kill("KILL", job.mosrun);
    let program = job.program;
    wait_until(
        "the program on node 1 is gone",
        STEP,
        || is_gone(program),
        || format!("{:#?}", procs_in(home)),
    );
    job.finish();
}

// ---- 4. Signals while remote ----

#[test]
fn sigint_runs_a_python_handler_at_the_remote_and_the_program_goes_on() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let job = Job::start(&lab, lab.node(1), &[PYTHON, &script("sigint.py")]);
    job.wait_output("ready\n");
    job.move_to("2");
    assert_eq!(job.location(), "2");
    job.signal("INT");
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(done.stdout.contains("got INT\n"), "{done:?}");
    assert!(done.stdout.ends_with("done\n"), "{done:?}");
}

#[test]
fn sigterm_kills_a_remote_and_mosrun_dies_by_it() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let go = go_file(&lab, "go");
    let job = Job::start(
        &lab,
        lab.node(1),
        &[PYTHON, &script("ticks.py"), path_str(&go)],
    );
    job.wait_output("ready\n");
    job.move_to("2");
    job.wait_output("tick 1\n");
    job.signal("TERM");
    let done = job.finish();
    assert_eq!(done.status.signal(), Some(15), "{done:?}");
    assert!(!done.stdout.contains("done"), "{done:?}");
}

#[test]
fn stop_and_cont_of_the_whole_job_stop_and_resume_the_remote() {
    if !rmosix_lab::require_root() {
        return;
    }
    stop_then_cont(Cont::Job);
}

#[test]
fn sigcont_to_the_program_alone_resumes_its_stopped_remote() {
    if !rmosix_lab::require_root() {
        return;
    }
    stop_then_cont(Cont::Program);
}

/// Who gets the SIGCONT that ends a job stop.
#[derive(Clone, Copy, PartialEq)]
enum Cont {
    /// The program, mosrun and mosrun's parent, as a shell's `fg` or `bg` sends it to the
    /// job's process group.
    Job,
    /// The program only: `kill -CONT PID`.
    Program,
}

/// `kill -STOP PID` at home while the program runs on node 2 stops the husk there; the
/// SIGCONT then makes it tick again, and it ends normally with no tick lost or repeated.
fn stop_then_cont(cont: Cont) {
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let go = go_file(&lab, "go");
    let job = Job::start(&lab, home, &[PYTHON, &script("ticks.py"), path_str(&go)]);
    job.wait_output("ready\n");
    job.move_to("2");
    let husk = the_husk(host);
    job.signal("STOP");
    // A stopped tracee shows 't' (its guest supervisor traces it), an untraced one 'T'.
    wait_until(
        "the husk on node 2 is stopped",
        STEP,
        || proc_info(husk.pid).is_some_and(|p| matches!(p.state, 'T' | 't')),
        || format!("{:?}\n{}", proc_info(husk.pid), job.outputs()),
    );
    let ticks = job.stdout().matches("tick ").count();
    job.signal("CONT");
    if cont == Cont::Job {
        // mosrun stopped itself to show the stop to its parent, and that parent, the lab's
        // nsenter, stopped itself in turn (it mirrors its child's stops): continue both, as a
        // shell's `fg` continues its whole process group.
        let nsenter = proc_info(job.mosrun).expect("mosrun runs").ppid;
        host_kill("CONT", nsenter);
        host_kill("CONT", job.mosrun);
    }
    wait_until(
        "ticks go on after SIGCONT",
        STEP,
        || job.stdout().matches("tick ").count() > ticks + 1,
        || {
            let states: Vec<_> = [job.mosrun, job.program]
                .iter()
                .map(|&p| proc_info(p).map(|p| (p.args, p.state)))
                .collect();
            format!(
                "home: {states:?}\nhusk: {:?}\n{}",
                proc_info(husk.pid).map(|p| p.state),
                job.outputs()
            )
        },
    );
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    let ticks: Vec<&str> = done
        .stdout
        .lines()
        .filter(|l| l.starts_with("tick "))
        .collect();
    let expected: Vec<String> = (0..ticks.len()).map(|i| format!("tick {i}")).collect();
    assert_eq!(ticks, expected, "ticks lost or repeated");
    assert!(done.stdout.ends_with("done\n"), "{done:?}");
}

// ---- 4 and 5 in C: a signal handler and timers at the remote ----

/// A process frozen while its handler runs on the alternate stack moves out, home and out
/// again (the restore sets the altstack, which the kernel refuses to a caller whose stack
/// pointer lies on it), and its handler then returns where it was.
#[test]
fn a_process_moved_inside_a_handler_on_its_altstack_comes_home_and_goes_again() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let go = go_file(&lab, "go");
    let onstack = c_program("onstack");
    let job = Job::start(&lab, lab.node(1), &[onstack.as_str(), path_str(&go)]);
    job.wait_output("ready\n");
    job.signal("USR1");
    job.wait_output("in handler\n");
    for target in ["2", "home", "2"] {
        job.move_to(target);
    }
    assert_eq!(job.location(), "2");
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(
        done.stdout
            .ends_with("ran on the alternate stack: yes\nalternate stack still set: yes\ndone\n"),
        "{done:?}"
    );
}

#[test]
fn a_c_signal_handler_and_timers_set_at_the_remote_fire() {
    if !rmosix_lab::require_root() {
        return;
    }
    handler_and_timers_at_the_remote(&[]);
}

/// The smallest case of the bug that kills Python's handlers at the remote.
#[test]
fn a_c_handler_with_sa_onstack_and_no_altstack_runs_at_the_remote() {
    if !rmosix_lab::require_root() {
        return;
    }
    handler_and_timers_at_the_remote(&["onstack"]);
}

/// timers.c on node 2: a SIGUSR1 sent at home runs its handler, then alarm() and setitimer()
/// called at the remote fire, ITIMER_VIRTUAL (which counts the remote's CPU time) too.
fn handler_and_timers_at_the_remote(flags: &[&str]) {
    let timers = c_program("timers");
    let stdout = timers_fire_at_the_remote(
        |go| {
            [timers.as_str(), go]
                .iter()
                .chain(flags)
                .map(|a| a.to_string())
                .collect()
        },
        Some("USR1"),
    );
    assert!(stdout.contains("virtual timer fired\n"), "{stdout}");
}

#[test]
fn python_timers_set_at_the_remote_fire() {
    if !rmosix_lab::require_root() {
        return;
    }
    let alarm = script("alarm.py");
    timers_fire_at_the_remote(|go| vec![PYTHON.into(), alarm.clone(), go.into()], None);
}

/// Runs `argv(GOFILE)` on node 1 and moves it to node 2; sends `signal` (if any) and waits
/// for its handler; then lets it go on, and its alarm() and setitimer() set at the remote
/// fire. Returns what it printed.
fn timers_fire_at_the_remote(argv: impl Fn(&str) -> Vec<String>, signal: Option<&str>) -> String {
    let lab = start_lab(2);
    let go = go_file(&lab, "go");
    let argv = argv(path_str(&go));
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let job = Job::start(&lab, lab.node(1), &argv);
    job.wait_output("ready\n");
    job.move_to("2");
    if let Some(sig) = signal {
        job.signal(sig);
        job.wait_output(&format!("got {sig}\n"));
    }
    assert_eq!(job.location(), "2");
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(
        done.stdout.contains("alarm fired\nitimer fired\n"),
        "{done:?}"
    );
    done.stdout
}

/// A program that makes its calls from the instruction the remote's supervisor injects with
/// (the first `syscall` of the vdso) cannot step around its sandbox: at the remote, an
/// `openat` so made is refused and creates nothing on either node, where at home the same
/// call simply runs.
#[test]
fn calls_from_the_injection_instruction_never_run_unforwarded_at_the_remote() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let gate = c_program("gate");
    // Each node has its own /tmp: a file made there by the remote shows in node 2's.
    let marker = "/tmp/rmosix-gate-marker";
    let in_node = |node: &Node| PathBuf::from(format!("/proc/{}/root{marker}", node.init_pid()));

    let run_gate = |moved: bool| {
        let go = go_file(&lab, &format!("go-{moved}"));
        let job = Job::start(&lab, lab.node(1), &[&gate, path_str(&go), marker]);
        job.wait_output("ready\n");
        if moved {
            job.move_to("2");
        }
        release(&go);
        let done = job.finish();
        assert!(done.status.success(), "{done:?}");
        (result_line(&done), done)
    };

    let (line, done) = run_gate(false);
    assert!(
        line.starts_with("openat=3 getpid="),
        "at home the gate runs calls: {done:?}"
    );
    assert!(in_node(lab.node(1)).exists(), "at home the file is made");
    fs::remove_file(in_node(lab.node(1))).expect("remove the marker");

    let (line, done) = run_gate(true);
    let enosys = -libc::ENOSYS;
    assert_eq!(
        line,
        format!("openat={enosys} getpid={enosys}"),
        "away, a call from the gate is refused: {done:?}"
    );
    assert!(!in_node(lab.node(2)).exists(), "the remote made {marker}");
    assert!(
        !in_node(lab.node(1)).exists(),
        "a refused call made {marker} at home"
    );
}

/// The line gate.c prints after it ran its calls.
fn result_line(done: &ToolRun) -> String {
    done.stdout
        .lines()
        .find(|l| l.starts_with("openat="))
        .unwrap_or_else(|| panic!("no result line: {done:?}"))
        .to_owned()
}

/// Signals keep their siginfo wherever they go: a POSIX timer at home ticks every 2 ms with
/// its value while the process moves out, on, home and out again (ticks arrive while it
/// runs away, and while it is frozen for a move), and every tick its handler sees is the
/// timer's, with its value.
#[test]
fn a_posix_timers_signals_keep_their_value_through_moves() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(3);
    let ptimer = c_program("ptimer");
    let go = go_file(&lab, "go");
    let job = Job::start(&lab, lab.node(1), &[&ptimer, path_str(&go)]);
    job.wait_output("ready\n");
    for target in ["2", "3", "home", "2"] {
        job.move_to(target);
    }
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    let line = done
        .stdout
        .lines()
        .find(|l| l.starts_with("ticks "))
        .unwrap_or_else(|| panic!("no ticks line: {done:?}"));
    let words: Vec<&str> = line.split_whitespace().collect();
    let ticks: u32 = words[1].parse().expect("a count");
    assert!(ticks > 0 && words[2..] == ["bad", "0"], "{line}: {done:?}");
}

/// A process's CPU time continues where it was, in both directions: its CPU-time clock,
/// getrusage and times count what it used at home when it is away, and what it used away
/// once it is home again (cpuclock.c checks that no reading goes back and every burn adds).
#[test]
fn cpu_time_continues_away_and_back() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let cpuclock = c_program("cpuclock");
    let (go1, go2) = (go_file(&lab, "go1"), go_file(&lab, "go2"));
    let job = Job::start(
        &lab,
        lab.node(1),
        &[&cpuclock, path_str(&go1), path_str(&go2)],
    );
    job.wait_output("ready\n");
    job.move_to("2");
    release(&go1);
    job.wait_output("away\n");
    job.move_to("home");
    release(&go2);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(done.stdout.ends_with("PASS\n"), "{}", done.stdout);
}

/// recvmmsg stays remote (it used to send the process home): one recvmmsg takes what one
/// sendmmsg sent, each message with its length, as at home.
#[test]
fn recvmmsg_stays_remote_and_receives_a_batch() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let batch = c_program("batch");
    let (go, go2) = (go_file(&lab, "go"), go_file(&lab, "go2"));
    let job = Job::start(&lab, lab.node(1), &[&batch, path_str(&go), path_str(&go2)]);
    job.wait_output("ready\n");
    job.move_to("2");
    release(&go);
    job.wait_output("done\n");
    assert_eq!(job.location(), "2");
    release(&go2);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(
        done.stdout.contains("sent 3 received 3: 1:a 2:bb 3:ccc\n"),
        "{done:?}"
    );
}

/// Waits with a signal mask of their own (pselect, ppoll) stay remote and keep the mask's
/// meaning: a program that blocks SIGUSR1 but during its waits gets, at the remote as at
/// home, each wait ended with EINTR after its handler ran, and SIGUSR1 blocked again after.
#[test]
fn pselect_and_ppoll_with_a_signal_mask_keep_its_meaning_away() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let masked = c_program("masked");
    for moved in [false, true] {
        let job = Job::start(&lab, lab.node(1), &[&masked]);
        job.wait_output("ready\n");
        if moved {
            job.move_to("2");
        }
        for k in 1..=4 {
            job.wait_output(&format!("waiting {k}\n"));
            if moved && k == 2 {
                // A wait with a mask used to send the process home.
                assert_eq!(job.location(), "2", "the first wait ran away");
            }
            job.signal("USR1");
            job.wait_output(&format!("{k} "));
        }
        let done = job.finish();
        assert!(done.status.success(), "{done:?}");
        for k in 1..=4 {
            assert!(
                done.stdout.contains(&format!("\n{k} ok\n")),
                "moved {moved}: {done:?}"
            );
        }
    }
}

/// A SIGTRAP of the program's own (raise, int3) reaches its handler, at home and away: the
/// supervisors tell it from the traps of their own single-steps by its si_code.
#[test]
fn a_programs_own_sigtraps_reach_it_at_home_and_away() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let trap = c_program("trap");
    for moved in [false, true] {
        let go = go_file(&lab, &format!("go-{moved}"));
        let job = Job::start(&lab, lab.node(1), &[&trap, path_str(&go)]);
        job.wait_output("ready\n");
        if moved {
            job.move_to("2");
        }
        release(&go);
        let done = job.finish();
        assert!(done.status.success(), "{done:?}");
        assert!(
            done.stdout.ends_with("traps 2\n"),
            "moved: {moved}: {done:?}"
        );
    }
}

/// A program with a seccomp filter of its own is not moved (no unprivileged supervisor may
/// read a filter to carry it), and says why; one that installs a filter away goes home for
/// it, where the filter then holds, and stays.
#[test]
fn a_program_with_its_own_seccomp_filter_stays_home_and_keeps_it() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let filtered = c_program("filtered");
    let reason = "it has a seccomp policy of its own (mode 2)";

    let go = go_file(&lab, "go-before");
    let job = Job::start(
        &lab,
        lab.node(1),
        &[&filtered, path_str(&go), "-", "before"],
    );
    job.wait_output("ready\n");
    assert_cannot_move(&job.migrate("2"), &job.pid, "2", reason);
    assert_eq!(job.location(), "1");
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(done.stdout.ends_with("filter holds\n"), "{done:?}");

    let (go, go2) = (go_file(&lab, "go-away"), go_file(&lab, "go2-away"));
    let argv = [filtered.as_str(), path_str(&go), path_str(&go2), "away"];
    let job = Job::start(&lab, lab.node(1), &argv);
    job.wait_output("ready\n");
    job.move_to("2");
    release(&go);
    job.wait_output("installed\n");
    assert_eq!(job.location(), "1", "the filter is installed at home");
    assert_cannot_move(&job.migrate("2"), &job.pid, "2", reason);
    release(&go2);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(
        done.stdout.contains("filter holds\ninstalled\n"),
        "{done:?}"
    );
}

// ---- 6. Processes that cannot move keep running at home ----

#[test]
fn processes_that_cannot_move_say_why_and_keep_running_at_home() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let home = lab.node(1);
    let pinned = c_program("pinned");
    let cases: Vec<(String, Vec<String>, &str)> = vec![
        (
            "threads".into(),
            vec![PYTHON.into(), script("threads.py")],
            "threads",
        ),
        (
            "shared-anon".into(),
            vec![pinned.clone(), "shared-anon".into()],
            "shared writable",
        ),
        (
            "shared-file".into(),
            vec![pinned.clone(), "shared-file".into()],
            "shared writable",
        ),
        (
            "mlock".into(),
            vec![pinned.clone(), "mlock".into()],
            "locked",
        ),
        (
            "sysv".into(),
            vec![pinned.clone(), "sysv".into()],
            "System V",
        ),
    ];
    let mut jobs = Vec::new();
    for (name, argv, reason) in &cases {
        let go = go_file(&lab, &format!("go-{name}"));
        let mut argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        let go_arg = path_str(&go).to_owned();
        argv.push(&go_arg);
        let job = Job::start(&lab, home, &argv);
        jobs.push((name, job, go, *reason));
    }
    for (name, job, _, reason) in &jobs {
        job.wait_output("ready\n");
        let done = job.migrate("2");
        assert_cannot_move(&done, &job.pid, "2", reason);
        assert_eq!(job.location(), "1", "{name}");
    }
    for (name, job, go_path, _) in jobs {
        release(&go_path);
        let done = job.finish();
        assert!(done.status.success(), "{name}: {done:?}");
        assert!(
            done.stdout.ends_with("done\n") || done.stdout.ends_with(&format!("done {name}\n")),
            "{name}: {done:?}"
        );
    }
}

// ---- 7. migrate's errors, and 10. a bad map file ----

#[test]
fn migrate_reports_unknown_nodes_strangers_and_usage_errors() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let home = lab.node(1);
    let go = go_file(&lab, "go");
    let job = Job::start(&lab, home, &[PYTHON, &script("ticks.py"), path_str(&go)]);
    job.wait_output("ready\n");

    let done = job.migrate("9");
    assert_cannot_move(&done, &job.pid, "9", "no node 9");
    // PID 1 is the node's init, not under mosrun.
    let done = run(home, "migrate", &["1", "2"]);
    assert_cannot_move(&done, "1", "2", "not running under mosrun");
    for args in [
        &[][..],
        &["abc", "2"],
        &[job.pid.as_str(), "bogus"],
        &[job.pid.as_str()],
    ] {
        let done = run(home, "migrate", args);
        assert_eq!(done.status.code(), Some(2), "migrate {args:?}: {done:?}");
        assert!(!done.stderr.is_empty(), "migrate {args:?}: {done:?}");
    }
    assert_eq!(job.location(), "1");

    // A daemon given a bad map names the file and line and exits 1.
    let map = lab.work_dir().join("bad.map");
    fs::write(&map, "# two lines\n1 10.231.0.1 2\n2 10.231.0.9\n").expect("write map");
    let done = run(
        home,
        "mosixd",
        &[
            "--map",
            path_str(&map),
            "--key",
            path_str(&lab.key_path()),
            "--node",
            "1",
            "--socket",
            "/run/mosix/bad-map.sock",
        ],
    );
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    let prefix = format!("mosixd: {}:3: ", map.display());
    assert!(done.stderr.starts_with(&prefix), "{done:?}");

    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
}

// ---- 8. Ordinary users ----

#[test]
fn an_ordinary_users_job_moves_as_that_user_and_strangers_may_not_move_it() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let dir = lab.work_dir().join("nobody");
    fs::create_dir(&dir).expect("create the user's dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    let go = dir.join("go");
    let job = Job::start_as(
        home,
        Some(NOBODY),
        &dir,
        &[PYTHON, &script("ticks.py"), path_str(&go)],
    );
    job.wait_output("ready\n");

    let done = run_as(home, OTHER_USER, "migrate", &[&job.pid, "2"]);
    assert_cannot_move(&done, &job.pid, "2", "permission denied");
    assert_eq!(job.location(), "1");

    job.move_to("2");
    assert_eq!(job.location(), "2");
    let husk = the_husk(host);
    assert_eq!(husk.uids, vec![NOBODY; 4], "{husk:?}");

    let done = run_as(home, OTHER_USER, "migrate", &[&job.pid, "home"]);
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert!(done.stderr.contains("permission denied"), "{done:?}");
    assert_eq!(job.location(), "2");

    let done = run_as(home, NOBODY, "migrate", &[&job.pid, "home"]);
    assert!(done.status.success(), "{done:?}");
    assert_eq!(job.location(), "1");
    let done = run_as(home, NOBODY, "migrate", &[&job.pid, "2"]);
    assert!(done.status.success(), "{done:?}");
    assert_eq!(job.location(), "2");

    fs::write(&go, "").expect("write go file");
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    assert!(done.stdout.ends_with("done\n"), "{done:?}");
}

// ---- 9. Peers without the cluster key ----

#[test]
fn peers_without_the_key_are_dropped_and_migration_goes_on() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(3);
    let (home, rogue) = (lab.node(1), lab.node(3));

    // Garbage on the daemon port, from node 2.
    // The daemon may reset the connection at any point after the connect.
    let garbage = "import socket\n\
        s = socket.create_connection(('10.231.0.1', 4660), timeout=10)\n\
        try:\n    \
            s.sendall(b'\\x00\\x40' + b'not a noise handshake' * 8)\n    \
            s.shutdown(socket.SHUT_WR)\n    \
            while s.recv(4096):\n        pass\n\
        except OSError:\n    pass\n";
    let done = run(lab.node(2), PYTHON, &["-c", garbage]);
    assert!(done.status.success(), "{done:?}");
    if let Err(e) = home.wait_log("peer 10.231.0.2 dropped", STEP) {
        panic!("{e}");
    }

    // Node 3's daemon replaced by one with another key.
    let daemon = procs_in(rogue)
        .into_iter()
        .find(|p| {
            p.ppid != 0
                && p.args.iter().any(|a| a == "--map")
                && p.args.get(1).is_none_or(|a| a != "guest")
        })
        .expect("node 3's daemon");
    host_kill("TERM", daemon.pid);
    if let Err(e) = rogue.wait_log("rmosix-lab: daemon exited", STEP) {
        panic!("{e}");
    }
    let key = lab.work_dir().join("other.key");
    let done = run(rogue, "mosctl", &["keygen", path_str(&key)]);
    assert!(done.status.success(), "{done:?}");
    let mut cmd = rogue.command("mosixd");
    cmd.args([
        "--map",
        path_str(&lab.map_path()),
        "--key",
        path_str(&key),
        "--node",
        "3",
    ]);
    let other = Captured::spawn(cmd, "node 3: mosixd with another key");
    wait_until(
        "the other daemon is ready",
        STEP,
        || other.stderr().contains("mosixd ready"),
        || other.outputs(),
    );
    let done = run(rogue, "mosctl", &["status"]);
    assert!(done.status.success(), "{done:?}");
    // Its gossip is refused, so node 1 is dead to it; a ping is refused too.
    assert!(done.stdout.contains("node 1: dead"), "{done:?}");
    let done = run(rogue, "mosctl", &["isup", "1"]);
    assert_eq!(done.status.code(), Some(1), "{done:?}");
    assert_eq!(done.stdout, "no\n");
    if let Err(e) = home.wait_log("peer 10.231.0.3 dropped", STEP) {
        panic!("{e}");
    }
    // It cannot place a process on node 1 either.
    let go_rogue = go_file(&lab, "go-rogue");
    let stranger = Job::start(
        &lab,
        rogue,
        &[PYTHON, &script("ticks.py"), path_str(&go_rogue)],
    );
    stranger.wait_output("ready\n");
    let done = stranger.migrate("1");
    assert_cannot_move(&done, &stranger.pid, "1", "node 1 is down");
    release(&go_rogue);
    let done = stranger.finish();
    assert!(done.status.success(), "{done:?}");

    // Nodes 1 and 2 still move processes between them.
    let go = go_file(&lab, "go");
    let job = Job::start(&lab, home, &[PYTHON, &script("ticks.py"), path_str(&go)]);
    job.wait_output("ready\n");
    job.move_to("2");
    assert_eq!(job.location(), "2");
    job.move_to("home");
    assert_eq!(job.location(), "1");
    release(&go);
    let done = job.finish();
    assert!(done.status.success(), "{done:?}");
    drop(other);
}
