//! A process's address space beyond its bytes, across moves: file mappings stay file mappings
//! (the pages it never wrote follow the file, those it wrote stay its own), per-area advice,
//! droppable memory and guard regions come back, and mappings whose pages only the home
//! kernel can back (a packet socket's ring, io_uring's rings) keep the process home with the
//! reason.
//!
//! Each test runs a program of `tests/progs/mappings/` under `mosrun` on node 1 of a 3-node
//! lab, moves it out to node 2, on to node 3 and home, and asks it to check itself at each
//! stop, one line of stdin per question. Reads of /proc/self at a remote run at home (they
//! are forwarded), so there the program checks by behaviour: what its pages read, whether a
//! guard page faults. Back home it also reads its own maps and smaps.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use rmosix_lab::{Job, Lab, LabConfig, bin_dir_of_current_test, processes_in};

/// The programs of these tests.
const PROGS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/mappings");
/// Deadline of one step: an answer to appear, a job to end.
const STEP: Duration = Duration::from_secs(60);
const PAGE: usize = 4096;
/// How many areas `advice` maps, each a line of its answer to `flags`.
const AREAS: usize = 9;

fn start_lab() -> Lab {
    Lab::start(LabConfig::new(3, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 3-node lab: {e}"))
}

/// `progs/mappings/NAME.c`, compiled into the target's tmp dir, which every node sees.
fn c_program(name: &str) -> String {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("mappings")
        .join(name);
    rmosix_lab::compiled(format!("{PROGS}/{name}.c"), out, &["-Wextra", "-Werror"])
}

/// Starts `argv` under mosrun on the lab's node 1 and waits for its "ready".
fn start<'lab>(lab: &'lab Lab, argv: &[&str]) -> Job<'lab> {
    let job = Job::start(lab.node(1), argv, Stdio::piped())
        .unwrap_or_else(|e| panic!("cannot start {argv:?}: {e}"));
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job
}

/// Sends `question` and returns the answer: the `lines` lines the program prints for it.
fn ask(job: &Job, question: &str, lines: usize) -> String {
    let before = job.stdout().len();
    job.send(format!("{question}\n").as_bytes())
        .unwrap_or_else(|e| panic!("{e}"));
    let answered = |out: &[u8]| out[before..].iter().filter(|&&b| b == b'\n').count() >= lines;
    job.wait_stdout(&format!("the answer to {question:?}"), STEP, answered)
        .unwrap_or_else(|e| panic!("{e}"));
    String::from_utf8_lossy(&job.stdout()[before..]).into_owned()
}

/// Moves the job to `target` (a node or `home`) and checks that it runs on `node` there.
fn move_to(job: &Job, target: &str, node: u16) {
    job.migrate(target)
        .unwrap_or_else(|e| panic!("migrate to {target}: {e}"));
    assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), node);
}

/// The job is told to end and must end with status 0.
fn end(job: Job) {
    job.send(b"end\n").unwrap_or_else(|e| panic!("{e}"));
    let out = job.finish(STEP).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

/// The maps of the process named `name` at `node`, read from the host (the process's own
/// reads of /proc/self run at home).
fn remote_maps(lab: &Lab, node: u16, name: &str) -> String {
    let found = processes_in(lab.node(node.into()));
    let process = found.iter().find(|p| p.name == name);
    let process = process.unwrap_or_else(|| panic!("no {name} at node {node}: {found:#?}"));
    fs::read_to_string(format!("/proc/{}/maps", process.host_pid)).expect("read its maps")
}

/// Each line of `flags` ("NAME START: VMFLAGS") with the VmFlags of the area at START in the
/// process named "advice" at `node`, read from the host.
fn remote_flags(lab: &Lab, node: u16, flags: &str) -> String {
    let found = processes_in(lab.node(node.into()));
    let process = found.iter().find(|p| p.name == "advice");
    let process = process.unwrap_or_else(|| panic!("no advice at node {node}: {found:#?}"));
    let smaps =
        fs::read_to_string(format!("/proc/{}/smaps", process.host_pid)).expect("read its smaps");
    let mut shown = String::new();
    for line in flags.lines() {
        let (area, _) = line.split_once(':').expect("NAME START: VMFLAGS");
        let start = area.split_whitespace().nth(1).expect("a start");
        let start = u64::from_str_radix(start, 16).expect("a hex start");
        let holds = |line: &str| {
            let range = line
                .split_whitespace()
                .next()
                .and_then(|r| r.split_once('-'));
            let hex = |h| u64::from_str_radix(h, 16).ok();
            range
                .and_then(|(s, e)| Some((hex(s)?, hex(e)?)))
                .is_some_and(|(s, e)| s <= start && start < e)
        };
        let at = smaps.lines().skip_while(|l| !holds(l));
        let vm_flags = at.filter_map(|l| l.strip_prefix("VmFlags:")).next();
        shown += &format!("{area}:{}\n", vm_flags.unwrap_or(" (not mapped)"));
    }
    shown
}

/// Writes `letters`, one page of each, to `path`, in place: a truncation would also take
/// the pages the process wrote from a private mapping of the file.
fn write_pages(path: &Path, letters: &[u8]) {
    let bytes: Vec<u8> = letters.iter().flat_map(|&l| [l; PAGE]).collect();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .expect("open a mapped file");
    file.write_all_at(&bytes, 0).expect("write a mapped file");
}

/// A private writable mapping of a file (one page of it written) and a read-only one of an
/// unlinked file read the same out, on and home. Home, both are file mappings again of the
/// same file, offset and protection, and only the written page is the process's own: a
/// change to the file shows through the other pages, not through the written one. At the
/// remotes the unlinked file cannot be opened (home keeps it open for the process), so it
/// is a copy there.
#[test]
fn file_mappings_come_home_as_mappings_of_the_same_files() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let dir = lab.work_dir();
    let (data, unlinked) = (dir.join("data"), dir.join("unlinked"));
    write_pages(&data, b"abcd");
    write_pages(&unlinked, b"xy");
    let program = c_program("filemap");
    let (data_path, unlinked_path) = (data.to_str().unwrap(), unlinked.to_str().unwrap());
    let job = start(&lab, &[&program, data_path, unlinked_path]);
    let maps_before = ask(&job, "maps", 3);
    assert_eq!(
        maps_before,
        format!(
            "map: rw-p 00000000 {data_path}\nwritten: 4 kB\n\
             map: r--p 00000000 {unlinked_path} (deleted)\n"
        )
    );

    let same = "pages: aWcd unlinked: xy\n";
    assert_eq!(ask(&job, "check", 1), same);
    for (target, node) in [("2", 2), ("3", 3)] {
        move_to(&job, target, node);
        assert_eq!(ask(&job, "check", 1), same, "at node {node}");
        // Seen from the host: the shared directory's file is the file itself there (the
        // same kernel holds it), the unlinked one a copy.
        let maps = remote_maps(&lab, node, "filemap");
        let maps_file = |perms: &str, name: &str| {
            maps.lines().any(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                fields[1..3] == [perms, "00000000"] && fields[4] != "0" && line.ends_with(name)
            })
        };
        assert!(maps_file("rw-p", data_path), "{maps}");
        assert!(maps_file("r--p", "/memfd:rmosix-file (deleted)"), "{maps}");
    }
    move_to(&job, "home", 1);
    assert_eq!(ask(&job, "check", 1), same, "at home");
    assert_eq!(ask(&job, "maps", 3), maps_before);

    // Another process changes the file: every page, the written one too.
    write_pages(&data, b"ABCD");
    assert_eq!(ask(&job, "check", 1), "pages: AWCD unlinked: xy\n");
    end(job);
}

/// Advice, a droppable area and a guard region: the contents and the guard's fault at each
/// stop; home, every area's VmFlags as before the moves, and a child that finds the
/// WIPEONFORK area zeroed and the DONTFORK one absent.
#[test]
fn advice_droppable_memory_and_guard_regions_survive_moves() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("advice");
    let job = start(&lab, &[&program]);
    let flags_before = ask(&job, "flags", AREAS);
    for (area, flag) in [
        ("wipeonfork", " wf"),
        ("dontfork", " dc"),
        ("dontdump", " dd"),
        ("hugepage", " hg"),
        ("nohugepage", " nh"),
        ("mergeable", " mg"),
        ("droppable", " dp"),
        ("guarded", " gu"),
        ("toggled", " wf"),
    ] {
        let line = flags_before
            .lines()
            .find(|l| l.starts_with(&format!("{area} ")));
        assert!(line.is_some_and(|l| l.contains(flag)), "{flags_before}");
    }
    let fine = "contents: ok guard: trapped\n";
    assert_eq!(ask(&job, "check", 1), fine);
    let child = "child: wiped absent\n";
    assert_eq!(ask(&job, "fork", 1), child);

    for (target, node) in [("2", 2), ("3", 3), ("home", 1)] {
        move_to(&job, target, node);
        assert_eq!(ask(&job, "check", 1), fine, "at node {node}");
        if node != 1 {
            assert_eq!(remote_flags(&lab, node, &flags_before), flags_before);
        }
    }
    let sorted = |text: &str| {
        let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
        lines.sort();
        lines
    };
    assert_eq!(sorted(&ask(&job, "flags", AREAS)), sorted(&flags_before));
    assert_eq!(ask(&job, "fork", 1), child);
    end(job);
}

/// Advice that changes while a move's rounds run: the process gives and takes
/// MADV_DONTDUMP on the area beside its guarded one every millisecond while it moves. Each
/// move is frozen with the advice as it was then, or the other way (half the moves, at
/// random), which the last round must bring, and no area but the guarded one may come out
/// marked as holding guards: the area beside it, mapped anew by the last round while the
/// guarded one stays, must not be merged into it.
#[test]
fn advice_changed_while_a_move_runs_arrives_as_it_was_at_the_freeze() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("advice");
    let job = start(&lab, &[&program]);
    let flags_before = ask(&job, "flags", AREAS);
    for (target, node) in [("2", 2), ("3", 3), ("home", 1)].repeat(3) {
        assert_eq!(ask(&job, "toggle", 1), "toggling\n");
        move_to(&job, target, node);
        let state = ask(&job, "state", 1);
        let dontdump = match state.as_str() {
            "toggled: dontdump\n" => true,
            "toggled: dumped\n" => false,
            other => panic!("state: {other:?}"),
        };
        let flags = if node == 1 {
            ask(&job, "flags", AREAS)
        } else {
            remote_flags(&lab, node, &flags_before)
        };
        for line in flags.lines() {
            let (area, vm_flags) = line.split_once(':').expect("NAME START: VMFLAGS");
            let has = |flag: &str| vm_flags.split_whitespace().any(|f| f == flag);
            let name = area.split_whitespace().next().expect("a name");
            assert_eq!(has("gu"), name == "guarded", "at node {node}:\n{flags}");
            if name == "toggled" {
                assert_eq!(has("dd"), dontdump, "at node {node}, {state}{flags}");
            }
        }
    }
    end(job);
}

/// The guests of a user on a node keep the digests of the files they computed for the next
/// ones (`mosixd.digests/UID`, beside the node's control socket, the user's only): moved to
/// node 2 twice, the program's binary (a file node 2 holds the same) is digested there
/// once; the line the first guest wrote is the only one for it.
#[test]
fn the_next_guest_of_a_user_on_a_node_starts_with_the_digests_the_last_one_computed() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("advice");
    let job = start(&lab, &[&program]);
    for _ in 0..2 {
        move_to(&job, "2", 2);
        assert_eq!(ask(&job, "check", 1), "contents: ok guard: trapped\n");
        move_to(&job, "home", 1);
    }
    end(job);
    let at_node_2 = |script: &str| {
        let out = lab.node(2).command("sh").args(["-c", script]).output();
        let out = out.expect("run a shell at node 2");
        assert!(out.status.success(), "{script}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let dir = "/run/mosix/mosixd.digests/0";
    assert_eq!(
        at_node_2(&format!("stat -c '%F %a %u' {dir}")),
        "directory 700 0\n"
    );
    let stamp = at_node_2(&format!("stat -L -c '%d %i %s' {program}"));
    let digests = at_node_2(&format!("cat {dir}/digests"));
    let lines = digests
        .lines()
        .filter(|l| l.starts_with(&format!("{} ", stamp.trim())))
        .count();
    assert_eq!(lines, 1, "{stamp}{digests}");
}

/// A packet socket's receive ring and io_uring's submission ring are memory only the home
/// kernel can back: `migrate` refuses with the reason, and the process runs on at home with
/// its ring.
#[test]
fn kernel_backed_rings_keep_the_process_home_with_the_reason() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let program = c_program("special");
    for (mode, backing) in [
        ("packet", "socket:["),
        ("io_uring", "anon_inode:[io_uring]"),
    ] {
        let job = start(&lab, &[&program, mode]);
        let refused = job.migrate("2").expect_err("a ring cannot move");
        let why = refused.to_string();
        assert!(
            why.contains("it maps memory only this node's kernel can back")
                && why.contains(backing),
            "{mode}: {why}"
        );
        assert_eq!(job.location().unwrap_or_else(|e| panic!("{e}")), 1);
        assert_eq!(ask(&job, "check", 1), "ring: mapped\n");
        end(job);
    }
}

/// Size of the file `bigmap` maps: far above everything else its process holds (a small C
/// program's own pages: well under 1 MiB).
const BIG: usize = 32 << 20;

/// FNV-1a, 64 bits, as `bigmap` computes it.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The `bytes=` of the first line of mosrun's log since `mark` (bytes of its stderr) that
/// tells `what`.
fn logged_bytes(job: &Job, mark: usize, what: &str) -> u64 {
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let stderr = job.stderr();
        let text = String::from_utf8_lossy(&stderr[mark..]);
        let line = text.lines().find(|l| l.contains(what));
        let bytes = line.and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("bytes=")));
        if let Some(bytes) = bytes {
            return bytes.parse().expect("a byte count");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no {what:?} line: {text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A process mapping a 32 MiB file (half of it read, half never touched) moves to a node
/// that holds the same file (same path, same content): the file's pages stay home and the
/// node maps its own file. On to a node
/// whose file at that path differs by one byte: the pages go (relayed by home), into a
/// copy, and the process reads what it read at home. Home again: home maps its file. The
/// nodes' /tmp are their own, so each holds its own file at the same path.
#[test]
fn a_file_the_target_holds_is_mapped_there_and_not_sent() {
    if !rmosix_lab::require_root() {
        return;
    }
    let lab = start_lab();
    let path = "/tmp/samefile.dat";
    // Pages of distinct, non-zero bytes (zero pages are never sent).
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let original: Vec<u8> = (0..BIG)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8 | 1
        })
        .collect();
    let mut differing = original.clone();
    differing[BIG / 2] ^= 2;
    let (same, other) = (
        lab.work_dir().join("same.dat"),
        lab.work_dir().join("other.dat"),
    );
    fs::write(&same, &original).expect("write the file");
    fs::write(&other, &differing).expect("write the other file");
    for (node, from) in [(1, &same), (2, &other), (3, &same)] {
        let copied = lab.node(node).command("cp").arg(from).arg(path).status();
        assert!(copied.is_ok_and(|s| s.success()), "copy into node {node}");
    }
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args([&c_program("bigmap"), path])
        .env("MOSRUN_LOG", "info")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped());
    let job = Job::spawn(lab.node(1), cmd).unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    let sum = format!("sum: {:016x}\n", fnv1a(&original));
    assert_eq!(ask(&job, "check", 1), sum);
    let maps_the_file = |node: u16, name: &str| {
        let maps = remote_maps(&lab, node, "bigmap");
        assert!(maps.lines().any(|l| l.ends_with(name)), "{maps}");
    };

    let mark = job.stderr().len();
    move_to(&job, "3", 3);
    let sent = logged_bytes(&job, mark, "migrated");
    assert!(
        sent < BIG as u64 / 8,
        "{sent} bytes sent to a node that holds the file"
    );
    assert_eq!(ask(&job, "check", 1), sum, "at node 3");
    maps_the_file(3, path);

    let mark = job.stderr().len();
    move_to(&job, "2", 2);
    let relayed = logged_bytes(&job, mark, "moved on");
    assert!(
        relayed >= BIG as u64,
        "{relayed} bytes to a node whose file differs"
    );
    assert_eq!(ask(&job, "check", 1), sum, "at node 2");
    maps_the_file(2, "/memfd:rmosix-file (deleted)");

    move_to(&job, "home", 1);
    assert_eq!(ask(&job, "check", 1), sum, "at home");
    end(job);
}
