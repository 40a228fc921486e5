//! `airgap token|node|cluster-service`: the HA cluster's membership.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use installer::cluster::{self, certificate_key, members, pin::CaPin, token};
use installer::layout::NodeLayout;

use super::node::{runtime, RootArgs};

#[derive(Debug, clap::Subcommand)]
pub enum TokenCommand {
    /// Make a join token for more HA nodes; prints the whole `--token` value.
    Create(TokenCreateArgs),
    /// List the cluster's join tokens (ids, expiry, uses left; never secrets).
    List(TokenListArgs),
    /// Delete a join token now.
    Delete(TokenDeleteArgs),
}

#[derive(Debug, clap::Args)]
pub struct TokenCreateArgs {
    /// How long the token is valid (e.g. 30m, 1h, 2d).
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub ttl: Duration,
    /// How many joins it allows.
    #[arg(long, value_name = "N", default_value_t = 2,
          value_parser = clap::value_parser!(u32).range(1..=100))]
    pub uses: u32,
    /// Also upload the cluster's shared keys for joining, sealed under a new certificate key
    /// (valid 2h; the key of any earlier upload stops working), and print that key on a
    /// second line. `airgap join` needs it as --certificate-key.
    #[arg(long)]
    pub certificate_key: bool,
    #[command(flatten)]
    pub root: RootArgs,
}

#[derive(Debug, clap::Args)]
pub struct TokenListArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct TokenDeleteArgs {
    /// The token's id (the part before the dot).
    pub id: String,
    #[command(flatten)]
    pub root: RootArgs,
}

#[derive(Debug, clap::Subcommand)]
pub enum NodeCommand {
    /// Remove a dead node from the cluster (etcd member, VIP claim, registry replica) so a
    /// replacement can join in its place.
    Remove(NodeRemoveArgs),
}

#[derive(Debug, clap::Args)]
pub struct NodeRemoveArgs {
    /// The node's name in install.yaml.
    pub name: String,
    #[command(flatten)]
    pub root: RootArgs,
}

fn installed(
    root: &std::path::Path,
) -> anyhow::Result<(
    NodeLayout,
    installer::config::InstallConfig,
    installer::config::Node,
)> {
    let root = std::path::absolute(root).context("resolving --root")?;
    let layout = NodeLayout::new(root);
    let (config, node) = cluster::installed(&layout).with_context(|| {
        format!(
            "{} holds no HA installation (run this on a cluster node, with its --root)",
            layout.root().display()
        )
    })?;
    if config.spec.mode != installer::config::Mode::Ha {
        anyhow::bail!("{}", cluster::ClusterError::NotHa);
    }
    Ok((layout, config, node))
}

pub fn token(cmd: TokenCommand) -> anyhow::Result<()> {
    match cmd {
        TokenCommand::Create(args) => {
            let (layout, config, node) = installed(&args.root.root)?;
            let etcd = cluster::etcd_of(&layout, &config, &node)?;
            let ca_path = layout.fqdn_ca();
            let ca = std::fs::read_to_string(&ca_path)
                .with_context(|| format!("reading {}", ca_path.display()))?;
            let pin = CaPin::of_pem(&ca)
                .with_context(|| format!("{} holds no certificate", ca_path.display()))?;
            let rt = runtime()?;
            let key = if args.certificate_key {
                let key = certificate_key::CertificateKey::generate()?;
                let expires = rt
                    .block_on(certificate_key::upload(
                        &etcd,
                        &layout,
                        &key,
                        certificate_key::MATERIAL_TTL,
                    ))
                    .context("uploading the shared keys for joining")?;
                Some((key, expires))
            } else {
                None
            };
            let created = rt
                .block_on(token::create(&etcd, args.ttl, args.uses))
                .context("creating a join token")?;
            // The one place the secrets are shown: stdout, for the operator to pass on.
            println!("{}", created.with_pin(&pin).expose());
            eprintln!(
                "token {} allows {} join(s) until {}",
                created.id,
                args.uses,
                token::rfc3339(token::unix_now() + args.ttl.as_secs().max(1))
            );
            if let Some((key, expires)) = key {
                println!("{}", key.to_hex().expose());
                eprintln!(
                    "certificate key (second line) opens the cluster's shared keys until {}; pass it to `airgap join --certificate-key`",
                    token::rfc3339(expires)
                );
            }
            Ok(())
        }
        TokenCommand::List(args) => {
            let (layout, config, node) = installed(&args.root.root)?;
            let etcd = cluster::etcd_of(&layout, &config, &node)?;
            let tokens = runtime()?
                .block_on(token::list(&etcd))
                .context("listing join tokens")?;
            if args.json {
                let rows: Vec<_> = tokens
                    .iter()
                    .map(|t| serde_json::json!({"id": t.id, "expires": token::rfc3339(t.record.expires), "uses": t.record.uses, "usesLeft": t.record.uses_left, "expired": t.record.expires <= token::unix_now()}))
                    .collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else if tokens.is_empty() {
                println!("no join tokens");
            } else {
                for t in &tokens {
                    let expired = if t.record.expires <= token::unix_now() {
                        "  (expired)"
                    } else {
                        ""
                    };
                    println!("{t}{expired}");
                }
            }
            Ok(())
        }
        TokenCommand::Delete(args) => {
            let (layout, config, node) = installed(&args.root.root)?;
            let etcd = cluster::etcd_of(&layout, &config, &node)?;
            let existed = runtime()?
                .block_on(token::delete(&etcd, &args.id))
                .context("deleting the join token")?;
            if !existed {
                anyhow::bail!("no join token {} in the cluster", args.id);
            }
            println!("deleted join token {}", args.id);
            Ok(())
        }
    }
}

pub fn node(cmd: NodeCommand) -> anyhow::Result<()> {
    match cmd {
        NodeCommand::Remove(args) => {
            let (layout, config, node) = installed(&args.root.root)?;
            let etcd = cluster::etcd_of(&layout, &config, &node)?;
            runtime()?
                .block_on(members::remove(
                    &config,
                    node.name.as_str(),
                    &etcd,
                    &args.name,
                ))
                .with_context(|| format!("removing node {}", args.name))?;
            println!(
                "removed {} from the cluster (etcd member, VIP claim, registry replica); a replacement joins with `airgap token create` and `airgap join`",
                args.name
            );
            Ok(())
        }
    }
}

/// What the agent runs on an HA node: the join API and the VIP election.
pub fn service(args: RootArgs) -> anyhow::Result<()> {
    let root: PathBuf = std::path::absolute(&args.root).context("resolving --root")?;
    runtime()?
        .block_on(cluster::serve(NodeLayout::new(root)))
        .context("cluster service")?;
    Ok(())
}
