//! The gauge on this machine: the test's own node, the whole machine (the root cgroup), a
//! child placed in a fresh cgroup (root only) whose two busy threads must raise the load, and
//! the machine seen from a process in a cgroup apart from the busy one, as a daemon under
//! systemd sees it (root only). Figures are printed, not asserted on time; the sample cost is
//! printed too.

use std::fs;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{self, Child, Command, Stdio};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity};
use nix::sys::sysinfo::sysinfo;
use nix::unistd::Pid;

use rmosix_gauge::{CgroupPath, Gauge, Reading, Root, STANDARD_SPEED, mosix_units};

const MIB: u64 = 1 << 20;
/// Set in the child: run as the spinner.
const SPINNER_ENV: &str = "RMOSIX_GAUGE_SPINNER";
/// Idle threads the spinner starts, so that a sample has a few hundred tasks to read.
const IDLE_THREADS: usize = 200;
/// What the spinner prints once its idle threads run.
const READY: &str = "spinner ready";
const TICK: Duration = Duration::from_millis(100);
/// Held by each test that spins: two of them at once would starve each other's threads.
static SPINNING: Mutex<()> = Mutex::new(());

#[test]
fn this_node_has_cpus_memory_and_cheap_samples() {
    let mut g = Gauge::new(Root::host()).unwrap();
    let r = g.reading();
    let online = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    println!("own node: {r:?}");
    assert!(r.cpus > 0.0 && r.cpus <= online.max(r.cpus.ceil()), "{r:?}");
    assert!(r.mem_total > 0 && r.mem_free <= r.mem_total, "{r:?}");
    assert!(r.speed > 0);
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        g.sample(Instant::now()).unwrap();
    }
    println!("own node: {:?} per sample", start.elapsed() / n);
}

#[test]
fn the_root_cgroup_is_the_machine_and_cheap_to_sample() {
    let mut g = Gauge::new(Root::host().with_cgroup(CgroupPath::root())).unwrap();
    let r = g.reading();
    println!("machine: {r:?}");
    assert_eq!(r.cpus, f64::from(affinity_cpus()), "{r:?}");
    assert_eq!(r.mem_total, sysinfo().unwrap().ram_total(), "{r:?}");
    assert!(r.mem_free > 0 && r.mem_free <= r.mem_total, "{r:?}");
    assert_eq!(g.sample_every(), Duration::from_millis(100));
    let n = 200;
    let start = Instant::now();
    for _ in 0..n {
        g.sample(Instant::now()).unwrap();
    }
    println!("machine: {:?} per sample", start.elapsed() / n);
}

/// CPUs in this process's affinity mask, from the kernel's call rather than the gauge's file.
fn affinity_cpus() -> u32 {
    let set = sched_getaffinity(Pid::from_raw(0)).unwrap();
    (0..CpuSet::count())
        .filter(|&cpu| set.is_set(cpu).unwrap())
        .count() as u32
}

/// The child: waits for a line on stdin, then spins two threads for at most 30 s.
#[test]
fn spinner() {
    if std::env::var_os(SPINNER_ENV).is_none() {
        return;
    }
    // Never outlive the test that started us by long, whatever happens to it.
    thread::spawn(|| {
        thread::sleep(Duration::from_secs(60));
        process::exit(1);
    });
    for _ in 0..IDLE_THREADS {
        thread::spawn(thread::park);
    }
    // On its own line: libtest has written `test spinner ... ` without one.
    println!("\n{READY}");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let spin = move || {
        let mut x = 1u64;
        while Instant::now() < deadline {
            for _ in 0..100_000 {
                x = black_box(x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1));
            }
        }
    };
    let threads: Vec<_> = (0..2).map(|_| thread::spawn(spin)).collect();
    threads.into_iter().for_each(|t| t.join().unwrap());
}

#[test]
fn a_busy_child_cgroup_raises_the_load() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root to create cgroups");
        return;
    }
    let _spinning = SPINNING.lock().unwrap_or_else(|e| e.into_inner());
    let Some(cg) = TestCgroup::create(&format!("rmosix-gauge-test-{}", process::id()), true) else {
        skip("no cgroup hierarchy with the cpu and memory controllers");
        return;
    };
    let mut child = Spinner::start();
    cg.add(child.0.id());

    let root = Root::host().for_pid(child.0.id());
    let mut g = Gauge::with_speed(root.clone(), STANDARD_SPEED).unwrap();
    let r = g.reading();
    let online = thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    assert_eq!(r.cpus, online.min(1.5), "quota 1.5 CPUs: {r:?}");
    assert_eq!(r.mem_total, 256 * MIB, "{r:?}");
    assert!(r.mem_free > 0 && r.mem_free <= r.mem_total, "{r:?}");
    let tasks = cg.tasks();

    let mut slow = Gauge::with_speed(root, STANDARD_SPEED).unwrap();
    assert_eq!(slow.sample_every(), Duration::from_secs(1));
    let mut ticks = 0;
    let (idle, _) = run(&mut g, &mut slow, &mut ticks, 12, "idle");
    child.go();
    // 28 ticks: the periods ending at ticks 20 and 30 are wholly busy for both gauges.
    let (busy, busy_slow) = run(&mut g, &mut slow, &mut ticks, 28, "busy");
    child.stop();
    let (after, _) = run(&mut g, &mut slow, &mut ticks, 22, "after");
    println!("{tasks} tasks in the cgroup; speed normalised to {STANDARD_SPEED}");
    println!("idle:  {idle:?}\nbusy:  {busy:?}\nbusy, sampled once a second: {busy_slow:?}");
    println!("after: {after:?}");

    assert!(idle.load <= 10, "an idle child: {idle:?}");
    // Two spinning threads on 1.5 CPUs: 2 runnable, 133 units (whatever else the machine runs).
    assert!(busy.runnable >= 1.6, "{busy:?}");
    let expected = (200.0 / r.cpus) as u32;
    for b in [busy, busy_slow] {
        assert!(
            b.load >= expected * 8 / 10 && b.load <= expected * 12 / 10,
            "expected ~{expected}: {b:?}"
        );
    }
    assert!(busy.utilisation_pct >= 20, "{busy:?}");
    // Gone: the last period shows it at once, the exported load decays by 7/8 a second.
    assert!(after.runnable <= 0.05, "{after:?}");
    assert!(
        after.load < busy.load && after.load >= busy.load / 2,
        "{after:?}"
    );
}

/// The daemon under systemd: it sits in its service's cgroup (quota and limit), the node's
/// jobs in another (a user's slice). Measured as its own cgroup, the node looks idle and as
/// small as the service; measured as the root cgroup, it is the machine, jobs and all.
#[test]
fn the_root_cgroup_counts_work_outside_the_measuring_process_cgroup() {
    if !nix::unistd::geteuid().is_root() {
        skip("needs root to create cgroups");
        return;
    }
    let _spinning = SPINNING.lock().unwrap_or_else(|e| e.into_inner());
    let name = format!("rmosix-gauge-test-{}", process::id());
    let (Some(service), Some(jobs)) = (
        TestCgroup::create(&format!("{name}-service"), true),
        TestCgroup::create(&format!("{name}-jobs"), false),
    ) else {
        skip("no cgroup hierarchy with the cpu and memory controllers");
        return;
    };
    // Never told to go: an idle process in the service's cgroup, standing for the daemon.
    let daemon = Spinner::start();
    service.add(daemon.0.id());
    let mut job = Spinner::start();
    jobs.add(job.0.id());

    let daemon_root = Root::host().for_pid(daemon.0.id());
    let mut own = Gauge::with_speed(daemon_root.clone(), STANDARD_SPEED).unwrap();
    let mut machine =
        Gauge::with_speed(daemon_root.with_cgroup(CgroupPath::root()), STANDARD_SPEED).unwrap();
    let (own_r, machine_r) = (own.reading(), machine.reading());
    assert_eq!(own_r.mem_total, 256 * MIB, "the service's limit: {own_r:?}");
    assert_eq!(machine_r.cpus, f64::from(affinity_cpus()), "{machine_r:?}");
    assert_eq!(
        machine_r.mem_total,
        sysinfo().unwrap().ram_total(),
        "{machine_r:?}"
    );

    let mut ticks = 0;
    let (idle, _) = run(&mut machine, &mut own, &mut ticks, 12, "idle machine");
    job.go();
    // 28 ticks: the periods ending at ticks 20 and 30 are wholly busy.
    let (busy, busy_own) = run(&mut machine, &mut own, &mut ticks, 28, "busy machine");
    job.stop();
    println!("idle machine: {idle:?}\nbusy machine: {busy:?}\nbusy, own cgroup: {busy_own:?}");
    // Two threads spinning without a quota are always runnable; whatever else runs on the
    // machine adds to them.
    assert!(busy.runnable >= 1.8, "{busy:?}");
    assert!(
        busy.load >= mosix_units(1.8, busy.cpus, busy.speed),
        "{busy:?}"
    );
    // The service's cgroup holds only idle threads: measured alone, the node looks idle.
    assert!(busy_own.runnable <= 0.2, "{busy_own:?}");
}

/// Says why the test does not run; under `RMOSIX_REQUIRE_ROOT=1` (CI) a skip is a failure.
fn skip(why: &str) {
    if std::env::var_os("RMOSIX_REQUIRE_ROOT").is_some_and(|v| v == "1") {
        panic!("skipped: {why} (RMOSIX_REQUIRE_ROOT=1 forbids skipping)");
    }
    println!("skipped: {why}");
}

/// Samples `fast` `n` times, 100 ms apart, and `slow` every tenth time (once a second, as
/// [`Gauge::sample_every`] advises for a cgroup); prints the cost of a sample of `fast`.
fn run(
    fast: &mut Gauge,
    slow: &mut Gauge,
    ticks: &mut u32,
    n: u32,
    phase: &str,
) -> (Reading, Reading) {
    let mut cost = Duration::ZERO;
    for _ in 0..n {
        let now = Instant::now();
        fast.sample(now).unwrap();
        cost += now.elapsed();
        if ticks.is_multiple_of(10) {
            slow.sample(now).unwrap();
        }
        *ticks += 1;
        thread::sleep(TICK.saturating_sub(now.elapsed()));
    }
    println!("{phase}: {:?} per sample", cost / n);
    (fast.reading(), slow.reading())
}

/// This test binary run as [`spinner`], killed on drop.
struct Spinner(Child);

impl Spinner {
    fn start() -> Spinner {
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["spinner", "--exact", "--nocapture", "--test-threads=1"])
            .env(SPINNER_ENV, "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // Owned at once, so that a panic below still kills and reaps it.
        let mut spinner = Spinner(child);
        let out = BufReader::new(spinner.0.stdout.take().unwrap());
        for line in out.lines() {
            if line.unwrap() == READY {
                return spinner;
            }
        }
        panic!("the spinner ended before it was ready");
    }

    fn go(&mut self) {
        self.0.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    }

    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Spinner {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A fresh cgroup, with a 1.5-CPU quota and a 256 MiB limit if `limited`, v1 (`cpu`,
/// `cpuacct`, `memory` hierarchies) or v2; removed on drop.
struct TestCgroup {
    /// Directories the process is added to; the first one's task list is the node's.
    dirs: Vec<PathBuf>,
}

impl TestCgroup {
    fn create(name: &str, limited: bool) -> Option<TestCgroup> {
        let mountinfo = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let mounts: Vec<(String, String, String)> = mountinfo
            .lines()
            .filter_map(|l| {
                let (left, right) = l.split_once(" - ")?;
                let point = left.split(' ').nth(4)?.to_owned();
                let mut r = right.split(' ');
                Some((r.next()?.to_owned(), point, r.nth(1)?.to_owned()))
            })
            .collect();
        let v1 = |controller: &str| {
            mounts
                .iter()
                .find(|(fs, _, opts)| fs == "cgroup" && opts.split(',').any(|o| o == controller))
                .map(|(_, point, _)| PathBuf::from(point))
        };
        if let (Some(cpu), Some(acct), Some(mem)) = (v1("cpu"), v1("cpuacct"), v1("memory")) {
            let mut dirs = vec![cpu.join(name)];
            if acct != cpu {
                dirs.push(acct.join(name));
            }
            dirs.push(mem.join(name));
            let cg = TestCgroup { dirs };
            for d in &cg.dirs {
                fs::create_dir(d).unwrap();
            }
            if !limited {
                return Some(cg);
            }
            write(&cpu.join(name).join("cpu.cfs_period_us"), "100000");
            write(&cpu.join(name).join("cpu.cfs_quota_us"), "150000");
            write(
                &mem.join(name).join("memory.limit_in_bytes"),
                &(256 * MIB).to_string(),
            );
            return Some(cg);
        }
        let top = mounts
            .iter()
            .find(|(fs, _, _)| fs == "cgroup2")
            .map(|(_, p, _)| PathBuf::from(p))?;
        let controllers = fs::read_to_string(top.join("cgroup.controllers")).ok()?;
        if !["cpu", "memory"]
            .iter()
            .all(|c| controllers.split_whitespace().any(|x| x == *c))
        {
            return None;
        }
        fs::write(top.join("cgroup.subtree_control"), "+cpu +memory").ok()?;
        let cg = TestCgroup {
            dirs: vec![top.join(name)],
        };
        fs::create_dir(&cg.dirs[0]).unwrap();
        if !limited {
            return Some(cg);
        }
        write(&cg.dirs[0].join("cpu.max"), "150000 100000");
        write(&cg.dirs[0].join("memory.max"), &(256 * MIB).to_string());
        Some(cg)
    }

    fn add(&self, pid: u32) {
        for d in &self.dirs {
            write(&d.join("cgroup.procs"), &pid.to_string());
        }
    }

    fn tasks(&self) -> usize {
        ["tasks", "cgroup.threads"]
            .iter()
            .find_map(|f| fs::read_to_string(self.dirs[0].join(f)).ok())
            .map_or(0, |t| t.lines().count())
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // The kernel may still count an exiting task for a moment.
            let deadline = Instant::now() + Duration::from_secs(5);
            while fs::remove_dir(d).is_err() && d.exists() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

fn write(path: &Path, value: &str) {
    fs::write(path, value).unwrap_or_else(|e| panic!("write {value} to {}: {e}", path.display()));
}
