//! `mosmon` through a real terminal: tmux runs a shell in node 1 of a lab, the test types
//! `mosmon` there and reads the screen with `capture-pane`, as a person watching it would.
//! The node numbers show along the bottom; a busy node's load bar rises above the idle ones;
//! `m`, `s`, `u` and `l` change the view; a node whose daemon stops is left out, or shown
//! `DEAD` with `d`; node 1's own daemon stopped is said on the screen until it is back; a map
//! wider than the screen scrolls; `q`, Ctrl-C and SIGTERM give the shell back. Every wait
//! has a deadline.

use std::fs;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use rmosix_lab::{
    BusyLoop, Lab, LabConfig, Node, bin_dir_of_current_test, processes_in, require_root,
};

/// The terminal's size: 120 columns hold 38 bars of 2-digit node numbers.
const COLUMNS: &str = "120";
const ROWS: &str = "40";
/// Deadline of a step the screen shows at once: a key, the shell's prompt.
const STEP: Duration = Duration::from_secs(20);
/// How long the cluster may take to show what it does (every node up after start, a busy
/// node's load risen, a stopped daemon dead): gossip, the failure detector and a loaded test
/// machine's slack (see view.rs).
const CLUSTER: Duration = Duration::from_secs(60);
/// How long the test sleeps between two looks at the screen.
const POLL: Duration = Duration::from_millis(100);
/// The shell's prompt in the pane, to tell when the shell is back.
const PROMPT: &str = "lab-shell$";

/// tmux servers started by this process: makes socket names unique when tests run in
/// parallel.
static SERVERS: AtomicU32 = AtomicU32::new(0);

/// A tmux server of its own (`tmux -L NAME`) with one session: a shell in a node. Dropping it
/// kills the server, and with it the shell and whatever runs there, also when a test fails,
/// and removes the server's socket file (tmux leaves it).
struct Tmux {
    socket: String,
    /// The socket file, once the server runs.
    path: Option<PathBuf>,
}

impl Tmux {
    /// Starts `bash --norc -i` in `node` in a detached 120x40 session, and waits for its
    /// prompt.
    fn start(node: &Node) -> Tmux {
        let socket = format!(
            "rmosix-mosmon-{}-{}",
            std::process::id(),
            SERVERS.fetch_add(1, Ordering::Relaxed)
        );
        let mut tmux = Tmux { socket, path: None };
        let mut shell = node.command("bash");
        shell.args(["--norc", "-i"]);
        // tmux runs the pane's program directly when given it as several arguments; the
        // node's environment goes through `env`, since the server keeps its own.
        let mut argv = vec!["env".to_owned()];
        for (key, value) in shell.get_envs() {
            let key = key.to_string_lossy();
            match value {
                Some(value) => argv.push(format!("{key}={}", value.to_string_lossy())),
                None => argv.extend(["-u".to_owned(), key.into_owned()]),
            }
        }
        argv.push(format!("PS1={PROMPT} "));
        argv.push(shell.get_program().to_string_lossy().into_owned());
        argv.extend(shell.get_args().map(|a| a.to_string_lossy().into_owned()));
        let mut args = vec!["new-session", "-d", "-x", COLUMNS, "-y", ROWS];
        args.extend(argv.iter().map(String::as_str));
        tmux.run(&args);
        let path = tmux
            .run(&["display-message", "-p", "#{socket_path}"])
            .stdout;
        tmux.path = Some(PathBuf::from(String::from_utf8_lossy(&path).trim()));
        tmux.wait("the shell's prompt", STEP, |s| s.contains(PROMPT));
        tmux
    }

    /// `tmux -L SOCKET ARGS`, which must succeed.
    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run tmux (./dev installs it): {e}"));
        assert!(
            out.status.success(),
            "tmux {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// Types `keys` in the pane: text as it is, or a tmux key name (`Enter`, `Right`,
    /// `NPage`).
    fn keys(&self, keys: &str) {
        self.run(&["send-keys", keys]);
    }

    /// Types a command line and Enter.
    fn line(&self, text: &str) {
        self.run(&["send-keys", "-l", text]);
        self.keys("Enter");
    }

    /// What the pane shows now.
    fn screen(&self) -> Screen {
        let out = self.run(&["capture-pane", "-p"]);
        Screen(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits until the screen shows what `ready` asks for, and returns it; fails after
    /// `within`, showing the screen.
    fn wait(&self, what: &str, within: Duration, ready: impl Fn(&Screen) -> bool) -> Screen {
        let deadline = Instant::now() + within;
        loop {
            let screen = self.screen();
            if ready(&screen) {
                return screen;
            }
            if Instant::now() >= deadline {
                panic!("{what}: not within {within:?}; the screen:\n{}", screen.0);
            }
            thread::sleep(POLL);
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(path) = &self.path {
            let _ = fs::remove_file(path);
        }
    }
}

/// A pane's text, as `capture-pane -p` gives it.
struct Screen(String);

impl Screen {
    fn contains(&self, text: &str) -> bool {
        self.0.contains(text)
    }

    fn lines(&self) -> Vec<Vec<char>> {
        self.0.lines().map(|l| l.chars().collect()).collect()
    }

    /// The first line: the view's title and which nodes are shown.
    fn title(&self) -> &str {
        self.0.lines().next().unwrap_or_default()
    }

    /// The line of node numbers along the bottom: the lowest line that holds only numbers.
    /// Its index, and each number with the column where it ends (its bar's right edge).
    fn numbers(&self) -> Option<(usize, Vec<(u16, usize)>)> {
        let lines: Vec<&str> = self.0.lines().collect();
        lines.iter().enumerate().rev().find_map(|(row, line)| {
            let mut found = Vec::new();
            let mut column = 0;
            for word in line.split(' ') {
                if !word.is_empty() {
                    found.push((word.parse().ok()?, column + word.chars().count() - 1));
                }
                column += word.chars().count() + 1;
            }
            (!found.is_empty()).then_some((row, found))
        })
    }

    /// The node numbers along the bottom.
    fn nodes(&self) -> Vec<u16> {
        self.numbers()
            .map(|(_, found)| found.into_iter().map(|(node, _)| node).collect())
            .unwrap_or_default()
    }

    /// What the column of node `id`'s bar shows above its number, top to bottom: the rows of
    /// the chart, which have the scale's axis line.
    fn column(&self, id: u16) -> Option<String> {
        let (row, found) = self.numbers()?;
        let (_, x) = found.into_iter().find(|(node, _)| *node == id)?;
        let lines = self.lines();
        Some(
            lines[..row]
                .iter()
                .filter(|l| l.contains(&'│'))
                .map(|l| l.get(x).copied().unwrap_or(' '))
                .collect(),
        )
    }

    /// How many cells of node `id`'s bar are filled, partly or fully; `None` if not shown.
    fn bar(&self, id: u16) -> Option<usize> {
        let column = self.column(id)?;
        Some(column.chars().filter(|c| ('▁'..='█').contains(c)).count())
    }

    /// Whether the shell is back: mosmon's screen gone, the prompt on the last line.
    fn shell(&self) -> bool {
        let last = self.0.lines().rev().find(|l| !l.trim().is_empty());
        !self.contains("mosmon:") && last.is_some_and(|l| l.trim() == PROMPT)
    }
}

/// A lab; each daemon measures its own node, so one node's busy processes raise its load
/// alone.
fn start_lab(nodes: usize) -> Lab {
    let cfg = LabConfig::new(nodes, bin_dir_of_current_test());
    Lab::start(cfg).unwrap_or_else(|e| panic!("cannot start a {nodes}-node lab: {e}"))
}

/// A CPU-busy loop in `node`, killed when dropped.
fn busy(node: &Node) -> BusyLoop {
    node.busy_loop().unwrap_or_else(|e| panic!("{e}"))
}

/// SIGHUP to `node`'s daemon: it reads the map again.
fn reload(node: &Node) {
    node.hangup_daemon().unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn mosmon_shows_load_views_and_dead_nodes_and_quits_to_the_shell() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let (n1, n2, n3) = (lab.node(1), lab.node(2), lab.node(3));
    let tmux = Tmux::start(n1);
    tmux.line("mosmon");
    tmux.wait("every node shown up, with its number", CLUSTER, |s| {
        s.title().contains("node 1's view, load (") && s.nodes() == [1, 2, 3]
    });

    // Three busy processes at node 2: its bar rises well above the idle nodes' bars.
    let busy = [busy(n2), busy(n2), busy(n2)];
    let screen = tmux.wait("node 2's load bar above the others", CLUSTER, |s| {
        let bars = [1, 2, 3].map(|id| s.bar(id).unwrap_or(0));
        bars[1] >= 6 && bars[1] >= bars[0].max(bars[2]) + 4
    });
    eprintln!("busy node 2:\n{}", screen.0);
    drop(busy);

    // Each view has its title; memory bars show the free part as '+' up to the total, speed
    // bars stand for every live node, with the CPUs under the numbers.
    tmux.keys("m");
    tmux.wait("m: the memory view", STEP, |s| {
        s.title().contains("memory, MB") && s.column(1).is_some_and(|c| c.contains('+'))
    });
    tmux.keys("s");
    tmux.wait("s: the speed view", STEP, |s| {
        s.title().contains("speed (10000 = a standard CPU)")
            && [1, 2, 3].iter().all(|&id| s.bar(id).is_some_and(|b| b > 0))
            && s.0.lines().any(|l| l.trim_start().starts_with("CPUs "))
    });
    tmux.keys("u");
    tmux.wait("u: the utilisation view", STEP, |s| {
        s.title().contains("utilisation, %") && s.contains("100│")
    });
    tmux.keys("l");
    let screen = tmux.wait("l: the load view again", STEP, |s| {
        s.title().contains("load (100 = one busy process")
    });
    assert_eq!(screen.nodes(), [1, 2, 3], "{}", screen.0);
    tmux.keys("t");
    tmux.wait("t: the totals line", STEP, |s| {
        s.contains("totals: 3 of 3 nodes up, ")
    });
    tmux.keys("h");
    tmux.wait("h: the line of keys", STEP, |s| s.contains("keys: l load"));
    tmux.keys("t");
    tmux.keys("h");
    tmux.wait("t and h again: neither line", STEP, |s| {
        !s.contains("totals:") && !s.contains("keys:")
    });

    // Node 3's daemon stops: node 3 is left out, then shown DEAD with d, then left out again.
    n3.stop_daemon().unwrap_or_else(|e| panic!("{e}"));
    tmux.wait("node 3 left out as dead", CLUSTER, |s| {
        s.nodes() == [1, 2] && s.title().contains("1 dead hidden (d)")
    });
    tmux.keys("d");
    tmux.wait("node 3 shown DEAD", STEP, |s| {
        s.nodes() == [1, 2, 3] && s.column(3).is_some_and(|c| c.trim_start() == "DEAD")
    });
    tmux.keys("d");
    tmux.wait("node 3 left out again", STEP, |s| s.nodes() == [1, 2]);

    // Node 1's own daemon stops: mosmon says so, and shows the cluster again once it is back.
    n1.stop_daemon().unwrap_or_else(|e| panic!("{e}"));
    tmux.wait("the daemon unreachable", STEP, |s| {
        s.contains("cannot reach mosixd at ") && s.contains("retrying every second")
    });
    n1.start_daemon().unwrap_or_else(|e| panic!("{e}"));
    tmux.wait("the cluster again", CLUSTER, |s| {
        !s.contains("cannot reach") && s.nodes().starts_with(&[1])
    });

    tmux.keys("q");
    tmux.wait("the shell back after q", STEP, Screen::shell);
}

#[test]
fn mosmon_scrolls_a_map_wider_than_the_screen() {
    if !require_root() {
        return;
    }
    let lab = start_lab(3);
    let n1 = lab.node(1);
    // Node 1's map grows to 60 nodes; 4 to 60 are addresses of the lab's bridge where nobody
    // answers, so they stay dead.
    fs::write(lab.map_path(), "1 10.231.0.1 60\n").expect("write the map");
    // The daemon takes SIGHUP once it serves: until then, SIGHUP would kill it.
    let deadline = Instant::now() + STEP;
    while !n1
        .command("mosctl")
        .arg("status")
        .output()
        .is_ok_and(|o| o.status.success())
    {
        assert!(Instant::now() < deadline, "node 1's daemon does not answer");
        thread::sleep(POLL);
    }
    reload(n1);
    if let Err(e) = n1.wait_log("map reloaded", STEP) {
        panic!("{e}");
    }
    let tmux = Tmux::start(n1);
    tmux.line("mosmon -d -t");
    // The numbers under the bars must be on the screen: one caught mid-redraw shows none,
    // and node 60 is then missing from it whether or not it is on the page (a CI run,
    // 2026-12-06).
    let screen = tmux.wait("the first page of 60 nodes", CLUSTER, |s| {
        s.title().contains(" of 60 →")
            && s.contains("totals: 3 of 60 nodes up")
            && s.nodes().len() > 10
            && s.column(60).is_none()
    });
    let nodes = screen.nodes();
    let page = nodes.len();
    assert_eq!(nodes, (1..=page as u16).collect::<Vec<_>>(), "{}", screen.0);
    assert!(
        screen.title().contains(&format!("nodes 1-{page} of 60 →")),
        "{}",
        screen.0
    );
    assert_eq!(
        screen.column(4).as_deref().map(str::trim_start),
        Some("DEAD")
    );

    tmux.keys("Right");
    tmux.wait("one node to the right", STEP, |s| {
        s.title()
            .contains(&format!("← nodes 2-{} of 60 →", page + 1))
            && s.nodes() == (2..=page as u16 + 1).collect::<Vec<_>>()
    });
    tmux.keys("NPage");
    let first = 60 - page as u16 + 1;
    tmux.wait("the last page", STEP, |s| {
        s.title().contains(&format!("← nodes {first}-60 of 60"))
            && !s.title().contains('→')
            && s.nodes() == (first..=60).collect::<Vec<_>>()
    });
    tmux.keys("PPage");
    tmux.keys("Left");
    tmux.wait("back to the first page", STEP, |s| {
        s.title().contains(&format!("nodes 1-{page} of 60 →")) && s.nodes().first() == Some(&1)
    });

    // Without the dead nodes, the live three fit.
    tmux.keys("d");
    tmux.wait("the live nodes only", STEP, |s| {
        s.nodes() == [1, 2, 3] && s.title().contains("nodes 1-3 of 60, 57 dead hidden (d)")
    });

    // SIGTERM, as a service manager or `kill` sends it, and Ctrl-C give the shell back too.
    let mosmon = processes_in(n1)
        .into_iter()
        .find(|p| p.name == "mosmon")
        .expect("mosmon runs in node 1");
    let status = Command::new("kill")
        .args(["-TERM", &mosmon.host_pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
    tmux.wait("the shell back after SIGTERM", STEP, Screen::shell);
    tmux.line("mosmon");
    tmux.wait("mosmon again", STEP, |s| s.title().starts_with("mosmon: "));
    tmux.keys("C-c");
    tmux.wait("the shell back after Ctrl-C", STEP, Screen::shell);
}
