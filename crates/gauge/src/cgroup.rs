//! Which cgroup holds the node, per controller, in a v1, v2 or hybrid layout.
//!
//! The layout comes from `/proc/PID/mountinfo` (which hierarchies are mounted where, and
//! which part of each a mount shows) and `/proc/PID/cgroup` (where the process sits in each).
//! A controller is looked up in a v1 hierarchy that carries it first (hybrid systems mount
//! `cpu` in v1 and an empty v2 tree beside it, as this lab's machine does), then in v2.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::GaugeError;
use crate::root::{Root, malformed, read};

/// A cgroup's path as `/proc/PID/cgroup` shows them, the same in every hierarchy:
/// `/system.slice/mosixd.service`, or `/` for the root cgroup (the whole machine).
///
/// Parsed from text it is absolute, without `.` or `..`, and without repeated or trailing
/// slashes, so that it names one directory below each hierarchy's mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupPath(String);

impl CgroupPath {
    /// The root cgroup: the node is the whole machine.
    pub fn root() -> CgroupPath {
        CgroupPath("/".to_owned())
    }

    /// The path as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for CgroupPath {
    type Err = GaugeError;

    fn from_str(text: &str) -> Result<CgroupPath, GaugeError> {
        let bad = |what| GaugeError::CgroupPath {
            path: text.to_owned(),
            what,
        };
        let rest = text
            .strip_prefix('/')
            .ok_or_else(|| bad("not absolute (a path such as /system.slice, or /)"))?;
        let parts: Vec<&str> = rest.split('/').filter(|p| !p.is_empty()).collect();
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return Err(bad("has a . or .. in it"));
        }
        Ok(CgroupPath(format!("/{}", parts.join("/"))))
    }
}

impl fmt::Display for CgroupPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A cgroup file system version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Version {
    V1,
    V2,
}

/// One cgroup mount from `mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Mount {
    /// The part of the hierarchy the mount shows (`/` unless bind-mounted or namespaced).
    root: String,
    /// Where it is mounted, as the kernel names it.
    point: PathBuf,
    /// v1 with its controllers (super options such as `cpu`, `cpuacct`), or v2.
    version: Version,
    controllers: Vec<String>,
}

/// Where the process sits in each hierarchy, from `/proc/PID/cgroup`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Membership {
    /// `(controllers, path)` of each v1 line.
    v1: Vec<(Vec<String>, String)>,
    /// The path of the `0::` line.
    v2: Option<String>,
}

/// The cgroup of one controller: its directory (inside the [`Root`]) and the hierarchy's top.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    pub(crate) version: Version,
    /// The cgroup's directory.
    pub(crate) dir: PathBuf,
    /// The mount point: walks up stop here.
    pub(crate) top: PathBuf,
    /// The cgroup's path inside its hierarchy (`/` for the root cgroup).
    pub(crate) path: String,
}

impl Place {
    /// The cgroup and its ancestors up to the mount, nearest first: limits set on any of
    /// them bind it.
    pub(crate) fn ancestors(&self) -> impl Iterator<Item = &Path> {
        self.dir
            .ancestors()
            .take_while(|d| d.starts_with(&self.top))
    }

    /// True for the root cgroup: the node is the whole machine.
    pub(crate) fn is_root(&self) -> bool {
        self.path.trim_end_matches('/').is_empty()
    }
}

/// The node's cgroups, one per controller the gauge reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Layout {
    /// The `cpu` controller's cgroup (v1) or the unified one (v2): its tasks are the node's
    /// processes and its quota the node's CPUs.
    pub(crate) cpu: Option<Place>,
    /// Where CPU usage is counted for the same cgroup: the v1 `cpuacct` cgroup when it has the
    /// same path as `cpu`, or the v2 cgroup itself. `None` when usage is not kept per node.
    pub(crate) usage: Option<Place>,
    /// The memory controller's cgroup.
    pub(crate) memory: Option<Place>,
}

impl Layout {
    /// Reads the layout of the node `root` names: the cgroups of its process, or the cgroup
    /// it names in every hierarchy its process sees, which must exist.
    pub(crate) fn read(root: &Root) -> Result<Layout, GaugeError> {
        let mountinfo = root.proc_own("mountinfo");
        let mounts = parse_mountinfo(&read(&mountinfo)?);
        let membership = match root.cgroup() {
            Some(named) => Membership::everywhere(named, &mounts),
            None => {
                let cgroup = root.proc_own("cgroup");
                parse_membership(&read(&cgroup)?)
                    .ok_or_else(|| malformed(&cgroup, "a line is not ID:CONTROLLERS:PATH"))?
            }
        };
        let cpu = locate(root, &mounts, &membership, "cpu");
        if let Some(named) = root.cgroup() {
            check_named(named, cpu.as_ref())?;
        }
        let usage = match &cpu {
            Some(p) if p.version == Version::V2 => Some(p.clone()),
            Some(p) => locate(root, &mounts, &membership, "cpuacct")
                .filter(|a| a.version == Version::V1 && a.path == p.path),
            None => None,
        };
        let memory = locate(root, &mounts, &membership, "memory");
        Ok(Layout { cpu, usage, memory })
    }
}

impl Membership {
    /// Membership in cgroup `named` in every hierarchy of `mounts`.
    fn everywhere(named: &CgroupPath, mounts: &[Mount]) -> Membership {
        let path = named.as_str().to_owned();
        Membership {
            v1: mounts
                .iter()
                .filter(|m| m.version == Version::V1)
                .map(|m| (m.controllers.clone(), path.clone()))
                .collect(),
            v2: Some(path),
        }
    }
}

/// Checks that the cgroup `named` for the node exists where its `cpu` controller is, `cpu`:
/// its tasks are the node's. The root cgroup needs none: the machine is read from `/proc`.
fn check_named(named: &CgroupPath, cpu: Option<&Place>) -> Result<(), GaugeError> {
    if *named == CgroupPath::root() {
        return Ok(());
    }
    match cpu {
        Some(place) if place.dir.is_dir() => Ok(()),
        Some(place) => Err(GaugeError::NoSuchCgroup {
            cgroup: named.to_string(),
            dir: place.dir.clone(),
        }),
        None => Err(GaugeError::CgroupNotMounted {
            cgroup: named.to_string(),
        }),
    }
}

/// The cgroup of `controller`: in a v1 hierarchy that carries it, else in v2.
fn locate(root: &Root, mounts: &[Mount], member: &Membership, controller: &str) -> Option<Place> {
    let v1 = member
        .v1
        .iter()
        .find(|(c, _)| c.iter().any(|c| c == controller))
        .and_then(|(_, path)| {
            mounts
                .iter()
                .filter(|m| {
                    m.version == Version::V1 && m.controllers.iter().any(|c| c == controller)
                })
                .find_map(|m| place(root, m, path, Version::V1))
        });
    v1.or_else(|| {
        let path = member.v2.as_ref()?;
        mounts
            .iter()
            .filter(|m| m.version == Version::V2)
            .find_map(|m| place(root, m, path, Version::V2))
    })
}

/// The directory of cgroup `path` under mount `m`, if the mount shows it.
fn place(root: &Root, m: &Mount, path: &str, version: Version) -> Option<Place> {
    let rest = if m.root == "/" {
        path
    } else {
        path.strip_prefix(m.root.as_str())?
    };
    if !(rest.is_empty() || rest.starts_with('/')) {
        return None; // `/a` is not under mount root `/ab`.
    }
    let top = root.path(&m.point);
    let dir = top.join(rest.trim_start_matches('/'));
    Some(Place {
        version,
        dir,
        top,
        path: path.to_owned(),
    })
}

/// The cgroup mounts in a `mountinfo` text; other lines and malformed ones are skipped.
///
/// A line reads `ID PARENT MAJ:MIN ROOT POINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER`
/// (proc(5)); for v1 the controllers are among the super options.
pub(crate) fn parse_mountinfo(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let left: Vec<&str> = left.split(' ').collect();
            let mut right = right.split(' ');
            let (fstype, _source, super_opts) = (right.next()?, right.next()?, right.next()?);
            let (root, point) = (unescape(left.get(3)?), unescape(left.get(4)?));
            let (version, controllers) = match fstype {
                "cgroup2" => (Version::V2, Vec::new()),
                "cgroup" => (
                    Version::V1,
                    super_opts.split(',').map(str::to_owned).collect(),
                ),
                _ => return None,
            };
            Some(Mount {
                root,
                point: PathBuf::from(point),
                version,
                controllers,
            })
        })
        .collect()
}

/// Undoes mountinfo's octal escapes (`\040` for a space).
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)));
        match octal {
            Some(d) => {
                out.push(
                    d.iter()
                        .fold(0u8, |n, b| n.wrapping_mul(8).wrapping_add(b - b'0')),
                );
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/PID/cgroup` (`ID:CONTROLLERS:PATH` per line; `0::PATH` is v2). `None` if a
/// line has the wrong shape.
pub(crate) fn parse_membership(text: &str) -> Option<Membership> {
    let mut m = Membership::default();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut fields = line.splitn(3, ':');
        let (id, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        if id == "0" && controllers.is_empty() {
            m.v2 = Some(path.to_owned());
        } else {
            m.v1.push((
                controllers.split(',').map(str::to_owned).collect(),
                path.to_owned(),
            ));
        }
    }
    Some(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    #[test]
    fn mountinfo_finds_v1_controllers_and_v2() {
        let mounts = parse_mountinfo(HYBRID);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[0].controllers, ["rw", "cpu"]);
        assert_eq!(mounts[4].version, Version::V2);
        assert_eq!(mounts[4].point, Path::new("/sys/fs/cgroup/unified"));
    }

    #[test]
    fn mountinfo_unescapes_and_keeps_optional_fields_apart() {
        let line = "50 1 0:40 /lab /mnt/my\\040cg rw shared:7 master:2 - cgroup2 none rw\n";
        let m = &parse_mountinfo(line)[0];
        assert_eq!(m.point, Path::new("/mnt/my cg"));
        assert_eq!(m.root, "/lab");
    }

    #[test]
    fn hybrid_prefers_v1_and_pairs_cpuacct_only_on_the_same_path() {
        let root = Root::at("/fx");
        let mounts = parse_mountinfo(HYBRID);
        let member =
            parse_membership("4:memory:/jobs/a\n2:cpuacct:/\n1:cpu:/node1\n0::/\n").unwrap();
        let cpu = locate(&root, &mounts, &member, "cpu").unwrap();
        assert_eq!(cpu.version, Version::V1);
        assert_eq!(cpu.dir, Path::new("/fx/sys/fs/cgroup/cpu/node1"));
        assert!(!cpu.is_root());
        let mem = locate(&root, &mounts, &member, "memory").unwrap();
        assert_eq!(mem.dir, Path::new("/fx/sys/fs/cgroup/memory/jobs/a"));
        let dirs: Vec<_> = mem.ancestors().collect();
        assert_eq!(dirs.len(), 3, "{dirs:?}");
        let acct = locate(&root, &mounts, &member, "cpuacct").unwrap();
        assert!(acct.is_root());
    }

    #[test]
    fn pure_v2_and_a_namespaced_mount_root() {
        let root = Root::at("/fx");
        let mounts = parse_mountinfo("30 1 0:26 /lab /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n");
        let member = parse_membership("0::/lab/n1\n").unwrap();
        let cpu = locate(&root, &mounts, &member, "cpu").unwrap();
        assert_eq!(cpu.version, Version::V2);
        assert_eq!(cpu.dir, Path::new("/fx/sys/fs/cgroup/n1"));
        let outside = parse_membership("0::/labx\n").unwrap();
        assert_eq!(locate(&root, &mounts, &outside, "cpu"), None);
    }

    #[test]
    fn membership_rejects_junk() {
        assert_eq!(parse_membership("garbage\n"), None);
        assert!(parse_membership("").is_some());
    }
}
