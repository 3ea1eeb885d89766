//! Reads of home files by a moved process, served from bytes home lends it (read-ahead and
//! the pread cache, docs/forwarding.md "Fewer round trips: reads"): the same bytes as a run
//! that never moved, whatever the reads mix (readv, lseek, pread, two descriptors, a
//! description shared with a child at home); and a file that changes at home while the
//! remote holds bytes of it is read anew once the remote learns of the change through
//! something that goes home (a pipe, a signal, a lock).
//!
//! Programs live in `tests/progs/readahead/`. Each says "ready" and waits for a line on
//! stdin, so that the test moves it before it reads. Moved runs log what home lent
//! (`MOSRUN_LOG`), and the tests check that bytes were lent: a run that read everything
//! through forwarded calls proves nothing here.

use std::fs;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use rmosix_lab::{Job, Lab, LabConfig, bin_dir_of_current_test, require_root};

/// Deadline of one step: a migration, a line of output, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// Where a moved program runs.
const AWAY: &str = "2";
/// The log of what home lends, and nothing else.
const LENT_LOG: &str = "rmosix_engine::homefill=debug";

fn start_lab() -> Lab {
    Lab::start(LabConfig::new(2, bin_dir_of_current_test()))
        .unwrap_or_else(|e| panic!("cannot start a 2-node lab: {e}"))
}

/// `progs/readahead/NAME.c`, compiled into the target's tmp dir, which every node sees.
fn c_program(name: &str) -> String {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/progs/readahead/{name}.c"));
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("readahead")
        .join(name);
    rmosix_lab::compiled(src, out, &[])
}

/// A file of `len` bytes that no pattern repeats in, in the lab's work dir.
fn random_file(lab: &Lab, name: &str, len: usize) -> PathBuf {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = lab.work_dir().join(name);
    fs::write(&path, bytes).expect("write the test file");
    path
}

/// Starts `argv` under mosrun at node 1 and waits until it is ready; moved to node 2 if
/// `moved`.
fn start<'lab>(lab: &'lab Lab, argv: &[&str], moved: bool) -> Job<'lab> {
    start_logging(lab, argv, moved, LENT_LOG)
}

/// As [`start`], with mosrun's log filter `log`.
fn start_logging<'lab>(lab: &'lab Lab, argv: &[&str], moved: bool, log: &str) -> Job<'lab> {
    let mut cmd = lab.node(1).command("mosrun");
    cmd.args(argv)
        .current_dir(lab.work_dir())
        .stdin(Stdio::piped())
        .env("MOSRUN_LOG", log)
        .env("NO_COLOR", "1");
    let job = Job::spawn(lab.node(1), cmd).unwrap_or_else(|e| panic!("start {argv:?}: {e}"));
    job.wait_output("ready\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    if moved {
        job.migrate(AWAY)
            .unwrap_or_else(|e| panic!("migrate {argv:?}: {e}"));
    }
    job
}

/// Runs `argv` to its end, moved or not, and returns its stdout.
fn run(lab: &Lab, argv: &[&str], moved: bool) -> String {
    let job = start(lab, argv, moved);
    job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
    finished(job, &format!("{argv:?}"), moved)
}

/// Waits for the end of `job` (`what`), which must succeed, and returns its stdout. A job
/// that ran moved must have been lent bytes.
fn finished(job: Job, what: &str, moved: bool) -> String {
    let (stdout, stderr) = ended(job, what);
    assert!(
        !moved || stderr.contains("keep=true"),
        "{what}: nothing was lent to the moved run:\n{stderr}"
    );
    stdout
}

/// Waits for the end of `job` (`what`), which must succeed: its stdout and stderr.
fn ended(job: Job, what: &str) -> (String, String) {
    let out = job.finish(STEP).unwrap_or_else(|e| panic!("{what}: {e}"));
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    );
    assert!(
        out.status.success(),
        "{what}: {}\n{stdout}\n{stderr}",
        out.status
    );
    (stdout, stderr)
}

/// `reader MODE FILE` prints the same moved as never moved.
fn same_moved_as_home(lab: &Lab, reader: &str, mode: &str, file: &Path) {
    let file = file.to_str().expect("a UTF-8 path");
    let home = run(lab, &[reader, mode, file], false);
    let away = run(lab, &[reader, mode, file], true);
    assert!(home.contains("sum="), "{mode}: {home}");
    assert_eq!(away, home, "{mode}: moved vs never moved");
}

#[test]
fn a_sequential_reader_reads_the_same_bytes_moved_as_at_home() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let reader = c_program("reader");
    // Several fills, and an end that falls inside one.
    let file = random_file(&lab, "seq", 3 * (1 << 20) + 12345);
    for mode in ["seq", "readv"] {
        same_moved_as_home(&lab, &reader, mode, &file);
    }
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// An ordinary user's mosrun cannot read the descriptors of the node's init or daemons, so
/// it cannot show that none of them shares a description; but a file its process opened
/// away is its shell's alone (`homefill::OpenedAway`), and its bytes are lent for `read` all
/// the same: user nobody's moved reader is lent bytes and reads what it reads never moved.
#[test]
fn an_ordinary_users_file_opened_away_is_lent_for_read() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let reader = c_program("reader");
    let file = random_file(&lab, "nobody", 3 * (1 << 20) + 12345);
    let file = file.to_str().expect("a UTF-8 path");
    let as_nobody = |moved: bool| {
        let mut cmd = lab.node(1).command("setpriv");
        cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
            .args(["mosrun", &reader, "seq", file])
            .current_dir(lab.work_dir())
            .stdin(Stdio::piped())
            .env("MOSRUN_LOG", LENT_LOG)
            .env("NO_COLOR", "1");
        let job = Job::spawn(lab.node(1), cmd).unwrap_or_else(|e| panic!("start: {e}"));
        job.wait_output("ready\n", STEP)
            .unwrap_or_else(|e| panic!("{e}"));
        if moved {
            job.migrate(AWAY).unwrap_or_else(|e| panic!("migrate: {e}"));
        }
        job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
        finished(job, "reader seq as nobody", moved)
    };
    let home = as_nobody(false);
    let away = as_nobody(true);
    assert!(home.contains("sum="), "{home}");
    assert_eq!(away, home, "moved vs never moved");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn reads_mixed_with_lseek_and_scattered_preads_are_the_same_moved_as_at_home() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let reader = c_program("reader");
    let file = random_file(&lab, "mixed", 2_000_000);
    for mode in ["seek", "pread"] {
        same_moved_as_home(&lab, &reader, mode, &file);
    }
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn two_descriptors_of_one_file_read_the_same_moved_as_at_home() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let reader = c_program("reader");
    let file = random_file(&lab, "two", 1_500_000);
    same_moved_as_home(&lab, &reader, "twofds", &file);
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_description_shared_with_a_child_at_home_keeps_one_offset() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let shared = c_program("shared");
    // 4 KiB blocks, each starting with its number.
    let blocks: Vec<u8> = (0..100)
        .flat_map(|i| {
            let mut block = format!("{i:08}\n").into_bytes();
            block.resize(4096, b'x');
            block
        })
        .collect();
    let file = lab.work_dir().join("blocks");
    fs::write(&file, blocks).expect("write the test file");
    let job = start(&lab, &[&shared, file.to_str().expect("a UTF-8 path")], true);
    job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
    // Nothing is lent for the shared description: the reads go home.
    let stdout = finished(job, "shared", false);
    let numbers = |who: &str, first: usize| {
        let want: Vec<String> = (0..40).map(|i| (first + 2 * i).to_string()).collect();
        format!("{who} {}", want.join(" "))
    };
    assert!(
        stdout.lines().any(|l| l == numbers("parent", 0)),
        "{stdout}"
    );
    assert!(stdout.lines().any(|l| l == numbers("child", 1)), "{stdout}");
}

#[test]
fn a_reader_brought_home_while_it_holds_lent_bytes_goes_on_where_it_was() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let reader = c_program("reader");
    let file = random_file(&lab, "spin", 3 * (1 << 20) + 777);
    let file = file.to_str().expect("a UTF-8 path");
    let never_moved = run(&lab, &[&reader, "seq", file], false);
    // Halfway it reads 8 blocks more from lent bytes and spins: home's offset lags by what
    // they consumed until the move settles it.
    let job = start(&lab, &[&reader, "spin", file], true);
    job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("half\n", STEP)
        .unwrap_or_else(|e| panic!("{e}"));
    job.migrate("home").unwrap_or_else(|e| panic!("{e}"));
    job.signal("USR1").unwrap_or_else(|e| panic!("{e}"));
    let moved = finished(job, "spin", true);
    assert_eq!(moved, never_moved.replace("ready\n", "ready\nhalf\n"));
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// How the file changes at home while the moved process holds bytes of it.
#[derive(Clone, Copy, Debug)]
enum Change {
    /// Every byte rewritten in place.
    Write,
    /// Cut to 8 KiB.
    Truncate,
    /// A new file renamed over it.
    Replace,
}

/// A file of 1 MiB of 'a' at home; `changes` moved, holding bytes of it; the file changes
/// as `change` says, and the process learns of it through `channel`. It must then read the
/// file as it is.
fn changed_then_told(lab: &Lab, changes: &str, change: Change, channel: &str) {
    let file = lab.work_dir().join(format!("changing-{channel}"));
    fs::write(&file, vec![b'a'; 1 << 20]).expect("write the test file");
    // The writer holds a lock on the file while it changes it.
    let lock_file = fs::File::open(&file).expect("open the test file");
    let held = |op| {
        // SAFETY: flock on a descriptor we own.
        assert_eq!(unsafe { libc::flock(lock_file.as_raw_fd(), op) }, 0);
    };
    held(libc::LOCK_EX);
    let argv = [changes, file.to_str().expect("a UTF-8 path"), channel];
    let job = start(lab, &argv, true);
    job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
    job.wait_output("held\n", STEP)
        .unwrap_or_else(|e| panic!("{change:?} {channel}: {e}"));
    match change {
        Change::Write => {
            let mut f = fs::OpenOptions::new().write(true).open(&file).unwrap();
            std::io::Write::write_all(&mut f, &vec![b'b'; 1 << 20]).unwrap();
        }
        Change::Truncate => fs::OpenOptions::new()
            .write(true)
            .open(&file)
            .and_then(|f| f.set_len(8192))
            .unwrap(),
        Change::Replace => {
            let new = file.with_extension("new");
            fs::write(&new, vec![b'b'; 1 << 20]).unwrap();
            fs::rename(&new, &file).unwrap();
        }
    }
    match channel {
        "pipe" => job.send(b"changed\n").unwrap_or_else(|e| panic!("{e}")),
        "signal" => job.signal("USR1").unwrap_or_else(|e| panic!("{e}")),
        _ => held(libc::LOCK_UN),
    }
    let stdout = finished(job, &format!("{change:?} {channel}"), true);
    let mib = 1 << 20;
    let rest = mib - 4096;
    let want = match change {
        Change::Write => {
            format!("pread 4096 b\nread {rest} a=0 b={rest}\nreopened {mib} a=0 b={mib}\n")
        }
        Change::Truncate => {
            "pread 0 -\nread 4096 a=4096 b=0\nreopened 8192 a=8192 b=0\n".to_owned()
        }
        // The descriptor still refers to the file it opened; its name, to the new one.
        Change::Replace => {
            format!("pread 4096 a\nread {rest} a={rest} b=0\nreopened {mib} a=0 b={mib}\n")
        }
    };
    assert_eq!(
        stdout,
        format!("ready\nheld\n{want}"),
        "{change:?} {channel}"
    );
}

fn a_change_at_home_is_read_once_told(change: Change) {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let changes = c_program("changes");
    for channel in ["pipe", "signal", "lock"] {
        changed_then_told(&lab, &changes, change, channel);
    }
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn a_file_rewritten_at_home_is_read_anew_once_a_pipe_a_signal_or_a_lock_tells() {
    a_change_at_home_is_read_once_told(Change::Write);
}

#[test]
fn a_file_truncated_at_home_is_read_anew_once_a_pipe_a_signal_or_a_lock_tells() {
    a_change_at_home_is_read_once_told(Change::Truncate);
}

#[test]
fn a_file_replaced_at_home_is_read_anew_once_a_pipe_a_signal_or_a_lock_tells() {
    a_change_at_home_is_read_once_told(Change::Replace);
}

/// Waits until some process waits for a lock on `file` (a "->" line of /proc/locks).
fn wait_for_lock_waiter(file: &Path) {
    use std::os::unix::fs::MetadataExt;
    let inode = format!(
        ":{} ",
        fs::metadata(file).expect("stat the test file").ino()
    );
    let deadline = std::time::Instant::now() + STEP;
    loop {
        let locks = fs::read_to_string("/proc/locks").expect("read /proc/locks");
        if locks
            .lines()
            .any(|l| l.contains("->") && l.contains(&inode))
        {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nobody waits for a lock on {}:\n{locks}",
            file.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `rwlocked` on a file at home (1 MiB), moved or not, with this process as the other
/// writer at home: it holds an fcntl write lock on the file, and before each release writes
/// the round's digit over block 0. Returns the program's stdout.
fn rwlocked_run(lab: &Lab, rwlocked: &str, moved: bool) -> String {
    let file = random_file(lab, "read-write", 256 * 4096);
    let other = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&file)
        .expect("open the test file");
    let lock = |kind: libc::c_int| {
        let fl = libc::flock {
            l_type: kind as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 0,
            l_len: 0,
            l_pid: 0,
        };
        // SAFETY: fcntl reads a live struct flock, on a descriptor we own.
        let set = unsafe { libc::fcntl(other.as_raw_fd(), libc::F_SETLKW, &fl) };
        assert_eq!(set, 0, "fcntl F_SETLKW");
    };
    lock(libc::F_WRLCK);
    let job = start(
        lab,
        &[rwlocked, file.to_str().expect("a UTF-8 path")],
        moved,
    );
    job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
    for round in 1..=3u8 {
        job.wait_output(&format!("held {round}\n"), STEP)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        // It read block 0 before it asked for the lock: the bytes it was lent are the old ones.
        wait_for_lock_waiter(&file);
        std::os::unix::fs::FileExt::write_all_at(&other, &[b'0' + round; 4096], 0)
            .expect("write block 0");
        lock(libc::F_UNLCK);
        job.wait_output(&format!("unlocked {round}\n"), STEP)
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        if round < 3 {
            lock(libc::F_WRLCK);
            job.send(b"next\n").unwrap_or_else(|e| panic!("{e}"));
        }
    }
    finished(job, "rwlocked", moved)
}

#[test]
fn a_read_write_file_reads_its_own_writes_and_after_a_lock_others_the_same_moved() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let rwlocked = c_program("rwlocked");
    let home = rwlocked_run(&lab, &rwlocked, false);
    let away = rwlocked_run(&lab, &rwlocked, true);
    for round in 1..=3 {
        assert!(
            home.contains(&format!("locked {round}: {round}\n")),
            "{home}"
        );
    }
    assert_eq!(away, home, "moved vs never moved");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// What home lends, and every call it runs for the remote.
const CALLS_LOG: &str = "rmosix_engine::homefill=debug,rmosix_engine::home=trace";

/// How many calls numbered `nr` home ran for the remote, by a job's log under [`CALLS_LOG`].
fn calls_home(stderr: &str, nr: i64) -> usize {
    let number = format!("nr={nr}");
    stderr
        .lines()
        .filter(|l| l.contains(" call ") || l.ends_with(" call"))
        .filter(|l| l.split_whitespace().any(|word| word == number))
        .count()
}

/// Runs `smallfiles` with `args`, moved or not, under [`CALLS_LOG`]: its stdout and stderr.
/// `between(job)` runs when it has said `pause`, and a line then lets it go on.
fn smallfiles_run(
    lab: &Lab,
    argv: &[&str],
    moved: bool,
    pause: &str,
    between: impl FnOnce(&Job),
) -> (String, String) {
    let job = start_logging(lab, argv, moved, CALLS_LOG);
    job.send(b"go\n").unwrap_or_else(|e| panic!("{e}"));
    job.wait_output(&format!("{pause}\n"), STEP)
        .unwrap_or_else(|e| panic!("{argv:?}: {e}"));
    between(&job);
    job.send(b"on\n").unwrap_or_else(|e| panic!("{e}"));
    ended(job, &format!("{argv:?}"))
}

/// A compiler away opens, `fstat`s, reads and closes each of its headers, each a round trip
/// home. Home lends a file's status and first bytes with the open's answer, and the close
/// goes home behind the program: one round trip a file. The files read the same as at home,
/// the number a close frees is the next open's, a closed descriptor reads EBADF, and the
/// shell at home no longer holds a file once the program, having closed it, says so.
#[test]
fn small_files_opened_away_cost_one_round_trip_each_and_read_as_at_home() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let smallfiles = c_program("smallfiles");
    let dir = lab.work_dir().join("small");
    fs::create_dir_all(&dir).expect("make the files' directory");
    // Empty, smaller than one read, and larger than the loan at the open (256 KiB).
    let sizes = [0, 1, 100, 1024, 5000, 70_000, 300_000, 2_000_000];
    for (i, &len) in sizes.iter().enumerate() {
        let file = random_file(&lab, &format!("small-{i}"), len);
        fs::rename(file, dir.join(i.to_string())).expect("move the file in place");
    }
    let count = sizes.len().to_string();
    let argv = [
        &smallfiles,
        "files",
        dir.to_str().expect("a UTF-8 path"),
        &count,
    ];
    let (home, _) = smallfiles_run(&lab, &argv, false, "closed", |_| {});
    let (away, log) = smallfiles_run(&lab, &argv, true, "closed", |job| {
        // The program closed every file, then wrote "closed" home: the closes ran first.
        let fds = fs::read_dir(format!("/proc/{}/fd", job.host_pid())).expect("list its fds");
        for fd in fds {
            let target = fs::read_link(fd.expect("an fd").path()).unwrap_or_default();
            assert!(
                !target.starts_with(&dir),
                "the shell still holds {target:?}"
            );
        }
    });
    assert!(home.contains("size=2000000 read=2000000"), "{home}");
    assert!(home.contains("under the closed number: yes"), "{home}");
    assert!(home.contains("reads EBADF"), "{home}");
    assert_eq!(away, home, "moved vs never moved");
    let lent_at_open = log
        .lines()
        .filter(|l| l.contains("lent at its open"))
        .count();
    assert_eq!(lent_at_open, sizes.len() + 1, "{log}");
    assert_eq!(calls_home(&log, libc::SYS_newfstatat), 0, "{log}");
    assert_eq!(calls_home(&log, libc::SYS_fstat), 0, "{log}");
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}

/// The status lent with an open is dropped with its bytes when the file changes at home, as
/// soon as the program can know of the change: `fstat` then gives the new size.
#[test]
fn a_file_lent_at_its_open_and_changed_at_home_shows_its_new_status_once_told() {
    if !require_root() {
        return;
    }
    let lab = start_lab();
    let smallfiles = c_program("smallfiles");
    let file = lab.work_dir().join("restat");
    let file_str = file.to_str().expect("a UTF-8 path");
    let append = |_: &Job| {
        let mut f = fs::OpenOptions::new().append(true).open(&file).unwrap();
        std::io::Write::write_all(&mut f, &[b'b'; 500]).unwrap();
    };
    let sum = 1000 * u64::from(b'a') + 500 * u64::from(b'b');
    let want = format!("ready\nsize=1000\nopened\nsize=1500 read=1500 sum={sum}\n");
    for moved in [false, true] {
        fs::write(&file, [b'a'; 1000]).expect("write the test file");
        let argv = [smallfiles.as_str(), "restat", file_str];
        let (stdout, log) = smallfiles_run(&lab, &argv, moved, "opened", append);
        assert_eq!(stdout, want, "moved: {moved}");
        if moved {
            // The first status was lent; the second, after the change, was asked.
            assert!(log.contains("lent at its open"), "{log}");
            assert_eq!(calls_home(&log, libc::SYS_newfstatat), 1, "{log}");
        }
    }
    lab.stop().unwrap_or_else(|e| panic!("{e}"));
}
