//! What the registry offers its operator: `/metrics` and `POST /airgap/v1/gc`.

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};

use crate::http::*;
use crate::metrics::Gauge;
use crate::store::Store;
use crate::Registry;

/// Blobs younger than this are never collected: a blob a client has just written by other
/// means than this server is not garbage yet.
pub const DEFAULT_GC_GRACE: std::time::Duration = std::time::Duration::from_secs(600);

impl Registry {
    pub(crate) async fn metrics_response(&self) -> Response<Body> {
        let mut gauges = Vec::new();
        {
            let catalog = self.store.catalog().await;
            gauges.push(Gauge {
                name: "airgap_registry_repositories",
                help: "Repositories in the catalog.",
                value: catalog.repositories.len() as u64,
            });
            gauges.push(Gauge {
                name: "airgap_registry_manifests",
                help: "Manifests in the catalog.",
                value: catalog.manifest_count() as u64,
            });
        }
        if let Store::Layout(layout) = &self.store {
            gauges.push(Gauge {
                name: "airgap_registry_uploads",
                help: "Upload sessions open.",
                value: layout.open_uploads().await as u64,
            });
            gauges.push(Gauge {
                name: "airgap_registry_store_bytes",
                help: "Bytes of blobs and manifests in the store directory.",
                value: layout.stored_bytes(),
            });
        }
        let mut r = Response::new(full(self.metrics.render(&gauges).into_bytes()));
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        r
    }

    /// `POST /airgap/v1/gc[?dryRun=true][&graceSeconds=N]`: garbage collection of a running
    /// store directory, safe against the pushes it serves at the same time.
    pub(crate) async fn gc(&self, query: &str) -> Response<Body> {
        let layout = match self.deletable() {
            Ok(l) => l,
            Err(r) => return *r,
        };
        let params = query_params(query);
        let dry_run = params
            .get("dryRun")
            .is_some_and(|v| v == "true" || v == "1");
        let grace = match params.get("graceSeconds").map(|v| v.parse::<u64>()) {
            None => DEFAULT_GC_GRACE,
            Some(Ok(s)) => std::time::Duration::from_secs(s),
            Some(Err(_)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "UNSUPPORTED",
                    "graceSeconds must be a number",
                )
            }
        };
        match layout.gc(dry_run, grace).await {
            Ok(report) => {
                if !dry_run {
                    if let Err(e) = layout.flush_index().await {
                        return internal(&e);
                    }
                }
                ok_json(serde_json::to_vec(&report).unwrap_or_default())
            }
            Err(e) => internal(&e),
        }
    }
}
