//! Split bundles: one byte stream cut into `out.tar.000`, `out.tar.001`, ... A reader is given
//! the first part (or the unsplit name) and finds the rest.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// The files that make up the bundle at `path`, in order. `out.tar` is itself when it exists,
/// otherwise `out.tar.000`, `.001`, ... as far as they go; `out.tar.000` names the same set.
pub fn bundle_parts(path: &Path) -> io::Result<Vec<PathBuf>> {
    let text = path.to_string_lossy();
    let stem = match text.strip_suffix(".000") {
        Some(stem) => PathBuf::from(stem),
        None if path.exists() => return Ok(vec![path.to_path_buf()]),
        None => path.to_path_buf(),
    };
    let mut parts = Vec::new();
    for i in 0.. {
        let part = PathBuf::from(format!("{}.{i:03}", stem.display()));
        if !part.exists() {
            break;
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!(
                "{} does not exist (nor does {}.000)",
                path.display(),
                stem.display()
            ),
        ));
    }
    Ok(parts)
}

/// Reads the parts of a bundle as one stream.
pub struct PartsReader {
    parts: Vec<PathBuf>,
    next: usize,
    current: Option<File>,
}

impl PartsReader {
    pub fn open(path: &Path) -> io::Result<Self> {
        let parts = bundle_parts(path)?;
        let first = File::open(&parts[0])?;
        Ok(PartsReader {
            parts,
            next: 1,
            current: Some(first),
        })
    }

    pub fn total_size(&self) -> io::Result<u64> {
        self.parts.iter().map(|p| Ok(p.metadata()?.len())).sum()
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while let Some(file) = self.current.as_mut() {
            let n = file.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            self.current = match self.parts.get(self.next) {
                Some(p) => Some(File::open(p)?),
                None => None,
            };
            self.next += 1;
        }
        Ok(0)
    }
}
