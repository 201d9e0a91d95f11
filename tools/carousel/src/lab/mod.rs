//! Lab files: the TOML description of one run (scheduler settings, emulator settings, VMs),
//! parsed strictly and validated before anything is built or started.
//!
//! What is here: the validated lab ([`Lab`], [`definition`]), the file as written ([`raw`]),
//! templates (`[vm_defaults]`, `count`, `{i}`) made into one table per VM ([`template`]), every
//! validation rule with an error that names the offending key and its line ([`parse`],
//! [`checker`], [`error`]), the limits and defaults ([`limits`]), console script steps
//! ([`script`]), the `[sweep]` table ([`sweep`]), `${VAR}` expansion ([`env`](mod@env)), the
//! translation into the hypervisor's run configuration ([`config`]) and writing the labs the
//! tool generates ([`write`](mod@write)). What is not: building images or running anything.

pub mod checker;
pub mod config;
pub mod definition;
pub mod env;
pub mod error;
pub mod limits;
pub mod parse;
pub mod raw;
pub mod script;
pub mod sweep;
pub mod template;
pub mod write;

pub use self::config::{disk_module, kernel_module};
pub use self::definition::{blank_disk_path, Change, Disk, Kernel, Lab, Vm};
pub use self::env::{expand_env, EnvProblem};
pub use self::error::{LabError, LabErrorKind, Template, VmRef};
pub use self::limits::*;
pub use self::sweep::SweepTable;
pub use carousel_trace::TRACE_LEVELS;
