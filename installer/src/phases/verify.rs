//! Phase verify: the signature was checked when the release was opened; here every entry's
//! size and digest, in one streaming pass (a release read from a registry was checked blob by
//! blob as it was copied, before the upgrade started). Skipped when the journal shows this very file,
//! unchanged, already passed (the seeder re-checks every blob it reads anyway). Only once
//! the bundle is trusted does anything get written: the journal's record of it and the copy
//! of `install.yaml`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use airgap::PublicKey;

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::InstallContext;
use crate::error::PhaseError;
use crate::files::{write_if_changed, PRIVATE};
use crate::journal::{Journal, Phase, PhaseState, VerifiedBundle, WorkflowKind};
use crate::layout::NodeLayout;
use crate::phase::Scope;
use crate::release::ReleaseOrigin;

pub(super) fn run(
    ctx: &mut InstallContext,
    journal: &mut Journal,
    workflow: WorkflowKind,
) -> Result<String, PhaseError> {
    let (fingerprint, summary) = match ctx.origin.clone() {
        ReleaseOrigin::Registry(url) => {
            // Its signature verified when it was fetched, and every blob was checked as it was
            // copied into the cluster's registry.
            let id = ctx.release.id().clone();
            let summary = format!(
                "{id}: signature OK (the release artifact in {url}); every blob digest-checked as it was copied"
            );
            let fingerprint = VerifiedBundle {
                name: id.name.clone(),
                version: id.version.to_string(),
                index_sha256: id.index_sha256.to_string(),
                path: None,
                registry: Some(url),
                size: 0,
                modified_unix_nanos: 0,
            };
            (fingerprint, summary)
        }
        ReleaseOrigin::Bundle(bundle) => verify_bundle(ctx, journal, workflow, &bundle)?,
    };
    journal.installation = Some(ctx.config.metadata.name.to_string());
    journal.node = Some(ctx.node.name.to_string());
    journal.bundle = Some(fingerprint);
    let install_yaml =
        std::fs::read(&ctx.config_path).map_err(PhaseError::io("reading", &ctx.config_path))?;
    let copy = ctx.layout.install_yaml();
    write_if_changed(&copy, &install_yaml, PRIVATE).map_err(PhaseError::io("writing", &copy))?;
    Ok(summary)
}

/// The bundle file hashed in full against its signed index, unless the journal shows this very
/// file already passed.
fn verify_bundle(
    ctx: &mut InstallContext,
    journal: &Journal,
    workflow: WorkflowKind,
    bundle: &std::path::Path,
) -> Result<(VerifiedBundle, String), PhaseError> {
    let bundle = bundle.to_path_buf();
    let fail = |source: airgap::VerifyError| PhaseError::Verify {
        bundle: bundle.clone(),
        source,
    };
    let index = ctx.release.verified().index();
    let id = ctx.release.id().clone();
    let meta = std::fs::metadata(&bundle).map_err(PhaseError::io("reading", &bundle))?;
    let fingerprint = VerifiedBundle {
        name: id.name.clone(),
        version: id.version.to_string(),
        index_sha256: id.index_sha256.to_string(),
        path: Some(std::path::absolute(&bundle).unwrap_or_else(|_| bundle.clone())),
        registry: None,
        size: meta.len(),
        modified_unix_nanos: meta
            .modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos()),
    };
    let already = journal.bundle.as_ref() == Some(&fingerprint)
        && journal.state(workflow, Phase::Verify) == Some(PhaseState::Done);
    let summary = if already {
        format!("{id}: signature OK; digests checked by an earlier run")
    } else {
        // Entries' bytes, what the hashing threads report progress in.
        let total: u64 = index.entries.iter().map(|e| e.size).sum();
        ctx.observer.bytes_total("verifying", total);
        // The release was opened with the key; the file is verified again with it, so what
        // is hashed is what was signed.
        let key: &PublicKey = ctx.release.key();
        let seen = AtomicU64::new(0);
        let halfway = AtomicBool::new(false);
        let observer = ctx.observer.clone();
        let failpoint = ctx.failpoint;
        let workers = airgap::verify_file::all_cores();
        let streamed = airgap::verify_file(&bundle, key, workers, |hashed| {
            let before = seen.fetch_max(hashed, Ordering::Relaxed);
            if hashed > before {
                observer.bytes_done(hashed - before);
            }
            if hashed * 2 >= total && !halfway.swap(true, Ordering::Relaxed) {
                failpoint.reached(Phase::Verify);
            }
        })
        .map_err(fail)?;
        ctx.observer.bytes_finished();
        if streamed.index_digest() != id.index_sha256 {
            // The file changed between opening and streaming: trust neither.
            return Err(PhaseError::Changed { bundle });
        }
        format!("{id}: signature and {} entries OK", index.entries.len())
    };
    Ok((fingerprint, summary))
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Verify,
    about: "check every entry of the signed bundle; record it and install.yaml",
    install: Some(Scope::Node),
    upgrade: InUpgrade::First(Scope::Node),
    preflight: true,
    run: |ctx, journal, workflow| Box::pin(std::future::ready(run(ctx, journal, workflow))),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![
        OwnedPath::state(layout.etc()),
        OwnedPath::state(layout.state_dir()),
    ]
}
