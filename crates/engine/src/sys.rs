//! Kernel ABI pieces that `libc` does not carry (or carries only for some targets), in one place.
//! Values come from the Linux UAPI headers (`linux/ptrace.h`, `linux/seccomp.h`, `linux/prctl.h`,
//! `linux/elf.h`), which are stable ABI.

/// `PTRACE_GETSIGMASK` / `PTRACE_SETSIGMASK` (linux/ptrace.h).
pub const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
pub const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
/// `PTRACE_GET_RSEQ_CONFIGURATION` (Linux 5.13).
pub const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// `NT_X86_XSTATE` regset: the whole XSAVE area (linux/elf.h).
pub const NT_X86_XSTATE: libc::c_int = 0x202;
/// `PTRACE_EVENT_STOP`: the stop reported after PTRACE_INTERRUPT or a group stop of a seized tracee.
pub const PTRACE_EVENT_STOP: i32 = 128;

/// What `PTRACE_GET_RSEQ_CONFIGURATION` fills in (`struct ptrace_rseq_configuration`).
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct RseqConfiguration {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// `rseq(2)` flag that unregisters the calling thread's area.
pub const RSEQ_FLAG_UNREGISTER: u64 = 1;

/// `struct prctl_mm_map` for `prctl(PR_SET_MM, PR_SET_MM_MAP, ...)`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct PrctlMmMap {
    pub start_code: u64,
    pub end_code: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub brk: u64,
    pub start_stack: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub auxv: u64,
    pub auxv_size: u32,
    pub exe_fd: u32,
}
pub const PR_SET_MM: u64 = 35;
pub const PR_SET_MM_MAP: u64 = 14;
pub const PR_GET_TID_ADDRESS: u64 = 40;
pub const PR_SET_NO_NEW_PRIVS: u64 = 38;

/// seccomp(2) operations and flags (linux/seccomp.h).
pub const SECCOMP_SET_MODE_FILTER: u64 = 1;
pub const SECCOMP_FILTER_FLAG_NEW_LISTENER: u64 = 1 << 3;
/// Once the supervisor has received a notification, only a fatal signal interrupts the wait
/// (Linux 5.19): a call shipped home is never abandoned halfway by a relayed signal.
pub const SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV: u64 = 1 << 5;
pub const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
pub const SECCOMP_RET_USER_NOTIF: u32 = 0x7fc0_0000;
/// Stop the caller for its tracer (PTRACE_EVENT_SECCOMP), which decides whether the call runs.
pub const SECCOMP_RET_TRACE: u32 = 0x7ff0_0000;
pub const SECCOMP_RET_KILL_PROCESS: u32 = 0x8000_0000;
/// A notification's answer that lets the call run on in the process (Linux 5.5).
pub const SECCOMP_USER_NOTIF_FLAG_CONTINUE: u32 = 1;
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;

/// `struct seccomp_data`, what a filter and a notification see of a call.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct SeccompData {
    pub nr: i32,
    pub arch: u32,
    pub instruction_pointer: u64,
    pub args: [u64; 6],
}

/// `struct seccomp_notif`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct SeccompNotif {
    pub id: u64,
    pub pid: u32,
    pub flags: u32,
    pub data: SeccompData,
}

/// `struct seccomp_notif_resp`.
#[repr(C)]
#[derive(Default, Debug, Clone, Copy)]
pub struct SeccompNotifResp {
    pub id: u64,
    pub val: i64,
    pub error: i32,
    pub flags: u32,
}

// ioctl numbers: _IOWR('!', 0, struct seccomp_notif), _IOWR('!', 1, struct seccomp_notif_resp).
pub const SECCOMP_IOCTL_NOTIF_RECV: libc::c_ulong = 0xc050_2100;
pub const SECCOMP_IOCTL_NOTIF_SEND: libc::c_ulong = 0xc018_2101;
// _IOW('!', 3, struct seccomp_notif_addfd)
pub const SECCOMP_IOCTL_NOTIF_ADDFD: libc::c_ulong = 0x4018_2103;
/// ADDFD: put the descriptor under `newfd`, and answer the call with its number.
pub const SECCOMP_ADDFD_FLAG_SETFD: u32 = 1;
pub const SECCOMP_ADDFD_FLAG_SEND: u32 = 2;

/// `struct seccomp_notif_addfd`.
#[repr(C)]
pub struct SeccompNotifAddfd {
    pub id: u64,
    pub flags: u32,
    pub srcfd: u32,
    pub newfd: u32,
    pub newfd_flags: u32,
}

// _IOW('!', 4, __u64)
pub const SECCOMP_IOCTL_NOTIF_SET_FLAGS: libc::c_ulong = 0x4008_2104;
pub const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;

/// One classic-BPF instruction (`struct sock_filter`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SockFilter {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

/// The kernel's internal "restart this call" results, as a system call returns them
/// (include/linux/errno.h). A program never sees them: the signal path turns them into a
/// restart or EINTR, and only while a signal is pending.
pub const ERESTARTSYS: i64 = -512;
pub const ERESTARTNOINTR: i64 = -513;
pub const ERESTARTNOHAND: i64 = -514;
pub const ERESTART_RESTARTBLOCK: i64 = -516;

/// Whether a call's result is one of the kernel's internal restart codes.
pub fn is_restart(ret: i64) -> bool {
    (ERESTART_RESTARTBLOCK..=ERESTARTSYS).contains(&ret)
}

/// userfaultfd(2) and its ioctls (linux/userfaultfd.h).
pub const UFFD_API: u64 = 0xaa;
/// Handle only faults from user mode: what an unprivileged process may ask for.
pub const UFFD_USER_MODE_ONLY: u64 = 1;
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
// _IOWR(0xaa, nr, struct ...)
pub const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
pub const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
pub const UFFDIO_COPY: libc::c_ulong = 0xc028_aa03;

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioApi {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioRegister {
    pub start: u64,
    pub len: u64,
    pub mode: u64,
    pub ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioCopy {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    pub copy: i64,
}

pub const UFFDIO_REGISTER_MODE_WP: u64 = 2;
/// Write faults in write-protected ranges resolve themselves; the kernel only records that the
/// page was written (Linux 6.7).
pub const UFFD_FEATURE_WP_ASYNC: u64 = 1 << 15;
pub const UFFDIO_WRITEPROTECT_MODE_WP: u64 = 1;
pub const UFFDIO_WRITEPROTECT: libc::c_ulong = 0xc018_aa06;

/// `struct uffdio_writeprotect`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct UffdioWriteprotect {
    pub start: u64,
    pub len: u64,
    pub mode: u64,
}

/// The PAGEMAP_SCAN ioctl on /proc/PID/pagemap (linux/fs.h, Linux 6.7).
pub const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;
/// madvise's guard regions (Linux 6.13), which the libc crate does not name.
pub const MADV_GUARD_INSTALL: i32 = 102;
pub const MADV_GUARD_REMOVE: i32 = 103;
/// A guard region's page (MADV_GUARD_INSTALL; the category is Linux 6.14's).
pub const PAGE_IS_GUARD: u64 = 1 << 8;
/// The area allows asynchronous write-protect (it is registered for it).
pub const PAGE_IS_WPALLOWED: u64 = 1 << 0;
/// Write-protect the pages a scan reports, in the same step.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// Fail with EPERM where an area is not registered for asynchronous write-protect.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Debug, Default)]
pub struct PmScanArg {
    pub size: u64,
    pub flags: u64,
    pub start: u64,
    pub end: u64,
    pub walk_end: u64,
    pub vec: u64,
    pub vec_len: u64,
    pub max_pages: u64,
    pub category_inverted: u64,
    pub category_mask: u64,
    pub category_anyof_mask: u64,
    pub return_mask: u64,
}

/// `struct page_region`: one run of pages with the same categories.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct PageRegion {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// A libc call's result as a trapped call's answer: the value, or the negative errno it left.
pub fn answer_of(ret: i64) -> i64 {
    if ret < 0 {
        let errno = std::io::Error::last_os_error().raw_os_error();
        -i64::from(errno.unwrap_or(libc::EIO))
    } else {
        ret
    }
}
