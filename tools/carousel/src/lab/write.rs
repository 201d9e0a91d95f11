//! Writing a lab file: the labs the tool generates (benchmarks) are built as [`Lab`] values and
//! written as the TOML that reads back to the same lab, every setting spelled out, so that
//! `carousel run` on the file repeats the run exactly.

use std::path::Path;

use carousel_protocol::config::fnv1a64;
use carousel_trace::TRACE_LEVELS;
use toml::Spanned;

use super::definition::{Disk, Kernel, Lab};
use super::limits::DEFAULT_IDLE_THRESHOLD_US;
use super::raw::{
    RawChange, RawCredit, RawDiskModel, RawLab, RawRun, RawStep, RawSweep, RawVm, RawWorkload,
};
use super::sweep::quantum_text;
use carousel_protocol::config::Setting;

/// A value as written, at no position in a file.
fn spanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

fn int(value: impl Into<i64>) -> Option<Spanned<i64>> {
    Some(spanned(value.into()))
}

/// `path` as a lab file names it: absolute, so that the file may live anywhere.
fn path_text(path: &Path) -> String {
    std::path::absolute(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .display()
        .to_string()
}

impl Lab {
    /// The lab as a lab file, `comment` in its first line.
    pub fn to_toml(&self, comment: &str) -> String {
        let run = RawRun {
            quantum_us: int(self.quantum_us),
            ips: int(self.ips as i64),
            tsc_hz: self.tsc_hz.and_then(|hz| int(hz as i64)),
            cpu_model: Some(spanned(self.cpu_model.clone())),
            timeout_s: int(self.timeout_s as i64),
            idle_detection: Some(spanned(self.idle_threshold_us.is_some())),
            // Only when the lab named it: otherwise the backend picks it at run time.
            idle_threshold_us: self
                .idle_threshold_given
                .then(|| int(self.idle_threshold_us.unwrap_or(DEFAULT_IDLE_THRESHOLD_US)))
                .flatten(),
            interval_us: int(self.interval_us),
            trace: TRACE_LEVELS
                .iter()
                .find(|(_, level)| *level == self.trace)
                .map(|(name, _)| spanned(name.to_string())),
            policy: Some(spanned(self.policy.name().to_string())),
            quantum_clock: Some(spanned(self.quantum_clock.name().to_string())),
            deterministic: self.deterministic.then(|| spanned(true)),
            memory_sample_ms: int(self.memory_sample_ms),
            guest_memory_budget_mib: self.guest_memory_budget_mib.and_then(int),
            merge_scan_pages: int(self.merge_scan_pages),
            compress_after_samples: int(self.compression.after_samples),
            compress_scan_pages: int(self.compression.scan_pages),
            compress_pool_mib: int(self.compression.pool_mib),
            balloon_when_free_below_pct: self.balloon_rule.and_then(|(pct, _)| int(pct)),
            balloon_step_mib: self.balloon_rule.and_then(|(_, mib)| int(mib)),
            lazy_memory: Some(spanned(self.lazy_memory)),
            boot_stagger_ms: int(self.boot_stagger_ms),
            disk_backend: Some(spanned(self.disk_backend.name().to_string())),
            credit: Some(RawCredit {
                ratelimit_us: int(self.credit.ratelimit_us),
                period_us: int(self.credit.period_us),
            }),
            disk: Some(RawDiskModel {
                latency_us: int(self.disk_model.latency_us),
                mib_per_s: int(self.disk_model.mib_per_s),
                policy: Some(spanned(self.disk_model.policy.name().to_string())),
                anticipate_us: int(self.disk_model.anticipate_us),
            }),
            change: self
                .changes
                .iter()
                .map(|change| {
                    let vm = |id: u16| {
                        self.vms
                            .get(usize::from(id))
                            .map(|vm| spanned(vm.name.clone()))
                    };
                    let mut raw = RawChange {
                        at_ms: spanned(i64::from(change.at_ms)),
                        vm: None,
                        quantum_us: None,
                        weight: None,
                        cap_pct: None,
                    };
                    match change.setting {
                        Setting::Quantum { us } => raw.quantum_us = int(us),
                        Setting::Weight { vm: id, weight } => {
                            raw.vm = vm(id);
                            raw.weight = int(weight);
                        }
                        Setting::Cap { vm: id, cap_pct } => {
                            raw.vm = vm(id);
                            raw.cap_pct = int(cap_pct);
                        }
                    }
                    spanned(raw)
                })
                .collect(),
        };
        let vm = self
            .vms
            .iter()
            .map(|vm| {
                spanned(RawVm {
                    name: Some(spanned(vm.name.clone())),
                    count: None,
                    kernel: Some(spanned(match &vm.kernel {
                        Kernel::Builtin(name) => name.clone(),
                        Kernel::File(path) => path_text(path),
                    })),
                    memory_mib: int(vm.memory_mib),
                    disk: match &vm.disk {
                        Some(Disk::File(path)) => Some(spanned(path_text(path))),
                        _ => None,
                    },
                    blank_disk_kib: match vm.disk {
                        Some(Disk::Blank { kib }) => int(kib),
                        _ => None,
                    },
                    persist: Some(spanned(vm.persist)),
                    weight: int(vm.weight),
                    cap_pct: (vm.cap_pct > 0).then(|| spanned(i64::from(vm.cap_pct))),
                    disk_weight: int(vm.disk_weight),
                    disk_mib_per_s: (vm.disk_mib_per_s > 0)
                        .then(|| spanned(i64::from(vm.disk_mib_per_s))),
                    balloon_mib: int(vm.balloon_mib),
                    balloon_target_mib: int(vm.balloon_target_mib),
                    args: Some(spanned(vm.args.clone())),
                    script: (!vm.script.is_empty()).then(|| {
                        vm.script
                            .iter()
                            .map(|step| {
                                spanned(RawStep {
                                    expect: spanned(step.expect.as_str().to_string()),
                                    send: step.send.clone().map(spanned),
                                    timeout_s: int(step.timeout.as_secs() as i64),
                                    label: step.label.clone().map(spanned),
                                    repeat: (step.repeat != 1)
                                        .then(|| spanned(i64::from(step.repeat))),
                                })
                            })
                            .collect()
                    }),
                })
            })
            .collect();
        let table = &self.sweep;
        let list = |items: Option<Vec<String>>| items.map(spanned);
        let sweep = RawSweep {
            quantum: list(
                table
                    .quanta_us
                    .as_ref()
                    .map(|quanta| quanta.iter().map(|&q| quantum_text(q)).collect()),
            ),
            policy: list(
                table
                    .policies
                    .as_ref()
                    .map(|policies| policies.iter().map(|p| p.name().to_string()).collect()),
            ),
            weights: list(
                table
                    .weights
                    .as_ref()
                    .map(|sets| sets.iter().map(|set| set.label()).collect()),
            ),
            repeat: table.repeat.and_then(int),
            workload: table
                .workloads
                .iter()
                .map(|workload| {
                    spanned(RawWorkload {
                        name: spanned(workload.name.clone()),
                        vms: spanned(
                            workload
                                .vms
                                .iter()
                                .map(|&index| self.vms[index].name.clone())
                                .collect(),
                        ),
                    })
                })
                .collect(),
        };
        let empty = sweep.quantum.is_none()
            && sweep.policy.is_none()
            && sweep.weights.is_none()
            && sweep.repeat.is_none()
            && sweep.workload.is_empty();
        let raw = RawLab {
            run: Some(run),
            vm_defaults: None,
            vm,
            sweep: (!empty).then_some(sweep),
        };
        let body = toml::to_string(&raw).expect("a lab of numbers and strings is TOML");
        format!("# {comment}\n\n{body}")
    }

    /// Writes the lab to its `path` as [`Lab::to_toml`] says, and takes the file's hash; the
    /// text written.
    pub fn save(&mut self, comment: &str) -> std::io::Result<String> {
        let text = self.to_toml(comment);
        std::fs::write(&self.path, &text)?;
        self.hash = fnv1a64(text.as_bytes());
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use carousel_protocol::config::SchedulerPolicy;
    use carousel_protocol::record::TraceLevel;

    use super::*;
    use crate::lab::script::{Pattern, Step};
    use crate::lab::sweep::{WeightSet, Workload};
    use crate::lab::{Change, Vm};

    #[test]
    fn a_written_lab_reads_back_the_same() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let kernel = dir.path().join("kernel");
        let disk = dir.path().join("fs.img");
        std::fs::write(&kernel, b"\x7fELF").expect("written");
        std::fs::write(&disk, [0u8; 512]).expect("written");
        let mut first = Vm::new("first", Kernel::File(kernel), 224);
        first.disk = Some(Disk::File(disk));
        first.script = vec![Step {
            expect: Pattern::new(r"^\$ $").expect("a pattern"),
            send: Some("ls\n".to_string()),
            timeout: Duration::from_secs(600),
            label: Some("list".to_string()),
            repeat: 7,
        }];
        first.weight = 3;
        let mut second = Vm::new("second", Kernel::Builtin("spin".into()), 8);
        second.disk = Some(Disk::Blank { kib: 32 });
        second.persist = true;
        second.args = "ms=5 \"quoted\"".to_string();
        let mut lab = Lab::new(dir.path().join("lab.toml"), vec![first, second]);
        lab.quantum_us = 2_000;
        lab.tsc_hz = Some(1_000_000_000);
        lab.idle_threshold_us = Some(250);
        lab.idle_threshold_given = true;
        lab.deterministic = true;
        lab.trace = TraceLevel::Full;
        lab.policy = SchedulerPolicy::Credit;
        lab.credit.ratelimit_us = 300;
        lab.credit.period_us = 20_000;
        lab.vms[1].cap_pct = 25;
        lab.balloon_rule = Some((20, 8));
        lab.changes = vec![
            Change {
                at_ms: 500,
                setting: Setting::Quantum { us: 4_000 },
            },
            Change {
                at_ms: 900,
                setting: Setting::Cap { vm: 0, cap_pct: 40 },
            },
            Change {
                at_ms: 900,
                setting: Setting::Weight { vm: 1, weight: 5 },
            },
        ];
        lab.guest_memory_budget_mib = Some(300);
        lab.sweep.quanta_us = Some(vec![500, 1_000]);
        lab.sweep.weights = Some(vec![WeightSet::Lab, WeightSet::Positional(vec![1, 2])]);
        lab.sweep.workloads = vec![Workload {
            name: "pair".into(),
            vms: vec![0, 1],
        }];
        let text = lab.save("written by a test").expect("saved");
        assert!(text.starts_with("# written by a test\n"), "{text}");
        let read = Lab::load(&lab.path).expect("a valid lab");
        assert_eq!(read, lab, "{text}");
    }
}
