//! A lab's `[sweep]` table: the quanta, policies, weight sets and workloads `carousel sweep`
//! varies when its command line does not say, and the parsers of each (the same ones read the
//! command line's `--quantum 500us,1ms` lists). Every error names what it could not read and
//! what it expects. Running the sweep is `crate::sweep`'s.

use std::fmt;
use std::ops::RangeInclusive;

use carousel_protocol::config::SchedulerPolicy;

use super::limits::{QUANTUM_US_RANGE, WEIGHT_RANGE};

/// The weight set that keeps each VM's weight from the lab file.
pub const LAB_WEIGHTS: &str = "lab";
/// Allowed `--repeat` (and `[sweep] repeat`).
pub const REPEAT_RANGE: RangeInclusive<u32> = 1..=100;
/// Microseconds in a millisecond.
const MICROS_PER_MS: u64 = 1_000;
/// Microseconds in a second.
const MICROS_PER_S: u64 = 1_000_000;
/// The units a quantum may be written in, and their size in microseconds.
const QUANTUM_UNITS: [(&str, u64); 4] = [
    ("us", 1),
    ("µs", 1),
    ("ms", MICROS_PER_MS),
    ("s", MICROS_PER_S),
];

/// Splits a comma-separated list into its trimmed items; an empty item is an error.
fn items(list: &str, what: &str) -> Result<Vec<String>, String> {
    let items: Vec<String> = list
        .split(',')
        .map(|item| item.trim().to_string())
        .collect();
    if items.iter().any(String::is_empty) {
        return Err(format!(
            "{list:?}: an empty {what} in the list (write items separated by single commas)"
        ));
    }
    Ok(items)
}

/// One quantum, `500us`, `1ms`, `0.5ms` or `2s`, in whole microseconds within
/// [`QUANTUM_US_RANGE`].
pub fn parse_quantum(text: &str) -> Result<u32, String> {
    let text = text.trim();
    let Some((number, scale)) = QUANTUM_UNITS.iter().find_map(|(unit, scale)| {
        text.strip_suffix(unit)
            .filter(|number| !number.ends_with(['u', 'm', 'µ']))
            .map(|number| (number.trim(), *scale))
    }) else {
        return Err(format!(
            "{text:?} is not a quantum: give a number and a unit, as in 500us, 1ms, 0.5ms or 2s"
        ));
    };
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, Some(fraction)),
        None => (number, None),
    };
    let digits = |part: &str| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit());
    if !digits(whole) || !fraction.is_none_or(|fraction| digits(fraction) && fraction.len() <= 6) {
        return Err(format!(
            "{text:?} is not a quantum: {number:?} is not a decimal number (as in 500us, 0.5ms)"
        ));
    }
    let too_large = || {
        format!(
            "{text:?} is outside the allowed quanta, {}us to {}s",
            QUANTUM_US_RANGE.start(),
            QUANTUM_US_RANGE.end() / MICROS_PER_S as i64
        )
    };
    let whole: u64 = whole.parse().map_err(|_| too_large())?;
    let fraction = fraction.unwrap_or("");
    let fraction_scale = 10u64.pow(fraction.len() as u32);
    let fraction_value: u64 = if fraction.is_empty() {
        0
    } else {
        fraction.parse().map_err(|_| too_large())?
    };
    if !(fraction_value * scale).is_multiple_of(fraction_scale) {
        return Err(format!("{text:?} is not a whole number of microseconds"));
    }
    let micros = whole
        .checked_mul(scale)
        .and_then(|micros| micros.checked_add(fraction_value * scale / fraction_scale))
        .ok_or_else(too_large)?;
    match i64::try_from(micros) {
        Ok(micros) if QUANTUM_US_RANGE.contains(&micros) => Ok(micros as u32),
        _ => Err(too_large()),
    }
}

/// The quanta of `items` (each as [`parse_quantum`] reads it), in ascending order; the same
/// quantum twice is an error.
pub fn parse_quanta<S: AsRef<str>>(items: &[S]) -> Result<Vec<u32>, String> {
    if items.is_empty() {
        return Err("no quantum given".to_string());
    }
    let mut quanta: Vec<(u32, &str)> = Vec::with_capacity(items.len());
    for item in items {
        let item = item.as_ref();
        let micros = parse_quantum(item)?;
        if let Some((_, first)) = quanta.iter().find(|(other, _)| *other == micros) {
            return Err(format!(
                "{item:?} and {first:?} are the same quantum ({micros}us); give each once"
            ));
        }
        quanta.push((micros, item));
    }
    let mut quanta: Vec<u32> = quanta.into_iter().map(|(micros, _)| micros).collect();
    quanta.sort_unstable();
    Ok(quanta)
}

/// [`parse_quanta`] of a comma-separated list (`--quantum 500us,1ms,2ms`).
pub fn parse_quantum_list(list: &str) -> Result<Vec<u32>, String> {
    parse_quanta(&items(list, "quantum")?)
}

/// `micros` as the shortest exact text [`parse_quantum`] reads back: `500us`, `1ms`, `1500us`,
/// `2s`.
pub fn quantum_text(micros: u32) -> String {
    let micros = u64::from(micros);
    if micros.is_multiple_of(MICROS_PER_S) {
        format!("{}s", micros / MICROS_PER_S)
    } else if micros.is_multiple_of(MICROS_PER_MS) {
        format!("{}ms", micros / MICROS_PER_MS)
    } else {
        format!("{micros}us")
    }
}

/// The policies of `items`, by name; the same policy twice is an error.
pub fn parse_policies<S: AsRef<str>>(items: &[S]) -> Result<Vec<SchedulerPolicy>, String> {
    if items.is_empty() {
        return Err("no policy given".to_string());
    }
    let mut policies = Vec::with_capacity(items.len());
    for item in items {
        let item = item.as_ref();
        let policy = SchedulerPolicy::from_name(item).ok_or_else(|| {
            format!(
                "{item:?} is not a scheduling policy; one of: {}",
                policy_names().join(", ")
            )
        })?;
        if policies.contains(&policy) {
            return Err(format!("policy {item:?} is given twice"));
        }
        policies.push(policy);
    }
    Ok(policies)
}

/// [`parse_policies`] of a comma-separated list (`--policy round-robin,boost`).
pub fn parse_policy_list(list: &str) -> Result<Vec<SchedulerPolicy>, String> {
    parse_policies(&items(list, "policy")?)
}

/// The names of every policy.
pub fn policy_names() -> Vec<&'static str> {
    SchedulerPolicy::ALL
        .iter()
        .map(|policy| policy.name())
        .collect()
}

/// The VMs' weights in one configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightSet {
    /// As the lab file gives them (`lab`).
    Lab,
    /// One weight per VM of the run, in lab order (`1:2:4`).
    Positional(Vec<u32>),
    /// The weights of the VMs named (`spin0=4:disk=2`); the others keep the lab's.
    Named(Vec<(String, u32)>),
}

impl WeightSet {
    /// The set as written, in its canonical form: names it in reports and run directories.
    pub fn label(&self) -> String {
        match self {
            WeightSet::Lab => LAB_WEIGHTS.to_string(),
            WeightSet::Positional(weights) => weights
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(":"),
            WeightSet::Named(pairs) => pairs
                .iter()
                .map(|(name, weight)| format!("{name}={weight}"))
                .collect::<Vec<_>>()
                .join(":"),
        }
    }

    /// The VM names a named set uses that none of `vms` (the lab's VM names) is.
    pub fn unknown_names_in<'a>(
        &self,
        vms: impl IntoIterator<Item = &'a str> + Clone,
    ) -> Vec<String> {
        match self {
            WeightSet::Named(pairs) => pairs
                .iter()
                .filter(|(name, _)| !vms.clone().into_iter().any(|vm| vm == name))
                .map(|(name, _)| name.clone())
                .collect(),
            WeightSet::Lab | WeightSet::Positional(_) => Vec::new(),
        }
    }
}

impl fmt::Display for WeightSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.label())
    }
}

/// One weight in [`WEIGHT_RANGE`].
fn parse_weight(text: &str, set: &str) -> Result<u32, String> {
    match text.parse::<i64>() {
        Ok(weight) if WEIGHT_RANGE.contains(&weight) => Ok(weight as u32),
        _ => Err(format!(
            "weight set {set:?}: {text:?} is not a weight ({}..={})",
            WEIGHT_RANGE.start(),
            WEIGHT_RANGE.end()
        )),
    }
}

/// One weight set: `lab`, `1:2:4` or `spin0=4:disk=2`.
pub fn parse_weight_set(text: &str) -> Result<WeightSet, String> {
    let text = text.trim();
    if text == LAB_WEIGHTS {
        return Ok(WeightSet::Lab);
    }
    let parts: Vec<&str> = text.split(':').map(str::trim).collect();
    if parts.iter().any(|part| part.is_empty()) {
        return Err(format!(
            "weight set {text:?}: write `lab`, weights in VM order (1:2:4) or named weights \
             (spin0=4:disk=2)"
        ));
    }
    let named = parts.iter().filter(|part| part.contains('=')).count();
    if named == 0 {
        let weights = parts
            .iter()
            .map(|part| parse_weight(part, text))
            .collect::<Result<Vec<u32>, String>>()?;
        return Ok(WeightSet::Positional(weights));
    }
    if named != parts.len() {
        return Err(format!(
            "weight set {text:?}: give every weight by name (spin0=4:disk=2) or none (1:2:4)"
        ));
    }
    let mut pairs: Vec<(String, u32)> = Vec::with_capacity(parts.len());
    for part in parts {
        let (name, weight) = part.split_once('=').unwrap_or((part, ""));
        let name = name.trim();
        if pairs.iter().any(|(other, _)| other == name) {
            return Err(format!("weight set {text:?}: VM {name:?} is given twice"));
        }
        pairs.push((name.to_string(), parse_weight(weight.trim(), text)?));
    }
    Ok(WeightSet::Named(pairs))
}

/// The weight sets of `items`; the same set twice is an error.
pub fn parse_weight_sets<S: AsRef<str>>(items: &[S]) -> Result<Vec<WeightSet>, String> {
    if items.is_empty() {
        return Err("no weight set given".to_string());
    }
    let mut sets: Vec<WeightSet> = Vec::with_capacity(items.len());
    for item in items {
        let set = parse_weight_set(item.as_ref())?;
        if sets.contains(&set) {
            return Err(format!("weight set {} is given twice", set.label()));
        }
        sets.push(set);
    }
    Ok(sets)
}

/// [`parse_weight_sets`] of a comma-separated list (`--weights lab,1:2:4`).
pub fn parse_weight_list(list: &str) -> Result<Vec<WeightSet>, String> {
    parse_weight_sets(&items(list, "weight set")?)
}

/// A named group of a lab's VMs that run together (`[[sweep.workload]]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workload {
    pub name: String,
    /// Indices into the lab's VMs, in lab order.
    pub vms: Vec<usize>,
}

/// A lab's `[sweep]` table, validated against its VMs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepTable {
    /// `quantum`: the quanta, ascending.
    pub quanta_us: Option<Vec<u32>>,
    /// `policy`: the scheduling policies.
    pub policies: Option<Vec<SchedulerPolicy>>,
    /// `weights`: the weight sets.
    pub weights: Option<Vec<WeightSet>>,
    /// `repeat`: runs per configuration.
    pub repeat: Option<u32>,
    /// `[[sweep.workload]]`: named groups of the lab's VMs, each swept on its own.
    pub workloads: Vec<Workload>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quanta_take_units_and_decimals() {
        for (text, micros) in [
            ("500us", 500),
            ("500µs", 500),
            ("1ms", 1_000),
            (" 2ms ", 2_000),
            ("0.5ms", 500),
            ("1.25ms", 1_250),
            ("10ms", 10_000),
            ("1s", 1_000_000),
            ("0.000001s", 1),
            ("1 ms", 1_000),
        ] {
            assert_eq!(parse_quantum(text), Ok(micros), "{text}");
        }
    }

    #[test]
    fn bad_quanta_say_what_is_wrong() {
        let error = |text: &str| parse_quantum(text).unwrap_err();
        assert!(error("500").contains("give a number and a unit"));
        assert!(error("fast").contains("give a number and a unit"));
        assert!(error("1h").contains("give a number and a unit"));
        assert!(error("ms").contains("not a decimal number"));
        assert!(error("-1ms").contains("not a decimal number"));
        assert!(error("1.ms").contains("not a decimal number"));
        assert!(error("1.5us").contains("whole number of microseconds"));
        assert!(error("0us").contains("outside the allowed quanta"));
        assert!(error("2s").contains("outside the allowed quanta"));
        assert!(error("99999999999999999999999ms").contains("outside"));
    }

    #[test]
    fn quantum_lists_are_sorted_and_checked() {
        assert_eq!(
            parse_quantum_list("10ms,500us, 1ms"),
            Ok(vec![500, 1_000, 10_000])
        );
        let error = parse_quantum_list("1ms,1000us").unwrap_err();
        assert!(error.contains("same quantum"), "{error}");
        let error = parse_quantum_list("1ms,,2ms").unwrap_err();
        assert!(error.contains("empty quantum"), "{error}");
        assert!(parse_quanta::<&str>(&[]).is_err());
    }

    proptest::proptest! {
        #[test]
        fn quantum_text_reads_back(micros in 1u32..=1_000_000) {
            proptest::prop_assert_eq!(parse_quantum(&quantum_text(micros)), Ok(micros));
        }

        #[test]
        fn quantum_parser_never_panics(text in "[0-9.µusm ]{0,12}") {
            let _ = parse_quantum(&text);
        }
    }

    #[test]
    fn policies_by_name() {
        assert_eq!(
            parse_policy_list("boost,round-robin"),
            Ok(vec![SchedulerPolicy::Boost, SchedulerPolicy::RoundRobin])
        );
        assert_eq!(
            parse_policy_list("credit,round-robin"),
            Ok(vec![SchedulerPolicy::Credit, SchedulerPolicy::RoundRobin])
        );
        let error = parse_policy_list("fifo").unwrap_err();
        assert!(
            error.contains("\"fifo\"") && error.contains("round-robin, boost, credit"),
            "{error}"
        );
        assert!(parse_policy_list("boost,boost")
            .unwrap_err()
            .contains("twice"));
    }

    #[test]
    fn weight_sets() {
        assert_eq!(parse_weight_set("lab"), Ok(WeightSet::Lab));
        assert_eq!(
            parse_weight_set("1:2:4"),
            Ok(WeightSet::Positional(vec![1, 2, 4]))
        );
        let named = parse_weight_set("spin0=4:disk=2").unwrap();
        assert_eq!(
            named,
            WeightSet::Named(vec![("spin0".into(), 4), ("disk".into(), 2)])
        );
        assert_eq!(named.label(), "spin0=4:disk=2");
        assert_eq!(parse_weight_set("1 : 2").unwrap().label(), "1:2");
        for (bad, says) in [
            ("0:1", "not a weight"),
            ("65", "not a weight"),
            ("a", "not a weight"),
            ("1::2", "write `lab`"),
            ("1:a=2", "every weight by name"),
            ("a=1:a=2", "given twice"),
            ("a=", "not a weight"),
        ] {
            let error = parse_weight_set(bad).unwrap_err();
            assert!(error.contains(says), "{bad}: {error}");
        }
        assert!(parse_weight_list("lab,1:2,lab")
            .unwrap_err()
            .contains("twice"));
        assert_eq!(parse_weight_list("lab,1:2").unwrap().len(), 2);
    }
}
