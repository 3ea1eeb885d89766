//! Issue 9's failures, in a 3-node lab with one CPU per node and the daemons balancing by
//! themselves (`LabConfig::balance`): a killed node that comes back is used again; a node cut
//! off for 30 s while it hosts guests runs no process twice and loses none silently, and takes
//! work again once healed; a thousand jobs started at one node spread while the daemons and
//! supervisors go on answering, and every one computes what it should.
//!
//! The job is `spin.c` (tests/progs/balance, shared through `spin/mod.rs`): it says "ready",
//! stirs 1 MiB until NAME.stop exists (a look every 16 rounds, forwarded home when it runs
//! away) and prints "rounds=R sum=S", which a never-moved run of R rounds must match.

use std::fs;
use std::process::{Child, Stdio};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

mod spin;

use rmosix_lab::{
    Job, Lab, LabConfig, Node, ToolRun, bin_dir_of_current_test, processes_in, require_root,
};

/// Deadline of one step: a tool run, a job's start or end, a node seen dead or alive.
const STEP: Duration = Duration::from_secs(60);
/// How long the balancers may take to send work to a node (as in balance.rs: seconds of
/// samples, gossip, the move; generous, as other tests may share the host's CPUs).
const SPREAD: Duration = Duration::from_secs(120);
/// How long a test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(100);
/// How long the partition lasts: issue 9's figure, twice the longest link timeout (the
/// transport fails an unacknowledged write after 15 s, an idle link after 5 + 3 × 2 s), so
/// that both ends of every session through the cut have given up before it heals.
const PARTITION: Duration = Duration::from_secs(30);

/// Taken by each test for its whole run: the crowd test's thousand jobs would starve the
/// other tests' labs of CPU, and their link timeouts would fire.
static ONE_LAB: Mutex<()> = Mutex::new(());

/// This test's turn at the machine (a test that failed before does not take it away).
fn one_lab_at_a_time() -> MutexGuard<'static, ()> {
    ONE_LAB.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lab() -> Lab {
    let mut cfg = LabConfig::new(3, bin_dir_of_current_test());
    cfg.cpu_quota = Some(1.0);
    cfg.balance = true;
    Lab::start(cfg).unwrap_or_else(|e| panic!("{e}"))
}

/// Where each job runs now.
fn locations(jobs: &[Job]) -> Vec<u16> {
    jobs.iter()
        .map(|j| j.location().unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

/// Waits until `check` holds for where `jobs` run; `what` names the awaited state.
fn wait_locations(jobs: &[Job], what: &str, within: Duration, check: impl Fn(&[u16]) -> bool) {
    let deadline = Instant::now() + within;
    loop {
        let at = locations(jobs);
        if check(&at) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: not within {within:?}; the jobs run on {at:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// Waits until `mosctl status` at `at` shows node `n` as `state` (`up` or `dead`).
fn wait_seen(at: &Node, n: u16, state: &str) {
    let line = format!("node {n}: {state}");
    let deadline = Instant::now() + STEP;
    loop {
        let status = at
            .run("mosctl", &["status"], STEP)
            .unwrap_or_else(|e| panic!("{e}"));
        if status.stdout.lines().any(|l| l.starts_with(&line)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "node {} does not see {line:?}\n{}",
            at.id(),
            status.stdout
        );
        std::thread::sleep(POLL);
    }
}

/// Stops the jobs named `names` and checks that each ended well with what a never-moved run
/// computes.
fn stop_all(lab: &Lab, program: &str, jobs: Vec<Job>, names: &[String]) {
    for name in names {
        fs::write(lab.work_dir().join(format!("{name}.stop")), b"").expect("write a stop file");
    }
    for job in jobs {
        let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
        assert!(done.status.success(), "{done:?}\n{stdout}\n{stderr}");
        let line = spin::result_line(&stdout).unwrap_or_else(|| panic!("no result\n{stderr}"));
        spin::assert_as_never_moved(program, &[line], &stderr);
    }
}

/// Starts jobs `test-1` … `test-count` at node 1 and waits until one of them runs at
/// node `n`, sent there by the balancers; stops them all.
fn node_takes_new_work(lab: &Lab, program: &str, test: &str, count: usize, n: u16) {
    let names: Vec<String> = (1..=count).map(|k| format!("{test}-{k}")).collect();
    let jobs: Vec<Job> = names
        .iter()
        .map(|name| spin::start(lab, &[], program, name))
        .collect();
    wait_locations(
        &jobs,
        &format!("a new job sent to node {n}"),
        SPREAD,
        |at| at.contains(&n),
    );
    stop_all(lab, program, jobs, &names);
}

/// A killed node comes back (a fresh init and daemon, same id, address, map and key): the
/// others see it up again, and new jobs started at node 1 spread to it as before.
#[test]
fn a_killed_node_that_comes_back_takes_new_work_again() {
    if !require_root() {
        return;
    }
    let _turn = one_lab_at_a_time();
    let program = spin::program("recovery");
    let lab = lab();
    let doomed: Vec<Job> = (1..=2)
        .map(|k| spin::start(&lab, &["-3"], &program, &format!("doomed-{k}")))
        .collect();
    wait_locations(&doomed, "both jobs on node 3", STEP, |at| {
        at.iter().all(|&n| n == 3)
    });
    lab.node(3).kill();
    for job in doomed {
        let pid = job.pid();
        let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
        let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
        assert!(!done.status.success(), "{done:?}");
        assert!(
            stderr.contains(&format!("process {pid} lost: ")),
            "no reason logged: {stderr}"
        );
    }
    wait_seen(lab.node(1), 3, "dead");
    lab.node(3).revive().unwrap_or_else(|e| panic!("{e}"));
    for (at, n) in [(1, 3), (2, 3), (3, 1), (3, 2)] {
        wait_seen(lab.node(at), n, "up");
    }
    // Four jobs on three one-CPU nodes: the balancers send one to each other node.
    node_takes_new_work(&lab, &program, "revived", 4, 3);
}

/// The husks on `node`: its processes that run a job's program (`spin`); a guest's husk
/// takes the program's name once its image is restored.
fn husks_on(node: &Node) -> Vec<u32> {
    processes_in(node)
        .into_iter()
        .filter(|p| p.name == "spin")
        .map(|p| p.pid)
        .collect()
}

/// The home PIDs of node 1's processes that `mosctl guests` at `node` lists.
fn guests_of_node_1(node: &Node) -> Vec<u32> {
    let out = node
        .run("mosctl", &["guests"], STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    home_pids_of_node_1(&out.stdout)
}

/// The home PIDs of node 1's processes in `mosctl guests`'s table.
fn home_pids_of_node_1(table: &str) -> Vec<u32> {
    table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let mut fields = l.split_whitespace();
            let home = fields.next()?;
            let home_pid = fields.next()?.parse().ok()?;
            (home == "1").then_some(home_pid)
        })
        .collect()
}

/// The reason mosrun gave, in `stderr`, for losing process `pid`, if it lost it.
fn lost_reason_in(stderr: &str, pid: u32) -> Option<String> {
    let needle = format!("process {pid} lost: ");
    stderr
        .lines()
        .find_map(|l| l.split_once(&needle).map(|(_, why)| why.to_owned()))
}

/// Node 2, hosting guests of node 1, is cut off from the others for 30 s, its processes
/// going on, and then healed.
///
/// What happens, as this test's timeline (printed with `--nocapture`) shows:
/// - Every session through the cut is a TCP link whose packets are now lost. Its ends give
///   up on their own: an unacknowledged write fails after 15 s (TCP_USER_TIMEOUT), an idle
///   link after 5 s of silence and 3 unanswered keepalive probes 2 s apart (11 s).
/// - Home (node 1): its view marks node 2 dead within seconds (about 4 s: no gossip
///   answers), and its balancer sends nothing there. Each supervisor of a job at node 2
///   loses its link (about 15.5 s: "Connection timed out"), kills the job's shell and ends:
///   mosrun prints "process PID lost: link to node 2 lost: session stream: Connection timed
///   out" and dies by SIGKILL, as its process did.
/// - Guest (node 2): each guest supervisor loses its link to home the same way (about
///   15.3 s), kills its husk and ends; `mosctl guests` there no longer lists it. Node 2 sees
///   the others dead and keeps its own processes.
/// - Jobs elsewhere (node 3) run on untouched.
/// - Healed, the views merge again (each node sees the others up within seconds), and the
///   balancers send node 2 new work.
///
/// So no process runs twice (nothing of a lost job lives on at node 2 once the link has
/// timed out, and a job is never restarted elsewhere), and none is lost silently (each
/// mosrun either prints its job's correct result or says which process it lost, and why).
#[test]
fn a_partition_healed_after_30_s_runs_no_process_twice_and_loses_none_silently() {
    if !require_root() {
        return;
    }
    let _turn = one_lab_at_a_time();
    let program = spin::program("recovery");
    let lab = lab();
    let two = lab.node(2);
    // Two at node 2 (one CPU: its balancer may send one home or on), one at node 3.
    let names: Vec<String> = (1..=3).map(|k| format!("cut-{k}")).collect();
    let jobs: Vec<Job> = names
        .iter()
        .zip(["-2", "-3", "-2"])
        .map(|(name, at)| spin::start(&lab, &[at], &program, name))
        .collect();
    wait_locations(&jobs, "jobs started at nodes 2 and 3", STEP, |at| {
        at[1] == 3 && at.contains(&2)
    });
    let before = locations(&jobs);
    eprintln!("before the cut, the jobs run on {before:?}");

    two.cut().unwrap_or_else(|e| panic!("{e}"));
    let cut = Instant::now();
    let mut seen_lost = vec![None; jobs.len()];
    let mut husks_gone = None;
    let mut two_dead_at_1 = None;
    while cut.elapsed() < PARTITION {
        for (job, seen) in jobs.iter().zip(&mut seen_lost) {
            let stderr = String::from_utf8_lossy(&job.stderr()).into_owned();
            if seen.is_none() && lost_reason_in(&stderr, job.pid()).is_some() {
                *seen = Some(cut.elapsed());
            }
        }
        if husks_gone.is_none() && husks_on(two).is_empty() {
            husks_gone = Some(cut.elapsed());
        }
        if two_dead_at_1.is_none() {
            let status = lab.node(1).run("mosctl", &["status"], STEP);
            let status = status.unwrap_or_else(|e| panic!("{e}"));
            if status.stdout.lines().any(|l| l == "node 2: dead") {
                two_dead_at_1 = Some(cut.elapsed());
            }
        }
        std::thread::sleep(POLL);
    }
    eprintln!(
        "after the cut: mosrun said lost at {seen_lost:?}, node 2's husks gone at \
         {husks_gone:?}, node 1 saw node 2 dead at {two_dead_at_1:?}"
    );
    // Nothing of a job lost at home may live on at node 2; and no job at node 2 before the
    // cut can be there and also have ended at home.
    let still_there = husks_on(two);
    let listed = guests_of_node_1(two);
    two.heal().unwrap_or_else(|e| panic!("{e}"));
    for (job, seen) in jobs.iter().zip(&seen_lost) {
        if seen.is_some() {
            assert!(
                !listed.contains(&job.pid()),
                "job {} ended at home but node 2 still hosts it: {listed:?}",
                job.pid()
            );
        }
    }
    assert!(
        still_there.is_empty() || seen_lost.iter().all(Option::is_none),
        "node 2 still runs husks {still_there:?} of jobs whose mosrun gave up"
    );

    // Every job ends with its correct result or a reason naming its process.
    let mut lost = Vec::new();
    for (name, job) in names.iter().zip(jobs) {
        let pid = job.pid();
        fs::write(lab.work_dir().join(format!("{name}.stop")), b"").expect("write a stop file");
        let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
        let stdout = String::from_utf8_lossy(&done.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&done.stderr).into_owned();
        match spin::result_line(&stdout) {
            Some(line) if done.status.success() => {
                spin::assert_as_never_moved(&program, &[line], &stderr);
            }
            _ => {
                assert!(!done.status.success(), "{done:?}");
                assert!(
                    stderr.contains(&format!("process {pid} lost: ")),
                    "job {pid} ended without its result or a reason: {done:?}\n{stderr}"
                );
                lost.push((pid, lost_reason_in(&stderr, pid), done.status));
            }
        }
    }
    eprintln!("lost with a reason (PID, reason, mosrun's status): {lost:?}");
    // Only the jobs at node 2 crossed the cut.
    assert_eq!(lost.len(), before.iter().filter(|&&n| n == 2).count());
    // Nothing of them comes back at node 2 after the heal either.
    assert_eq!(
        husks_on(two),
        Vec::<u32>::new(),
        "husks at node 2 after the heal"
    );
    assert_eq!(guests_of_node_1(two), Vec::<u32>::new());

    for (at, n) in [(1, 2), (3, 2), (2, 1), (2, 3)] {
        wait_seen(lab.node(at), n, "up");
    }
    let rejoined = two
        .log()
        .contains("the others declared this node dead; rejoining");
    eprintln!("healed; node 2 rejoined under a new identity: {rejoined}");
    node_takes_new_work(&lab, &program, "healed", 4, 2);
}

/// How many jobs the crowd test starts at node 1: issue 9's figure.
const CROWD: usize = 1000;
/// How long the crowd may take to start: every job's mosrun and its program, on node 1's
/// one CPU, which the jobs already started share (102 to 170 s seen on this machine shared
/// with other builds, 278 s once in CI).
const CROWD_START: Duration = Duration::from_secs(450);
/// How long a daemon may take to answer a tool while the crowd runs: the tools' own patience
/// (`mosctl` and `mosps` give up after 30 s), beyond which the user sees a failure.
const ANSWER: Duration = Duration::from_secs(30);
/// How long `migrate PID 2` may take to move a job while the crowd runs: a move may wait 20 s
/// for its session (the supervisor's bound: the target node is given 3 s to connect and 3 s
/// to start a guest, with room for a busy daemon), then a 1 MiB image is restored in a guest
/// on a node busy with hundreds of others; 10 s more for that.
const MOVE_ANSWER: Duration = Duration::from_secs(30);
/// How many rounds of questions the crowd test asks at least while the crowd runs.
const ROUNDS: usize = 4;
/// Every how many rounds it moves a job by hand.
const HAND_MOVE_EVERY: usize = 2;
/// How many jobs the crowd test starts at once, in a wave: each wave waits until the one
/// before has said "ready". All thousand at once is more than mosrun takes (see the test).
const WAVE: usize = 100;
/// How many of the crowd nodes 2 and 3 must each host for it to count as spread: a fifth
/// (an even spread over the three nodes is a third each; by hand they held 32 to 35 % each).
const SPREAD_EACH: usize = CROWD / 5;
/// Starts jobs `$1` to `$2`, `mosrun sh -c JOIN $6 chrt --idle 0 $4 $5`, in directory `$3`,
/// job K writing `out.K`, `err.K` and its mosrun's exit status in `status.K`, and waits for
/// them all. JOIN puts the job (not its mosrun) in the cgroup whose `cgroup.procs` is `$6`,
/// if any, before it execs its program. (A node's programs start in its init's directory,
/// `/`, whatever the `Command`'s: hence the `cd`.)
const CROWD_SCRIPT: &str = r#"cd "$3" || exit 1
i=$1
while [ "$i" -le "$2" ]; do
    ( mosrun sh -c '[ -z "$0" ] || echo $$ > "$0"; exec chrt --idle 0 "$@"' "$6" "$4" "$5" \
        >"out.$i" 2>"err.$i"; echo "$?" >"status.$i" ) &
    i=$((i + 1))
done
wait
"#;

/// Whether the crowd's job `k` said "ready".
fn said_ready(dir: &std::path::Path, k: usize) -> bool {
    fs::read_to_string(dir.join(format!("out.{k}"))).is_ok_and(|o| o.starts_with("ready"))
}

/// How many of the crowd's jobs said "ready".
fn crowd_ready(dir: &std::path::Path, jobs: usize) -> usize {
    (1..=jobs).filter(|&k| said_ready(dir, k)).count()
}

/// The first few of jobs 1 to `jobs` that did not say "ready", with what their mosrun said.
fn not_ready(dir: &std::path::Path, jobs: usize) -> String {
    (1..=jobs)
        .filter(|&k| !said_ready(dir, k))
        .take(5)
        .map(|k| {
            let err = fs::read_to_string(dir.join(format!("err.{k}"))).unwrap_or_default();
            format!("job {k}: mosrun said {err:?}")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crowd's jobs that have not ended: how many, and of the first few where `mosps -a`
/// places them and what their mosrun said.
fn still_running(lab: &Lab, home: &Node, dir: &std::path::Path) -> String {
    let left: Vec<usize> = (1..=CROWD)
        .filter(|k| !dir.join(format!("status.{k}")).exists())
        .collect();
    let (all, _) = answer(lab, home, "mosps", &["-a"]);
    let mut text = format!(
        "{} jobs left; mosps -a lists {}",
        left.len(),
        all.lines().count() - 1
    );
    for k in left.iter().take(5) {
        let out = fs::read_to_string(dir.join(format!("out.{k}"))).unwrap_or_default();
        let err = fs::read_to_string(dir.join(format!("err.{k}"))).unwrap_or_default();
        text += &format!("\njob {k}: out {out:?}, mosrun said {err:?}");
    }
    text + "\n" + &all.lines().take(12).collect::<Vec<_>>().join("\n")
}

/// `tool ARGS` at `node`, which must succeed within [`ANSWER`]; returns its stdout and how
/// long it took.
fn answer(lab: &Lab, node: &Node, tool: &str, args: &[&str]) -> (String, Duration) {
    let (done, took) = answer_within(lab, node, tool, args, ANSWER);
    assert!(done.status.success(), "{tool} {}: {done:?}", args.join(" "));
    (done.stdout, took)
}

/// `tool ARGS` at `node`, which must end within `bound`; returns how it ended (its stdout
/// read from a file: `mosps -a` prints more than a pipe holds) and how long it took.
fn answer_within(
    lab: &Lab,
    node: &Node,
    tool: &str,
    args: &[&str],
    bound: Duration,
) -> (ToolRun, Duration) {
    let out = lab.work_dir().join(format!("answer-{tool}"));
    let line = format!("{tool} {} > {}", args.join(" "), out.display());
    let asked = Instant::now();
    let mut done = node.run("sh", &["-c", &line], bound).unwrap_or_else(|e| {
        let log = node.log();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        panic!(
            "{line}: no answer within {bound:?}: {e}\nthe end of the node's log:\n{}",
            tail.join("\n")
        )
    });
    let took = asked.elapsed();
    done.stdout = fs::read_to_string(&out).expect("read an answer");
    (done, took)
}

/// mosps's rows: (PID, NODE) of each process.
fn mosps_nodes(text: &str) -> Vec<(u32, u16)> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let fields: Vec<&str> = l.split_whitespace().collect();
            Some((fields.first()?.parse().ok()?, fields.get(2)?.parse().ok()?))
        })
        .collect()
}

/// A thousand CPU-bound jobs started at node 1 at once: all start, the balancers spread them
/// (nodes 2 and 3 host a fifth each at least), `mosctl status`, `mosps -a`, `mosctl guests` at the other
/// nodes answer within [`ANSWER`] and `migrate PID 2` of a job within [`MOVE_ANSWER`] (a move
/// or a refusal with its reason) while they all run, and every
/// job ends with its correct result. The figures (time to start them all, each kind of
/// answer's median and extremes) are printed with `--nocapture`.
///
/// The jobs' programs run under SCHED_IDLE (`chrt --idle 0`, which they keep when they
/// move), their supervisors and the daemons at normal priority, and start in waves of
/// [`WAVE`]. The lab puts a node's daemon in the same cgroup as its jobs, with one CPU, and
/// three such nodes share this machine's two. At home the jobs sit in the node's batch
/// sub-cgroup (v1), as an operator would put a crowd in a low-weight slice: SCHED_IDLE alone
/// weighs each job 3 against 1024 for a task at nice 0, so a thousand of them outweigh three
/// such tasks, and the tools, supervisors and the daemon's wakeups waited seconds for a CPU
/// (`mosctl status` 0.3-1.9 s median; 72 ms with the sub-cgroup). It takes about 3 minutes, alone (see
/// [`one_lab_at_a_time`]). docs/balancing.md, "Failures", has the figures, and what was
/// found when a mosrun once got no answer to its registration within 30 s (node 1's daemon
/// waits for a CPU far longer than it works; node 1's log says how long each registration
/// took after its accept, `after=`).
#[test]
fn a_thousand_jobs_at_one_node_spread_and_the_daemons_answer_meanwhile() {
    if !require_root() {
        return;
    }
    let _turn = one_lab_at_a_time();
    let program = spin::program("recovery");
    let lab = lab();
    let home = lab.node(1);
    let dir = lab.work_dir().join("crowd");
    fs::create_dir(&dir).expect("create the crowd's directory");
    let name = dir.join("crowd");
    let batch = home
        .batch_procs_file()
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_default();
    let started = Instant::now();
    let mut starters: Vec<Child> = Vec::new();
    for first in (1..=CROWD).step_by(WAVE) {
        let last = (first + WAVE - 1).min(CROWD);
        let starter = home
            .command("sh")
            .arg("-c")
            .arg(CROWD_SCRIPT)
            .arg("rmosix-crowd")
            .arg(first.to_string())
            .arg(last.to_string())
            .arg(&dir)
            .arg(&program)
            .arg(&name)
            .arg(&batch)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the crowd");
        starters.push(starter);
        loop {
            let ready = crowd_ready(&dir, last);
            if ready == last {
                break;
            }
            if let Some(k) = (1..=last).find(|k| dir.join(format!("status.{k}")).exists()) {
                let err = fs::read_to_string(dir.join(format!("err.{k}"))).unwrap_or_default();
                panic!("job {k} ended as the crowd started ({ready} ready): {err}");
            }
            assert!(
                started.elapsed() < CROWD_START,
                "{ready} of {last} jobs ready after {CROWD_START:?}\n{}",
                not_ready(&dir, last)
            );
            std::thread::sleep(POLL);
        }
    }
    let start_time = started.elapsed();
    eprintln!("{CROWD} jobs ready after {start_time:?}");

    // Every one registered with node 1's daemon, which answers for all of them.
    let mut answers = Vec::new();
    // Node 2 is up, or becomes so: its daemon, on a node as crowded as this one, may answer a
    // probe too late now and then (foca then suspects it until it refutes, within a second).
    let heard = Instant::now();
    loop {
        let (status, took) = answer(&lab, home, "mosctl", &["status"]);
        answers.push(("mosctl status", took));
        if status.contains("node 2: up") {
            break;
        }
        assert!(
            heard.elapsed() < ANSWER,
            "node 2 not up within {ANSWER:?}: {status}"
        );
        std::thread::sleep(POLL);
    }
    let (all, took) = answer(&lab, home, "mosps", &["-a"]);
    answers.push(("mosps -a", took));
    let rows = mosps_nodes(&all);
    assert_eq!(
        rows.len(),
        CROWD,
        "mosps -a lists {} jobs\n{all}",
        rows.len()
    );

    // The balancers spread them; meanwhile the daemons of all three nodes and the
    // supervisors (through `migrate`) keep answering. A few rounds of questions at least, for
    // figures with a spread.
    let deadline = Instant::now() + SPREAD;
    let mut round = 0;
    let mut hand_moves = Vec::new();
    loop {
        let (all, took) = answer(&lab, home, "mosps", &["-a"]);
        answers.push(("mosps -a", took));
        let rows = mosps_nodes(&all);
        let (_, took) = answer(&lab, home, "mosctl", &["status"]);
        answers.push(("mosctl status", took));
        if round % HAND_MOVE_EVERY == 0
            && let Some(&(pid, _)) = rows.iter().find(|&&(_, at)| at == 1)
        {
            let pid = pid.to_string();
            let (done, took) = answer_within(&lab, home, "migrate", &[&pid, "2"], MOVE_ANSWER);
            answers.push(("migrate PID 2", took));
            // An answer is a move, or a refusal that says why.
            let refused = format!("migrate: cannot move {pid} to node 2: ");
            assert!(
                done.status.success() || done.stderr.starts_with(&refused),
                "{done:?}"
            );
            hand_moves.push(done.stderr.trim().to_owned());
        }
        let mut hosted = Vec::new();
        for n in [2, 3] {
            let (table, took) = answer(&lab, lab.node(n), "mosctl", &["guests"]);
            answers.push(("mosctl guests", took));
            hosted.push(home_pids_of_node_1(&table).len());
        }
        round += 1;
        if round >= ROUNDS && hosted.iter().all(|&h| h >= SPREAD_EACH) {
            let at = |n: u16| rows.iter().filter(|&&(_, at)| at == n).count();
            eprintln!(
                "after {:?}: nodes 1, 2, 3 run {}, {}, {} jobs",
                started.elapsed(),
                at(1),
                at(2),
                at(3)
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not spread within {SPREAD:?}: nodes 2 and 3 host {hosted:?}, not {SPREAD_EACH} each"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    eprintln!("moves by hand (empty: done): {hand_moves:?}");
    for what in [
        "mosctl status",
        "mosps -a",
        "migrate PID 2",
        "mosctl guests",
    ] {
        let mut took: Vec<Duration> = answers
            .iter()
            .filter(|(w, _)| *w == what)
            .map(|&(_, t)| t)
            .collect();
        took.sort();
        eprintln!(
            "{what}: {} answers, median {:?}, shortest {:?}, longest {:?}",
            took.len(),
            took[took.len() / 2],
            took[0],
            took[took.len() - 1]
        );
    }

    fs::write(dir.join("crowd.stop"), b"").expect("write the stop file");
    let deadline = Instant::now() + SPREAD;
    while starters
        .iter_mut()
        .any(|s| s.try_wait().expect("wait for the crowd").is_none())
    {
        if Instant::now() >= deadline {
            panic!(
                "the crowd did not end within {SPREAD:?}: {}",
                still_running(&lab, home, &dir)
            );
        }
        std::thread::sleep(POLL);
    }
    eprintln!("all ended after {:?}", started.elapsed());
    let outputs: Vec<String> = (1..=CROWD)
        .map(|k| {
            let read = |what: &str| fs::read_to_string(dir.join(format!("{what}.{k}")));
            let status = read("status").unwrap_or_default();
            let err = read("err").unwrap_or_default();
            assert_eq!(status.trim(), "0", "job {k} ended badly: {err}");
            read("out").unwrap_or_default()
        })
        .collect();
    let lines: Vec<&str> = outputs
        .iter()
        .map(|o| spin::result_line(o).unwrap_or_else(|| panic!("no result: {o}")))
        .collect();
    spin::assert_as_never_moved(&program, &lines, "a job of the crowd");
}
