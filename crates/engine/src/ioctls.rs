//! The ioctl requests a remote forwards home, each with what the kernel's own definition of
//! it does with the argument: nothing (or takes it as a value), or reads or writes exactly
//! that many bytes where it points. The forwarded call copies exactly those bytes, so a
//! reply never writes past what the program gave the kernel (glibc's `struct termios` is 60
//! bytes, the kernel's 36: copying the former smashed the stacks of programs that call
//! `tcgetattr`).
//!
//! Requests built with `_IOC` (`_IOR`, `_IOW`, `_IO`) carry their direction and size in their
//! number, and the unit tests check that the table agrees. The old terminal requests
//! (`TCGETS`, `TIOCGWINSZ`, ...) carry nothing: for them the table is the only source, and the
//! unit tests check it against the kernel's UAPI headers with a compiled C program
//! (`tests/ioctls_uapi.c`). A request not here goes home, where it runs natively.
//! See docs/forwarding.md.

use crate::table::{Arg, Len, Valid};

/// What the kernel does with an ioctl's third argument.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Argument {
    /// Nothing, or it is a plain value (a flag, a queue selector, a duration).
    Value,
    /// It points at this many bytes the kernel reads.
    Reads(u64),
    /// It points at this many bytes the kernel writes.
    Writes(u64),
}

/// One request the remote forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Its name in the kernel's headers.
    pub name: &'static str,
    /// Its number (the kernel compares the low 32 bits of the request).
    pub number: u32,
    /// What the kernel does with its argument.
    pub argument: Argument,
    /// The row of the forwarded call: (fd, request, argument).
    args: [Arg; 3],
}

impl Request {
    const fn new(name: &'static str, number: libc::c_ulong, argument: Argument) -> Request {
        let third = match argument {
            Argument::Value => Arg::Val,
            Argument::Reads(n) => Arg::In(Len::Fixed(n)),
            Argument::Writes(n) => Arg::Out(Len::Fixed(n), Valid::All),
        };
        Request {
            name,
            number: number as u32,
            argument,
            args: [Arg::Val, Arg::Val, third],
        }
    }

    /// How the forwarded call's arguments cross (see `table::Row`).
    pub fn args(&'static self) -> &'static [Arg] {
        &self.args
    }
}

/// The request `request` names, if the remote forwards it. The kernel takes the request as
/// an `unsigned int`, so only its low 32 bits count.
pub fn find(request: u64) -> Option<&'static Request> {
    REQUESTS.iter().find(|r| r.number == request as u32)
}

/// Bytes of the kernel's `struct termios` (asm/termbits.h): four `tcflag_t`, `c_line` and
/// 19 control characters. Not glibc's, which is 60 bytes.
const TERMIOS: u64 = 36;
/// `struct termios2`: a `struct termios` and two speeds.
const TERMIOS2: u64 = 44;
/// `struct termio`: four `unsigned short`, `c_line` and 8 control characters, padded.
const TERMIO: u64 = 18;
/// `struct winsize`: four `unsigned short`.
const WINSIZE: u64 = 8;
/// An `int`, `unsigned int` or `pid_t`.
const INT: u64 = 4;

use Argument::{Reads, Value, Writes};

/// Every request the remote forwards. FIOGETOWN and FIOSETOWN (asm/sockios.h) are not in
/// the libc crate.
pub const REQUESTS: &[Request] = &[
    Request::new("TCGETS", libc::TCGETS, Writes(TERMIOS)),
    Request::new("TCSETS", libc::TCSETS, Reads(TERMIOS)),
    Request::new("TCSETSW", libc::TCSETSW, Reads(TERMIOS)),
    Request::new("TCSETSF", libc::TCSETSF, Reads(TERMIOS)),
    Request::new("TCGETS2", libc::TCGETS2, Writes(TERMIOS2)),
    Request::new("TCSETS2", libc::TCSETS2, Reads(TERMIOS2)),
    Request::new("TCSETSW2", libc::TCSETSW2, Reads(TERMIOS2)),
    Request::new("TCSETSF2", libc::TCSETSF2, Reads(TERMIOS2)),
    Request::new("TCGETA", libc::TCGETA, Writes(TERMIO)),
    Request::new("TCSETA", libc::TCSETA, Reads(TERMIO)),
    Request::new("TCSETAW", libc::TCSETAW, Reads(TERMIO)),
    Request::new("TCSETAF", libc::TCSETAF, Reads(TERMIO)),
    Request::new("TCSBRK", libc::TCSBRK, Value),
    Request::new("TCSBRKP", libc::TCSBRKP, Value),
    Request::new("TCXONC", libc::TCXONC, Value),
    Request::new("TCFLSH", libc::TCFLSH, Value),
    Request::new("TIOCGWINSZ", libc::TIOCGWINSZ, Writes(WINSIZE)),
    Request::new("TIOCSWINSZ", libc::TIOCSWINSZ, Reads(WINSIZE)),
    Request::new("TIOCGPGRP", libc::TIOCGPGRP, Writes(INT)),
    Request::new("TIOCSPGRP", libc::TIOCSPGRP, Reads(INT)),
    Request::new("TIOCGSID", libc::TIOCGSID, Writes(INT)),
    Request::new("TIOCSCTTY", libc::TIOCSCTTY, Value),
    Request::new("TIOCNOTTY", libc::TIOCNOTTY, Value),
    Request::new("TIOCEXCL", libc::TIOCEXCL, Value),
    Request::new("TIOCNXCL", libc::TIOCNXCL, Value),
    Request::new("TIOCGEXCL", libc::TIOCGEXCL, Writes(INT)),
    Request::new("TIOCGETD", libc::TIOCGETD, Writes(INT)),
    Request::new("TIOCSETD", libc::TIOCSETD, Reads(INT)),
    Request::new("TIOCMGET", libc::TIOCMGET, Writes(INT)),
    Request::new("TIOCMSET", libc::TIOCMSET, Reads(INT)),
    Request::new("TIOCMBIS", libc::TIOCMBIS, Reads(INT)),
    Request::new("TIOCMBIC", libc::TIOCMBIC, Reads(INT)),
    Request::new("TIOCOUTQ", libc::TIOCOUTQ, Writes(INT)),
    Request::new("FIONREAD", libc::FIONREAD, Writes(INT)),
    Request::new("TIOCPKT", libc::TIOCPKT, Reads(INT)),
    Request::new("TIOCGPKT", libc::TIOCGPKT, Writes(INT)),
    // Pseudo-terminal masters. TIOCGPTPEER's value is the new descriptor's flags; the
    // descriptor it returns is the shell's, where every descriptor of the process lives.
    Request::new("TIOCGPTN", libc::TIOCGPTN, Writes(INT)),
    Request::new("TIOCSPTLCK", libc::TIOCSPTLCK, Reads(INT)),
    Request::new("TIOCGPTLCK", libc::TIOCGPTLCK, Writes(INT)),
    Request::new("TIOCGPTPEER", libc::TIOCGPTPEER, Value),
    // Any descriptor.
    Request::new("FIONBIO", libc::FIONBIO, Reads(INT)),
    Request::new("FIOASYNC", libc::FIOASYNC, Reads(INT)),
    Request::new("FIOCLEX", libc::FIOCLEX, Value),
    Request::new("FIONCLEX", libc::FIONCLEX, Value),
    Request::new("FIOSETOWN", 0x8901, Reads(INT)),
    Request::new("FIOGETOWN", 0x8903, Writes(INT)),
];

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;
    use std::process::Command;

    use super::*;
    use crate::table::Shape;

    /// `_IOC_DIR` bits: the caller writes (the kernel reads), the caller reads.
    const IOC_WRITE: u32 = 1;
    const IOC_READ: u32 = 2;

    fn ioc_dir(number: u32) -> u32 {
        number >> 30
    }

    fn ioc_size(number: u32) -> u64 {
        u64::from((number >> 16) & 0x3fff)
    }

    /// What the number's `_IOC` encoding says of the argument, if it encodes anything (the
    /// old terminal and socket requests have zero direction and size bits, as `_IO` ones do).
    fn encoded(number: u32) -> Option<Argument> {
        match (ioc_dir(number), ioc_size(number)) {
            (0, 0) => None,
            (IOC_WRITE, size) => Some(Reads(size)),
            (IOC_READ, size) => Some(Writes(size)),
            (dir, size) => panic!("{number:#x}: direction {dir}, size {size}"),
        }
    }

    #[test]
    fn encoded_requests_agree_with_their_numbers() {
        for request in REQUESTS {
            let Some(says) = encoded(request.number) else {
                continue;
            };
            assert_eq!(request.argument, says, "{}", request.name);
        }
        // The numbers this test relies on to cover both kinds.
        assert_eq!(encoded(libc::TCGETS2 as u32), Some(Writes(TERMIOS2)));
        assert_eq!(encoded(libc::TIOCSPTLCK as u32), Some(Reads(INT)));
        assert_eq!(encoded(libc::TCGETS as u32), None);
    }

    #[test]
    fn each_number_appears_once() {
        let mut seen = BTreeMap::new();
        for request in REQUESTS {
            let before = seen.insert(request.number, request.name);
            assert_eq!(before, None, "{} has the number of another", request.name);
        }
    }

    /// Compiles `tests/ioctls_uapi.c`, which prints each request's name, number and the
    /// `sizeof` of its argument's type (0 for a value) from the kernel's UAPI headers, and
    /// compares it with the table, both ways.
    #[test]
    fn the_table_matches_the_kernel_headers() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/ioctls_uapi.c");
        let dir = tempfile::tempdir().expect("a temporary directory");
        let exe = dir.path().join("ioctls_uapi");
        let gcc = Command::new("gcc")
            .args(["-Wall", "-Wextra", "-Werror", "-o"])
            .arg(&exe)
            .arg(&src)
            .output()
            .expect("run gcc (install gcc and libc6-dev)");
        assert!(
            gcc.status.success(),
            "gcc {}:\n{}",
            src.display(),
            String::from_utf8_lossy(&gcc.stderr)
        );
        let out = Command::new(&exe)
            .output()
            .expect("run the compiled program");
        assert!(out.status.success());
        let kernel: BTreeMap<String, (u32, u64)> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split_whitespace().collect();
                let [name, number, size] = fields[..] else {
                    panic!("bad line {line:?}");
                };
                let number = u32::from_str_radix(number.trim_start_matches("0x"), 16).unwrap();
                (name.to_owned(), (number, size.parse().unwrap()))
            })
            .collect();
        let ours: BTreeMap<String, (u32, u64)> = REQUESTS
            .iter()
            .map(|r| {
                let size = match r.argument {
                    Value => 0,
                    Reads(n) | Writes(n) => n,
                };
                (r.name.to_owned(), (r.number, size))
            })
            .collect();
        assert_eq!(
            ours, kernel,
            "the table (left) and the kernel's headers (right)"
        );
    }

    #[test]
    fn known_requests_forward_exactly_their_bytes_and_others_go_home() {
        let tcgets = find(libc::TCGETS).expect("TCGETS is forwarded");
        assert_eq!(
            tcgets.args()[2],
            Arg::Out(Len::Fixed(36), Valid::All),
            "the kernel's struct termios"
        );
        // Home gives each request's buffer the table's size, and sends back all of it only
        // where the kernel writes it.
        for request in REQUESTS {
            let args = [0, u64::from(request.number), 0x1000, 0, 0, 0];
            let (sent, size, back) = match request.argument {
                Value => (vec![], None, None),
                Reads(n) => (vec![vec![0; n as usize]], Some(n), None),
                Writes(n) => (vec![], Some(n), Some(Valid::All)),
            };
            let shape = Shape::at_home(libc::SYS_ioctl, &args, &sent).expect(request.name);
            let bufs: Vec<(u64, Option<Valid>)> =
                shape.bufs.iter().map(|b| (b.len, b.back)).collect();
            let want: Vec<(u64, Option<Valid>)> = size.map(|n| (n, back)).into_iter().collect();
            assert_eq!(bufs, want, "{}", request.name);
        }
        // Only the low 32 bits name the request, as in the kernel.
        assert_eq!(find(libc::TCGETS | 0xffff_ffff_0000_0000), Some(tcgets));
        assert_eq!(find(0x5401_dead), None);
    }
}
