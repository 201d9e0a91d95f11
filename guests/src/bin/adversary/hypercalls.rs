//! Hypercall arguments a careless or hostile guest passes (issue 12, "What to build" 2).
//!
//! - `case=hypercall-args`: buffers that straddle the end of RAM, start at it, wrap around
//!   4 GiB, point at the local APIC page, lengths and flags beyond the ABI's limits, unknown
//!   numbers, a timer in the past. Each must fail with the error the ABI names (or, for the
//!   legal ones, succeed), and the guest goes on.
//! - `case=balloon-lists`: inflate and deflate lists with duplicates, pages past the end of RAM,
//!   0xFFFF_FFFF, the local APIC's page, pages in the wrong state, too many pages. Every list is
//!   refused whole (the README's promise): afterwards the pages named in it are still there
//!   (the guest reads them; a page unmapped by a refused call would stop the VM).
//! - `case=hypercall-ballooned`: CONSOLE_WRITE text, CHECK and METRIC names and a balloon list
//!   in a page the guest gave back. Each must fail with `BadAddress` (the hypervisor must not
//!   read a page that is not there: today CONSOLE_WRITE prints zeros and says it wrote them), or
//!   the VM must stop as having touched a ballooned page.
//! - `case=balloon-own what=code|stack|page-table`: BALLOON_INFLATE of the page holding the
//!   guest's own code, stack or PML4. The balloon should refuse pages of the loaded image
//!   (issue 12, 6); failing that, the VM must stop as having touched a ballooned page.

use carousel_guests::hypercall::{self, decode_result, HypercallError};
use carousel_guests::{arch, BootInfo};
use carousel_protocol::hypercall::{
    Error, BALLOON_BATCH_MAX, BALLOON_DEFLATE, BALLOON_INFLATE, BALLOON_STATS, CHECK,
    CHECK_NAME_MAX, CONSOLE_WRITE, CONSOLE_WRITE_MAX, METRIC,
};

use crate::{ram_end, say, Report, FREE_RAM, PAGE};

/// A raw hypercall's decoded result.
fn call(number: u32, a: u32, b: u32, c: u32, d: u32) -> Result<u32, HypercallError> {
    decode_result(hypercall::hypercall(number, a, b, c, d))
}

/// Checks that a call failed with `error`.
fn expect_error(
    report: &mut Report,
    name: &str,
    result: Result<u32, HypercallError>,
    error: Error,
) {
    report.check_detail(
        name,
        result == Err(HypercallError::Defined(error)),
        format_args!("(got {result:?}, expected {error:?})"),
    );
}

pub fn arguments(boot: &BootInfo, report: &mut Report) {
    let end = ram_end(boot) as u32;
    let local_apic = 0xFEE0_0000u32;
    let name = b"name";
    let name_at = name.as_ptr() as usize as u32;
    let refused: [(&str, u32, [u32; 4], Error); 18] = [
        (
            "console-straddles-ram-end",
            CONSOLE_WRITE,
            [end - 8, 16, 0, 0],
            Error::BadAddress,
        ),
        (
            "console-at-ram-end",
            CONSOLE_WRITE,
            [end, 1, 0, 0],
            Error::BadAddress,
        ),
        (
            "console-wraps-4g",
            CONSOLE_WRITE,
            [0xFFFF_FFF8, 16, 0, 0],
            Error::BadAddress,
        ),
        (
            "console-in-lapic-page",
            CONSOLE_WRITE,
            [local_apic, 16, 0, 0],
            Error::BadAddress,
        ),
        (
            "console-too-long",
            CONSOLE_WRITE,
            [0x10_0000, CONSOLE_WRITE_MAX + 1, 0, 0],
            Error::InvalidArgument,
        ),
        (
            "check-name-straddles-ram-end",
            CHECK,
            [end - 4, 8, 1, 0],
            Error::BadAddress,
        ),
        (
            "check-name-wraps-4g",
            CHECK,
            [0xFFFF_FFFE, 4, 1, 0],
            Error::BadAddress,
        ),
        (
            "check-name-in-lapic-page",
            CHECK,
            [local_apic, 4, 1, 0],
            Error::BadAddress,
        ),
        (
            "check-name-too-long",
            CHECK,
            [name_at, CHECK_NAME_MAX + 1, 1, 0],
            Error::InvalidArgument,
        ),
        (
            "check-flag-2",
            CHECK,
            [name_at, 4, 2, 0],
            Error::InvalidArgument,
        ),
        (
            "metric-name-straddles-ram-end",
            METRIC,
            [end - 4, 8, 0, 0],
            Error::BadAddress,
        ),
        (
            "metric-name-wraps-4g",
            METRIC,
            [0xFFFF_FFFF, 2, 0, 0],
            Error::BadAddress,
        ),
        (
            "balloon-list-straddles-ram-end",
            BALLOON_INFLATE,
            [end - 4, 2, 0, 0],
            Error::BadAddress,
        ),
        (
            "balloon-list-wraps-4g",
            BALLOON_INFLATE,
            [0xFFFF_FFFC, 2, 0, 0],
            Error::BadAddress,
        ),
        (
            "balloon-list-in-lapic-page",
            BALLOON_DEFLATE,
            [local_apic, 1, 0, 0],
            Error::BadAddress,
        ),
        (
            "balloon-stats-3",
            BALLOON_STATS,
            [3, 0, 0, 0],
            Error::InvalidArgument,
        ),
        ("unknown-number-0", 0, [0; 4], Error::UnknownCall),
        ("unknown-number-12", 12, [0; 4], Error::UnknownCall),
    ];
    for (check, number, [a, b, c, d], error) in refused {
        expect_error(report, check, call(number, a, b, c, d), error);
    }
    let empty = call(CONSOLE_WRITE, 0x10_0000, 0, 0, 0);
    report.check_detail("console-empty", empty == Ok(0), format_args!("({empty:?})"));
    let last = call(CONSOLE_WRITE, end - 1, 0, 0, 0);
    report.check_detail(
        "console-empty-at-last-byte",
        last == Ok(0),
        format_args!("({last:?})"),
    );

    for number in [0x8000_0000, u32::MAX] {
        let result = call(number, 0, 0, 0, 0);
        report.check_detail(
            "unknown-number",
            result == Err(HypercallError::Defined(Error::UnknownCall)),
            format_args!("(number {number:#x}: {result:?})"),
        );
    }

    let past = arch::rdtsc().saturating_sub(1000).max(1);
    let armed = hypercall::set_timer(past);
    let before = arch::rdtsc();
    arch::halt();
    let waited = arch::rdtsc() - before;
    report.check_detail(
        "timer-in-the-past-does-not-block",
        armed.is_ok(),
        format_args!("(SET_TIMER {armed:?}; the HLT took {waited} cycles)"),
    );
    report.check(
        "console-still-works",
        hypercall::console_write(b"adversary: still printing\n").is_ok(),
    );
}

/// Whether the page at `address` can still be read (a page the hypervisor took away stops the
/// VM here).
fn touch(address: u64) -> u8 {
    // SAFETY: the page is this VM's RAM from 3 MiB, which nothing else in the guest uses.
    unsafe { core::ptr::read_volatile(address as usize as *const u8) }
}

fn pages(list: &[u32], inflate: bool) -> Result<u32, HypercallError> {
    if inflate {
        hypercall::balloon_inflate(list)
    } else {
        hypercall::balloon_deflate(list)
    }
}

pub fn balloon_lists(boot: &BootInfo, report: &mut Report) {
    let ram_pages = (ram_end(boot) / PAGE) as u32;
    let first = (FREE_RAM / PAGE) as u32;
    let second = first + 1;
    let refused: [(&str, &[u32], bool); 9] = [
        ("inflate-duplicate", &[first, first], true),
        ("inflate-past-end", &[ram_pages], true),
        ("inflate-u32-max", &[u32::MAX], true),
        ("inflate-good-then-bad", &[first, second, u32::MAX], true),
        ("inflate-bad-then-good", &[ram_pages + 5, first], true),
        ("inflate-lapic-page", &[0xFEE00], true),
        ("inflate-duplicate-far-apart", &[first, second, first], true),
        ("deflate-not-ballooned", &[first], false),
        ("deflate-past-end", &[ram_pages], false),
    ];
    for (name, list, inflate) in refused {
        let result = pages(list, inflate);
        report.check_detail(
            name,
            result.is_err(),
            format_args!("({list:x?}: {result:?})"),
        );
        touch(FREE_RAM);
        touch(FREE_RAM + PAGE);
    }
    let stats = hypercall::balloon_stats(0);
    report.check_detail(
        "nothing-ballooned-after-refusals",
        stats == Ok(0),
        format_args!("({stats:?})"),
    );

    let long = [first; BALLOON_BATCH_MAX as usize + 1];
    let result = hypercall::balloon_inflate(&long);
    report.check_detail(
        "inflate-too-many",
        result == Err(HypercallError::Defined(Error::InvalidArgument)),
        format_args!("({result:?})"),
    );
    let empty = call(BALLOON_INFLATE, first * 4096, 0, 0, 0);
    report.check_detail(
        "inflate-empty-list",
        empty.is_err(),
        format_args!("({empty:?})"),
    );

    report.check("inflate-one", hypercall::balloon_inflate(&[first]) == Ok(1));
    report.check(
        "inflate-it-again",
        hypercall::balloon_inflate(&[first]).is_err(),
    );
    report.check(
        "deflate-duplicate",
        hypercall::balloon_deflate(&[first, first]).is_err(),
    );
    report.check(
        "deflate-with-a-page-not-ballooned",
        hypercall::balloon_deflate(&[first, second]).is_err(),
    );
    report.check("still-ballooned", hypercall::balloon_stats(0) == Ok(1));
    touch(FREE_RAM + PAGE);
    report.check("deflate-one", hypercall::balloon_deflate(&[first]) == Ok(1));
    report.check("deflated-page-is-zero", touch(FREE_RAM) == 0);
    report.check(
        "nothing-ballooned-at-the-end",
        hypercall::balloon_stats(0) == Ok(0),
    );
}

pub fn balloon_own(boot: &BootInfo, report: &mut Report) {
    let what = boot.arg("what").unwrap_or("code");
    let stack_marker = 0u8;
    let address = match what {
        "stack" => &stack_marker as *const u8 as u64,
        "page-table" => arch::read_cr3() & !0xFFF,
        _ => balloon_own as fn(&BootInfo, &mut Report) as usize as u64,
    };
    let page = (address / PAGE) as u32;
    say!("BALLOON_INFLATE of the page holding the guest's own {what}: {page:#x}");
    let result = hypercall::balloon_inflate(&[page]);
    // If the hypervisor took the page, the guest stops at its next touch of it: right here, for
    // code and stack (the page table page at the next TLB miss, forced by reloading CR3).
    // SAFETY: reloading CR3 with its own value only flushes translations.
    unsafe { arch::write_cr3(arch::read_cr3()) };
    report.check_detail(
        "balloon-refuses-own-image",
        result.is_err(),
        format_args!("({result:?})"),
    );
    touch(address);
}

pub fn ballooned_buffers(report: &mut Report) {
    let page = FREE_RAM + PAGE;
    let number = (page / PAGE) as u32;
    // The name and list that will lie in the page, written while it is still there.
    // SAFETY: the page is this VM's RAM from 3 MiB, which nothing else in the guest uses.
    unsafe {
        core::ptr::write_volatile(page as usize as *mut [u8; 16], *b"ballooned-name\n\n");
        core::ptr::write_volatile((page + 16) as usize as *mut u32, number - 1);
    }
    let inflated = hypercall::balloon_inflate(&[number]);
    report.check_detail("inflate", inflated == Ok(1), format_args!("({inflated:?})"));
    let at = page as u32;
    let refused: [(&str, u32, [u32; 4]); 4] = [
        ("console-from-ballooned-page", CONSOLE_WRITE, [at, 16, 0, 0]),
        ("check-name-in-ballooned-page", CHECK, [at, 14, 1, 0]),
        ("metric-name-in-ballooned-page", METRIC, [at, 14, 0, 0]),
        (
            "balloon-list-in-ballooned-page",
            BALLOON_INFLATE,
            [at + 16, 1, 0, 0],
        ),
    ];
    for (check, number, [a, b, c, d]) in refused {
        expect_error(report, check, call(number, a, b, c, d), Error::BadAddress);
    }
    let deflated = hypercall::balloon_deflate(&[number]);
    report.check_detail("deflate", deflated == Ok(1), format_args!("({deflated:?})"));
}
