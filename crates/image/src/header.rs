use serde::{Deserialize, Serialize};

use crate::SigInfo;

/// One memory area, as /proc/PID/maps shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Area {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// PROT_READ.
    pub read: bool,
    /// PROT_WRITE.
    pub write: bool,
    /// PROT_EXEC.
    pub exec: bool,
    /// MAP_SHARED.
    pub shared: bool,
    /// File offset.
    pub offset: u64,
    /// Inode of the backing file, 0 for anonymous memory.
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`, `[anon:NAME]`), empty for
    /// anonymous memory.
    pub name: String,
    /// Advice and kinds the kernel keeps per area and reports in smaps' VmFlags (format 9).
    pub advice: Vec<Advice>,
    /// Guard regions (`MADV_GUARD_INSTALL`) inside the area, as (start, end) (format 9).
    pub guards: Vec<(u64, u64)>,
    /// The file a file mapping maps, to be mapped again where it can be found (format 9).
    pub file: Option<FileId>,
}

/// What the kernel keeps per area beyond protection and backing, as smaps' VmFlags shows it,
/// and which changes how the process behaves or is treated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// `MADV_WIPEONFORK` ("wf"): a child gets the area zero-filled.
    WipeOnFork,
    /// `MADV_DONTFORK` ("dc"): a child does not get the area.
    DontFork,
    /// `MADV_DONTDUMP` ("dd"): left out of core dumps.
    DontDump,
    /// `MAP_DROPPABLE` ("dp"): the kernel may drop its pages under memory pressure.
    Droppable,
    /// `MADV_HUGEPAGE` ("hg").
    HugePage,
    /// `MADV_NOHUGEPAGE` ("nh").
    NoHugePage,
    /// `MADV_MERGEABLE` ("mg"): pages offered to KSM.
    Mergeable,
    /// `MAP_GROWSDOWN` ("gd"): a stack that grows down.
    GrowsDown,
}

/// The identity of a mapped file, by which a node maps the same file again: its path, and
/// what `stat` says of it there (device, inode, size, modification time), on the kernel that
/// read it (`boot`, its boot id: a device and inode name a file on one running kernel only),
/// and a digest of its content, which names it on any node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    /// Its path when it was mapped (without the " (deleted)" an unlinked file shows).
    pub path: String,
    /// Where the dumping node keeps it open when it was unlinked, a path under /proc.
    pub kept: Option<String>,
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub inode: u64,
    /// `st_size`.
    pub size: u64,
    /// `st_mtime` and `st_mtime_nsec`.
    pub mtime: (i64, i64),
    /// `/proc/sys/kernel/random/boot_id` of the kernel that stat'ed it.
    pub boot: String,
    /// The BLAKE3 digest of its content, in hex, when it could be read: what another node compares
    /// its own file at `path` with before it maps that file instead of receiving the pages.
    pub digest: Option<String>,
}

impl Area {
    /// Length in bytes.
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Whether the area is empty (never, for areas read from the kernel).
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// The part of the area from `start` on, which must lie inside it: its file offset moves
    /// with it, and it keeps the guard regions that lie in it.
    pub fn from(&self, start: u64) -> Area {
        let guards = self.guards.iter().filter(|g| g.1 > start);
        Area {
            start,
            offset: self.offset + (start - self.start),
            guards: guards.map(|&(s, e)| (s.max(start), e)).collect(),
            ..self.clone()
        }
    }

    /// One of the kernel's vdso block areas, which are moved rather than copied.
    pub fn is_vdso_block(&self) -> bool {
        matches!(self.name.as_str(), "[vdso]" | "[vvar]" | "[vvar_vclock]")
    }
}

/// What two nodes must share for a process to move between them: the CPU's XSAVE features
/// (glibc picks its string and math routines by CPU at start) and the kernel's vdso block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KernelFacts {
    /// XCR0: which state components XSAVE holds.
    pub xcr0: u64,
    /// Size of the XSAVE area in bytes.
    pub xsave_size: u32,
    /// CPUID feature words (leaf 1 ecx/edx, leaf 7 ebx/ecx/edx).
    pub cpu_features: [u32; 5],
    /// Names and sizes of the vdso block areas, in address order.
    pub vdso_layout: Vec<(String, u64)>,
    /// FNV-1a hash of the vdso code.
    pub vdso_hash: u64,
}

impl KernelFacts {
    /// Why a process dumped under `self` cannot run under `other`, if it cannot.
    pub fn incompatibility(&self, other: &KernelFacts) -> Option<String> {
        if self.xcr0 != other.xcr0 || self.xsave_size != other.xsave_size {
            return Some(format!(
                "CPU state differs (XCR0 {:#x}/{} bytes here, {:#x}/{} there)",
                self.xcr0, self.xsave_size, other.xcr0, other.xsave_size
            ));
        }
        if self.cpu_features != other.cpu_features {
            return Some("CPU features differ".to_string());
        }
        if self.vdso_layout != other.vdso_layout || self.vdso_hash != other.vdso_hash {
            return Some("kernel vdso differs".to_string());
        }
        None
    }
}

/// General-purpose registers of an x86-64 task, including `fs_base` and `gs_base`: the fields
/// of `struct user_regs_struct` (sys/user.h), by name and in its order. Named rather than a
/// list of 27 words, so that a reader checks each one is there and nothing else in the
/// workspace needs to know the kernel's layout but the engine, which copies them field by
/// field (no transmute).
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rax: u64,
    pub rcx: u64,
    pub rdx: u64,
    pub rsi: u64,
    pub rdi: u64,
    pub orig_rax: u64,
    pub rip: u64,
    pub cs: u64,
    pub eflags: u64,
    pub rsp: u64,
    pub ss: u64,
    pub fs_base: u64,
    pub gs_base: u64,
    pub ds: u64,
    pub es: u64,
    pub fs: u64,
    pub gs: u64,
}

/// One signal's disposition (`struct k_sigaction` as rt_sigaction(2) sees it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SigAction {
    /// Signal number.
    pub sig: i32,
    /// Handler address, or SIG_DFL (0) / SIG_IGN (1).
    pub handler: u64,
    /// SA_* flags.
    pub flags: u64,
    /// SA_RESTORER trampoline.
    pub restorer: u64,
    /// Signals blocked while the handler runs.
    pub mask: u64,
}

/// The CPU a process has used, as getrusage(2), times(2) and its CPU-time clock report it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// Time in user mode, in nanoseconds.
    pub user_ns: u64,
    /// Time in the kernel, in nanoseconds.
    pub system_ns: u64,
    /// Page faults served without I/O.
    pub minflt: u64,
    /// Page faults that needed I/O.
    pub majflt: u64,
    /// Voluntary context switches.
    pub nvcsw: u64,
    /// Involuntary context switches.
    pub nivcsw: u64,
    /// Largest resident set, in KiB.
    pub maxrss_kb: u64,
}

impl Usage {
    /// Both together: times and counts add up, the largest resident set is the larger one.
    pub fn plus(&self, other: &Usage) -> Usage {
        Usage {
            user_ns: self.user_ns.saturating_add(other.user_ns),
            system_ns: self.system_ns.saturating_add(other.system_ns),
            minflt: self.minflt.saturating_add(other.minflt),
            majflt: self.majflt.saturating_add(other.majflt),
            nvcsw: self.nvcsw.saturating_add(other.nvcsw),
            nivcsw: self.nivcsw.saturating_add(other.nivcsw),
            maxrss_kb: self.maxrss_kb.max(other.maxrss_kb),
        }
    }

    /// Its CPU-time clock: user and kernel time together.
    pub fn cpu_ns(&self) -> u64 {
        self.user_ns.saturating_add(self.system_ns)
    }
}

/// What a process has used so far: in all (`total`, what it reports where it resumes) and the
/// part of it used away from home (`away`), which home adds to what its own kernel counts
/// once the process is back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuUse {
    /// Everything, wherever it was used.
    pub total: Usage,
    /// What of it was used on other nodes.
    pub away: Usage,
}

/// An interval timer that counts the process's own CPU time (`ITIMER_VIRTUAL`, `ITIMER_PROF`),
/// as getitimer(2) reads it: it travels with the process, where `ITIMER_REAL` (wall-clock
/// time, shared with alarm(2)) stays in the shell at home.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuTimer {
    /// `ITIMER_VIRTUAL` or `ITIMER_PROF`.
    pub which: i32,
    /// `struct itimerval`: interval seconds and microseconds, then value seconds and
    /// microseconds (zero: disarmed).
    pub itimerval: [u64; 4],
}

/// The mm fields `prctl(PR_SET_MM_MAP)` restores (see /proc/PID/stat).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MmLayout {
    #[allow(missing_docs)]
    pub start_code: u64,
    #[allow(missing_docs)]
    pub end_code: u64,
    #[allow(missing_docs)]
    pub start_data: u64,
    #[allow(missing_docs)]
    pub end_data: u64,
    #[allow(missing_docs)]
    pub start_brk: u64,
    #[allow(missing_docs)]
    pub brk: u64,
    #[allow(missing_docs)]
    pub start_stack: u64,
    #[allow(missing_docs)]
    pub arg_start: u64,
    #[allow(missing_docs)]
    pub arg_end: u64,
    #[allow(missing_docs)]
    pub env_start: u64,
    #[allow(missing_docs)]
    pub env_end: u64,
}

/// The state of one task (thread) of the process: what the kernel keeps per thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    /// General registers, including fs_base.
    pub regs: Registers,
    /// The XSAVE area.
    pub xstate: Vec<u8>,
    /// Blocked signals.
    pub sigmask: u64,
    /// sigaltstack: (ss_sp, ss_flags, ss_size).
    pub altstack: (u64, i32, u64),
    /// rseq area: (address, length, signature), if registered.
    pub rseq: Option<(u64, u32, u32)>,
    /// Robust futex list: (head, length).
    pub robust_list: (u64, u64),
    /// set_tid_address value (clear_child_tid).
    pub tid_address: u64,
    /// Signals pending for this thread when the process was frozen, each with its siginfo,
    /// to be queued again where it resumes.
    pub pending: Vec<SigInfo>,
    /// The task's name (`/proc/PID/comm`, at most 15 bytes), which `ps` and `top` show.
    pub comm: String,
    /// Settings read with a `prctl` GET, to be set again where it resumes (the engine says
    /// which).
    pub prctl: Vec<PrctlValue>,
    /// How the scheduler treats it.
    pub sched: Sched,
}

/// A task's scheduling, as `sched_getscheduler`, `sched_getparam` and `getpriority` read it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sched {
    /// `SCHED_OTHER`, `SCHED_BATCH`, `SCHED_IDLE`, `SCHED_FIFO` or `SCHED_RR`, with
    /// `SCHED_RESET_ON_FORK` or'ed in when set.
    pub policy: i32,
    /// The real-time priority (0 for the other policies).
    pub priority: i32,
    /// The nice value, -20 to 19.
    pub nice: i32,
}

/// One resource limit of a process, as `prlimit` reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limit {
    /// `RLIMIT_*`.
    pub resource: u32,
    /// The soft limit (`RLIM_INFINITY`: none).
    pub soft: u64,
    /// The hard limit.
    pub hard: u64,
}

/// One setting of a task, as a `prctl` GET read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PrctlValue {
    /// The GET option (`PR_GET_TIMERSLACK`, ...).
    pub option: i32,
    /// Its second argument where it names what is read (`PR_GET_SPECULATION_CTRL`'s), else 0.
    pub which: u64,
    /// What it read.
    pub value: u64,
}

/// Everything of an image except page contents: what the process holds once (its memory,
/// dispositions, CPU-time timers, signals pending for all of it) and each of its tasks.
/// Only single-threaded processes move today, so `tasks` holds one; the list is there so
/// that threads can come without a new format.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// FORMAT_VERSION of the writer.
    pub version: u32,
    /// Facts of the node that dumped it.
    pub facts: KernelFacts,
    /// brk and friends.
    pub mm: MmLayout,
    /// The auxiliary vector, raw.
    pub auxv: Vec<u8>,
    /// Memory areas in address order, the vdso block included.
    pub areas: Vec<Area>,
    /// Every signal disposition that is not SIG_DFL.
    pub sigactions: Vec<SigAction>,
    /// Its CPU-time interval timers.
    pub cpu_timers: Vec<CpuTimer>,
    /// Its resource limits (`RLIMIT_*`), as `prlimit` read them from outside; empty where
    /// they could not be read.
    pub limits: Vec<Limit>,
    /// The CPU it has used so far.
    pub cpu: CpuUse,
    /// Signals pending for the whole process, each with its siginfo.
    pub shared_pending: Vec<SigInfo>,
    /// Its membarrier(2) registrations, as `MEMBARRIER_CMD_GET_REGISTRATIONS` answers: the
    /// bits of the register commands it made.
    pub membarrier: u64,
    /// Its tasks, the thread-group leader first.
    pub tasks: Vec<Task>,
    /// The descriptors it holds where it runs rather than at home: files on a file system
    /// that is the same on every node (DFSA). Empty in an image dumped at home.
    pub local_files: Vec<LocalFile>,
}

/// A descriptor of a file a process opened where it ran, on a file system that is the same on
/// every node (DFSA): where the process resumes it is opened again by path, with its flags,
/// at its offset, under the same number.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalFile {
    /// The descriptor's number.
    pub fd: i32,
    /// The file's path when the process was frozen.
    pub path: String,
    /// Its open flags (`O_CLOEXEC` included) as `/proc/PID/fdinfo` shows them.
    pub flags: i32,
    /// Its offset.
    pub pos: u64,
    /// A system file's content digest (SHA-256, hex): it was opened where the process ran
    /// because it was the same there as at home, and it is opened again only where it is
    /// the same still. None: a file of a file system that is the same on every node.
    #[serde(default)]
    pub digest: Option<String>,
    /// The lower descriptor it is a duplicate of (one open file, sharing offset and flags),
    /// which is opened again first. None: an open file of its own.
    #[serde(default)]
    pub shares: Option<i32>,
}

impl Header {
    /// Every signal pending when the process was frozen: its tasks' own, then the process's.
    pub fn pending_signals(&self) -> Vec<SigInfo> {
        let tasks = self.tasks.iter().flat_map(|t| t.pending.iter());
        tasks.chain(&self.shared_pending).cloned().collect()
    }
}

/// The marker that ends a stream of pages: a whole image, a pre-copy's final round, or one of
/// its running rounds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndOfImage {
    /// Bytes of page data sent.
    pub bytes: u64,
    /// Runs (start, end) that read as zeros now but may still hold an earlier round's data at
    /// the receiver: the receiver empties them.
    pub zero: Vec<(u64, u64)>,
    /// Another running round of a pre-copy follows. False ends an image, a final round, or
    /// the last running round.
    pub more_rounds: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> KernelFacts {
        KernelFacts {
            xcr0: 0xe7,
            xsave_size: 2432,
            cpu_features: [1, 2, 3, 4, 5],
            vdso_layout: vec![("[vvar]".into(), 16384), ("[vdso]".into(), 8192)],
            vdso_hash: 42,
        }
    }

    #[test]
    fn nodes_that_differ_refuse_with_the_reason() {
        assert_eq!(facts().incompatibility(&facts()), None);
        let mut avx2_only = facts();
        avx2_only.xcr0 = 0x7;
        avx2_only.xsave_size = 832;
        let why = facts().incompatibility(&avx2_only).unwrap();
        assert!(
            why.contains("CPU state differs") && why.contains("0xe7"),
            "{why}"
        );
        let mut other_cpu = facts();
        other_cpu.cpu_features[2] = 0;
        assert_eq!(
            facts().incompatibility(&other_cpu).unwrap(),
            "CPU features differ"
        );
        let mut other_kernel = facts();
        other_kernel.vdso_hash = 7;
        assert_eq!(
            facts().incompatibility(&other_kernel).unwrap(),
            "kernel vdso differs"
        );
    }

    #[test]
    fn the_part_of_an_area_keeps_its_file_offset_and_its_guards() {
        let area = Area {
            start: 0x10000,
            end: 0x20000,
            read: true,
            write: false,
            exec: false,
            shared: false,
            offset: 0x3000,
            inode: 7,
            name: "/lib/x".into(),
            advice: vec![Advice::DontDump],
            guards: vec![(0x11000, 0x12000), (0x14000, 0x16000)],
            file: None,
        };
        let tail = area.from(0x15000);
        assert_eq!(
            (tail.start, tail.end, tail.offset),
            (0x15000, 0x20000, 0x8000)
        );
        assert_eq!(tail.guards, [(0x15000, 0x16000)]);
        assert_eq!(tail.advice, area.advice);
    }

    #[test]
    fn pending_signals_join_the_process_and_its_tasks() {
        let task = |sig| Task {
            regs: Registers::default(),
            xstate: Vec::new(),
            sigmask: 0,
            altstack: (0, 0, 0),
            rseq: None,
            robust_list: (0, 0),
            tid_address: 0,
            pending: vec![SigInfo::bare(sig)],
            comm: String::new(),
            prctl: Vec::new(),
            sched: Sched::default(),
        };
        let header = Header {
            version: crate::FORMAT_VERSION,
            facts: facts(),
            mm: MmLayout::default(),
            auxv: Vec::new(),
            areas: Vec::new(),
            sigactions: Vec::new(),
            cpu_timers: Vec::new(),
            limits: Vec::new(),
            cpu: CpuUse::default(),
            shared_pending: vec![SigInfo::bare(1)],
            membarrier: 0,
            tasks: vec![task(2), task(8)],
            local_files: Vec::new(),
        };
        let sigs: Vec<i32> = header
            .pending_signals()
            .iter()
            .map(SigInfo::signo)
            .collect();
        assert_eq!(sigs, [2, 8, 1]);
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;
        use crate::{FrameReader, write_message};

        fn file_id() -> impl Strategy<Value = FileId> {
            (
                "[a-z/]{1,12}",
                prop::option::of("[a-z/0-9]{1,12}"),
                any::<(u64, u64, u64, (i64, i64))>(),
                "[a-f0-9-]{0,36}",
                prop::option::of("[a-f0-9]{64}"),
            )
                .prop_map(|(path, kept, (dev, inode, size, mtime), boot, digest)| {
                    FileId {
                        path,
                        kept,
                        dev,
                        inode,
                        size,
                        mtime,
                        boot,
                        digest,
                    }
                })
        }

        fn area() -> impl Strategy<Value = Area> {
            let advice = prop::sample::select(vec![
                Advice::WipeOnFork,
                Advice::DontFork,
                Advice::DontDump,
                Advice::Droppable,
                Advice::HugePage,
                Advice::NoHugePage,
                Advice::Mergeable,
                Advice::GrowsDown,
            ]);
            (
                any::<(u64, u64, bool, bool, bool, bool, u64, u64)>(),
                "[a-z/\\[\\]]{0,12}",
                prop::collection::vec(advice, 0..3),
                prop::collection::vec(any::<(u64, u64)>(), 0..3),
                prop::option::of(file_id()),
            )
                .prop_map(
                    |(
                        (start, end, read, write, exec, shared, offset, inode),
                        name,
                        advice,
                        guards,
                        file,
                    )| Area {
                        start,
                        end,
                        read,
                        write,
                        exec,
                        shared,
                        offset,
                        inode,
                        name,
                        advice,
                        guards,
                        file,
                    },
                )
        }

        fn registers() -> impl Strategy<Value = Registers> {
            prop::array::uniform27(any::<u64>()).prop_map(|w| Registers {
                r15: w[0],
                r14: w[1],
                r13: w[2],
                r12: w[3],
                rbp: w[4],
                rbx: w[5],
                r11: w[6],
                r10: w[7],
                r9: w[8],
                r8: w[9],
                rax: w[10],
                rcx: w[11],
                rdx: w[12],
                rsi: w[13],
                rdi: w[14],
                orig_rax: w[15],
                rip: w[16],
                cs: w[17],
                eflags: w[18],
                rsp: w[19],
                ss: w[20],
                fs_base: w[21],
                gs_base: w[22],
                ds: w[23],
                es: w[24],
                fs: w[25],
                gs: w[26],
            })
        }

        fn siginfo() -> impl Strategy<Value = SigInfo> {
            prop::collection::vec(any::<u8>(), crate::SIGINFO_LEN).prop_map(SigInfo::from_bytes)
        }

        fn task() -> impl Strategy<Value = Task> {
            (
                registers(),
                prop::collection::vec(any::<u8>(), 0..64),
                any::<(u64, (u64, i32, u64), Option<(u64, u32, u32)>, (u64, u64))>(),
                (any::<u64>(), prop::collection::vec(siginfo(), 0..3)),
                (
                    "[a-z0-9 ]{0,15}",
                    prop::collection::vec(any::<(i32, u64, u64)>(), 0..4),
                    any::<(i32, i32, i32)>(),
                ),
            )
                .prop_map(
                    |(
                        regs,
                        xstate,
                        (sigmask, altstack, rseq, robust_list),
                        (tid, pend),
                        (comm, prctl, (policy, priority, nice)),
                    )| {
                        Task {
                            regs,
                            xstate,
                            sigmask,
                            altstack,
                            rseq,
                            robust_list,
                            tid_address: tid,
                            pending: pend,
                            comm,
                            prctl: prctl
                                .into_iter()
                                .map(|(option, which, value)| PrctlValue {
                                    option,
                                    which,
                                    value,
                                })
                                .collect(),
                            sched: Sched {
                                policy,
                                priority,
                                nice,
                            },
                        }
                    },
                )
        }

        fn header() -> impl Strategy<Value = Header> {
            let sigaction = any::<(i32, u64, u64, u64, u64)>().prop_map(
                |(sig, handler, flags, restorer, mask)| SigAction {
                    sig,
                    handler,
                    flags,
                    restorer,
                    mask,
                },
            );
            let timer = any::<(i32, [u64; 4])>()
                .prop_map(|(which, itimerval)| CpuTimer { which, itimerval });
            let mm = prop::array::uniform11(any::<u64>()).prop_map(|w| MmLayout {
                start_code: w[0],
                end_code: w[1],
                start_data: w[2],
                end_data: w[3],
                start_brk: w[4],
                brk: w[5],
                start_stack: w[6],
                arg_start: w[7],
                arg_end: w[8],
                env_start: w[9],
                env_end: w[10],
            });
            (
                any::<u32>(),
                mm,
                prop::collection::vec(any::<u8>(), 0..64),
                prop::collection::vec(area(), 0..6),
                prop::collection::vec(sigaction, 0..4),
                prop::collection::vec(timer, 0..2),
                prop::collection::vec(siginfo(), 0..3),
                prop::collection::vec(task(), 0..3),
            )
                .prop_map(
                    |(version, mm, auxv, areas, sigactions, cpu_timers, shared, tasks)| Header {
                        version,
                        facts: facts(),
                        mm,
                        auxv,
                        areas,
                        sigactions,
                        cpu_timers,
                        limits: Vec::new(),
                        cpu: CpuUse {
                            total: Usage {
                                user_ns: version.into(),
                                ..Usage::default()
                            },
                            away: Usage::default(),
                        },
                        shared_pending: shared,
                        membarrier: u64::from(version) << 2,
                        local_files: tasks
                            .iter()
                            .enumerate()
                            .map(|(i, t)| LocalFile {
                                fd: i as i32 + 3,
                                path: t.comm.clone(),
                                flags: version as i32,
                                pos: t.tid_address,
                                digest: None,
                                shares: (i > 0).then_some(3),
                            })
                            .collect(),
                        tasks,
                    },
                )
        }

        fn end() -> impl Strategy<Value = EndOfImage> {
            (
                any::<u64>(),
                prop::collection::vec(any::<(u64, u64)>(), 0..8),
                any::<bool>(),
            )
                .prop_map(|(bytes, zero, more_rounds)| EndOfImage {
                    bytes,
                    zero,
                    more_rounds,
                })
        }

        fn framed<T: Serialize>(value: &T) -> Vec<u8> {
            let mut buf = Vec::new();
            write_message(&mut buf, value).unwrap();
            buf
        }

        proptest! {
            #[test]
            fn a_header_comes_back_as_written(header in header()) {
                let back: Header = FrameReader::new(&framed(&header)[..]).message().unwrap();
                prop_assert_eq!(back, header);
            }

            #[test]
            fn an_end_marker_comes_back_as_written(end in end()) {
                let back: EndOfImage = FrameReader::new(&framed(&end)[..]).message().unwrap();
                prop_assert_eq!(back, end);
            }

            #[test]
            fn a_cut_header_is_refused(header in header(), cut in any::<prop::sample::Index>()) {
                let bytes = framed(&header);
                let cut = cut.index(bytes.len());
                prop_assert!(FrameReader::new(&bytes[..cut]).message::<Header>().is_err());
            }

            /// Junk inside a well-formed frame: refused, or (should it spell a header by
            /// chance) decoded, but never a panic.
            #[test]
            fn junk_in_a_frame_never_panics(junk in prop::collection::vec(any::<u8>(), 0..512)) {
                let mut buf = (junk.len() as u32).to_le_bytes().to_vec();
                buf.push(1);
                buf.extend_from_slice(&junk);
                let _ = FrameReader::new(&buf[..]).message::<Header>();
                let _ = FrameReader::new(&buf[..]).message::<EndOfImage>();
            }
        }

        #[test]
        fn a_header_without_a_register_is_refused() {
            use proptest::strategy::ValueTree;
            let mut runner = proptest::test_runner::TestRunner::deterministic();
            let task = task().new_tree(&mut runner).unwrap().current();
            let mut json = serde_json::to_value(&task).unwrap();
            json["regs"].as_object_mut().unwrap().remove("rip");
            assert!(serde_json::from_value::<Task>(json).is_err());
        }
    }
}
