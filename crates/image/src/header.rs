use serde::{Deserialize, Serialize};

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
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`), empty for anonymous memory.
    pub name: String,
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

/// General-purpose registers in `struct user_regs_struct` order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Registers(pub Vec<u64>);

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

/// Everything of an image except page contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    /// FORMAT_VERSION of the writer.
    pub version: u32,
    /// Facts of the node that dumped it.
    pub facts: KernelFacts,
    /// General registers, including fs_base.
    pub regs: Registers,
    /// The XSAVE area.
    pub xstate: Vec<u8>,
    /// Blocked signals.
    pub sigmask: u64,
    /// Every signal disposition that is not SIG_DFL.
    pub sigactions: Vec<SigAction>,
    /// sigaltstack: (ss_sp, ss_flags, ss_size).
    pub altstack: (u64, i32, u64),
    /// rseq area: (address, length, signature), if registered.
    pub rseq: Option<(u64, u32, u32)>,
    /// Robust futex list: (head, length).
    pub robust_list: (u64, u64),
    /// set_tid_address value (clear_child_tid).
    pub tid_address: u64,
    /// brk and friends.
    pub mm: MmLayout,
    /// The auxiliary vector, raw.
    pub auxv: Vec<u8>,
    /// Memory areas in address order, the vdso block included.
    pub areas: Vec<Area>,
    /// Signals pending when the process was frozen (bit n-1 for signal n), to be raised
    /// again where it resumes.
    pub pending_signals: u64,
    /// The task's name (`/proc/PID/comm`, at most 15 bytes), which `ps` and `top` show.
    pub comm: String,
    /// Its CPU-time interval timers.
    pub cpu_timers: Vec<CpuTimer>,
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
}
