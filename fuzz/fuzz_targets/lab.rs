//! The lab-file parser, `carousel::lab::Lab::parse_with_env`, on arbitrary text, and the run
//! configuration it makes. Imports go only through the public path `carousel::lab`.
//!
//! The lab sits in a scratch directory holding an ELF file, a disk image, an empty file and a
//! file that is not ELF, so relative `kernel` and `disk` paths can name something real; the
//! environment is fixed (`XV6_KERNEL`, `XV6_FS`, `EMPTY`), so runs repeat. `PATH` is emptied,
//! so the commit the run configuration carries is "unknown".
//!
//! Invariants:
//! - nothing panics, and every refusal has a message;
//! - an accepted lab keeps every documented limit: 1 to 64 VMs with distinct valid names, every
//!   number in its range (quantum, ips, TSC, timeout, interval, memory, weight, balloon, blank
//!   disk, idle threshold, budget, stagger), a known CPU model, command lines of at most 1 KiB
//!   without NUL, persist only with a disk, file kernels that exist and are ELF, RAM that fits
//!   the emulator unless lazily backed, sweep workloads that name the lab's VMs;
//! - templates (`[vm_defaults]`, `count`, `{i}`) are fully expanded: no VM's command line or
//!   script text still holds `{i}`;
//! - its run configuration has the current format version, matches the lab VM for VM, and its
//!   postcard bytes decode to the same configuration and re-encode to the same bytes.
#![no_main]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use carousel::lab::template::INDEX;
use carousel::lab::{
    Disk, Kernel, Lab, ARGS_MAX, BLANK_DISK_KIB_RANGE, BUILTIN_GUESTS,
    COMPRESS_AFTER_SAMPLES_RANGE, COMPRESS_POOL_MIB_RANGE, COMPRESS_SCAN_PAGES_RANGE, CPU_MODELS,
    DISK_ANTICIPATE_US_RANGE, DISK_LATENCY_US_RANGE, DISK_MIB_PER_S_RANGE, HYPERVISOR_MIB,
    IDLE_THRESHOLD_US_RANGE, INTERVAL_US_RANGE, IPS_RANGE, MAX_TOTAL_MIB, MEMORY_MIB_RANGE,
    MEMORY_SAMPLE_MS_RANGE, MERGE_SCAN_PAGES_RANGE, NAME_MAX, QUANTUM_US_RANGE, STEP_REPEAT_RANGE,
    STEP_TIMEOUT_S_RANGE, TIMEOUT_S_RANGE, TSC_HZ_RANGE, VM_COUNT_RANGE, WEIGHT_RANGE,
};
use carousel_protocol::config::{fnv1a64, RunConfig};
use carousel_protocol::FORMAT_VERSION;
use libfuzzer_sys::fuzz_target;

/// The scratch directory and the lab file's path in it.
fn lab_path() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        // The run configuration names the commit through `git describe`, a process per call:
        // with no git to find it says "unknown" at once, and the target runs ten times faster.
        std::env::set_var("PATH", "/nonexistent");
        let dir = std::env::temp_dir().join("carousel-fuzz-lab");
        std::fs::create_dir_all(&dir).expect("scratch directory");
        let mut elf = b"\x7fELF".to_vec();
        elf.resize(64, 0);
        let files: [(&str, &[u8]); 4] = [
            ("guest.elf", &elf),
            ("disk.img", &[0; 1024]),
            ("empty", &[]),
            ("notelf", b"#!/bin/sh\n"),
        ];
        for (name, bytes) in files {
            std::fs::write(dir.join(name), bytes).expect("scratch file");
        }
        dir.join("lab.toml")
    })
}

fn env(name: &str) -> Option<String> {
    let dir = lab_path().parent().expect("a directory");
    match name {
        "XV6_KERNEL" => Some(dir.join("guest.elf").display().to_string()),
        "XV6_FS" => Some(dir.join("disk.img").display().to_string()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn within(range: &std::ops::RangeInclusive<i64>, value: impl Into<i64>) -> bool {
    range.contains(&value.into())
}

fn valid_name(name: &str) -> bool {
    (1..=NAME_MAX).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        && !name.eq_ignore_ascii_case("carousel")
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = lab_path();
    let lab = match Lab::parse_with_env(path, text, &env) {
        Ok(lab) => lab,
        Err(error) => {
            let _ = error.to_string();
            if let Some(line) = error.line {
                assert!(line >= 1 && line <= text.lines().count() + 1, "line {line}");
            }
            return;
        }
    };
    check_lab(&lab, text);
    for (tsc_hz, persist_all) in [(lab.tsc_hz.unwrap_or(lab.ips), false), (0, true)] {
        let drive = lab.drive_manifest(std::path::Path::new("/run"), 7, persist_all);
        let manifest = drive.as_ref().map(|(manifest, _)| manifest);
        check_config(
            &lab,
            &lab.run_config(tsc_hz, manifest),
            tsc_hz,
            persist_all,
            manifest,
        );
    }
});

fn check_lab(lab: &Lab, text: &str) {
    assert_eq!(lab.hash, fnv1a64(text.as_bytes()));
    assert_eq!(lab.path, lab_path());
    assert!(
        VM_COUNT_RANGE.contains(&lab.vms.len()),
        "{} VMs",
        lab.vms.len()
    );
    assert!(
        within(&QUANTUM_US_RANGE, lab.quantum_us),
        "quantum {}",
        lab.quantum_us
    );
    assert!(within(&IPS_RANGE, lab.ips as i64), "ips {}", lab.ips);
    assert!(
        lab.tsc_hz.is_none_or(|hz| within(&TSC_HZ_RANGE, hz as i64)),
        "tsc {:?}",
        lab.tsc_hz
    );
    assert!(within(&TIMEOUT_S_RANGE, lab.timeout_s as i64));
    assert!(within(&INTERVAL_US_RANGE, lab.interval_us));
    assert!(within(&MEMORY_SAMPLE_MS_RANGE, lab.memory_sample_ms));
    assert!(within(&MERGE_SCAN_PAGES_RANGE, lab.merge_scan_pages));
    assert!(within(
        &COMPRESS_AFTER_SAMPLES_RANGE,
        lab.compression.after_samples
    ));
    assert!(within(
        &COMPRESS_SCAN_PAGES_RANGE,
        lab.compression.scan_pages
    ));
    assert!(within(&COMPRESS_POOL_MIB_RANGE, lab.compression.pool_mib));
    // Compression finds cold pages through the samples: never one without the other.
    assert!(lab.compression.after_samples == 0 || lab.memory_sample_ms > 0);
    assert!(lab.boot_stagger_ms <= 60_000);
    assert!(lab
        .idle_threshold_us
        .is_none_or(|us| within(&IDLE_THRESHOLD_US_RANGE, us)));
    assert!(lab
        .guest_memory_budget_mib
        .is_none_or(|mib| within(&MEMORY_MIB_RANGE, mib)));
    if let Some((pct, step_mib)) = lab.balloon_rule {
        assert!((1..=99).contains(&pct) && within(&MEMORY_MIB_RANGE, step_mib));
    }
    assert!(
        CPU_MODELS.contains(&lab.cpu_model.as_str()),
        "cpu {:?}",
        lab.cpu_model
    );
    assert!(within(&DISK_LATENCY_US_RANGE, lab.disk_model.latency_us));
    assert!(within(&DISK_MIB_PER_S_RANGE, lab.disk_model.mib_per_s));
    assert!(within(
        &DISK_ANTICIPATE_US_RANGE,
        lab.disk_model.anticipate_us
    ));

    for (index, vm) in lab.vms.iter().enumerate() {
        assert!(valid_name(&vm.name), "name {:?}", vm.name);
        assert!(
            lab.vms[..index].iter().all(|other| other.name != vm.name),
            "two VMs called {:?}",
            vm.name
        );
        assert!(
            within(&MEMORY_MIB_RANGE, vm.memory_mib),
            "memory {}",
            vm.memory_mib
        );
        assert!(within(&WEIGHT_RANGE, vm.weight), "weight {}", vm.weight);
        assert!(
            within(&WEIGHT_RANGE, vm.disk_weight),
            "disk weight {}",
            vm.disk_weight
        );
        assert!(within(&DISK_MIB_PER_S_RANGE, vm.disk_mib_per_s));
        assert!(vm.balloon_mib <= vm.memory_mib && vm.balloon_target_mib <= vm.memory_mib);
        assert!(
            vm.args.len() <= ARGS_MAX && !vm.args.contains('\0'),
            "args {:?}",
            vm.args
        );
        match &vm.disk {
            Some(Disk::Blank { kib }) => assert!(within(&BLANK_DISK_KIB_RANGE, *kib)),
            Some(Disk::File(file)) => assert!(file.is_file(), "disk {file:?}"),
            None => assert!(!vm.persist, "persist without a disk"),
        }
        match &vm.kernel {
            Kernel::Builtin(name) => assert!(BUILTIN_GUESTS.contains(&name.as_str())),
            Kernel::File(file) => {
                let bytes = std::fs::read(file).expect("the kernel file was checked");
                assert!(bytes.starts_with(b"\x7fELF"), "kernel {file:?} is not ELF");
            }
        }
        assert!(!vm.args.contains(INDEX), "args {:?}", vm.args);
        for step in &vm.script {
            assert!(within(&STEP_TIMEOUT_S_RANGE, step.timeout.as_secs() as i64));
            assert!(within(&STEP_REPEAT_RANGE, i64::from(step.repeat)));
            assert!(
                step.label.as_ref().is_none_or(|label| !label.is_empty()
                    && label.len() <= 64
                    && !label.contains(INDEX)
                    && !label.contains(',')),
                "label {:?}",
                step.label
            );
            assert!(
                !step.expect.as_str().contains(INDEX),
                "expect {}",
                step.expect
            );
            assert!(
                step.send.as_ref().is_none_or(|send| !send.contains(INDEX)),
                "send {:?}",
                step.send
            );
        }
    }
    let guests: u64 = lab.vms.iter().map(|vm| u64::from(vm.memory_mib)).sum();
    assert!(
        lab.lazy_memory || guests + HYPERVISOR_MIB <= MAX_TOTAL_MIB,
        "{guests} MiB of guests"
    );
    assert!(lab.guest_memory_mib() + HYPERVISOR_MIB <= MAX_TOTAL_MIB);
    for workload in &lab.sweep.workloads {
        assert!(!workload.vms.is_empty());
        assert!(workload.vms.windows(2).all(|pair| pair[0] < pair[1]));
        assert!(workload.vms.iter().all(|&vm| vm < lab.vms.len()));
    }
    let _ = (
        lab.stem(),
        lab.builtin_guests(),
        lab.has_scripts(),
        lab.uses_builtin_guests(),
    );
}

fn check_config(
    lab: &Lab,
    config: &RunConfig,
    tsc_hz: u64,
    persist_all: bool,
    manifest: Option<&carousel::image::drive::Manifest>,
) {
    assert_eq!(config.version, FORMAT_VERSION);
    assert_eq!(config.tsc_hz, tsc_hz);
    assert_eq!(config.quantum_us, lab.quantum_us);
    assert_eq!(config.lab_hash, lab.hash);
    assert_eq!(config.disk, lab.disk_model);
    assert_eq!(config.vms.len(), lab.vms.len());
    for (index, (vm, sent)) in lab.vms.iter().zip(&config.vms).enumerate() {
        assert_eq!(sent.name, vm.name);
        assert_eq!(sent.memory_bytes, u64::from(vm.memory_mib) << 20);
        assert_eq!(sent.weight, vm.weight);
        assert_eq!(sent.cap_pct, vm.cap_pct);
        assert_eq!(
            (sent.disk_weight, sent.disk_mib_per_s),
            (vm.disk_weight, vm.disk_mib_per_s)
        );
        assert_eq!(sent.args, vm.args);
        assert_eq!(sent.disk.is_some(), vm.disk.is_some());
        if let Some(manifest) = manifest {
            let entry = manifest.vms.iter().find(|entry| entry.name == vm.name);
            assert_eq!(entry.is_some(), vm.disk.is_some());
            if let Some(entry) = entry {
                assert_eq!(entry.persist, lab.persists(index, persist_all));
                // Every extent lies inside the drive, after the header, apart from the others.
                assert!(entry.extent.start >= carousel::image::drive::HEADER_SECTORS);
                assert!(entry.extent.start + entry.extent.sectors <= manifest.sectors);
                for other in manifest.vms.iter().filter(|other| other.name != vm.name) {
                    let (a, b) = (entry.extent, other.extent);
                    assert!(a.start + a.sectors <= b.start || b.start + b.sectors <= a.start);
                }
            }
        }
        let pages = sent.memory_bytes / 4096;
        assert!(sent.initial_balloon_pages <= pages && sent.balloon_target_pages <= pages);
    }
    let bytes = config.to_bytes().expect("a run configuration encodes");
    let decoded = RunConfig::from_bytes(&bytes).expect("its bytes decode");
    assert_eq!(&decoded, config, "the configuration does not round-trip");
    assert_eq!(decoded.to_bytes().expect("encodes again"), bytes);
}
