//! The 3-node HA cluster in network namespaces: three nodes and a client on one bridge
//! (`common::node::Switch`), real etcd members with TLS peers, the built-in registry on every
//! node, the VIP elected through an etcd lease. Everything is torn down by the guards, pass
//! or fail.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::node::{
    decrypt, etcdctl_in, kill_during, output_ok, secret, skopeo_certs, EtcdProbe, NetNs, Switch,
    FQDN,
};
use common::{airgap, fails, ok, Setup};

const NODES: [(&str, &str); 3] = [
    ("node1", "10.78.0.11"),
    ("node2", "10.78.0.12"),
    ("node3", "10.78.0.13"),
];
const VIP: &str = "10.78.0.100";

fn ha_yaml(dir: &Path) -> PathBuf {
    let path = dir.join("install.yaml");
    let nodes = NODES
        .iter()
        .map(|(n, a)| format!("{{name: {n}, address: {a}}}"))
        .collect::<Vec<_>>()
        .join(", ");
    std::fs::write(
        &path,
        format!(
            "apiVersion: airgap/v1\nkind: Installation\nmetadata: {{name: mgmt}}\nspec:\n  mode: ha\n  fqdn: {FQDN}\n  vip: {VIP}\n  nodes: [{nodes}]\n"
        ),
    )
    .unwrap();
    path
}

/// The tests that measure time (failover within 3 s, a roll no etcd client notices) run
/// alone; the others share the machine. Three clusters of three etcd members each on two
/// cores starve etcd's heartbeats into elections that no real cluster of three machines sees,
/// and a timing bound measured then says nothing about the code.
static TIMING: std::sync::RwLock<()> = std::sync::RwLock::new(());

fn shared_machine() -> std::sync::RwLockReadGuard<'static, ()> {
    TIMING.read().unwrap_or_else(|e| e.into_inner())
}

fn alone_on_the_machine() -> std::sync::RwLockWriteGuard<'static, ()> {
    TIMING.write().unwrap_or_else(|e| e.into_inner())
}

/// Skipped in the HA tests: no kubeadm here, and the runtime's CRI path has its own tests.
const SKIP: &str = "runtime,kubernetes,platform";

struct Cluster {
    setup: Setup,
    bundle: PathBuf,
    switch: Switch,
    nodes: Vec<NetNs>,
    client: NetNs,
    /// The certificate key the first node's latest install printed.
    certificate_key: std::sync::Mutex<String>,
}

impl Cluster {
    fn new() -> Cluster {
        Cluster::with_options(&testkit::FixtureOptions::default())
    }

    /// A cluster whose bundle carries what `options` adds to the fixture.
    fn with_options(options: &testkit::FixtureOptions) -> Cluster {
        let setup = Setup::with_options(64 << 10, options);
        let bundle = setup.build("bundle.tar");
        let switch = Switch::create("ha");
        let hosts = [(FQDN, VIP)];
        let nodes = NODES
            .iter()
            .map(|(n, a)| switch.attach(n, a, &hosts))
            .collect();
        let client = switch.attach("client", "10.78.0.50", &hosts);
        Cluster {
            setup,
            bundle,
            switch,
            nodes,
            client,
            certificate_key: std::sync::Mutex::new(String::new()),
        }
    }

    fn root(&self, i: usize) -> PathBuf {
        self.setup.path(&format!("root{}", i + 1))
    }

    /// `airgap install` of the first node (also how it comes back after a crash).
    fn install_command(&self) -> Command {
        let config = ha_yaml(self.setup.dir.path());
        let mut cmd = self.nodes[0].airgap();
        cmd.args(["install", "-c"])
            .arg(&config)
            .arg("--bundle")
            .arg(&self.bundle)
            .arg("--pub")
            .arg(self.setup.public())
            .arg("--root")
            .arg(self.root(0))
            .args(["--skip-phases", SKIP]);
        cmd
    }

    fn install_first(&self) -> String {
        let stdout = output_ok(&self.install_command().output().unwrap(), "install node1");
        if let Some(key) = printed_flag(&stdout, "--certificate-key") {
            *self.certificate_key.lock().unwrap() = key;
        }
        stdout
    }

    fn certificate_key(&self) -> String {
        self.certificate_key.lock().unwrap().clone()
    }

    fn join(&self, ns: &NetNs, root: &Path, token: &str, server: &str) -> Command {
        self.join_skipping(ns, root, token, server, SKIP)
    }

    fn join_skipping(
        &self,
        ns: &NetNs,
        root: &Path,
        token: &str,
        server: &str,
        skip: &str,
    ) -> Command {
        let mut cmd = ns.airgap();
        cmd.args(["join", "--token", token, "--server", server])
            .args(["--certificate-key", &self.certificate_key(), "--bundle"])
            .arg(&self.bundle)
            .arg("--pub")
            .arg(self.setup.public())
            .arg("--root")
            .arg(root)
            .args(["--skip-phases", skip]);
        cmd
    }

    fn etcdctl(&self, i: usize, args: &[&str]) -> String {
        let out = etcdctl_in(
            &self.nodes[i].name,
            &format!("https://{}:2379", NODES[i].1),
            &self.root(i).join("etc/kubernetes/pki"),
        )
        .args(args)
        .output()
        .unwrap();
        output_ok(&out, &format!("etcdctl {args:?}"))
    }

    /// `etcdctl member list` through node `i`: three started voting members with TLS peer
    /// URLs, named as install.yaml names them.
    fn assert_three_voters(&self, i: usize) {
        let list: serde_json::Value =
            serde_json::from_str(&self.etcdctl(i, &["member", "list", "-w", "json"])).unwrap();
        let members = list["members"].as_array().unwrap();
        assert_eq!(members.len(), 3, "{list}");
        for m in members {
            let name = m["name"].as_str().unwrap_or_default();
            assert!(
                NODES.iter().any(|(n, _)| *n == name),
                "unstarted member: {m}"
            );
            assert!(
                m.get("isLearner").is_none_or(|l| l == false),
                "learner: {m}"
            );
            for url in m["peerURLs"].as_array().unwrap() {
                assert!(url.as_str().unwrap().starts_with("https://"), "{m}");
            }
        }
    }

    fn probe(&self, i: usize) -> EtcdProbe<'_> {
        EtcdProbe {
            ns: &self.nodes[i],
            root: self.root(i),
        }
    }
}

impl Cluster {
    /// node1 installed, node2 and node3 joined with the token it printed.
    fn up() -> (Cluster, String) {
        Cluster::new().install_all()
    }

    /// [`Cluster::up`] of [`Cluster::with_options`].
    fn up_with(options: &testkit::FixtureOptions) -> (Cluster, String) {
        Cluster::with_options(options).install_all()
    }

    fn install_all(self) -> (Cluster, String) {
        let c = self;
        let token = printed_token(&c.install_first());
        for i in 1..3 {
            let out = c
                .join(&c.nodes[i], &c.root(i), &token, VIP)
                .output()
                .unwrap();
            output_ok(&out, &format!("join node{}", i + 1));
        }
        (c, token)
    }

    fn status(&self, i: usize) -> serde_json::Value {
        let out = self.nodes[i]
            .airgap()
            .args(["status", "--json", "--root"])
            .arg(self.root(i))
            .output()
            .unwrap();
        assert!(
            !out.stdout.is_empty(),
            "status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        common::json_checked("status", &out.stdout)
    }

    /// Waits until node `i`'s view reports every live node's registry complete.
    fn wait_replicated(&self, i: usize, nodes: &[&str]) {
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let status = self.status(i);
            let members = status["cluster"]["members"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let done = nodes.iter().all(|n| {
                members
                    .iter()
                    .any(|m| m["name"] == *n && m["registryMissing"] == 0)
            });
            if done {
                return;
            }
            assert!(Instant::now() < deadline, "not replicated: {status}");
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    fn vip_holder(&self, i: usize) -> String {
        self.etcdctl(
            i,
            &["get", "--print-value-only", "/airgap/cluster/vip-holder"],
        )
        .trim()
        .to_string()
    }

    fn password(&self) -> String {
        let (creds, _, _) = secret(&self.probe(0), "registry-credentials");
        String::from_utf8(creds["password"].clone()).unwrap()
    }

    /// skopeo in `ns` copies `src` to `dest`; Ok or the error text.
    fn skopeo(&self, ns: &NetNs, src: &str, dest: &str, password: &str) -> Result<(), String> {
        let certs = skopeo_certs(&self.root(0), self.setup.dir.path());
        let creds = format!("admin:{password}");
        let out = ns
            .command("skopeo")
            .args(["copy", "--all", "--retry-times", "0"])
            .args(["--src-cert-dir", &certs.display().to_string()])
            .args(["--dest-cert-dir", &certs.display().to_string()])
            .args(["--src-creds", &creds, "--dest-creds", &creds])
            .args([src, dest])
            .output()
            .unwrap();
        common::succeeded(&out)
    }

    /// Every image of the bundle pulled from `ns` through the FQDN (the VIP), by digest.
    fn pull_everything(&self, ns: &NetNs, password: &str) {
        let inspect = ok(airgap()
            .args(["bundle", "inspect", "--json"])
            .arg(&self.bundle));
        let index: serde_json::Value = serde_json::from_str(&inspect).unwrap();
        let images = index["images"].as_array().unwrap();
        assert!(!images.is_empty());
        for image in images {
            let repo = image["mirrorRepository"].as_str().unwrap();
            let digest = image["digest"].as_str().unwrap();
            let dest = self.setup.path(&format!("pulled-{}", &digest[7..19]));
            let _ = std::fs::remove_dir_all(&dest);
            self.skopeo(
                ns,
                &format!("docker://{FQDN}:5000/{repo}@{digest}"),
                &format!("oci:{}:x", dest.display()),
                password,
            )
            .unwrap_or_else(|e| panic!("pull {repo}@{digest}: {e}"));
        }
    }

    /// The HTTP status of `GET https://ADDRESS:5000/v2/` from `ns` (0: no answer in 1 s).
    fn registry_answers(&self, ns: &NetNs, address: &str, password: &str) -> u16 {
        let ca = self.root(0).join("etc/airgap/pki/fqdn-ca.crt");
        let out = ns
            .command("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                "--max-time",
                "1",
            ])
            .arg("--cacert")
            .arg(ca)
            .args(["-u", &format!("admin:{password}")])
            .arg(format!("https://{address}:5000/v2/"))
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

fn holds_vip(ns: &NetNs) -> bool {
    let out = ns
        .command("ip")
        .args(["-o", "addr", "show"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).contains(&format!("{VIP}/32"))
}

/// A STAND-IN for kubeadm (the real one cannot be installed here): checks a control-plane
/// join's configuration and the material kubeadm needs, records both, fakes `admin.conf`.
const STAND_IN_KUBEADM_JOIN: &str = include_str!("stand-ins/kubeadm-join.sh");

/// `token` (`ID.SECRET@sha256:PIN`) with the first character of its secret changed: the
/// same id, a secret that does not match. Built from the parts, so the id is never touched.
fn wrong_secret(token: &str) -> String {
    let (id, rest) = token.split_once('.').unwrap();
    let (secret, pin) = rest.split_once('@').unwrap();
    let first = if secret.starts_with('0') { "1" } else { "0" };
    let wrong = format!("{id}.{first}{}@{pin}", &secret[1..]);
    assert_ne!(wrong, token);
    wrong
}

/// The join command the first node printed: its `--token` value.
fn printed_token(stdout: &str) -> String {
    printed_flag(stdout, "--token").unwrap_or_else(|| panic!("no join command in: {stdout}"))
}

/// The value of `flag` in the join command the first node printed.
fn printed_flag(stdout: &str, flag: &str) -> Option<String> {
    let line = stdout
        .lines()
        .find(|l| l.trim_start().starts_with("airgap join --token "))?;
    let mut words = line.split_whitespace();
    words.find(|w| *w == flag)?;
    words.next().map(str::to_string)
}

fn empty_or_absent(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_none())
        .unwrap_or(true)
}

#[test]
fn three_nodes_join_one_etcd_and_share_the_installation() {
    let _machine = shared_machine();
    let c = Cluster::new();
    let stdout = c.install_first();
    let token = printed_token(&stdout);
    assert!(stdout.contains(&format!("--server {VIP}")), "{stdout}");
    let token_cmd = |args: &[&str]| {
        let out = c.nodes[0]
            .airgap()
            .arg("token")
            .args(args)
            .arg("--root")
            .arg(c.root(0))
            .output()
            .unwrap();
        output_ok(&out, "token").trim().to_string()
    };

    // The shared keys wait in etcd only sealed under the printed certificate key: neither a
    // private key nor the encryption secret is in the stored record, in clear or in base64.
    let (stored, _, _) = c.probe(0).raw("/airgap/cluster/join-material").unwrap();
    let record: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let sealed = base64::Engine::decode(
        &base64::engine::general_purpose::STANDARD,
        record["sealed"].as_str().unwrap(),
    )
    .unwrap();
    let encryption =
        std::fs::read_to_string(c.root(0).join("etc/kubernetes/encryption-config.yaml")).unwrap();
    let encryption_secret = encryption
        .lines()
        .find_map(|l| l.trim().strip_prefix("secret: "))
        .unwrap()
        .to_string();
    for text in [
        String::from_utf8_lossy(&stored),
        String::from_utf8_lossy(&sealed),
    ] {
        assert!(
            !text.contains("PRIVATE KEY") && !text.contains(&encryption_secret),
            "{text}"
        );
    }
    assert!(!String::from_utf8_lossy(&stored).contains(&c.certificate_key()));

    // node3 is admitted, but its join dies right after the answer, before writing anything,
    // and is never run again: an etcd learner that never starts. etcd admits one learner at
    // a time, so it would block every later join. Once it is older than the grace (its
    // record is moved back in time, rather than the test waiting five minutes), the next
    // join removes it.
    let abandoned = token_cmd(&["create", "--uses", "1"]);
    kill_during(
        c.join(&c.nodes[2], &c.root(2), &abandoned, NODES[0].1),
        "join-answered",
    );
    assert!(
        empty_or_absent(&c.root(2)),
        "the abandoned join wrote something"
    );
    let list = c.etcdctl(0, &["member", "list", "-w", "json"]);
    assert!(list.contains("\"isLearner\":true"), "{list}");
    let learner_key = "/airgap/cluster/learners/node3";
    let (stored, _, _) = c.probe(0).raw(learner_key).unwrap();
    let mut learner: serde_json::Value = serde_json::from_slice(&stored).unwrap();
    let grace = installer::cluster::join_api::LEARNER_START_GRACE.as_secs();
    learner["added"] = (learner["added"].as_u64().unwrap() - grace - 1).into();
    c.etcdctl(0, &["put", learner_key, &learner.to_string()]);

    // node2 joins through the VIP (node1 holds it), with its kubernetes phase: a STAND-IN
    // kubeadm on PATH (the real one cannot be installed here) checks and records the
    // control-plane join it is asked for.
    let stand_in = c.setup.path("stand-in");
    let record = c.setup.path("record");
    std::fs::create_dir_all(&stand_in).unwrap();
    std::fs::create_dir_all(&record).unwrap();
    let kubeadm = stand_in.join("kubeadm");
    std::fs::write(&kubeadm, STAND_IN_KUBEADM_JOIN).unwrap();
    std::fs::set_permissions(
        &kubeadm,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let out = c
        .join_skipping(&c.nodes[1], &c.root(1), &token, VIP, "runtime,platform")
        .env("RECORD", &record)
        .env(
            "PATH",
            format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", stand_in.display()),
        )
        .output()
        .unwrap();
    let text = output_ok(&out, "join node2");
    assert!(
        text.contains("[etcd]") && text.contains("[registry]"),
        "{text}"
    );
    assert!(text.contains("kubeadm join --control-plane ran"), "{text}");
    // Its registry store was filled from its own verified bundle: not one blob crossed the
    // network from node1's registry (its access log names every request and its client).
    assert!(
        text.contains("placed in this node's store from its bundle"),
        "{text}"
    );
    let node1_log =
        std::fs::read_to_string(c.root(0).join("var/log/airgap/registry.log")).unwrap_or_default();
    let fetched: Vec<&str> = node1_log
        .lines()
        .filter(|l| l.contains(&format!("\"client\":\"{}:", NODES[1].1)) && l.contains("/blobs/"))
        .collect();
    assert!(
        fetched.is_empty(),
        "node2 fetched blobs it carries: {fetched:?}"
    );
    let recorded = std::fs::read_to_string(record.join("kubeadm.args")).unwrap();
    assert!(recorded.starts_with("join\n"), "{recorded}");
    let join_yaml = std::fs::read_to_string(record.join("kubeadm-join.yaml")).unwrap();
    let join_doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&join_yaml).unwrap();
    assert_eq!(join_doc["kind"], "JoinConfiguration");
    assert_eq!(
        join_doc["controlPlane"]["localAPIEndpoint"]["advertiseAddress"],
        "10.78.0.12"
    );
    assert_eq!(join_doc["nodeRegistration"]["name"], "node2");
    let discovery =
        std::fs::read_to_string(c.root(1).join("etc/airgap/kubernetes/discovery.conf")).unwrap();
    assert!(
        discovery.contains(&format!("server: https://{FQDN}:6443")),
        "{discovery}"
    );
    let subject = Command::new("openssl")
        .args(["x509", "-noout", "-subject", "-in"])
        .arg(c.root(1).join("etc/airgap/pki/kubelet-discovery.crt"))
        .output()
        .unwrap();
    let subject = String::from_utf8_lossy(&subject.stdout).into_owned();
    assert!(
        subject.contains("system:node:node2") && subject.contains("system:nodes"),
        "{subject}"
    );
    // node3 through node1's own address, SIGKILLed in its etcd phase (a learner, not promoted),
    // then the same command again: it goes on from what it received, without spending
    // another use of the token (it has none left).
    // From node3's address, the certificate key: mistyped (said before anything is hashed or sent), or not the
    // key the shared keys are uploaded under (refused by the cluster before it adds a member
    // or spends the token). A new upload makes the old key useless.
    let members_before = c.etcdctl(0, &["member", "list"]);
    let old_key = c.certificate_key();
    *c.certificate_key.lock().unwrap() = "12345".into();
    let line = fails(&mut c.join(&c.nodes[2], &c.root(2), &token, NODES[0].1));
    assert!(line.contains("not 64 hexadecimal characters"), "{line}");
    let out = c.nodes[0]
        .airgap()
        .args([
            "token",
            "create",
            "--uses",
            "1",
            "--certificate-key",
            "--root",
        ])
        .arg(c.root(0))
        .output()
        .unwrap();
    let printed = output_ok(&out, "token create --certificate-key");
    let new_key = printed.lines().nth(1).unwrap().trim().to_string();
    assert_eq!(new_key.len(), 64, "{printed}");
    assert_ne!(new_key, old_key);
    for key in [old_key.as_str(), &"ab".repeat(32)] {
        *c.certificate_key.lock().unwrap() = key.to_string();
        let line = fails(&mut c.join(&c.nodes[2], &c.root(2), &token, NODES[0].1));
        assert!(
            line.contains("the certificate key is not the one"),
            "{line}"
        );
        assert!(empty_or_absent(&c.root(2)), "{line}: something written");
    }
    assert_eq!(c.etcdctl(0, &["member", "list"]), members_before);
    *c.certificate_key.lock().unwrap() = new_key;
    // (node2's join above removed node3's abandoned learner: etcd refused it otherwise.)
    kill_during(c.join(&c.nodes[2], &c.root(2), &token, NODES[0].1), "etcd");
    let out = c
        .join(&c.nodes[2], &c.root(2), &token, NODES[0].1)
        .output()
        .unwrap();
    output_ok(&out, "join node3 again after SIGKILL");

    // etcd: three started voting members, TLS peer URLs.
    c.assert_three_voters(0);

    // One installation-keys Secret: the same stored bytes and revision read through every
    // node's member, and every node's EncryptionConfiguration decrypts it.
    let key = "/registry/secrets/airgap-system/installation-keys";
    let (raw, rev, _) = c.probe(0).raw(key).unwrap();
    for i in 1..3 {
        let (other, other_rev, _) = c.probe(i).raw(key).unwrap();
        assert_eq!((&other, other_rev), (&raw, rev), "node{}", i + 1);
        let plain = decrypt(&c.root(i), &other);
        assert!(String::from_utf8_lossy(&plain).contains("rootKey"));
    }

    // Tokens are stored as hashes only; the printed one is spent.
    let (id, rest) = token.split_once('.').unwrap();
    let secret = rest.split('@').next().unwrap();
    let (stored, _, _) = c
        .probe(1)
        .raw(&format!("/airgap/cluster/tokens/{id}"))
        .unwrap();
    let stored = String::from_utf8(stored).unwrap();
    assert!(!stored.contains(secret), "{stored}");
    let record: serde_json::Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(record["usesLeft"], 0);
    use sha2::Digest;
    assert_eq!(
        record["secretSha256"],
        hex::encode(sha2::Sha256::digest(secret.as_bytes()))
    );

    // Refusals: one line, non-zero, nothing written under the joining root.
    let node4 = c.switch.attach("node4", "10.78.0.14", &[(FQDN, VIP)]);
    let root4 = c.setup.path("root4");
    let fresh = token_cmd(&["create", "--uses", "1"]);
    let short = token_cmd(&["create", "--ttl", "1s"]);
    // A valid token from a machine that is not an install.yaml node, naming no node or
    // another's name: refused on its source address, before the token is looked at, and
    // etcd gains no learner.
    let members_before = c.etcdctl(0, &["member", "list"]);
    for claimed in [None, Some("node3")] {
        let mut cmd = c.join(&node4, &root4, &fresh, NODES[0].1);
        if let Some(name) = claimed {
            cmd.args(["--node", name]);
        }
        let line = fails(&mut cmd);
        assert!(
            line.contains("10.78.0.14 is not one of this cluster's nodes"),
            "{claimed:?}: {line}"
        );
        assert!(empty_or_absent(&root4), "{claimed:?}: something written");
    }
    assert_eq!(c.etcdctl(0, &["member", "list"]), members_before);
    // Three more refusals spend node4's budget: the next attempt is told to wait, whatever
    // it sends.
    for _ in 0..3 {
        fails(&mut c.join(&node4, &root4, &fresh, NODES[0].1));
    }
    let line = fails(&mut c.join(&node4, &root4, &fresh, NODES[0].1));
    assert!(
        line.contains("too many refused joins from 10.78.0.14"),
        "{line}"
    );
    // Going on regardless is a flood: past FLOOD_FACTOR times its budget, node4's connections
    // close before the TLS handshake, while another address is still answered.
    // curl's status for `path` on node1's join API from `ns` (000: no answer at all).
    let join_api = |ns: &NetNs, path: &str, post: bool| {
        let mut cmd = ns.command("curl");
        cmd.args([
            "-sk",
            "--max-time",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ]);
        if post {
            cmd.args(["-X", "POST", "-d", "{}"]);
        }
        cmd.arg(format!("https://{}:9443{path}", NODES[0].1))
            .output()
            .unwrap()
    };
    let over =
        installer::cluster::join_api::REFUSAL_BUDGET * installer::cluster::join_api::FLOOD_FACTOR;
    for _ in 0..over {
        join_api(&node4, "/join/v1", true);
    }
    let cut = join_api(&node4, "/join/v1", true);
    assert!(
        !cut.status.success() && String::from_utf8_lossy(&cut.stdout) == "000",
        "node4 still answered: {}",
        String::from_utf8_lossy(&cut.stdout)
    );
    let healthz = join_api(&c.nodes[1], "/healthz", false);
    assert_eq!(String::from_utf8_lossy(&healthz.stdout), "200");
    // `short` expires meanwhile (its refusal comes from node3's address below).
    std::thread::sleep(Duration::from_millis(2100));
    // A server presenting another CA (a fake join API on node4's loopback, with the test
    // PKI's certificate): refused during the TLS handshake, before the secret is sent.
    let fake_pki = common::registries::Pki::new(&c.setup.path("fake-pki"));
    let mut fake = node4
        .airgap()
        .args(["registry", "serve"])
        .arg(c.setup.path("fake-store"))
        .args(["--listen", "127.0.0.1:9443", "--tls-cert"])
        .arg(&fake_pki.cert)
        .arg("--tls-key")
        .arg(&fake_pki.key)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !node4
        .command("curl")
        .args(["-sk", "-o", "/dev/null", "https://127.0.0.1:9443/v2/"])
        .status()
        .unwrap()
        .success()
    {
        assert!(Instant::now() < deadline, "the fake join API did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    let line = fails(&mut c.join(&node4, &root4, &fresh, "127.0.0.1:9443"));
    assert!(line.contains("not the CA the token pins"), "{line}");
    assert!(empty_or_absent(&root4));
    let _ = fake.kill();
    let _ = fake.wait();

    // The unused token still has its use: a refusal spends nothing.
    let listed = token_cmd(&["list", "--json"]);
    common::json_checked("token-list", listed.as_bytes());
    let fresh_id = fresh.split('.').next().unwrap();
    assert!(
        listed.contains(&format!("\"id\": \"{fresh_id}\"")) && listed.contains("\"usesLeft\": 1"),
        "{listed}"
    );

    // node3 dies for good: removed from the cluster, and a fresh machine (an empty root at
    // its address) joins in its place with the fresh token.
    c.nodes[2].kill_all();
    let removed = c.nodes[0]
        .airgap()
        .args(["node", "remove", "node3", "--root"])
        .arg(c.root(0))
        .output()
        .unwrap();
    output_ok(&removed, "node remove");
    let list = c.etcdctl(0, &["member", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    let again = c.nodes[0]
        .airgap()
        .args(["node", "remove", "node3", "--root"])
        .arg(c.root(0))
        .output()
        .unwrap();
    assert!(!again.status.success());
    let replacement = c.setup.path("root3-new");
    // From node3's own address now: every token failure gets the same words (which ids exist,
    // expired or were spent is not the caller's to learn), and nothing is written.
    let mut lines = Vec::new();
    for t in [token.clone(), wrong_secret(&fresh), short.clone()] {
        let line = fails(&mut c.join(&c.nodes[2], &replacement, &t, NODES[0].1));
        assert!(
            line.contains(installer::cluster::join_api::TOKEN_REFUSED),
            "{line}"
        );
        assert!(empty_or_absent(&replacement), "{line}: something written");
        lines.push(line);
    }
    assert!(lines.iter().all(|l| l == &lines[0]), "{lines:#?}");
    // A bundle of another release than the cluster's.
    let spec = std::fs::read_to_string(&c.setup.fixture.spec).unwrap();
    let other_spec = c.setup.path("other.yaml");
    std::fs::write(
        &other_spec,
        spec.replace("version: 4.5.0", "version: 4.6.0"),
    )
    .unwrap();
    let other = c.setup.build_spec(&other_spec, "other.tar");
    let mut cmd = c.nodes[2].airgap();
    cmd.args([
        "join", "--token", &fresh, "--server", NODES[0].1, "--bundle",
    ])
    .arg(&other)
    .args(["--certificate-key", &c.certificate_key()])
    .arg("--pub")
    .arg(c.setup.public())
    .arg("--root")
    .arg(&replacement)
    .args(["--node", "node3"]);
    let line = fails(&mut cmd);
    assert!(line.contains("the cluster runs mgmt-plane 4.5.0"), "{line}");
    assert!(empty_or_absent(&replacement));

    let out = c
        .join(&c.nodes[2], &replacement, &fresh, NODES[0].1)
        .arg("--json")
        .output()
        .unwrap();
    // Its summary as JSON (docs/json/join.schema.json).
    let joined = common::json_checked(
        "join",
        output_ok(&out, "a replacement node3 joins").as_bytes(),
    );
    assert_eq!(joined["node"], "node3", "{joined}");
    assert_eq!(joined["joinCommand"], serde_json::Value::Null, "{joined}");
    c.assert_three_voters(0);
    let status = c.status(0);
    for m in status["cluster"]["members"].as_array().unwrap() {
        assert_eq!(m["healthy"], true, "{status}");
    }
}

#[test]
fn the_cluster_survives_a_partition_and_the_loss_of_the_vip_holder() {
    let _machine = shared_machine();
    let (c, token) = Cluster::up();
    let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
    c.wait_replicated(0, &names);
    let password = c.password();

    // Every image through the FQDN (the VIP), and each node's registry directly.
    c.pull_everything(&c.client, &password);
    for (_, address) in NODES {
        assert_eq!(
            c.registry_answers(&c.client, address, &password),
            200,
            "{address}"
        );
    }

    // Partition: a node that does not hold the VIP is cut off. It never takes the VIP and
    // refuses pushes (its registry cannot commit to etcd without quorum); it heals when the
    // link comes back.
    let holder = c.vip_holder(0);
    let cut = NODES.iter().position(|(n, _)| *n != holder).unwrap();
    c.switch.link(&c.nodes[cut], false);
    let until = Instant::now() + Duration::from_secs(6);
    while Instant::now() < until {
        assert!(!holds_vip(&c.nodes[cut]), "a partitioned node took the VIP");
        std::thread::sleep(Duration::from_millis(200));
    }
    let new_image = testkit::fixture(&c.setup.path("new"), 99, 32 << 10).unwrap();
    let src = format!(
        "oci:{}:example.internal/platform/api:1.0",
        new_image.layout.display()
    );
    let pushed = c.skopeo(
        &c.nodes[cut],
        &src,
        &format!("docker://{}:5000/late/api:1.0", NODES[cut].1),
        &password,
    );
    assert!(pushed.is_err(), "a partitioned node accepted a push");
    c.switch.link(&c.nodes[cut], true);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !c
        .probe(cut)
        .curl("/health", None, true)
        .1
        .contains("\"health\":\"true\"")
    {
        assert!(
            Instant::now() < deadline,
            "the partitioned node did not heal"
        );
        std::thread::sleep(Duration::from_millis(300));
    }

    // Node loss: SIGKILL everything on the VIP holder and cut its link.
    let holder = c.vip_holder(0);
    let dead = NODES.iter().position(|(n, _)| *n == holder).unwrap();
    let survivor = (dead + 1) % 3;
    let killed = Instant::now();
    c.nodes[dead].kill_all();
    c.switch.link(&c.nodes[dead], false);
    while c.registry_answers(&c.client, VIP, &password) != 200 {
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "the VIP did not move within 10s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let failover = killed.elapsed();
    println!("VIP failover: {:.2}s", failover.as_secs_f64());
    let new_holder = c.vip_holder(survivor);
    assert_ne!(new_holder, holder);

    // The images still pull, etcd takes writes, a push lands.
    c.pull_everything(&c.client, &password);
    c.etcdctl(survivor, &["put", "/test/after-failover", "yes"]);
    c.skopeo(
        &c.client,
        &src,
        &format!("docker://{FQDN}:5000/late/api:1.0"),
        &password,
    )
    .unwrap();
    let status = c.status(survivor);
    let dead_view = status["cluster"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == holder)
        .cloned()
        .unwrap();
    assert_eq!(dead_view["healthy"], false, "{status}");

    // The node comes back without a new token (its own command again: install on the first
    // node, join on the others) and catches up: the pushed image's blobs land in its store.
    c.switch.link(&c.nodes[dead], true);
    let out = if dead == 0 {
        c.install_command().output().unwrap()
    } else {
        c.join(&c.nodes[dead], &c.root(dead), &token, VIP)
            .output()
            .unwrap()
    };
    output_ok(&out, "the dead node's command again");
    c.wait_replicated(survivor, &names);
    let raw = Command::new("skopeo")
        .args(["inspect", "--raw", &src])
        .output()
        .unwrap();
    let manifest: serde_json::Value =
        serde_json::from_slice(&output_ok(&raw, "skopeo inspect").into_bytes()).unwrap();
    let mut blobs = vec![manifest["config"]["digest"].as_str().unwrap().to_string()];
    for layer in manifest["layers"].as_array().unwrap() {
        blobs.push(layer["digest"].as_str().unwrap().to_string());
    }
    let store = c.root(dead).join("var/lib/airgap/registry/blobs/sha256");
    for blob in &blobs {
        assert!(
            store.join(&blob["sha256:".len()..]).exists(),
            "{blob} of the image pushed while {holder} was down is not in its store"
        );
    }
}

/// The nodes whose interface carries the VIP now.
fn carriers(c: &Cluster) -> Vec<usize> {
    (0..NODES.len())
        .filter(|&i| holds_vip(&c.nodes[i]))
        .collect()
}

/// Watches every node's interface from `since` for `watch`: never two carry the VIP at once,
/// and at the end one node of `live` carries it, without a gap since at most 3 s after `since`.
/// Returns that node and when its last uninterrupted stretch began (the failover time).
fn single_carrier(
    c: &Cluster,
    what: &str,
    live: &[usize],
    since: Instant,
    watch: Duration,
) -> (usize, Duration) {
    let mut stretch: Option<(usize, Duration)> = None;
    // Each change of who carries it, for the failure message.
    let mut timeline = String::new();
    let mut before = None;
    while since.elapsed() < watch {
        let now = carriers(c);
        if before.as_ref() != Some(&now) {
            timeline.push_str(&format!(" {:.2}s:{now:?}", since.elapsed().as_secs_f64()));
            before = Some(now.clone());
        }
        assert!(
            now.len() <= 1,
            "{what}: two nodes carry the VIP {:.2}s after the kill: {:?}",
            since.elapsed().as_secs_f64(),
            now.iter().map(|&i| NODES[i].0).collect::<Vec<_>>()
        );
        stretch = match (now.as_slice(), stretch) {
            ([one], Some((holder, at))) if *one == holder => Some((holder, at)),
            ([one], _) => Some((*one, since.elapsed())),
            _ => None,
        };
        std::thread::sleep(Duration::from_millis(50));
    }
    let (holder, at) = stretch.unwrap_or_else(|| panic!("{what}: nobody carries the VIP"));
    assert!(
        live.contains(&holder),
        "{what}: {} carries the VIP, not one of {live:?}",
        NODES[holder].0
    );
    assert!(
        at <= Duration::from_secs(3),
        "{what}: {} carried the VIP for good only {:.2}s after the kill;{timeline}\n{}",
        NODES[holder].0,
        at.as_secs_f64(),
        cluster_logs(c)
    );
    (holder, at)
}

/// What node `i`'s service `log` (under `var/log/airgap/`) says besides serving requests:
/// its warnings and errors, and its refused requests; for a failure message.
fn service_logs(c: &Cluster, i: usize, log: &str) -> String {
    let text =
        std::fs::read_to_string(c.root(i).join("var/log/airgap").join(log)).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| {
            l.contains("WARN")
                || l.contains("ERROR")
                || l.contains("\"status\":400")
                || l.contains("\"status\":404")
                || l.contains("\"status\":5")
        })
        .collect();
    format!(
        "--- {} {log}:\n{}",
        NODES[i].0,
        lines[lines.len().saturating_sub(30)..].join("\n")
    )
}

/// The last lines of every node's `cluster.log` (the VIP decisions, timed): what a failed
/// timing assertion needs to be understood.
fn cluster_logs(c: &Cluster) -> String {
    (0..NODES.len())
        .map(|i| {
            let log = std::fs::read_to_string(c.root(i).join("var/log/airgap/cluster.log"))
                .unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(12)..].join("\n");
            let etcd = std::fs::read_to_string(c.root(i).join("var/log/airgap/etcd.log"))
                .unwrap_or_default();
            let elections: Vec<&str> = etcd
                .lines()
                .filter(|l| l.contains("leader") || l.contains("campaign") || l.contains("vote"))
                .collect();
            let elections = elections[elections.len().saturating_sub(10)..].join("\n");
            format!(
                "--- {} cluster.log:\n{tail}\n--- {} etcd.log, elections:\n{elections}",
                NODES[i].0, NODES[i].0
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until, asked through node `via`, all three etcd members follow one leader and have
/// applied its log (within a few entries: the VIP claim is renewed five times a second). A
/// failover is measured from a healthy cluster, not from one still catching up a node that
/// just came back.
fn wait_settled(c: &Cluster, via: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = etcdctl_in(
            &c.nodes[via].name,
            &format!("https://{}:2379", NODES[via].1),
            &c.root(via).join("etc/kubernetes/pki"),
        )
        .args(["endpoint", "status", "--cluster", "-w", "json"])
        .output()
        .unwrap();
        let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let members = list.as_array().cloned().unwrap_or_default();
        let number = |m: &serde_json::Value, k: &str| m["Status"][k].as_u64().unwrap_or(0);
        let leaders: std::collections::BTreeSet<u64> =
            members.iter().map(|m| number(m, "leader")).collect();
        let newest = members
            .iter()
            .map(|m| number(m, "raftIndex"))
            .max()
            .unwrap_or(0);
        let settled = members.len() == 3
            && leaders.len() == 1
            && !leaders.contains(&0)
            && members
                .iter()
                .all(|m| number(m, "raftAppliedIndex") + 10 >= newest);
        if settled {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "etcd did not settle: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The pid the agent of node `i` runs its `cluster` service as, once it runs.
fn cluster_service_pid(c: &Cluster, i: usize) -> Option<u32> {
    let state = std::fs::read(c.root(i).join("var/lib/airgap/agent.json")).ok()?;
    let state: serde_json::Value = serde_json::from_slice(&state).ok()?;
    let pid = state["services"]["cluster"]["pid"].as_u64()? as u32;
    std::path::Path::new(&format!("/proc/{pid}"))
        .exists()
        .then_some(pid)
}

/// (median, max) of `times`, in seconds.
fn median_max(times: &mut [Duration]) -> (f64, f64) {
    times.sort();
    (
        times[times.len() / 2].as_secs_f64(),
        times[times.len() - 1].as_secs_f64(),
    )
}

#[test]
fn the_vip_is_on_exactly_one_node_through_repeated_kills() {
    let _machine = alone_on_the_machine();
    let (c, token) = Cluster::up();
    let password = c.password();
    let all = [0, 1, 2];
    let (mut holder, _) = single_carrier(
        &c,
        "installed",
        &all,
        Instant::now(),
        Duration::from_millis(500),
    );
    let (mut service_kills, mut node_kills) = (Vec::new(), Vec::new());
    for round in 0..10 {
        // Every cluster service runs (the agent restarted the one killed before, after its
        // backoff), and the VIP answers.
        let deadline = Instant::now() + Duration::from_secs(60);
        while !all.iter().all(|&i| cluster_service_pid(&c, i).is_some()) {
            assert!(
                Instant::now() < deadline,
                "round {round}: a cluster service did not come back"
            );
            std::thread::sleep(Duration::from_millis(100));
        }

        wait_settled(&c, holder);
        // The holder's cluster service only, SIGKILLed: the agent restarts it. Its address
        // lapses; it takes the claim back, or another node takes over; never both.
        let pid = cluster_service_pid(&c, holder).unwrap();
        let killed = Instant::now();
        // SAFETY: signalling a process of the test's own namespace.
        unsafe {
            libc::kill(pid as i32, libc::SIGKILL);
        }
        let (now, took) = single_carrier(
            &c,
            &format!(
                "round {round}: {}'s cluster service killed",
                NODES[holder].0
            ),
            &all,
            killed,
            Duration::from_secs(5),
        );
        service_kills.push(took);
        assert_eq!(
            c.vip_holder(now),
            NODES[now].0,
            "round {round}: the claim names another node"
        );
        holder = now;

        // The whole holder node: every process SIGKILLed and its link cut. The other two
        // take over; the dead node's address lapses on its own.
        wait_settled(&c, holder);
        let dead = holder;
        let live: Vec<usize> = all.iter().copied().filter(|&i| i != dead).collect();
        let killed = Instant::now();
        c.nodes[dead].kill_all();
        c.switch.link(&c.nodes[dead], false);
        let (now, took) = single_carrier(
            &c,
            &format!("round {round}: {} killed", NODES[dead].0),
            &live,
            killed,
            Duration::from_secs(4),
        );
        node_kills.push(took);
        holder = now;
        // Back: the link first, then its own command again (install on the first node, join
        // on the others, without a new token). It never carries the VIP meanwhile.
        c.switch.link(&c.nodes[dead], true);
        let mut back = if dead == 0 {
            c.install_command()
        } else {
            c.join(&c.nodes[dead], &c.root(dead), &token, VIP)
        };
        let mut back = back
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let started = Instant::now();
        loop {
            assert_eq!(
                carriers(&c),
                [holder],
                "round {round}: while {} came back",
                NODES[dead].0
            );
            if let Some(status) = back.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(&mut back.stderr.take().unwrap(), &mut err).unwrap();
                assert!(
                    status.success(),
                    "round {round}: {} did not come back: {err}",
                    NODES[dead].0
                );
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "round {round}: bring-back hangs"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        single_carrier(
            &c,
            &format!("round {round}: {} back", NODES[dead].0),
            &[holder],
            Instant::now(),
            Duration::from_secs(1),
        );
        assert_eq!(
            c.registry_answers(&c.client, VIP, &password),
            200,
            "round {round}"
        );
    }
    let (median, max) = median_max(&mut service_kills);
    println!("VIP failover, cluster service SIGKILLed: median {median:.2}s, max {max:.2}s");
    let (median, max) = median_max(&mut node_kills);
    println!("VIP failover, holder node SIGKILLed: median {median:.2}s, max {max:.2}s");
    // The status of every node agrees: one holder, nobody carrying the VIP without the claim.
    for i in all {
        let status = c.status(i);
        assert_eq!(status["cluster"]["vipHolder"], NODES[holder].0, "{status}");
        assert_eq!(status["cluster"]["vipHere"], i == holder, "{status}");
        assert_eq!(status["cluster"]["vipWithoutClaim"], false, "{status}");
    }
}

#[test]
fn a_rolling_upgrade_moves_one_node_at_a_time_keeping_quorum_and_the_vip() {
    let _machine = alone_on_the_machine();
    // etcd 3.5 throughout, from the bundles' k8s packs: on 3.5 airgap gives the JSON gateway a
    // listener of its own, so a stopping member drains its gRPC clients; etcd 3.4 (Debian
    // 12's) cuts calls under way, which no client can avoid (`installer::etcd::GatewayListener`).
    let etcd35 = etcd35();
    let (c, _) = Cluster::up_with(&testkit::FixtureOptions {
        node_files: vec![("bin/etcd".into(), etcd35.clone())],
        ..Default::default()
    });
    let names: Vec<&str> = NODES.iter().map(|(n, _)| *n).collect();
    c.wait_replicated(0, &names);
    let password = c.password();
    let etcd_before: Vec<String> = (0..3)
        .map(|i| std::fs::read_to_string(c.root(i).join("etc/airgap/services/etcd.json")).unwrap())
        .collect();
    for (i, service) in etcd_before.iter().enumerate() {
        assert!(
            service.contains("--listen-client-http-urls=https://")
                && service.contains("var/lib/airgap/bin/etcd/"),
            "node{} does not run etcd 3.5 from the bundle with its own gateway listener: {service}",
            i + 1
        );
    }
    // 4.5.1 carries a broken etcd in its k8s pack (a test pack: it exits at once) under the
    // same pack version as 4.5.0's, as a rebuilt pack would: the rollback must still find
    // 4.5.0's etcd as it was. 4.6.0 carries the working one under a new pack version, so every
    // member restarts on it.
    let pack_bin = c.setup.path("packs/kubernetes/bin");
    let spec = std::fs::read_to_string(&c.setup.fixture.spec).unwrap();
    let build = |version: &str| {
        let path = c
            .setup
            .fixture
            .spec
            .with_file_name(format!("v{version}.yaml"));
        std::fs::write(
            &path,
            spec.replace("version: 4.5.0", &format!("version: {version}")),
        )
        .unwrap();
        c.setup.build_spec(&path, &format!("v{version}.tar"))
    };
    std::fs::write(
        pack_bin.join("etcd"),
        "#!/bin/sh\necho 'broken etcd (a test pack)' >&2\nexit 1\n",
    )
    .unwrap();
    let v451 = build("4.5.1");
    std::fs::remove_file(pack_bin.join("etcd")).unwrap();
    std::fs::copy(&etcd35, pack_bin.join("etcd")).unwrap();
    testkit::write_k8s_pack(
        &c.setup.path("packs/kubernetes"),
        "1.34.3",
        &testkit::FIXTURE_K8S_IMAGES,
    )
    .unwrap();
    let v460 = build("4.6.0");
    let upgrade_to = |i: usize, bundle: &Path| {
        let mut cmd = c.nodes[i].airgap();
        cmd.args(["upgrade", "--bundle"])
            .arg(bundle)
            .arg("--pub")
            .arg(c.setup.public())
            .arg("--root")
            .arg(c.root(i))
            .args(["--skip-phases", SKIP]);
        cmd
    };
    let upgrade = |i: usize| {
        let mut cmd = c.nodes[i].airgap();
        cmd.args(["upgrade", "--bundle"])
            .arg(&v460)
            .arg("--pub")
            .arg(c.setup.public())
            .arg("--root")
            .arg(c.root(i))
            .args(["--skip-phases", SKIP]);
        cmd
    };

    // What an upgrade never touches: the Secrets (their etcd mod revisions) and every node's
    // certificates, keys and encryption configuration.
    let secrets = [
        "/registry/secrets/airgap-system/installation-keys",
        "/registry/secrets/airgap-system/registry-credentials",
    ];
    let revisions: Vec<i64> = secrets
        .iter()
        .map(|k| c.probe(0).raw(k).unwrap().1)
        .collect();
    let kept = |i: usize| {
        let root = c.root(i);
        let mut all = common::snapshot(&root.join("etc/kubernetes/pki"));
        all.extend(common::snapshot(&root.join("etc/airgap/pki")));
        all.extend(common::snapshot(
            &root.join("etc/kubernetes/encryption-config.yaml"),
        ));
        all
    };
    let kept_before: Vec<_> = (0..3).map(kept).collect();

    // Out of order: node2 before node1 is refused with one line and nothing moves.
    let line = fails(&mut upgrade(1));
    assert!(
        line.contains("node2 is upgraded only after node1") && line.contains("hint:"),
        "{line}"
    );
    let (trusted, _, _) = c.probe(0).raw("/airgap/cluster/trusted-release").unwrap();
    assert!(String::from_utf8_lossy(&trusted).contains("\"4.5.0\""));

    // A watcher in the client namespace writes to etcd (any member) and pulls through the VIP
    // every 200 ms for the whole roll.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let failures = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let pki = c.root(0).join("etc/kubernetes/pki");
    let endpoints = NODES
        .iter()
        .map(|(_, a)| format!("https://{a}:2379"))
        .collect::<Vec<_>>()
        .join(",");
    let ca = c.root(0).join("etc/airgap/pki/fqdn-ca.crt");
    let client = c.client.name.clone();
    let watcher = {
        let (stop, failures) = (stop.clone(), failures.clone());
        let password = password.clone();
        std::thread::spawn(move || {
            let mut rounds = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                rounds += 1;
                let put = etcdctl_in(&client, &endpoints, &pki)
                    .args(["put", "/test/watch", &rounds.to_string()])
                    .output()
                    .unwrap();
                if !put.status.success() {
                    let err = String::from_utf8_lossy(&put.stderr);
                    failures.lock().unwrap().push(format!("etcd write: {err}"));
                }
                let pull = Command::new("ip")
                    .args(["netns", "exec", &client, "curl", "-s", "-o", "/dev/null"])
                    .args(["-w", "%{http_code}", "--max-time", "2", "--cacert"])
                    .arg(&ca)
                    .args(["-u", &format!("admin:{password}")])
                    .arg(format!("https://{VIP}:5000/v2/"))
                    .output()
                    .unwrap();
                if String::from_utf8_lossy(&pull.stdout) != "200" {
                    failures.lock().unwrap().push(format!(
                        "VIP pull: HTTP {}",
                        String::from_utf8_lossy(&pull.stdout)
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            rounds
        })
    };

    // 4.5.1 on node1: its etcd cannot start, so node1 is rolled back to 4.5.0's etcd, its
    // configuration and journal; the cluster still trusts 4.5.0 and the plan says node1 failed.
    let etcd_service = c.root(0).join("etc/airgap/services/etcd.json");
    let service_before = std::fs::read(&etcd_service).unwrap();
    let etc_before = common::snapshot(&c.root(0).join("etc"));
    let line = fails(&mut upgrade_to(0, &v451));
    assert!(
        line.contains("rolled back")
            && line.contains("runs mgmt-plane 4.5.0 again")
            && line.contains("etcd exits as soon as it starts"),
        "{line}"
    );
    assert_eq!(std::fs::read(&etcd_service).unwrap(), service_before);
    assert_eq!(
        common::snapshot(&c.root(0).join("etc")),
        etc_before,
        "the rollback left configuration of 4.5.1 behind"
    );
    assert!(c
        .probe(0)
        .curl("/health", None, true)
        .1
        .contains("\"health\":\"true\""));
    let (trusted, _, _) = c.probe(1).raw("/airgap/cluster/trusted-release").unwrap();
    assert!(String::from_utf8_lossy(&trusted).contains("\"4.5.0\""));
    assert_eq!(c.status(0)["bundle"], "mgmt-plane 4.5.0");
    let out = c.nodes[0]
        .airgap()
        .args(["upgrade", "status", "--json", "--root"])
        .arg(c.root(0))
        .output()
        .unwrap();
    let plan = common::json_checked(
        "upgrade-status",
        output_ok(&out, "upgrade status").as_bytes(),
    );
    assert_eq!(plan["to"]["version"], "4.5.1", "{plan}");
    assert_eq!(plan["nodes"][0]["state"], "failed", "{plan}");
    assert!(
        plan["nodes"][0]["error"]
            .as_str()
            .unwrap()
            .contains("rolled back"),
        "{plan}"
    );
    assert_eq!(plan["nodes"][1]["state"], "pending", "{plan}");

    // Then 4.6.0 rolls over the three nodes.
    for (i, before) in etcd_before.iter().enumerate() {
        let out = upgrade(i).output().unwrap();
        assert!(
            out.status.success(),
            "upgrade node{} failed: {}\n{}",
            i + 1,
            String::from_utf8_lossy(&out.stderr),
            service_logs(&c, i, "registry.log")
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(text.contains("to mgmt-plane 4.6.0"), "{text}");
        let after =
            std::fs::read_to_string(c.root(i).join("etc/airgap/services/etcd.json")).unwrap();
        assert!(
            before.contains("/etcd/1.34.2-") && after.contains("/etcd/1.34.3-"),
            "node{} does not run 4.6.0's etcd: {after}",
            i + 1
        );
        // The plan: this node done, the ones after it still pending.
        let out = c.nodes[i]
            .airgap()
            .args(["upgrade", "status", "--json", "--root"])
            .arg(c.root(i))
            .output()
            .unwrap();
        let plan = common::json_checked(
            "upgrade-status",
            output_ok(&out, "upgrade status").as_bytes(),
        );
        for (j, node) in plan["nodes"].as_array().unwrap().iter().enumerate() {
            let want = if j <= i { "done" } else { "pending" };
            assert_eq!(node["state"], want, "{plan}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let rounds = watcher.join().unwrap();
    let failures = failures.lock().unwrap().clone();
    assert!(rounds > 5, "the watcher barely ran ({rounds} rounds)");
    println!(
        "watcher: {rounds} rounds (an etcd write through any member and a pull through the VIP), {} failed",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "quorum or the VIP was lost during the roll ({} of {rounds} rounds): {failures:?}",
        failures.len()
    );
    let (trusted, _, _) = c.probe(2).raw("/airgap/cluster/trusted-release").unwrap();
    assert!(String::from_utf8_lossy(&trusted).contains("\"4.6.0\""));
    c.assert_three_voters(0);
    for (key, rev) in secrets.iter().zip(&revisions) {
        assert_eq!(c.probe(2).raw(key).unwrap().1, *rev, "{key} was rewritten");
    }
    for (i, before) in kept_before.iter().enumerate() {
        assert_eq!(
            &kept(i),
            before,
            "node{}: keys or certificates changed",
            i + 1
        );
    }
}

/// Debian 13's etcd 3.5 (`scripts/etcd35.sh`, which `scripts/test.sh` runs): `AIRGAP_ETCD35`.
fn etcd35() -> PathBuf {
    let path = PathBuf::from(std::env::var_os("AIRGAP_ETCD35").expect(
        "AIRGAP_ETCD35 names etcd 3.5: run scripts/etcd35.sh and export what it prints \
         (scripts/test.sh does)",
    ));
    assert!(
        path.is_file(),
        "AIRGAP_ETCD35={} is no file",
        path.display()
    );
    path
}
