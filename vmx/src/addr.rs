//! Guest-physical and host-physical addresses as distinct types, so one is never used for the
//! other by accident.

use core::fmt;

/// Size of a 4 KiB page, the unit of EPT mappings and VMX regions.
pub const PAGE_SIZE: u64 = 4096;

macro_rules! physical_address {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub u64);

        impl $name {
            /// The raw address.
            pub const fn as_u64(self) -> u64 {
                self.0
            }

            /// Offset of the address inside its 4 KiB page.
            pub const fn page_offset(self) -> u64 {
                self.0 % PAGE_SIZE
            }

            /// The start of the 4 KiB page holding the address.
            pub const fn align_down(self) -> Self {
                Self(self.0 - self.page_offset())
            }

            /// Whether the address starts a 4 KiB page.
            pub const fn is_page_aligned(self) -> bool {
                self.page_offset() == 0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{:#x}", self.0)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({:#x})"), self.0)
            }
        }
    };
}

physical_address!(
    /// An address in a guest's physical address space (what EPT translates from).
    GuestPhysAddr
);
physical_address!(
    /// An address in the host's physical address space (what EPT translates to, and what VMXON,
    /// VMPTRLD and the VMCS pointer fields take).
    HostPhysAddr
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers_and_formatting() {
        let a = GuestPhysAddr(0x1234_5678);
        assert_eq!(a.page_offset(), 0x678);
        assert_eq!(a.align_down(), GuestPhysAddr(0x1234_5000));
        assert!(!a.is_page_aligned());
        assert!(a.align_down().is_page_aligned());
        assert_eq!(a.to_string(), "0x12345678");
        assert_eq!(
            format!("{:?}", HostPhysAddr(0x1000)),
            "HostPhysAddr(0x1000)"
        );
    }
}
