use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use airgap::parts::PartsReader;
use airgap::tar::{Strictness, TarReader};
use airgap::verify::UnverifiedHeader;
use airgap::{PublicKey, SigningKey};
use anyhow::{bail, Context};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use airgap::Digest;
use bundler::archive::{BlobOrigin, BuildObserver};
use bundler::cache::BlobCache;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget};

use super::progress::{blob_bar, bytes_bar, HumanBytes};

#[derive(Debug, clap::Subcommand)]
pub enum BundleCommand {
    /// Build a signed bundle from a bundle spec.
    #[command(long_about = include_str!("reference/bundle-build.txt"))]
    Build(BuildArgs),
    /// Check a bundle's signature and every entry's size and digest.
    #[command(long_about = include_str!("reference/bundle-verify.txt"))]
    Verify(VerifyArgs),
    /// Show what a bundle holds (reads only its index; does not verify).
    #[command(long_about = include_str!("reference/bundle-inspect.txt"))]
    Inspect(InspectArgs),
    /// Write a software bill of materials of a verified bundle (CycloneDX 1.5 or SPDX 2.3 JSON).
    #[command(long_about = include_str!("reference/bundle-sbom.txt"))]
    Sbom(SbomArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SbomFormat {
    Cyclonedx,
    Spdx,
}

#[derive(Debug, clap::Args)]
pub struct SbomArgs {
    /// The bundle (or the first part of a split bundle).
    pub bundle: PathBuf,
    /// The public key the bundle must be signed with: nothing unverified is listed.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    #[arg(long, value_enum, default_value = "cyclonedx")]
    pub format: SbomFormat,
    /// Where to write it [default: standard output].
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// The bundle spec (bundle.yaml).
    #[arg(short = 'f', long = "file", value_name = "FILE")]
    pub spec: PathBuf,
    /// Where to write the bundle.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// The private signing key (from `airgap keygen`).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// Cut the bundle into parts of at most SIZE (e.g. 4GiB, 700MB): out.tar.000, .001, ...
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub split: Option<u64>,
    /// Blob cache shared by builds: a rebuild downloads only what it lacks
    /// [default: $AIRGAP_CACHE_DIR, $XDG_CACHE_HOME/airgap or ~/.cache/airgap].
    #[arg(long, value_name = "DIR", conflicts_with = "no_cache")]
    pub cache: Option<PathBuf>,
    /// Keep no cache: every blob is downloaded straight into the bundle and written to disk
    /// once (for one-off builds of bundles too large to keep twice).
    #[arg(long)]
    pub no_cache: bool,
    /// Transfers in flight at once (manifest fetches, blob downloads and copies share one pool).
    #[arg(short = 'j', long = "jobs", value_name = "N", default_value_t = 8,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    pub jobs: u16,
    /// Build a delta bundle: blobs BASE.tar already holds are left out and listed as expected
    /// (BASE.tar must be signed with the same key).
    #[arg(long, value_name = "BASE.tar")]
    pub since: Option<PathBuf>,
    /// Sign an expiry into the release, this long after its creation time (e.g. 90d): after it,
    /// `airgap install`/`upgrade` refuse the release and `upgrade --check` no longer offers
    /// it, so a repository frozen by an attacker cannot keep serving it.
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// Print the summary as JSON (docs/json/bundle-build.schema.json).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct VerifyArgs {
    /// The bundle (or the first part of a split bundle); `-` reads it from standard input in
    /// one pass (a pipe from tape or another host).
    pub bundle: PathBuf,
    /// The public key the bundle must be signed with.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    /// Print the result as JSON (docs/json/bundle-verify.schema.json).
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    pub bundle: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: BundleCommand) -> anyhow::Result<()> {
    match cmd {
        BundleCommand::Build(args) => build(args),
        BundleCommand::Verify(args) => verify(args),
        BundleCommand::Inspect(args) => inspect(args),
        BundleCommand::Sbom(args) => sbom(args),
    }
}

/// Parses `4GiB`, `700MB`, `512k`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let num: u64 = num
        .parse()
        .map_err(|_| format!("`{text}` is not a size such as 4GiB or 700MB"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1 << 10,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1 << 20,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1 << 30,
        "t" | "tb" => 1000u64.pow(4),
        "tib" => 1 << 40,
        other => {
            return Err(format!(
                "unknown size unit `{other}` (use B, KB, KiB, MB, MiB, GB, GiB, TB, TiB)"
            ))
        }
    };
    let size = num
        .checked_mul(mult)
        .ok_or_else(|| format!("`{text}` is too large"))?;
    if size < 1024 {
        return Err(format!("split size `{text}` is below the 1KiB minimum"));
    }
    Ok(size)
}

fn creation_time() -> anyhow::Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH=`{v}` is not a number of seconds")),
        Err(_) => Ok(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)),
    }
}

fn build(args: BuildArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let key = SigningKey::load(&args.key).context("loading the signing key")?;
    let created = creation_time()?;
    let cache = (!args.no_cache).then(|| args.cache.clone().unwrap_or_else(BlobCache::default_dir));
    let request = bundler::BuildRequest {
        spec: &args.spec,
        output: &args.output,
        key: &key,
        created,
        expires: args.expires_in.map(|d| created.saturating_add(d.as_secs())),
        split: args.split,
        jobs: args.jobs.into(),
        cache: cache.as_deref(),
        since: args.since.as_deref(),
    };
    let progress = Arc::new(BuildProgress::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let report = runtime
        .block_on(bundler::build(&request, progress.clone()))
        .with_context(|| format!("building {}", args.output.display()))?;
    progress.finish();
    let index = &report.index;
    let size = index.content_size();
    let secs = started.elapsed().as_secs_f64();
    if args.json {
        return super::output::print_json(&serde_json::json!({
            "name": index.name,
            "version": index.version.to_string(),
            "files": report.files,
            "packs": index.packs.len(),
            "images": index.images.len(),
            "entries": index.entries.len(),
            "contentSize": size,
            "seconds": secs,
            "downloaded": {"blobs": report.downloaded_blobs, "bytes": report.downloaded_bytes},
            "cached": {"blobs": report.cached_blobs, "bytes": report.cached_bytes},
            "base": index.base.as_ref().map(|b| serde_json::json!({
                "name": b.name,
                "version": b.version.to_string(),
                "expectedBlobs": index.expected_blobs.len(),
            })),
        }));
    }
    let delta = match &index.base {
        Some(base) => format!(
            ", delta against {} {} ({} blobs expected on the target)",
            base.name,
            base.version,
            index.expected_blobs.len()
        ),
        None => String::new(),
    };
    println!(
        "built {} {} -> {}: {} packs, {} images, {} entries, {} in {:.1}s ({}/s); downloaded {} blobs ({}), {} from cache ({}){delta}",
        index.name,
        index.version,
        report
            .files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        index.packs.len(),
        index.images.len(),
        index.entries.len(),
        HumanBytes(size),
        secs,
        HumanBytes((size as f64 / secs.max(1e-6)) as u64),
        report.downloaded_blobs,
        HumanBytes(report.downloaded_bytes),
        report.cached_blobs,
        HumanBytes(report.cached_bytes),
    );
    Ok(())
}

/// One overall bar (bytes written, rate) plus a bar per blob being downloaded, on a terminal;
/// nothing otherwise (the summary line says what happened).
struct BuildProgress {
    bars: MultiProgress,
    overall: ProgressBar,
    downloads: Mutex<HashMap<Digest, ProgressBar>>,
}

impl BuildProgress {
    fn new() -> Self {
        let bars = MultiProgress::with_draw_target(ProgressDrawTarget::stderr());
        let overall = bars.add(bytes_bar(0, "building"));
        BuildProgress {
            bars,
            overall,
            downloads: Mutex::new(HashMap::new()),
        }
    }

    fn finish(&self) {
        self.overall.finish_and_clear();
        let _ = self.bars.clear();
    }
}

impl BuildObserver for BuildProgress {
    fn planned(&self, index: &airgap::BundleIndex) {
        self.overall.set_length(index.content_size());
    }

    fn blob_started(&self, digest: &Digest, size: u64, origin: BlobOrigin) {
        if origin != BlobOrigin::Registry || self.bars.is_hidden() {
            return;
        }
        let bar = self.bars.add(blob_bar(size, &digest.hex()[..12]));
        if let Ok(mut map) = self.downloads.lock() {
            map.insert(*digest, bar);
        }
    }

    fn blob_progress(&self, digest: &Digest, bytes: u64) {
        self.overall.inc(bytes);
        if let Ok(map) = self.downloads.lock() {
            if let Some(bar) = map.get(digest) {
                bar.inc(bytes);
            }
        }
    }

    fn blob_finished(&self, digest: &Digest) {
        if let Ok(mut map) = self.downloads.lock() {
            if let Some(bar) = map.remove(digest) {
                bar.finish_and_clear();
                self.bars.remove(&bar);
            }
        }
    }
}

fn open(bundle: &Path) -> anyhow::Result<(BufReader<PartsReader>, u64)> {
    let reader =
        PartsReader::open(bundle).with_context(|| format!("opening {}", bundle.display()))?;
    let total = reader
        .total_size()
        .with_context(|| format!("reading {}", bundle.display()))?;
    Ok((BufReader::with_capacity(256 << 10, reader), total))
}

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let key = PublicKey::load(&args.public_key).context("loading the public key")?;
    let fail = || format!("{} failed verification", args.bundle.display());
    if args.bundle.as_os_str() == "-" {
        return verify_stdin(&key, started, args.json);
    }
    let (reader, total) = open(&args.bundle)?;
    let bar = bytes_bar(total, "verifying");
    drop(reader);
    let workers = airgap::verify_file::all_cores();
    let verified = airgap::verify_file(&args.bundle, &key, workers, |at| bar.set_position(at))
        .with_context(fail)?;
    bar.finish_and_clear();
    let index = verified.index();
    if args.json {
        return verified_json(
            &args.bundle.display().to_string(),
            &verified,
            total,
            started,
        );
    }
    println!(
        "{}: OK, {} {} signed by {}, {} entries, {} verified in {:.1}s",
        args.bundle.display(),
        index.name,
        index.version,
        verified.signer(),
        index.entries.len(),
        HumanBytes(total),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `bundle verify --json`: what was verified (the command fails, with nothing on standard
/// output, when verification does).
fn verified_json(
    bundle: &str,
    verified: &airgap::VerifiedIndex,
    bytes: u64,
    started: Instant,
) -> anyhow::Result<()> {
    let index = verified.index();
    super::output::print_json(&serde_json::json!({
        "bundle": bundle,
        "verified": true,
        "name": index.name,
        "version": index.version.to_string(),
        "signer": verified.signer().to_string(),
        "entries": index.entries.len(),
        "bytes": bytes,
        "seconds": started.elapsed().as_secs_f64(),
    }))
}

/// One pass over standard input: nothing can be read twice, so entries are hashed in order.
fn verify_stdin(key: &PublicKey, started: Instant, json: bool) -> anyhow::Result<()> {
    let stdin = std::io::stdin();
    let bar = indicatif::ProgressBar::new_spinner();
    let reader = bar.wrap_read(BufReader::with_capacity(256 << 10, stdin.lock()));
    let verified =
        airgap::verify(reader, key).context("the bundle on standard input failed verification")?;
    let read = bar.position();
    bar.finish_and_clear();
    if json {
        return verified_json("-", &verified, read, started);
    }
    let index = verified.index();
    println!(
        "-: OK, {} {} signed by {}, {} entries, {} verified in {:.1}s",
        index.name,
        index.version,
        verified.signer(),
        index.entries.len(),
        HumanBytes(read),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let (reader, total) = open(&args.bundle)?;
    let fail = || format!("{} is not a readable bundle", args.bundle.display());
    let header = UnverifiedHeader::read(&mut TarReader::new(reader, Strictness::Strict))
        .with_context(fail)?;
    // Shown, never trusted: inspect checks no signature.
    let unverified = header.index_unverified().with_context(fail)?;
    let index = unverified.claims();
    let signers: Vec<String> = header
        .signatures
        .key_ids()
        .iter()
        .map(ToString::to_string)
        .collect();
    if args.json {
        let value = serde_json::json!({
            "name": index.name,
            "version": index.version,
            "created": index.created,
            "expires": index.expires,
            "platforms": index.platforms,
            "signers": signers,
            "verified": false,
            "packs": index.packs,
            "images": index.images,
            "signatureKeys": index.signature_keys,
            "entries": index.entries.len(),
            "contentSize": index.content_size(),
            "archiveSize": total,
            "base": index.base,
        });
        println!("{}", serde_json::to_string_pretty(&value)?);
        return Ok(());
    }
    if signers.is_empty() {
        bail!("{} carries no signature", args.bundle.display());
    }
    println!(
        "Bundle:    {} {} (created {}{})",
        index.name,
        index.version,
        index.created,
        index
            .expires
            .as_ref()
            .map(|e| format!(", expires {e}"))
            .unwrap_or_default()
    );
    println!(
        "Signed by: {} (not verified here; run `airgap bundle verify --pub KEY`)",
        signers.join(", ")
    );
    println!("Platforms: {}", index.platforms.join(", "));
    println!("Packs ({}):", index.packs.len());
    for p in &index.packs {
        println!(
            "  {:<32} {:<12} {:<6} {}",
            p.name, p.version, p.layer, p.digest
        );
    }
    println!("Images ({}):", index.images.len());
    for i in &index.images {
        println!(
            "  {:<60} {} {:>10}{}",
            i.reference,
            i.digest,
            HumanBytes(i.size).to_string(),
            match (&i.signature, &i.attestations) {
                (Some(_), Some(a)) => format!(
                    "  signed upstream, attested ({})",
                    a.predicate_types.join(", ")
                ),
                (Some(_), None) => "  signed upstream".to_string(),
                _ => String::new(),
            }
        );
    }
    println!(
        "Total:     {} entries, {} content, {} archive",
        index.entries.len(),
        HumanBytes(index.content_size()),
        HumanBytes(total)
    );
    Ok(())
}

/// Every image (manifests, configs, layers, platforms), pack (and its node binaries) and entry
/// of a bundle whose signature verified, each read digest-checked.
fn sbom(args: SbomArgs) -> anyhow::Result<()> {
    let key = PublicKey::load(&args.public_key).context("loading the public key")?;
    let archive = airgap::BundleArchive::open(&args.bundle, &key)
        .with_context(|| format!("{} failed verification", args.bundle.display()))?;
    let inventory = installer::sbom::Inventory::read(&archive)
        .with_context(|| format!("reading {}", args.bundle.display()))?;
    let document = match args.format {
        SbomFormat::Cyclonedx => inventory.cyclonedx(),
        SbomFormat::Spdx => inventory.spdx(),
    };
    let mut bytes = serde_json::to_vec_pretty(&document)?;
    bytes.push(b'\n');
    match &args.output {
        Some(path) => {
            std::fs::write(path, &bytes).with_context(|| format!("writing {}", path.display()))?;
            eprintln!(
                "wrote {} ({} images, {} packs, {} entries of {} {})",
                path.display(),
                inventory.images.len(),
                inventory.packs.len(),
                inventory.entries.len(),
                inventory.name,
                inventory.version
            );
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(&bytes)?;
        }
    }
    Ok(())
}
