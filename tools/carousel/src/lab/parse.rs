//! Reading a lab file: the TOML as written ([`raw`](super::raw)), strictly (an unknown key is
//! an error), its templates made into one table per VM ([`template`]), then every rule checked
//! with an error that names the offending key and its line.

use std::ops::RangeInclusive;
use std::path::Path;
use std::time::Duration;

use carousel_protocol::config::{
    fnv1a64, CreditConfig, DiskModelConfig, DiskQueuePolicy, QuantumClock, SchedulerPolicy,
    Setting, DEFAULT_CREDIT_PERIOD_US, DEFAULT_CREDIT_RATELIMIT_US, DEFAULT_DISK_ANTICIPATE_US,
    DEFAULT_INTERVAL_US, DEFAULT_MEMORY_SAMPLE_US,
};
use carousel_protocol::record::TraceLevel;
use carousel_trace::TRACE_LEVELS;
use toml::Spanned;

use super::checker::Checker;
use super::definition::{Change, Compression, Disk, DiskBackend, Kernel, Lab, Vm};
use super::env::process_env;
use super::error::{DiskSizes, LabError, LabErrorKind, VmRef};
use super::limits::*;
use super::raw::{RawChange, RawLab, RawSweep};
use super::script::{Pattern, Step, DEFAULT_STEP_TIMEOUT_S};
use super::sweep::{self as sweep_table, SweepTable, Workload};
use super::template::{self, VmTable};

/// The first four bytes of every ELF file.
const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// Why `name` cannot name a VM, if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() || name.len() > NAME_MAX {
        Some("a VM name has 1 to 32 characters")
    } else if !name
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'_' || byte == b'-')
    {
        Some("a VM name uses only letters, digits, `_` and `-`")
    } else if name.eq_ignore_ascii_case("carousel") {
        Some("`carousel` is the hypervisor's own console prefix")
    } else {
        None
    }
}

/// The checks common to kernel and disk files: present, a regular file, not empty.
fn check_file(
    checker: &Checker<'_>,
    span: std::ops::Range<usize>,
    key: &str,
    vm: &VmRef,
    path: &Path,
) -> Result<(), LabError> {
    let metadata = std::fs::metadata(path).ok().filter(|m| m.is_file());
    let kind = match metadata {
        None => LabErrorKind::MissingFile {
            key: key.to_string(),
            vm: vm.clone(),
            path: path.to_path_buf(),
        },
        Some(metadata) if metadata.len() == 0 => LabErrorKind::EmptyFile {
            key: key.to_string(),
            vm: vm.clone(),
            path: path.to_path_buf(),
        },
        Some(_) => return Ok(()),
    };
    Err(checker.error(Some(span), kind))
}

/// A disk image must be readable, a whole number of 512-byte sectors, and no larger than a
/// guest's 28-bit LBA reaches.
fn check_image(
    checker: &Checker<'_>,
    span: std::ops::Range<usize>,
    key: &str,
    vm: &VmRef,
    path: &Path,
) -> Result<(), LabError> {
    let bad = |reason: String| {
        checker.error(
            Some(span.clone()),
            LabErrorKind::BadImage {
                key: key.to_string(),
                vm: vm.clone(),
                reason: format!("{}: {reason}", path.display()),
            },
        )
    };
    let file =
        std::fs::File::open(path).map_err(|error| bad(format!("cannot read it: {error}")))?;
    let len = file
        .metadata()
        .map_err(|error| bad(format!("cannot read its size: {error}")))?
        .len();
    if !len.is_multiple_of(crate::image::disk::SECTOR_BYTES as u64) {
        return Err(bad(format!(
            "{len} bytes is not a whole number of 512-byte sectors"
        )));
    }
    if len > DISK_MAX_BYTES {
        return Err(bad(format!(
            "{} MiB is more than the {} GiB a guest's 28-bit LBA reaches",
            len >> 20,
            DISK_MAX_BYTES >> 30
        )));
    }
    Ok(())
}

fn starts_with_elf_magic(path: &Path) -> bool {
    use std::io::Read;
    let mut magic = [0u8; 4];
    std::fs::File::open(path)
        .and_then(|mut file| file.read_exact(&mut magic))
        .is_ok()
        && magic == ELF_MAGIC
}

impl Lab {
    /// Reads and validates the lab file at `path`.
    pub fn load(path: &Path) -> Result<Lab, LabError> {
        let text = std::fs::read_to_string(path).map_err(|error| LabError {
            file: path.to_path_buf(),
            line: None,
            kind: Box::new(LabErrorKind::Read(error)),
        })?;
        Self::parse(path, &text)
    }

    /// Validates `text`, the contents of the lab file at `path`. Relative paths inside resolve
    /// against `path`'s directory; files they name are checked on disk; `${VAR}` in `kernel`
    /// and `disk` reads the process environment.
    pub fn parse(path: &Path, text: &str) -> Result<Lab, LabError> {
        Self::parse_with_env(path, text, &process_env)
    }

    /// [`Lab::parse`] with `env` as the environment.
    pub fn parse_with_env(
        path: &Path,
        text: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Lab, LabError> {
        let base = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let checker = Checker {
            file: path,
            text,
            base,
            env,
        };
        let raw: RawLab = toml::from_str(text).map_err(|error| LabError {
            file: path.to_path_buf(),
            line: None,
            kind: Box::new(LabErrorKind::Toml(error.to_string().trim_end().to_string())),
        })?;

        let run = raw.run.unwrap_or_default();
        let quantum_us = checker.int(
            "run.quantum_us",
            run.quantum_us.as_ref(),
            QUANTUM_US_RANGE,
            i64::from(DEFAULT_QUANTUM_US),
        )? as u32;
        let ips = checker.int("run.ips", run.ips.as_ref(), IPS_RANGE, DEFAULT_IPS as i64)? as u64;
        let tsc_hz = match run.tsc_hz.as_ref() {
            None => None,
            Some(_) => {
                Some(checker.int("run.tsc_hz", run.tsc_hz.as_ref(), TSC_HZ_RANGE, 0)? as u64)
            }
        };
        let timeout_s = checker.int(
            "run.timeout_s",
            run.timeout_s.as_ref(),
            TIMEOUT_S_RANGE,
            DEFAULT_TIMEOUT_S as i64,
        )? as u64;
        let idle_threshold = checker.int(
            "run.idle_threshold_us",
            run.idle_threshold_us.as_ref(),
            IDLE_THRESHOLD_US_RANGE,
            i64::from(DEFAULT_IDLE_THRESHOLD_US),
        )? as u32;
        let idle_threshold_given = run.idle_threshold_us.is_some();
        let idle_threshold_us = run
            .idle_detection
            .as_ref()
            .is_some_and(|on| *on.get_ref())
            .then_some(idle_threshold);
        let cpu_model = match run.cpu_model {
            None => DEFAULT_CPU_MODEL.to_string(),
            Some(model) if CPU_MODELS.contains(&model.get_ref().as_str()) => model.into_inner(),
            Some(model) => {
                return Err(checker.error(
                    Some(model.span()),
                    LabErrorKind::CpuModel {
                        key: "run.cpu_model".to_string(),
                        value: model.into_inner(),
                    },
                ))
            }
        };

        let interval_us = checker.int(
            "run.interval_us",
            run.interval_us.as_ref(),
            INTERVAL_US_RANGE,
            i64::from(DEFAULT_INTERVAL_US),
        )? as u32;
        let memory_sample_ms = checker.int(
            "run.memory_sample_ms",
            run.memory_sample_ms.as_ref(),
            MEMORY_SAMPLE_MS_RANGE,
            i64::from(DEFAULT_MEMORY_SAMPLE_US / 1000),
        )? as u32;
        let guest_memory_budget_mib = match run.guest_memory_budget_mib.as_ref() {
            None => None,
            budget => {
                Some(
                    checker.int("run.guest_memory_budget_mib", budget, MEMORY_MIB_RANGE, 0)? as u32,
                )
            }
        };
        let merge_scan_pages = checker.int(
            "run.merge_scan_pages",
            run.merge_scan_pages.as_ref(),
            MERGE_SCAN_PAGES_RANGE,
            0,
        )? as u32;
        let compression = Compression {
            after_samples: checker.int(
                "run.compress_after_samples",
                run.compress_after_samples.as_ref(),
                COMPRESS_AFTER_SAMPLES_RANGE,
                0,
            )? as u16,
            scan_pages: checker.int(
                "run.compress_scan_pages",
                run.compress_scan_pages.as_ref(),
                COMPRESS_SCAN_PAGES_RANGE,
                DEFAULT_COMPRESS_SCAN_PAGES,
            )? as u32,
            pool_mib: checker.int(
                "run.compress_pool_mib",
                run.compress_pool_mib.as_ref(),
                COMPRESS_POOL_MIB_RANGE,
                DEFAULT_COMPRESS_POOL_MIB,
            )? as u32,
        };
        if compression.after_samples > 0 && memory_sample_ms == 0 {
            return Err(checker.error(
                run.compress_after_samples.as_ref().map(Spanned::span),
                LabErrorKind::CompressionWithoutSamples {
                    key: "run.compress_after_samples".to_string(),
                },
            ));
        }
        let balloon_rule = match run.balloon_when_free_below_pct.as_ref() {
            None => None,
            pct => Some((
                checker.int("run.balloon_when_free_below_pct", pct, 1..=99, 0)? as u32,
                checker.int(
                    "run.balloon_step_mib",
                    run.balloon_step_mib.as_ref(),
                    MEMORY_MIB_RANGE,
                    4,
                )? as u32,
            )),
        };
        let lazy_memory = run.lazy_memory.as_ref().is_some_and(|on| *on.get_ref());
        let boot_stagger_ms = checker.int(
            "run.boot_stagger_ms",
            run.boot_stagger_ms.as_ref(),
            0..=60_000,
            0,
        )? as u32;
        let trace = match run.trace {
            None => TraceLevel::Switches,
            Some(value) => match TRACE_LEVELS
                .iter()
                .find(|(name, _)| name == value.get_ref())
            {
                Some((_, level)) => *level,
                None => {
                    return Err(checker.error(
                        Some(value.span()),
                        LabErrorKind::BadChoice {
                            key: "run.trace".to_string(),
                            value: value.into_inner(),
                            choices: TRACE_LEVELS.iter().map(|(name, _)| *name).collect(),
                        },
                    ))
                }
            },
        };

        let policy = match run.policy {
            None => SchedulerPolicy::default(),
            Some(value) => SchedulerPolicy::from_name(value.get_ref()).ok_or_else(|| {
                checker.error(
                    Some(value.span()),
                    LabErrorKind::BadChoice {
                        key: "run.policy".to_string(),
                        value: value.get_ref().clone(),
                        choices: sweep_table::policy_names(),
                    },
                )
            })?,
        };

        let raw_credit = run.credit.as_ref();
        let credit = CreditConfig {
            ratelimit_us: checker.int(
                "run.credit.ratelimit_us",
                raw_credit.and_then(|credit| credit.ratelimit_us.as_ref()),
                CREDIT_RATELIMIT_US_RANGE,
                i64::from(DEFAULT_CREDIT_RATELIMIT_US),
            )? as u32,
            period_us: checker.int(
                "run.credit.period_us",
                raw_credit.and_then(|credit| credit.period_us.as_ref()),
                CREDIT_PERIOD_US_RANGE,
                i64::from(DEFAULT_CREDIT_PERIOD_US),
            )? as u32,
        };

        let raw_disk = run.disk.as_ref();
        let disk_policy = match raw_disk.and_then(|disk| disk.policy.as_ref()) {
            None => DiskQueuePolicy::default(),
            Some(value) => DiskQueuePolicy::from_name(value.get_ref()).ok_or_else(|| {
                checker.error(
                    Some(value.span()),
                    LabErrorKind::BadChoice {
                        key: "run.disk.policy".to_string(),
                        value: value.get_ref().clone(),
                        choices: DiskQueuePolicy::ALL
                            .iter()
                            .map(|policy| policy.name())
                            .collect(),
                    },
                )
            })?,
        };
        let disk_model = DiskModelConfig {
            latency_us: checker.int(
                "run.disk.latency_us",
                raw_disk.and_then(|disk| disk.latency_us.as_ref()),
                DISK_LATENCY_US_RANGE,
                0,
            )? as u32,
            mib_per_s: checker.int(
                "run.disk.mib_per_s",
                raw_disk.and_then(|disk| disk.mib_per_s.as_ref()),
                DISK_MIB_PER_S_RANGE,
                0,
            )? as u32,
            policy: disk_policy,
            anticipate_us: checker.int(
                "run.disk.anticipate_us",
                raw_disk.and_then(|disk| disk.anticipate_us.as_ref()),
                DISK_ANTICIPATE_US_RANGE,
                i64::from(DEFAULT_DISK_ANTICIPATE_US),
            )? as u32,
        };

        let quantum_clock = match run.quantum_clock {
            None => QuantumClock::default(),
            Some(value) => QuantumClock::from_name(value.get_ref()).ok_or_else(|| {
                checker.error(
                    Some(value.span()),
                    LabErrorKind::BadChoice {
                        key: "run.quantum_clock".to_string(),
                        value: value.get_ref().clone(),
                        choices: QuantumClock::ALL.iter().map(|clock| clock.name()).collect(),
                    },
                )
            })?,
        };

        let disk_backend = match &run.disk_backend {
            None => DiskBackend::default(),
            Some(value) => DiskBackend::from_name(value.get_ref()).ok_or_else(|| {
                checker.error(
                    Some(value.span()),
                    LabErrorKind::BadChoice {
                        key: "run.disk_backend".to_string(),
                        value: value.get_ref().clone(),
                        choices: DiskBackend::ALL
                            .iter()
                            .map(|backend| backend.name())
                            .collect(),
                    },
                )
            })?,
        };

        let tables = template::expand(&checker, &raw.vm, raw.vm_defaults.as_ref())?;
        let mut vms: Vec<Vm> = Vec::with_capacity(tables.len());
        for (index, table) in tables.iter().enumerate() {
            vms.push(check_vm(
                &checker,
                table,
                &tables[..index],
                disk_backend,
                policy,
            )?);
        }

        // The disks must fit where they go: the shared drive, or the emulator's memory.
        let guests: u64 = vms.iter().map(|vm| u64::from(vm.memory_mib)).sum();
        let mut disk_total = 0u64;
        let mut drive_sectors = crate::image::drive::HEADER_SECTORS;
        for (vm, table) in vms.iter().zip(&tables) {
            let (bytes, key, span) = match (&vm.disk, &table.disk, &table.blank_disk_kib) {
                (Some(Disk::File(file)), Some(raw), _) => (
                    std::fs::metadata(file).map_or(0, |metadata| metadata.len()),
                    "disk",
                    raw.span(),
                ),
                (Some(Disk::Blank { kib }), _, Some(raw)) => {
                    (u64::from(*kib) * 1024, "blank_disk_kib", raw.span())
                }
                _ => continue,
            };
            disk_total += bytes;
            drive_sectors += crate::image::drive::extent_span(bytes);
            let file = match &vm.disk {
                Some(Disk::File(file)) => file.display().to_string(),
                _ => format!("a blank disk of {} KiB", bytes / 1024),
            };
            let kind = match disk_backend {
                DiskBackend::Drive
                    if drive_sectors * crate::image::disk::SECTOR_BYTES as u64
                        > DRIVE_MAX_GIB << 30 =>
                {
                    LabErrorKind::DriveTotal {
                        key: table.key(key),
                        vm: table.vm(),
                        sizes: Box::new(DiskSizes {
                            file: file.clone(),
                            bytes,
                            total: drive_sectors * crate::image::disk::SECTOR_BYTES as u64,
                            guests_mib: guests,
                        }),
                    }
                }
                DiskBackend::Memory
                    if (disk_total >> 20) + guests + HYPERVISOR_MIB > MAX_TOTAL_MIB =>
                {
                    LabErrorKind::DiskMemory {
                        key: table.key(key),
                        vm: table.vm(),
                        sizes: Box::new(DiskSizes {
                            file: file.clone(),
                            bytes,
                            total: disk_total,
                            guests_mib: guests,
                        }),
                    }
                }
                _ => continue,
            };
            return Err(checker.error(Some(span), kind));
        }

        // Lazily backed RAM may promise more than the emulator has: only touched pages take
        // frames (a VM that touches a page the host cannot back stops, out of memory).
        if guests + HYPERVISOR_MIB > MAX_TOTAL_MIB && !lazy_memory {
            return Err(checker.error(None, LabErrorKind::MemoryTotal { guests }));
        }
        let sweep = match &raw.sweep {
            None => SweepTable::default(),
            Some(raw) => sweep_table(&checker, raw, &vms)?,
        };
        let mut changes = run
            .change
            .iter()
            .enumerate()
            .map(|(index, change)| check_change(&checker, index, change, &vms, policy))
            .collect::<Result<Vec<Change>, LabError>>()?;
        // In time order; changes at the same time keep the file's order.
        changes.sort_by_key(|change| change.at_ms);

        Ok(Lab {
            path: path.to_path_buf(),
            hash: fnv1a64(text.as_bytes()),
            quantum_us,
            ips,
            tsc_hz,
            cpu_model,
            timeout_s,
            idle_threshold_us,
            idle_threshold_given,
            interval_us,
            trace,
            policy,
            credit,
            disk_model,
            quantum_clock,
            deterministic: run.deterministic.as_ref().is_some_and(|on| *on.get_ref()),
            memory_sample_ms,
            guest_memory_budget_mib,
            merge_scan_pages,
            compression,
            balloon_rule,
            lazy_memory,
            boot_stagger_ms,
            disk_backend,
            vms,
            sweep,
            changes,
        })
    }
}

/// `[[run.change]]` table `index`, validated: a time, and one setting in the range the same key
/// has elsewhere in the lab (the hypervisor checks it again against the same ranges).
fn check_change(
    checker: &Checker<'_>,
    index: usize,
    change: &Spanned<RawChange>,
    vms: &[Vm],
    policy: SchedulerPolicy,
) -> Result<Change, LabError> {
    let key = |field: &str| format!("run.change[{index}].{field}");
    let raw = change.get_ref();
    let bad = |span: std::ops::Range<usize>, key: String, reason: String| {
        checker.error(Some(span), LabErrorKind::BadChange { key, reason })
    };
    let at_ms = checker.int(&key("at_ms"), Some(&raw.at_ms), CHANGE_AT_MS_RANGE, 0)? as u32;
    let given: Vec<(&str, &Spanned<i64>)> = [
        ("quantum_us", raw.quantum_us.as_ref()),
        ("weight", raw.weight.as_ref()),
        ("cap_pct", raw.cap_pct.as_ref()),
    ]
    .into_iter()
    .filter_map(|(field, value)| value.map(|value| (field, value)))
    .collect();
    let (field, value) = match given.as_slice() {
        [one] => *one,
        [] => {
            return Err(bad(
                change.span(),
                format!("run.change[{index}]"),
                "a change sets one of `quantum_us`, `weight` or `cap_pct`".to_string(),
            ))
        }
        [_, (second, value), ..] => {
            return Err(bad(
                value.span(),
                key(second),
                format!(
                    "a change sets one setting; this one also sets `{}`",
                    given[0].0
                ),
            ))
        }
    };
    let vm = match (&raw.vm, field) {
        (Some(vm), "quantum_us") => {
            return Err(bad(
                vm.span(),
                key("vm"),
                "the quantum is the run's, not a VM's: leave `vm` out".to_string(),
            ))
        }
        (None, "quantum_us") => 0,
        (None, _) => {
            return Err(bad(
                change.span(),
                key("vm"),
                format!("a change of `{field}` names its VM (`vm = \"NAME\"`)"),
            ))
        }
        (Some(name), _) => match vms.iter().position(|vm| vm.name == *name.get_ref()) {
            Some(id) => id as u16,
            None => {
                return Err(bad(
                    name.span(),
                    key("vm"),
                    format!("the lab has no vm {:?}", name.get_ref()),
                ))
            }
        },
    };
    let setting = match field {
        "quantum_us" => Setting::Quantum {
            us: checker.int(&key(field), Some(value), QUANTUM_US_RANGE, 0)? as u32,
        },
        "weight" => Setting::Weight {
            vm,
            weight: checker.int(&key(field), Some(value), WEIGHT_RANGE, 0)? as u32,
        },
        _ if policy != SchedulerPolicy::Credit => {
            return Err(bad(
                value.span(),
                key(field),
                format!(
                    "caps need `run.policy = \"credit\"` (the policy is {:?})",
                    policy.name()
                ),
            ))
        }
        _ => Setting::Cap {
            vm,
            cap_pct: checker.int(&key(field), Some(value), CAP_PCT_RANGE, 0)? as u32,
        },
    };
    // The hypervisor's own check, which these rules mirror.
    if let Err(reason) = setting.check(vms.len(), policy) {
        return Err(bad(value.span(), key(field), reason.to_string()));
    }
    Ok(Change { at_ms, setting })
}

/// VM `vm`'s optional integer key `field` in `range`, or `default`; an error names the key
/// where it is written and, when that does not say which VM, the VM.
fn vm_int(
    checker: &Checker<'_>,
    vm: &VmTable,
    field: &str,
    value: Option<&Spanned<i64>>,
    range: RangeInclusive<i64>,
    default: i64,
) -> Result<i64, LabError> {
    checker.int_of(vm.key(field), vm.context(field), value, range, default)
}

/// One VM's table, validated; `earlier` are the tables of the VMs before it (their names are
/// taken).
fn check_vm(
    checker: &Checker<'_>,
    table: &VmTable,
    earlier: &[VmTable],
    disk_backend: DiskBackend,
    policy: SchedulerPolicy,
) -> Result<Vm, LabError> {
    let name = table.name.get_ref().clone();
    if let Some(reason) = name_problem(&name) {
        return Err(checker.error(
            Some(table.name.span()),
            LabErrorKind::BadName {
                key: table.key("name"),
                value: name,
                template: table.template,
                reason,
            },
        ));
    }
    if let Some(first) = earlier.iter().find(|vm| *vm.name.get_ref() == name) {
        return Err(checker.error(
            Some(table.name.span()),
            LabErrorKind::DuplicateName {
                key: table.key("name"),
                value: name,
                template: table.template,
                first_key: first.key("name"),
                first: first.template,
            },
        ));
    }

    let kernel_text = checker.expand(&table.kernel, table.key("kernel"), table.vm())?;
    let kernel = if BUILTIN_GUESTS.contains(&kernel_text.as_str()) {
        Kernel::Builtin(kernel_text)
    } else {
        let file = checker.resolve(&kernel_text);
        let key = table.key("kernel");
        check_file(checker, table.kernel.span(), &key, &table.vm(), &file)?;
        if !starts_with_elf_magic(&file) {
            return Err(checker.error(
                Some(table.kernel.span()),
                LabErrorKind::NotElf {
                    key,
                    vm: table.vm(),
                    path: file,
                },
            ));
        }
        Kernel::File(file)
    };

    let memory_mib = vm_int(
        checker,
        table,
        "memory_mib",
        Some(&table.memory_mib),
        MEMORY_MIB_RANGE,
        0,
    )? as u32;

    let disk = match (&table.disk, &table.blank_disk_kib) {
        (None, None) => None,
        (Some(disk), None) => {
            let text = checker.expand(disk, table.key("disk"), table.vm())?;
            let file = checker.resolve(&text);
            let key = table.key("disk");
            check_file(checker, disk.span(), &key, &table.vm(), &file)?;
            check_image(checker, disk.span(), &key, &table.vm(), &file)?;
            Some(Disk::File(file))
        }
        (None, Some(kib)) => {
            let kib = vm_int(
                checker,
                table,
                "blank_disk_kib",
                Some(kib),
                BLANK_DISK_KIB_RANGE,
                0,
            )? as u32;
            Some(Disk::Blank { kib })
        }
        (Some(_), Some(kib)) => {
            return Err(checker.error(
                Some(kib.span()),
                LabErrorKind::Exclusive {
                    key: table.key("blank_disk_kib"),
                    other: table.key("disk"),
                    vm: table.vm(),
                },
            ))
        }
    };
    let persist = match &table.persist {
        Some(persist) if *persist.get_ref() && disk.is_none() => {
            return Err(checker.error(
                Some(persist.span()),
                LabErrorKind::PersistWithoutDisk {
                    key: table.key("persist"),
                    vm: table.vm(),
                },
            ))
        }
        Some(persist) if *persist.get_ref() && disk_backend == DiskBackend::Memory => {
            return Err(checker.error(
                Some(persist.span()),
                LabErrorKind::PersistFromMemory {
                    key: table.key("persist"),
                    vm: table.vm(),
                },
            ))
        }
        Some(persist) => *persist.get_ref(),
        None => false,
    };
    let script = script_steps(checker, table)?;

    let weight = vm_int(
        checker,
        table,
        "weight",
        table.weight.as_ref(),
        WEIGHT_RANGE,
        i64::from(DEFAULT_WEIGHT),
    )? as u32;
    let cap_pct = match table.cap_pct.as_ref() {
        None => 0,
        Some(cap) if policy != SchedulerPolicy::Credit => {
            return Err(checker.error(
                Some(cap.span()),
                LabErrorKind::CapNeedsCredit {
                    key: table.key("cap_pct"),
                    vm: table.vm(),
                    policy: policy.name().to_string(),
                },
            ))
        }
        cap => vm_int(checker, table, "cap_pct", cap, CAP_PCT_RANGE, 0)? as u32,
    };
    let disk_weight = vm_int(
        checker,
        table,
        "disk_weight",
        table.disk_weight.as_ref(),
        WEIGHT_RANGE,
        i64::from(DEFAULT_WEIGHT),
    )? as u32;
    let disk_mib_per_s = vm_int(
        checker,
        table,
        "disk_mib_per_s",
        table.disk_mib_per_s.as_ref(),
        DISK_MIB_PER_S_RANGE,
        0,
    )? as u32;
    let balloon_range = 0..=i64::from(memory_mib);
    let balloon_mib = vm_int(
        checker,
        table,
        "balloon_mib",
        table.balloon_mib.as_ref(),
        balloon_range.clone(),
        0,
    )? as u32;
    let balloon_target_mib = vm_int(
        checker,
        table,
        "balloon_target_mib",
        table.balloon_target_mib.as_ref(),
        balloon_range,
        i64::from(balloon_mib),
    )? as u32;

    let args = table
        .args
        .as_ref()
        .map(|args| args.get_ref().clone())
        .unwrap_or_default();
    let args_problem = if args.len() > ARGS_MAX {
        Some(format!(
            "the command line has {} bytes; at most {ARGS_MAX} are allowed",
            args.len()
        ))
    } else if args.contains('\0') {
        Some("the command line contains a NUL character".to_string())
    } else {
        None
    };
    if let Some(reason) = args_problem {
        let span = table.args.as_ref().map(Spanned::span);
        return Err(checker.error(
            span,
            LabErrorKind::BadArgs {
                key: table.key("args"),
                vm: table.vm(),
                reason,
            },
        ));
    }

    Ok(Vm {
        name,
        kernel,
        memory_mib,
        disk,
        weight,
        cap_pct,
        disk_weight,
        disk_mib_per_s,
        args,
        persist,
        balloon_mib,
        balloon_target_mib,
        script,
    })
}

/// The `[sweep]` table, validated: each list parses, each workload names VMs the lab has.
fn sweep_table(checker: &Checker<'_>, raw: &RawSweep, vms: &[Vm]) -> Result<SweepTable, LabError> {
    fn list<T>(
        checker: &Checker<'_>,
        key: &str,
        value: Option<&Spanned<Vec<String>>>,
        parse: impl Fn(&[String]) -> Result<T, String>,
    ) -> Result<Option<T>, LabError> {
        value
            .map(|value| {
                parse(value.get_ref()).map_err(|reason| {
                    checker.error(
                        Some(value.span()),
                        LabErrorKind::Sweep {
                            key: key.to_string(),
                            reason,
                        },
                    )
                })
            })
            .transpose()
    }
    let sweep_error = |span: std::ops::Range<usize>, key: String, reason: String| {
        checker.error(Some(span), LabErrorKind::Sweep { key, reason })
    };
    let quanta_us = list(checker, "sweep.quantum", raw.quantum.as_ref(), |items| {
        sweep_table::parse_quanta(items)
    })?;
    let policies = list(checker, "sweep.policy", raw.policy.as_ref(), |items| {
        sweep_table::parse_policies(items)
    })?;
    let weights = list(checker, "sweep.weights", raw.weights.as_ref(), |items| {
        sweep_table::parse_weight_sets(items)
    })?;
    if let (Some(sets), Some(raw_weights)) = (&weights, &raw.weights) {
        for set in sets {
            let unknown = set.unknown_names_in(vms.iter().map(|vm| vm.name.as_str()));
            if !unknown.is_empty() {
                return Err(sweep_error(
                    raw_weights.span(),
                    "sweep.weights".to_string(),
                    format!(
                        "weight set {} names VMs the lab does not have: {}",
                        set.label(),
                        unknown.join(", ")
                    ),
                ));
            }
        }
    }
    let repeat = match &raw.repeat {
        None => None,
        Some(_) => Some(checker.int(
            "sweep.repeat",
            raw.repeat.as_ref(),
            i64::from(*sweep_table::REPEAT_RANGE.start())
                ..=i64::from(*sweep_table::REPEAT_RANGE.end()),
            1,
        )? as u32),
    };
    let mut workloads: Vec<Workload> = Vec::with_capacity(raw.workload.len());
    for (index, raw_workload) in raw.workload.iter().enumerate() {
        let raw_workload = raw_workload.get_ref();
        let key = |field: &str| format!("sweep.workload[{index}].{field}");
        let name = raw_workload.name.get_ref().clone();
        if let Some(reason) = name_problem(&name) {
            let reason = reason.replace("a VM name", "a workload name");
            return Err(sweep_error(
                raw_workload.name.span(),
                key("name"),
                format!("{name:?}: {reason}"),
            ));
        }
        if workloads.iter().any(|workload| workload.name == name) {
            return Err(sweep_error(
                raw_workload.name.span(),
                key("name"),
                format!("another workload is called {name:?}"),
            ));
        }
        let mut members = Vec::with_capacity(raw_workload.vms.get_ref().len());
        for vm_name in raw_workload.vms.get_ref() {
            let Some(vm) = vms.iter().position(|vm| &vm.name == vm_name) else {
                return Err(sweep_error(
                    raw_workload.vms.span(),
                    key("vms"),
                    format!(
                        "the lab has no VM {vm_name:?} (VMs: {})",
                        vms.iter()
                            .map(|vm| vm.name.as_str())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            };
            if members.contains(&vm) {
                return Err(sweep_error(
                    raw_workload.vms.span(),
                    key("vms"),
                    format!("VM {vm_name:?} is listed twice"),
                ));
            }
            members.push(vm);
        }
        if members.is_empty() {
            return Err(sweep_error(
                raw_workload.vms.span(),
                key("vms"),
                "a workload needs at least one VM".to_string(),
            ));
        }
        members.sort_unstable();
        workloads.push(Workload { name, vms: members });
    }
    Ok(SweepTable {
        quanta_us,
        policies,
        weights,
        repeat,
        workloads,
    })
}

/// The `[[vm.script]]` steps of VM `vm`, validated: each `expect` compiles, each timeout is
/// in range.
fn script_steps(checker: &Checker<'_>, vm: &VmTable) -> Result<Vec<Step>, LabError> {
    vm.script
        .iter()
        .enumerate()
        .map(|(number, step)| {
            let step = step.get_ref();
            let field = |field: &str| format!("script[{number}].{field}");
            let expect = Pattern::new(step.expect.get_ref()).map_err(|error| {
                checker.error(
                    Some(step.expect.span()),
                    LabErrorKind::BadRegex {
                        key: vm.key(&field("expect")),
                        step: number + 1,
                        vm: vm.vm(),
                        error: error.to_string(),
                    },
                )
            })?;
            let timeout_s = vm_int(
                checker,
                vm,
                &field("timeout_s"),
                step.timeout_s.as_ref(),
                STEP_TIMEOUT_S_RANGE,
                DEFAULT_STEP_TIMEOUT_S as i64,
            )? as u64;
            let repeat = vm_int(
                checker,
                vm,
                &field("repeat"),
                step.repeat.as_ref(),
                STEP_REPEAT_RANGE,
                1,
            )? as u32;
            let label = match &step.label {
                None => None,
                Some(label) => Some(step_label(label.get_ref()).map_err(|reason| {
                    checker.error(
                        Some(label.span()),
                        LabErrorKind::BadLabel {
                            key: vm.key(&field("label")),
                            value: label.get_ref().clone(),
                            vm: vm.context(&field("label")),
                            reason,
                        },
                    )
                })?),
            };
            Ok(Step {
                expect,
                send: step.send.as_ref().map(|send| send.get_ref().clone()),
                timeout: Duration::from_secs(timeout_s),
                label,
                repeat,
            })
        })
        .collect()
}

/// The longest step label.
pub const LABEL_MAX: usize = 64;

/// A step label as reports show it (a table cell, a CSV field): 1 to [`LABEL_MAX`] printable
/// ASCII characters, without a comma or a quote.
fn step_label(label: &str) -> Result<String, &'static str> {
    if label.is_empty() {
        return Err("a label names the step in reports and cannot be empty");
    }
    if label.len() > LABEL_MAX {
        return Err("a label has at most 64 characters");
    }
    if !label
        .bytes()
        .all(|byte| (0x20..0x7F).contains(&byte) && !matches!(byte, b',' | b'"'))
    {
        return Err("a label is printable ASCII without commas or quotes");
    }
    Ok(label.to_string())
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::path::PathBuf;

    use carousel_protocol::config::{DiskSource, RunConfig, ScheduledChange};
    use carousel_protocol::RUN_CONFIG_MODULE;

    use crate::lab::env::{expand_env, EnvProblem};
    use crate::lab::kernel_module;

    use super::*;

    /// A lab directory with an ELF-looking kernel, a non-ELF file and a disk image.
    struct Dir {
        dir: tempfile::TempDir,
    }

    impl Dir {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::write(dir.path().join("guest.elf"), b"\x7fELF\x02\x01\x01rest").unwrap();
            fs::write(dir.path().join("notelf.bin"), b"MZ\x90\x00").unwrap();
            fs::write(dir.path().join("fs.img"), [0u8; 512]).unwrap();
            fs::write(dir.path().join("empty.img"), b"").unwrap();
            fs::create_dir(dir.path().join("sub")).unwrap();
            Self { dir }
        }

        fn lab(&self) -> PathBuf {
            self.dir.path().join("lab.toml")
        }

        fn parse(&self, text: &str) -> Result<Lab, LabError> {
            Lab::parse(&self.lab(), text)
        }

        fn error(&self, text: &str) -> String {
            match self.parse(text) {
                Ok(lab) => panic!("accepted: {lab:?}"),
                Err(error) => error.to_string(),
            }
        }
    }

    const HELLO: &str = "[[vm]]\nname = \"hello\"\nkernel = \"hello\"\nmemory_mib = 8\n";

    fn with_vm(extra: &str) -> String {
        format!("{HELLO}{extra}\n")
    }

    #[test]
    fn lazily_backed_labs_may_promise_more_ram_than_the_emulator_has() {
        let dir = Dir::new();
        let vms: String = (0..16)
            .map(|i| format!("[[vm]]\nname = \"x{i}\"\nkernel = \"hello\"\nmemory_mib = 224\n"))
            .collect();
        let error = dir.error(&vms);
        assert!(error.contains("3584"), "{error}");
        let lab = dir
            .parse(&format!(
                "[run]\nlazy_memory = true\nboot_stagger_ms = 500\n{vms}"
            ))
            .expect("a lazy lab");
        assert!(lab.vms.iter().all(|vm| vm.memory_mib == 224));
        assert_eq!(lab.guest_memory_mib(), MAX_TOTAL_MIB - HYPERVISOR_MIB);
        let config = lab.run_config(1, None);
        assert!(config.vms.iter().all(|vm| vm.lazy_memory));
        assert_eq!(config.boot_stagger_us, 500_000);
    }

    #[test]
    fn compression_keys_reach_the_run_config_and_need_samples() {
        let dir = Dir::new();
        let lab = dir
            .parse(&format!(
                "[run]\nmemory_sample_ms = 50\ncompress_after_samples = 3\n\
                 compress_scan_pages = 1000\ncompress_pool_mib = 2\n{HELLO}"
            ))
            .expect("a compressing lab");
        let config = lab.run_config(1, None).compression;
        assert_eq!(
            (config.after_samples, config.scan_pages, config.pool_pages),
            (3, 1000, 512)
        );
        let off = dir.parse(HELLO).unwrap().run_config(1, None).compression;
        assert_eq!(off.after_samples, 0);
        let error = dir.error(&format!("[run]\ncompress_after_samples = 3\n{HELLO}"));
        assert!(
            error.contains("run.compress_after_samples") && error.contains("memory_sample_ms"),
            "{error}"
        );
        let error = dir.error(&format!(
            "[run]\nmemory_sample_ms = 50\ncompress_after_samples = 5000\n{HELLO}"
        ));
        assert!(error.contains("5000"), "{error}");
    }

    #[test]
    fn defaults() {
        let dir = Dir::new();
        let lab = dir.parse(HELLO).unwrap();
        assert_eq!(lab.quantum_us, DEFAULT_QUANTUM_US);
        assert_eq!(lab.ips, DEFAULT_IPS);
        assert_eq!(lab.cpu_model, DEFAULT_CPU_MODEL);
        assert_eq!(lab.timeout_s, DEFAULT_TIMEOUT_S);
        let vm = &lab.vms[0];
        assert_eq!(vm.weight, DEFAULT_WEIGHT);
        assert_eq!(vm.args, "");
        assert_eq!(vm.disk, None);
        assert_eq!(vm.kernel, Kernel::Builtin("hello".to_string()));
        assert_eq!(lab.hash, fnv1a64(HELLO.as_bytes()));
        assert_eq!(lab.stem(), "lab");
    }

    #[test]
    fn full_file() {
        let dir = Dir::new();
        let text = "[run]\nquantum_us = 250\nips = 2_000_000\ncpu_model = \"tigerlake\"\n\
                    timeout_s = 30\n\n[[vm]]\nname = \"a\"\nkernel = \"guest.elf\"\n\
                    memory_mib = 16\ndisk = \"fs.img\"\nweight = 3\nargs = \"x y\"\n\n\
                    [[vm]]\nname = \"b-2_B\"\nkernel = \"hello\"\nmemory_mib = 2\n";
        let lab = dir.parse(text).unwrap();
        assert_eq!(
            (lab.quantum_us, lab.ips, lab.timeout_s),
            (250, 2_000_000, 30)
        );
        assert_eq!(lab.cpu_model, "tigerlake");
        assert_eq!(lab.vms.len(), 2);
        let a = &lab.vms[0];
        assert_eq!(a.kernel, Kernel::File(dir.dir.path().join("guest.elf")));
        assert_eq!(a.disk, Some(Disk::File(dir.dir.path().join("fs.img"))));
        assert_eq!((a.memory_mib, a.weight, a.args.as_str()), (16, 3, "x y"));
        assert_eq!(lab.guest_memory_mib(), 18);
        assert!(lab.uses_builtin_guests());
    }

    #[test]
    fn relative_paths_resolve_against_the_lab_directory() {
        let dir = Dir::new();
        fs::write(dir.dir.path().join("sub/k.elf"), b"\x7fELF..").unwrap();
        let lab_path = dir.dir.path().join("sub/lab.toml");
        let text =
            "[[vm]]\nname = \"a\"\nkernel = \"k.elf\"\nmemory_mib = 8\ndisk = \"../fs.img\"\n";
        let lab = Lab::parse(&lab_path, text).unwrap();
        assert_eq!(
            lab.vms[0].kernel,
            Kernel::File(dir.dir.path().join("sub/k.elf"))
        );
        assert_eq!(
            lab.vms[0].disk,
            Some(Disk::File(dir.dir.path().join("sub/../fs.img")))
        );
        assert!(!lab.uses_builtin_guests());
        // Absolute paths stay as they are.
        let absolute = dir.dir.path().join("guest.elf");
        let text = format!(
            "[[vm]]\nname = \"a\"\nkernel = \"{}\"\nmemory_mib = 8\n",
            absolute.display()
        );
        let lab = Lab::parse(&lab_path, &text).unwrap();
        assert_eq!(lab.vms[0].kernel, Kernel::File(absolute));
    }

    #[test]
    fn a_lab_in_the_current_directory_resolves_against_it() {
        let lab = Lab::parse(Path::new("lab.toml"), HELLO).unwrap();
        assert_eq!(lab.vms.len(), 1);
        let error = Lab::parse(
            Path::new("lab.toml"),
            "[[vm]]\nname = \"a\"\nkernel = \"nope.elf\"\nmemory_mib = 8\n",
        )
        .unwrap_err();
        assert!(error.to_string().contains("./nope.elf"), "{error}");
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = Dir::new();
        let error = dir.error(&with_vm("colour = \"red\""));
        assert!(error.contains("colour"), "{error}");
        assert!(error.contains("line 5"), "{error}");
        let error = dir.error(&format!("[run]\nspeed = 3\n{HELLO}"));
        assert!(error.contains("speed"), "{error}");
        let error = dir.error(&format!("[extra]\n{HELLO}"));
        assert!(error.contains("extra"), "{error}");
    }

    #[test]
    fn missing_key_is_named() {
        let dir = Dir::new();
        let error = dir.error("[[vm]]\nname = \"a\"\nkernel = \"hello\"\n");
        assert!(error.contains("memory_mib"), "{error}");
        let error = dir.error("[[vm]]\nname = \"a\"\nmemory_mib = 8\n");
        assert!(error.contains("kernel"), "{error}");
    }

    #[test]
    fn wrong_type_is_named() {
        let dir = Dir::new();
        let error = dir.error(&format!("[run]\nquantum_us = \"fast\"\n{HELLO}"));
        assert!(error.contains("quantum_us"), "{error}");
    }

    fn assert_range_error(error: &str, key: &str, value: &str, range: &str) {
        assert!(error.contains(&format!("`{key}`")), "{error}");
        assert!(error.contains(value), "{error}");
        assert!(error.contains(range), "{error}");
    }

    #[test]
    fn run_ranges() {
        let dir = Dir::new();
        for (key, value, range) in [
            ("quantum_us", "0", "1..=1000000"),
            ("quantum_us", "1000001", "1..=1000000"),
            ("ips", "999", "1000..=2000000000"),
            ("tsc_hz", "0", "1000..=10000000000"),
            ("timeout_s", "0", "1..=86400"),
            ("timeout_s", "-5", "1..=86400"),
        ] {
            let error = dir.error(&format!("[run]\n{key} = {value}\n{HELLO}"));
            assert_range_error(&error, &format!("run.{key}"), value, range);
            assert!(error.contains(":2: "), "{error}");
        }
    }

    #[test]
    fn vm_ranges() {
        let dir = Dir::new();
        for (key, value, range) in [("weight", "0", "1..=64"), ("weight", "65", "1..=64")] {
            let error = dir.error(&with_vm(&format!("{key} = {value}")));
            assert_range_error(&error, &format!("vm[0].{key}"), value, range);
        }
        for value in ["1", "3073"] {
            let text = format!("[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = {value}\n");
            let error = dir.error(&text);
            assert_range_error(&error, "vm[0].memory_mib", value, "2..=3072");
            assert!(error.contains(":4: "), "{error}");
        }
    }

    #[test]
    fn memory_total_must_fit() {
        let dir = Dir::new();
        let vm = |name: &str, mib: u32| {
            format!("[[vm]]\nname = \"{name}\"\nkernel = \"hello\"\nmemory_mib = {mib}\n")
        };
        let fits = format!("{}{}", vm("a", 2000), vm("b", 836));
        assert!(dir.parse(&fits).is_ok());
        let error = dir.error(&format!("{}{}", vm("a", 2000), vm("b", 837)));
        assert!(error.contains("vm[*].memory_mib"), "{error}");
        assert!(error.contains("2837"), "{error}");
        assert!(error.contains("2900"), "{error}");
    }

    #[test]
    fn vm_count() {
        let dir = Dir::new();
        let error = dir.error("[run]\nquantum_us = 5\n");
        assert!(error.contains("`vm`"), "{error}");
        assert!(error.contains("has 0"), "{error}");
        let many: String = (0..65)
            .map(|i| format!("[[vm]]\nname = \"v{i}\"\nkernel = \"hello\"\nmemory_mib = 2\n"))
            .collect();
        let error = dir.error(&many);
        assert!(error.contains("`vm`") && error.contains("65"), "{error}");
        let most: String = (0..64)
            .map(|i| format!("[[vm]]\nname = \"v{i}\"\nkernel = \"hello\"\nmemory_mib = 2\n"))
            .collect();
        assert_eq!(dir.parse(&most).unwrap().vms.len(), 64);
    }

    #[test]
    fn names() {
        let dir = Dir::new();
        for bad in [
            "",
            "has space",
            "dot.ted",
            "carousel",
            "Carousel",
            &"x".repeat(33),
        ] {
            let text = format!("[[vm]]\nname = \"{bad}\"\nkernel = \"hello\"\nmemory_mib = 8\n");
            let error = dir.error(&text);
            assert!(error.contains("`vm[0].name`"), "{error}");
            assert!(error.contains(":2: "), "{error}");
        }
        let ok = format!(
            "[[vm]]\nname = \"{}\"\nkernel = \"hello\"\nmemory_mib = 8\n",
            "x".repeat(32)
        );
        assert!(dir.parse(&ok).is_ok());
    }

    #[test]
    fn duplicate_names() {
        let dir = Dir::new();
        let error = dir.error(&format!("{HELLO}{HELLO}"));
        assert!(error.contains("`vm[1].name`"), "{error}");
        assert!(error.contains("`vm[0].name`"), "{error}");
        assert!(error.contains("\"hello\""), "{error}");
    }

    #[test]
    fn cpu_model() {
        let dir = Dir::new();
        let error = dir.error(&format!("[run]\ncpu_model = \"pentium\"\n{HELLO}"));
        assert!(error.contains("`run.cpu_model`"), "{error}");
        assert!(error.contains("pentium"), "{error}");
        assert!(error.contains("corei7_skylake_x"), "{error}");
        for model in CPU_MODELS {
            let lab = dir
                .parse(&format!("[run]\ncpu_model = \"{model}\"\n{HELLO}"))
                .unwrap();
            assert_eq!(lab.cpu_model, *model);
        }
    }

    #[test]
    fn kernel_files() {
        let dir = Dir::new();
        let vm =
            |kernel: &str| format!("[[vm]]\nname = \"k\"\nkernel = \"{kernel}\"\nmemory_mib = 8\n");
        let error = dir.error(&vm("missing.elf"));
        assert!(error.contains("`vm[0].kernel`"), "{error}");
        assert!(error.contains("\"k\""), "{error}");
        assert!(error.contains("missing.elf"), "{error}");
        assert!(error.contains(":3: "), "{error}");
        let error = dir.error(&vm("notelf.bin"));
        assert!(
            error.contains("`vm[0].kernel`") && error.contains("not an ELF"),
            "{error}"
        );
        let error = dir.error(&vm("empty.img"));
        assert!(
            error.contains("`vm[0].kernel`") && error.contains("empty"),
            "{error}"
        );
        let error = dir.error(&vm("sub"));
        assert!(
            error.contains("`vm[0].kernel`") && error.contains("not a file"),
            "{error}"
        );
    }

    #[test]
    fn disk_files() {
        let dir = Dir::new();
        let error = dir.error(&with_vm("disk = \"nope.img\""));
        assert!(error.contains("`vm[0].disk`"), "{error}");
        assert!(error.contains("\"hello\""), "{error}");
        assert!(error.contains("nope.img"), "{error}");
        let error = dir.error(&with_vm("disk = \"empty.img\""));
        assert!(
            error.contains("`vm[0].disk`") && error.contains("empty"),
            "{error}"
        );
    }

    #[test]
    fn args() {
        let dir = Dir::new();
        let error = dir.error(&with_vm(&format!("args = \"{}\"", "a".repeat(1025))));
        assert!(error.contains("`vm[0].args`"), "{error}");
        let error = dir.error(&with_vm("args = \"a\\u0000b\""));
        assert!(
            error.contains("`vm[0].args`") && error.contains("NUL"),
            "{error}"
        );
    }

    #[test]
    fn run_config_names_the_modules() {
        let dir = Dir::new();
        let text = "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n\
                    [[vm]]\nname = \"b\"\nkernel = \"hello\"\nmemory_mib = 4\ndisk = \"fs.img\"\nargs = \"fail\"\nweight = 2\n";
        let lab = dir.parse(text).unwrap();
        let config = lab.run_config(1_000_000, None);
        assert_eq!(config.tsc_hz, 1_000_000);
        assert_eq!(config.lab_hash, fnv1a64(text.as_bytes()));
        assert_eq!(config.quantum_us, 1000);
        assert_eq!(config.vms[0].kernel_module, "vm0.kernel");
        assert_eq!(config.vms[0].disk, None);
        assert_eq!(config.vms[1].kernel_module, "vm1.kernel");
        assert_eq!(config.vms[1].disk, None, "no drive given");
        assert_eq!(config.vms[1].memory_bytes, 4 << 20);
        assert_eq!(config.vms[1].args, "fail");
        assert_eq!(config.vms[1].weight, 2);
        let bytes = config.to_bytes().unwrap();
        assert_eq!(RunConfig::from_bytes(&bytes).unwrap(), config);
        assert_ne!(RUN_CONFIG_MODULE, kernel_module(0));
    }

    #[test]
    fn env_expansion() {
        let env = |name: &str| match name {
            "DIR" => Some("/srv/x".to_string()),
            "EMPTY" => Some(String::new()),
            _ => None,
        };
        assert_eq!(expand_env("${DIR}/k", &env).unwrap(), "/srv/x/k");
        assert_eq!(
            expand_env("a${DIR}${DIR}b", &env).unwrap(),
            "a/srv/x/srv/xb"
        );
        assert_eq!(expand_env("$DIR/$", &env).unwrap(), "$DIR/$");
        assert_eq!(
            expand_env("${NOPE}/k", &env),
            Err(EnvProblem::Missing("NOPE".to_string()))
        );
        assert_eq!(
            expand_env("${EMPTY}", &env),
            Err(EnvProblem::Missing("EMPTY".to_string()))
        );
        assert!(matches!(
            expand_env("${DIR", &env),
            Err(EnvProblem::Syntax(_))
        ));
        assert!(matches!(
            expand_env("${1X}", &env),
            Err(EnvProblem::Syntax(_))
        ));
        assert!(matches!(
            expand_env("${}", &env),
            Err(EnvProblem::Syntax(_))
        ));
    }

    #[test]
    fn env_variables_in_kernel_and_disk() {
        let dir = Dir::new();
        let root = dir.dir.path().display().to_string();
        let env = move |name: &str| (name == "LABDIR").then(|| root.clone());
        let text = "[[vm]]\nname = \"a\"\nkernel = \"${LABDIR}/guest.elf\"\nmemory_mib = 8\n\
                    disk = \"${LABDIR}/fs.img\"\n";
        let lab = Lab::parse_with_env(&dir.lab(), text, &env).unwrap();
        assert_eq!(
            lab.vms[0].kernel,
            Kernel::File(dir.dir.path().join("guest.elf"))
        );
        assert_eq!(
            lab.vms[0].disk,
            Some(Disk::File(dir.dir.path().join("fs.img")))
        );
        let text = "[[vm]]\nname = \"a\"\nkernel = \"${XV6_KERNEL}\"\nmemory_mib = 8\n";
        let error = Lab::parse_with_env(&dir.lab(), text, &env)
            .unwrap_err()
            .to_string();
        assert!(error.contains("`vm[0].kernel`"), "{error}");
        assert!(error.contains("XV6_KERNEL"), "{error}");
        assert!(error.contains(":3: "), "{error}");
        let error = Lab::parse_with_env(&dir.lab(), &with_vm("disk = \"${XV6_FS}\""), &env)
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("`vm[0].disk`") && error.contains("XV6_FS"),
            "{error}"
        );
    }

    /// The disks must fit where they go: on the shared drive (at most `DRIVE_MAX_GIB`), or with
    /// `disk_backend = "memory"` in the emulator's memory beside the VMs' RAM. The error names
    /// the VM whose disk goes over and its file; 64 VMs of 2 GiB each fit on the drive.
    #[test]
    fn disks_must_fit_the_drive_or_the_memory() {
        let dir = Dir::new();
        let vm = |name: &str, disk: &str| {
            format!("[[vm]]\nname = \"{name}\"\nkernel = \"hello\"\nmemory_mib = 2\n{disk}\n")
        };
        let two_gib = "blank_disk_kib = 2097152";
        let many: String = (0..64).map(|i| vm(&format!("v{i}"), two_gib)).collect();
        let lab = dir.parse(&many).unwrap();
        assert_eq!(lab.vms.len(), 64);
        let largest = "blank_disk_kib = 134217728";
        let four: String = (0..4).map(|i| vm(&format!("v{i}"), largest)).collect();
        let error = dir.error(&four);
        assert!(
            error.contains("`vm[3].blank_disk_kib`")
                && error.contains("\"v3\"")
                && error.contains("a blank disk of 134217728 KiB")
                && error.contains("at most 512 GiB"),
            "{error}"
        );
        // In memory: 2 GiB of disk beside 2 × 2 MiB of RAM fits, one more GiB does not; a disk
        // file counts by its size and is named.
        let memory = "[run]\ndisk_backend = \"memory\"\n";
        let fits = format!(
            "{memory}{}{}",
            vm("a", two_gib),
            vm("b", "disk = \"fs.img\"")
        );
        assert_eq!(dir.parse(&fits).unwrap().disk_backend, DiskBackend::Memory);
        let big = dir.dir.path().join("big.img");
        fs::File::create(&big).unwrap().set_len(1 << 30).unwrap();
        let over = format!(
            "{memory}{}{}",
            vm("a", two_gib),
            vm("b", "disk = \"big.img\"")
        );
        let error = dir.error(&over);
        assert!(
            error.contains("`vm[1].disk`")
                && error.contains("\"b\"")
                && error.contains(&big.display().to_string())
                && error.contains("disk_backend"),
            "{error}"
        );
        assert!(
            dir.parse(&over.replace(memory, "")).is_ok(),
            "fits on the drive"
        );
        let error = dir.error(&format!("[run]\ndisk_backend = \"tape\"\n{}", vm("a", "")));
        assert!(error.contains("`run.disk_backend`"), "{error}");
    }

    /// Bad images are refused before anything starts, naming the key and the file: not whole
    /// sectors, larger than a guest's LBA28 reaches, unreadable (a dangling link; a directory).
    #[test]
    fn bad_disk_images_are_refused() {
        let dir = Dir::new();
        let path = |name: &str| dir.dir.path().join(name);
        fs::write(path("odd.img"), [0u8; 1000]).unwrap();
        let error = dir.error(&with_vm("disk = \"odd.img\""));
        assert!(
            error.contains("`vm[0].disk`")
                && error.contains("odd.img")
                && error.contains("1000 bytes is not a whole number of 512-byte sectors"),
            "{error}"
        );
        fs::File::create(path("huge.img"))
            .unwrap()
            .set_len(DISK_MAX_BYTES + 512)
            .unwrap();
        let error = dir.error(&with_vm("disk = \"huge.img\""));
        assert!(
            error.contains("huge.img") && error.contains("28-bit LBA"),
            "{error}"
        );
        fs::File::create(path("largest.img"))
            .unwrap()
            .set_len(DISK_MAX_BYTES)
            .unwrap();
        assert!(dir.parse(&with_vm("disk = \"largest.img\"")).is_ok());
        std::os::unix::fs::symlink(path("gone.img"), path("dangling.img")).unwrap();
        let error = dir.error(&with_vm("disk = \"dangling.img\""));
        assert!(
            error.contains("`vm[0].disk`") && error.contains("dangling.img"),
            "{error}"
        );
        let error = dir.error(&with_vm("disk = \"sub\""));
        assert!(error.contains("`vm[0].disk`"), "{error}");
    }

    #[test]
    fn blank_disks_and_persist() {
        let dir = Dir::new();
        let lab = dir
            .parse(&with_vm("blank_disk_kib = 32\npersist = true"))
            .unwrap();
        assert_eq!(lab.vms[0].disk, Some(Disk::Blank { kib: 32 }));
        assert!(lab.vms[0].persist);
        assert_eq!(
            lab.vms[0]
                .disk
                .as_ref()
                .unwrap()
                .path(Path::new("/run"), "hello"),
            Path::new("/run/hello.disk")
        );
        for value in ["0", "134217729"] {
            let error = dir.error(&with_vm(&format!("blank_disk_kib = {value}")));
            assert_range_error(&error, "vm[0].blank_disk_kib", value, "1..=134217728");
        }
        assert!(dir.parse(&with_vm("blank_disk_kib = 65536")).is_ok());
        let error = dir.error(&with_vm("disk = \"fs.img\"\nblank_disk_kib = 4"));
        assert!(
            error.contains("`vm[0].blank_disk_kib`")
                && error.contains("`vm[0].disk`")
                && error.contains("not both"),
            "{error}"
        );
        let error = dir.error(&with_vm("persist = true"));
        assert!(
            error.contains("`vm[0].persist`") && error.contains("needs a disk"),
            "{error}"
        );
        assert!(!dir.parse(&with_vm("persist = false")).unwrap().vms[0].persist);
    }

    #[test]
    fn scheduled_changes_reach_the_run_config_in_time_order() {
        let dir = Dir::new();
        let text = "[run]\npolicy = \"credit\"\n\
                    [[run.change]]\nat_ms = 3000\nvm = \"b\"\ncap_pct = 50\n\
                    [[run.change]]\nat_ms = 2000\nquantum_us = 10000\n\
                    [[run.change]]\nat_ms = 3000\nvm = \"a\"\nweight = 4\n\
                    [[vm]]\nname = \"a\"\nkernel = \"spin\"\nmemory_mib = 4\n\
                    [[vm]]\nname = \"b\"\nkernel = \"spin\"\nmemory_mib = 4\n";
        let lab = dir.parse(text).unwrap();
        let config = lab.run_config(1_000_000, None);
        assert_eq!(
            config.changes,
            [
                ScheduledChange {
                    at_us: 2_000_000,
                    setting: Setting::Quantum { us: 10_000 }
                },
                ScheduledChange {
                    at_us: 3_000_000,
                    setting: Setting::Cap { vm: 1, cap_pct: 50 }
                },
                ScheduledChange {
                    at_us: 3_000_000,
                    setting: Setting::Weight { vm: 0, weight: 4 }
                },
            ]
        );
        assert!(dir.parse(HELLO).unwrap().changes.is_empty());
    }

    #[test]
    fn bad_changes_are_refused_naming_the_key() {
        let dir = Dir::new();
        let change = |policy: &str, body: &str| {
            format!("[run]\npolicy = \"{policy}\"\n[[run.change]]\n{body}\n{HELLO}")
        };
        for (body, key, words) in [
            (
                "at_ms = 5\nquantum_us = 0",
                "run.change[0].quantum_us",
                "1..=1000000",
            ),
            (
                "at_ms = 5\nquantum_us = 1000001",
                "run.change[0].quantum_us",
                "1..=1000000",
            ),
            (
                "at_ms = -1\nquantum_us = 10",
                "run.change[0].at_ms",
                "0..=86400000",
            ),
            (
                "at_ms = 5\nvm = \"hello\"\nweight = 65",
                "run.change[0].weight",
                "1..=64",
            ),
            (
                "at_ms = 5\nvm = \"hello\"\ncap_pct = 0",
                "run.change[0].cap_pct",
                "1..=100",
            ),
            (
                "at_ms = 5\nvm = \"hello\"\ncap_pct = 101",
                "run.change[0].cap_pct",
                "1..=100",
            ),
            ("at_ms = 5\nweight = 2", "run.change[0].vm", "names its VM"),
            (
                "at_ms = 5\nvm = \"nobody\"\nweight = 2",
                "run.change[0].vm",
                "no vm \"nobody\"",
            ),
            (
                "at_ms = 5\nvm = \"hello\"\nquantum_us = 9",
                "run.change[0].vm",
                "leave `vm` out",
            ),
            (
                "at_ms = 5",
                "run.change[0]",
                "one of `quantum_us`, `weight` or `cap_pct`",
            ),
            (
                "at_ms = 5\nquantum_us = 9\nweight = 2",
                "run.change[0].weight",
                "also sets `quantum_us`",
            ),
        ] {
            let error = dir.error(&change("credit", body));
            assert!(
                error.contains(&format!("`{key}`")) && error.contains(words),
                "{body}: {error}"
            );
        }
        let error = dir.error(&change("boost", "at_ms = 5\nvm = \"hello\"\ncap_pct = 50"));
        assert!(
            error.contains("`run.change[0].cap_pct`") && error.contains("credit"),
            "{error}"
        );
        let error = dir.error(&change("credit", "at_ms = 5\nquantum = 3"));
        assert!(error.contains("quantum"), "{error}");
    }

    #[test]
    fn persist_reaches_the_manifest_and_the_extents_the_run_config() {
        let dir = Dir::new();
        let text = "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\n\
                    [[vm]]\nname = \"b\"\nkernel = \"hello\"\nmemory_mib = 8\ndisk = \"fs.img\"\n\
                    [[vm]]\nname = \"c\"\nkernel = \"hello\"\nmemory_mib = 8\n\
                    blank_disk_kib = 4\npersist = true\n";
        let lab = dir.parse(text).unwrap();
        let out = Path::new("/run");
        let persist = |all| -> Vec<bool> {
            let (manifest, _) = lab.drive_manifest(out, 1, all).unwrap();
            manifest.vms.iter().map(|vm| vm.persist).collect()
        };
        assert_eq!(persist(false), [false, true]);
        // --persist: every VM with a disk (a has none).
        assert_eq!(persist(true), [true, true]);
        let (manifest, _) = lab.drive_manifest(out, 99, false).unwrap();
        assert_eq!(manifest.vms[1].image, Path::new("/run/c.disk"));
        let config = lab.run_config(1, Some(&manifest));
        assert_eq!(config.vms[0].disk, None);
        assert_eq!(
            config.vms[1].disk,
            Some(DiskSource::Drive {
                start: 2048,
                sectors: 1
            })
        );
        assert_eq!(
            config.vms[2].disk,
            Some(DiskSource::Drive {
                start: 4096,
                sectors: 8
            })
        );
        assert_eq!(
            config.drive,
            Some(carousel_protocol::config::DriveConfig {
                run_id: 99,
                sectors: manifest.sectors
            })
        );
        // With the memory backend the disks are modules and persist is refused.
        let memory = format!(
            "[run]\ndisk_backend = \"memory\"\n{}",
            text.replace("persist = true\n", "")
        );
        let lab = dir.parse(&memory).unwrap();
        assert!(lab.drive_manifest(out, 1, true).is_none());
        assert_eq!(
            lab.run_config(1, None).vms[2].disk,
            Some(DiskSource::Module {
                name: "vm2.disk".to_string()
            })
        );
        let error = dir.error(&format!("[run]\ndisk_backend = \"memory\"\n{text}"));
        assert!(
            error.contains("`vm[2].persist`") && error.contains("disk_backend"),
            "{error}"
        );
    }

    #[test]
    fn policy() {
        let dir = Dir::new();
        assert_eq!(
            dir.parse(HELLO).unwrap().policy,
            SchedulerPolicy::RoundRobin
        );
        let lab = dir
            .parse(&format!("[run]\npolicy = \"boost\"\n{HELLO}"))
            .unwrap();
        assert_eq!(lab.policy, SchedulerPolicy::Boost);
        assert_eq!(lab.run_config(1, None).policy, SchedulerPolicy::Boost);
        let error = dir.error(&format!("[run]\npolicy = \"cfs\"\n{HELLO}"));
        assert!(
            error.contains("`run.policy`") && error.contains("round-robin, boost, credit"),
            "{error}"
        );
        assert!(error.contains(":2: "), "{error}");
    }

    #[test]
    fn the_shared_disk_model_and_its_per_vm_keys() {
        let dir = Dir::new();
        let lab = dir.parse(HELLO).unwrap();
        assert_eq!(lab.disk_model, DiskModelConfig::default());
        assert!(!lab.disk_model.has_service_time());
        assert_eq!((lab.vms[0].disk_weight, lab.vms[0].disk_mib_per_s), (1, 0));
        let text = format!(
            "[run.disk]\nlatency_us = 200\nmib_per_s = 40\npolicy = \"wfq\"\nanticipate_us = 1000\n\
             {HELLO}disk_weight = 8\ndisk_mib_per_s = 5\n"
        );
        let lab = dir.parse(&text).unwrap();
        assert_eq!(
            lab.disk_model,
            DiskModelConfig {
                latency_us: 200,
                mib_per_s: 40,
                policy: DiskQueuePolicy::Wfq,
                anticipate_us: 1_000,
            }
        );
        assert_eq!((lab.vms[0].disk_weight, lab.vms[0].disk_mib_per_s), (8, 5));
        let config = lab.run_config(1, None);
        assert_eq!(config.disk, lab.disk_model);
        assert_eq!(
            (config.vms[0].disk_weight, config.vms[0].disk_mib_per_s),
            (8, 5)
        );
        for (key, value, range) in [
            ("latency_us", "-1", "0..=1000000"),
            ("latency_us", "1000001", "0..=1000000"),
            ("mib_per_s", "100001", "0..=100000"),
            ("anticipate_us", "100001", "0..=100000"),
        ] {
            let error = dir.error(&format!("[run.disk]\n{key} = {value}\n{HELLO}"));
            assert_range_error(&error, &format!("run.disk.{key}"), value, range);
        }
        for (key, value, range) in [
            ("disk_weight", "0", "1..=64"),
            ("disk_weight", "65", "1..=64"),
            ("disk_mib_per_s", "-5", "0..=100000"),
        ] {
            let error = dir.error(&format!("{HELLO}{key} = {value}\n"));
            assert_range_error(&error, &format!("vm[0].{key}"), value, range);
        }
        let error = dir.error(&format!("[run.disk]\npolicy = \"cfq\"\n{HELLO}"));
        assert!(
            error.contains("`run.disk.policy`") && error.contains("fifo, wfq"),
            "{error}"
        );
        let error = dir.error(&format!("[run.disk]\nseek_us = 3\n{HELLO}"));
        assert!(error.contains("seek_us"), "{error}");
        // Written out and read back, the lab is the same.
        let written = lab.to_toml("");
        assert_eq!(dir.parse(&written).unwrap().disk_model, lab.disk_model);
    }

    #[test]
    fn credit_policy_caps_and_rate_limit() {
        let dir = Dir::new();
        let lab = dir
            .parse(&format!("[run]\npolicy = \"credit\"\n{HELLO}"))
            .unwrap();
        assert_eq!(lab.policy, SchedulerPolicy::Credit);
        assert_eq!(lab.credit, CreditConfig::default());
        assert_eq!(lab.credit.ratelimit_us, 1_000);
        assert_eq!(lab.vms[0].cap_pct, 0);
        let text = format!(
            "[run]\npolicy = \"credit\"\n[run.credit]\nratelimit_us = 250\nperiod_us = 10000\n\
             {HELLO}cap_pct = 25\n\
             [[vm]]\nname = \"other\"\nkernel = \"spin\"\nmemory_mib = 4\ncap_pct = 100\n"
        );
        let lab = dir.parse(&text).unwrap();
        assert_eq!(
            lab.credit,
            CreditConfig {
                ratelimit_us: 250,
                period_us: 10_000
            }
        );
        assert_eq!((lab.vms[0].cap_pct, lab.vms[1].cap_pct), (25, 100));
        let config = lab.run_config(1, None);
        assert_eq!(config.policy, SchedulerPolicy::Credit);
        assert_eq!(config.credit.ratelimit_us, 250);
        assert_eq!(config.vms[0].cap_pct, 25);
        let credit = |extra: &str| format!("[run]\npolicy = \"credit\"\n{HELLO}{extra}\n");
        for value in ["0", "101", "-3"] {
            let error = dir.error(&credit(&format!("cap_pct = {value}")));
            assert_range_error(&error, "vm[0].cap_pct", value, "1..=100");
            assert!(error.contains(":7: "), "{error}");
        }
        for (key, value, range) in [
            ("ratelimit_us", "-1", "0..=1000000"),
            ("ratelimit_us", "1000001", "0..=1000000"),
            ("period_us", "99", "100..=10000000"),
        ] {
            let error = dir.error(&format!(
                "[run]\npolicy = \"credit\"\n[run.credit]\n{key} = {value}\n{HELLO}"
            ));
            assert_range_error(&error, &format!("run.credit.{key}"), value, range);
        }
        let error = dir.error(&format!("[run.credit]\nquantum = 3\n{HELLO}"));
        assert!(error.contains("quantum"), "{error}");
        // A cap under another policy would be silently ignored: it is refused, named.
        for policy in ["", "[run]\npolicy = \"boost\"\n"] {
            let error = dir.error(&format!("{policy}{HELLO}cap_pct = 25\n"));
            assert!(error.contains("`vm[0].cap_pct`"), "{error}");
            assert!(error.contains("run.policy = \"credit\""), "{error}");
        }
    }

    #[test]
    fn a_template_s_vms_inherit_their_cap() {
        let dir = Dir::new();
        let template = "[vm_defaults]\nkernel = \"spin\"\nmemory_mib = 4\ncap_pct = 25\n\
                        [[vm]]\nname = \"s{i}\"\ncount = 3\n\
                        [[vm]]\nname = \"free\"\ncap_pct = 90\n";
        let lab = dir
            .parse(&format!("[run]\npolicy = \"credit\"\n{template}"))
            .unwrap();
        let caps: Vec<u32> = lab.vms.iter().map(|vm| vm.cap_pct).collect();
        assert_eq!(caps, [25, 25, 25, 90]);
        // Under round robin the inherited cap is refused where it is written, naming the VM.
        let error = dir.error(template);
        assert!(error.contains("`vm_defaults.cap_pct`"), "{error}");
        assert!(error.contains("\"s0\" (from [[vm]] 0, count 3)"), "{error}");
    }

    /// Two VMs, a and b, then `sweep`.
    fn with_sweep(sweep: &str) -> String {
        format!(
            "[[vm]]\nname = \"a\"\nkernel = \"spin\"\nmemory_mib = 4\n\
             [[vm]]\nname = \"b\"\nkernel = \"sleepy\"\nmemory_mib = 4\n{sweep}"
        )
    }

    #[test]
    fn sweep_table() {
        let dir = Dir::new();
        assert_eq!(dir.parse(HELLO).unwrap().sweep, SweepTable::default());
        let lab = dir
            .parse(&with_sweep(
                "[sweep]\nquantum = [\"2ms\", \"500us\"]\npolicy = [\"boost\"]\n\
                 weights = [\"lab\", \"b=4\"]\nrepeat = 3\n\
                 [[sweep.workload]]\nname = \"both\"\nvms = [\"b\", \"a\"]\n\
                 [[sweep.workload]]\nname = \"one\"\nvms = [\"a\"]\n",
            ))
            .unwrap();
        let sweep = &lab.sweep;
        assert_eq!(sweep.quanta_us.as_deref(), Some(&[500, 2_000][..]));
        assert_eq!(
            sweep.policies.as_deref(),
            Some(&[SchedulerPolicy::Boost][..])
        );
        assert_eq!(sweep.weights.as_ref().map(Vec::len), Some(2));
        assert_eq!(sweep.repeat, Some(3));
        assert_eq!(sweep.workloads[0].name, "both");
        assert_eq!(sweep.workloads[0].vms, [0, 1]);
        assert_eq!(sweep.workloads[1].vms, [0]);
    }

    #[test]
    fn bad_sweep_tables_are_named() {
        let dir = Dir::new();
        for (sweep, key, says) in [
            (
                "quantum = [\"1ms\", \"fast\"]",
                "sweep.quantum",
                "not a quantum",
            ),
            ("quantum = []", "sweep.quantum", "no quantum"),
            (
                "policy = [\"fifo\"]",
                "sweep.policy",
                "not a scheduling policy",
            ),
            ("weights = [\"c=2\"]", "sweep.weights", "does not have: c"),
            ("weights = [\"0:1\"]", "sweep.weights", "not a weight"),
            ("repeat = 0", "sweep.repeat", "1..=100"),
            (
                "[[sweep.workload]]\nname = \"w\"\nvms = [\"a\", \"z\"]",
                "sweep.workload[0].vms",
                "no VM \"z\"",
            ),
            (
                "[[sweep.workload]]\nname = \"w\"\nvms = [\"a\", \"a\"]",
                "sweep.workload[0].vms",
                "listed twice",
            ),
            (
                "[[sweep.workload]]\nname = \"w\"\nvms = []",
                "sweep.workload[0].vms",
                "at least one VM",
            ),
            (
                "[[sweep.workload]]\nname = \"w w\"\nvms = [\"a\"]",
                "sweep.workload[0].name",
                "workload name",
            ),
            (
                "[[sweep.workload]]\nname = \"w\"\nvms = [\"a\"]\n\
                 [[sweep.workload]]\nname = \"w\"\nvms = [\"b\"]",
                "sweep.workload[1].name",
                "another workload",
            ),
            ("colour = \"blue\"", "colour", "unknown field"),
        ] {
            let error = dir.error(&with_sweep(&format!("[sweep]\n{sweep}\n")));
            assert!(error.contains(key), "{sweep}: {error}");
            assert!(error.contains(says), "{sweep}: {error}");
        }
    }

    #[test]
    fn steps_take_a_label_and_a_repeat() {
        let dir = Dir::new();
        let lab = dir
            .parse(&with_vm(
                "[[vm.script]]\nexpect = 'x'\nsend = 'y'\nlabel = 'echo hi'\nrepeat = 50\n\
                 [[vm.script]]\nexpect = 'z'\n",
            ))
            .unwrap();
        let script = &lab.vms[0].script;
        assert_eq!(script[0].label.as_deref(), Some("echo hi"));
        assert_eq!(script[0].repeat, 50);
        assert_eq!((script[1].label.as_deref(), script[1].repeat), (None, 1));
        for value in ["0", "10001", "-1"] {
            let error = dir.error(&with_vm(&format!(
                "[[vm.script]]\nexpect = 'x'\nrepeat = {value}\n"
            )));
            assert_range_error(&error, "vm[0].script[0].repeat", value, "1..=10000");
        }
        let error = dir.error(&with_vm("[[vm.script]]\nexpect = 'x'\nrepeat = 'many'\n"));
        assert!(error.contains("repeat"), "{error}");
        for (label, why) in [
            ("", "cannot be empty"),
            ("a,b", "without commas"),
            (&"x".repeat(65), "at most 64"),
        ] {
            let error = dir.error(&with_vm(&format!(
                "[[vm.script]]\nexpect = 'x'\nlabel = '{label}'\n"
            )));
            assert!(error.contains("`vm[0].script[0].label`"), "{error}");
            assert!(error.contains(why), "{error}");
        }
        let error = dir.error(&with_vm("[[vm.script]]\nexpect = 'x'\nlabel = \"a\\tb\"\n"));
        assert!(error.contains("printable ASCII"), "{error}");
    }

    #[test]
    fn deterministic_is_a_switch_off_by_default() {
        let dir = Dir::new();
        let deterministic = |run: &str| {
            dir.parse(&format!("[run]\n{run}\n{HELLO}"))
                .map(|lab| lab.deterministic)
        };
        assert!(!deterministic("").unwrap());
        assert!(!deterministic("deterministic = false").unwrap());
        assert!(deterministic("deterministic = true").unwrap());
        let error = dir.error(&format!("[run]\ndeterministic = 1\n{HELLO}"));
        assert!(error.contains("deterministic"), "{error}");
    }

    #[test]
    fn idle_detection() {
        let dir = Dir::new();
        let config = |run: &str| {
            dir.parse(&format!("[run]\n{run}\n{HELLO}"))
                .map(|lab| lab.run_config(1, None).idle_threshold_us)
        };
        assert_eq!(config("").unwrap(), None);
        assert_eq!(config("idle_detection = false").unwrap(), None);
        assert_eq!(config("idle_detection = true").unwrap(), Some(100));
        assert_eq!(
            config("idle_detection = true\nidle_threshold_us = 250").unwrap(),
            Some(250)
        );
        assert_eq!(config("idle_threshold_us = 250").unwrap(), None);
        for value in ["0", "100001"] {
            let error = dir.error(&format!(
                "[run]\nidle_detection = true\nidle_threshold_us = {value}\n{HELLO}"
            ));
            assert_range_error(&error, "run.idle_threshold_us", value, "1..=100000");
        }
        let error = dir.error(&format!("[run]\nidle_detection = 1\n{HELLO}"));
        assert!(error.contains("idle_detection"), "{error}");
    }

    /// Idle detection without a threshold takes the backend's (longer under TCG, whose world
    /// switch counts as guest time); a threshold the lab names holds on every backend, and a
    /// lab written back (sweeps, emitted jobs) keeps that distinction.
    #[test]
    fn the_idle_threshold_follows_the_backend_unless_the_lab_names_one() {
        use crate::emulator::backend::Backend;
        use crate::lab::limits::TCG_IDLE_THRESHOLD_US;
        let dir = Dir::new();
        let lab = |run: &str| dir.parse(&format!("[run]\n{run}\n{HELLO}")).unwrap();
        let on = lab("idle_detection = true");
        let given = lab("idle_detection = true\nidle_threshold_us = 250");
        let off = lab("idle_threshold_us = 250");
        for (lab, bochs, qemu) in [
            (&on, Some(100), Some(TCG_IDLE_THRESHOLD_US)),
            (&given, Some(250), Some(250)),
            (&off, None, None),
        ] {
            assert_eq!(Backend::Bochs.idle_threshold_us(lab), bochs);
            assert_eq!(Backend::QemuKvm.idle_threshold_us(lab), bochs);
            assert_eq!(Backend::QemuSvm.idle_threshold_us(lab), qemu);
            let again = dir.parse(&lab.to_toml("written back")).unwrap();
            assert_eq!(Backend::QemuSvm.idle_threshold_us(&again), qemu);
        }
    }

    #[test]
    fn scripts() {
        let dir = Dir::new();
        let text = with_vm(
            "[[vm.script]]\nexpect = '^\\$ $'\nsend = \"ls\\n\"\ntimeout_s = 30\n\
             [[vm.script]]\nexpect = 'README'\n",
        );
        let lab = dir.parse(&text).unwrap();
        assert!(lab.has_scripts());
        let script = &lab.vms[0].script;
        assert_eq!(script.len(), 2);
        assert_eq!(script[0].expect.as_str(), r"^\$ $");
        assert!(script[0].expect.is_match("$ ") && !script[0].expect.is_match("$ ls"));
        assert_eq!(script[0].send.as_deref(), Some("ls\n"));
        assert_eq!(script[0].timeout, Duration::from_secs(30));
        assert_eq!(script[1].send, None);
        assert_eq!(
            script[1].timeout,
            Duration::from_secs(DEFAULT_STEP_TIMEOUT_S)
        );
        assert!(!dir.parse(HELLO).unwrap().has_scripts());
    }

    #[test]
    fn bad_scripts_are_named() {
        let dir = Dir::new();
        let error = dir.error(&with_vm(
            "[[vm.script]]\nexpect = 'ok'\n[[vm.script]]\nexpect = 'a(b'\n",
        ));
        assert!(error.contains("`vm[0].script[1].expect`"), "{error}");
        assert!(error.contains("script step 2"), "{error}");
        assert!(error.contains("regular expression"), "{error}");
        assert!(error.contains(":8: "), "{error}");
        let error = dir.error(&with_vm("[[vm.script]]\nexpect = 'x'\ntimeout_s = 0\n"));
        assert_range_error(&error, "vm[0].script[0].timeout_s", "0", "1..=86400");
        let error = dir.error(&with_vm("[[vm.script]]\nexpect = 'x'\nsned = 'y'\n"));
        assert!(error.contains("sned"), "{error}");
        let error = dir.error(&with_vm("[[vm.script]]\nsend = 'y'\n"));
        assert!(error.contains("expect"), "{error}");
    }

    #[test]
    fn any_vm_can_have_a_script() {
        let dir = Dir::new();
        let vm = |i: usize| {
            format!(
                "[[vm]]\nname = \"v{i}\"\nkernel = \"hello\"\nmemory_mib = 2\n\
                 [[vm.script]]\nexpect = 'x'\n"
            )
        };
        // VM 29's id once collided with the focus protocol's escape byte.
        let many: String = (0..31).map(vm).collect();
        assert!(dir.parse(&many).is_ok());
    }

    /// A lab of templates reads as the same lab written out VM by VM (only the file's hash
    /// differs).
    #[test]
    fn a_template_lab_is_the_lab_it_stands_for() {
        let dir = Dir::new();
        let templates = "[run]\nquantum_us = 500\n\
                         [vm_defaults]\nkernel = \"guest.elf\"\nmemory_mib = 16\ndisk = \"fs.img\"\n\
                         weight = 2\n\
                         [[vm_defaults.script]]\nexpect = '^\\$ $'\nsend = \"echo {i}\\n\"\n\
                         [[vm_defaults.script]]\nexpect = '^{i}$'\ntimeout_s = 9\n\
                         [[vm]]\nname = \"w{i}\"\ncount = 3\nargs = \"id={i}\"\n\
                         [[vm]]\nname = \"own\"\nkernel = \"hello\"\nblank_disk_kib = 4\nweight = 1\n\
                         [[vm.script]]\nexpect = 'hi'\n";
        let step = |i: usize| {
            format!(
                "[[vm.script]]\nexpect = '^\\$ $'\nsend = \"echo {i}\\n\"\n\
                 [[vm.script]]\nexpect = '^{i}$'\ntimeout_s = 9\n"
            )
        };
        let written: String = (0..3)
            .map(|i| {
                format!(
                    "[[vm]]\nname = \"w{i}\"\nkernel = \"guest.elf\"\nmemory_mib = 16\n\
                     disk = \"fs.img\"\nweight = 2\nargs = \"id={i}\"\n{}",
                    step(i)
                )
            })
            .collect();
        let written = format!(
            "[run]\nquantum_us = 500\n{written}\
             [[vm]]\nname = \"own\"\nkernel = \"hello\"\nmemory_mib = 16\nblank_disk_kib = 4\n\
             weight = 1\n[[vm.script]]\nexpect = 'hi'\n"
        );
        let from_templates = dir.parse(templates).unwrap();
        let mut written = dir.parse(&written).unwrap();
        assert_eq!(written.vms.len(), 4);
        assert_eq!(written.vms[2].script[1].expect.as_str(), "^2$");
        written.hash = from_templates.hash;
        assert_eq!(from_templates, written);
        assert_eq!(
            from_templates.run_config(1, None),
            written.run_config(1, None)
        );
    }

    /// An error about a VM a template made names the VM and the table; one about a key from
    /// `[vm_defaults]` names that key and the VM.
    #[test]
    fn errors_name_the_vm_a_template_made() {
        let dir = Dir::new();
        let spin = "kernel = \"spin\"\nmemory_mib = 4\n";
        for (text, parts) in [
            (
                format!("[[vm]]\nname = \"w{{i}}\"\ncount = 2\n{spin}weight = 0\n"),
                vec![
                    "lab.toml:6: ",
                    "`vm[0].weight` = 0 is outside the allowed range 1..=64",
                    "in vm \"w0\" (from [[vm]] 0, count 2)",
                ],
            ),
            (
                format!("[vm_defaults]\nweight = 65\n[[vm]]\nname = \"a\"\n{spin}"),
                vec!["lab.toml:2: ", "`vm_defaults.weight` = 65", "in vm \"a\""],
            ),
            (
                format!(
                    "[[vm]]\nname = \"a\"\n{spin}[[vm]]\nname = \"{}{{i}}\"\ncount = 11\n{spin}",
                    "x".repeat(31)
                ),
                vec![
                    "`vm[1].name`",
                    &format!("\"{}10\" (from [[vm]] 1, count 11)", "x".repeat(31)),
                    "1 to 32 characters",
                ],
            ),
            (
                format!(
                    "[[vm]]\nname = \"s{{i}}\"\ncount = 3\n{spin}[[vm]]\nname = \"s2\"\n{spin}"
                ),
                vec![
                    "`vm[1].name` = \"s2\": another VM has this name \
                     (`vm[0].name`, from [[vm]] 0, count 3)",
                ],
            ),
            (
                format!(
                    "[[vm]]\nname = \"a\"\n{spin}[[vm]]\nname = \"s{{i}}\"\ncount = 2\n{spin}\
                     [[vm]]\nname = \"s1\"\ncount = 1\n{spin}"
                ),
                vec![
                    "`vm[2].name` = \"s1\" (from [[vm]] 2, count 1): another VM has this name \
                     (`vm[1].name`, from [[vm]] 1, count 2)",
                ],
            ),
            (
                "[[vm]]\nname = \"k{i}\"\ncount = 2\nkernel = \"nope.elf\"\nmemory_mib = 4\n"
                    .to_string(),
                vec![
                    "lab.toml:4: ",
                    "`vm[0].kernel` of vm \"k0\" (from [[vm]] 0, count 2)",
                    "nope.elf",
                ],
            ),
            (
                format!("[vm_defaults]\ndisk = \"gone.img\"\n[[vm]]\nname = \"a\"\n{spin}"),
                vec!["`vm_defaults.disk` of vm \"a\"", "gone.img"],
            ),
            (
                format!(
                    "[vm_defaults]\n{spin}[[vm_defaults.script]]\nexpect = 'a('\n\
                     [[vm]]\nname = \"v{{i}}\"\ncount = 2\n"
                ),
                vec![
                    "lab.toml:5: ",
                    "`vm_defaults.script[0].expect` (script step 1) of vm \"v0\" \
                     (from [[vm]] 0, count 2): not a regular expression",
                ],
            ),
            (
                format!(
                    "[[vm]]\nname = \"t{{i}}\"\ncount = 2\n{spin}\
                     [[vm.script]]\nexpect = 'x'\ntimeout_s = 0\n"
                ),
                vec![
                    "`vm[0].script[0].timeout_s` = 0",
                    "in vm \"t0\" (from [[vm]] 0, count 2)",
                ],
            ),
            (
                format!("[[vm]]\nname = \"p{{i}}\"\ncount = 2\n{spin}persist = true\n"),
                vec!["`vm[0].persist` of vm \"p0\" (from [[vm]] 0, count 2): persist needs a disk"],
            ),
        ] {
            let error = dir.error(&text);
            for part in parts {
                assert!(error.contains(part), "{part}\n{error}");
            }
        }
    }

    /// A disk that does not fit names the VM a template made and the key it came from.
    #[test]
    fn disks_too_big_name_the_template() {
        let dir = Dir::new();
        let error = dir.error(
            "[vm_defaults]\nkernel = \"hello\"\nmemory_mib = 2\nblank_disk_kib = 134217728\n\
             [[vm]]\nname = \"big{i}\"\ncount = 5\n",
        );
        assert!(
            error.contains("`vm_defaults.blank_disk_kib` of vm \"big3\" (from [[vm]] 0, count 5)")
                && error.contains("shared drive cannot hold it"),
            "{error}"
        );
    }

    proptest::proptest! {
        #[test]
        fn parser_never_panics(text in "[\\[\\]a-z_=\"0-9 .\n-]{0,200}") {
            let _ = Lab::parse(Path::new("/nonexistent/lab.toml"), &text);
        }

        #[test]
        fn valid_sizes_are_accepted(memory in 2u32..=2836, weight in 1u32..=64, quantum in 1u32..=1_000_000) {
            let text = format!(
                "[run]\nquantum_us = {quantum}\n[[vm]]\nname = \"a\"\nkernel = \"hello\"\n\
                 memory_mib = {memory}\nweight = {weight}\n"
            );
            let lab = Lab::parse(Path::new("lab.toml"), &text).unwrap();
            proptest::prop_assert_eq!(lab.vms[0].memory_mib, memory);
            proptest::prop_assert_eq!(lab.vms[0].weight, weight);
            proptest::prop_assert_eq!(lab.quantum_us, quantum);
        }
    }
}
