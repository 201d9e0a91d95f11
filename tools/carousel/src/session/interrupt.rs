//! Ctrl-C: the handler sets the flag every command passes around (`&AtomicBool`: "stop
//! starting things") and counts the presses, so that the run loop can take a second press as
//! "end the emulator at once" ([`presses`]).

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

/// Ctrl-C presses since the process started. One count per process: there is one handler.
static PRESSES: AtomicU32 = AtomicU32::new(0);

/// Routes Ctrl-C (SIGINT) into `flag` and the press count.
pub fn catch(flag: &Arc<AtomicBool>) -> Result<(), ctrlc::Error> {
    let flag = Arc::clone(flag);
    ctrlc::set_handler(move || {
        PRESSES.fetch_add(1, Ordering::SeqCst);
        flag.store(true, Ordering::SeqCst);
    })
}

/// How many times Ctrl-C was pressed; at least 1 once `flag` is set (a flag set by other means,
/// as tests do, counts as one press).
pub fn presses(flag: &AtomicBool) -> u32 {
    PRESSES
        .load(Ordering::SeqCst)
        .max(u32::from(flag.load(Ordering::SeqCst)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_flag_is_one_press() {
        // The handler is never installed in unit tests, so the count is the flag's.
        assert_eq!(presses(&AtomicBool::new(false)), 0);
        assert_eq!(presses(&AtomicBool::new(true)), 1);
    }
}
