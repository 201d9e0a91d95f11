//! Typed wrappers around Carousel's hypercalls ([`carousel_protocol::hypercall`]), plus the raw
//! [`hypercall`] for tests that send invalid calls on purpose.
//!
//! Addresses passed to the hypervisor are guest-physical; the runtime's identity map makes a
//! pointer's value its guest-physical address.

use core::fmt;

use carousel_protocol::hypercall::{
    Error, BALLOON_DEFLATE, BALLOON_INFLATE, BALLOON_STATS, BALLOON_TARGET, CHECK, CONSOLE_WRITE,
    CONSOLE_WRITE_MAX, EXIT, METRIC, SET_TIMER, TSC_KHZ, VERSION,
};

use crate::arch;

/// Why a hypercall failed: its EAX result was negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HypercallError {
    /// One of the errors the ABI defines.
    Defined(Error),
    /// A negative result the ABI does not define (the hypervisor is newer, or broken).
    Undefined(i32),
}

impl fmt::Display for HypercallError {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Defined(error) => write!(formatter, "{error:?} ({})", *error as i32),
            Self::Undefined(code) => write!(formatter, "undefined hypercall error {code}"),
        }
    }
}

impl From<Error> for HypercallError {
    fn from(error: Error) -> Self {
        Self::Defined(error)
    }
}

/// Turns a hypercall's EAX into a result: negative (as `i32`) is an error.
pub fn decode_result(eax: u32) -> Result<u32, HypercallError> {
    if (eax as i32) >= 0 {
        return Ok(eax);
    }
    [
        Error::UnknownCall,
        Error::InvalidArgument,
        Error::BadAddress,
        Error::NoMemory,
    ]
    .into_iter()
    .find(|error| error.as_eax() == eax)
    .map_or(Err(HypercallError::Undefined(eax as i32)), |error| {
        Err(HypercallError::Defined(error))
    })
}

/// Sends hypercall `number` with EBX, ECX, EDX, ESI = `a`, `b`, `c`, `d`, and returns EAX as
/// the hypervisor left it. For tests of invalid calls; everything else uses the typed wrappers.
pub fn hypercall(number: u32, a: u32, b: u32, c: u32, d: u32) -> u32 {
    arch::vmcall(number, [a, b, c, d])
}

/// The guest-physical address of `bytes` (identity-mapped, so the pointer's value).
fn guest_physical(bytes: &[u8]) -> u32 {
    // The identity map covers only the first 4 GiB, so every guest pointer fits in 32 bits.
    u32::try_from(bytes.as_ptr() as usize).expect("guest addresses lie below 4 GiB")
}

/// The balloon size the hypervisor wants, in pages.
pub fn balloon_target() -> Result<u32, HypercallError> {
    decode_result(hypercall(BALLOON_TARGET, 0, 0, 0, 0))
}

/// Gives back the listed guest pages (page numbers).
pub fn balloon_inflate(pages: &[u32]) -> Result<u32, HypercallError> {
    decode_result(hypercall(
        BALLOON_INFLATE,
        list_address(pages),
        pages.len() as u32,
        0,
        0,
    ))
}

/// Takes back the listed ballooned pages.
pub fn balloon_deflate(pages: &[u32]) -> Result<u32, HypercallError> {
    decode_result(hypercall(
        BALLOON_DEFLATE,
        list_address(pages),
        pages.len() as u32,
        0,
        0,
    ))
}

/// Balloon facts: 0 = pages ballooned, 1 = RAM pages, 2 = pages the host could back now.
pub fn balloon_stats(which: u32) -> Result<u32, HypercallError> {
    decode_result(hypercall(BALLOON_STATS, which, 0, 0, 0))
}

/// The guest-physical address of a page list.
fn list_address(pages: &[u32]) -> u32 {
    u32::try_from(pages.as_ptr() as usize).expect("guest addresses lie below 4 GiB")
}

/// Writes `bytes` to the VM's console through the hypervisor, in pieces of at most
/// [`CONSOLE_WRITE_MAX`] bytes. Returns the number of bytes written.
pub fn console_write(bytes: &[u8]) -> Result<u32, HypercallError> {
    let mut written = 0;
    for piece in bytes.chunks(CONSOLE_WRITE_MAX as usize) {
        // The hypervisor may take fewer bytes than asked (its console share is full): write
        // the rest again.
        let mut rest = piece;
        while !rest.is_empty() {
            let taken = decode_result(hypercall(
                CONSOLE_WRITE,
                guest_physical(rest),
                rest.len() as u32,
                0,
                0,
            ))?;
            let taken = (taken as usize).min(rest.len());
            written += taken as u32;
            rest = &rest[taken..];
        }
    }
    Ok(written)
}

/// Stops this VM with `status` ([`carousel_protocol::hypercall::EXIT_SUCCESS`],
/// [`carousel_protocol::hypercall::EXIT_FAILURE`] or anything else, reported as given).
pub fn exit(status: u32) -> ! {
    let result = hypercall(EXIT, status, 0, 0, 0);
    // EXIT never returns. If it did, the hypervisor is broken: say so, then end the VM in the
    // only other way a guest can.
    crate::println!("carousel guest: EXIT hypercall returned {result:#x}; triple-faulting");
    arch::triple_fault()
}

/// Asks for the hypervisor's identity: its [`carousel_protocol::FORMAT_VERSION`].
pub fn version() -> Result<u32, HypercallError> {
    decode_result(hypercall(VERSION, 0, 0, 0, 0))
}

/// Reports the named check result. `name` should be at most
/// [`carousel_protocol::hypercall::CHECK_NAME_MAX`] bytes; the hypervisor refuses longer ones
/// with [`Error::InvalidArgument`].
pub fn check(name: &str, passed: bool) -> Result<(), HypercallError> {
    let name = name.as_bytes();
    decode_result(hypercall(
        CHECK,
        guest_physical(name),
        name.len() as u32,
        u32::from(passed),
        0,
    ))
    .map(|_| ())
}

/// Reports the named measurement (`name` at most
/// [`carousel_protocol::hypercall::CHECK_NAME_MAX`] bytes).
pub fn metric(name: &str, value: u64) -> Result<(), HypercallError> {
    let name = name.as_bytes();
    decode_result(hypercall(
        METRIC,
        guest_physical(name),
        name.len() as u32,
        value as u32,
        (value >> 32) as u32,
    ))
    .map(|_| ())
}

/// Arms the VM's one-shot timer for TSC `deadline` (0 disarms): a HLT after it returns once
/// the TSC reaches the deadline.
pub fn set_timer(deadline: u64) -> Result<(), HypercallError> {
    decode_result(hypercall(
        SET_TIMER,
        deadline as u32,
        (deadline >> 32) as u32,
        0,
        0,
    ))
    .map(|_| ())
}

/// The TSC frequency the hypervisor counts with, in Hz.
pub fn tsc_hz() -> Result<u64, HypercallError> {
    decode_result(hypercall(TSC_KHZ, 0, 0, 0, 0)).map(|khz| u64::from(khz) * 1000)
}
