//! Hostile users, hostile peers, restarts and races, in real labs, written as the attacker or
//! the operator would go about them: a user who hands the PID of her connection to a process
//! with more groups, a user holding thousands of idle connections, a fake daemon at the
//! socket path, a daemon restarted under running jobs, two orders for one process, an order
//! whose caller gives up, a status of a map of twenty thousand nodes read through `head`, and
//! the processes a node hosts as `mosctl guests` lists them, with a user who tries to add one
//! of her own. docs/security.md says what each of these must not achieve.
//!
//! Each test builds its own small lab and drives the real binaries. Programs live in
//! `tests/progs/hardening/` (the attackers) and `tests/progs/failures/` (`ticks.py`, a
//! computing job that ends when its go file exists; `big.c`, 1 GiB of memory whose move takes
//! seconds).

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rmosix_lab::{
    Captured, Job, Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, processes_in, wait_until,
};

/// The attackers and fakes of these tests.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/hardening");
/// The jobs they attack.
const JOBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/failures");
/// The system's python: readable by every user.
const PYTHON: &str = "/usr/bin/python3";
/// Deadline of one step: a tool run, a migration, a job's end, a process to appear or go.
const STEP: Duration = Duration::from_secs(60);
/// How long a test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(10);
/// The daemon's socket inside a node.
const SOCKET: &str = "/run/mosix/mosixd.sock";
/// Ordinary users: the attacker, and another.
const NOBODY: u32 = 65534;
const OTHER_USER: u32 = 65533;
/// Mebibytes of the big program: its move home takes a second or more.
const BIG_MIB: u64 = 1024;

fn start_lab(nodes: usize) -> Lab {
    match Lab::start(LabConfig::new(nodes, bin_dir_of_current_test())) {
        Ok(lab) => lab,
        Err(e) => panic!("cannot start a {nodes}-node lab: {e}"),
    }
}

fn prog(name: &str) -> String {
    format!("{PROGS}/{name}")
}

fn ticks() -> String {
    format!("{JOBS}/ticks.py")
}

/// The failures suite's `big.c`, compiled into the target's tmp dir.
fn big_program() -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("hardening")
        .join("big");
    rmosix_lab::compiled(format!("{JOBS}/big.c"), out, &[])
}

/// What big.c prints at its end for `mib` mebibytes: the checksum of its pattern.
fn big_sum(mib: u64) -> String {
    let words = mib << 17;
    let sum = (1..=words).fold(0u64, |sum, i| {
        sum.wrapping_mul(31)
            .wrapping_add(i.wrapping_mul(0x9e37_79b9_7f4a_7c15))
    });
    format!("sum {sum:016x}\n")
}

/// `tool ARGS` inside `node` as root, started.
fn spawn(node: &Node, tool: &str, args: &[&str]) -> Captured {
    let mut cmd = node.command(tool);
    cmd.args(args);
    Captured::spawn(
        cmd,
        format!("node {}: {tool} {}", node.id(), args.join(" ")),
    )
}

/// `tool ARGS` inside `node` as root, to its end.
fn run(node: &Node, tool: &str, args: &[&str]) -> ToolRun {
    spawn(node, tool, args).finish(STEP)
}

/// `tool ARGS` inside `node` as user and group `uid` (no supplementary groups), started,
/// with `env` set.
fn spawn_as(node: &Node, uid: u32, env: &[(&str, &str)], tool: &str, args: &[&str]) -> Captured {
    let mut cmd = node.command("setpriv");
    cmd.args([
        format!("--reuid={uid}"),
        format!("--regid={uid}"),
        "--clear-groups".to_owned(),
        "--".to_owned(),
    ])
    .arg(tool)
    .args(args)
    .envs(env.iter().copied());
    let what = format!("node {}: uid {uid}: {tool} {}", node.id(), args.join(" "));
    Captured::spawn(cmd, what)
}

fn run_as(node: &Node, uid: u32, tool: &str, args: &[&str]) -> ToolRun {
    spawn_as(node, uid, &[], tool, args).finish(STEP)
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

/// A directory of the lab every user may write to.
fn open_dir(lab: &Lab, name: &str) -> PathBuf {
    let dir = lab.work_dir().join(name);
    fs::create_dir(&dir).expect("create a dir");
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).expect("chmod 0777");
    dir
}

fn path_str(path: &Path) -> &str {
    path.to_str().expect("UTF-8 path")
}

fn release(path: &Path) {
    fs::write(path, "").expect("write go file");
}

/// `mosrun ARGV` in `home` as root, from the lab's work dir, logging engine and link events
/// to stderr.
fn start_job<'a>(lab: &Lab, home: &'a Node, argv: &[&str]) -> Job<'a> {
    let mut cmd = home.command("mosrun");
    cmd.args(argv)
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    Job::spawn(home, cmd)
        .unwrap_or_else(|e| panic!("node {}: mosrun {}: {e}", home.id(), argv.join(" ")))
}

/// A `ticks.py` job at `home`, with its go file, once it is ready.
fn ticks_job<'a>(lab: &Lab, home: &'a Node, name: &str) -> (Job<'a>, PathBuf) {
    let go = lab.work_dir().join(format!("go-{name}"));
    let job = start_job(lab, home, &[PYTHON, &ticks(), path_str(&go)]);
    if let Err(e) = job.wait_output("ready\n", STEP) {
        panic!("{e}");
    }
    (job, go)
}

fn job_stderr(job: &Job<'_>) -> String {
    String::from_utf8_lossy(&job.stderr()).into_owned()
}

/// Ends a ticks job through its go file and checks it ran as an unmoved one would: "ready",
/// then ticks 0, 1, 2, ... with none missing or repeated, then "done", and status 0.
fn finish_ticks(job: Job<'_>, go: &Path) {
    release(go);
    let out = match job.finish(STEP) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.first(), Some(&"ready"), "{stdout}");
    assert_eq!(lines.last(), Some(&"done"), "{stdout}");
    for (i, line) in lines[1..lines.len() - 1].iter().enumerate() {
        assert_eq!(*line, format!("tick {i}"), "{stdout}");
    }
}

/// Where `pid` runs, by `mosctl where` at `home`: the node, or the error it printed.
fn location(home: &Node, pid: u32) -> Result<u16, String> {
    let done = run(home, "mosctl", &["where", &pid.to_string()]);
    if !done.status.success() {
        return Err(done.stderr);
    }
    done.stdout
        .trim()
        .parse()
        .map_err(|_| format!("not a node: {:?}", done.stdout))
}

/// `migrate PID TARGET` at `home`, which must succeed.
fn move_to(home: &Node, pid: u32, target: &str) {
    let done = run(home, "migrate", &[&pid.to_string(), target]);
    assert!(done.status.success(), "migrate {pid} {target}: {done:?}");
}

/// A process of a node as the host's /proc shows it.
#[derive(Debug, Clone)]
struct ProcInfo {
    pid: u32,
    ppid: u32,
    name: String,
    args: Vec<String>,
    /// The `Uid:`, `Gid:` and `Groups:` lines.
    ids: HashMap<&'static str, Vec<u32>>,
    rss_kib: u64,
}

fn procs_in(node: &Node) -> Vec<ProcInfo> {
    processes_in(node)
        .into_iter()
        .filter_map(|p| proc_info(p.host_pid))
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
    let numbers = |name: &str| -> Vec<u32> {
        field(name)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect()
    };
    let ids = [("Uid:", "uid"), ("Gid:", "gid"), ("Groups:", "groups")]
        .into_iter()
        .map(|(line, key)| (key, numbers(line)))
        .collect();
    let args = fs::read(format!("/proc/{pid}/cmdline"))
        .ok()?
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    Some(ProcInfo {
        pid,
        ppid: field("PPid:")?.parse().ok()?,
        name: field("Name:")?.to_owned(),
        args,
        ids,
        rss_kib: field("VmRSS:")
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0),
    })
}

/// The `mosixd guest` processes of a node: one per session.
fn guests(node: &Node) -> Vec<ProcInfo> {
    procs_in(node)
        .into_iter()
        .filter(|p| p.args.get(1).is_some_and(|a| a == "guest"))
        .collect()
}

/// The one guest of a node, once there is one.
fn the_guest(node: &Node) -> ProcInfo {
    let mut found = Vec::new();
    wait_until(
        &format!("one guest on node {}", node.id()),
        STEP,
        || {
            found = guests(node);
            found.len() == 1
        },
        || format!("{:#?}\n{}", procs_in(node), node.log()),
    );
    found.remove(0)
}

/// The process `guest` hosts: its child, the husk it restored the process into.
fn the_husk_of(node: &Node, guest: &ProcInfo) -> ProcInfo {
    let mut found = None;
    wait_until(
        &format!("the husk of guest {} on node {}", guest.pid, node.id()),
        STEP,
        || {
            found = procs_in(node).into_iter().find(|p| p.ppid == guest.pid);
            found.is_some()
        },
        || format!("{:#?}", procs_in(node)),
    );
    found.expect("found")
}

/// One line of `mosctl guests`: the process's place and owner.
#[derive(Debug, Clone, PartialEq)]
struct Listed {
    home: u16,
    home_pid: u32,
    /// Its PID on the node that lists it.
    pid: u32,
    user: String,
}

/// One line of `mosctl guests` with its figures.
#[derive(Debug, Clone)]
struct Row {
    listed: Listed,
    cpu_seconds: f64,
    rss_mib: f64,
}

/// `mosctl guests` at `node`, as root, which must succeed: the lines under its header.
fn guests_table(node: &Node) -> Vec<Row> {
    guests_table_as(node, 0)
}

/// `mosctl guests` at `node` as user `uid`.
fn guests_table_as(node: &Node, uid: u32) -> Vec<Row> {
    let done = if uid == 0 {
        run(node, "mosctl", &["guests"])
    } else {
        run_as(node, uid, "mosctl", &["guests"])
    };
    assert!(done.status.success(), "{done:?}");
    let mut lines = done
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>());
    assert_eq!(
        lines.next(),
        Some(vec![
            "HOME", "HOME-PID", "PID", "USER", "CPU-S", "RSS-MIB", "HERE"
        ]),
        "{done:?}"
    );
    lines
        .map(|fields| {
            let number = |i: usize| -> f64 {
                fields[i]
                    .parse()
                    .unwrap_or_else(|_| panic!("field {i} of {fields:?}"))
            };
            assert_eq!(fields.len(), 7, "{done:?}");
            Row {
                listed: Listed {
                    home: number(0) as u16,
                    home_pid: number(1) as u32,
                    pid: number(2) as u32,
                    user: fields[3].to_owned(),
                },
                cpu_seconds: number(4),
                rss_mib: number(5),
            }
        })
        .collect()
}

/// The processes `mosctl guests` lists at `node`.
fn listed(node: &Node) -> Vec<Listed> {
    guests_table(node).into_iter().map(|r| r.listed).collect()
}

/// The records of the guests the daemons of `node` started (see crates/daemon/src/records.rs),
/// seen from the host through the node's init.
fn guest_records(node: &Node) -> Vec<String> {
    let dir = format!("/proc/{}/root/run/mosix/mosixd.guests", node.init_pid());
    fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .map(|e| {
            e.expect("a record")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

/// A host process's /proc/PID/stat fields (proc_pid_stat(5)), counted from field 3 (after the
/// command name, which may hold spaces).
fn stat_fields(host_pid: u32) -> Vec<u64> {
    let stat = fs::read_to_string(format!("/proc/{host_pid}/stat")).expect("read stat");
    stat.rsplit_once(')')
        .expect("a stat line")
        .1
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect()
}

/// CPU seconds a host process has used: utime and stime, fields 14 and 15, in clock ticks.
fn cpu_seconds(host_pid: u32) -> f64 {
    let fields = stat_fields(host_pid);
    let ticks = fields[14 - 3] + fields[15 - 3];
    let per_second = Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .expect("run getconf");
    let per_second: u64 = String::from_utf8_lossy(&per_second.stdout)
        .trim()
        .parse()
        .expect("CLK_TCK");
    ticks as f64 / per_second as f64
}

/// The children of `job`'s program (the host's view), by name: the processes of a job whose
/// program is a shell.
fn job_child(job: &Job<'_>, name: &str) -> ProcInfo {
    let home = job.home();
    let mut found = None;
    wait_until(
        &format!("a {name} under the job's shell"),
        STEP,
        || {
            found = procs_in(home)
                .into_iter()
                .find(|p| p.ppid == job.host_pid() && p.name == name);
            found.is_some()
        },
        || format!("{:#?}", procs_in(home)),
    );
    found.expect("found")
}

/// The PID a node sees for host process `host_pid`.
fn pid_in_node(host_pid: u32) -> u32 {
    rmosix_lab::pid_in_node(host_pid).unwrap_or_else(|| panic!("process {host_pid} is gone"))
}

/// How many log lines of `text` say `message` about process `pid` (a field `pid=PID`).
fn lines_about(text: &str, message: &str, pid: u32) -> usize {
    let field = format!("pid={pid}");
    text.lines()
        .filter(|l| l.contains(message) && l.split_whitespace().any(|w| w == field))
        .count()
}

// ---- Item 3a: identity comes from the connection ----

/// The attack: a user connects to mosixd and hands the connection to a child; the
/// connecting process exits and its PID goes to a process with groups root and shadow; then
/// the child asks for a session. The guest must have the user's groups, not that process's.
#[test]
fn a_guest_gets_the_groups_its_user_had_when_connecting_not_those_of_a_later_pid() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, target) = (lab.node(1), lab.node(2));
    let dir = open_dir(&lab, "nobody");
    let go = dir.join("go");
    let mut opener = spawn_as(
        home,
        NOBODY,
        &[],
        PYTHON,
        &[&prog("opener.py"), SOCKET, "2", path_str(&go)],
    );
    let deadline = Instant::now() + STEP;
    while !(opener.stdout().ends_with('\n') && opener.ended()) {
        assert!(
            Instant::now() < deadline,
            "the connecting process did not print its PID and end\n{}",
            opener.outputs()
        );
        thread::sleep(POLL);
    }
    let freed: u32 = opener.stdout().trim().parse().expect("a PID");

    // Root takes that PID for a process with groups 0 and 42 (shadow): the node's PID
    // namespace is quiet, so the next fork after setting ns_last_pid gets it.
    let impostor = spawn(
        home,
        "sh",
        &[
            "-c",
            "echo $(($1 - 1)) > /proc/sys/kernel/ns_last_pid; \
             setpriv --groups 0,42 sleep 600 & echo $!; wait",
            "sh",
            &freed.to_string(),
        ],
    );
    impostor.wait_stdout("\n", STEP);
    assert_eq!(
        impostor.stdout().trim(),
        freed.to_string(),
        "the impostor did not get the freed PID\n{}",
        impostor.outputs()
    );
    wait_until(
        "the impostor runs with its groups",
        STEP,
        || {
            procs_in(home)
                .iter()
                .any(|p| p.name == "sleep" && p.ids["groups"] == [0, 42])
        },
        || format!("{:#?}", procs_in(home)),
    );

    release(&go);
    opener.wait_stdout("with 1 fd", STEP);
    assert!(
        opener.stdout().contains("{\"session\""),
        "{}",
        opener.outputs()
    );
    let guest = the_guest(target);
    assert_eq!(guest.ids["uid"], vec![NOBODY; 4], "{guest:?}");
    assert_eq!(guest.ids["gid"], vec![NOBODY; 4], "{guest:?}");
    assert!(
        guest.ids["groups"].is_empty(),
        "the guest got groups the user does not have: {guest:?}"
    );
    release(&dir.join("go.end"));
}

// ---- Item 3b: one user cannot stop the service for others ----

#[test]
fn one_user_holding_thousands_of_idle_connections_stops_no_one_else() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, other) = (lab.node(1), lab.node(2));
    let (job, go) = ticks_job(&lab, home, "job");

    // Three processes of user nobody open up to 10000 connections each and hold them, each
    // registered as a supervisor (which no idle timeout ends): more than the daemon has
    // descriptors, unless it refuses them.
    let hog = spawn_as(
        home,
        NOBODY,
        &[],
        PYTHON,
        &[&prog("hog.py"), SOCKET, "3", "10000"],
    );
    hog.wait_stdout("holding", STEP);

    // Root's tools and the other nodes are still served.
    let status = run(home, "mosctl", &["status"]);
    assert!(status.status.success(), "{status:?}");
    assert!(status.stdout.contains("node 2: up"), "{status:?}");
    move_to(home, job.pid(), "2");
    assert_eq!(location(home, job.pid()), Ok(2));
    move_to(home, job.pid(), "home");
    let seen = run(other, "mosctl", &["status"]);
    assert!(seen.status.success(), "{seen:?}");
    assert!(seen.stdout.contains("node 1: up"), "{seen:?}");

    // The user herself is told why, at once.
    let refused = run_as(home, NOBODY, "mosctl", &["status"]);
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused
            .stderr
            .contains("uid 65534 has 1024 connections to mosixd open, the most one user may have"),
        "{refused:?}"
    );
    // Another user is not.
    let another = run_as(home, OTHER_USER, "mosctl", &["status"]);
    assert!(another.status.success(), "{another:?}");

    // Once the hog is gone, so is the limit it reached. (setpriv's change of user cleared
    // the parent-death signal that would have ended it with its nsenter.)
    drop(hog);
    for p in procs_in(home) {
        if p.ids["uid"].first() == Some(&NOBODY) {
            host_kill("KILL", p.pid);
        }
    }
    wait_until(
        "user nobody is served again",
        STEP,
        || run_as(home, NOBODY, "mosctl", &["status"]).status.success(),
        || home.log(),
    );
    finish_ticks(job, &go);
}

// ---- Item 3c: tools check who serves the socket ----

#[test]
fn tools_refuse_a_daemon_run_by_another_user_and_send_it_nothing() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(1);
    let node = lab.node(1);
    let fake = "/tmp/fake-mosixd.sock";
    let daemon = spawn_as(node, NOBODY, &[], PYTHON, &[&prog("fake_daemon.py"), fake]);
    daemon.wait_stdout("listening\n", STEP);
    let refusal = format!(
        "{fake} is served by uid {NOBODY}, not by root or you; refusing to talk to it \
         (set MOSIX_DAEMON_USER to trust that user's mosixd)"
    );
    let socket = ["--socket", fake];
    let mut refused = 0;
    for uid in [OTHER_USER, 0] {
        let runs = [
            ("mosctl", vec!["status"], "mosctl: "),
            (
                "migrate",
                vec!["4711", "1"],
                "migrate: cannot move 4711 to node 1: ",
            ),
            ("mosrun", vec!["/bin/true"], "mosrun: "),
        ];
        for (tool, args, prefix) in runs {
            let args: Vec<&str> = socket.iter().copied().chain(args).collect();
            let done = run_as(node, uid, tool, &args);
            assert_eq!(done.status.code(), Some(1), "uid {uid}: {tool}: {done:?}");
            assert_eq!(
                done.stderr,
                format!("{prefix}{refusal}\n"),
                "uid {uid}: {tool}"
            );
            refused += 1;
        }
    }
    // Every refused tool connected, and closed without a byte.
    wait_until(
        "the fake daemon saw every connection end",
        STEP,
        || daemon.stdout().matches("got ").count() == refused,
        || daemon.outputs(),
    );
    assert_eq!(
        daemon.stdout().matches("got 0 bytes").count(),
        refused,
        "{}",
        daemon.outputs()
    );

    // A user may talk to her own daemon, and to one whose user she names.
    let own = run_as(node, NOBODY, "mosctl", &["--socket", fake, "status"]);
    let named = spawn_as(
        node,
        OTHER_USER,
        &[("MOSIX_DAEMON_USER", "nobody")],
        "mosctl",
        &["--socket", fake, "status"],
    )
    .finish(STEP);
    for done in [own, named] {
        assert_eq!(done.status.code(), Some(1), "{done:?}");
        assert_eq!(
            done.stderr,
            "mosctl: mosixd closed the connection without replying\n"
        );
    }
    wait_until(
        "the fake daemon got both requests",
        STEP,
        || daemon.stdout().matches("got 9 bytes").count() == 2,
        || daemon.outputs(),
    );
}

// ---- Item 5a: daemons restart under running jobs ----

#[test]
fn restarting_home_daemon_keeps_jobs_visible_and_movable() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let home = lab.node(1);
    let (at_home, go_home) = ticks_job(&lab, home, "home");
    let (away, go_away) = ticks_job(&lab, home, "away");
    move_to(home, away.pid(), "2");

    if let Err(e) = home.stop_daemon() {
        panic!("{e}");
    }
    let down = run(home, "mosctl", &["where", &away.pid().to_string()]);
    assert_eq!(down.status.code(), Some(1), "{down:?}");
    if let Err(e) = home.start_daemon() {
        panic!("{e}");
    }
    // The supervisors register again on their own.
    wait_until(
        "both jobs are known again where they run",
        STEP,
        || location(home, at_home.pid()) == Ok(1) && location(home, away.pid()) == Ok(2),
        || format!("{}\n{}", home.log(), job_stderr(&away)),
    );
    // A PID the daemon does not supervise has no place, even though a process has it.
    let init = location(home, 1);
    assert_eq!(
        init,
        Err("mosctl: cannot locate process 1: process 1 is not running under mosrun\n".into())
    );

    move_to(home, away.pid(), "home");
    move_to(home, at_home.pid(), "2");
    assert_eq!(location(home, at_home.pid()), Ok(2));
    assert_eq!(location(home, away.pid()), Ok(1));
    move_to(home, at_home.pid(), "home");
    finish_ticks(at_home, &go_home);
    finish_ticks(away, &go_away);
}

#[test]
fn stopping_a_remote_daemon_leaves_the_processes_it_hosts_running() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let (job, go) = ticks_job(&lab, home, "job");
    move_to(home, job.pid(), "2");
    let guest = the_guest(host);

    if let Err(e) = host.stop_daemon() {
        panic!("{e}");
    }
    // The guest lives on, and the program goes on computing there.
    assert!(proc_info(guest.pid).is_some(), "{:#?}", procs_in(host));
    let ticks_now = String::from_utf8_lossy(&job.stdout())
        .matches("tick")
        .count();
    if let Err(e) = job.wait_stdout("ticks after the daemon stopped", STEP, |out| {
        String::from_utf8_lossy(out).matches("tick").count() > ticks_now + 2
    }) {
        panic!("{e}");
    }
    assert_eq!(location(home, job.pid()), Ok(2));
    assert_eq!(guests(host).len(), 1, "{:#?}", procs_in(host));

    if let Err(e) = host.start_daemon() {
        panic!("{e}");
    }
    // The new daemon did not start the guest, yet lists its process once the guest has
    // registered again.
    let husk = the_husk_of(host, &guest);
    let expected = Listed {
        home: 1,
        home_pid: job.pid(),
        pid: pid_in_node(husk.pid),
        user: "root".to_owned(),
    };
    wait_until(
        "the restarted daemon lists the process again",
        STEP,
        || listed(host) == [expected.clone()],
        || format!("{:?}\n{}", listed(host), host.log()),
    );
    assert!(
        run(host, "mosctl", &["status"])
            .stdout
            .starts_with("node 2: this node, 0 supervised processes, 1 hosted\n")
    );
    move_to(home, job.pid(), "home");
    assert_eq!(location(home, job.pid()), Ok(1));
    wait_until(
        "the process that went home is no longer listed",
        STEP,
        || listed(host).is_empty(),
        || format!("{:?}", listed(host)),
    );
    // No daemon reaped the guest (the one that started it had gone), yet its record goes.
    wait_until(
        "the guest's record goes with it",
        STEP,
        || guest_records(host).is_empty(),
        || {
            format!(
                "{:?}\n{:#?}\n{}",
                guest_records(host),
                guests(host),
                host.log()
            )
        },
    );
    // The new daemon takes new guests.
    move_to(home, job.pid(), "2");
    move_to(home, job.pid(), "home");
    finish_ticks(job, &go);
}

// ---- Item 5b: orders race, callers give up ----

/// A job whose shell runs big.c (1 GiB) and ticks.py side by side, so that one supervisor
/// holds a process whose moves take seconds and another to order about meanwhile.
struct Pair<'a> {
    job: Job<'a>,
    big: ProcInfo,
    small: ProcInfo,
    go: [PathBuf; 2],
}

impl<'a> Pair<'a> {
    fn start(lab: &Lab, home: &'a Node) -> Pair<'a> {
        let go = ["go-big", "go-small"].map(|n| lab.work_dir().join(n));
        let script = "\"$1\" \"$2\" \"$3\" & \"$4\" \"$5\" \"$6\" & wait";
        let big = big_program();
        let job = start_job(
            lab,
            home,
            &[
                "/bin/sh",
                "-c",
                script,
                "sh",
                &big,
                &BIG_MIB.to_string(),
                path_str(&go[0]),
                PYTHON,
                &ticks(),
                path_str(&go[1]),
            ],
        );
        if let Err(e) = job.wait_stdout("both ready", STEP, |out| {
            String::from_utf8_lossy(out).matches("ready\n").count() == 2
        }) {
            panic!("{e}");
        }
        let big = job_child(&job, "big");
        let small = job_child(&job, "python3");
        Pair {
            job,
            big,
            small,
            go,
        }
    }

    fn pid(p: &ProcInfo) -> u32 {
        pid_in_node(p.pid)
    }

    /// Lets both end; big's sum must be that of its pattern, wherever it went.
    fn finish(self) {
        self.go.iter().for_each(|go| release(go));
        let out = match self.job.finish(STEP) {
            Ok(out) => out,
            Err(e) => panic!("{e}"),
        };
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{out:?}");
        assert!(stdout.contains(&big_sum(BIG_MIB)), "{stdout}");
        assert!(stdout.contains("\ndone\n"), "{stdout}");
    }
}

#[test]
fn a_second_migrate_of_a_moving_process_is_refused_at_once() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let pair = Pair::start(&lab, home);
    let big = Pair::pid(&pair.big);
    move_to(home, big, "2");

    // Its guest stopped, the process cannot come home: the first order stays in flight.
    let guest = the_guest(host);
    host_kill("STOP", guest.pid);
    let first = spawn(home, "migrate", &[&big.to_string(), "home"]);
    wait_until(
        "the daemon passed the first order on",
        STEP,
        || lines_about(&home.log(), "migration requested", big) == 2,
        || home.log(),
    );
    for target in ["home", "2", "1"] {
        let second = run(home, "migrate", &[&big.to_string(), target]);
        assert_eq!(second.status.code(), Some(1), "{second:?}");
        let whither = if target == "home" {
            "home".to_owned()
        } else {
            format!("to node {target}")
        };
        assert_eq!(
            second.stderr,
            format!("migrate: cannot move {big} {whither}: it is already moving\n")
        );
    }
    host_kill("CONT", guest.pid);
    let done = first.finish(STEP);
    assert!(done.status.success(), "{done:?}");
    assert_eq!(location(home, big), Ok(1));
    pair.finish();
}

#[test]
fn an_order_whose_caller_gave_up_is_not_carried_out_later() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let pair = Pair::start(&lab, home);
    let (big, small) = (Pair::pid(&pair.big), Pair::pid(&pair.small));

    // The supervisor is made busy: big comes home, and its guest is stopped in the middle of
    // the first round, which the supervisor reads on its own thread. Orders for small wait
    // until it is done. (A machine too slow to catch the round moves big out and tries
    // again.)
    let mut coming = None;
    for _ in 0..3 {
        move_to(home, big, "2");
        let guest = the_guest(host);
        let migrate = spawn(home, "migrate", &[&big.to_string(), "home"]);
        wait_until(
            "big's first round is arriving home",
            STEP,
            || proc_info(pair.big.pid).is_some_and(|p| p.rss_kib > 64 << 10),
            || migrate.outputs(),
        );
        host_kill("STOP", guest.pid);
        let rss = proc_info(pair.big.pid).map_or(0, |p| p.rss_kib);
        if rss < (BIG_MIB << 10) * 9 / 10 {
            coming = Some((migrate, guest));
            break;
        }
        host_kill("CONT", guest.pid);
        let done = migrate.finish(STEP);
        assert!(done.status.success(), "{done:?}");
    }
    let Some((migrate_big, guest)) = coming else {
        panic!("could not stop big's guest during its first round in three tries");
    };
    let dropped = "dropped an order whose caller gave up";

    // A caller that gives up by itself.
    let timed_out = run(
        home,
        "migrate",
        &["--timeout", "2", &small.to_string(), "2"],
    );
    assert_eq!(timed_out.status.code(), Some(1), "{timed_out:?}");
    assert_eq!(
        timed_out.stderr,
        format!(
            "migrate: cannot move {small} to node 2: no answer from mosixd within 2s; gave up \
             (the move is not made unless it had started)\n"
        )
    );
    wait_until(
        "the supervisor dropped the first order",
        STEP,
        || lines_about(&job_stderr(&pair.job), dropped, small) == 1,
        || format!("{}\n{}", job_stderr(&pair.job), home.log()),
    );

    // A caller that is killed.
    let killed = spawn(home, "migrate", &[&small.to_string(), "2"]);
    wait_until(
        "the daemon passed the second order on",
        STEP,
        || lines_about(&home.log(), "migration requested", small) == 2,
        || home.log(),
    );
    drop(killed);
    wait_until(
        "the supervisor dropped the second order",
        STEP,
        || lines_about(&job_stderr(&pair.job), dropped, small) == 2,
        || format!("{}\n{}", job_stderr(&pair.job), home.log()),
    );

    host_kill("CONT", guest.pid);
    let done = migrate_big.finish(STEP);
    assert!(done.status.success(), "{done:?}");
    // Orders reach the supervisor in turn: once this one is done, any older one would have
    // been taken first.
    move_to(home, big, "2");
    assert_eq!(location(home, small), Ok(1));
    assert_eq!(
        lines_about(&job_stderr(&pair.job), "migrated", small),
        0,
        "{}",
        job_stderr(&pair.job)
    );
    // Its order answered, small moves when asked.
    move_to(home, small, "2");
    move_to(home, small, "home");
    move_to(home, big, "home");
    pair.finish();
}

// ---- Item 5c: large replies, closed pipes ----

#[test]
fn status_of_a_map_of_twenty_thousand_nodes_answers_and_head_ends_it_quietly() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let home = lab.node(1);
    // Nodes 3 to 20002 live at 10.1.0.1 onwards, addresses no lab node can reach.
    let map = lab.work_dir().join("big.map");
    fs::write(&map, "1 10.231.0.1 2\n3 10.1.0.1 20000\n").expect("write the map");
    let socket = "/run/mosix/big-map.sock";
    let daemon = spawn(
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
            socket,
            "--port",
            "4661",
            // The node's own daemon has its /mfs.
            "--no-mfs",
        ],
    );
    wait_until(
        "the daemon with the big map is ready",
        STEP,
        || daemon.stderr().contains("mosixd ready"),
        || daemon.outputs(),
    );

    let status = run(home, "mosctl", &["--socket", socket, "status"]);
    assert!(status.status.success(), "{status:?}");
    let lines: Vec<&str> = status.stdout.lines().collect();
    assert_eq!(lines.len(), 20003, "{}", status.stderr);
    assert_eq!(
        lines[0],
        "node 1: this node, 0 supervised processes, 0 hosted"
    );
    assert!(lines[1].starts_with("node 1: up, load "), "{}", lines[1]);
    // Nothing answers gossip on the big map's port: the view never hears the others.
    assert_eq!(lines[2], "node 2: dead");
    assert_eq!(lines[20002], "node 20002: dead");

    // The pipe closes long before mosctl has written its 300 KB.
    let head = run(
        home,
        "bash",
        &[
            "-c",
            "set -o pipefail; mosctl --socket \"$1\" status | head -1",
            "bash",
            socket,
        ],
    );
    assert!(head.status.success(), "{head:?}");
    assert_eq!(
        head.stdout,
        "node 1: this node, 0 supervised processes, 0 hosted\n"
    );
    assert_eq!(head.stderr, "");
}

// ---- Item 8: a guest reports to its node's daemon ----

#[test]
fn a_moved_process_is_listed_where_it_runs_until_it_goes_home_or_ends() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let (job, go) = ticks_job(&lab, home, "job");
    assert!(listed(host).is_empty());
    move_to(home, job.pid(), "2");
    let guest = the_guest(host);
    let husk = the_husk_of(host, &guest);
    let expected = Listed {
        home: 1,
        home_pid: job.pid(),
        pid: pid_in_node(husk.pid),
        user: "root".to_owned(),
    };
    // The guest reports once the process runs, which may be just after migrate returns.
    wait_until(
        "node 2 lists the process it hosts",
        STEP,
        || listed(host) == [expected.clone()],
        || format!("{:?}\n{}", listed(host), host.log()),
    );
    // Home lists nothing: it hosts nothing, it supervises.
    assert!(listed(home).is_empty());
    let status = |node: &Node| run(node, "mosctl", &["status"]).stdout;
    assert!(
        status(host).starts_with("node 2: this node, 0 supervised processes, 1 hosted\n"),
        "{}",
        status(host)
    );
    assert!(
        status(home).starts_with("node 1: this node, 1 supervised processes, 0 hosted\n"),
        "{}",
        status(home)
    );

    // The figures are the husk's own: the CPU time it has used by now, on node 2 only (the
    // husk was made there), and its resident memory.
    let ticks_now = String::from_utf8_lossy(&job.stdout())
        .matches("tick")
        .count();
    if let Err(e) = job.wait_stdout("ticks on node 2", STEP, |out| {
        String::from_utf8_lossy(out).matches("tick").count() > ticks_now + 3
    }) {
        panic!("{e}");
    }
    let rss_before = proc_info(husk.pid).expect("the husk runs").rss_kib;
    let rows = guests_table(host);
    let cpu_after = cpu_seconds(husk.pid);
    let rss_after = proc_info(husk.pid).expect("the husk runs").rss_kib;
    let row = &rows[0];
    assert!(
        row.cpu_seconds > 0.0 && row.cpu_seconds <= cpu_after + 0.01,
        "{row:?}, the husk has used {cpu_after} s"
    );
    let (low, high) = (rss_before.min(rss_after), rss_before.max(rss_after));
    assert!(
        row.rss_mib >= low as f64 / 1024.0 - 0.1 && row.rss_mib <= high as f64 / 1024.0 + 0.1,
        "{row:?}, the husk holds {low} to {high} KiB"
    );
    // Anyone may look, as anyone may run ps.
    let seen = guests_table_as(host, NOBODY);
    assert_eq!(seen.len(), 1, "{seen:?}");
    assert_eq!(seen[0].listed, expected);

    move_to(home, job.pid(), "home");
    wait_until(
        "the process that went home is no longer listed",
        STEP,
        || listed(host).is_empty(),
        || format!("{:?}", listed(host)),
    );
    assert!(status(host).starts_with("node 2: this node, 0 supervised processes, 0 hosted\n"));

    // Moved again, it is listed again, as the new husk; ending there, it goes.
    move_to(home, job.pid(), "2");
    let guest = the_guest(host);
    let husk = the_husk_of(host, &guest);
    let expected = Listed {
        pid: pid_in_node(husk.pid),
        ..expected
    };
    wait_until(
        "node 2 lists the process again",
        STEP,
        || listed(host) == [expected.clone()],
        || format!("{:?}", listed(host)),
    );
    finish_ticks(job, &go);
    wait_until(
        "the process that ended is no longer listed",
        STEP,
        || listed(host).is_empty(),
        || format!("{:?}", listed(host)),
    );
}

/// The attack: user nobody, who has a real process on node 2, wants another one of hers
/// listed as hosted there, from node 1 (a balancer would believe it). She registers as a
/// guest on a connection of her own, writes a record for her process beside the socket, and
/// runs `mosixd guest` herself. Each is refused, and the list holds her real process only.
#[test]
fn an_ordinary_user_cannot_register_a_guest_of_her_own() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab(2);
    let (home, host) = (lab.node(1), lab.node(2));
    let dir = open_dir(&lab, "nobody");
    let go = dir.join("go");
    let mut cmd = home.command("setpriv");
    cmd.args([
        format!("--reuid={NOBODY}"),
        format!("--regid={NOBODY}"),
        "--clear-groups".to_owned(),
        "--".to_owned(),
        "mosrun".to_owned(),
        PYTHON.to_owned(),
        ticks(),
        path_str(&go).to_owned(),
    ])
    .current_dir(&dir)
    .stdin(Stdio::null())
    .env("MOSRUN_LOG", "info")
    .env("NO_COLOR", "1");
    let job = Job::spawn(home, cmd).unwrap_or_else(|e| panic!("mosrun as nobody: {e}"));
    if let Err(e) = job.wait_output("ready\n", STEP) {
        panic!("{e}");
    }
    let done = run_as(home, NOBODY, "migrate", &[&job.pid().to_string(), "2"]);
    assert!(done.status.success(), "{done:?}");
    let real = Listed {
        home: 1,
        home_pid: job.pid(),
        pid: pid_in_node(the_husk_of(host, &the_guest(host)).pid),
        user: "nobody".to_owned(),
    };
    wait_until(
        "node 2 lists nobody's real process",
        STEP,
        || listed(host) == [real.clone()],
        || format!("{:?}\n{}", listed(host), host.log()),
    );

    let attack = spawn_as(
        host,
        NOBODY,
        &[],
        PYTHON,
        &[&prog("fake_guest.py"), SOCKET, "1"],
    )
    .finish(STEP);
    assert!(attack.status.success(), "{attack:?}");
    let said: HashMap<&str, &str> = attack
        .stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .collect();
    let not_a_guest = "is not a guest this node's mosixd started for uid 65534 and node 1";
    assert!(
        said["reply"].starts_with("{\"error\"") && said["reply"].contains(not_a_guest),
        "{attack:?}"
    );
    assert_eq!(said["records"], "PermissionError", "{attack:?}");
    assert!(
        said["guest"].contains("mosixd refused the guest's registration: process ")
            && said["guest"].contains(not_a_guest),
        "{attack:?}"
    );
    assert_eq!(listed(host), [real]);
    assert!(
        run(host, "mosctl", &["status"])
            .stdout
            .starts_with("node 2: this node, 0 supervised processes, 1 hosted\n")
    );

    release(&go);
    let out = match job.finish(STEP) {
        Ok(out) => out,
        Err(e) => panic!("{e}"),
    };
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).ends_with("done\n"),
        "{out:?}"
    );
}
