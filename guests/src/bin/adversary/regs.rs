//! `case=regs class=CLASS seed=N ms=M`: state that must not cross between VMs (DESIGN.md,
//! "Isolation"). Two VMs of the same class with different seeds run side by side; each
//!
//! 1. reads the state as it finds it at its start and checks that it holds no other seed's
//!    pattern (`CLASS-start-clean`): the VM that starts second would see the first one's;
//! 2. loads its own pattern, then spins for `ms` ms of TSC time (default 150), comparing the
//!    state with its pattern every few thousand iterations (`CLASS-kept`): the other VM runs in
//!    between.
//!
//! Classes:
//! - `fpu`: x87 control word and stack, MXCSR, XMM0–15 (after CR0.EM = 0, CR0.MP = 1, CR4.OSFXSR,
//!   CR4.OSXMMEXCPT), compared through FXSAVE images.
//! - `dr`: DR0–DR3, DR6 and DR7 (DR7 arms a write breakpoint on one of DR0–DR3, whose address
//!   is a pattern word outside RAM that nothing writes).
//! - `xsave`: XCR0 (it must start at 1, x87 only) and, where CPUID offers AVX, the upper halves
//!   of YMM0–15, compared through XSAVE images (after CR4.OSXSAVE and XSETBV).
//! - `kgsb`: IA32_KERNEL_GS_BASE. Written with WRMSR where the hypervisor allows it (hardware
//!   does in long mode: `kgsb-wrmsr`), and read and written through SWAPGS and
//!   RDGSBASE/WRGSBASE (CR4.FSGSBASE), which never exit.
//! - `cr8`: CR8 (the TPR's priority class).
//! - `msr`: STAR, LSTAR, CSTAR, SFMASK, TSC_AUX and SYSENTER_ESP/EIP, written with WRMSR
//!   (`msr-NAME-writable`: hardware accepts each) and kept.
//!
//! Patterns carry a signature, so that "another VM's value" is recognisable: 64-bit words
//! `0x0000_7C0D_SSii_i000` (canonical, S = seed, i = index), 32-bit words `0x7CSS_iiii`.

use core::arch::asm;

use carousel_guests::{arch, probe, BootInfo};

use crate::{check_name, deadline_ms, say, Report};

/// Iterations between two comparisons.
const BATCH: u64 = 4000;
/// CR0.MP, CR0.EM, CR0.TS.
const CR0_MP: u64 = 1 << 1;
const CR0_EM: u64 = 1 << 2;
const CR0_TS: u64 = 1 << 3;
/// CR4.OSFXSR, CR4.OSXMMEXCPT, CR4.FSGSBASE.
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const CR4_FSGSBASE: u64 = 1 << 16;
/// IA32_KERNEL_GS_BASE.
const IA32_KERNEL_GS_BASE: u32 = 0xC000_0102;

/// The 64-bit pattern word `index` of `seed`.
pub fn word(seed: u64, index: u64) -> u64 {
    0x0000_7C0D_0000_0000 | (seed & 0xFF) << 24 | (index & 0xFFF) << 12
}

/// Whether `value` is a 64-bit pattern word of a seed other than `seed`.
pub fn foreign(value: u64, seed: u64) -> bool {
    value >> 32 == 0x7C0D && (value >> 24) & 0xFF != seed & 0xFF
}

/// The 32-bit pattern word `index` of `seed`.
fn word32(seed: u64, index: u64) -> u64 {
    0x7C00_0000 | (seed & 0xFF) << 16 | (index & 0xFFFF)
}

/// Whether `value` is a 32-bit pattern word of another seed.
fn foreign32(value: u64, seed: u64) -> bool {
    value >> 24 == 0x7C && (value >> 16) & 0xFF != seed & 0xFF
}

pub fn run(boot: &BootInfo, report: &mut Report) {
    let seed = boot.number("seed", 1);
    let ms = boot.number("ms", 150);
    match boot.arg("class").unwrap_or("") {
        "fpu" => fpu(seed, ms, report),
        "dr" => debug_registers(seed, ms, report),
        "xsave" => xsave_state(seed, ms, report),
        "kgsb" => kernel_gs_base(seed, ms, report),
        "cr8" => cr8(seed, ms, report),
        "msr" => msrs(seed, ms, report),
        other => report.check_detail("regs-class", false, format_args!("unknown {other:?}")),
    }
}

/// Spins until `ms` ms from now, calling `compare` every [`BATCH`] iterations until it reports
/// a difference; returns the first difference and the number of comparisons.
fn spin_comparing<T>(ms: u64, mut compare: impl FnMut() -> Option<T>) -> (Option<T>, u64) {
    let end = deadline_ms(ms);
    let mut comparisons = 0;
    let mut iterations: u64 = 0;
    while arch::rdtsc() < end {
        for _ in 0..BATCH {
            iterations = core::hint::black_box(iterations + 1);
        }
        comparisons += 1;
        if let Some(difference) = compare() {
            return (Some(difference), comparisons);
        }
    }
    (None, comparisons)
}

// ----- x87 / SSE -----

/// An FXSAVE image (SDM Vol. 1 10.5.1 "FXSAVE Area").
#[repr(C, align(16))]
struct FxArea([u8; 512]);

/// Byte ranges of the image that are state, not bookkeeping: FCW, FSW, abridged FTW; MXCSR;
/// ST0–ST7 and XMM0–XMM15. (FOP, FIP and FDP record the last x87 instruction, ours.)
const FX_STATE: [(usize, usize); 3] = [(0, 5), (24, 28), (32, 416)];
/// Offsets of FCW, MXCSR and XMM0 in the image.
const FX_FCW: usize = 0;
const FX_MXCSR: usize = 24;
const FX_XMM: usize = 160;

fn fxsave(area: &mut FxArea) {
    // SAFETY: FXSAVE writes 512 bytes at a 16-byte-aligned address: exactly `area`.
    unsafe { asm!("fxsave [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
}

fn u16_at(area: &FxArea, offset: usize) -> u64 {
    u64::from(u16::from_le_bytes([area.0[offset], area.0[offset + 1]]))
}

fn u32_at(area: &FxArea, offset: usize) -> u64 {
    let bytes = &area.0[offset..offset + 4];
    u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]))
}

fn u64_at(area: &FxArea, offset: usize) -> u64 {
    let mut bytes = [0; 8];
    bytes.copy_from_slice(&area.0[offset..offset + 8]);
    u64::from_le_bytes(bytes)
}

/// The x87 control word of `seed`: the default 0x037F with rounding control = seed (bits 11:10).
fn control_word(seed: u64) -> u64 {
    0x037F | (seed & 3) << 10
}

/// MXCSR of `seed`: the default 0x1F80 with rounding control = seed (bits 14:13).
fn mxcsr(seed: u64) -> u64 {
    0x1F80 | (seed & 3) << 13
}

fn fpu(seed: u64, ms: u64, report: &mut Report) {
    // SAFETY: enabling x87 and SSE (EM = 0, MP = 1, TS = 0, OSFXSR, OSXMMEXCPT) changes nothing
    // the runtime uses: its code is built without floating point.
    unsafe {
        arch::write_cr0((arch::read_cr0() & !(CR0_EM | CR0_TS)) | CR0_MP);
        arch::write_cr4(arch::read_cr4() | CR4_OSFXSR | CR4_OSXMMEXCPT);
    }
    let mut start = FxArea([0; 512]);
    fxsave(&mut start);
    let fcw = u16_at(&start, FX_FCW);
    let csr = u32_at(&start, FX_MXCSR);
    let xmm_foreign = (0..32).find(|&i| foreign(u64_at(&start, FX_XMM + 8 * i), seed));
    let rounding_foreign = |value: u64, mine: u64, mask: u64| value & mask != 0 && value != mine;
    report.check_detail(
        "fpu-start-clean",
        xmm_foreign.is_none()
            && !rounding_foreign(fcw, control_word(seed), 3 << 10)
            && !rounding_foreign(csr, mxcsr(seed), 3 << 13),
        format_args!("(FCW {fcw:#x}, MXCSR {csr:#x}, foreign XMM word {xmm_foreign:?})"),
    );

    let mut pattern = [0u64; 32];
    for (index, slot) in pattern.iter_mut().enumerate() {
        *slot = word(seed, index as u64);
    }
    let integers = [word(seed, 100), word(seed, 101)];
    let cw = control_word(seed) as u16;
    let csr = mxcsr(seed) as u32;
    // SAFETY: loads the x87, MXCSR and XMM state from the arrays above (all readable, 16-byte
    // reads within `pattern`); no code of this guest uses that state. FNINIT first, so the two
    // FILDs find an empty stack.
    unsafe {
        asm!(
            "fninit",
            "fldcw word ptr [{cw}]",
            "fild qword ptr [{integers}]",
            "fild qword ptr [{integers} + 8]",
            "ldmxcsr dword ptr [{csr}]",
            "movdqu xmm0, xmmword ptr [{p}]",
            "movdqu xmm1, xmmword ptr [{p} + 16]",
            "movdqu xmm2, xmmword ptr [{p} + 32]",
            "movdqu xmm3, xmmword ptr [{p} + 48]",
            "movdqu xmm4, xmmword ptr [{p} + 64]",
            "movdqu xmm5, xmmword ptr [{p} + 80]",
            "movdqu xmm6, xmmword ptr [{p} + 96]",
            "movdqu xmm7, xmmword ptr [{p} + 112]",
            "movdqu xmm8, xmmword ptr [{p} + 128]",
            "movdqu xmm9, xmmword ptr [{p} + 144]",
            "movdqu xmm10, xmmword ptr [{p} + 160]",
            "movdqu xmm11, xmmword ptr [{p} + 176]",
            "movdqu xmm12, xmmword ptr [{p} + 192]",
            "movdqu xmm13, xmmword ptr [{p} + 208]",
            "movdqu xmm14, xmmword ptr [{p} + 224]",
            "movdqu xmm15, xmmword ptr [{p} + 240]",
            cw = in(reg) &cw,
            integers = in(reg) integers.as_ptr(),
            csr = in(reg) &csr,
            p = in(reg) pattern.as_ptr(),
            options(nostack, readonly),
        );
    }
    let mut golden = FxArea([0; 512]);
    fxsave(&mut golden);
    let loaded = u64_at(&golden, FX_XMM) == pattern[0] && u16_at(&golden, FX_FCW) == u64::from(cw);
    report.check("fpu-loaded", loaded);
    let mut now = FxArea([0; 512]);
    let (difference, comparisons) = spin_comparing(ms, || {
        fxsave(&mut now);
        FX_STATE.iter().find_map(|&(from, to)| {
            (from..to)
                .find(|&offset| now.0[offset] != golden.0[offset])
                .map(|offset| (offset, golden.0[offset], now.0[offset]))
        })
    });
    report.check_detail(
        "fpu-kept",
        difference.is_none(),
        format_args!(
            "({comparisons} comparisons; first difference (offset, ours, now) {difference:?})"
        ),
    );
}

// ----- Debug registers -----

/// DR0, DR1, DR2, DR3, DR6, DR7.
fn read_debug_registers() -> [u64; 6] {
    let (dr0, dr1, dr2, dr3, dr6, dr7): (u64, u64, u64, u64, u64, u64);
    // SAFETY: reading debug registers has no side effect (CR4.DE does not matter for DR0-3 and
    // DR6).
    unsafe {
        asm!(
            "mov {0}, dr0",
            "mov {1}, dr1",
            "mov {2}, dr2",
            "mov {3}, dr3",
            "mov {4}, dr6",
            "mov {5}, dr7",
            out(reg) dr0,
            out(reg) dr1,
            out(reg) dr2,
            out(reg) dr3,
            out(reg) dr6,
            out(reg) dr7,
            options(nomem, nostack, preserves_flags),
        );
    }
    [dr0, dr1, dr2, dr3, dr6, dr7]
}

/// DR7 of `seed`: breakpoint `seed mod 4` enabled (local), on writes of 4 bytes; bit 10 is
/// always 1.
fn dr7(seed: u64) -> u64 {
    let slot = seed.wrapping_sub(1) % 4;
    /// R/W = 01 (data writes), LEN = 11 (4 bytes).
    const WRITE_4_BYTES: u64 = 0b1101;
    0x400 | 1 << (2 * slot) | WRITE_4_BYTES << (16 + 4 * slot)
}

/// DR6 of `seed`: its reserved bits as the processor sets them, and breakpoint condition bit
/// B(seed mod 4).
fn dr6(seed: u64) -> u64 {
    0xFFFF_0FF0 | 1 << ((seed.wrapping_sub(1)) % 4)
}

fn debug_registers(seed: u64, ms: u64, report: &mut Report) {
    let start = read_debug_registers();
    let addresses_foreign = start[..4].iter().any(|&value| foreign(value, seed));
    let conditions = start[4] & 0xF;
    let enables = start[5] & 0xFF;
    report.check_detail(
        "dr-start-clean",
        !addresses_foreign
            && (conditions == 0 || conditions == dr6(seed) & 0xF)
            && (enables == 0 || enables == dr7(seed) & 0xFF),
        format_args!("(DR0-3, DR6, DR7 {start:x?})"),
    );
    let wanted = [
        word(seed, 0),
        word(seed, 1),
        word(seed, 2),
        word(seed, 3),
        dr6(seed),
        dr7(seed),
    ];
    // SAFETY: DR7 arms one write breakpoint, at an address outside RAM that nothing writes;
    // DR6 only reports conditions.
    unsafe {
        asm!(
            "mov dr0, {0}",
            "mov dr1, {1}",
            "mov dr2, {2}",
            "mov dr3, {3}",
            "mov dr6, {4}",
            "mov dr7, {5}",
            in(reg) wanted[0],
            in(reg) wanted[1],
            in(reg) wanted[2],
            in(reg) wanted[3],
            in(reg) wanted[4],
            in(reg) wanted[5],
            options(nomem, nostack, preserves_flags),
        );
    }
    let loaded = read_debug_registers();
    report.check_detail("dr-loaded", loaded == wanted, format_args!("({loaded:x?})"));
    let (difference, comparisons) = spin_comparing(ms, || {
        let now = read_debug_registers();
        (now != loaded).then_some(now)
    });
    report.check_detail(
        "dr-kept",
        difference.is_none(),
        format_args!("({comparisons} comparisons; changed to {difference:x?})"),
    );
}

// ----- XCR0 and AVX state -----

/// An XSAVE area (standard format), 64-byte aligned.
#[repr(C, align(64))]
struct XsaveArea([u8; 4096]);

/// CR4.OSXSAVE.
const CR4_OSXSAVE: u64 = 1 << 18;
/// XCR0 bits: x87, SSE, AVX.
const XCR0_X87_SSE: u64 = 0b11;
const XCR0_AVX: u64 = 0b100;

fn xsave(area: &mut XsaveArea, mask: u64) {
    // SAFETY: XSAVE writes the components in `mask` (enabled in XCR0) into the 4-KiB area at a
    // 64-byte-aligned address.
    unsafe {
        asm!("xsave [{a}]", a = in(reg) area.0.as_mut_ptr(), in("eax") mask as u32,
             in("edx") (mask >> 32) as u32, options(nostack));
    }
}

fn xsave_state(seed: u64, ms: u64, report: &mut Report) {
    let features = arch::cpuid(1, 0).ecx;
    if features & (1 << 26) == 0 {
        say!("CPUID offers no XSAVE: nothing to compare");
        return;
    }
    let avx = features & (1 << 28) != 0;
    // SAFETY: CR4.OSXSAVE only enables XGETBV, XSETBV and XSAVE.
    unsafe { arch::write_cr4(arch::read_cr4() | CR4_OSXSAVE) };
    let start = crate::legal::xgetbv(0);
    report.check_detail(
        "xcr0-start-clean",
        start == Ok(1),
        format_args!("({start:x?}; it should be 1, x87 only)"),
    );
    let xcr0 = if avx {
        XCR0_X87_SSE | XCR0_AVX
    } else {
        XCR0_X87_SSE
    };
    let (fault, _) = crate::legal::xsetbv_probe(0, xcr0);
    report.expect_no_fault("xsetbv-accepted", fault);
    if fault.is_some() {
        return;
    }
    // The AVX component's place in the standard format: CPUID.(0xD, 2).EBX, EAX bytes.
    let component = arch::cpuid(0xD, 2);
    let (offset, size) = (component.ebx as usize, component.eax as usize);
    let mut area = XsaveArea([0; 4096]);
    if avx && offset + size <= area.0.len() {
        xsave(&mut area, xcr0);
        let alien = (0..size / 8).find(|&i| {
            let mut bytes = [0; 8];
            bytes.copy_from_slice(&area.0[offset + 8 * i..offset + 8 * i + 8]);
            foreign(u64::from_le_bytes(bytes), seed)
        });
        report.check_detail(
            "ymm-start-clean",
            alien.is_none(),
            format_args!("(first foreign word of the upper halves: {alien:?})"),
        );
        let mut pattern = [0u64; 64];
        for (index, slot) in pattern.iter_mut().enumerate() {
            *slot = word(seed, 200 + index as u64);
        }
        // SAFETY: loads YMM0-15 from `pattern` (512 bytes); the guest's code uses no vector
        // registers.
        unsafe {
            asm!(
                "vmovdqu ymm0, ymmword ptr [{p}]",
                "vmovdqu ymm1, ymmword ptr [{p} + 32]",
                "vmovdqu ymm2, ymmword ptr [{p} + 64]",
                "vmovdqu ymm3, ymmword ptr [{p} + 96]",
                "vmovdqu ymm4, ymmword ptr [{p} + 128]",
                "vmovdqu ymm5, ymmword ptr [{p} + 160]",
                "vmovdqu ymm6, ymmword ptr [{p} + 192]",
                "vmovdqu ymm7, ymmword ptr [{p} + 224]",
                "vmovdqu ymm8, ymmword ptr [{p} + 256]",
                "vmovdqu ymm9, ymmword ptr [{p} + 288]",
                "vmovdqu ymm10, ymmword ptr [{p} + 320]",
                "vmovdqu ymm11, ymmword ptr [{p} + 352]",
                "vmovdqu ymm12, ymmword ptr [{p} + 384]",
                "vmovdqu ymm13, ymmword ptr [{p} + 416]",
                "vmovdqu ymm14, ymmword ptr [{p} + 448]",
                "vmovdqu ymm15, ymmword ptr [{p} + 480]",
                p = in(reg) pattern.as_ptr(),
                options(nostack, readonly),
            );
        }
    } else {
        say!("no AVX: comparing XCR0 only");
    }
    let mut golden = XsaveArea([0; 4096]);
    xsave(&mut golden, xcr0);
    let mut now = XsaveArea([0; 4096]);
    let compared = if avx { offset..offset + size } else { 0..0 };
    let (difference, comparisons) = spin_comparing(ms, || {
        let register = crate::legal::xgetbv(0);
        if register != Ok(xcr0) {
            return Some((usize::MAX, register.unwrap_or(0)));
        }
        xsave(&mut now, xcr0);
        compared
            .clone()
            .find(|&at| now.0[at] != golden.0[at])
            .map(|at| (at, u64::from(now.0[at])))
    });
    report.check_detail(
        "xsave-state-kept",
        difference.is_none(),
        format_args!("({comparisons} comparisons; first difference (offset, now) {difference:x?})"),
    );
}

// ----- IA32_KERNEL_GS_BASE -----

/// IA32_KERNEL_GS_BASE through SWAPGS (needs CR4.FSGSBASE).
fn read_kernel_gs_base() -> u64 {
    let value: u64;
    // SAFETY: SWAPGS twice leaves GS.base and IA32_KERNEL_GS_BASE as they were (IF = 0, so no
    // interrupt runs between them); RDGSBASE only reads.
    unsafe {
        asm!("swapgs", "rdgsbase {}", "swapgs", out(reg) value, options(nomem, nostack, preserves_flags));
    }
    value
}

/// Sets IA32_KERNEL_GS_BASE through SWAPGS (needs CR4.FSGSBASE).
fn write_kernel_gs_base(value: u64) {
    // SAFETY: as for the read; the guest itself never uses GS or its swapped base.
    unsafe {
        asm!("swapgs", "wrgsbase {}", "swapgs", in(reg) value, options(nomem, nostack, preserves_flags));
    }
}

fn kernel_gs_base(seed: u64, ms: u64, report: &mut Report) {
    let fsgsbase = arch::cpuid(7, 0).ebx & 1 != 0;
    let mine = word(seed, 7);
    if fsgsbase {
        // SAFETY: CR4.FSGSBASE only makes RDGSBASE/WRGSBASE available.
        unsafe { arch::write_cr4(arch::read_cr4() | CR4_FSGSBASE) };
        let start = read_kernel_gs_base();
        report.check_detail(
            "kgsb-start-clean",
            !foreign(start, seed),
            format_args!("({start:#x}; it should be 0)"),
        );
    } else {
        say!("no FSGSBASE: IA32_KERNEL_GS_BASE only through RDMSR/WRMSR");
    }
    let before = read_msr(IA32_KERNEL_GS_BASE);
    if let Some(before) = before.filter(|_| !fsgsbase) {
        report.check_detail(
            "kgsb-start-clean",
            !foreign(before, seed),
            format_args!("({before:#x}, by RDMSR)"),
        );
    }
    let written = write_msr(IA32_KERNEL_GS_BASE, mine);
    report.check_detail(
        "kgsb-wrmsr",
        written && read_msr(IA32_KERNEL_GS_BASE) == Some(mine),
        format_args!("(hardware accepts WRMSR of IA32_KERNEL_GS_BASE in long mode)"),
    );
    let read: fn() -> u64 = if fsgsbase {
        write_kernel_gs_base(mine);
        read_kernel_gs_base
    } else if written {
        || read_msr(IA32_KERNEL_GS_BASE).unwrap_or(0)
    } else {
        return;
    };
    let loaded = read();
    report.check_detail("kgsb-loaded", loaded == mine, format_args!("({loaded:#x})"));
    let (difference, comparisons) = spin_comparing(ms, || {
        let now = read();
        (now != mine).then_some(now)
    });
    report.check_detail(
        "kgsb-kept",
        difference.is_none(),
        format_args!("({comparisons} comparisons; changed to {difference:x?})"),
    );
}

// ----- CR8 -----

fn cr8(seed: u64, ms: u64, report: &mut Report) {
    let mine = 1 + seed % 14;
    let start = arch::read_cr8();
    report.check_detail(
        "cr8-start-clean",
        start == 0 || start == mine,
        format_args!("({start}; it should be 0)"),
    );
    // SAFETY: the guest runs with IF = 0 and waits for no interrupt.
    unsafe { arch::write_cr8(mine) };
    let (difference, comparisons) = spin_comparing(ms, || {
        let now = arch::read_cr8();
        (now != mine).then_some(now)
    });
    report.check_detail(
        "cr8-kept",
        difference.is_none(),
        format_args!("({comparisons} comparisons; changed to {difference:?})"),
    );
    // SAFETY: as above.
    unsafe { arch::write_cr8(0) };
}

// ----- SYSCALL / SYSENTER MSRs -----

/// An MSR of the `msr` class: its number, name, and whether it takes 32-bit values only.
struct Msr {
    number: u32,
    name: &'static str,
    narrow: bool,
}

const MSRS: [Msr; 7] = [
    Msr {
        number: 0xC000_0081,
        name: "star",
        narrow: false,
    },
    Msr {
        number: 0xC000_0082,
        name: "lstar",
        narrow: false,
    },
    Msr {
        number: 0xC000_0083,
        name: "cstar",
        narrow: false,
    },
    Msr {
        number: 0xC000_0084,
        name: "sfmask",
        narrow: true,
    },
    Msr {
        number: 0xC000_0103,
        name: "tsc-aux",
        narrow: true,
    },
    Msr {
        number: 0x175,
        name: "sysenter-esp",
        narrow: false,
    },
    Msr {
        number: 0x176,
        name: "sysenter-eip",
        narrow: false,
    },
];

/// RDMSR that may fault.
fn read_msr(number: u32) -> Option<u64> {
    let (low, high): (u32, u32);
    // SAFETY: RDMSR only reads; a #GP for an MSR the hypervisor refuses is caught.
    let fault = unsafe { probe!("rdmsr", in("ecx") number, out("eax") low, out("edx") high) };
    fault
        .is_none()
        .then_some((u64::from(high) << 32) | u64::from(low))
}

/// WRMSR that may fault; returns whether it did not.
fn write_msr(number: u32, value: u64) -> bool {
    // SAFETY: the MSRs of this class only take effect on SYSCALL, SYSENTER and RDTSCP, which
    // this guest never executes; a #GP is caught.
    let fault = unsafe {
        probe!("wrmsr", in("ecx") number, in("eax") value as u32, in("edx") (value >> 32) as u32)
    };
    fault.is_none()
}

fn msrs(seed: u64, ms: u64, report: &mut Report) {
    let rdtscp = arch::cpuid(0x8000_0001, 0).edx & (1 << 27) != 0;
    let mut written = [None; MSRS.len()];
    for (index, msr) in MSRS.iter().enumerate() {
        if msr.number == 0xC000_0103 && !rdtscp {
            say!("no RDTSCP: TSC_AUX not tried");
            continue;
        }
        let value = if msr.narrow {
            word32(seed, index as u64)
        } else {
            word(seed, index as u64)
        };
        let start = read_msr(msr.number);
        if let Some(start) = start {
            let alien = if msr.narrow {
                foreign32(start, seed)
            } else {
                foreign(start, seed)
            };
            report.check_detail(
                &check_name(format_args!("msr-{}-start-clean", msr.name)),
                !alien,
                format_args!("({start:#x})"),
            );
        }
        let accepted = write_msr(msr.number, value) && read_msr(msr.number) == Some(value);
        report.check(
            &check_name(format_args!("msr-{}-writable", msr.name)),
            accepted,
        );
        if accepted {
            written[index] = Some(value);
        }
    }
    let (difference, comparisons) = spin_comparing(ms, || {
        MSRS.iter().zip(&written).find_map(|(msr, value)| {
            let value = (*value)?;
            let now = read_msr(msr.number);
            (now != Some(value)).then_some((msr.name, now))
        })
    });
    report.check_detail(
        "msr-kept",
        difference.is_none(),
        format_args!("({comparisons} comparisons; changed {difference:x?})"),
    );
}
