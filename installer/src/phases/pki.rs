//! Phase pki: the cluster CA and etcd CA, this node's etcd and agent certificates, the
//! `apiserver-etcd-client` certificate, and the FQDN certificate (issued, or imported as
//! checked before anything was written). Keys 0600; what exists and is current is kept.

use std::path::Path;

use super::spec::{InUpgrade, OwnedPath, PhaseSpec};
use super::InstallContext;
use crate::audit::Outcome;
use crate::error::PhaseError;
use crate::files::{write_if_changed, PRIVATE, PUBLIC};
use crate::journal::Phase;
use crate::layout::NodeLayout;
use crate::phase::Scope;
use crate::pki::{CertificateAuthority, Ensured, LeafSpec, PairPaths, Usage};

pub(super) fn run(ctx: &mut InstallContext) -> Result<String, PhaseError> {
    let layout = &ctx.layout;
    // Key directories are root's alone, whatever umask the installer inherited.
    for dir in [
        layout.pki_dir(),
        layout.etcd_pki_dir(),
        layout
            .fqdn_key()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default(),
    ] {
        private_dir(&dir)?;
    }
    let node = &ctx.node;
    let name = ctx.config.metadata.name.as_str();
    let mut created = Vec::new();
    let audit = &ctx.audit;
    let mut note = |what: &str, e: Ensured| {
        let outcome = match e {
            Ensured::Created => {
                created.push(what.to_string());
                Outcome::Done
            }
            Ensured::Kept => Outcome::Unchanged,
        };
        audit.record("pki.issue", what, outcome);
    };
    let (ca, e) = CertificateAuthority::ensure(
        &PairPaths::new(&layout.pki_dir(), "ca"),
        &format!("{name}-ca"),
    )?;
    note("ca", e);
    let (etcd_ca, e) = CertificateAuthority::ensure(
        &PairPaths::new(&layout.etcd_pki_dir(), "ca"),
        &format!("{name}-etcd-ca"),
    )?;
    note("etcd/ca", e);
    ctx.failpoint.reached(Phase::Pki);
    let member = LeafSpec::etcd_member(node);
    for stem in ["server", "peer"] {
        let e = etcd_ca.ensure_leaf(&PairPaths::new(&layout.etcd_pki_dir(), stem), &member)?;
        note(&format!("etcd/{stem}"), e);
    }
    let client = LeafSpec {
        common_name: "kube-apiserver-etcd-client".into(),
        organization: None,
        dns_names: vec![],
        ip_addresses: vec![],
        usage: Usage::Client,
    };
    let e = etcd_ca.ensure_leaf(&layout.etcd_client_pair(), &client)?;
    note("apiserver-etcd-client", e);
    let gateway = LeafSpec {
        common_name: String::new(),
        organization: Some("airgap:etcd-gateway-clients".into()),
        dns_names: vec![],
        ip_addresses: vec![],
        usage: Usage::Client,
    };
    let e = etcd_ca.ensure_leaf(&layout.etcd_gateway_pair(), &gateway)?;
    note("etcd/airgap-gateway-client", e);
    let agent = LeafSpec::agent(node);
    let e = ca.ensure_leaf(&layout.agent_pair(), &agent)?;
    note("agent", e);

    let fqdn_paths = PairPaths {
        cert: layout.fqdn_cert(),
        key: layout.fqdn_key(),
    };
    let fqdn_summary = match &ctx.config.spec.certificates {
        // A joining node received the imported certificate from the cluster.
        Some(_) if ctx.joining.is_some() => "FQDN certificate received from the cluster",
        Some(certs) => {
            // Checked before anything was written; copied as given.
            let import = &certs.import;
            let copy = |from: &Path, to: &Path, mode| -> Result<bool, PhaseError> {
                let bytes = zeroize::Zeroizing::new(
                    std::fs::read(from).map_err(PhaseError::io("reading", from))?,
                );
                write_if_changed(to, &bytes, mode).map_err(PhaseError::io("writing", to))
            };
            let mut changed = copy(&import.key, &fqdn_paths.key, PRIVATE)?;
            changed |= copy(&import.cert, &fqdn_paths.cert, PUBLIC)?;
            changed |= copy(&import.ca, &layout.fqdn_ca(), PUBLIC)?;
            note(
                "fqdn (imported)",
                if changed {
                    Ensured::Created
                } else {
                    Ensured::Kept
                },
            );
            "FQDN certificate imported"
        }
        None => {
            let mut ips: Vec<_> = ctx.config.spec.nodes.iter().map(|n| n.address).collect();
            ips.extend(ctx.config.spec.vip);
            let fqdn = LeafSpec {
                common_name: ctx.config.spec.fqdn.to_string(),
                organization: None,
                dns_names: vec![ctx.config.spec.fqdn.to_string()],
                ip_addresses: ips,
                usage: Usage::Server,
            };
            let e = ca.ensure_leaf(&fqdn_paths, &fqdn)?;
            note("fqdn", e);
            let ca_path = layout.fqdn_ca();
            write_if_changed(&ca_path, ca.cert_pem().as_bytes(), PUBLIC)
                .map_err(PhaseError::io("writing", &ca_path))?;
            "FQDN certificate issued by the cluster CA"
        }
    };
    Ok(if created.is_empty() {
        format!("all certificates in place; {fqdn_summary}")
    } else {
        format!("issued {}; {fqdn_summary}", created.join(", "))
    })
}

/// Creates `dir` (and its parents) and makes it 0700.
fn private_dir(dir: &Path) -> Result<(), PhaseError> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(PhaseError::io("creating", dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
        .map_err(PhaseError::io("restricting", dir))
}

pub(super) const SPEC: PhaseSpec = PhaseSpec {
    phase: Phase::Pki,
    about: "the cluster's certificate authorities and this node's certificates",
    install: Some(Scope::Cluster),
    upgrade: InUpgrade::No,
    preflight: false,
    run: |ctx, _journal, _workflow| Box::pin(std::future::ready(run(ctx))),
    owns,
    check: None,
};

fn owns(layout: &NodeLayout) -> Vec<OwnedPath> {
    vec![OwnedPath::state(layout.pki_dir())]
}
