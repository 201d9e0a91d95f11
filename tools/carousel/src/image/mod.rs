//! The boot image of a run: the hypervisor and guests built by cargo ([`build`]), the GRUB ISO
//! that carries them, the run configuration and every VM's disk ([`iso`]), and the disk images
//! on the host side, blank ones and persisted writes ([`disk`]). Cargo and grub-mkrescue run
//! through [`child`], which kills them at Ctrl-C.

pub mod build;
pub mod child;
pub mod disk;
pub mod iso;
