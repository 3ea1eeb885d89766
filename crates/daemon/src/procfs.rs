//! What the daemon reads about local processes from `/proc/PID/status`: the owner of a
//! process someone wants to move or supervise, for kill(2)'s rule. Never the identity of a
//! client: that comes from its connection (see control::Caller).

use std::io;

/// A process's credentials as far as permission checks need them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Creds {
    /// Real uid.
    pub real_uid: u32,
    /// Saved set-user-ID.
    pub saved_uid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

/// Read the credentials of `pid`. Fails if it does not exist (or vanished meanwhile).
pub(crate) fn read_creds(pid: i32) -> io::Result<Creds> {
    if pid <= 0 {
        return Err(io::ErrorKind::NotFound.into());
    }
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    parse_status(&text).ok_or_else(|| io::Error::other("unexpected /proc status format"))
}

/// Pick the `Uid:` (real, effective, saved, fs) and `Groups:` lines out of a status file.
fn parse_status(text: &str) -> Option<Creds> {
    let mut uids = None;
    let mut groups = None;
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("Uid:") {
            let ids: Vec<u32> = rest
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()
                .ok()?;
            uids = Some((*ids.first()?, *ids.get(2)?));
        } else if let Some(rest) = line.strip_prefix("Groups:") {
            groups = Some(
                rest.split_whitespace()
                    .map(str::parse)
                    .collect::<Result<_, _>>()
                    .ok()?,
            );
        }
    }
    let (real_uid, saved_uid) = uids?;
    Some(Creds {
        real_uid,
        saved_uid,
        groups: groups?,
    })
}

/// kill(2)'s rule: a caller may act on a process if it is root, or if its uid is the target's
/// real or saved set-user-ID.
pub(crate) fn may_act(caller_uid: u32, target: &Creds) -> bool {
    caller_uid == 0 || caller_uid == target.real_uid || caller_uid == target.saved_uid
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4711\n\
        Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t100\t100\t100\nFDSize:\t64\n\
        Groups:\t4 27 100 \nNStgid:\t4711\n";

    #[test]
    fn status_lines_are_parsed() {
        let creds = parse_status(STATUS).unwrap();
        assert_eq!(
            creds,
            Creds {
                real_uid: 1000,
                saved_uid: 1002,
                groups: vec![4, 27, 100]
            }
        );
        let no_groups = STATUS.replace("Groups:\t4 27 100 ", "Groups:");
        assert!(parse_status(&no_groups).unwrap().groups.is_empty());
        assert!(parse_status("Name:\tx\n").is_none());
        assert!(parse_status("Uid:\tx y z w\nGroups:\n").is_none());
        assert!(parse_status("Uid:\t1\nGroups:\n").is_none());
    }

    #[test]
    fn permission_follows_kill() {
        let creds = parse_status(STATUS).unwrap();
        assert!(may_act(0, &creds));
        assert!(may_act(1000, &creds));
        assert!(may_act(1002, &creds));
        assert!(!may_act(1001, &creds), "effective uid does not count");
        assert!(!may_act(1003, &creds));
    }

    #[test]
    fn this_process_is_readable() {
        let creds = read_creds(std::process::id() as i32).unwrap();
        assert!(may_act(nix::unistd::getuid().as_raw(), &creds));
        assert!(read_creds(0).is_err());
        assert!(read_creds(-1).is_err());
    }
}
