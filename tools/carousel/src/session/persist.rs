//! Persisted disks: at the end of a run, however it ended (in order, timeout, Ctrl-C, the
//! hypervisor's panic, the emulator dying or killed), each persisting VM's extent of the shared
//! drive is copied back into its image ([`crate::image::drive::persist_run`]). The emulator is
//! gone by then, so the drive holds every sector a guest saw completed.

use std::path::Path;

use crate::image::drive::{self, Manifest};

/// Persists the persisting VMs of the run in `out` (none without a shared drive): one sentence
/// per persisting VM, and whether a copy failed.
pub fn persist_disks(out: &Path, manifest: Option<&Manifest>) -> (Vec<String>, bool) {
    if manifest.is_none_or(|manifest| manifest.vms.iter().all(|vm| !vm.persist)) {
        return (Vec::new(), false);
    }
    match drive::persist_run(out) {
        Ok(done) => done,
        Err(error) => (vec![format!("error: disks not persisted: {error}")], true),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::lab::Lab;

    #[test]
    fn persisting_vms_get_their_extent_back_and_the_others_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let image = dir.path().join("disk.img");
        fs::write(&image, vec![0x11; 4096]).unwrap();
        let other = dir.path().join("other.img");
        fs::write(&other, vec![0x22; 4096]).unwrap();
        let text = "[[vm]]\nname = \"a\"\nkernel = \"hello\"\nmemory_mib = 8\ndisk = \"disk.img\"\n\
                    persist = true\n\
                    [[vm]]\nname = \"b\"\nkernel = \"hello\"\nmemory_mib = 8\nblank_disk_kib = 1\n\
                    persist = true\n\
                    [[vm]]\nname = \"c\"\nkernel = \"hello\"\nmemory_mib = 8\ndisk = \"other.img\"\n";
        let lab = Lab::parse(&dir.path().join("lab.toml"), text).unwrap();
        let (manifest, sources) = lab.drive_manifest(&out, 7, false).unwrap();
        let drive_path = out.join(drive::DRIVE_FILE);
        drive::build(&drive_path, &manifest, &sources).unwrap();
        // The guests write: a its first sector, c its last.
        let mut bytes = fs::read(&drive_path).unwrap();
        let at = |vm: usize, lba: u64| ((manifest.vms[vm].extent.start + lba) * 512) as usize;
        bytes[at(0, 0)..at(0, 1)].fill(0xAA);
        bytes[at(2, 7)..at(2, 8)].fill(0xCC);
        fs::write(&drive_path, bytes).unwrap();

        let (lines, failed) = persist_disks(&out, Some(&manifest));
        assert!(!failed, "{lines:?}");
        assert_eq!(lines.len(), 2, "{lines:?}");
        let mut expected = vec![0x11; 4096];
        expected[..512].fill(0xAA);
        assert_eq!(fs::read(&image).unwrap(), expected);
        let blank = fs::read(out.join("b.disk")).unwrap();
        assert_eq!(blank.len(), 1024);
        assert_eq!(&blank[..8], crate::image::disk::BLANK_MAGIC);
        assert_eq!(
            fs::read(&other).unwrap(),
            vec![0x22; 4096],
            "c does not persist"
        );

        // --persist makes c persist too.
        let (manifest, _) = lab.drive_manifest(&out, 7, true).unwrap();
        assert!(manifest.vms.iter().all(|vm| vm.persist));
        assert_eq!(persist_disks(&out, None), (Vec::new(), false));
    }
}
