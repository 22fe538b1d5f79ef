//! Configuration errors: each says where (file, line, column), what was
//! wrong, what was expected and how to fix it. The build step collects all of
//! them so one run of `portcullis check` shows every problem.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, 0 when the error is about the whole file.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What a valid value looks like.
    pub expected: Option<String>,
    /// How to fix it.
    pub help: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)?;
        } else {
            write!(f, "{}:{}:{}: {}", self.file.display(), self.line, self.column, self.message)?;
        }
        if let Some(expected) = &self.expected {
            write!(f, "\n  expected: {expected}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  help: {help}")?;
        }
        Ok(())
    }
}

/// All the problems found in one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, error) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "error: {error}")?;
        }
        if self.0.len() > 1 {
            write!(f, "\n{} errors", self.0.len())?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Collects errors while building, turning byte spans into line and column.
#[derive(Debug)]
pub struct Collector<'a> {
    file: &'a Path,
    source: &'a str,
    errors: Vec<ConfigError>,
}

impl<'a> Collector<'a> {
    pub const fn new(file: &'a Path, source: &'a str) -> Self {
        Self { file, source, errors: Vec::new() }
    }

    /// Line and column (1-based) of a byte offset.
    pub fn position(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.source.len());
        let before = &self.source[..offset];
        let line = before.matches('\n').count() + 1;
        let column = before.rfind('\n').map_or(before.chars().count(), |nl| before[nl + 1..].chars().count()) + 1;
        (line, column)
    }

    /// Records an error at `span`.
    pub fn error(&mut self, span: Range<usize>, message: impl Into<String>) -> ErrorBuilder<'_, 'a> {
        let (line, column) = self.position(span.start);
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line,
            column,
            message: message.into(),
            expected: None,
            help: None,
        });
        ErrorBuilder { collector: self }
    }

    /// Records an error about the file as a whole.
    pub fn file_error(&mut self, message: impl Into<String>) -> ErrorBuilder<'_, 'a> {
        self.errors.push(ConfigError {
            file: self.file.to_path_buf(),
            line: 0,
            column: 0,
            message: message.into(),
            expected: None,
            help: None,
        });
        ErrorBuilder { collector: self }
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn finish(self) -> Result<(), ConfigErrors> {
        if self.errors.is_empty() { Ok(()) } else { Err(ConfigErrors(self.errors)) }
    }
}

/// Adds `expected` and `help` to the error just recorded.
#[derive(Debug)]
pub struct ErrorBuilder<'c, 'a> {
    collector: &'c mut Collector<'a>,
}

impl ErrorBuilder<'_, '_> {
    fn last(&mut self) -> Option<&mut ConfigError> {
        self.collector.errors.last_mut()
    }

    pub fn expected(mut self, expected: impl Into<String>) -> Self {
        if let Some(e) = self.last() {
            e.expected = Some(expected.into());
        }
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Self {
        if let Some(e) = self.last() {
            e.help = Some(help.into());
        }
        self
    }
}
