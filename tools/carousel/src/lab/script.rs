//! Console script steps (`[[vm.script]]`) as a lab holds them: what line to wait for, what to
//! type then, and for how long to wait. Following the steps during a run is the session's
//! (`crate::session::script`).

use std::fmt;
use std::time::Duration;

use regex::Regex;

/// A step's timeout when the lab file gives none, in seconds.
pub const DEFAULT_STEP_TIMEOUT_S: u64 = 60;

/// A compiled regular expression that compares by its source text (labs compare equal when
/// they say the same thing).
#[derive(Debug, Clone)]
pub struct Pattern(Regex);

impl Pattern {
    /// Compiles `source` (syntax of the `regex` crate).
    pub fn new(source: &str) -> Result<Self, regex::Error> {
        Regex::new(source).map(Self)
    }

    pub fn is_match(&self, text: &str) -> bool {
        self.0.is_match(text)
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }
}

impl PartialEq for Pattern {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for Pattern {}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "/{}/", self.as_str())
    }
}

/// One step of a VM's script.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Matched against each console line of the VM, without its `[name] ` prefix.
    pub expect: Pattern,
    /// Typed into the VM once a line matched.
    pub send: Option<String>,
    /// From the previous step's match (or the run's start), for each repetition.
    pub timeout: Duration,
    /// The step's name in reports (`label = "..."`); None: its number.
    pub label: Option<String>,
    /// How many times the step waits for its line and sends (`repeat = N`, at least 1).
    pub repeat: u32,
}
