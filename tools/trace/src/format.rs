//! Numbers as text, the way every report writes them: thousands grouped, microseconds with a
//! unit that keeps them short, plurals.

/// Microseconds with a unit that keeps them short: `850.0 µs`, `12.345 ms`, `1.234567 s`.
pub fn format_micros(us: f64) -> String {
    if us < 1_000.0 {
        format!("{us:.1} µs")
    } else if us < 1_000_000.0 {
        format!("{:.3} ms", us / 1_000.0)
    } else {
        format!("{:.6} s", us / 1_000_000.0)
    }
}

/// An integer with thousands separators: `12,345,678`.
pub fn group(value: impl Into<u128>) -> String {
    let digits = value.into().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `"s"` unless `count` is one.
pub fn plural(count: u64) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_grouped() {
        assert_eq!(group(0u64), "0");
        assert_eq!(group(999u64), "999");
        assert_eq!(group(1_000u64), "1,000");
        assert_eq!(group(1_234_567u64), "1,234,567");
        assert_eq!(group(u64::MAX), "18,446,744,073,709,551,615");
        assert_eq!(format_micros(850.0), "850.0 µs");
        assert_eq!(format_micros(12_345.0), "12.345 ms");
        assert_eq!(format_micros(1_234_567.0), "1.234567 s");
    }
}
