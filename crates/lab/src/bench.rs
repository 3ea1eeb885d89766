//! `rmosix-lab bench`: what migration, forwarding and supervision cost, each figure printed
//! beside a baseline measured in the same run on the same lab (a bench, not a test: a missed
//! target is reported, never an error).
//!
//! It starts a 3-node lab without a CPU quota, compiles the guest programs of
//! `crates/lab/bench/` with `gcc -O2` into the lab's work dir, and measures:
//!
//! 1. **Migration** of a 64 MiB and a 1 GiB process (`hog.c`: every page full of distinct,
//!    non-zero data) from node 1 to node 2, on to node 3 (relayed by home) and home again.
//!    Out (pre-copied: the first round goes while the process runs): `bytes`, `first_bytes`,
//!    `freeze_ms` and `total_ms` from mosrun's `migrated` log line; on: `freeze_ms` of its
//!    `moved on` line. Every way: the longest pause the process saw on its own clock
//!    (`stall_ms`), and the wall time of the `migrate` command. Baselines: one raw TCP
//!    stream of 1 GiB from node 1 to node 2 (`tcp.c`), read into one buffer and read into
//!    fresh memory (what the plainest receiver of an image does, before any decryption or
//!    placing), and 1 GiB copied into fresh memory on node 2 by four threads (`fresh.c`).
//! 2. **Pauses of a process that keeps rewriting its memory** (`rewrite.c`): 1 GiB, rewriting
//!    all of it, and 1 GiB rewriting 16 MiB of it, moved the same three ways. The longest
//!    pause on the process's own clock (`stall_ms`, which it prints when the bench asks with
//!    SIGUSR1 after each move, and otherwise makes no system call: at a remote, a forwarded
//!    call would wait for the guest's rounds to end, and the process with it, writing
//!    nothing), mosrun's `freeze_ms` and `total_ms`. Baselines: the
//!    stop-and-copy floor of the same image (its bytes at the raw TCP into fresh memory rate
//!    of this run), and the pause of the 1 GiB hog, which writes nothing.
//! 3. **Forwarded call round trip**: 20000 `lseek(fd, 0, SEEK_CUR)` on a file opened at home,
//!    timed one by one inside the process (`lseek.c`), run under mosrun at home and on node 2.
//!    Baseline: as many 16-byte request/answer round trips over raw TCP from node 2 to node 1
//!    (`tcp.c ping`), the floor under a call that must go home.
//! 4. **Supervision overhead**: a deterministic CPU loop (`spin.c`) run bare and under mosrun
//!    on node 1, alternating.
//! 5. **I/O of a moved process** (`iobench`): sqlite3, mawk and a pipe writer kept at node 2
//!    against the same runs never moved. `bench io` runs only these, the raw TCP baseline
//!    and the forwarded round trip.
//! 6. **Balancing** (`spreadbench`, on two 4-node labs of their own with half a CPU per node,
//!    one balancing, one not): 8 CPU-bound jobs started on node 1 spread by the daemons,
//!    against the 8 on node 1 alone and 2 started on each node; the same 8 on nodes of 1,
//!    0.5, 0.25 and 0.25 CPU against the fluid ideal (`unequalbench`); one job alone under
//!    mosrun against the same job bare, the time from a node's job ending to a waiting job
//!    running there against `migrate` by hand, and idle daemons' CPU (`quietbench`).
//!    `bench spread` runs only these; `bench unequal`, `bench alone` and `bench idle` one.
//!
//! 7. **A freshly exec'd cc1 moved** to node 2 (`execbench`), with identical-file mapping and
//!    without (`RMOSIX_SAMEFILE=off`): image bytes and times. `bench samefile` runs only it.
//!
//! Every figure is the median of several runs, with min and max.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use crate::batch::field_text;
use crate::cmd::{describe, run};
use crate::spreadbench::{self, Parts, Runs};
use crate::{Lab, LabConfig, LabError, Node, pid_in_node, wait_child_of};
use crate::{execbench, filebench, iobench};

/// The guest programs, compiled at bench time.
const PROGRAMS: [(&str, &str); 7] = [
    ("fresh", include_str!("../bench/fresh.c")),
    ("hog", include_str!("../bench/hog.c")),
    ("lseek", include_str!("../bench/lseek.c")),
    ("pipewrite", include_str!("../bench/pipewrite.c")),
    ("rewrite", include_str!("../bench/rewrite.c")),
    ("spin", include_str!("../bench/spin.c")),
    ("tcp", include_str!("../bench/tcp.c")),
];

/// Nodes in the bench lab: node 1 is home, node 2 the remote; node 3 keeps the cluster a
/// cluster (its daemon gossips like any other) but runs nothing.
const NODES: usize = 3;
/// Sizes of the migrated processes, in MiB.
const HOG_SIZES_MIB: [u64; 2] = [64, 1024];
/// Size of the rewriting process, in MiB, and how much of it it keeps rewriting.
const REWRITE_MIB: u64 = 1024;
const REWRITTEN_MIB: [u64; 2] = [1024, 16];
/// The pause we aim for, whatever the process does (issue 7).
const TARGET_PAUSE_MS: f64 = 100.0;
/// Size of the raw TCP baseline transfer, in MiB.
const TCP_MIB: u64 = 1024;
/// Size of the fresh-memory baseline, in MiB.
const FRESH_MIB: u64 = 1024;
/// Port of the raw TCP baseline's receiver on node 2 (the daemons use their own port).
const TCP_PORT: u16 = 47_123;
/// Forwarded calls timed per run.
const LSEEK_CALLS: u32 = 20_000;
/// Steps of the CPU loop: about 2.5 s on one of our 2.6 GHz EPYC vCPUs (3.2 ns a step).
const SPIN_ROUNDS: u64 = 800_000_000;

/// How long a guest may take to print a line it owes (filling 1 GiB takes about a second).
const LINE_TIMEOUT: Duration = Duration::from_secs(60);
/// How long mosrun's log line may lag behind the `migrate` command's return.
const LOG_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a moved process's stall report may take to come home; then any later, larger
/// report still gets `STALL_GRACE`.
const STALL_TIMEOUT: Duration = Duration::from_secs(5);
const STALL_GRACE: Duration = Duration::from_millis(200);
/// How long the process tree of a guest may take to appear, and a guest to end.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
const EXIT_TIMEOUT: Duration = Duration::from_secs(30);

/// Targets (see /work/shared/reference/perf-anchors.md §7; these are the first milestones).
const TARGET_GBPS: f64 = 1.0;
const TARGET_FORWARD_P50_US: f64 = 100.0;
const TARGET_SLOWDOWN_PCT: f64 = 1.0;

/// What went wrong while benchmarking. A missed target is not an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BenchError {
    /// Building, using or tearing down the lab failed, or a command (gcc, migrate) failed.
    #[error(transparent)]
    Lab(#[from] LabError),
    /// A guest program did not print what it owes in time, or ended early.
    #[error("`{program}`: {what}; its output so far:\n{output}")]
    Guest {
        /// The command line inside the node.
        program: String,
        /// What was awaited.
        what: String,
        /// Everything it printed so far, stdout and stderr interleaved.
        output: String,
    },
    /// A bench scenario did not come about (a node not busy in time, a job not ending).
    #[error("{what}")]
    Scenario {
        /// What did not happen.
        what: String,
    },
    /// A line of output lacks a field the bench reads.
    #[error("`{program}` printed {line:?}, without a number for {field:?}")]
    Parse {
        /// The command line that printed it.
        program: String,
        /// The line.
        line: String,
        /// The missing field.
        field: &'static str,
    },
}

impl BenchError {
    /// Whether the bench stopped because of Ctrl-C.
    pub fn is_interrupted(&self) -> bool {
        matches!(self, BenchError::Lab(LabError::Interrupted))
    }
}

/// Which measurements a bench run takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All of them.
    All,
    /// The I/O of a moved process, with the raw TCP baseline and the forwarded round trip.
    Io,
    /// Only a freshly exec'd cc1 moved with and without identical-file mapping
    /// (`execbench`).
    Samefile,
    /// Every balancing part (`spreadbench`): jobs started on one node that the daemons
    /// spread by themselves, the same on unequal nodes, one job alone, idle to running and
    /// idle daemons.
    Spread,
    /// Only the jobs spread over unequal nodes (`unequalbench`).
    Unequal,
    /// Only one job alone on an idle cluster, under mosrun and bare (`quietbench`).
    Alone,
    /// Only a freed node getting a waiting job, and idle daemons' CPU (`quietbench`).
    Idle,
    /// What DFSA gains a moved process: a 1 GiB read and system headers (`filebench`).
    Files,
    /// `mosrun make -j8` of zstd and Lua over a 4-node lab against node 1 alone and distcc
    /// (`makebench`).
    Make,
}

impl Scope {
    /// The balancing parts it takes.
    fn balancing_parts(self) -> Parts {
        let all = matches!(self, Scope::All | Scope::Spread);
        Parts {
            spread: all,
            unequal: all || self == Scope::Unequal,
            alone: all || self == Scope::Alone,
            idle: all || self == Scope::Idle,
        }
    }
}

/// How many runs of each measurement.
#[derive(Debug, Clone, Copy)]
struct Reps {
    /// Runs of each baseline (raw TCP, fresh memory).
    baseline: usize,
    migration: usize,
    forward: usize,
    cpu: usize,
    io: usize,
    spread: Runs,
}

/// `rmosix-lab bench [--quick] [io|spread|unequal|alone|idle]`: starts a 3-node lab without
/// a CPU quota (the balancing parts start labs of their own), runs the measurements of `scope`, prints the
/// report on stdout (progress on stderr) and tears the labs down. `quick` runs each
/// measurement fewer times. `stop` (set by Ctrl-C) ends it early with
/// [`LabError::Interrupted`].
pub fn bench(
    bin_dir: &Path,
    quick: bool,
    scope: Scope,
    stop: &AtomicBool,
) -> Result<(), BenchError> {
    for tool in ["mosrun", "migrate"] {
        let path = bin_dir.join(tool);
        if !path.is_file() {
            return Err(LabError::MissingBinary { path }.into());
        }
    }
    if scope == Scope::Files {
        print!("{}", filebench::measure(bin_dir, quick, stop)?);
        return Ok(());
    }
    if scope == Scope::Make {
        print!("{}", crate::makebench::measure(bin_dir, quick, stop)?);
        return Ok(());
    }
    let reps = if quick {
        Reps {
            baseline: 2,
            migration: 2,
            forward: 2,
            cpu: 3,
            io: 3,
            spread: Runs {
                alone: 1,
                ceiling: 2,
                spread: 3,
                unequal_alone: 1,
                unequal_ceiling: 2,
                unequal: 3,
                single: 3,
                handoff: 3,
                idle_window: Duration::from_secs(20),
            },
        }
    } else {
        Reps {
            baseline: 5,
            migration: 5,
            forward: 5,
            cpu: 7,
            io: 5,
            spread: Runs {
                alone: 3,
                ceiling: 3,
                spread: 5,
                unequal_alone: 3,
                unequal_ceiling: 3,
                unequal: 5,
                single: 5,
                handoff: 5,
                idle_window: Duration::from_secs(60),
            },
        }
    };
    let mut report = match scope {
        Scope::All | Scope::Io | Scope::Samefile => {
            let lab = Lab::start(LabConfig::new(NODES, bin_dir))?;
            progress(&format!("lab ready in {}", lab.dir().display()));
            let bench = Bench {
                progs: compile(&lab.work_dir())?,
                lab: &lab,
                stop,
            };
            let report = match scope {
                Scope::Io => bench.run_io(reps)?,
                Scope::Samefile => bench.run_samefile(reps)?,
                _ => bench.run_all(reps)?,
            };
            lab.stop()?;
            report
        }
        Scope::Spread
        | Scope::Unequal
        | Scope::Alone
        | Scope::Idle
        | Scope::Files
        | Scope::Make => Report {
            load_before: load_average(),
            ..Report::default()
        },
    };
    if !matches!(scope, Scope::Io | Scope::Samefile) {
        let parts = scope.balancing_parts();
        report.spread = Some(spreadbench::measure(bin_dir, reps.spread, parts, stop)?);
        report.load_after = load_average();
    }
    print!("{}", report.render(reps));
    Ok(())
}

/// Writes the guest sources into `dir` and compiles them there; returns `dir`.
fn compile(dir: &Path) -> Result<PathBuf, BenchError> {
    compile_into(dir, &PROGRAMS)?;
    Ok(dir.to_path_buf())
}

/// Writes each (name, C source) of `programs` into `dir` and compiles it there as `name`.
pub(crate) fn compile_into(dir: &Path, programs: &[(&str, &str)]) -> Result<(), BenchError> {
    for (name, source) in programs {
        let c = dir.join(format!("{name}.c"));
        fs::write(&c, source).map_err(|source| LabError::Io {
            action: "write",
            path: c.clone(),
            source,
        })?;
        let mut gcc = Command::new("gcc");
        gcc.args(["-O2", "-Wall", "-pthread", "-o"])
            .arg(dir.join(name))
            .arg(&c);
        run(&mut gcc)?;
    }
    Ok(())
}

struct Bench<'a> {
    lab: &'a Lab,
    /// Where the compiled guests are (the lab's work dir, which every node sees).
    progs: PathBuf,
    stop: &'a AtomicBool,
}

/// Everything measured, raw samples per quantity.
#[derive(Debug, Default)]
struct Report {
    tcp_gbps: Vec<f64>,
    tcp_fresh_gbps: Vec<f64>,
    fresh_gbps: Vec<f64>,
    migrations: Vec<(u64, Vec<Migration>)>,
    /// Round trips of the rewriting process, by MiB it keeps rewriting.
    rewrites: Vec<(u64, Vec<Migration>)>,
    forward_home: Vec<Percentiles>,
    forward_remote: Vec<Percentiles>,
    /// Raw TCP round trips, node 2 to node 1 and back.
    tcp_rtt: Vec<Percentiles>,
    cpu_bare: Vec<CpuRun>,
    cpu_mosrun: Vec<CpuRun>,
    io: Vec<iobench::Measured>,
    /// A fresh cc1 moved with and without identical-file mapping; None without cc1.
    exec: Option<execbench::Measured>,
    spread: Option<spreadbench::Measured>,
    /// /proc/loadavg's first three fields when the runs began and ended.
    load_before: String,
    load_after: String,
}

/// One round trip of a process: node 1 to node 2, on to node 3, then home.
#[derive(Debug, Clone, Copy)]
struct Migration {
    /// `bytes` of mosrun's `migrated` line: the image, both rounds.
    bytes: u64,
    /// `first_bytes` of mosrun's `migrated` line: sent while the process ran.
    first_bytes: u64,
    out: Leg,
    on: Leg,
    home: Leg,
}

/// One move of a round trip.
#[derive(Debug, Clone, Copy)]
struct Leg {
    /// `freeze_ms` of mosrun's line for the move.
    freeze_ms: f64,
    /// `total_ms` of mosrun's line for the move: both rounds.
    total_ms: f64,
    /// The longest pause the process saw on its own clock, if it reported one.
    stall_ms: Option<f64>,
    /// Wall time of the `migrate` command.
    wall_ms: f64,
}

#[derive(Debug, Clone, Copy)]
struct Percentiles {
    p50: f64,
    p90: f64,
    p99: f64,
    mean: f64,
}

/// Picks one move out of a round trip.
type PickLeg = fn(&Migration) -> Leg;
/// Picks one figure out of a run's percentiles.
type Pick = fn(&Percentiles) -> f64;
/// Picks one figure out of a CPU loop run.
type CpuFigure = fn(&CpuRun) -> f64;

#[derive(Debug, Clone, Copy)]
struct CpuRun {
    /// Wall time of the whole command, as the bench saw it.
    wall_ms: f64,
    /// Time in the loop, by the program's own clock.
    compute_ms: f64,
    /// CPU time the loop took.
    cpu_ms: f64,
}

impl Bench<'_> {
    /// The I/O of a moved process, beside raw TCP and the forwarded round trip.
    fn run_io(&self, reps: Reps) -> Result<Report, BenchError> {
        let mut report = Report {
            load_before: load_average(),
            ..Report::default()
        };
        for i in 1..=reps.baseline {
            progress(&format!(
                "baseline: raw TCP node1 -> node2, {TCP_MIB} MiB, run {i}/{}",
                reps.baseline
            ));
            report.tcp_gbps.push(self.tcp_once(false)?);
        }
        self.forward_runs(reps, &mut report)?;
        report.io = iobench::measure(self.lab, &self.progs, reps.io, &|| self.check_stop())?;
        report.load_after = load_average();
        Ok(report)
    }

    /// A freshly exec'd cc1 moved, with and without identical-file mapping.
    fn run_samefile(&self, reps: Reps) -> Result<Report, BenchError> {
        let load_before = load_average();
        let exec = execbench::measure(self.lab, reps.migration, &|| self.check_stop())?;
        Ok(Report {
            load_before,
            exec,
            load_after: load_average(),
            ..Report::default()
        })
    }

    fn run_all(&self, reps: Reps) -> Result<Report, BenchError> {
        let mut report = Report {
            load_before: load_average(),
            ..Report::default()
        };
        for i in 1..=reps.baseline {
            progress(&format!(
                "baselines: raw TCP node1 -> node2, {TCP_MIB} MiB, into a buffer and into \
                 fresh memory, and {FRESH_MIB} MiB copied into fresh memory on node2, run {i}/{}",
                reps.baseline
            ));
            report.tcp_gbps.push(self.tcp_once(false)?);
            report.tcp_fresh_gbps.push(self.tcp_once(true)?);
            report.fresh_gbps.push(self.fresh_once()?);
        }
        for mib in HOG_SIZES_MIB {
            let mut samples = Vec::new();
            for i in 1..=reps.migration {
                progress(&format!(
                    "migration of {mib} MiB, node1 -> node2 -> node3 -> home, run {i}/{}",
                    reps.migration
                ));
                samples.push(self.round_trip("hog", &[&mib.to_string()])?);
            }
            report.migrations.push((mib, samples));
        }
        report.exec = execbench::measure(self.lab, reps.migration, &|| self.check_stop())?;
        for written in REWRITTEN_MIB {
            let mut samples = Vec::new();
            for i in 1..=reps.migration {
                progress(&format!(
                    "migration of {REWRITE_MIB} MiB rewriting {written} MiB of it, \
                     node1 -> node2 -> node3 -> home, run {i}/{}",
                    reps.migration
                ));
                let args = [REWRITE_MIB.to_string(), written.to_string()];
                samples.push(self.round_trip("rewrite", &[&args[0], &args[1]])?);
            }
            report.rewrites.push((written, samples));
        }
        self.forward_runs(reps, &mut report)?;
        for i in 0..reps.cpu {
            progress(&format!(
                "CPU loop bare and under mosrun, run {}/{}",
                i + 1,
                reps.cpu
            ));
            // Alternate which goes first, so a drift of the host's speed hits both alike.
            if i % 2 == 0 {
                report.cpu_bare.push(self.cpu_once(false)?);
                report.cpu_mosrun.push(self.cpu_once(true)?);
            } else {
                report.cpu_mosrun.push(self.cpu_once(true)?);
                report.cpu_bare.push(self.cpu_once(false)?);
            }
        }
        report.io = iobench::measure(self.lab, &self.progs, reps.io, &|| self.check_stop())?;
        report.load_after = load_average();
        Ok(report)
    }

    /// The forwarded lseek round trip, at home and at node 2.
    fn forward_runs(&self, reps: Reps, report: &mut Report) -> Result<(), BenchError> {
        let file = self.lab.work_dir().join("lseek.dat");
        fs::write(&file, b"rmosix bench\n").map_err(|source| LabError::Io {
            action: "write",
            path: file.clone(),
            source,
        })?;
        for i in 1..=reps.forward {
            progress(&format!(
                "forwarded lseek x{LSEEK_CALLS}, home and remote, run {i}/{}",
                reps.forward
            ));
            report.forward_home.push(self.forward_once(&file, false)?);
            report.forward_remote.push(self.forward_once(&file, true)?);
            report.tcp_rtt.push(self.tcp_rtt_once()?);
        }
        Ok(())
    }

    /// LSEEK_CALLS round trips of 16 bytes over raw TCP, node 2 to node 1 and back.
    fn tcp_rtt_once(&self) -> Result<Percentiles, BenchError> {
        let (home, remote) = (self.lab.node(1), self.lab.node(2));
        let tcp = self.prog("tcp");
        let port = TCP_PORT.to_string();
        let mut pong = Guest::spawn(
            home,
            None,
            &tcp,
            &["pong", &port],
            &self.lab.work_dir(),
            self.stop,
        )?;
        pong.wait_line(Stream::Out, "listening", LINE_TIMEOUT)?;
        let mut ping = remote.command(&tcp);
        ping.args([
            "ping",
            &home.addr().to_string(),
            &port,
            &LSEEK_CALLS.to_string(),
        ]);
        let program = describe(&ping);
        let line = run(&mut ping)?;
        pong.wait_exit(EXIT_TIMEOUT)?;
        self.check_stop()?;
        percentiles(&program, &line)
    }

    fn prog(&self, name: &str) -> PathBuf {
        self.progs.join(name)
    }

    fn check_stop(&self) -> Result<(), BenchError> {
        if self.stop.load(Ordering::Relaxed) {
            return Err(LabError::Interrupted.into());
        }
        Ok(())
    }

    /// One raw TCP transfer from node 1 to node 2, read into one reused buffer or, if
    /// `into_fresh`, into newly mapped memory; GB/s.
    fn tcp_once(&self, into_fresh: bool) -> Result<f64, BenchError> {
        let (home, remote) = (self.lab.node(1), self.lab.node(2));
        let tcp = self.prog("tcp");
        let port = TCP_PORT.to_string();
        let room = TCP_MIB.to_string();
        let mut args = vec!["recv", &port];
        if into_fresh {
            args.push(&room);
        }
        let mut receiver =
            Guest::spawn(remote, None, &tcp, &args, &self.lab.work_dir(), self.stop)?;
        receiver.wait_line(Stream::Out, "listening", LINE_TIMEOUT)?;
        let mut sender = home.command(&tcp);
        sender.args([
            "send",
            &remote.addr().to_string(),
            &port,
            &TCP_MIB.to_string(),
        ]);
        let program = describe(&sender);
        let line = run(&mut sender)?;
        receiver.wait_line(Stream::Out, "received=", LINE_TIMEOUT)?;
        receiver.wait_exit(EXIT_TIMEOUT)?;
        let bytes = field(&program, &line, "bytes")?;
        let secs = field(&program, &line, "secs")?;
        self.check_stop()?;
        Ok(bytes / secs / 1e9)
    }

    /// One copy of FRESH_MIB MiB into newly mapped memory on node 2; GB/s.
    fn fresh_once(&self) -> Result<f64, BenchError> {
        let mut cmd = self.lab.node(2).command(self.prog("fresh"));
        cmd.arg(FRESH_MIB.to_string());
        let program = describe(&cmd);
        let line = run(&mut cmd)?;
        let bytes = field(&program, &line, "bytes")?;
        let secs = field(&program, &line, "secs")?;
        self.check_stop()?;
        Ok(bytes / secs / 1e9)
    }

    /// Starts `program ARGS` (a hog, or a rewriter) under mosrun on node 1, moves it to node
    /// 2, on to node 3 and home again.
    fn round_trip(&self, program: &str, args: &[&str]) -> Result<Migration, BenchError> {
        let node1 = self.lab.node(1);
        let mut hog = Guest::spawn(
            node1,
            Some(Stdio::null()),
            &self.prog(program),
            args,
            &self.lab.work_dir(),
            self.stop,
        )?;
        hog.wait_line(Stream::Out, "ready", LINE_TIMEOUT)?;
        let pid = hog.pid_in_node()?;
        // The rewriter reports its longest pause when asked; the hog whenever it pauses.
        let asked = program == "rewrite";

        let (out, line) = Self::leg(node1, &mut hog, &pid, "2", "migrated", asked)?;
        let bytes = field(&hog.program, &line, "bytes")?;
        let first_bytes = field(&hog.program, &line, "first_bytes")?;
        self.check_stop()?;
        let (on, _) = Self::leg(node1, &mut hog, &pid, "3", "moved on", asked)?;
        self.check_stop()?;
        let (home, _) = Self::leg(node1, &mut hog, &pid, "home", "came home", asked)?;
        hog.end();
        self.check_stop()?;
        Ok(Migration {
            // The log prints integers; f64 holds them exactly below 2^53.
            bytes: bytes as u64,
            first_bytes: first_bytes as u64,
            out,
            on,
            home,
        })
    }

    /// `migrate PID TARGET` for the hog, then its figures from mosrun's `logged` line, which
    /// it returns too. `asked`: the program reports its longest pause on SIGUSR1 (rewrite.c,
    /// which makes no system call otherwise), rather than each pause as it comes (hog.c).
    fn leg(
        node: &Node,
        hog: &mut Guest<'_>,
        pid: &str,
        target: &str,
        logged: &str,
        asked: bool,
    ) -> Result<(Leg, String), BenchError> {
        let mark = hog.seen.len();
        let wall_ms = migrate(node, pid, target)?;
        let line = hog.wait_line(Stream::Err, logged, LOG_TIMEOUT)?;
        let stall_ms = if asked {
            let mut kill = node.command("kill");
            kill.args(["-USR1", pid]);
            run(&mut kill)?;
            let checked = hog.wait_line(Stream::Out, "checked ", LINE_TIMEOUT)?;
            Some(field(&hog.program, &checked, "stall_ms")?)
        } else {
            hog.max_stall_since(mark)?
        };
        let leg = Leg {
            freeze_ms: field(&hog.program, &line, "freeze_ms")?,
            total_ms: field(&hog.program, &line, "total_ms")?,
            stall_ms,
            wall_ms,
        };
        Ok((leg, line))
    }

    /// Times forwarded lseeks of a process under mosrun on node 1, moved to node 2 first if
    /// `remote`.
    fn forward_once(&self, file: &Path, remote: bool) -> Result<Percentiles, BenchError> {
        let home = self.lab.node(1);
        let calls = LSEEK_CALLS.to_string();
        let file = file.to_string_lossy();
        let mut guest = Guest::spawn(
            home,
            Some(Stdio::piped()),
            &self.prog("lseek"),
            &[&file, &calls],
            &self.lab.work_dir(),
            self.stop,
        )?;
        guest.wait_line(Stream::Out, "ready", LINE_TIMEOUT)?;
        if remote {
            let pid = guest.pid_in_node()?;
            migrate(home, &pid, "2")?;
            guest.wait_line(Stream::Err, "migrated", LOG_TIMEOUT)?;
        }
        guest.go()?;
        let line = guest.wait_line(Stream::Out, "p50_us=", LINE_TIMEOUT)?;
        let program = guest.program.clone();
        guest.wait_exit(EXIT_TIMEOUT)?;
        self.check_stop()?;
        percentiles(&program, &line)
    }

    /// One run of the CPU loop on node 1, bare or under mosrun.
    fn cpu_once(&self, supervised: bool) -> Result<CpuRun, BenchError> {
        let home = self.lab.node(1);
        let spin = self.prog("spin");
        let mut cmd = if supervised {
            let mut cmd = home.command("mosrun");
            cmd.arg(&spin);
            cmd
        } else {
            home.command(&spin)
        };
        cmd.arg(SPIN_ROUNDS.to_string())
            .current_dir(self.lab.work_dir());
        let program = describe(&cmd);
        let started = Instant::now();
        let line = run(&mut cmd)?;
        let wall_ms = started.elapsed().as_secs_f64() * 1e3;
        self.check_stop()?;
        Ok(CpuRun {
            wall_ms,
            compute_ms: field(&program, &line, "compute_ms")?,
            cpu_ms: field(&program, &line, "cpu_ms")?,
        })
    }
}

/// Runs `migrate PID TARGET` on `node`; its wall time in ms (including entering the node).
pub(crate) fn migrate(node: &Node, pid: &str, target: &str) -> Result<f64, BenchError> {
    let mut cmd = node.command("migrate");
    cmd.args([pid, target]);
    let started = Instant::now();
    run(&mut cmd)?;
    Ok(started.elapsed().as_secs_f64() * 1e3)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stream {
    Out,
    Err,
}

/// A line a guest printed, without terminal colours.
#[derive(Debug)]
struct Line {
    stream: Stream,
    text: String,
}

/// A guest program running in a node, under mosrun or bare, whose output lines the bench
/// reads as they come (one thread per stream feeds a channel).
struct Guest<'a> {
    /// The command line inside the node, for messages.
    program: String,
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<Line>,
    /// Every line received so far.
    seen: Vec<Line>,
    /// Whether the program runs under mosrun (so the program is mosrun's child).
    supervised: bool,
    stop: &'a AtomicBool,
}

impl<'a> Guest<'a> {
    /// Runs `program ARGS` on `node`: under mosrun (with `MOSRUN_LOG=info`) if
    /// `mosrun_stdin` is given, which becomes its stdin; else bare, stdin from /dev/null.
    fn spawn(
        node: &Node,
        mosrun_stdin: Option<Stdio>,
        program: &Path,
        args: &[&str],
        dir: &Path,
        stop: &'a AtomicBool,
    ) -> Result<Guest<'a>, BenchError> {
        let supervised = mosrun_stdin.is_some();
        let mut cmd = if supervised {
            let mut cmd = node.command("mosrun");
            cmd.arg(program);
            cmd
        } else {
            node.command(program)
        };
        cmd.args(args)
            .current_dir(dir)
            .env("MOSRUN_LOG", "info")
            .env("NO_COLOR", "1")
            .stdin(mosrun_stdin.unwrap_or_else(Stdio::null))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let description = describe(&cmd);
        let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: description,
            source,
        })?;
        let (tx, lines) = mpsc::channel();
        if let Some(out) = child.stdout.take() {
            forward_lines(out, Stream::Out, tx.clone());
        }
        if let Some(err) = child.stderr.take() {
            forward_lines(err, Stream::Err, tx);
        }
        let mut words = vec![program.file_name().unwrap_or_default().to_string_lossy()];
        words.extend(args.iter().map(|a| (*a).into()));
        let program = format!(
            "{}{}",
            if supervised { "mosrun " } else { "" },
            words.join(" ")
        );
        Ok(Guest {
            program,
            stdin: child.stdin.take(),
            child,
            lines,
            seen: Vec::new(),
            supervised,
            stop,
        })
    }

    /// The program's PID inside its node (the process tree is nsenter → mosrun → program).
    fn pid_in_node(&self) -> Result<String, BenchError> {
        let mut host = wait_child_of(self.child.id(), SPAWN_TIMEOUT)?;
        if self.supervised {
            host = wait_child_of(host, SPAWN_TIMEOUT)?;
        }
        let pid = pid_in_node(host).ok_or(LabError::NotInNode { pid: host })?;
        Ok(pid.to_string())
    }

    /// Waits for a line on `stream` that contains `needle`, and returns it.
    fn wait_line(
        &mut self,
        stream: Stream,
        needle: &str,
        timeout: Duration,
    ) -> Result<String, BenchError> {
        let start = self.seen.len();
        let deadline = Instant::now() + timeout;
        let mut scanned = start;
        loop {
            if let Some(line) = self.seen[scanned..]
                .iter()
                .find(|l| l.stream == stream && l.text.contains(needle))
            {
                return Ok(line.text.clone());
            }
            scanned = self.seen.len();
            if !self.receive(deadline)? {
                let what = format!("no line with {needle:?} within {timeout:?}");
                return Err(self.failure(what));
            }
        }
    }

    /// Receives one more line into `seen`, unless `deadline` passes first (false). Ends
    /// with an error when both streams are closed or on Ctrl-C.
    fn receive(&mut self, deadline: Instant) -> Result<bool, BenchError> {
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return Err(LabError::Interrupted.into());
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let wait = (deadline - now).min(Duration::from_millis(100));
            match self.lines.recv_timeout(wait) {
                Ok(line) => {
                    self.seen.push(line);
                    return Ok(true);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().map(|s| s.to_string());
                    let what = format!(
                        "it ended ({}) early",
                        status.unwrap_or_else(|e| e.to_string())
                    );
                    return Err(self.failure(what));
                }
            }
        }
    }

    /// The longest `stall_ms=` the hog reported since line `mark`: waits for the first
    /// report after a move, then a little longer for a larger one. `None` if none came.
    fn max_stall_since(&mut self, mark: usize) -> Result<Option<f64>, BenchError> {
        let stalls = |seen: &[Line]| -> Vec<f64> {
            seen.iter()
                .filter(|l| l.stream == Stream::Out)
                .filter_map(|l| l.text.strip_prefix("stall_ms="))
                .filter_map(|v| v.trim().parse().ok())
                .collect()
        };
        let deadline = Instant::now() + STALL_TIMEOUT;
        while stalls(&self.seen[mark..]).is_empty() && self.receive(deadline)? {}
        let grace = Instant::now() + STALL_GRACE;
        while self.receive(grace)? {}
        Ok(stalls(&self.seen[mark..]).into_iter().reduce(f64::max))
    }

    /// Sends the go byte on the guest's stdin.
    fn go(&mut self) -> Result<(), BenchError> {
        let sent = match self.stdin.as_mut() {
            Some(stdin) => stdin.write_all(b"g\n").and_then(|()| stdin.flush()),
            None => Ok(()),
        };
        sent.map_err(|e| self.failure(format!("cannot write its stdin: {e}")))
    }

    /// Waits for the guest to end successfully.
    fn wait_exit(&mut self, timeout: Duration) -> Result<(), BenchError> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    // Collect what it said last, for the message.
                    while let Ok(line) = self.lines.recv_timeout(Duration::from_millis(100)) {
                        self.seen.push(line);
                    }
                    return Err(self.failure(format!("it failed ({status})")));
                }
                Ok(None) => {}
                Err(e) => return Err(self.failure(format!("cannot wait for it: {e}"))),
            }
            if Instant::now() >= deadline {
                return Err(self.failure(format!("it did not end within {timeout:?}")));
            }
            if self.stop.load(Ordering::Relaxed) {
                return Err(LabError::Interrupted.into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Kills the guest (the `nsenter`; mosrun dies with it, and its program with mosrun).
    fn end(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    fn failure(&self, what: String) -> BenchError {
        let mut output = String::new();
        for line in &self.seen {
            let _ = writeln!(output, "  {}", line.text);
        }
        BenchError::Guest {
            program: self.program.clone(),
            what,
            output,
        }
    }
}

impl Drop for Guest<'_> {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill();
        }
    }
}

/// Sends each line of `from` to `to`, from a thread that ends with the stream.
fn forward_lines(from: impl Read + Send + 'static, stream: Stream, to: Sender<Line>) {
    std::thread::spawn(move || {
        for text in BufReader::new(from).lines() {
            let Ok(text) = text else { break };
            let text = strip_ansi(&text);
            if to.send(Line { stream, text }).is_err() {
                break;
            }
        }
    });
}

/// `text` without ANSI escape sequences (`ESC [ ... letter`): tracing colours its fields
/// unless told otherwise.
pub(crate) fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The `p50_us=`, `p90_us=`, `p99_us=` and `mean_us=` fields of `program`'s `line`.
fn percentiles(program: &str, line: &str) -> Result<Percentiles, BenchError> {
    Ok(Percentiles {
        p50: field(program, line, "p50_us")?,
        p90: field(program, line, "p90_us")?,
        p99: field(program, line, "p99_us")?,
        mean: field(program, line, "mean_us")?,
    })
}

/// The number after `name=` in `line` (fields are separated by spaces).
pub(crate) fn field(program: &str, line: &str, name: &'static str) -> Result<f64, BenchError> {
    field_text(line, name)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| BenchError::Parse {
            program: program.to_owned(),
            line: line.to_owned(),
            field: name,
        })
}

/// Median, min and max of some samples.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Stats {
    pub(crate) median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    /// `None` for no samples.
    pub(crate) fn of(samples: impl IntoIterator<Item = f64>) -> Option<Stats> {
        let mut v: Vec<f64> = samples.into_iter().collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Stats {
            median,
            min: v[0],
            max: v[n - 1],
        })
    }

    /// Whether these runs were no slower than `baseline`'s, as far as the baseline's own
    /// runs can tell: the median is at most the slowest baseline run. Runs of a few seconds
    /// on this shared machine differ by a few tenths of a per cent between themselves.
    pub(crate) fn no_slower_than(&self, baseline: &Stats) -> bool {
        self.median <= baseline.max
    }

    /// `median [min–max]` with `decimals` places and a unit.
    fn show(&self, decimals: usize, unit: &str) -> String {
        format!(
            "{:.d$} {unit} [{:.d$}–{:.d$}]",
            self.median,
            self.min,
            self.max,
            d = decimals
        )
    }
}

pub(crate) fn show(stats: Option<Stats>, decimals: usize, unit: &str) -> String {
    stats.map_or_else(|| "n/a".to_owned(), |s| s.show(decimals, unit))
}

fn verdict(pass: bool) -> &'static str {
    if pass { "PASS" } else { "MISS" }
}

impl Report {
    fn render(&self, reps: Reps) -> String {
        let mut o = String::new();
        let tcp = Stats::of(self.tcp_gbps.iter().copied());
        let tcp_fresh = Stats::of(self.tcp_fresh_gbps.iter().copied());
        let fresh = Stats::of(self.fresh_gbps.iter().copied());
        if self.tcp_gbps.is_empty() {
            // `bench spread`: its part says what it ran on.
            let _ = writeln!(o, "\nrmosix bench: median [min–max] of the runs");
        } else {
            let _ = writeln!(
                o,
                "\nrmosix bench: {NODES}-node lab, no CPU quota; median [min–max] of the runs\n"
            );
            let _ = writeln!(o, "Baselines ({} runs each)", reps.baseline);
            let _ = writeln!(
                o,
                "  {:<34}{}",
                format!("raw TCP, node1 -> node2, {TCP_MIB} MiB"),
                show(tcp, 2, "GB/s")
            );
            if !self.tcp_fresh_gbps.is_empty() {
                let _ = writeln!(
                    o,
                    "  {:<34}{}",
                    "raw TCP into fresh memory",
                    show(tcp_fresh, 2, "GB/s")
                );
                let _ = writeln!(
                    o,
                    "  {:<34}{}",
                    format!("copy into fresh memory, {FRESH_MIB} MiB"),
                    show(fresh, 2, "GB/s")
                );
            }
        }
        let mut worst_gbps: Option<f64> = None;
        for (mib, samples) in &self.migrations {
            let bytes = Stats::of(samples.iter().map(|m| m.bytes as f64));
            let _ = writeln!(
                o,
                "\nMigration of a {mib} MiB process ({} runs; image {} bytes)",
                samples.len(),
                bytes.map_or(0.0, |b| b.median)
            );
            let first_share = Stats::of(
                samples
                    .iter()
                    .map(|m| m.first_bytes as f64 * 100.0 / m.bytes.max(1) as f64),
            );
            // Only the move out logs how much of the image went while the process ran.
            let legs: [(&str, &str, PickLeg, Option<Option<Stats>>); 3] = [
                (
                    "node1 -> node2",
                    "`migrate PID 2` wall time",
                    |m| m.out,
                    Some(first_share),
                ),
                (
                    "node2 -> node3, relayed by home",
                    "`migrate PID 3` wall time",
                    |m| m.on,
                    None,
                ),
                (
                    "node3 -> home (node1)",
                    "`migrate PID home` wall time",
                    |m| m.home,
                    None,
                ),
            ];
            for (title, wall, leg, share) in legs {
                let figure = |f: fn(&Leg) -> f64| Stats::of(samples.iter().map(|m| f(&leg(m))));
                let gbps = Stats::of(samples.iter().map(|m| gbps(m.bytes, leg(m).total_ms)));
                let mut rows = vec![
                    (
                        "freeze (mosrun freeze_ms)",
                        figure(|l| l.freeze_ms),
                        1,
                        "ms",
                    ),
                    (
                        "freeze (process's own clock)",
                        Stats::of(samples.iter().filter_map(|m| leg(m).stall_ms)),
                        1,
                        "ms",
                    ),
                    (
                        "whole move (mosrun total_ms)",
                        figure(|l| l.total_ms),
                        1,
                        "ms",
                    ),
                    ("throughput (bytes / total_ms)", gbps, 2, "GB/s"),
                    (wall, figure(|l| l.wall_ms), 1, "ms"),
                ];
                if let Some(share) = share {
                    rows.insert(2, ("image sent while it ran", share, 1, "%"));
                }
                direction(&mut o, title, &rows, link_share(gbps, tcp, tcp_fresh));
                if let Some(s) = gbps {
                    worst_gbps = Some(worst_gbps.map_or(s.median, |w: f64| w.min(s.median)));
                }
            }
        }

        if let Some(exec) = &self.exec {
            execbench::render(&mut o, exec);
        }
        let worst_pause = self.render_rewrites(&mut o, tcp_fresh);

        let home = |f: Pick| Stats::of(self.forward_home.iter().map(f));
        let remote = |f: Pick| Stats::of(self.forward_remote.iter().map(f));
        let raw = |f: Pick| Stats::of(self.tcp_rtt.iter().map(f));
        if !self.forward_home.is_empty() {
            let _ = writeln!(
                o,
                "\nForwarded call: lseek(fd, 0, SEEK_CUR) x{LSEEK_CALLS} per run, µs per call, beside \
             as many 16-byte round trips over raw TCP from node2 to node1 ({} runs)",
                self.forward_home.len()
            );
            let pick: [(&str, Pick); 4] = [
                ("p50", |p| p.p50),
                ("p90", |p| p.p90),
                ("p99", |p| p.p99),
                ("mean", |p| p.mean),
            ];
            let ratio = |a: Option<Stats>, b: Option<Stats>, digits: usize| match (a, b) {
                (Some(a), Some(b)) if b.median > 0.0 => {
                    format!("{:.digits$}x", a.median / b.median)
                }
                _ => "n/a".to_owned(),
            };
            for (name, f) in pick {
                let (h, r, t) = (home(f), remote(f), raw(f));
                let _ = writeln!(
                    o,
                    "  {name:<5} home {:<26} remote {:<26} raw TCP {:<26} remote/home {}, remote/raw TCP {}",
                    show(h, 2, "µs"),
                    show(r, 1, "µs"),
                    show(t, 1, "µs"),
                    ratio(r, h, 0),
                    ratio(r, t, 2),
                );
            }
        }

        let io_targets =
            iobench::render(&mut o, &self.io, Stats::of(self.tcp_gbps.iter().copied()));
        let mut cpu = String::new();
        let _ = writeln!(
            cpu,
            "\nCPU-bound loop on node1 ({SPIN_ROUNDS} steps), bare vs under mosrun, alternating ({} runs each)",
            self.cpu_bare.len()
        );
        let columns: [(&str, CpuFigure); 3] = [
            ("wall time of the command", |c| c.wall_ms),
            ("time in the loop", |c| c.compute_ms),
            ("CPU time of the loop", |c| c.cpu_ms),
        ];
        let stats = |runs: &[CpuRun]| columns.map(|(_, f)| Stats::of(runs.iter().map(f)));
        let (bare, sup) = (stats(&self.cpu_bare), stats(&self.cpu_mosrun));
        let pct = |s: Option<f64>| s.map_or_else(|| "n/a".to_owned(), |s| format!("{s:+.2} %"));
        let mut rows: Vec<(&str, [String; 3])> = vec![
            ("", columns.map(|(name, _)| name.to_owned())),
            ("bare", bare.map(|s| show(s, 1, "ms"))),
            ("mosrun", sup.map(|s| show(s, 1, "ms"))),
        ];
        let fastest = |s: Option<Stats>| s.map(|s| Stats { median: s.min, ..s });
        let median: [String; 3] = std::array::from_fn(|i| pct(slowdown(bare[i], sup[i])));
        let best: [String; 3] =
            std::array::from_fn(|i| pct(slowdown(fastest(bare[i]), fastest(sup[i]))));
        rows.push(("slowdown (medians)", median));
        rows.push(("slowdown (fastest runs)", best));
        for (name, [a, b, c]) in rows {
            let _ = writeln!(cpu, "  {name:<24}{a:<32}{b:<32}{c}");
        }
        if !self.cpu_bare.is_empty() {
            o.push_str(&cpu);
        }
        let spread_targets = self
            .spread
            .as_ref()
            .map(|m| spreadbench::render(&mut o, m))
            .unwrap_or_default();
        let slowdown_wall = slowdown(bare[0], sup[0]);

        let forward_p50 = remote(|p| p.p50).map(|s| s.median);
        let _ = writeln!(o, "\nTargets (a miss is reported, not an error)");
        let mut targets = vec![
            (
                format!("migration ≥ {TARGET_GBPS} GB/s (slowest median)"),
                worst_gbps.map_or_else(|| "n/a".to_owned(), |g| format!("{g:.2} GB/s")),
                worst_gbps.is_some_and(|g| g >= TARGET_GBPS),
            ),
            (
                format!("rewriter pause ≤ {TARGET_PAUSE_MS} ms (worst median)"),
                worst_pause.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1} ms")),
                worst_pause.is_some_and(|p| p <= TARGET_PAUSE_MS),
            ),
            (
                format!("forwarded p50 ≤ {TARGET_FORWARD_P50_US} µs (remote)"),
                forward_p50.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.1} µs")),
                forward_p50.is_some_and(|p| p <= TARGET_FORWARD_P50_US),
            ),
            (
                format!("mosrun slowdown ≤ {TARGET_SLOWDOWN_PCT} % (wall time)"),
                pct(slowdown_wall),
                slowdown_wall.is_some_and(|s| s <= TARGET_SLOWDOWN_PCT),
            ),
        ];
        // `bench io` measures the forwarded round trip besides, `bench spread` neither.
        targets.retain(|(name, _, _)| {
            if name.starts_with("forwarded") {
                !self.forward_remote.is_empty()
            } else {
                !self.migrations.is_empty()
            }
        });
        targets.extend(io_targets);
        targets.extend(spread_targets);
        for (name, value, pass) in targets {
            let _ = writeln!(o, "  {name:<40}{value:<14}{}", verdict(pass));
        }
        let _ = writeln!(
            o,
            "\nLoad average before / after: {} / {} (other work on this machine skews every figure)",
            self.load_before, self.load_after
        );
        o
    }
}

impl Report {
    /// The rewriting processes' pauses beside their baselines; returns the worst median pause
    /// on the process's own clock.
    fn render_rewrites(&self, o: &mut String, tcp_fresh: Option<Stats>) -> Option<f64> {
        let legs: [(&str, PickLeg); 3] = [
            ("node1 -> node2", |m| m.out),
            ("node2 -> node3, relayed by home", |m| m.on),
            ("node3 -> home (node1)", |m| m.home),
        ];
        // What the hog of the same size, which writes nothing, paused for in this run.
        let idle = self
            .migrations
            .iter()
            .find(|(mib, _)| *mib == REWRITE_MIB)
            .map(|(_, samples)| samples);
        let mut worst: Option<f64> = None;
        for (written, samples) in &self.rewrites {
            let bytes = Stats::of(samples.iter().map(|m| m.bytes as f64));
            let _ = writeln!(
                o,
                "\nPause of a {REWRITE_MIB} MiB process rewriting {written} MiB of it all the \
                 time ({} runs; image {} bytes)",
                samples.len(),
                bytes.map_or(0.0, |b| b.median)
            );
            // Stop-and-copy sends the whole image frozen: at best at the rate at which this
            // node pair moves bytes into fresh memory.
            let floor = tcp_fresh.filter(|t| t.median > 0.0).map(|t| {
                let ms = |gbps: f64| REWRITE_MIB as f64 * (1 << 20) as f64 / (gbps * 1e9) * 1e3;
                Stats {
                    median: ms(t.median),
                    min: ms(t.max),
                    max: ms(t.min),
                }
            });
            let _ = writeln!(
                o,
                "  {:<46}{}",
                "baseline: stop-and-copy floor (raw TCP rate)",
                show(floor, 0, "ms")
            );
            for (title, leg) in legs {
                let stall = Stats::of(samples.iter().filter_map(|m| leg(m).stall_ms));
                let idle_stall =
                    idle.and_then(|s| Stats::of(s.iter().filter_map(|m| leg(m).stall_ms)));
                let figure = |f: fn(&Leg) -> f64| Stats::of(samples.iter().map(|m| f(&leg(m))));
                let rows = [
                    ("pause (process's own clock)", stall, 1, "ms"),
                    ("baseline: the idle hog's pause", idle_stall, 1, "ms"),
                    (
                        "freeze (mosrun freeze_ms)",
                        figure(|l| l.freeze_ms),
                        1,
                        "ms",
                    ),
                    (
                        "whole move (mosrun total_ms)",
                        figure(|l| l.total_ms),
                        1,
                        "ms",
                    ),
                ];
                let _ = writeln!(o, "  {title}");
                for (name, stats, d, unit) in rows {
                    let _ = writeln!(o, "    {name:<44}{}", show(stats, d, unit));
                }
                if let Some(s) = stall {
                    worst = Some(worst.map_or(s.median, |w: f64| w.max(s.median)));
                }
            }
        }
        worst
    }
}

/// One direction of a migration: its title, a row per figure (name, stats, decimals, unit),
/// then its rate as a share of the baselines.
fn direction(
    o: &mut String,
    title: &str,
    rows: &[(&str, Option<Stats>, usize, &str)],
    share: String,
) {
    let _ = writeln!(o, "  {title}");
    for &(name, stats, d, unit) in rows {
        let _ = writeln!(o, "    {name:<32}{}", show(stats, d, unit));
    }
    let _ = writeln!(o, "    {:<32}{share}", "");
}

/// Bytes per ms as GB/s (10^9 bytes a second).
fn gbps(bytes: u64, ms: f64) -> f64 {
    bytes as f64 / (ms / 1e3) / 1e9
}

/// "= 1230 MB/s, 45 % of raw TCP, 80 % of raw TCP into fresh memory".
fn link_share(rate: Option<Stats>, tcp: Option<Stats>, tcp_fresh: Option<Stats>) -> String {
    let Some(r) = rate else {
        return String::new();
    };
    let share = |base: Option<Stats>, what: &str| {
        base.filter(|b| b.median > 0.0)
            .map(|b| format!(", {:.0} % of {what}", r.median / b.median * 1e2))
            .unwrap_or_default()
    };
    format!(
        "= {:.0} MB/s{}{}",
        r.median * 1e3,
        share(tcp, "raw TCP"),
        share(tcp_fresh, "raw TCP into fresh memory")
    )
}

/// How much slower the median of `slow` is than that of `base`, in per cent.
pub(crate) fn slowdown(base: Option<Stats>, slow: Option<Stats>) -> Option<f64> {
    let (b, s) = (base?, slow?);
    (b.median > 0.0).then(|| (s.median / b.median - 1.0) * 1e2)
}

/// The 1, 5 and 15 minute load averages, or "?".
pub(crate) fn load_average() -> String {
    fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "?".to_owned())
}

pub(crate) fn progress(what: &str) {
    eprintln!("bench: {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_read_from_a_colourless_log_line() {
        let raw = "2025-01-01T00:00:00Z  \u{1b}[32m INFO\u{1b}[0m rmosix_engine::home: migrated \
                   \u{1b}[3mpid\u{1b}[0m\u{1b}[2m=\u{1b}[0m9 \u{1b}[3mbytes\u{1b}[0m\u{1b}[2m=\u{1b}[0m67108864 \
                   \u{1b}[3mfreeze_ms\u{1b}[0m\u{1b}[2m=\u{1b}[0m123.4";
        let line = strip_ansi(raw);
        assert_eq!(field("mosrun", &line, "bytes").unwrap(), 67_108_864.0);
        assert_eq!(field("mosrun", &line, "freeze_ms").unwrap(), 123.4);
        assert!(matches!(
            field("mosrun", &line, "node"),
            Err(BenchError::Parse { field: "node", .. })
        ));
        // A name that is only a prefix of another field does not match it.
        assert!(field("x", "p50_us=1.5", "p5").is_err());
    }

    #[test]
    fn stats_take_the_middle() {
        assert_eq!(Stats::of([]), None);
        let s = Stats::of([3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
        assert_eq!(Stats::of([4.0, 1.0, 2.0, 3.0]).unwrap().median, 2.5);
    }

    #[test]
    fn slowdown_is_relative_to_the_base() {
        let base = Stats::of([100.0]);
        let slow = Stats::of([101.0]);
        let s = slowdown(base, slow).unwrap();
        assert!((s - 1.0).abs() < 1e-9);
        assert_eq!(slowdown(None, slow), None);
    }

    #[test]
    fn throughput_is_bytes_per_second() {
        assert!((gbps(1_000_000_000, 1000.0) - 1.0).abs() < 1e-12);
    }
}
