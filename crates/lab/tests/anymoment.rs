//! Moves ordered at any moment. A process can be inside vfork, fork, clone, execve or exit,
//! or have children there, when `migrate` names it; the order must still be answered (the
//! process moved, or refused with its reason), and the job must neither hang nor lose a
//! process. And a process that keeps reshaping its memory (maps, unmaps, grows, shrinks and
//! moves areas, zaps parts of them) must move whole each time, however its running rounds
//! meet those changes.
//!
//! Each test orders moves at moments drawn at random (the seed is printed), waits for every
//! answer with a bound, then lets the program finish: it checks its children's statuses, or
//! every word of its memory, and prints a result the test knows in advance.

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant, SystemTime};

use rmosix_lab::{
    Job, JobError, Lab, LabConfig, bin_dir_of_current_test, leftovers_in, processes_in,
    require_root,
};

/// The programs of these tests.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/anymoment");
/// Deadline of one step: the program's start, its end, the nodes emptying.
const STEP: Duration = Duration::from_secs(60);
/// How long a test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(10);
/// The system's python: readable by every user.
const PYTHON: &str = "/usr/bin/python3";
/// The longest pause between two orders.
const MAX_PAUSE_MS: u64 = 250;

/// `progs/anymoment/NAME.c`, compiled into the target's tmp dir, which every node sees.
fn c_program(name: &str) -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("anymoment")
        .join(name);
    rmosix_lab::compiled(format!("{PROGS}/{name}.c"), out, &[])
}

/// A small xorshift generator: the moments and targets of the orders.
struct Draw(u64);

impl Draw {
    /// Seeded from the clock; the seed is printed, so that a failure can be traced back.
    fn new(what: &str) -> Draw {
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("a clock after 1970")
            .subsec_nanos();
        let seed = u64::from(nanos) | 1;
        eprintln!("{what}: seed {seed}");
        Draw(seed)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    fn pause(&mut self) {
        std::thread::sleep(Duration::from_millis(self.below(MAX_PAUSE_MS)));
    }
}

/// `mosrun PROGRAM ARGS` at node 1, once it printed "ready".
fn start<'l>(lab: &'l Lab, program: &str, args: &[&str]) -> Job<'l> {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.arg(program)
        .args(args)
        .current_dir(lab.work_dir())
        .stdin(Stdio::null())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job
}

/// `migrate PID TO` at the job's home, within the tool's deadline: Ok if the process moved,
/// else `migrate`'s reason (the process ran on where it was). An order that is not answered
/// in time, or that loses the process, fails the test.
fn order(job: &Job, pid: u32, to: &str) -> Result<(), String> {
    match job.tool("migrate", &[&pid.to_string(), to]) {
        Ok(_) => Ok(()),
        Err(JobError::ToolFailed { stderr, .. }) => {
            assert!(
                stderr.starts_with(&format!("migrate: cannot move {pid} ")),
                "migrate {pid} {to} failed without its reason: {stderr}\n{}",
                job.outputs()
            );
            assert!(
                !stderr.contains("lost"),
                "migrate {pid} {to} lost the process: {stderr}\n{}",
                job.outputs()
            );
            Err(stderr)
        }
        Err(e) => panic!("migrate {pid} {to}: {e}\n{}", job.outputs()),
    }
}

/// A target drawn at random: node 2, node 3 or home.
fn some_target(draw: &mut Draw) -> &'static str {
    ["2", "3", "home"][draw.below(3) as usize]
}

/// The live children of the job's program, by their PIDs in the home node.
fn children(job: &Job) -> Vec<u32> {
    processes_in(job.home())
        .into_iter()
        .filter(|p| p.host_ppid == job.host_pid())
        .map(|p| p.pid)
        .collect()
}

/// Runs `argv STOPFILE` under mosrun at node 1 of a lab of `nodes` nodes (a program that runs
/// until STOPFILE exists and then prints a last line), lets `orders` order moves of it with
/// a draw of its own, then lets it end: it must exit 0 with a last line that `result`
/// accepts, and leave nothing on the other nodes.
fn moved_at_random(
    nodes: usize,
    name: &str,
    argv: &[&str],
    orders: impl FnOnce(&Job, &mut Draw),
    result: impl FnOnce(&str) -> bool,
) {
    let lab = Lab::start(LabConfig::new(nodes, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a {nodes}-node lab: {e}"));
    let stop = lab.work_dir().join(format!("{name}.stop"));
    let (program, args) = argv.split_first().expect("a program");
    let job = start(
        &lab,
        program,
        &[args, &[stop.to_str().expect("a path")]].concat(),
    );
    orders(&job, &mut Draw::new(name));
    fs::write(&stop, b"").expect("write the stop file");
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    let stdout = String::from_utf8_lossy(&done.stdout);
    let stderr = String::from_utf8_lossy(&done.stderr);
    assert!(
        done.status.success() && result(stdout.lines().last().unwrap_or_default()),
        "{:?}\nstdout:\n{stdout}\nstderr:\n{stderr}",
        done.status
    );
    // Its guests and husks are gone from the other nodes.
    let deadline = Instant::now() + STEP;
    for id in 2..=nodes {
        while !leftovers_in(lab.node(id)).is_empty() {
            assert!(
                Instant::now() < deadline,
                "node {id} still holds {:#?}",
                leftovers_in(lab.node(id))
            );
            std::thread::sleep(POLL);
        }
    }
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// How often `job`'s supervisor logged `what`.
fn logged(job: &Job, what: &str) -> usize {
    String::from_utf8_lossy(&job.stderr()).matches(what).count()
}

/// A program that spawns children without a pause, in six ways in turn (vfork and exec, fork
/// and exit, fork and exec, clone, posix_spawn, clone with CLONE_VM|CLONE_VFORK and exec:
/// `spawner.c`), and its children, get 40 orders at moments drawn at random. Every order is
/// answered: the process moved, or was refused with the reason (a vfork child that shares
/// its parent's memory, a child that ended, a process already moving). The job then ends
/// with every child's status right, and nothing of it is left on the other nodes.
#[test]
fn orders_at_any_moment_of_a_process_that_spawns_children_are_all_answered() {
    if !require_root() {
        return;
    }
    let program = c_program("spawner");
    orders_at_random_to_a_spawning_job(&[&program], "spawner", 40);
}

/// The same with a Python loop of `subprocess.run` (`subprocs.py`): Python spawns its
/// children with vfork, the way that deadlocked the whole job when a move was ordered
/// while the parent waited in vfork for its child.
#[test]
fn orders_at_any_moment_of_a_python_subprocess_loop_are_all_answered() {
    if !require_root() {
        return;
    }
    let script = format!("{PROGS}/subprocs.py");
    orders_at_random_to_a_spawning_job(&[PYTHON, &script], "subprocs", 20);
}

/// Runs `argv` (a program that spawns children and ends with "children=N bad=0") and orders
/// `orders` moves of it, or of one of its children, at random moments.
fn orders_at_random_to_a_spawning_job(argv: &[&str], name: &str, orders: usize) {
    let order_moves = |job: &Job, draw: &mut Draw| {
        let (mut moved, mut refused) = (0, 0);
        for _ in 0..orders {
            draw.pause();
            // Mostly the program, now and then one of its children (it may be gone already).
            let kids = children(job);
            let pid = match draw.below(4) {
                0 if !kids.is_empty() => kids[draw.below(kids.len() as u64) as usize],
                _ => job.pid(),
            };
            let to = some_target(draw);
            let answer = order(job, pid, to);
            eprintln!("migrate {pid} {to}: {answer:?}");
            match (answer, pid == job.pid()) {
                (Ok(()), true) => moved += 1,
                (Err(_), true) => refused += 1,
                _ => {}
            }
        }
        eprintln!("{name}: {moved} orders carried out, {refused} refused");
        assert!(moved > 0, "no order moved {name}\n{}", job.outputs());
    };
    moved_at_random(3, name, argv, order_moves, |last| {
        last.starts_with("children=") && last.ends_with(" bad=0")
    });
}

/// A program that never stops reshaping its memory (`remapper.c`: it maps and fills areas,
/// unmaps them, grows, shrinks and moves them with mremap, zaps parts with MADV_DONTNEED)
/// is moved 24 times at moments drawn at random, out, on and home, with pre-copy's running
/// rounds reading it while it changes. Every move succeeds, and the program finds every word
/// of its memory as it left it.
#[test]
fn a_process_that_keeps_reshaping_its_memory_moves_whole_at_any_moment() {
    if !require_root() {
        return;
    }
    let program = c_program("remapper");
    let order_moves = |job: &Job, draw: &mut Draw| {
        let mut at = "home";
        for _ in 0..24 {
            draw.pause();
            let to = match (some_target(draw), at) {
                (to, at) if to != at => to,
                (_, "home") => "2",
                _ => "home",
            };
            let answer = order(job, job.pid(), to);
            eprintln!("migrate {to}: {answer:?}");
            assert!(
                answer.is_ok(),
                "migrate {to}: {answer:?}\n{}",
                job.outputs()
            );
            assert!(
                !String::from_utf8_lossy(&job.stdout()).contains("FAIL"),
                "after the move to {to}:\n{}",
                job.outputs()
            );
            at = to;
        }
        // The moves out of home went in running rounds while the program reshaped its memory.
        let rounds = logged(job, "running rounds sent");
        eprintln!("running rounds of moves out of home: {rounds}");
        assert!(
            rounds > 0,
            "no move went in running rounds\n{}",
            job.outputs()
        );
    };
    moved_at_random(3, "remapper", &[&program], order_moves, |last| {
        last.starts_with("steps=") && last.ends_with(" fail=0")
    });
}

/// A program that grows one area every millisecond (`grower.c`: mremap of the whole area
/// without MREMAP_MAYMOVE, and every fourth step the area unmapped and mapped anew at the
/// same address, longer), and rewrites 64 MiB between steps, is moved out, on and home twice.
/// Each move reads the area in several running rounds while it changes. The program must find
/// it one mapping throughout, as it made it: tracking that registered a stale range for the
/// rounds cut it in two under the running program, whose next mremap of the whole failed
/// with EFAULT.
#[test]
fn an_area_reshaped_while_its_move_reads_it_stays_one_mapping() {
    if !require_root() {
        return;
    }
    let program = c_program("grower");
    let order_moves = |job: &Job, draw: &mut Draw| {
        for to in ["2", "3", "home", "3", "2", "home"] {
            draw.pause();
            let answer = order(job, job.pid(), to);
            assert!(
                answer.is_ok(),
                "migrate {to}: {answer:?}\n{}",
                job.outputs()
            );
        }
        assert!(
            logged(job, "running rounds sent") > 0,
            "no move went in running rounds\n{}",
            job.outputs()
        );
    };
    moved_at_random(3, "grower", &[&program], order_moves, |last| {
        last.starts_with("grown=") && last.ends_with(" fail=0")
    });
}

/// A program that execs itself again and again (`execer.c`: each generation rewrites 32 MiB
/// for 100 to 600 ms, then execs the next) is moved 16 times at moments drawn at random. A
/// move out whose running rounds meet an exec begins again on the new program (the rounds
/// read an address space that is no more: its pagemap reads nothing). Every order is
/// answered: moved, or, if the program exec'd during each try, refused with that reason;
/// never a read error. The program finds its memory as it left it in every generation.
#[test]
fn a_process_that_execs_during_its_running_rounds_moves_all_the_same() {
    if !require_root() {
        return;
    }
    let program = c_program("execer");
    let order_moves = |job: &Job, draw: &mut Draw| {
        let mut moved = 0;
        for _ in 0..16 {
            draw.pause();
            let to = some_target(draw);
            let answer = order(job, job.pid(), to);
            eprintln!("migrate {to}: {answer:?}");
            match answer {
                Ok(()) => moved += 1,
                Err(why) => assert!(
                    why.contains("exec'd during each of"),
                    "migrate {to}: {why}\n{}",
                    job.outputs()
                ),
            }
        }
        let again = logged(job, "its move begins again");
        eprintln!("execer: {moved} of 16 orders carried out, {again} moves began again");
        assert!(moved > 0, "no order moved the program\n{}", job.outputs());
    };
    moved_at_random(3, "execer", &[&program], order_moves, |last| {
        last.starts_with("generations=") && last.ends_with(" fail=0")
    });
}

/// A program with a CPU-time timer that signals it every millisecond (`profiled.c`, as a
/// profiler's ITIMER_PROF does; the timer moves with it) is moved out and home 16 times at
/// moments drawn at random. The stops its moves ask for meet its signals' delivery stops on
/// the way, at home and at the remote, which deliver the signal and ask again. Every move is
/// carried out, and the program's computation comes out right.
#[test]
fn a_process_signalled_all_the_time_moves_at_any_moment() {
    if !require_root() {
        return;
    }
    let program = c_program("profiled");
    let order_moves = |job: &Job, draw: &mut Draw| {
        for to in ["2", "home"].into_iter().cycle().take(16) {
            draw.pause();
            let answer = order(job, job.pid(), to);
            eprintln!("migrate {to}: {answer:?}");
            assert!(
                answer.is_ok(),
                "migrate {to}: {answer:?}\n{}",
                job.outputs()
            );
        }
    };
    moved_at_random(2, "profiled", &[&program], order_moves, |last| {
        last == "ticked sum=right"
    });
}

/// A program that reads 24 small files over and over as a compiler reads its headers
/// (`headers.c`: open, fstat, read to the end, close; each open lent ahead with the file's
/// status and bytes, each close going home behind the program, docs/forwarding.md "Opens
/// lent ahead") is moved between node 2, node 3 and home 24 times at moments drawn at
/// random. Every order is answered; the program finds every status and byte right, each
/// open under the number the last close freed, and a closed descriptor closed, wherever it
/// ran and however its closes and moves interleaved. Sent as a plain call, a close that home
/// had not run when a move came was answered with a restart code and never ran: the
/// program's files stayed open at home, and its next opens got higher numbers.
#[test]
fn a_process_reading_small_files_moves_at_any_moment_with_its_closes_behind() {
    if !require_root() {
        return;
    }
    let program = c_program("headers");
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("anymoment/headers-files");
    fs::create_dir_all(&dir).expect("make the files' directory");
    for i in 0..24u64 {
        let bytes: Vec<u8> = (0..100 + 997 * i)
            .map(|k| ((7 * i + k) % 251) as u8)
            .collect();
        fs::write(dir.join(i.to_string()), bytes).expect("write a file");
    }
    let order_moves = |job: &Job, draw: &mut Draw| {
        let mut moved = 0;
        for _ in 0..24 {
            draw.pause();
            let to = some_target(draw);
            let answer = order(job, job.pid(), to);
            eprintln!("migrate {to}: {answer:?}");
            moved += usize::from(answer.is_ok());
        }
        eprintln!("headers: {moved} of 24 orders carried out");
        assert!(
            moved >= 12,
            "few orders moved the program\n{}",
            job.outputs()
        );
    };
    let dir = dir.to_str().expect("a UTF-8 path");
    moved_at_random(3, "headers", &[&program, dir, "24"], order_moves, |last| {
        last.starts_with("rounds=") && last.ends_with(" bad=0") && last != "rounds=0 bad=0"
    });
}
