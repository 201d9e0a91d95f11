//! A running emulator process, which is always killed when its [`Emulator`] handle goes away.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};

/// A running emulator. Dropping it kills the process (SIGKILL: Bochs ignores SIGTERM) and
/// reaps it, so no path out of a run, panics included, leaves an emulator behind.
#[derive(Debug)]
pub struct Emulator {
    child: Child,
    exited: Option<ExitStatus>,
}

impl Emulator {
    /// Starts `program args` with stdin from /dev/null and stdout + stderr into `output`. The
    /// child gets its own process group, so a terminal's Ctrl-C reaches only this tool (which
    /// then kills the child), and is killed by the kernel should this process die first.
    pub fn spawn(
        program: &str,
        args: &[String],
        env: &[(&str, &str)],
        output: &Path,
    ) -> std::io::Result<Emulator> {
        use std::os::unix::process::CommandExt;

        let out = File::create(output)?;
        let err = out.try_clone()?;
        let mut command = Command::new(program);
        command
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .process_group(0);
        let die_with_parent = || {
            // SAFETY: PR_SET_PDEATHSIG with a valid signal number only sets a flag on the
            // calling process; no pointer is passed.
            let result = unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
            if result == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        };
        // SAFETY: `die_with_parent` runs in the forked child before exec; it only calls
        // prctl(2), which is async-signal-safe, and allocates nothing (the error path reads
        // errno into an io::Error without allocating).
        unsafe { command.pre_exec(die_with_parent) };
        let child = command.spawn()?;
        Ok(Emulator {
            child,
            exited: None,
        })
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The exit status, once the emulator has exited.
    pub fn try_exited(&mut self) -> Option<ExitStatus> {
        if self.exited.is_none() {
            self.exited = self.child.try_wait().ok().flatten();
        }
        self.exited
    }

    /// Kills the emulator (if it still runs) and waits for it.
    pub fn kill(&mut self) {
        if self.try_exited().is_none() {
            let _ = self.child.kill();
            self.exited = self.child.wait().ok();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emulator_is_killed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let emulator =
            Emulator::spawn("sleep", &["30".to_string()], &[], &dir.path().join("out")).unwrap();
        let pid = emulator.id();
        let start = std::time::Instant::now();
        drop(emulator);
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        // The process is gone (reaped), so its /proc entry is too.
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }
}
