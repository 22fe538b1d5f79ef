//! Path templates (`/orders/{id}`, `/reports/{name}.csv`) matched against
//! the normalized request path. A literal segment is preferred over a
//! templated one at the same position (OpenAPI 3, "Path Templating
//! Matching"), so `/orders/mine` wins over `/orders/{id}`.

use std::borrow::Cow;

/// One parsed template.
#[derive(Debug, Clone)]
pub(super) struct Template {
    /// As written in the document.
    pub(super) raw: String,
    segments: Vec<Segment>,
    /// Per segment: 2 literal, 1 parameter with literal text around it, 0 a
    /// bare parameter. Sorting templates by this, descending, and taking
    /// the first match prefers literals position by position.
    specificity: Vec<u8>,
}

#[derive(Debug, Clone)]
enum Segment {
    Literal(String),
    Param { prefix: String, name: String, suffix: String },
}

/// The segments of a path, without the leading slash and one trailing slash.
pub(super) fn segments(path: &str) -> impl Iterator<Item = &str> {
    let trimmed = path.strip_prefix('/').unwrap_or(path);
    let trimmed = trimmed.strip_suffix('/').unwrap_or(trimmed);
    trimmed.split('/').filter(|_| !trimmed.is_empty())
}

impl Template {
    /// Parses `path`; literal text is folded to lower case when `fold`.
    pub(super) fn parse(path: &str, fold: bool) -> Result<Self, String> {
        if !path.starts_with('/') {
            return Err("a path must start with '/'".into());
        }
        let casing = |s: &str| if fold { s.to_ascii_lowercase() } else { s.to_owned() };
        let mut out = Vec::new();
        let mut specificity = Vec::new();
        for segment in segments(path) {
            match (segment.find('{'), segment.find('}')) {
                (None, None) => {
                    out.push(Segment::Literal(casing(segment)));
                    specificity.push(2);
                }
                (Some(open), Some(close)) if open < close => {
                    let (prefix, rest) = segment.split_at(open);
                    let name = &rest[1..close - open];
                    let suffix = &rest[close - open + 1..];
                    if name.is_empty() || suffix.contains(['{', '}']) {
                        return Err(format!("segment {segment:?} must hold one named parameter"));
                    }
                    specificity.push(if prefix.is_empty() && suffix.is_empty() { 0 } else { 1 });
                    out.push(Segment::Param { prefix: casing(prefix), name: name.to_owned(), suffix: casing(suffix) });
                }
                _ => return Err(format!("segment {segment:?} has unbalanced braces")),
            }
        }
        Ok(Self { raw: path.to_owned(), segments: out, specificity })
    }

    /// See [`Template::specificity`].
    pub(super) fn specificity(&self) -> &[u8] {
        &self.specificity
    }

    /// The parameter values if `path` matches. `folded` is `path` with
    /// ASCII folded when matching case-insensitively (same byte offsets),
    /// else `path` itself; values come from `path`, percent-decoded.
    pub(super) fn matches<'t>(&'t self, path: &str, folded: &str) -> Option<Vec<(&'t str, String)>> {
        let mut values = Vec::new();
        let mut original = segments(path);
        let mut compare = segments(folded);
        for segment in &self.segments {
            let (raw, cmp) = (original.next()?, compare.next()?);
            match segment {
                Segment::Literal(text) => {
                    if cmp != text {
                        return None;
                    }
                }
                Segment::Param { prefix, name, suffix } => {
                    if cmp.len() <= prefix.len() + suffix.len()
                        || !cmp.starts_with(prefix.as_str())
                        || !cmp.ends_with(suffix.as_str())
                    {
                        return None;
                    }
                    let value = raw.get(prefix.len()..raw.len() - suffix.len())?;
                    values.push((name.as_str(), percent_decode(value).into_owned()));
                }
            }
        }
        if original.next().is_some() {
            return None;
        }
        Some(values)
    }
}

/// Decodes `%XX` escapes (the normalized path keeps those of reserved
/// characters); invalid UTF-8 is replaced, malformed escapes kept.
pub(super) fn percent_decode(text: &str) -> Cow<'_, str> {
    if !text.contains('%') {
        return Cow::Borrowed(text);
    }
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) =
                (bytes.get(i + 1).copied().and_then(hex), bytes.get(i + 2).copied().and_then(hex))
        {
            out.push(u8::try_from(h * 16 + l).unwrap_or(b'?'));
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}
