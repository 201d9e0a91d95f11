//! Address-range routing for port-I/O and MMIO exits.
//!
//! A [`Bus`] maps disjoint, non-empty address ranges to a device handle `T` (a `Copy` value, such
//! as an enum the hypervisor defines) and answers "which device, at which offset?" for one address.
//! Lookups run on every I/O exit, so the ranges live in a `Vec` sorted by first address and are
//! found by binary search: O(log n). [`PortBus`] and [`MmioBus`] are the same code over `u16` and
//! `u64` addresses; an address newtype joins them by implementing [`BusAddress`].

use alloc::vec::Vec;
use core::fmt;
use core::ops::{Bound, RangeBounds};

/// An address type a [`Bus`] routes: an unsigned integer or a newtype around one.
pub trait BusAddress: Copy + Ord + fmt::Debug + fmt::LowerHex {
    /// The lowest address.
    const MIN: Self;
    /// The highest address.
    const MAX: Self;
    /// `self + 1`, or `None` above [`Self::MAX`].
    fn checked_increment(self) -> Option<Self>;
    /// `self - 1`, or `None` below [`Self::MIN`].
    fn checked_decrement(self) -> Option<Self>;
    /// `self - base`. Callers guarantee `base <= self`.
    fn offset_from(self, base: Self) -> Self;
}

macro_rules! impl_bus_address {
    ($($address:ty),*) => {$(
        impl BusAddress for $address {
            const MIN: Self = <$address>::MIN;
            const MAX: Self = <$address>::MAX;
            fn checked_increment(self) -> Option<Self> {
                self.checked_add(1)
            }
            fn checked_decrement(self) -> Option<Self> {
                self.checked_sub(1)
            }
            fn offset_from(self, base: Self) -> Self {
                self - base
            }
        }
    )*};
}

impl_bus_address!(u16, u64);

/// I/O ports (`in` / `out`), routed by 16-bit port number.
pub type PortBus<T> = Bus<u16, T>;

/// Memory-mapped I/O, routed by 64-bit guest-physical address.
pub type MmioBus<T> = Bus<u64, T>;

/// A non-empty inclusive address range, `first..=last`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BusRange<A> {
    first: A,
    last: A,
}

impl<A: BusAddress> BusRange<A> {
    /// The range's first address.
    pub fn first(self) -> A {
        self.first
    }

    /// The range's last address (inclusive).
    pub fn last(self) -> A {
        self.last
    }

    /// The inclusive range `range` denotes, or `None` if it holds no address.
    fn from_bounds(range: &impl RangeBounds<A>) -> Option<Self> {
        let first = match range.start_bound() {
            Bound::Included(&address) => address,
            Bound::Excluded(&address) => address.checked_increment()?,
            Bound::Unbounded => A::MIN,
        };
        let last = match range.end_bound() {
            Bound::Included(&address) => address,
            Bound::Excluded(&address) => address.checked_decrement()?,
            Bound::Unbounded => A::MAX,
        };
        (first <= last).then_some(Self { first, last })
    }

    fn contains(self, address: A) -> bool {
        self.first <= address && address <= self.last
    }

    fn overlaps(self, other: Self) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl<A: BusAddress> fmt::Display for BusRange<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}..={:#x}", self.first, self.last)
    }
}

/// Why a range could not be put on a [`Bus`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BusError<A> {
    /// The range holds no address.
    EmptyRange {
        /// The requested start bound.
        start: Bound<A>,
        /// The requested end bound.
        end: Bound<A>,
    },
    /// The range shares at least one address with a range already on the bus.
    Overlap {
        /// The range being inserted.
        new: BusRange<A>,
        /// The range on the bus it collides with.
        existing: BusRange<A>,
    },
}

impl<A: BusAddress> fmt::Display for BusError<A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::EmptyRange { start, end } => {
                f.write_str("bus range ")?;
                match start {
                    Bound::Included(address) => write!(f, "{address:#x}")?,
                    Bound::Excluded(address) => write!(f, "(after {address:#x})")?,
                    Bound::Unbounded => {}
                }
                match end {
                    Bound::Included(address) => write!(f, "..={address:#x}")?,
                    Bound::Excluded(address) => write!(f, "..{address:#x}")?,
                    Bound::Unbounded => f.write_str("..")?,
                }
                f.write_str(" is empty")
            }
            Self::Overlap { new, existing } => {
                write!(
                    f,
                    "bus range {new} overlaps {existing}, which is already mapped"
                )
            }
        }
    }
}

impl<A: BusAddress> core::error::Error for BusError<A> {}

/// Disjoint address ranges, each mapped to a device handle `T`.
#[derive(Clone, Debug)]
pub struct Bus<A, T> {
    /// Sorted by first address; no two ranges overlap.
    entries: Vec<(BusRange<A>, T)>,
}

impl<A: BusAddress, T: Copy> Bus<A, T> {
    /// An empty bus.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Maps every address in `range` (`a..b`, `a..=b`, `a..`, ...) to `device`.
    pub fn insert(&mut self, range: impl RangeBounds<A>, device: T) -> Result<(), BusError<A>> {
        let new = BusRange::from_bounds(&range).ok_or_else(|| BusError::EmptyRange {
            start: range.start_bound().cloned(),
            end: range.end_bound().cloned(),
        })?;
        let index = self
            .entries
            .partition_point(|(range, _)| range.first < new.first);
        // The ranges on the bus are disjoint and sorted, so only the neighbours either side of
        // the insertion point can overlap the new one.
        let before = index.checked_sub(1).and_then(|i| self.entries.get(i));
        let after = self.entries.get(index);
        if let Some(&(existing, _)) = [before, after]
            .into_iter()
            .flatten()
            .find(|(existing, _)| existing.overlaps(new))
        {
            return Err(BusError::Overlap { new, existing });
        }
        self.entries.insert(index, (new, device));
        Ok(())
    }

    /// Maps the range holding `address` to `device` instead; false when no range holds it.
    pub fn remap(&mut self, address: A, device: T) -> bool {
        let index = self
            .entries
            .partition_point(|(range, _)| range.first <= address);
        match index
            .checked_sub(1)
            .and_then(|index| self.entries.get_mut(index))
        {
            Some((range, mapped)) if range.contains(address) => {
                *mapped = device;
                true
            }
            _ => false,
        }
    }

    /// The device mapped at `address` and the offset of `address` within its range.
    pub fn lookup(&self, address: A) -> Option<(T, A)> {
        let index = self
            .entries
            .partition_point(|(range, _)| range.first <= address);
        let &(range, device) = self.entries.get(index.checked_sub(1)?)?;
        range
            .contains(address)
            .then(|| (device, address.offset_from(range.first)))
    }
}

impl<A: BusAddress, T: Copy> Default for Bus<A, T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use alloc::string::ToString;

    use proptest::prelude::*;

    use super::*;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum Device {
        Com1,
        Com2,
        Pit,
    }

    fn com1_bus() -> PortBus<Device> {
        let mut bus = PortBus::new();
        bus.insert(0x3F8..0x400, Device::Com1).unwrap();
        bus
    }

    fn range(first: u16, last: u16) -> BusRange<u16> {
        BusRange { first, last }
    }

    #[test]
    fn overlap_at_the_low_edge_is_rejected() {
        let mut bus = com1_bus();
        assert_eq!(
            bus.insert(0x3F0..=0x3F8, Device::Com2),
            Err(BusError::Overlap {
                new: range(0x3F0, 0x3F8),
                existing: range(0x3F8, 0x3FF),
            })
        );
    }

    #[test]
    fn overlap_at_the_high_edge_is_rejected() {
        let mut bus = com1_bus();
        assert_eq!(
            bus.insert(0x3FF..0x408, Device::Com2),
            Err(BusError::Overlap {
                new: range(0x3FF, 0x407),
                existing: range(0x3F8, 0x3FF),
            })
        );
    }

    #[test]
    fn enclosing_and_enclosed_ranges_are_rejected() {
        let mut bus = com1_bus();
        assert!(bus.insert(0x300..0x500, Device::Com2).is_err());
        assert!(bus.insert(0x3FA..=0x3FA, Device::Com2).is_err());
        assert_eq!(bus.lookup(0x3FA), Some((Device::Com1, 2)));
    }

    #[test]
    fn adjacent_ranges_are_allowed() {
        let mut bus = com1_bus();
        bus.insert(0x3F0..0x3F8, Device::Com2).unwrap();
        bus.insert(0x400..=0x400, Device::Pit).unwrap();
        assert_eq!(bus.lookup(0x3F7), Some((Device::Com2, 7)));
        assert_eq!(bus.lookup(0x3F8), Some((Device::Com1, 0)));
        assert_eq!(bus.lookup(0x3FF), Some((Device::Com1, 7)));
        assert_eq!(bus.lookup(0x400), Some((Device::Pit, 0)));
    }

    #[test]
    fn empty_ranges_are_rejected() {
        let mut bus = PortBus::new();
        assert_eq!(
            bus.insert(0x10..0x10, Device::Pit),
            Err(BusError::EmptyRange {
                start: Bound::Included(0x10),
                end: Bound::Excluded(0x10),
            })
        );
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = 0x11..=0x10;
        assert!(bus.insert(reversed, Device::Pit).is_err());
        assert!(bus.insert(..0, Device::Pit).is_err());
        assert_eq!(bus.lookup(0x10), None);
    }

    #[test]
    fn remap_changes_the_device_of_one_range() {
        let mut bus = com1_bus();
        bus.insert(0x2F8..0x300, Device::Com2).unwrap();
        assert!(bus.remap(0x3FA, Device::Com2));
        assert_eq!(bus.lookup(0x3F8), Some((Device::Com2, 0)));
        assert_eq!(bus.lookup(0x2FF), Some((Device::Com2, 7)));
        assert!(!bus.remap(0x400, Device::Com1));
        assert!(!bus.remap(0x2F7, Device::Com1));
        assert_eq!(bus.lookup(0x2F7), None);
    }

    #[test]
    fn lookup_reports_device_and_offset() {
        let mut bus = com1_bus();
        bus.insert(0x2F8..0x300, Device::Com2).unwrap();
        assert_eq!(bus.lookup(0x3FD), Some((Device::Com1, 5)));
        assert_eq!(bus.lookup(0x2F8), Some((Device::Com2, 0)));
        assert_eq!(bus.lookup(0x2F7), None);
        assert_eq!(bus.lookup(0x300), None);
        assert_eq!(bus.lookup(0x400), None);
        assert_eq!(bus.lookup(0), None);
    }

    #[test]
    fn ranges_reach_the_ends_of_the_address_space() {
        let mut bus = PortBus::new();
        bus.insert(0xFFF0.., Device::Pit).unwrap();
        bus.insert(..=0, Device::Com1).unwrap();
        assert_eq!(bus.lookup(0xFFFF), Some((Device::Pit, 0xF)));
        assert_eq!(bus.lookup(0), Some((Device::Com1, 0)));
        assert!(bus.insert(0xFFFF..=0xFFFF, Device::Com2).is_err());
    }

    #[test]
    fn mmio_bus_routes_64_bit_addresses() {
        let mut bus = MmioBus::new();
        bus.insert(0xFEC0_0000..0xFEC0_1000, Device::Pit).unwrap();
        assert_eq!(bus.lookup(0xFEC0_0010), Some((Device::Pit, 0x10)));
        assert_eq!(bus.lookup(0xFEC0_1000), None);
    }

    #[test]
    fn errors_name_both_ranges() {
        let mut bus = com1_bus();
        let overlap = bus.insert(0x3FC..0x404, Device::Com2).unwrap_err();
        assert_eq!(
            overlap.to_string(),
            "bus range 0x3fc..=0x403 overlaps 0x3f8..=0x3ff, which is already mapped"
        );
        let empty = bus.insert(0x10..0x10, Device::Com2).unwrap_err();
        assert_eq!(empty.to_string(), "bus range 0x10..0x10 is empty");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// After random inserts, every port maps to at most one device and the bus agrees with a
        /// naive list of the accepted ranges.
        #[test]
        fn bus_agrees_with_a_naive_model(
            inserts in prop::collection::vec((0u16..96, 0u16..24, any::<bool>()), 0..24)
        ) {
            let mut bus = PortBus::new();
            let mut accepted: Vec<(u16, u16, usize)> = Vec::new();
            for (device, &(start, length, inclusive)) in inserts.iter().enumerate() {
                let result = if inclusive {
                    bus.insert(start..=start + length, device)
                } else {
                    bus.insert(start..start + length, device)
                };
                let last = if inclusive { Some(start + length) } else { (start + length).checked_sub(1) };
                let expected_ok = match last {
                    Some(last) if last >= start => {
                        !accepted.iter().any(|&(first, end, _)| first <= last && start <= end)
                    }
                    _ => false,
                };
                prop_assert_eq!(result.is_ok(), expected_ok, "insert {:?}", (start, length, inclusive));
                if let (true, Some(last)) = (expected_ok, last) {
                    accepted.push((start, last, device));
                }
            }
            for port in 0u16..128 {
                let holders: Vec<_> = accepted
                    .iter()
                    .filter(|&&(first, last, _)| first <= port && port <= last)
                    .collect();
                prop_assert!(holders.len() <= 1, "port {port:#x} mapped {} times", holders.len());
                let expected = holders.first().map(|&&(first, _, device)| (device, port - first));
                prop_assert_eq!(bus.lookup(port), expected, "port {:#x}", port);
            }
        }
    }
}
