//! `airgap tenant-key`: tenant keys wrapped under the installation's root key, and rotating
//! that root key.

use anyhow::Context;
use installer::audit::{AuditLog, Outcome};
use installer::secretbox::SecretboxKey;
use installer::tenant_keys::{self, TenantName};

use super::node::{runtime, RootArgs};

#[derive(Debug, clap::Subcommand)]
pub enum TenantKeyCommand {
    /// Create a tenant's key (256 random bits), stored only wrapped under the root key.
    Create(CreateArgs),
    /// List the tenant keys (tenant, root key id, algorithm, created; never a key).
    List(ListArgs),
    /// Replace the root key and re-wrap every tenant key under the new one, in one etcd
    /// transaction (a failed or killed run changes nothing; run it again).
    RotateRoot(RootArgs),
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// The tenant's name (a DNS label of at most 52 characters).
    pub tenant: String,
    #[command(flatten)]
    pub root: RootArgs,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub root: RootArgs,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: TenantKeyCommand) -> anyhow::Result<()> {
    match cmd {
        TenantKeyCommand::Create(args) => {
            // The name is checked before anything is read or written.
            let tenant = TenantName::parse(&args.tenant)?;
            let (layout, etcd, at_rest) = node(&args.root)?;
            let created = runtime()?.block_on(tenant_keys::create(&etcd, &at_rest, &tenant));
            let audit = AuditLog::new(&layout);
            let object = format!("tenant-key/{}", tenant.as_str());
            match created {
                Ok(root_id) => {
                    audit.record("tenant-key.create", &object, Outcome::Done);
                    println!(
                        "created the key of tenant {} ({}, wrapped under root key {root_id})",
                        tenant.as_str(),
                        tenant_keys::ALGORITHM
                    );
                    Ok(())
                }
                Err(e) => {
                    audit.record_with(
                        "tenant-key.create",
                        &object,
                        Outcome::Failed,
                        Some(&e.to_string()),
                    );
                    Err(e).context("creating the tenant key")
                }
            }
        }
        TenantKeyCommand::List(args) => {
            let (_, etcd, at_rest) = node(&args.root)?;
            let keys = runtime()?
                .block_on(tenant_keys::list(&etcd, &at_rest))
                .context("listing tenant keys")?;
            if args.json {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else if keys.is_empty() {
                println!("no tenant keys");
            } else {
                for k in &keys {
                    println!(
                        "{}  {}  root key {}  created {}",
                        k.tenant, k.algorithm, k.root_key_id, k.created
                    );
                }
            }
            Ok(())
        }
        TenantKeyCommand::RotateRoot(args) => {
            let (layout, etcd, at_rest) = node(&args)?;
            let rotated = runtime()?.block_on(tenant_keys::rotate_root(&etcd, &at_rest));
            let audit = AuditLog::new(&layout);
            match rotated {
                Ok(r) => {
                    audit.record_with(
                        "tenant-key.rotate-root",
                        "secret/airgap-system/installation-keys",
                        Outcome::Done,
                        Some(&format!(
                            "root key {} -> {}, {} tenant key(s) re-wrapped",
                            r.old_root_key_id, r.new_root_key_id, r.tenant_keys
                        )),
                    );
                    println!(
                        "the root key is now {} (was {}); {} tenant key(s) re-wrapped",
                        r.new_root_key_id, r.old_root_key_id, r.tenant_keys
                    );
                    Ok(())
                }
                Err(e) => {
                    audit.record_with(
                        "tenant-key.rotate-root",
                        "secret/airgap-system/installation-keys",
                        Outcome::Failed,
                        Some(&e.to_string()),
                    );
                    Err(e).context("rotating the root key")
                }
            }
        }
    }
}

/// The installed node's etcd client and its encryption-at-rest key.
fn node(
    root: &RootArgs,
) -> anyhow::Result<(
    installer::layout::NodeLayout,
    installer::etcd::client::EtcdClient,
    SecretboxKey,
)> {
    let (layout, etcd) = super::trust::node_etcd(&root.root)?;
    let path = layout.encryption_config();
    let text = zeroize::Zeroizing::new(
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
    );
    let at_rest = SecretboxKey::from_encryption_configuration(&text)
        .with_context(|| format!("{} holds no secretbox key", path.display()))?;
    Ok((layout, etcd, at_rest))
}
