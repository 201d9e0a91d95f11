//! `summary.html`: the comparison as one self-contained page. Per workload, a chart of each
//! figure against the quantum (log scale), one line per policy and weight set, with each line's
//! knee ringed; when the VMs ran scripts or got input, a chart of each script step's duration
//! (per VM and label) and of each VM's keystroke response p99, drawn the same way
//! (`latency_charts`); then the text tables. Inline SVG and CSS only: no script, no network,
//! no file beside it. Colours, axis steps and escaping are the report page's
//! ([`carousel_trace::render::chart`]); VM names and step labels come from the lab file and are
//! escaped like every other text.

use std::fmt::Write;

use carousel_trace::format::group;
use carousel_trace::render::chart::{escape, series_colour, tick_label, value_range};

use super::axes::Line;
use super::figures;
use super::summary::{Row, Summary, KNEE_MARGIN_PCT};
use crate::lab::sweep::quantum_text;

/// Chart width, in CSS pixels.
const WIDTH: f64 = 400.0;
/// Chart height, in CSS pixels.
const HEIGHT: f64 = 240.0;
/// Room left of the plot, for the y axis's labels.
const LEFT: f64 = 64.0;
/// Room right of the plot.
const RIGHT: f64 = 16.0;
/// Room above the plot.
const TOP: f64 = 16.0;
/// Room below the plot, for the x axis's labels and title.
const BOTTOM: f64 = 40.0;
/// Room between the plot's edges and its first and last quantum, so no mark sits on an axis.
const X_PAD: f64 = 14.0;
/// Gridlines per axis, roughly.
const Y_TICKS: f64 = 4.0;
/// A chart line and its rows, by ascending quantum.
type LineRows<'a> = (Line, Vec<&'a Row>);

/// A figure to chart: its name, its title, and whether it is a time in cycles (charted in µs
/// when the TSC frequency is known).
struct Chart {
    figure: String,
    title: String,
    cycles: bool,
}

/// The charts a workload's rows can fill.
fn charts(summary: &Summary) -> Vec<Chart> {
    let time = if summary.tsc_hz.is_some() {
        "µs"
    } else {
        "cycles"
    };
    let fixed = [
        (
            figures::OVERHEAD_PCT,
            "Root-mode overhead, % of elapsed".to_string(),
            false,
        ),
        (
            figures::SWITCHES_PER_S,
            "Slices begun per second".into(),
            false,
        ),
        (
            figures::JAIN,
            "Jain's index, guest cycles ÷ weight".into(),
            false,
        ),
        (
            figures::WAKE_P99,
            format!("Wake-to-run latency p99 (interactive and unmodified guests), {time}"),
            true,
        ),
        (
            figures::WAKE_P50,
            format!("Wake-to-run latency p50 (interactive and unmodified guests), {time}"),
            true,
        ),
        (
            figures::RESPONSE_P99,
            format!("Guests' own response time p99, {time}"),
            true,
        ),
        (
            figures::TIMER_LAG_MAX,
            format!("LAPIC timer lag, max, {time}"),
            true,
        ),
    ];
    let throughput = summary.units().into_iter().map(|unit| {
        (
            format!("{}{unit}", figures::THROUGHPUT_TOTAL),
            format!("Throughput, {unit} per second (all VMs)"),
            false,
        )
    });
    fixed
        .into_iter()
        .map(|(figure, title, cycles)| (figure.to_string(), title, cycles))
        .chain(throughput)
        .map(|(figure, title, cycles)| Chart {
            figure,
            title,
            cycles,
        })
        .collect()
}

/// The task latency charts a workload's rows can fill: one per VM and step label (the step's
/// mean duration: over its repetitions in a run, then over the repeats, the bar spanning the
/// runs' means) and one per VM (its keystroke response p99), each with one line per policy and
/// weight set. Times in µs when the TSC frequency is known, else cycles.
///
/// One chart per VM · label, not one per policy with a line per step: every chart of the page
/// then draws the same lines in the same colours under the workload's one legend, so a step
/// reads as the overhead does (which policy, at which quantum, makes it fast) however many
/// policies there are; and each step gets a y axis of its own, where a shared one would flatten
/// a 100 µs echo under a 50 ms compile.
fn latency_charts(summary: &Summary) -> Vec<Chart> {
    let time = if summary.tsc_hz.is_some() {
        "µs"
    } else {
        "cycles"
    };
    let names = summary.latency_names();
    let steps = names.iter().filter_map(|name| {
        let (vm, step) = figures::step_of(name)?;
        Some(Chart {
            figure: name.clone(),
            title: format!("Step {vm} · {step}, mean duration, {time}"),
            cycles: true,
        })
    });
    let keys = names.iter().filter_map(|name| {
        let vm = name
            .strip_prefix(figures::KEYS)?
            .strip_suffix(".p99_cycles")?;
        Some(Chart {
            figure: name.clone(),
            title: format!("Keystroke response p99, {vm}, {time}"),
            cycles: true,
        })
    });
    steps.chain(keys).collect()
}

/// `charts` as figures in one `div.charts`, leaving out those with no point in `lines`; empty
/// when none has one.
fn chart_grid(charts: &[Chart], lines: &[LineRows], quanta: &[u32], tsc_hz: Option<u64>) -> String {
    let mut out = String::new();
    for chart in charts {
        let svg = svg(chart, lines, quanta, tsc_hz);
        if !svg.is_empty() {
            let _ = writeln!(
                out,
                "<figure><figcaption>{}</figcaption>{svg}</figure>",
                escape(&chart.title)
            );
        }
    }
    if out.is_empty() {
        out
    } else {
        format!("<div class=\"charts\">\n{out}</div>\n")
    }
}

/// One chart as an SVG element: each line's points (mean, with a min–max bar when repeats
/// differ), the knees ringed.
fn svg(chart: &Chart, lines: &[LineRows], quanta: &[u32], tsc_hz: Option<u64>) -> String {
    let scale = match (chart.cycles, tsc_hz) {
        (true, Some(hz)) => 1e6 / hz as f64,
        _ => 1.0,
    };
    let value = |row: &Row| {
        row.stats
            .get(&chart.figure)
            .map(|stat| (stat.mean * scale, stat.min * scale, stat.max * scale))
    };
    let values: Vec<f64> = lines
        .iter()
        .flat_map(|(_, rows)| rows.iter().filter_map(|row| value(row)))
        .flat_map(|(_, min, max)| [min, max])
        .collect();
    let (Some(low), Some(high)) = (
        values.iter().copied().reduce(f64::min),
        values.iter().copied().reduce(f64::max),
    ) else {
        return String::new();
    };
    let (y_low, y_high, step) = value_range(low, high, Y_TICKS);
    let plot_width = WIDTH - LEFT - RIGHT;
    let plot_height = HEIGHT - TOP - BOTTOM;
    let y = |v: f64| TOP + plot_height * (1.0 - (v - y_low) / (y_high - y_low));
    let (q_low, q_high) = (
        f64::from(*quanta.first().unwrap_or(&1)).ln(),
        f64::from(*quanta.last().unwrap_or(&1)).ln(),
    );
    let x = |quantum: u32| {
        if q_high > q_low {
            LEFT + X_PAD
                + (plot_width - 2.0 * X_PAD) * (f64::from(quantum).ln() - q_low) / (q_high - q_low)
        } else {
            LEFT + plot_width / 2.0
        }
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<svg class="sweep-chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"##,
        escape(&chart.title)
    );
    // Gridlines and the y axis's labels.
    let mut tick = y_low;
    while tick <= y_high + step / 2.0 {
        let at = y(tick);
        let _ = write!(
            out,
            r##"<line x1="{LEFT}" x2="{:.1}" y1="{at:.1}" y2="{at:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="ytick">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            at + 4.0,
            tick_label(tick, step)
        );
        tick += step;
    }
    // The x axis: one tick per quantum swept.
    let _ = write!(
        out,
        r##"<line x1="{LEFT}" x2="{:.1}" y1="{:.1}" y2="{:.1}" class="axis"/>"##,
        WIDTH - RIGHT,
        TOP + plot_height,
        TOP + plot_height
    );
    for &quantum in quanta {
        let _ = write!(
            out,
            r##"<text x="{:.1}" y="{:.1}" class="xtick">{}</text>"##,
            x(quantum),
            TOP + plot_height + 16.0,
            quantum_text(quantum)
        );
    }
    let _ = write!(
        out,
        r##"<text x="{:.1}" y="{:.1}" class="xlabel">quantum (log scale)</text>"##,
        LEFT + plot_width / 2.0,
        HEIGHT - 4.0
    );
    for (index, (_, rows)) in lines.iter().enumerate() {
        let colour = series_colour(index);
        let points: Vec<(f64, f64, f64, f64, bool)> = rows
            .iter()
            .filter_map(|row| {
                let (mean, min, max) = value(row)?;
                Some((x(row.point.quantum_us), y(mean), y(min), y(max), row.knee))
            })
            .collect();
        if points.len() > 1 {
            let path: Vec<String> = points
                .iter()
                .map(|(px, py, ..)| format!("{px:.1},{py:.1}"))
                .collect();
            let _ = write!(
                out,
                r##"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"/>"##,
                path.join(" ")
            );
        }
        for (px, py, min, max, knee) in points {
            if (min - max).abs() > 0.5 {
                let _ = write!(
                    out,
                    r##"<line x1="{px:.1}" x2="{px:.1}" y1="{min:.1}" y2="{max:.1}" stroke="{colour}" stroke-width="1.5"/>"##
                );
            }
            let _ = write!(
                out,
                r##"<circle cx="{px:.1}" cy="{py:.1}" r="3.5" fill="{colour}"/>"##
            );
            if knee {
                let _ = write!(
                    out,
                    r##"<circle cx="{px:.1}" cy="{py:.1}" r="8" fill="none" stroke="{colour}" stroke-width="1.5" class="knee"><title>knee</title></circle>"##
                );
            }
        }
    }
    out.push_str("</svg>");
    out
}

/// The whole page.
pub fn page(summary: &Summary) -> String {
    let mut quanta: Vec<u32> = summary
        .rows
        .iter()
        .map(|row| row.point.quantum_us)
        .collect();
    quanta.sort_unstable();
    quanta.dedup();
    // Workloads and their lines in row order.
    let mut workloads: Vec<(&str, Vec<LineRows>)> = Vec::new();
    for row in &summary.rows {
        let workload = row.point.workload.as_str();
        let lines = match workloads.iter().position(|(name, _)| *name == workload) {
            Some(index) => &mut workloads[index].1,
            None => {
                workloads.push((workload, Vec::new()));
                &mut workloads.last_mut().expect("just pushed").1
            }
        };
        let line = row.point.line();
        match lines.iter_mut().find(|(other, _)| *other == line) {
            Some((_, rows)) => rows.push(row),
            None => lines.push((line, vec![row])),
        }
    }
    let title = match &summary.plan {
        Some(plan) => format!("carousel sweep: {}", plan.lab),
        None => "carousel sweep".to_string(),
    };
    let mut out = String::new();
    let _ = write!(
        out,
        r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{}</title>
<style>
body {{ font: 14px/1.4 system-ui, sans-serif; margin: 24px; color: #222; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 17px; margin-top: 28px; }} h3 {{ font-size: 15px; }}
.charts {{ display: flex; flex-wrap: wrap; gap: 12px; }}
figure {{ margin: 0; border: 1px solid #ddd; border-radius: 4px; padding: 8px; }}
figcaption {{ font-weight: 600; margin-bottom: 4px; }}
.legend span {{ margin-right: 14px; white-space: nowrap; }}
.swatch {{ display: inline-block; width: 14px; height: 3px; vertical-align: middle; margin-right: 4px; }}
svg text {{ font: 11px system-ui, sans-serif; fill: #444; }}
.ytick {{ text-anchor: end; }} .xtick, .xlabel {{ text-anchor: middle; }}
.grid {{ stroke: #eee; }} .axis {{ stroke: #999; }}
pre {{ background: #f7f7f7; padding: 12px; overflow-x: auto; font-size: 12px; }}
.note {{ color: #555; }}
</style></head><body>
<h1>{}</h1>
"##,
        escape(&title),
        escape(&title)
    );
    if let Some(plan) = &summary.plan {
        let _ = writeln!(
            out,
            "<p>lab hash <code>{}</code>, commit <code>{}</code>, backend {}{}</p>",
            escape(&plan.lab_hash),
            escape(&plan.commit),
            escape(&plan.backend),
            summary
                .tsc_hz
                .map(|hz| format!(", TSC {} Hz", group(hz)))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "<p class=\"note\">Each point is a configuration's mean (a bar spans its runs' min–max \
         when repeats differ). A ring marks the knee: the smallest quantum whose root-mode \
         overhead is within {KNEE_MARGIN_PCT} percentage point of the largest quantum's.</p>"
    );
    let charts = charts(summary);
    let latency_charts = latency_charts(summary);
    for (workload, lines) in &workloads {
        let _ = writeln!(out, "<h2>workload {}</h2>", escape(workload));
        out.push_str("<p class=\"legend\">");
        for (index, (line, rows)) in lines.iter().enumerate() {
            let knee = rows
                .iter()
                .find(|row| row.knee)
                .map(|row| format!(" (knee {})", quantum_text(row.point.quantum_us)))
                .unwrap_or_default();
            let _ = write!(
                out,
                "<span><i class=\"swatch\" style=\"background:{}\"></i>{}{}</span>",
                series_colour(index),
                escape(&line.label()),
                escape(&knee)
            );
        }
        out.push_str("</p>\n");
        out.push_str(&chart_grid(&charts, lines, &quanta, summary.tsc_hz));
        let latency = chart_grid(&latency_charts, lines, &quanta, summary.tsc_hz);
        if !latency.is_empty() {
            out.push_str(
                "<h3>Script steps and keystrokes</h3>\n<p class=\"note\">A step's point is its \
                 mean duration over its repetitions in a run, averaged over the repeats (the bar \
                 spans the runs' means).</p>\n",
            );
            out.push_str(&latency);
        }
    }
    // Line by line: `escape` writes a newline visibly (`\x0a`), as every control character.
    let text: Vec<String> = summary.text().lines().map(escape).collect();
    let _ = writeln!(
        out,
        "<h2>Summary</h2>\n<pre>{}</pre>\n</body></html>",
        text.join("\n")
    );
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::sweep::axes::Point;
    use crate::sweep::summary::Stat;

    fn row(policy: &str, quantum_us: u32, overhead: f64, knee: bool) -> Row {
        let stat = |value: f64| Stat {
            mean: value,
            min: value,
            max: value,
            count: 1,
        };
        Row {
            point: Point {
                workload: "mix<1>".into(),
                weights: "lab".into(),
                policy: policy.into(),
                quantum_us,
            },
            runs: 1,
            failures: Vec::new(),
            stats: [
                (figures::OVERHEAD_PCT.to_string(), stat(overhead)),
                (figures::WAKE_P99.to_string(), stat(overhead * 1e4)),
            ]
            .into_iter()
            .collect(),
            units: BTreeMap::new(),
            lab_hashes: vec!["0x1".into()],
            commits: vec!["abc".into()],
            knee,
        }
    }

    #[test]
    fn the_page_stands_alone_and_charts_each_line() {
        let summary = Summary {
            tsc_hz: Some(1_000_000),
            rows: vec![
                row("boost", 500, 3.0, false),
                row("boost", 2_000, 1.5, true),
                row("boost", 8_000, 1.0, false),
                row("round-robin", 500, 3.5, false),
                row("round-robin", 8_000, 1.1, true),
            ],
            ..Summary::default()
        };
        let page = page(&summary);
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(page.ends_with("</body></html>\n"));
        for forbidden in ["<script", "http://", "https://", "src=", "<link"] {
            assert!(!page.contains(forbidden), "{forbidden}");
        }
        // Two charts (overhead, wake p99), each with a polyline per policy.
        assert_eq!(page.matches("<svg").count(), 2);
        assert_eq!(page.matches("<polyline").count(), 4);
        assert_eq!(page.matches("class=\"knee\"").count(), 4);
        assert!(page.contains("workload mix&lt;1&gt;"));
        assert!(page.contains("boost (knee 2ms)"));
        assert!(page.contains(">8ms</text>"));
        assert!(page.contains("Wake-to-run latency p99 (interactive and unmodified guests), µs"));
        // The text table keeps its lines.
        assert!(page.contains("<pre>carousel sweep") && !page.contains("\\x0a"));
        assert!(page.contains("\nWORKLOAD"), "{page}");
        // No step or keystroke figures, so no latency charts.
        assert!(!page.contains("<h3>"));
        assert!(!page.contains("Step ") && !page.contains("Keystroke"));
    }

    /// `row` with the step and keystroke figures `latencies` (the same value in every run).
    fn with(mut row: Row, latencies: &[(&str, f64)]) -> Row {
        for &(name, value) in latencies {
            let stat = Stat {
                mean: value,
                min: value,
                max: value,
                count: 1,
            };
            row.stats.insert(name.to_string(), stat);
        }
        row
    }

    /// The SVG element of the chart titled `title` (as it stands in the page, escaped).
    fn chart<'a>(page: &'a str, title: &str) -> &'a str {
        let start = page
            .find(&format!("aria-label=\"{title}\""))
            .unwrap_or_else(|| panic!("a chart {title:?} in\n{page}"));
        let end = start + page[start..].find("</svg>").expect("a closed chart");
        &page[start..end]
    }

    /// The points of a chart, (x, y) in drawing order: line by line, by ascending quantum.
    fn points(svg: &str) -> Vec<(f64, f64)> {
        svg.split("<circle cx=\"")
            .skip(1)
            .filter(|circle| circle.contains("r=\"3.5\""))
            .map(|circle| {
                let number = |text: &str| text[..text.find('"').unwrap()].parse().unwrap();
                let y = &circle[circle.find("cy=\"").unwrap() + 4..];
                (number(circle), number(y))
            })
            .collect()
    }

    /// Two VMs with a labelled step each and a keystroke p99 for one, at two quanta under two
    /// policies: a chart per VM · label and one for the keystrokes, each with a line per policy
    /// of a point per quantum, a longer time drawn higher.
    #[test]
    fn steps_and_keystrokes_are_charted_per_vm_and_label_with_a_line_per_policy() {
        let rows = [
            ("boost", 500, 100.0, 3_000.0, 40.0),
            ("boost", 2_000, 200.0, 3_000.0, 80.0),
            ("round-robin", 500, 150.0, 5_000.0, 60.0),
            ("round-robin", 2_000, 400.0, 6_000.0, 90.0),
        ]
        .map(|(policy, quantum, echo, build, keys)| {
            with(
                row(policy, quantum, 1.0, false),
                &[
                    ("step.sh.echo.mean_cycles", echo),
                    ("step.sh.echo.min_cycles", echo / 2.0),
                    ("step.sh.echo.count", 20.0),
                    ("step.cc.make all.mean_cycles", build),
                    ("script.cc.cycles", build),
                    ("keys.sh.p50_cycles", keys / 2.0),
                    ("keys.sh.p99_cycles", keys),
                ],
            )
        });
        let summary = Summary {
            tsc_hz: Some(1_000_000),
            rows: rows.to_vec(),
            ..Summary::default()
        };
        let page = page(&summary);
        assert!(page.contains("<h3>Script steps and keystrokes</h3>"));
        // Overhead and wake p99, two steps (no chart of a step's min, count or whole script), one
        // VM's keystrokes; a polyline per policy in each.
        assert_eq!(page.matches("<svg").count(), 5);
        assert_eq!(page.matches("<polyline").count(), 10);
        let echo = chart(&page, "Step sh · echo, mean duration, µs");
        let build = chart(&page, "Step cc · make all, mean duration, µs");
        let keys = chart(&page, "Keystroke response p99, sh, µs");
        for svg in [echo, build, keys] {
            assert_eq!(svg.matches("<polyline").count(), 2, "{svg}");
            assert_eq!(points(svg).len(), 4, "{svg}");
            // One run per row: no spread bar.
            assert!(!svg.contains("stroke-width=\"1.5\"/>"), "{svg}");
        }
        // Boost at 500us and 2ms, then round-robin: a smaller y is higher on the page.
        let echo = points(echo);
        assert!(echo[1].1 < echo[0].1, "200 above 100: {echo:?}");
        assert!(echo[2].1 < echo[0].1, "150 above 100: {echo:?}");
        assert!(echo[3].1 < echo[1].1, "400 above 200: {echo:?}");
        assert!(echo[0].0 < echo[1].0 && echo[0].0 == echo[2].0, "{echo:?}");
        let build = points(build);
        assert_eq!(
            build[0].1, build[1].1,
            "the same time, the same height: {build:?}"
        );
        assert!(
            build[3].1 < build[2].1 && build[2].1 < build[0].1,
            "{build:?}"
        );
        let keys = points(keys);
        assert!(
            keys[3].1 < keys[1].1 && keys[1].1 < keys[2].1,
            "90 > 80 > 60: {keys:?}"
        );

        // Repeats that differ get a bar; without the TSC frequency the time is in cycles.
        let mut rows = rows.to_vec();
        let echo = rows[0].stats.get_mut("step.sh.echo.mean_cycles").unwrap();
        (echo.min, echo.max, echo.count) = (50.0, 150.0, 2);
        let page = super::page(&Summary {
            rows,
            ..Summary::default()
        });
        let echo = chart(&page, "Step sh · echo, mean duration, cycles");
        assert_eq!(echo.matches("stroke-width=\"1.5\"/>").count(), 1, "{echo}");
    }

    /// VM names and step labels come from the user's lab file: a label that closes the SVG and
    /// opens a script stays text.
    #[test]
    fn hostile_vm_names_and_labels_stay_text() {
        let label = "</svg><script>alert('&')</script>";
        let rows = [("boost", 500, 1.0), ("boost", 2_000, 2.0)].map(|(policy, quantum, value)| {
            with(
                row(policy, quantum, 1.0, false),
                &[
                    (&format!("step.x\"y<b>.{label}.mean_cycles"), value),
                    ("keys.x\"y<b>.p99_cycles", value),
                ],
            )
        });
        let page = page(&Summary {
            rows: rows.to_vec(),
            ..Summary::default()
        });
        assert!(!page.contains("<script") && !page.contains("<b>"), "{page}");
        assert_eq!(page.matches("<svg").count(), 4, "{page}");
        assert_eq!(page.matches("</svg>").count(), 4, "{page}");
        let escaped = "x&quot;y&lt;b&gt; · &lt;/svg&gt;&lt;script&gt;alert(&#39;&amp;&#39;)\
                       &lt;/script&gt;";
        assert!(
            page.contains(&format!(
                "<figcaption>Step {escaped}, mean duration, cycles"
            )),
            "{page}"
        );
        chart(&page, &format!("Step {escaped}, mean duration, cycles"));
        chart(&page, "Keystroke response p99, x&quot;y&lt;b&gt;, cycles");
    }
}
