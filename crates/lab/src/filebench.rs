//! The files part of `rmosix-lab bench` (`bench files`): what DFSA gains a process away from
//! home (issue 10), in a 3-node lab, each figure beside its baselines from the same run.
//! Node 1 is home; node 3 holds a copy of the data in its own /tmp, which nodes 1 and 2 reach
//! as `/mfs/3/tmp/...`.
//!
//! - **1 GiB read** in 1 MiB reads: of home's file, never moved and moved to node 2
//!   (forwarded, with the bytes home lends ahead, docs/forwarding.md); of node 3's file from
//!   node 2, opened at home before the move (forwarded, and home reads it through its MFS:
//!   two hops) and opened at node 2 after it (DFSA: one hop, node 2's MFS to node 3); and
//!   moved to node 3, its data (DFSA on node 3's own MFS). The baseline is one raw TCP stream
//!   from node 1 to node 2 (`tcp.c`). Target: DFSA at least half of raw TCP.
//! - **Headers**: 10,000 times `stat`, `open`, read to the end, `close` of a system header
//!   (the host's `/usr/include/*.h` in turn, which every node sees as its own): never moved;
//!   moved to node 2 and forwarded (a copy in home's `/dev/shm`, whose lookups home does
//!   not vouch for);
//!   moved to node 2 as system files the same there (`/usr/include`: opened at home and
//!   read at node 2); moved to node 2 and by DFSA through `/mfs/3`; moved to node 3 and by
//!   DFSA on its own `/mfs/3`. Target (for files the same on every node): 10 times faster
//!   than forwarded.
//!
//! A path under home's own `/mfs/1` goes home: there it is a local file (docs/forwarding.md).
//! Each program is told to go once it has moved, and times itself from there.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bench::{BenchError, Stats, compile_into, load_average, progress, show};
use crate::cmd::{describe, run};
use crate::{Job, Lab, LabConfig, LabError, Node};

/// Size of the file read, in MiB.
const BIG_MIB: u64 = 1024;
/// Header operations (stat, open, read, close) of one run.
const HEADER_OPS: u64 = 10_000;
/// Headers read in turn.
const MAX_HEADERS: usize = 400;
/// Port of the raw TCP baseline.
const TCP_PORT: u16 = 47_124;
/// How long one run may take.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
/// DFSA's 1 GiB read against raw TCP, and forwarded header work against DFSA's.
const TARGET_READ_OF_TCP: f64 = 0.5;
const TARGET_HEADER_SPEEDUP: f64 = 10.0;

/// One way of running the work: what the report calls it, where the process runs (None:
/// never moved), what it reads, and whether it opens the file before it moves.
struct Case {
    name: &'static str,
    to: Option<&'static str>,
    path: &'static str,
    opened_first: bool,
}

const READS: [Case; 5] = [
    Case {
        name: "home's file, never moved",
        to: None,
        path: "/tmp/big",
        opened_first: false,
    },
    Case {
        name: "home's file, at node 2, forwarded",
        to: Some("2"),
        path: "/tmp/big",
        opened_first: false,
    },
    Case {
        name: "node 3's file, at node 2, forwarded",
        to: Some("2"),
        path: "/mfs/3/tmp/big",
        opened_first: true,
    },
    Case {
        name: "node 3's file, at node 2, DFSA",
        to: Some("2"),
        path: "/mfs/3/tmp/big",
        opened_first: false,
    },
    Case {
        name: "node 3's file, at node 3, DFSA",
        to: Some("3"),
        path: "/mfs/3/tmp/big",
        opened_first: false,
    },
];
/// The read DFSA's target is about: a moved process reading through MFS.
const DFSA_READ: usize = 3;

/// Home's copy of the headers read, forwarded: under no system prefix, and under `/dev`,
/// where home vouches for no lookup (docs/forwarding.md, "Answers home vouches for"), so
/// that every call goes home. Home would keep a copy's lookups in its `/tmp` away.
const HOME_HEADERS_DIR: &str = "/dev/shm/rmosix-files-bench";
const HOME_HEADERS: &str = "/dev/shm/rmosix-files-bench/include";

const HEADERS: [Case; 5] = [
    Case {
        name: "never moved",
        to: None,
        path: "/usr/include",
        opened_first: false,
    },
    Case {
        name: "at node 2, forwarded (home's /dev/shm)",
        to: Some("2"),
        path: HOME_HEADERS,
        opened_first: false,
    },
    Case {
        name: "at node 2, system files (/usr/include)",
        to: Some("2"),
        path: "/usr/include",
        opened_first: false,
    },
    Case {
        name: "at node 2, DFSA (/mfs/3)",
        to: Some("2"),
        path: "/mfs/3/usr/include",
        opened_first: false,
    },
    Case {
        name: "at node 3, DFSA (/mfs/3)",
        to: Some("3"),
        path: "/mfs/3/usr/include",
        opened_first: false,
    },
];
const FORWARDED_HEADERS: usize = 1;
const SYSTEM_HEADERS: usize = 2;
const DFSA_HEADERS: usize = 3;

/// Everything measured: GB/s of the reads, seconds of the header runs, by case.
#[derive(Default)]
struct Measured {
    tcp: Vec<f64>,
    read: [Vec<f64>; READS.len()],
    headers: [Vec<f64>; HEADERS.len()],
    headers_used: usize,
}

/// Runs the files part; returns its report.
pub(crate) fn measure(
    bin_dir: &Path,
    quick: bool,
    stop: &AtomicBool,
) -> Result<String, BenchError> {
    let reps = if quick { 3 } else { 5 };
    let load_before = load_average();
    let lab = Lab::start(LabConfig::new(3, bin_dir))?;
    progress(&format!("files: lab ready in {}", lab.dir().display()));
    let measured = measure_in(&lab, reps, stop);
    // The lab's nodes share the host's /dev/shm.
    let _ = std::fs::remove_dir_all(HOME_HEADERS_DIR);
    lab.stop()?;
    Ok(render(&measured?, reps, &load_before, &load_average()))
}

fn measure_in(lab: &Lab, reps: usize, stop: &AtomicBool) -> Result<Measured, BenchError> {
    let work = lab.work_dir();
    compile_into(
        &work,
        &[
            ("files", include_str!("../bench/files.c")),
            ("tcp", include_str!("../bench/tcp.c")),
        ],
    )?;
    progress(&format!(
        "files: writing the {BIG_MIB} MiB files of nodes 1 and 3"
    ));
    for node in [lab.node(1), lab.node(3)] {
        let mut write = node.command("sh");
        let script = format!("head -c {BIG_MIB}M /dev/urandom > /tmp/big && chmod a+r /tmp/big");
        write.args(["-c", &script]);
        run(&mut write)?;
    }
    let headers = header_list(&work)?;
    let mut copy = lab.node(1).command("sh");
    let script = format!(
        "mkdir -p {HOME_HEADERS} && cd /usr/include && xargs -a {} cp -t {HOME_HEADERS}",
        headers.0.display()
    );
    copy.args(["-c", &script]);
    run(&mut copy)?;
    for node in [lab.node(1), lab.node(2), lab.node(3)] {
        wait_visible(node, "/mfs/3/tmp/big")?;
    }
    let mut measured = Measured {
        headers_used: headers.1,
        ..Measured::default()
    };
    let list = headers.0.to_string_lossy().into_owned();
    let ops = HEADER_OPS.to_string();
    for rep in 0..reps {
        progress(&format!("files: run {} of {reps}", rep + 1));
        measured.tcp.push(tcp_once(lab)?);
        check(stop)?;
        for (k, case) in READS.iter().enumerate() {
            let mode = if case.opened_first {
                "read-opened"
            } else {
                "read"
            };
            let line = files_run(lab, case, &[mode, case.path])?;
            let (bytes, secs) = (field(&line, "bytes")?, field(&line, "secs")?);
            if bytes != (BIG_MIB << 20) as f64 {
                return Err(scenario(format!(
                    "{}: read {bytes} bytes: {line}",
                    case.name
                )));
            }
            measured.read[k].push(bytes / secs / 1e9);
            check(stop)?;
        }
        for (k, case) in HEADERS.iter().enumerate() {
            let line = files_run(lab, case, &["headers", &ops, &list, case.path])?;
            measured.headers[k].push(field(&line, "secs")?);
            check(stop)?;
        }
    }
    Ok(measured)
}

/// Writes the list of headers read (regular files of /usr/include, by name); its path and
/// how many it holds.
fn header_list(work: &Path) -> Result<(PathBuf, usize), BenchError> {
    let entries = fs::read_dir("/usr/include").map_err(|source| LabError::Io {
        action: "read",
        path: "/usr/include".into(),
        source,
    })?;
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .filter(|name| name.ends_with(".h"))
        .collect();
    names.sort();
    names.truncate(MAX_HEADERS);
    if names.is_empty() {
        return Err(scenario("no headers in /usr/include".into()));
    }
    let path = work.join("headers.list");
    fs::write(&path, names.join("\n") + "\n").map_err(|source| LabError::Io {
        action: "write",
        path: path.clone(),
        source,
    })?;
    Ok((path, names.len()))
}

/// Waits until `path` is readable at `node` (MFS links come up at the first call).
fn wait_visible(node: &Node, path: &str) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut test = node.command("test");
        test.args(["-r", path]);
        if run(&mut test).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(scenario(format!(
                "{path} not readable at node {}",
                node.id()
            )));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// One run of `files ARGS` under mosrun at node 1, moved where `case` says first: the line
/// it printed at its end.
fn files_run(lab: &Lab, case: &Case, args: &[&str]) -> Result<String, BenchError> {
    let home = lab.node(1);
    let mut cmd = home.command("mosrun");
    cmd.arg(lab.work_dir().join("files"))
        .args(args)
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped());
    let program = describe(&cmd);
    let job = Job::spawn(home, cmd).map_err(job_failed)?;
    job.wait_output("ready\n", RUN_TIMEOUT)
        .map_err(job_failed)?;
    if let Some(to) = case.to {
        job.migrate(to).map_err(job_failed)?;
    }
    job.send(b"go\n").map_err(job_failed)?;
    job.wait_output("secs=", RUN_TIMEOUT).map_err(job_failed)?;
    let done = job.finish(RUN_TIMEOUT).map_err(job_failed)?;
    let out = String::from_utf8_lossy(&done.stdout).into_owned();
    if !done.status.success() {
        return Err(scenario(format!("{program}: {:?}\n{out}", done.status)));
    }
    let line = out.lines().find(|l| l.contains("secs="));
    Ok(line.unwrap_or_default().to_owned())
}

/// One raw TCP stream of BIG_MIB MiB from node 1 to node 2; GB/s.
fn tcp_once(lab: &Lab) -> Result<f64, BenchError> {
    let (home, away) = (lab.node(1), lab.node(2));
    let tcp = lab.work_dir().join("tcp");
    let port = TCP_PORT.to_string();
    let mut receiver = away
        .command(&tcp)
        .args(["recv", &port])
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| scenario(format!("cannot start the TCP receiver: {e}")))?;
    let mut lines = BufReader::new(receiver.stdout.take().expect("piped")).lines();
    let listening = lines.next().and_then(Result::ok).unwrap_or_default();
    if !listening.contains("listening") {
        let _ = receiver.kill();
        let _ = receiver.wait();
        return Err(scenario(format!("TCP receiver said {listening:?}")));
    }
    let mut sender = home.command(&tcp);
    let addr = away.addr().to_string();
    sender.args(["send", &addr, &port, &BIG_MIB.to_string()]);
    let sent = run(&mut sender);
    let _ = receiver.wait();
    let line = sent?;
    Ok(field(&line, "bytes")? / field(&line, "secs")? / 1e9)
}

fn render(m: &Measured, reps: usize, load_before: &str, load_after: &str) -> String {
    let stats = |v: &[f64]| Stats::of(v.iter().copied());
    let tcp = stats(&m.tcp);
    let ratio = |a: Option<Stats>, b: Option<Stats>| match (a, b) {
        (Some(a), Some(b)) if b.median > 0.0 => Some(a.median / b.median),
        _ => None,
    };
    let verdict = |r: Option<f64>, target: f64| match r {
        Some(r) if r >= target => "met",
        Some(_) => "missed",
        None => "n/a",
    };
    let shown = |r: Option<f64>| r.map_or("n/a".to_owned(), |r| format!("{r:.2}x"));
    let mut o = format!(
        "rmosix files bench: 3-node lab, {reps} runs each, medians [min-max]; load {load_before} before, {load_after} after\n\n\
         {BIG_MIB} MiB read in 1 MiB reads, by a process of node 1\n  {:<40} {}\n",
        "raw TCP node 1 -> node 2 (baseline)",
        show(tcp, 2, "GB/s")
    );
    for (case, runs) in READS.iter().zip(&m.read) {
        o.push_str(&format!(
            "  {:<40} {}\n",
            case.name,
            show(stats(runs), 2, "GB/s")
        ));
    }
    let of_tcp = ratio(stats(&m.read[DFSA_READ]), tcp);
    o.push_str(&format!(
        "  DFSA at node 2 / raw TCP                 {} [>= {TARGET_READ_OF_TCP}x: {}]\n\n",
        shown(of_tcp),
        verdict(of_tcp, TARGET_READ_OF_TCP)
    ));
    o.push_str(&format!(
        "{HEADER_OPS} stat+open+read+close of {} system headers\n",
        m.headers_used
    ));
    for (case, runs) in HEADERS.iter().zip(&m.headers) {
        let runs = stats(runs);
        let per_op = runs.map_or("n/a".to_owned(), |s| {
            format!("{:.1} us an operation", s.median / HEADER_OPS as f64 * 1e6)
        });
        o.push_str(&format!(
            "  {:<40} {} ({per_op})\n",
            case.name,
            show(runs, 3, "s")
        ));
    }
    // The target is about identical system files read where the process runs; through
    // `/mfs/3` every path component is a request to node 3 (MFS caches no entry).
    let system = ratio(
        stats(&m.headers[FORWARDED_HEADERS]),
        stats(&m.headers[SYSTEM_HEADERS]),
    );
    o.push_str(&format!(
        "  forwarded / system files at node 2       {} [>= {TARGET_HEADER_SPEEDUP}x: {}]\n",
        shown(system),
        verdict(system, TARGET_HEADER_SPEEDUP)
    ));
    let dfsa = ratio(
        stats(&m.headers[FORWARDED_HEADERS]),
        stats(&m.headers[DFSA_HEADERS]),
    );
    o.push_str(&format!(
        "  forwarded / DFSA at node 2               {}\n",
        shown(dfsa)
    ));
    o
}

/// A `key=value` number of a program's line.
fn field(line: &str, key: &str) -> Result<f64, BenchError> {
    let prefix = format!("{key}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&prefix)?.parse().ok())
        .ok_or_else(|| scenario(format!("no {key}= in {line:?}")))
}

fn check(stop: &AtomicBool) -> Result<(), BenchError> {
    match stop.load(Ordering::Relaxed) {
        true => Err(LabError::Interrupted.into()),
        false => Ok(()),
    }
}

fn scenario(what: String) -> BenchError {
    BenchError::Scenario { what }
}

fn job_failed(e: crate::JobError) -> BenchError {
    scenario(e.to_string())
}
