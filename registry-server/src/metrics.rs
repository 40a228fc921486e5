//! `/metrics`: the built-in registry's counters in Prometheus' text format, so the node's
//! monitoring sees requests by status, bytes moved, uploads in flight and the store's size.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Default)]
pub struct Metrics {
    /// (method, status) -> count.
    requests: Mutex<BTreeMap<(String, u16), u64>>,
    bytes_sent: AtomicU64,
    bytes_received: AtomicU64,
    rate_limited: AtomicU64,
}

/// A value known only when scraped (uploads open, bytes stored).
pub struct Gauge {
    pub name: &'static str,
    pub help: &'static str,
    pub value: u64,
}

impl Metrics {
    pub fn request(&self, method: &str, status: u16, sent: u64) {
        let mut requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        *requests.entry((method.to_string(), status)).or_default() += 1;
        self.bytes_sent.fetch_add(sent, Ordering::Relaxed);
    }

    pub fn received(&self, n: u64) {
        self.bytes_received.fetch_add(n, Ordering::Relaxed);
    }

    pub fn rate_limited(&self) {
        self.rate_limited.fetch_add(1, Ordering::Relaxed);
    }

    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::new();
        out.push_str(
            "# HELP airgap_registry_requests_total HTTP requests served, by method and status.\n",
        );
        out.push_str("# TYPE airgap_registry_requests_total counter\n");
        let requests = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        for ((method, status), n) in requests.iter() {
            let _ = writeln!(
                out,
                "airgap_registry_requests_total{{method=\"{method}\",code=\"{status}\"}} {n}"
            );
        }
        drop(requests);
        let counters = [
            (
                "airgap_registry_sent_bytes_total",
                "Response body bytes sent.",
                &self.bytes_sent,
            ),
            (
                "airgap_registry_received_bytes_total",
                "Upload bytes received.",
                &self.bytes_received,
            ),
            (
                "airgap_registry_rate_limited_total",
                "Requests refused by the per-client rate limit.",
                &self.rate_limited,
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                value.load(Ordering::Relaxed)
            );
        }
        for g in gauges {
            let _ = writeln!(
                out,
                "# HELP {} {}\n# TYPE {} gauge\n{} {}",
                g.name, g.help, g.name, g.name, g.value
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_text_format() {
        let m = Metrics::default();
        m.request("GET", 200, 10);
        m.request("GET", 200, 5);
        m.request("PUT", 401, 0);
        let text = m.render(&[Gauge {
            name: "airgap_registry_uploads",
            help: "Open uploads.",
            value: 3,
        }]);
        assert!(text.contains("airgap_registry_requests_total{method=\"GET\",code=\"200\"} 2\n"));
        assert!(text.contains("airgap_registry_requests_total{method=\"PUT\",code=\"401\"} 1\n"));
        assert!(text.contains("airgap_registry_sent_bytes_total 15\n"));
        assert!(text.contains("# TYPE airgap_registry_uploads gauge\nairgap_registry_uploads 3\n"));
    }
}
