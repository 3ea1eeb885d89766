//! rmosix engine room: ptrace, freeze, image, restore, forwarding (being built).

/// Serve one guest session on the target node: `stream` carries the session protocol from the
/// home supervisor (through the daemons' link). Runs in a process that already has the owner's
/// uid and gids. Returns when the guest leaves (exits, dies or goes home).
pub fn serve_guest(stream: std::os::unix::net::UnixStream) -> std::io::Result<()> {
    drop(stream);
    Err(std::io::Error::other("guest sessions are not built yet"))
}
