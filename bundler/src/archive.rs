//! Writing a planned bundle to disk: into a private work directory beside the output, then
//! renamed into place, so a failed build never leaves a partial bundle at `-o`. With a split
//! size, the same byte stream is cut into `out.tar.000`, `.001`, ...

use std::fs::{self, File};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use airgap::digest::COPY_BUFFER;
use airgap::writer::{BundleWriter, WriteError};
use airgap::SigningKey;

use crate::plan::{BuildPlan, EntrySource};

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error(transparent)]
    Write(#[from] WriteError),
    #[error(transparent)]
    Source(#[from] crate::layout_source::SourceError),
    #[error("{path}: {cause}")]
    Io { path: String, cause: io::Error },
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> ArchiveError + '_ {
    move |cause| ArchiveError::Io {
        path: path.display().to_string(),
        cause,
    }
}

/// Writes parts of at most `limit` bytes each (one unbounded part without a limit).
struct PartWriter {
    dir: PathBuf,
    limit: Option<u64>,
    parts: Vec<PathBuf>,
    current: Option<BufWriter<File>>,
    current_len: u64,
}

impl PartWriter {
    fn next_part(&mut self) -> io::Result<()> {
        if let Some(mut w) = self.current.take() {
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        let path = self.dir.join(format!("part.{:03}", self.parts.len()));
        self.current = Some(BufWriter::with_capacity(COPY_BUFFER, File::create(&path)?));
        self.parts.push(path);
        self.current_len = 0;
        Ok(())
    }

    fn close(mut self) -> io::Result<Vec<PathBuf>> {
        if let Some(mut w) = self.current.take() {
            w.flush()?;
            w.get_ref().sync_all()?;
        }
        Ok(self.parts)
    }
}

impl Write for PartWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.current.is_none() || self.limit.is_some_and(|l| self.current_len >= l) {
            self.next_part()?;
        }
        let room = self
            .limit
            .map_or(buf.len() as u64, |l| l - self.current_len) as usize;
        let n = match self.current.as_mut() {
            Some(w) => w.write(&buf[..buf.len().min(room)])?,
            None => return Err(io::Error::other("no open part")),
        };
        self.current_len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.current.as_mut().map_or(Ok(()), |w| w.flush())
    }
}

/// Counts bytes as they are read, for progress reporting.
struct Counted<'a, R> {
    inner: R,
    progress: &'a dyn Fn(u64),
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.progress)(n as u64);
        Ok(n)
    }
}

/// Writes the plan and moves the result to `output` (or `output.000`, ... when split).
/// Returns the files written.
pub fn write_bundle(
    plan: &BuildPlan,
    key: &SigningKey,
    mtime: u64,
    workdir: &Path,
    output: &Path,
    split: Option<u64>,
    progress: &dyn Fn(u64),
) -> Result<Vec<PathBuf>, ArchiveError> {
    let parts_dir = workdir.join("out");
    fs::create_dir(&parts_dir).map_err(io_err(&parts_dir))?;
    let sink = PartWriter {
        dir: parts_dir.clone(),
        limit: split,
        parts: Vec::new(),
        current: None,
        current_len: 0,
    };
    let mut writer = BundleWriter::start(sink, &plan.index.to_bytes(), key, mtime)?;
    for entry in &plan.entries {
        let mut source: Box<dyn Read> = match &entry.source {
            EntrySource::Memory(bytes) => Box::new(&bytes[..]),
            EntrySource::Layout { source, digest } => plan.sources[*source].open_blob(digest)?,
            EntrySource::File(path) => Box::new(File::open(path).map_err(io_err(path))?),
        };
        writer.write_entry(
            &entry.record,
            &mut Counted {
                inner: &mut source,
                progress,
            },
        )?;
    }
    let parts = writer.finish()?.close().map_err(io_err(&parts_dir))?;
    place(&parts, output, split.is_some())
}

fn place(parts: &[PathBuf], output: &Path, split: bool) -> Result<Vec<PathBuf>, ArchiveError> {
    if !split {
        let [only] = parts else {
            return Err(ArchiveError::Io {
                path: output.display().to_string(),
                cause: io::Error::other("expected one part"),
            });
        };
        fs::rename(only, output).map_err(io_err(output))?;
        return Ok(vec![output.to_path_buf()]);
    }
    let mut placed = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let target = PathBuf::from(format!("{}.{i:03}", output.display()));
        fs::rename(part, &target).map_err(io_err(&target))?;
        placed.push(target);
    }
    // Parts left over from an earlier, longer build would be read as part of this one.
    for i in parts.len().. {
        let stale = PathBuf::from(format!("{}.{i:03}", output.display()));
        if fs::remove_file(&stale).is_err() {
            break;
        }
    }
    Ok(placed)
}
