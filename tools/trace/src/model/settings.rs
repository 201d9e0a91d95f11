//! Setting changes during a run: each change the hypervisor made (a `[[run.change]]` at its
//! time, or a console request) and each request it refused, in stream order, so that reports
//! can list them and mark the moment, and figures before and after can be told apart.

use carousel_protocol::config::{Setting, SettingError};
use carousel_protocol::record::{ChangeSource, Record};

/// Changes kept at most (the console can ask for any number; the rest are counted).
pub const MAX_CHANGES: usize = 4_096;

/// One change asked for, made or refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SettingChange {
    /// When the hypervisor made (or refused) it, TSC cycles: between two slices.
    pub tsc: u64,
    pub setting: Setting,
    pub source: ChangeSource,
    /// Why it was refused; None: it was made.
    pub refused: Option<SettingError>,
}

impl SettingChange {
    /// Whether the change was made.
    pub fn made(&self) -> bool {
        self.refused.is_none()
    }
}

/// The changes of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Settings {
    /// In stream order (the hypervisor's time order), at most [`MAX_CHANGES`].
    pub changes: Vec<SettingChange>,
    /// Changes past [`MAX_CHANGES`], not kept.
    pub dropped: u64,
    /// The first scheduler event's time: the run's start, near enough, for "ms into the run".
    pub origin: Option<u64>,
}

impl Settings {
    /// Folds in one record.
    pub fn add(&mut self, record: &Record) {
        let change = match *record {
            Record::Events { tsc, .. } => {
                self.origin.get_or_insert(tsc);
                return;
            }
            Record::SettingChanged {
                tsc,
                setting,
                source,
            } => SettingChange {
                tsc,
                setting,
                source,
                refused: None,
            },
            Record::SettingRefused {
                tsc,
                setting,
                source,
                reason,
                ..
            } => SettingChange {
                tsc,
                setting,
                source,
                refused: Some(reason),
            },
            _ => return,
        };
        if self.changes.len() < MAX_CHANGES {
            self.changes.push(change);
        } else {
            self.dropped += 1;
        }
    }

    /// Milliseconds from the run's first event to `tsc`, at `hz`.
    pub fn ms_into_run(&self, tsc: u64, hz: u64) -> Option<f64> {
        let origin = self.origin?;
        (hz > 0).then(|| tsc.saturating_sub(origin) as f64 * 1_000.0 / hz as f64)
    }

    /// The changes made, in time order.
    pub fn made(&self) -> impl Iterator<Item = &SettingChange> {
        self.changes.iter().filter(|change| change.made())
    }
}

/// `setting` in words, VMs by their names: "quantum 5 ms", "weight of db 4", "cap of db 50 %".
pub fn describe(setting: Setting, names: &[String]) -> String {
    let name = |vm: u16| {
        names
            .get(usize::from(vm))
            .cloned()
            .unwrap_or_else(|| format!("vm{vm}"))
    };
    match setting {
        Setting::Quantum { us } if us % 1_000 == 0 => format!("quantum {} ms", us / 1_000),
        Setting::Quantum { us } => format!("quantum {us} us"),
        Setting::Weight { vm, weight } => format!("weight of {} {weight}", name(vm)),
        Setting::Cap { vm, cap_pct } => format!("cap of {} {cap_pct} %", name(vm)),
    }
}

/// A setting record as news, VMs by `names`: its TSC and "setting changed (console): quantum
/// 5 ms" or "setting refused (lab): …: why"; `None` for any other record. The console line of
/// `carousel run` and the marker on the web page's timelines.
pub fn news(record: &Record, names: &[String]) -> Option<(u64, String)> {
    let (tsc, setting, source, refused) = match record {
        Record::SettingChanged {
            tsc,
            setting,
            source,
        } => (*tsc, *setting, *source, None),
        Record::SettingRefused {
            tsc,
            setting,
            source,
            reason,
            ..
        } => (*tsc, *setting, *source, Some(reason)),
        _ => return None,
    };
    let what = describe(setting, names);
    let source = source_name(source);
    Some(match refused {
        None => (tsc, format!("setting changed ({source}): {what}")),
        Some(reason) => (tsc, format!("setting refused ({source}): {what}: {reason}")),
    })
}

/// Who asked, in words.
pub fn source_name(source: ChangeSource) -> &'static str {
    match source {
        ChangeSource::Lab => "lab",
        ChangeSource::Console => "console",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_kept_in_order_made_or_refused() {
        let mut settings = Settings::default();
        let quantum = Setting::Quantum { us: 4_000 };
        let cap = Setting::Cap { vm: 1, cap_pct: 0 };
        settings.add(&Record::RunEnd { tsc: 1 });
        settings.add(&Record::SettingChanged {
            tsc: 10,
            setting: quantum,
            source: ChangeSource::Lab,
        });
        settings.add(&Record::SettingRefused {
            tsc: 20,
            setting: cap,
            source: ChangeSource::Console,
            reason: SettingError::Cap { cap_pct: 0 },
            refused: 1,
        });
        assert_eq!(settings.changes.len(), 2);
        assert_eq!(settings.made().map(|c| c.tsc).collect::<Vec<_>>(), [10]);
        assert_eq!(
            settings.changes[1].refused,
            Some(SettingError::Cap { cap_pct: 0 })
        );
        let names = vec!["a".to_string(), "db".to_string()];
        assert_eq!(describe(quantum, &names), "quantum 4 ms");
        assert_eq!(
            describe(Setting::Quantum { us: 500 }, &names),
            "quantum 500 us"
        );
        assert_eq!(describe(cap, &names), "cap of db 0 %");
        assert_eq!(
            describe(Setting::Weight { vm: 7, weight: 2 }, &names),
            "weight of vm7 2"
        );
        for _ in 0..MAX_CHANGES + 3 {
            settings.add(&Record::SettingChanged {
                tsc: 30,
                setting: quantum,
                source: ChangeSource::Console,
            });
        }
        assert_eq!(settings.changes.len(), MAX_CHANGES);
        assert_eq!(settings.dropped, 5);
    }
}
