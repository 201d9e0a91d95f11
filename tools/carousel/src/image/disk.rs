//! Disk images on the host side: fresh blank images (`blank_disk_kib`), and writing back the
//! sectors a VM wrote (`persist`), which the hypervisor sends as `DiskSector` records at the end
//! of the run.
//!
//! A write-back never leaves a half-written image: the new image is a copy made next to the old
//! one, changed, flushed, given the old one's permissions, and renamed over it.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

/// Bytes in a sector.
pub const SECTOR_BYTES: usize = 512;
/// What sector 0 of a blank image starts with (devcheck's `magic_lba` default looks for it).
pub const BLANK_MAGIC: &[u8; 8] = b"CAROUSEL";

/// A blank image of `kib` KiB: [`BLANK_MAGIC`] at the start of sector 0, zeros elsewhere.
pub fn blank_image(kib: u32) -> Vec<u8> {
    let mut image = vec![0u8; kib as usize * 1024];
    let magic = BLANK_MAGIC.len().min(image.len());
    image[..magic].copy_from_slice(&BLANK_MAGIC[..magic]);
    image
}

/// Why a write-back did not happen; the image is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum PersistError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("{path}: sector {lba} lies beyond the image's {sectors} sectors; nothing was written")]
    OutOfRange {
        path: PathBuf,
        lba: u32,
        sectors: u64,
    },
    #[error(
        "{path}: sector {lba} arrived with {bytes} bytes, not {SECTOR_BYTES}; nothing was written"
    )]
    BadLength {
        path: PathBuf,
        lba: u32,
        bytes: usize,
    },
}

/// Writes `sectors` (LBA to 512 bytes) into the image at `path` through a renamed copy; returns
/// the path written (symbolic links are followed, so the link stays a link).
pub fn persist(path: &Path, sectors: &BTreeMap<u32, Vec<u8>>) -> Result<PathBuf, PersistError> {
    let io_error = |path: &Path, what: &'static str| {
        let path = path.to_path_buf();
        move |source| PersistError::Io { path, what, source }
    };
    let target = fs::canonicalize(path).map_err(io_error(path, "cannot resolve the path"))?;
    let metadata = fs::metadata(&target).map_err(io_error(&target, "cannot read its metadata"))?;
    let image_sectors = metadata.len() / SECTOR_BYTES as u64;
    for (&lba, data) in sectors {
        if data.len() != SECTOR_BYTES {
            return Err(PersistError::BadLength {
                path: target,
                lba,
                bytes: data.len(),
            });
        }
        if u64::from(lba) >= image_sectors {
            return Err(PersistError::OutOfRange {
                path: target,
                lba,
                sectors: image_sectors,
            });
        }
    }
    let directory = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut copy = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".carousel-tmp")
        .tempfile_in(directory)
        .map_err(io_error(
            directory,
            "cannot create a temporary copy in its directory",
        ))?;
    let mut original = File::open(&target).map_err(io_error(&target, "cannot open it"))?;
    io::copy(&mut original, copy.as_file_mut()).map_err(io_error(&target, "cannot copy it"))?;
    for (&lba, data) in sectors {
        let file = copy.as_file_mut();
        file.seek(SeekFrom::Start(u64::from(lba) * SECTOR_BYTES as u64))
            .and_then(|_| file.write_all(data))
            .map_err(io_error(copy.path(), "cannot write the copy"))?;
    }
    copy.as_file()
        .sync_all()
        .map_err(io_error(copy.path(), "cannot flush the copy"))?;
    fs::set_permissions(copy.path(), metadata.permissions())
        .map_err(io_error(copy.path(), "cannot set the copy's permissions"))?;
    copy.persist(&target).map_err(|error| PersistError::Io {
        path: target.clone(),
        what: "cannot rename the copy over it",
        source: error.error,
    })?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn blank_images_carry_the_magic() {
        let image = blank_image(32);
        assert_eq!(image.len(), 32 * 1024);
        assert_eq!(&image[..8], BLANK_MAGIC);
        assert!(image[8..].iter().all(|&byte| byte == 0));
    }

    fn sector(fill: u8) -> Vec<u8> {
        vec![fill; SECTOR_BYTES]
    }

    #[test]
    fn persist_changes_exactly_the_given_sectors() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        fs::write(&path, blank_image(4)).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        let sectors = BTreeMap::from([(1, sector(0xAA)), (7, sector(0x55))]);
        assert_eq!(
            persist(&path, &sectors).unwrap(),
            fs::canonicalize(&path).unwrap()
        );
        let image = fs::read(&path).unwrap();
        assert_eq!(image.len(), 4096);
        for (index, chunk) in image.chunks(SECTOR_BYTES).enumerate() {
            match index {
                0 => assert_eq!(chunk, blank_image(4)[..SECTOR_BYTES].to_vec()),
                1 => assert_eq!(chunk, sector(0xAA)),
                7 => assert_eq!(chunk, sector(0x55)),
                _ => assert_eq!(chunk, sector(0)),
            }
        }
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        // No temporary copy is left behind.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn persist_follows_symbolic_links() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real.img");
        let link = dir.path().join("link.img");
        fs::write(&real, blank_image(1)).unwrap();
        std::os::unix::fs::symlink(&real, &link).unwrap();
        persist(&link, &BTreeMap::from([(1, sector(1))])).unwrap();
        assert!(fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        assert_eq!(fs::read(&real).unwrap()[SECTOR_BYTES..], sector(1)[..]);
    }

    #[test]
    fn bad_sectors_leave_the_image_alone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        fs::write(&path, blank_image(1)).unwrap();
        let error = persist(&path, &BTreeMap::from([(0, sector(9)), (2, sector(9))])).unwrap_err();
        assert!(
            matches!(
                error,
                PersistError::OutOfRange {
                    lba: 2,
                    sectors: 2,
                    ..
                }
            ),
            "{error}"
        );
        let error = persist(&path, &BTreeMap::from([(0, vec![1; 10])])).unwrap_err();
        assert!(
            matches!(error, PersistError::BadLength { bytes: 10, .. }),
            "{error}"
        );
        assert_eq!(fs::read(&path).unwrap(), blank_image(1));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
