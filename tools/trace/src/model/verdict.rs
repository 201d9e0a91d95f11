//! What a run's verdict reads from its records: the Hello records (which VMs the hypervisor
//! names), the guests' checks, the stops and the run's end, in arrival order. The decision is
//! [`crate::verdict::decide`]'s.

use carousel_protocol::record::{Record, StopReason};

use crate::escape;

/// One fact a verdict needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fact {
    /// A Hello record named these VMs.
    Hello { vms: Vec<String> },
    /// A guest reported a named check.
    Check {
        tsc: u64,
        vm: u16,
        name: String,
        passed: bool,
    },
    /// A VM left the run.
    Stopped {
        tsc: u64,
        vm: u16,
        reason: StopReason,
    },
    /// The run ended in order.
    RunEnd { tsc: u64 },
}

/// `reason` with the messages it carries (which may quote the guest) made safe to show.
fn shown(reason: &StopReason) -> StopReason {
    match reason {
        StopReason::LoadFailed { message } => StopReason::LoadFailed {
            message: escape::message(message),
        },
        StopReason::BadMmio { gpa, rip, message } => StopReason::BadMmio {
            gpa: *gpa,
            rip: *rip,
            message: escape::message(message),
        },
        StopReason::VmxError { message } => StopReason::VmxError {
            message: escape::message(message),
        },
        other => other.clone(),
    }
}

/// The facts of a run, in arrival order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerdictInputs {
    pub facts: Vec<Fact>,
}

impl VerdictInputs {
    /// Keeps what the next record says about the verdict.
    pub fn add(&mut self, record: &Record) {
        let fact = match record {
            Record::Hello { vms, .. } => Fact::Hello {
                vms: vms.iter().map(|name| escape::name(name)).collect(),
            },
            Record::Check {
                tsc,
                vm,
                name,
                passed,
            } => Fact::Check {
                tsc: *tsc,
                vm: *vm,
                name: escape::name(name),
                passed: *passed,
            },
            Record::VmStopped { tsc, vm, reason } => Fact::Stopped {
                tsc: *tsc,
                vm: *vm,
                reason: shown(reason),
            },
            Record::RunEnd { tsc } => Fact::RunEnd { tsc: *tsc },
            _ => return,
        };
        self.facts.push(fact);
    }

    /// The facts of `records`.
    pub fn of_records(records: &[Record]) -> Self {
        let mut inputs = Self::default();
        for record in records {
            inputs.add(record);
        }
        inputs
    }

    /// True once a Hello record arrived: the hypervisor started the run.
    pub fn hello_seen(&self) -> bool {
        self.facts
            .iter()
            .any(|fact| matches!(fact, Fact::Hello { .. }))
    }

    /// True once the RunEnd record arrived.
    pub fn run_end_seen(&self) -> bool {
        self.facts
            .iter()
            .any(|fact| matches!(fact, Fact::RunEnd { .. }))
    }

    /// True once VM `vm` stopped.
    pub fn stopped(&self, vm: u16) -> bool {
        self.stops().any(|(_, stopped, _)| stopped == vm)
    }

    /// Every stop: when, which VM, why.
    pub fn stops(&self) -> impl Iterator<Item = (u64, u16, &StopReason)> + '_ {
        self.facts.iter().filter_map(|fact| match fact {
            Fact::Stopped { tsc, vm, reason } => Some((*tsc, *vm, reason)),
            _ => None,
        })
    }
}
