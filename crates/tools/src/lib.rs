//! rmosix tools room: what the command-line tools (`migrate`, `mosctl`, `mosrun`, `mosmon`)
//! share.
//!
//! Each binary is thin: it parses its arguments with clap, flattening [`CommonArgs`] for the
//! flags every tool has, asks the local `mosixd` through the wire room's `DaemonSocket`
//! (which first checks that root, the caller or a user the caller trusts listens there), and
//! maps the answer to an exit code (0 done, 1 could not, 2 usage). Output goes through
//! [`print_out`], which ends quietly when the reader has gone. The daemon does the work; the
//! wire room defines what is said, and how a client reaches the daemon (`mosixd guest` does
//! too).
//!
//! The door: [`cli`] (each tool's clap definition: `cli::mosctl::Args` and the others),
//! [`CommonArgs`], [`parse_user`], [`print_out`], [`hosted_table`] (what `mosctl
//! guests` prints), [`MosixOptions`] (mosrun's MOSIX options, which clap cannot read),
//! [`monitor`] (all of `mosmon` but its arguments).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod cli;
mod hosted;
pub mod monitor;
mod placement;

pub use cli::{CommonArgs, parse_user, print_out};
pub use hosted::hosted_table;
pub use placement::{MosixOptions, OptionError};
