//! `mosmon`: the cluster as a live bar chart in the terminal, one bar per node of the map, as
//! the local daemon's view has it (MOSIX's `mosmon`; see docs/mosmon.md).
//!
//! Plan in pure code, apply in thin code: [`Monitor`] holds what the user chose (the view,
//! the totals line, dead nodes shown or not, the scroll position) and what the daemon said
//! last, and turns keys into changes; [`draw`] paints a `Monitor` into a ratatui buffer of any
//! size, which the unit tests read back. [`run`] is the rest: the terminal, a thread that asks
//! the daemon for its status once a second, one for the keyboard, and the signals that end it.

mod chart;
mod live;
mod screen;

pub use chart::{draw, page};
pub use live::{MonitorError, run};
pub use screen::{Feed, Flow, Monitor, View};
