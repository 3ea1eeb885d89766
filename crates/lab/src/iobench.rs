//! The I/O part of `rmosix-lab bench` (`bench io` runs it alone, beside the forwarded lseek
//! round trip and raw TCP): programs that read and write files and pipes at home, run under
//! mosrun on node 1 and either never moved or moved to node 2 before they start and kept
//! there. Each program waits for its input on stdin before it does anything, so the move
//! comes first; the bench times from sending that input to the program's end.
//!
//! - **sqlite3** (the CLI, which reads and writes its database with pread64 and pwrite64):
//!   20000 random row reads and 2000 random row updates in one transaction on a 100 MiB
//!   database with a 1 MiB page cache, copied fresh before every run.
//! - **mawk** reading a 100 MiB text file with `getline` (4 KiB reads) and printing its two
//!   fields swapped (writes of about 4 KiB to a pipe).
//! - **pipewrite** (`bench/pipewrite.c`): 200 MiB written in 4 KiB writes to a pipe.
//!
//! Every program's stdout is read here at home and hashed: a moved run must print the same
//! bytes as the runs never moved. Target: a moved run takes at most 1.3 times as long.
//!
//! Beside it, the floor of the plainest other way to run the same work on node 2: carry the
//! files it reads there and back (the database, which it also writes; the text file) and
//! its output home over raw TCP, at the rate this run measured, and run it there as fast as
//! at home. A moved run cannot beat it by much: its data crosses the same link.

use std::collections::hash_map::DefaultHasher;
use std::fs;
use std::hash::Hasher;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::bench::{BenchError, Stats, migrate, progress, show};
use crate::cmd::{describe, run};
use crate::{Lab, LabError, pid_in_node, wait_child_of};

/// How much slower a moved run may be than one never moved.
const TARGET_RATIO: f64 = 1.3;
/// Rows of the database (about 1 KiB each: about 100 MiB in all).
const DB_ROWS: u64 = 100_000;
/// Random row reads and updates of one sqlite3 run.
const DB_READS: u64 = 20_000;
const DB_UPDATES: u64 = 2_000;
/// Size of mawk's input file, in MiB.
const AWK_MIB: u64 = 100;
/// What pipewrite writes, in MiB.
const PIPE_MIB: u64 = 200;
/// How long a run may take, and its process tree to appear.
const RUN_TIMEOUT: Duration = Duration::from_secs(600);
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long mosrun's `migrated` line may take.
const LOG_TIMEOUT: Duration = Duration::from_secs(30);

/// One program of the I/O bench.
struct Workload {
    /// Its name in the report, and what it does.
    name: &'static str,
    what: String,
    /// The command line inside the node.
    argv: Vec<String>,
    /// What it gets on stdin once it may start.
    input: Vec<u8>,
    /// A file copied to another before each run: (from, to).
    fresh_copy: Option<(PathBuf, PathBuf)>,
    /// Bytes of home's files the plainest other way carries to node 2 and back (see the
    /// module's doc); its output comes on top.
    carried: u64,
}

/// One run: wall time, and a digest and length of what it printed.
#[derive(Debug, Clone, Copy)]
struct Run {
    wall_ms: f64,
    digest: u64,
    bytes: u64,
    /// It came home by itself during the run (a call only home can run).
    came_home: bool,
}

/// The runs of one workload.
#[derive(Debug)]
pub(crate) struct Measured {
    name: &'static str,
    what: String,
    home: Vec<Run>,
    moved: Vec<Run>,
    carried: u64,
}

/// Prepares the inputs in the lab's work dir, then runs each workload `reps` times never
/// moved and `reps` times moved, alternating.
pub(crate) fn measure(
    lab: &Lab,
    progs: &Path,
    reps: usize,
    check_stop: &dyn Fn() -> Result<(), BenchError>,
) -> Result<Vec<Measured>, BenchError> {
    let mut results = Vec::new();
    for workload in workloads(lab, progs)? {
        let mut measured = Measured {
            name: workload.name,
            what: workload.what.clone(),
            home: Vec::new(),
            moved: Vec::new(),
            carried: workload.carried,
        };
        for i in 1..=reps {
            progress(&format!(
                "{}: never moved and moved to node2, run {i}/{reps}",
                workload.name
            ));
            measured.home.push(run_once(lab, &workload, false)?);
            check_stop()?;
            measured.moved.push(run_once(lab, &workload, true)?);
            check_stop()?;
        }
        results.push(measured);
    }
    Ok(results)
}

/// The workloads, with their inputs made in `lab`'s work dir.
fn workloads(lab: &Lab, progs: &Path) -> Result<Vec<Workload>, BenchError> {
    let dir = lab.work_dir();
    progress(&format!(
        "io: making a {DB_ROWS}-row database and a {AWK_MIB} MiB text file"
    ));
    let db = dir.join("bench.db");
    let _ = fs::remove_file(&db);
    let mut sqlite = Command::new("sqlite3");
    sqlite.arg(&db).arg(format!(
        "PRAGMA page_size=4096; CREATE TABLE t(id INTEGER PRIMARY KEY, v BLOB); \
         WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM n WHERE i < {DB_ROWS}) \
         INSERT INTO t SELECT i, randomblob(1000) FROM n;"
    ));
    run(&mut sqlite)?;
    let text = dir.join("awk.txt");
    write_text(&text, AWK_MIB << 20)?;
    let size = |file: &Path| {
        fs::metadata(file)
            .map(|m| m.len())
            .map_err(|source| LabError::Io {
                action: "stat",
                path: file.to_path_buf(),
                source,
            })
    };
    let (db_bytes, text_bytes) = (size(&db)?, size(&text)?);

    // A linear congruential sequence, the same every run, picks the rows.
    let rows = |seed: u64, n: u64| {
        format!(
            "WITH RECURSIVE r(i, x) AS (SELECT 1, {seed} UNION ALL \
             SELECT i+1, (x*1103515245+12345)%2147483648 FROM r WHERE i < {n}) \
             SELECT x % {DB_ROWS} + 1 AS id FROM r"
        )
    };
    let sql = format!(
        "PRAGMA cache_size=-1024;\n\
         SELECT count(*), sum(length(v)), sum(unicode(hex(substr(v, 1, 1)))) \
         FROM ({}) AS p JOIN t USING (id);\n\
         BEGIN;\n\
         UPDATE t SET v = zeroblob(1000) WHERE id IN ({});\n\
         COMMIT;\n\
         SELECT count(*) FROM t WHERE v = zeroblob(1000);\n",
        rows(7, DB_READS),
        rows(11, DB_UPDATES)
    );
    let run_db = dir.join("bench-run.db");
    let awk = "BEGIN { getline go < \"-\"; \
               while ((getline line < f) > 0) { split(line, a); print a[2], a[1] } }";
    Ok(vec![
        Workload {
            name: "sqlite3",
            what: format!(
                "sqlite3 CLI: {DB_READS} random row reads, {DB_UPDATES} random updates in \
                 one transaction, {DB_ROWS} rows (100 MiB), 1 MiB page cache"
            ),
            argv: vec!["sqlite3".into(), path(&run_db)],
            input: sql.into_bytes(),
            fresh_copy: Some((db, run_db)),
            // There, and back with its updates.
            carried: 2 * db_bytes,
        },
        Workload {
            name: "mawk",
            what: format!(
                "mawk: getline over a {AWK_MIB} MiB file (4 KiB reads), fields swapped \
                 to a pipe"
            ),
            argv: vec![
                "mawk".into(),
                "-v".into(),
                format!("f={}", path(&text)),
                awk.into(),
            ],
            input: b"go\n".to_vec(),
            fresh_copy: None,
            carried: text_bytes,
        },
        Workload {
            name: "pipewrite",
            what: format!("{PIPE_MIB} MiB in 4 KiB writes to a pipe"),
            argv: vec![path(&progs.join("pipewrite")), PIPE_MIB.to_string()],
            input: b"g".to_vec(),
            fresh_copy: None,
            carried: 0,
        },
    ])
}

fn path(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// Writes `bytes` of lines "N N*7" to `file`.
fn write_text(file: &Path, bytes: u64) -> Result<(), BenchError> {
    let io_error = |source| LabError::Io {
        action: "write",
        path: file.to_path_buf(),
        source,
    };
    let mut out = std::io::BufWriter::new(fs::File::create(file).map_err(io_error)?);
    let mut written = 0u64;
    let mut i = 0u64;
    while written < bytes {
        let line = format!("{i} {}\n", i * 7);
        out.write_all(line.as_bytes()).map_err(io_error)?;
        written += line.len() as u64;
        i += 1;
    }
    out.flush().map_err(io_error)?;
    Ok(())
}

/// One run of `workload` under mosrun on node 1, moved to node 2 first if `moved`.
fn run_once(lab: &Lab, workload: &Workload, moved: bool) -> Result<Run, BenchError> {
    if let Some((from, to)) = &workload.fresh_copy {
        fs::copy(from, to).map_err(|source| LabError::Io {
            action: "copy",
            path: from.clone(),
            source,
        })?;
    }
    let home = lab.node(1);
    let mut cmd = home.command("mosrun");
    cmd.args(&workload.argv)
        .current_dir(lab.work_dir())
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let program = describe(&cmd);
    let mut child = cmd.spawn().map_err(|source| LabError::Spawn {
        command: program.clone(),
        source,
    })?;
    let output = child.stdout.take().map(digest);
    let log = child.stderr.take().map(lines);
    let failed = |what: String, log: &[String]| BenchError::Guest {
        program: program.clone(),
        what,
        output: log.join("\n"),
    };
    let mut seen = Vec::new();
    if moved {
        // The process tree is nsenter → mosrun → program.
        let mosrun = wait_child_of(child.id(), SPAWN_TIMEOUT)?;
        let host = wait_child_of(mosrun, SPAWN_TIMEOUT)?;
        let pid = pid_in_node(host).ok_or(LabError::NotInNode { pid: host })?;
        migrate(home, &pid.to_string(), "2")?;
        let deadline = Instant::now() + LOG_TIMEOUT;
        while !seen.iter().any(|l: &String| l.contains("migrated")) {
            let left = deadline.saturating_duration_since(Instant::now());
            match log.as_ref().map(|rx| rx.recv_timeout(left)) {
                Some(Ok(line)) => seen.push(line),
                _ => return Err(failed("no `migrated` line from mosrun".into(), &seen)),
            }
        }
    }
    let started = Instant::now();
    if let Some(mut stdin) = child.stdin.take() {
        // A program that ends before it read all of it says so by its status.
        let _ = stdin.write_all(&workload.input);
    }
    let status = wait(&mut child, RUN_TIMEOUT);
    let (digest, bytes) = output
        .and_then(|reader| reader.join().ok())
        .unwrap_or_default();
    let wall_ms = started.elapsed().as_secs_f64() * 1e3;
    if let Some(rx) = &log {
        seen.extend(rx.try_iter());
    }
    match status {
        Some(status) if status.success() => Ok(Run {
            wall_ms,
            digest,
            bytes,
            came_home: moved && seen.iter().any(|l| l.contains("came home")),
        }),
        Some(status) => Err(failed(format!("it failed ({status})"), &seen)),
        None => Err(failed(
            format!("it did not end within {RUN_TIMEOUT:?}"),
            &seen,
        )),
    }
}

/// Waits for `child` at most `timeout`; kills it after that (None).
pub(crate) fn wait(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        thread::sleep(Duration::from_millis(5));
    }
}

/// A thread that reads `from` to its end: a digest of the bytes and how many there were.
fn digest(mut from: impl Read + Send + 'static) -> JoinHandle<(u64, u64)> {
    thread::spawn(move || {
        let mut hasher = DefaultHasher::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        while let Ok(n) = from.read(&mut buf) {
            if n == 0 {
                break;
            }
            hasher.write(&buf[..n]);
            total += n as u64;
        }
        (hasher.finish(), total)
    })
}

/// A thread that sends each line of `from`.
pub(crate) fn lines(from: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(from).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The I/O part of the report: a block per workload, then one target line each (PASS or
/// MISS, like the bench's other targets).
/// Renders the I/O section into `o`; `tcp`: raw TCP from node 1 to node 2 in GB/s, this
/// run's (the floor's rate). Returns the targets' rows.
pub(crate) fn render(
    o: &mut String,
    results: &[Measured],
    tcp: Option<Stats>,
) -> Vec<(String, String, bool)> {
    use std::fmt::Write as _;
    let mut targets = Vec::new();
    for m in results {
        let wall = |runs: &[Run]| Stats::of(runs.iter().map(|r| r.wall_ms));
        let (home, moved) = (wall(&m.home), wall(&m.moved));
        let reference = m.home.first().map(|r| (r.digest, r.bytes));
        let identical = m
            .home
            .iter()
            .chain(&m.moved)
            .all(|r| Some((r.digest, r.bytes)) == reference);
        let came_home = m.moved.iter().filter(|r| r.came_home).count();
        let ratio = match (home, moved) {
            (Some(h), Some(r)) if h.median > 0.0 => Some(r.median / h.median),
            _ => None,
        };
        let shown_ratio = ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{r:.2}x"));
        let output = match (identical, reference) {
            (true, Some((_, bytes))) => format!("{bytes} bytes, identical in every run"),
            _ => "DIFFERS between runs".to_owned(),
        };
        // Never moved, plus the files and the output over raw TCP at this run's rate.
        let link_bytes = m.carried + reference.map_or(0, |(_, bytes)| bytes);
        let floor = match (home, tcp) {
            (Some(h), Some(t)) if t.median > 0.0 => {
                Some(h.median + link_bytes as f64 / (t.median * 1e9) * 1e3)
            }
            _ => None,
        };
        let (shown_floor, over_floor) = match (floor, moved) {
            (Some(f), Some(r)) => (format!("{f:.0} ms"), format!("{:.2}x", r.median / f)),
            _ => ("n/a".to_owned(), "n/a".to_owned()),
        };
        let floor_name = format!("never moved + {} MiB over TCP", link_bytes >> 20);
        let _ = writeln!(o, "\n{} ({} runs each way)", m.what, m.home.len());
        for (name, value) in [
            ("never moved, wall time", show(home, 0, "ms")),
            ("moved to node2, wall time", show(moved, 0, "ms")),
            ("moved / never moved", shown_ratio.clone()),
            (floor_name.as_str(), shown_floor),
            ("moved / that floor", over_floor),
            ("output", output),
        ] {
            let _ = writeln!(o, "  {name:<34}{value}");
        }
        if came_home > 0 {
            let _ = writeln!(o, "  came home by itself in {came_home} moved runs");
        }
        targets.push((
            format!("{} moved ≤ {TARGET_RATIO}x never moved", m.name),
            shown_ratio,
            identical && ratio.is_some_and(|r| r <= TARGET_RATIO),
        ));
    }
    targets
}
