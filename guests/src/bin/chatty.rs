//! `chatty`: a guest that talks as fast as it can. It prints `bytes` bytes of console text
//! (default 256 KiB) in lines of `line` bytes (default 64, newline included), every
//! `port_every`-th line through COM1 (polled, two port exits a byte, as a driver does) and the
//! rest through CONSOLE_WRITE in 4-KiB batches, while sending `checks` CHECKs and `metrics`
//! METRICs spread over the lines. At the end it prints the FNV-1a 64 checksum of everything it
//! printed (`chatty: done, N bytes in L lines, fnv1a64 0x...`), so the host can check that
//! every byte arrived intact and in order (issue 13, "Tests").
//!
//! Line `i` reads `chatty NNNNNN ` (i, six digits) and then letters from `a + i mod 26` on, up to
//! its length; the newline ends it.
//!
//! Arguments (`key=value`, all optional): `bytes`, `line` (16 to 4096), `port_every` (0: none
//! through COM1), `checks`, `metrics`.
#![no_std]
#![no_main]

use carousel_guests::{entry, hypercall, print, BootInfo};
use carousel_protocol::hypercall::{CONSOLE_WRITE_MAX, EXIT_FAILURE, EXIT_SUCCESS};

entry!(main);

/// FNV-1a 64 (the host's `carousel_protocol::config::fnv1a64`).
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

fn fnv(hash: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(hash, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// Line `index`, `length` bytes with its newline, into `out`.
fn fill_line(out: &mut [u8], index: u64) {
    let length = out.len();
    out.fill(b' ');
    out[..7].copy_from_slice(b"chatty ");
    let mut number = index;
    for slot in out[7..13].iter_mut().rev() {
        *slot = b'0' + (number % 10) as u8;
        number /= 10;
    }
    for (offset, slot) in out[14..length - 1].iter_mut().enumerate() {
        *slot = b'a' + ((index + offset as u64) % 26) as u8;
    }
    out[length - 1] = b'\n';
}

fn send(batch: &[u8]) {
    if !batch.is_empty() && hypercall::console_write(batch).is_err() {
        print!("chatty: CONSOLE_WRITE failed\n");
        hypercall::exit(EXIT_FAILURE)
    }
}

fn main(boot: &BootInfo) -> ! {
    let bytes = boot.number("bytes", 256 << 10);
    let line = boot.number("line", 64).clamp(16, 4096) as usize;
    let port_every = boot.number("port_every", 8);
    let checks = boot.number("checks", 1024);
    let metrics = boot.number("metrics", 4096);
    let lines = bytes / line as u64;
    let check_every = lines.checked_div(checks).unwrap_or(u64::MAX).max(1);
    let metric_every = lines.checked_div(metrics).unwrap_or(u64::MAX).max(1);
    let mut batch = [0u8; CONSOLE_WRITE_MAX as usize];
    let mut used = 0;
    let mut hash = FNV_OFFSET_BASIS;
    let mut printed: u64 = 0;
    let mut text = [0u8; 4096];
    for index in 0..lines {
        let text = &mut text[..line];
        fill_line(text, index);
        hash = fnv(hash, text);
        printed += line as u64;
        if port_every != 0 && index % port_every == 0 {
            send(&batch[..used]);
            used = 0;
            // The line is ASCII by construction.
            print!("{}", core::str::from_utf8(text).unwrap_or("?\n"));
        } else {
            if used + line > batch.len() {
                send(&batch[..used]);
                used = 0;
            }
            batch[used..used + line].copy_from_slice(text);
            used += line;
        }
        if index % check_every == 0 {
            let _ = hypercall::check("chatty-line", true);
        }
        if index % metric_every == 0 {
            let _ = hypercall::metric("chatty_bytes", printed);
        }
    }
    send(&batch[..used]);
    let _ = hypercall::metric("chatty_bytes", printed);
    print!("chatty: done, {printed} bytes in {lines} lines, fnv1a64 {hash:#018x}\n");
    hypercall::exit(EXIT_SUCCESS)
}
