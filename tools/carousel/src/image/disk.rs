//! Disk images on the host side: the sector size, and fresh blank images (`blank_disk_kib`)
//! for `disk_backend = "memory"`. The shared drive and persisting are in [`super::drive`].

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blank_images_carry_the_magic() {
        let image = blank_image(32);
        assert_eq!(image.len(), 32 * 1024);
        assert_eq!(&image[..8], BLANK_MAGIC);
        assert!(image[8..].iter().all(|&byte| byte == 0));
    }
}
