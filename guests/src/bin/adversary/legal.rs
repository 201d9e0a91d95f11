//! `case=legal insn=NAME`: instructions whose architectural behaviour is known, executed the
//! way an operating system might (or might by mistake). The guest expects what the hardware
//! does, as Carousel presents it (a CPU without VMX, with the features CPUID lists): a #GP or
//! #UD at the instruction (caught, with the faulting RIP checked), or plain success. Issue 12,
//! "What was found" 7, and "think like an attacker".
//!
//! - `string-io-df`: `std; rep outsb` / `rep insb` / `outsw` run backwards (COM1 prints a
//!   reversed buffer forwards; port 0x80 reads fill a buffer downwards).
//! - `string-out-balloon`, `string-in-balloon`: `rep outsb` / `rep insb` whose buffer runs into a
//!   page the guest gave back: the VM must stop as having touched a ballooned page.
//! - `pcid-bit63`: CR4.PCIDE = 1, then MOV CR3 with bit 63 (no flush): allowed, bit 63 not kept.
//! - `cr0-pg-no-pe`, `cr0-bit32`, `cr0-nw-no-cd`, `cr0-pg-off`: CR0 values that raise #GP; the
//!   same with `-ne` (CR0.NE set too, so that the write exits to the hypervisor).
//! - `cr4-reserved` (bits 63 and 15; SMXE without SMX), `cr4-vmxe` (CPUID hides VMX),
//!   `cr4-pae-off` (in long mode; `-vmxe`: with VMXE, so that it exits),
//!   `cr4-pcide-dirty-cr3`: CR4 values that raise #GP.
//! - `cr3-reserved`: bits 62 and MAXPHYADDR of CR3: #GP.
//! - `efer-lme-off` (while paging), `efer-reserved`: #GP; `efer-nxe`: allowed where CPUID has NX.
//! - `xsetbv`: CR4.OSXSAVE (and CPUID.1:ECX.OSXSAVE following it), XCR0 starting at 1, legal
//!   XSETBVs, and the ones that raise #GP.
//! - `invd`, `wbinvd`, `clflush-apic` (CLFLUSH of both APIC pages): complete.
//! - `getsec` (CR4.SMXE = 0), `vmxon`, `vmxoff`, `vmclear`, `vmptrld`, `vmptrst`, `vmread`,
//!   `vmwrite`, `vmlaunch`, `vmresume`, `invept`, `invvpid`, `vmfunc`: #UD, as on a CPU without
//!   VMX (KVM does the same).
//! - `single-step`: RFLAGS.TF over instructions the hypervisor emulates (OUT, VMCALL, an MMIO
//!   load, CPUID): the #DB trap must come right after each, as after a native NOP.
//! - `rdtscp`, `rdpid`, `invpcid`, `xsaves`: work where CPUID offers them, #UD where it does not.
//! - `maxphys-rsvd`: a mapping with bit MAXPHYADDR set: #PF with the reserved-bit flag.
//! - `fetch-cross-unmapped`: an instruction whose second byte lies in a page that is not
//!   present: #PF for that page, before the instruction does anything.
//! - `mmio-cross-page`: an MMIO load whose two bytes of code straddle two pages: the right value.

use core::arch::asm;

use carousel_guests::interrupts::{Fault, LOCAL_APIC_BASE};
use carousel_guests::{arch, hypercall, paging, probe, BootInfo};
use carousel_protocol::hypercall::VERSION;

use crate::{
    check_name, say, Report, Shown, DEBUG, FREE_RAM, GENERAL_PROTECTION, INVALID_OPCODE, PAGE,
    PAGE_FAULT,
};

/// CR0 bits.
const CR0_PE: u64 = 1 << 0;
const CR0_NE: u64 = 1 << 5;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
/// CR4 bits.
const CR4_PAE: u64 = 1 << 5;
const CR4_VMXE: u64 = 1 << 13;
const CR4_SMXE: u64 = 1 << 14;
const CR4_PCIDE: u64 = 1 << 17;
const CR4_OSXSAVE: u64 = 1 << 18;
/// IA32_EFER and its bits.
const IA32_EFER: u32 = 0xC000_0080;
const EFER_LME: u64 = 1 << 8;
const EFER_NXE: u64 = 1 << 11;
/// CR3 bit 63: with CR4.PCIDE, "do not invalidate" (never stored).
const CR3_NO_FLUSH: u64 = 1 << 63;
/// The I/O APIC page.
const IO_APIC_BASE: u64 = 0xFEC0_0000;
/// A port nothing answers on (reads all ones).
const POST_PORT: u16 = 0x80;
/// COM1's transmit register.
const COM1: u16 = 0x3F8;

pub fn run(boot: &BootInfo, report: &mut Report) {
    match boot.arg("insn").unwrap_or("") {
        "string-io-df" => string_io_backwards(report),
        "string-out-balloon" => string_io_into_balloon(false),
        "string-in-balloon" => string_io_into_balloon(true),
        "pcid-bit63" => pcid_bit63(report),
        "cr0-pg-no-pe" => cr0(report, "cr0-pg-no-pe", arch::read_cr0() & !CR0_PE),
        "cr0-bit32" => cr0(report, "cr0-bit32", arch::read_cr0() | 1 << 32),
        "cr0-nw-no-cd" => cr0(
            report,
            "cr0-nw-no-cd",
            (arch::read_cr0() | CR0_NW) & !CR0_CD,
        ),
        "cr0-pg-off" => cr0(report, "cr0-pg-off", arch::read_cr0() & !CR0_PG),
        // The same values with CR0.NE set as well: NE is one of the bits Carousel's guest/host
        // mask owns, so these writes exit and meet the hypervisor's own checks (hardware takes
        // NE = 1 and still raises #GP for the rest).
        "cr0-pg-no-pe-ne" => cr0(
            report,
            "cr0-pg-no-pe-ne",
            (arch::read_cr0() | CR0_NE) & !CR0_PE,
        ),
        "cr0-bit32-ne" => cr0(report, "cr0-bit32-ne", arch::read_cr0() | CR0_NE | 1 << 32),
        "cr0-nw-no-cd-ne" => cr0(
            report,
            "cr0-nw-no-cd-ne",
            (arch::read_cr0() | CR0_NE | CR0_NW) & !CR0_CD,
        ),
        "cr0-pg-off-ne" => cr0(
            report,
            "cr0-pg-off-ne",
            (arch::read_cr0() | CR0_NE) & !CR0_PG,
        ),
        "cr4-reserved" => cr4_reserved(report),
        "cr4-vmxe" => cr4(report, "cr4-vmxe", arch::read_cr4() | CR4_VMXE),
        "cr4-pae-off" => cr4(report, "cr4-pae-off", arch::read_cr4() & !CR4_PAE),
        // With VMXE too, so that the write exits (VMXE is in Carousel's mask): #GP either way.
        "cr4-pae-off-vmxe" => cr4(
            report,
            "cr4-pae-off-vmxe",
            (arch::read_cr4() | CR4_VMXE) & !CR4_PAE,
        ),
        "cr4-pcide-dirty-cr3" => cr4_pcide_dirty_cr3(report),
        "cr3-reserved" => cr3_reserved(report),
        "efer-lme-off" => efer(report, "efer-lme-off", efer_value() & !EFER_LME, true),
        "efer-reserved" => efer(report, "efer-reserved", efer_value() | 1 << 1, true),
        "efer-nxe" => efer_nxe(report),
        "xsetbv" => xsetbv(report),
        "invd" => {
            // SAFETY: INVD drops caches without writing them back; every write of this guest
            // so far went to write-back memory that Bochs (and a hypervisor emulating INVD as
            // WBINVD) keeps coherent. A #UD or #GP is caught.
            let fault = unsafe { probe!("invd") };
            report.expect_no_fault("invd", fault);
        }
        "wbinvd" => {
            // SAFETY: WBINVD writes caches back and drops them: no architectural effect.
            let fault = unsafe { probe!("wbinvd") };
            report.expect_no_fault("wbinvd", fault);
        }
        "clflush-apic" => {
            for (name, address) in [
                ("clflush-lapic", LOCAL_APIC_BASE as u64),
                ("clflush-ioapic", IO_APIC_BASE),
            ] {
                // SAFETY: CLFLUSH only evicts a line; of a device page it does nothing.
                let fault = unsafe { probe!("clflush byte ptr [{a}]", a = in(reg) address) };
                report.expect_no_fault(name, fault);
            }
        }
        "getsec" => {
            let at: u64;
            // SAFETY: GETSEC with CR4.SMXE = 0 raises #UD (caught).
            let fault = unsafe {
                probe!("lea {at}, [rip + 65f]", "65:", ".byte 0x0f, 0x37", at = out(reg) at,
                       inout("eax") 0u32 => _, out("ecx") _, out("edx") _)
            };
            report.expect_fault("getsec-ud", fault, INVALID_OPCODE, at);
        }
        "vmxon" | "vmxoff" | "vmclear" | "vmptrld" | "vmptrst" | "vmread" | "vmwrite"
        | "vmlaunch" | "vmresume" | "invept" | "invvpid" | "vmfunc" => {
            vmx_instruction(report, boot.arg("insn").unwrap_or(""))
        }
        "single-step" => single_step(report),
        "rdtscp" => offered_instruction(report, "rdtscp", cpuid_bit(0x8000_0001, 0, Edx, 27)),
        "rdpid" => offered_instruction(report, "rdpid", cpuid_bit(7, 0, Ecx, 22)),
        "invpcid" => offered_instruction(report, "invpcid", cpuid_bit(7, 0, Ebx, 10)),
        "xsaves" => offered_instruction(report, "xsaves", cpuid_bit(0xD, 1, Eax, 3)),
        "maxphys-rsvd" => maxphys_reserved(report),
        "fetch-cross-unmapped" => fetch_cross_unmapped(report),
        "mmio-cross-page" => mmio_cross_page(report),
        other => report.check_detail("legal-insn", false, format_args!("unknown {other:?}")),
    }
}

/// A CPUID output register.
#[derive(Clone, Copy)]
enum Register {
    Eax,
    Ebx,
    Ecx,
    Edx,
}
use Register::{Eax, Ebx, Ecx, Edx};

/// CPUID.(leaf, subleaf):register\[bit\].
fn cpuid_bit(leaf: u32, subleaf: u32, register: Register, bit: u32) -> bool {
    let result = arch::cpuid(leaf, subleaf);
    let value = match register {
        Eax => result.eax,
        Ebx => result.ebx,
        Ecx => result.ecx,
        Edx => result.edx,
    };
    value & (1 << bit) != 0
}

// ----- String I/O -----

/// "string-io-df: backwards\n", reversed: `std; rep outsb` from its last byte prints it forwards.
const REVERSED: &[u8] = b"\nsdrawkcab :fd-oi-gnirts";

fn string_io_backwards(report: &mut Report) {
    let last = REVERSED.as_ptr() as u64 + REVERSED.len() as u64 - 1;
    let (rsi, rcx): (u64, u64);
    // SAFETY: reads REVERSED from its last byte down to its first (DF = 1), writing each byte to
    // COM1 (the console); CLD restores the direction the ABI requires.
    let fault = unsafe {
        probe!(
            "std",
            "rep outsb",
            "cld",
            in("dx") COM1,
            inout("rsi") last => rsi,
            inout("rcx") REVERSED.len() as u64 => rcx,
            options(nostack, readonly),
        )
    };
    // SAFETY: CLD only clears DF (the probe may have left it set if it faulted).
    unsafe { asm!("cld", options(nomem, nostack)) };
    report.expect_no_fault("outsb-backwards-runs", fault);
    report.check_detail(
        "outsb-backwards-registers",
        rsi == last - REVERSED.len() as u64 && rcx == 0,
        format_args!(
            "(RSI {rsi:#x}, expected {:#x}; RCX {rcx})",
            last - REVERSED.len() as u64
        ),
    );

    let mut forwards = [0u8; 8];
    // SAFETY: `rep insb` of 8 bytes into `forwards` (DF = 0).
    unsafe {
        asm!("rep insb", in("dx") POST_PORT, inout("rdi") forwards.as_mut_ptr() => _,
             inout("rcx") 8u64 => _, options(nostack));
    }
    let mut buffer = [0u8; 16];
    let top = buffer.as_mut_ptr() as u64 + 11;
    let (rdi, rcx): (u64, u64);
    // SAFETY: `std; rep insb` of 8 bytes writes buffer[11] down to buffer[4], all inside
    // `buffer`; CLD restores DF.
    let fault = unsafe {
        probe!(
            "std",
            "rep insb",
            "cld",
            in("dx") POST_PORT,
            inout("rdi") top => rdi,
            inout("rcx") 8u64 => rcx,
            options(nostack),
        )
    };
    // SAFETY: as above.
    unsafe { asm!("cld", options(nomem, nostack)) };
    report.expect_no_fault("insb-backwards-runs", fault);
    let mut expected = [0u8; 16];
    for (slot, value) in expected[4..12].iter_mut().rev().zip(forwards) {
        *slot = value;
    }
    report.check_detail(
        "insb-backwards-fills-downwards",
        buffer == expected && rdi == top - 8 && rcx == 0,
        format_args!(
            "(buffer {buffer:x?}, RDI {rdi:#x}, expected {:#x}, RCX {rcx})",
            top - 8
        ),
    );

    let words = [0x1111u16, 0x2222, 0x3333];
    let rsi: u64;
    // SAFETY: one `outsw` from words[2] to the POST port with DF = 1: reads 2 bytes of `words`.
    let fault = unsafe {
        probe!(
            "std",
            "outsw",
            "cld",
            in("dx") POST_PORT,
            inout("rsi") words.as_ptr().wrapping_add(2) as u64 => rsi,
            options(nostack, readonly),
        )
    };
    // SAFETY: as above.
    unsafe { asm!("cld", options(nomem, nostack)) };
    report.expect_no_fault("outsw-backwards-runs", fault);
    report.check(
        "outsw-backwards-moves-rsi-down",
        // One word backwards: from words[2] to words[1].
        rsi == words.as_ptr().wrapping_add(1) as u64,
    );
}

fn string_io_into_balloon(input: bool) -> ! {
    let kept = FREE_RAM;
    let given = FREE_RAM + PAGE;
    match hypercall::balloon_inflate(&[(given / PAGE) as u32]) {
        Ok(_) => {}
        Err(error) => {
            say!("BALLOON_INFLATE of {given:#x} failed: {error}");
            hypercall::exit(carousel_protocol::hypercall::EXIT_FAILURE)
        }
    }
    let start = kept + PAGE - 16;
    say!(
        "rep {} of 32 bytes at {start:#x}: the last 16 lie in the ballooned page {given:#x}",
        if input { "insb" } else { "outsb" }
    );
    // SAFETY: the buffer is this VM's RAM from 3 MiB: 16 bytes in a page it keeps, 16 in the
    // page it gave back, which the hypervisor is expected to stop the VM for.
    unsafe {
        if input {
            asm!("rep insb", in("dx") POST_PORT, inout("rdi") start => _,
                 inout("rcx") 32u64 => _, options(nostack));
        } else {
            asm!("rep outsb", in("dx") POST_PORT, inout("rsi") start => _,
                 inout("rcx") 32u64 => _, options(nostack, readonly));
        }
    }
    crate::survived(format_args!(
        "string I/O into the ballooned page {given:#x}"
    ))
}

// ----- Control registers -----

/// A control register the guest writes.
#[derive(Debug, Clone, Copy)]
enum Control {
    Cr0,
    Cr4,
}

impl Control {
    fn read(self) -> u64 {
        match self {
            Self::Cr0 => arch::read_cr0(),
            Self::Cr4 => arch::read_cr4(),
        }
    }

    /// MOV to the register, probed: the exception it raised and the instruction's address.
    fn probe_write(self, value: u64) -> (Option<Fault>, u64) {
        let at: u64;
        // SAFETY: a value the processor refuses with #GP (caught); should it be accepted, the
        // caller writes the old value back right after.
        let fault = unsafe {
            match self {
                Self::Cr0 => probe!("lea {at}, [rip + 65f]", "65:", "mov cr0, {v}",
                                    at = out(reg) at, v = in(reg) value),
                Self::Cr4 => probe!("lea {at}, [rip + 65f]", "65:", "mov cr4, {v}",
                                    at = out(reg) at, v = in(reg) value),
            }
        };
        (fault, at)
    }

    /// Writes `value` (the guest's own value from before).
    fn restore(self, value: u64) {
        // SAFETY: the value the guest ran with before the probe.
        unsafe {
            match self {
                Self::Cr0 => arch::write_cr0(value),
                Self::Cr4 => arch::write_cr4(value),
            }
        }
    }
}

/// MOV CR0, `value`: expected to raise #GP at the instruction (and change nothing).
fn cr0(report: &mut Report, name: &str, value: u64) {
    refused_write(report, name, Control::Cr0, value);
}

/// MOV CR4, `value`: expected to raise #GP at the instruction (and change nothing).
fn cr4(report: &mut Report, name: &str, value: u64) {
    refused_write(report, name, Control::Cr4, value);
}

fn refused_write(report: &mut Report, name: &str, control: Control, value: u64) {
    let before = control.read();
    let (fault, at) = control.probe_write(value);
    let after = control.read();
    if fault.is_none() {
        control.restore(before);
    }
    report.expect_fault(name, fault, GENERAL_PROTECTION, at);
    report.check_detail(
        &check_name(format_args!("{name}-unchanged")),
        after == before,
        format_args!("({control:?} {before:#x} before, {after:#x} after writing {value:#x})"),
    );
}

fn cr4_reserved(report: &mut Report) {
    let cr4_now = arch::read_cr4();
    cr4(report, "cr4-bit63", cr4_now | 1 << 63);
    cr4(report, "cr4-bit15", cr4_now | 1 << 15);
    if !cpuid_bit(1, 0, Ecx, 6) {
        cr4(report, "cr4-smxe-without-smx", cr4_now | CR4_SMXE);
    }
}

fn cr4_pcide_dirty_cr3(report: &mut Report) {
    if !cpuid_bit(1, 0, Ecx, 17) {
        cr4(
            report,
            "cr4-pcide-without-pcid",
            arch::read_cr4() | CR4_PCIDE,
        );
        return;
    }
    let cr3 = arch::read_cr3();
    // SAFETY: PWT (bit 3) in CR3 only changes the caching of the PML4 access.
    unsafe { arch::write_cr3(cr3 | 1 << 3) };
    cr4(
        report,
        "cr4-pcide-with-cr3-low-bits",
        arch::read_cr4() | CR4_PCIDE,
    );
    // SAFETY: the guest's own CR3 as it was.
    unsafe { arch::write_cr3(cr3) };
}

fn cr3_reserved(report: &mut Report) {
    let cr3 = arch::read_cr3();
    let maxphys = arch::cpuid(0x8000_0008, 0).eax & 0xFF;
    let mut bits = [62u32, maxphys];
    if maxphys >= 52 {
        bits[1] = 62;
    }
    for bit in bits {
        let value = cr3 | 1 << bit;
        let at: u64;
        // SAFETY: a reserved bit: #GP (caught). Accepted, it would point CR3 beyond RAM; the old
        // value goes back right after.
        let fault = unsafe {
            probe!("lea {at}, [rip + 65f]", "65:", "mov cr3, {v}", at = out(reg) at,
                   v = in(reg) value)
        };
        let after = arch::read_cr3();
        if fault.is_none() {
            // SAFETY: the guest's own CR3.
            unsafe { arch::write_cr3(cr3) };
        }
        report.expect_fault(
            &check_name(format_args!("cr3-bit{bit}")),
            fault,
            GENERAL_PROTECTION,
            at,
        );
        report.check_detail(
            "cr3-unchanged",
            after == cr3,
            format_args!("(CR3 {cr3:#x} before, {after:#x} after)"),
        );
    }
}

fn pcid_bit63(report: &mut Report) {
    if !cpuid_bit(1, 0, Ecx, 17) {
        say!("CPUID offers no PCID: CR4.PCIDE must raise #GP");
        cr4(
            report,
            "cr4-pcide-without-pcid",
            arch::read_cr4() | CR4_PCIDE,
        );
        return;
    }
    let cr3 = arch::read_cr3();
    let cr4_before = arch::read_cr4();
    // SAFETY: CR4.PCIDE with CR3[11:0] = 0 in long mode: allowed; the current PCID is 0.
    let fault = unsafe { probe!("mov cr4, {v}", v = in(reg) cr4_before | CR4_PCIDE) };
    report.expect_no_fault("pcide-set", fault);
    if fault.is_some() {
        return;
    }
    for (name, value) in [
        ("cr3-bit63", cr3 | CR3_NO_FLUSH),
        ("cr3-pcid1-bit63", cr3 | 1 | CR3_NO_FLUSH),
    ] {
        // SAFETY: the guest's own page tables with PCID 0 or 1 and no flush: translations go on
        // as before.
        let fault = unsafe { probe!("mov cr3, {v}", v = in(reg) value) };
        report.expect_no_fault(name, fault);
        let now = arch::read_cr3();
        report.check_detail(
            "cr3-bit63-not-stored",
            now == value & !CR3_NO_FLUSH,
            format_args!("(wrote {value:#x}, reads {now:#x})"),
        );
    }
    // SAFETY: back to PCID 0, then PCIDE off (allowed with CR3[11:0] = 0).
    unsafe {
        arch::write_cr3(cr3);
        arch::write_cr4(cr4_before);
    }
}

// ----- IA32_EFER -----

fn efer_value() -> u64 {
    // SAFETY: IA32_EFER exists on every x86-64 processor (and Carousel emulates it).
    unsafe { arch::rdmsr(IA32_EFER) }
}

/// WRMSR IA32_EFER, `value`; expected to raise #GP when `refused`.
fn efer(report: &mut Report, name: &str, value: u64, refused: bool) {
    let before = efer_value();
    let at: u64;
    // SAFETY: a value refused with #GP (caught), or (NXE) one that only enables the XD bit,
    // which no page-table entry of the guest sets.
    let fault = unsafe {
        probe!("lea {at}, [rip + 65f]", "65:", "wrmsr", at = out(reg) at,
               in("ecx") IA32_EFER, in("eax") value as u32, in("edx") (value >> 32) as u32)
    };
    let after = efer_value();
    if refused {
        report.expect_fault(name, fault, GENERAL_PROTECTION, at);
        report.check_detail(
            "efer-unchanged",
            after == before,
            format_args!("(EFER {before:#x} before, {after:#x} after writing {value:#x})"),
        );
    } else {
        report.expect_no_fault(name, fault);
        report.check_detail(
            "efer-written",
            after == value,
            format_args!("(wrote {value:#x}, reads {after:#x})"),
        );
    }
}

fn efer_nxe(report: &mut Report) {
    let offered = cpuid_bit(0x8000_0001, 0, Edx, 20);
    let before = efer_value();
    efer(report, "efer-nxe", before | EFER_NXE, !offered);
    if offered {
        efer(report, "efer-nxe-off", before, false);
    }
}

// ----- XSAVE -----

pub fn xgetbv(register: u32) -> Result<u64, Fault> {
    let (low, high): (u32, u32);
    // SAFETY: XGETBV only reads an XCR (#UD without CR4.OSXSAVE, #GP for an XCR that does not
    // exist: both caught).
    let fault = unsafe { probe!("xgetbv", in("ecx") register, out("eax") low, out("edx") high) };
    match fault {
        None => Ok((u64::from(high) << 32) | u64::from(low)),
        Some(fault) => Err(fault),
    }
}

/// XSETBV; returns the fault and the instruction's address.
pub fn xsetbv_probe(register: u32, value: u64) -> (Option<Fault>, u64) {
    let at: u64;
    // SAFETY: XCR0 values that keep x87 (bit 0) enable state components the guest does not use;
    // others raise #GP (caught).
    let fault = unsafe {
        probe!("lea {at}, [rip + 65f]", "65:", "xsetbv", at = out(reg) at,
               in("ecx") register, in("eax") value as u32, in("edx") (value >> 32) as u32)
    };
    (fault, at)
}

fn xsetbv(report: &mut Report) {
    let xsave = cpuid_bit(1, 0, Ecx, 26);
    let avx = cpuid_bit(1, 0, Ecx, 28);
    if !xsave {
        say!("CPUID offers no XSAVE: CR4.OSXSAVE must raise #GP");
        cr4(
            report,
            "cr4-osxsave-without-xsave",
            arch::read_cr4() | CR4_OSXSAVE,
        );
        return;
    }
    report.check("cpuid-osxsave-clear-before", !cpuid_bit(1, 0, Ecx, 27));
    // SAFETY: CR4.OSXSAVE only enables XGETBV/XSETBV/XSAVE.
    let fault = unsafe { probe!("mov cr4, {v}", v = in(reg) arch::read_cr4() | CR4_OSXSAVE) };
    report.expect_no_fault("cr4-osxsave", fault);
    report.check("cpuid-osxsave-follows-cr4", cpuid_bit(1, 0, Ecx, 27));
    let initial = xgetbv(0);
    report.check_detail(
        "xcr0-initial-x87-only",
        initial == Ok(1),
        format_args!("({initial:x?}; another VM's XCR0 would show here)"),
    );
    let (fault, _) = xsetbv_probe(0, 0b11);
    report.expect_no_fault("xsetbv-x87-sse", fault);
    report.check("xcr0-reads-x87-sse", xgetbv(0) == Ok(0b11));
    if avx {
        let (fault, _) = xsetbv_probe(0, 0b111);
        report.expect_no_fault("xsetbv-avx", fault);
        report.check("xcr0-reads-avx", xgetbv(0) == Ok(0b111));
    }
    let (fault, at) = xsetbv_probe(0, 0b10);
    report.expect_fault("xsetbv-without-x87", fault, GENERAL_PROTECTION, at);
    let (fault, at) = xsetbv_probe(0, 1 | 1 << 63);
    report.expect_fault("xsetbv-reserved-bit", fault, GENERAL_PROTECTION, at);
    if avx {
        let (fault, at) = xsetbv_probe(0, 0b101);
        report.expect_fault("xsetbv-avx-without-sse", fault, GENERAL_PROTECTION, at);
    }
    if !cpuid_bit(0xD, 1, Eax, 2) {
        let (fault, at) = xsetbv_probe(1, 1);
        report.expect_fault("xsetbv-xcr1", fault, GENERAL_PROTECTION, at);
    }
    report.check(
        "xcr0-kept-after-refusals",
        xgetbv(0) == Ok(if avx { 0b111 } else { 0b11 }),
    );
}

// ----- VMX instructions -----

/// A 4-KiB region for the VMX instructions' memory operands (never read: they must #UD).
#[repr(C, align(4096))]
struct Region([u8; 4096]);
static mut REGION: Region = Region([0; 4096]);

fn vmx_instruction(report: &mut Report, name: &str) {
    let region = (&raw mut REGION) as u64;
    let operand = [region, 0u64];
    let pointer = operand.as_ptr();
    let at: u64;
    // SAFETY: every one of these raises #UD on a CPU that reports no VMX, which is what the
    // guest is shown (caught). Their memory operands point at `operand` (16 bytes, of which
    // VMPTRST would write the first 8) and their register operands are scratch.
    let fault = unsafe {
        match name {
            "vmxon" => probe!("lea {at}, [rip + 65f]", "65:", "vmxon qword ptr [{m}]",
                              at = out(reg) at, m = in(reg) pointer),
            "vmxoff" => probe!("lea {at}, [rip + 65f]", "65:", "vmxoff", at = out(reg) at),
            "vmclear" => probe!("lea {at}, [rip + 65f]", "65:", "vmclear qword ptr [{m}]",
                                at = out(reg) at, m = in(reg) pointer),
            "vmptrld" => probe!("lea {at}, [rip + 65f]", "65:", "vmptrld qword ptr [{m}]",
                                at = out(reg) at, m = in(reg) pointer),
            "vmptrst" => probe!("lea {at}, [rip + 65f]", "65:", "vmptrst qword ptr [{m}]",
                                at = out(reg) at, m = in(reg) pointer),
            "vmread" => probe!("lea {at}, [rip + 65f]", "65:", "vmread {d}, {f}",
                               at = out(reg) at, d = out(reg) _, f = in(reg) 0x681Eu64),
            "vmwrite" => probe!("lea {at}, [rip + 65f]", "65:", "vmwrite {f}, {v}",
                                at = out(reg) at, f = in(reg) 0x681Eu64, v = in(reg) 0u64),
            "vmlaunch" => probe!("lea {at}, [rip + 65f]", "65:", "vmlaunch", at = out(reg) at),
            "vmresume" => probe!("lea {at}, [rip + 65f]", "65:", "vmresume", at = out(reg) at),
            "invept" => probe!("lea {at}, [rip + 65f]", "65:", "invept {t}, xmmword ptr [{m}]",
                               at = out(reg) at, t = in(reg) 2u64, m = in(reg) pointer),
            "invvpid" => probe!("lea {at}, [rip + 65f]", "65:",
                                "invvpid {t}, xmmword ptr [{m}]",
                                at = out(reg) at, t = in(reg) 2u64, m = in(reg) pointer),
            _ => probe!("lea {at}, [rip + 65f]", "65:", "vmfunc", at = out(reg) at,
                        inout("eax") 0u32 => _, inout("ecx") 0u32 => _),
        }
    };
    report.expect_fault(
        &check_name(format_args!("{name}-ud")),
        fault,
        INVALID_OPCODE,
        at,
    );
}

// ----- Single-step over emulated instructions -----

fn single_step(report: &mut Report) {
    // Each: TF set by POPF takes effect after the next instruction; the #DB trap's RIP is the
    // instruction after it (label 65). A hypervisor that emulates the instruction and moves RIP
    // on without a pending #DB lets the NOP after it run first, and the trap comes one byte late.
    let after: u64;
    // SAFETY: TF over a NOP: a #DB trap after it (caught; the runtime clears TF on recovery).
    let fault = unsafe {
        probe!("lea {at}, [rip + 65f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
               "nop", "65:", "nop", "nop", at = out(reg) after)
    };
    expect_trap(report, "tf-native-nop", fault, after);

    let after: u64;
    // SAFETY: as above, over OUT to a port nothing answers on.
    let fault = unsafe {
        probe!("lea {at}, [rip + 65f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
               "out dx, al", "65:", "nop", "nop", at = out(reg) after,
               in("dx") POST_PORT, in("al") 0u8)
    };
    expect_trap(report, "tf-out", fault, after);

    let after: u64;
    // SAFETY: as above, over the VERSION hypercall (it changes only EAX).
    let fault = unsafe {
        probe!("lea {at}, [rip + 65f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
               "vmcall", "65:", "nop", "nop", at = out(reg) after,
               inout("eax") VERSION => _, out("ecx") _, out("edx") _, out("esi") _)
    };
    expect_trap(report, "tf-vmcall", fault, after);

    let after: u64;
    // SAFETY: as above, over a load of the local APIC's version register (no side effect).
    let fault = unsafe {
        probe!("lea {at}, [rip + 65f]", "pushfq", "or qword ptr [rsp], 0x100", "popfq",
               "mov eax, dword ptr [{r}]", "65:", "nop", "nop", at = out(reg) after,
               r = in(reg) LOCAL_APIC_BASE as u64 + 0x30, out("eax") _)
    };
    expect_trap(report, "tf-mmio-load", fault, after);

    let after: u64;
    // SAFETY: as above, over CPUID leaf 0; RBX (LLVM's) is saved in a scratch register and put
    // back on both paths (the probe's tail).
    let fault = unsafe {
        probe!(tail: ["mov rbx, {save}"],
               "mov {save}, rbx", "lea {at}, [rip + 65f]", "pushfq", "or qword ptr [rsp], 0x100",
               "popfq", "cpuid", "65:", "nop", "nop", at = out(reg) after, save = out(reg) _,
               inout("eax") 0u32 => _, out("ecx") _, out("edx") _)
    };
    expect_trap(report, "tf-cpuid", fault, after);
}

fn expect_trap(report: &mut Report, name: &str, fault: Option<Fault>, after: u64) {
    let passed = fault.is_some_and(|fault| fault.vector == DEBUG && fault.rip == after);
    report.check_detail(
        name,
        passed,
        format_args!("(expected #DB with RIP {after:#x}, got {})", Shown(fault)),
    );
}

// ----- Instructions CPUID offers -----

/// An XSAVE area: 64-byte aligned, large enough for x87, SSE and AVX state.
#[repr(C, align(64))]
struct XsaveArea([u8; 4096]);
static mut XSAVE_AREA: XsaveArea = XsaveArea([0; 4096]);

fn offered_instruction(report: &mut Report, name: &str, offered: bool) {
    say!("CPUID offers {name}: {offered}");
    let descriptor = [0u64; 2];
    let at: u64;
    // SAFETY: each reads the TSC or TSC_AUX, invalidates TLB entries (INVPCID type 2: all
    // contexts; the guest's tables stay as they are), or saves state into `XSAVE_AREA`; where
    // CPUID does not offer it, it raises #UD (caught).
    let fault = unsafe {
        match name {
            "rdtscp" => probe!("lea {at}, [rip + 65f]", "65:", "rdtscp", at = out(reg) at,
                               out("eax") _, out("edx") _, out("ecx") _),
            "rdpid" => probe!("lea {at}, [rip + 65f]", "65:", "rdpid {r}", at = out(reg) at,
                              r = out(reg) _),
            "invpcid" => probe!("lea {at}, [rip + 65f]", "65:", "invpcid {t}, xmmword ptr [{d}]",
                                at = out(reg) at, t = in(reg) 2u64, d = in(reg) descriptor.as_ptr()),
            _ => {
                if offered {
                    arch::write_cr4(arch::read_cr4() | CR4_OSXSAVE);
                    let _ = xgetbv(0).map(|xcr0| {
                        report.check_detail(
                            "xcr0-initial-x87-only",
                            xcr0 == 1,
                            format_args!("({xcr0:#x})"),
                        )
                    });
                    let _ = xsetbv_probe(0, 0b11);
                }
                probe!("lea {at}, [rip + 65f]", "65:", "xsaves [{a}]", at = out(reg) at,
                       a = in(reg) (&raw mut XSAVE_AREA) as u64, in("eax") 0b11u32, in("edx") 0u32)
            }
        }
    };
    if offered {
        report.expect_no_fault(name, fault);
    } else {
        report.expect_fault(
            &check_name(format_args!("{name}-ud-when-not-offered")),
            fault,
            INVALID_OPCODE,
            at,
        );
    }
}

// ----- Page walks -----

fn maxphys_reserved(report: &mut Report) {
    let maxphys = arch::cpuid(0x8000_0008, 0).eax & 0xFF;
    if maxphys >= 52 {
        say!("MAXPHYADDR {maxphys}: no reserved address bit to set");
        return;
    }
    let entry = 1u64 << maxphys | paging::PRESENT | paging::WRITABLE | paging::PAGE_SIZE_2MIB;
    // SAFETY: the scratch window maps nothing the guest uses.
    let linear = unsafe { paging::set_scratch_entry(3, entry) };
    let value: u64;
    // SAFETY: a load through an entry with a reserved bit: #PF (caught) before any access.
    let fault =
        unsafe { probe!("mov {v}, qword ptr [{a}]", a = in(reg) linear, v = out(reg) value) };
    /// #PF error code: P (present) and RSVD (reserved bit set).
    const PRESENT_RESERVED: u64 = 0b1001;
    report.check_detail(
        "maxphys-bit-reserved-pf",
        fault.is_some_and(|fault| {
            fault.vector == PAGE_FAULT
                && fault.error_code & PRESENT_RESERVED == PRESENT_RESERVED
                && fault.cr2 == linear
        }),
        format_args!("(bit {maxphys}; got {}, read {value:#x})", Shown(fault)),
    );
}

/// A page table for the scratch window's 4-KiB mappings, and two pages of code.
#[repr(C, align(4096))]
struct Table([u64; 512]);
static mut PAGE_TABLE: Table = Table([0; 512]);
#[repr(C, align(4096))]
struct CodePages([u8; 8192]);
static mut CODE: CodePages = CodePages([0xCC; 8192]);

fn fetch_cross_unmapped(report: &mut Report) {
    let code = (&raw mut CODE) as u64;
    let table = (&raw mut PAGE_TABLE) as u64;
    // SAFETY: the statics are this guest's, used by nothing else; the scratch window maps
    // nothing the guest uses. PT entry 0 maps the first code page; entry 1 is not present.
    let linear = unsafe {
        let (code_pages, page_table) = (&raw mut CODE, &raw mut PAGE_TABLE);
        (*code_pages).0[4095] = 0x8B; // mov eax, [rdx]: its ModRM byte would be next
        (*page_table).0[0] = code | paging::PRESENT | paging::WRITABLE;
        (*page_table).0[1] = 0;
        paging::set_scratch_entry(2, table | paging::PRESENT | paging::WRITABLE)
    };
    let target = linear + 4095;
    // SAFETY: the jump lands on an instruction whose second byte lies in a page that is not
    // present: #PF (caught) before it executes. Were it to run, it would load from the local
    // APIC and hit INT3 padding (caught too).
    let fault = unsafe {
        probe!("jmp {t}", t = in(reg) target, in("rdx") LOCAL_APIC_BASE as u64 + 0x30,
               out("eax") _)
    };
    report.check_detail(
        "fetch-cross-unmapped-pf",
        fault.is_some_and(|fault| {
            fault.vector == PAGE_FAULT && fault.cr2 == linear + 4096 && fault.rip == target
        }),
        format_args!(
            "(expected #PF at {target:#x} for {:#x}, got {})",
            linear + 4096,
            Shown(fault)
        ),
    );
}

fn mmio_cross_page(report: &mut Report) {
    let code = (&raw mut CODE) as u64;
    // SAFETY: this guest's own code buffer (identity-mapped RAM, executable: the map has no XD).
    unsafe {
        let code_pages = &raw mut CODE;
        let bytes = &mut (*code_pages).0;
        bytes[4095] = 0x8B; // mov eax, [rdx]
        bytes[4096] = 0x02;
        bytes[4097] = 0xCC; // int3: back to the probe
    }
    let register = LOCAL_APIC_BASE as u64 + 0x30;
    let direct = carousel_guests::mmio::Registers::new(LOCAL_APIC_BASE).read(0x30);
    let value: u32;
    // SAFETY: jumps to the load (whose two bytes straddle the two code pages), which reads the
    // local APIC's version register; the INT3 after it returns to the probe (a #BP, caught).
    let fault =
        unsafe { probe!("jmp {t}", t = in(reg) code + 4095, in("rdx") register, out("eax") value) };
    report.check_detail(
        "mmio-cross-page-completes",
        fault.is_some_and(|fault| fault.vector == 3 && fault.rip == code + 4098),
        format_args!("(expected #BP after the load, got {})", Shown(fault)),
    );
    report.check_detail(
        "mmio-cross-page-value",
        value == direct,
        format_args!("(read {value:#x}, the register holds {direct:#x})"),
    );
}
