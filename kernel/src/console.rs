//! COM1, the human-readable stream: the hypervisor's log lines (`[carousel] ...`) and each VM's
//! console lines (`[<vm name>] ...`), line by line. The host tool relies on both prefixes.
//!
//! Each VM has its own queue of bounded size (its share of the line), the hypervisor another;
//! the UART takes whole lines from them in turn ([`ConsoleMux::drain`]), so one VM's flood
//! delays another VM's line by at most one line of each other source, and never fills another's
//! share. A VM whose queue has no room for one more line must wait (the run loop blocks it,
//! `blocked on console`); nothing is ever dropped and nothing waits in root mode.
//!
//! Bytes that are not printable ASCII are written as `\xNN`, so a guest can neither forge
//! another VM's prefix (a line break is never its own) nor control the host's terminal.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use carousel_devices::line_buffer::LINE_CAPACITY;

/// Prefix of the hypervisor's own lines.
pub const PREFIX: &str = "[carousel] ";
/// Longest VM name shown (longer ones are cut; the lab file refuses them anyway).
pub const NAME_MAX: usize = 64;
/// The most bytes one VM console line takes on COM1: prefix, the line escaped, newline.
pub const LINE_MAX_BYTES: usize = NAME_MAX + 3 + 4 * LINE_CAPACITY + 1;
/// Bytes of COM1 text one VM may have waiting.
pub const VM_SHARE_BYTES: usize = 4 * LINE_MAX_BYTES;

/// Where a line comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Source {
    Log,
    Vm(usize),
}

/// The sources of COM1 text and the line being sent.
#[derive(Debug)]
pub struct ConsoleMux {
    log: VecDeque<u8>,
    vms: Vec<VecDeque<u8>>,
    names: Vec<String>,
    /// The source whose line is on its way (lines are never interleaved).
    current: Option<Source>,
    /// Where the round robin goes on.
    next: usize,
    /// Bytes waiting in the VMs' queues, all told (draining an idle mux is one comparison).
    vm_bytes: usize,
}

impl Default for ConsoleMux {
    fn default() -> Self {
        Self::new()
    }
}

impl ConsoleMux {
    /// No VMs yet; nothing allocated (fit for a `static`).
    pub const fn new() -> Self {
        Self {
            log: VecDeque::new(),
            vms: Vec::new(),
            names: Vec::new(),
            current: None,
            next: 0,
            vm_bytes: 0,
        }
    }

    /// Adds VM queues for these names (VM ids in order).
    pub fn set_vms<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.names = names
            .into_iter()
            .map(|name| name.chars().take(NAME_MAX).collect())
            .collect();
        self.vms = self
            .names
            .iter()
            .map(|_| VecDeque::with_capacity(VM_SHARE_BYTES))
            .collect();
    }

    /// Queues the hypervisor's own text (it comes in whole lines; never refused).
    pub fn log(&mut self, text: &str) {
        self.log.extend(text.as_bytes());
    }

    /// True when VM `vm`'s queue has room for one more line of any length.
    pub fn vm_has_room(&self, vm: u16) -> bool {
        self.vms
            .get(usize::from(vm))
            .is_none_or(|queue| queue.len() + LINE_MAX_BYTES <= VM_SHARE_BYTES)
    }

    /// Queues one console line of VM `vm` (without its newline), prefixed and escaped. The
    /// caller has checked [`Self::vm_has_room`]; a VM without a queue has its line written to
    /// the log instead.
    pub fn vm_line(&mut self, vm: u16, line: &[u8]) {
        let mut text = String::with_capacity(LINE_MAX_BYTES);
        let name = self.names.get(usize::from(vm)).map_or("?", String::as_str);
        let _ = write!(text, "[{name}] ");
        escape_into(&mut text, line);
        text.push('\n');
        match self.vms.get_mut(usize::from(vm)) {
            Some(queue) => {
                queue.extend(text.as_bytes());
                self.vm_bytes += text.len();
            }
            None => self.log.extend(text.as_bytes()),
        }
    }

    /// True when text waits.
    pub fn pending(&self) -> bool {
        !self.log.is_empty() || self.vm_bytes > 0
    }

    /// Hands waiting text to `send` (which returns how many bytes it took, 0 when the UART is
    /// busy), a whole line from each source in turn.
    pub fn drain(&mut self, mut send: impl FnMut(&[u8]) -> usize) {
        while self.pending() {
            let Some(source) = self.current.or_else(|| self.pick()) else {
                return;
            };
            self.current = Some(source);
            let queue = match source {
                Source::Log => &mut self.log,
                Source::Vm(vm) => &mut self.vms[vm],
            };
            // Up to the end of the line.
            let (front, _) = queue.as_slices();
            let end = front
                .iter()
                .position(|&byte| byte == b'\n')
                .map_or(front.len(), |at| at + 1);
            let sent = send(&front[..end]);
            let ended = sent == end && front.get(end - 1) == Some(&b'\n');
            queue.drain(..sent);
            if matches!(source, Source::Vm(_)) {
                self.vm_bytes -= sent;
            }
            if ended || queue.is_empty() {
                self.current = None;
            }
            if sent == 0 {
                return;
            }
        }
    }

    /// The next source with text: the log first, then the VMs in turn.
    fn pick(&mut self) -> Option<Source> {
        if !self.log.is_empty() {
            return Some(Source::Log);
        }
        let count = self.vms.len();
        (0..count)
            .map(|step| (self.next + step) % count)
            .find(|&vm| !self.vms[vm].is_empty())
            .map(|vm| {
                self.next = (vm + 1) % count;
                Source::Vm(vm)
            })
    }
}

/// Appends `bytes` to `text`, printable ASCII and tabs as they are, anything else as `\xNN`.
pub fn escape_into(text: &mut String, bytes: &[u8]) {
    for &byte in bytes {
        if (0x20..0x7F).contains(&byte) || byte == b'\t' {
            text.push(char::from(byte));
        } else {
            let _ = write!(text, "\\x{byte:02x}");
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn drain_all(mux: &mut ConsoleMux) -> String {
        let mut out = Vec::new();
        mux.drain(|bytes| {
            out.extend_from_slice(bytes);
            bytes.len()
        });
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn lines_are_prefixed_and_escaped() {
        let mut mux = ConsoleMux::new();
        mux.set_vms(["a", "b"]);
        mux.vm_line(1, b"\x1b[2J\r[carousel] PANIC: forged");
        assert_eq!(
            drain_all(&mut mux),
            "[b] \\x1b[2J\\x0d[carousel] PANIC: forged\n"
        );
    }

    #[test]
    fn a_flooding_vm_fills_only_its_own_share() {
        let mut mux = ConsoleMux::new();
        mux.set_vms(["flood", "quiet"]);
        while mux.vm_has_room(0) {
            mux.vm_line(0, &[b'x'; LINE_CAPACITY]);
        }
        assert!(mux.vm_has_room(1));
        mux.vm_line(1, b"hello");
        // Draining a line at a time: the quiet VM's line comes second.
        let mut lines = Vec::new();
        for _ in 0..2 {
            let mut line = Vec::new();
            let mut done = false;
            mux.drain(|bytes| {
                if done {
                    return 0;
                }
                line.extend_from_slice(bytes);
                done = bytes.ends_with(b"\n");
                bytes.len()
            });
            lines.push(String::from_utf8(line).unwrap());
        }
        assert!(lines[0].starts_with("[flood] "));
        assert_eq!(lines[1], "[quiet] hello\n");
    }

    #[test]
    fn a_busy_uart_never_interleaves_lines() {
        let mut mux = ConsoleMux::new();
        mux.set_vms(["a", "b"]);
        mux.vm_line(0, b"first line of a");
        mux.vm_line(1, b"line of b");
        mux.log("[carousel] log\n");
        let mut out = Vec::new();
        // Three bytes at a time.
        loop {
            let mut budget = 3;
            let before = out.len();
            mux.drain(|bytes| {
                let take = bytes.len().min(budget);
                budget -= take;
                out.extend_from_slice(&bytes[..take]);
                take
            });
            if out.len() == before {
                break;
            }
        }
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(lines.contains(&"[a] first line of a"));
        assert!(lines.contains(&"[b] line of b"));
        assert!(lines.contains(&"[carousel] log"));
    }

    proptest! {
        /// Whatever a guest prints, its lines carry no control byte and no line break of their
        /// own, and the share bound holds.
        #[test]
        fn guest_bytes_never_reach_the_terminal_raw(lines in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..LINE_CAPACITY), 1..20)) {
            let mut mux = ConsoleMux::new();
            mux.set_vms(["vm"]);
            let mut expected = 0;
            for line in &lines {
                if mux.vm_has_room(0) {
                    mux.vm_line(0, line);
                    expected += 1;
                }
                prop_assert!(mux.vms[0].len() <= VM_SHARE_BYTES);
            }
            let text = drain_all(&mut mux);
            prop_assert_eq!(text.lines().count(), expected);
            for line in text.lines() {
                prop_assert!(line.starts_with("[vm] "));
                prop_assert!(line.bytes().all(|byte| (0x20..0x7F).contains(&byte) || byte == b'\t'));
            }
        }
    }
}
