//! Persisted disks: the sectors each persisting VM wrote, written back into its image once the
//! run ended in order.

use std::path::Path;

use carousel_trace::model::Model;

use crate::lab::Lab;

/// Writes the sectors each persisting VM wrote back into its image (the lab's `disk` file, or
/// the blank image in the run directory). Only after a RunEnd: the hypervisor sends the
/// sectors just before it, so without it the set may be incomplete. Returns one sentence per
/// persisting VM, and whether a write-back failed.
pub fn persist_disks(
    lab: &Lab,
    out: &Path,
    persist_all: bool,
    model: &Model,
) -> (Vec<String>, bool) {
    let mut sectors = model.written.clone();
    let mut lines = Vec::new();
    let mut failed = false;
    for (id, vm) in lab.vms.iter().enumerate() {
        let Some(disk) = vm.disk.as_ref().filter(|_| lab.persists(id, persist_all)) else {
            if sectors.contains_key(&(id as u16)) {
                lines.push(format!(
                    "warning: vm {}: DiskSector records arrived but the VM does not persist; \
                     ignored",
                    vm.name
                ));
            }
            continue;
        };
        let path = disk.path(out, &vm.name);
        let written = sectors.remove(&(id as u16)).unwrap_or_default();
        if !model.verdict.run_end_seen() {
            lines.push(format!(
                "vm {}: not persisted: the run did not end in order (no RunEnd record; the \
                 hypervisor sends written sectors only then); {} unchanged",
                vm.name,
                path.display()
            ));
        } else if written.is_empty() {
            lines.push(format!(
                "vm {}: wrote no sectors; {} unchanged",
                vm.name,
                path.display()
            ));
        } else {
            match crate::image::disk::persist(&path, &written) {
                Ok(target) => lines.push(format!(
                    "vm {}: persisted {} sector{} to {}",
                    vm.name,
                    written.len(),
                    if written.len() == 1 { "" } else { "s" },
                    target.display()
                )),
                Err(error) => {
                    failed = true;
                    lines.push(format!("error: vm {}: not persisted: {error}", vm.name));
                }
            }
        }
    }
    (lines, failed)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use carousel_protocol::record::Record;
    use carousel_trace::model::{Keep, ModelBuilder};

    use super::*;

    fn persist_case(dir: &Path, persist: bool, records: Vec<Record>) -> (Lab, Model) {
        fs::write(dir.join("disk.img"), crate::image::disk::blank_image(4)).unwrap();
        let text = format!(
            "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\ndisk = \"disk.img\"\n\
             persist = {persist}\n\
             [[vm]]\nname = \"b\"\nkernel = \"hello\"\nmemory_mib = 8\nblank_disk_kib = 1\n\
             persist = true\n"
        );
        let lab = Lab::parse(&dir.join("lab.toml"), &text).unwrap();
        let mut received = ModelBuilder::new(Keep::Totals);
        for record in &records {
            received.add(record);
        }
        (lab, received.finish())
    }

    fn sector(vm: u16, lba: u32, fill: u8) -> Record {
        Record::DiskSector {
            vm,
            lba,
            data: vec![fill; crate::image::disk::SECTOR_BYTES],
        }
    }

    #[test]
    fn persisted_sectors_land_in_the_lab_disk_only_after_run_end() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let image = dir.path().join("disk.img");

        // No RunEnd: nothing is written, and the lines say why.
        let (lab, received) = persist_case(dir.path(), true, vec![sector(0, 7, 0xEE)]);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(!failed);
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert!(lines[0].contains("not persisted") && lines[0].contains("RunEnd"));
        assert_eq!(
            fs::read(&image).unwrap(),
            crate::image::disk::blank_image(4)
        );

        // With RunEnd: a's sector 7 changes; b wrote nothing.
        let records = vec![sector(0, 7, 0xEE), Record::RunEnd { tsc: 1 }];
        let (lab, received) = persist_case(dir.path(), true, records);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(!failed, "{lines:?}");
        assert!(
            lines[0].starts_with("vm a: persisted 1 sector to "),
            "{lines:?}"
        );
        assert_eq!(
            lines[1],
            format!(
                "vm b: wrote no sectors; {} unchanged",
                out.join("b.disk").display()
            )
        );
        let mut expected = crate::image::disk::blank_image(4);
        expected[7 * 512..8 * 512].fill(0xEE);
        assert_eq!(fs::read(&image).unwrap(), expected);
    }

    #[test]
    fn without_persist_the_lab_disk_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let records = vec![sector(0, 1, 0x11), Record::RunEnd { tsc: 1 }];
        let (lab, received) = persist_case(dir.path(), false, records);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(!failed);
        assert!(lines[0].contains("does not persist"), "{lines:?}");
        assert_eq!(
            fs::read(dir.path().join("disk.img")).unwrap(),
            crate::image::disk::blank_image(4)
        );
        // --persist makes it persist.
        let (lines, _) = persist_disks(&lab, &out, true, &received);
        assert!(
            lines[0].starts_with("vm a: persisted 1 sector"),
            "{lines:?}"
        );
    }

    #[test]
    fn a_failed_write_back_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let records = vec![sector(0, 99, 0x11), Record::RunEnd { tsc: 1 }];
        let (lab, received) = persist_case(dir.path(), true, records);
        let (lines, failed) = persist_disks(&lab, &out, false, &received);
        assert!(failed);
        assert!(
            lines[0].starts_with("error: vm a: not persisted"),
            "{lines:?}"
        );
    }
}
