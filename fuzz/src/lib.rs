//! Fuzz targets: one function per parser that reads bytes an attacker may control (a bundle
//! carried across the gap, a spec or pack from upstream, a certificate an operator imports, a
//! manifest or request from the network).
//!
//! A target must never panic, hang or write outside the place it was given, whatever the
//! input; an `Err` is a correct answer. The functions live here, in an ordinary workspace
//! crate, so that the test suite replays every saved input (`tests/replay.rs`, no fuzzer
//! needed) and `fuzz/libfuzzer` (its own workspace, built only by `scripts/fuzz.sh`) wraps
//! each one in a libFuzzer binary for coverage-guided runs. An input that once crashed a
//! target is saved under `corpus/<target>/` and so becomes a regression test.

use std::io::Read;
use std::path::Path;
use std::sync::{Arc, OnceLock};

/// A target: takes any bytes, returns only if it handled them.
pub type Target = fn(&[u8]);

/// Every target, by the name its corpus and `AIRGAP_FUZZ_TARGET` use.
pub const TARGETS: &[(&str, Target)] = &[
    ("tar_reader", tar_reader),
    ("bundle_verify", bundle_verify),
    ("bundle_index", bundle_index),
    ("signature_file", signature_file),
    ("bundle_spec", bundle_spec),
    ("pack_dir", pack_dir),
    ("pack_layer", pack_layer),
    ("install_config", install_config),
    ("pem_certificate", pem_certificate),
    ("oci_manifest", oci_manifest),
    ("registry_request", registry_request),
];

/// Looks a target up by name.
pub fn target(name: &str) -> Option<Target> {
    TARGETS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
}

/// The strict reader (bundles) and the lenient one (pack layers from other tools), to the end.
pub fn tar_reader(data: &[u8]) {
    use airgap::tar::{Strictness, TarReader};
    for strictness in [Strictness::Strict, Strictness::Lenient] {
        let mut tar = TarReader::new(data, strictness);
        while let Ok(Some(header)) = tar.next_header() {
            let _ = header.kind.describe();
            let _ = header.is_canonical();
            let _ = std::io::copy(&mut (&mut tar).take(header.size), &mut std::io::sink());
        }
    }
}

/// The headers every signed input gets: the bundle's one mtime.
const MTIME: u64 = 1_700_000_000;

fn signing_key() -> &'static airgap::SigningKey {
    static KEY: OnceLock<airgap::SigningKey> = OnceLock::new();
    KEY.get_or_init(|| airgap::SigningKey::generate().expect("a key from the OS's randomness"))
}

/// Splits a signed-bundle input: `[u16 LE index length][index][rest of the archive]`.
fn bundle_parts(data: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = data.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    Some(rest.split_at(len))
}

/// Builds the archive a signed-bundle input stands for: the fuzzer cannot forge a signature,
/// so the harness signs whatever index it chose and the verifier's later stages (index
/// checks, entry headers, digests, order, padding, the end) are reachable.
pub fn signed_bundle(index: &[u8], rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048 + index.len() + rest.len());
    // Stamped like the input's first entry, so that a real bundle's entries can follow.
    let mtime = rest
        .get(136..147)
        .and_then(|field| std::str::from_utf8(field).ok())
        .and_then(|octal| u64::from_str_radix(octal, 8).ok())
        .unwrap_or(MTIME);
    // The writer puts down the index and its signature at once; the input supplies the rest.
    let _ = airgap::BundleWriter::start(&mut out, index, signing_key(), mtime);
    out.extend_from_slice(rest);
    out
}

/// The streaming verifier and the parallel file verifier on the same bytes: both must agree
/// on whether the bundle is good, and on the error when it is not.
pub fn bundle_verify(data: &[u8]) {
    let Some((index, rest)) = bundle_parts(data) else {
        return;
    };
    let archive = signed_bundle(index, rest);
    let key = signing_key().public_key();
    let streamed = airgap::verify(&archive[..], &key);
    let Ok(dir) = tempfile::tempdir() else { return };
    let path = dir.path().join("bundle.tar");
    if std::fs::write(&path, &archive).is_err() {
        return;
    }
    let parallel = airgap::verify_file(&path, &key, 2, |_| {});
    match (&streamed, &parallel) {
        (Ok(a), Ok(b)) => assert_eq!(a.index_digest(), b.index_digest()),
        (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
        _ => panic!(
            "the verifiers disagree: streamed {:?}, parallel {:?}",
            streamed.as_ref().map(|v| v.index_digest()),
            parallel.as_ref().map(|v| v.index_digest())
        ),
    }
}

/// The index as `bundle inspect` reads it before any signature: parse, then its own checks.
pub fn bundle_index(data: &[u8]) {
    if let Ok(index) = airgap::BundleIndex::parse(data) {
        let _ = index.check();
        let _ = index.content_size();
        // What the writer emits must read back as the same index.
        let again = airgap::BundleIndex::parse(&index.to_bytes()).expect("a written index parses");
        assert_eq!(again.to_bytes(), index.to_bytes());
    }
}

/// The signature file, then a verification against a key that did not sign it.
pub fn signature_file(data: &[u8]) {
    if let Ok(signatures) = airgap::SignatureFile::parse(data) {
        let _ = signatures.key_ids();
        assert!(
            signatures
                .verify(&signing_key().public_key(), b"not what was signed")
                .is_err(),
            "a signature over other bytes verified"
        );
    }
}

/// `bundle.yaml`.
pub fn bundle_spec(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(spec) = bundler::spec::BundleSpec::parse(text, Path::new("bundle.yaml")) {
        let _ = spec.keeps_all_platforms();
    }
}

/// A pack directory: `pack.json`, `values.yaml` and one manifest, separated in the input by
/// two NUL bytes.
pub fn pack_dir(data: &[u8]) {
    let mut parts = data.splitn(3, |&b| b == 0);
    let (meta, values, manifest) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let Ok(dir) = tempfile::tempdir() else { return };
    let write = |path: &Path, bytes: &[u8]| std::fs::write(path, bytes).is_ok();
    if !(write(&dir.path().join("pack.json"), meta)
        && write(&dir.path().join("values.yaml"), values)
        && std::fs::create_dir(dir.path().join("manifests")).is_ok()
        && write(&dir.path().join("manifests/app.yaml"), manifest))
    {
        return;
    }
    if let Ok(pack) = bundler::pack::Pack::load(dir.path()) {
        let _ = pack.reference();
    }
}

/// A published pack layer (tar.gz) unpacked: whatever it holds, nothing may land outside
/// the destination.
pub fn pack_layer(data: &[u8]) {
    let Ok(dir) = tempfile::tempdir() else { return };
    let layer = dir.path().join("layer.tar.gz");
    if std::fs::write(&layer, data).is_err() {
        return;
    }
    let dest = dir.path().join("dest");
    let unpacked = bundler::pack::unpack_layer(&layer, &dest);
    let mut names: Vec<_> = std::fs::read_dir(dir.path())
        .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    names.sort();
    assert!(
        names.iter().all(|n| n == "layer.tar.gz" || n == "dest"),
        "unpacking wrote outside its destination: {names:?}"
    );
    if let Ok(pack_dir) = unpacked {
        assert!(pack_dir.starts_with(&dest));
        let _ = bundler::pack::Pack::load(&pack_dir);
    }
}

/// `install.yaml`, then what the installer derives from it first.
pub fn install_config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(config) = installer::config::InstallConfig::parse(text) {
        let _ = config.topology();
        let _ = config.registry_port();
        let _ = config.external_registry();
    }
}

/// An imported certificate chain, key and CA: `[cert] NUL [key] NUL [ca]`.
pub fn pem_certificate(data: &[u8]) {
    use installer::pki::imported::{check_server_certificate, pem_certificates};
    let _ = pem_certificates(data, "the certificate file");
    let mut parts = data.splitn(3, |&b| b == 0);
    let (cert, key, ca) = (
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
        parts.next().unwrap_or_default(),
    );
    let _ = check_server_certificate(cert, key, ca, "mgmt.example.internal");
}

/// A manifest or index as a registry returns it: media type detection, then the references
/// the seeder and the registry act on, read as each kind.
pub fn oci_manifest(data: &[u8]) {
    use airgap::oci;
    let detected = oci::detect_media_type(data);
    for declared in [
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "",
    ] {
        let media_type = oci::manifest_media_type(data, declared);
        if let Ok(refs) = registry::manifest::References::parse(declared, data) {
            for child in refs.descriptors() {
                let _ = oci::keeps_platform(Some(&["linux/amd64".to_string()]), child);
            }
        }
        let _ = (media_type, &detected);
    }
}

/// Raw bytes as one HTTP/1.1 connection to the built-in registry (deletes on, no auth): the
/// request line and header parsing, the routing, every handler. The store is shared by every
/// run, so what one input pushes another may read.
pub fn registry_request(data: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    struct Server {
        runtime: tokio::runtime::Runtime,
        registry: Arc<registry_server::Registry>,
        _dir: tempfile::TempDir,
    }
    static SERVER: OnceLock<Option<Server>> = OnceLock::new();
    let server = SERVER.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        let dir = tempfile::tempdir().ok()?;
        let registry = runtime.block_on(async {
            let store = registry_server::store::LayoutStore::open(
                dir.path(),
                registry_server::store::UploadLimits::default(),
            )
            .await
            .ok()?;
            Some(Arc::new(registry_server::Registry::with_options(
                registry_server::store::Store::Layout(store),
                None,
                registry_server::RegistryOptions {
                    deletes: true,
                    ..Default::default()
                },
            )))
        })?;
        Some(Server {
            runtime,
            registry,
            _dir: dir,
        })
    });
    let Some(server) = server else { return };
    let (mut client, connection) = tokio::io::duplex(64 << 10);
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    server.runtime.block_on(async {
        let serving = tokio::spawn(server.registry.clone().serve_connection(connection, peer));
        let exchange = async {
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        // A request that waits for body bytes the input never sends ends with the input.
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), exchange).await;
        serving.abort();
    });
}
