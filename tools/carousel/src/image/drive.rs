//! The run's shared drive: one raw image in the run directory (`drive.img`) that the emulator
//! gets as an extra ATA disk, holding every VM's disk as its own extent, and the manifest
//! (`disks.json`) that says where each extent lies and which image it persists into.
//!
//! Layout: sector 0 names the run ([`DRIVE_MAGIC`] and the run id); the first MiB is the
//! header; each VM's extent starts on a MiB boundary after it. The file is sparse: only the
//! images' non-zero MiBs are written, so a blank disk costs a sector. Its length is a whole
//! number of cylinders of 16 heads × 63 sectors (Bochs takes the geometry from the size).
//!
//! Persisting a VM (`persist = true`, `carousel persist RUN_DIR`) copies its extent into a new
//! file beside the image, flushes it, gives it the old one's permissions and renames it over
//! the image: the image is either the old one or the new one, never half of each.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use carousel_protocol::config::{DriveConfig, DRIVE_MAGIC};
use serde::{Deserialize, Serialize};

use super::disk::{BLANK_MAGIC, SECTOR_BYTES};

/// The drive image's name in the run directory.
pub const DRIVE_FILE: &str = "drive.img";
/// The manifest's name in the run directory.
pub const MANIFEST_FILE: &str = "disks.json";
/// Sectors in one MiB: extents start on MiB boundaries, after a one-MiB header.
pub const ALIGN_SECTORS: u64 = 2048;
/// The header before the first extent.
pub const HEADER_SECTORS: u64 = ALIGN_SECTORS;
/// Sectors in one cylinder of 16 heads × 63 sectors.
pub const CYLINDER_SECTORS: u64 = 16 * 63;
/// Bytes copied at a time; a chunk of zeros is left a hole.
const CHUNK_BYTES: usize = 1 << 20;

/// Drive sectors a disk of `bytes` takes, up to the next extent's start.
pub fn extent_span(bytes: u64) -> u64 {
    bytes
        .div_ceil(SECTOR_BYTES as u64)
        .div_ceil(ALIGN_SECTORS)
        .max(1)
        * ALIGN_SECTORS
}

/// One VM's extent: drive sectors [start, start + sectors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extent {
    pub start: u64,
    pub sectors: u64,
}

/// What fills an extent at the start of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The lab's image file (only read).
    File(PathBuf),
    /// A blank disk: [`BLANK_MAGIC`], then zeros.
    Blank,
}

/// One VM in the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestVm {
    pub name: String,
    pub extent: Extent,
    /// Where the extent is copied at the end when `persist`: the lab's image, or the run
    /// directory's `NAME.disk` for a blank disk.
    pub image: PathBuf,
    pub persist: bool,
}

/// Where every VM's disk lies on the drive, and where each goes back to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub run_id: u64,
    /// The drive's size in sectors.
    pub sectors: u64,
    /// One entry per VM with a disk.
    pub vms: Vec<ManifestVm>,
}

/// Places disks of the given sizes (bytes; `None`: no disk) one after the other; the extents
/// in VM order.
pub fn plan(sizes: &[Option<u64>]) -> (Vec<Option<Extent>>, u64) {
    let mut next = HEADER_SECTORS;
    let extents = sizes
        .iter()
        .map(|size| {
            size.map(|bytes| {
                let extent = Extent {
                    start: next,
                    sectors: bytes / SECTOR_BYTES as u64,
                };
                next += extent_span(bytes);
                extent
            })
        })
        .collect();
    (extents, next.div_ceil(CYLINDER_SECTORS) * CYLINDER_SECTORS)
}

/// Why the drive could not be made, or an extent not persisted.
#[derive(Debug, thiserror::Error)]
pub enum DriveError {
    #[error("{path}: {what}: {source}")]
    Io {
        path: PathBuf,
        what: &'static str,
        source: io::Error,
    },
    #[error("{path}: it is {found} bytes now, {expected} when the lab was read")]
    Changed {
        path: PathBuf,
        found: u64,
        expected: u64,
    },
    #[error("{path}: not a manifest of a run's disks: {error}")]
    Manifest { path: PathBuf, error: String },
    #[error("{path}: the drive ends before vm {vm}'s extent does; nothing was written")]
    ShortDrive { path: PathBuf, vm: String },
}

fn io_error(path: &Path, what: &'static str) -> impl FnOnce(io::Error) -> DriveError {
    let path = path.to_path_buf();
    move |source| DriveError::Io { path, what, source }
}

/// Writes the drive at `path` (sparse) and the manifest beside it: sector 0 names the run, each
/// extent in `sources` holds what its source says.
pub fn build(
    path: &Path,
    manifest: &Manifest,
    sources: &[(Extent, Source)],
) -> Result<(), DriveError> {
    let mut drive = File::create(path).map_err(io_error(path, "cannot create it"))?;
    drive
        .set_len(manifest.sectors * SECTOR_BYTES as u64)
        .map_err(io_error(path, "cannot size it"))?;
    let mut header = [0u8; SECTOR_BYTES];
    header[..16].copy_from_slice(DRIVE_MAGIC);
    header[16..24].copy_from_slice(&manifest.run_id.to_le_bytes());
    drive
        .write_all(&header)
        .map_err(io_error(path, "cannot write its header"))?;
    for (extent, source) in sources {
        let at = extent.start * SECTOR_BYTES as u64;
        match source {
            Source::Blank => {
                drive
                    .seek(SeekFrom::Start(at))
                    .and_then(|_| drive.write_all(BLANK_MAGIC))
                    .map_err(io_error(path, "cannot write a blank disk"))?;
            }
            Source::File(image) => {
                let expected = extent.sectors * SECTOR_BYTES as u64;
                let mut file = File::open(image).map_err(io_error(image, "cannot read it"))?;
                let found = file
                    .metadata()
                    .map_err(io_error(image, "cannot read its size"))?
                    .len();
                if found != expected {
                    return Err(DriveError::Changed {
                        path: image.clone(),
                        found,
                        expected,
                    });
                }
                copy_sparse(&mut file, image, &mut drive, path, at, expected)?;
            }
        }
    }
    drive
        .sync_all()
        .map_err(io_error(path, "cannot flush it"))?;
    let text = serde_json::to_string_pretty(manifest).expect("a manifest always serialises");
    let manifest_path = path.with_file_name(MANIFEST_FILE);
    fs::write(&manifest_path, text).map_err(io_error(&manifest_path, "cannot write it"))?;
    Ok(())
}

/// Copies `len` bytes from `from` (at its current position) to `to` at `at`, leaving chunks of
/// zeros as holes (the target reads zeros there already).
fn copy_sparse(
    from: &mut File,
    from_path: &Path,
    to: &mut File,
    to_path: &Path,
    at: u64,
    len: u64,
) -> Result<(), DriveError> {
    let mut chunk = vec![0u8; CHUNK_BYTES];
    let mut done = 0u64;
    while done < len {
        let take = (len - done).min(CHUNK_BYTES as u64) as usize;
        from.read_exact(&mut chunk[..take])
            .map_err(io_error(from_path, "cannot read it"))?;
        if chunk[..take].iter().any(|&byte| byte != 0) {
            to.seek(SeekFrom::Start(at + done))
                .and_then(|_| to.write_all(&chunk[..take]))
                .map_err(io_error(to_path, "cannot write it"))?;
        }
        done += take as u64;
    }
    Ok(())
}

/// Reads the manifest of the run directory `out`.
pub fn read_manifest(out: &Path) -> Result<Manifest, DriveError> {
    let path = out.join(MANIFEST_FILE);
    let text = fs::read_to_string(&path).map_err(io_error(&path, "cannot read it"))?;
    serde_json::from_str(&text).map_err(|error| DriveError::Manifest {
        path,
        error: error.to_string(),
    })
}

/// Copies `vm`'s extent of the drive at `drive` into its image, atomically: a new file beside
/// the image, flushed, with the old one's permissions, renamed over it. Returns the path
/// written (symbolic links are followed, so a link stays a link).
pub fn persist_extent(drive: &Path, vm: &ManifestVm) -> Result<PathBuf, DriveError> {
    let target = match fs::canonicalize(&vm.image) {
        Ok(target) => target,
        // A blank disk's image does not exist before its first persist.
        Err(error) if error.kind() == io::ErrorKind::NotFound => vm.image.clone(),
        Err(error) => return Err(io_error(&vm.image, "cannot resolve the path")(error)),
    };
    let permissions = fs::metadata(&target).ok().map(|meta| meta.permissions());
    let len = vm.extent.sectors * SECTOR_BYTES as u64;
    let mut from = File::open(drive).map_err(io_error(drive, "cannot read it"))?;
    let drive_len = from
        .metadata()
        .map_err(io_error(drive, "cannot read its size"))?
        .len();
    if (vm.extent.start + vm.extent.sectors) * SECTOR_BYTES as u64 > drive_len {
        return Err(DriveError::ShortDrive {
            path: drive.to_path_buf(),
            vm: vm.name.clone(),
        });
    }
    from.seek(SeekFrom::Start(vm.extent.start * SECTOR_BYTES as u64))
        .map_err(io_error(drive, "cannot seek in it"))?;
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
    let copy_path = copy.path().to_path_buf();
    copy.as_file()
        .set_len(len)
        .map_err(io_error(&copy_path, "cannot size the copy"))?;
    copy_sparse(&mut from, drive, copy.as_file_mut(), &copy_path, 0, len)?;
    copy.as_file()
        .sync_all()
        .map_err(io_error(&copy_path, "cannot flush the copy"))?;
    // A fresh image (a blank disk's first persist) gets rw-r--r--, not the temporary's rw-------.
    let permissions = permissions.unwrap_or_else(|| {
        use std::os::unix::fs::PermissionsExt;
        fs::Permissions::from_mode(0o644)
    });
    fs::set_permissions(&copy_path, permissions)
        .map_err(io_error(&copy_path, "cannot set the copy's permissions"))?;
    copy.persist(&target).map_err(|error| DriveError::Io {
        path: target.clone(),
        what: "cannot rename the copy over it",
        source: error.error,
    })?;
    // The rename itself is durable once the directory is flushed.
    if let Ok(directory) = OpenOptions::new().read(true).open(directory) {
        let _ = directory.sync_all();
    }
    Ok(target)
}

/// Persists every persisting VM of the run directory `out` from its drive; one sentence per
/// VM with a disk, and whether a copy failed (that image is unchanged). Without persist a VM's
/// image is never written.
pub fn persist_run(out: &Path) -> Result<(Vec<String>, bool), DriveError> {
    let manifest = read_manifest(out)?;
    let drive = out.join(DRIVE_FILE);
    let mut lines = Vec::new();
    let mut failed = false;
    for vm in &manifest.vms {
        if !vm.persist {
            continue;
        }
        match persist_extent(&drive, vm) {
            Ok(target) => lines.push(format!(
                "vm {}: persisted its {} KiB disk to {}",
                vm.name,
                vm.extent.sectors * SECTOR_BYTES as u64 / 1024,
                target.display()
            )),
            Err(error) => {
                failed = true;
                lines.push(format!("error: vm {}: not persisted: {error}", vm.name));
            }
        }
    }
    Ok((lines, failed))
}

/// The hypervisor's view of the drive.
pub fn drive_config(manifest: &Manifest) -> DriveConfig {
    DriveConfig {
        run_id: manifest.run_id,
        sectors: manifest.sectors,
    }
}

/// A fresh id for a run's drive: the clock's nanoseconds and the process id.
pub fn fresh_run_id() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |time| time.as_nanos() as u64);
    nanos ^ u64::from(std::process::id()).rotate_left(48)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    use super::*;

    #[test]
    fn extents_start_on_mib_boundaries_after_the_header() {
        let (extents, sectors) = plan(&[Some(512), None, Some(3 << 20), Some(1 << 31)]);
        assert_eq!(
            extents,
            [
                Some(Extent {
                    start: 2048,
                    sectors: 1
                }),
                None,
                Some(Extent {
                    start: 4096,
                    sectors: 6144
                }),
                Some(Extent {
                    start: 10240,
                    sectors: 1 << 22
                }),
            ]
        );
        assert!(sectors >= 10240 + (1 << 22));
        assert_eq!(sectors % CYLINDER_SECTORS, 0);
        assert!(sectors - (10240 + (1 << 22)) < CYLINDER_SECTORS);
    }

    fn manifest_for(dir: &Path, sizes: &[u64], persist: bool) -> (Manifest, Vec<Extent>) {
        let (extents, sectors) = plan(&sizes.iter().map(|&size| Some(size)).collect::<Vec<_>>());
        let extents: Vec<Extent> = extents.into_iter().flatten().collect();
        let vms = extents
            .iter()
            .enumerate()
            .map(|(index, &extent)| ManifestVm {
                name: format!("vm{index}"),
                extent,
                image: dir.join(format!("vm{index}.img")),
                persist,
            })
            .collect();
        (
            Manifest {
                run_id: 0x1234,
                sectors,
                vms,
            },
            extents,
        )
    }

    #[test]
    fn the_drive_holds_each_image_in_its_extent_and_stays_sparse() {
        let dir = tempfile::tempdir().unwrap();
        let image = dir.path().join("vm0.img");
        let mut bytes = vec![0u8; 3 << 20];
        bytes[0] = 1;
        bytes[(3 << 20) - 1] = 2;
        fs::write(&image, &bytes).unwrap();
        let (manifest, extents) = manifest_for(dir.path(), &[3 << 20, 1 << 30], true);
        let drive = dir.path().join(DRIVE_FILE);
        build(
            &drive,
            &manifest,
            &[
                (extents[0], Source::File(image.clone())),
                (extents[1], Source::Blank),
            ],
        )
        .unwrap();
        let data = fs::read(&drive).unwrap();
        assert_eq!(&data[..16], DRIVE_MAGIC);
        assert_eq!(&data[16..24], &0x1234u64.to_le_bytes());
        let at = |sector: u64| sector as usize * SECTOR_BYTES;
        assert_eq!(
            &data[at(extents[0].start)..at(extents[0].start) + (3 << 20)],
            &bytes[..]
        );
        assert_eq!(
            &data[at(extents[1].start)..at(extents[1].start) + 8],
            BLANK_MAGIC
        );
        // A GiB of blank disk and 3 MiB of mostly zeros take a few MiB at most.
        let allocated = fs::metadata(&drive).unwrap().blocks() * 512;
        assert!(allocated < 8 << 20, "{allocated} bytes allocated");
        assert_eq!(read_manifest(dir.path()).unwrap(), manifest);

        // An image that changed size since the lab was read is refused.
        fs::write(&image, [0u8; 512]).unwrap();
        let error = build(&drive, &manifest, &[(extents[0], Source::File(image))]).unwrap_err();
        assert!(matches!(error, DriveError::Changed { .. }), "{error}");
    }

    #[test]
    fn persist_copies_exactly_the_extent_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let (manifest, extents) = manifest_for(dir.path(), &[8192, 4096], true);
        for vm in &manifest.vms {
            fs::write(
                &vm.image,
                vec![0x11; vm.extent.sectors as usize * SECTOR_BYTES],
            )
            .unwrap();
        }
        fs::set_permissions(&manifest.vms[0].image, fs::Permissions::from_mode(0o640)).unwrap();
        let drive = dir.path().join(DRIVE_FILE);
        let sources: Vec<(Extent, Source)> = manifest
            .vms
            .iter()
            .map(|vm| (vm.extent, Source::File(vm.image.clone())))
            .collect();
        build(&drive, &manifest, &sources).unwrap();
        // The guest of vm0 writes its last sector; vm1's first sector sits right after
        // vm0's extent on the drive (beyond a MiB of padding) and must not leak in.
        let mut file = OpenOptions::new().write(true).open(&drive).unwrap();
        let last = (extents[0].start + extents[0].sectors - 1) * SECTOR_BYTES as u64;
        file.seek(SeekFrom::Start(last)).unwrap();
        file.write_all(&[0xAB; SECTOR_BYTES]).unwrap();
        drop(file);
        let (lines, failed) = persist_run(dir.path()).unwrap();
        assert!(!failed, "{lines:?}");
        assert_eq!(lines.len(), 2);
        let image = fs::read(&manifest.vms[0].image).unwrap();
        assert_eq!(image.len(), 8192);
        assert_eq!(&image[..8192 - 512], &[0x11; 8192 - 512][..]);
        assert_eq!(&image[8192 - 512..], &[0xAB; 512][..]);
        assert_eq!(fs::read(&manifest.vms[1].image).unwrap(), vec![0x11; 4096]);
        let mode = fs::metadata(&manifest.vms[0].image)
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o640);
        let leftovers = fs::read_dir(dir.path())
            .unwrap()
            .filter(|entry| {
                entry
                    .as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".carousel-tmp")
            })
            .count();
        assert_eq!(leftovers, 0);
    }

    #[test]
    fn without_persist_no_image_is_written_and_a_short_drive_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (mut manifest, extents) = manifest_for(dir.path(), &[4096], false);
        fs::write(&manifest.vms[0].image, vec![0x22; 4096]).unwrap();
        let drive = dir.path().join(DRIVE_FILE);
        let sources = [(extents[0], Source::Blank)];
        build(&drive, &manifest, &sources).unwrap();
        let (lines, failed) = persist_run(dir.path()).unwrap();
        assert!(lines.is_empty() && !failed);
        assert_eq!(fs::read(&manifest.vms[0].image).unwrap(), vec![0x22; 4096]);

        manifest.vms[0].persist = true;
        manifest.vms[0].extent.start = manifest.sectors;
        let error = persist_extent(&drive, &manifest.vms[0]).unwrap_err();
        assert!(matches!(error, DriveError::ShortDrive { .. }), "{error}");
        assert_eq!(fs::read(&manifest.vms[0].image).unwrap(), vec![0x22; 4096]);
        assert!(matches!(
            read_manifest(&dir.path().join("nowhere")),
            Err(DriveError::Io { .. })
        ));
    }
}
