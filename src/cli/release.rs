//! `airgap release`: the releases a registry holds.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use installer::release_prune::PrunePlan;
use installer::upgrade::{installed_release, list_registry_releases, ListedRelease};
use registry::mirror::MirrorTarget;

use super::registry::{client_for, credentials, LoginArgs};

#[derive(Debug, clap::Subcommand)]
pub enum ReleaseCommand {
    /// Delete old releases (their release artifacts, and the images and packs no kept release
    /// names) from a registry, then collect the blobs nothing references any more.
    #[command(long_about = include_str!("reference/release-prune.txt"))]
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// How many of the newest releases to keep (the release this node runs is always kept).
    #[arg(long, value_name = "N")]
    pub keep: usize,
    /// The registry and prefix the releases were seeded to, e.g. https://HOST:5000/mirror.
    #[arg(long, value_name = "https://HOST[:PORT][/PREFIX]")]
    pub registry: String,
    /// The release signing key: only releases it verifies are considered.
    #[arg(long = "pub", value_name = "FILE")]
    pub public_key: PathBuf,
    #[command(flatten)]
    pub login: LoginArgs,
    /// The node whose running release must be kept, if this host has one.
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Print what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Passed to the registry's garbage collection: blobs younger than this are kept.
    #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration)]
    pub grace: Duration,
    /// Print what was kept, pruned and deleted as JSON (docs/json/release-prune.schema.json).
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: ReleaseCommand) -> anyhow::Result<()> {
    match cmd {
        ReleaseCommand::Prune(args) => super::node::runtime()?.block_on(prune(args)),
    }
}

async fn prune(args: PruneArgs) -> anyhow::Result<()> {
    let target = MirrorTarget::parse(&args.registry, args.login.plain_http)?;
    let key = airgap::PublicKey::load(&args.public_key).context("loading the public key")?;
    let root = std::path::absolute(&args.root).context("resolving --root")?;
    let running = installed_release(&root)?;
    let login = credentials(&args.login, &target.host)?;
    let client = client_for(&args.login, &target, login)?;
    let repo = target.repository(registry::release_artifact::REPOSITORY);
    let listed = list_registry_releases(&client, &repo, &key, running.as_ref())
        .await
        .with_context(|| format!("listing releases in {}", args.registry))?;
    for release in &listed {
        if let ListedRelease::Rejected { tag, reason } = release {
            eprintln!(
                "warning: {repo}:{tag} is kept untouched: {}",
                installer::error::chain(reason)
            );
        }
    }
    let plan = PrunePlan::new(&listed, args.keep, running.as_ref(), &target)?;
    let say = super::output::prose(args.json);
    // What --json prints at the end, whatever the path taken.
    let summary = |deleted: Option<usize>, collected: Option<(usize, u64)>| {
        serde_json::json!({
            "registry": args.registry,
            "dryRun": args.dry_run,
            "kept": plan.kept.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "pruned": plan.pruned.iter().map(|(_, id)| id.to_string()).collect::<Vec<_>>(),
            "manifests": plan.manifests.len(),
            "deleted": deleted,
            "collected": collected.map(|(blobs, bytes)| serde_json::json!({"blobs": blobs, "bytes": bytes})),
        })
    };
    for id in &plan.kept {
        say(format!("  keep   {id}"));
    }
    for (_, id) in &plan.pruned {
        say(format!("  prune  {id}"));
    }
    if plan.pruned.is_empty() {
        say(format!(
            "nothing to prune: {} release(s), --keep {}",
            plan.kept.len(),
            args.keep
        ));
        return finish(args.json, summary(None, None));
    }
    if args.dry_run {
        say(format!(
            "would delete {} image/pack manifest(s) and {} release artifact(s) (dry run)",
            plan.manifests.len(),
            plan.pruned.len()
        ));
        return finish(args.json, summary(None, None));
    }
    let deleted = plan
        .apply(&client, &repo)
        .await
        .with_context(|| format!("pruning {}", args.registry))?;
    say(format!("deleted {deleted} manifest(s)"));
    let collected = match client.collect_garbage(false, args.grace).await {
        Ok(report) => {
            let blobs = report["removed"].as_array().map_or(0, Vec::len);
            let bytes = report["removedBytes"].as_u64().unwrap_or(0);
            say(format!(
                "collected {blobs} unreferenced blob(s) ({bytes} bytes)"
            ));
            Some((blobs, bytes))
        }
        Err(e) => {
            eprintln!(
                "warning: the registry did not collect garbage ({}); run its own garbage collection (distribution: `registry garbage-collect`)",
                registry::describe_error(&e)
            );
            None
        }
    };
    finish(args.json, summary(Some(deleted), collected))
}

/// Prints the --json document when asked for.
fn finish(json: bool, summary: serde_json::Value) -> anyhow::Result<()> {
    if json {
        super::output::print_json(&summary)?;
    }
    Ok(())
}
