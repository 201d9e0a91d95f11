//! `${VAR}` in a lab's `kernel` and `disk` values: expanded from the environment.

/// Why `${VAR}` expansion failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvProblem {
    /// The variable is not set, or empty.
    Missing(String),
    /// `${` without its `}`, or a name that is not one.
    Syntax(String),
}

/// Replaces each `${NAME}` in `text` (NAME: letters, digits, `_`, not starting with a digit)
/// with `env(NAME)`; any other `$` stays as it is.
pub fn expand_env(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, EnvProblem> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(EnvProblem::Syntax(format!(
                "`${{` without its `}}` in {text:?}"
            )));
        };
        let name = &after[..end];
        let valid = name
            .chars()
            .next()
            .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(EnvProblem::Syntax(format!(
                "`${{{name}}}` in {text:?} is not an environment variable name"
            )));
        }
        match env(name) {
            Some(value) if !value.is_empty() => out.push_str(&value),
            _ => return Err(EnvProblem::Missing(name.to_string())),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The process environment, as [`Lab::parse_with_env`](super::Lab::parse_with_env) reads it.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}
