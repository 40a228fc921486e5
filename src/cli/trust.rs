//! `airgap trust`: the key a cluster trusts releases from, and moving it to a new key with a
//! rotation statement the current key signed.

use std::path::PathBuf;

use anyhow::Context;
use installer::audit::{AuditLog, Outcome};
use installer::cluster;
use installer::layout::NodeLayout;
use installer::trust_root::{self, KeyRotation, Rotated};

use super::node::{runtime, RootArgs};

#[derive(Debug, clap::Subcommand)]
pub enum TrustCommand {
    /// Show the key the cluster trusts releases from.
    Show(TrustShowArgs),
    /// On the connected side: sign a statement moving trust from the current key to a new
    /// one, with the current private key.
    SignRotation(SignRotationArgs),
    /// On a node: move the cluster's trust to the statement's new key (verified against the
    /// key the cluster trusts now).
    Rotate(RotateArgs),
}

#[derive(Debug, clap::Args)]
pub struct TrustShowArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SignRotationArgs {
    /// The current signing key (private, 0600).
    #[arg(long, value_name = "FILE")]
    pub key: PathBuf,
    /// The new public key.
    #[arg(long, value_name = "FILE")]
    pub new_pub: PathBuf,
    /// Where to write the statement.
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, clap::Args)]
pub struct RotateArgs {
    /// The statement `airgap trust sign-rotation` wrote.
    pub statement: PathBuf,
    #[command(flatten)]
    pub root: RootArgs,
}

pub fn run(cmd: TrustCommand) -> anyhow::Result<()> {
    match cmd {
        TrustCommand::SignRotation(args) => {
            let old = airgap::SigningKey::load(&args.key).context("loading the current key")?;
            let new = airgap::PublicKey::load(&args.new_pub).context("loading the new key")?;
            let rotation = KeyRotation::sign(&old, &new, installer::audit::now_rfc3339());
            let mut bytes = serde_json::to_vec_pretty(&rotation)?;
            bytes.push(b'\n');
            std::fs::write(&args.output, bytes)
                .with_context(|| format!("writing {}", args.output.display()))?;
            println!(
                "wrote {}: trust moves from key {} to key {} once `airgap trust rotate` applies it on a node",
                args.output.display(),
                old.public_key().key_id(),
                new.key_id()
            );
            Ok(())
        }
        TrustCommand::Show(args) => {
            let (_, etcd) = node_etcd(&args.root.root)?;
            let root = runtime()?
                .block_on(trust_root::read(&etcd))
                .context("reading the trust root")?
                .map(|(r, _)| r);
            match (root, args.json) {
                (Some(r), true) => println!("{}", serde_json::to_string_pretty(&r)?),
                (Some(r), false) => println!("releases are trusted from key {}", r.key_id),
                (None, _) => anyhow::bail!("{}", trust_root::TrustRootError::Missing),
            }
            Ok(())
        }
        TrustCommand::Rotate(args) => {
            let text = std::fs::read_to_string(&args.statement)
                .with_context(|| format!("reading {}", args.statement.display()))?;
            let rotation: KeyRotation = serde_json::from_str(&text).with_context(|| {
                format!("{} is not a rotation statement", args.statement.display())
            })?;
            let (layout, etcd) = node_etcd(&args.root.root)?;
            let (rotated, statement) = runtime()?
                .block_on(trust_root::rotate(&etcd, &rotation))
                .context("rotating the trusted key")?;
            let audit = AuditLog::new(&layout);
            audit.record_with(
                "trust.rotate",
                trust_root::TRUST_ROOT_KEY,
                match rotated {
                    Rotated::Moved => Outcome::Done,
                    Rotated::Already => Outcome::Unchanged,
                },
                Some(&format!("{} -> {}", statement.from, statement.to)),
            );
            match rotated {
                Rotated::Moved => println!(
                    "the cluster now trusts releases from key {} (was {})",
                    statement.to, statement.from
                ),
                Rotated::Already => {
                    println!("the cluster trusts key {} already", statement.to)
                }
            }
            Ok(())
        }
    }
}

pub(super) fn node_etcd(
    root: &std::path::Path,
) -> anyhow::Result<(NodeLayout, installer::etcd::client::EtcdClient)> {
    let root = std::path::absolute(root).context("resolving --root")?;
    let layout = NodeLayout::new(root);
    let (config, node) = cluster::installed(&layout).with_context(|| {
        format!(
            "{} holds no installation (run this on a node, with its --root)",
            layout.root().display()
        )
    })?;
    let etcd = cluster::etcd_of(&layout, &config, &node)?;
    Ok((layout, etcd))
}
