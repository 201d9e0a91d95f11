//! A build tool run to its end unless Ctrl-C comes first: cargo and grub-mkrescue run in their
//! own process group, their output collected; when the flag is set the whole group is killed
//! (cargo's rustc children with it) and the caller hears [`Stopped::Interrupted`] within one
//! [`POLL`].

use std::io::Read;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// How often the flag and the child are looked at.
pub const POLL: Duration = Duration::from_millis(20);

/// What a finished child left.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// Why there is no [`Finished`].
#[derive(Debug)]
pub enum Stopped {
    /// It could not start.
    Spawn(std::io::Error),
    /// Ctrl-C: it was killed.
    Interrupted,
}

/// Runs `command` (stdin closed, stdout and stderr collected) until it exits, or until
/// `interrupted` is set: then its process group is killed and reaped.
pub fn run(command: &mut Command, interrupted: &AtomicBool) -> Result<Finished, Stopped> {
    use std::os::unix::process::CommandExt;

    if interrupted.load(Ordering::SeqCst) {
        return Err(Stopped::Interrupted);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own group: the whole build, rustc included, can be killed at once.
        .process_group(0)
        .spawn()
        .map_err(Stopped::Spawn)?;
    let stdout = collect(child.stdout.take());
    let stderr = collect(child.stderr.take());
    let status = loop {
        if interrupted.load(Ordering::SeqCst) {
            kill_group(&mut child);
            return Err(Stopped::Interrupted);
        }
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => std::thread::sleep(POLL),
            Err(error) => {
                kill_group(&mut child);
                return Err(Stopped::Spawn(error));
            }
        }
    };
    Ok(Finished {
        status,
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    })
}

/// A thread reading `pipe` to its end.
fn collect(pipe: Option<impl Read + Send + 'static>) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Kills `child`'s process group (it leads it) and reaps the child.
fn kill_group(child: &mut Child) {
    if let Ok(group) = libc::pid_t::try_from(child.id()) {
        // SAFETY: kill(2) with a negative pid signals that process group and touches no
        // memory; the group is the child's own (process_group(0)), and the child is not yet
        // reaped, so its id names no other process.
        unsafe { libc::kill(-group, libc::SIGKILL) };
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    #[test]
    fn a_child_runs_to_its_end_with_its_output() {
        let finished = run(
            Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
            &AtomicBool::new(false),
        )
        .unwrap();
        assert_eq!(finished.status.code(), Some(3));
        assert_eq!(finished.stdout, b"out\n");
        assert_eq!(finished.stderr, b"err\n");
    }

    #[test]
    fn ctrl_c_kills_the_child_and_its_children_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("grandchild");
        let interrupted = AtomicBool::new(false);
        let start = Instant::now();
        std::thread::scope(|scope| {
            scope.spawn(|| {
                // The grandchild writes its pid, then the flag is set.
                let written =
                    || std::fs::read_to_string(&pid_file).is_ok_and(|pid| pid.ends_with('\n'));
                while !written() && start.elapsed() < Duration::from_secs(10) {
                    std::thread::sleep(Duration::from_millis(10));
                }
                interrupted.store(true, Ordering::SeqCst);
            });
            let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
            let result = run(Command::new("sh").args(["-c", &script]), &interrupted);
            assert!(matches!(result, Err(Stopped::Interrupted)));
        });
        assert!(start.elapsed() < Duration::from_secs(5));
        let grandchild = std::fs::read_to_string(&pid_file).unwrap();
        // Killed with its group: gone, or a zombie until init reaps it (SIGKILL takes a moment).
        let dead = || {
            std::fs::read_to_string(format!("/proc/{}/stat", grandchild.trim()))
                .map_or(true, |stat| stat.contains(") Z ") || stat.contains(") X "))
        };
        let killed = Instant::now();
        while !dead() && killed.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(dead(), "the grandchild lives on");
    }

    #[test]
    fn an_interrupted_run_starts_nothing() {
        let result = run(&mut Command::new("true"), &AtomicBool::new(true));
        assert!(matches!(result, Err(Stopped::Interrupted)));
    }
}
