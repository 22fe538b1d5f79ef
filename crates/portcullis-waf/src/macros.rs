//! Macro expansion: `%{tx.critical_anomaly_score}`, `%{MATCHED_VAR}`,
//! `%{rule.id}` in operator arguments, `setvar`, `msg` and `logdata`.
//!
//! Decision rules:
//! - A template is split at load into literal text and references; a
//!   text without `%{` is a literal and costs nothing to expand.
//! - A reference names a variable (`MATCHED_VAR`, `REQUEST_LINE`), one
//!   key of a collection (`tx.anomaly_score`, `REQUEST_HEADERS.host`, with
//!   `.` or `:`), or the running rule (`rule.id`, `rule.msg`, …).
//!   Unknown or unset references expand to nothing, as in ModSecurity.

use std::borrow::Cow;

/// A reference inside `%{…}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// The variable or collection, upper-case (`TX`, `MATCHED_VAR`, `RULE`).
    pub name: String,
    /// The key within a collection, lower-case (`anomaly_score`).
    pub key: Option<String>,
}

/// A text with macros.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
    literal: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(Vec<u8>),
    Ref(Reference),
}

/// What references resolve against.
pub trait Resolve {
    /// The value of `reference`, empty when unset.
    fn resolve(&self, reference: &Reference) -> Vec<u8>;
}

impl Template {
    /// Splits `text` into literal parts and references.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        if !text.contains("%{") {
            return Self { parts: Vec::new(), literal: Some(text.to_owned()) };
        }
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("%{") {
            let Some(len) = rest[start + 2..].find('}') else { break };
            if start > 0 {
                parts.push(Part::Text(rest.as_bytes()[..start].to_vec()));
            }
            let inner = &rest[start + 2..start + 2 + len];
            let (name, key) = match inner.find(['.', ':']) {
                Some(at) => (&inner[..at], Some(inner[at + 1..].to_ascii_lowercase())),
                None => (inner, None),
            };
            parts.push(Part::Ref(Reference { name: name.to_ascii_uppercase(), key }));
            rest = &rest[start + 3 + len..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.as_bytes().to_vec()));
        }
        Self { parts, literal: None }
    }

    /// The text when it has no macros.
    #[must_use]
    pub fn literal(&self) -> Option<&str> {
        self.literal.as_deref()
    }

    /// The expanded text.
    pub fn expand(&self, resolver: &impl Resolve) -> Cow<'_, [u8]> {
        if let Some(literal) = &self.literal {
            return Cow::Borrowed(literal.as_bytes());
        }
        let mut out = Vec::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => out.extend_from_slice(t),
                Part::Ref(r) => out.extend_from_slice(&resolver.resolve(r)),
            }
        }
        Cow::Owned(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fake;
    impl Resolve for Fake {
        fn resolve(&self, r: &Reference) -> Vec<u8> {
            format!("<{}:{}>", r.name, r.key.as_deref().unwrap_or("-")).into_bytes()
        }
    }

    #[test]
    fn templates_expand_references() {
        let t = Template::parse("+%{tx.critical_anomaly_score}");
        assert_eq!(&*t.expand(&Fake), b"+<TX:critical_anomaly_score>");
        let t = Template::parse("%{MATCHED_VAR_NAME}=%{matched_var} %{REQUEST_HEADERS:Host}");
        assert_eq!(&*t.expand(&Fake), b"<MATCHED_VAR_NAME:->=<MATCHED_VAR:-> <REQUEST_HEADERS:host>");
        assert_eq!(Template::parse("plain").literal(), Some("plain"));
        assert_eq!(&*Template::parse("50%{").expand(&Fake), b"50%{");
    }
}
