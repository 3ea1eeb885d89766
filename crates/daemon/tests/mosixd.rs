//! The `mosixd` binary: start-up faults, peers without the cluster key, clients that stall,
//! race or give up, and its metrics.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use rmosix_transport::ClusterKey;
use rmosix_wire::{
    Command as DaemonCommand, FORWARDED_US_BOUNDS, LineReader, LinkHello, Liveness, MoveError,
    MoveKind, NotMovable, Purpose, Reply, Report, Request, Tally, Target, send_line,
};

const MOSIXD: &str = env!("CARGO_BIN_EXE_mosixd");
/// Generous: a loaded CI machine may be slow to start a process, never this slow.
const DEADLINE: Duration = Duration::from_secs(20);

struct Setup {
    dir: tempfile::TempDir,
    map: PathBuf,
    key: PathBuf,
}

fn setup(map: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let map_path = dir.path().join("mosix.map");
    fs::write(&map_path, map).unwrap();
    let key = dir.path().join("key");
    ClusterKey::generate(&key).unwrap();
    Setup {
        map: map_path,
        key,
        dir,
    }
}

fn mosixd(s: &Setup, extra: &[&str]) -> Command {
    let mut cmd = Command::new(MOSIXD);
    cmd.arg("--map").arg(&s.map).arg("--key").arg(&s.key);
    // These daemons run in the host's mount namespace: none may mount the host's /mfs.
    cmd.arg("--socket")
        .arg(s.dir.path().join("mosixd.sock"))
        .arg("--no-mfs")
        .args(extra);
    cmd.env_remove("RUST_LOG").env_remove("MOSIX_SOCKET");
    cmd
}

fn run_to_end(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().unwrap()
}

#[test]
fn bad_maps_name_file_and_line() {
    for (text, line) in [
        ("1 127.0.0.1\n", 1),
        ("# nodes\n1 127.0.0.1 1\n1 127.0.0.2 1\n", 3),
        ("1 127.0.0.1 1\n2 not/a/host 1\n", 2),
        ("1 127.0.0.1 1\n7 127.0.0.9 ALIAS\n", 2),
    ] {
        let s = setup(text);
        let out = run_to_end(&mut mosixd(&s, &["--node", "1", "--port", "1"]));
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{text:?}: {err}");
        let prefix = format!("mosixd: {}:{line}: ", s.map.display());
        assert!(
            err.starts_with(&prefix) && err.lines().count() == 1,
            "{text:?}: {err}"
        );
    }
    let s = setup("1 127.0.0.1 1\n");
    fs::remove_file(&s.map).unwrap();
    let out = run_to_end(&mut mosixd(&s, &["--node", "1"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "mosixd: {}: cannot read the map: No such file or directory (os error 2)\n",
            s.map.display()
        )
    );
}

#[test]
fn a_node_not_in_the_map_is_refused() {
    let s = setup("1 127.0.0.1 1\n");
    let out = run_to_end(&mut mosixd(&s, &["--node", "2"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("mosixd: {}: node 2 is not in the map\n", s.map.display())
    );
}

#[test]
fn a_gossip_port_in_use_is_a_startup_error_naming_the_address() {
    let s = setup("1 127.0.0.1 1\n");
    // UDP taken, TCP of the same number (most likely) free.
    let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let (status, err) = run_within_deadline(&mut mosixd(
        &s,
        &["--node", "1", "--port", &port.to_string()],
    ));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("mosixd: cannot gossip on UDP 127.0.0.1:{port}: "))
            && err.lines().count() == 1,
        "{err}"
    );
}

#[test]
fn a_metrics_address_in_use_is_a_startup_error_naming_it() {
    let s = setup("1 127.0.0.1 1\n");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let port = free_port().to_string();
    let (status, err) = run_within_deadline(&mut mosixd(
        &s,
        &["--node", "1", "--port", &port, "--metrics", &addr],
    ));
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.starts_with(&format!("mosixd: cannot serve metrics on {addr}: "))
            && err.lines().count() == 1,
        "{err}"
    );
    // Not an address at all: a usage error.
    let (status, err) = run_within_deadline(&mut mosixd(&s, &["--metrics", "9464"]));
    assert_eq!(status.code(), Some(2), "{err}");
}

#[test]
fn a_cgroup_that_does_not_exist_is_a_startup_error_naming_the_option() {
    let s = setup("1 127.0.0.1 1\n");
    let cgroup = format!("/rmosix-no-such-cgroup-{}", std::process::id());
    let port = free_port().to_string();
    let (status, err) = run_within_deadline(&mut mosixd(
        &s,
        &["--node", "1", "--port", &port, "--cgroup", &cgroup],
    ));
    assert_eq!(status.code(), Some(1), "{err}");
    let name = cgroup.trim_start_matches('/');
    assert!(
        err.starts_with(&format!(
            "mosixd: --cgroup: cgroup {cgroup} does not exist: no directory /sys/fs/cgroup/"
        )) && err.trim_end().ends_with(&format!("/{name}"))
            && err.lines().count() == 1,
        "{err}"
    );
    // Not a cgroup path at all: a usage error.
    let (status, err) = run_within_deadline(&mut mosixd(&s, &["--cgroup", "user.slice"]));
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("--cgroup"), "{err}");
}

#[test]
fn a_key_others_can_read_is_refused() {
    let s = setup("1 127.0.0.1 1\n");
    fs::set_permissions(&s.key, fs::Permissions::from_mode(0o644)).unwrap();
    let out = run_to_end(&mut mosixd(&s, &["--node", "1"]));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "mosixd: {}: mode 0644 lets other users read or change the cluster key; \
             chmod 600 it\n",
            s.key.display()
        )
    );
    fs::set_permissions(&s.key, fs::Permissions::from_mode(0o600)).unwrap();
    fs::write(&s.key, "not a key\n").unwrap();
    let out = run_to_end(&mut mosixd(&s, &["--node", "1"]));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cluster key"));
}

/// Runs `cmd` to its end, or kills it and fails after [`DEADLINE`]: a daemon that blocks
/// on its key must show up as a failure, not as a test that never ends.
fn run_within_deadline(cmd: &mut Command) -> (ExitStatus, String) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mosixd still runs after {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    (status, err)
}

#[test]
fn a_fifo_a_link_or_another_users_file_at_the_key_path_is_refused_at_once() {
    let s = setup("1 127.0.0.1 1\n");
    // A FIFO that nobody writes: opening it for reading would block forever.
    let fifo = s.dir.path().join("fifo-key");
    let made = Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let mut cmd = mosixd(&s, &["--node", "1"]);
    let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
    let key_at = args.iter().position(|a| a == "--key").unwrap() + 1;
    let with_key = |key: &Path| {
        let mut cmd = Command::new(MOSIXD);
        for (i, arg) in args.iter().enumerate() {
            cmd.arg(if i == key_at { key.as_os_str() } else { arg });
        }
        cmd.env_remove("RUST_LOG").env_remove("MOSIX_SOCKET");
        cmd
    };
    let (status, err) = run_within_deadline(&mut with_key(&fifo));
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "mosixd: {}: is a FIFO, not a regular file holding the cluster key\n",
            fifo.display()
        )
    );
    let link = s.dir.path().join("link-key");
    std::os::unix::fs::symlink(&s.key, &link).unwrap();
    let (status, err) = run_within_deadline(&mut with_key(&link));
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "mosixd: {}: is a symbolic link; give the path of the key file itself\n",
            link.display()
        )
    );
    if own_uid() == 0 {
        // Root's daemon and a key that user nobody could rewrite at will.
        std::os::unix::fs::chown(&s.key, Some(65534), None).unwrap();
        let (status, err) = run_within_deadline(&mut cmd);
        assert_eq!(status.code(), Some(1), "{err}");
        assert_eq!(
            err,
            format!(
                "mosixd: {}: owned by uid 65534; the cluster key must belong to root or to \
                 uid 0, who loads it\n",
                s.key.display()
            )
        );
    }
}

/// A running daemon whose stderr is read line by line on a thread.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    /// Every line `wait_for` has read so far.
    seen: Vec<String>,
    socket: PathBuf,
    port: u16,
}

impl Running {
    fn start(s: &Setup) -> Running {
        Running::start_with(s, &[])
    }

    /// A daemon with `extra` arguments. The port [`free_port`] gave may be taken before the
    /// daemon binds it (by another test's daemon, or as the local port of a connection: it
    /// lies in the ephemeral range): then the daemon says so and exits, and another port is
    /// tried (a CI run, 2026-12-06).
    fn start_with(s: &Setup, extra: &[&str]) -> Running {
        for _ in 0..4 {
            let mut daemon = Running::spawn(s, extra);
            match daemon.wait_for_either("mosixd ready", "Address already in use") {
                line if line.contains("mosixd ready") => return daemon,
                line => eprintln!("retrying on another port: {line}"),
            }
        }
        panic!("no free port for the daemon in 4 tries");
    }

    /// A daemon with `extra` arguments on a port free a moment ago, its stderr read.
    fn spawn(s: &Setup, extra: &[&str]) -> Running {
        let port = free_port();
        let port_arg = port.to_string();
        let mut args = vec![
            "--node",
            "1",
            "--port",
            &port_arg,
            "--log-level",
            "info",
            // These tests supervise their own process and order its moves themselves.
            "--no-balance",
        ];
        args.extend_from_slice(extra);
        let mut child = mosixd(s, &args)
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("mosixd| {line}");
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
            socket: s.dir.path().join("mosixd.sock"),
            port,
        }
    }

    /// Read stderr until a line contains `text`; panic at the deadline or if the daemon exits.
    /// The lines read are kept in `self.seen`.
    fn wait_for(&mut self, text: &str) -> String {
        self.wait_for_either(text, text)
    }

    /// As [`Running::wait_for`], for a line that contains `text` or `other`.
    fn wait_for_either(&mut self, text: &str, other: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(text) || line.contains(other) => {
                    self.seen.push(line.clone());
                    return line;
                }
                Ok(line) => self.seen.push(line),
                Err(e) => panic!(
                    "no log line with {text:?} ({e}); exit: {:?}",
                    self.child.try_wait()
                ),
            }
        }
    }

    fn ask(&self, request: &Request) -> Reply {
        ask(&self.socket, request)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn ask(socket: &Path, request: &Request) -> Reply {
    let mut stream = UnixStream::connect(socket).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    send_line(&mut stream, request).unwrap();
    LineReader::new().recv(&mut stream).unwrap().unwrap()
}

/// A status's processes, hosted count, and each node's liveness; node 1 must be the daemon's.
fn counts(reply: &Reply) -> (u32, u32, Vec<(u16, Liveness)>) {
    let Reply::Status {
        node: 1,
        processes,
        hosted,
        nodes,
    } = reply
    else {
        panic!("not node 1's status: {reply:?}");
    };
    let nodes = nodes.iter().map(|n| (n.node, n.liveness)).collect();
    (*processes, *hosted, nodes)
}

/// A port nobody listens on right now (the kernel picks it; we release it for the daemon).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn other_key(dir: &Path) -> ClusterKey {
    ClusterKey::generate(&dir.join("other-key")).unwrap()
}

/// A TCP connection to the daemon on `port` from the loopback address `from`.
fn connect_from(from: [u8; 4], port: u16) -> TcpStream {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&std::net::SocketAddr::from((from, 0)).into())
        .unwrap();
    socket
        .connect(&std::net::SocketAddr::from(([127, 0, 0, 1], port)).into())
        .unwrap();
    socket.into()
}

#[test]
fn a_flood_of_keyless_connections_is_logged_once_a_window_with_a_count() {
    let s = setup("1 127.0.0.1 1\n");
    let mut daemon = Running::start(&s);
    const FLOOD: usize = 30;
    for _ in 0..FLOOD {
        let mut raw = connect_from([127, 0, 0, 3], daemon.port);
        // The daemon may reset the connection as soon as it has read the frame length.
        let _ = raw.write_all(b"\x00\x30not a noise handshake, not at all, no");
        let _ = raw.shutdown(std::net::Shutdown::Write);
        // Its end of file means the daemon has dealt with it.
        let _ = std::io::Read::read_to_end(&mut raw, &mut Vec::new());
    }
    // The window of 127.0.0.3 ends 10 s after its first line; then the rest is counted.
    let summary = daemon.wait_for("peer 127.0.0.3: ");
    let dropped = daemon
        .seen
        .iter()
        .filter(|l| l.contains("peer 127.0.0.3 dropped: "))
        .count();
    let held: usize = summary
        .split("peer 127.0.0.3: ")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no count in {summary:?}"));
    assert_eq!(dropped, 1, "{:#?}", daemon.seen);
    assert_eq!(dropped + held, FLOOD, "{summary}");
    assert!(
        summary.contains("more connections failed or were refused in the last 10s"),
        "{summary}"
    );
    // The daemon still serves.
    assert!(matches!(
        daemon.ask(&Request::Status),
        Reply::Status { node: 1, .. }
    ));
}

#[test]
fn a_client_that_sends_nothing_is_dropped() {
    let s = setup("1 127.0.0.1 1\n");
    let daemon = Running::start(&s);
    let mut idle = UnixStream::connect(&daemon.socket).unwrap();
    idle.set_read_timeout(Some(DEADLINE)).unwrap();
    let reply = LineReader::new().recv::<Reply>(&mut idle).unwrap();
    assert_eq!(
        reply,
        Some(Reply::Error {
            message: "no request within 10s".to_owned()
        })
    );
    let mut rest = Vec::new();
    assert_eq!(std::io::Read::read_to_end(&mut idle, &mut rest).unwrap(), 0);
}

#[test]
fn keyless_peers_are_dropped_and_the_daemon_keeps_serving() {
    // Node 2 shares our address, so its port is ours: the daemon's answer to a ping comes
    // from node 1 and must not count as node 2 being up.
    let s = setup("1 127.0.0.1 1\n2 127.0.0.2 1\n");
    let mut daemon = Running::start(&s);
    let addr = ("127.0.0.1", daemon.port);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();

    // A peer with another key: its handshake fails on both sides.
    let wrong = other_key(s.dir.path());
    let result = runtime.block_on(rmosix_transport::connect(addr, &wrong));
    assert!(result.is_err(), "a wrong key must not make a link");
    daemon.wait_for("peer 127.0.0.1 dropped: handshake failed");

    // Plain garbage, from another address (127.0.0.1's next failures are not logged for a
    // while: see the flood test).
    let mut raw = connect_from([127, 0, 0, 2], daemon.port);
    raw.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    daemon.wait_for("peer 127.0.0.2 dropped:");

    // The right key, but a node the map does not have.
    let right = ClusterKey::load(&s.key).unwrap();
    runtime.block_on(async {
        let mut link = rmosix_transport::connect(addr, &right).await.unwrap();
        link.send(&LinkHello::new(9, Purpose::Ping).encode())
            .await
            .unwrap();
        assert!(
            link.recv().await.unwrap_or_default().is_none(),
            "node 9 must get no answer"
        );
    });
    daemon.wait_for("claims to be node 9");

    // Still serving: a real ping and the control socket.
    runtime.block_on(async {
        let mut link = rmosix_transport::connect(addr, &right).await.unwrap();
        link.send(&LinkHello::new(2, Purpose::Ping).encode())
            .await
            .unwrap();
        let answer = LinkHello::decode(&link.recv().await.unwrap().unwrap()).unwrap();
        assert_eq!(answer, LinkHello::new(1, Purpose::Ping));
    });
    // Node 2 has no daemon: the view has never heard it.
    assert_eq!(
        counts(&daemon.ask(&Request::Status)),
        (0, 0, vec![(1, Liveness::Up), (2, Liveness::Dead)])
    );
    // This test runs, but not under mosrun: the daemon does not place it.
    let me = std::process::id() as i32;
    assert_eq!(
        daemon.ask(&Request::Where { pid: me }),
        Reply::Error {
            message: format!("process {me} is not running under mosrun")
        }
    );
    assert_eq!(
        daemon.ask(&Request::Migrate {
            pid: me,
            target: Target::Node(7)
        }),
        Reply::Error {
            message: format!("no node 7 in {}", s.map.display())
        }
    );
    assert_eq!(
        daemon.ask(&Request::Migrate {
            pid: me,
            target: Target::Node(2)
        }),
        Reply::Error {
            message: format!("process {me} is not running under mosrun")
        }
    );
}

#[test]
fn malformed_requests_get_an_error_and_the_daemon_goes_on() {
    let s = setup("1 127.0.0.1 1\n");
    let daemon = Running::start(&s);
    for junk in [
        &b"{\"reboot\":{}}\n"[..],
        b"\xff\xfe\n",
        &[b'x'; 70_000][..],
    ] {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        // The daemon may answer and close before reading all of a long line.
        let _ = stream.write_all(junk);
        let reply: Option<Reply> = LineReader::new().recv(&mut stream).ok().flatten();
        assert!(matches!(reply, Some(Reply::Error { .. })), "{reply:?}");
    }
    assert!(matches!(
        daemon.ask(&Request::Status),
        Reply::Status { node: 1, .. }
    ));
}

/// Sends `request` to the metrics at `addr` and returns the whole answer.
fn http(addr: &str, request: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    // The daemon may answer and close before reading all of a long request.
    let _ = stream.write_all(request);
    let mut answer = Vec::new();
    let _ = stream.read_to_end(&mut answer);
    String::from_utf8_lossy(&answer).into_owned()
}

/// The value of sample `name` in the metrics at `addr`, once `holds` it (within the deadline).
fn wait_sample(addr: &str, name: &str, holds: impl Fn(f64) -> bool) -> f64 {
    let end = Instant::now() + DEADLINE;
    loop {
        let answer = http(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let value = answer
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {answer}"));
        if holds(value) {
            return value;
        }
        assert!(Instant::now() < end, "{name} is {value}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_supervisors_tallies_show_in_the_metrics_and_garbage_gets_errors() {
    let s = setup("1 127.0.0.1 1\n");
    let addr = format!("127.0.0.1:{}", free_port());
    let daemon = Running::start_with(&s, &["--metrics", &addr]);
    let mut sup = Supervisor::register(&daemon);
    sup.start(&daemon, std::process::id() as i32);
    wait_sample(&addr, "mosix_processes{where=\"home\"}", |n| n == 1.0);

    let mut tally = Tally::default();
    tally.count_move(MoveKind::Out, &Ok(()));
    tally.count_move(MoveKind::Out, &Err(MoveError::Busy));
    tally.count_bytes(1 << 20);
    tally.count_freeze(2_000);
    tally.forwarded_us.observe(&FORWARDED_US_BOUNDS, 40);
    sup.report(Report::Tally(tally.clone()));
    sup.report(Report::Tally(tally.clone()));
    let done = "mosix_moves_total{kind=\"out\",outcome=\"done\"}";
    wait_sample(&addr, done, |n| n == 2.0);
    let refused = "mosix_moves_total{kind=\"out\",outcome=\"refused\"}";
    wait_sample(&addr, refused, |n| n == 2.0);
    wait_sample(&addr, "mosix_forwarded_call_seconds_count", |n| n == 2.0);
    wait_sample(&addr, "mosix_forwarded_call_seconds_sum", |n| {
        (n - 80e-6).abs() < 1e-9
    });
    wait_sample(&addr, "mosix_move_image_bytes_count", |n| n == 2.0);

    // A tally of another build is counted apart, and the supervisor stays registered.
    let mut odd = tally;
    odd.freeze_us.counts.push(5);
    sup.report(Report::Tally(odd));
    wait_sample(&addr, "mosix_tallies_rejected_total", |n| n == 1.0);
    wait_sample(&addr, done, |n| n == 2.0);
    wait_sample(&addr, "mosix_processes{where=\"home\"}", |n| n == 1.0);

    for (request, status) in [
        (&b"GET /other HTTP/1.1\r\nHost: x\r\n\r\n"[..], "404"),
        (b"DELETE /metrics HTTP/1.1\r\nHost: x\r\n\r\n", "405"),
        (b"\xff\xfe garbage\r\n\r\n", "400"),
    ] {
        let answer = http(&addr, request);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{answer}"
        );
    }
    let mut long = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    long.extend(std::iter::repeat_n(b'a', 100_000));
    let answer = http(&addr, &long);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "{answer}"
    );
    wait_sample(&addr, done, |n| n == 2.0);
    assert!(matches!(
        daemon.ask(&Request::Status),
        Reply::Status { processes: 1, .. }
    ));
}

/// A fake supervisor on the control socket.
struct Supervisor {
    stream: UnixStream,
    lines: LineReader,
}

impl Supervisor {
    fn register(daemon: &Running) -> Supervisor {
        let mut stream = UnixStream::connect(&daemon.socket).unwrap();
        stream.set_read_timeout(Some(DEADLINE)).unwrap();
        send_line(
            &mut stream,
            &Request::Supervise {
                advice: Default::default(),
            },
        )
        .unwrap();
        let mut lines = LineReader::new();
        assert_eq!(lines.recv::<Reply>(&mut stream).unwrap(), Some(Reply::Ok));
        Supervisor { stream, lines }
    }

    fn report(&mut self, report: Report) {
        send_line(&mut self.stream, &report).unwrap();
    }

    fn command(&mut self) -> DaemonCommand {
        self.lines.recv(&mut self.stream).unwrap().unwrap()
    }

    /// The next command, which must be an order: its id, process and target.
    fn order(&mut self) -> (u64, i32, Target) {
        match self.command() {
            DaemonCommand::Migrate { id, pid, target } => (id, pid, target),
            other => panic!("expected an order, got {other:?}"),
        }
    }

    /// Report a process and wait until the daemon counts it.
    fn start(&mut self, daemon: &Running, pid: i32) {
        self.report(Report::Started { pid });
        // Reports are not answered; a Where after a report sees it applied sooner or later.
        let end = Instant::now() + DEADLINE;
        while !matches!(daemon.ask(&Request::Where { pid }), Reply::Location { .. }) {
            assert!(Instant::now() < end, "Started report not applied");
        }
    }
}

#[test]
fn migrations_go_through_the_supervisor() {
    let s = setup("1 127.0.0.1 1\n2 127.0.0.2 1\n");
    let daemon = Running::start(&s);
    let me = std::process::id() as i32;
    let mut sup = Supervisor::register(&daemon);
    sup.report(Report::Started { pid: me });
    // Reports are not answered; a Where after a Status round trip sees the report applied.
    let wait_started = Instant::now() + DEADLINE;
    while counts(&daemon.ask(&Request::Status))
        != (1, 0, vec![(1, Liveness::Up), (2, Liveness::Dead)])
    {
        assert!(Instant::now() < wait_started, "Started report not applied");
    }

    let socket = daemon.socket.as_path();
    std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            ask(
                socket,
                &Request::Migrate {
                    pid: me,
                    target: Target::Node(2),
                },
            )
        });
        let (id, pid, target) = sup.order();
        assert_eq!((pid, target), (me, Target::Node(2)));
        sup.report(Report::Moved {
            pid: me,
            node: Some(2),
        });
        sup.report(Report::MigrateDone { id, result: Ok(()) });
        assert_eq!(asking.join().unwrap(), Reply::Ok);
    });
    assert_eq!(
        daemon.ask(&Request::Where { pid: me }),
        Reply::Location { node: 2 }
    );

    // Node 1 is this node: moving there means going home. A failure comes back as it was.
    std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            ask(
                socket,
                &Request::Migrate {
                    pid: me,
                    target: Target::Node(1),
                },
            )
        });
        let (id, _, target) = sup.order();
        assert_eq!(target, Target::Home);
        sup.report(Report::MigrateDone {
            id,
            result: Err(NotMovable::Threads(2).into()),
        });
        assert_eq!(
            asking.join().unwrap(),
            Reply::Failed(NotMovable::Threads(2).into())
        );
    });

    // A supervisor that goes away fails the migration it was asked for.
    std::thread::scope(|scope| {
        let asking = scope.spawn(|| {
            ask(
                socket,
                &Request::Migrate {
                    pid: me,
                    target: Target::Home,
                },
            )
        });
        let _ = sup.command();
        drop(sup);
        let reply = asking.join().unwrap();
        assert!(
            matches!(&reply, Reply::Error { message } if message.contains("went away")),
            "{reply:?}"
        );
    });
    assert_eq!(
        daemon.ask(&Request::Migrate {
            pid: me,
            target: Target::Home
        }),
        Reply::Error {
            message: format!("process {me} is not running under mosrun")
        }
    );
}

#[test]
fn a_second_order_for_a_moving_process_is_refused_at_once() {
    let s = setup("1 127.0.0.1 1\n2 127.0.0.2 1\n");
    let daemon = Running::start(&s);
    let me = std::process::id() as i32;
    let mut sup = Supervisor::register(&daemon);
    sup.start(&daemon, me);
    let socket = daemon.socket.as_path();
    let migrate = |target| {
        let request = Request::Migrate { pid: me, target };
        move || ask(socket, &request)
    };
    std::thread::scope(|scope| {
        let first = scope.spawn(migrate(Target::Node(2)));
        let (id, _, _) = sup.order();
        // Moving, whatever the target: refused without reaching the supervisor.
        for target in [Target::Node(2), Target::Home, Target::Node(1)] {
            assert_eq!(migrate(target)(), Reply::Failed(MoveError::Busy));
        }
        sup.report(Report::Moved {
            pid: me,
            node: Some(2),
        });
        sup.report(Report::MigrateDone { id, result: Ok(()) });
        assert_eq!(first.join().unwrap(), Reply::Ok);
    });
    // Answered: the next order goes through.
    std::thread::scope(|scope| {
        let back = scope.spawn(migrate(Target::Home));
        let (id, _, target) = sup.order();
        assert_eq!(target, Target::Home);
        sup.report(Report::MigrateDone { id, result: Ok(()) });
        assert_eq!(back.join().unwrap(), Reply::Ok);
    });
}

#[test]
fn an_order_whose_caller_gives_up_is_cancelled() {
    let s = setup("1 127.0.0.1 1\n2 127.0.0.2 1\n");
    let daemon = Running::start(&s);
    let me = std::process::id() as i32;
    let mut sup = Supervisor::register(&daemon);
    sup.start(&daemon, me);
    let mut caller = UnixStream::connect(&daemon.socket).unwrap();
    let request = Request::Migrate {
        pid: me,
        target: Target::Node(2),
    };
    send_line(&mut caller, &request).unwrap();
    let (id, _, _) = sup.order();
    drop(caller);
    assert_eq!(sup.command(), DaemonCommand::Cancel { id });
    // Until the supervisor answers, the order may still be under way: no second one.
    assert_eq!(daemon.ask(&request), Reply::Failed(MoveError::Busy));
    sup.report(Report::MigrateDone {
        id,
        result: Err(MoveError::Cancelled),
    });
    std::thread::scope(|scope| {
        let socket = daemon.socket.as_path();
        // Reports are not answered: until the daemon has read the one above, the process is
        // still busy.
        let again = scope.spawn(|| {
            let end = Instant::now() + DEADLINE;
            loop {
                match ask(socket, &request) {
                    Reply::Failed(MoveError::Busy) => {
                        assert!(Instant::now() < end, "MigrateDone report not applied")
                    }
                    other => return other,
                }
            }
        });
        let (next, pid, _) = sup.order();
        assert!(next > id);
        assert_eq!(pid, me);
        sup.report(Report::MigrateDone {
            id: next,
            result: Ok(()),
        });
        assert_eq!(again.join().unwrap(), Reply::Ok);
    });
}

#[test]
fn a_session_starts_a_guest_under_the_callers_uid() {
    // The session goes from this daemon to itself (node 1), which is the same path as to
    // another node. The guest's session ends at once and it exits; the daemon reaps it.
    let s = setup("1 127.0.0.1 1\n");
    let mut daemon = Running::start(&s);
    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    stream.set_read_timeout(Some(DEADLINE)).unwrap();
    send_line(&mut stream, &Request::OpenSession { node: 1 }).unwrap();
    // The reply carries the session socket, held until the guest's record is checked: the
    // guest lives as long as its session (its end, closing the socket, ends the guest).
    let (reply, session) = recv_session(&stream);
    assert!(
        matches!(reply, Reply::Session { ref keys, .. } if keys.len() == 128),
        "{reply:?}"
    );
    let uid = own_uid();
    let started = daemon.wait_for("guest started");
    assert!(started.contains(&format!("uid={uid}")), "{started}");
    // Started, the guest has its record, named for its PID, start time, uid and home node.
    let pid = started
        .split_whitespace()
        .find_map(|f| f.strip_prefix("pid="))
        .unwrap();
    let records = guest_records(&s);
    assert_eq!(records.len(), 1, "{records:?}");
    let name: Vec<&str> = records[0].split('-').collect();
    assert_eq!(
        [name[0], name[2], name[3]],
        [pid, &uid.to_string(), "1"],
        "{records:?}"
    );
    drop(session);
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    let _ = std::io::Read::read_to_end(&mut stream, &mut rest);
    daemon.wait_for("guest exited");
    // Reaped, it has none.
    let end = Instant::now() + DEADLINE;
    while !guest_records(&s).is_empty() {
        assert!(Instant::now() < end, "{:?}", guest_records(&s));
        std::thread::sleep(Duration::from_millis(10));
    }

    let mut stream = UnixStream::connect(&daemon.socket).unwrap();
    send_line(&mut stream, &Request::OpenSession { node: 5 }).unwrap();
    let reply = LineReader::new().recv::<Reply>(&mut stream).unwrap();
    assert_eq!(
        reply,
        Some(Reply::Error {
            message: format!("no node 5 in {}", s.map.display())
        })
    );
}

/// One reply line and the socket that comes with it (SCM_RIGHTS), as mosrun reads a session.
fn recv_session(stream: &UnixStream) -> (Reply, std::os::fd::OwnedFd) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
    let mut line = vec![0u8; rmosix_wire::MAX_LINE];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let mut iov = [std::io::IoSliceMut::new(&mut line)];
    let msg = recvmsg::<()>(
        stream.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .unwrap();
    let fd = msg
        .cmsgs()
        .unwrap()
        .find_map(|cmsg| match cmsg {
            // SAFETY: the kernel just installed this descriptor for this process alone.
            ControlMessageOwned::ScmRights(fds) => Some(unsafe { OwnedFd::from_raw_fd(fds[0]) }),
            _ => None,
        })
        .expect("a session socket with the reply");
    let len = msg.bytes;
    line.truncate(len);
    let reply = serde_json::from_slice(line.trim_ascii_end()).unwrap();
    (reply, fd)
}

/// The names in the guests' record directory beside the daemon's socket.
fn guest_records(s: &Setup) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(s.dir.path().join("mosixd.guests"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_process_the_daemon_did_not_start_cannot_register_as_a_guest() {
    let s = setup("1 127.0.0.1 1\n");
    let daemon = Running::start(&s);
    // This test process asks, as a user's program would: it is no guest.
    let me = std::process::id();
    let uid = own_uid();
    assert_eq!(
        daemon.ask(&Request::Guest { home_node: 1 }),
        Reply::Error {
            message: format!(
                "process {me} is not a guest this node's mosixd started for uid {uid} and node 1"
            )
        }
    );
    assert_eq!(
        daemon.ask(&Request::Guests),
        Reply::Guests {
            processes: Vec::new()
        }
    );
    let Reply::Status { hosted, .. } = daemon.ask(&Request::Status) else {
        panic!("no status");
    };
    assert_eq!(hosted, 0);
    // Only the daemon's user may use the record directory.
    let mode = fs::metadata(s.dir.path().join("mosixd.guests"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn a_guests_directory_others_may_change_is_refused_at_start() {
    let s = setup("1 127.0.0.1 1\n");
    let dir = s.dir.path().join("mosixd.guests");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o777)).unwrap();
    let (status, err) = run_within_deadline(&mut mosixd(&s, &["--node", "1", "--port", "0"]));
    assert_eq!(status.code(), Some(1), "{err}");
    assert_eq!(
        err,
        format!(
            "mosixd: {}: mode 0777 lets other users change the guests' directory; chmod 700 it\n",
            dir.display()
        )
    );
}

/// This test process's uid, from /proc (the tests need no libc).
fn own_uid() -> u32 {
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}
