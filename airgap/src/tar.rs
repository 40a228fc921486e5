//! The POSIX ustar subset bundles are made of, written canonically and read strictly.
//!
//! We write our own rather than use the `tar` crate for two reasons: verification must reject
//! every header that is not byte-for-byte the one we would have written (a flipped byte that a
//! lenient parser ignores, such as one after a NUL terminator, must still fail the bundle), and
//! the registry server needs the exact offset of every entry's data. The lenient mode reads
//! archives other tools wrote (`oci-archive:` inputs): directories, pax and GNU long names.

use std::io::{self, Read};

pub const BLOCK: u64 = 512;
/// Mode of every entry the bundle writer emits.
pub const ENTRY_MODE: u32 = 0o644;
/// Largest size the 11 octal digits of a ustar size field hold; beyond it, GNU base-256.
const OCTAL_SIZE_LIMIT: u64 = 0o77777777777;
/// Bound on pax and GNU long-name records, so a hostile archive cannot make us allocate.
const MAX_EXTENSION: u64 = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Regular,
    Directory,
    Symlink,
    Hardlink,
    CharDevice,
    BlockDevice,
    Fifo,
    PaxHeader,
    PaxGlobal,
    GnuLongName,
    GnuLongLink,
    Other(u8),
}

impl EntryKind {
    fn from_flag(flag: u8) -> Self {
        match flag {
            b'0' | 0 | b'7' => EntryKind::Regular,
            b'1' => EntryKind::Hardlink,
            b'2' => EntryKind::Symlink,
            b'3' => EntryKind::CharDevice,
            b'4' => EntryKind::BlockDevice,
            b'5' => EntryKind::Directory,
            b'6' => EntryKind::Fifo,
            b'x' => EntryKind::PaxHeader,
            b'g' => EntryKind::PaxGlobal,
            b'L' => EntryKind::GnuLongName,
            b'K' => EntryKind::GnuLongLink,
            other => EntryKind::Other(other),
        }
    }

    /// How an error message names this kind of entry.
    pub fn describe(&self) -> String {
        match self {
            EntryKind::Regular => "regular file".into(),
            EntryKind::Directory => "directory".into(),
            EntryKind::Symlink => "symlink".into(),
            EntryKind::Hardlink => "hardlink".into(),
            EntryKind::CharDevice => "character device".into(),
            EntryKind::BlockDevice => "block device".into(),
            EntryKind::Fifo => "fifo".into(),
            EntryKind::PaxHeader | EntryKind::PaxGlobal => "pax extended header".into(),
            EntryKind::GnuLongName | EntryKind::GnuLongLink => "GNU long-name header".into(),
            EntryKind::Other(f) => format!("entry of unknown type {:?}", *f as char),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TarError {
    #[error("read failed: {0}")]
    Io(io::Error),
    #[error("archive is truncated at byte {offset}: {what}")]
    Truncated { offset: u64, what: &'static str },
    #[error("tar header at byte {offset} has a wrong checksum")]
    BadChecksum { offset: u64 },
    #[error("tar header at byte {offset} is not a ustar header")]
    BadMagic { offset: u64 },
    #[error("tar header at byte {offset} has an unreadable {field} field")]
    BadNumber { offset: u64, field: &'static str },
    #[error("tar header at byte {offset} has a name that is not UTF-8")]
    BadName { offset: u64 },
    #[error("padding after the entry ending at byte {offset} is not zero")]
    NonZeroPadding { offset: u64 },
    #[error("data follows the end-of-archive marker at byte {offset}")]
    TrailingData { offset: u64 },
    #[error("extension header at byte {offset} is malformed or larger than {MAX_EXTENSION} bytes")]
    BadExtension { offset: u64 },
    #[error("path `{0}` does not fit in a ustar header")]
    PathTooLong(String),
    #[error("{field} {value:o} does not fit in a ustar header")]
    ValueTooLarge { field: &'static str, value: u64 },
}

impl From<io::Error> for TarError {
    fn from(e: io::Error) -> Self {
        TarError::Io(e)
    }
}

/// What a header says, plus where it sits in the stream.
#[derive(Debug, Clone)]
pub struct TarHeader {
    pub path: String,
    pub size: u64,
    pub mtime: u64,
    pub mode: u32,
    pub kind: EntryKind,
    /// Byte offset of the header block itself.
    pub header_offset: u64,
    /// Byte offset of the first data byte: what a server seeks to.
    pub data_offset: u64,
    raw: [u8; 512],
}

impl TarHeader {
    /// True when the header is exactly the one [`ustar_header`] writes for this entry, so no
    /// byte of it is free to change unnoticed.
    pub fn is_canonical(&self) -> bool {
        let kind = match self.kind {
            EntryKind::Regular => HeaderKind::Regular,
            EntryKind::Directory => HeaderKind::Directory,
            _ => return false,
        };
        match ustar_header(&self.path, kind, self.mode, self.size, self.mtime) {
            Ok(h) => h == self.raw,
            Err(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderKind {
    Regular,
    Directory,
}

/// The canonical header: ustar magic, owner 0:0 with empty owner names, the given mode and
/// mtime, size in octal (GNU base-256 past 8 GiB), checksum written as GNU tar does.
pub fn ustar_header(
    path: &str,
    kind: HeaderKind,
    mode: u32,
    size: u64,
    mtime: u64,
) -> Result<[u8; 512], TarError> {
    let mut h = [0u8; 512];
    let (prefix, name) = split_path(path).ok_or_else(|| TarError::PathTooLong(path.into()))?;
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[345..345 + prefix.len()].copy_from_slice(prefix.as_bytes());
    write_octal(&mut h[100..108], mode as u64, "mode")?;
    write_octal(&mut h[108..116], 0, "uid")?;
    write_octal(&mut h[116..124], 0, "gid")?;
    if size <= OCTAL_SIZE_LIMIT {
        write_octal(&mut h[124..136], size, "size")?;
    } else {
        h[124] = 0x80;
        h[128..136].copy_from_slice(&size.to_be_bytes());
    }
    write_octal(&mut h[136..148], mtime.min(OCTAL_SIZE_LIMIT), "mtime")?;
    h[156] = match kind {
        HeaderKind::Regular => b'0',
        HeaderKind::Directory => b'5',
    };
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    let sum = checksum(&h);
    let digits = format!("{sum:06o}");
    h[148..154].copy_from_slice(digits.as_bytes());
    h[154] = 0;
    h[155] = b' ';
    Ok(h)
}

/// Zero bytes that pad `size` bytes of data to a whole block.
pub fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

/// Bytes one entry of `size` data bytes takes in an archive: header, data, padding.
pub fn entry_span(size: u64) -> u64 {
    BLOCK + size + padding(size)
}

/// Two zero blocks: the end-of-archive marker.
pub const END_OF_ARCHIVE: [u8; 1024] = [0u8; 1024];

fn split_path(path: &str) -> Option<(&str, &str)> {
    if path.len() <= 100 {
        return Some(("", path));
    }
    // The prefix must end at a `/`, be at most 155 bytes, and leave a non-empty name <= 100.
    path.char_indices()
        .filter(|&(i, c)| c == '/' && i <= 155)
        .map(|(i, _)| (&path[..i], &path[i + 1..]))
        .find(|(_, name)| !name.is_empty() && name.len() <= 100)
}

/// Writes `value` as zero-padded octal and a NUL. A value with more digits than the field
/// holds is an error: a mode read from a foreign header can be one (found by fuzzing).
fn write_octal(field: &mut [u8], value: u64, name: &'static str) -> Result<(), TarError> {
    let width = field.len() - 1;
    let digits = format!("{value:0width$o}");
    if digits.len() != width {
        return Err(TarError::ValueTooLarge { field: name, value });
    }
    field[..width].copy_from_slice(digits.as_bytes());
    field[width] = 0;
    Ok(())
}

fn checksum(h: &[u8; 512]) -> u64 {
    h.iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                b' ' as u64
            } else {
                b as u64
            }
        })
        .sum()
}

fn parse_number(field: &[u8], offset: u64, name: &'static str) -> Result<u64, TarError> {
    let bad = || TarError::BadNumber {
        offset,
        field: name,
    };
    if field.first().is_some_and(|b| b & 0x80 != 0) {
        // GNU base-256: the remaining bytes big-endian; we accept what fits in a u64.
        let mut v: u64 = (field[0] & 0x7f) as u64;
        for &b in &field[1..] {
            v = v.checked_mul(256).ok_or_else(bad)? | b as u64;
        }
        return Ok(v);
    }
    let text = field.split(|&b| b == 0).next().unwrap_or_default();
    let text = std::str::from_utf8(text)
        .map_err(|_| bad())?
        .trim_matches(' ');
    if text.is_empty() {
        return Ok(0);
    }
    u64::from_str_radix(text, 8).map_err(|_| bad())
}

fn c_string(field: &[u8]) -> &[u8] {
    field.split(|&b| b == 0).next().unwrap_or_default()
}

/// Whether a reader refuses or resolves what other tools put in archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strictness {
    /// Bundle verification: extension headers come back raw (so they can be refused), padding
    /// and the end marker must be zero, and nothing may follow the marker.
    Strict,
    /// Input archives from other tools: pax and GNU long names are applied, global pax headers
    /// skipped, anything after the end marker ignored.
    Lenient,
}

/// Streams headers and entry data from any reader; never buffers an entry.
pub struct TarReader<R> {
    inner: R,
    strictness: Strictness,
    pos: u64,
    remaining: u64,
    pad: u64,
    finished: bool,
}

impl<R: Read> TarReader<R> {
    pub fn new(inner: R, strictness: Strictness) -> Self {
        TarReader {
            inner,
            strictness,
            pos: 0,
            remaining: 0,
            pad: 0,
            finished: false,
        }
    }

    /// Bytes consumed from the underlying reader so far.
    pub fn position(&self) -> u64 {
        self.pos
    }

    /// Data bytes of the current entry not yet read.
    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    /// Moves to the next header, skipping what is left of the current entry. `None` at the
    /// end-of-archive marker.
    pub fn next_header(&mut self) -> Result<Option<TarHeader>, TarError> {
        let mut long_name: Option<String> = None;
        let mut pax_path: Option<String> = None;
        let mut pax_size: Option<u64> = None;
        loop {
            let Some(mut header) = self.next_raw_header()? else {
                return Ok(None);
            };
            if self.strictness == Strictness::Strict {
                return Ok(Some(header));
            }
            match header.kind {
                EntryKind::GnuLongName => {
                    long_name = Some(self.read_extension(&header)?);
                }
                EntryKind::PaxHeader => {
                    let records = self.read_extension(&header)?;
                    for (key, value) in parse_pax(&records, header.header_offset)? {
                        match key {
                            "path" => pax_path = Some(value.to_string()),
                            "size" => {
                                pax_size =
                                    Some(value.parse().map_err(|_| TarError::BadExtension {
                                        offset: header.header_offset,
                                    })?)
                            }
                            _ => {}
                        }
                    }
                }
                EntryKind::PaxGlobal | EntryKind::GnuLongLink => {
                    self.skip_data()?;
                }
                _ => {
                    if let Some(p) = pax_path.take().or(long_name.take()) {
                        header.path = p;
                    }
                    if let Some(size) = pax_size.take() {
                        header.size = size;
                        self.remaining = size;
                        self.pad = padding(size);
                    }
                    return Ok(Some(header));
                }
            }
        }
    }

    fn read_extension(&mut self, header: &TarHeader) -> Result<String, TarError> {
        if header.size > MAX_EXTENSION {
            return Err(TarError::BadExtension {
                offset: header.header_offset,
            });
        }
        let mut buf = vec![0u8; header.size as usize];
        self.read_exact_data(&mut buf)?;
        let text =
            String::from_utf8(c_string(&buf).to_vec()).map_err(|_| TarError::BadExtension {
                offset: header.header_offset,
            })?;
        Ok(text)
    }

    fn read_exact_data(&mut self, buf: &mut [u8]) -> Result<(), TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            let n = self.read(&mut buf[filled..])?;
            if n == 0 {
                return Err(TarError::Truncated {
                    offset: self.pos,
                    what: "inside an entry",
                });
            }
            filled += n;
        }
        Ok(())
    }

    fn skip_data(&mut self) -> Result<(), TarError> {
        let mut scratch = [0u8; 64 * 1024];
        while self.remaining > 0 {
            let want = self.remaining.min(scratch.len() as u64) as usize;
            let n = self.read(&mut scratch[..want])?;
            if n == 0 {
                return Err(TarError::Truncated {
                    offset: self.pos,
                    what: "inside an entry",
                });
            }
        }
        Ok(())
    }

    fn skip_padding(&mut self) -> Result<(), TarError> {
        if self.pad == 0 {
            return Ok(());
        }
        let mut pad = [0u8; 512];
        let n = self.pad as usize;
        let start = self.pos;
        self.fill(&mut pad[..n], "in the padding after an entry")?;
        if self.strictness == Strictness::Strict && pad[..n].iter().any(|&b| b != 0) {
            return Err(TarError::NonZeroPadding { offset: start });
        }
        self.pad = 0;
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8], what: &'static str) -> Result<(), TarError> {
        let mut filled = 0;
        while filled < buf.len() {
            match self.inner.read(&mut buf[filled..]) {
                Ok(0) => {
                    return Err(TarError::Truncated {
                        offset: self.pos,
                        what,
                    })
                }
                Ok(n) => {
                    filled += n;
                    self.pos += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    fn next_raw_header(&mut self) -> Result<Option<TarHeader>, TarError> {
        if self.finished {
            return Ok(None);
        }
        self.skip_data()?;
        self.skip_padding()?;
        let offset = self.pos;
        let mut block = [0u8; 512];
        self.fill(
            &mut block,
            "where a tar header or the end-of-archive marker should be",
        )?;
        if block.iter().all(|&b| b == 0) {
            self.fill(&mut block, "inside the end-of-archive marker")?;
            if self.strictness == Strictness::Strict {
                if block.iter().any(|&b| b != 0) {
                    return Err(TarError::TrailingData {
                        offset: offset + BLOCK,
                    });
                }
                let mut probe = [0u8; 1];
                loop {
                    match self.inner.read(&mut probe) {
                        Ok(0) => break,
                        Ok(_) => return Err(TarError::TrailingData { offset: self.pos }),
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
            self.finished = true;
            return Ok(None);
        }
        let stored = parse_number(&block[148..156], offset, "checksum")?;
        if stored != checksum(&block) {
            return Err(TarError::BadChecksum { offset });
        }
        let magic_ok = match self.strictness {
            Strictness::Strict => &block[257..265] == b"ustar\x0000",
            Strictness::Lenient => &block[257..262] == b"ustar",
        };
        if !magic_ok {
            return Err(TarError::BadMagic { offset });
        }
        let name = c_string(&block[..100]);
        let prefix = c_string(&block[345..500]);
        let mut path = Vec::with_capacity(prefix.len() + 1 + name.len());
        if !prefix.is_empty() {
            path.extend_from_slice(prefix);
            path.push(b'/');
        }
        path.extend_from_slice(name);
        let path = String::from_utf8(path).map_err(|_| TarError::BadName { offset })?;
        let kind = EntryKind::from_flag(block[156]);
        let size = parse_number(&block[124..136], offset, "size")?;
        let mode = parse_number(&block[100..108], offset, "mode")? as u32;
        let mtime = parse_number(&block[136..148], offset, "mtime")?;
        // Only these kinds carry data; a link or device claiming a size is skipped by nothing.
        let data_len = match kind {
            EntryKind::Directory | EntryKind::Symlink | EntryKind::Hardlink => 0,
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => 0,
            _ => size,
        };
        self.remaining = data_len;
        self.pad = padding(data_len);
        Ok(Some(TarHeader {
            path,
            size,
            mtime,
            mode,
            kind,
            header_offset: offset,
            data_offset: offset + BLOCK,
            raw: block,
        }))
    }
}

impl<R: Read> Read for TarReader<R> {
    /// Reads the current entry's data; 0 at its end.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 || buf.is_empty() {
            return Ok(0);
        }
        let want = self.remaining.min(buf.len() as u64) as usize;
        let n = self.inner.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("archive is truncated at byte {}: inside an entry", self.pos),
            ));
        }
        self.pos += n as u64;
        self.remaining -= n as u64;
        Ok(n)
    }
}

fn parse_pax(records: &str, offset: u64) -> Result<Vec<(&str, &str)>, TarError> {
    let bad = || TarError::BadExtension { offset };
    let mut out = Vec::new();
    let mut rest = records;
    while !rest.is_empty() {
        let (len, _) = rest.split_once(' ').ok_or_else(bad)?;
        let len: usize = len.parse().map_err(|_| bad())?;
        let record = rest.get(..len).ok_or_else(bad)?;
        rest = &rest[len..];
        let body = record
            .split_once(' ')
            .ok_or_else(bad)?
            .1
            .strip_suffix('\n')
            .ok_or_else(bad)?;
        out.push(body.split_once('=').ok_or_else(bad)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, data) in entries {
            out.extend(
                ustar_header(path, HeaderKind::Regular, 0o644, data.len() as u64, 7).unwrap(),
            );
            out.extend_from_slice(data);
            out.extend(std::iter::repeat_n(0, padding(data.len() as u64) as usize));
        }
        out.extend_from_slice(&END_OF_ARCHIVE);
        out
    }

    #[test]
    fn round_trips_entries_with_offsets() {
        let bytes = archive(&[("a", b"hello"), ("dir/b", &[1u8; 600])]);
        let mut r = TarReader::new(&bytes[..], Strictness::Strict);
        let a = r.next_header().unwrap().unwrap();
        assert_eq!((a.path.as_str(), a.size, a.data_offset), ("a", 5, 512));
        assert!(a.is_canonical());
        let mut s = String::new();
        r.read_to_string(&mut s).unwrap();
        assert_eq!(s, "hello");
        let b = r.next_header().unwrap().unwrap();
        assert_eq!(
            (b.path.as_str(), b.size, b.data_offset),
            ("dir/b", 600, 1536)
        );
        assert!(r.next_header().unwrap().is_none());
    }

    #[test]
    fn gnu_tar_reads_what_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let long = format!("{}/{}", "d".repeat(120), "f".repeat(90));
        let bytes = archive(&[("x", b"1"), (&long, b"22")]);
        let file = dir.path().join("t.tar");
        std::fs::write(&file, bytes).unwrap();
        let out = std::process::Command::new("tar")
            .arg("tf")
            .arg(&file)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8(out.stdout).unwrap(),
            format!("x\n{long}\n")
        );
    }

    #[test]
    fn strict_refuses_trailing_bytes_and_dirty_padding() {
        let mut bytes = archive(&[("a", b"hello")]);
        bytes.push(0);
        let mut r = TarReader::new(&bytes[..], Strictness::Strict);
        r.next_header().unwrap();
        assert!(matches!(
            r.next_header(),
            Err(TarError::TrailingData { .. })
        ));

        let mut bytes = archive(&[("a", b"hello")]);
        bytes[512 + 10] = 1;
        let mut r = TarReader::new(&bytes[..], Strictness::Strict);
        r.next_header().unwrap();
        assert!(matches!(
            r.next_header(),
            Err(TarError::NonZeroPadding { .. })
        ));
    }

    #[test]
    fn byte_after_checksum_terminator_breaks_canonical_form() {
        let mut bytes = archive(&[("a", b"hello")]);
        bytes[155] = b'x'; // the checksum sums this field as spaces, so only canonicity sees it
        let mut r = TarReader::new(&bytes[..], Strictness::Strict);
        let h = r.next_header().unwrap().unwrap();
        assert!(!h.is_canonical());
    }

    /// Found by fuzzing `tar_reader`: a mode field of eight octal digits (no NUL) panicked
    /// when the canonical header was recomputed from it.
    #[test]
    fn a_mode_wider_than_the_canonical_field_is_not_canonical() {
        let mut bytes = archive(&[("a", b"hello")]);
        bytes[100..108].copy_from_slice(b"77777777");
        let sum: u64 = checksum(bytes[..512].try_into().unwrap());
        bytes[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let mut r = TarReader::new(&bytes[..], Strictness::Strict);
        let h = r.next_header().unwrap().unwrap();
        assert_eq!(h.mode, 0o77777777);
        assert!(!h.is_canonical());
        assert!(matches!(
            ustar_header("a", HeaderKind::Regular, h.mode, 5, 0),
            Err(TarError::ValueTooLarge { field: "mode", .. })
        ));
    }

    #[test]
    fn huge_sizes_use_base256() {
        let h = ustar_header("big", HeaderKind::Regular, 0o644, 10 << 30, 0).unwrap();
        assert_eq!(parse_number(&h[124..136], 0, "size").unwrap(), 10 << 30);
    }

    #[test]
    fn truncation_is_reported() {
        let bytes = archive(&[("a", &[3u8; 2000])]);
        for cut in [100, 700, bytes.len() - 1] {
            let mut r = TarReader::new(&bytes[..cut], Strictness::Strict);
            let res = (|| {
                while let Some(_h) = r.next_header()? {
                    io::copy(&mut r, &mut io::sink())?;
                }
                Ok::<_, TarError>(())
            })();
            assert!(res.is_err(), "cut at {cut} was accepted");
        }
    }

    #[test]
    fn lenient_applies_pax_path() {
        let mut out = Vec::new();
        let rec = "30 path=a/very/long/name/here\n";
        assert_eq!(rec.len(), 30);
        let mut pax = ustar_header("pax", HeaderKind::Regular, 0o644, rec.len() as u64, 0).unwrap();
        pax[156] = b'x';
        pax[148..156].copy_from_slice(b"        ");
        let sum = checksum(&pax);
        pax[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend(pax);
        out.extend(rec.as_bytes());
        out.extend(std::iter::repeat_n(0, padding(rec.len() as u64) as usize));
        out.extend(archive(&[("short", b"x")]));
        let mut r = TarReader::new(&out[..], Strictness::Lenient);
        assert_eq!(
            r.next_header().unwrap().unwrap().path,
            "a/very/long/name/here"
        );
    }
}
