//! The balloon hypercalls' argument checks in the kernel's host-tested library
//! (`carousel_kernel::balloon`): random inflate and deflate lists against a VM of random size,
//! checked against a reference balloon (a `BTreeSet` of pages), plus the balloon rule and the
//! page budget.
//!
//! Invariants:
//! - nothing panics;
//! - a list is accepted exactly when it has 1 to `BALLOON_BATCH_MAX` pages, no page twice, every
//!   page inside the VM's RAM and in the right state (not ballooned for an inflate, ballooned for
//!   a deflate); a refusal is `BadAddress` only when some page is outside RAM and
//!   `InvalidArgument` only when the list breaks another rule;
//! - after the accepted lists are applied the balloon holds exactly the reference's pages, its
//!   count and totals agree, and `contains` agrees on every page (and past the end);
//! - the rule asks only a VM that can still give (target below its maximum, idle pages), for a
//!   target above its current one and at most its maximum, and only when memory is short;
//!   the budget never offers more than the allocator has or than the limit leaves.
#![no_main]

use std::collections::BTreeSet;

use arbitrary::{Result, Unstructured};
use carousel_kernel::balloon::{Balloon, Budget, Candidate, Rule};
use carousel_protocol::hypercall::{Error, BALLOON_BATCH_MAX};
use libfuzzer_sys::fuzz_target;

/// Most requests one input makes.
const MAX_REQUESTS: usize = 256;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = run(&mut u);
});

/// A page number: mostly in or just past RAM, sometimes anything.
fn page(u: &mut Unstructured, pages: u64) -> Result<u32> {
    Ok(match u.int_in_range(0..=7u8)? {
        0 => u.arbitrary()?,
        1 => pages.min(u64::from(u32::MAX)) as u32,
        _ => u.int_in_range(0..=(pages + 2).min(u64::from(u32::MAX)))? as u32,
    })
}

fn list(u: &mut Unstructured, pages: u64, reference: &BTreeSet<u32>) -> Result<Vec<u32>> {
    let len = match u.int_in_range(0..=15u8)? {
        0 => 0,
        1 => BALLOON_BATCH_MAX as usize + u.int_in_range(0..=2usize)?,
        2 => BALLOON_BATCH_MAX as usize,
        _ => u.int_in_range(1..=16usize)?,
    };
    let mut list = Vec::with_capacity(len);
    for _ in 0..len {
        // Sometimes a page the balloon holds (for deflates), sometimes a repeat.
        let entry = match u.int_in_range(0..=7u8)? {
            0 if !reference.is_empty() => {
                let index = u.int_in_range(0..=reference.len() - 1)?;
                *reference.iter().nth(index).expect("in range")
            }
            1 if !list.is_empty() => *u.choose(&list)?,
            _ => page(u, pages)?,
        };
        list.push(entry);
    }
    Ok(list)
}

/// What the reference says about `list`: accepted, or the rules it breaks.
struct Verdict {
    accepted: bool,
    out_of_range: bool,
    other_fault: bool,
}

fn verdict(list: &[u32], pages: u64, reference: &BTreeSet<u32>, deflate: bool) -> Verdict {
    let unique: BTreeSet<u32> = list.iter().copied().collect();
    let bad_length = list.is_empty() || list.len() > BALLOON_BATCH_MAX as usize;
    let duplicates = unique.len() != list.len();
    let out_of_range = list.iter().any(|&page| u64::from(page) >= pages);
    let wrong_state = list
        .iter()
        .any(|&page| u64::from(page) < pages && reference.contains(&page) != deflate);
    Verdict {
        accepted: !(bad_length || duplicates || out_of_range || wrong_state),
        out_of_range,
        other_fault: bad_length || duplicates || wrong_state,
    }
}

fn run(u: &mut Unstructured) -> Result<()> {
    let pages: u64 = match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(0..=3u64)?,
        1 => u.int_in_range(0..=70_000u64)?,
        _ => u.int_in_range(1..=300u64)?,
    };
    let target: u64 = u.arbitrary()?;
    let mut balloon = Balloon::new(pages, target);
    assert_eq!(balloon.target, target.min(pages));
    assert_eq!(balloon.count(), 0);
    let mut reference: BTreeSet<u32> = BTreeSet::new();
    let (mut inflated, mut deflated) = (0u64, 0u64);

    for _ in 0..MAX_REQUESTS {
        if u.is_empty() {
            break;
        }
        if u.ratio(1, 8)? {
            rule_and_budget(u)?;
            continue;
        }
        let deflate: bool = u.arbitrary()?;
        let list = list(u, pages, &reference)?;
        let result = if deflate {
            balloon.check_deflate(&list)
        } else {
            balloon.check_inflate(&list)
        };
        let expected = verdict(&list, pages, &reference, deflate);
        match result {
            Ok(()) => {
                assert!(
                    expected.accepted,
                    "accepted {list:?} (deflate {deflate}) of {pages} pages"
                );
                if deflate {
                    balloon.deflated(&list);
                    deflated += list.len() as u64;
                    for page in &list {
                        reference.remove(page);
                    }
                } else {
                    balloon.inflated(&list);
                    inflated += list.len() as u64;
                    reference.extend(list.iter().copied());
                }
            }
            Err(error) => {
                assert!(
                    !expected.accepted,
                    "refused {list:?} with {error:?} (deflate {deflate})"
                );
                match error {
                    Error::BadAddress => assert!(expected.out_of_range, "BadAddress for {list:?}"),
                    Error::InvalidArgument => {
                        assert!(expected.other_fault, "InvalidArgument for {list:?}");
                    }
                    other => panic!("{other:?} from a balloon check"),
                }
            }
        }
        assert_eq!(balloon.count(), reference.len() as u64);
        for &page in &list {
            assert_eq!(
                balloon.contains(u64::from(page)),
                reference.contains(&page),
                "page {page}"
            );
        }
    }
    assert!(balloon
        .pages()
        .eq(reference.iter().map(|&page| u64::from(page))));
    assert!(!balloon.contains(pages) && !balloon.contains(u64::MAX));
    assert_eq!(
        (balloon.inflated_total, balloon.deflated_total),
        (inflated, deflated)
    );
    Ok(())
}

fn rule_and_budget(u: &mut Unstructured) -> Result<()> {
    let rule = Rule {
        free_below_pct: u.int_in_range(0..=120u32)?,
        step_pages: u.arbitrary()?,
    };
    // Page counts a machine can have (2^48 pages is an exbibyte): the rule's products saturate
    // far beyond that.
    const MOST_PAGES: u64 = 1 << 48;
    let available: u64 = u.int_in_range(0..=MOST_PAGES)?;
    let pool: u64 = if u.arbitrary()? {
        u.int_in_range(0..=1000u64)?
    } else {
        u.int_in_range(0..=MOST_PAGES)?
    };
    let count = u.int_in_range(0..=6usize)?;
    let mut candidates = Vec::with_capacity(count);
    for vm in 0..count {
        let max_target: u64 = u.int_in_range(0..=1 << 20)?;
        let idle_pages = u.int_in_range(0..=1 << 20)?;
        candidates.push(Candidate {
            vm: vm as u16,
            idle_pages,
            // Mostly within the idle pages; sometimes beyond (the rule must not trust it).
            compressible_pages: u.int_in_range(0..=idle_pages + 16)?,
            target: u.int_in_range(0..=max_target)?,
            max_target,
        });
    }
    // Compression's idle pages count as reclaimable: short only when they are not enough.
    let soon: u128 = candidates
        .iter()
        .map(|c| u128::from(c.compressible_pages.min(c.idle_pages)))
        .sum();
    let short = pool != 0
        && (u128::from(available) + soon) * 100
            < u128::from(pool) * u128::from(rule.free_below_pct);
    match rule.decide(available, pool, &candidates) {
        Some((vm, target)) => {
            assert!(short, "asked with {available} of {pool} free");
            let candidate = candidates.iter().find(|c| c.vm == vm).expect("a listed VM");
            assert!(candidate.target < candidate.max_target && candidate.idle_pages > 0);
            assert!(
                target > candidate.target || rule.step_pages == 0,
                "{candidate:?} -> {target}"
            );
            assert!(target <= candidate.max_target);
            // First by what only the balloon returns, then by idle pages.
            let rank = |c: &Candidate| {
                (
                    c.idle_pages.saturating_sub(c.compressible_pages),
                    c.idle_pages,
                )
            };
            let best = candidates
                .iter()
                .filter(|c| c.target < c.max_target && c.idle_pages > 0)
                .map(rank)
                .max();
            assert_eq!(
                Some(rank(candidate)),
                best,
                "not the VM the rule ranks first"
            );
        }
        None => assert!(
            !short
                || !candidates
                    .iter()
                    .any(|c| c.target < c.max_target && c.idle_pages > 0),
            "nobody asked though memory is short"
        ),
    }
    let budget = Budget {
        limit: if u.arbitrary()? {
            Some(u.arbitrary()?)
        } else {
            None
        },
        backed: u.arbitrary()?,
        peak: 0,
    };
    let free: u64 = u.arbitrary()?;
    let offered = budget.available(free);
    assert!(offered <= free);
    if let Some(limit) = budget.limit {
        assert!(offered <= limit.saturating_sub(budget.backed));
    }
    Ok(())
}
