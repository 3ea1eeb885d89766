//! `rmosix-lab bench make`: a parallel build of real C sources spread over a 4-node lab, at
//! half a CPU per node, against the same build on node 1 alone and against distcc on the same
//! lab (issue 10's last figure).
//!
//! The sources are the zstd library (from the zstd-sys crate) and Lua 5.4 (from lua-src),
//! fetched by cargo into its registry (the first run needs the registry; later ones run
//! offline). Neither crate ships a Makefile, so the bench writes one per project: every `.c`
//! compiled on its own with `-O2` (zstd's x86 assembly off), a pattern rule of plain `make`.
//! Each build starts from no object files. Kinds of build, alternated within each run so the
//! host's load hits them alike:
//!   - `make -j8` at node 1 (the baseline: node 1 alone, its half CPU);
//!   - `mosrun make -j8` at node 1: the daemons place the compilers at their exec;
//!   - distcc with a `distccd` on every node, `-j8` with 2 slots a node and `-j4` with 1
//!     (`DISTCC_FALLBACK=0`: a compile distcc cannot send fails the build rather than running
//!     at node 1 unseen).
//!
//! Every build's objects must be byte-identical to the baseline's (SHA-256 of each).
//!
//! For `mosrun make -j8` it also reports the CPU time mosrun itself used (placing the
//! compilers, serving the calls of those away), read from `/proc` from outside the node's
//! quota: a figure of the engine's own cost that the builds' wall times, which spread by a
//! quarter on this machine, cannot show.

use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::bench::{BenchError, Stats, load_average, progress, show};
use crate::cmd::{describe, run};
use crate::{Lab, LabConfig, LabError, Node, proc, processes_in};

/// Nodes in the lab, and each one's CPU.
const NODES: usize = 4;
const NODE_CPU: f64 = 0.5;
/// The crates whose C sources are built, as cargo names them.
const CRATES: &str = "zstd-sys = \"=2.1.3\"\nlua-src = \"=548.1.2\"\n";

/// One C project: where its sources are (copied into the lab), which files to compile and
/// how.
struct Project {
    name: &'static str,
    /// The directory holding the sources, in cargo's registry.
    root: PathBuf,
    /// The `.c` files, relative to `root`.
    sources: Vec<PathBuf>,
    cflags: &'static str,
}

/// A way to build.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Local,
    Mosrun,
    Distcc8,
    Distcc4,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Local, Kind::Mosrun, Kind::Distcc8, Kind::Distcc4];

    fn name(self) -> &'static str {
        match self {
            Kind::Local => "make -j8 at node 1 alone",
            Kind::Mosrun => "mosrun make -j8",
            Kind::Distcc8 => "distcc make -j8 (2 slots a node)",
            Kind::Distcc4 => "distcc make -j4 (1 slot a node)",
        }
    }
}

/// One project's builds: seconds of each kind, and whether each kind's objects were the
/// baseline's every time.
struct Measured {
    name: &'static str,
    files: usize,
    seconds: Vec<Vec<f64>>,
    identical: Vec<bool>,
    /// mosrun's own CPU time in each `mosrun make -j8`, seconds.
    mosrun_cpu: Vec<f64>,
}

/// Fetches the sources, builds each project `reps` times of each kind in a fresh 4-node lab,
/// and returns the report.
pub(crate) fn measure(
    bin_dir: &Path,
    quick: bool,
    stop: &AtomicBool,
) -> Result<String, BenchError> {
    let reps = if quick { 1 } else { 3 };
    for tool in ["distcc", "distccd", "make", "gcc"] {
        if !found(tool) {
            return Err(scenario(format!(
                "make: `{tool}` is not installed (Debian: apt-get install distcc make gcc)"
            )));
        }
    }
    let projects = projects(bin_dir)?;
    let load_before = load_average();
    let mut cfg = LabConfig::new(NODES, bin_dir);
    cfg.cpu_quota = Some(NODE_CPU);
    cfg.balance = true;
    let lab = Lab::start(cfg)?;
    progress(&format!("make: lab ready in {}", lab.dir().display()));
    let measured = measure_in(&lab, &projects, reps, stop);
    lab.stop()?;
    Ok(render(&measured?, reps, &load_before, &load_average()))
}

fn measure_in(
    lab: &Lab,
    projects: &[Project],
    reps: usize,
    stop: &AtomicBool,
) -> Result<Vec<Measured>, BenchError> {
    let state = lab.work_dir().join("distcc");
    fs::create_dir_all(&state).map_err(|source| LabError::Io {
        action: "create",
        path: state,
        source,
    })?;
    let mut daemons = DistccDaemons(Vec::new());
    for node in lab.nodes() {
        daemons.0.push(start_distccd(lab, node)?);
    }
    let mut all = Vec::new();
    for project in projects {
        let dir = lab.work_dir().join(project.name);
        copy_sources(project, &dir)?;
        let mut measured = Measured {
            name: project.name,
            files: project.sources.len(),
            seconds: vec![Vec::new(); Kind::ALL.len()],
            identical: vec![true; Kind::ALL.len()],
            mosrun_cpu: Vec::new(),
        };
        let mut baseline: Option<String> = None;
        for rep in 0..reps {
            for (k, &kind) in Kind::ALL.iter().enumerate() {
                if stop.load(Ordering::SeqCst) {
                    return Err(LabError::Interrupted.into());
                }
                progress(&format!(
                    "make: {} run {} of {reps}: {}",
                    project.name,
                    rep + 1,
                    kind.name()
                ));
                let (secs, mosrun_cpu) = build(lab, &dir, kind)?;
                let objects = digests(&dir)?;
                match mosrun_cpu {
                    Some(cpu) => {
                        progress(&format!("make: {secs:.1} s, mosrun's own CPU {cpu:.2} s"));
                        measured.mosrun_cpu.push(cpu);
                    }
                    None => progress(&format!("make: {secs:.1} s")),
                }
                match &baseline {
                    None if kind == Kind::Local => baseline = Some(objects),
                    Some(base) => measured.identical[k] &= *base == objects,
                    None => unreachable!("the baseline builds first"),
                }
                measured.seconds[k].push(secs);
            }
        }
        all.push(measured);
    }
    Ok(all)
}

/// The distcc daemons, killed when the bench is done with them (the lab's end would kill
/// them too).
struct DistccDaemons(Vec<Child>);

impl Drop for DistccDaemons {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `distccd` at `node`, listening on the node's address for the lab's subnet, as nobody.
fn start_distccd(lab: &Lab, node: &Node) -> Result<Child, BenchError> {
    // Its log goes to a file opened here: distccd, as nobody, could not open one of ours.
    let path = lab.work_dir().join(format!("distccd-{}.log", node.id()));
    let log = fs::File::create(&path).map_err(|source| LabError::Io {
        action: "create",
        path,
        source,
    })?;
    let mut cmd = node.command("distccd");
    cmd.args(["--no-detach", "--daemon", "--user", "nobody", "--jobs", "2"])
        .args(["--allow", "10.231.0.0/24", "--log-stderr", "--listen"])
        .arg(node.addr().to_string())
        .stdin(Stdio::null())
        .stderr(log);
    cmd.spawn().map_err(|source| {
        LabError::Io {
            action: "start distccd",
            path: PathBuf::from("distccd"),
            source,
        }
        .into()
    })
}

/// One clean build of `dir` at node 1: its wall time in seconds, and for mosrun its own CPU
/// time.
fn build(lab: &Lab, dir: &Path, kind: Kind) -> Result<(f64, Option<f64>), BenchError> {
    let node = lab.node(1);
    run(node.command("make").arg("-C").arg(dir).arg("clean"))?;
    let hosts = |slots: u8| {
        lab.nodes()
            .iter()
            .map(|n| format!("{}/{slots}", n.addr()))
            .collect::<Vec<_>>()
            .join(" ")
    };
    let mut cmd = match kind {
        Kind::Local => node.command("make"),
        Kind::Mosrun => {
            let mut c = node.command("mosrun");
            c.arg("make");
            c
        }
        Kind::Distcc8 | Kind::Distcc4 => {
            let mut c = node.command("make");
            let slots = if kind == Kind::Distcc8 { 2 } else { 1 };
            c.arg("CC=distcc gcc")
                .env("DISTCC_HOSTS", hosts(slots))
                .env("DISTCC_FALLBACK", "0")
                .env("DISTCC_DIR", lab.work_dir().join("distcc"));
            c
        }
    };
    let jobs = if kind == Kind::Distcc4 { "-j4" } else { "-j8" };
    cmd.arg(jobs).arg("-C").arg(dir);
    if kind == Kind::Mosrun {
        let errors = lab.work_dir().join("mosrun-make.err");
        let (secs, cpu) = run_mosrun(node, &mut cmd, &errors)?;
        return Ok((secs, Some(cpu)));
    }
    let started = Instant::now();
    run(&mut cmd)?;
    Ok((started.elapsed().as_secs_f64(), None))
}

/// How often mosrun's CPU time is read, and its end looked for.
const WATCH: Duration = Duration::from_millis(10);

/// Runs `cmd`, a `mosrun` at `node`, to its end, its stderr into `errors`: its wall time, and
/// the CPU time mosrun itself used until its last reading, at most [`WATCH`] before it ended.
fn run_mosrun(node: &Node, cmd: &mut Command, errors: &Path) -> Result<(f64, f64), BenchError> {
    let command = describe(cmd);
    let stderr = fs::File::create(errors).map_err(|source| LabError::Io {
        action: "create",
        path: errors.to_owned(),
        source,
    })?;
    let started = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
    let (mut mosrun, mut cpu) = (None, 0.0);
    let status = loop {
        let ended = child.try_wait().map_err(|source| LabError::Spawn {
            command: command.clone(),
            source,
        })?;
        if let Some(status) = ended {
            break status;
        }
        if mosrun.is_none() {
            mosrun = processes_in(node)
                .into_iter()
                .find(|p| p.name == "mosrun")
                .map(|p| p.host_pid);
        }
        if let Some(used) = mosrun.and_then(proc::cpu_seconds) {
            cpu = used;
        }
        std::thread::sleep(WATCH);
    };
    let secs = started.elapsed().as_secs_f64();
    if !status.success() {
        let stderr = fs::read_to_string(errors).unwrap_or_default();
        return Err(LabError::CommandFailed {
            command,
            status,
            stderr: stderr.trim().to_owned(),
        }
        .into());
    }
    Ok((secs, cpu))
}

/// `sha256sum` of every object file under `dir`, sorted by path: one text to compare.
fn digests(dir: &Path) -> Result<String, BenchError> {
    let mut objects = Vec::new();
    collect(dir, dir, "o", &mut objects)?;
    objects.sort();
    if objects.is_empty() {
        return Err(scenario(format!(
            "make: no objects to compare in {}",
            dir.display()
        )));
    }
    Ok(run(Command::new("sha256sum")
        .current_dir(dir)
        .args(&objects))?)
}

/// The files under `dir` whose extension is `ext`, relative to `base`.
fn collect(base: &Path, dir: &Path, ext: &str, into: &mut Vec<PathBuf>) -> Result<(), BenchError> {
    let entries = fs::read_dir(dir).map_err(|source| LabError::Io {
        action: "read",
        path: dir.to_owned(),
        source,
    })?;
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            collect(base, &path, ext, into)?;
        } else if path.extension().is_some_and(|e| e == ext)
            && let Ok(rel) = path.strip_prefix(base)
        {
            into.push(rel.to_owned());
        }
    }
    Ok(())
}

/// Copies the project's tree into `dir` and writes its Makefile there.
fn copy_sources(project: &Project, dir: &Path) -> Result<(), BenchError> {
    run(Command::new("cp").arg("-r").arg(&project.root).arg(dir))?;
    let objects: Vec<String> = project
        .sources
        .iter()
        .map(|s| s.with_extension("o").display().to_string())
        .collect();
    let makefile = format!(
        "# Written by rmosix-lab bench make: every source compiled on its own.\n\
         CC ?= gcc\n\
         CFLAGS = {}\n\
         OBJS = {}\n\
         all: $(OBJS)\n\
         %.o: %.c\n\
         \t$(CC) $(CFLAGS) -c $< -o $@\n\
         clean:\n\
         \trm -f $(OBJS)\n\
         .PHONY: all clean\n",
        project.cflags,
        objects.join(" ")
    );
    fs::write(dir.join("Makefile"), makefile).map_err(|source| {
        LabError::Io {
            action: "write",
            path: dir.join("Makefile"),
            source,
        }
        .into()
    })
}

/// The two projects, their crates fetched by cargo if need be.
fn projects(bin_dir: &Path) -> Result<Vec<Project>, BenchError> {
    let manifest_dir = bin_dir.join("bench-make-sources");
    fs::create_dir_all(manifest_dir.join("src")).map_err(|source| LabError::Io {
        action: "create",
        path: manifest_dir.clone(),
        source,
    })?;
    let manifest = manifest_dir.join("Cargo.toml");
    let text = format!(
        "[package]\nname = \"bench-make-sources\"\nversion = \"0.0.0\"\nedition = \"2024\"\n\
         [dependencies]\n{CRATES}[workspace]\n"
    );
    let write = |path: PathBuf, text: &str| {
        fs::write(&path, text).map_err(|source| LabError::Io {
            action: "write",
            path,
            source,
        })
    };
    write(manifest.clone(), &text)?;
    write(manifest_dir.join("src/lib.rs"), "")?;
    progress("make: fetching the zstd-sys and lua-src crates (cargo fetch)");
    run(Command::new("cargo")
        .arg("fetch")
        .arg("--manifest-path")
        .arg(&manifest))?;
    let mut metadata = Command::new("cargo");
    metadata
        .args([
            "metadata",
            "--format-version",
            "1",
            "--offline",
            "--manifest-path",
        ])
        .arg(&manifest);
    let text = run(&mut metadata)?;
    let crate_dir = |name: &str| -> Result<PathBuf, BenchError> {
        // Each package's "manifest_path" follows its "name"; the registry's directory is
        // NAME-VERSION.
        let marker = format!("/{name}-");
        text.split("\"manifest_path\":\"")
            .skip(1)
            .filter_map(|rest| rest.split('"').next())
            .find(|path| path.contains(&marker) && path.ends_with("/Cargo.toml"))
            .and_then(|path| Path::new(path).parent().map(Path::to_owned))
            .ok_or_else(|| scenario(format!("make: cargo metadata does not name {name}")))
    };
    let zstd = crate_dir("zstd-sys")?.join("zstd/lib");
    let lua = crate_dir("lua-src")?.join("lua-5.4.8");
    let mut zstd_sources = Vec::new();
    for part in ["common", "compress", "decompress", "dictBuilder"] {
        collect(&zstd, &zstd.join(part), "c", &mut zstd_sources)?;
    }
    zstd_sources.sort();
    let mut lua_sources = Vec::new();
    collect(&lua, &lua, "c", &mut lua_sources)?;
    // The interpreter and compiler programs, each with a main: the library is the rest.
    lua_sources.retain(|s| !matches!(s.to_str(), Some("lua.c" | "luac.c")));
    lua_sources.sort();
    Ok(vec![
        Project {
            name: "zstd",
            root: zstd,
            sources: zstd_sources,
            cflags: "-O2 -I. -Icommon -DZSTD_DISABLE_ASM",
        },
        Project {
            name: "lua",
            root: lua,
            sources: lua_sources,
            cflags: "-O2 -Wall -DLUA_USE_LINUX",
        },
    ])
}

fn found(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn scenario(what: String) -> BenchError {
    BenchError::Scenario { what }
}

fn render(measured: &[Measured], reps: usize, before: &str, after: &str) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        "\n== make: a parallel build over {NODES} nodes of {NODE_CPU} CPU each, {reps} run(s) of each kind =="
    );
    let _ = writeln!(o, "load average before: {before}; after: {after}");
    for m in measured {
        let _ = writeln!(o, "\n{} ({} C files):", m.name, m.files);
        let base = Stats::of(m.seconds[0].iter().copied());
        for (k, kind) in Kind::ALL.iter().enumerate() {
            let stats = Stats::of(m.seconds[k].iter().copied());
            let speedup = match (base, stats) {
                (Some(b), Some(s)) if s.median > 0.0 => format!("{:.2}x", b.median / s.median),
                _ => "n/a".to_owned(),
            };
            let same = if k == 0 {
                "the baseline's objects"
            } else if m.identical[k] {
                "objects identical"
            } else {
                "OBJECTS DIFFER"
            };
            let _ = writeln!(
                o,
                "  {:<34} {}  speed-up {speedup}  {same}",
                kind.name(),
                show(stats, 1, "s")
            );
        }
        let cpu = Stats::of(m.mosrun_cpu.iter().copied());
        let _ = writeln!(o, "  mosrun's own CPU a build: {}", show(cpu, 2, "s"));
    }
    let _ = writeln!(
        o,
        "targets: mosrun make -j8 >= 3.5x node 1 alone, and faster than distcc at its best"
    );
    o
}
