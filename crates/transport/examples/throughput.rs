//! How fast a link moves bytes on loopback: `cargo run --release -p rmosix-transport
//! --example throughput [MEGABYTES] [MESSAGE_KIB]`. Sends MEGABYTES (default 1024) in messages
//! of MESSAGE_KIB (default 1024) through one link and prints MB/s as seen by the receiver.

use std::time::Instant;

use rmosix_transport::{ClusterKey, accept, connect};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let total_mb: usize = args.next().map_or(Ok(1024), |a| a.parse())?;
    let msg_kib: usize = args.next().map_or(Ok(1024), |a| a.parse())?;
    let dir = tempfile::tempdir()?;
    let key = ClusterKey::generate(&dir.path().join("key"))?;

    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server_key = key.clone();
    let receiver = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut link = accept(tcp, &server_key).await?;
        let start = Instant::now();
        let mut bytes = 0usize;
        while let Some(msg) = link.recv().await? {
            bytes += msg.len();
        }
        anyhow::Ok((bytes, start.elapsed()))
    });

    let (_reader, mut writer) = connect(addr, &key).await?.split();
    let msg = vec![0xa5u8; msg_kib << 10];
    let count = (total_mb << 20) / msg.len();
    for _ in 0..count {
        writer.send(&msg).await?;
    }
    writer.shutdown().await?;
    let (bytes, elapsed) = receiver.await??;
    let mb = bytes as f64 / (1 << 20) as f64;
    println!(
        "{mb:.0} MiB in {count} messages of {msg_kib} KiB: {:.3} s, {:.0} MiB/s",
        elapsed.as_secs_f64(),
        mb / elapsed.as_secs_f64()
    );
    Ok(())
}
