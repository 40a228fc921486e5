//! The node agent: supervises the services defined under `etc/airgap/services/` (etcd, the
//! built-in registry), restarting each with exponential backoff, logging each to
//! `var/log/airgap/<name>.log` and publishing its view in `var/lib/airgap/agent.json`.
//!
//! It is deliberately plain blocking code on one thread: it waits on children and sleeps, and
//! children get `PR_SET_PDEATHSIG`, which fires when the spawning *thread* dies, so one thread
//! is what makes "the agent was SIGKILLed" also stop etcd instead of orphaning it.
//!
//! One agent per root, enforced by an exclusive `flock` on `var/lib/airgap/agent.lock`: the
//! lock is also how the installer and `status` tell whether an agent is alive.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::audit::{now_rfc3339, AuditLog, Outcome};
use crate::files::{write_atomic, PUBLIC};
use crate::host::Host;
use crate::layout::NodeLayout;
use crate::service::ServiceSpec;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("an agent already runs for {root} (pid {pid})")]
    AlreadyRunning { root: String, pid: String },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: String,
        #[source]
        cause: io::Error,
    },
    #[error("systemctl {args} failed ({status})")]
    Systemctl {
        args: String,
        status: std::process::ExitStatus,
    },
    #[error("the agent did not start within {secs}s; see {log}")]
    StartTimeout { secs: u64, log: String },
    #[error("the agent (pid {pid}) did not stop within {secs}s")]
    StopTimeout { pid: u32, secs: u64 },
    #[error(transparent)]
    Service(#[from] crate::service::ServiceError),
}

/// What the agent publishes about itself and each service.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AgentState {
    pub pid: u32,
    pub started: String,
    pub services: BTreeMap<String, ServiceState>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    pub restarts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
}

/// Backoff between restarts: 1 s doubling to 30 s; a run of 60 s or more resets it.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
const STABLE_AFTER: Duration = Duration::from_secs(60);
const STOP_GRACE: Duration = Duration::from_secs(10);
const TICK: Duration = Duration::from_millis(200);

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

struct Supervised {
    spec: ServiceSpec,
    child: Option<Child>,
    started_at: Option<Instant>,
    restart_at: Instant,
    backoff: Duration,
    state: ServiceState,
}

/// Holds the per-root lock for as long as it lives.
pub struct AgentLock {
    _file: File,
}

fn lock_file(layout: &NodeLayout) -> Result<File, AgentError> {
    let path = layout.agent_lock();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|cause| AgentError::Io {
            what: "creating",
            path: dir.display().to_string(),
            cause,
        })?;
    }
    OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(&path)
        .map_err(|cause| AgentError::Io {
            what: "opening",
            path: path.display().to_string(),
            cause,
        })
}

/// Takes the agent lock, or says which agent has it.
pub fn try_lock(layout: &NodeLayout) -> Result<Option<AgentLock>, AgentError> {
    let file = lock_file(layout)?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        Ok(Some(AgentLock { _file: file }))
    } else {
        Ok(None)
    }
}

/// The running agent's pid, if an agent holds the lock.
pub fn running_pid(layout: &NodeLayout) -> Result<Option<u32>, AgentError> {
    if try_lock(layout)?.is_some() {
        return Ok(None);
    }
    Ok(Some(read_state(layout).map(|s| s.pid).unwrap_or(0)))
}

pub fn read_state(layout: &NodeLayout) -> Option<AgentState> {
    let bytes = std::fs::read(layout.agent_state()).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Runs the supervisor until SIGTERM or SIGINT, then stops every service.
pub fn run(layout: &NodeLayout) -> Result<(), AgentError> {
    let Some(_lock) = try_lock(layout)? else {
        return Err(AgentError::AlreadyRunning {
            root: layout.root().display().to_string(),
            pid: read_state(layout)
                .map(|s| s.pid.to_string())
                .unwrap_or_else(|| "unknown".into()),
        });
    };
    // SAFETY: installing an async-signal-safe handler that only stores to an atomic.
    unsafe {
        libc::signal(
            libc::SIGTERM,
            request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGINT,
            request_stop as extern "C" fn(libc::c_int) as libc::sighandler_t,
        );
    }
    let audit = AuditLog::new(layout);
    audit.record(
        "agent.start",
        &layout.root().display().to_string(),
        Outcome::Done,
    );
    let mut state = AgentState {
        pid: std::process::id(),
        started: now_rfc3339(),
        services: BTreeMap::new(),
    };
    let mut services: BTreeMap<String, Supervised> = BTreeMap::new();
    let mut ticks: u32 = 0;
    publish(layout, &state);
    while !STOP.load(Ordering::SeqCst) {
        let specs = match ServiceSpec::load_all(&layout.services_dir()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("{e}");
                std::thread::sleep(TICK);
                continue;
            }
        };
        // Removed or changed definitions: stop the old process.
        services.retain(|name, s| {
            let keep = specs.get(name) == Some(&s.spec);
            if !keep {
                stop_child(s);
                audit.record("service.stop", name, Outcome::Done);
            }
            keep
        });
        for (name, spec) in specs {
            services.entry(name).or_insert_with(|| Supervised {
                spec,
                child: None,
                started_at: None,
                restart_at: Instant::now(),
                backoff: BACKOFF_START,
                state: ServiceState::default(),
            });
        }
        for (name, s) in services.iter_mut() {
            supervise(layout, &audit, name, s);
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(LOG_CHECK_EVERY) {
            for name in services.keys().map(String::as_str).chain(["agent"]) {
                let path = layout.log_dir().join(format!("{name}.log"));
                if let Err(e) = rotate_if_larger(&path, MAX_LOG_BYTES) {
                    tracing::warn!(log = %path.display(), error = %e, "rotating a log failed");
                }
            }
        }
        let view: BTreeMap<String, ServiceState> = services
            .iter()
            .map(|(n, s)| (n.clone(), s.state.clone()))
            .collect();
        if view != state.services {
            state.services = view;
            publish(layout, &state);
        }
        std::thread::sleep(TICK);
    }
    for (name, s) in services.iter_mut() {
        stop_child(s);
        audit.record("service.stop", name, Outcome::Done);
    }
    let _ = std::fs::remove_file(layout.agent_state());
    audit.record(
        "agent.stop",
        &layout.root().display().to_string(),
        Outcome::Done,
    );
    Ok(())
}

fn supervise(layout: &NodeLayout, audit: &AuditLog, name: &str, s: &mut Supervised) {
    if let Some(child) = &mut s.child {
        match child.try_wait() {
            Ok(None) => {
                if s.started_at.is_some_and(|t| t.elapsed() >= STABLE_AFTER) {
                    s.backoff = BACKOFF_START;
                }
                return;
            }
            Ok(Some(status)) => {
                let ran = s.started_at.map(|t| t.elapsed()).unwrap_or_default();
                if ran >= STABLE_AFTER {
                    s.backoff = BACKOFF_START;
                }
                s.child = None;
                s.state.pid = None;
                s.state.last_exit = Some(format!("{status} at {}", now_rfc3339()));
                s.restart_at = Instant::now() + s.backoff;
                audit.record_with(
                    "service.exit",
                    name,
                    Outcome::Failed,
                    Some(&format!("{status}; restarting in {}s", s.backoff.as_secs())),
                );
                s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
                return;
            }
            Err(e) => {
                tracing::warn!(service = name, "waiting on the service: {e}");
                return;
            }
        }
    }
    if Instant::now() < s.restart_at {
        return;
    }
    match spawn(layout, &s.spec) {
        Ok(child) => {
            if s.state.since.is_some() {
                s.state.restarts += 1;
            }
            s.state.pid = Some(child.id());
            s.state.since = Some(now_rfc3339());
            s.started_at = Some(Instant::now());
            s.child = Some(child);
            audit.record("service.start", name, Outcome::Done);
        }
        Err(e) => {
            s.restart_at = Instant::now() + s.backoff;
            let cause = airgap::error_chain::chain(&e);
            s.state.last_exit = Some(format!("could not start: {cause}"));
            audit.record_with("service.start", name, Outcome::Failed, Some(&cause));
            s.backoff = (s.backoff * 2).min(BACKOFF_MAX);
        }
    }
}

fn spawn(layout: &NodeLayout, spec: &ServiceSpec) -> io::Result<Child> {
    let log = open_log(&layout.log_dir().join(format!("{}.log", spec.name)))?;
    let mut command = Command::new(&spec.program);
    command
        .args(&spec.args)
        .envs(&spec.env)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl and setpgid are async-signal-safe and touch no Rust state.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(io::Error::last_os_error());
            }
            // Its own process group: a terminal's Ctrl-C reaches the agent, which then stops
            // services in order, rather than every process at once.
            libc::setpgid(0, 0);
            Ok(())
        });
    }
    command.spawn()
}

fn stop_child(s: &mut Supervised) {
    let Some(mut child) = s.child.take() else {
        return;
    };
    // SAFETY: signalling a child we spawned and have not reaped, so the pid is ours.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            s.state.pid = None;
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    s.state.pid = None;
}

fn publish(layout: &NodeLayout, state: &AgentState) {
    if let Ok(mut bytes) = serde_json::to_vec_pretty(state) {
        bytes.push(b'\n');
        if let Err(e) = write_atomic(&layout.agent_state(), &bytes, PUBLIC) {
            tracing::warn!("publishing agent state: {e}");
        }
    }
}

/// A service log past this many bytes is rotated: a flood of refusals (a registry under a
/// password-guessing attack, say) must not fill the node's disk.
pub const MAX_LOG_BYTES: u64 = 64 << 20;
/// Logs are looked at every this many ticks (5 s).
const LOG_CHECK_EVERY: u32 = 25;

/// When `path` is larger than `max`, its content moves to `<path>.1` (replacing the previous
/// one) and `path` is emptied in place: services write with `O_APPEND` to the descriptor they
/// were started with, so they go on at the new end without being restarted (logrotate's
/// copytruncate; lines written during the copy can be lost). Returns whether it rotated.
pub fn rotate_if_larger(path: &Path, max: u64) -> io::Result<bool> {
    match std::fs::metadata(path) {
        Ok(m) if m.len() > max => {}
        Ok(_) => return Ok(false),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    }
    let mut old = path.as_os_str().to_owned();
    old.push(".1");
    let old = std::path::PathBuf::from(old);
    let partial = old.with_extension("1.partial");
    std::fs::copy(path, &partial)?;
    std::fs::rename(&partial, &old)?;
    OpenOptions::new().write(true).open(path)?.set_len(0)?;
    Ok(true)
}

pub fn open_log(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
}

/// How the agent is kept running on this node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Launch {
    /// systemd runs `airgap-agent.service` (root is `/` and systemd is PID 1).
    Systemd,
    /// `airgap agent --root DIR` started in its own session.
    Detached,
}

impl Launch {
    pub fn for_node(layout: &NodeLayout) -> Launch {
        if layout.root() == Path::new("/") && Path::new("/run/systemd/system").is_dir() {
            Launch::Systemd
        } else {
            Launch::Detached
        }
    }
}

/// The systemd unit that runs the agent.
pub fn systemd_unit(exe: &Path, layout: &NodeLayout) -> String {
    format!(
        "[Unit]\n\
         Description=airgap node agent (etcd, registry)\n\
         Documentation=https://github.com/airgap/airgap\n\
         After=network-online.target\n\
         Wants=network-online.target\n\
         \n\
         [Service]\n\
         ExecStart={} agent --root {}\n\
         Restart=always\n\
         RestartSec=2\n\
         KillMode=mixed\n\
         TimeoutStopSec=30\n\
         LimitNOFILE=65536\n\
         \n\
         [Install]\n\
         WantedBy=multi-user.target\n",
        exe.display(),
        layout.root().display()
    )
}

/// Makes sure an agent runs for this root: nothing to do when one holds the lock; otherwise
/// start it (systemd, or detached) and wait until it holds the lock.
pub fn ensure_running(
    layout: &NodeLayout,
    exe: &Path,
    host: &dyn crate::host::Host,
) -> Result<(Launch, bool), AgentError> {
    let launch = Launch::for_node(layout);
    if running_pid(layout)?.is_some() {
        return Ok((launch, false));
    }
    match launch {
        Launch::Systemd => {
            crate::files::write_if_changed(
                &layout.systemd_unit(),
                systemd_unit(exe, layout).as_bytes(),
                PUBLIC,
            )
            .map_err(|cause| AgentError::Io {
                what: "writing",
                path: layout.systemd_unit().display().to_string(),
                cause,
            })?;
            for args in [
                &["daemon-reload"][..],
                &["enable", "--now", "airgap-agent.service"][..],
            ] {
                let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
                let output =
                    host.run(Path::new("systemctl"), &args)
                        .map_err(|cause| AgentError::Io {
                            what: "running systemctl for",
                            path: "airgap-agent.service".into(),
                            cause,
                        })?;
                if !output.status.success() {
                    return Err(AgentError::Systemctl {
                        args: args.join(" "),
                        status: output.status,
                    });
                }
            }
        }
        Launch::Detached => {
            let log_path = layout.log_dir().join("agent.log");
            let log = open_log(&log_path).map_err(|cause| AgentError::Io {
                what: "opening",
                path: log_path.display().to_string(),
                cause,
            })?;
            let mut command = Command::new(exe);
            command
                .arg("agent")
                .arg("--root")
                .arg(layout.root())
                .stdin(Stdio::null())
                .stdout(log.try_clone().map_err(|cause| AgentError::Io {
                    what: "opening",
                    path: log_path.display().to_string(),
                    cause,
                })?)
                .stderr(log);
            // SAFETY: setsid is async-signal-safe; the agent must outlive the installer and
            // its terminal.
            unsafe {
                command.pre_exec(|| {
                    libc::setsid();
                    Ok(())
                });
            }
            command.spawn().map_err(|cause| AgentError::Io {
                what: "starting the agent",
                path: exe.display().to_string(),
                cause,
            })?;
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if running_pid(layout)?.is_some() && read_state(layout).is_some() {
            return Ok((launch, true));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(AgentError::StartTimeout {
        secs: 10,
        log: layout.log_dir().join("agent.log").display().to_string(),
    })
}

/// Stops the agent (and with it every service). Returns the pid stopped, if one ran.
/// systemctl runs through `host`.
pub fn stop(layout: &NodeLayout, host: &dyn Host) -> Result<Option<u32>, AgentError> {
    let Some(pid) = running_pid(layout)? else {
        return Ok(None);
    };
    if Launch::for_node(layout) == Launch::Systemd {
        let systemctl = host
            .find_program("systemctl")
            .unwrap_or_else(|| PathBuf::from("systemctl"));
        let _ = host.run(&systemctl, &["stop".into(), "airgap-agent.service".into()]);
    } else if pid != 0 {
        // SAFETY: signalling the pid the lock holder published.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
    let secs = STOP_GRACE.as_secs() + 5;
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if running_pid(layout)?.is_none() {
            return Ok(Some(pid));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(AgentError::StopTimeout { pid, secs })
}

pub fn exe_path() -> PathBuf {
    std::env::current_exe().unwrap_or_else(|_| PathBuf::from("airgap"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_log_past_its_limit_moves_aside_and_the_writer_goes_on_at_its_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("registry.log");
        let mut writer = open_log(&path).unwrap();
        writer.write_all(&[b'a'; 100]).unwrap();
        assert!(!rotate_if_larger(&path, 1000).unwrap());
        assert!(rotate_if_larger(&path, 50).unwrap());
        assert_eq!(
            std::fs::read(dir.path().join("registry.log.1")).unwrap(),
            [b'a'; 100]
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        // The service's descriptor (O_APPEND) writes at the new end, not at offset 100.
        writer.write_all(b"next\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"next\n");
        assert!(!rotate_if_larger(&dir.path().join("absent.log"), 1).unwrap());
    }
}
