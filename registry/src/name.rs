//! Repository names and references as the distribution spec defines them: the grammar lives in
//! [`airgap::name`], where the signed index is checked with it; the server and the client use
//! the same functions, which is what keeps `..` and friends out of every URL.

pub use airgap::name::*;
