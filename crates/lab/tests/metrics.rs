//! `mosixd --metrics` in a 3-node lab, as an operator's Prometheus and an attacker see it:
//! nodes 1 and 2 serve metrics, node 3 does not. A job of node 1 goes to node 2 and home,
//! and each node's scrape counts what it saw: the moves and their outcome, the image and
//! freeze-time histograms, the forwarded calls, the guest on node 2. Garbage, an oversized
//! request, a wrong path and idle connections get errors or are closed, and the daemon goes
//! on serving. A daemon without `--metrics` listens on nothing but its peer port.
//!
//! Scrapes are made from inside the node's network with bash's `/dev/tcp`; every wait has a
//! deadline.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use rmosix_lab::{Job, Lab, LabConfig, Node, bin_dir_of_current_test, require_root};

/// Where nodes 1 and 2 serve metrics, each in its own network.
const ADDR: &str = "127.0.0.1:9464";
/// The daemons' peer port.
const PEER_PORT: u16 = 4660;
/// The jobs of the failures suite: `ticks.py` computes and prints a tick every 0.1 s until
/// its go file exists.
const JOBS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/progs/failures");
const PYTHON: &str = "/usr/bin/python3";
/// Deadline of one step: a scrape, a move, a figure to show, a job's end.
const STEP: Duration = Duration::from_secs(60);
/// Bound of one request sent from a node (bash and `timeout` inside it).
const REQUEST_SECONDS: &str = "20";
/// How long a test sleeps between two looks at what it waits for.
const POLL: Duration = Duration::from_millis(100);
/// How long idle connections are held open: well past the daemon's request timeout
/// (metrics::REQUEST_TIMEOUT is 5 s), within [`REQUEST_SECONDS`].
const IDLE_SECONDS: &str = "15";
/// Idle connections opened: more than the daemon serves at once (metrics::MAX_SCRAPERS is 8).
const IDLE_CONNECTIONS: i32 = 12;

/// Sends `request` (printf's format) to the metrics address of `node` from inside it, and
/// returns everything the daemon answered before it closed.
fn send(node: &Node, request: &str) -> String {
    let (host, port) = ADDR.split_once(':').unwrap();
    // A daemon that closes at once (over its limit, or before reading a long request) makes
    // the write fail: with SIGPIPE ignored, as an error, and what it answered is still read.
    let script = format!(
        "trap '' PIPE; exec 3<>/dev/tcp/{host}/{port} || exit 9; printf '{request}' >&3; \
         cat <&3; exit 0"
    );
    let out = run(node, "timeout", &[REQUEST_SECONDS, "bash", "-c", &script]);
    assert!(
        out.status.success(),
        "node {}: request {request:?} failed: {}",
        node.id(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn run(node: &Node, program: &str, args: &[&str]) -> Output {
    node.command(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} in node {}: {e}", node.id()))
}

/// The metrics of `node`, whose answer must be a 200 in the text format.
fn scrape(node: &Node) -> Metrics {
    try_scrape(node).unwrap_or_else(|| panic!("node {}: no answer", node.id()))
}

/// The metrics of `node`; `None` if it closed the connection without an answer.
fn try_scrape(node: &Node) -> Option<Metrics> {
    let answer = send(node, "GET /metrics HTTP/1.1\\r\\nHost: lab\\r\\n\\r\\n");
    if answer.is_empty() {
        return None;
    }
    let (head, body) = answer
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("node {}: no head: {answer:?}", node.id()));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{head}"
    );
    Some(Metrics(body.to_owned()))
}

/// A scrape's text.
#[derive(Debug)]
struct Metrics(String);

impl Metrics {
    /// The value of sample `name` (with its labels, as the text has them).
    fn get(&self, name: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| {
                let (sample, value) = line.rsplit_once(' ')?;
                (sample == name).then(|| value.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no sample {name} in\n{}", self.0))
    }

    fn moves(&self, kind: &str, outcome: &str) -> f64 {
        self.get(&format!(
            "mosix_moves_total{{kind=\"{kind}\",outcome=\"{outcome}\"}}"
        ))
    }
}

/// Scrapes `node` until `holds`, which must come within [`STEP`]; returns that scrape.
fn wait_metrics(node: &Node, what: &str, holds: impl Fn(&Metrics) -> bool) -> Metrics {
    let deadline = Instant::now() + STEP;
    loop {
        let metrics = scrape(node);
        if holds(&metrics) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "node {}: {what} not within {STEP:?}:\n{}",
            node.id(),
            metrics.0
        );
        thread::sleep(POLL);
    }
}

/// The TCP ports that listen in `node`'s network.
fn listening(node: &Node) -> Vec<u16> {
    let out = run(node, "ss", &["-Hltn"]);
    assert!(out.status.success(), "ss failed in node {}", node.id());
    let mut ports: Vec<u16> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| {
            let local = line.split_whitespace().nth(3)?;
            local.rsplit_once(':')?.1.parse().ok()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    ports
}

/// The number of the last tick `job` printed.
fn last_tick(job: &Job<'_>) -> u32 {
    String::from_utf8_lossy(&job.stdout())
        .lines()
        .filter_map(|l| l.strip_prefix("tick ")?.parse().ok())
        .max()
        .unwrap_or(0)
}

#[test]
fn metrics_count_a_jobs_moves_and_shrug_off_garbage() {
    if !require_root() {
        return;
    }
    let addr: SocketAddr = ADDR.parse().unwrap();
    let mut cfg = LabConfig::new(3, bin_dir_of_current_test());
    cfg.metrics = BTreeMap::from([(1, addr), (2, addr)]);
    let lab = Lab::start(cfg).unwrap_or_else(|e| panic!("cannot start the lab: {e}"));
    let (home, there) = (lab.node(1), lab.node(2));

    // Without --metrics, the daemon listens on its peer port alone.
    assert_eq!(listening(lab.node(3)), vec![PEER_PORT]);
    assert_eq!(listening(home), vec![PEER_PORT, addr.port()]);

    let metrics = wait_metrics(home, "node 2 up", |m| {
        m.get("mosix_node_up{node=\"2\"}") == 1.0
    });
    assert_eq!(metrics.get("mosix_node_id"), 1.0);
    assert!(metrics.get("mosix_speed") > 0.0);
    assert!(metrics.get("mosix_cpus") > 0.0);
    assert!(metrics.get("mosix_memory_total_bytes") > 0.0);
    assert_eq!(metrics.moves("out", "done"), 0.0);
    assert_eq!(metrics.get("mosix_move_freeze_seconds_count"), 0.0);
    assert!(metrics.get("mosix_gossip_datagrams_received_total{result=\"accepted\"}") > 0.0);

    let go = lab.work_dir().join("go-metrics");
    let ticks = format!("{JOBS}/ticks.py");
    let job = Job::start(home, &[PYTHON, &ticks, go.to_str().unwrap()], Stdio::null())
        .unwrap_or_else(|e| panic!("cannot start the job: {e}"));
    job.wait_output("ready", STEP).unwrap();
    let metrics = scrape(home);
    assert_eq!(metrics.get("mosix_processes{where=\"home\"}"), 1.0);
    assert_eq!(metrics.get("mosix_processes{where=\"away\"}"), 0.0);

    // Out: the supervisor tells its daemon before the move's answer, so `migrate` returning
    // is enough.
    job.migrate("2").unwrap();
    let metrics = scrape(home);
    assert_eq!(metrics.moves("out", "done"), 1.0);
    assert_eq!(metrics.get("mosix_processes{where=\"away\"}"), 1.0);
    assert_eq!(metrics.get("mosix_move_image_bytes_count"), 1.0);
    assert!(metrics.get("mosix_move_image_bytes_sum") > 0.0);
    assert_eq!(metrics.get("mosix_move_freeze_seconds_count"), 1.0);
    let guest = wait_metrics(there, "the guest", |m| m.get("mosix_guests") == 1.0);
    assert_eq!(guest.moves("in", "done"), 1.0);

    // Away, its ticks are written home: forwarded calls.
    let tick = last_tick(&job);
    job.wait_output(&format!("tick {}", tick + 3), STEP)
        .unwrap();

    // Home.
    job.migrate("home").unwrap();
    let metrics = scrape(home);
    assert_eq!(metrics.moves("home", "done"), 1.0);
    assert_eq!(metrics.moves("out", "done"), 1.0);
    assert_eq!(metrics.get("mosix_move_freeze_seconds_count"), 2.0);
    assert!(metrics.get("mosix_forwarded_call_seconds_count") > 0.0);
    assert!(metrics.get("mosix_forwarded_call_seconds_sum") > 0.0);
    assert_eq!(metrics.get("mosix_processes{where=\"away\"}"), 0.0);
    for outcome in ["refused", "failed"] {
        for kind in ["out", "home", "on"] {
            assert_eq!(metrics.moves(kind, outcome), 0.0, "{kind} {outcome}");
        }
    }
    let left = wait_metrics(there, "the guest gone", |m| m.get("mosix_guests") == 0.0);
    assert_eq!(left.get("mosix_guest_departures_total{how=\"moved\"}"), 1.0);

    // Garbage gets an error or the door, and the daemon serves on.
    let answers = [
        send(home, "GARBAGE\\r\\n\\r\\n"),
        send(home, "\\x00\\xff\\x01\\r\\n\\r\\n"),
        send(home, "GET /nope HTTP/1.1\\r\\nHost: lab\\r\\n\\r\\n"),
        send(home, "POST /metrics HTTP/1.1\\r\\nHost: lab\\r\\n\\r\\n"),
    ];
    for answer in &answers {
        assert!(answer.starts_with("HTTP/1.1 4"), "{answer:?}");
    }
    assert!(answers[2].starts_with("HTTP/1.1 404"), "{}", answers[2]);
    assert!(answers[3].starts_with("HTTP/1.1 405"), "{}", answers[3]);
    // 64 KiB of header: refused (431) or cut off, never answered with metrics.
    let long = "a".repeat(64 << 10);
    let answer = send(
        home,
        &format!("GET /metrics HTTP/1.1\\r\\nX-Long: {long}\\r\\n\\r\\n"),
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    // Connections that say nothing take every place: a scrape is turned away. The daemon
    // closes them after its request timeout, while their client still holds them, and
    // scrapes are served again. No scrape runs while they open, so the first of them get
    // every place.
    let (host, port) = ADDR.split_once(':').unwrap();
    let idle: String = (0..IDLE_CONNECTIONS)
        .map(|i| format!("exec {}<>/dev/tcp/{host}/{port}; ", i + 3))
        .collect();
    let hold = format!("{idle}echo holding; sleep {IDLE_SECONDS}");
    let mut holding = home
        .command("timeout")
        .args([REQUEST_SECONDS, "bash", "-c", &hold])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut said = String::new();
    BufReader::new(holding.stdout.take().unwrap())
        .read_line(&mut said)
        .unwrap();
    assert_eq!(said, "holding\n");
    assert!(try_scrape(home).is_none(), "a scrape past idle connections");
    let deadline = Instant::now() + STEP;
    let metrics = loop {
        if let Some(metrics) = try_scrape(home) {
            break metrics;
        }
        assert!(Instant::now() < deadline, "idle connections never closed");
        thread::sleep(POLL);
    };
    assert!(
        holding.try_wait().unwrap().is_none(),
        "served only once the idle client gave up"
    );
    assert_eq!(metrics.moves("home", "done"), 1.0);
    holding.wait().unwrap();

    // The job never noticed.
    std::fs::write(&go, "").unwrap();
    let out = job.finish(STEP).unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("done"));
    let end = wait_metrics(home, "the job gone", |m| {
        m.get("mosix_processes{where=\"home\"}") == 0.0
    });
    assert_eq!(end.moves("home", "done"), 1.0);
}
