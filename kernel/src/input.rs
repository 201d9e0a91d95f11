//! Console input from the host: bytes arriving on the hypervisor's COM1 go to one VM, the
//! focused one. The host speaks in band after the escape byte [`FOCUS`]:
//! - [`FOCUS`] again: one literal [`FOCUS`] byte for the focused VM;
//! - [`FOCUS_BASE`] + id: focus VM `id` (ids up to 127);
//! - [`END_RUN`]: end the run (every VM still running stops, then the usual end of run:
//!   summaries, disk write-back, RunEnd).
//! - [`SETTING`], then [`SETTING_LEN`] bytes: a request to change a scheduler setting (the
//!   console's `~quantum`, `~weight`, `~cap`; laid out as [`Setting::to_request`] says). The
//!   router only frames it; whoever types on the console can send anything here, so the run
//!   loop checks it as it checks a lab file, and refuses (and counts) what does not hold.
//!
//! `carousel run` speaks this protocol for the user's keystrokes and for scripted input.

use carousel_protocol::config::{Setting, SETTING_REQUEST_LEN};

/// Escape byte of the focus protocol (ASCII GS, Ctrl-]).
pub const FOCUS: u8 = 0x1D;
/// After [`FOCUS`]: focus VM (byte - FOCUS_BASE).
pub const FOCUS_BASE: u8 = 0x80;
/// After [`FOCUS`]: end the run.
pub const END_RUN: u8 = 0x7F;

/// After [`FOCUS`]: a setting request of [`SETTING_LEN`] more bytes follows.
pub const SETTING: u8 = 0x7E;
/// Bytes of a setting request after [`SETTING`] ([`Setting::to_request`]).
pub const SETTING_LEN: usize = SETTING_REQUEST_LEN;

/// The bytes after [`FOCUS`] that ask for `setting`.
pub fn setting_request(setting: Setting) -> [u8; SETTING_LEN + 1] {
    let mut bytes = [SETTING; SETTING_LEN + 1];
    bytes[1..].copy_from_slice(&setting.to_request());
    bytes
}

/// Where one input byte goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routed {
    /// Deliver `byte` to VM `vm`.
    Deliver { vm: u16, byte: u8 },
    /// Focus moved to `vm`.
    Focused { vm: u16 },
    /// The host asks to end the run.
    EndRun,
    /// The host asks to change a setting (not yet checked).
    Setting(Setting),
    /// A setting request of an unknown kind: refused.
    BadSetting { kind: u8 },
    /// Part of a focus sequence, or a focus on a VM that does not exist: nothing to do.
    Nothing,
}

/// The router's state: the focused VM and whether an escape is pending.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputRouter {
    vm_count: u16,
    focused: u16,
    escaped: bool,
    /// A setting request being read: its bytes so far, and how many.
    request: Option<([u8; SETTING_LEN], usize)>,
}

impl InputRouter {
    /// A router over `vm_count` VMs, focused on VM 0.
    pub fn new(vm_count: u16) -> Self {
        Self {
            vm_count,
            focused: 0,
            escaped: false,
            request: None,
        }
    }

    pub fn focused(&self) -> u16 {
        self.focused
    }

    /// Routes one byte from the host.
    pub fn route(&mut self, byte: u8) -> Routed {
        if let Some((mut bytes, mut len)) = self.request.take() {
            bytes[len] = byte;
            len += 1;
            if len < SETTING_LEN {
                self.request = Some((bytes, len));
                return Routed::Nothing;
            }
            return match Setting::from_request(bytes) {
                Ok(setting) => Routed::Setting(setting),
                Err(kind) => Routed::BadSetting { kind },
            };
        }
        if self.escaped {
            self.escaped = false;
            return match byte {
                FOCUS => self.deliver(byte),
                END_RUN => Routed::EndRun,
                SETTING => {
                    self.request = Some(([0; SETTING_LEN], 0));
                    Routed::Nothing
                }
                id if id >= FOCUS_BASE && u16::from(id - FOCUS_BASE) < self.vm_count => {
                    self.focused = u16::from(id - FOCUS_BASE);
                    Routed::Focused { vm: self.focused }
                }
                _ => Routed::Nothing,
            };
        }
        if byte == FOCUS {
            self.escaped = true;
            return Routed::Nothing;
        }
        self.deliver(byte)
    }

    fn deliver(&self, byte: u8) -> Routed {
        if self.vm_count == 0 {
            return Routed::Nothing;
        }
        Routed::Deliver {
            vm: self.focused,
            byte,
        }
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    fn route_all(router: &mut InputRouter, bytes: &[u8]) -> Vec<Routed> {
        bytes.iter().map(|&b| router.route(b)).collect()
    }

    #[test]
    fn focus_then_deliver() {
        let mut router = InputRouter::new(4);
        let out = route_all(&mut router, &[b'a', FOCUS, FOCUS_BASE + 2, b'l', b's']);
        assert_eq!(
            out,
            [
                Routed::Deliver { vm: 0, byte: b'a' },
                Routed::Nothing,
                Routed::Focused { vm: 2 },
                Routed::Deliver { vm: 2, byte: b'l' },
                Routed::Deliver { vm: 2, byte: b's' },
            ]
        );
    }

    #[test]
    fn doubled_escape_is_a_literal_and_bad_ids_change_nothing() {
        let mut router = InputRouter::new(2);
        assert_eq!(router.route(FOCUS), Routed::Nothing);
        assert_eq!(router.route(FOCUS), Routed::Deliver { vm: 0, byte: FOCUS });
        assert_eq!(router.route(FOCUS), Routed::Nothing);
        assert_eq!(router.route(FOCUS_BASE + 7), Routed::Nothing);
        assert_eq!(router.focused(), 0);
        assert_eq!(
            route_all(&mut router, &[FOCUS, END_RUN]),
            [Routed::Nothing, Routed::EndRun]
        );
        // VM 29's id no longer collides with the escape byte.
        let mut many = InputRouter::new(64);
        assert_eq!(many.route(FOCUS), Routed::Nothing);
        assert_eq!(many.route(FOCUS_BASE + 29), Routed::Focused { vm: 29 });
        assert_eq!(router.route(b'x'), Routed::Deliver { vm: 0, byte: b'x' });
    }

    #[test]
    fn a_setting_request_of_an_unknown_kind_is_refused() {
        let mut router = InputRouter::new(1);
        let mut bytes = [FOCUS, SETTING, 9, 0, 0, 1, 0, 0, 0].to_vec();
        bytes.push(b'z');
        let routed = route_all(&mut router, &bytes);
        assert_eq!(routed[8], Routed::BadSetting { kind: 9 });
        assert_eq!(routed[9], Routed::Deliver { vm: 0, byte: b'z' });
        assert!(routed[..8].iter().all(|r| *r == Routed::Nothing));
    }

    proptest! {
        #[test]
        fn never_delivers_to_a_missing_vm(count in 0u16..5, bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let mut router = InputRouter::new(count);
            for byte in bytes {
                match router.route(byte) {
                    Routed::Deliver { vm, .. } | Routed::Focused { vm } => prop_assert!(vm < count),
                    Routed::Nothing | Routed::EndRun | Routed::Setting(_) | Routed::BadSetting { .. } => {}
                }
            }
        }

        #[test]
        fn setting_requests_round_trip(kind in 0u8..3, vm in any::<u16>(), value in any::<u32>(), typed in "[a-z]{0,5}") {
            let setting = match kind {
                0 => Setting::Quantum { us: value },
                1 => Setting::Weight { vm, weight: value },
                _ => Setting::Cap { vm, cap_pct: value },
            };
            let mut router = InputRouter::new(2);
            let mut routed: Vec<Routed> = route_all(&mut router, &[FOCUS]);
            routed.extend(route_all(&mut router, &setting_request(setting)));
            prop_assert_eq!(routed.pop(), Some(Routed::Setting(setting)));
            prop_assert!(routed.iter().all(|r| *r == Routed::Nothing));
            // What follows is typed input again.
            for byte in typed.bytes() {
                prop_assert_eq!(router.route(byte), Routed::Deliver { vm: 0, byte });
            }
        }
    }
}
