//! JSON body limits, checked by one pass over the bytes before anything is
//! parsed, so a hostile body cannot make the parser allocate a deep tree, a
//! huge map or a giant string first.

/// Limits on a JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonLimits {
    /// Deepest nesting of objects and arrays (`{"a":[1]}` is 2).
    pub max_depth: usize,
    /// Most object keys in the whole body.
    pub max_keys: usize,
    /// Longest string (key or value), in bytes as sent (escapes count as written).
    pub max_string: usize,
}

impl Default for JsonLimits {
    fn default() -> Self {
        Self { max_depth: 32, max_keys: 1000, max_string: 64 * 1024 }
    }
}

/// Which limit a body broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Broken {
    Depth,
    Keys,
    String,
}

impl JsonLimits {
    /// Scans `bytes` (not necessarily valid JSON: the parser judges that
    /// afterwards) and names the first limit it breaks.
    pub(super) fn scan(&self, bytes: &[u8]) -> Result<(), Broken> {
        let mut depth = 0usize;
        let mut keys = 0usize;
        let mut in_string = false;
        let mut escaped = false;
        let mut string_start = 0usize;
        for (i, &b) in bytes.iter().enumerate() {
            if in_string {
                if escaped {
                    escaped = false;
                } else if b == b'\\' {
                    escaped = true;
                } else if b == b'"' {
                    in_string = false;
                    if i - string_start - 1 > self.max_string {
                        return Err(Broken::String);
                    }
                }
                continue;
            }
            match b {
                b'"' => {
                    in_string = true;
                    string_start = i;
                }
                b'{' | b'[' => {
                    depth += 1;
                    if depth > self.max_depth {
                        return Err(Broken::Depth);
                    }
                }
                b'}' | b']' => depth = depth.saturating_sub(1),
                // Each key of a well-formed object is followed by exactly one ':'.
                b':' => {
                    keys += 1;
                    if keys > self.max_keys {
                        return Err(Broken::Keys);
                    }
                }
                _ => {}
            }
        }
        if in_string && bytes.len() - string_start - 1 > self.max_string {
            return Err(Broken::String);
        }
        Ok(())
    }

    pub(super) fn message(&self, broken: Broken) -> String {
        match broken {
            Broken::Depth => format!("nested deeper than {} levels", self.max_depth),
            Broken::Keys => format!("more than {} object keys", self.max_keys),
            Broken::String => format!("a string longer than {} bytes", self.max_string),
        }
    }
}
