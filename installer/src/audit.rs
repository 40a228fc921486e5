//! The audit log: one JSON line per action the installer or agent takes (time, action, object,
//! outcome). Objects are names and paths; a secret's value never reaches this file.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use serde::Serialize;

use crate::layout::NodeLayout;

#[derive(Debug, Clone)]
pub struct AuditLog {
    path: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Something was created or changed.
    Done,
    /// It was already in place; nothing changed.
    Unchanged,
    Failed,
    /// Left out on the operator's request.
    Skipped,
}

#[derive(Serialize)]
struct Record<'a> {
    time: String,
    action: &'a str,
    object: &'a str,
    outcome: Outcome,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'a str>,
}

pub fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}

impl AuditLog {
    pub fn new(layout: &NodeLayout) -> Self {
        AuditLog {
            path: layout.audit_log(),
        }
    }

    /// Appends one record. The log is best effort: a full disk must not stop an install, so a
    /// failed write is reported through tracing only.
    pub fn record(&self, action: &str, object: &str, outcome: Outcome) {
        self.record_with(action, object, outcome, None)
    }

    /// As [`AuditLog::record`], with a detail line (an error message; never a secret).
    pub fn record_with(&self, action: &str, object: &str, outcome: Outcome, detail: Option<&str>) {
        let record = Record {
            time: now_rfc3339(),
            action,
            object,
            outcome,
            detail,
        };
        let Ok(mut line) = serde_json::to_vec(&record) else {
            return;
        };
        line.push(b'\n');
        let result = (|| {
            if let Some(dir) = self.path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            // One write of a whole line on an O_APPEND file: lines from the installer and the
            // agent never interleave.
            OpenOptions::new()
                .append(true)
                .create(true)
                .mode(0o600)
                .open(&self.path)?
                .write_all(&line)
        })();
        if let Err(e) = result {
            tracing::warn!(path = %self.path.display(), "audit log not written: {e}");
        }
    }
}
