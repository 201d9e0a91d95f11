//! Describing the instruction behind an MMIO exit: on an EPT violation for a device page the
//! hypervisor decodes the instruction at the guest's RIP, performs the access on the device
//! model, completes a load into the destination register and advances RIP by the length.
//!
//! The VM-exit instruction-length field is not valid for EPT violations (SDM 29.2.5
//! "Information for VM Exits Due to Instruction Execution" lists the exits that set it), so
//! the length comes from the decode. The address comes from the exit's guest-physical address,
//! so the memory operand's ModRM/SIB/displacement are decoded for their length only.
//!
//! What is supported: every form of `mov` between a general-purpose register or an immediate
//! and memory (88/89/8A/8B /r, C6/C7 /0, A0-A3 moffs), plus the loads `movzx`, `movsx` and
//! `movsxd`, in 16-, 32- and 64-bit code, with any prefixes the processor accepts. Everything
//! else (read-modify-write such as `or [mem], imm`, string instructions, `xchg`, `lock`) is
//! refused with [`DecodeError::Unsupported`] naming the mnemonic. The decoding itself is
//! iced-x86's; this module only maps its result onto what an MMIO access needs.
//!
//! Reference: Intel SDM 325462-083US (March 2024), volume 2 ("MOV", "MOVZX", "MOVSX/MOVSXD")
//! and volume 1, 3.4.1.1 "General-Purpose Registers in 64-Bit Mode".

use core::fmt;
use core::fmt::Write as _;

use iced_x86::{Code, Decoder, DecoderError, DecoderOptions, Instruction, OpKind, Register};

/// The mnemonic iced-x86 gives an instruction (in [`DecodeError`]); its `Debug` form is the
/// name.
pub use iced_x86::Mnemonic;

/// The longest x86 instruction, in bytes (SDM vol. 2, 2.3.11 "AVX Instruction Length"):
/// fetch this many bytes at RIP, fewer if the page after RIP's is not mapped.
pub const MAX_INSTRUCTION_LENGTH: usize = 15;

/// The sixteen general-purpose registers, numbered as instructions encode them (ModRM.reg
/// with REX.R as bit 3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Gpr {
    Rax,
    Rcx,
    Rdx,
    Rbx,
    Rsp,
    Rbp,
    Rsi,
    Rdi,
    R8,
    R9,
    R10,
    R11,
    R12,
    R13,
    R14,
    R15,
}

impl Gpr {
    /// All registers, in encoding order.
    pub const ALL: [Self; 16] = [
        Self::Rax,
        Self::Rcx,
        Self::Rdx,
        Self::Rbx,
        Self::Rsp,
        Self::Rbp,
        Self::Rsi,
        Self::Rdi,
        Self::R8,
        Self::R9,
        Self::R10,
        Self::R11,
        Self::R12,
        Self::R13,
        Self::R14,
        Self::R15,
    ];
}

/// The bits of a general-purpose register an operand names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RegisterPart {
    /// Bits 7:0: AL, CL, ..., SPL (with REX), R8L, ...
    Low8,
    /// Bits 15:8: AH, CH, DH, BH (only without REX; only of RAX, RCX, RDX, RBX).
    High8,
    /// Bits 15:0: AX, ..., R15W.
    Low16,
    /// Bits 31:0: EAX, ..., R15D.
    Low32,
    /// Bits 63:0: RAX, ..., R15.
    All64,
}

impl RegisterPart {
    /// Width of the part in bytes.
    pub fn bytes(self) -> u8 {
        match self {
            Self::Low8 | Self::High8 => 1,
            Self::Low16 => 2,
            Self::Low32 => 4,
            Self::All64 => 8,
        }
    }
}

/// A register operand: EAX is `{ Rax, Low32 }`, AH is `{ Rax, High8 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RegisterOperand {
    pub gpr: Gpr,
    pub part: RegisterPart,
}

/// The guest's general-purpose registers, whole. [`RegisterOperand::read`] and
/// [`RegisterOperand::write`] apply the x86 rules for the narrower parts on top.
///
/// RSP lives in the VMCS (guest RSP), not with the registers saved at VM exit; an
/// implementation must read and write it there (`mov [mmio], esp` is legal).
pub trait Registers {
    /// The full 64-bit value of `gpr` (outside 64-bit mode the upper half is whatever the
    /// register holds; nothing here depends on it).
    fn get(&self, gpr: Gpr) -> u64;
    /// Replaces the full 64-bit value of `gpr`.
    fn set(&mut self, gpr: Gpr, value: u64);
}

impl RegisterOperand {
    /// The operand's value, zero-extended.
    pub fn read(self, regs: &impl Registers) -> u64 {
        let full = regs.get(self.gpr);
        match self.part {
            RegisterPart::Low8 => full & 0xFF,
            RegisterPart::High8 => (full >> 8) & 0xFF,
            RegisterPart::Low16 => full & 0xFFFF,
            RegisterPart::Low32 => full & 0xFFFF_FFFF,
            RegisterPart::All64 => full,
        }
    }

    /// Writes the low bits of `value` to the operand as an instruction does (SDM vol. 1,
    /// 3.4.1.1): "32-bit operands generate a 32-bit result, zero-extended to a 64-bit result in
    /// the destination general-purpose register"; "8-bit and 16-bit operands generate an 8-bit
    /// or 16-bit result. The upper 56 bits or 48 bits (respectively) of the destination
    /// general-purpose register are not modified by the operation."
    ///
    /// Outside 64-bit mode the upper half of a register is not visible, so zero-extending a
    /// 32-bit write is right there too.
    pub fn write(self, regs: &mut impl Registers, value: u64) {
        let old = regs.get(self.gpr);
        let new = match self.part {
            RegisterPart::Low8 => (old & !0xFF) | (value & 0xFF),
            RegisterPart::High8 => (old & !0xFF00) | ((value & 0xFF) << 8),
            RegisterPart::Low16 => (old & !0xFFFF) | (value & 0xFFFF),
            RegisterPart::Low32 => value & 0xFFFF_FFFF,
            RegisterPart::All64 => value,
        };
        regs.set(self.gpr, new);
    }

    /// The operand iced-x86's `register` names, if it is a general-purpose register.
    fn from_iced(register: Register) -> Option<Self> {
        /// Runs of consecutive values in iced-x86's `Register` numbering: first and last
        /// register, the part they name, and the encoding number of the first one.
        const RUNS: [(Register, Register, RegisterPart, usize); 6] = [
            (Register::AL, Register::BL, RegisterPart::Low8, 0),
            (Register::AH, Register::BH, RegisterPart::High8, 0),
            (Register::SPL, Register::R15L, RegisterPart::Low8, 4),
            (Register::AX, Register::R15W, RegisterPart::Low16, 0),
            (Register::EAX, Register::R15D, RegisterPart::Low32, 0),
            (Register::RAX, Register::R15, RegisterPart::All64, 0),
        ];
        let value = register as usize;
        RUNS.iter().find_map(|&(first, last, part, number)| {
            (first as usize..=last as usize)
                .contains(&value)
                .then(|| Self {
                    gpr: Gpr::ALL[number + value - first as usize],
                    part,
                })
        })
    }
}

/// How a load widens the value it read to the destination register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extension {
    /// `mov`: the destination is as wide as the access.
    None,
    /// `movzx`: zero-extended.
    Zero,
    /// `movsx`, `movsxd`: sign-extended.
    Sign,
}

/// Where a store's value comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreSource {
    /// A register as wide as the access.
    Register(RegisterOperand),
    /// An immediate, already sign-extended to the access size (C7 /0 with REX.W stores a
    /// sign-extended imm32) and masked to it.
    Immediate(u64),
}

impl StoreSource {
    /// The value a store of `size` bytes writes.
    pub fn value(self, size: u8, regs: &impl Registers) -> u64 {
        match self {
            Self::Register(operand) => operand.read(regs) & size_mask(size),
            Self::Immediate(value) => value & size_mask(size),
        }
    }
}

/// What the instruction does with the memory operand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MmioOp {
    /// Reads memory into `destination`.
    Load {
        destination: RegisterOperand,
        extension: Extension,
    },
    /// Writes `value` to memory.
    Store { value: StoreSource },
    /// `xchg [mem], reg`: memory gets the register, the register what memory held.
    Exchange { register: RegisterOperand },
    /// `cmpxchg [mem], reg`: if memory equals the accumulator (AL/AX/EAX/RAX), memory gets the
    /// register (ZF = 1); else the accumulator gets memory (ZF = 0). Flags as `cmp acc, mem`.
    CompareExchange { register: RegisterOperand },
    /// `stos`: memory at ES:rDI gets the accumulator, rDI moves by the size; `rep` repeats
    /// rCX times.
    StringStore { rep: bool, address_bits: u8 },
    /// `movs`: memory at ES:rDI gets memory at DS:rSI (either may be the device), both move by
    /// the size; `rep` repeats rCX times.
    StringMove { rep: bool, address_bits: u8 },
    /// A cache-control or prefetch hint (`clflush`, `clflushopt`, `clwb`, `prefetch*`): no
    /// effect on a device register.
    Hint,
}

/// A decoded MMIO access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MmioInstruction {
    /// Bytes of the instruction: the guest's RIP advances by this much.
    pub length: u8,
    /// Bytes of memory accessed: 1, 2, 4 or 8.
    pub size: u8,
    pub op: MmioOp,
}

impl MmioInstruction {
    /// True for a store (compare with the EPT violation's "write" qualification bit).
    pub fn is_store(&self) -> bool {
        matches!(self.op, MmioOp::Store { .. })
    }
}

/// The accumulator of `size` bytes: AL, AX, EAX or RAX.
pub fn accumulator(size: u8) -> RegisterOperand {
    RegisterOperand {
        gpr: Gpr::Rax,
        part: match size {
            1 => RegisterPart::Low8,
            2 => RegisterPart::Low16,
            4 => RegisterPart::Low32,
            _ => RegisterPart::All64,
        },
    }
}

/// The arithmetic flags of `left - right` on `size` bytes (CF, PF, AF, ZF, SF, OF), as CMP
/// leaves them: the bits of RFLAGS to replace, and their new values.
pub fn compare_flags(left: u64, right: u64, size: u8) -> (u64, u64) {
    /// RFLAGS bits: CF (0), PF (2), AF (4), ZF (6), SF (7), OF (11).
    const CF: u64 = 1;
    const PF: u64 = 1 << 2;
    const AF: u64 = 1 << 4;
    const ZF: u64 = 1 << 6;
    const SF: u64 = 1 << 7;
    const OF: u64 = 1 << 11;
    let mask = size_mask(size);
    let bits = u32::from(size) * 8;
    let (left, right) = (left & mask, right & mask);
    let result = left.wrapping_sub(right) & mask;
    let sign = |value: u64| (value >> (bits - 1)) & 1;
    let mut flags = 0;
    if left < right {
        flags |= CF;
    }
    if (result as u8).count_ones().is_multiple_of(2) {
        flags |= PF;
    }
    if (left ^ right ^ result) & 0x10 != 0 {
        flags |= AF;
    }
    if result == 0 {
        flags |= ZF;
    }
    if sign(result) == 1 {
        flags |= SF;
    }
    if sign(left) != sign(right) && sign(result) != sign(left) {
        flags |= OF;
    }
    (CF | PF | AF | ZF | SF | OF, flags)
}

/// Why the bytes at RIP are not an MMIO access this module can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeError {
    /// `bitness` is not 16, 32 or 64.
    BadBitness { bitness: u32 },
    /// The bytes end inside the instruction (`available` of them were given).
    Truncated { available: usize },
    /// Not a valid instruction (the guest would take #UD), e.g. `lock mov`.
    Invalid,
    /// A valid instruction that is not a `mov`-like load or store.
    Unsupported { mnemonic: Mnemonic },
    /// A `mov` form with a register where the memory operand would be, so it accesses no
    /// memory: the RIP does not point at the instruction that faulted.
    NoMemoryOperand { mnemonic: Mnemonic },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadBitness { bitness } => write!(f, "no {bitness}-bit code on x86"),
            Self::Truncated { available } => {
                write!(
                    f,
                    "the instruction is longer than the {available} bytes read"
                )
            }
            Self::Invalid => f.write_str("not a valid x86 instruction"),
            Self::Unsupported { mnemonic } => {
                f.write_str("unsupported MMIO instruction ")?;
                write!(LowerCase(f), "{mnemonic:?}")
            }
            Self::NoMemoryOperand { mnemonic } => {
                write!(LowerCase(&mut *f), "{mnemonic:?}")?;
                f.write_str(" with no memory operand")
            }
        }
    }
}

/// Lower-cases ASCII on the way to a formatter (iced-x86's mnemonic names are "Movsd").
struct LowerCase<'a, 'b>(&'a mut fmt::Formatter<'b>);

impl fmt::Write for LowerCase<'_, '_> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        text.chars()
            .try_for_each(|c| self.0.write_char(c.to_ascii_lowercase()))
    }
}

/// The shape of each supported instruction form (iced-x86 `Code`).
#[derive(Clone, Copy)]
enum Form {
    /// Register operand 0 ← memory operand 1.
    Load(Extension),
    /// Memory operand 0 ← register operand 1.
    StoreRegister,
    /// Memory operand 0 ← immediate operand 1.
    StoreImmediate,
    /// Memory operand 0 ⇄ register operand 1.
    Exchange,
    /// Memory operand 0, register operand 1, the accumulator.
    CompareExchange,
    /// ES:rDI ← the accumulator.
    StringStore,
    /// ES:rDI ← DS:rSI.
    StringMove,
    /// A hint on memory operand 0.
    Hint,
}

/// Form and access size of a supported instruction, `None` for anything else.
fn form(code: Code) -> Option<(Form, u8)> {
    use Extension::{Sign, Zero};
    use Form::{Load, StoreImmediate, StoreRegister};
    let plain = Load(Extension::None);
    Some(match code {
        Code::Mov_r8_rm8 | Code::Mov_AL_moffs8 => (plain, 1),
        Code::Mov_r16_rm16 | Code::Mov_AX_moffs16 => (plain, 2),
        Code::Mov_r32_rm32 | Code::Mov_EAX_moffs32 => (plain, 4),
        Code::Mov_r64_rm64 | Code::Mov_RAX_moffs64 => (plain, 8),
        Code::Mov_rm8_r8 | Code::Mov_moffs8_AL => (StoreRegister, 1),
        Code::Mov_rm16_r16 | Code::Mov_moffs16_AX => (StoreRegister, 2),
        Code::Mov_rm32_r32 | Code::Mov_moffs32_EAX => (StoreRegister, 4),
        Code::Mov_rm64_r64 | Code::Mov_moffs64_RAX => (StoreRegister, 8),
        Code::Mov_rm8_imm8 => (StoreImmediate, 1),
        Code::Mov_rm16_imm16 => (StoreImmediate, 2),
        Code::Mov_rm32_imm32 => (StoreImmediate, 4),
        Code::Mov_rm64_imm32 => (StoreImmediate, 8),
        Code::Movzx_r16_rm8 | Code::Movzx_r32_rm8 | Code::Movzx_r64_rm8 => (Load(Zero), 1),
        Code::Movzx_r16_rm16 | Code::Movzx_r32_rm16 | Code::Movzx_r64_rm16 => (Load(Zero), 2),
        Code::Movsx_r16_rm8 | Code::Movsx_r32_rm8 | Code::Movsx_r64_rm8 => (Load(Sign), 1),
        Code::Movsx_r16_rm16 | Code::Movsx_r32_rm16 | Code::Movsx_r64_rm16 => (Load(Sign), 2),
        // MOVSXD without REX.W: "the use of MOVSXD without REX.W in 64-bit mode is
        // discouraged"; it moves without widening.
        Code::Movsxd_r16_rm16 => (Load(Sign), 2),
        Code::Movsxd_r32_rm32 | Code::Movsxd_r64_rm32 => (Load(Sign), 4),
        Code::Xchg_rm8_r8 => (Form::Exchange, 1),
        Code::Xchg_rm16_r16 => (Form::Exchange, 2),
        Code::Xchg_rm32_r32 => (Form::Exchange, 4),
        Code::Xchg_rm64_r64 => (Form::Exchange, 8),
        Code::Cmpxchg_rm8_r8 => (Form::CompareExchange, 1),
        Code::Cmpxchg_rm16_r16 => (Form::CompareExchange, 2),
        Code::Cmpxchg_rm32_r32 => (Form::CompareExchange, 4),
        Code::Cmpxchg_rm64_r64 => (Form::CompareExchange, 8),
        Code::Stosb_m8_AL => (Form::StringStore, 1),
        Code::Stosw_m16_AX => (Form::StringStore, 2),
        Code::Stosd_m32_EAX => (Form::StringStore, 4),
        Code::Stosq_m64_RAX => (Form::StringStore, 8),
        Code::Movsb_m8_m8 => (Form::StringMove, 1),
        Code::Movsw_m16_m16 => (Form::StringMove, 2),
        Code::Movsd_m32_m32 => (Form::StringMove, 4),
        Code::Movsq_m64_m64 => (Form::StringMove, 8),
        Code::Clflush_m8
        | Code::Clflushopt_m8
        | Code::Clwb_m8
        | Code::Prefetch_m8
        | Code::Prefetchw_m8
        | Code::Prefetchwt1_m8
        | Code::Prefetchnta_m8
        | Code::Prefetcht0_m8
        | Code::Prefetcht1_m8
        | Code::Prefetcht2_m8 => (Form::Hint, 1),
        _ => return None,
    })
}

/// Decodes the instruction at the start of `bytes` (fetched at the guest's RIP; extra bytes
/// after the instruction are ignored) as `bitness`-bit code: 16, 32 or 64, from CS.D and CS.L.
pub fn decode(bytes: &[u8], bitness: u32) -> Result<MmioInstruction, DecodeError> {
    let mut decoder = Decoder::try_new(bitness, bytes, DecoderOptions::NONE)
        .map_err(|_| DecodeError::BadBitness { bitness })?;
    let instruction = decoder.decode();
    match decoder.last_error() {
        DecoderError::None => {}
        DecoderError::NoMoreBytes => {
            return Err(DecodeError::Truncated {
                available: bytes.len(),
            })
        }
        _ => return Err(DecodeError::Invalid),
    }
    if instruction.is_invalid() {
        return Err(DecodeError::Invalid);
    }
    let mnemonic = instruction.mnemonic();
    let unsupported = DecodeError::Unsupported { mnemonic };
    let (form, size) = form(instruction.code()).ok_or(unsupported)?;
    // iced-x86 already refuses LOCK where the processor raises #UD (a MOV, a string op); REP
    // and REPNE are ignored by the processor except on string instructions, but nothing emits
    // them, so refuse them rather than guess.
    let string = matches!(form, Form::StringStore | Form::StringMove);
    if (instruction.has_rep_prefix() || instruction.has_repne_prefix()) && !string {
        return Err(unsupported);
    }
    if string {
        // The destination operand says the address size: ES:RDI, ES:EDI or ES:DI.
        let address_bits = match instruction.op_kind(0) {
            OpKind::MemoryESRDI => 64,
            OpKind::MemoryESEDI => 32,
            _ => 16,
        };
        let rep = instruction.has_rep_prefix() || instruction.has_repne_prefix();
        return Ok(MmioInstruction {
            length: instruction.len() as u8,
            size,
            op: match form {
                Form::StringStore => MmioOp::StringStore { rep, address_bits },
                _ => MmioOp::StringMove { rep, address_bits },
            },
        });
    }
    let (memory, other) = match form {
        Form::Load(_) => (1, 0),
        _ => (0, 1),
    };
    if instruction.op_kind(memory) != OpKind::Memory {
        return Err(DecodeError::NoMemoryOperand { mnemonic });
    }
    let op = match form {
        Form::Exchange => MmioOp::Exchange {
            register: register_operand(&instruction, other).ok_or(unsupported)?,
        },
        Form::CompareExchange => MmioOp::CompareExchange {
            register: register_operand(&instruction, other).ok_or(unsupported)?,
        },
        Form::Hint => MmioOp::Hint,
        Form::StringStore | Form::StringMove => unreachable!("returned above"),
        Form::Load(extension) => MmioOp::Load {
            destination: register_operand(&instruction, other).ok_or(unsupported)?,
            extension,
        },
        Form::StoreRegister => MmioOp::Store {
            value: StoreSource::Register(register_operand(&instruction, other).ok_or(unsupported)?),
        },
        Form::StoreImmediate => MmioOp::Store {
            value: StoreSource::Immediate(instruction.immediate(other) & size_mask(size)),
        },
    };
    Ok(MmioInstruction {
        // An instruction is at most 15 bytes (longer is #GP, which iced-x86 reports invalid).
        length: instruction.len() as u8,
        size,
        op,
    })
}

/// Operand `operand` of `instruction` as a general-purpose register, if it is one.
fn register_operand(instruction: &Instruction, operand: u32) -> Option<RegisterOperand> {
    if instruction.op_kind(operand) != OpKind::Register {
        return None;
    }
    RegisterOperand::from_iced(instruction.op_register(operand))
}

/// Writes `value`, the `instr.size` bytes a device returned for a load (little-endian, in the
/// low bits; higher bits are ignored), into the destination register, widened as the
/// instruction does. A store has nothing to complete and leaves `regs` alone.
pub fn complete_load(instr: &MmioInstruction, value: u64, regs: &mut impl Registers) {
    let MmioOp::Load {
        destination,
        extension,
    } = instr.op
    else {
        return;
    };
    let value = value & size_mask(instr.size);
    let value = match extension {
        Extension::None | Extension::Zero => value,
        Extension::Sign => sign_extend(value, instr.size),
    };
    destination.write(regs, value);
}

/// The `instr.size` bytes a store writes (in the low bits), `None` for anything else.
pub fn store_value(instr: &MmioInstruction, regs: &impl Registers) -> Option<u64> {
    match instr.op {
        MmioOp::Store { value } => Some(value.value(instr.size, regs)),
        _ => None,
    }
}

/// Mask of the low `size` bytes (port I/O and MMIO accesses alike).
pub fn size_mask(size: u8) -> u64 {
    match size {
        0 => 0,
        1..=7 => (1 << (u32::from(size) * 8)) - 1,
        _ => u64::MAX,
    }
}

/// `value`, `size` bytes wide, sign-extended to 64 bits.
fn sign_extend(value: u64, size: u8) -> u64 {
    let unused = 64 - u32::from(size.clamp(1, 8)) * 8;
    (((value << unused) as i64) >> unused) as u64
}

#[cfg(test)]
mod more_forms {
    use super::*;

    #[test]
    fn exchange_compare_exchange_strings_and_hints_decode() {
        // xchg [eax], ecx; lock cmpxchg [ebx], edx; rep stosd; movsb; clflush [eax].
        let xchg = decode(&[0x87, 0x08], 32).unwrap();
        assert!(matches!(xchg.op, MmioOp::Exchange { register } if register.gpr == Gpr::Rcx));
        let cmpxchg = decode(&[0xF0, 0x0F, 0xB1, 0x13], 32).unwrap();
        assert_eq!(cmpxchg.length, 4);
        assert!(
            matches!(cmpxchg.op, MmioOp::CompareExchange { register } if register.gpr == Gpr::Rdx)
        );
        let stos = decode(&[0xF3, 0xAB], 32).unwrap();
        assert_eq!(
            stos.op,
            MmioOp::StringStore {
                rep: true,
                address_bits: 32
            }
        );
        assert_eq!(stos.size, 4);
        let movs = decode(&[0x67, 0xA4], 32).unwrap();
        assert_eq!(
            movs.op,
            MmioOp::StringMove {
                rep: false,
                address_bits: 16
            }
        );
        let clflush = decode(&[0x0F, 0xAE, 0x38], 32).unwrap();
        assert_eq!(clflush.op, MmioOp::Hint);
        // A REP on a plain MOV is still refused.
        assert!(decode(&[0xF3, 0x89, 0x08], 32).is_err());
    }

    #[test]
    fn compare_flags_are_those_of_cmp() {
        // 5 - 5: ZF and PF.
        assert_eq!(compare_flags(5, 5, 4).1, 1 << 6 | 1 << 2);
        // 1 - 2 on a byte: CF, SF, AF (0xFF has even parity: PF).
        let (_, flags) = compare_flags(1, 2, 1);
        assert_eq!(flags & 1, 1);
        assert_ne!(flags & 1 << 7, 0);
        // 0x80 - 1 on a byte: signed overflow.
        assert_ne!(compare_flags(0x80, 1, 1).1 & 1 << 11, 0);
    }
}

#[cfg(test)]
mod tests {
    use alloc::format;
    use alloc::vec::Vec;

    use proptest::prelude::*;

    use super::*;

    /// A register file: `values[n]` is register number n.
    #[derive(Debug, Clone, Default, PartialEq, Eq)]
    struct Regs {
        values: [u64; 16],
    }

    impl Registers for Regs {
        fn get(&self, gpr: Gpr) -> u64 {
            self.values[gpr as usize]
        }
        fn set(&mut self, gpr: Gpr, value: u64) {
            self.values[gpr as usize] = value;
        }
    }

    const fn reg(gpr: Gpr, part: RegisterPart) -> RegisterOperand {
        RegisterOperand { gpr, part }
    }

    const EAX: RegisterOperand = reg(Gpr::Rax, RegisterPart::Low32);
    const ECX: RegisterOperand = reg(Gpr::Rcx, RegisterPart::Low32);
    const EDX: RegisterOperand = reg(Gpr::Rdx, RegisterPart::Low32);
    const EBX: RegisterOperand = reg(Gpr::Rbx, RegisterPart::Low32);
    const ESI: RegisterOperand = reg(Gpr::Rsi, RegisterPart::Low32);

    fn load(length: u8, size: u8, destination: RegisterOperand) -> MmioInstruction {
        MmioInstruction {
            length,
            size,
            op: MmioOp::Load {
                destination,
                extension: Extension::None,
            },
        }
    }

    fn store_register(length: u8, size: u8, source: RegisterOperand) -> MmioInstruction {
        MmioInstruction {
            length,
            size,
            op: MmioOp::Store {
                value: StoreSource::Register(source),
            },
        }
    }

    fn store_immediate(length: u8, size: u8, value: u64) -> MmioInstruction {
        MmioInstruction {
            length,
            size,
            op: MmioOp::Store {
                value: StoreSource::Immediate(value),
            },
        }
    }

    /// Decodes `bytes` followed by filler that must not change the result.
    fn decode_with_tail(bytes: &[u8], bitness: u32) -> Result<MmioInstruction, DecodeError> {
        let exact = decode(bytes, bitness);
        let mut padded = bytes.to_vec();
        padded.extend_from_slice(&[0x90; 8]);
        assert_eq!(decode(&padded, bitness), exact, "{bytes:02x?}");
        exact
    }

    #[test]
    fn xv6_lapic_forms() {
        // lapicw: mov dword [eax+0xB0], 0 (EOI).
        assert_eq!(
            decode_with_tail(&[0xC7, 0x80, 0xB0, 0, 0, 0, 0, 0, 0, 0], 32),
            Ok(store_immediate(10, 4, 0))
        );
        // mov dword [eax+0x300], 0x88500 (ICRLO).
        assert_eq!(
            decode_with_tail(&[0xC7, 0x80, 0x00, 0x03, 0, 0, 0x00, 0x85, 0x08, 0x00], 32),
            Ok(store_immediate(10, 4, 0x8_8500))
        );
        // lapicstartap: mov [eax+0x310], ecx / edx / ebx.
        for (modrm, source) in [(0x88, ECX), (0x90, EDX), (0x98, EBX)] {
            assert_eq!(
                decode_with_tail(&[0x89, modrm, 0x10, 0x03, 0, 0], 32),
                Ok(store_register(6, 4, source))
            );
        }
        // mov eax, [eax+0x20]; mov edx, [eax+0x20]; mov edx, [eax+0x30] (ID, VER).
        assert_eq!(
            decode_with_tail(&[0x8B, 0x40, 0x20], 32),
            Ok(load(3, 4, EAX))
        );
        assert_eq!(
            decode_with_tail(&[0x8B, 0x50, 0x20], 32),
            Ok(load(3, 4, EDX))
        );
        assert_eq!(
            decode_with_tail(&[0x8B, 0x50, 0x30], 32),
            Ok(load(3, 4, EDX))
        );
        // mov edx, [eax+0x300] (ICRLO delivery status).
        assert_eq!(
            decode_with_tail(&[0x8B, 0x90, 0x00, 0x03, 0x00, 0x00], 32),
            Ok(load(6, 4, EDX))
        );
    }

    #[test]
    fn xv6_ioapic_forms() {
        // mov dword [0xFEC00000], 1 (IOREGSEL ← VER).
        assert_eq!(
            decode_with_tail(&[0xC7, 0x05, 0x00, 0x00, 0xC0, 0xFE, 1, 0, 0, 0], 32),
            Ok(store_immediate(10, 4, 1))
        );
        // mov [ecx], eax; mov [ebx], edx.
        assert_eq!(
            decode_with_tail(&[0x89, 0x01], 32),
            Ok(store_register(2, 4, EAX))
        );
        assert_eq!(
            decode_with_tail(&[0x89, 0x13], 32),
            Ok(store_register(2, 4, EDX))
        );
        // mov [ebx+0x10], ecx; mov [eax+0x10], edx; mov [ecx+0x10], edx.
        assert_eq!(
            decode_with_tail(&[0x89, 0x4B, 0x10], 32),
            Ok(store_register(3, 4, ECX))
        );
        assert_eq!(
            decode_with_tail(&[0x89, 0x50, 0x10], 32),
            Ok(store_register(3, 4, EDX))
        );
        assert_eq!(
            decode_with_tail(&[0x89, 0x51, 0x10], 32),
            Ok(store_register(3, 4, EDX))
        );
        // mov dword [edx], 0x10020; mov dword [ebx+0x10], 0x10000.
        assert_eq!(
            decode_with_tail(&[0xC7, 0x02, 0x20, 0x00, 0x01, 0x00], 32),
            Ok(store_immediate(6, 4, 0x1_0020))
        );
        assert_eq!(
            decode_with_tail(&[0xC7, 0x43, 0x10, 0x00, 0x00, 0x01, 0x00], 32),
            Ok(store_immediate(7, 4, 0x1_0000))
        );
        // mov esi, [edx+0x10]; mov eax, [ebx+0x10].
        assert_eq!(
            decode_with_tail(&[0x8B, 0x72, 0x10], 32),
            Ok(load(3, 4, ESI))
        );
        assert_eq!(
            decode_with_tail(&[0x8B, 0x43, 0x10], 32),
            Ok(load(3, 4, EAX))
        );
    }

    #[test]
    fn sib_and_displacement_forms() {
        // mov eax, [esp]: SIB with no index.
        assert_eq!(
            decode_with_tail(&[0x8B, 0x04, 0x24], 32),
            Ok(load(3, 4, EAX))
        );
        // mov [ebp+ecx*4+0x10], eax.
        assert_eq!(
            decode_with_tail(&[0x89, 0x44, 0x8D, 0x10], 32),
            Ok(store_register(4, 4, EAX))
        );
        // mov eax, [ecx*4+0xFEE00020]: SIB with no base, disp32.
        assert_eq!(
            decode_with_tail(&[0x8B, 0x04, 0x8D, 0x20, 0x00, 0xE0, 0xFE], 32),
            Ok(load(7, 4, EAX))
        );
        // mov dword [esp+ebx+0x300], 0x88500: SIB + disp32 + imm32 = 11 bytes.
        assert_eq!(
            decode_with_tail(
                &[0xC7, 0x84, 0x1C, 0x00, 0x03, 0, 0, 0x00, 0x85, 0x08, 0x00],
                32
            ),
            Ok(store_immediate(11, 4, 0x8_8500))
        );
        // fs: mov eax, [ebx] — a segment override only adds a byte.
        assert_eq!(
            decode_with_tail(&[0x64, 0x8B, 0x03], 32),
            Ok(load(3, 4, EAX))
        );
    }

    #[test]
    fn moffs_forms() {
        // mov eax, [0xFEE00020]; mov [0xFEE000B0], eax.
        assert_eq!(
            decode_with_tail(&[0xA1, 0x20, 0x00, 0xE0, 0xFE], 32),
            Ok(load(5, 4, EAX))
        );
        assert_eq!(
            decode_with_tail(&[0xA3, 0xB0, 0x00, 0xE0, 0xFE], 32),
            Ok(store_register(5, 4, EAX))
        );
        // mov al, [moffs32]; mov [moffs32], al.
        let al = reg(Gpr::Rax, RegisterPart::Low8);
        assert_eq!(
            decode_with_tail(&[0xA0, 0x00, 0x00, 0xC0, 0xFE], 32),
            Ok(load(5, 1, al))
        );
        assert_eq!(
            decode_with_tail(&[0xA2, 0x00, 0x00, 0xC0, 0xFE], 32),
            Ok(store_register(5, 1, al))
        );
        // 64-bit: the offset is 8 bytes; with REX.W the register is RAX.
        let rax = reg(Gpr::Rax, RegisterPart::All64);
        assert_eq!(
            decode_with_tail(&[0x48, 0xA1, 0x20, 0x00, 0xE0, 0xFE, 0, 0, 0, 0], 64),
            Ok(load(10, 8, rax))
        );
        assert_eq!(
            decode_with_tail(&[0xA3, 0xB0, 0x00, 0xE0, 0xFE, 0, 0, 0, 0], 64),
            Ok(store_register(9, 4, EAX))
        );
        // 67 in 64-bit code: a 4-byte offset.
        assert_eq!(
            decode_with_tail(&[0x67, 0xA1, 0x20, 0x00, 0xE0, 0xFE], 64),
            Ok(load(6, 4, EAX))
        );
    }

    #[test]
    fn operand_size_prefix_and_16_bit_code() {
        let ax = reg(Gpr::Rax, RegisterPart::Low16);
        // 32-bit code: 66 makes a 16-bit access.
        assert_eq!(
            decode_with_tail(&[0x66, 0x8B, 0x40, 0x20], 32),
            Ok(load(4, 2, ax))
        );
        assert_eq!(
            decode_with_tail(&[0x66, 0xC7, 0x00, 0x34, 0x12], 32),
            Ok(store_immediate(5, 2, 0x1234))
        );
        // 16-bit code: mov ax, [bx+si+0x20]; 66 makes it 32-bit; 67 a 32-bit address.
        assert_eq!(
            decode_with_tail(&[0x8B, 0x40, 0x20], 16),
            Ok(load(3, 2, ax))
        );
        assert_eq!(
            decode_with_tail(&[0x66, 0x8B, 0x40, 0x20], 16),
            Ok(load(4, 4, EAX))
        );
        assert_eq!(
            decode_with_tail(&[0x67, 0x8B, 0x80, 0x20, 0x00, 0xE0, 0xFE], 16),
            Ok(load(7, 2, ax))
        );
        // mov word [0x1234], 0x5678 in 16-bit code: disp16.
        assert_eq!(
            decode_with_tail(&[0xC7, 0x06, 0x34, 0x12, 0x78, 0x56], 16),
            Ok(store_immediate(6, 2, 0x5678))
        );
    }

    #[test]
    fn sixty_four_bit_forms() {
        // mov rax, [rdi]; mov [rax+0x10], r8d.
        assert_eq!(
            decode_with_tail(&[0x48, 0x8B, 0x07], 64),
            Ok(load(3, 8, reg(Gpr::Rax, RegisterPart::All64)))
        );
        assert_eq!(
            decode_with_tail(&[0x44, 0x89, 0x40, 0x10], 64),
            Ok(store_register(4, 4, reg(Gpr::R8, RegisterPart::Low32)))
        );
        // mov r15, [r12+0x20]: REX.WRB, SIB forced by r12.
        assert_eq!(
            decode_with_tail(&[0x4D, 0x8B, 0x7C, 0x24, 0x20], 64),
            Ok(load(5, 8, reg(Gpr::R15, RegisterPart::All64)))
        );
        // mov qword [rip+0x100], -1: REX.W C7 sign-extends its imm32.
        assert_eq!(
            decode_with_tail(
                &[0x48, 0xC7, 0x05, 0x00, 0x01, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF],
                64
            ),
            Ok(store_immediate(11, 8, u64::MAX))
        );
        // mov [rax], sil needs REX; without it the same byte is dh.
        assert_eq!(
            decode_with_tail(&[0x40, 0x88, 0x30], 64),
            Ok(store_register(3, 1, reg(Gpr::Rsi, RegisterPart::Low8)))
        );
        assert_eq!(
            decode_with_tail(&[0x88, 0x30], 64),
            Ok(store_register(2, 1, reg(Gpr::Rdx, RegisterPart::High8)))
        );
        // mov r9w, [rbx]
        assert_eq!(
            decode_with_tail(&[0x66, 0x44, 0x8B, 0x0B], 64),
            Ok(load(4, 2, reg(Gpr::R9, RegisterPart::Low16)))
        );
    }

    #[test]
    fn byte_forms() {
        // mov byte [eax], 0x41; mov [ecx], bl; mov ah, [edx].
        assert_eq!(
            decode_with_tail(&[0xC6, 0x00, 0x41], 32),
            Ok(store_immediate(3, 1, 0x41))
        );
        assert_eq!(
            decode_with_tail(&[0x88, 0x19], 32),
            Ok(store_register(2, 1, reg(Gpr::Rbx, RegisterPart::Low8)))
        );
        assert_eq!(
            decode_with_tail(&[0x8A, 0x22], 32),
            Ok(load(2, 1, reg(Gpr::Rax, RegisterPart::High8)))
        );
    }

    #[test]
    fn widening_loads() {
        let widening = |length, size, destination, extension| MmioInstruction {
            length,
            size,
            op: MmioOp::Load {
                destination,
                extension,
            },
        };
        // movzx eax, byte [ecx]; movzx edx, word [ebx+0x10]; movsx esi, byte [eax].
        assert_eq!(
            decode_with_tail(&[0x0F, 0xB6, 0x01], 32),
            Ok(widening(3, 1, EAX, Extension::Zero))
        );
        assert_eq!(
            decode_with_tail(&[0x0F, 0xB7, 0x53, 0x10], 32),
            Ok(widening(4, 2, EDX, Extension::Zero))
        );
        assert_eq!(
            decode_with_tail(&[0x0F, 0xBE, 0x30], 32),
            Ok(widening(3, 1, ESI, Extension::Sign))
        );
        // movsx rax, word [rdi]; movsxd rcx, dword [rdx].
        assert_eq!(
            decode_with_tail(&[0x48, 0x0F, 0xBF, 0x07], 64),
            Ok(widening(
                4,
                2,
                reg(Gpr::Rax, RegisterPart::All64),
                Extension::Sign
            ))
        );
        assert_eq!(
            decode_with_tail(&[0x48, 0x63, 0x0A], 64),
            Ok(widening(
                3,
                4,
                reg(Gpr::Rcx, RegisterPart::All64),
                Extension::Sign
            ))
        );
    }

    #[test]
    fn every_register_decodes_to_its_number() {
        for (number, &gpr) in Gpr::ALL.iter().enumerate() {
            let number = number as u8;
            let rex = 0x48 | ((number >> 3) << 2); // REX.W, plus REX.R for r8-r15.
            let modrm = ((number & 7) << 3) | 0x01; // [rcx]
            assert_eq!(
                decode(&[rex, 0x8B, modrm], 64),
                Ok(load(3, 8, reg(gpr, RegisterPart::All64)))
            );
            assert_eq!(
                decode(&[rex & !0x08, 0x8B, modrm], 64),
                Ok(load(3, 4, reg(gpr, RegisterPart::Low32)))
            );
            assert_eq!(
                decode(&[0x66, rex & !0x08, 0x89, modrm], 64),
                Ok(store_register(4, 2, reg(gpr, RegisterPart::Low16)))
            );
            assert_eq!(
                decode(&[rex & !0x08, 0x88, modrm], 64),
                Ok(store_register(3, 1, reg(gpr, RegisterPart::Low8)))
            );
        }
        for (number, gpr) in [(4, Gpr::Rax), (5, Gpr::Rcx), (6, Gpr::Rdx), (7, Gpr::Rbx)] {
            assert_eq!(
                decode(&[0x8A, (number << 3) | 0x01], 32),
                Ok(load(2, 1, reg(gpr, RegisterPart::High8)))
            );
        }
    }

    #[test]
    fn unsupported_instructions_are_named() {
        // (rep movsd and xchg [eax], ecx are emulated now: see `more_forms`.)
        let cases: [(&[u8], u32, Mnemonic, &str); 5] = [
            // or dword [eax], 1
            (&[0x83, 0x08, 0x01], 32, Mnemonic::Or, "or"),
            // lock or dword [esp], 0 (xv6's barrier)
            (&[0xF0, 0x83, 0x0C, 0x24, 0x00], 32, Mnemonic::Or, "or"),
            // add eax, [ebx]
            (&[0x03, 0x03], 32, Mnemonic::Add, "add"),
            // mov [eax], es: a segment register to memory
            (&[0x8C, 0x00], 32, Mnemonic::Mov, "mov"),
            // rep mov [eax], ecx: a prefix the processor would ignore
            (&[0xF3, 0x89, 0x08], 32, Mnemonic::Mov, "mov"),
        ];
        for (bytes, bitness, mnemonic, name) in cases {
            let error = decode(bytes, bitness).unwrap_err();
            assert_eq!(error, DecodeError::Unsupported { mnemonic }, "{bytes:02x?}");
            assert_eq!(
                format!("{error}"),
                format!("unsupported MMIO instruction {name}")
            );
        }
    }

    #[test]
    fn register_only_and_invalid_forms_are_refused() {
        // mov eax, ecx (mod = 11): no memory access.
        let error = decode(&[0x8B, 0xC1], 32).unwrap_err();
        assert_eq!(
            error,
            DecodeError::NoMemoryOperand {
                mnemonic: Mnemonic::Mov
            }
        );
        assert_eq!(format!("{error}"), "mov with no memory operand");
        // mov eax, imm32 has no memory operand form at all.
        assert_eq!(
            decode(&[0xB8, 1, 2, 3, 4], 32),
            Err(DecodeError::Unsupported {
                mnemonic: Mnemonic::Mov
            })
        );
        // vmovdqa xmm0, [rax]: VEX is not decoded at all (see the workspace Cargo.toml).
        assert_eq!(
            decode(&[0xC5, 0xF9, 0x6F, 0x00], 64),
            Err(DecodeError::Invalid)
        );
        // lock mov is #UD.
        assert_eq!(decode(&[0xF0, 0x89, 0x08], 32), Err(DecodeError::Invalid));
        // FE /7 is not an instruction; ud2 is one, just not a supported one.
        assert_eq!(decode(&[0xFE, 0x38], 32), Err(DecodeError::Invalid));
        assert_eq!(
            decode(&[0x0F, 0x0B], 32),
            Err(DecodeError::Unsupported {
                mnemonic: Mnemonic::Ud2
            })
        );
        // 16 bytes of prefixes: longer than 15 is #GP.
        let mut long = [0x66; 16];
        long[14] = 0x89;
        long[15] = 0x08;
        assert!(decode(&long, 32).is_err());
        assert_eq!(
            decode(&[0x89, 0x08], 8),
            Err(DecodeError::BadBitness { bitness: 8 })
        );
    }

    #[test]
    fn truncated_bytes_are_an_error() {
        let full = [0xC7, 0x80, 0xB0, 0, 0, 0, 0, 0, 0, 0];
        for end in 0..full.len() {
            assert_eq!(
                decode(&full[..end], 32),
                Err(DecodeError::Truncated { available: end }),
                "{end} bytes"
            );
        }
        assert_eq!(
            decode(&[0x0F], 32),
            Err(DecodeError::Truncated { available: 1 })
        );
        assert_eq!(
            decode(&[0x66], 64),
            Err(DecodeError::Truncated { available: 1 })
        );
    }

    #[test]
    fn register_parts_follow_x86_write_rules() {
        let mut regs = Regs::default();
        regs.values[0] = 0x1122_3344_5566_7788;
        reg(Gpr::Rax, RegisterPart::Low8).write(&mut regs, 0xAABB);
        assert_eq!(regs.values[0], 0x1122_3344_5566_77BB);
        reg(Gpr::Rax, RegisterPart::High8).write(&mut regs, 0xCC);
        assert_eq!(regs.values[0], 0x1122_3344_5566_CCBB);
        reg(Gpr::Rax, RegisterPart::Low16).write(&mut regs, 0x1_DDEE);
        assert_eq!(regs.values[0], 0x1122_3344_5566_DDEE);
        reg(Gpr::Rax, RegisterPart::Low32).write(&mut regs, 0xFFFF_0000_1234_5678);
        assert_eq!(regs.values[0], 0x1234_5678);
        reg(Gpr::Rax, RegisterPart::All64).write(&mut regs, u64::MAX);
        assert_eq!(regs.values[0], u64::MAX);
        assert_eq!(regs.values[1..], [0; 15]);

        regs.values[3] = 0x8877_6655_4433_2211;
        assert_eq!(reg(Gpr::Rbx, RegisterPart::Low8).read(&regs), 0x11);
        assert_eq!(reg(Gpr::Rbx, RegisterPart::High8).read(&regs), 0x22);
        assert_eq!(reg(Gpr::Rbx, RegisterPart::Low16).read(&regs), 0x2211);
        assert_eq!(reg(Gpr::Rbx, RegisterPart::Low32).read(&regs), 0x4433_2211);
        assert_eq!(
            reg(Gpr::Rbx, RegisterPart::All64).read(&regs),
            0x8877_6655_4433_2211
        );
    }

    #[test]
    fn loads_complete_into_the_destination() {
        let mut regs = Regs::default();
        regs.values[2] = 0xFFFF_FFFF_FFFF_FFFF;
        // mov edx, [eax+0x20] reading the LAPIC ID: the upper half is cleared.
        let lapic_id = decode(&[0x8B, 0x50, 0x20], 32).unwrap();
        complete_load(&lapic_id, 0xDEAD_0000_0000_0000, &mut regs);
        assert_eq!(regs.values[2], 0);
        complete_load(&lapic_id, 0x0005_0014, &mut regs);
        assert_eq!(regs.values[2], 0x0005_0014);

        // mov ah, [edx] merges into bits 15:8.
        regs.values[0] = 0x1234_5678;
        complete_load(&decode(&[0x8A, 0x22], 32).unwrap(), 0x1AB, &mut regs);
        assert_eq!(regs.values[0], 0x1234_AB78);

        // movsx esi, byte [eax] / movzx eax, byte [ecx].
        complete_load(&decode(&[0x0F, 0xBE, 0x30], 32).unwrap(), 0x80, &mut regs);
        assert_eq!(regs.values[6], 0xFFFF_FF80);
        complete_load(&decode(&[0x0F, 0xB6, 0x01], 32).unwrap(), 0x80, &mut regs);
        assert_eq!(regs.values[0], 0x80);
        // movsxd rcx, dword [rdx].
        complete_load(
            &decode(&[0x48, 0x63, 0x0A], 64).unwrap(),
            0x8000_0000,
            &mut regs,
        );
        assert_eq!(regs.values[1], 0xFFFF_FFFF_8000_0000);
        // movsx ax, byte [eax] (16-bit destination) keeps bits 63:16.
        regs.values[0] = 0xAAAA_BBBB_CCCC_DDDD;
        complete_load(
            &decode(&[0x66, 0x0F, 0xBE, 0x00], 32).unwrap(),
            0xFE,
            &mut regs,
        );
        assert_eq!(regs.values[0], 0xAAAA_BBBB_CCCC_FFFE);

        // A store completes nothing.
        let before = regs.clone();
        complete_load(&decode(&[0x89, 0x01], 32).unwrap(), 7, &mut regs);
        assert_eq!(regs, before);
    }

    #[test]
    fn stores_take_their_value_from_the_source() {
        let mut regs = Regs::default();
        regs.values[0] = 0xFFFF_FFFF_0000_000B;
        regs.values[3] = 0x1122;
        // mov [ecx], eax: the low 32 bits.
        assert_eq!(
            store_value(&decode(&[0x89, 0x01], 32).unwrap(), &regs),
            Some(0xB)
        );
        // mov [ecx], bh
        assert_eq!(
            store_value(&decode(&[0x88, 0x39], 32).unwrap(), &regs),
            Some(0x11)
        );
        // mov qword [rax], -2
        let imm = decode(&[0x48, 0xC7, 0x00, 0xFE, 0xFF, 0xFF, 0xFF], 64).unwrap();
        assert_eq!(store_value(&imm, &regs), Some(0xFFFF_FFFF_FFFF_FFFE));
        // mov dword [eax+0x300], 0x88500
        let icr = decode(&[0xC7, 0x80, 0, 3, 0, 0, 0, 0x85, 8, 0], 32).unwrap();
        assert!(icr.is_store());
        assert_eq!(store_value(&icr, &regs), Some(0x8_8500));
        // A load stores nothing.
        let load = decode(&[0x8B, 0x40, 0x20], 32).unwrap();
        assert!(!load.is_store());
        assert_eq!(store_value(&load, &regs), None);
    }

    fn bitness() -> impl Strategy<Value = u32> {
        prop_oneof![Just(16u32), Just(32), Just(64)]
    }

    /// Bytes that start like a supported `mov` more often than random bytes do.
    fn mov_like() -> impl Strategy<Value = Vec<u8>> {
        let prefixes = proptest::collection::vec(
            prop_oneof![Just(0x66u8), Just(0x67), Just(0x48), Just(0x41), Just(0x64)],
            0..3,
        );
        let opcode = prop_oneof![
            Just(0x88u8),
            Just(0x89),
            Just(0x8A),
            Just(0x8B),
            Just(0xC6),
            Just(0xC7),
            0xA0u8..=0xA3,
        ];
        let tail = proptest::collection::vec(any::<u8>(), 0..14);
        (prefixes, opcode, tail).prop_map(|(mut bytes, opcode, tail)| {
            bytes.push(opcode);
            bytes.extend(tail);
            bytes
        })
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic(
            bytes in prop_oneof![proptest::collection::vec(any::<u8>(), 0..20), mov_like()],
            bitness in bitness(),
            values in any::<[u64; 16]>(),
            loaded in any::<u64>(),
        ) {
            let Ok(instr) = decode(&bytes, bitness) else {
                return Ok(());
            };
            let length = usize::from(instr.length);
            prop_assert!((1..=MAX_INSTRUCTION_LENGTH).contains(&length));
            prop_assert!(length <= bytes.len());
            prop_assert!([1, 2, 4, 8].contains(&instr.size));
            // The length is exact: the instruction alone decodes the same, one byte less
            // does not.
            prop_assert_eq!(decode(&bytes[..length], bitness), Ok(instr));
            prop_assert_eq!(
                decode(&bytes[..length - 1], bitness),
                Err(DecodeError::Truncated { available: length - 1 })
            );
            let mut regs = Regs { values };
            match instr.op {
                MmioOp::Load { destination, .. } => {
                    prop_assert!(destination.part.bytes() >= instr.size);
                    complete_load(&instr, loaded, &mut regs);
                    prop_assert_eq!(store_value(&instr, &regs), None);
                }
                MmioOp::Store { value } => {
                    if let StoreSource::Register(source) = value {
                        prop_assert_eq!(source.part.bytes(), instr.size);
                    }
                    let stored = store_value(&instr, &regs).unwrap();
                    prop_assert_eq!(stored & !size_mask(instr.size), 0);
                }
                MmioOp::Exchange { register } | MmioOp::CompareExchange { register } => {
                    prop_assert_eq!(register.part.bytes(), instr.size);
                }
                MmioOp::StringStore { address_bits, .. } | MmioOp::StringMove { address_bits, .. } => {
                    prop_assert!([16, 32, 64].contains(&address_bits));
                }
                MmioOp::Hint => prop_assert_eq!(store_value(&instr, &regs), None),
            }
        }

        #[test]
        fn writes_touch_only_their_part(
            start in any::<u64>(),
            value in any::<u64>(),
            number in 0usize..16,
            part in prop_oneof![
                Just(RegisterPart::Low8),
                Just(RegisterPart::High8),
                Just(RegisterPart::Low16),
                Just(RegisterPart::Low32),
                Just(RegisterPart::All64),
            ],
        ) {
            let mut regs = Regs { values: [start; 16] };
            let operand = reg(Gpr::ALL[number], part);
            operand.write(&mut regs, value);
            prop_assert_eq!(operand.read(&regs), value & size_mask(part.bytes()));
            let kept = match part {
                RegisterPart::Low8 => !0xFF,
                RegisterPart::High8 => !0xFF00,
                RegisterPart::Low16 => !0xFFFF,
                RegisterPart::Low32 | RegisterPart::All64 => 0,
            };
            prop_assert_eq!(regs.values[number] & kept, start & kept);
            for (other, &held) in regs.values.iter().enumerate() {
                if other != number {
                    prop_assert_eq!(held, start);
                }
            }
        }
    }
}
