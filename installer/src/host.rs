//! What a workflow does to the machine beyond its own files: programs it runs (systemctl,
//! kubeadm, kubectl), programs it looks for on PATH, and the clock. Behind one trait so the
//! workflow runner's ordering and resume logic are tested with a [`RecordingHost`] that runs
//! nothing, while the end-to-end tests use the [`SystemHost`] against real etcd and registries.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;
use std::time::SystemTime;

/// One program run: what it was and what it printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    pub program: PathBuf,
    pub args: Vec<String>,
}

pub trait Host: Send + Sync {
    /// Runs `program` with `args`, no standard input, output captured. Blocking: the phases
    /// that run programs run one at a time.
    fn run(&self, program: &Path, args: &[String]) -> std::io::Result<Output>;

    /// The executable `name` on PATH, if any.
    fn find_program(&self, name: &str) -> Option<PathBuf>;

    fn now(&self) -> SystemTime;
}

/// The machine itself.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemHost;

impl Host for SystemHost {
    fn run(&self, program: &Path, args: &[String]) -> std::io::Result<Output> {
        Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .output()
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        find_on_path(name)
    }

    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The first executable file called `program` in `$PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A host for unit tests: records every program it is asked to run and answers with success
/// (or the failure set for that program); the clock stands still at a fixed time.
#[derive(Debug)]
pub struct RecordingHost {
    calls: Mutex<Vec<Call>>,
    programs: Vec<String>,
    failing: Mutex<Vec<String>>,
    now: SystemTime,
}

impl RecordingHost {
    /// `programs` are the names [`Host::find_program`] finds (under `/fake/bin`).
    pub fn new(programs: &[&str]) -> Self {
        RecordingHost {
            calls: Mutex::new(Vec::new()),
            programs: programs.iter().map(|p| p.to_string()).collect(),
            failing: Mutex::new(Vec::new()),
            now: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        }
    }

    /// Makes every run of the program called `name` exit 1 until [`RecordingHost::heal`].
    pub fn fail(&self, name: &str) {
        if let Ok(mut f) = self.failing.lock() {
            f.push(name.to_string());
        }
    }

    pub fn heal(&self) {
        if let Ok(mut f) = self.failing.lock() {
            f.clear();
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }
}

impl Host for RecordingHost {
    fn run(&self, program: &Path, args: &[String]) -> std::io::Result<Output> {
        use std::os::unix::process::ExitStatusExt;
        if let Ok(mut calls) = self.calls.lock() {
            calls.push(Call {
                program: program.to_path_buf(),
                args: args.to_vec(),
            });
        }
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let fails = self.failing.lock().is_ok_and(|f| f.contains(&name));
        Ok(Output {
            // A wait status: exit code in the high byte.
            status: std::process::ExitStatus::from_raw(if fails { 1 << 8 } else { 0 }),
            stdout: Vec::new(),
            stderr: if fails {
                format!("{name}: failing as the test asked\n").into_bytes()
            } else {
                Vec::new()
            },
        })
    }

    fn find_program(&self, name: &str) -> Option<PathBuf> {
        self.programs
            .iter()
            .any(|p| p == name)
            .then(|| Path::new("/fake/bin").join(name))
    }

    fn now(&self) -> SystemTime {
        self.now
    }
}
