//! Why a lab file was refused: the file, the line and the rule, which names the key.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::PathBuf;

use super::limits::{
    BUILTIN_GUESTS, CPU_MODELS, DRIVE_MAX_GIB, HYPERVISOR_MIB, MAX_TOTAL_MIB, VM_COUNT_RANGE,
};

/// The sizes behind a disk that does not fit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskSizes {
    /// The disk's file (or "a blank disk of N KiB").
    pub file: String,
    /// The disk that went over, bytes.
    pub bytes: u64,
    /// All disks up to it (drive: their extents with the header), bytes.
    pub total: u64,
    /// The VMs' RAM, MiB (memory backend).
    pub guests_mib: u64,
}

/// The `[[vm]]` table with a `count` a VM was made from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Template {
    /// The table's index among the file's `[[vm]]` tables (as in the key `vm[K]`).
    pub table: usize,
    /// The table's `count`.
    pub count: usize,
}

impl fmt::Display for Template {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "from [[vm]] {}, count {}", self.table, self.count)
    }
}

/// The VM an error is about: its name and, for a VM a `count` made, the table it came from.
/// Shown as `"xv6-3" (from [[vm]] 1, count 4)`, or `"hello"` for a VM of its own table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmRef {
    pub name: String,
    pub template: Option<Template>,
}

impl fmt::Display for VmRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}{}", self.name, origin(&self.template))
    }
}

/// ` (from [[vm]] K, count N)` for a VM a template made; nothing for one of its own table.
fn origin(template: &Option<Template>) -> String {
    template.map_or_else(String::new, |template| format!(" ({template})"))
}

/// `, in vm NAME` when the message must say which VM a value was checked for.
fn in_vm(vm: &Option<VmRef>) -> String {
    vm.as_ref()
        .map_or_else(String::new, |vm| format!(", in vm {vm}"))
}

/// Why a lab file was refused.
#[derive(Debug)]
pub struct LabError {
    /// The lab file.
    pub file: PathBuf,
    /// 1-based line of the offending value, where known.
    pub line: Option<usize>,
    /// Boxed: errors are rare, and a `Result` carrying one stays small.
    pub kind: Box<LabErrorKind>,
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{line}: {}", self.file.display(), self.kind),
            None => write!(f, "{}: {}", self.file.display(), self.kind),
        }
    }
}

impl std::error::Error for LabError {}

/// The rule a lab broke. Every variant names the key it is about.
#[derive(Debug, thiserror::Error)]
pub enum LabErrorKind {
    #[error("cannot read the lab file: {0}")]
    Read(std::io::Error),
    /// TOML syntax, an unknown key, a missing key or a value of the wrong type; toml's message
    /// names the key and shows the line.
    #[error("{0}")]
    Toml(String),
    /// `vm` is the VM the value was checked for, when the key alone does not say (a VM a
    /// template made, or a key it took from `[vm_defaults]`).
    #[error(
        "`{key}` = {value} is outside the allowed range {}..={}{}",
        range.start(),
        range.end(),
        in_vm(vm)
    )]
    OutOfRange {
        key: String,
        value: i64,
        range: RangeInclusive<i64>,
        vm: Option<VmRef>,
    },
    #[error(
        "`vm`: the lab has {count} [[vm]] tables; {}..={} are allowed",
        VM_COUNT_RANGE.start(),
        VM_COUNT_RANGE.end()
    )]
    VmCount { count: usize },
    /// A lab whose `count`s make more VMs than a lab may have; `key` is the `count` (or the
    /// table) that goes over.
    #[error(
        "`{key}`: with it the [[vm]] tables make {count} VMs; at most {} are allowed",
        VM_COUNT_RANGE.end()
    )]
    TooManyVms { key: String, count: usize },
    #[error(
        "`{key}` = {value}: a count is a whole number of VMs, {}..={}",
        VM_COUNT_RANGE.start(),
        VM_COUNT_RANGE.end()
    )]
    BadCount { key: String, value: String },
    #[error(
        "`{key}` = {value:?}: `{{i}}` stands for the VM's index only in `name`, `args` and \
         script text (`expect`, `send`, `label`)"
    )]
    IndexNotTaken { key: String, value: String },
    #[error(
        "`{key}` = {value:?}: with `count = {count}` every VM would have this name; put `{{i}}` \
         in it (replaced by 0 to {})",
        count - 1
    )]
    NameWithoutIndex {
        key: String,
        value: String,
        count: usize,
    },
    #[error("`{key}` = {value:?}{}: {reason}", in_vm(vm))]
    BadLabel {
        key: String,
        value: String,
        vm: Option<VmRef>,
        reason: &'static str,
    },
    #[error("`{key}`: {reason}")]
    NotADefault { key: String, reason: &'static str },
    #[error("`{key}` is missing: {reason}")]
    MissingKey { key: String, reason: &'static str },
    #[error("`{key}` = {value:?}{}: {reason}", origin(template))]
    BadName {
        key: String,
        value: String,
        template: Option<Template>,
        reason: &'static str,
    },
    #[error(
        "`{key}` = {value:?}{}: another VM has this name (`{first_key}`{})",
        origin(template),
        first.map_or_else(String::new, |first| format!(", {first}"))
    )]
    DuplicateName {
        key: String,
        value: String,
        template: Option<Template>,
        first_key: String,
        first: Option<Template>,
    },
    #[error("`{key}` = {value:?} is not a Bochs CPU model Carousel supports; one of: {}", CPU_MODELS.join(", "))]
    CpuModel { key: String, value: String },
    #[error("`{key}` = {value:?} is not one of: {}", choices.join(", "))]
    BadChoice {
        key: String,
        value: String,
        choices: Vec<&'static str>,
    },
    #[error("`{key}` of vm {vm}: {path} does not exist or is not a file")]
    MissingFile {
        key: String,
        vm: VmRef,
        path: PathBuf,
    },
    #[error("`{key}` of vm {vm}: {path} is empty")]
    EmptyFile {
        key: String,
        vm: VmRef,
        path: PathBuf,
    },
    #[error(
        "`{key}` of vm {vm}: {path} is not an ELF file (no ELF magic); \
         built-in guests are: {}",
        BUILTIN_GUESTS.join(", ")
    )]
    NotElf {
        key: String,
        vm: VmRef,
        path: PathBuf,
    },
    #[error("`{key}` of vm {vm}: {reason}")]
    BadArgs {
        key: String,
        vm: VmRef,
        reason: String,
    },
    #[error(
        "`vm[*].memory_mib`: the VMs need {guests} MiB, plus {HYPERVISOR_MIB} MiB for the \
         hypervisor is {} MiB; at most {MAX_TOTAL_MIB} MiB fit in the emulator",
        guests + HYPERVISOR_MIB
    )]
    MemoryTotal { guests: u64 },
    #[error(
        "`{key}` of vm {vm} ({}): with `disk_backend = \"memory\"` the disks travel in \
         the emulator's memory beside the VMs' RAM; with this one ({} KiB) they add up to {} MiB \
         and the RAM to {} MiB, more than the {MAX_TOTAL_MIB} MiB the emulator holds with \
         the hypervisor's {HYPERVISOR_MIB} (use the default `disk_backend = \"drive\"`)",
        sizes.file,
        sizes.bytes.div_ceil(1024),
        sizes.total.div_ceil(1 << 20),
        sizes.guests_mib
    )]
    DiskMemory {
        key: String,
        vm: VmRef,
        sizes: Box<DiskSizes>,
    },
    #[error(
        "`{key}` of vm {vm} ({}): the shared drive cannot hold it: with this disk ({} MiB) \
         the VMs' disks need {} MiB of drive, at most {DRIVE_MAX_GIB} GiB",
        sizes.file,
        sizes.bytes.div_ceil(1 << 20),
        sizes.total.div_ceil(1 << 20)
    )]
    DriveTotal {
        key: String,
        vm: VmRef,
        sizes: Box<DiskSizes>,
    },
    /// `reason` names the file.
    #[error("`{key}` of vm {vm}: {reason}")]
    BadImage {
        key: String,
        vm: VmRef,
        reason: String,
    },
    #[error(
        "`{key}` of vm {vm}: persist needs `run.disk_backend = \"drive\"` (a disk served from \
         memory is gone when the emulator ends)"
    )]
    PersistFromMemory { key: String, vm: VmRef },
    #[error("`{key}` of vm {vm}: environment variable {var} is not set (or empty)")]
    MissingEnv { key: String, vm: VmRef, var: String },
    #[error("`{key}` of vm {vm}: {reason}")]
    BadPath {
        key: String,
        vm: VmRef,
        reason: String,
    },
    #[error("`{key}` and `{other}` of vm {vm}: give one of them, not both")]
    Exclusive {
        key: String,
        other: String,
        vm: VmRef,
    },
    #[error("`{key}` of vm {vm}: caps need `run.policy = \"credit\"` (the policy is {policy:?})")]
    CapNeedsCredit {
        key: String,
        vm: VmRef,
        policy: String,
    },
    #[error(
        "`{key}`: compression finds cold pages through working-set samples, so it needs \
         `run.memory_sample_ms` above 0"
    )]
    CompressionWithoutSamples { key: String },
    #[error("`{key}` of vm {vm}: persist needs a disk (`disk` or `blank_disk_kib`)")]
    PersistWithoutDisk { key: String, vm: VmRef },
    #[error("`{key}`: {reason}")]
    Sweep { key: String, reason: String },
    /// A `[[run.change]]` that does not say one change, or names a VM the lab does not have.
    #[error("`{key}`: {reason}")]
    BadChange { key: String, reason: String },
    #[error("`{key}` (script step {step}) of vm {vm}: not a regular expression: {error}")]
    BadRegex {
        key: String,
        step: usize,
        vm: VmRef,
        error: String,
    },
}
