//! The lab network: a hub namespace with a bridge, one namespace per node joined to it by a
//! veth pair, and an `unreachable` route that keeps the host out of the lab subnet.
//!
//! Every interface is created directly inside a lab namespace (`ip -n HUB link add vK type
//! veth peer name eth0 netns NODE`), so interface names never meet the host's or another
//! lab's, and deleting the namespaces removes every interface.

use std::net::Ipv4Addr;
use std::sync::Mutex;

use crate::LabError;
use crate::cmd::ip;

/// The lab subnet's first three octets: node K is 10.231.0.K/24.
const SUBNET: [u8; 3] = [10, 231, 0];
/// What the host route makes unreachable: the lab subnet and its neighbours, so that no
/// packet for a lab address ever leaves this machine. It stays in place after the last lab
/// ends: it is idempotent and only covers addresses nothing else here uses.
pub(crate) const HOST_BLOCK: &str = "10.231.0.0/16";
/// The bridge inside the hub namespace.
const BRIDGE: &str = "br0";

/// `ip netns add` turns /run/netns into a shared mount point on first use; two racing
/// first uses in one process can stack two mounts and hide a namespace, so adds and deletes
/// from this process go one at a time.
static NETNS_LOCK: Mutex<()> = Mutex::new(());

/// The address of node `id`.
pub(crate) fn node_addr(id: u16) -> Ipv4Addr {
    Ipv4Addr::new(SUBNET[0], SUBNET[1], SUBNET[2], id as u8)
}

/// Makes the lab subnet unreachable from the host namespace (idempotent).
pub(crate) fn block_host_route() -> Result<(), LabError> {
    ip(&["route", "replace", "unreachable", HOST_BLOCK]).map(drop)
}

/// Creates the named network namespace.
pub(crate) fn add_netns(name: &str) -> Result<(), LabError> {
    let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    ip(&["netns", "add", name]).map(drop)
}

/// Deletes the named network namespace; its interfaces go with it.
pub(crate) fn del_netns(name: &str) -> Result<(), LabError> {
    let _serial = NETNS_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    ip(&["netns", "del", name]).map(drop)
}

/// Names of the network namespaces that exist now.
pub(crate) fn list_netns() -> Result<Vec<String>, LabError> {
    let out = ip(&["netns", "list"])?;
    // Lines look like `name` or `name (id: 3)`.
    Ok(out
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect())
}

/// Sets up the hub: its loopback and a bridge with no spanning tree (ports forward at once).
pub(crate) fn create_hub(hub: &str) -> Result<(), LabError> {
    add_netns(hub)?;
    ip(&["-n", hub, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        hub,
        "link",
        "add",
        BRIDGE,
        "type",
        "bridge",
        "stp_state",
        "0",
    ])?;
    ip(&["-n", hub, "link", "set", BRIDGE, "up"])?;
    Ok(())
}

/// Joins the (already created) node namespace `node_ns` to the hub as node `id`.
pub(crate) fn attach_node(hub: &str, node_ns: &str, id: u16) -> Result<(), LabError> {
    let port = port_name(id);
    let addr = format!("{}/24", node_addr(id));
    ip(&[
        "-n", hub, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns", node_ns,
    ])?;
    ip(&["-n", hub, "link", "set", &port, "master", BRIDGE, "up"])?;
    ip(&["-n", node_ns, "addr", "add", &addr, "dev", "eth0"])?;
    ip(&["-n", node_ns, "link", "set", "eth0", "up"])?;
    ip(&["-n", node_ns, "link", "set", "lo", "up"])?;
    Ok(())
}

/// Cuts dead node `id` off: both ends of its link go down, and each peer gets an
/// `unreachable` route to it so that a connect fails at once (EHOSTUNREACH) instead of
/// waiting out ARP, as it would for a machine that vanished.
pub(crate) fn cut_node(hub: &str, node_ns: &str, id: u16, peers: &[String]) -> Vec<LabError> {
    let addr = format!("{}/32", node_addr(id));
    let port = port_name(id);
    let mut errors = Vec::new();
    let steps: Vec<Vec<&str>> = std::iter::once(vec!["-n", hub, "link", "set", &port, "down"])
        .chain(std::iter::once(vec![
            "-n", node_ns, "link", "set", "eth0", "down",
        ]))
        .chain(
            peers
                .iter()
                .map(|peer| vec!["-n", peer, "route", "replace", "unreachable", &addr]),
        )
        .collect();
    for step in steps {
        if let Err(e) = ip(&step) {
            errors.push(e);
        }
    }
    errors
}

/// Undoes [`cut_node`] for node `id`, back from the dead: both ends of its link come up
/// (which brings back the node's route to the subnet) and the peers' `unreachable` routes
/// to it go.
pub(crate) fn revive_node(hub: &str, node_ns: &str, id: u16, peers: &[String]) -> Vec<LabError> {
    let addr = format!("{}/32", node_addr(id));
    let port = port_name(id);
    let mut errors = Vec::new();
    let steps: Vec<Vec<&str>> = std::iter::once(vec!["-n", node_ns, "link", "set", "eth0", "up"])
        .chain(std::iter::once(vec!["-n", hub, "link", "set", &port, "up"]))
        .chain(
            peers
                .iter()
                .map(|peer| vec!["-n", peer, "route", "del", "unreachable", &addr]),
        )
        .collect();
    for step in steps {
        if let Err(e) = ip(&step) {
            errors.push(e);
        }
    }
    errors
}

/// Takes the hub's end of node `id`'s link down (`up` false) or up again. Down, the bridge
/// drops whatever either side sends, and nobody is told: a partition. Only lab namespaces
/// are touched.
pub(crate) fn set_port(hub: &str, id: u16, up: bool) -> Result<(), LabError> {
    let port = port_name(id);
    let state = if up { "up" } else { "down" };
    ip(&["-n", hub, "link", "set", &port, state]).map(drop)
}

/// The hub's end of node `id`'s veth pair.
fn port_name(id: u16) -> String {
    format!("v{id}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_addresses_follow_the_plan() {
        assert_eq!(node_addr(1), Ipv4Addr::new(10, 231, 0, 1));
        assert_eq!(node_addr(20), Ipv4Addr::new(10, 231, 0, 20));
    }
}
