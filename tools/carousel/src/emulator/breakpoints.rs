//! Tick counts at code addresses, read from Bochs' debugger: a script of linear-address
//! breakpoints for `-rc`, and the hits the debugger printed. In Bochs the tick count is the
//! instruction count and the TSC (BOCHS.md), so two hits give the cycles between two points of
//! a guest without touching the guest. Breakpoints check the linear address of whatever runs,
//! in VMX non-root mode too, so they work for a guest under Carousel and for one booted
//! natively alike.

use elf::endian::AnyEndian;
use elf::ElfBytes;

/// The debugger commands that stop at each of `addresses` in turn (the next is set once the
/// previous has been hit, and each is deleted when hit) and then either run on to the end
/// (`then_run`) or stop the emulator: the debugger reads its next command from stdin, which
/// is empty, and Bochs quits.
pub fn script(addresses: &[u64], then_run: bool) -> String {
    let mut script = String::new();
    for (index, address) in addresses.iter().enumerate() {
        script.push_str(&format!("lb {address:#x}\nc\nd {}\n", index + 1));
    }
    if then_run {
        script.push_str("c\n");
    }
    script
}

/// Why no address came out of a kernel's symbol table.
#[derive(Debug, thiserror::Error)]
pub enum SymbolError {
    #[error("not an ELF file ({0})")]
    NotElf(elf::ParseError),
    #[error("its symbol table is damaged ({0})")]
    Damaged(elf::ParseError),
    #[error("it has no symbol table (was it stripped?)")]
    Stripped,
    #[error("no symbol matches")]
    NoMatch,
}

/// The address of the first symbol (of non-zero value) of the ELF `bytes` whose name
/// `matches`: where to break.
pub fn symbol_address(bytes: &[u8], matches: impl Fn(&str) -> bool) -> Result<u64, SymbolError> {
    let file = ElfBytes::<AnyEndian>::minimal_parse(bytes).map_err(SymbolError::NotElf)?;
    let (symbols, names) = file
        .symbol_table()
        .map_err(SymbolError::Damaged)?
        .ok_or(SymbolError::Stripped)?;
    symbols
        .iter()
        .find(|symbol| {
            symbol.st_value != 0 && names.get(symbol.st_name as usize).is_ok_and(&matches)
        })
        .map(|symbol| symbol.st_value)
        .ok_or(SymbolError::NoMatch)
}

/// One stop at a breakpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hit {
    /// The linear address of the breakpoint.
    pub address: u64,
    /// Bochs' tick count when it stopped there.
    pub tick: u64,
}

/// The breakpoint stops in the debugger's output, in order. A stop prints
/// `(0) Breakpoint N, 0x00000000801030c0 in ?? ()` and then `Next at t=TICKS`; other lines
/// (and whatever else shares the output, such as port 0xE9 text) are skipped.
pub fn hits(output: &str) -> Vec<Hit> {
    let mut hits = Vec::new();
    let mut pending = None;
    for line in output.lines() {
        if let Some(address) = breakpoint_address(line) {
            pending = Some(address);
        } else if let Some(tick) = line
            .trim()
            .strip_prefix("Next at t=")
            .and_then(|tick| tick.trim().parse().ok())
        {
            if let Some(address) = pending.take() {
                hits.push(Hit { address, tick });
            }
        }
    }
    hits
}

/// The address of a `Breakpoint N, 0xADDR in …` line.
fn breakpoint_address(line: &str) -> Option<u64> {
    let (_, rest) = line.split_once("Breakpoint ")?;
    let (number, rest) = rest.split_once(", 0x")?;
    number.parse::<u32>().ok()?;
    let hex = rest.split_whitespace().next()?;
    u64::from_str_radix(hex, 16).ok()
}

/// The ticks from a hit at `from` to the first later hit at `to`.
pub fn ticks_between(hits: &[Hit], from: u64, to: u64) -> Option<(u64, u64)> {
    let start = hits.iter().position(|hit| hit.address == from)?;
    let end = hits[start..].iter().find(|hit| hit.address == to)?;
    Some((hits[start].tick, end.tick))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Bochs 2.7 printed for `script(&[main, consoleread], false)` on native xv6.
    const NATIVE: &str = "\
========================================================================
Next at t=0
(0) [0x0000fffffff0] f000:fff0 (unk. ctxt): jmpf 0xf000:e05b          ; ea5be000f0
(0) Breakpoint 1, 0x00000000801030c0 in ?? ()
Next at t=3989326
(0) [0x0000001030c0] 0008:00000000801030c0 (unk. ctxt): lea ecx, ss:[esp+4]       ; 8d4c2404
(0) Breakpoint 2, 0x0000000080100280 in ?? ()
Next at t=77033759
(0) [0x000000100280] 0008:0000000080100280 (unk. ctxt): push ebp                  ; 55
<bochs:1> fgets() returned ERROR.
debugger interrupt request was 0
(0).[77033759] [0x000000100280] 0008:0000000080100280 (unk. ctxt): push ebp                  ; 55
";

    #[test]
    fn reads_the_stops_of_a_real_run() {
        let hits = hits(NATIVE);
        assert_eq!(
            hits,
            [
                Hit {
                    address: 0x8010_30c0,
                    tick: 3_989_326
                },
                Hit {
                    address: 0x8010_0280,
                    tick: 77_033_759
                },
            ]
        );
        assert_eq!(
            ticks_between(&hits, 0x8010_30c0, 0x8010_0280),
            Some((3_989_326, 77_033_759))
        );
        assert_eq!(ticks_between(&hits, 0x8010_0280, 0x8010_30c0), None);
        assert_eq!(ticks_between(&hits, 0x1234, 0x8010_0280), None);
    }

    #[test]
    fn a_stop_without_its_tick_is_not_a_hit() {
        assert!(hits("(0) Breakpoint 1, 0x0000000000001000 in ?? ()\n").is_empty());
        assert!(hits("Next at t=5\n").is_empty());
        assert!(hits("(0) Breakpoint x, 0x10 in\nNext at t=5\n").is_empty());
    }

    #[test]
    fn scripts_set_each_breakpoint_after_the_previous() {
        assert_eq!(
            script(&[0x10, 0x20], true),
            "lb 0x10\nc\nd 1\nlb 0x20\nc\nd 2\nc\n"
        );
        assert_eq!(script(&[0x10], false), "lb 0x10\nc\nd 1\n");
    }
}
