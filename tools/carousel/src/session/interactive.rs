//! Typing into the VMs during `carousel run`: when stdin is a terminal, each line the user types
//! goes to the focused VM (with its `\n`); a line starting with `~` is a command to the tool.
//!
//! What is here: the key sequences ([`HELP`], [`parse`]) and the thread that reads stdin
//! ([`spawn_reader`]). Sending the bytes, and the focus protocol, are
//! [`super::script::FocusWriter`]'s.

use std::io::{BufRead, IsTerminal};
use std::sync::mpsc::{self, Receiver};

use carousel_protocol::config::Setting;

use crate::lab::sweep::parse_quantum;

/// What `~?` prints, and `carousel run --help` repeats.
pub const HELP: &str = "\
console input (stdin is a terminal): each line you type goes to the focused VM, with '\\n'
  ~N      focus VM number N (0 = the first [[vm]] of the lab)
  ~NAME   focus the VM called NAME
  ~?      this help
  ~~text  send the line \"~text\"
  ~quantum 5ms       change the quantum (500us, 1ms, 0.5ms, 2s; 1us..=1s)
  ~weight NAME 4     change a VM's weight (1..=64; NAME or number)
  ~cap NAME 50       change a VM's cap in percent (1..=100; credit policy only)
the hypervisor makes a change between two slices and the trace records it (SettingChanged);
~policy is refused: a run keeps the policy it started with (see the README)
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
    /// Ask the hypervisor for this setting (`~quantum`, `~weight`, `~cap`); checked against
    /// the run's policy before it is sent.
    Setting(Setting),
    /// A setting command the tool refuses without sending anything: why.
    Refused(String),
}

/// Why `~policy` is refused (the README says more).
pub const NO_POLICY_SWITCH: &str = "a run keeps the policy it started with: a switch would have \
     to carry each VM's place in the queue, its credit and its boost from one policy's state to \
     another's, which have no common meaning (run the policies side by side with `carousel \
     sweep --policy` instead)";

/// `~quantum D`, `~weight VM N`, `~cap VM P`, `~policy …`: the setting, or why not. None: the
/// line is not such a command (`~cap` alone may focus a VM called `cap`).
fn setting(rest: &str, names: &[String]) -> Option<Command> {
    let mut words = rest.split_whitespace();
    let command = words.next()?;
    let arguments: Vec<&str> = words.collect();
    if arguments.is_empty() && names.iter().any(|name| name == command) {
        return None;
    }
    let vm = |word: &str| -> Result<u16, String> {
        word.parse::<usize>()
            .ok()
            .filter(|&index| index < names.len())
            .or_else(|| names.iter().position(|name| name == word))
            .map(|index| index as u16)
            .ok_or_else(|| format!("no VM {word:?} (VMs: {})", names.join(", ")))
    };
    let number = |word: &str, what: &str| -> Result<u32, String> {
        word.parse::<u32>()
            .map_err(|_| format!("{word:?} is not a whole number of {what}"))
    };
    let result = match (command, arguments.as_slice()) {
        ("quantum", [duration]) => parse_quantum(duration).map(|us| Setting::Quantum { us }),
        ("weight", [name, weight]) => vm(name)
            .and_then(|vm| number(weight, "weight").map(|weight| Setting::Weight { vm, weight })),
        ("cap", [name, cap]) => vm(name).and_then(|vm| {
            let cap = cap.strip_suffix('%').unwrap_or(cap);
            number(cap, "percent").map(|cap_pct| Setting::Cap { vm, cap_pct })
        }),
        ("policy", _) => Err(format!("~policy: {NO_POLICY_SWITCH}")),
        ("quantum", _) => Err("usage: ~quantum 5ms".to_string()),
        ("weight", _) => Err("usage: ~weight NAME 4".to_string()),
        ("cap", _) => Err("usage: ~cap NAME 50".to_string()),
        _ => return None,
    };
    Some(match result {
        Ok(setting) => Command::Setting(setting),
        Err(reason) => Command::Refused(reason),
    })
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
    if let Some(command) = setting(rest, names) {
        return command;
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
    fn setting_commands() {
        let names = names();
        let refused = |line: &str| match parse(line, &names) {
            Command::Refused(reason) => reason,
            other => panic!("{line}: {other:?}"),
        };
        assert_eq!(
            parse("~quantum 5ms", &names),
            Command::Setting(Setting::Quantum { us: 5_000 })
        );
        assert_eq!(
            parse("~ quantum  500us ", &names),
            Command::Setting(Setting::Quantum { us: 500 })
        );
        assert_eq!(
            parse("~weight db 4", &names),
            Command::Setting(Setting::Weight { vm: 2, weight: 4 })
        );
        assert_eq!(
            parse("~weight 1 64", &names),
            Command::Setting(Setting::Weight { vm: 1, weight: 64 })
        );
        assert_eq!(
            parse("~cap xv6-0 50%", &names),
            Command::Setting(Setting::Cap { vm: 0, cap_pct: 50 })
        );
        assert!(refused("~quantum fast").contains("not a quantum"));
        assert!(refused("~quantum 2000s").contains("1us to 1s"));
        assert!(refused("~quantum").contains("usage: ~quantum 5ms"));
        assert!(refused("~weight nobody 4").contains("no VM \"nobody\""));
        assert!(refused("~weight db -1").contains("not a whole number"));
        assert!(refused("~cap db").contains("usage: ~cap NAME 50"));
        assert!(refused("~policy credit").contains("keeps the policy it started with"));
        // A VM called `cap` is still focused by `~cap`.
        let named = vec!["cap".to_string()];
        assert_eq!(parse("~cap", &named), Command::Focus(0));
    }

    #[test]
    fn help_names_every_sequence() {
        for sequence in ["~N", "~NAME", "~?", "~~text", "~quantum", "~weight", "~cap"] {
            assert!(HELP.contains(sequence), "{sequence}");
        }
    }
}
