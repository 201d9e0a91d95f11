//! CPUID as the guest sees it: the host's answers, with VMX and x2APIC hidden, the hypervisor
//! bit set, and Carousel's signature at the hypervisor leaf.

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

/// The guest's CPUID answer for `leaf`/`subleaf`, from the host's.
pub fn answer(host: &mut impl Host, leaf: u32, subleaf: u32) -> [u32; 4] {
    match leaf {
        1 => {
            let [eax, ebx, ecx, edx] = host.cpuid(1, 0);
            [
                eax,
                ebx,
                (ecx & !(ECX_VMX | ECX_X2APIC)) | ECX_HYPERVISOR,
                edx,
            ]
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
    let regs = cx.vm.vcpu.registers();
    let (leaf, subleaf) = (regs.rax as u32, regs.rcx as u32);
    let [eax, ebx, ecx, edx] = answer(cx.host, leaf, subleaf);
    let regs = cx.vm.vcpu.registers();
    regs.rax = u64::from(eax);
    regs.rbx = u64::from(ebx);
    regs.rcx = u64::from(ecx);
    regs.rdx = u64::from(edx);
    Ok(())
}
