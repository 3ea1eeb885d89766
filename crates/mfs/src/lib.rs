//! rmosix MFS room: every node's files from every node, at `/mfs/N/path`.
//!
//! * [`protocol`]: the requests and answers one node's daemon sends another over the
//!   authenticated link, framed with the data of reads and writes outside the JSON.
//! * [`serve`]: executing a request at the serving node as its caller (fsuid, fsgid and
//!   groups of one worker thread), confined to the node's root (`resolve`).
//! * [`fs`]: the FUSE file system mounted at `/mfs`, which turns the kernel's requests into
//!   [`protocol`] requests for the node they name, and resolves the special directories
//!   (`here`, `home`, `magic`, ...) per calling process.
//!
//! The daemon supplies what only it knows through [`fs::Cluster`]: the nodes, how to reach
//! one, and where a process runs. See docs/mfs.md.

mod creds;
pub mod fs;
mod locks;
mod magic;
pub mod protocol;
mod remember;
mod resolve;
pub mod serve;
mod signals;
mod status;
