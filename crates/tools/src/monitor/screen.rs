//! What `mosmon` shows, and what the keys do to it: no terminal, no daemon.

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use rmosix_wire::{Liveness, NodeStatus};

/// What the bars show, as MOSIX's keys and start options choose it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum View {
    /// Load: 100 is one CPU-busy process on a standard CPU (`l`, the default).
    #[default]
    Load,
    /// Memory in MB, the used part solid and the free part up to the total as `+` (`m`).
    Memory,
    /// CPU speed, 10000 a standard CPU, and the CPUs under each bar (`s`).
    Speed,
    /// CPU utilisation, percent (`u`).
    Utilisation,
}

/// What the daemon said last.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Feed {
    /// Nothing yet: mosmon has just started.
    Waiting,
    /// The daemon's answer to a status request.
    Status {
        /// The daemon's node: whose view this is.
        node: u16,
        /// Every node of its map, lowest number first.
        nodes: Vec<NodeStatus>,
    },
    /// The daemon could not be asked, or refused; why, as one line. mosmon asks again a
    /// second later.
    Unreachable(String),
}

/// Whether mosmon goes on after a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    /// Go on.
    Continue,
    /// The user asked to quit.
    Quit,
}

/// The state of the screen: what the user chose and what the daemon said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Monitor {
    /// What the bars show.
    pub view: View,
    /// Whether the totals line is shown (`t`).
    pub totals: bool,
    /// Whether dead nodes are shown, each as `DEAD` (`d`); they are left out otherwise.
    pub dead: bool,
    /// Whether the line of keys is shown (`h`, `?`).
    pub help: bool,
    /// What the daemon said last.
    pub feed: Feed,
    /// Index, among the shown nodes, of the leftmost bar. May point past what fits when the
    /// map shrinks or the window grows; [`Monitor::first`] clamps it.
    first: usize,
}

impl Monitor {
    /// A monitor showing `view`, with or without totals and dead nodes, scrolled to the
    /// start, that has heard nothing yet.
    pub fn new(view: View, totals: bool, dead: bool) -> Monitor {
        Monitor {
            view,
            totals,
            dead,
            help: false,
            feed: Feed::Waiting,
            first: 0,
        }
    }

    /// The nodes that get a bar: every node of the map, less the dead ones unless they are
    /// shown.
    pub fn shown(&self) -> Vec<&NodeStatus> {
        match &self.feed {
            Feed::Status { nodes, .. } => nodes
                .iter()
                .filter(|n| self.dead || n.liveness != Liveness::Dead)
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Index, among [`Monitor::shown`], of the leftmost bar when `page` bars fit across: the
    /// last page ends with the last node, never with empty space after it.
    pub fn first(&self, page: usize) -> usize {
        self.first.min(self.shown().len().saturating_sub(page))
    }

    /// Act on `key`, with `page` bars fitting across the screen (the step of PageUp and
    /// PageDown).
    pub fn press(&mut self, key: KeyEvent, page: usize) -> Flow {
        let page = page.max(1);
        // Scrolling starts from where the screen is, not from a position past the end.
        let first = self.first(page);
        let last = self.shown().len().saturating_sub(page);
        match key.code {
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Flow::Quit;
            }
            KeyCode::Char('q' | 'Q') => return Flow::Quit,
            KeyCode::Char('l') => self.view = View::Load,
            KeyCode::Char('m') => self.view = View::Memory,
            KeyCode::Char('s') => self.view = View::Speed,
            KeyCode::Char('u') => self.view = View::Utilisation,
            KeyCode::Char('t') => self.totals = !self.totals,
            KeyCode::Char('d') => self.dead = !self.dead,
            KeyCode::Char('h' | '?') => self.help = !self.help,
            KeyCode::Esc => self.help = false,
            KeyCode::Left => self.first = first.saturating_sub(1),
            KeyCode::Right => self.first = (first + 1).min(last),
            KeyCode::PageUp => self.first = first.saturating_sub(page),
            KeyCode::PageDown => self.first = (first + page).min(last),
            KeyCode::Home => self.first = 0,
            KeyCode::End => self.first = last,
            _ => {}
        }
        Flow::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    /// A map of `n` nodes, every third one dead.
    fn map(n: u16) -> Feed {
        Feed::Status {
            node: 1,
            nodes: (1..=n)
                .map(|node| NodeStatus {
                    node,
                    liveness: if node % 3 == 0 {
                        Liveness::Dead
                    } else {
                        Liveness::Up
                    },
                    figures: None,
                })
                .collect(),
        }
    }

    #[test]
    fn keys_choose_the_view_and_toggle_totals_dead_nodes_and_help() {
        let mut m = Monitor::new(View::Load, false, false);
        for (c, view) in [
            ('m', View::Memory),
            ('s', View::Speed),
            ('u', View::Utilisation),
            ('l', View::Load),
        ] {
            assert_eq!(m.press(key(KeyCode::Char(c)), 10), Flow::Continue);
            assert_eq!(m.view, view);
        }
        m.press(key(KeyCode::Char('t')), 10);
        m.press(key(KeyCode::Char('d')), 10);
        m.press(key(KeyCode::Char('?')), 10);
        assert!(m.totals && m.dead && m.help);
        m.press(key(KeyCode::Char('h')), 10);
        m.press(key(KeyCode::Char('t')), 10);
        m.press(key(KeyCode::Char('d')), 10);
        assert!(!m.totals && !m.dead && !m.help);
        m.press(key(KeyCode::Char('x')), 10);
        assert_eq!(m, Monitor::new(View::Load, false, false));
    }

    #[test]
    fn q_and_ctrl_c_quit() {
        let mut m = Monitor::new(View::Load, false, false);
        assert_eq!(m.press(key(KeyCode::Char('q')), 10), Flow::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(m.press(ctrl_c, 10), Flow::Quit);
        assert_eq!(m.press(key(KeyCode::Char('c')), 10), Flow::Continue);
    }

    #[test]
    fn dead_nodes_are_left_out_unless_shown() {
        let mut m = Monitor::new(View::Load, false, false);
        assert!(m.shown().is_empty());
        m.feed = map(9);
        let ids = |m: &Monitor| m.shown().iter().map(|n| n.node).collect::<Vec<_>>();
        assert_eq!(ids(&m), [1, 2, 4, 5, 7, 8]);
        m.dead = true;
        assert_eq!(ids(&m), (1..=9).collect::<Vec<_>>());
    }

    #[test]
    fn arrows_and_pages_scroll_within_the_shown_nodes() {
        let mut m = Monitor::new(View::Load, false, true);
        m.feed = map(60);
        let page = 25;
        assert_eq!(m.first(page), 0);
        m.press(key(KeyCode::Left), page);
        assert_eq!(m.first(page), 0);
        m.press(key(KeyCode::Right), page);
        assert_eq!(m.first(page), 1);
        m.press(key(KeyCode::PageDown), page);
        assert_eq!(m.first(page), 26);
        // The last page ends with the last node.
        m.press(key(KeyCode::PageDown), page);
        assert_eq!(m.first(page), 35);
        m.press(key(KeyCode::Right), page);
        assert_eq!(m.first(page), 35);
        m.press(key(KeyCode::PageUp), page);
        assert_eq!(m.first(page), 10);
        m.press(key(KeyCode::End), page);
        assert_eq!(m.first(page), 35);
        m.press(key(KeyCode::Home), page);
        assert_eq!(m.first(page), 0);
        // Past the end after the dead nodes go (40 shown) or the window widens: clamped.
        m.press(key(KeyCode::End), page);
        m.dead = false;
        assert_eq!(m.first(page), 15);
        assert_eq!(m.first(100), 0);
        // Scrolling left starts from what the screen shows.
        m.press(key(KeyCode::Left), page);
        assert_eq!(m.first(page), 14);
    }
}
