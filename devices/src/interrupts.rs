//! What joins the interrupt models: 256-bit vector sets, interrupt destinations, the path from a
//! device's IRQ pin through the [`IoApic`] to the [`Lapic`], and the guard on which vectors a
//! guest has asked for.
//!
//! XV6-CONTRACT §9: a vector the guest did not program panics xv6 ("unexpected trap") or kills a
//! process, and two vectors it did program must still never arrive: 47 (its handler sends no EOI,
//! so the in-service bit would block vectors 32–47 for good) and 51 (the LVT error vector, which
//! has no handler). [`programmed_vectors`] is the set of vectors this pair of models can raise by
//! itself: the LVT timer and the unmasked I/O APIC pins routed to this local APIC. The LVT error,
//! LINT0/LINT1, thermal and performance entries never deliver here, so 51 is not in it, and xv6
//! programs no source for 47.

use core::fmt;

use crate::ioapic::{IoApic, REDIRECTION_ENTRIES};
use crate::lapic::{Lapic, RaiseError};

/// Vectors 0–31 are the processor's exceptions; the local APIC rejects 0–15 outright
/// (SDM 11.5.3 "Error Handling": "Received Illegal Vector").
pub const FIRST_LEGAL_VECTOR: u8 = 16;

/// A set of interrupt vectors 0–255, laid out like the local APIC's IRR / ISR / TMR: bit `v % 32`
/// of word `v / 32` stands for vector `v`.
#[derive(Clone, Copy, Default, PartialEq, Eq)]
pub struct VectorSet([u32; 8]);

impl VectorSet {
    /// The set with no vector in it.
    pub const fn new() -> Self {
        Self([0; 8])
    }

    /// `vector` is in the set.
    pub const fn contains(&self, vector: u8) -> bool {
        self.0[vector as usize / 32] & (1 << (vector % 32)) != 0
    }

    /// Adds `vector`; `true` if it was not in the set before.
    pub fn insert(&mut self, vector: u8) -> bool {
        let fresh = !self.contains(vector);
        self.0[usize::from(vector) / 32] |= 1 << (vector % 32);
        fresh
    }

    /// Takes `vector` out; `true` if it was in the set.
    pub fn remove(&mut self, vector: u8) -> bool {
        let present = self.contains(vector);
        self.0[usize::from(vector) / 32] &= !(1 << (vector % 32));
        present
    }

    /// The highest vector in the set, which the local APIC serves first.
    pub fn highest(&self) -> Option<u8> {
        let (word, bits) = self
            .0
            .iter()
            .enumerate()
            .rev()
            .find(|(_, &bits)| bits != 0)?;
        Some((word * 32 + 31 - bits.leading_zeros() as usize) as u8)
    }

    /// The set holds no vector.
    pub fn is_empty(&self) -> bool {
        self.0 == [0; 8]
    }

    /// How many vectors the set holds.
    pub fn len(&self) -> usize {
        self.0.iter().map(|bits| bits.count_ones() as usize).sum()
    }

    /// Word `index` (0–7) of the register view: vectors `32 * index` to `32 * index + 31`.
    pub fn word(&self, index: usize) -> u32 {
        self.0[index]
    }

    /// The vectors in the set, lowest first.
    pub fn iter(&self) -> impl Iterator<Item = u8> + '_ {
        (0..=u8::MAX).filter(|&vector| self.contains(vector))
    }
}

impl fmt::Debug for VectorSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

/// Where an interrupt message goes: the destination field of an I/O APIC redirection entry,
/// read in the mode its destination-mode bit selects (SDM 11.6.2 "Determining IPI Destination").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Destination {
    /// The local APIC whose ID matches; 0xFF reaches every local APIC.
    Physical(u8),
    /// The local APICs whose logical destination register matches, in the flat or cluster model
    /// their destination format register selects.
    Logical(u8),
}

/// What became of one IRQ edge sent through [`deliver_irq`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqDelivery {
    /// The vector is now pending in the local APIC's IRR.
    Raised(u8),
    /// The vector was already pending; this edge merged into it.
    AlreadyPending(u8),
    /// The pin is masked, not edge-triggered fixed / lowest-priority, out of range, or routed to
    /// another local APIC: no interrupt. (xv6 relies on this: no IRQ 4 before uartinit.)
    NotRouted,
    /// The local APIC refused the vector.
    Rejected(RaiseError),
}

/// A device raised I/O APIC pin `irq` (a rising edge): route it and raise the vector in `lapic`
/// if the guest's programming of both models says it arrives there.
pub fn deliver_irq(irq: u8, ioapic: &mut IoApic, lapic: &mut Lapic) -> IrqDelivery {
    let Some(route) = ioapic.assert_irq(irq) else {
        return IrqDelivery::NotRouted;
    };
    if !lapic.accepts(route.destination) {
        return IrqDelivery::NotRouted;
    }
    match lapic.raise(route.vector) {
        Ok(true) => IrqDelivery::Raised(route.vector),
        Ok(false) => IrqDelivery::AlreadyPending(route.vector),
        Err(error) => IrqDelivery::Rejected(error),
    }
}

/// The vectors `lapic` can receive from its own sources and from `ioapic` as the guest has
/// programmed them right now: the LVT timer vector if unmasked, and the vector of every unmasked,
/// edge-triggered, fixed or lowest-priority I/O APIC pin whose destination `lapic` accepts.
/// Empty while `lapic` is software-disabled. Vectors below [`FIRST_LEGAL_VECTOR`] are never in it.
///
/// A check for the hypervisor and its tests: [`Lapic::raise`] is only ever reached through these
/// sources, so a vector that [`Lapic::pending_vector`] offers and this set lacks means the guest
/// reprogrammed an entry after raising it (still legal on hardware) or a hypervisor bug.
pub fn programmed_vectors(lapic: &Lapic, ioapic: &IoApic) -> VectorSet {
    let mut vectors = VectorSet::new();
    if !lapic.apic_enabled() {
        return vectors;
    }
    let pins = (0..REDIRECTION_ENTRIES as u8)
        .filter_map(|irq| ioapic.entry(irq)?.route())
        .filter(|route| lapic.accepts(route.destination))
        .map(|route| route.vector);
    for vector in lapic.timer_vector().into_iter().chain(pins) {
        if vector >= FIRST_LEGAL_VECTOR {
            vectors.insert(vector);
        }
    }
    vectors
}

/// `vector` is one the guest has programmed a live source for (see [`programmed_vectors`]).
pub fn is_injectable(vector: u8, lapic: &Lapic, ioapic: &IoApic) -> bool {
    programmed_vectors(lapic, ioapic).contains(vector)
}

#[cfg(test)]
mod tests {
    use alloc::collections::BTreeSet;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;
    use crate::ioapic::tests::{ioapicenable, xv6_ioapicinit};
    use crate::lapic::tests::{xv6_lapic, T0};

    #[test]
    fn vector_set_basics() {
        let mut set = VectorSet::new();
        assert!(set.is_empty());
        assert_eq!(set.highest(), None);
        assert!(set.insert(32));
        assert!(!set.insert(32));
        assert!(set.insert(255));
        assert!(set.insert(0));
        assert_eq!(set.highest(), Some(255));
        assert_eq!(set.len(), 3);
        assert_eq!(set.word(1), 1);
        assert_eq!(set.word(7), 1 << 31);
        assert!(set.remove(255));
        assert!(!set.remove(255));
        assert_eq!(set.highest(), Some(32));
        assert_eq!(set.iter().collect::<Vec<_>>(), [0, 32]);
        assert_eq!(alloc::format!("{set:?}"), "{0, 32}");
    }

    #[test]
    fn xv6_programming_makes_only_32_33_36_46_injectable() {
        let mut lapic = xv6_lapic();
        let mut ioapic = xv6_ioapicinit();
        for irq in [1, 4, 14] {
            ioapicenable(&mut ioapic, irq, 0);
        }
        let injectable = programmed_vectors(&lapic, &ioapic);
        assert_eq!(injectable.iter().collect::<Vec<_>>(), [32, 33, 36, 46]);
        for never in [2, 39, 47, 51, 63, 64] {
            assert!(!is_injectable(never, &lapic, &ioapic), "vector {never}");
        }
        // Software-disabling the local APIC masks the timer and stops everything.
        lapic.write(crate::lapic::SVR, 0x3F, T0);
        assert!(programmed_vectors(&lapic, &ioapic).is_empty());
    }

    #[test]
    fn uart_irq_arrives_only_after_uartinit_unmasks_it() {
        let mut lapic = xv6_lapic();
        let mut ioapic = xv6_ioapicinit();
        assert_eq!(
            deliver_irq(4, &mut ioapic, &mut lapic),
            IrqDelivery::NotRouted
        );
        assert_eq!(lapic.pending_vector(), None);
        ioapic.write(crate::ioapic::IOREGSEL, 0x18);
        ioapic.write(crate::ioapic::IOWIN, 36);
        ioapic.write(crate::ioapic::IOREGSEL, 0x19);
        ioapic.write(crate::ioapic::IOWIN, 0);
        assert_eq!(
            deliver_irq(4, &mut ioapic, &mut lapic),
            IrqDelivery::Raised(36)
        );
        assert_eq!(
            deliver_irq(4, &mut ioapic, &mut lapic),
            IrqDelivery::AlreadyPending(36)
        );
        assert_eq!(lapic.pending_vector(), Some(36));
        // Routed to APIC 1, which this vCPU is not.
        ioapic.write(crate::ioapic::IOWIN, 1 << 24);
        assert_eq!(
            deliver_irq(4, &mut ioapic, &mut lapic),
            IrqDelivery::NotRouted
        );
        // A guest-programmed vector below 16 is refused by the local APIC.
        ioapic.write(crate::ioapic::IOWIN, 0);
        ioapic.write(crate::ioapic::IOREGSEL, 0x18);
        ioapic.write(crate::ioapic::IOWIN, 7);
        assert_eq!(
            deliver_irq(4, &mut ioapic, &mut lapic),
            IrqDelivery::Rejected(RaiseError::IllegalVector(7))
        );
        assert!(!is_injectable(7, &lapic, &ioapic));
    }

    proptest! {
        /// The set agrees with a `BTreeSet` model on every operation.
        #[test]
        fn vector_set_matches_a_model(
            ops in prop::collection::vec((any::<bool>(), any::<u8>()), 0..200),
        ) {
            let mut set = VectorSet::new();
            let mut model = BTreeSet::new();
            for (insert, vector) in ops {
                if insert {
                    prop_assert_eq!(set.insert(vector), model.insert(vector));
                } else {
                    prop_assert_eq!(set.remove(vector), model.remove(&vector));
                }
                prop_assert_eq!(set.highest(), model.last().copied());
                prop_assert_eq!(set.len(), model.len());
                prop_assert!(set.iter().eq(model.iter().copied()));
            }
        }
    }
}
