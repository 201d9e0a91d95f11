//! Every form a run's model is shown in. Each renderer reads the model (or one of its parts),
//! never the records: text tables ([`text`], on [`table`]), CSV ([`csv`]), JSON ([`json`]), the
//! HTML report page ([`html`]), the Perfetto export ([`perfetto`]), the live line ([`live`]) and
//! the outcome of a run ([`outcome`]).

pub mod chart;
pub mod csv;
pub mod html;
pub mod json;
pub mod live;
pub mod outcome;
pub mod perfetto;
pub mod rows;
pub mod table;
pub mod text;
pub mod web;

/// Every renderer against guest strings made to attack a terminal or a report: control
/// sequences, forged lines of the tool's own, names of 10 kB.
#[cfg(test)]
mod tests {
    use carousel_protocol::record::{
        Event, ExitStat, Record, RunSummary, SliceEnd, StopReason, VmSummary,
    };

    use crate::escape::{unsafe_char, NAME_MAX};
    use crate::fixtures::{busy, hello};
    use crate::model::verdict::VerdictInputs;
    use crate::model::{Keep, Model, ModelBuilder};
    use crate::verdict::{decide, Ending, RunFacts, ScriptResult};

    /// Clears the screen, then forges a panic line of the hypervisor's.
    const FORGED: &str = "ok\x1b[2J\r\n[carousel] PANIC at kernel/src/main.rs:1: forged\x1b[0m";

    /// A run whose every guest-supplied string is `text`.
    fn records(text: &str) -> Vec<Record> {
        let mut hello = hello(&[text, "b"], 1_000);
        if let Record::Hello { cpu, commit, .. } = &mut hello {
            *cpu = text.to_string();
            *commit = text.to_string();
        }
        let events = vec![
            Event::Run { dt: 0, vm: 0 },
            Event::Console {
                dt: 10,
                vm: 0,
                bytes: 3,
            },
            Event::Descheduled {
                dt: 500,
                vm: 0,
                why: SliceEnd::Preempted,
            },
            Event::Run { dt: 10, vm: 1 },
            Event::Descheduled {
                dt: 480,
                vm: 1,
                why: SliceEnd::Stopped,
            },
        ];
        vec![
            hello,
            Record::Events { tsc: 0, events },
            Record::Check {
                tsc: 5,
                vm: 0,
                name: text.to_string(),
                passed: false,
            },
            Record::GuestMetric {
                tsc: 6,
                vm: 0,
                name: text.to_string(),
                value: 7,
            },
            Record::ExitInterval {
                tsc: 900,
                vm: 0,
                interval: 900,
                exits: vec![ExitStat {
                    reason: 30,
                    count: 1,
                    cycles: 40,
                    min: 40,
                    max: 40,
                    log2: vec![],
                }],
            },
            Record::MemoryMap {
                tsc: 100,
                vm: 0,
                pages_per_cell: 1,
                cells: vec![1, 2, 3],
            },
            Record::DiskIo {
                tsc: 200,
                vm: 0,
                lba: 0,
                sectors: 1,
                write: true,
            },
            Record::VmStopped {
                tsc: 990,
                vm: 0,
                reason: StopReason::BadMmio {
                    gpa: 1,
                    rip: 2,
                    message: text.to_string(),
                },
            },
            Record::VmStopped {
                tsc: 1_000,
                vm: 1,
                reason: StopReason::LoadFailed {
                    message: text.to_string(),
                },
            },
            Record::VmSummary(busy(0, 500, 0, 1_000)),
            Record::VmSummary(VmSummary {
                vm: 1,
                ..busy(1, 480, 0, 1_000)
            }),
            Record::RunSummary(RunSummary {
                policy: text.to_string(),
                quantum_cycles: 500,
                elapsed: 1_000,
                root: 20,
                idle: 0,
                switch_median: 10,
                switch_max: 10,
                switches: 1,
                dropped_records: 0,
            }),
            Record::RunEnd { tsc: 1_000 },
        ]
    }

    /// Every renderer's output for `records`, by name; console lines `text` in the outcome.
    fn outputs(records: &[Record], text: &str) -> Vec<(&'static str, String)> {
        let model = Model::of_records(records);
        let rows = model.intervals(250.0).expect("events at 1 kHz");
        let mut live = ModelBuilder::new(Keep::Live);
        for record in records {
            live.add(record);
        }
        let live = super::live::line(&live.live().take().expect("a window of a second"));
        let mut perfetto = Vec::new();
        super::perfetto::write(&model, &mut perfetto).expect("writes to memory");
        let names = ["a".to_string(), "b".to_string()];
        let scripts = [
            Some(ScriptResult::Failed {
                reason: text.to_string(),
                last_lines: vec![text.to_string()],
            }),
            None,
        ];
        let outcome = decide(&RunFacts {
            vm_names: &names,
            inputs: VerdictInputs::of_records(records),
            error_line: None,
            panic_line: None,
            ending: Ending::RunEnd,
            timeout_s: 1,
            scripts: &scripts,
        });
        let source = super::html::Source {
            name: "hostile.trace",
            only_vm: None,
        };
        vec![
            ("text", super::text::report(&model.accounting)),
            ("text intervals", super::text::intervals(&model, &rows)),
            ("csv", super::csv::vms(&model.accounting)),
            ("csv intervals", super::csv::intervals(&model, &rows)),
            (
                "json",
                format!("{:#}", super::json::report(&model.accounting)),
            ),
            (
                "json intervals",
                format!("{:#}", super::json::intervals(&model, &rows)),
            ),
            (
                "html",
                super::html::page(
                    &model,
                    &crate::model::feed::Feed::of_records(records),
                    &source,
                ),
            ),
            ("perfetto", String::from_utf8(perfetto).expect("UTF-8 JSON")),
            ("live", live),
            ("outcome", super::outcome::summary(&outcome)),
        ]
    }

    /// The characters an output may hold that [`unsafe_char`] names: newlines, and the tabs a
    /// guest's console line keeps.
    fn raw_controls(output: &str) -> Vec<char> {
        output
            .chars()
            .filter(|&c| unsafe_char(c) && c != '\n' && c != '\t')
            .collect()
    }

    #[test]
    fn guest_strings_are_escaped_and_capped_in_every_output() {
        for (text, shows) in [
            (FORGED.to_string(), "\\x1b[2J"),
            ("x".repeat(10_240), "chars]"),
        ] {
            for (renderer, output) in outputs(&records(&text), &text) {
                assert!(raw_controls(&output).is_empty(), "{renderer}: {output}");
                assert!(
                    !output
                        .lines()
                        .any(|line| line.trim_start().starts_with("[carousel] PANIC")),
                    "{renderer}: a forged line\n{output}"
                );
                assert!(
                    !output.contains(&"x".repeat(crate::escape::CONSOLE_LINE_MAX + 1)),
                    "{renderer}: not capped"
                );
                if !matches!(renderer, "live" | "csv intervals" | "text intervals") {
                    assert!(output.contains(shows), "{renderer}: no {shows}\n{output}");
                }
            }
        }
        // A name stays a name's length.
        let model = Model::of_records(&records(&"x".repeat(10_240)));
        assert!(model.accounting.vms[0].name.chars().count() <= NAME_MAX);
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]
        /// Whatever a guest writes, no renderer passes on a control character but newlines
        /// (and the tabs of console lines).
        #[test]
        fn no_renderer_passes_on_control_characters(
            text in "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}\\u{202a}-\\u{202e}\\u{2028}a-z\\[\\] ]{0,40}|\\PC{0,40}",
        ) {
            for (renderer, output) in outputs(&records(&text), &text) {
                proptest::prop_assert!(raw_controls(&output).is_empty(), "{}: {:?}", renderer, raw_controls(&output));
            }
        }
    }
}

/// Setting changes in every form: the text report lists them, interval rows mark the interval
/// they fall in, the HTML timeline draws a line at the moment and Perfetto has an instant.
#[cfg(test)]
mod settings_tests {
    use carousel_protocol::config::{Setting, SettingError};
    use carousel_protocol::record::{ChangeSource, Record};

    use crate::model::timeline::tests::two_vms;
    use crate::model::Model;

    fn records() -> Vec<Record> {
        let mut records = two_vms();
        let end = records.pop().expect("RunEnd");
        records.push(Record::SettingChanged {
            tsc: 405,
            setting: Setting::Quantum { us: 4_000 },
            source: ChangeSource::Lab,
        });
        records.push(Record::SettingRefused {
            tsc: 905,
            setting: Setting::Weight { vm: 1, weight: 99 },
            source: ChangeSource::Console,
            reason: SettingError::Weight { weight: 99 },
            refused: 1,
        });
        records.push(end);
        records
    }

    #[test]
    fn changes_show_in_the_report_the_rows_the_page_and_perfetto() {
        let model = Model::of_records(&records());
        let report = super::text::report(&model.accounting);
        let lines = super::text::settings_lines(&model.accounting);
        assert_eq!(
            lines,
            "setting changed at 0.405 ms (lab): quantum 4 ms\n\
             setting refused at 0.905 ms (console): weight of b 99: weight 99 is outside 1..=64\n"
        );
        assert!(report.contains(&lines), "{report}");
        let rows = model.intervals(0.3).expect("rows");
        let text = super::text::intervals(&model, &rows);
        let marked: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("quantum 4 ms"))
            .collect();
        // Both VMs' rows of the interval 0.3..0.6 ms, and the list below the table.
        assert_eq!(marked.len(), 3, "{text}");
        assert!(marked[0].trim_start().starts_with("0.300"), "{text}");
        // The page's markers come with its deltas, a made change and a refused one alike (as
        // the live page shows them).
        let deltas = crate::model::feed::Feed::of_records(&records());
        let markers: Vec<String> = deltas
            .iter()
            .map(super::web::delta)
            .filter(|item| item[0] == "M")
            .map(|item| item[2].as_str().unwrap_or_default().to_string())
            .collect();
        assert_eq!(
            markers,
            [
                "setting changed (lab): quantum 4 ms",
                "setting refused (console): weight of b 99: weight 99 is outside 1..=64"
            ]
        );
        let page = super::html::page(
            &model,
            &deltas,
            &super::html::Source {
                name: "t",
                only_vm: None,
            },
        );
        assert!(
            page.contains("setting changed (lab): quantum 4 ms"),
            "no marker in the page's items"
        );
        let mut bytes = Vec::new();
        super::perfetto::write(&model, &mut bytes).expect("writes");
        let json: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        let instants: Vec<&serde_json::Value> = json["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|event| {
                event["ph"] == "i" && event["name"].as_str().unwrap().starts_with("setting")
            })
            .collect();
        assert_eq!(instants.len(), 2);
        assert_eq!(instants[0]["name"], "setting: quantum 4 ms");
        assert_eq!(instants[1]["name"], "setting refused: weight of b 99");
    }

    /// The hypervisor's DiskQueue record shows as the text report's SHARED DISK row and the
    /// JSON `disk_queue` entry, under the VM's name; a run without one shows neither.
    #[test]
    fn shared_disk_figures_show_in_the_text_and_json_reports() {
        use carousel_protocol::record::DiskQueueSummary;
        let mut records = crate::fixtures::two_vm_records();
        let quiet = Model::of_records(&records);
        assert!(!super::text::report(&quiet.accounting).contains("SHARED DISK"));
        assert_eq!(
            super::json::report(&quiet.accounting)["disk_queue"],
            serde_json::json!([])
        );
        records.push(Record::DiskQueue(DiskQueueSummary {
            vm: 1,
            requests: 12,
            sectors: 24,
            wait_p50: 100,
            wait_p99: 900,
            wait_max: 950,
            service_p50: 500,
            service_p99: 500,
            service_max: 500,
            blocked_disk: 7_000,
        }));
        let model = Model::of_records(&records);
        let text = super::text::report(&model.accounting);
        let name = &model.accounting.vms[1].name;
        let row = text
            .lines()
            .skip_while(|line| !line.starts_with("SHARED DISK"))
            .find(|line| line.starts_with(name.as_str()))
            .unwrap_or_else(|| panic!("no row for {name}: {text}"));
        assert!(row.contains(" 12 ") && row.contains(" 24 "), "{row}");
        let json = super::json::report(&model.accounting);
        let rows = json["disk_queue"].as_array().expect("rows");
        assert_eq!(rows.len(), 1, "{json:#}");
        assert_eq!(rows[0]["vm"], name.as_str());
        assert_eq!(rows[0]["requests"], 12);
        assert_eq!(rows[0]["wait_p99"], 900);
        assert_eq!(rows[0]["blocked_disk"], 7_000);
    }

    #[test]
    fn changes_show_in_the_json_and_csv_reports() {
        let model = Model::of_records(&records());
        let json = super::json::report(&model.accounting);
        let settings = json["settings"].as_array().expect("a settings array");
        assert_eq!(settings.len(), 2, "{json:#}");
        assert_eq!(settings[0]["setting"], "quantum 4 ms");
        assert_eq!(settings[0]["source"], "lab");
        assert_eq!(settings[0]["made"], true);
        assert_eq!(settings[0]["tsc"], 405);
        assert_eq!(settings[0]["reason"], "");
        assert_eq!(settings[1]["setting"], "weight of b 99");
        assert_eq!(settings[1]["made"], false);
        assert_eq!(settings[1]["reason"], "weight 99 is outside 1..=64");
        let at = settings[1]["at_ms"].as_f64().expect("ms into the run");
        assert!((at - 0.905).abs() < 1e-9, "{at}");
        let csv = super::csv::settings(&model.accounting);
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(lines[0], "tsc,at_ms,source,setting,made,reason");
        assert_eq!(lines.len(), 3, "{csv}");
        assert!(
            lines[1].starts_with("405,0.405,lab,quantum 4 ms,true,"),
            "{csv}"
        );
        assert!(
            lines[2].ends_with(",console,weight of b 99,false,weight 99 is outside 1..=64"),
            "{csv}"
        );
        assert_eq!(json["settings_dropped"], 0);
        // Changes past the model's limit are counted, in JSON as in the text report.
        let mut crowded = Model::of_records(&records());
        crowded.accounting.settings.dropped = 3;
        assert_eq!(
            super::json::report(&crowded.accounting)["settings_dropped"],
            3
        );
        // Without changes: an empty array, and the header alone.
        let quiet = Model::of_records(&crate::model::timeline::tests::two_vms());
        assert_eq!(
            super::json::report(&quiet.accounting)["settings"],
            serde_json::json!([])
        );
        assert_eq!(
            super::csv::settings(&quiet.accounting),
            format!("{}\n", lines[0])
        );
    }
}
