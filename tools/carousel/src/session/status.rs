//! The live figures during `carousel run`. On a terminal they are one status line on the
//! screen's bottom row, rewritten in place, with the consoles scrolling above it (a scrolling
//! region over the other rows, as apt's progress line does); in a pipe or a file, one line per
//! interval; with `--quiet`, nothing.
//!
//! The rest of the run prints as it always does, to the cursor: inside the scrolling region,
//! so console lines, warnings and the user's typing never touch the status row. The text shown
//! is [`carousel_trace::render::live::line`]'s, whose VM names are escaped, so no byte a guest
//! chose reaches the terminal as a control sequence.
//!
//! What is not here: the figures (`carousel-trace`'s live window) and when to show them (the
//! run loop).

use std::io::{IsTerminal, Write};

/// Where the live figures go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The bottom row of a terminal, rewritten in place.
    Terminal,
    /// One line per interval (stdout is a pipe or a file).
    Lines,
    /// Nowhere (`--quiet`, or a run that prints nothing).
    Off,
}

impl Mode {
    /// [`Mode::Terminal`] when stdout is a terminal, else [`Mode::Lines`]; [`Mode::Off`] unless
    /// `shown`.
    pub fn for_stdout(shown: bool) -> Mode {
        if !shown {
            Mode::Off
        } else if std::io::stdout().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Lines
        }
    }
}

/// A terminal's size in character cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub rows: u16,
    pub columns: u16,
}

/// The size of the terminal on stdout; None when stdout is not one (or it does not say).
pub fn stdout_size() -> Option<Size> {
    let mut size = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ writes one `winsize` through the pointer, which points at a live,
    // writable `winsize` on this stack frame; the descriptor is only read from.
    let result = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    (result == 0 && size.ws_row > 0 && size.ws_col > 0).then_some(Size {
        rows: size.ws_row,
        columns: size.ws_col,
    })
}

/// Fewest rows for a status row: below this the figures go out as lines.
const MIN_ROWS: u16 = 3;

/// ESC 7 / ESC 8: save and restore the cursor (DECSC, DECRC).
const SAVE: &str = "\x1b7";
const RESTORE: &str = "\x1b8";
/// Erase the whole line the cursor is on (EL 2).
const ERASE_LINE: &str = "\x1b[2K";
/// Reset the scrolling region to the whole screen (DECSTBM without parameters).
const FULL_REGION: &str = "\x1b[r";

/// The live figures' line, drawn on `out`.
#[derive(Debug)]
pub struct StatusLine<W: Write> {
    out: W,
    mode: Mode,
    /// The terminal's size, asked before every draw (it may have been resized).
    size: fn() -> Option<Size>,
    /// The rows the scrolling region was set up for; None while it is not.
    region: Option<u16>,
}

impl<W: Write> StatusLine<W> {
    /// A status line on `out` in `mode`; in [`Mode::Terminal`], `size` says how large the
    /// terminal is (a terminal that does not say gets lines).
    pub fn new(out: W, mode: Mode, size: fn() -> Option<Size>) -> Self {
        Self {
            out,
            mode,
            size,
            region: None,
        }
    }

    /// Shows `text` (one line, no line end): in place of the last on a terminal, as a new line
    /// in a pipe.
    pub fn show(&mut self, text: &str) {
        let _ = match self.mode {
            Mode::Off => Ok(()),
            Mode::Lines => writeln!(self.out, "{text}"),
            Mode::Terminal => match (self.size)().filter(|size| size.rows >= MIN_ROWS) {
                Some(size) => self.draw(size, text),
                None => {
                    self.clear();
                    writeln!(self.out, "{text}")
                }
            },
        };
        let _ = self.out.flush();
    }

    /// Draws `text` on the bottom row, setting the scrolling region up first when there is
    /// none or the terminal's height changed.
    fn draw(&mut self, size: Size, text: &str) -> std::io::Result<()> {
        let mut bytes = String::new();
        if self.region != Some(size.rows) {
            if let Some(old) = self.region {
                // Resized: the old status row is inside the screen's rows now, or gone.
                bytes.push_str(&format!("{SAVE}\x1b[{old};1H{ERASE_LINE}{RESTORE}"));
            }
            // A new line first, so that a cursor on the bottom row moves up out of it (the
            // screen scrolls one line); then the region over every row but the last. Setting
            // the region homes the cursor: it is saved and restored around it.
            bytes.push_str(&format!(
                "\n{SAVE}\x1b[1;{}r{RESTORE}\x1b[1A",
                size.rows - 1
            ));
            self.region = Some(size.rows);
        }
        // Never wider than the screen: a wrapped status row would scroll the whole screen.
        let fitted: String = text
            .chars()
            .take(usize::from(size.columns.saturating_sub(1)))
            .collect();
        bytes.push_str(&format!(
            "{SAVE}\x1b[{};1H{ERASE_LINE}{fitted}{RESTORE}",
            size.rows
        ));
        self.out.write_all(bytes.as_bytes())
    }

    /// Takes the status line away: its row erased and the whole screen scrolling again, the
    /// cursor where the run's output left it. Also on drop.
    pub fn clear(&mut self) {
        if let Some(rows) = self.region.take() {
            let _ = write!(
                self.out,
                "{SAVE}\x1b[{rows};1H{ERASE_LINE}{FULL_REGION}{RESTORE}"
            );
            let _ = self.out.flush();
        }
    }

    #[cfg(test)]
    fn written(&self) -> &W {
        &self.out
    }
}

impl<W: Write> Drop for StatusLine<W> {
    fn drop(&mut self) {
        self.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn screen() -> Option<Size> {
        Some(Size {
            rows: 24,
            columns: 20,
        })
    }

    fn text(bytes: &[u8]) -> String {
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[test]
    fn a_pipe_gets_one_line_per_interval() {
        let mut status = StatusLine::new(Vec::new(), Mode::Lines, screen);
        status.show("[carousel] live 1000 ms: a 50%");
        status.show("[carousel] live 1000 ms: a 60%");
        status.clear();
        assert_eq!(
            text(status.written()),
            "[carousel] live 1000 ms: a 50%\n[carousel] live 1000 ms: a 60%\n"
        );
    }

    #[test]
    fn quiet_is_off_wherever_stdout_goes() {
        assert_eq!(Mode::for_stdout(false), Mode::Off);
        // The test harness's stdout is a pipe or a terminal; either way the figures show.
        assert_ne!(Mode::for_stdout(true), Mode::Off);
    }

    #[test]
    fn off_shows_nothing() {
        let mut status = StatusLine::new(Vec::new(), Mode::Off, screen);
        status.show("figures");
        status.clear();
        assert!(status.written().is_empty());
    }

    #[test]
    fn a_terminal_gets_one_bottom_row_rewritten_in_place() {
        let mut status = StatusLine::new(Vec::new(), Mode::Terminal, screen);
        status.show("first");
        // Set up once: a new line, the region over rows 1..23, the cursor back and up.
        let setup = "\n\x1b7\x1b[1;23r\x1b8\x1b[1A";
        let draw = |what: &str| format!("\x1b7\x1b[24;1H\x1b[2K{what}\x1b8");
        assert_eq!(text(status.written()), format!("{setup}{}", draw("first")));
        status.show("second");
        assert_eq!(
            text(status.written()),
            format!("{setup}{}{}", draw("first"), draw("second"))
        );
        // No line end ever: the consoles' lines are the only ones.
        assert!(!text(status.written())[setup.len()..].contains('\n'));
        status.clear();
        assert!(text(status.written()).ends_with("\x1b7\x1b[24;1H\x1b[2K\x1b[r\x1b8"));
        // Cleared once only.
        let length = status.written().len();
        status.clear();
        assert_eq!(status.written().len(), length);
    }

    #[test]
    fn the_status_row_never_wraps() {
        let mut status = StatusLine::new(Vec::new(), Mode::Terminal, screen);
        status.show(&"x".repeat(100));
        let written = text(status.written());
        assert!(written.contains(&format!("\x1b[2K{}\x1b8", "x".repeat(19))));
        assert!(!written.contains(&"x".repeat(20)));
    }

    #[test]
    fn a_terminal_without_a_size_gets_lines() {
        let mut status = StatusLine::new(Vec::new(), Mode::Terminal, || None);
        status.show("figures");
        assert_eq!(text(status.written()), "figures\n");
        let mut tiny = StatusLine::new(Vec::new(), Mode::Terminal, || {
            Some(Size {
                rows: 2,
                columns: 80,
            })
        });
        tiny.show("figures");
        assert_eq!(text(tiny.written()), "figures\n");
    }

    #[test]
    fn a_resized_terminal_gets_a_new_region() {
        use std::sync::atomic::{AtomicU16, Ordering};
        static ROWS: AtomicU16 = AtomicU16::new(24);
        fn size() -> Option<Size> {
            Some(Size {
                rows: ROWS.load(Ordering::SeqCst),
                columns: 80,
            })
        }
        let mut status = StatusLine::new(Vec::new(), Mode::Terminal, size);
        status.show("a");
        ROWS.store(40, Ordering::SeqCst);
        let before = status.written().len();
        status.show("b");
        let after = text(&status.written()[before..]);
        assert!(
            after.starts_with("\x1b7\x1b[24;1H\x1b[2K\x1b8\n\x1b7\x1b[1;39r\x1b8"),
            "{after:?}"
        );
        assert!(after.ends_with("\x1b7\x1b[40;1H\x1b[2Kb\x1b8"), "{after:?}");
    }

    #[test]
    fn dropping_it_gives_the_terminal_back() {
        let mut out = Vec::new();
        {
            let mut status = StatusLine::new(&mut out, Mode::Terminal, screen);
            status.show("figures");
        }
        assert!(text(&out).ends_with("\x1b[r\x1b8"));
    }
}
