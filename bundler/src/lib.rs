//! The connected side of airgap: turns a bundle spec (`bundle.yaml`) into a signed bundle.
//!
//! [`spec`] parses the spec, [`pack`] validates packs and makes them OCI artifacts,
//! [`layout_source`] reads images from local OCI layouts, [`plan`] decides every entry and
//! its order, and [`archive`] writes the result atomically. The format itself lives in the
//! `airgap` core crate; this crate only decides what goes in.

pub mod archive;
pub mod layout_source;
pub mod pack;
pub mod plan;
pub mod spec;

use std::path::{Path, PathBuf};

use airgap::{BundleIndex, SigningKey};

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error(transparent)]
    Plan(#[from] plan::PlanError),
    #[error(transparent)]
    Archive(#[from] archive::ArchiveError),
    #[error("cannot create a work directory beside {path}: {cause}")]
    Workdir { path: String, cause: std::io::Error },
}

pub struct BuildRequest<'a> {
    pub spec: &'a Path,
    pub output: &'a Path,
    pub key: &'a SigningKey,
    /// Seconds since the epoch: the bundle's creation time and every header's mtime.
    pub created: u64,
    /// Cut the archive into parts of at most this many bytes.
    pub split: Option<u64>,
}

pub struct BuildReport {
    pub index: BundleIndex,
    pub files: Vec<PathBuf>,
}

/// Plans and writes a bundle. `on_plan` learns the content size before writing starts;
/// `progress` is told how many bytes each read moved.
pub fn build(
    request: &BuildRequest,
    on_plan: &dyn Fn(&BundleIndex),
    progress: &dyn Fn(u64),
) -> Result<BuildReport, BuildError> {
    let parent = match request.output.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    // Beside the output so the final rename stays on one filesystem; removed on every exit.
    let workdir = tempfile::Builder::new()
        .prefix(".airgap-build-")
        .tempdir_in(&parent)
        .map_err(|cause| BuildError::Workdir {
            path: request.output.display().to_string(),
            cause,
        })?;
    let plan = plan::plan(request.spec, request.created, workdir.path())?;
    on_plan(&plan.index);
    let files = archive::write_bundle(
        &plan,
        request.key,
        request.created,
        workdir.path(),
        request.output,
        request.split,
        progress,
    )?;
    Ok(BuildReport {
        index: plan.index,
        files,
    })
}
