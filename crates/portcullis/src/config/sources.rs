//! What building a configuration reads besides its own text: environment
//! variables (`${VAR}` secrets) and the files the configuration names
//! (`file:` secrets, JWT key files, OpenAPI documents, upstream CA bundles and
//! client certificates).
//!
//! Building does no IO of its own; every read goes through [`Sources`], so a
//! test can build a configuration from memory and `portcullis check` reads
//! exactly what `run` reads. [`super::load`] and [`super::parse`] pass the
//! process's environment and file system.

use std::io;
use std::path::Path;

/// The environment and files a configuration may read.
pub struct Sources<'a> {
    env: &'a dyn Fn(&str) -> Option<String>,
    read: &'a dyn Fn(&Path) -> io::Result<Vec<u8>>,
}

impl<'a> Sources<'a> {
    /// Sources reading variables with `env` and files with `read`.
    #[must_use]
    pub fn new(env: &'a dyn Fn(&str) -> Option<String>, read: &'a dyn Fn(&Path) -> io::Result<Vec<u8>>) -> Self {
        Self { env, read }
    }

    /// The variable `name`, if set.
    #[must_use]
    pub fn var(&self, name: &str) -> Option<String> {
        (self.env)(name)
    }

    /// The whole contents of the file at `path`.
    ///
    /// # Errors
    /// The file cannot be read.
    pub fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        (self.read)(path)
    }

    /// The file at `path` as UTF-8 text.
    ///
    /// # Errors
    /// The file cannot be read, or is not UTF-8.
    pub fn read_to_string(&self, path: &Path) -> io::Result<String> {
        String::from_utf8(self.read(path)?).map_err(|_| io::Error::new(io::ErrorKind::InvalidData, "not UTF-8 text"))
    }
}

/// Reads a file from the process's file system: the reader [`super::load`]
/// and [`super::parse`] use.
///
/// # Errors
/// The file cannot be read.
pub fn file_system(path: &Path) -> io::Result<Vec<u8>> {
    std::fs::read(path)
}

impl std::fmt::Debug for Sources<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sources")
    }
}
