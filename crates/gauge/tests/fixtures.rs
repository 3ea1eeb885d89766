//! The gauge on made-up `/proc` and `/sys/fs/cgroup` trees: cgroup v1, v2 and hybrid
//! layouts, quotas and limits set or not, nested limits, and load from synthetic counters.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use rmosix_gauge::{CgroupPath, Gauge, GaugeError, Reading, Root, STANDARD_SPEED};

const MIB: u64 = 1 << 20;
const TICK: Duration = Duration::from_millis(100);

/// A fixture tree in a tempdir.
struct Tree(tempfile::TempDir);

impl Tree {
    /// A machine with 4 online CPUs, 8 GiB of which 6 GiB available, and the process's
    /// affinity `affinity`, with the given mountinfo and `/proc/self/cgroup`.
    fn new(mountinfo: &str, cgroup: &str, affinity: &str) -> Tree {
        let t = Tree(tempfile::tempdir().unwrap());
        t.put("proc/self/mountinfo", mountinfo);
        t.put("proc/self/cgroup", cgroup);
        t.put(
            "proc/self/status",
            &format!("Name:\tmosixd\nCpus_allowed_list:\t{affinity}\n"),
        );
        t.put("proc/self/schedstat", "0 0 0\n");
        t.put(
            "proc/meminfo",
            "MemTotal:        8388608 kB\nMemFree:  1 kB\nMemAvailable:    6291456 kB\n",
        );
        t.put("sys/devices/system/cpu/online", "0-3\n");
        t
    }

    fn put(&self, path: &str, text: &str) {
        let path = self.0.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn root(&self) -> Root {
        Root::at(self.0.path())
    }

    fn gauge(&self) -> Gauge {
        Gauge::with_speed(self.root(), STANDARD_SPEED).unwrap()
    }

    /// The gauge of the node whose cgroup is `cgroup`, wherever the process sits.
    fn gauge_of(&self, cgroup: &str) -> Result<Gauge, GaugeError> {
        let cgroup: CgroupPath = cgroup.parse().unwrap();
        Gauge::with_speed(self.root().with_cgroup(cgroup), STANDARD_SPEED)
    }
}

const V1_MOUNTS: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
const V2_MOUNTS: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";

/// A v1 node `/node1` in `cpu,cpuacct` and in `memory`.
fn v1_node(quota: &str, limit: &str, affinity: &str) -> Tree {
    let t = Tree::new(
        V1_MOUNTS,
        "4:memory:/node1\n2:cpu,cpuacct:/node1\n0::/\n",
        affinity,
    );
    let cpu = "sys/fs/cgroup/cpu,cpuacct";
    t.put(&format!("{cpu}/cpu.cfs_quota_us"), "-1\n");
    t.put(&format!("{cpu}/cpu.cfs_period_us"), "100000\n");
    t.put(&format!("{cpu}/node1/cpu.cfs_quota_us"), quota);
    t.put(&format!("{cpu}/node1/cpu.cfs_period_us"), "100000\n");
    t.put(&format!("{cpu}/node1/tasks"), "");
    t.put(&format!("{cpu}/node1/cpuacct.usage"), "0\n");
    t.put(
        "sys/fs/cgroup/memory/memory.limit_in_bytes",
        "9223372036854771712\n",
    );
    t.put("sys/fs/cgroup/memory/memory.usage_in_bytes", "5000000000\n");
    t.put("sys/fs/cgroup/memory/node1/memory.limit_in_bytes", limit);
    t.put(
        "sys/fs/cgroup/memory/node1/memory.usage_in_bytes",
        &format!("{}\n", 300 * MIB),
    );
    t.put(
        "sys/fs/cgroup/memory/node1/memory.stat",
        &format!(
            "cache 1\ninactive_file 7\ntotal_inactive_file {}\n",
            100 * MIB
        ),
    );
    t
}

#[test]
fn v1_quota_and_memory_limit_bound_the_node() {
    let t = v1_node("150000\n", &format!("{}\n", 1024 * MIB), "0-3");
    let r = t.gauge().reading();
    assert_eq!(r.cpus, 1.5);
    assert_eq!(r.mem_total, 1024 * MIB);
    // 1 GiB limit, 300 MiB used of which 100 MiB droppable page cache.
    assert_eq!(r.mem_free, 824 * MIB);
    assert_eq!((r.load, r.utilisation_pct, r.speed), (0, 0, STANDARD_SPEED));
}

#[test]
fn v1_without_quota_or_limit_is_bounded_by_affinity_and_the_machine() {
    let t = v1_node("-1\n", "9223372036854771712\n", "0-1");
    let r = t.gauge().reading();
    assert_eq!(r.cpus, 2.0);
    assert_eq!(r.mem_total, 8 << 30);
    assert_eq!(r.mem_free, 6 << 30);
}

/// A v2 node `/lab/n1` whose parent `/lab` has the stricter CPU quota and memory limit.
fn v2_nested() -> Tree {
    let t = Tree::new(V2_MOUNTS, "0::/lab/n1\n", "0-3");
    let cg = "sys/fs/cgroup";
    t.put(
        &format!("{cg}/cgroup.controllers"),
        "cpuset cpu io memory pids\n",
    );
    t.put(&format!("{cg}/lab/cpu.max"), "50000 100000\n");
    t.put(&format!("{cg}/lab/memory.max"), &format!("{}\n", 512 * MIB));
    t.put(
        &format!("{cg}/lab/memory.current"),
        &format!("{}\n", 400 * MIB),
    );
    t.put(&format!("{cg}/lab/n1/cpu.max"), "max 100000\n");
    t.put(
        &format!("{cg}/lab/n1/memory.max"),
        &format!("{}\n", 1024 * MIB),
    );
    t.put(
        &format!("{cg}/lab/n1/memory.current"),
        &format!("{}\n", 100 * MIB),
    );
    t.put(&format!("{cg}/lab/n1/cgroup.threads"), "");
    t.put(
        &format!("{cg}/lab/n1/cpu.stat"),
        "usage_usec 0\nuser_usec 0\n",
    );
    t
}

#[test]
fn v2_nested_parent_with_the_stricter_limits_wins() {
    let r = v2_nested().gauge().reading();
    assert_eq!(r.cpus, 0.5);
    assert_eq!(r.mem_total, 512 * MIB);
    // The parent's siblings use 400 of its 512 MiB: 112 MiB left for this node.
    assert_eq!(r.mem_free, 112 * MIB);
}

#[test]
fn v2_without_limits() {
    let t = v2_nested();
    t.put("sys/fs/cgroup/lab/cpu.max", "max 100000\n");
    t.put("sys/fs/cgroup/lab/memory.max", "max\n");
    t.put("sys/fs/cgroup/lab/n1/memory.max", "max\n");
    let r = t.gauge().reading();
    assert_eq!((r.cpus, r.mem_total, r.mem_free), (4.0, 8 << 30, 6 << 30));
}

/// Per-task counters: (tid, on-CPU ns, waiting ns).
fn set_tasks(t: &Tree, tasks: &[(u32, u64, u64)]) {
    for &(tid, on, wait) in tasks {
        t.put(
            &format!("proc/{tid}/schedstat"),
            &format!("{on} {wait} 7\n"),
        );
    }
}

#[test]
fn load_counts_the_cgroup_run_queue_in_mosix_units() {
    let t = v2_nested();
    let cg = "sys/fs/cgroup/lab/n1";
    t.put("sys/fs/cgroup/lab/cpu.max", "max 100000\n");
    t.put(&format!("{cg}/cgroup.threads"), "101\n");
    // A job in a sub-cgroup counts too.
    t.put(&format!("{cg}/job/cgroup.threads"), "102\n");
    t.put("sys/devices/system/cpu/online", "0-1\n");
    let mut g = t.gauge();
    assert_eq!(g.sample_every(), Duration::from_secs(1));
    let t0 = Instant::now();
    let ms = 1_000_000u64;
    // Task 101 runs all the time, task 102 runs half and waits half: 2 runnable on 2 CPUs,
    // 1.5 busy.
    let step = |g: &mut Gauge, k: u64| {
        set_tasks(
            &t,
            &[(101, 100 * ms * k, 0), (102, 50 * ms * k, 50 * ms * k)],
        );
        t.put(
            &format!("{cg}/cpu.stat"),
            &format!("usage_usec {}\n", 150_000 * k),
        );
        g.sample(t0 + TICK * k as u32).unwrap();
    };
    for k in 0..=10 {
        step(&mut g, k);
    }
    let r: Reading = g.reading();
    assert_eq!(r.cpus, 2.0);
    assert!((r.runnable - 2.0).abs() < 1e-9, "{r:?}");
    assert_eq!((r.load, r.utilisation_pct), (100, 75), "{r:?}");

    // Twice as fast a CPU halves the load.
    g.set_speed(2 * STANDARD_SPEED);
    assert_eq!(g.reading().load, 50);
    g.set_speed(STANDARD_SPEED);

    // Both tasks end: the last period shows none at once, the exported load falls by 7/8 a
    // second.
    t.put(&format!("{cg}/cgroup.threads"), "");
    t.put(&format!("{cg}/job/cgroup.threads"), "");
    for k in 11..=20 {
        g.sample(t0 + TICK * k).unwrap();
    }
    let r = g.reading();
    assert_eq!((r.runnable, r.utilisation_pct), (0.0, 0), "{r:?}");
    assert!((87..=88).contains(&r.load), "7/8 of 100: {r:?}");
}

#[test]
fn a_task_first_seen_counts_for_at_most_the_interval() {
    let t = v2_nested();
    let cg = "sys/fs/cgroup/lab/n1";
    let mut g = t.gauge();
    let t0 = Instant::now();
    g.sample(t0).unwrap();
    // A long-lived process moves in with 100 s of history; cgroup usage is not kept.
    fs::remove_file(t.0.path().join(format!("{cg}/cpu.stat"))).unwrap();
    t.put(&format!("{cg}/cgroup.threads"), "300\n");
    set_tasks(&t, &[(300, 100_000_000_000, 0)]);
    g.sample(t0 + Duration::from_secs(1)).unwrap();
    let r = g.reading();
    assert!((r.runnable - 1.0).abs() < 1e-9, "{r:?}");
    assert_eq!(r.utilisation_pct, 100, "{r:?}");
    // The TID comes back as a new task that waited 0.5 s of the next second and never ran.
    set_tasks(&t, &[(300, 0, 500_000_000)]);
    g.sample(t0 + Duration::from_secs(2)).unwrap();
    let r = g.reading();
    assert!((r.runnable - 0.5).abs() < 1e-9, "{r:?}");
    assert_eq!(r.utilisation_pct, 0, "{r:?}");
}

#[test]
fn the_root_cgroup_makes_the_machine_the_node() {
    let t = Tree::new(V1_MOUNTS, "2:cpu,cpuacct:/\n0::/\n", "0-3");
    let mut g = t.gauge();
    let t0 = Instant::now();
    // 4 CPUs, 3 of them busy (30 ticks of 10 ms per 100 ms), 4 running besides the reader.
    for k in 0..=10u64 {
        let busy = 30 * k;
        t.put(
            "proc/stat",
            &format!(
                "cpu  {busy} 0 0 {} 0 0 0 5 0 0\ncpu0 0\nprocs_running 5\n",
                10 * k
            ),
        );
        g.sample(t0 + TICK * k as u32).unwrap();
    }
    let r = g.reading();
    assert!((r.runnable - 4.0).abs() < 1e-9, "{r:?}");
    assert_eq!(g.sample_every(), Duration::from_millis(100));
    assert_eq!((r.cpus, r.load, r.utilisation_pct), (4.0, 100, 75), "{r:?}");
}

#[test]
fn a_named_cgroup_is_the_node_wherever_the_process_sits() {
    let t = v2_nested();
    // The daemon in a service of its own, without limits, as systemd starts it.
    t.put("proc/self/cgroup", "0::/system.slice/mosixd.service\n");
    t.put(
        "sys/fs/cgroup/system.slice/mosixd.service/cgroup.threads",
        "",
    );
    let own = t.gauge().reading();
    assert_eq!((own.cpus, own.mem_total), (4.0, 8 << 30), "{own:?}");
    let lab = t.gauge_of("/lab/n1").unwrap().reading();
    assert_eq!((lab.cpus, lab.mem_total), (0.5, 512 * MIB), "{lab:?}");
}

#[test]
fn the_root_cgroup_named_is_the_machine_on_v2_and_v1() {
    // v2: the root has neither cpu.max nor memory.max.
    let t = v2_nested();
    assert!(!t.0.path().join("sys/fs/cgroup/cpu.max").exists());
    let g = t.gauge_of("/").unwrap();
    assert_eq!(g.sample_every(), Duration::from_millis(100));
    let r = g.reading();
    assert_eq!(
        (r.cpus, r.mem_total, r.mem_free),
        (4.0, 8 << 30, 6 << 30),
        "{r:?}"
    );
    // v1: the root's quota is -1 and its limit about 2^63.
    let t = v1_node("150000\n", &format!("{}\n", 1024 * MIB), "0-2");
    let g = t.gauge_of("/").unwrap();
    assert_eq!(g.sample_every(), Duration::from_millis(100));
    let r = g.reading();
    assert_eq!(
        (r.cpus, r.mem_total, r.mem_free),
        (3.0, 8 << 30, 6 << 30),
        "{r:?}"
    );
}

#[test]
fn a_named_cgroup_must_exist() {
    let t = v2_nested();
    let err = t.gauge_of("/lab/n2").unwrap_err();
    assert!(matches!(err, GaugeError::NoSuchCgroup { .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.starts_with("cgroup /lab/n2 does not exist: no directory ")
            && text.ends_with("sys/fs/cgroup/lab/n2"),
        "{text}"
    );
    // No hierarchy carries the cpu controller: only the root, the machine, can be measured.
    let t = Tree::new("", "", "0-3");
    let err = t.gauge_of("/lab").unwrap_err();
    assert!(
        matches!(err, GaugeError::CgroupNotMounted { .. }),
        "{err:?}"
    );
    assert_eq!(t.gauge_of("/").unwrap().reading().cpus, 4.0);
}

#[test]
fn cgroup_paths_are_absolute_and_plain() {
    let path = |text: &str| text.parse::<CgroupPath>().map(|p| p.to_string());
    assert_eq!(path("/").unwrap(), "/");
    assert_eq!(
        path("//system.slice//x.service/").unwrap(),
        "/system.slice/x.service"
    );
    assert_eq!("/".parse::<CgroupPath>().unwrap(), CgroupPath::root());
    for bad in ["", "system.slice", "/a/../b", "/./a"] {
        let err = path(bad).unwrap_err();
        assert!(
            matches!(&err, GaugeError::CgroupPath { path, .. } if path == bad),
            "{bad:?}: {err:?}"
        );
    }
}

#[test]
fn bad_files_name_themselves() {
    let t = v2_nested();
    t.put("sys/fs/cgroup/lab/cpu.max", "lots 100000\n");
    let err = Gauge::with_speed(t.root(), STANDARD_SPEED).unwrap_err();
    assert!(matches!(err, GaugeError::Parse { .. }), "{err:?}");
    assert!(
        err.to_string()
            .ends_with("lab/cpu.max: quota is not a number"),
        "{err}"
    );

    let t = v2_nested();
    fs::remove_file(t.0.path().join("proc/self/cgroup")).unwrap();
    let err = Gauge::with_speed(t.root(), STANDARD_SPEED).unwrap_err();
    assert!(
        matches!(&err, GaugeError::Read { path, .. } if path.ends_with("proc/self/cgroup")),
        "{err:?}"
    );

    let t = v2_nested();
    t.put("sys/fs/cgroup/lab/n1/cgroup.threads", "12\nnot-a-tid\n");
    let mut g = Gauge::with_speed(t.root(), STANDARD_SPEED).unwrap();
    let err = g.sample(Instant::now()).unwrap_err();
    assert!(
        err.to_string()
            .contains("cgroup.threads: a line is not a TID"),
        "{err}"
    );
}

#[test]
fn a_node_cgroup_needs_schedstat() {
    let t = v2_nested();
    fs::remove_file(t.0.path().join("proc/self/schedstat")).unwrap();
    let err = Gauge::with_speed(t.root(), STANDARD_SPEED).unwrap_err();
    assert!(err.to_string().contains("CONFIG_SCHED_INFO"), "{err}");
    assert!(Path::new(&t.0.path().join("proc/self/cgroup")).exists());
}
