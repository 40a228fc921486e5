//! `GET /v2/<name>/tags/list`, paginated.

use hyper::{Response, StatusCode};

use crate::http::*;
use crate::Registry;

impl Registry {
    pub(crate) async fn tags(&self, name: &str, query: &str) -> Response<Body> {
        let catalog = self.store.catalog().await;
        let Some(repo) = catalog.repository(name) else {
            return error(
                StatusCode::NOT_FOUND,
                "NAME_UNKNOWN",
                "repository name not known to registry",
            );
        };
        let tags: Vec<&String> = repo.tags.keys().collect();
        paginate(
            "tags",
            tags,
            query,
            &format!("/v2/{name}/tags/list"),
            Some(name),
        )
    }
}
