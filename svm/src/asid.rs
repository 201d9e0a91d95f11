//! Address-space identifiers: one per VM, so that the TLB keeps each VM's translations apart,
//! and the flushes that keep them right.
//!
//! Reference: APM 15.16 "TLB Control" (15.16.1 "TLB Flush": "the VMM can ... flush the TLB
//! entries of the guest's ASID" through TLB_CONTROL; ASID 0 is the host's), CPUID 8000_000AH
//! EBX ("NASID: number of address space identifiers").
//!
//! QEMU offers 16 ASIDs, so more VMs than 15 share them: VM `n` gets ASID `1 + n mod (NASID -
//! 1)`, and a VM whose ASID another VM used since it last ran starts with its ASID flushed.
//! Every change to a VM's nested page table, and every MOV to CR3 the hypervisor performs for
//! the guest, flushes that ASID before the VM runs again. QEMU does not model the TLB, so none
//! of this can be seen failing there: it is tested here, against the rules above.

use crate::vmcb::TlbControl;

/// The most VMs a lab runs (the kernel's limit), hence the most ASIDs ever handed out.
pub const MAX_VMS: usize = 64;

/// The ASID of VM `vm` on a CPU with `count` ASIDs (count ≥ 2: ASID 0 is the host's).
pub const fn assign(vm: u16, count: u32) -> u32 {
    let guest_asids = if count > 1 { count - 1 } else { 1 };
    1 + (vm as u32) % guest_asids
}

/// The TLB_CONTROL value that flushes one guest's translations: its ASID's alone where the CPU
/// can (FlushByAsid), else the whole TLB (the only other value such a CPU accepts).
pub const fn flush(flush_by_asid: bool) -> TlbControl {
    if flush_by_asid {
        TlbControl::FlushAsid
    } else {
        TlbControl::FlushAll
    }
}

/// Which VM last ran under each ASID.
#[derive(Debug, Clone)]
pub struct Owners {
    last: [Option<u16>; MAX_VMS + 1],
}

impl Default for Owners {
    fn default() -> Self {
        Self::new()
    }
}

impl Owners {
    /// No ASID used yet.
    pub const fn new() -> Self {
        Self {
            last: [None; MAX_VMS + 1],
        }
    }

    /// VM `vm` is about to run under `asid`: true when the TLB may hold another VM's
    /// translations for that ASID (another VM ran under it last, or it was never used here),
    /// so the entry must flush it.
    pub fn switch_in(&mut self, asid: u32, vm: u16) -> bool {
        let Some(slot) = self.last.get_mut(asid as usize) else {
            // Beyond the table (never assigned by `assign` for a lab's VMs): always flush.
            return true;
        };
        let flush = *slot != Some(vm);
        *slot = Some(vm);
        flush
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_vm_gets_an_asid_and_never_the_hosts() {
        // Bochs' ryzen model: 32,768 ASIDs, one per VM.
        let asids: Vec<u32> = (0..64).map(|vm| assign(vm, 32_768)).collect();
        assert_eq!(asids, (1..=64).collect::<Vec<u32>>());
        // QEMU: 16, so VMs 0 and 15 share ASID 1.
        assert_eq!(assign(0, 16), 1);
        assert_eq!(assign(14, 16), 15);
        assert_eq!(assign(15, 16), 1);
        for vm in 0..64 {
            for count in [2, 3, 16, 256] {
                let asid = assign(vm, count);
                assert!(asid >= 1 && asid < count, "vm {vm}, {count} ASIDs: {asid}");
            }
        }
        // A CPU reporting fewer than two: ASID 1 all the same (never 0).
        assert_eq!(assign(5, 0), 1);
    }

    #[test]
    fn a_shared_asid_is_flushed_when_its_vm_changes() {
        let mut owners = Owners::new();
        let (a, b) = (0u16, 15u16);
        let asid = assign(a, 16);
        assert_eq!(asid, assign(b, 16));
        assert!(owners.switch_in(asid, a), "first use");
        assert!(
            !owners.switch_in(asid, a),
            "same VM again: its translations"
        );
        assert!(owners.switch_in(asid, b), "another VM under the same ASID");
        assert!(owners.switch_in(asid, a), "and back");
        // VMs with ASIDs of their own never flush each other.
        let c = 3u16;
        assert!(owners.switch_in(assign(c, 16), c));
        assert!(!owners.switch_in(asid, a));
        assert!(!owners.switch_in(assign(c, 16), c));
        assert!(owners.switch_in(10_000, c), "an ASID outside the table");
    }

    #[test]
    fn flushes_use_the_asid_only_where_the_cpu_can() {
        assert_eq!(flush(true), TlbControl::FlushAsid);
        assert_eq!(flush(false), TlbControl::FlushAll);
        assert_eq!(TlbControl::FlushAll as u8, 1);
        assert_eq!(TlbControl::FlushAsid as u8, 3);
    }
}
