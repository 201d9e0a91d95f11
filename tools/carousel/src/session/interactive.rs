//! Typing into the VMs during `carousel run`: when stdin is a terminal, each line the user types
//! goes to the focused VM (with its `\n`); a line starting with `~` is a command to the tool.
//!
//! What is here: the key sequences ([`HELP`], [`parse`]) and the thread that reads stdin
//! ([`spawn_reader`]). Sending the bytes, and the focus protocol, are
//! [`super::script::FocusWriter`]'s.

use std::io::{BufRead, IsTerminal};
use std::sync::mpsc::{self, Receiver};

/// What `~?` prints, and `carousel run --help` repeats.
pub const HELP: &str = "\
console input (stdin is a terminal): each line you type goes to the focused VM, with '\\n'
  ~N      focus VM number N (0 = the first [[vm]] of the lab)
  ~NAME   focus the VM called NAME
  ~?      this help
  ~~text  send the line \"~text\"
the first VM has the focus at start; scripted input ([[vm.script]]) does not move it";

/// What one typed line asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Send this text, then `\n`, to the focused VM.
    Send(String),
    /// Focus VM `vm`.
    Focus(usize),
    /// Print [`HELP`].
    Help,
    /// `~` followed by something that names no VM.
    Unknown(String),
}

/// Reads one typed line (without its line end) against the run's VM names.
pub fn parse(line: &str, names: &[String]) -> Command {
    let Some(rest) = line.strip_prefix('~') else {
        return Command::Send(line.to_string());
    };
    if rest.starts_with('~') {
        return Command::Send(rest.to_string());
    }
    if rest == "?" {
        return Command::Help;
    }
    let target = rest.trim();
    if let Ok(index) = target.parse::<usize>() {
        if index < names.len() {
            return Command::Focus(index);
        }
    }
    match names.iter().position(|name| name == target) {
        Some(index) => Command::Focus(index),
        None => Command::Unknown(target.to_string()),
    }
}

/// When stdin is a terminal, a thread that passes each line typed there (line end removed) to
/// the returned receiver until stdin ends. None otherwise (CI, `</dev/null`, pipes): then
/// nothing reads stdin.
pub fn spawn_reader() -> Option<Receiver<String>> {
    if !std::io::stdin().is_terminal() {
        return None;
    }
    let (sender, receiver) = mpsc::channel();
    std::thread::Builder::new()
        .name("stdin".to_string())
        .spawn(move || {
            let stdin = std::io::stdin();
            for line in stdin.lock().lines() {
                let Ok(line) = line else { break };
                let line = line.strip_suffix('\r').unwrap_or(&line).to_string();
                if sender.send(line).is_err() {
                    break;
                }
            }
        })
        .ok()?;
    Some(receiver)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        ["xv6-0", "xv6-1", "db"].map(str::to_string).to_vec()
    }

    #[test]
    fn commands() {
        let names = names();
        assert_eq!(parse("ls", &names), Command::Send("ls".to_string()));
        assert_eq!(parse("", &names), Command::Send(String::new()));
        assert_eq!(parse("a ~1", &names), Command::Send("a ~1".to_string()));
        assert_eq!(parse("~1", &names), Command::Focus(1));
        assert_eq!(parse("~ 2 ", &names), Command::Focus(2));
        assert_eq!(parse("~db", &names), Command::Focus(2));
        assert_eq!(parse("~xv6-0", &names), Command::Focus(0));
        assert_eq!(parse("~?", &names), Command::Help);
        assert_eq!(parse("~~1", &names), Command::Send("~1".to_string()));
        assert_eq!(parse("~~", &names), Command::Send("~".to_string()));
        assert_eq!(parse("~3", &names), Command::Unknown("3".to_string()));
        assert_eq!(parse("~nope", &names), Command::Unknown("nope".to_string()));
        assert_eq!(parse("~", &names), Command::Unknown(String::new()));
    }

    #[test]
    fn help_names_every_sequence() {
        for sequence in ["~N", "~NAME", "~?", "~~text"] {
            assert!(HELP.contains(sequence), "{sequence}");
        }
    }
}
