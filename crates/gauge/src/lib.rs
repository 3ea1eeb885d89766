//! rmosix gauge room: how loaded this node is and what it can hold, in MOSIX's units.
//!
//! The daemon gossips each node's load, speed, CPUs, utilisation and memory (reference §2.2,
//! §5.2). This room measures them for one node, a cgroup as a container would see itself:
//! the one the daemon runs in, or one named for the node ([`Root::with_cgroup`]; the root
//! cgroup is the whole machine):
//! - **capacity**: CPUs = min(online, affinity, cgroup CPU quota up the hierarchy), possibly
//!   fractional; memory = min(the machine's, the cgroup's limits), free likewise;
//! - **load**: the node's run-queue length (its cgroup's tasks running or waiting, from
//!   `/proc/TID/schedstat`), averaged per second and smoothed as MOSIX does ([`Smoother`]),
//!   in MOSIX units ([`mosix_units`]: 100 = one busy process on one standard CPU);
//! - **speed**: measured at start ([`measure_speed`]), replaced by `mosctl setspeed`;
//! - **utilisation**: busy CPUs over usable CPUs.
//!
//! It reads `/proc` and `/sys/fs/cgroup` (cgroup v1, v2 or hybrid, found from mountinfo) and
//! writes nothing. Gossip, the balancer and the tools are other rooms'. `docs/gauge.md` has the
//! formulas and why.
//!
//! The door: [`Gauge`], [`Reading`], [`Root`], [`CgroupPath`], [`GaugeError`], [`Smoother`],
//! [`mosix_units`], [`measure_speed`], [`STANDARD_SPEED`], [`PERIOD`].

#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod capacity;
mod cgroup;
mod error;
mod gauge;
mod root;
mod smooth;
mod speed;

pub use cgroup::CgroupPath;
pub use error::GaugeError;
pub use gauge::{Gauge, Reading};
pub use root::Root;
pub use smooth::{PERIOD, STANDARD_SPEED, Smoother, mosix_units};
pub use speed::measure_speed;
