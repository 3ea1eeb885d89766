//! Probing this node once for what decides whether an image may run here (`KernelFacts`).

use std::arch::asm;
use std::arch::x86_64::__cpuid_count;
use std::io;

use rmosix_image::KernelFacts;

use crate::maps;
use crate::mem::Memory;

/// XCR0, the XSAVE feature mask the kernel enabled.
fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv with ecx=0 only reads XCR0; every x86_64 CPU Linux 6.x runs on with
    // OSXSAVE set supports it, and the kernel enables XSAVE at boot (we need it for NT_X86_XSTATE).
    unsafe { asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack)) };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Probe this node.
pub fn probe() -> io::Result<KernelFacts> {
    let leaf1 = __cpuid_count(1, 0);
    let leaf7 = __cpuid_count(7, 0);
    let xsave = __cpuid_count(0xd, 0);
    let pid = std::process::id() as i32;
    let areas = maps::read(pid)?;
    let vdso_layout = areas
        .iter()
        .filter(|a| a.is_vdso_block())
        .map(|a| (a.name.clone(), a.len()))
        .collect();
    let vdso = areas
        .iter()
        .find(|a| a.name == "[vdso]")
        .ok_or_else(|| io::Error::other("this process has no vdso"))?;
    let code = Memory::open(pid)?.read_vec(vdso.start, vdso.len() as usize)?;
    Ok(KernelFacts {
        xcr0: xcr0(),
        xsave_size: xsave.ebx,
        // Leaf 1 ebx holds the APIC id, which differs per CPU: leave it out.
        cpu_features: [leaf1.ecx, leaf1.edx, leaf7.ebx, leaf7.ecx, leaf7.edx],
        vdso_layout,
        vdso_hash: fnv1a(&code),
    })
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}
