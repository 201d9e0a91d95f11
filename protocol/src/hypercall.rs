//! Hypercalls: `VMCALL` with EAX = number, EBX/ECX/EDX/ESI = arguments, EAX = result.
//!
//! A negative result is an error ([`Error`]). Addresses are guest-physical: the hypervisor
//! checks that every byte lies in the calling VM's RAM before it touches any.

/// Write bytes to the VM's console. EBX = guest-physical address, ECX = length (at most
/// [`CONSOLE_WRITE_MAX`]). Returns the number of bytes written, which may be fewer than ECX
/// when the VM's share of the console line is full (write the rest again); a call that can
/// write nothing waits for room.
///
/// Every hypercall is for the guest's kernel: VMCALL at CPL > 0 raises #UD.
pub const CONSOLE_WRITE: u32 = 1;
/// Stop this VM with a status. EBX = status ([`EXIT_SUCCESS`], [`EXIT_FAILURE`] or any other
/// value, reported as given). Does not return.
pub const EXIT: u32 = 2;
/// Ask for the hypervisor's identity. Returns [`crate::FORMAT_VERSION`].
pub const VERSION: u32 = 3;
/// Report a named check result. EBX = guest-physical address of the name, ECX = its length
/// (at most [`CHECK_NAME_MAX`]), EDX = 1 for passed, 0 for failed. Returns 0. A check is never
/// lost: when the VM's record quota is full the call waits for room.
pub const CHECK: u32 = 4;

/// Report a named measurement. EBX = guest-physical address of the name, ECX = its length
/// (at most [`CHECK_NAME_MAX`]), EDX = value bits 31:0, ESI = value bits 63:32. Returns 0.
/// Guests report their own view (throughput, latency) this way; reports list the values.
/// Beyond the VM's record quota a measurement is dropped, and counted against the VM.
pub const METRIC: u32 = 5;
/// Arm this VM's one-shot timer. EBX = TSC deadline bits 31:0, ECX = bits 63:32 (0 disarms).
/// When the TSC reaches the deadline, a VM halted in HLT resumes after its HLT. Returns 0, or
/// [`Error::InvalidArgument`] for a deadline more than 60 s of TSC time ahead.
pub const SET_TIMER: u32 = 6;
/// The TSC frequency the hypervisor uses, in kHz (so that any real frequency fits in EAX).
pub const TSC_KHZ: u32 = 7;

/// The balloon size the hypervisor wants this VM to have, in 4 KiB pages: the VM should give
/// back (inflate) or take back (deflate) pages until its balloon holds this many.
pub const BALLOON_TARGET: u32 = 8;
/// Give pages back. EBX = guest-physical address of a list of 32-bit guest page numbers, ECX =
/// their count (1 to [`BALLOON_BATCH_MAX`]). Every page must be in RAM, not ballooned already,
/// and listed once; otherwise nothing happens and the call fails. Each page is unmapped: a
/// later touch stops the VM. Returns the count.
pub const BALLOON_INFLATE: u32 = 9;
/// Take pages back: the same list, of ballooned pages. Each gets a zeroed frame. Fails with
/// [`Error::NoMemory`] (and nothing happens) when the host cannot back them now: try later.
/// Returns the count.
pub const BALLOON_DEFLATE: u32 = 10;
/// Balloon facts. EBX = 0: pages ballooned now; 1: the VM's RAM in pages; 2: pages the host
/// could back right now (its free pool, within the run's budget).
pub const BALLOON_STATS: u32 = 11;
/// Most pages one inflate or deflate call may list.
pub const BALLOON_BATCH_MAX: u32 = 1024;

/// Largest single console write.
pub const CONSOLE_WRITE_MAX: u32 = 4096;
/// Longest check name.
pub const CHECK_NAME_MAX: u32 = 64;

/// Exit status of a guest that did everything it meant to. Never 0, so that an uninitialised
/// register cannot pass for success.
pub const EXIT_SUCCESS: u32 = 0x10;
/// Exit status of a guest that found something wrong.
pub const EXIT_FAILURE: u32 = 0x11;

/// Hypercall error results (EAX, as a signed 32-bit value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Error {
    /// No hypercall has this number.
    UnknownCall = -1,
    /// An argument is out of range (a length too large, a flag not 0 or 1).
    InvalidArgument = -2,
    /// An address range is not entirely inside the VM's RAM.
    BadAddress = -3,
    /// The host has no memory for this now (balloon deflate): try later.
    NoMemory = -4,
}

impl Error {
    /// The value the guest sees in EAX.
    pub const fn as_eax(self) -> u32 {
        self as i32 as u32
    }
}

/// CPUID leaf at which the hypervisor identifies itself (the common hypervisor range).
pub const CPUID_HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// Signature returned by [`CPUID_HYPERVISOR_LEAF`] in EBX, ECX, EDX (12 bytes, in that order).
pub const CPUID_SIGNATURE: [u8; 12] = *b"CarouselVMM\0";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_negative_in_eax() {
        for error in [
            Error::UnknownCall,
            Error::InvalidArgument,
            Error::BadAddress,
            Error::NoMemory,
        ] {
            assert!((error.as_eax() as i32) < 0);
        }
        assert_ne!(EXIT_SUCCESS, 0);
        assert_ne!(EXIT_SUCCESS, EXIT_FAILURE);
    }
}
