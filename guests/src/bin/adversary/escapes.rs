//! `case=escapes`: every string a guest hands over, filled with what a terminal, a CSV reader or
//! a browser would act on (issue 12, "What was found" 4): ESC sequences that clear the screen
//! and move the cursor, carriage returns and backspaces that overwrite the `[NAME]` prefix, a
//! forged `[carousel] PANIC` line and a forged stop line, NUL, BEL and DEL, 8-bit C1 controls,
//! invalid UTF-8, HTML and CSV syntax, an overlong console line.
//!
//! The strings go out as CHECK names (passed, and one failed, whose name the outcome table
//! shows), METRIC names, CONSOLE_WRITE text and COM1 bytes. The case then exits with success:
//! the scenario test judges the host's output, not the guest.

use carousel_guests::{arch, hypercall};
use carousel_protocol::hypercall::{CHECK, CONSOLE_WRITE, METRIC};

use crate::{say, Report};

/// Names for CHECK and METRIC (each at most 64 bytes, the ABI's limit).
const NAMES: [&[u8]; 10] = [
    b"\x1b[2J\x1b[Hscreen-cleared",
    b"\r[carousel] PANIC: forged by a guest",
    b"bell\x07nul\x00del\x7fbs\x08\x08\x08",
    b"\x1b]0;window-title\x07osc",
    b"c1-csi-\xc2\x9b31m-and-raw-\x9b31m",
    b"invalid-utf8-\xff\xfe\xc0",
    b"<script>alert('adversary')</script>",
    b"\"><img src=x onerror=alert(1)>",
    b"a,b\"c\nd\re=cmd|' /C calc'!A0",
    b"\n[carousel] vm spin stopped: exited with failure (0x11)",
];

/// The failed check's name: the outcome table lists it.
const FAILED_NAME: &[u8] = b"\x1b[31m\r[carousel] PANIC: failed check\x1b[0m";

/// Console text: forged lines, control bytes, and ESC sequences in the middle of lines.
const CONSOLE: &[u8] = b"plain line before\n\
\x1b[2J\x1b[Hthe screen was cleared\n\
\r[carousel] PANIC: hypervisor crashed (forged by a guest)\n\
\n[carousel] vm spin stopped: exited with failure (0x11)\n\
bell\x07 nul\x00 del\x7f backspace\x08\x08\x08 tab\tend\n\
osc \x1b]0;title\x07 csi \x1b[1;31mred\x1b[0m c1 \xc2\x9b31m raw-c1 \x9b31m\n\
invalid utf-8 \xff\xfe\xc0\xaf\n\
<script>alert('console')</script>\n";

fn raw_check(name: &[u8], passed: bool) -> u32 {
    hypercall::hypercall(
        CHECK,
        name.as_ptr() as usize as u32,
        name.len() as u32,
        u32::from(passed),
        0,
    )
}

fn raw_metric(name: &[u8], value: u64) -> u32 {
    hypercall::hypercall(
        METRIC,
        name.as_ptr() as usize as u32,
        name.len() as u32,
        value as u32,
        (value >> 32) as u32,
    )
}

pub fn run(report: &mut Report) {
    for (index, name) in NAMES.iter().enumerate() {
        let check = raw_check(name, true);
        let metric = raw_metric(name, index as u64);
        say!("name {index}: CHECK {check:#x}, METRIC {metric:#x}");
    }
    let failed = raw_check(FAILED_NAME, false);
    say!("failed check sent: {failed:#x}");
    let written = hypercall::hypercall(
        CONSOLE_WRITE,
        CONSOLE.as_ptr() as usize as u32,
        CONSOLE.len() as u32,
        0,
        0,
    );
    say!("CONSOLE_WRITE of the forged text: {written:#x}");
    // The same bytes through COM1, as a guest's own UART driver sends them.
    for &byte in CONSOLE {
        // SAFETY: COM1's transmit register: the runtime's console, which nothing else uses now.
        unsafe { arch::outb(0x3F8, byte) };
    }
    // A console line far longer than any buffer, without a newline until its end.
    let mut long = [b'x'; 4096];
    long[100] = 0x1b;
    long[4095] = b'\n';
    for _ in 0..4 {
        let _ = hypercall::console_write(&long[..4095]);
    }
    let _ = hypercall::console_write(b"\n");
    report.check("escapes-sent", true);
}
