//! `/proc/PID/maps` and `/proc/PID/smaps`: the memory areas of a process.

use std::io;

use rmosix_image::{Advice, Area};

use crate::ptrace::Pid;

/// PROT_* bits of an area.
pub fn prot(area: &Area) -> i32 {
    (if area.read { libc::PROT_READ } else { 0 })
        | (if area.write { libc::PROT_WRITE } else { 0 })
        | (if area.exec { libc::PROT_EXEC } else { 0 })
}

/// Parse the text of /proc/PID/maps.
pub fn parse(text: &str) -> io::Result<Vec<Area>> {
    text.lines()
        .filter(|l| !l.is_empty())
        .map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> io::Result<Area> {
    let bad = || io::Error::new(io::ErrorKind::InvalidData, format!("bad maps line: {line}"));
    let mut fields = line.splitn(6, ' ');
    let range = fields.next().ok_or_else(bad)?;
    let perms = fields.next().ok_or_else(bad)?.as_bytes();
    let offset = fields.next().ok_or_else(bad)?;
    let _dev = fields.next().ok_or_else(bad)?;
    let inode = fields.next().ok_or_else(bad)?;
    let name = fields.next().unwrap_or("").trim_start().to_string();
    let (start, end) = range.split_once('-').ok_or_else(bad)?;
    let hex = |s: &str| u64::from_str_radix(s, 16).map_err(|_| bad());
    if perms.len() != 4 {
        return Err(bad());
    }
    Ok(Area {
        start: hex(start)?,
        end: hex(end)?,
        read: perms[0] == b'r',
        write: perms[1] == b'w',
        exec: perms[2] == b'x',
        shared: perms[3] == b's',
        offset: hex(offset)?,
        inode: inode.parse().map_err(|_| bad())?,
        name,
        advice: Vec::new(),
        guards: Vec::new(),
        file: None,
    })
}

/// An area as /proc/PID/smaps shows it: its maps line, with the advice its VmFlags name, and
/// all of those flags.
pub struct Mapped {
    pub area: Area,
    /// The two-letter VmFlags codes (proc(5)).
    pub flags: Vec<String>,
}

impl Mapped {
    /// Whether VmFlags holds `code`.
    pub fn has(&self, code: &str) -> bool {
        self.flags.iter().any(|f| f == code)
    }
}

/// The VmFlags codes of the advice an image keeps (see [`Advice`]).
const ADVICE: [(&str, Advice); 8] = [
    ("wf", Advice::WipeOnFork),
    ("dc", Advice::DontFork),
    ("dd", Advice::DontDump),
    ("dp", Advice::Droppable),
    ("hg", Advice::HugePage),
    ("nh", Advice::NoHugePage),
    ("mg", Advice::Mergeable),
    ("gd", Advice::GrowsDown),
];

/// Parse the text of /proc/PID/smaps: each maps line, then `Key: value` lines, VmFlags last.
pub fn parse_smaps(text: &str) -> io::Result<Vec<Mapped>> {
    let mut mapped: Vec<Mapped> = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        if let Some(codes) = line.strip_prefix("VmFlags:") {
            let last = mapped.last_mut().ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "smaps: VmFlags before an area")
            })?;
            last.flags = codes.split_whitespace().map(str::to_owned).collect();
            last.area.advice = ADVICE
                .iter()
                .filter(|(code, _)| last.has(code))
                .map(|&(_, advice)| advice)
                .collect();
        } else if line.starts_with(|c: char| c.is_ascii_hexdigit()) && line.contains('-') {
            let area = parse_line(line)?;
            mapped.push(Mapped {
                area,
                flags: Vec::new(),
            });
        }
    }
    Ok(mapped)
}

/// Read the areas of a live process with their flags.
pub fn read_smaps(pid: Pid) -> io::Result<Vec<Mapped>> {
    parse_smaps(&std::fs::read_to_string(format!("/proc/{pid}/smaps"))?)
}

/// Read the areas of a live process.
pub fn read(pid: Pid) -> io::Result<Vec<Area>> {
    parse(&std::fs::read_to_string(format!("/proc/{pid}/maps"))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anon_and_pseudo_areas() {
        let text = "55d0c0a00000-55d0c0a02000 r--p 00000000 fd:01 1234   /usr/bin/cat\n\
                    7ffd1000-7ffd3000 rw-p 00000000 00:00 0 \n\
                    7fff0000-7fff4000 r-xp 00000000 00:00 0                          [vdso]\n\
                    7f0000000000-7f0000001000 ---s 00001000 00:05 99 /SYSV00000000 (deleted)\n";
        let areas = parse(text).unwrap();
        assert_eq!(areas.len(), 4);
        assert_eq!(areas[0].name, "/usr/bin/cat");
        assert_eq!(prot(&areas[0]), libc::PROT_READ);
        assert_eq!(areas[1].name, "");
        assert!(areas[1].write && !areas[1].shared);
        assert!(areas[2].is_vdso_block());
        assert_eq!(areas[3].name, "/SYSV00000000 (deleted)");
        assert!(areas[3].shared);
        assert_eq!(areas[3].offset, 0x1000);
    }

    #[test]
    fn smaps_gives_each_area_its_flags_and_advice() {
        let text = "7f0b7e15d000-7f0b7e15f000 rw-p 00000000 00:00 0 \n\
                    Size:                  8 kB\n\
                    THPeligible:           0\n\
                    VmFlags: rd wr mr mw me nr wf dd dp \n\
                    7f0b7e161000-7f0b7e165000 r--s 00000000 00:09 139240      socket:[139240]\n\
                    Size:                 16 kB\n\
                    VmFlags: rd sh mr mw ms mm \n";
        let mapped = parse_smaps(text).unwrap();
        assert_eq!(mapped.len(), 2);
        let advice = [Advice::WipeOnFork, Advice::DontDump, Advice::Droppable];
        assert_eq!(mapped[0].area.advice, advice);
        assert!(mapped[1].has("mm") && !mapped[1].has("io"));
        assert_eq!(mapped[1].area.name, "socket:[139240]");
        assert!(parse_smaps("VmFlags: rd\n").is_err());
    }

    #[test]
    fn rejects_junk() {
        assert!(parse("zzz r--p").is_err());
        assert!(parse("1-2 rw 0 0:0 0").is_err());
    }
}
