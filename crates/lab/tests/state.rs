//! Kernel state a moved process keeps: what it set at home answers the same at a remote,
//! and what it set anywhere survives each move. Each program (in `tests/progs/state/`) sets
//! its state, says `ready`, and on each line `check NAME` checks it and prints `NAME ok` or
//! `NAME FAIL: why`, then `checked NAME`. The test checks it at home, moves it out to node 2,
//! on to node 3 and home, and has it check at each stop, where the test may act too (send it
//! a signal, look at it with `ps`).

use std::fs;
use std::path::Path;
use std::process::Stdio;
use std::thread;
use std::time::{Duration, Instant};

use rmosix_lab::{Job, Lab, LabConfig, bin_dir_of_current_test, processes_in, require_root};

/// The programs of these tests.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/state");
/// Deadline of one step: a migration, a check, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// Where the process is at each check: home, out, on to a third node, home again.
const STOPS: [&str; 4] = ["home", "2", "3", "home"];
/// How long the test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(10);

fn start_lab() -> Lab {
    Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"))
}

/// `progs/state/NAME.c`, compiled into the target's tmp dir, which every node sees.
fn c_program(name: &str) -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("state")
        .join(name);
    rmosix_lab::compiled(format!("{PROGS}/{name}.c"), out, &["-Wextra", "-Werror"])
}

/// Runs `argv` under mosrun at node 1 (with `env` added), has it check its state at each of
/// [`STOPS`] and ends it. `at_stop(job, k)` runs at stop `k` once the program was asked to
/// check. Returns what it wrote, and mosrun with it.
fn tour(
    lab: &Lab,
    argv: &[&str],
    env: &[(&str, &str)],
    at_stop: impl Fn(&Job, usize),
) -> std::process::Output {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args(argv)
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1")
        .envs(env.iter().copied());
    let job = Job::spawn(lab.node(1), cmd).expect("start mosrun");
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    for (k, target) in STOPS.into_iter().enumerate() {
        if k > 0 {
            job.migrate(target)
                .unwrap_or_else(|e| panic!("migrate {target}: {e}\n{}", job.outputs()));
        }
        let name = format!("{k}@{target}");
        job.send(format!("check {name}\n").as_bytes())
            .unwrap_or_else(|e| panic!("{e}"));
        at_stop(&job, k);
        job.wait_output(&format!("checked {name}\n"), STEP)
            .unwrap_or_else(|e| panic!("{e}"));
        let out = String::from_utf8_lossy(&job.stdout()).into_owned();
        assert!(!out.contains("FAIL"), "at {name}:\n{}", job.outputs());
    }
    job.send(b"end\n").unwrap_or_else(|e| panic!("{e}"));
    let done = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        done.status.success(),
        "{:?}\n{}\n{}",
        done.status,
        String::from_utf8_lossy(&done.stdout),
        String::from_utf8_lossy(&done.stderr)
    );
    done
}

/// The program reads its own command line and environment from /proc wherever it runs, and
/// `ps` at home shows its command while it is away.
#[test]
fn proc_cmdline_and_environ_read_the_programs_own_wherever_it_runs() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("cmdline");
    let argv = [program.as_str(), "alpha", "beta gamma"];
    let command = argv.join(" ");
    tour(
        &lab,
        &argv,
        &[("RMOSIX_STATE", "environ-check")],
        |job, k| {
            if STOPS[k] == "home" {
                return;
            }
            let pid = job.pid().to_string();
            let shown = job
                .tool("ps", &["-o", "args=", "-p", &pid])
                .unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(
                shown.trim(),
                command,
                "ps at home while at node {}",
                STOPS[k]
            );
        },
    );
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// Waits until `cond` holds; panics after [`STEP`] with `what`, or as soon as `job` printed
/// a failure.
fn wait_until(job: &Job, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + STEP;
    while !cond() {
        let out = String::from_utf8_lossy(&job.stdout()).into_owned();
        assert!(!out.contains("FAIL"), "{what}: the program failed:\n{out}");
        assert!(
            Instant::now() < deadline,
            "{what}: not within {STEP:?}\n{out}"
        );
        thread::sleep(POLL);
    }
}

/// The host PID of the process of `job` named `name` at stop `k`: the program itself at
/// home, its husk at a remote node.
fn host_pid_at(lab: &Lab, job: &Job, k: usize, name: &str) -> u32 {
    let Ok(node) = STOPS[k].parse::<usize>() else {
        return job.host_pid();
    };
    processes_in(lab.node(node))
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("no {name} in node {node}"))
        .host_pid
}

/// A signal set of a /proc/PID/status line (`SigPnd:`, ...), empty if the process is gone.
fn status_mask(host_pid: u32, line: &str) -> u64 {
    let status = fs::read_to_string(format!("/proc/{host_pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(line))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0)
}

/// A read of a pipe that a signal meets at the remote: one the program blocks does not
/// interrupt it (and no kernel restart code reaches the program), one it catches restarts
/// it with SA_RESTART and fails it with EINTR without. The read runs in the shell at home
/// while the process is away, where every signal is let in.
#[test]
fn a_signal_meets_a_forwarded_read_as_linux_would() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("restart");
    const USR1: u64 = 1 << (libc::SIGUSR1 - 1);
    tour(&lab, &[&program], &[], |job, k| {
        let name = format!("{k}@{}", STOPS[k]);
        // The job's PID at home: the program, or its shell while it is away.
        let home_pid = job.host_pid();
        let in_read = || {
            fs::read_to_string(format!("/proc/{home_pid}/syscall"))
                .is_ok_and(|s| s.starts_with("0 "))
        };
        for kind in ["blocked-restart", "blocked-norestart"] {
            job.wait_output(&format!("reading {name} {kind}\n"), STEP)
                .unwrap_or_else(|e| panic!("{e}"));
            wait_until(job, &format!("{name} {kind}: read blocks at home"), in_read);
            job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
            // Pending where the process runs: it went through the shell's read.
            let pid = host_pid_at(&lab, job, k, "restart");
            wait_until(job, &format!("{name} {kind}: SIGUSR1 pending"), || {
                (status_mask(pid, "SigPnd:") | status_mask(pid, "ShdPnd:")) & USR1 != 0
            });
            job.send(b"data\n").unwrap_or_else(|e| panic!("{e}"));
        }
        for kind in ["open-restart", "open-norestart"] {
            job.wait_output(&format!("reading {name} {kind}\n"), STEP)
                .unwrap_or_else(|e| panic!("{e}"));
            wait_until(job, &format!("{name} {kind}: read blocks at home"), in_read);
            job.signal("USR2").unwrap_or_else(|e| panic!("{e}"));
            job.wait_output(&format!("usr2 {name} {kind}\n"), STEP)
                .unwrap_or_else(|e| panic!("{e}"));
            if kind == "open-restart" {
                job.send(b"data\n").unwrap_or_else(|e| panic!("{e}"));
            }
        }
    });
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// getsockopt answers at a remote as at home, for options whose buffer is not plain bytes
/// too: SO_GET_FILTER (counted in instructions), IP_MSFILTER (a request read first),
/// SO_PEERGROUPS (ERANGE with the length it needs), and writes no more than the kernel
/// wrote; an option set away reads back.
#[test]
fn socket_options_answer_at_a_remote_as_at_home() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("sockopts");
    tour(&lab, &[&program], &[], |_, _| {});
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// prctl settings made at home answer the same at each remote, and those changed away come
/// home and go on with the process: the running process's in its image, its relations and
/// credentials (parent death signal, child reaper, keepcaps) in its shell.
#[test]
fn prctl_settings_answer_the_same_wherever_the_process_runs() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("prctl");
    tour(&lab, &[&program], &[], |_, _| {});
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// Resource limits set at home (open files, core size, address space) answer the same at
/// each remote and hold there (a mapping past the address space fails), without asking home
/// to read them; one lowered away holds on at the next node and at home.
#[test]
fn resource_limits_go_with_the_process_and_are_read_where_it_runs() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("limits");
    let trace = [("MOSRUN_LOG", "rmosix_engine::home=trace")];
    let done = tour(&lab, &[&program], &trace, |_, _| {});
    // Three limits read at each of two stops away, one lowered there: only the lowering
    // goes home (the shell keeps it for the return).
    let log = String::from_utf8_lossy(&done.stderr);
    let served = (log.lines())
        .filter(|line| line.contains("rmosix_engine::home: call "))
        .filter(|line| rmosix_lab::log_field(line, "nr") == Some("302"))
        .count();
    assert_eq!(served, 1, "prlimit64 served at home");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// membarrier registrations made at home answer the same at each remote (and the barrier
/// they allow works there), and one made away comes home.
#[test]
fn membarrier_registrations_go_with_the_process() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("membarrier");
    tour(&lab, &[&program], &[], |_, _| {});
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// A signal the program blocks stays pending at home while it is away: its signalfd (opened
/// at home) reads a SIGUSR1 sent to its PID there, sigpending shows a blocked SIGUSR2, and
/// unblocking SIGUSR2 runs its handler before sigprocmask returns.
#[test]
fn blocked_signals_reach_a_signalfd_and_sigprocmask_while_away() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("signalfd");
    const USR2: u64 = 1 << (libc::SIGUSR2 - 1);
    tour(&lab, &[&program], &[], |job, k| {
        let name = format!("{k}@{}", STOPS[k]);
        job.wait_output(&format!("waiting {name}\n"), STEP)
            .unwrap_or_else(|e| panic!("{e}"));
        job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
        job.wait_output(&format!("holding {name}\n"), STEP)
            .unwrap_or_else(|e| panic!("{e}"));
        job.signal("USR2").unwrap_or_else(|e| panic!("{e}"));
        // Pending at home: in the program, or in its shell while it is away.
        let home_pid = job.host_pid();
        wait_until(job, &format!("{name}: SIGUSR2 pending"), || {
            (status_mask(home_pid, "SigPnd:") | status_mask(home_pid, "ShdPnd:")) & USR2 != 0
        });
        job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
    });
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}
