//! The file sink: JSON lines appended to a file, rotated by size.
//!
//! Decision rules:
//! - The file is opened for append and created with mode 0600 (events name
//!   clients); an existing regular file is tightened to 0600. A path that is
//!   not a regular file (`/dev/full`, a FIFO) keeps its mode and is never
//!   rotated.
//! - With `max_size`, a line that would take the file past it first
//!   rotates: `path.N` is deleted, `path.N-1` … `path.1` move up one,
//!   `path` becomes `path.1` and a new `path` (0600) is started. Lines are
//!   never split; a single line larger than `max_size` gets a file of its
//!   own. The size counted is the file's size when opened plus what this
//!   process wrote: another writer to the same file is not seen.
//! - Without `max_size` the file grows (rotation left to logrotate, whose
//!   `copytruncate` suits a file opened for append).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// See the module docs.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_size: Option<u64>,
    keep: usize,
    file: File,
    size: u64,
}

/// Opens `path` for append, mode 0600.
fn open(path: &Path) -> std::io::Result<(File, u64, bool)> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)?;
    }
    let mut options = OpenOptions::new();
    options.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    let metadata = file.metadata()?;
    let regular = metadata.file_type().is_file();
    // An existing file keeps its mode on open; tighten it. Only a regular
    // file: chmod on a device or a FIFO would change it for every user.
    #[cfg(unix)]
    if regular {
        file.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
    }
    Ok((file, metadata.len(), regular))
}

/// `path.N`.
fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// How many bytes of `lines` (whole lines) fit in `room`; at least one line
/// when `empty` (the file has nothing yet, so a long line cannot wait).
fn fitting(lines: &[u8], room: u64, empty: bool) -> usize {
    let mut end = 0;
    for (i, byte) in lines.iter().enumerate() {
        if *byte == b'\n' {
            let next = i + 1;
            if next as u64 > room && !(empty && end == 0) {
                break;
            }
            end = next;
        }
    }
    // A batch always ends with a newline; anything after the last is kept.
    if end == 0 && empty { lines.len() } else { end }
}

impl RotatingFile {
    /// Opens (creates) the file.
    ///
    /// # Errors
    /// The directory or file cannot be created or opened.
    pub fn open(path: &Path, max_size: Option<u64>, keep: usize) -> std::io::Result<Self> {
        let (file, size, regular) = open(path)?;
        Ok(Self { path: path.to_path_buf(), max_size: max_size.filter(|_| regular), keep: keep.max(1), file, size })
    }

    /// Appends whole lines, rotating first whenever the next lines would
    /// not fit.
    ///
    /// # Errors
    /// Writing, flushing or rotating failed.
    pub fn write_lines(&mut self, mut lines: &[u8]) -> std::io::Result<()> {
        let Some(max) = self.max_size else {
            self.file.write_all(lines)?;
            return self.file.flush();
        };
        while !lines.is_empty() {
            let n = fitting(lines, max.saturating_sub(self.size), self.size == 0);
            if n == 0 {
                self.rotate()?;
                continue;
            }
            self.file.write_all(&lines[..n])?;
            self.size += n as u64;
            lines = &lines[n..];
        }
        self.file.flush()
    }

    /// Shifts the kept files and starts a new one.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file.flush()?;
        let ignore_missing = |r: std::io::Result<()>| match r {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            other => other,
        };
        ignore_missing(std::fs::remove_file(numbered(&self.path, self.keep)))?;
        for n in (1..self.keep).rev() {
            ignore_missing(std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)))?;
        }
        std::fs::rename(&self.path, numbered(&self.path, 1))?;
        let (file, size, _) = open(&self.path)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitting_keeps_lines_whole() {
        assert_eq!(fitting(b"aaa\nbbb\n", 8, false), 8);
        assert_eq!(fitting(b"aaa\nbbb\n", 7, false), 4);
        assert_eq!(fitting(b"aaa\nbbb\n", 3, false), 0);
        // An empty file takes one line even if it is too long.
        assert_eq!(fitting(b"aaaaaa\nb\n", 3, true), 7);
    }

    #[test]
    fn rotates_by_size_and_keeps_n() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut file = RotatingFile::open(&path, Some(20), 2).unwrap();
        for i in 0..10 {
            file.write_lines(format!("line-{i:03}\n").as_bytes()).unwrap();
        }
        // 9 bytes a line, 2 lines a file: 8 and 9 current, 6-7 in .1, 4-5 in .2, the rest gone.
        let read = |p: &Path| std::fs::read_to_string(p).unwrap();
        assert_eq!(read(&path), "line-008\nline-009\n");
        assert_eq!(read(&numbered(&path, 1)), "line-006\nline-007\n");
        assert_eq!(read(&numbered(&path, 2)), "line-004\nline-005\n");
        assert!(!numbered(&path, 3).exists());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        }
    }
}
