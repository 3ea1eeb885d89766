//! The thin part of `mosmon`: the terminal, the daemon and the keyboard.
//!
//! Three threads feed one channel that the main thread reads: one asks the daemon for its
//! status once a second (so a slow or absent daemon never freezes the keys), one reads the
//! keyboard, and the signal handler says when SIGINT, SIGTERM or SIGHUP came. The main thread
//! repaints after each message. The terminal is given back as it was on every way out: a
//! return, an error, a panic (ratatui's hook), a signal.

use std::error::Error as _;
use std::io::{self, IsTerminal};
use std::sync::mpsc::{self, Sender};
use std::thread;
use std::time::Duration;

use crossterm::event::{self, Event, KeyEventKind};

use rmosix_wire::{AskError, DaemonSocket, Reply, Request};

use super::chart::{draw, page};
use super::screen::{Feed, Flow, Monitor};

/// How often mosmon asks the daemon, as MOSIX's mosmon refreshed.
const REFRESH: Duration = Duration::from_secs(1);
/// How long one status request may take. The daemon answers from its view at once; a daemon
/// that takes longer is shown as not answering, and asked again.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// Why mosmon could not run.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// Standard output is a file or a pipe: there is no screen to draw on.
    #[error("standard output is not a terminal")]
    NotATerminal,
    /// The signal handler could not be installed.
    #[error("cannot handle SIGINT and SIGTERM")]
    Signals(#[source] ctrlc::Error),
    /// A thread could not be started.
    #[error("cannot start the {what} thread")]
    Thread {
        /// Which.
        what: &'static str,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The terminal could not be put into raw mode and the alternate screen.
    #[error("cannot set up the terminal")]
    Setup(#[source] io::Error),
    /// Drawing on the terminal, or reading its size, failed.
    #[error("cannot draw on the terminal")]
    Draw(#[source] io::Error),
    /// The keyboard could not be read.
    #[error("cannot read the keyboard")]
    Keyboard(#[source] io::Error),
}

/// What the main thread hears.
enum Message {
    /// The daemon's latest answer, or why there is none.
    Feed(Feed),
    /// A key, a resize.
    Input(Event),
    /// The keyboard cannot be read any more.
    InputFailed(io::Error),
    /// SIGINT, SIGTERM or SIGHUP.
    Signal,
}

/// Show `monitor` on the terminal, asking `daemon` for its status once a second, until the
/// user quits or a signal comes. Call once per process (it installs the signal handler).
pub fn run(daemon: DaemonSocket, mut monitor: Monitor) -> Result<(), MonitorError> {
    if !io::stdout().is_terminal() {
        return Err(MonitorError::NotATerminal);
    }
    let (tx, rx) = mpsc::channel();
    let signals = tx.clone();
    ctrlc::set_handler(move || {
        let _ = signals.send(Message::Signal);
    })
    .map_err(MonitorError::Signals)?;
    let feeds = tx.clone();
    thread::Builder::new()
        .name("status".into())
        .spawn(move || ask_every_second(&daemon, &feeds))
        .map_err(|source| MonitorError::Thread {
            what: "status",
            source,
        })?;

    let mut terminal = ratatui::try_init().map_err(MonitorError::Setup)?;
    // From here on, every way out goes through `restore`.
    let _restore = Restore;
    thread::Builder::new()
        .name("keyboard".into())
        .spawn(move || read_keys(&tx))
        .map_err(|source| MonitorError::Thread {
            what: "keyboard",
            source,
        })?;
    loop {
        terminal
            .draw(|frame| draw(&monitor, frame.area(), frame.buffer_mut()))
            .map_err(MonitorError::Draw)?;
        // Every sender lives as long as the process: the channel never closes.
        let Ok(message) = rx.recv() else {
            return Ok(());
        };
        match message {
            Message::Feed(feed) => monitor.feed = feed,
            Message::Input(Event::Key(key)) if key.kind != KeyEventKind::Release => {
                let width = terminal.size().map_err(MonitorError::Draw)?.width;
                if monitor.press(key, page(&monitor, width)) == Flow::Quit {
                    return Ok(());
                }
            }
            Message::Input(_) => {}
            Message::InputFailed(e) => return Err(MonitorError::Keyboard(e)),
            Message::Signal => return Ok(()),
        }
    }
}

/// Gives the terminal back (cooked mode, the main screen, the cursor) when dropped.
struct Restore;

impl Drop for Restore {
    fn drop(&mut self) {
        ratatui::restore();
        let _ = crossterm::execute!(io::stdout(), crossterm::cursor::Show);
    }
}

/// The status thread: ask, send, wait a second, until the main thread has gone.
fn ask_every_second(daemon: &DaemonSocket, to: &Sender<Message>) {
    loop {
        let feed = feed_of(daemon.ask(&Request::Status, Some(REPLY_TIMEOUT)));
        if to.send(Message::Feed(feed)).is_err() {
            return;
        }
        thread::sleep(REFRESH);
    }
}

/// The keyboard thread: every event, until the keyboard fails or the main thread has gone.
fn read_keys(to: &Sender<Message>) {
    loop {
        let message = match event::read() {
            Ok(event) => Message::Input(event),
            Err(e) => {
                let _ = to.send(Message::InputFailed(e));
                return;
            }
        };
        if to.send(message).is_err() {
            return;
        }
    }
}

/// What the screen shows for an answer to a status request.
fn feed_of(answer: Result<Reply, AskError>) -> Feed {
    match answer {
        Ok(Reply::Status { node, nodes, .. }) => Feed::Status { node, nodes },
        Ok(Reply::Error { message }) => Feed::Unreachable(format!("mosixd: {message}")),
        Ok(other) => Feed::Unreachable(format!("unexpected reply from mosixd: {other:?}")),
        Err(e) => {
            tracing::debug!(error = %e, "asking mosixd for its status");
            // The whole chain, as `{:#}` would print it: "cannot reach mosixd at PATH: why".
            let mut text = e.to_string();
            let mut cause = e.source();
            while let Some(c) = cause {
                text.push_str(": ");
                text.push_str(&c.to_string());
                cause = c.source();
            }
            Feed::Unreachable(text)
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use rmosix_wire::{Liveness, NodeStatus};

    use super::*;

    #[test]
    fn answers_become_what_the_screen_shows() {
        let nodes = vec![NodeStatus {
            node: 2,
            liveness: Liveness::Dead,
            figures: None,
        }];
        let status = Reply::Status {
            node: 1,
            processes: 0,
            hosted: 0,
            nodes: nodes.clone(),
        };
        assert_eq!(feed_of(Ok(status)), Feed::Status { node: 1, nodes });
        let refused = Reply::Error {
            message: "no".into(),
        };
        assert_eq!(feed_of(Ok(refused)), Feed::Unreachable("mosixd: no".into()));
        let absent = AskError::Connect {
            path: PathBuf::from("/run/none.sock"),
            source: io::Error::from_raw_os_error(libc::ENOENT),
        };
        assert_eq!(
            feed_of(Err(absent)),
            Feed::Unreachable(
                "cannot reach mosixd at /run/none.sock: No such file or directory (os error 2)"
                    .into()
            )
        );
    }

    #[test]
    fn a_daemon_that_cannot_be_reached_is_shown_so() {
        let daemon = DaemonSocket {
            path: PathBuf::from("/nonexistent/rmosix-mosmon-test.sock"),
            trusted_user: None,
        };
        let (tx, rx) = mpsc::channel();
        let asker = thread::spawn(move || ask_every_second(&daemon, &tx));
        let Ok(Message::Feed(Feed::Unreachable(why))) = rx.recv() else {
            panic!("not an unreachable daemon");
        };
        assert!(why.starts_with("cannot reach mosixd at "), "{why}");
        // The main thread gone, the asker ends after its next question.
        drop(rx);
        asker.join().unwrap();
    }
}
