//! `carousel persist RUN_DIR`: copies each persisting VM's extent of a run's shared drive back
//! into its image, as `carousel run` does at the end of every run. For a run whose tool was
//! killed before it could: the run directory's `disks.json` says which VMs persist and where,
//! its `drive.img` holds what the guests wrote.

use std::path::Path;

use crate::image::drive;
use crate::session::{EXIT_SETUP, EXIT_USAGE};

/// Runs the command; the exit code: 0 every persisting VM persisted, 2 not a run directory
/// with a shared drive, 5 a copy failed (that image is unchanged).
pub fn persist_command(run_dir: &Path) -> i32 {
    match drive::persist_run(run_dir) {
        Err(error) => {
            eprintln!(
                "carousel: {error} (is {} the run directory of a run with disks on the shared \
                 drive?)",
                run_dir.display()
            );
            EXIT_USAGE
        }
        Ok((lines, failed)) => {
            if lines.is_empty() {
                println!("no VM of this run persists its disk; nothing written");
            }
            for line in &lines {
                println!("{line}");
            }
            if failed {
                EXIT_SETUP
            } else {
                0
            }
        }
    }
}
