//! rmosix transport room: authenticated, encrypted links between the daemons of two nodes.
//!
//! Every node holds the same *cluster key* ([`ClusterKey`], 32 random bytes in a file only
//! root can read). A link is a TCP connection on which both ends first run the Noise
//! handshake `Noise_NNpsk0_25519_AESGCM_SHA256` with the cluster key as pre-shared key. The
//! first handshake message is already authenticated with the key, so the accepting side
//! rejects a peer without it before reading anything else from it; a peer that stays silent
//! is dropped after [`HANDSHAKE_TIMEOUT`].
//!
//! What a link carries, and whom it lets do what, is the wire and daemon rooms' business:
//! this room only moves authenticated messages ([`Link::send`], [`Link::recv`]). A link
//! splits into a [`LinkReader`] and a [`LinkWriter`] for use from two tasks.
//!
//! The door: [`ClusterKey`], [`KeyError`], [`connect`], [`accept`], [`Link`], [`LinkReader`],
//! [`LinkWriter`], [`LinkError`], [`HANDSHAKE_TIMEOUT`], [`MAX_MESSAGE`].
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod key;
mod link;

pub use key::{ClusterKey, KeyError};
pub use link::{
    HANDSHAKE_TIMEOUT, Link, LinkError, LinkReader, LinkWriter, MAX_MESSAGE, accept, connect,
};
