//! What the pages draw with: the palette of the web page's charts (which the report page,
//! [`super::html`], inlines; [`super::web::legend`] hands it to the script) and of the Perfetto
//! export; and for `carousel sweep`'s comparison, written here as inline SVG text, round axis
//! steps, value axes, short numbers for tick labels and HTML escaping. Every string that goes
//! into one passes through [`escape`].

/// Colours of the first series (Tableau 10); later ones get hues around the wheel
/// ([`series_colour`]).
pub const SERIES: [&str; 10] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7",
    "#9c755f", "#bab0ac",
];
/// The colour of series `index` (VM `index` on the report page, line `index` of a sweep
/// chart): the palette's, then hues around the wheel.
pub fn series_colour(index: usize) -> String {
    match SERIES.get(index) {
        Some(colour) => colour.to_string(),
        // The golden angle spreads any number of hues apart.
        None => format!("hsl({:.0},55%,48%)", (index as f64 * 137.508) % 360.0),
    }
}

/// The palette of the web page's charts (which `carousel report --html` draws with too), and of
/// the Perfetto export's memory cells.
/// Exit reasons with a colour of their own in the donuts; the rest are "other exits".
pub const DONUT_REASONS: usize = 8;

/// Colours of the exit reasons in the donuts, costliest first.
pub const REASON_COLOURS: [&str; DONUT_REASONS] = [
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
];
pub const OTHER_EXITS_COLOUR: &str = "#bab0ac";
/// Blocked, in the Gantt rows (running is the VM's own colour).
pub const BLOCKED_COLOUR: &str = "#9ca3af";
/// Blocked on the shared disk, in the Gantt rows (apart from the other reasons' grey).
pub const BLOCKED_DISK_COLOUR: &str = "#b45309";
/// Memory cell states by [`PageState`](carousel_protocol::record::PageState) number: name and
/// colour (the Perfetto export uses the names too).
pub const PAGE_STATES: [(&str, &str); 7] = [
    ("untouched", "#eef0f3"),
    ("touched", "#76b7b2"),
    ("dirty", "#e15759"),
    ("merged", "#b07aa1"),
    ("ballooned", "#edc948"),
    ("idle", "#9fb3c8"),
    ("compressed", "#59a14f"),
];
/// Disk blocks: untouched, read, written, both.
pub const DISK_STATES: [(&str, &str); 4] = [
    ("untouched", "#eef0f3"),
    ("read", "#4e79a7"),
    ("written", "#e15759"),
    ("read and written", "#b07aa1"),
];

pub use crate::escape::html as escape;

/// The smallest of 1, 2 or 5 × 10^k that is at least `value` (`value` > 0): round steps for
/// axes and intervals.
pub fn nice_at_least(value: f64) -> f64 {
    let power = 10f64.powi(value.log10().floor() as i32);
    let fraction = value / power;
    let nice = if fraction <= 1.0 {
        1.0
    } else if fraction <= 2.0 {
        2.0
    } else if fraction <= 5.0 {
        5.0
    } else {
        10.0
    };
    nice * power
}

/// A round step that cuts `range` into about `ticks` parts.
pub fn step(range: f64, ticks: f64) -> f64 {
    nice_at_least((range / ticks).max(f64::MIN_POSITIVE))
}

/// `value` in few characters: 950, 1.2k, 3.4M, 0.9975.
pub fn short_number(value: f64) -> String {
    let magnitude = value.abs();
    if magnitude >= 1e9 {
        format!("{:.1}G", value / 1e9)
    } else if magnitude >= 1e6 {
        format!("{:.1}M", value / 1e6)
    } else if magnitude >= 1e4 {
        format!("{:.0}k", value / 1e3)
    } else if magnitude >= 100.0 || value == value.trunc() {
        format!("{value:.0}")
    } else if magnitude >= 1.0 {
        format!("{value:.2}")
    } else {
        format!("{value:.4}")
    }
}

/// A gridline's label: as many decimals as the step between gridlines needs.
pub fn tick_label(value: f64, step: f64) -> String {
    if step >= 1.0 {
        short_number(value)
    } else {
        let decimals = (-step.log10()).ceil().max(0.0) as usize;
        format!("{value:.decimals$}")
    }
}

/// A value axis over `[low, high]`: from 0 unless the values sit far above it (as Jain's index
/// does near 1), cut at a round step into about `ticks` parts. `(bottom, top, step)`.
pub fn value_range(low: f64, high: f64, ticks: f64) -> (f64, f64, f64) {
    let low = if low >= 0.0 && low < high * 0.5 {
        0.0
    } else {
        low
    };
    let span = if high > low {
        high - low
    } else {
        high.abs().max(1.0)
    };
    let step = step(span, ticks);
    let bottom = (low / step).floor() * step;
    let top = ((high / step).ceil() * step).max(bottom + step);
    (bottom, top, step)
}

/// Significant digits [`short_seconds`] keeps.
const SHORT_DIGITS: i32 = 6;

/// Seconds with a unit that keeps them short (at most six significant digits, no
/// trailing zeros): `0`, `250 µs`, `12.5 ms`, `435.872 ms`, `1.0002 s`.
pub fn short_seconds(seconds: f64) -> String {
    let (value, unit) = if seconds == 0.0 {
        return "0".to_string();
    } else if seconds < 1e-3 {
        (seconds * 1e6, "µs")
    } else if seconds < 1.0 {
        (seconds * 1e3, "ms")
    } else {
        (seconds, "s")
    };
    let integer_digits = (value.abs().log10().floor() as i32 + 1).max(1);
    let decimals = (SHORT_DIGITS - integer_digits).clamp(0, SHORT_DIGITS) as usize;
    let text = format!("{value:.decimals$}");
    let text = if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.')
    } else {
        &text
    };
    format!("{text} {unit}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_covers_the_special_characters() {
        assert_eq!(
            escape(r#"<b a="1">'&'</b>"#),
            "&lt;b a=&quot;1&quot;&gt;&#39;&amp;&#39;&lt;/b&gt;"
        );
        assert_eq!(escape("spin0"), "spin0");
    }
    #[test]
    fn nice_numbers() {
        assert_eq!(short_seconds(0.0125), "12.5 ms");
        assert_eq!(short_seconds(2.0), "2 s");
        assert_eq!(short_seconds(0.000_25), "250 µs");
        assert_eq!(short_seconds(0.435_871_78), "435.872 ms");
        assert_eq!(short_seconds(1.000_2), "1.0002 s");
        assert_eq!(short_seconds(120.0), "120 s");
    }

    #[test]
    fn steps_and_numbers_are_round() {
        assert_eq!(step(10.0, 4.0), 5.0);
        assert_eq!(step(3.0, 4.0), 1.0);
        assert_eq!(step(0.04, 4.0), 0.01);
        assert_eq!(step(7_000.0, 4.0), 2_000.0);
        assert_eq!(short_number(950.0), "950");
        assert_eq!(short_number(12_345.0), "12k");
        assert_eq!(short_number(3_400_000.0), "3.4M");
        assert_eq!(short_number(0.99751), "0.9975");
        assert_eq!(short_number(2.5), "2.50");
        assert_eq!(short_number(0.0), "0");
        assert_eq!(tick_label(0.5, 0.5), "0.5");
        assert_eq!(tick_label(0.69, 0.01), "0.69");
        assert_eq!(tick_label(1.0, 0.5), "1.0");
        assert_eq!(tick_label(20_000.0, 5_000.0), "20k");
    }
}
