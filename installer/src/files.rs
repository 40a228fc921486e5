//! Crash-safe file writes: a SIGKILL at any instant leaves either the old file or the new one,
//! never a torn one, which is what lets every phase re-run over whatever it finds.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Mode for private keys, key material and anything holding a password.
pub const PRIVATE: u32 = 0o600;

/// Lets SIGPIPE end this process quietly, as it ends `ls` or `cat`: `airgap … | head -1`
/// then exits when the reader is gone instead of panicking in `println!` (Rust ignores
/// SIGPIPE by default). For commands that print and exit, not for the long-running services,
/// whose peers may close sockets under them.
pub fn quiet_on_broken_pipe() {
    // SAFETY: restoring a signal's default disposition has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Sets this process's umask to 022. Whatever the caller's (000 in some shells and CI
/// runners), nothing airgap or the services it starts create is group- or world-writable;
/// what must be private says so with its own mode.
pub fn restrict_umask() {
    // SAFETY: umask only sets this process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o022);
    }
}
/// Raises this process's soft limit on open files to its hard limit (what Go's runtime and
/// systemd's services do by hand): a listener under a flood of connections then refuses them
/// with an answer (see the registry's connection gate) long before the kernel refuses the
/// accept. Services started by the agent inherit it. Best effort: the limit stays on failure.
pub fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write the rlimit struct we own; they change
    // only this process's limits.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Mode for certificates and configuration without secrets.
pub const PUBLIC: u32 = 0o644;

/// Writes `bytes` to `path` with `mode` through a temporary file, fsync and rename. The
/// temporary file is created with `mode`, so a private key is never readable by others, even
/// for an instant.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let tmp = dir.join(format!(".{}.tmp", name.to_string_lossy()));
    let _ = fs::remove_file(&tmp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.set_permissions(fs::Permissions::from_mode(mode))?;
    file.sync_all()?;
    drop(file);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
}

/// Writes the file only when its content or mode differs, so re-runs leave files (and their
/// modification times) untouched. Returns whether it wrote.
pub fn write_if_changed(path: &Path, bytes: &[u8], mode: u32) -> io::Result<bool> {
    if let Ok(existing) = fs::read(path) {
        let same_mode = fs::metadata(path)
            .map(|m| m.permissions().mode() & 0o777 == mode)
            .unwrap_or(false);
        if existing == bytes && same_mode {
            return Ok(false);
        }
    }
    write_atomic(path, bytes, mode)?;
    Ok(true)
}
