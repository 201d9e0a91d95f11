//! `summary.html`: the comparison as one self-contained page. Per workload, a chart of each
//! figure against the quantum (log scale), one line per policy and weight set, with each line's
//! knee ringed; then the text table. Inline SVG and CSS only: no script, no network, no file
//! beside it. Colours, axis steps and escaping are the report page's
//! ([`carousel_trace::render::chart`]).

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
h1 {{ font-size: 20px; }} h2 {{ font-size: 17px; margin-top: 28px; }}
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
        out.push_str("</p>\n<div class=\"charts\">\n");
        for chart in &charts {
            let svg = svg(chart, lines, &quanta, summary.tsc_hz);
            if svg.is_empty() {
                continue;
            }
            let _ = writeln!(
                out,
                "<figure><figcaption>{}</figcaption>{svg}</figure>",
                escape(&chart.title)
            );
        }
        out.push_str("</div>\n");
    }
    let _ = writeln!(
        out,
        "<h2>Summary</h2>\n<pre>{}</pre>\n</body></html>",
        escape(&summary.text())
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
    }
}
