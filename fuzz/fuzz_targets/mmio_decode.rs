//! The MMIO instruction path, bytes to access: `carousel_kernel::mmio::decode` on arbitrary bytes
//! in arbitrary bitness, then `store_value` / `complete_load` against a register file.
//!
//! Invariants:
//! - nothing panics;
//! - a bitness other than 16, 32 or 64 is refused as such;
//! - a decoded instruction is 1 to 15 bytes long, no longer than the bytes given, and decodes
//!   the same from exactly its own bytes (what follows it is ignored); its access is 1, 2, 4 or
//!   8 bytes;
//! - "truncated" names the bytes given, and never happens with 15 or more;
//! - a store's value fits its size, and is the source register's bits or the immediate;
//! - a load writes only its destination register, with the SDM's rules for the part it names
//!   (8/16-bit parts keep the rest, 32-bit zero-extends), its value widened as the instruction
//!   says; a store leaves the registers alone.
#![no_main]

use arbitrary::Arbitrary;
use carousel_kernel::mmio::{
    complete_load, decode, store_value, DecodeError, Extension, Gpr, MmioOp, RegisterPart,
    Registers, StoreSource, MAX_INSTRUCTION_LENGTH,
};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Regs([u64; 16]);

impl Registers for Regs {
    fn get(&self, gpr: Gpr) -> u64 {
        self.0[gpr as usize]
    }
    fn set(&mut self, gpr: Gpr, value: u64) {
        self.0[gpr as usize] = value;
    }
}

#[derive(Debug, Arbitrary)]
struct Input {
    /// 0-2 pick 16/32/64-bit code; anything else is taken as the bitness itself.
    mode: u8,
    odd_bitness: u32,
    /// Seeds the sixteen registers (distinct values, so a write to the wrong one shows).
    seed: u64,
    /// What the device returns for a load.
    loaded: u64,
    /// The bytes at RIP (last: takes the rest of the input).
    code: Vec<u8>,
}

/// SplitMix64's output function: well-spread register values from one seed.
fn splitmix(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn mask(size: u8) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (u32::from(size) * 8)) - 1
    }
}

fn sign_extend(value: u64, size: u8) -> u64 {
    let unused = 64 - u32::from(size) * 8;
    (((value << unused) as i64) >> unused) as u64
}

fuzz_target!(|input: Input| {
    let bitness = match input.mode % 4 {
        0 => 16,
        1 => 32,
        2 => 64,
        _ => input.odd_bitness,
    };
    let code = &input.code;
    let result = decode(code, bitness);
    // Every error has a message.
    if let Err(error) = &result {
        let _ = error.to_string();
    }
    if !matches!(bitness, 16 | 32 | 64) {
        assert_eq!(result, Err(DecodeError::BadBitness { bitness }));
        return;
    }
    let instr = match result {
        Err(DecodeError::BadBitness { .. }) => panic!("{bitness}-bit code refused"),
        Err(DecodeError::Truncated { available }) => {
            assert_eq!(available, code.len());
            assert!(
                code.len() < MAX_INSTRUCTION_LENGTH,
                "truncated with {available} bytes"
            );
            return;
        }
        Err(_) => return,
        Ok(instr) => instr,
    };
    let length = usize::from(instr.length);
    assert!(
        (1..=MAX_INSTRUCTION_LENGTH).contains(&length) && length <= code.len(),
        "length {length} of {} bytes",
        code.len()
    );
    assert!(matches!(instr.size, 1 | 2 | 4 | 8), "size {}", instr.size);
    assert_eq!(
        decode(&code[..length], bitness),
        Ok(instr),
        "trailing bytes changed the decode"
    );
    assert_eq!(instr.is_store(), matches!(instr.op, MmioOp::Store { .. }));

    let before = Regs(core::array::from_fn(|index| {
        splitmix(input.seed ^ index as u64)
    }));
    let mut regs = before;
    match instr.op {
        MmioOp::Store { value } => {
            let stored = store_value(&instr, &regs).expect("a store has a value");
            assert_eq!(
                stored & !mask(instr.size),
                0,
                "{stored:#x} does not fit {} bytes",
                instr.size
            );
            match value {
                StoreSource::Register(operand) => {
                    assert_eq!(operand.part.bytes(), instr.size);
                    assert_eq!(stored, operand.read(&regs));
                }
                StoreSource::Immediate(immediate) => assert_eq!(stored, immediate),
            }
            complete_load(&instr, input.loaded, &mut regs);
            assert_eq!(regs, before, "a store changed the registers");
        }
        MmioOp::Load {
            destination,
            extension,
        } => {
            assert_eq!(store_value(&instr, &regs), None);
            let width = destination.part.bytes();
            match extension {
                Extension::None => assert_eq!(width, instr.size),
                Extension::Zero | Extension::Sign => assert!(width >= instr.size),
            }
            complete_load(&instr, input.loaded, &mut regs);
            let value = input.loaded & mask(instr.size);
            let widened = match extension {
                Extension::Sign => sign_extend(value, instr.size),
                Extension::None | Extension::Zero => value,
            };
            // The SDM's rules (vol. 1, 3.4.1.1) restated here on purpose, as the oracle
            // `RegisterOperand::write` is held to.
            let old = before.get(destination.gpr);
            let expected = match destination.part {
                RegisterPart::Low8 => (old & !0xFF) | (widened & 0xFF),
                RegisterPart::High8 => (old & !0xFF00) | ((widened & 0xFF) << 8),
                RegisterPart::Low16 => (old & !0xFFFF) | (widened & 0xFFFF),
                RegisterPart::Low32 => widened & 0xFFFF_FFFF,
                RegisterPart::All64 => widened,
            };
            for gpr in Gpr::ALL {
                let want = if gpr == destination.gpr {
                    expected
                } else {
                    before.get(gpr)
                };
                assert_eq!(
                    regs.get(gpr),
                    want,
                    "{gpr:?} after a load into {destination:?}"
                );
            }
        }
        // Read-modify-write forms: the register operand is as wide as the access; neither is a
        // plain store or load, so `store_value` and `complete_load` leave them to the handler.
        MmioOp::Exchange { register } | MmioOp::CompareExchange { register } => {
            assert_eq!(register.part.bytes(), instr.size);
            assert_eq!(store_value(&instr, &regs), None);
            complete_load(&instr, input.loaded, &mut regs);
            assert_eq!(
                regs, before,
                "an exchange's registers are the handler's to change"
            );
        }
        // String forms address with 16, 32 or 64 bits; hints access nothing the handler
        // changes registers for.
        MmioOp::StringStore { address_bits, .. } | MmioOp::StringMove { address_bits, .. } => {
            assert!(
                matches!(address_bits, 16 | 32 | 64),
                "{address_bits}-bit addresses"
            );
            assert_eq!(store_value(&instr, &regs), None);
            complete_load(&instr, input.loaded, &mut regs);
            assert_eq!(
                regs, before,
                "a string instruction's registers are the handler's"
            );
        }
        MmioOp::Hint => {
            assert_eq!(store_value(&instr, &regs), None);
            complete_load(&instr, input.loaded, &mut regs);
            assert_eq!(regs, before, "a hint changed the registers");
        }
    }
});
