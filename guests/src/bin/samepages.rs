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
#![no_std]
#![no_main]

use carousel_guests::{arch, entry, hypercall, println, BootInfo};
use carousel_protocol::hypercall::{EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

/// 4 KiB.
const PAGE: u64 = 4096;
/// What xv6's `kfree` fills free pages with.
const FILL: u8 = 0x01;
/// Every this many repeated pages gets a write after the wait.
const WRITE_STRIDE: u64 = 16;

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
    let repeated = floor..floor + fill;
    let stamped_pages = floor + fill..floor + fill + unique;
    println!("samepages: {fill} pages of 0x01, {unique} unique pages, then {wait_ms} ms");
    for page in repeated.clone() {
        page_bytes(page).fill(FILL);
    }
    for page in stamped_pages.clone() {
        stamp(seed, page);
    }

    let tsc_hz = hypercall::tsc_hz().unwrap_or(1_000_000);
    let until = arch::rdtsc() + wait_ms * tsc_hz / 1000;
    let hot = floor..floor + hot.min(fill);
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

    let read_back = repeated
        .clone()
        .all(|page| page_bytes(page).iter().all(|&byte| byte == FILL))
        && stamped_pages.clone().all(|page| stamped(seed, page));
    let _ = hypercall::check("merged-pages-read-back", read_back);

    // Writes into every WRITE_STRIDE-th repeated page: each must land in that page only.
    for page in repeated.clone().step_by(WRITE_STRIDE as usize) {
        page_bytes(page)[(page % 512) as usize * 8] = 0xEE;
    }
    let private = repeated.clone().all(|page| {
        page_bytes(page).iter().enumerate().all(|(offset, &byte)| {
            let written =
                (page - floor).is_multiple_of(WRITE_STRIDE) && offset == (page % 512) as usize * 8;
            byte == if written { 0xEE } else { FILL }
        })
    }) && stamped_pages.clone().all(|page| stamped(seed, page));
    let _ = hypercall::check("cow-writes-private", private);
    println!("samepages: read back {read_back}, writes private {private}");
    hypercall::exit(if read_back && private {
        EXIT_SUCCESS
    } else {
        EXIT_FAILURE
    })
}
