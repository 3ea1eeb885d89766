//! The control protocol: tools and supervisors talking to the local `mosixd`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::{MoveError, Tally};

/// Where the daemon listens when neither `--socket` nor [`SOCKET_ENV`] says otherwise.
pub const DEFAULT_SOCKET: &str = "/run/mosix/mosixd.sock";

/// Environment variable that overrides [`DEFAULT_SOCKET`] for the daemon and every tool.
pub const SOCKET_ENV: &str = "MOSIX_SOCKET";

/// Environment variable naming a user (name or uid) whose daemon the tools trust besides
/// root and the user running them (see docs/security.md).
pub const DAEMON_USER_ENV: &str = "MOSIX_DAEMON_USER";

/// Where a process should run: at its home, or on a numbered node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// The node the process was started on.
    Home,
    /// A node of the map, by number.
    Node(u16),
}

/// A target that is neither `home` nor a node number.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} is not a node number or \"home\"")]
pub struct ParseTargetError(String);

impl FromStr for Target {
    type Err = ParseTargetError;

    /// Parses MOSIX's `migrate` argument: `home` or a node number.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "home" {
            return Ok(Target::Home);
        }
        s.parse()
            .map(Target::Node)
            .map_err(|_| ParseTargetError(s.to_owned()))
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Home => f.write_str("home"),
            Target::Node(n) => write!(f, "node {n}"),
        }
    }
}

/// The first line a client sends on a new control connection.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Request {
    /// Sent by a job supervisor (`mosrun`). After [`Reply::Ok`] the connection stays open:
    /// the supervisor sends [`Report`]s on it and receives [`Command`]s.
    Supervise {
        /// How the job's processes are to be balanced; each starts with it.
        advice: Advice,
    },
    /// Move a supervised process. The daemon replies once the move has finished or failed.
    Migrate {
        /// The process, by its PID at home.
        pid: i32,
        /// Where it should go.
        target: Target,
    },
    /// Move a supervised process where the balancer would send it now (`migrate PID
    /// balance`), which may be where it is. Answered as [`Request::Migrate`] is, once it has
    /// moved, or with [`Reply::Location`] where it stays.
    Balance {
        /// The process, by its PID at home.
        pid: i32,
    },
    /// Lock a supervised process against automatic moves, or unlock it (`migrate PID lock|
    /// unlock`); `migrate` and `expel` still move it. Answered with [`Reply::Ok`].
    Lock {
        /// The process, by its PID at home.
        pid: i32,
        /// Locked from now on, or not.
        locked: bool,
    },
    /// The node a job about to start should start on (`mosrun -b`), for a process that will
    /// need `memory_need_mb` MiB; answered with [`Reply::Location`], or [`Reply::Ok`] if this
    /// node is best.
    Best {
        /// What it says it will need, MiB (`mosrun -m`); 0 if it said nothing.
        memory_need_mb: u64,
    },
    /// The supervised processes of this node, for `mosps`: all of them, or `uid`'s only.
    /// Answered with [`Reply::Processes`].
    Processes {
        /// Whose; `None` for everyone's.
        uid: Option<u32>,
    },
    /// Ask where a process runs; answered with [`Reply::Location`].
    Where {
        /// The process, by its PID at home.
        pid: i32,
    },
    /// Open a guest session on `node` for the caller's own uid and groups: the daemon opens
    /// an authenticated link to `node`'s daemon, which starts a guest there. Answered with
    /// [`Reply::Session`], whose line carries the link's TCP socket (SCM_RIGHTS) for the
    /// caller to speak the sealed session on directly, or with [`Reply::Error`].
    OpenSession {
        /// The node to start the guest on.
        node: u16,
    },
    /// Ask for the daemon's state; answered with [`Reply::Status`].
    Status,
    /// Sent by a guest supervisor (`mosixd guest`) that the daemon of this node started for a
    /// session from `home_node`; the daemon accepts it only from such a guest (see
    /// docs/security.md). After [`Reply::Ok`] the connection stays open: the guest sends
    /// [`GuestReport`]s on it, and its end tells the daemon the guest has gone.
    Guest {
        /// The node the session came from, as the daemon told the guest when it started it.
        home_node: u16,
    },
    /// Ask for the processes this node hosts; answered with [`Reply::Guests`].
    Guests,
    /// Turn one of this node's modes on or off (`mosctl stay|nostay|lstay|nolstay|block|
    /// noblock|quiet|noquiet|nomfs|mfs`). Root only. Answered with [`Reply::Ok`].
    SetMode {
        /// Which mode.
        mode: NodeMode,
        /// On (`mosctl stay`) or off (`mosctl nostay`).
        on: bool,
    },
    /// Block this node and send every guest home (`mosctl expel`). Root only. Answered once
    /// every guest has gone home or failed to, with [`Reply::Sent`].
    Expel,
    /// Bring home every process of this node that runs elsewhere (`mosctl bring`). Root
    /// only. Answered once each has come home or failed to, with [`Reply::Sent`].
    Bring,
    /// Map a node number to its address, or an address or host name to its node
    /// (`mosctl whois`); `None` asks for this node. Answered with [`Reply::Whois`].
    Whois {
        /// A node number, an IP address or a host name of the map.
        query: Option<String>,
    },
    /// Whether `node`'s daemon answers an authenticated ping (`mosctl isup`). Answered with
    /// [`Reply::Up`].
    Isup {
        /// The node to try.
        node: u16,
    },
    /// A node's figures as the cluster view has them (`mosctl getload|getspeed|getmem|getfree|
    /// getutil [NODE]`); `None` asks for this node. Anyone may ask. Answered with
    /// [`Reply::Figures`], or an error if the node is not in the map, is dead, or has not
    /// published yet.
    Figures {
        /// The node, by number.
        node: Option<u16>,
    },
    /// Set this node's CPU speed (`mosctl setspeed N`; 10000 is a standard CPU). Root only.
    /// In memory only: a restarted daemon measures its speed again. Answered with
    /// [`Reply::Ok`].
    SetSpeed {
        /// The new speed.
        speed: u32,
    },
}

/// The daemon's answer to a [`Request`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reply {
    /// Done, or (for `Supervise`) accepted.
    Ok,
    /// A session is open: the session socket comes with this line (SCM_RIGHTS) and these are
    /// its keys, 128 hex digits (see rmosix_seal).
    Session {
        /// Both directions' keys.
        keys: String,
        /// Where this node's MFS is mounted, if it is and DFSA is on: its numbered
        /// directories are the same file systems on every node.
        #[serde(default)]
        dfsa_mfs: Option<String>,
        /// This node's other mounts that are the same on every node (`mosixd --dfsa`).
        #[serde(default)]
        dfsa_mounts: Vec<String>,
        /// This node's number, whose own MFS directory its processes reach by forwarding.
        #[serde(default)]
        dfsa_node: Option<u16>,
        /// This node's prefixes of system files, opened away when the same there
        /// (`mosixd --same-files`).
        #[serde(default)]
        dfsa_system: Vec<String>,
    },
    /// Where a process runs.
    Location {
        /// The node number; the daemon's own node when the process is at home.
        node: u16,
    },
    /// The daemon's state.
    Status {
        /// This daemon's node number.
        node: u16,
        /// Processes currently running under a supervisor of this node.
        processes: u32,
        /// Processes of other nodes that run here.
        hosted: u32,
        /// Every node of the map, this one included, lowest number first, as the cluster
        /// view has it.
        nodes: Vec<NodeStatus>,
    },
    /// One node's figures, for a [`Request::Figures`].
    Figures {
        /// The node.
        node: u16,
        /// Its latest published figures.
        figures: NodeFigures,
    },
    /// The supervised processes of this node, lowest PID first.
    Processes {
        /// One entry each.
        processes: Vec<ProcessEntry>,
    },
    /// The processes this node hosts, by home node and home PID.
    Guests {
        /// One entry per hosted process.
        processes: Vec<HostedProcess>,
    },
    /// Which node a `whois` named, and its entry in the map.
    Whois {
        /// The node number.
        node: u16,
        /// Its host as the map gives it: an IP address or a host name.
        host: String,
    },
    /// Whether the node of an `isup` answered within the bound.
    Up {
        /// It did.
        up: bool,
    },
    /// What an `expel` or a `bring` did: how many processes went where they were sent, and
    /// why each of the others did not (one line each, e.g. `process 4711 (home node 1): ...`).
    Sent {
        /// Processes moved.
        moved: u32,
        /// One line per process that stayed.
        failures: Vec<String>,
    },
    /// A move failed, and why (a `migrate` prints it after "cannot move PID to node N: ").
    Failed(MoveError),
    /// The request failed; `message` is meant for the user, verbatim.
    Error {
        /// What went wrong, e.g. `process 4711 is not running under mosrun`.
        message: String,
    },
}

/// One node of the map as [`Reply::Status`] shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    /// Its node number.
    pub node: u16,
    /// Whether it answers, as the cluster view has it.
    pub liveness: Liveness,
    /// Its latest published figures; `None` for a dead node, or one not heard yet.
    pub figures: Option<NodeFigures>,
}

/// Whether a node answers, as the gossip's failure detector has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Liveness {
    /// It answers.
    Up,
    /// It missed a probe; it is declared dead unless it answers soon.
    Suspect,
    /// It is dead, has left, or was never heard.
    Dead,
}

impl fmt::Display for Liveness {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Liveness::Up => "up",
            Liveness::Suspect => "suspect",
            Liveness::Dead => "dead",
        })
    }
}

/// What a node publishes about itself, in MOSIX's units.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeFigures {
    /// Load: 100 is one CPU-busy process on a standard CPU.
    pub load: u32,
    /// CPU speed: 10000 is a standard CPU.
    pub speed: u32,
    /// CPUs its processes may use, in thousandths.
    pub milli_cpus: u32,
    /// Memory its processes may use, bytes.
    pub mem_total: u64,
    /// Of which free, bytes.
    pub mem_free: u64,
    /// CPU utilisation, percent.
    pub utilisation_pct: u8,
    /// Its `mosctl` modes.
    pub modes: NodeModes,
}

/// A node's `mosctl` modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct NodeModes {
    /// `mosctl stay`.
    pub stay: bool,
    /// `mosctl lstay`.
    pub lstay: bool,
    /// `mosctl block`.
    pub block: bool,
    /// `mosctl quiet`.
    pub quiet: bool,
    /// `mosctl expel` under way.
    pub expel: bool,
}

/// How a job's processes are to be balanced: mosrun's MOSIX options that steer the balancer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advice {
    /// `mosrun -L`: no automatic moves (a `migrate` still moves it).
    pub locked: bool,
    /// How its statistics decay (`mosrun -c -i -n -s -f`).
    pub decay: Decay,
    /// `mosrun -m MB`: the memory it says it will need, MiB; 0 if it said nothing.
    pub memory_need_mb: u64,
}

/// How a process's statistics decay: MOSIX's classes (docs/balancing.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decay {
    /// No advice: slow decay.
    #[default]
    Normal,
    /// `mosrun -c`: CPU-bound from the start.
    CpuBound,
    /// `mosrun -i`: I/O-bound, fast decay.
    IoBound,
    /// `mosrun -n`: no decay.
    NoDecay,
    /// `mosrun -s`: slow decay.
    Slow,
    /// `mosrun -f`: fast decay.
    Fast,
    /// `mosrun -d N`: N/10000 of the statistics kept each second (0 to 10000).
    Keep(u16),
}

/// A supervised process as `mosps` shows it. CPU time and memory are read where it runs: a
/// process away whose node did not answer in time has `None`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessEntry {
    /// Its PID at home.
    pub pid: i32,
    /// Its real uid.
    pub uid: u32,
    /// The node it runs on.
    pub node: u16,
    /// Locked against automatic moves.
    pub locked: bool,
    /// How many times it has moved.
    pub moves: u32,
    /// Why its last move failed, if it did; cleared when one succeeds.
    pub cant_move: Option<String>,
    /// CPU time it used (user and system), milliseconds.
    pub cpu_ms: Option<u64>,
    /// Its resident memory, KiB.
    pub rss_kib: Option<u64>,
    /// Its command line (the program's, also while away), or its name.
    pub command: String,
}

/// A mode an operator turns on and off with `mosctl` (docs/modes.md). Each lives in the
/// daemon's memory only, as in MOSIX a reboot cleared them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NodeMode {
    /// No process of this node, own or guest, leaves by automatic balancing.
    Stay,
    /// This node's own processes do not leave by automatic balancing; guests may.
    Lstay,
    /// New guests are refused; those here stay.
    Block,
    /// The node takes no part in balancing: it decides nothing and other nodes send it
    /// nothing (its own processes may still come home).
    Quiet,
    /// This node's files are closed to other nodes' MFS (`mosctl nomfs`; off: `mosctl mfs`).
    Nomfs,
}

impl fmt::Display for NodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NodeMode::Stay => "stay",
            NodeMode::Lstay => "lstay",
            NodeMode::Block => "block",
            NodeMode::Quiet => "quiet",
            NodeMode::Nomfs => "nomfs",
        })
    }
}

/// A process of another node that runs here, as [`Reply::Guests`] lists it. The daemon reads
/// the figures from the kernel when asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostedProcess {
    /// The node it belongs to.
    pub home_node: u16,
    /// Its PID there.
    pub home_pid: i32,
    /// Its PID here.
    pub pid: i32,
    /// The user it runs as.
    pub uid: u32,
    /// CPU time it used here (user and system), in milliseconds.
    pub cpu_ms: u64,
    /// Its resident memory, in KiB.
    pub rss_kib: u64,
    /// How long it has been here, in seconds.
    pub seconds_here: u64,
}

/// What a guest tells its node's daemon about the one process it serves.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GuestReport {
    /// The process runs here.
    Running {
        /// Its PID here: a child of the guest.
        pid: i32,
        /// Its PID at home.
        home_pid: i32,
    },
    /// How long, in all, the process has waited here for calls forwarded home, in
    /// milliseconds (the balancer's forwarding share).
    Waited {
        /// Milliseconds since it came.
        ms: u64,
    },
    /// The process left this node; the guest ends after this report.
    Left {
        /// How.
        how: Departure,
    },
}

/// How a hosted process left its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Departure {
    /// It ended (exited, or was killed by a signal).
    Ended,
    /// It went home or on to another node.
    Moved,
    /// Its session with home ended under it, and it was killed.
    Lost,
}

/// What a supervisor tells the daemon about the processes it runs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Report {
    /// A process (the job or one of its descendants) now runs under this supervisor, at home.
    Started {
        /// Its PID.
        pid: i32,
    },
    /// A process forked (fork or vfork; a new thread is no fork). Sent at the parent's fork
    /// event, which comes whether or not its child is still alive when the daemon reads the
    /// report: the program's record learns it (placement at exec).
    Forked {
        /// The parent's PID.
        pid: i32,
    },
    /// A process changed node.
    Moved {
        /// Its PID.
        pid: i32,
        /// Where it runs now; `None` means home.
        node: Option<u16>,
    },
    /// A process exited; the daemon forgets it.
    Ended {
        /// Its PID.
        pid: i32,
    },
    /// A process has just exec'd and waits, stopped before its new program runs, for a
    /// [`Command::Place`] (the balancer's placement at exec).
    Execed {
        /// Its PID.
        pid: i32,
    },
    /// Outcome of the [`Command::Migrate`] with the same `id`.
    MigrateDone {
        /// The command's id.
        id: u64,
        /// Why it failed, if it did.
        result: Result<(), MoveError>,
    },
    /// What the supervisor counted since its last tally, for the daemon's metrics: at most
    /// one a second, and only when it counted something.
    Tally(Tally),
}

/// What the daemon asks of a supervisor.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// Move `pid` to `target`, then answer with [`Report::MigrateDone`] carrying `id`.
    Migrate {
        /// Chosen by the daemon, unique per daemon run.
        id: u64,
        /// The process to move.
        pid: i32,
        /// Where to move it.
        target: Target,
    },
    /// Where a process that reported [`Report::Execed`] should run: on `node`, or (`None`)
    /// where it is. No answer is expected.
    Place {
        /// The process.
        pid: i32,
        /// The node to move it to.
        node: Option<u16>,
    },
    /// Whoever asked for order `id` gave up waiting: drop it if no move has started for it
    /// yet (and answer it with [`MoveError::Cancelled`]); a move under way goes on and is
    /// answered as usual.
    Cancel {
        /// The [`Command::Migrate`]'s id.
        id: u64,
    },
}

#[cfg(test)]
mod tests {
    use serde::de::DeserializeOwned;

    use super::*;
    use crate::{LineReader, encode_line};

    fn round_trip<T: Serialize + DeserializeOwned + PartialEq + fmt::Debug>(msg: T) {
        let line = encode_line(&msg).unwrap();
        let mut reader = LineReader::new();
        reader.feed(&line).unwrap();
        assert_eq!(reader.next_message::<T>().unwrap(), Some(msg));
    }

    #[test]
    fn every_control_message_round_trips() {
        for target in [Target::Home, Target::Node(0), Target::Node(u16::MAX)] {
            round_trip(Request::Migrate { pid: 4711, target });
            round_trip(Command::Migrate {
                id: u64::MAX,
                pid: -1,
                target,
            });
        }
        round_trip(Command::Cancel { id: 7 });
        round_trip(Request::Supervise {
            advice: Advice {
                locked: true,
                decay: Decay::IoBound,
                memory_need_mb: 512,
            },
        });
        round_trip(Request::Balance { pid: 7 });
        round_trip(Request::Lock {
            pid: 7,
            locked: true,
        });
        round_trip(Request::Best { memory_need_mb: 0 });
        round_trip(Request::Processes { uid: Some(1000) });
        round_trip(Request::Where { pid: 1 });
        round_trip(Request::OpenSession { node: 3 });
        round_trip(Request::Status);
        round_trip(Request::Guests);
        round_trip(Request::Guest { home_node: 1 });
        for mode in [
            NodeMode::Stay,
            NodeMode::Lstay,
            NodeMode::Block,
            NodeMode::Quiet,
            NodeMode::Nomfs,
        ] {
            round_trip(Request::SetMode { mode, on: true });
            round_trip(Request::SetMode { mode, on: false });
        }
        round_trip(Request::Expel);
        round_trip(Request::Bring);
        round_trip(Request::Whois { query: None });
        round_trip(Request::Whois {
            query: Some("10.0.0.2".into()),
        });
        round_trip(Request::Isup { node: 3 });
        round_trip(Reply::Whois {
            node: 2,
            host: "node2.example".into(),
        });
        round_trip(Reply::Up { up: false });
        round_trip(Reply::Processes {
            processes: vec![ProcessEntry {
                pid: 4711,
                uid: 1000,
                node: 3,
                locked: false,
                moves: 2,
                cant_move: Some("it has 2 threads".into()),
                cpu_ms: Some(1500),
                rss_kib: None,
                command: "python3 crunch.py".into(),
            }],
        });
        round_trip(Reply::Sent {
            moved: 3,
            failures: vec!["process 4711 (home node 1): node 1 is down (no route)".into()],
        });
        round_trip(Reply::Guests {
            processes: vec![HostedProcess {
                home_node: 1,
                home_pid: 4711,
                pid: 12,
                uid: 1000,
                cpu_ms: u64::MAX,
                rss_kib: 65536,
                seconds_here: 3,
            }],
        });
        round_trip(GuestReport::Running {
            pid: 12,
            home_pid: 4711,
        });
        for how in [Departure::Ended, Departure::Moved, Departure::Lost] {
            round_trip(GuestReport::Left { how });
        }
        round_trip(Reply::Ok);
        round_trip(Reply::Location { node: 2 });
        round_trip(Reply::Status {
            node: 1,
            processes: 5,
            hosted: 2,
            nodes: vec![
                NodeStatus {
                    node: 1,
                    liveness: Liveness::Up,
                    figures: Some(figures()),
                },
                NodeStatus {
                    node: 2,
                    liveness: Liveness::Suspect,
                    figures: Some(NodeFigures::default()),
                },
                NodeStatus {
                    node: 3,
                    liveness: Liveness::Dead,
                    figures: None,
                },
            ],
        });
        round_trip(Request::Figures { node: None });
        round_trip(Request::Figures { node: Some(3) });
        round_trip(Request::SetSpeed { speed: 12000 });
        round_trip(Reply::Figures {
            node: 2,
            figures: figures(),
        });
        round_trip(Reply::Error {
            message: "no node 7 in /etc/mosix.map\n\"x\"".into(),
        });
        round_trip(Report::Started { pid: 10 });
        round_trip(Report::Forked { pid: 10 });
        round_trip(Report::Moved {
            pid: 10,
            node: Some(3),
        });
        round_trip(Report::Moved {
            pid: 10,
            node: None,
        });
        round_trip(Report::Ended { pid: 10 });
        round_trip(Report::MigrateDone {
            id: 1,
            result: Ok(()),
        });
        round_trip(Report::MigrateDone {
            id: 2,
            result: Err(crate::NotMovable::Threads(2).into()),
        });
        let mut tally = Tally::default();
        tally.count_move(crate::MoveKind::Home, &Ok(()));
        tally.count_bytes(u64::MAX);
        tally.count_freeze(0);
        tally.forwarded_us.observe(&crate::FORWARDED_US_BOUNDS, 7);
        round_trip(Report::Tally(tally));
        round_trip(Report::Tally(Tally::default()));
    }

    /// Figures with every field at its widest.
    fn figures() -> NodeFigures {
        NodeFigures {
            load: u32::MAX,
            speed: u32::MAX,
            milli_cpus: u32::MAX,
            mem_total: u64::MAX,
            mem_free: u64::MAX,
            utilisation_pct: 100,
            modes: NodeModes {
                stay: true,
                lstay: true,
                block: true,
                quiet: true,
                expel: true,
            },
        }
    }

    fn fits_a_reply(status: Reply) {
        let line = crate::encode_reply(&status).unwrap();
        assert!(line.len() > crate::MAX_LINE);
        let mut reader = LineReader::for_replies();
        reader.feed(&line).unwrap();
        assert_eq!(reader.next_message::<Reply>().unwrap(), Some(status));
    }

    #[test]
    fn the_status_of_the_largest_map_of_dead_nodes_fits_a_reply() {
        let nodes = (1..=u16::MAX)
            .map(|node| NodeStatus {
                node,
                liveness: Liveness::Dead,
                figures: None,
            })
            .collect();
        fits_a_reply(Reply::Status {
            node: 1,
            processes: u32::MAX,
            hosted: u32::MAX,
            nodes,
        });
    }

    /// A live node's entry is about 280 bytes at its widest, so a status of more live nodes
    /// than this is answered with an error that says it is too long (docs/gossip.md).
    #[test]
    fn the_status_of_ten_thousand_live_nodes_fits_a_reply() {
        let nodes = (1..=10_000)
            .map(|node| NodeStatus {
                node,
                liveness: Liveness::Suspect,
                figures: Some(figures()),
            })
            .collect();
        fits_a_reply(Reply::Status {
            node: 1,
            processes: u32::MAX,
            hosted: u32::MAX,
            nodes,
        });
    }

    /// A tally of every pair at its widest stays far below a line.
    #[test]
    fn the_widest_tally_fits_a_line() {
        let mut tally = Tally::default();
        for kind in crate::MoveKind::ALL {
            for _ in crate::MoveOutcome::ALL {
                tally.moves.push(crate::MoveCount {
                    kind,
                    outcome: crate::MoveOutcome::Failed,
                    count: u64::MAX,
                });
            }
        }
        let full = |n: usize| crate::Buckets {
            counts: vec![u64::MAX; n + 1],
            sum: u64::MAX,
        };
        tally.image_bytes = full(crate::IMAGE_BYTES_BOUNDS.len());
        tally.freeze_us = full(crate::FREEZE_US_BOUNDS.len());
        tally.forwarded_us = full(crate::FORWARDED_US_BOUNDS.len());
        let line = encode_line(&Report::Tally(tally)).unwrap();
        assert!(line.len() < 4096, "{} bytes", line.len());
    }

    #[test]
    fn the_layout_is_plain_json() {
        let line = encode_line(&Request::Migrate {
            pid: 4711,
            target: Target::Node(3),
        })
        .unwrap();
        assert_eq!(
            line,
            b"{\"migrate\":{\"pid\":4711,\"target\":{\"node\":3}}}\n"
        );
        assert_eq!(encode_line(&Request::Status).unwrap(), b"\"status\"\n");
    }

    #[test]
    fn targets_parse_like_migrate_arguments() {
        assert_eq!("home".parse::<Target>().unwrap(), Target::Home);
        assert_eq!("3".parse::<Target>().unwrap(), Target::Node(3));
        for bad in ["", "Home", "-1", "65536", "3x", "balance"] {
            assert!(bad.parse::<Target>().is_err(), "{bad}");
        }
        assert_eq!(Target::Node(3).to_string(), "node 3");
    }

    #[test]
    fn unknown_or_mistyped_requests_are_errors() {
        let mut reader = LineReader::new();
        reader
            .feed(b"{\"reboot\":{}}\n{\"migrate\":{\"pid\":\"x\",\"target\":\"home\"}}\n[]\n")
            .unwrap();
        for _ in 0..3 {
            assert!(reader.next_message::<Request>().is_err());
        }
    }
}
