//! The boot image of a run: the hypervisor and guests built by cargo ([`build`]), the GRUB ISO
//! that carries them and the run configuration ([`iso`]), the run's shared drive holding every
//! VM's disk and persisting it ([`drive`]), and blank images ([`disk`]). Cargo and grub-mkrescue run
//! through [`child`], which kills them at Ctrl-C.

pub mod build;
pub mod child;
pub mod disk;
pub mod drive;
pub mod iso;
