//! Which node of the map this machine is.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use rmosix_config::{Map, MapError, NodeId};

use crate::daemon::DaemonError;

/// Our node: `explicit` if given (it must be in the map), else the node whose address is
/// one of this machine's interface addresses (host names resolved through the system
/// resolver, once, at start).
pub(crate) fn own_node(map: &Map, explicit: Option<NodeId>) -> Result<NodeId, DaemonError> {
    if let Some(id) = explicit {
        return Ok(map.check_own(id)?);
    }
    let local = local_addresses()?;
    map.find_own(&local, resolve)
        .map_err(|e: MapError| e.into())
}

fn local_addresses() -> Result<Vec<IpAddr>, DaemonError> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(|e| DaemonError::Interfaces(e.into()))?;
    Ok(addrs
        .filter_map(|ifa| {
            let addr = ifa.address?;
            addr.as_sockaddr_in()
                .map(|a| IpAddr::V4(a.ip()))
                .or_else(|| addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        })
        .collect())
}

fn resolve(name: &str) -> Vec<IpAddr> {
    (name, 0)
        .to_socket_addrs()
        .map(|addrs| addrs.map(|a: SocketAddr| a.ip()).collect())
        .unwrap_or_default()
}
