//! CPUID as the guest sees it: the host's answers, less what Carousel does not give a guest (VMX,
//! SMX, x2APIC, the TSC-deadline timer, RDTSCP, INVPCID, XSAVES), OSXSAVE following the guest's
//! own CR4, the hypervisor bit set, and Carousel's signature at the hypervisor leaf. Every
//! feature CPUID leaves visible works; every one it hides raises #UD.

use carousel_protocol::hypercall;

use super::Context;
use crate::host::Host;
use crate::vcpu::{Vcpu, VcpuError};

/// CPUID.1:ECX bit 5: VMX.
pub const ECX_VMX: u32 = 1 << 5;
/// CPUID.1:ECX bit 21: x2APIC (not offered: no x2APIC MSRs are emulated).
pub const ECX_X2APIC: u32 = 1 << 21;
/// CPUID.1:ECX bit 31: running under a hypervisor.
pub const ECX_HYPERVISOR: u32 = 1 << 31;
/// CPUID.1:ECX bit 6: SMX (GETSEC, CR4.SMXE).
pub const ECX_SMX: u32 = 1 << 6;
/// CPUID.1:ECX bit 24: the LAPIC's TSC-deadline mode (the LAPIC model has none).
pub const ECX_TSC_DEADLINE: u32 = 1 << 24;
/// CPUID.1:ECX bit 27: OSXSAVE, a copy of CR4.OSXSAVE.
pub const ECX_OSXSAVE: u32 = 1 << 27;
/// CPUID.80000001H:EDX bit 27: RDTSCP (needs a VMX control and TSC_AUX per VM).
pub const EXT_EDX_RDTSCP: u32 = 1 << 27;
/// CPUID.(EAX=7,ECX=0):EBX bit 10: INVPCID (needs a VMX control).
pub const LEAF7_EBX_INVPCID: u32 = 1 << 10;
/// CPUID.(EAX=0DH,ECX=1):EAX bit 3: XSAVES/XRSTORS (needs a VMX control and IA32_XSS).
pub const XSAVE_EAX_XSAVES: u32 = 1 << 3;

/// The guest's CPUID answer for `leaf`/`subleaf`, from the host's, for a guest whose CR4 has
/// OSXSAVE set or not.
pub fn answer(host: &mut impl Host, leaf: u32, subleaf: u32, osxsave: bool) -> [u32; 4] {
    match leaf {
        1 => {
            let [eax, ebx, ecx, edx] = host.cpuid(1, 0);
            let hidden = ECX_VMX | ECX_SMX | ECX_X2APIC | ECX_TSC_DEADLINE | ECX_OSXSAVE;
            let osxsave = if osxsave { ECX_OSXSAVE } else { 0 };
            [eax, ebx, (ecx & !hidden) | osxsave | ECX_HYPERVISOR, edx]
        }
        7 if subleaf == 0 => {
            let [eax, ebx, ecx, edx] = host.cpuid(7, 0);
            [eax, ebx & !LEAF7_EBX_INVPCID, ecx, edx]
        }
        0xD if subleaf == 1 => {
            let [eax, ebx, ecx, edx] = host.cpuid(0xD, 1);
            [eax & !XSAVE_EAX_XSAVES, ebx, ecx, edx]
        }
        0x8000_0001 => {
            let [eax, ebx, ecx, edx] = host.cpuid(0x8000_0001, 0);
            [eax, ebx, ecx, edx & !EXT_EDX_RDTSCP]
        }
        hypercall::CPUID_HYPERVISOR_LEAF => {
            let word = |i: usize| {
                let bytes = &hypercall::CPUID_SIGNATURE[i..i + 4];
                u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])
            };
            [hypercall::CPUID_HYPERVISOR_LEAF, word(0), word(4), word(8)]
        }
        0x4000_0001..=0x4FFF_FFFF => [0; 4],
        _ => host.cpuid(leaf, subleaf),
    }
}

/// CPUID: EAX = leaf, ECX = subleaf; the answer in EAX, EBX, ECX, EDX.
pub fn cpuid<V: Vcpu, F, H: Host>(cx: &mut Context<'_, V, F, H>) -> Result<(), VcpuError> {
    let osxsave = cx.vm.vcpu.read(crate::vcpu::Reg::Cr4)? & super::cr::cr4::OSXSAVE != 0;
    let regs = cx.vm.vcpu.registers();
    let (leaf, subleaf) = (regs.rax as u32, regs.rcx as u32);
    let [eax, ebx, ecx, edx] = answer(cx.host, leaf, subleaf, osxsave);
    let regs = cx.vm.vcpu.registers();
    regs.rax = u64::from(eax);
    regs.rbx = u64::from(ebx);
    regs.rcx = u64::from(ecx);
    regs.rdx = u64::from(edx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use alloc::rc::Rc;
    use core::cell::Cell;

    use super::*;
    use crate::testing::FakeHost;

    #[test]
    fn hidden_features_stay_hidden_and_osxsave_follows_cr4() {
        let mut host = FakeHost::new(Rc::new(Cell::new(0)));
        let [_, _, ecx, _] = answer(&mut host, 1, 0, false);
        assert_eq!(ecx & (ECX_VMX | ECX_X2APIC | ECX_OSXSAVE), 0);
        assert_ne!(ecx & ECX_HYPERVISOR, 0);
        let [_, _, ecx, _] = answer(&mut host, 1, 0, true);
        assert_ne!(ecx & ECX_OSXSAVE, 0);
        let [eax, ..] = answer(&mut host, hypercall::CPUID_HYPERVISOR_LEAF, 0, false);
        assert_eq!(eax, hypercall::CPUID_HYPERVISOR_LEAF);
    }
}
