//! rmosix tools room: what the command-line tools (`migrate`, `mosctl`, `mosrun`) share.
//!
//! Each binary is thin: it parses its arguments with clap, flattening [`CommonArgs`] for the
//! flags every tool has, asks the local `mosixd` with [`ask`], and maps the answer to an exit
//! code (0 done, 1 could not, 2 usage). The daemon does the work; the wire room defines what
//! is said.
//!
//! The door: [`CommonArgs`], [`ask`], [`AskError`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cli;

pub use cli::{AskError, CommonArgs, ask};
