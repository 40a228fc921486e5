//! The API's handlers, one module per resource. Each is a method on [`Registry`](crate::Registry)
//! that the [router](crate::router) calls once the path named a valid repository and the
//! request was authorized; HTTP plumbing (bodies, errors, ranges, pagination) is in
//! [`http`](crate::http).

pub(crate) mod blobs;
pub(crate) mod listing;
pub(crate) mod manifests;
pub(crate) mod operations;
pub(crate) mod referrers;
pub(crate) mod tags;
pub(crate) mod uploads;

#[cfg(test)]
mod tests;
