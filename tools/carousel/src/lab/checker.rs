//! The context every lab rule is checked in: the file and its text, so that an error gives
//! the line of the value it is about, the directory paths resolve against, and the
//! environment `${VAR}` reads.

use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::env::{expand_env, EnvProblem};
use super::error::{LabError, LabErrorKind, VmRef};

/// Validation context: the file, its text (for line numbers), its directory and the
/// environment `${VAR}` reads.
pub(super) struct Checker<'a> {
    pub(super) file: &'a Path,
    pub(super) text: &'a str,
    /// The lab file's directory: relative paths resolve against it.
    pub(super) base: &'a Path,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
}

impl Checker<'_> {
    /// A checker for `text` at `lab.toml` in the current directory, reading no environment.
    #[cfg(test)]
    pub(super) fn for_text(text: &str) -> Checker<'_> {
        Checker {
            file: Path::new("lab.toml"),
            text,
            base: Path::new("."),
            env: &|_| None::<String>,
        }
    }

    pub(super) fn error(
        &self,
        span: Option<std::ops::Range<usize>>,
        kind: LabErrorKind,
    ) -> LabError {
        LabError {
            file: self.file.to_path_buf(),
            line: span.map(|span| line_of(self.text, span.start)),
            kind: Box::new(kind),
        }
    }

    /// An optional integer in `range`, or `default`.
    pub(super) fn int(
        &self,
        key: &str,
        value: Option<&Spanned<i64>>,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, LabError> {
        self.int_of(key.to_string(), None, value, range, default)
    }

    /// An optional integer in `range`, or `default`; `vm` is named in the error.
    pub(super) fn int_of(
        &self,
        key: String,
        vm: Option<VmRef>,
        value: Option<&Spanned<i64>>,
        range: RangeInclusive<i64>,
        default: i64,
    ) -> Result<i64, LabError> {
        let Some(value) = value else {
            return Ok(default);
        };
        if range.contains(value.get_ref()) {
            Ok(*value.get_ref())
        } else {
            Err(self.error(
                Some(value.span()),
                LabErrorKind::OutOfRange {
                    key,
                    value: *value.get_ref(),
                    range,
                    vm,
                },
            ))
        }
    }

    /// `path` resolved against the lab file's directory.
    pub(super) fn resolve(&self, path: &str) -> PathBuf {
        self.base.join(path)
    }

    /// `value`, key `key` of VM `vm`, with every `${VAR}` replaced from the environment.
    pub(super) fn expand(
        &self,
        value: &Spanned<String>,
        key: String,
        vm: VmRef,
    ) -> Result<String, LabError> {
        expand_env(value.get_ref(), self.env).map_err(|problem| {
            let kind = match problem {
                EnvProblem::Missing(var) => LabErrorKind::MissingEnv { key, vm, var },
                EnvProblem::Syntax(reason) => LabErrorKind::BadPath { key, vm, reason },
            };
            self.error(Some(value.span()), kind)
        })
    }
}

/// 1-based line number of byte `offset` in `text`.
pub(super) fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())]
        .iter()
        .filter(|&&byte| byte == b'\n')
        .count()
        + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers() {
        assert_eq!(line_of("a\nb\nc", 0), 1);
        assert_eq!(line_of("a\nb\nc", 2), 2);
        assert_eq!(line_of("a\nb\nc", 4), 3);
        assert_eq!(line_of("a", 99), 1);
    }
}
