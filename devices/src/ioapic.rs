//! An I/O APIC with 24 redirection entries, behind its two MMIO registers, after the Intel 82093AA
//! I/O Advanced Programmable Interrupt Controller datasheet (order no. 290566-001), section 3.
//!
//! The guest selects a register by writing its index to IOREGSEL (offset 0x00) and reads or writes
//! it through IOWIN (offset 0x10). A device raises pin `irq` with [`IoApic::assert_irq`], which
//! answers with the [`Route`] the guest programmed, or `None` while the pin is masked: the
//! hypervisor delivers nothing the guest has not unmasked (XV6-CONTRACT §4: no UART interrupt
//! before uartinit).
//!
//! Simplifications, invisible to xv6 (which uses edge-triggered fixed delivery only and never
//! reads an entry back):
//! - Only edge-triggered entries deliver. A level-triggered entry is stored and read back, but
//!   asserting its pin delivers nothing and is counted: modelling remote IRR needs EOI messages
//!   from the local APIC, which this pair of models does not send.
//! - Only fixed and lowest-priority delivery modes deliver (one vCPU: lowest priority is the one
//!   local APIC the destination names). SMI, NMI, INIT and ExtINT pins deliver nothing, counted.
//! - Delivery status (bit 12) and remote IRR (bit 14) always read 0.
//! - The ID keeps all of bits 31:24 (the 82093AA implements 27:24); the arbitration register
//!   reads the same ID.
//! - There is no EOI register (offset 0x40 appears with version 0x20 parts): it is unimplemented.

use crate::interrupts::Destination;

/// I/O Register Select: the index of the register IOWIN reaches, bits 7:0.
pub const IOREGSEL: u64 = 0x00;
/// I/O Window: the register IOREGSEL selects.
pub const IOWIN: u64 = 0x10;

/// Register index: IOAPICID, the I/O APIC ID in bits 31:24.
pub const IOAPICID: u32 = 0x00;
/// Register index: IOAPICVER, version and maximum redirection entry.
pub const IOAPICVER: u32 = 0x01;
/// Register index: IOAPICARB, arbitration ID in bits 31:24 (read-only).
pub const IOAPICARB: u32 = 0x02;
/// Register index: IOREDTBL0 low dword; entry `n` is at `0x10 + 2n` (low) and `0x11 + 2n` (high).
pub const IOREDTBL: u32 = 0x10;

/// Redirection entries (pins).
pub const REDIRECTION_ENTRIES: usize = 24;
/// IOAPICVER value: maximum redirection entry 23 (bits 23:16), version 0x20; what QEMU reports
/// (XV6-CONTRACT §4).
pub const VERSION_VALUE: u32 = 0x0017_0020;

/// Redirection entry: interrupt vector, bits 7:0.
pub const ENTRY_VECTOR: u64 = 0xFF;
/// Redirection entry: delivery mode, bits 10:8.
pub const ENTRY_DELIVERY_MODE: u64 = 0x700;
/// Redirection entry: destination mode, bit 11 (1 = logical).
pub const ENTRY_LOGICAL: u64 = 1 << 11;
/// Redirection entry: delivery status, bit 12 (read-only; always 0 here).
pub const ENTRY_DELIVERY_STATUS: u64 = 1 << 12;
/// Redirection entry: interrupt input pin polarity, bit 13 (1 = active low).
pub const ENTRY_ACTIVE_LOW: u64 = 1 << 13;
/// Redirection entry: remote IRR, bit 14 (read-only; always 0 here).
pub const ENTRY_REMOTE_IRR: u64 = 1 << 14;
/// Redirection entry: trigger mode, bit 15 (1 = level).
pub const ENTRY_LEVEL_TRIGGERED: u64 = 1 << 15;
/// Redirection entry: interrupt mask, bit 16.
pub const ENTRY_MASKED: u64 = 1 << 16;
/// Redirection entry: destination field, bits 63:56.
pub const ENTRY_DESTINATION_SHIFT: u32 = 56;

/// Redirection entry bits the guest can write: all but delivery status, remote IRR and the
/// reserved bits 55:17.
const ENTRY_WRITABLE: u64 = 0xFF00_0000_0001_AFFF;
/// ID and arbitration registers: bits 31:24.
const ID_SHIFT: u32 = 24;

/// A redirection entry's delivery mode (bits 10:8).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryMode {
    /// 000: the vector goes to the destination.
    Fixed,
    /// 001: the vector goes to the lowest-priority processor among the destination.
    LowestPriority,
    /// 010: system management interrupt.
    Smi,
    /// 100: non-maskable interrupt.
    Nmi,
    /// 101: INIT.
    Init,
    /// 111: external (8259-style) interrupt.
    ExtInt,
    /// 011 and 110: reserved.
    Reserved(u8),
}

/// Where an unmasked, edge-triggered pin's interrupt goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    /// The vector to raise.
    pub vector: u8,
    /// The local APIC(s) it is for.
    pub destination: Destination,
}

/// One redirection table entry, as a typed view of its 64 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedirectionEntry(u64);

impl RedirectionEntry {
    /// The entry at power-on: masked, everything else 0.
    pub const RESET: Self = Self(ENTRY_MASKED);

    /// The raw 64 bits.
    pub const fn bits(self) -> u64 {
        self.0
    }

    /// Interrupt vector.
    pub const fn vector(self) -> u8 {
        (self.0 & ENTRY_VECTOR) as u8
    }

    /// Delivery mode.
    pub const fn delivery_mode(self) -> DeliveryMode {
        match ((self.0 & ENTRY_DELIVERY_MODE) >> 8) as u8 {
            0b000 => DeliveryMode::Fixed,
            0b001 => DeliveryMode::LowestPriority,
            0b010 => DeliveryMode::Smi,
            0b100 => DeliveryMode::Nmi,
            0b101 => DeliveryMode::Init,
            0b111 => DeliveryMode::ExtInt,
            reserved => DeliveryMode::Reserved(reserved),
        }
    }

    /// The destination field, read in the entry's destination mode.
    pub const fn destination(self) -> Destination {
        let field = (self.0 >> ENTRY_DESTINATION_SHIFT) as u8;
        if self.0 & ENTRY_LOGICAL != 0 {
            Destination::Logical(field)
        } else {
            Destination::Physical(field)
        }
    }

    /// The interrupt mask is set.
    pub const fn masked(self) -> bool {
        self.0 & ENTRY_MASKED != 0
    }

    /// The pin is level-triggered.
    pub const fn level_triggered(self) -> bool {
        self.0 & ENTRY_LEVEL_TRIGGERED != 0
    }

    /// Where an edge on this pin goes: `Some` for an unmasked, edge-triggered entry with fixed or
    /// lowest-priority delivery, `None` otherwise.
    pub const fn route(self) -> Option<Route> {
        let deliverable = matches!(
            self.delivery_mode(),
            DeliveryMode::Fixed | DeliveryMode::LowestPriority
        );
        if self.masked() || self.level_triggered() || !deliverable {
            None
        } else {
            Some(Route {
                vector: self.vector(),
                destination: self.destination(),
            })
        }
    }
}

/// Events the model counts: guest mistakes and pins it chose not to deliver.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IoApicCounters {
    /// Accesses that were not a 32-bit access to IOREGSEL or IOWIN. Reads returned 0, writes
    /// were ignored.
    pub unsupported_accesses: u64,
    /// IOWIN accesses while IOREGSEL selected no register. Reads returned 0.
    pub unknown_registers: u64,
    /// Pin assertions that found the entry masked.
    pub masked_irqs: u64,
    /// Pin assertions on an unmasked entry this model does not deliver (level-triggered, or not
    /// fixed / lowest priority), and on pins past the last entry.
    pub undeliverable_irqs: u64,
}

/// One I/O APIC: the whole state, with no I/O of its own.
#[derive(Clone, Debug)]
pub struct IoApic {
    /// IOAPICID bits 31:24.
    id: u8,
    /// IOREGSEL.
    select: u8,
    /// The redirection table.
    redirection: [RedirectionEntry; REDIRECTION_ENTRIES],
    /// Counted events.
    counters: IoApicCounters,
}

impl IoApic {
    /// An I/O APIC with ID `id` at power-on: every pin masked.
    pub const fn new(id: u8) -> Self {
        Self {
            id,
            select: 0,
            redirection: [RedirectionEntry::RESET; REDIRECTION_ENTRIES],
            counters: IoApicCounters {
                unsupported_accesses: 0,
                unknown_registers: 0,
                masked_irqs: 0,
                undeliverable_irqs: 0,
            },
        }
    }

    /// The guest reads the 32-bit register at `offset` in the I/O APIC page.
    pub fn read(&mut self, offset: u64) -> u32 {
        match offset {
            IOREGSEL => u32::from(self.select),
            IOWIN => match u32::from(self.select) {
                IOAPICID | IOAPICARB => u32::from(self.id) << ID_SHIFT,
                IOAPICVER => VERSION_VALUE,
                _ => match self.selected_entry() {
                    Some((pin, true)) => (self.redirection[pin].0 >> 32) as u32,
                    Some((pin, false)) => self.redirection[pin].0 as u32,
                    None => {
                        self.counters.unknown_registers += 1;
                        0
                    }
                },
            },
            _ => {
                self.counters.unsupported_accesses += 1;
                0
            }
        }
    }

    /// The guest writes `value` to the 32-bit register at `offset` in the I/O APIC page.
    pub fn write(&mut self, offset: u64, value: u32) {
        match offset {
            // 82093AA 3.1.1: bits 7:0 select the register, 31:8 are reserved.
            IOREGSEL => self.select = value as u8,
            IOWIN => match u32::from(self.select) {
                IOAPICID => self.id = (value >> ID_SHIFT) as u8,
                IOAPICVER | IOAPICARB => {}
                _ => match self.selected_entry() {
                    Some((pin, high)) => {
                        let entry = &mut self.redirection[pin];
                        let (shift, keep) = if high {
                            (32, 0x0000_0000_FFFF_FFFF)
                        } else {
                            (0, 0xFFFF_FFFF_0000_0000)
                        };
                        let bits = (entry.0 & keep) | (u64::from(value) << shift);
                        entry.0 = bits & ENTRY_WRITABLE;
                    }
                    None => self.counters.unknown_registers += 1,
                },
            },
            _ => self.counters.unsupported_accesses += 1,
        }
    }

    /// A guest read of `size` bytes at `offset`: 4-byte accesses go to [`Self::read`]; any other
    /// width reads 0 and is counted.
    pub fn read_sized(&mut self, offset: u64, size: u8) -> u64 {
        if size == 4 {
            u64::from(self.read(offset))
        } else {
            self.counters.unsupported_accesses += 1;
            0
        }
    }

    /// A guest write of `size` bytes at `offset`: 4-byte accesses go to [`Self::write`]; any
    /// other width is ignored and counted.
    pub fn write_sized(&mut self, offset: u64, size: u8, value: u64) {
        if size == 4 {
            self.write(offset, value as u32);
        } else {
            self.counters.unsupported_accesses += 1;
        }
    }

    /// A device raised pin `irq` (a rising edge): the route the guest programmed for it, or `None`
    /// when the pin is masked, not deliverable by this model, or past the last entry.
    pub fn assert_irq(&mut self, irq: u8) -> Option<Route> {
        let Some(entry) = self.entry(irq) else {
            self.counters.undeliverable_irqs += 1;
            return None;
        };
        let route = entry.route();
        if route.is_none() {
            if entry.masked() {
                self.counters.masked_irqs += 1;
            } else {
                self.counters.undeliverable_irqs += 1;
            }
        }
        route
    }

    /// Redirection entry `irq`, if the table has one.
    pub fn entry(&self, irq: u8) -> Option<RedirectionEntry> {
        self.redirection.get(usize::from(irq)).copied()
    }

    /// The I/O APIC ID.
    pub fn id(&self) -> u8 {
        self.id
    }

    /// Events counted so far.
    pub fn counters(&self) -> IoApicCounters {
        self.counters
    }

    /// The entry IOREGSEL selects, as (pin, high dword), if it selects one.
    fn selected_entry(&self) -> Option<(usize, bool)> {
        let index = usize::from(self.select).checked_sub(IOREDTBL as usize)?;
        let pin = index / 2;
        (pin < REDIRECTION_ENTRIES).then_some((pin, index % 2 == 1))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Selects register `index`, then reads it through IOWIN.
    fn read_register(ioapic: &mut IoApic, index: u32) -> u32 {
        ioapic.write(IOREGSEL, index);
        ioapic.read(IOWIN)
    }

    /// Selects register `index`, then writes it through IOWIN.
    fn write_register(ioapic: &mut IoApic, index: u32, value: u32) {
        ioapic.write(IOREGSEL, index);
        ioapic.write(IOWIN, value);
    }

    /// xv6's ioapicenable(irq, cpu).
    pub(crate) fn ioapicenable(ioapic: &mut IoApic, irq: u32, cpu: u32) {
        write_register(ioapic, IOREDTBL + 2 * irq, 32 + irq);
        write_register(ioapic, IOREDTBL + 2 * irq + 1, cpu << 24);
    }

    /// xv6's ioapicinit on an I/O APIC with ID 0 (XV6-CONTRACT §4).
    pub(crate) fn xv6_ioapicinit() -> IoApic {
        let mut ioapic = IoApic::new(0);
        let max_intr = (read_register(&mut ioapic, IOAPICVER) >> 16) & 0xFF;
        assert_eq!(max_intr, 23);
        assert_eq!(
            read_register(&mut ioapic, IOAPICID) >> 24,
            0,
            "matches the MP table"
        );
        for i in 0..=max_intr {
            write_register(&mut ioapic, IOREDTBL + 2 * i, 0x10000 | (32 + i));
            write_register(&mut ioapic, IOREDTBL + 2 * i + 1, 0);
        }
        ioapic
    }

    #[test]
    fn power_on_masks_every_pin() {
        let mut ioapic = IoApic::new(2);
        for irq in 0..REDIRECTION_ENTRIES as u8 {
            assert_eq!(ioapic.entry(irq), Some(RedirectionEntry::RESET));
            assert_eq!(ioapic.assert_irq(irq), None);
        }
        assert_eq!(read_register(&mut ioapic, IOAPICID), 2 << 24);
        assert_eq!(read_register(&mut ioapic, IOAPICARB), 2 << 24);
        assert_eq!(read_register(&mut ioapic, IOAPICVER), 0x0017_0020);
        assert_eq!(read_register(&mut ioapic, IOREDTBL), 0x10000);
        assert_eq!(ioapic.counters().masked_irqs, 24);
    }

    #[test]
    fn xv6_ioapicinit_then_enable_routes_33_36_46_to_apic_0() {
        let mut ioapic = xv6_ioapicinit();
        for irq in 0..REDIRECTION_ENTRIES as u8 {
            assert_eq!(
                ioapic.assert_irq(irq),
                None,
                "irq {irq} masked by ioapicinit"
            );
        }
        for irq in [1, 4, 14] {
            ioapicenable(&mut ioapic, irq, 0);
        }
        for (irq, vector) in [(1, 33), (4, 36), (14, 46)] {
            assert_eq!(
                ioapic.assert_irq(irq),
                Some(Route {
                    vector,
                    destination: Destination::Physical(0)
                })
            );
        }
        assert_eq!(ioapic.assert_irq(15), None, "47 stays masked");
        assert_eq!(
            ioapic.counters(),
            IoApicCounters {
                masked_irqs: 25,
                ..IoApicCounters::default()
            }
        );
    }

    #[test]
    fn masked_irq_is_not_routed() {
        let mut ioapic = xv6_ioapicinit();
        ioapicenable(&mut ioapic, 4, 0);
        write_register(&mut ioapic, IOREDTBL + 8, 36 | 0x10000);
        assert_eq!(ioapic.assert_irq(4), None);
        assert_eq!(ioapic.counters().masked_irqs, 1);
    }

    #[test]
    fn ioregsel_out_of_range_reads_zero() {
        let mut ioapic = xv6_ioapicinit();
        for index in [0x03, 0x0F, 0x40, 0x41, 0xFF, 0x1240] {
            assert_eq!(read_register(&mut ioapic, index), 0, "index {index:#x}");
            ioapic.write(IOWIN, 0xFFFF_FFFF);
        }
        assert_eq!(ioapic.read(IOREGSEL), 0x40, "IOREGSEL keeps bits 7:0");
        assert_eq!(ioapic.counters().unknown_registers, 12);
        // The last entry's high dword is 0x3F; 0x40 was past the table.
        assert_eq!(read_register(&mut ioapic, 0x3F), 0);
        assert_eq!(read_register(&mut ioapic, 0x3E), 0x10000 | 55);
    }

    #[test]
    fn entries_read_back_without_read_only_bits() {
        let mut ioapic = IoApic::new(0);
        write_register(&mut ioapic, IOREDTBL + 6, 0xFFFF_FFFF);
        write_register(&mut ioapic, IOREDTBL + 7, 0xFFFF_FFFF);
        assert_eq!(read_register(&mut ioapic, IOREDTBL + 6), 0x0001_AFFF);
        assert_eq!(read_register(&mut ioapic, IOREDTBL + 7), 0xFF00_0000);
        let entry = ioapic.entry(3).unwrap();
        assert_eq!(entry.bits(), 0xFF00_0000_0001_AFFF);
        assert_eq!(entry.delivery_mode(), DeliveryMode::ExtInt);
        assert_eq!(entry.destination(), Destination::Logical(0xFF));
        assert!(entry.masked() && entry.level_triggered());
        // Writing one dword keeps the other.
        write_register(&mut ioapic, IOREDTBL + 6, 40);
        assert_eq!(ioapic.entry(3).unwrap().bits(), 0xFF00_0000_0000_0028);
        // The ID is writable, VER and ARB are not.
        write_register(&mut ioapic, IOAPICID, 0x0500_0000);
        write_register(&mut ioapic, IOAPICVER, 0);
        write_register(&mut ioapic, IOAPICARB, 0);
        assert_eq!(ioapic.id(), 5);
        assert_eq!(read_register(&mut ioapic, IOAPICVER), VERSION_VALUE);
        assert_eq!(read_register(&mut ioapic, IOAPICARB), 5 << 24);
    }

    #[test]
    fn only_edge_triggered_fixed_or_lowest_priority_pins_deliver() {
        let mut ioapic = IoApic::new(0);
        let cases = [
            (0x0000_0030, Some(0x30)),
            (0x0000_0130, Some(0x30)),
            (0x0000_8030, None),
            (0x0000_0230, None),
            (0x0000_0430, None),
            (0x0000_0530, None),
            (0x0000_0730, None),
            (0x0000_0330, None),
            (0x0000_2030, Some(0x30)),
        ];
        for (low, vector) in cases {
            write_register(&mut ioapic, IOREDTBL, low);
            assert_eq!(
                ioapic.assert_irq(0).map(|route| route.vector),
                vector,
                "entry {low:#x}"
            );
        }
        assert_eq!(ioapic.counters().undeliverable_irqs, 6);
        assert_eq!(ioapic.assert_irq(24), None);
        assert_eq!(ioapic.assert_irq(255), None);
        assert_eq!(ioapic.counters().undeliverable_irqs, 8);
        write_register(&mut ioapic, IOREDTBL + 1, 0x0300_0000);
        write_register(&mut ioapic, IOREDTBL, 0x830);
        assert_eq!(
            ioapic.assert_irq(0),
            Some(Route {
                vector: 0x30,
                destination: Destination::Logical(3)
            })
        );
    }

    #[test]
    fn unsupported_accesses_are_counted() {
        let mut ioapic = xv6_ioapicinit();
        assert_eq!(ioapic.read(0x04), 0);
        assert_eq!(ioapic.read(0x20), 0);
        assert_eq!(ioapic.read(0x40), 0, "no EOI register");
        ioapic.write(0x40, 0x21);
        assert_eq!(ioapic.read_sized(IOREGSEL, 1), 0);
        ioapic.write_sized(IOREGSEL, 2, 0x12);
        ioapic.write_sized(IOREGSEL, 4, IOREDTBL.into());
        assert_eq!(ioapic.read_sized(IOWIN, 4), 0x10020);
        assert_eq!(ioapic.counters().unsupported_accesses, 6);
    }

    /// One step of the guest or a device.
    #[derive(Clone, Debug)]
    enum Step {
        Read(u64),
        Write(u64, u32),
        Select(u32),
        Assert(u8),
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            3 => prop_oneof![Just(IOREGSEL), Just(IOWIN), 0u64..0x100].prop_map(Step::Read),
            3 => (prop_oneof![Just(IOWIN), 0u64..0x100], any::<u32>())
                .prop_map(|(offset, value)| Step::Write(offset, value)),
            3 => prop_oneof![0u32..0x40, any::<u32>()].prop_map(Step::Select),
            3 => prop_oneof![0u8..24, any::<u8>()].prop_map(Step::Assert),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Random traffic never panics; a pin routes exactly when its entry is unmasked,
        /// edge-triggered and fixed or lowest priority, with the entry's vector and destination;
        /// read-only bits always read 0.
        #[test]
        fn random_traffic_keeps_the_invariants(steps in prop::collection::vec(step(), 0..96)) {
            let mut ioapic = IoApic::new(0);
            for step in steps {
                match step {
                    Step::Read(offset) => {
                        ioapic.read(offset);
                    }
                    Step::Write(offset, value) => ioapic.write(offset, value),
                    Step::Select(index) => ioapic.write(IOREGSEL, index),
                    Step::Assert(irq) => {
                        let entry = ioapic.entry(irq);
                        let route = ioapic.assert_irq(irq);
                        match entry {
                            None => prop_assert_eq!(route, None),
                            Some(entry) => {
                                let deliverable = !entry.masked()
                                    && !entry.level_triggered()
                                    && matches!(
                                        entry.delivery_mode(),
                                        DeliveryMode::Fixed | DeliveryMode::LowestPriority
                                    );
                                prop_assert_eq!(route.is_some(), deliverable);
                                if let Some(route) = route {
                                    prop_assert_eq!(route.vector, entry.vector());
                                    prop_assert_eq!(route.destination, entry.destination());
                                }
                            }
                        }
                    }
                }
                for irq in 0..REDIRECTION_ENTRIES as u8 {
                    let bits = ioapic.entry(irq).unwrap().bits();
                    prop_assert_eq!(bits & (ENTRY_DELIVERY_STATUS | ENTRY_REMOTE_IRR), 0);
                    prop_assert_eq!(bits & !ENTRY_WRITABLE, 0);
                }
            }
        }
    }
}
