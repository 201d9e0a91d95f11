//! `samepages`: a guest whose pages repeat, for same-page merging. It fills a stretch of its RAM
//! with 0x01 bytes (as xv6's `kfree` fills every free page), stamps another stretch with
//! contents unique to each page, spins while the hypervisor scans, then checks that every page
//! still reads what it wrote, writes into some of the repeated pages (each write must stay
//! private to its page: copy on write) and checks again.
//!
//! Arguments (`key=value`, all optional):
//! - `fill_mib`: MiB of 0x01 pages (default 4), from `floor_mib` up.
//! - `unique_mib`: MiB of unique pages after them (default 1).
//! - `floor_mib`: where the stretches start (default 4; the image and its tables live low).
//! - `seed`: mixed into the unique pages, so that VMs given different seeds share none of
//!   them (default 0: the same in every VM).
//! - `wait_ms`: how long to spin while merging catches up, ms of TSC time (default 500).
//! - `hot_mib`: while it waits, read a byte of every page of the first `hot_mib` MiB of the
//!   0x01 stretch, over and over (default 0: spin without touching memory), so that a
//!   working-set sample finds that much touched (`carousel bench memory`).
//! - `kfree`: 1 to fill the 0x01 pages exactly as xv6's `kfree` leaves them: each page's
//!   first word holds the address of the next free page (so no two pages are the same, and
//!   only compression, not merging, saves their frames). Default 0.
//! - `write_stride`: after the wait, write into every this many 0x01 pages (default 16; 1
//!   rewrites them all).
//! - `check_stride`: check every this many 0x01 pages (default 1: all of them; a bench that
//!   needs only the memory figures checks fewer).
//! - `settle_ms`: after the last check, spin this long without touching memory before
//!   exiting, so that compression can take the pages back (default 0).
#![no_std]
#![no_main]

use carousel_guests::{arch, entry, hypercall, println, BootInfo};
use carousel_protocol::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

/// 4 KiB.
const PAGE: u64 = 4096;
/// What xv6's `kfree` fills free pages with.
const FILL: u8 = 0x01;
/// Every this many repeated pages gets a write after the wait, unless `write_stride` says.
const WRITE_STRIDE: u64 = 16;

/// What repeated page `page` holds, as 8-byte words: 0x01 bytes, with `kfree` the next page's
/// address in its first 4 bytes (as xv6's free list links its pages), and 0xEE at byte
/// `written` if it was written there. Read 8 bytes at a time: a check of a 224 MiB VM reads
/// every byte, and in Bochs every instruction counts.
fn holds_repeated(kfree: bool, page: u64, written: Option<usize>) -> bool {
    let fill = u64::from_le_bytes([FILL; 8]);
    page_bytes(page)
        .chunks_exact(8)
        .enumerate()
        .all(|(index, chunk)| {
            let mut expected = fill.to_le_bytes();
            if kfree && index == 0 {
                expected[..4].copy_from_slice(&(((page + 1) * PAGE) as u32).to_le_bytes());
            }
            if let Some(at) = written.filter(|at| at / 8 == index) {
                expected[at % 8] = 0xEE;
            }
            chunk == expected
        })
}

fn fill_repeated(kfree: bool, page: u64) {
    let bytes = page_bytes(page);
    bytes.fill(FILL);
    if kfree {
        bytes[..4].copy_from_slice(&(((page + 1) * PAGE) as u32).to_le_bytes());
    }
}

/// Spins for `ms` milliseconds of TSC time, reading a byte of each page of `hot` over and over
/// (none: without touching memory).
fn spin(ms: u64, hot: core::ops::Range<u64>) {
    let tsc_hz = hypercall::tsc_hz().unwrap_or(1_000_000);
    let until = arch::rdtsc() + ms * tsc_hz / 1000;
    while arch::rdtsc() < until {
        if hot.is_empty() {
            core::hint::spin_loop();
        }
        for page in hot.clone() {
            // SAFETY: a page of this VM's RAM above the floor (`page_bytes`); a volatile read,
            // so that the loop really touches it.
            let _ = unsafe { core::ptr::read_volatile((page * PAGE) as *const u8) };
        }
    }
}

/// The bytes of guest page `page` (identity-mapped).
fn page_bytes(page: u64) -> &'static mut [u8] {
    // SAFETY: the page lies in this VM's RAM above the floor, where nothing else lives, and
    // the identity map covers it.
    unsafe { core::slice::from_raw_parts_mut((page * PAGE) as *mut u8, PAGE as usize) }
}

/// The unique contents of page `page`: its number in every 8-byte word, xored with the offset
/// and the seed.
fn unique_word(seed: u64, page: u64, word: u64) -> u64 {
    (page << 32) ^ word ^ seed.rotate_left(17) ^ 0x5A5A_0000_0000_5A5A
}

fn stamp(seed: u64, page: u64) {
    for (index, word) in page_bytes(page).chunks_exact_mut(8).enumerate() {
        word.copy_from_slice(&unique_word(seed, page, index as u64).to_le_bytes());
    }
}

fn stamped(seed: u64, page: u64) -> bool {
    page_bytes(page)
        .chunks_exact(8)
        .enumerate()
        .all(|(index, word)| word == unique_word(seed, page, index as u64).to_le_bytes())
}

fn main(boot: &BootInfo) -> ! {
    let floor = (boot.number("floor_mib", 4) << 20) / PAGE;
    let fill = (boot.number("fill_mib", 4) << 20) / PAGE;
    let unique = (boot.number("unique_mib", 1) << 20) / PAGE;
    let wait_ms = boot.number("wait_ms", 500);
    let seed = boot.number("seed", 0);
    let hot = (boot.number("hot_mib", 0) << 20) / PAGE;
    let kfree = boot.number("kfree", 0) != 0;
    let stride = boot.number("write_stride", WRITE_STRIDE).max(1);
    let settle_ms = boot.number("settle_ms", 0);
    let checked = boot.number("check_stride", 1).max(1) as usize;
    let repeated = floor..floor + fill;
    let stamped_pages = floor + fill..floor + fill + unique;
    println!("samepages: {fill} pages of 0x01, {unique} unique pages, then {wait_ms} ms");
    for page in repeated.clone() {
        fill_repeated(kfree, page);
    }
    for page in stamped_pages.clone() {
        stamp(seed, page);
    }

    spin(wait_ms, floor..floor + hot.min(fill));

    let read_back = repeated
        .clone()
        .step_by(checked)
        .all(|page| holds_repeated(kfree, page, None))
        && stamped_pages.clone().all(|page| stamped(seed, page));
    let _ = hypercall::check("merged-pages-read-back", read_back);

    // Writes into every stride-th repeated page: each must land in that page only (the byte
    // written is past the first word, so it never overwrites kfree's link).
    let written_at = |page: u64| 8 + (page % 500) as usize * 8;
    for page in repeated.clone().step_by(stride as usize) {
        page_bytes(page)[written_at(page)] = 0xEE;
    }
    let private = repeated.clone().step_by(checked).all(|page| {
        let written = (page - floor)
            .is_multiple_of(stride)
            .then(|| written_at(page));
        holds_repeated(kfree, page, written)
    }) && stamped_pages.clone().all(|page| stamped(seed, page));
    let _ = hypercall::check("cow-writes-private", private);
    println!("samepages: read back {read_back}, writes private {private}");
    spin(settle_ms, 0..0);
    hypercall::exit(if read_back && private {
        EXIT_SUCCESS
    } else {
        EXIT_FAILURE
    })
}
