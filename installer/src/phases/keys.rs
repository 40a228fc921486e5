//! Phase keys: cluster-scoped state in etcd, created once per installation with create-only
//! writes and never regenerated: the encryption-at-rest key (and the
//! `EncryptionConfiguration` the API server reads), the installation keys and registry
//! credentials as encrypted Secrets, and the cluster's trusted release.

use std::path::Path;

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::{etcd_healthy, InstallContext, RegistryAccess};
use crate::audit::Outcome;
use crate::error::PhaseError;
use crate::etcd::client::EtcdClient;
use crate::files::{write_atomic, PRIVATE};
use crate::journal::Phase;
use crate::keys::{
    self, KeysError, SecretData, Stored, INSTALLATION_KEYS, PULL_USER, REGISTRY_CREDENTIALS,
    REGISTRY_PULL_CREDENTIALS,
};
use crate::layout::NodeLayout;
use crate::phase::Scope;
use crate::release::{self, Trusted};
use crate::secret::SecretString;
use crate::secretbox::SecretboxKey;

fn stored(s: Stored) -> Outcome {
    match s {
        Stored::Created => Outcome::Done,
        Stored::Existing => Outcome::Unchanged,
    }
}

/// The encryption-at-rest key from the node's `EncryptionConfiguration`, if it has one.
fn read_encryption_key(layout: &NodeLayout) -> Result<Option<SecretboxKey>, PhaseError> {
    let path = layout.encryption_config();
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let text = zeroize::Zeroizing::new(text);
            Ok(Some(
                SecretboxKey::from_encryption_configuration(&text).map_err(KeysError::from)?,
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(PhaseError::io("reading", &path)(e)),
    }
}

pub(super) async fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let etcd = etcd_healthy(ctx, std::time::Duration::from_secs(60)).await?;
    // The trusted release first: a cluster that trusts another release refuses this one
    // before any key is created for it.
    crate::trust_root::check_or_record(&etcd, ctx.release.key()).await?;
    let trust = release::ensure_trusted(&etcd, ctx.release.id()).await?;
    ctx.audit.record(
        "etcd.create",
        release::TRUSTED_RELEASE_KEY,
        match trust {
            Trusted::Recorded => Outcome::Done,
            Trusted::Already => Outcome::Unchanged,
        },
    );
    let path = ctx.layout.encryption_config();
    let key = match read_encryption_key(&ctx.layout)? {
        Some(key) => key,
        None if ctx.joining.is_some() => {
            return Err(PhaseError::JoinMaterialMissing { path });
        }
        None => {
            let key = SecretboxKey::generate("key1").map_err(KeysError::from)?;
            write_atomic(
                &path,
                key.encryption_configuration().expose().as_bytes(),
                PRIVATE,
            )
            .map_err(PhaseError::io("writing", &path))?;
            ctx.audit.record(
                "keys.encryption-config",
                &path.display().to_string(),
                Outcome::Done,
            );
            key
        }
    };
    let ns = keys::ensure_namespace(&etcd).await?;
    ctx.audit
        .record("etcd.create", "namespaces/airgap-system", stored(ns));
    ctx.failpoint.reached(Phase::Keys);
    let (_, keys_stored) = keys::ensure_secret(
        &etcd,
        &key,
        INSTALLATION_KEYS,
        keys::generate_installation_keys,
    )
    .await?;
    ctx.audit.record(
        "etcd.create",
        "secrets/airgap-system/installation-keys",
        stored(keys_stored),
    );
    let generate = || registry_credentials(ctx);
    let (data, reg_stored) =
        keys::ensure_secret(&etcd, &key, REGISTRY_CREDENTIALS, generate).await?;
    ctx.audit.record(
        "etcd.create",
        "secrets/airgap-system/registry-credentials",
        stored(reg_stored),
    );
    let mut access = registry_access(&data)?;
    let pull_stored = ensure_pull_login(ctx, &etcd, &key, &mut access).await?;
    if let Some(stored_now) = pull_stored {
        ctx.audit.record(
            "etcd.create",
            "secrets/airgap-system/registry-pull-credentials",
            stored(stored_now),
        );
    }
    ctx.access = Some(access);
    Ok(match (keys_stored, reg_stored, trust) {
        (Stored::Existing, Stored::Existing, Trusted::Already) => {
            format!(
                "installation keys already in etcd; kept; trusted release {}",
                ctx.release.id()
            )
        }
        _ => format!(
            "installation keys and registry credentials created in etcd (secretbox-encrypted); trusted release {}",
            ctx.release.id()
        ),
    })
}

/// The data of `airgap-system/registry-credentials`: the external registry's, or the
/// built-in one's with a generated password.
fn registry_credentials(ctx: &InstallContext) -> Result<SecretData, KeysError> {
    let read = |path: &Path| {
        std::fs::read(path).map_err(|source| KeysError::File {
            path: path.to_path_buf(),
            source,
        })
    };
    let mut data = SecretData::new();
    match ctx.config.external_registry() {
        Some(external) => {
            data.insert("endpoint".into(), external.url.clone().into_bytes().into());
            data.insert(
                "username".into(),
                external
                    .username
                    .clone()
                    .unwrap_or_default()
                    .into_bytes()
                    .into(),
            );
            let password = match &external.password_file {
                Some(p) => {
                    let mut bytes = read(p)?;
                    while bytes.last().is_some_and(|b| *b == b'\n' || *b == b'\r') {
                        bytes.pop();
                    }
                    bytes
                }
                None => Vec::new(),
            };
            data.insert("password".into(), password.into());
            let ca = match &external.ca {
                Some(p) => read(p)?,
                None => Vec::new(),
            };
            data.insert("caCert".into(), ca.into());
        }
        None => {
            let endpoint = format!(
                "https://{}:{}",
                ctx.config.spec.fqdn,
                ctx.config.registry_port()
            );
            data.insert("endpoint".into(), endpoint.into_bytes().into());
            data.insert("username".into(), b"admin".to_vec().into());
            let password = keys::generate_password()?;
            data.insert(
                "password".into(),
                password.expose().as_bytes().to_vec().into(),
            );
            data.insert("caCert".into(), read(&ctx.layout.fqdn_ca())?.into());
        }
    }
    Ok(data)
}

/// The registry access a Secret's data describes.
fn registry_access(data: &SecretData) -> Result<RegistryAccess, PhaseError> {
    let field = |field: &'static str| {
        data.get(field).ok_or(PhaseError::SecretField {
            secret: REGISTRY_CREDENTIALS,
            field,
            problem: "is missing",
        })
    };
    let text = |name: &'static str| -> Result<String, PhaseError> {
        String::from_utf8(field(name)?.expose().to_vec()).map_err(|_| PhaseError::SecretField {
            secret: REGISTRY_CREDENTIALS,
            field: name,
            problem: "is not text",
        })
    };
    Ok(RegistryAccess {
        endpoint: text("endpoint")?,
        username: text("username")?,
        password: field("password")?
            .to_secret_string()
            .ok_or(PhaseError::SecretField {
                secret: REGISTRY_CREDENTIALS,
                field: "password",
                problem: "is not text",
            })?,
        ca_pem: field("caCert")?.expose().to_vec(),
        pull: None,
    })
}

/// The built-in registry's pull-only login, created on first use (create-only, like every
/// key: an installation older than it gets one at its next install or upgrade). An external
/// registry has none: containerd presents the operator's login.
async fn ensure_pull_login(
    ctx: &InstallContext,
    etcd: &EtcdClient,
    key: &SecretboxKey,
    access: &mut RegistryAccess,
) -> Result<Option<Stored>, PhaseError> {
    if ctx.config.external_registry().is_some() {
        return Ok(None);
    }
    let generate = || {
        let mut data = SecretData::new();
        data.insert("username".into(), PULL_USER.as_bytes().to_vec().into());
        let password = keys::generate_password()?;
        data.insert(
            "password".into(),
            password.expose().as_bytes().to_vec().into(),
        );
        Ok(data)
    };
    let (data, stored) =
        keys::ensure_secret(etcd, key, REGISTRY_PULL_CREDENTIALS, generate).await?;
    access.pull = Some(pull_login(&data)?);
    Ok(Some(stored))
}

/// The registry access stored in etcd, for phases that run when the keys phase was skipped.
pub(super) async fn read_registry_access(
    ctx: &InstallContext,
    etcd: &EtcdClient,
) -> Result<RegistryAccess, PhaseError> {
    let key = read_encryption_key(&ctx.layout)?;
    let mut access = stored_registry_access(&ctx.layout, etcd).await?;
    if let Some(key) = key {
        ensure_pull_login(ctx, etcd, &key, &mut access).await?;
    }
    Ok(access)
}

/// The registry access etcd holds, the pull-only login included when there is one; creates
/// nothing (what `status` reads).
pub async fn stored_registry_access(
    layout: &NodeLayout,
    etcd: &EtcdClient,
) -> Result<RegistryAccess, PhaseError> {
    let missing = PhaseError::SecretField {
        secret: REGISTRY_CREDENTIALS,
        field: "data",
        problem: "is not in etcd yet: run the keys phase",
    };
    let Some(key) = read_encryption_key(layout)? else {
        return Err(missing);
    };
    let mut access = match keys::read_secret(etcd, &key, REGISTRY_CREDENTIALS).await? {
        Some(secret) => registry_access(&secret.data)?,
        None => return Err(missing),
    };
    if let Some(secret) = keys::read_secret(etcd, &key, REGISTRY_PULL_CREDENTIALS).await? {
        access.pull = Some(pull_login(&secret.data)?);
    }
    Ok(access)
}

fn pull_login(data: &SecretData) -> Result<(String, SecretString), PhaseError> {
    let field = |name: &'static str| {
        data.get(name)
            .and_then(|v| v.to_secret_string())
            .ok_or(PhaseError::SecretField {
                secret: REGISTRY_PULL_CREDENTIALS,
                field: name,
                problem: "is missing or not text",
            })
    };
    let username = field("username")?.expose().to_string();
    Ok((username, field("password")?))
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Keys,
    about: "the installation's keys and the registry's logins, as Secrets in etcd",
    install: Some(Scope::Cluster),
    upgrade: InUpgrade::No,
    preflight: false,
    run: |ctx, _journal, _workflow| Box::pin(run(ctx)),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![OwnedPath::state(layout.encryption_config())]
}
