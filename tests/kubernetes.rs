//! Phases kubernetes and platform end to end: a real install (etcd, the built-in registry) in
//! a network namespace, then every rendered document checked against its typed schema, the
//! CIS hardening items one by one, every image against the bundle and the registry, and
//! re-runs byte for byte.
//!
//! kubeadm and a cluster cannot run on these machines. One test runs with no kubeadm on PATH
//! (the install must render, stop, and say no cluster runs); the other puts a STAND-IN
//! `kubeadm` and `kubectl` on PATH — shell scripts written below, not the real tools — which
//! record their arguments and check the files they are given.

mod common;

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::node::{
    install, install_yaml, output_ok, secret, skopeo_certs, status_json, EtcdProbe, NetNs, ADDRESS,
    FQDN,
};
use common::{airgap, Setup};
use installer::kubernetes::schema::{
    documents, parse_single, AdmissionConfiguration, AuditLevel, AuditPolicy, KubeadmConfig,
};

const REGISTRY: &str = "mgmt.example.internal:5000";

/// A PATH holding only `etcd` and `ip` (which runs the installer in the namespace): no
/// kubeadm can sneak in from the machine.
fn bin_dir(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in ["etcd", "ip"] {
        let found = std::env::split_paths(&std::env::var_os("PATH").unwrap())
            .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
            .map(|d| d.join(tool))
            .find(|p| p.is_file())
            .unwrap_or_else(|| panic!("{tool} not found (Debian: etcd-server, iproute2)"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    bin
}

fn run_install(
    ns: &NetNs,
    s: &Setup,
    bundle: &Path,
    root: &Path,
    bin: &Path,
    env: &[(&str, &Path)],
) -> std::process::Output {
    let config = install_yaml(s.dir.path(), "");
    let mut cmd = install(ns, &config, bundle, &s.public(), root);
    cmd.env("PATH", bin);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

/// The rendered files of both phases, with content and modification time.
fn rendered(root: &Path) -> BTreeMap<PathBuf, (Vec<u8>, i64)> {
    let mut out = BTreeMap::new();
    let mut stack: Vec<PathBuf> = [
        "etc/airgap/kubernetes",
        "etc/airgap/manifests",
        "etc/containerd/certs.d",
        "etc/kubernetes/audit-policy.yaml",
        "etc/kubernetes/admission-config.yaml",
        "etc/sysctl.d/90-airgap-kubelet.conf",
    ]
    .iter()
    .map(|p| root.join(p))
    .collect();
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().flatten().map(|e| e.path()));
        } else {
            let meta = std::fs::metadata(&p).unwrap();
            out.insert(
                p.clone(),
                (
                    std::fs::read(&p).unwrap(),
                    meta.mtime_nsec() + meta.mtime() * 1_000_000_000,
                ),
            );
        }
    }
    out
}

/// `/etc/...` as written in a rendered file, under the test's root.
fn on_node(root: &Path, node_path: &str) -> PathBuf {
    root.join(node_path.trim_start_matches('/'))
}

/// Every bundle image as `<registry>/<mirror repository>:<tag>`.
fn mirrored_images(bundle: &Path) -> Vec<String> {
    let inspect = common::ok(airgap().args(["bundle", "inspect", "--json"]).arg(bundle));
    let index: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    index["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            let tag = i["reference"].as_str().unwrap().rsplit_once(':').unwrap().1;
            format!(
                "{REGISTRY}/{}:{tag}",
                i["mirrorRepository"].as_str().unwrap()
            )
        })
        .collect()
}

/// Parses `value` as `T` and serializes it back: k8s-openapi ignores unknown fields, so any
/// field it does not know shows up as a difference.
fn strict<T: serde::de::DeserializeOwned + serde::Serialize>(value: &serde_json::Value) {
    let typed: T =
        serde_json::from_value(value.clone()).unwrap_or_else(|e| panic!("{e}: {value:#}"));
    let back = serde_json::to_value(&typed).unwrap();
    assert_eq!(
        &back, value,
        "fields k8s-openapi does not know were dropped"
    );
}

/// A core object of a rendered manifest, checked against its k8s-openapi type.
fn check_object(doc: &serde_json::Value) {
    use k8s_openapi::api::{apps::v1 as apps, core::v1 as core};
    match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
        (Some("v1"), Some("Namespace")) => strict::<core::Namespace>(doc),
        (Some("v1"), Some("ConfigMap")) => strict::<core::ConfigMap>(doc),
        (Some("v1"), Some("Service")) => strict::<core::Service>(doc),
        (Some("apps/v1"), Some("Deployment")) => strict::<apps::Deployment>(doc),
        (Some("apps/v1"), Some("DaemonSet")) => strict::<apps::DaemonSet>(doc),
        other => panic!("no schema for {other:?} in this test"),
    }
}

fn images_in(doc: &serde_json::Value, out: &mut Vec<String>) {
    match doc {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("image", serde_json::Value::String(s)) => out.push(s.clone()),
                    _ => images_in(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| images_in(v, out)),
        _ => {}
    }
}

#[test]
fn without_kubeadm_the_configuration_is_rendered_hardened_and_no_cluster_is_claimed() {
    let s = Setup::new(4096);
    let bundle = s.build("b.tar");
    let ns = NetNs::create("k8s-render");
    let root = s.path("node");
    let bin = bin_dir(s.dir.path());
    let out = output_ok(&run_install(&ns, &s, &bundle, &root, &bin, &[]), "install");
    assert!(
        out.contains("kubeadm not on PATH: configuration rendered only"),
        "{out}"
    );
    assert!(
        out.contains("Kubernetes is configured but NOT running"),
        "{out}"
    );
    assert!(out.contains("not applied: no cluster"), "{out}");
    // Nor a containerd: the runtime phase says the node has no runtime, and goes on.
    assert!(
        out.lines().any(|l| l.starts_with("[runtime]")
            && l.contains(
                "no containerd in the bundle or on PATH: no container runtime configured"
            )),
        "{out}"
    );
    assert!(!root.join("etc/airgap/containerd/config.toml").exists());
    assert!(!root.join("etc/kubernetes/admin.conf").exists());

    // Every document parses as its typed schema, unknown fields rejected.
    let kubeadm_text =
        std::fs::read_to_string(root.join("etc/airgap/kubernetes/kubeadm.yaml")).unwrap();
    let config = KubeadmConfig::parse(&kubeadm_text).unwrap();
    let audit: AuditPolicy = parse_single(
        &std::fs::read_to_string(root.join("etc/kubernetes/audit-policy.yaml")).unwrap(),
    )
    .unwrap();
    let admission: AdmissionConfiguration = parse_single(
        &std::fs::read_to_string(root.join("etc/kubernetes/admission-config.yaml")).unwrap(),
    )
    .unwrap();
    // ...and the check can fail: one stray key anywhere is refused.
    let typo = kubeadm_text.replace(
        "  bindPort: 6443\n",
        "  bindPort: 6443\n  bindAddress: 0.0.0.0\n",
    );
    assert_ne!(typo, kubeadm_text);
    let e = installer::error::chain(&KubeadmConfig::parse(&typo).unwrap_err());
    assert!(e.contains("unknown field `bindAddress`"), "{e}");
    let misplaced = kubeadm_text.replace("readOnlyPort: 0", "readOnlyPorts: 0");
    assert!(KubeadmConfig::parse(&misplaced).is_err());

    let (init, cluster, kubelet) = (&config.init, &config.cluster, &config.kubelet);
    let api = &cluster.api_server;
    let cm = &cluster.controller_manager;
    let sched = &cluster.scheduler;
    let ciphers = installer::tls::CIPHER_SUITES;

    // The hardening the platform promises, item by item (CIS Kubernetes Benchmark ids).
    let table: Vec<(&str, Option<&str>, &str)> = vec![
        (
            "1.2.1 apiserver anonymous-auth",
            api.arg("anonymous-auth"),
            "false",
        ),
        (
            "1.2.5 apiserver kubelet-certificate-authority",
            api.arg("kubelet-certificate-authority"),
            "/etc/kubernetes/pki/ca.crt",
        ),
        (
            "1.2.6-8 apiserver authorization-mode",
            api.arg("authorization-mode"),
            "Node,RBAC",
        ),
        (
            "1.2.9-15 admission NodeRestriction + PodSecurity",
            api.arg("enable-admission-plugins"),
            "NodeRestriction,PodSecurity",
        ),
        (
            "5.2 PodSecurity configuration",
            api.arg("admission-control-config-file"),
            "/etc/kubernetes/admission-config.yaml",
        ),
        ("1.2.16 apiserver profiling", api.arg("profiling"), "false"),
        (
            "1.2.17 audit-log-path",
            api.arg("audit-log-path"),
            "/var/log/kubernetes/audit/audit.log",
        ),
        ("1.2.18 audit-log-maxage", api.arg("audit-log-maxage"), "30"),
        (
            "1.2.19 audit-log-maxbackup",
            api.arg("audit-log-maxbackup"),
            "10",
        ),
        (
            "1.2.20 audit-log-maxsize",
            api.arg("audit-log-maxsize"),
            "100",
        ),
        (
            "3.2.1 audit-policy-file",
            api.arg("audit-policy-file"),
            "/etc/kubernetes/audit-policy.yaml",
        ),
        (
            "1.2.22 service-account-lookup",
            api.arg("service-account-lookup"),
            "true",
        ),
        (
            "1.2.27 encryption-provider-config",
            api.arg("encryption-provider-config"),
            "/etc/kubernetes/encryption-config.yaml",
        ),
        (
            "apiserver tls-min-version",
            api.arg("tls-min-version"),
            "VersionTLS12",
        ),
        (
            "1.2.29 apiserver tls-cipher-suites",
            api.arg("tls-cipher-suites"),
            ciphers,
        ),
        (
            "1.3.1 terminated-pod-gc-threshold",
            cm.arg("terminated-pod-gc-threshold"),
            "25",
        ),
        (
            "1.3.2 controller-manager profiling",
            cm.arg("profiling"),
            "false",
        ),
        (
            "1.3.3 use-service-account-credentials",
            cm.arg("use-service-account-credentials"),
            "true",
        ),
        (
            "1.3.6 RotateKubeletServerCertificate",
            cm.arg("feature-gates"),
            "RotateKubeletServerCertificate=true",
        ),
        (
            "1.3.7 controller-manager bind-address",
            cm.arg("bind-address"),
            "127.0.0.1",
        ),
        (
            "controller-manager tls-min-version",
            cm.arg("tls-min-version"),
            "VersionTLS12",
        ),
        (
            "controller-manager tls-cipher-suites",
            cm.arg("tls-cipher-suites"),
            ciphers,
        ),
        ("1.4.1 scheduler profiling", sched.arg("profiling"), "false"),
        (
            "1.4.2 scheduler bind-address",
            sched.arg("bind-address"),
            "127.0.0.1",
        ),
        (
            "scheduler tls-min-version",
            sched.arg("tls-min-version"),
            "VersionTLS12",
        ),
        (
            "scheduler tls-cipher-suites",
            sched.arg("tls-cipher-suites"),
            ciphers,
        ),
    ];
    for (item, found, expected) in &table {
        assert_eq!(found, &Some(*expected), "hardening item {item}");
    }
    // What must never be there.
    for component in [&api.extra_args, &cm.extra_args, &sched.extra_args] {
        for arg in component.iter() {
            assert_ne!(
                arg.name, "insecure-port",
                "the insecure port flag was removed in 1.24; it must not appear"
            );
            assert_ne!(arg.name, "insecure-bind-address");
        }
    }
    for plugin in api.arg("enable-admission-plugins").unwrap().split(',') {
        assert_ne!(plugin, "AlwaysAdmit");
    }
    assert!(!api
        .arg("authorization-mode")
        .unwrap()
        .contains("AlwaysAllow"));
    let minor: u32 = cluster
        .kubernetes_version
        .split('.')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        minor >= 24,
        "before 1.24 the API server still had an insecure port"
    );

    // Kubelet (CIS section 4.2).
    let kubelet_table: Vec<(&str, bool)> = vec![
        (
            "4.2.1 anonymous auth off",
            !kubelet.authentication.anonymous.enabled,
        ),
        (
            "4.2.2 webhook authorization",
            kubelet.authorization.mode == "Webhook",
        ),
        (
            "webhook authentication",
            kubelet.authentication.webhook.enabled,
        ),
        (
            "4.2.3 client CA",
            kubelet.authentication.x509.client_ca_file == "/etc/kubernetes/pki/ca.crt",
        ),
        ("4.2.4 read-only port 0", kubelet.read_only_port == 0),
        (
            "4.2.5 streaming idle timeout set",
            kubelet.streaming_connection_idle_timeout != "0s",
        ),
        (
            "4.2.6 protectKernelDefaults",
            kubelet.protect_kernel_defaults,
        ),
        (
            "4.2.7 iptables util chains",
            kubelet.make_ip_tables_util_chains,
        ),
        ("4.2.9 eventRecordQPS 0", kubelet.event_record_qps == 0),
        ("4.2.11 certificate rotation", kubelet.rotate_certificates),
        ("4.2.12 server TLS bootstrap", kubelet.server_tls_bootstrap),
        (
            "4.2.12 RotateKubeletServerCertificate",
            kubelet.feature_gates.get("RotateKubeletServerCertificate") == Some(&true),
        ),
        (
            "kubelet TLS 1.2 minimum",
            kubelet.tls_min_version == "VersionTLS12",
        ),
        (
            "4.2.13 strong ciphers",
            kubelet.tls_cipher_suites.join(",") == ciphers,
        ),
    ];
    for (item, ok) in kubelet_table {
        assert!(ok, "kubelet hardening item {item}");
    }
    for suite in &kubelet.tls_cipher_suites {
        assert!(
            suite.starts_with("TLS_ECDHE_")
                && (suite.contains("GCM") || suite.contains("CHACHA20")),
            "{suite}"
        );
    }
    // The kernel settings protectKernelDefaults insists on are rendered for the node.
    let sysctl = std::fs::read_to_string(root.join("etc/sysctl.d/90-airgap-kubelet.conf")).unwrap();
    assert!(sysctl.contains("vm.overcommit_memory = 1") && sysctl.contains("kernel.panic = 10"));

    // Audit policy: secrets only ever at Metadata, a catch-all rule, RequestReceived omitted.
    assert_eq!(audit.omit_stages, ["RequestReceived"]);
    let secret_rule = audit
        .rules
        .iter()
        .find(|r| {
            r.resources
                .iter()
                .any(|g| g.group.is_empty() && g.resources.iter().any(|x| x == "secrets"))
        })
        .unwrap();
    assert_eq!(secret_rule.level, AuditLevel::Metadata);
    let last = audit.rules.last().unwrap();
    assert!(last.resources.is_empty() && last.verbs.is_empty() && last.level != AuditLevel::None);
    // Pod Security admission.
    let pss = &admission.plugins[0];
    assert_eq!(pss.name, "PodSecurity");
    assert_eq!(pss.configuration.defaults.enforce, "baseline");
    assert_eq!(pss.configuration.defaults.warn, "restricted");

    // Files the API server is pointed at exist on the node and are mounted into its pod.
    for flag in [
        "audit-policy-file",
        "encryption-provider-config",
        "admission-control-config-file",
    ] {
        let path = api.arg(flag).unwrap();
        assert!(on_node(&root, path).is_file(), "{flag} {path}");
        assert!(
            api.extra_volumes
                .iter()
                .any(|v| v.host_path == path && v.mount_path == path && v.read_only),
            "{flag} not mounted"
        );
    }
    let encryption = std::fs::read_to_string(on_node(
        &root,
        api.arg("encryption-provider-config").unwrap(),
    ))
    .unwrap();
    assert!(encryption.contains("secretbox"));
    assert!(api
        .extra_volumes
        .iter()
        .any(|v| v.host_path == "/var/log/kubernetes/audit" && !v.read_only));
    for file in [
        "etc/airgap/kubernetes/kubeadm.yaml",
        "etc/kubernetes/audit-policy.yaml",
        "etc/kubernetes/admission-config.yaml",
    ] {
        let m = std::fs::metadata(root.join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(m, 0o600, "{file}");
    }

    // External etcd is the one the installer runs, with its certificates.
    let etcd = &cluster.etcd.external;
    assert_eq!(etcd.endpoints, [format!("https://{ADDRESS}:2379")]);
    for f in [&etcd.ca_file, &etcd.cert_file, &etcd.key_file] {
        assert!(on_node(&root, f).is_file(), "{f}");
    }
    assert_eq!(cluster.certificates_dir, "/etc/kubernetes/pki");
    assert!(
        root.join("etc/kubernetes/pki/ca.crt").is_file()
            && root.join("etc/kubernetes/pki/ca.key").is_file()
    );
    assert_eq!(cluster.control_plane_endpoint, format!("{FQDN}:6443"));
    assert!(
        api.cert_sans.contains(&FQDN.to_string()) && api.cert_sans.contains(&ADDRESS.to_string())
    );
    assert_eq!(init.local_api_endpoint.advertise_address, ADDRESS);
    assert_eq!(init.node_registration.name, "node1");
    assert_eq!(
        cluster.kubernetes_version,
        format!("v{}", testkit::FIXTURE_K8S_VERSION)
    );

    // Every image kubeadm pulls is in the bundle, under the private registry, and pullable.
    let in_bundle = mirrored_images(&bundle);
    let mut pulled: Vec<String> = [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "kube-proxy",
    ]
    .iter()
    .map(|n| {
        format!(
            "{}/{n}:{}",
            cluster.image_repository, cluster.kubernetes_version
        )
    })
    .collect();
    // kubeadm names the DNS image `<dns.imageRepository>/coredns:<dns.imageTag>`.
    pulled.push(format!(
        "{}/coredns:{}",
        cluster.dns.image_repository, cluster.dns.image_tag
    ));
    assert_eq!(
        cluster.image_repository,
        format!("{REGISTRY}/registry.k8s.io")
    );
    let probe = EtcdProbe {
        ns: &ns,
        root: root.clone(),
    };
    let password = secret(&probe, "registry-credentials").0["password"].clone();
    let password = String::from_utf8(password).unwrap();
    let pull = secret(&probe, "registry-pull-credentials").0;
    assert_eq!(pull["username"], b"puller");
    let pull_password = String::from_utf8(pull["password"].clone()).unwrap();
    assert_ne!(pull_password, password);
    let certs = skopeo_certs(&root, s.dir.path());
    let skopeo_inspect = |image: &str| {
        ns.command("skopeo")
            .args(["inspect", "--raw", "--cert-dir"])
            .arg(&certs)
            .args(["--creds", &format!("admin:{password}")])
            .arg(format!("docker://{image}"))
            .output()
            .unwrap()
    };
    for image in &pulled {
        assert!(
            in_bundle.contains(image),
            "kubeadm would pull {image}, which the bundle lacks: {in_bundle:?}"
        );
        output_ok(&skopeo_inspect(image), image);
    }

    // Platform manifests: typed, and every image in the bundle under the private registry.
    let manifests = root.join("etc/airgap/manifests");
    let namespaces = std::fs::read_to_string(manifests.join("00-namespaces.yaml")).unwrap();
    let mut names = Vec::new();
    let mut images = Vec::new();
    for path in rendered(&root).keys().filter(|p| p.starts_with(&manifests)) {
        let text = std::fs::read_to_string(path).unwrap();
        for doc in documents(&text).unwrap() {
            let doc: serde_json::Value = serde_json::to_value(&doc).unwrap();
            check_object(&doc);
            if doc["kind"] == "Namespace" {
                names.push(doc["metadata"]["name"].as_str().unwrap().to_string());
                assert!(
                    doc["metadata"]["labels"]["pod-security.kubernetes.io/enforce"].is_string()
                );
            }
            images_in(&doc, &mut images);
        }
    }
    assert_eq!(names, ["airgap-system", "platform-core"], "{namespaces}");
    assert!(!images.is_empty());
    for image in &images {
        assert!(
            image.starts_with(&format!("{REGISTRY}/")),
            "{image} does not point at the private registry"
        );
        assert!(in_bundle.contains(image), "{image} is not in the bundle");
        output_ok(&skopeo_inspect(image), image);
    }
    assert!(manifests.join("01-platform-core/deployment.yaml").is_file());

    // containerd: one hosts.toml per upstream registry, sending pulls to the private registry
    // (its `server` too: nothing falls back upstream) with its CA and credentials, one for the
    // registry itself, and `_default` for every other registry.
    let certs_d = root.join("etc/containerd/certs.d");
    for (host, server) in [
        (
            "registry.k8s.io",
            "https://mgmt.example.internal:5000/v2/registry.k8s.io",
        ),
        (
            "example.internal",
            "https://mgmt.example.internal:5000/v2/example.internal",
        ),
        (
            "_default",
            "https://mgmt.example.internal:5000/v2/airgap-unlisted-registry",
        ),
        (REGISTRY, "https://mgmt.example.internal:5000"),
    ] {
        let file = certs_d.join(host).join("hosts.toml");
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600,
            "{host}: holds a password"
        );
        let hosts: toml::Table = std::fs::read_to_string(&file).unwrap().parse().unwrap();
        assert_eq!(hosts["server"].as_str(), Some(server));
        let (url, entry) = hosts["host"].as_table().unwrap().iter().next().unwrap();
        assert!(url.starts_with(&format!("https://{REGISTRY}")), "{url}");
        // A relative CA: containerd resolves it in the host directory.
        let ca = entry["ca"].as_str().unwrap();
        assert_eq!(
            std::fs::read(certs_d.join(host).join(ca)).unwrap(),
            std::fs::read(root.join("etc/airgap/pki/fqdn-ca.crt")).unwrap()
        );
        let auth = entry["header"]["Authorization"][0].as_str().unwrap();
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(decoded, format!("puller:{pull_password}").as_bytes());
    }

    // containerd's login is the pull-only one: it pulls, but its pushes and deletes are
    // refused (403), while the admin login still pushes and deletes.
    let copy = |creds: &str, to: &str| {
        ns.command("skopeo")
            .args(["copy", "--src-cert-dir"])
            .arg(&certs)
            .arg("--dest-cert-dir")
            .arg(&certs)
            .args(["--src-creds", &format!("admin:{password}")])
            .args(["--dest-creds", creds])
            .arg(format!(
                "docker://{REGISTRY}/example.internal/platform/api:1.0"
            ))
            .arg(format!("docker://{REGISTRY}/{to}"))
            .output()
            .unwrap()
    };
    let delete = |creds: &str, what: &str| {
        ns.command("skopeo")
            .args(["delete", "--cert-dir"])
            .arg(&certs)
            .args(["--creds", creds])
            .arg(format!("docker://{REGISTRY}/{what}"))
            .output()
            .unwrap()
    };
    let puller = format!("puller:{pull_password}");
    let admin = format!("admin:{password}");
    let pulled = ns
        .command("skopeo")
        .args(["inspect", "--raw", "--cert-dir"])
        .arg(&certs)
        .args(["--creds", &puller])
        .arg(format!("docker://{REGISTRY}/registry.k8s.io/pause:3.10.1"))
        .output()
        .unwrap();
    output_ok(&pulled, "a pull with the pull-only login");
    for (what, out) in [
        ("push", copy(&puller, "scratch/probe:1")),
        (
            "delete",
            delete(&puller, "example.internal/platform/api:1.0"),
        ),
    ] {
        assert!(!out.status.success(), "the pull-only login could {what}");
        let err = String::from_utf8_lossy(&out.stderr).to_lowercase();
        assert!(
            err.contains("denied") || err.contains("403"),
            "{what}: {err}"
        );
    }
    output_ok(&copy(&admin, "scratch/probe:1"), "an admin push");
    output_ok(&delete(&admin, "scratch/probe:1"), "an admin delete");

    // status never claims a cluster: it says kubeadm is missing and nothing runs.
    let status = ns
        .airgap()
        .args(["status", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    let text = output_ok(&status, "status");
    assert!(text.contains("kubernetes not running"), "{text}");
    assert!(text.contains("the cluster is NOT running"), "{text}");
    let json = status_json(&ns, &root);
    assert_eq!(json["kubernetes"]["state"], "renderedOnly");
    assert_eq!(json["kubernetes"]["running"], false);

    // A re-run renders the same bytes and touches nothing; a stray manifest is removed.
    let before = rendered(&root);
    let stray = manifests.join("01-platform-core/old.yaml");
    std::fs::write(
        &stray,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: old}\n",
    )
    .unwrap();
    let out = output_ok(&run_install(&ns, &s, &bundle, &root, &bin, &[]), "re-run");
    assert!(out.contains("0 of 4 files changed"), "{out}");
    assert!(
        !stray.exists(),
        "a manifest no pack renders any more stays behind"
    );
    assert_eq!(rendered(&root), before, "a re-run changed a rendered file");
}

/// A STAND-IN for kubeadm (not the real tool): records its arguments, checks the configuration
/// it is given as kubeadm would need it, and writes `admin.conf` as a successful init does.
const STAND_IN_KUBEADM: &str = include_str!("stand-ins/kubeadm.sh");

/// A STAND-IN for kubectl: records its arguments and what the manifest directory held.
const STAND_IN_KUBECTL: &str = include_str!("stand-ins/kubectl.sh");

fn invocations(record: &Path, tool: &str) -> Vec<Vec<String>> {
    let mut out: Vec<_> = std::fs::read_dir(record)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{tool}.")) && name.ends_with(".args")
        })
        .map(|p| {
            std::fs::read_to_string(p)
                .unwrap()
                .lines()
                .map(String::from)
                .collect()
        })
        .collect();
    out.sort();
    out
}

#[test]
fn a_stand_in_kubeadm_from_the_bundle_is_run_with_the_rendered_configuration_then_kubectl_applies()
{
    let s = Setup::new(4096);
    // The k8s pack carries the node's kubeadm, kubectl and kubelet (stand-ins: the real
    // kubeadm cannot run here); none is on PATH.
    let pack_bin = s.path("packs/kubernetes/bin");
    std::fs::create_dir_all(&pack_bin).unwrap();
    for (name, script) in [
        ("kubeadm", STAND_IN_KUBEADM),
        ("kubectl", STAND_IN_KUBECTL),
        ("kubelet", "#!/bin/sh\nexit 0\n"),
    ] {
        std::fs::write(pack_bin.join(name), script).unwrap();
    }
    let bundle = s.build("b.tar");
    let ns = NetNs::create("k8s-kubeadm");
    let root = s.path("node");
    let bin = bin_dir(s.dir.path());
    let record = s.path("record");
    std::fs::create_dir_all(&record).unwrap();
    // sh and the coreutils the stand-ins use, after our bin (which holds no real kubeadm).
    let path = PathBuf::from(format!("{}:/usr/bin:/bin", bin.display()));

    // kubeadm failing fails the phase with its last line and where the full output is.
    let failed = run_install(
        &ns,
        &s,
        &bundle,
        &root,
        &path,
        &[("RECORD", &record), ("STAND_IN_FAIL", Path::new("1"))],
    );
    assert!(!failed.status.success());
    let err = String::from_utf8_lossy(&failed.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("error:"))
        .unwrap_or_else(|| panic!("{err}"));
    assert!(
        line.contains("phase kubernetes: kubeadm init")
            && line.contains("stand-in refuses")
            && line.contains("; hint: full output in")
            && line.contains("kubeadm.log"),
        "{line}"
    );
    assert!(!root.join("etc/kubernetes/admin.conf").exists());
    std::fs::remove_dir_all(&record).unwrap();
    std::fs::create_dir_all(&record).unwrap();

    // The re-run resumes and completes.
    let out = output_ok(
        &run_install(&ns, &s, &bundle, &root, &path, &[("RECORD", &record)]),
        "install",
    );
    assert!(out.contains("kubeadm init ran"), "{out}");
    assert!(out.contains("applied with kubectl"), "{out}");
    let audit = std::fs::read_to_string(root.join("var/log/airgap/audit.log")).unwrap();
    assert!(
        audit.contains("var/lib/airgap/bin/kubeadm/1.34.2-"),
        "kubeadm did not run from the bundle: {audit}"
    );
    let unit = std::fs::read_to_string(root.join("etc/systemd/system/kubelet.service")).unwrap();
    assert!(
        unit.contains("ExecStart=\"/var/lib/airgap/bin/kubelet/1.34.2-"),
        "{unit}"
    );
    let dropin =
        std::fs::read_to_string(root.join("etc/systemd/system/kubelet.service.d/10-airgap.conf"))
            .unwrap();
    assert!(
        dropin.contains("unix:///run/containerd/containerd.sock"),
        "{dropin}"
    );

    let kubeadm = invocations(&record, "kubeadm");
    assert_eq!(
        kubeadm,
        [vec![
            "init".to_string(),
            "--rootfs".into(),
            root.display().to_string(),
            "--config".into(),
            "/etc/airgap/kubernetes/kubeadm.yaml".into(),
        ]]
    );
    let given = std::fs::read_to_string(record.join("kubeadm.yaml")).unwrap();
    assert_eq!(
        given,
        std::fs::read_to_string(root.join("etc/airgap/kubernetes/kubeadm.yaml")).unwrap()
    );
    KubeadmConfig::parse(&given).unwrap();

    let kubectl = invocations(&record, "kubectl");
    assert_eq!(kubectl.len(), 1);
    let manifests = root.join("etc/airgap/manifests");
    assert_eq!(
        kubectl[0],
        [
            "--kubeconfig".to_string(),
            root.join("etc/kubernetes/admin.conf").display().to_string(),
            "apply".into(),
            "--server-side".into(),
            "--field-manager=airgap".into(),
            "--recursive".into(),
            "--filename".into(),
            manifests.display().to_string(),
        ]
    );
    assert_eq!(
        std::fs::read_to_string(record.join("kubectl.files")).unwrap(),
        "./00-namespaces.yaml\n./01-platform-core/deployment.yaml\n"
    );

    // No API server answers (the stand-in started none): status says so and fails, rather
    // than report a running cluster.
    let status = ns
        .airgap()
        .args(["status", "--json", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(3));
    let json = common::json_checked("status", &status.stdout);
    assert_eq!(json["kubernetes"]["state"], "initialized");
    assert_eq!(json["kubernetes"]["running"], false);
    assert!(
        json["kubernetes"]["detail"]
            .as_str()
            .unwrap()
            .contains("not answering"),
        "{json}"
    );

    // A re-run never inits twice; the manifests are applied again (apply is idempotent).
    let out = output_ok(
        &run_install(&ns, &s, &bundle, &root, &path, &[("RECORD", &record)]),
        "re-run",
    );
    assert!(out.contains("cluster already initialized"), "{out}");
    assert_eq!(invocations(&record, "kubeadm").len(), 1);
    assert_eq!(invocations(&record, "kubectl").len(), 2);
    let audit = std::fs::read_to_string(root.join("var/log/airgap/audit.log")).unwrap();
    assert_eq!(audit.matches("\"kubeadm.init\"").count(), 1, "{audit}");

    // An upgrade runs `kubeadm upgrade apply` (the first node moves the cluster) with the new
    // release's kubeadm, then applies the manifests again.
    let spec = std::fs::read_to_string(&s.fixture.spec).unwrap().replace(
        "metadata: {name: mgmt-plane, version: 4.5.0}",
        "metadata: {name: mgmt-plane, version: 4.6.0}",
    );
    let spec_path = s.fixture.spec.with_file_name("mgmt-plane-4.6.0.yaml");
    std::fs::write(&spec_path, spec).unwrap();
    let v460 = s.build_spec(&spec_path, "v460.tar");
    let mut upgrade = ns.airgap();
    upgrade
        .args(["upgrade", "--bundle"])
        .arg(&v460)
        .arg("--pub")
        .arg(s.public())
        .arg("--root")
        .arg(&root)
        .env("PATH", &path)
        .env("RECORD", &record);
    let out = output_ok(&upgrade.output().unwrap(), "upgrade to 4.6.0");
    assert!(out.contains("kubeadm upgrade apply v1.34.2 ran"), "{out}");
    let kubeadm = invocations(&record, "kubeadm");
    assert_eq!(kubeadm.len(), 2, "{kubeadm:?}");
    assert!(
        kubeadm.contains(&vec![
            "upgrade".to_string(),
            "apply".into(),
            "v1.34.2".into(),
            "--yes".into(),
            "--rootfs".into(),
            root.display().to_string(),
        ]),
        "{kubeadm:?}"
    );
    assert_eq!(invocations(&record, "kubectl").len(), 3);
    let audit = std::fs::read_to_string(root.join("var/log/airgap/audit.log")).unwrap();
    assert_eq!(audit.matches("\"kubeadm.upgrade\"").count(), 1, "{audit}");
}
