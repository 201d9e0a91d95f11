//! Events for the guest: the EVENTINJ field the hypervisor writes, and EXITINTINFO, the event
//! whose delivery an exit interrupted, which has the same layout.
//!
//! Reference: APM 15.20 "Event Injection" (Figure 15-4 "EVENTINJ Field in the VMCB"), 15.7.2
//! "Intercepts During IDT Interrupt Delivery".

/// Bit 31: the field holds an event.
const VALID: u64 = 1 << 31;
/// Bit 11: the event pushes an error code (bits 63:32).
const ERROR_CODE_VALID: u64 = 1 << 11;
/// Bits 10:8: the event's type.
const TYPE_SHIFT: u32 = 8;

/// EVENTINJ.TYPE.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// An external or virtual interrupt (INTR).
    Interrupt = 0,
    /// A non-maskable interrupt; the vector is ignored.
    Nmi = 2,
    /// An exception (fault or trap).
    Exception = 3,
    /// A software interrupt (INTn).
    SoftwareInterrupt = 4,
}

impl EventType {
    const fn from_raw(raw: u64) -> Option<Self> {
        Some(match raw {
            0 => Self::Interrupt,
            2 => Self::Nmi,
            3 => Self::Exception,
            4 => Self::SoftwareInterrupt,
            _ => return None,
        })
    }
}

/// One event, as EVENTINJ and EXITINTINFO hold it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventInjection {
    pub vector: u8,
    pub kind: EventType,
    /// The error code the event pushes, if it pushes one.
    pub error_code: Option<u32>,
}

impl EventInjection {
    /// The EVENTINJ value that injects this event.
    pub const fn to_raw(self) -> u64 {
        let code = match self.error_code {
            Some(code) => (code as u64) << 32 | ERROR_CODE_VALID,
            None => 0,
        };
        VALID | code | (self.kind as u64) << TYPE_SHIFT | self.vector as u64
    }

    /// The event a field holds, if its valid bit is set and its type is one the APM defines.
    /// Only the valid bit says whether there is an event: QEMU leaves the vector and type of
    /// the last delivered event in EXITINTINFO with the valid bit clear (QEMU-SVM.md).
    pub const fn from_raw(raw: u64) -> Option<Self> {
        if raw & VALID == 0 {
            return None;
        }
        let Some(kind) = EventType::from_raw((raw >> TYPE_SHIFT) & 7) else {
            return None;
        };
        Some(Self {
            vector: raw as u8,
            kind,
            error_code: if raw & ERROR_CODE_VALID != 0 {
                Some((raw >> 32) as u32)
            } else {
                None
            },
        })
    }
}

/// The event to inject again after an exit that interrupted its delivery (EXITINTINFO), if
/// one must be: interrupts, NMIs and exceptions are delivered again at the next VMRUN. A
/// software interrupt (INTn) or software exception (INT3, INTO) is not: RIP is still on the
/// instruction, which runs again and raises it again (re-injecting it as well would raise it
/// twice).
pub const fn reinjection(exit_int_info: u64) -> Option<EventInjection> {
    /// #BP and #OF: raised by INT3 and INTO.
    const BREAKPOINT: u8 = 3;
    const OVERFLOW: u8 = 4;
    match EventInjection::from_raw(exit_int_info) {
        Some(EventInjection {
            kind: EventType::SoftwareInterrupt,
            ..
        }) => None,
        Some(EventInjection {
            kind: EventType::Exception,
            vector: BREAKPOINT | OVERFLOW,
            ..
        }) => None,
        other => other,
    }
}

/// After a #VMEXIT: the interrupt still offered through V_IRQ
/// ([`crate::vmcb::Vmcb::offer_interrupt`]), and the event to inject through EVENTINJ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AfterExit {
    pub offered: Option<u8>,
    pub inject: Option<EventInjection>,
}

/// What to do after a #VMEXIT with the interrupt `offered` before it, V_IRQ as the exit left
/// it (`pending`: not yet taken) and `exit_int_info`. Each interrupt reaches the guest once:
/// - an external interrupt whose delivery the exit interrupted is offered again through
///   V_IRQ, never through EVENTINJ (see `offer_interrupt` for why), unless it is the offer
///   itself, still pending: then the offer stands and is not also re-injected (QEMU's TCG
///   leaves V_IRQ set when the delivery of an offer faults);
/// - QEMU records an interrupt it delivered from V_IRQ as an exception; a vector of 32 or
///   more can be nothing else but an interrupt, so it counts as one;
/// - an exception or NMI goes back into EVENTINJ, the offer (if not taken) standing beside it.
pub fn after_exit(offered: Option<u8>, pending: bool, exit_int_info: u64) -> AfterExit {
    /// Vectors 0 to 31 are the architecture's exceptions.
    const FIRST_INTERRUPT: u8 = 32;
    let still_offered = offered.filter(|_| pending);
    match reinjection(exit_int_info) {
        Some(EventInjection {
            vector,
            kind: EventType::Interrupt,
            ..
        }) => AfterExit {
            offered: Some(vector),
            inject: None,
        },
        Some(EventInjection {
            vector,
            kind: EventType::Exception,
            ..
        }) if vector >= FIRST_INTERRUPT => AfterExit {
            offered: Some(vector),
            inject: None,
        },
        other => AfterExit {
            offered: still_offered,
            inject: other,
        },
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn layout_of_figure_15_4() {
        let interrupt = EventInjection {
            vector: 0x20,
            kind: EventType::Interrupt,
            error_code: None,
        };
        assert_eq!(interrupt.to_raw(), 0x8000_0020);
        let gp = EventInjection {
            vector: 13,
            kind: EventType::Exception,
            error_code: Some(0),
        };
        assert_eq!(gp.to_raw(), 0x0000_0000_8000_0B0D);
        let pf = EventInjection {
            vector: 14,
            kind: EventType::Exception,
            error_code: Some(6),
        };
        assert_eq!(pf.to_raw(), 0x0000_0006_8000_0B0E);
        let nmi = EventInjection {
            vector: 2,
            kind: EventType::Nmi,
            error_code: None,
        };
        assert_eq!(nmi.to_raw(), 0x8000_0202);
    }

    #[test]
    fn each_offered_interrupt_reaches_the_guest_once() {
        let interrupt = |vector: u8| VALID | vector as u64;
        // QEMU's record of a V_IRQ it delivered: type exception, vector 46.
        let qemu_record = |vector: u8| VALID | 3 << TYPE_SHIFT | vector as u64;
        let page_fault = VALID | ERROR_CODE_VALID | 3 << TYPE_SHIFT | 14 | 6 << 32;
        let none = AfterExit {
            offered: None,
            inject: None,
        };
        let offer = |vector| AfterExit {
            offered: Some(vector),
            inject: None,
        };
        // Taken (V_IRQ cleared), nothing interrupted: done. Not taken yet: the offer stands.
        assert_eq!(after_exit(Some(0x2E), false, 0), none);
        assert_eq!(after_exit(Some(0x2E), true, 0), offer(0x2E));
        // QEMU's stale EXITINTINFO (valid bit clear) after a delivery is no event.
        assert_eq!(after_exit(Some(0x2E), false, 0x32E), none);
        // The offer's delivery faulted and QEMU left V_IRQ set: the offer alone stands.
        assert_eq!(after_exit(Some(0x2E), true, qemu_record(0x2E)), offer(0x2E));
        // Taken, then its delivery was interrupted (hardware clears V_IRQ): offered again,
        // never through EVENTINJ.
        assert_eq!(after_exit(Some(0x2E), false, interrupt(0x2E)), offer(0x2E));
        assert_eq!(after_exit(None, false, interrupt(0x20)), offer(0x20));
        // An exception goes back into EVENTINJ; a pending offer stays beside it.
        let fault = EventInjection::from_raw(page_fault);
        assert_eq!(
            after_exit(Some(0x20), true, page_fault),
            AfterExit {
                offered: Some(0x20),
                inject: fault
            }
        );
        assert_eq!(
            after_exit(Some(0x20), false, page_fault),
            AfterExit {
                offered: None,
                inject: fault
            }
        );
        // An open window (V_IRQ set, nothing offered) offers nothing.
        assert_eq!(after_exit(None, true, 0), none);
        // Exceptions below 32 stay exceptions.
        let divide = VALID | 3 << TYPE_SHIFT;
        assert_eq!(
            after_exit(None, false, divide).inject.map(|e| e.vector),
            Some(0)
        );
    }

    #[test]
    fn stale_bits_without_the_valid_bit_are_no_event() {
        // What QEMU leaves after delivering vector 0x20: type and vector, valid bit clear.
        assert_eq!(EventInjection::from_raw(0x0000_0020), None);
        assert_eq!(EventInjection::from_raw(0x0000_0B0E | 6 << 32), None);
        assert_eq!(reinjection(0x0000_0020), None);
        // Reserved types are no event either.
        assert_eq!(EventInjection::from_raw(0x8000_0120), None);
        assert_eq!(EventInjection::from_raw(0x8000_0720), None);
    }

    #[test]
    fn software_interrupts_and_exceptions_run_again_instead() {
        let int40 = EventInjection {
            vector: 0x40,
            kind: EventType::SoftwareInterrupt,
            error_code: None,
        };
        assert_eq!(reinjection(int40.to_raw()), None);
        for vector in [3, 4] {
            let soft = EventInjection {
                vector,
                kind: EventType::Exception,
                error_code: None,
            };
            assert_eq!(reinjection(soft.to_raw()), None, "vector {vector}");
        }
        let timer = EventInjection {
            vector: 0x20,
            kind: EventType::Interrupt,
            error_code: None,
        };
        assert_eq!(reinjection(timer.to_raw()), Some(timer));
        let pf = EventInjection {
            vector: 14,
            kind: EventType::Exception,
            error_code: Some(2),
        };
        assert_eq!(reinjection(pf.to_raw()), Some(pf));
    }

    fn kinds() -> impl Strategy<Value = EventType> {
        prop::sample::select(vec![
            EventType::Interrupt,
            EventType::Nmi,
            EventType::Exception,
            EventType::SoftwareInterrupt,
        ])
    }

    proptest! {
        #[test]
        fn events_round_trip(vector: u8, kind in kinds(), code: Option<u32>) {
            let event = EventInjection { vector, kind, error_code: code };
            prop_assert_eq!(EventInjection::from_raw(event.to_raw()), Some(event));
        }

        #[test]
        fn decoding_never_panics_and_needs_the_valid_bit(raw: u64) {
            if let Some(event) = EventInjection::from_raw(raw) {
                prop_assert!(raw & VALID != 0);
                prop_assert_eq!(event.vector, raw as u8);
            }
        }
    }
}
