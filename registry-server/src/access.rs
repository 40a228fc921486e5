//! The registry's access log: one line per request on stderr, which the node's agent sends
//! to `registry.log`. JSON lines when stderr is not a terminal (a log file, a collector),
//! a short human line when it is. Never a password: the user name only.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use serde::Serialize;

#[derive(Debug, Serialize)]
pub struct AccessRecord<'a> {
    pub client: SocketAddr,
    /// The authenticated user; absent for anonymous pulls and refused requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub user: Option<&'a str>,
    pub method: &'a str,
    pub path: &'a str,
    pub status: u16,
    /// The response body's length, when known up front.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    pub millis: f64,
}

impl AccessRecord<'_> {
    pub fn emit(&self) {
        let stderr = std::io::stderr();
        let line = if stderr.is_terminal() {
            format!(
                "{} {} {} {} {} {} {:.1}ms\n",
                self.client,
                self.user.unwrap_or("-"),
                self.method,
                self.path,
                self.status,
                self.bytes.map_or("-".to_string(), |b| b.to_string()),
                self.millis
            )
        } else {
            #[derive(Serialize)]
            struct Line<'a> {
                time: String,
                #[serde(flatten)]
                record: &'a AccessRecord<'a>,
            }
            let time = time_now();
            match serde_json::to_string(&Line { time, record: self }) {
                Ok(json) => json + "\n",
                Err(_) => return,
            }
        };
        // One write per line, so concurrent requests' lines never interleave.
        let _ = stderr.lock().write_all(line.as_bytes());
    }
}

/// RFC 3339 UTC, from the system clock.
fn time_now() -> String {
    let t = time::OffsetDateTime::now_utc();
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn time_is_rfc3339() {
        let t = super::time_now();
        assert!(
            t.starts_with("20") && t.ends_with('Z') && t.as_bytes()[10] == b'T',
            "{t}"
        );
    }
}
