//! Generated content for airgap's tests, examples and benchmarks: OCI image layouts holding
//! real images (gzip'd tar layers, configs, manifests, multi-platform indexes), pack
//! directories, and bundle specs. Deterministic for a given seed; nothing is downloaded.

pub mod advisories;
pub mod source_rules;
pub mod wan_proxy;

use std::fs::{self, File};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use airgap::digest::HashingWriter;
use airgap::oci::{Descriptor, Platform, OCI_INDEX, OCI_MANIFEST, REF_NAME_ANNOTATION};
use airgap::tar::{padding, ustar_header, HeaderKind, END_OF_ARCHIVE};
use airgap::Digest;

pub const LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const CONFIG: &str = "application/vnd.oci.image.config.v1+json";

/// xorshift64*: fast, seedable, good enough to make incompressible test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// A layer blob as a manifest and a config name it.
#[derive(Debug, Clone)]
pub struct Layer {
    pub digest: Digest,
    pub size: u64,
    /// sha256 of the uncompressed tar.
    pub diff_id: Digest,
}

/// Writes an OCI image layout directory.
pub struct LayoutWriter {
    dir: PathBuf,
    tagged: Vec<Descriptor>,
}

impl LayoutWriter {
    pub fn create(dir: &Path) -> io::Result<Self> {
        fs::create_dir_all(dir.join("blobs/sha256"))?;
        fs::write(dir.join("oci-layout"), airgap::oci::OCI_LAYOUT_FILE)?;
        Ok(LayoutWriter {
            dir: dir.to_path_buf(),
            tagged: Vec::new(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn blob(&mut self, bytes: &[u8]) -> io::Result<(Digest, u64)> {
        let digest = Digest::of(bytes);
        fs::write(self.dir.join(digest.blob_path()), bytes)?;
        Ok((digest, bytes.len() as u64))
    }

    /// A gzip'd tar layer holding one file of `size` random bytes. Stored (level 0) deflate
    /// keeps generation fast; the data is incompressible anyway.
    pub fn random_layer(&mut self, rng: &mut Rng, size: u64) -> io::Result<Layer> {
        let mut buf = vec![0u8; (1 << 20).min(size as usize).max(1)];
        self.layer(rng.next_u64(), flate2::Compression::none(), |tar| {
            tar.write_all(
                &ustar_header("data.bin", HeaderKind::Regular, 0o644, size, 0)
                    .map_err(io::Error::other)?,
            )?;
            let mut left = size;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                rng.fill(&mut buf[..n]);
                tar.write_all(&buf[..n])?;
                left -= n as u64;
            }
            tar.write_all(&END_OF_ARCHIVE[..padding(size) as usize])
        })
    }

    /// A layer with a static busybox at `bin/busybox` (from the host's `busybox-static`), so
    /// an image over it really runs: `/bin/busybox echo …`.
    pub fn busybox_layer(&mut self, busybox: &Path) -> io::Result<Layer> {
        let bytes = fs::read(busybox)?;
        self.layer(0, flate2::Compression::fast(), |tar| {
            for dir in ["bin/", "tmp/", "proc/", "sys/", "dev/", "etc/"] {
                tar.write_all(
                    &ustar_header(dir, HeaderKind::Directory, 0o755, 0, 0)
                        .map_err(io::Error::other)?,
                )?;
            }
            let size = bytes.len() as u64;
            tar.write_all(
                &ustar_header("bin/busybox", HeaderKind::Regular, 0o755, size, 0)
                    .map_err(io::Error::other)?,
            )?;
            tar.write_all(&bytes)?;
            tar.write_all(&END_OF_ARCHIVE[..padding(size) as usize])
        })
    }

    /// Writes a gzip'd tar layer whose entries `entries` writes, recording both digests: the
    /// blob's (compressed) and the `diff_id` (the uncompressed tar), which runtimes check
    /// when they unpack.
    fn layer(
        &mut self,
        tag: u64,
        level: flate2::Compression,
        entries: impl FnOnce(&mut dyn Write) -> io::Result<()>,
    ) -> io::Result<Layer> {
        let tmp = self.dir.join(format!("blobs/sha256/.tmp-{tag}"));
        let out = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(&tmp)?));
        let gz = flate2::write::GzEncoder::new(out, level);
        let mut tar = HashingWriter::new(gz);
        entries(&mut tar)?;
        tar.write_all(&END_OF_ARCHIVE)?;
        let (gz, diff_id, _) = tar.finish()?;
        let (_, digest, size) = gz.finish()?.finish()?;
        fs::rename(&tmp, self.dir.join(digest.blob_path()))?;
        Ok(Layer {
            digest,
            size,
            diff_id,
        })
    }

    /// An image manifest over `layers`, with a config naming `platform` (`os/arch`).
    pub fn image(&mut self, layers: &[Layer], platform: &str) -> io::Result<Descriptor> {
        self.image_with(layers, platform, &[])
    }

    /// An image whose config runs `entrypoint` (a runnable image over a busybox layer).
    pub fn image_with(
        &mut self,
        layers: &[Layer],
        platform: &str,
        entrypoint: &[&str],
    ) -> io::Result<Descriptor> {
        let (os, arch) = platform.split_once('/').unwrap_or(("linux", "amd64"));
        let mut config = serde_json::json!({"Env": ["PATH=/bin:/usr/bin"]});
        if !entrypoint.is_empty() {
            config["Entrypoint"] = serde_json::json!(entrypoint);
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": os,
            "config": config,
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.diff_id.to_string()).collect::<Vec<_>>()},
        }))?;
        let (config_digest, config_size) = self.blob(&config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers.iter().map(|l| serde_json::json!({"mediaType": LAYER_GZIP, "digest": l.digest, "size": l.size})).collect::<Vec<_>>(),
        }))?;
        let (digest, size) = self.blob(&manifest)?;
        Ok(Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
                variant: None,
            }),
            artifact_type: None,
            annotations: Default::default(),
        })
    }

    /// An OCI 1.1 artifact (`artifactType`, an empty config, `payload` as its one layer)
    /// referring to `subject`, as cosign, notation or oras attach signatures and SBOMs.
    pub fn artifact(
        &mut self,
        subject: &Descriptor,
        artifact_type: &str,
        payload: &[u8],
    ) -> io::Result<Descriptor> {
        let (empty, empty_size) = self.blob(b"{}")?;
        let (payload, payload_size) = self.blob(payload)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty, "size": empty_size},
            "layers": [{"mediaType": "application/octet-stream", "digest": payload, "size": payload_size}],
            "subject": {"mediaType": subject.media_type, "digest": subject.digest, "size": subject.size},
        }))?;
        self.manifest(&manifest, Some(artifact_type))
    }

    /// Stores an OCI image manifest and returns its descriptor.
    fn manifest(&mut self, bytes: &[u8], artifact_type: Option<&str>) -> io::Result<Descriptor> {
        let (digest, size) = self.blob(bytes)?;
        Ok(Descriptor {
            media_type: OCI_MANIFEST.into(),
            digest,
            size,
            platform: None,
            artifact_type: artifact_type.map(Into::into),
            annotations: Default::default(),
        })
    }

    /// A cosign / containers/image signature manifest: `payload` (a simple signing payload)
    /// as its one layer, `signature` (base64) in the layer's annotation, as `cosign sign` and
    /// `skopeo copy --sign-by-sigstore-private-key` store it under `sha256-<digest>.sig`.
    pub fn cosign_signature(&mut self, payload: &[u8], signature: &str) -> io::Result<Descriptor> {
        self.cosign_manifest(
            "application/vnd.dev.cosign.simplesigning.v1+json",
            payload,
            serde_json::json!({"dev.cosignproject.cosign/signature": signature}),
        )
    }

    /// A cosign attestation manifest: `envelope` (a DSSE envelope of an in-toto statement) as
    /// its one layer, as `cosign attest` stores it under `sha256-<digest>.att`.
    pub fn cosign_attestation(
        &mut self,
        envelope: &[u8],
        predicate_type: &str,
    ) -> io::Result<Descriptor> {
        self.cosign_manifest(
            "application/vnd.dsse.envelope.v1+json",
            envelope,
            serde_json::json!({"predicateType": predicate_type}),
        )
    }

    fn cosign_manifest(
        &mut self,
        layer_type: &str,
        layer: &[u8],
        annotations: serde_json::Value,
    ) -> io::Result<Descriptor> {
        let (layer_digest, layer_size) = self.blob(layer)?;
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "", "os": "", "config": {},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }))?;
        let (config, config_size) = self.blob(&config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size},
            "layers": [{
                "mediaType": layer_type,
                "digest": layer_digest,
                "size": layer_size,
                "annotations": annotations,
            }],
        }))?;
        self.manifest(&manifest, None)
    }

    /// A multi-platform index over `children`.
    pub fn index(&mut self, children: &[Descriptor]) -> io::Result<Descriptor> {
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": children,
        }))?;
        let (digest, size) = self.blob(&index)?;
        Ok(Descriptor {
            media_type: OCI_INDEX.into(),
            digest,
            size,
            platform: None,
            artifact_type: None,
            annotations: Default::default(),
        })
    }

    pub fn tag(&mut self, desc: &Descriptor, name: &str) {
        let mut desc = desc.clone();
        desc.platform = None;
        desc.annotations
            .insert(REF_NAME_ANNOTATION.into(), name.into());
        self.tagged.push(desc);
    }

    pub fn finish(self) -> io::Result<PathBuf> {
        fs::write(
            self.dir.join("index.json"),
            airgap::oci::layout_index(&self.tagged),
        )?;
        Ok(self.dir)
    }
}

/// Writes a pack directory naming `images` in its values and one manifest.
pub fn write_pack(
    dir: &Path,
    name: &str,
    version: &str,
    layer: &str,
    images: &[&str],
) -> io::Result<()> {
    fs::create_dir_all(dir.join("manifests"))?;
    fs::write(
        dir.join("pack.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "name": name, "displayName": name, "version": version, "layer": layer,
        }))?,
    )?;
    // The first image is named in values.yaml, the rest only in a manifest: both are sources.
    let (first, rest) = images
        .split_first()
        .map_or((None, &[][..]), |(f, r)| (Some(f), r));
    let values = match first {
        Some(image) => {
            format!("pack:\n  namespace: {name}\n  content:\n    images:\n      - image: {image}\n")
        }
        None => format!("pack:\n  namespace: {name}\n"),
    };
    fs::write(dir.join("values.yaml"), values)?;
    let mut manifest = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {name}\nspec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {name}\n  template:\n    metadata:\n      labels:\n        app: {name}\n    spec:\n      containers:\n"
    );
    for (i, image) in rest.iter().enumerate() {
        manifest.push_str(&format!("        - name: c{i}\n          image: {image}\n"));
    }
    if rest.is_empty() {
        manifest = format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n");
    }
    fs::write(dir.join("manifests/deployment.yaml"), manifest)?;
    Ok(())
}

/// A small but complete fixture: a layout with a two-platform image, two single-platform
/// images sharing a layer, a pack needing two of them, and a spec over it all.
pub struct Fixture {
    pub root: PathBuf,
    pub spec: PathBuf,
    pub layout: PathBuf,
}

pub const FIXTURE_IMAGES: [&str; 3] = [
    "example.internal/platform/api:1.0",
    "example.internal/platform/worker:1.0",
    "example.internal/base/multi:2.1",
];

/// The `k8s` pack's images: what kubeadm pulls for [`FIXTURE_K8S_VERSION`] (synthetic content;
/// names and tags are what matter to the installer).
pub const FIXTURE_K8S_IMAGES: [&str; 6] = [
    "registry.k8s.io/kube-apiserver:v1.34.2",
    "registry.k8s.io/kube-controller-manager:v1.34.2",
    "registry.k8s.io/kube-scheduler:v1.34.2",
    "registry.k8s.io/kube-proxy:v1.34.2",
    "registry.k8s.io/coredns/coredns:v1.12.1",
    "registry.k8s.io/pause:3.10.1",
];
pub const FIXTURE_K8S_VERSION: &str = "1.34.2";

/// Writes a `k8s` pack naming every image in its values (it has no manifests: kubeadm makes
/// the control plane's).
pub fn write_k8s_pack(dir: &Path, version: &str, images: &[&str]) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::write(
        dir.join("pack.json"),
        serde_json::to_vec_pretty(&serde_json::json!({
            "name": "kubernetes", "displayName": "Kubernetes", "version": version, "layer": "k8s",
        }))?,
    )?;
    let mut values = String::from("pack:\n  namespace: kube-system\n  content:\n    images:\n");
    for image in images {
        values.push_str(&format!("      - image: {image}\n"));
    }
    fs::write(dir.join("values.yaml"), values)
}

/// What a fixture carries beyond its synthetic images.
#[derive(Debug, Clone, Default)]
pub struct FixtureOptions {
    /// A static busybox: the api image and the pause image get it as their first layer and
    /// really run (`/bin/busybox …`; pause sleeps).
    pub busybox: Option<PathBuf>,
    /// Files copied into the `k8s` pack: (path in the pack, e.g. `bin/containerd`, source).
    pub node_files: Vec<(String, PathBuf)>,
}

/// The pause image's name among [`FIXTURE_K8S_IMAGES`].
pub const FIXTURE_PAUSE: &str = "registry.k8s.io/pause:3.10.1";

pub fn fixture(root: &Path, seed: u64, layer_size: u64) -> io::Result<Fixture> {
    fixture_with(root, seed, layer_size, &FixtureOptions::default())
}

pub fn fixture_with(
    root: &Path,
    seed: u64,
    layer_size: u64,
    options: &FixtureOptions,
) -> io::Result<Fixture> {
    let mut rng = Rng::new(seed);
    let layout_dir = root.join("layout");
    let mut layout = LayoutWriter::create(&layout_dir)?;
    let busybox = match &options.busybox {
        Some(path) => Some(layout.busybox_layer(path)?),
        None => None,
    };
    let shared = layout.random_layer(&mut rng, layer_size)?;
    let a = layout.random_layer(&mut rng, layer_size / 2 + 1)?;
    let b = layout.random_layer(&mut rng, layer_size / 3 + 2)?;
    let api = match &busybox {
        Some(bb) => layout.image_with(
            &[bb.clone(), shared.clone(), a.clone()],
            "linux/amd64",
            &["/bin/busybox"],
        )?,
        None => layout.image(&[shared.clone(), a.clone()], "linux/amd64")?,
    };
    layout.tag(&api, FIXTURE_IMAGES[0]);
    let worker = layout.image(&[shared, b], "linux/amd64")?;
    layout.tag(&worker, FIXTURE_IMAGES[1]);
    let arm_layer = layout.random_layer(&mut rng, layer_size / 4 + 3)?;
    let amd = layout.image(&[a], "linux/amd64")?;
    let arm = layout.image(&[arm_layer], "linux/arm64")?;
    let multi = layout.index(&[amd, arm])?;
    layout.tag(&multi, FIXTURE_IMAGES[2]);
    for (i, name) in FIXTURE_K8S_IMAGES.iter().enumerate() {
        let layer = layout.random_layer(&mut rng, 512 + i as u64)?;
        let image = match &busybox {
            Some(bb) if *name == FIXTURE_PAUSE => layout.image_with(
                &[bb.clone(), layer],
                "linux/amd64",
                &["/bin/busybox", "sleep", "2147483647"],
            )?,
            _ => layout.image(&[layer], "linux/amd64")?,
        };
        layout.tag(&image, name);
    }
    layout.finish()?;
    let k8s = root.join("packs/kubernetes");
    write_k8s_pack(&k8s, FIXTURE_K8S_VERSION, &FIXTURE_K8S_IMAGES)?;
    for (path, source) in &options.node_files {
        let to = k8s.join(path);
        if let Some(dir) = to.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::copy(source, &to)?;
    }
    write_pack(
        &root.join("packs/platform-core"),
        "platform-core",
        "1.2.0",
        "addon",
        &FIXTURE_IMAGES[..2],
    )?;
    let spec = root.join("bundle.yaml");
    let mut text = String::from(
        "apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: mgmt-plane, version: 4.5.0}\nspec:\n  platforms: [all]\n  packs:\n    - path: packs/platform-core\n    - path: packs/kubernetes\n  images:\n",
    );
    for image in FIXTURE_IMAGES.iter().chain(&FIXTURE_K8S_IMAGES) {
        text.push_str(&format!(
            "    - ref: {image}\n      from: oci:layout:{image}\n"
        ));
    }
    fs::write(&spec, text)?;
    Ok(Fixture {
        root: root.to_path_buf(),
        spec,
        layout: layout_dir,
    })
}

/// Benchmark content: `images` images of `layers` layers of `layer_size` bytes each, every
/// image also sharing one common base layer, plus a spec naming them all. With `k8s`, the
/// spec also carries the fixture's `k8s` pack and its (tiny) images, which an install needs.
pub fn bench_content(
    root: &Path,
    images: usize,
    layers: usize,
    layer_size: u64,
    k8s: bool,
) -> io::Result<Vec<String>> {
    let mut rng = Rng::new(42);
    let mut layout = LayoutWriter::create(&root.join("layout"))?;
    let base = layout.random_layer(&mut rng, layer_size)?;
    let mut names = Vec::new();
    let mut spec = String::from("apiVersion: airgap/v1\nkind: Bundle\nmetadata: {name: bench, version: 1.0.0}\nspec:\n  images:\n");
    for i in 0..images {
        let mut image_layers = vec![base.clone()];
        for _ in 0..layers {
            image_layers.push(layout.random_layer(&mut rng, layer_size)?);
        }
        let desc = layout.image(&image_layers, "linux/amd64")?;
        let name = format!("example.internal/bench/img-{i:02}:1.0");
        layout.tag(&desc, &name);
        spec.push_str(&format!(
            "    - ref: {name}\n      from: oci:layout:{name}\n"
        ));
        names.push(name);
    }
    if k8s {
        for (i, name) in FIXTURE_K8S_IMAGES.iter().enumerate() {
            let layer = layout.random_layer(&mut rng, 512 + i as u64)?;
            let desc = layout.image(&[layer], "linux/amd64")?;
            layout.tag(&desc, name);
            spec.push_str(&format!(
                "    - ref: {name}\n      from: oci:layout:{name}\n"
            ));
            names.push(name.to_string());
        }
        write_k8s_pack(
            &root.join("packs/kubernetes"),
            FIXTURE_K8S_VERSION,
            &FIXTURE_K8S_IMAGES,
        )?;
        spec.push_str("  packs:\n    - path: packs/kubernetes\n");
    }
    layout.finish()?;
    fs::write(root.join("bundle.yaml"), spec)?;
    Ok(names)
}
