//! The air-gapped side of airgap: `airgap install` and the node it leaves behind.
//!
//! An install is a fixed sequence of [`journal::Phase`]s (verify, pki, etcd, keys, registry,
//! agent, kubernetes, platform), each idempotent so that a re-run after any failure, even a SIGKILL, completes the
//! install without redoing or undoing what is done. The [`agent`] supervises the node's
//! services (etcd, the built-in registry) afterwards. Everything lives under a
//! [`layout::NodeLayout`] rooted at `--root`, so tests install into temporary directories.
//!
//! This crate is synchronous where it touches files and async (tokio) where it talks to etcd
//! and registries; the CLI owns the runtime.

pub mod agent;
pub mod audit;
pub mod config;
pub mod etcd;
pub mod files;
pub mod install;
pub mod journal;
pub mod keys;
pub mod kube_object;
pub mod kubernetes;
pub mod layout;
pub mod pack_files;
pub mod pki;
pub mod platform;
pub mod secretbox;
pub mod service;
pub mod status;
pub mod template;
pub mod tls;
