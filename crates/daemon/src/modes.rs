//! The node's modes and the operator's verbs on them (`mosctl block|noblock|expel|bring`), and
//! the questions anyone may ask about the map (`mosctl whois|isup`). See docs/modes.md.
//!
//! A blocked node accepts no new guests: `peer` answers a session with [`SESSION_BLOCKED`]
//! instead of starting a guest, and the home side turns that into `MoveError::Blocked`.
//! Guests already here stay. The mode lives in memory only: a restarted daemon accepts guests
//! again, as a rebooted MOSIX node did.
//!
//! `expel` blocks the node and asks the home daemon of each hosted process, over an
//! authenticated link ([`Purpose::Recall`]), to order the process's supervisor to bring it
//! home: the same move as `migrate PID home`, with its guarantees (the process runs on here if
//! home cannot take it; it is never lost by the order). `bring` gives the same order to the
//! supervisors of this node for each of their processes that runs elsewhere.

use std::collections::HashSet;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::{info, warn};

use rmosix_config::{Host, Map, NodeId};
use rmosix_transport::LinkError;
use rmosix_wire::{LinkHello, MoveError, NodeMode, Purpose, Recalled, Reply};

use crate::daemon::Shared;
use crate::table::Refusal;
use crate::{balancer, chain};

/// What a blocked node answers on a session link instead of [`crate::peer::SESSION_READY`].
pub(crate) const SESSION_BLOCKED: &[u8] = b"blocked";

/// How long one process may take to come home for `expel` or `bring`. A move of a 1 GiB
/// process over a slow link takes tens of seconds; past this, something is wrong, and the
/// process is reported as not moved (its move, if started, goes on and ends as any would).
const MOVE_TIMEOUT: Duration = Duration::from_secs(300);
/// How long a recall waits, once its process has arrived, for the guest here to say it left
/// (it does so at once unless this node is starved of CPU).
const LEAVE_WAIT: Duration = Duration::from_secs(5);
/// How long connecting to a home daemon for a recall may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How many processes `expel` and `bring` move at once: each move holds a link and its
/// supervisor's attention, and many at once would only share the same links.
const CONCURRENT_MOVES: usize = 8;
/// How long `expel` and `bring` try again a process that is in the middle of another move
/// (arriving here as the node blocked, say): as long as a large move may take.
const RETRY_FOR: Duration = Duration::from_secs(60);
/// How long they wait before they try such a process again.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// Why the caller may not use a root-only verb, or `None` if it may: root, or the user the
/// daemon runs as (a daemon started by an ordinary user for development is that user's).
pub(crate) fn refuse_unless_root(uid: u32) -> Option<Reply> {
    let daemon_uid = nix::unistd::geteuid().as_raw();
    (uid != 0 && uid != daemon_uid).then(|| Reply::Error {
        message: "permission denied (root only)".to_owned(),
    })
}

/// `mosctl stay|nostay|lstay|nolstay|block|noblock|quiet|noquiet`.
pub(crate) fn set_mode(shared: &Shared, mode: NodeMode, on: bool, by: u32) -> Reply {
    let was = shared.set_mode(mode, on);
    if was != on {
        info!(%mode, on, by, "node mode changed");
    }
    Reply::Ok
}

/// `mosctl setspeed N`: the speed this node gossips, and divides its load by, from the next
/// reading on. In memory only: a restarted daemon measures its speed again.
pub(crate) fn set_speed(shared: &Shared, speed: u32, by: u32) -> Reply {
    if speed == 0 {
        return Reply::Error {
            message: "the speed must be at least 1".to_owned(),
        };
    }
    shared.cluster.set_speed(speed);
    info!(speed, by, "node speed set");
    Reply::Ok
}

/// `mosctl expel`: block, then send every guest home and wait for each to go or fail.
pub(crate) async fn expel(shared: &Arc<Shared>, by: u32) -> Reply {
    shared.set_mode(NodeMode::Block, true);
    let _expelling = shared.expelling();
    info!(by, "expelling guests");
    let (moved, failures) = in_rounds(
        || shared.hosted().homes(),
        || shared.hosted().any_between(),
        |(node, pid)| {
            let shared = shared.clone();
            async move {
                recall(&shared, node, pid, None, None)
                    .await
                    .map_err(|not| NotSent {
                        line: format!("process {pid} (home node {node}): {}", not.line),
                        again: not.again,
                    })
            }
        },
    )
    .await;
    info!(moved, failed = failures.len(), "guests expelled");
    sent(moved, failures)
}

/// `mosctl bring`: order every supervised process of this node that runs elsewhere home.
pub(crate) async fn bring(shared: &Arc<Shared>, by: u32) -> Reply {
    info!(by, "bringing processes home");
    let (moved, failures) = in_rounds(
        || shared.table().away(),
        || false,
        |(pid, at)| {
            let shared = shared.clone();
            async move {
                send_to(&shared, pid, None).await.map_err(|not| {
                    let again = not == Recalled::Failed(MoveError::Busy);
                    NotSent {
                        line: format!("process {pid} (at node {at}): {}", reason(not)),
                        again,
                    }
                })
            }
        },
    )
    .await;
    info!(moved, failed = failures.len(), "processes brought home");
    sent(moved, failures)
}

fn sent(moved: usize, mut failures: Vec<String>) -> Reply {
    failures.sort();
    Reply::Sent {
        moved: moved.try_into().unwrap_or(u32::MAX),
        failures,
    }
}

/// Why a process was not sent: a line for the operator, and whether to try again (it was in
/// the middle of another move, which ends soon).
struct NotSent {
    line: String,
    again: bool,
}

/// Send the processes `list` names, round after round, until a round finds none it has not
/// settled and `between` says no more may come: at most [`CONCURRENT_MOVES`] at a time, a
/// process in another move tried again after [`RETRY_PAUSE`], and processes that appear
/// meanwhile (a guest that was arriving as the node blocked) in the next round, until
/// [`RETRY_FOR`] has passed. Returns how many went and a line for each that did not.
async fn in_rounds<K, L, B, F, Fut>(list: L, between: B, send: F) -> (usize, Vec<String>)
where
    K: Copy + Eq + std::hash::Hash + Send + 'static,
    L: Fn() -> Vec<K>,
    B: Fn() -> bool,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<(), NotSent>> + Send + 'static,
{
    let give_up = tokio::time::Instant::now() + RETRY_FOR;
    let mut settled = HashSet::new();
    let mut moved = 0;
    let mut failures = Vec::new();
    loop {
        let round: Vec<K> = list()
            .into_iter()
            .filter(|k| !settled.contains(k))
            .collect();
        if round.is_empty() {
            if between() && tokio::time::Instant::now() < give_up {
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            break;
        }
        let mut again = false;
        for (key, outcome) in each_limited(round, &send).await {
            match outcome {
                Ok(()) => moved += 1,
                Err(not) if not.again && tokio::time::Instant::now() < give_up => {
                    again = true;
                    continue;
                }
                Err(not) => failures.push(not.line),
            }
            settled.insert(key);
        }
        if again {
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
    (moved, failures)
}

/// Run `task` on each item, at most [`CONCURRENT_MOVES`] at a time; each item with its
/// outcome.
async fn each_limited<K, F, Fut>(items: Vec<K>, task: &F) -> Vec<(K, Result<(), NotSent>)>
where
    K: Copy + Send + 'static,
    F: Fn(K) -> Fut,
    Fut: Future<Output = Result<(), NotSent>> + Send + 'static,
{
    let mut running = JoinSet::new();
    let mut outcomes = Vec::new();
    let tally = |done: Result<(K, Result<(), NotSent>), tokio::task::JoinError>| match done {
        Ok(outcome) => Some(outcome),
        // A task panicked: its item stays unsettled and is tried in the next round.
        Err(e) => {
            warn!("a move's task failed: {e}");
            None
        }
    };
    for item in items {
        while running.len() >= CONCURRENT_MOVES {
            if let Some(done) = running.join_next().await {
                outcomes.extend(tally(done));
            }
        }
        let sending = task(item);
        running.spawn(async move { (item, sending.await) });
    }
    while let Some(done) = running.join_next().await {
        outcomes.extend(tally(done));
    }
    outcomes
}

/// Order process `pid` of this node to `target` (`None`: home) through its supervisor, and
/// wait for the answer: `Ok` when it is there, else the failed move's error or why no move
/// was made.
pub(crate) async fn send_to(
    shared: &Shared,
    pid: i32,
    target: Option<u16>,
) -> Result<(), Recalled> {
    let refused = |why: &str| Err(Recalled::Refused(why.to_owned()));
    let started = shared.table().start_migrate(pid, target);
    let (id, waiter) = match started {
        Ok(started) => started,
        Err(Refusal::AlreadyThere) => return Ok(()),
        Err(Refusal::Busy) => return Err(Recalled::Failed(MoveError::Busy)),
        Err(Refusal::NotSupervised) => return refused("it is not running under mosrun"),
        Err(Refusal::SupervisorGone) => return refused("its supervisor has gone"),
    };
    info!(pid, order = id, to = ?target, "sending a process (home: none)");
    match tokio::time::timeout(MOVE_TIMEOUT, waiter).await {
        Ok(Ok(Ok(()))) => Ok(()),
        Ok(Ok(Err(why))) => Err(Recalled::Failed(why)),
        Ok(Err(_)) => refused("its supervisor went away during the move"),
        Err(_) => {
            shared.table().cancel(id);
            refused(&format!(
                "it did not arrive within {} s",
                MOVE_TIMEOUT.as_secs()
            ))
        }
    }
}

/// A recall's outcome other than home, as a line of `expel`'s or `bring`'s report.
fn reason(not_home: Recalled) -> String {
    match not_home {
        Recalled::Arrived => "it is there".to_owned(),
        Recalled::Failed(why) => why.to_string(),
        Recalled::Refused(why) => why,
    }
}

/// Why a question to another node's daemon (a recall, `mosps`'s figures) got no proper
/// answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PeerAskError {
    #[error("node {0} is not in the map")]
    Unknown(u16),
    #[error("cannot find the address of node {node}")]
    Address {
        node: u16,
        #[source]
        source: std::io::Error,
    },
    #[error("node {0} does not answer")]
    Timeout(u16),
    #[error("the link to node {node} failed")]
    Link {
        node: u16,
        #[source]
        source: LinkError,
    },
    #[error("node {0} closed the link without an answer")]
    NoAnswer(u16),
    #[error("node {0} answered nonsense")]
    BadAnswer(u16),
}

/// The balancing loop sends guest `pid` of `node` home (`to` is `None`) or on to node `to`,
/// telling home the share of its time it waited here for forwarded calls (`forwarded`, per
/// mille): [`recall`] with its outcome logged.
pub(crate) async fn send_guest(
    shared: &Shared,
    node: u16,
    pid: i32,
    to: Option<u16>,
    forwarded: u16,
) {
    if let Err(not) = recall(shared, node, pid, to, Some(forwarded)).await {
        warn!(
            node,
            pid,
            ?to,
            "balancing: the guest did not go: {}",
            not.line
        );
    }
}

/// Ask the daemon of `node` to send its process `pid` from here home (`to` is `None`) or on
/// to node `to`, and wait for the outcome of the move. `forwarded`: see [`send_guest`].
async fn recall(
    shared: &Shared,
    node: u16,
    pid: i32,
    to: Option<u16>,
    forwarded: Option<u16>,
) -> Result<(), NotSent> {
    match ask_recall(shared, node, pid, to, forwarded).await {
        Ok(Recalled::Arrived) => {
            info!(node, pid, ?to, "guest went (home: none)");
            // The answer comes once the process has arrived; its guest here says it left a
            // moment later. The order is done when the listing no longer shows it.
            if !shared.until_gone(node, pid, LEAVE_WAIT).await {
                warn!(
                    node,
                    pid, "the guest of a process that arrived elsewhere has not said it left"
                );
            }
            Ok(())
        }
        Ok(not_there) => Err(NotSent {
            again: not_there == Recalled::Failed(MoveError::Busy),
            line: reason(not_there),
        }),
        Err(e) => {
            warn!(node, pid, "cannot send a guest away: {}", chain(&e));
            Err(NotSent {
                line: chain(&e),
                again: false,
            })
        }
    }
}

/// Ask `node`'s daemon over an authenticated link, its hello sent with `purpose`, and read
/// its one answer with `decode`; the answer may take `wait` once the question is sent.
pub(crate) async fn ask_peer<T>(
    shared: &Shared,
    node: u16,
    purpose: Purpose,
    wait: Duration,
    decode: fn(&[u8]) -> Result<T, serde_json::Error>,
) -> Result<T, PeerAskError> {
    let id = NodeId::new(node)
        .filter(|&id| shared.map().node(id).is_some())
        .ok_or(PeerAskError::Unknown(node))?;
    let addr = shared
        .peer_addr(id)
        .await
        .map_err(|source| PeerAskError::Address { node, source })?;
    let link_err = |source| PeerAskError::Link { node, source };
    let mut link = tokio::time::timeout(
        CONNECT_TIMEOUT,
        rmosix_transport::connect(addr, &shared.key),
    )
    .await
    .map_err(|_| PeerAskError::Timeout(node))?
    .map_err(link_err)?;
    let hello = LinkHello::new(shared.own.get(), purpose);
    link.send(&hello.encode()).await.map_err(link_err)?;
    let answer = tokio::time::timeout(wait, link.recv())
        .await
        .map_err(|_| PeerAskError::Timeout(node))?
        .map_err(link_err)?
        .ok_or(PeerAskError::NoAnswer(node))?;
    decode(&answer).map_err(|_| PeerAskError::BadAnswer(node))
}

async fn ask_recall(
    shared: &Shared,
    node: u16,
    pid: i32,
    to: Option<u16>,
    forwarded_per_mille: Option<u16>,
) -> Result<Recalled, PeerAskError> {
    // The move itself is bounded at home by MOVE_TIMEOUT; a little more here lets its answer
    // arrive.
    let purpose = Purpose::Recall {
        pid,
        to,
        forwarded_per_mille,
    };
    ask_peer(
        shared,
        node,
        purpose,
        MOVE_TIMEOUT + CONNECT_TIMEOUT,
        Recalled::decode,
    )
    .await
}

/// Serve a peer's [`Purpose::Recall`]: `from` hosts our process `pid` and sends it away, home
/// or on to node `to`; its balancer found it waited `forwarded` per mille of its time there
/// for calls forwarded here.
pub(crate) async fn answer_recall(
    shared: &Shared,
    from: u16,
    pid: i32,
    to: Option<u16>,
    forwarded: Option<u16>,
) -> Recalled {
    let (location, moving) = {
        let table = shared.table();
        (table.location(pid), table.is_moving(pid))
    };
    match location {
        Some(Some(at)) if at == from => {}
        // Still on its way there, or on its way away: ask again once that move is over.
        _ if moving => return Recalled::Failed(MoveError::Busy),
        _ => {
            warn!(from, pid, "recall refused: the process does not run there");
            return Recalled::Refused(format!(
                "process {pid} of node {} does not run at node {from}",
                shared.own.get()
            ));
        }
    }
    let target = match to {
        None => None,
        Some(n) if n == shared.own.get() => None,
        Some(n) if NodeId::new(n).is_some_and(|id| shared.map().node(id).is_some()) => Some(n),
        Some(n) => {
            warn!(from, pid, to = n, "recall refused: no such node");
            return Recalled::Refused(format!("no node {n} in {}", shared.map().path().display()));
        }
    };
    info!(from, pid, to = ?target, ?forwarded, "sent away by its host (home: none)");
    if let Some(per_mille) = forwarded {
        balancer::forwarded_away(shared, pid, per_mille);
    }
    match send_to(shared, pid, target).await {
        Ok(()) => Recalled::Arrived,
        Err(not_there) => not_there,
    }
}

/// What `whois` found: a node and its main host.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Found<'a> {
    pub node: NodeId,
    pub host: &'a Host,
}

/// `mosctl whois [QUERY]`: the node a number, an address or a host name of the map names
/// (any of its addresses, aliases included), or this node when there is no query.
pub(crate) fn whois<'a>(
    map: &'a Map,
    own: NodeId,
    query: Option<&str>,
) -> Result<Found<'a>, String> {
    let found = |node: &'a rmosix_config::Node| Found {
        node: node.id,
        host: &node.host,
    };
    let Some(query) = query.map(str::trim) else {
        return map
            .node(own)
            .map(found)
            .ok_or_else(|| format!("this node ({own}) is not in {}", map.path().display()));
    };
    let missing = || format!("no node {query} in {}", map.path().display());
    if let Ok(n) = query.parse::<u16>() {
        return NodeId::new(n)
            .and_then(|id| map.node(id))
            .map(found)
            .ok_or_else(missing);
    }
    let matches = |host: &Host| match (host, query.parse::<IpAddr>()) {
        (Host::Ip(ip), Ok(asked)) => ip.to_canonical() == asked.to_canonical(),
        (Host::Name(name), _) => name.eq_ignore_ascii_case(query),
        (Host::Ip(_), Err(_)) => false,
    };
    map.nodes()
        .find(|node| node.hosts().any(matches))
        .map(found)
        .ok_or_else(missing)
}

/// Answer a `whois` request.
pub(crate) fn whois_reply(shared: &Shared, query: Option<&str>) -> Reply {
    match whois(&shared.map(), shared.own, query) {
        Ok(found) => Reply::Whois {
            node: found.node.get(),
            host: found.host.to_string(),
        },
        Err(message) => Reply::Error { message },
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn map() -> Map {
        Map::parse(
            "1 10.0.0.1 3\n7 node7.example 1\n7 10.1.0.7 ALIAS\n",
            Path::new("/etc/mosix.map"),
        )
        .unwrap()
    }

    fn ask(query: Option<&str>) -> Result<(u16, String), String> {
        let map = map();
        whois(&map, NodeId::new(2).unwrap(), query).map(|f| (f.node.get(), f.host.to_string()))
    }

    #[test]
    fn whois_maps_numbers_to_addresses_and_back() {
        assert_eq!(ask(None), Ok((2, "10.0.0.2".into())));
        assert_eq!(ask(Some("3")), Ok((3, "10.0.0.3".into())));
        assert_eq!(ask(Some("10.0.0.3")), Ok((3, "10.0.0.3".into())));
        assert_eq!(ask(Some("::ffff:10.0.0.1")), Ok((1, "10.0.0.1".into())));
        assert_eq!(ask(Some("NODE7.example")), Ok((7, "node7.example".into())));
        assert_eq!(ask(Some("10.1.0.7")), Ok((7, "node7.example".into())));
    }

    #[test]
    fn whois_names_what_the_map_lacks() {
        for query in ["4", "0", "10.0.0.9", "nowhere", "", "-1", "99999"] {
            let err = ask(Some(query)).unwrap_err();
            assert_eq!(err, format!("no node {query} in /etc/mosix.map"));
        }
    }

    /// `in_rounds` over items 1..=4: 1 goes, 2 fails, 3 is busy twice then goes, 4 is busy
    /// for good; item 5 appears once item 1 has gone.
    #[tokio::test(start_paused = true)]
    async fn rounds_retry_busy_processes_until_they_go_or_time_is_up() {
        use std::sync::Mutex;
        let tries = Arc::new(Mutex::new(std::collections::HashMap::<u32, u32>::new()));
        let list = || {
            let tried = tries.lock().unwrap();
            let mut items = vec![2, 3, 4];
            if tried.contains_key(&1) {
                items.push(5);
            } else {
                items.push(1);
            }
            items
        };
        let send = |item: u32| {
            let tries = tries.clone();
            async move {
                let n = {
                    let mut tries = tries.lock().unwrap();
                    let n = tries.entry(item).or_default();
                    *n += 1;
                    *n
                };
                let not = |again| NotSent {
                    line: format!("{item}: no"),
                    again,
                };
                match item {
                    2 => Err(not(false)),
                    3 if n <= 2 => Err(not(true)),
                    4 => Err(not(true)),
                    _ => Ok(()),
                }
            }
        };
        let started = tokio::time::Instant::now();
        let (moved, mut failures) = in_rounds(list, || false, send).await;
        failures.sort();
        assert_eq!(moved, 3);
        assert_eq!(failures, vec!["2: no".to_owned(), "4: no".to_owned()]);
        let tries = tries.lock().unwrap();
        assert_eq!((tries[&1], tries[&2], tries[&3], tries[&5]), (1, 1, 3, 1));
        assert!(tries[&4] > 3);
        assert!(started.elapsed() >= RETRY_FOR);
    }

    /// A process that registers only after the first round found nothing is sent too.
    #[tokio::test(start_paused = true)]
    async fn rounds_wait_for_a_process_on_its_way() {
        let started = tokio::time::Instant::now();
        let arrived = || started.elapsed() >= Duration::from_secs(1);
        let list = || if arrived() { vec![7] } else { vec![] };
        let sent = std::sync::Mutex::new(Vec::new());
        let send = |item: u32| {
            sent.lock().unwrap().push(item);
            async { Ok(()) }
        };
        assert_eq!(in_rounds(list, || !arrived(), send).await, (1, vec![]));
        assert_eq!(*sent.lock().unwrap(), vec![7]);
        // Nothing on its way: done at once.
        let (moved, failures) = in_rounds(Vec::<u32>::new, || false, |_| async { Ok(()) }).await;
        assert_eq!((moved, failures), (0, vec![]));
    }

    #[test]
    fn only_root_and_the_daemons_user_are_root_here() {
        assert_eq!(refuse_unless_root(0), None);
        let me = nix::unistd::geteuid().as_raw();
        assert_eq!(refuse_unless_root(me), None);
        let stranger = if me == 65534 { 65533 } else { 65534 };
        assert_eq!(
            refuse_unless_root(stranger),
            Some(Reply::Error {
                message: "permission denied (root only)".into()
            })
        );
    }
}
