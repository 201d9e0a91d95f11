//! How a VMX instruction fails.
//!
//! Reference: Intel SDM, Order Number 325462-083US, March 2024: 32.2 "Conventions" (VMsucceed,
//! VMfailInvalid, VMfailValid) and 32.4 "VM Instruction Error Numbers".

use core::fmt;

use crate::fields;

/// A VMX instruction that did not succeed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmFail {
    /// VMfailInvalid: CF = 1. "There is no current VMCS" (or the VMXON pointer was bad), so no
    /// error number was stored.
    Invalid,
    /// VMfailValid: ZF = 1. The error number was stored in the current VMCS's
    /// VM-instruction error field.
    Valid(VmInstructionError),
}

impl fmt::Display for VmFail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Invalid => f.write_str("VMfailInvalid (no current VMCS or bad pointer)"),
            Self::Valid(error) => write!(f, "VMfailValid: {error}"),
        }
    }
}

/// The VMX instructions Carousel executes, to say which one failed.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum VmxInstruction {
    Vmxon,
    Vmclear,
    Vmptrld,
    Vmread,
    Vmwrite,
    Vmlaunch,
    Vmresume,
    Invept,
    Invvpid,
}

impl VmxInstruction {
    /// The mnemonic, as the SDM writes it.
    pub const fn mnemonic(self) -> &'static str {
        match self {
            Self::Vmxon => "VMXON",
            Self::Vmclear => "VMCLEAR",
            Self::Vmptrld => "VMPTRLD",
            Self::Vmread => "VMREAD",
            Self::Vmwrite => "VMWRITE",
            Self::Vmlaunch => "VMLAUNCH",
            Self::Vmresume => "VMRESUME",
            Self::Invept => "INVEPT",
            Self::Invvpid => "INVVPID",
        }
    }
}

impl fmt::Display for VmxInstruction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mnemonic())
    }
}

/// A VMX instruction that failed, how, and the VMCS field it named (VMREAD and VMWRITE).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VmxFailure {
    pub instruction: VmxInstruction,
    /// The encoding of the field a VMREAD or VMWRITE named; `None` for the other instructions.
    pub field: Option<u32>,
    pub fail: VmFail,
}

impl VmxFailure {
    /// A failure of an instruction that names no field.
    pub const fn new(instruction: VmxInstruction, fail: VmFail) -> Self {
        Self {
            instruction,
            field: None,
            fail,
        }
    }

    /// A failed VMREAD or VMWRITE of the field with `encoding`.
    pub const fn on_field(instruction: VmxInstruction, encoding: u32, fail: VmFail) -> Self {
        Self {
            instruction,
            field: Some(encoding),
            fail,
        }
    }
}

impl fmt::Display for VmxFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let Self {
            instruction,
            field,
            fail,
        } = self;
        match field.map(|encoding| (encoding, fields::name(encoding))) {
            None => write!(f, "{instruction}: {fail}"),
            Some((_, Some(name))) => write!(f, "{instruction} {name}: {fail}"),
            Some((encoding, None)) => write!(f, "{instruction} field {encoding:#06x}: {fail}"),
        }
    }
}

macro_rules! instruction_errors {
    ($($number:literal => $name:ident, $text:literal;)*) => {
        /// The VM-instruction error field, named as in SDM 32.4 "VM Instruction Error Numbers".
        #[derive(Clone, Copy, PartialEq, Eq, Debug)]
        pub enum VmInstructionError {
            $(#[doc = $text] $name,)*
            /// A number the SDM revision above does not list.
            Unknown(u32),
        }

        impl VmInstructionError {
            /// Decodes the raw VM-instruction error field.
            pub const fn from_raw(raw: u32) -> Self {
                match raw {
                    $($number => Self::$name,)*
                    other => Self::Unknown(other),
                }
            }

            /// The raw error number.
            pub const fn number(self) -> u32 {
                match self {
                    $(Self::$name => $number,)*
                    Self::Unknown(other) => other,
                }
            }

            fn description(self) -> &'static str {
                match self {
                    $(Self::$name => $text,)*
                    Self::Unknown(_) => "unknown VM-instruction error",
                }
            }
        }
    };
}

instruction_errors! {
    1 => VmcallInVmxRoot, "VMCALL executed in VMX root operation";
    2 => VmclearInvalidAddress, "VMCLEAR with invalid physical address";
    3 => VmclearVmxonPointer, "VMCLEAR with VMXON pointer";
    4 => VmlaunchNonClearVmcs, "VMLAUNCH with non-clear VMCS";
    5 => VmresumeNonLaunchedVmcs, "VMRESUME with non-launched VMCS";
    6 => VmresumeAfterVmxoff, "VMRESUME after VMXOFF";
    7 => EntryInvalidControlFields, "VM entry with invalid control field(s)";
    8 => EntryInvalidHostStateFields, "VM entry with invalid host-state field(s)";
    9 => VmptrldInvalidAddress, "VMPTRLD with invalid physical address";
    10 => VmptrldVmxonPointer, "VMPTRLD with VMXON pointer";
    11 => VmptrldIncorrectRevision, "VMPTRLD with incorrect VMCS revision identifier";
    12 => UnsupportedComponent, "VMREAD/VMWRITE from/to unsupported VMCS component";
    13 => VmwriteReadOnlyComponent, "VMWRITE to read-only VMCS component";
    15 => VmxonInVmxRoot, "VMXON executed in VMX root operation";
    16 => EntryInvalidExecutiveVmcsPointer, "VM entry with invalid executive-VMCS pointer";
    17 => EntryNonLaunchedExecutiveVmcs, "VM entry with non-launched executive VMCS";
    18 => EntryExecutiveVmcsNotVmxonPointer,
        "VM entry with executive-VMCS pointer not VMXON pointer";
    19 => VmcallNonClearVmcs, "VMCALL with non-clear VMCS";
    20 => VmcallInvalidExitControls, "VMCALL with invalid VM-exit control fields";
    22 => VmcallIncorrectMsegRevision, "VMCALL with incorrect MSEG revision identifier";
    23 => VmxoffDualMonitor, "VMXOFF under dual-monitor treatment of SMIs and SMM";
    24 => VmcallInvalidSmmMonitorFeatures, "VMCALL with invalid SMM-monitor features";
    25 => EntryInvalidExecutiveControls,
        "VM entry with invalid VM-execution control fields in executive VMCS";
    26 => EntryEventsBlockedByMovSs, "VM entry with events blocked by MOV SS";
    28 => InvalidInveptInvvpidOperand, "invalid operand to INVEPT/INVVPID";
}

impl fmt::Display for VmInstructionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "VM-instruction error {}: {}",
            self.number(),
            self.description()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips() {
        for raw in 0..64 {
            assert_eq!(VmInstructionError::from_raw(raw).number(), raw);
        }
        assert_eq!(
            VmInstructionError::from_raw(14),
            VmInstructionError::Unknown(14)
        );
    }

    #[test]
    fn a_failure_names_the_instruction_and_the_field() {
        let invalid = VmFail::Invalid;
        assert_eq!(
            VmxFailure::new(VmxInstruction::Vmptrld, invalid).to_string(),
            "VMPTRLD: VMfailInvalid (no current VMCS or bad pointer)"
        );
        let unsupported = VmFail::Valid(VmInstructionError::from_raw(12));
        assert_eq!(
            VmxFailure::on_field(
                VmxInstruction::Vmread,
                fields::GUEST_RIP.encoding(),
                unsupported
            )
            .to_string(),
            "VMREAD GUEST_RIP: VMfailValid: VM-instruction error 12: VMREAD/VMWRITE from/to \
             unsupported VMCS component"
        );
        assert_eq!(
            VmxFailure::on_field(VmxInstruction::Vmwrite, 0x6c, unsupported).to_string(),
            "VMWRITE field 0x006c: VMfailValid: VM-instruction error 12: VMREAD/VMWRITE from/to \
             unsupported VMCS component"
        );
    }

    #[test]
    fn display_uses_sdm_wording() {
        let fail = VmFail::Valid(VmInstructionError::from_raw(7));
        assert_eq!(
            fail.to_string(),
            "VMfailValid: VM-instruction error 7: VM entry with invalid control field(s)"
        );
    }
}
