//! When each console line was written, in TSC cycles: the hypervisor prints a VM's lines on
//! COM1 (`[name] text`) and, at the `switches` trace level and above, sends one
//! [`Event::Console`] per printed line on COM2, stamped when the line's last byte left the
//! guest (an unfinished line such as a shell prompt: when the hypervisor flushed it). The n-th
//! line of a VM is its n-th console event, so the two streams together time every line.
//!
//! `carousel bench xv6` times `usertests` this way, from its first line to its last.

use carousel_protocol::record::{timed_events, Event, Record};

/// What the record stream says about the consoles, in arrival order: when each console line
/// was written, and the drop counter (after a drop the lines no longer pair up).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConsoleLog {
    pub marks: Vec<ConsoleMark>,
}

/// One entry of a [`ConsoleLog`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleMark {
    /// VM `vm` wrote a console line at `tsc`.
    Line { vm: u16, tsc: u64 },
    /// `total` records had been dropped by then.
    Dropped { total: u64 },
}

impl ConsoleLog {
    /// Keeps the console events of the next record.
    pub fn add(&mut self, record: &Record) {
        let Record::Events { tsc, events } = record else {
            return;
        };
        for (now, event) in timed_events(*tsc, events) {
            match *event {
                Event::Console { vm, .. } => self.marks.push(ConsoleMark::Line { vm, tsc: now }),
                Event::Dropped { total, .. } => self.marks.push(ConsoleMark::Dropped { total }),
                _ => {}
            }
        }
    }

    /// The console log of `records`.
    pub fn of_records(records: &[Record]) -> Self {
        let mut log = Self::default();
        for record in records {
            log.add(record);
        }
        log
    }
}

/// One console line of a VM and when it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimedLine {
    /// TSC when the line was written.
    pub tsc: u64,
    /// The line as COM1 carried it, without the `[name] ` prefix.
    pub text: String,
}

/// The lines of each VM (indexed like `names`) with their times, from a run's COM1 text and
/// its console log. Lines printed after the last console event (the end of a run) are left
/// out. Fails when records were dropped or a VM has more console events than lines: then the
/// two streams no longer pair up.
pub fn timed_lines(
    com1: &str,
    names: &[String],
    log: &ConsoleLog,
) -> Result<Vec<Vec<TimedLine>>, String> {
    let mut stamps: Vec<Vec<u64>> = vec![Vec::new(); names.len()];
    for mark in &log.marks {
        match *mark {
            ConsoleMark::Line { vm, tsc } => {
                let stamps = stamps.get_mut(usize::from(vm)).ok_or_else(|| {
                    format!("a console event names VM {vm}, which the lab does not have")
                })?;
                stamps.push(tsc);
            }
            ConsoleMark::Dropped { total } => {
                return Err(format!(
                    "{total} records were dropped, so console lines cannot be timed"
                ))
            }
        }
    }
    let mut texts: Vec<Vec<&str>> = vec![Vec::new(); names.len()];
    for line in com1.lines() {
        if let Some((vm, text)) = split_vm_line(names, line) {
            texts[vm].push(text);
        }
    }
    names
        .iter()
        .zip(stamps)
        .zip(texts)
        .map(|((name, stamps), texts)| {
            if stamps.len() > texts.len() {
                return Err(format!(
                    "VM {name} has {} console events but only {} lines on COM1",
                    stamps.len(),
                    texts.len()
                ));
            }
            Ok(stamps
                .into_iter()
                .zip(texts)
                .map(|(tsc, text)| TimedLine {
                    tsc,
                    text: text.to_string(),
                })
                .collect())
        })
        .collect()
}

/// Splits a VM's console line `[name] text` into the VM's index and `text`.
pub fn split_vm_line<'a>(names: &[String], line: &'a str) -> Option<(usize, &'a str)> {
    let rest = line.strip_prefix('[')?;
    let (name, text) = rest.split_once("] ")?;
    let vm = names.iter().position(|candidate| candidate == name)?;
    Some((vm, text))
}

/// The time of the first line of `lines` containing `needle` at or after index `from`, with
/// its index.
pub fn find_line(lines: &[TimedLine], from: usize, needle: &str) -> Option<(usize, u64)> {
    lines
        .iter()
        .enumerate()
        .skip(from)
        .find(|(_, line)| line.text.contains(needle))
        .map(|(index, line)| (index, line.tsc))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(dt: u64, vm: u16) -> Event {
        Event::Console { dt, vm, bytes: 1 }
    }

    fn names() -> Vec<String> {
        vec!["a".to_string(), "b".to_string()]
    }

    #[test]
    fn pairs_each_vm_line_with_its_event() {
        let com1 = "[carousel] starting\n[a] one\n[b] uno\n[a] two\n[b] dos\n[a] $ \n";
        let records = vec![
            Record::Events {
                tsc: 100,
                events: vec![console(0, 0), Event::Run { dt: 5, vm: 1 }, console(10, 1)],
            },
            Record::Events {
                tsc: 1_000,
                events: vec![console(0, 0), console(50, 1), console(7, 0)],
            },
        ];
        let lines = timed_lines(com1, &names(), &ConsoleLog::of_records(&records))
            .expect("the streams pair up");
        let a: Vec<(u64, &str)> = lines[0].iter().map(|l| (l.tsc, l.text.as_str())).collect();
        let b: Vec<(u64, &str)> = lines[1].iter().map(|l| (l.tsc, l.text.as_str())).collect();
        assert_eq!(a, [(100, "one"), (1_000, "two"), (1_057, "$ ")]);
        assert_eq!(b, [(115, "uno"), (1_050, "dos")]);
        assert_eq!(find_line(&lines[0], 0, "two"), Some((1, 1_000)));
        assert_eq!(find_line(&lines[0], 2, "two"), None);
    }

    #[test]
    fn vm_lines_are_told_apart() {
        let names = vec!["a".to_string(), "xv6-1".to_string()];
        assert_eq!(split_vm_line(&names, "[a] $ "), Some((0, "$ ")));
        assert_eq!(
            split_vm_line(&names, "[xv6-1] init: starting sh"),
            Some((1, "init: starting sh"))
        );
        assert_eq!(split_vm_line(&names, "[xv6-1] "), Some((1, "")));
        assert_eq!(split_vm_line(&names, "[carousel] vm a ready"), None);
        assert_eq!(split_vm_line(&names, "[b] x"), None);
        assert_eq!(split_vm_line(&names, "[a]x"), None);
        assert_eq!(split_vm_line(&names, "a] x"), None);
    }

    #[test]
    fn lines_after_the_last_event_are_left_out() {
        let com1 = "[a] one\n[a] two\n";
        let records = vec![Record::Events {
            tsc: 9,
            events: vec![console(0, 0)],
        }];
        let lines = timed_lines(com1, &names(), &ConsoleLog::of_records(&records))
            .expect("a prefix pairs up");
        assert_eq!(lines[0].len(), 1);
        assert_eq!(lines[0][0].text, "one");
    }

    #[test]
    fn refuses_streams_that_cannot_pair_up() {
        let more_events = vec![Record::Events {
            tsc: 0,
            events: vec![console(0, 0), console(1, 0)],
        }];
        let error =
            timed_lines("[a] one\n", &names(), &ConsoleLog::of_records(&more_events)).unwrap_err();
        assert!(
            error.contains("2 console events but only 1 lines"),
            "{error}"
        );

        let dropped = vec![Record::Events {
            tsc: 0,
            events: vec![console(0, 0), Event::Dropped { dt: 1, total: 3 }],
        }];
        let error =
            timed_lines("[a] one\n", &names(), &ConsoleLog::of_records(&dropped)).unwrap_err();
        assert!(error.contains("3 records were dropped"), "{error}");

        let stranger = vec![Record::Events {
            tsc: 0,
            events: vec![console(0, 7)],
        }];
        assert!(timed_lines("", &names(), &ConsoleLog::of_records(&stranger)).is_err());
    }
}
