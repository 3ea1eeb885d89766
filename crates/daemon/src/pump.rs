//! Byte pipe between a node link and a local stream socket.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use rmosix_transport::{Link, LinkError};

/// Bytes read from the local side per link message.
const CHUNK: usize = 64 * 1024;

/// Why a pipe ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum PumpError {
    /// The link failed.
    #[error("link failed")]
    Link(#[from] LinkError),
    /// The local socket failed.
    #[error("local socket failed")]
    Local(#[from] std::io::Error),
}

/// Copy bytes both ways between `link` and `local` until both directions have ended. `first`
/// is sent over the link before anything read from `local`. An end of stream on one side
/// is passed on as a half-close of the other; an error on either side ends both directions.
pub(crate) async fn pump<S>(link: Link, local: S, first: Vec<u8>) -> Result<(), PumpError>
where
    S: AsyncRead + AsyncWrite,
{
    let (mut link_rx, mut link_tx) = link.split();
    let (mut local_rx, mut local_tx) = tokio::io::split(local);
    let outgoing = async {
        if !first.is_empty() {
            link_tx.send(&first).await?;
        }
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = local_rx.read(&mut buf).await?;
            if n == 0 {
                link_tx.shutdown().await?;
                return Ok::<(), PumpError>(());
            }
            link_tx.send(&buf[..n]).await?;
        }
    };
    let incoming = async {
        while let Some(msg) = link_rx.recv().await? {
            local_tx.write_all(&msg).await?;
        }
        local_tx.shutdown().await?;
        Ok::<(), PumpError>(())
    };
    tokio::try_join!(outgoing, incoming).map(|_| ())
}
