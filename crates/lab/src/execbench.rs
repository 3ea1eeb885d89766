//! The exec part of `rmosix-lab bench` (`bench samefile` runs it alone): moving a process that
//! has just exec'd a large binary, with and without identical-file mapping.
//!
//! The process is gcc's `cc1` (the largest program most build hosts run), started under
//! mosrun on node 1 with its input on a pipe: it maps itself and its libraries, then waits
//! in `read(0)`. Once it waits there it is moved to node 2, which holds the same files (the
//! lab's nodes share the host's /usr). The pages of cc1 it never wrote are the file's own:
//! with identical-file mapping node 2 maps its own cc1 and only the process's own pages
//! travel; without (`RMOSIX_SAMEFILE=off` in mosrun's environment, the baseline) every page
//! of every mapped file goes. Runs of the two kinds alternate, so that the host's load hits
//! both alike. Each run then closes the pipe: cc1 reads the end of its input at node 2
//! (forwarded home), compiles nothing and must exit 0.
//!
//! Figures from mosrun's `migrated` line (`bytes`, `freeze_ms`, `total_ms`) and the wall
//! time of `migrate`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use crate::bench::{BenchError, Stats, field, migrate, progress, show};
use crate::cmd::describe;
use crate::iobench::{lines, wait};
use crate::{Lab, LabError, pid_in_node, wait_child_of};

/// How long the process tree may take to appear, cc1 to wait on its input, mosrun's
/// `migrated` line to come, and cc1 to end once its input ends.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
const READY_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TIMEOUT: Duration = Duration::from_secs(30);
const EXIT_TIMEOUT: Duration = Duration::from_secs(60);

/// One move of a freshly exec'd cc1.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// `bytes` of mosrun's `migrated` line: the image, both rounds.
    bytes: f64,
    freeze_ms: f64,
    total_ms: f64,
    /// Wall time of `migrate PID 2`.
    wall_ms: f64,
}

/// Picks one figure out of a run.
type Figure = fn(&Run) -> f64;

/// The runs of both kinds, and the binary they ran.
#[derive(Debug)]
pub(crate) struct Measured {
    binary: PathBuf,
    /// Its size in bytes.
    size: u64,
    same: Vec<Run>,
    sent: Vec<Run>,
}

/// gcc's cc1, the newest version installed, if any.
fn find_cc1() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/gcc/x86_64-linux-gnu")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("cc1")))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop()
}

/// Runs `reps` moves of each kind, alternating; `None` where no cc1 is installed.
pub(crate) fn measure(
    lab: &Lab,
    reps: usize,
    check_stop: &dyn Fn() -> Result<(), BenchError>,
) -> Result<Option<Measured>, BenchError> {
    let Some(binary) = find_cc1() else {
        progress("exec: no cc1 under /usr/lib/gcc/x86_64-linux-gnu, skipped");
        return Ok(None);
    };
    let size = std::fs::metadata(&binary).map_or(0, |m| m.len());
    let mut measured = Measured {
        binary,
        size,
        same: Vec::new(),
        sent: Vec::new(),
    };
    for i in 1..=reps {
        progress(&format!(
            "exec: a fresh cc1 moved to node2, with and without identical-file mapping, run {i}/{reps}"
        ));
        // Alternate which goes first.
        for same in [i % 2 == 1, i % 2 == 0] {
            let run = move_once(lab, &measured.binary, same)?;
            match same {
                true => measured.same.push(run),
                false => measured.sent.push(run),
            }
            check_stop()?;
        }
    }
    Ok(Some(measured))
}

/// Starts `binary` under mosrun on node 1, waits until it reads its input, moves it to node
/// 2, then ends its input and waits for its exit.
fn move_once(lab: &Lab, binary: &Path, same: bool) -> Result<Run, BenchError> {
    let home = lab.node(1);
    let mut cmd = home.command("mosrun");
    cmd.arg(binary)
        .args(["-quiet", "-o", "/dev/null"])
        .current_dir(lab.work_dir())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if !same {
        cmd.env("RMOSIX_SAMEFILE", "off");
    }
    let program = describe(&cmd);
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        command: program.clone(),
        source,
    })?;
    let log = child.stderr.take().map(lines);
    let mut seen: Vec<String> = Vec::new();
    let failed = |what: &str, seen: &[String]| BenchError::Guest {
        program: program.clone(),
        what: what.to_owned(),
        output: seen.join("\n"),
    };
    // The process tree is nsenter → mosrun → cc1.
    let mosrun = wait_child_of(child.id(), SPAWN_TIMEOUT)?;
    let host = wait_child_of(mosrun, SPAWN_TIMEOUT)?;
    let pid = pid_in_node(host).ok_or(LabError::NotInNode { pid: host })?;
    if !reads_its_input(host, READY_TIMEOUT) {
        return Err(failed("it never waited on its input", &seen));
    }
    let wall_ms = migrate(home, &pid.to_string(), "2")?;
    let deadline = Instant::now() + LOG_TIMEOUT;
    let line = loop {
        if let Some(line) = seen.iter().find(|l| l.contains("migrated")) {
            break line.clone();
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match log.as_ref().map(|rx| rx.recv_timeout(left)) {
            Some(Ok(line)) => seen.push(line),
            _ => return Err(failed("no `migrated` line from mosrun", &seen)),
        }
    };
    drop(child.stdin.take());
    match wait(&mut child, EXIT_TIMEOUT) {
        Some(status) if status.success() => {}
        _ => return Err(failed("it did not end well once its input ended", &seen)),
    }
    Ok(Run {
        bytes: field(&program, &line, "bytes")?,
        freeze_ms: field(&program, &line, "freeze_ms")?,
        total_ms: field(&program, &line, "total_ms")?,
        wall_ms,
    })
}

/// Waits until host process `pid` sits in `read(0, ...)` (its first system call field and
/// argument in /proc/PID/syscall); false if it does not within `timeout`.
fn reads_its_input(pid: u32, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let call = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
        if call.starts_with("0 0x0 ") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    false
}

/// The exec part of the report.
pub(crate) fn render(o: &mut String, m: &Measured) {
    let _ = writeln!(
        o,
        "\nA fresh cc1 moved node1 -> node2 ({}, {:.1} MiB; {} runs of each kind, alternating)",
        m.binary.display(),
        m.size as f64 / (1 << 20) as f64,
        m.same.len()
    );
    let figure = |runs: &[Run], f: Figure| Stats::of(runs.iter().map(f));
    let rows: [(&str, Figure, usize, &str); 4] = [
        (
            "image (mosrun bytes)",
            |r| r.bytes / (1 << 20) as f64,
            2,
            "MiB",
        ),
        ("whole move (mosrun total_ms)", |r| r.total_ms, 1, "ms"),
        ("freeze (mosrun freeze_ms)", |r| r.freeze_ms, 1, "ms"),
        ("`migrate PID 2` wall time", |r| r.wall_ms, 1, "ms"),
    ];
    let _ = writeln!(
        o,
        "  {:<32}{:<36}{:<42}without / with (medians)",
        "", "with identical-file mapping", "without (RMOSIX_SAMEFILE=off)"
    );
    for (name, f, digits, unit) in rows {
        let (same, sent) = (figure(&m.same, f), figure(&m.sent, f));
        let ratio = match (same, sent) {
            (Some(a), Some(b)) if a.median > 0.0 => format!("{:.2}x", b.median / a.median),
            _ => "n/a".to_owned(),
        };
        let _ = writeln!(
            o,
            "  {name:<32}{:<36}{:<42}{ratio}",
            show(same, digits, unit),
            show(sent, digits, unit)
        );
    }
}
