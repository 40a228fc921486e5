//! `GET /v2/_catalog`, paginated.

use hyper::Response;

use crate::http::*;
use crate::Registry;

impl Registry {
    pub(crate) async fn catalog(&self, query: &str) -> Response<Body> {
        let catalog = self.store.catalog().await;
        let names: Vec<&String> = catalog.repositories.keys().collect();
        paginate("repositories", names, query, "/v2/_catalog", None)
    }
}
