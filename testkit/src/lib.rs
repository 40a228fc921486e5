//! Generated content for airgap's tests, examples and benchmarks: OCI image layouts holding
//! real images (gzip'd tar layers, configs, manifests, multi-platform indexes), pack
//! directories, and bundle specs. Deterministic for a given seed; nothing is downloaded.

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
    pub fn random_layer(&mut self, rng: &mut Rng, size: u64) -> io::Result<(Digest, u64)> {
        let tmp = self
            .dir
            .join(format!("blobs/sha256/.tmp-{}", rng.next_u64()));
        let mut out = HashingWriter::new(BufWriter::with_capacity(1 << 20, File::create(&tmp)?));
        {
            let mut gz = flate2::write::GzEncoder::new(&mut out, flate2::Compression::none());
            let header = ustar_header("data.bin", HeaderKind::Regular, 0o644, size, 0)
                .map_err(io::Error::other)?;
            gz.write_all(&header)?;
            let mut buf = vec![0u8; 1 << 20];
            let mut left = size;
            while left > 0 {
                let n = left.min(buf.len() as u64) as usize;
                rng.fill(&mut buf[..n]);
                gz.write_all(&buf[..n])?;
                left -= n as u64;
            }
            gz.write_all(&END_OF_ARCHIVE[..padding(size) as usize])?;
            gz.write_all(&END_OF_ARCHIVE)?;
            gz.finish()?;
        }
        let (_, digest, len) = out.finish()?;
        fs::rename(&tmp, self.dir.join(digest.blob_path()))?;
        Ok((digest, len))
    }

    /// An image manifest over `layers`, with a config naming `platform` (`os/arch`).
    pub fn image(&mut self, layers: &[(Digest, u64)], platform: &str) -> io::Result<Descriptor> {
        let (os, arch) = platform.split_once('/').unwrap_or(("linux", "amd64"));
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": arch,
            "os": os,
            "config": {"Env": ["PATH=/usr/bin"]},
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.0.to_string()).collect::<Vec<_>>()},
        }))?;
        let (config_digest, config_size) = self.blob(&config)?;
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": CONFIG, "digest": config_digest, "size": config_size},
            "layers": layers.iter().map(|(d, s)| serde_json::json!({"mediaType": LAYER_GZIP, "digest": d, "size": s})).collect::<Vec<_>>(),
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

pub fn fixture(root: &Path, seed: u64, layer_size: u64) -> io::Result<Fixture> {
    let mut rng = Rng::new(seed);
    let layout_dir = root.join("layout");
    let mut layout = LayoutWriter::create(&layout_dir)?;
    let shared = layout.random_layer(&mut rng, layer_size)?;
    let a = layout.random_layer(&mut rng, layer_size / 2 + 1)?;
    let b = layout.random_layer(&mut rng, layer_size / 3 + 2)?;
    let api = layout.image(&[shared, a], "linux/amd64")?;
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
        let image = layout.image(&[layer], "linux/amd64")?;
        layout.tag(&image, name);
    }
    layout.finish()?;
    write_k8s_pack(
        &root.join("packs/kubernetes"),
        FIXTURE_K8S_VERSION,
        &FIXTURE_K8S_IMAGES,
    )?;
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
        let mut image_layers = vec![base];
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
