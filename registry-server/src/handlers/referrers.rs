//! `GET /v2/<name>/referrers/<digest>` (OCI 1.1), filtered by artifact type and paginated.

use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::Response;
use registry::content_digest::ContentDigest;

use crate::http::*;
use crate::Registry;

/// Referrers listed per response at most; more are reached through the `Link` header.
pub(crate) const REFERRERS_PAGE: usize = 256;

impl Registry {
    /// `GET /v2/<name>/referrers/<digest>[?artifactType=T]`: an image index of the manifests
    /// whose subject is `digest` (an empty one when there are none, as the spec asks).
    pub(crate) async fn referrers(&self, name: &str, digest: &str, query: &str) -> Response<Body> {
        let Ok(subject) = digest.parse::<ContentDigest>() else {
            return bad_digest();
        };
        let params = query_params(query);
        let filter = params.get("artifactType");
        let mut found = self.store.catalog().await.referrers(name, &subject);
        // Pages in digest order, `n` at a time (at most REFERRERS_PAGE), after `last`.
        found.sort_by_key(|(d, _)| d.to_string());
        let page = params
            .get("n")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(REFERRERS_PAGE)
            .clamp(1, REFERRERS_PAGE);
        if let Some(last) = params.get("last") {
            found.retain(|(d, _)| d.to_string().as_str() > last.as_str());
        }
        let found: Vec<_> = found
            .into_iter()
            .filter(|(_, r)| filter.is_none_or(|f| r.artifact_type.as_ref() == Some(f)))
            .collect();
        let next = (found.len() > page).then(|| found[page - 1].0.to_string());
        let manifests: Vec<serde_json::Value> = found
            .iter()
            .take(page)
            .map(|(d, r)| {
                let mut desc = serde_json::json!({
                    "mediaType": r.media_type,
                    "digest": d.to_string(),
                    "size": r.size,
                });
                if let Some(t) = &r.artifact_type {
                    desc["artifactType"] = serde_json::json!(t);
                }
                if !r.annotations.is_empty() {
                    desc["annotations"] = serde_json::json!(r.annotations);
                }
                desc
            })
            .collect();
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": airgap::oci::OCI_INDEX,
            "manifests": manifests,
        });
        let mut r = ok_json(serde_json::to_vec(&body).unwrap_or_default());
        r.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static(airgap::oci::OCI_INDEX),
        );
        if filter.is_some() {
            r.headers_mut().insert(
                "oci-filters-applied",
                HeaderValue::from_static("artifactType"),
            );
        }
        if let Some(last) = next {
            let mut link = format!("</v2/{name}/referrers/{subject}?n={page}&last={last}");
            if let Some(f) = filter {
                link.push_str(&format!("&artifactType={}", f.replace('+', "%2B")));
            }
            link.push_str(">; rel=\"next\"");
            if let Ok(v) = HeaderValue::from_str(&link) {
                r.headers_mut().insert(hyper::header::LINK, v);
            }
        }
        r
    }
}
