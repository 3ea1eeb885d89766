//! `mosctl guests`: the processes a node hosts, one line each under a header, as ps(1)
//! prints processes.

use std::fmt::Write;

use nix::unistd::{Uid, User};

use rmosix_wire::HostedProcess;

/// The table `mosctl guests` prints: home node, PID at home, PID here, user, CPU seconds used
/// here, resident MiB, and how long the process has been here (as ps's ELAPSED,
/// `[[days-]hours:]minutes:seconds`). A user the system does not name is shown by uid, as ps
/// does.
pub fn hosted_table(processes: &[HostedProcess]) -> String {
    let mut text = format!(
        "{:>5} {:>10} {:>10} {:<12} {:>10} {:>9} {:>11}\n",
        "HOME", "HOME-PID", "PID", "USER", "CPU-S", "RSS-MIB", "HERE"
    );
    for p in processes {
        let user = match User::from_uid(Uid::from_raw(p.uid)) {
            Ok(Some(user)) => user.name,
            _ => p.uid.to_string(),
        };
        // Writing to a String cannot fail.
        let _ = writeln!(
            text,
            "{:>5} {:>10} {:>10} {:<12} {:>10.2} {:>9.1} {:>11}",
            p.home_node,
            p.home_pid,
            p.pid,
            user,
            p.cpu_ms as f64 / 1000.0,
            p.rss_kib as f64 / 1024.0,
            elapsed(p.seconds_here),
        );
    }
    text
}

/// Seconds as ps(1) shows elapsed time: `mm:ss`, `hh:mm:ss`, or `d-hh:mm:ss`.
fn elapsed(seconds: u64) -> String {
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    let (hours, minutes, secs) = (rest / 3600, rest % 3600 / 60, rest % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes:02}:{secs:02}"),
        (0, _) => format!("{hours:02}:{minutes:02}:{secs:02}"),
        _ => format!("{days}-{hours:02}:{minutes:02}:{secs:02}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_process_under_a_header() {
        let processes = [
            HostedProcess {
                home_node: 1,
                home_pid: 4711,
                pid: 123,
                uid: 0,
                cpu_ms: 12_340,
                rss_kib: 65_536,
                seconds_here: 75,
            },
            HostedProcess {
                home_node: 12,
                home_pid: 9,
                pid: 124,
                uid: 4_000_000_000,
                cpu_ms: 0,
                rss_kib: 100,
                seconds_here: 90_061,
            },
        ];
        let text = hosted_table(&processes);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            lines,
            [
                vec![
                    "HOME", "HOME-PID", "PID", "USER", "CPU-S", "RSS-MIB", "HERE"
                ],
                vec!["1", "4711", "123", "root", "12.34", "64.0", "01:15"],
                vec!["12", "9", "124", "4000000000", "0.00", "0.1", "1-01:01:01"],
            ]
        );
        assert_eq!(hosted_table(&[]).lines().count(), 1);
    }

    #[test]
    fn elapsed_time_reads_as_ps_shows_it() {
        assert_eq!(elapsed(0), "00:00");
        assert_eq!(elapsed(3599), "59:59");
        assert_eq!(elapsed(3600), "01:00:00");
        assert_eq!(elapsed(86_399), "23:59:59");
        assert_eq!(elapsed(86_400), "1-00:00:00");
    }
}
