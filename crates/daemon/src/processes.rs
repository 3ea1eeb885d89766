//! `mosps`: the supervised processes of this node, each with the node it runs on, its lock,
//! its moves and why its last move failed, and the CPU time and memory it uses where it runs.
//! For a process at home those come from /proc here; for one away, from the daemon of its
//! node ([`Purpose::Hosted`]), asked once per node and in parallel, each within
//! [`ASK_TIMEOUT`]: a node that does not answer leaves its processes' figures empty, and the
//! list comes anyway.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tracing::debug;

use rmosix_wire::{HostedHere, HostedProcess, ProcessEntry, Purpose, Reply};

use crate::chain;
use crate::daemon::Shared;
use crate::modes::ask_peer;
use crate::procfs;
use crate::table::Entry;

/// How long a node may take to say what our processes there use.
const ASK_TIMEOUT: Duration = Duration::from_secs(2);

/// The list for `mosps`: everyone's processes, or `uid`'s.
///
/// The table's lock is let go before /proc is read, and /proc (four files a process) is read
/// on the blocking pool: on a node with a thousand jobs that takes a while, and meanwhile
/// registrations and reports, which need the table and the runtime's threads, go on.
pub(crate) async fn list(shared: &Arc<Shared>, uid: Option<u32>) -> Reply {
    let entries = shared.table().processes();
    let read = tokio::task::spawn_blocking(move || read_local(entries, uid)).await;
    let entries = match read {
        Ok(entries) => entries,
        Err(e) => {
            return Reply::Error {
                message: format!("cannot read /proc: {e}"),
            };
        }
    };
    let nodes: BTreeSet<u16> = entries.iter().filter_map(|l| l.entry.node).collect();
    let away = figures_away(shared, nodes).await;
    let processes = entries
        .into_iter()
        .map(
            |Local {
                 entry: e,
                 owner,
                 stat,
                 command,
             }| {
                let (cpu_ms, rss_kib) = match e.node {
                    None => stat.map_or((None, None), |s| {
                        let cpu = shared.units.duration(s.cpu_ticks).as_millis();
                        (
                            Some(u64::try_from(cpu).unwrap_or(u64::MAX)),
                            Some(s.rss_kib),
                        )
                    }),
                    Some(node) => away
                        .get(&(node, e.pid))
                        .map_or((None, None), |p| (Some(p.cpu_ms), Some(p.rss_kib))),
                };
                ProcessEntry {
                    pid: e.pid,
                    uid: owner,
                    node: e.node.unwrap_or(shared.own.get()),
                    locked: e.advice.locked,
                    moves: e.moves,
                    cant_move: e.cant_move,
                    cpu_ms,
                    rss_kib,
                    command,
                }
            },
        )
        .collect();
    Reply::Processes { processes }
}

/// What /proc here says of a supervised process.
struct Local {
    entry: Entry,
    owner: u32,
    /// Its figures if it runs here.
    stat: Option<procfs::Stat>,
    command: String,
}

/// The processes of `entries` that `uid` owns (all if `None`) and still exist, with what
/// /proc says of them. Reads /proc: blocks.
fn read_local(entries: Vec<Entry>, uid: Option<u32>) -> Vec<Local> {
    entries
        .into_iter()
        .filter_map(|entry| {
            let owner = procfs::read_creds(entry.pid).ok()?.real_uid;
            uid.is_none_or(|u| u == owner).then_some(())?;
            let stat = match entry.node {
                None => procfs::read_stat(entry.pid).ok(),
                Some(_) => None,
            };
            let command = command(entry.pid);
            Some(Local {
                entry,
                owner,
                stat,
                command,
            })
        })
        .collect()
}

/// What our processes use at each of `nodes`, by (node, PID at home).
async fn figures_away(
    shared: &Arc<Shared>,
    nodes: BTreeSet<u16>,
) -> HashMap<(u16, i32), HostedProcess> {
    let mut asks = JoinSet::new();
    for node in nodes {
        let shared = shared.clone();
        let ask = async move {
            ask_peer(
                &shared,
                node,
                Purpose::Hosted,
                ASK_TIMEOUT,
                HostedHere::decode,
            )
            .await
        };
        asks.spawn(async move {
            let answer = tokio::time::timeout(ASK_TIMEOUT, ask).await;
            (node, answer)
        });
    }
    let mut figures = HashMap::new();
    while let Some(done) = asks.join_next().await {
        match done {
            Ok((node, Ok(Ok(here)))) => {
                for p in here.processes {
                    figures.insert((node, p.home_pid), p);
                }
            }
            Ok((node, Ok(Err(e)))) => debug!(node, "no figures for mosps: {}", chain(&e)),
            Ok((node, Err(_))) => debug!(node, "no figures for mosps: no answer in time"),
            Err(e) => debug!("a question for mosps failed: {e}"),
        }
    }
    figures
}

/// The command line of `pid` (a process away shows the program's at home too), or its name
/// in brackets if it has none, as ps shows it.
fn command(pid: i32) -> String {
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let words: Vec<String> = cmdline
        .split(|&b| b == 0)
        .filter(|w| !w.is_empty())
        .map(|w| String::from_utf8_lossy(w).into_owned())
        .collect();
    if !words.is_empty() {
        return words.join(" ");
    }
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    format!("[{}]", comm.trim_end())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmosix_wire::Advice;

    fn entry(pid: i32, node: Option<u16>) -> Entry {
        Entry {
            pid,
            node,
            moving: false,
            advice: Advice::default(),
            moves: 0,
            cant_move: None,
        }
    }

    #[test]
    fn the_local_read_keeps_the_callers_processes_that_exist_with_their_figures() {
        let me = std::process::id() as i32;
        let uid = nix::unistd::getuid().as_raw();
        // PID 0 is never a process's (read_creds refuses it).
        let entries = vec![entry(me, None), entry(0, None), entry(me, Some(2))];
        let read = read_local(entries.clone(), Some(uid));
        let pids: Vec<(i32, Option<u16>)> =
            read.iter().map(|l| (l.entry.pid, l.entry.node)).collect();
        assert_eq!(pids, vec![(me, None), (me, Some(2))]);
        assert!(read.iter().all(|l| l.owner == uid && !l.command.is_empty()));
        // Figures from /proc for the one here; the one away gets them from its node.
        assert!(read[0].stat.is_some_and(|s| s.rss_kib > 0));
        assert!(read[1].stat.is_none());
        // Another user's list leaves ours out.
        assert!(read_local(entries, Some(uid.wrapping_add(1))).is_empty());
    }
}
