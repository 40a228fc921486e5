//! The air-gapped side of airgap: `airgap install` and the node it leaves behind.
//!
//! An install runs a [`workflow::Workflow`] (`init`; `join` and `upgrade` share the same
//! phases) through one [`workflow::Runner`]: verify, pki, etcd, keys, registry, agent,
//! kubernetes, platform, each a file under [`phases`], each idempotent so that a re-run after
//! any failure, even a SIGKILL, completes the install without redoing or undoing what is
//! done. Phases accept only a verified [`release::Release`]; the cluster records its trusted
//! release in etcd and never moves to a lower one. Errors are typed end to end
//! ([`error`]), secrets are types that never print ([`secret`]), and what touches the
//! machine beyond files goes through [`host::Host`]. The [`agent`] supervises the node's
//! services afterwards. Everything lives under a [`layout::NodeLayout`] rooted at `--root`,
//! so tests install into temporary directories.
//!
//! This crate is synchronous where it touches files and async (tokio) where it talks to etcd
//! and registries; the CLI owns the runtime.

pub mod agent;
pub mod audit;
pub mod cluster;
pub mod config;
pub mod containerd;
pub mod cri;
pub mod error;
pub mod etcd;
pub mod failpoint;
pub mod files;
pub mod host;
pub mod install;
pub mod journal;
pub mod keys;
pub mod kube_object;
pub mod kubernetes;
pub mod layout;
pub mod node_binaries;
pub mod pack_files;
pub mod phase;
pub mod phases;
pub mod pki;
pub mod platform;
pub mod pull_config;
pub mod release;
pub mod release_prune;
pub mod sbom;
pub mod secret;
pub mod secretbox;
pub mod service;
pub mod source;
pub mod status;
pub mod template;
pub mod tenant_keys;
pub mod tls;
pub mod trust_root;
pub mod upgrade;
pub mod upgrade_end;
pub mod upgrade_plan;
pub mod workflow;
