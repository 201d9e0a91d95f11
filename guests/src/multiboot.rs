//! The multiboot (version 1) handshake: the header the loader looks for, and the information
//! structure it hands over, read into a [`BootInfo`].
//!
//! Only the fields Carousel fills are read: `mem_lower`/`mem_upper` and `cmdline`.

use core::ptr;

/// Multiboot header magic, which the loader searches for in the image's first 8 KiB.
pub(crate) const HEADER_MAGIC: u32 = 0x1BAD_B002;
/// Multiboot header flags: none (an ELF image needs no address fields, and no boot modules,
/// memory map or video mode is asked for).
pub(crate) const HEADER_FLAGS: u32 = 0;
/// Multiboot header checksum: magic + flags + checksum = 0 (mod 2^32).
pub(crate) const HEADER_CHECKSUM: u32 = 0u32.wrapping_sub(HEADER_MAGIC.wrapping_add(HEADER_FLAGS));

/// EAX at entry when a multiboot loader started the guest.
pub const BOOTLOADER_MAGIC: u32 = 0x2BAD_B002;

/// Information flag: `mem_lower` and `mem_upper` are valid.
const INFO_MEMORY: u32 = 1 << 0;
/// Information flag: `cmdline` is valid.
const INFO_CMDLINE: u32 = 1 << 2;

/// The multiboot information structure, up to `cmdline` (the fields the runtime reads).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
struct Information {
    /// Which of the following fields are valid (`INFO_*`).
    flags: u32,
    /// KiB of memory from 0, below 640 KiB.
    mem_lower: u32,
    /// KiB of memory from 1 MiB, up to the first hole.
    mem_upper: u32,
    /// BIOS boot device (unused).
    boot_device: u32,
    /// Physical address of the NUL-terminated command line.
    cmdline: u32,
}

/// End of the runtime's identity map: the loader's structures must lie below it.
const IDENTITY_MAPPED_END: u64 = 1 << 32;
/// Longest command line read; a longer one is cut here.
const CMDLINE_MAX: usize = 4096;

/// Memory sizes from the multiboot information.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemorySize {
    /// KiB of RAM from address 0 (at most 640).
    pub lower_kib: u32,
    /// KiB of RAM from 1 MiB up to the first hole.
    pub upper_kib: u32,
}

/// What the loader told the guest, as the guest's main receives it.
#[derive(Debug, Clone, Copy)]
pub struct BootInfo {
    /// EAX at entry ([`BOOTLOADER_MAGIC`]).
    pub magic: u32,
    /// The VM's arguments (the lab file's `args`); empty if the loader gave none.
    pub cmdline: &'static str,
    /// Memory sizes, if the loader gave them.
    pub memory: Option<MemorySize>,
}

impl BootInfo {
    /// The value of `key=value` among the whitespace-separated words of the command line.
    pub fn arg(&self, key: &str) -> Option<&'static str> {
        self.cmdline.split_whitespace().find_map(|word| {
            word.split_once('=')
                .and_then(|(k, v)| (k == key).then_some(v))
        })
    }

    /// [`Self::arg`] parsed as a number; `default` when absent. Panics (which exits the guest
    /// with failure, naming the key) when present but not a number.
    pub fn number(&self, key: &str, default: u64) -> u64 {
        match self.arg(key) {
            None => default,
            Some(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("argument {key}={text} is not a number")),
        }
    }
}

impl BootInfo {
    /// Reads the information structure at guest-physical `address`, which a multiboot loader
    /// passed in EBX along with `magic` in EAX.
    ///
    /// Panics if `magic` is not [`BOOTLOADER_MAGIC`] (then `address` means nothing), or if the
    /// structure or the command line lies outside the identity map, or the command line is not
    /// UTF-8: the loader broke its side of the handshake.
    ///
    /// # Safety
    ///
    /// Must be called at most once, with EAX and EBX as they were at entry: the loader then
    /// promises the structure and the command line lie in RAM, and nothing ever writes them
    /// (they are outside the guest image and its stack).
    pub(crate) unsafe fn read(magic: u32, address: u32) -> Self {
        assert_eq!(
            magic, BOOTLOADER_MAGIC,
            "not started by a multiboot loader (EAX = {magic:#x})"
        );
        assert!(
            u64::from(address) + size_of::<Information>() as u64 <= IDENTITY_MAPPED_END,
            "multiboot information at {address:#x} lies outside the identity map"
        );
        // SAFETY: the loader promises an information structure at `address`, identity-mapped as
        // just checked; it has no alignment promise, hence the unaligned read.
        let information = unsafe { ptr::read_unaligned(address as usize as *const Information) };

        let memory = (information.flags & INFO_MEMORY != 0).then_some(MemorySize {
            lower_kib: information.mem_lower,
            upper_kib: information.mem_upper,
        });
        let cmdline = if information.flags & INFO_CMDLINE != 0 {
            // SAFETY: the loader set INFO_CMDLINE, so `cmdline` addresses a NUL-terminated
            // string in RAM that nothing writes.
            unsafe { read_cmdline(information.cmdline) }
        } else {
            ""
        };
        Self {
            magic,
            cmdline,
            memory,
        }
    }
}

/// Reads the NUL-terminated string at guest-physical `address`, up to [`CMDLINE_MAX`] bytes.
///
/// # Safety
///
/// `address` must hold a NUL-terminated string in RAM that nothing ever writes.
unsafe fn read_cmdline(address: u32) -> &'static str {
    let start = u64::from(address);
    let readable = (IDENTITY_MAPPED_END.saturating_sub(start) as usize).min(CMDLINE_MAX);
    assert!(
        readable > 0,
        "multiboot command line at {address:#x} lies outside the identity map"
    );
    let base = address as usize as *const u8;
    // SAFETY: the caller promises the string is in RAM up to its NUL; the scan stops at the NUL
    // (or at `readable`, which stays inside the identity map).
    let length = (0..readable)
        .find(|&offset| unsafe { base.wrapping_add(offset).read() } == 0)
        .unwrap_or(readable);
    // SAFETY: the `length` bytes just scanned are in RAM and never written, so they may be
    // borrowed for the rest of the guest's life.
    let bytes = unsafe { core::slice::from_raw_parts(base, length) };
    core::str::from_utf8(bytes).expect("the multiboot command line is UTF-8")
}
