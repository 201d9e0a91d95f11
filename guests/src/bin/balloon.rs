//! `balloon`: a balloon driver. It polls the balloon target the hypervisor sets
//! (BALLOON_TARGET) and gives pages back (inflate) or takes them back (deflate) until its
//! balloon holds that many, checking on the way that the hypervisor refuses bad calls and that
//! every page it gets back is zeroed and usable.
//!
//! The balloon the VM starts with (the lab's `balloon_mib`) is the top of its RAM. Pages to
//! give back are taken from the top down, never below `floor_mib` (the image, its stack and
//! tables live low).
//!
//! Arguments (`key=value`, all optional):
//! - `wait_ms`: how long to keep trying to reach the target, ms of TSC time (default 2000).
//! - `floor_mib`: lowest RAM the balloon may take (default 4).
//! - `round_trip=1`: after reaching the target, give one page back and take it back 16 times
//!   and report the fastest round trip (METRIC `balloon_round_trip_cycles`).
//! - `touch=1`: after reaching the target, read a page given back; the hypervisor must stop
//!   the VM for it (so the guest exits with failure if it is still running).
#![no_std]
#![no_main]

use carousel_guests::hypercall::{self, HypercallError};
use carousel_guests::{arch, entry, println, BootInfo};
use carousel_protocol::hypercall::{
    Error, BALLOON_BATCH_MAX, BALLOON_INFLATE, EXIT_FAILURE, EXIT_SUCCESS,
};

entry!(main);

/// 4 KiB.
const PAGE: u64 = 4096;
/// Most RAM the driver tracks (its page bitmap is static): 1 GiB.
const MAX_PAGES: usize = 1 << 18;
/// A byte pattern written into pages before they are given back.
const PATTERN: u8 = 0xA5;

/// One bit per guest page: in the balloon.
static mut BALLOONED: [u64; MAX_PAGES / 64] = [0; MAX_PAGES / 64];
/// The page list of the current call.
static mut LIST: [u32; BALLOON_BATCH_MAX as usize] = [0; BALLOON_BATCH_MAX as usize];

fn ballooned(page: u64) -> bool {
    // SAFETY: one CPU, no interrupts: nothing else touches the bitmap.
    unsafe { (*core::ptr::addr_of!(BALLOONED))[(page / 64) as usize] & (1 << (page % 64)) != 0 }
}

fn set_ballooned(page: u64, on: bool) {
    // SAFETY: as in `ballooned`.
    let words = unsafe { &mut *core::ptr::addr_of_mut!(BALLOONED) };
    let word = &mut words[(page / 64) as usize];
    if on {
        *word |= 1 << (page % 64);
    } else {
        *word &= !(1 << (page % 64));
    }
}

/// The bytes of guest page `page` (identity-mapped).
fn page_bytes(page: u64) -> &'static mut [u8] {
    // SAFETY: the page is this VM's RAM, backed (the caller only touches pages outside the
    // balloon), identity-mapped, and nothing else refers to it.
    unsafe { core::slice::from_raw_parts_mut((page * PAGE) as *mut u8, PAGE as usize) }
}

fn fail(message: &str) -> ! {
    println!("balloon: {message}");
    hypercall::exit(EXIT_FAILURE)
}

fn main(boot: &BootInfo) -> ! {
    let wait_ms = boot.number("wait_ms", 2000);
    let floor = boot.number("floor_mib", 4) << 20 >> 12;
    let touch = boot.number("touch", 0) == 1;
    let round_trip = boot.number("round_trip", 0) == 1;
    let ram = u64::from(hypercall::balloon_stats(1).unwrap_or_else(|_| fail("no BALLOON_STATS")));
    if ram as usize > MAX_PAGES || floor >= ram {
        fail("RAM is outside what this driver handles");
    }
    let initial = u64::from(hypercall::balloon_stats(0).unwrap_or(0));
    for page in ram - initial..ram {
        set_ballooned(page, true);
    }
    let mut count = initial;
    println!("balloon: {ram} pages of RAM, {initial} ballooned at start");

    let refused = bad_calls_refused(ram, floor);
    let _ = hypercall::check("balloon-bad-calls-refused", refused);

    let tsc_hz = hypercall::tsc_hz().unwrap_or(1_000_000);
    let deadline = arch::rdtsc() + wait_ms * tsc_hz / 1000;
    let mut deflated_ok = true;
    let mut deflated_any = false;
    let mut target;
    loop {
        target = u64::from(hypercall::balloon_target().unwrap_or_else(|_| fail("no target")));
        if target == count || arch::rdtsc() >= deadline {
            break;
        }
        // SAFETY: one CPU; LIST is used by one call at a time.
        let list = unsafe { &mut *core::ptr::addr_of_mut!(LIST) };
        if target > count {
            let want = (target - count).min(u64::from(BALLOON_BATCH_MAX)) as usize;
            let mut taken = 0;
            for page in (floor..ram)
                .rev()
                .filter(|&page| !ballooned(page))
                .take(want)
            {
                page_bytes(page).fill(PATTERN);
                list[taken] = page as u32;
                taken += 1;
            }
            if taken == 0 {
                fail("no page left to give back above the floor");
            }
            match hypercall::balloon_inflate(&list[..taken]) {
                Ok(_) => {
                    list[..taken]
                        .iter()
                        .for_each(|&page| set_ballooned(u64::from(page), true));
                    count += taken as u64;
                }
                Err(error) => fail_with("inflate", error),
            }
        } else {
            let want = (count - target).min(u64::from(BALLOON_BATCH_MAX)) as usize;
            let mut taken = 0;
            for page in (0..ram).filter(|&page| ballooned(page)).take(want) {
                list[taken] = page as u32;
                taken += 1;
            }
            match hypercall::balloon_deflate(&list[..taken]) {
                Ok(_) => {
                    for &page in &list[..taken] {
                        let page = u64::from(page);
                        set_ballooned(page, false);
                        let bytes = page_bytes(page);
                        deflated_ok &= bytes.iter().all(|&byte| byte == 0);
                        bytes.fill(PATTERN);
                        deflated_ok &= bytes.iter().all(|&byte| byte == PATTERN);
                    }
                    deflated_any = true;
                    count -= taken as u64;
                }
                // The host has no memory yet: another VM has to give some back first.
                Err(HypercallError::Defined(Error::NoMemory)) => sleep(tsc_hz / 1000),
                Err(error) => fail_with("deflate", error),
            }
        }
    }
    println!("balloon: {count} pages ballooned, target {target}");
    let _ = hypercall::metric("ballooned_pages", count);
    let _ = hypercall::check("balloon-reached-target", count == target);
    if deflated_any {
        let _ = hypercall::check("deflated-pages-usable", deflated_ok);
    }
    if round_trip {
        let page = (floor..ram)
            .rev()
            .find(|&page| !ballooned(page))
            .unwrap_or_else(|| fail("no page for the round trip")) as u32;
        let mut fastest = u64::MAX;
        for _ in 0..16 {
            let start = arch::rdtsc();
            hypercall::balloon_inflate(&[page]).unwrap_or_else(|error| fail_with("inflate", error));
            hypercall::balloon_deflate(&[page]).unwrap_or_else(|error| fail_with("deflate", error));
            fastest = fastest.min(arch::rdtsc() - start);
        }
        println!("balloon: one page out and back in {fastest} cycles at best");
        let _ = hypercall::metric("balloon_round_trip_cycles", fastest);
    }
    if touch {
        match (0..ram).find(|&page| ballooned(page)) {
            Some(page) => {
                println!("balloon: touching page {page}, which was given back");
                // SAFETY: deliberately wrong: the page is not ours any more. The hypervisor
                // must stop this VM here.
                let value = unsafe { core::ptr::read_volatile((page * PAGE) as *const u8) };
                fail(if value == 0 {
                    "still running after touching a ballooned page"
                } else {
                    "read a ballooned page"
                })
            }
            None => fail("nothing ballooned to touch"),
        }
    }
    hypercall::exit(if refused && count == target && deflated_ok {
        EXIT_SUCCESS
    } else {
        EXIT_FAILURE
    })
}

fn fail_with(what: &str, error: HypercallError) -> ! {
    println!("balloon: {what} failed: {error}");
    hypercall::exit(EXIT_FAILURE)
}

/// Halts until `cycles` from now.
fn sleep(cycles: u64) {
    let deadline = arch::rdtsc() + cycles;
    let _ = hypercall::set_timer(deadline);
    while arch::rdtsc() < deadline {
        arch::halt();
    }
}

/// Bad balloon calls get error codes and change nothing: a page beyond the RAM, a page listed
/// twice, an empty list, a deflate of a page not in the balloon, a list outside the RAM.
fn bad_calls_refused(ram: u64, floor: u64) -> bool {
    let page = floor as u32;
    let expect = |result: Result<u32, HypercallError>, wanted: Error, what: &str| {
        let ok = result == Err(HypercallError::Defined(wanted));
        if !ok {
            println!("balloon: {what}: got {result:?}, wanted {wanted:?}");
        }
        ok
    };
    let outside = hypercall::decode_result(hypercall::hypercall(
        BALLOON_INFLATE,
        (ram * PAGE) as u32,
        1,
        0,
        0,
    ));
    let before = hypercall::balloon_stats(0);
    let all = [
        expect(
            hypercall::balloon_inflate(&[ram as u32]),
            Error::BadAddress,
            "page beyond RAM",
        ),
        expect(
            hypercall::balloon_inflate(&[page, page]),
            Error::InvalidArgument,
            "page twice",
        ),
        expect(
            hypercall::balloon_inflate(&[]),
            Error::InvalidArgument,
            "empty list",
        ),
        expect(
            hypercall::balloon_deflate(&[page]),
            Error::InvalidArgument,
            "deflate of a page we hold",
        ),
        expect(outside, Error::BadAddress, "list outside RAM"),
    ];
    all.iter().all(|&ok| ok) && hypercall::balloon_stats(0) == before
}
