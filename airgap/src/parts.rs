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
        None if path.exists() => return regular(path).map(|p| vec![p]),
        None => path.to_path_buf(),
    };
    let mut parts = Vec::new();
    for i in 0.. {
        let part = PathBuf::from(format!("{}.{i:03}", stem.display()));
        if !part.exists() {
            break;
        }
        parts.push(regular(&part)?);
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

/// `path` when it is a regular file (through symlinks): a FIFO or a device named like a part
/// would block a reader forever or never end.
fn regular(path: &Path) -> io::Result<PathBuf> {
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} is not a regular file (a pipe, device or directory); a bundle is read from files",
                path.display()
            ),
        ));
    }
    Ok(path.to_path_buf())
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

/// The parts of a bundle as one file read at any offset, from any number of threads at once:
/// what lets a seeder or a server read many entries in parallel without a second copy.
#[derive(Debug)]
pub struct BundleFile {
    /// Each part with the offset of its first byte in the whole stream.
    parts: Vec<(File, u64)>,
    len: u64,
}

impl BundleFile {
    pub fn open(path: &Path) -> io::Result<Self> {
        let mut parts = Vec::new();
        let mut len = 0;
        for part in bundle_parts(path)? {
            let file = File::open(&part)?;
            let size = file.metadata()?.len();
            parts.push((file, len));
            len += size;
        }
        Ok(BundleFile { parts, len })
    }

    /// Creates the parts of a `len`-byte bundle in `dir` (`part.000`, ...; at most `split`
    /// bytes each), sized up front so entries can be written at their offsets in any order.
    /// Unwritten ranges read as zeros, which is what padding must be.
    pub fn create(dir: &Path, len: u64, split: Option<u64>) -> io::Result<(Self, Vec<PathBuf>)> {
        let part_len = split.filter(|&s| s > 0).unwrap_or(len.max(1));
        let mut parts = Vec::new();
        let mut paths = Vec::new();
        let mut start = 0;
        while start < len || paths.is_empty() {
            let size = part_len.min(len - start);
            let path = dir.join(format!("part.{:03}", paths.len()));
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)?;
            file.set_len(size)?;
            parts.push((file, start));
            paths.push(path);
            start += size;
        }
        Ok((BundleFile { parts, len }, paths))
    }

    /// Writes all of `buf` at `offset`, across part boundaries. Never extends the bundle.
    pub fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        if offset + buf.len() as u64 > self.len {
            return Err(io::Error::other("write past the end of the bundle"));
        }
        while !buf.is_empty() {
            let i = self.parts.partition_point(|&(_, start)| start <= offset);
            let Some(&(ref file, start)) = i.checked_sub(1).and_then(|i| self.parts.get(i)) else {
                return Err(io::Error::other("write before the start of the bundle"));
            };
            let end = self.parts.get(i).map_or(self.len, |&(_, next)| next);
            let n = buf.len().min((end - offset) as usize);
            file.write_all_at(&buf[..n], offset - start)?;
            buf = &buf[n..];
            offset += n as u64;
        }
        Ok(())
    }

    /// Asks the kernel to start writing `len` bytes at `offset` to disk now, without waiting
    /// for it. A build fills the page cache far faster than the disk drains it; starting the
    /// writeback as entries arrive overlaps the disk with the downloads, instead of leaving
    /// all of it to the final [`Self::sync_all`]. Best effort: errors surface at that sync.
    pub fn start_writeback(&self, mut offset: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let end = offset.saturating_add(len).min(self.len);
        while offset < end {
            let i = self.parts.partition_point(|&(_, start)| start <= offset);
            let Some(&(ref file, start)) = i.checked_sub(1).and_then(|i| self.parts.get(i)) else {
                return;
            };
            let part_end = self
                .parts
                .get(i)
                .map_or(self.len, |&(_, next)| next)
                .min(end);
            // SAFETY: a plain syscall on a descriptor this struct owns; no memory is passed.
            unsafe {
                libc::sync_file_range(
                    file.as_raw_fd(),
                    (offset - start) as libc::off64_t,
                    (part_end - offset) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
            offset = part_end;
        }
    }

    /// Flushes every part to stable storage.
    pub fn sync_all(&self) -> io::Result<()> {
        self.parts.iter().try_for_each(|(f, _)| f.sync_all())
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the stream or at a
    /// part boundary (callers loop, as with `Read`).
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let i = self.parts.partition_point(|&(_, start)| start <= offset);
        let Some((file, start)) = i.checked_sub(1).and_then(|i| self.parts.get(i)) else {
            return Ok(0);
        };
        file.read_at(buf, offset - start)
    }

    /// `len` bytes from `offset` as a reader (unverified: the caller hashes what it reads).
    pub fn range(self: &std::sync::Arc<Self>, offset: u64, len: u64) -> BundleRange {
        BundleRange {
            file: self.clone(),
            offset,
            remaining: len,
        }
    }

    /// Fills `buf` from `offset`, or fails with `UnexpectedEof`.
    pub fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        while !buf.is_empty() {
            let n = self.read_at(buf, offset)?;
            if n == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
            buf = &mut buf[n..];
            offset += n as u64;
        }
        Ok(())
    }
}

/// A byte range of a [`BundleFile`], read front to back.
pub struct BundleRange {
    file: std::sync::Arc<BundleFile>,
    offset: u64,
    remaining: u64,
}

impl BundleRange {
    /// The offset of the next byte to read.
    pub fn position(&self) -> u64 {
        self.offset
    }

    /// Bytes of the range not read yet.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn file(&self) -> &BundleFile {
        &self.file
    }
}

impl Read for BundleRange {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let want = buf
            .len()
            .min(self.remaining.min(usize::MAX as u64) as usize);
        if want == 0 {
            return Ok(0);
        }
        let n = self.file.read_at(&mut buf[..want], self.offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        self.offset += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_named_like_a_part_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("out.tar.000"), b"x").unwrap();
        let fifo = dir.path().join("out.tar.001");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo on a path in a directory this test owns.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let err = bundle_parts(&dir.path().join("out.tar.000")).unwrap_err();
        assert!(err.to_string().contains("not a regular file"), "{err}");
        assert!(BundleFile::open(&dir.path().join("out.tar.000")).is_err());
    }

    #[test]
    fn reads_across_part_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..=255u8).cycle().take(3000).collect();
        for (i, chunk) in data.chunks(1024).enumerate() {
            std::fs::write(dir.path().join(format!("b.tar.{i:03}")), chunk).unwrap();
        }
        let file = BundleFile::open(&dir.path().join("b.tar.000")).unwrap();
        assert_eq!(file.len(), 3000);
        let mut buf = vec![0u8; 2000];
        file.read_exact_at(&mut buf, 500).unwrap();
        assert_eq!(buf, data[500..2500]);
        let mut tail = [0u8; 10];
        let err = file.read_exact_at(&mut tail, 2995).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
