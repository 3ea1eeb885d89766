//! `mosps [-a | -u USER] [-w]`: ps for the processes that run under mosrun on this node, with
//! the columns MOSIX users know (see `rmosix_tools::cli::mosps`).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use rmosix_tools::cli::mosps::Args;
use rmosix_tools::print_out;
use rmosix_wire::{ProcessEntry, Reply, Request};

/// How long mosps waits for the list: the daemon asks each node where processes run for at
/// most a few seconds, all at once.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

/// CANTMOVE's width unless `-w`: a reason longer than this is cut, with "..." at its end.
const CANTMOVE_WIDTH: usize = 28;

fn main() -> ExitCode {
    let args = Args::parse();
    args.common.init_logging();
    let uid = if args.all {
        None
    } else {
        Some(args.user.unwrap_or_else(|| nix::unistd::getuid().as_raw()))
    };
    let reply = args
        .common
        .daemon()
        .ask(&Request::Processes { uid }, Some(REPLY_TIMEOUT));
    let processes = match reply {
        Ok(Reply::Processes { processes }) => processes,
        Ok(Reply::Error { message }) => return fail(&message),
        Ok(other) => return fail(&format!("unexpected reply from mosixd: {other:?}")),
        Err(e) => return fail(&format!("{:#}", anyhow::Error::from(e))),
    };
    match print_out(&table(&processes, args.wide)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(&format!("cannot write the list: {e}")),
    }
}

fn fail(why: &str) -> ExitCode {
    eprintln!("mosps: {why}");
    ExitCode::FAILURE
}

/// The list, a header and a line per process, columns aligned.
fn table(processes: &[ProcessEntry], wide: bool) -> String {
    let header = [
        "PID", "USER", "NODE", "LOCK", "NMIGS", "TIME", "RSS", "CANTMOVE",
    ];
    let rows: Vec<[String; 8]> = processes
        .iter()
        .map(|p| {
            [
                p.pid.to_string(),
                user_name(p.uid),
                p.node.to_string(),
                if p.locked { "yes" } else { "no" }.to_owned(),
                p.moves.to_string(),
                p.cpu_ms.map_or("-".to_owned(), cpu_time),
                p.rss_kib.map_or("-".to_owned(), |k| k.to_string()),
                p.cant_move
                    .as_deref()
                    .map_or("-".to_owned(), |why| cut(why, wide)),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for row in &rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[&str], command: &str| {
        let mut text = String::new();
        for ((cell, width), k) in cells.iter().zip(widths).zip(0..) {
            // Numbers right, words left, as ps does.
            let numeric = matches!(k, 0 | 2 | 4 | 5 | 6);
            if numeric {
                text.push_str(&format!("{cell:>width$} "));
            } else {
                text.push_str(&format!("{cell:<width$} "));
            }
        }
        text.push_str(command);
        text.push('\n');
        text
    };
    let mut out = line(&header, "COMMAND");
    for (row, p) in rows.iter().zip(processes) {
        let cells: Vec<&str> = row.iter().map(String::as_str).collect();
        out.push_str(&line(&cells, &p.command));
    }
    out
}

/// CPU time as ps shows it: `[D-]HH:MM:SS`.
fn cpu_time(ms: u64) -> String {
    let s = ms / 1000;
    let (days, h, m, s) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    if days > 0 {
        format!("{days}-{h:02}:{m:02}:{s:02}")
    } else {
        format!("{h:02}:{m:02}:{s:02}")
    }
}

/// A reason, cut to [`CANTMOVE_WIDTH`] unless `wide`; spaces kept.
fn cut(why: &str, wide: bool) -> String {
    if wide || why.chars().count() <= CANTMOVE_WIDTH {
        return why.to_owned();
    }
    let kept: String = why.chars().take(CANTMOVE_WIDTH - 3).collect();
    format!("{kept}...")
}

fn user_name(uid: u32) -> String {
    match nix::unistd::User::from_uid(uid.into()) {
        Ok(Some(user)) => user.name,
        _ => uid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(pid: i32, node: u16, cant_move: Option<&str>) -> ProcessEntry {
        ProcessEntry {
            pid,
            uid: 0,
            node,
            locked: cant_move.is_some(),
            moves: 3,
            cant_move: cant_move.map(str::to_owned),
            cpu_ms: (node == 1).then_some(3_723_000),
            rss_kib: (node == 1).then_some(2048),
            command: "python3 crunch.py".into(),
        }
    }

    #[test]
    fn columns_line_up_and_say_what_is_not_known() {
        let text = table(
            &[entry(7, 1, None), entry(4711, 3, Some("it has 2 threads"))],
            false,
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines,
            [
                " PID USER NODE LOCK NMIGS     TIME  RSS CANTMOVE         COMMAND",
                "   7 root    1 no       3 01:02:03 2048 -                python3 crunch.py",
                "4711 root    3 yes      3        -    - it has 2 threads python3 crunch.py",
            ]
        );
    }

    #[test]
    fn long_reasons_are_cut_unless_wide() {
        let why = "the process shares its memory with another (vfork or CLONE_VM)";
        assert_eq!(cut(why, false), "the process shares its me...");
        assert_eq!(cut(why, false).chars().count(), CANTMOVE_WIDTH);
        assert_eq!(cut(why, true), why);
    }

    #[test]
    fn cpu_time_reads_as_ps_writes_it() {
        assert_eq!(cpu_time(999), "00:00:00");
        assert_eq!(cpu_time(61_000), "00:01:01");
        assert_eq!(cpu_time(90_061_000), "1-01:01:01");
    }
}
