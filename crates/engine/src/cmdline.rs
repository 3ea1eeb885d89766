//! The program's command line and environment in its shell while it runs elsewhere.
//!
//! `/proc/PID/cmdline` and `/proc/PID/environ` read the memory between the mm's `arg_start`
//! and `arg_end` (and `env_start`, `env_end`). A shell has no memory of its own: without
//! more, `ps` at home shows its process with no command while it is away, and the program
//! itself, whose opens run in the shell, reads both files empty. So the shell keeps a copy of
//! the two areas, taken from the process before its memory is released, in a small mapping
//! of its own, and its mm fields point there (`PR_SET_MM_MAP`, which needs no privilege when
//! the exe link stays). A restore sets them back from the image, wherever it runs.

use std::io;

use crate::dump;
use crate::inject::{Injector, Scratch};
use crate::mem::Memory;
use crate::ptrace::Pid;
use crate::restore;

/// Longest copy a shell keeps of each area. execve bounds what it passes by a quarter of the
/// stack limit (2 MiB with the usual 8 MiB); an area beyond this (a far larger stack limit)
/// is cut, and only `ps` at home shows less.
const MAX_KEPT: u64 = 8 << 20;

/// The bytes of a process's argument and environment areas.
#[derive(Debug, Clone, Default)]
pub struct ArgsAndEnv {
    args: Vec<u8>,
    env: Vec<u8>,
}

impl ArgsAndEnv {
    /// Read them from stopped `pid`, where its mm says they are.
    pub fn read(pid: Pid, mem: &Memory) -> io::Result<ArgsAndEnv> {
        let mm = dump::mm_layout(pid, 0)?;
        let area = |start: u64, end: u64| {
            let len = end.saturating_sub(start).min(MAX_KEPT);
            mem.read_vec(start, len as usize)
        };
        let args = area(mm.arg_start, mm.arg_end)?;
        let env = area(mm.env_start, mm.env_end)?;
        Ok(ArgsAndEnv { args, env })
    }

    /// Give stopped shell `pid`, whose memory is released, a copy of them: map an area,
    /// write them there and point its mm's argument and environment fields at it.
    pub fn keep_in(&self, pid: Pid, inj: &Injector, mem: &Memory) -> io::Result<()> {
        let len = (self.args.len() + self.env.len()) as u64;
        // The prctl's struct goes after the two copies, on an 8-byte boundary.
        let map_at = len.next_multiple_of(8);
        let size = (map_at + 128).next_multiple_of(4096);
        let area = Scratch::map(inj, pid, size)?.addr;
        mem.write(area, &self.args)?;
        let env_at = area + self.args.len() as u64;
        mem.write(env_at, &self.env)?;
        let brk = inj.call_ok(pid, libc::SYS_brk, [0; 6], "brk(0)")?;
        let mut mm = dump::mm_layout(pid, brk)?;
        mm.arg_start = area;
        mm.arg_end = env_at;
        mm.env_start = env_at;
        mm.env_end = area + len;
        restore::set_mm_map(pid, inj, mem, area + map_at, &mm, None)
    }
}
