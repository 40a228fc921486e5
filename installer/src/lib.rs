//! The air-gapped side of airgap: the install plan and its phases (verify, PKI, etcd, keys,
//! registry seeding, Kubernetes layout, node agent, join, upgrade).
//!
//! Not built yet: this crate holds its place in the workspace so the dependency direction of
//! DESIGN.md (`airgap` core <- `bundler`, `installer` <- CLI) is fixed from the start.
