//! An installed node for the end-to-end install tests: each test gets its own network
//! namespace (a veth pair holding the node address, and `/etc/netns/<ns>/hosts` resolving the
//! FQDN), so etcd's and the registry's fixed ports never collide between tests. Dropping the
//! guard kills every process left in the namespace and deletes it, pass or fail.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine;

pub const ADDRESS: &str = "10.77.0.11";
pub const FQDN: &str = "mgmt.example.internal";

pub struct NetNs {
    pub name: String,
    /// The node's address in the namespace.
    pub address: String,
    /// Its port on a [`Switch`], when it is on one.
    pub port: Option<String>,
}

fn run(program: &str, args: &[&str]) {
    let out = Command::new(program).args(args).output().expect(program);
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl NetNs {
    pub fn create(tag: &str) -> NetNs {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ag-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        let ns = NetNs {
            name,
            address: ADDRESS.into(),
            port: None,
        };
        let n = ns.name.as_str();
        run("ip", &["-n", n, "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "-n", n, "link", "add", "veth0", "type", "veth", "peer", "name", "veth1",
            ],
        );
        run(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "add",
                &format!("{ADDRESS}/24"),
                "dev",
                "veth0",
            ],
        );
        run("ip", &["-n", n, "link", "set", "veth0", "up"]);
        run("ip", &["-n", n, "link", "set", "veth1", "up"]);
        let etc = PathBuf::from("/etc/netns").join(n);
        std::fs::create_dir_all(&etc).unwrap();
        std::fs::write(
            etc.join("hosts"),
            format!("127.0.0.1 localhost\n{ADDRESS} {FQDN}\n"),
        )
        .unwrap();
        ns
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    pub fn airgap(&self) -> Command {
        let mut cmd = self.command(env!("CARGO_BIN_EXE_airgap"));
        cmd.env_remove("AIRGAP_FAILPOINT");
        cmd
    }

    /// `airgap` in the namespace's network, but in a private mount namespace that keeps the
    /// host's `/sys`: `ip netns exec` remounts `/sys` for the namespace, which hides the cgroup
    /// mounts runc needs to start containers. `/etc/hosts` is bound from the namespace's hosts
    /// file as `ip netns exec` does; `path` replaces the installer's PATH.
    pub fn airgap_keeping_cgroups(&self, path: &Path) -> Command {
        let mut cmd = Command::new("nsenter");
        cmd.arg(format!("--net=/run/netns/{}", self.name))
            .args([
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "/bin/sh",
                "-c",
            ])
            .arg(format!(
                "mount --bind /etc/netns/{}/hosts /etc/hosts && PATH='{}' exec \"$0\" \"$@\"",
                self.name,
                path.display()
            ))
            .arg(env!("CARGO_BIN_EXE_airgap"));
        cmd.env_remove("AIRGAP_FAILPOINT");
        cmd
    }

    pub fn pids(&self) -> Vec<i32> {
        let out = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }
}

impl NetNs {
    /// SIGKILLs every process in the namespace (a node's agent, etcd, registry, …).
    pub fn kill_all(&self) {
        for _ in 0..50 {
            let pids = self.pids();
            if pids.is_empty() {
                break;
            }
            for pid in pids {
                // SAFETY: killing processes inside a namespace this test created.
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                }
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.name));
    }
}

/// A LAN for multi-node tests: a bridge in a namespace of its own, each node's veth plugged
/// into it. Cutting a node's link (its port down) is how tests partition or lose a node.
pub struct Switch {
    pub name: String,
    ports: AtomicUsize,
}

impl Switch {
    pub fn create(tag: &str) -> Switch {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "ag-{tag}-sw-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        );
        run("ip", &["netns", "add", &name]);
        let sw = Switch {
            name,
            ports: AtomicUsize::new(0),
        };
        run(
            "ip",
            &["-n", &sw.name, "link", "add", "br0", "type", "bridge"],
        );
        run("ip", &["-n", &sw.name, "link", "set", "br0", "up"]);
        sw
    }

    /// A namespace on this switch holding `address`/24 on `eth0`, with `/etc/hosts` mapping
    /// `hosts` (name, address) pairs.
    pub fn attach(&self, tag: &str, address: &str, hosts: &[(&str, &str)]) -> NetNs {
        let i = self.ports.fetch_add(1, Ordering::SeqCst);
        let name = format!("{}-{tag}", self.name);
        run("ip", &["netns", "add", &name]);
        let port = format!("p{i}");
        let ns = NetNs {
            name,
            address: address.into(),
            port: Some(port.clone()),
        };
        let n = ns.name.as_str();
        run("ip", &["-n", n, "link", "set", "lo", "up"]);
        run(
            "ip",
            &[
                "-n", n, "link", "add", "eth0", "type", "veth", "peer", "name", &port, "netns",
                &self.name,
            ],
        );
        run(
            "ip",
            &[
                "-n",
                n,
                "addr",
                "add",
                &format!("{address}/24"),
                "dev",
                "eth0",
            ],
        );
        run("ip", &["-n", n, "link", "set", "eth0", "up"]);
        run(
            "ip",
            &["-n", &self.name, "link", "set", &port, "master", "br0"],
        );
        run("ip", &["-n", &self.name, "link", "set", &port, "up"]);
        let etc = PathBuf::from("/etc/netns").join(n);
        std::fs::create_dir_all(&etc).unwrap();
        let mut text = String::from("127.0.0.1 localhost\n");
        for (host, addr) in hosts {
            text.push_str(&format!("{addr} {host}\n"));
        }
        std::fs::write(etc.join("hosts"), text).unwrap();
        ns
    }

    /// Takes `ns`'s link down (`up = false`) or back up.
    pub fn link(&self, ns: &NetNs, up: bool) {
        let port = ns.port.as_deref().expect("a namespace on this switch");
        run(
            "ip",
            &[
                "-n",
                &self.name,
                "link",
                "set",
                port,
                if up { "up" } else { "down" },
            ],
        );
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

pub fn install_yaml(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("install.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: airgap/v1\nkind: Installation\nmetadata: {{name: mgmt}}\nspec:\n  mode: standalone\n  fqdn: {FQDN}\n  nodes: [{{name: node1, address: {ADDRESS}}}]\n{extra}"
        ),
    )
    .unwrap();
    path
}

/// A standalone node installed from `setup`'s fixture bundle (`bundle.tar`) into `root`, in a
/// namespace of its own tagged `tag`: the namespace, the root and what install printed.
pub fn install_standalone(setup: &super::Setup, tag: &str) -> (NetNs, PathBuf, String) {
    let bundle = setup.build("bundle.tar");
    let ns = NetNs::create(tag);
    let root = setup.path("root");
    let config = install_yaml(setup.dir.path(), "");
    let out = install(&ns, &config, &bundle, &setup.public(), &root)
        .output()
        .unwrap();
    let printed = output_ok(&out, "install");
    (ns, root, printed)
}

/// `airgap install` of `bundle` into `root`, inside `ns`.
pub fn install(ns: &NetNs, config: &Path, bundle: &Path, public: &Path, root: &Path) -> Command {
    install_with(ns.airgap(), config, bundle, public, root)
}

/// `airgap install` run by `cmd` (in a namespace or not).
pub fn install_with(
    mut cmd: Command,
    config: &Path,
    bundle: &Path,
    public: &Path,
    root: &Path,
) -> Command {
    cmd.arg("install")
        .arg("-c")
        .arg(config)
        .arg("--bundle")
        .arg(bundle)
        .arg("--pub")
        .arg(public)
        .arg("--root")
        .arg(root);
    cmd
}

/// Runs `install` parked at `phase`'s failpoint and SIGKILLs it there.
pub fn kill_during(mut install: Command, phase: &str) {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;
    let mut child = install
        .env("AIRGAP_FAILPOINT", phase)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut seen = Vec::new();
    for line in BufReader::new(stderr).lines() {
        let line = line.unwrap();
        seen.push(line.clone());
        let at = match phase.strip_prefix("after-") {
            Some(after) => format!("failpoint: paused after phase {after}"),
            None if phase.contains('-') => format!("failpoint: paused at {phase}"),
            None => format!("failpoint: paused in phase {phase}"),
        };
        if line.contains(&at) {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l.contains("failpoint")),
        "install never reached phase {phase}: {seen:?}"
    );
    // `ip netns exec` execs the installer, so the child's pid is the installer's.
    // SAFETY: killing our own child.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGKILL);
    }
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        None,
        "the installer was not killed by a signal"
    );
}

/// `airgap status --json` of `root`, which must succeed (exit 0: the node is healthy).
pub fn status_json(ns: &NetNs, root: &Path) -> serde_json::Value {
    let out = ns
        .airgap()
        .args(["status", "--json", "--root"])
        .arg(root)
        .output()
        .unwrap();
    super::json_checked("status", output_ok(&out, "status --json").as_bytes())
}

/// `airgap status --json` whatever its exit code (3: not healthy): the code and the report
/// (`null` when there is none).
pub fn status_any(ns: &NetNs, root: &Path) -> (Option<i32>, serde_json::Value) {
    let out = ns
        .airgap()
        .args(["status", "--json", "--root"])
        .arg(root)
        .output()
        .unwrap();
    let report = if out.stdout.is_empty() {
        serde_json::Value::Null
    } else {
        super::json_checked("status", &out.stdout)
    };
    (out.status.code(), report)
}

pub fn output_ok(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The certificate airgap's etcd clients present (no common name), under `etc/kubernetes/pki`.
const GATEWAY_CERT: &str = "etcd/airgap-gateway-client";

/// etcd as a client sees it: curl (not our client) against etcd's JSON gateway.
pub struct EtcdProbe<'a> {
    pub ns: &'a NetNs,
    pub root: PathBuf,
}

impl EtcdProbe<'_> {
    fn pki(&self, f: &str) -> String {
        self.root
            .join("etc/kubernetes/pki")
            .join(f)
            .display()
            .to_string()
    }

    /// One POST (or GET without `body`) to this node's etcd gateway with curl: the client
    /// certificate `cert` (a stem under `etc/kubernetes/pki`) and the `token`, when given.
    fn gateway(
        &self,
        path: &str,
        body: Option<&str>,
        cert: Option<&str>,
        token: Option<&str>,
    ) -> Output {
        let mut cmd = self.ns.command("curl");
        cmd.args([
            "-sS",
            "--max-time",
            "5",
            "--cacert",
            &self.pki("etcd/ca.crt"),
        ]);
        if let Some(stem) = cert {
            cmd.args(["--cert", &self.pki(&format!("{stem}.crt"))])
                .args(["--key", &self.pki(&format!("{stem}.key"))]);
        }
        if let Some(token) = token {
            cmd.args(["-H", &format!("Authorization: {token}")]);
        }
        if let Some(b) = body {
            cmd.args(["-X", "POST", "-d", b]);
        }
        cmd.arg(format!("https://{}:2382{path}", self.ns.address))
            .output()
            .expect("curl")
    }

    /// curl with or without the client certificate; returns (success, body or error). With
    /// the certificate it logs in as root when etcd has authentication on (through the
    /// gateway certificate, which carries no common name, as airgap's own clients do).
    pub fn curl(&self, path: &str, body: Option<&str>, with_cert: bool) -> (bool, String) {
        let out = match (with_cert, self.root_token()) {
            (false, _) => self.gateway(path, body, None, None),
            (true, Some(token)) => self.gateway(path, body, Some(GATEWAY_CERT), Some(&token)),
            (true, None) => self.gateway(path, body, Some("apiserver-etcd-client"), None),
        };
        let text = if out.status.success() {
            String::from_utf8_lossy(&out.stdout).into_owned()
        } else {
            String::from_utf8_lossy(&out.stderr).into_owned()
        };
        (out.status.success(), text)
    }

    /// A POST with the node's certificate `stem` (under `etc/kubernetes/pki`) and no token:
    /// what a client that has only a certificate gets.
    pub fn curl_as(&self, path: &str, body: &str, stem: &str) -> (bool, String) {
        let out = self.gateway(path, Some(body), Some(stem), None);
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    }

    /// A POST as a logged-in client (the gateway certificate and `token`); etcd's answer.
    pub fn post_with_token(&self, path: &str, body: &str, token: &str) -> String {
        let out = self.gateway(path, Some(body), Some(GATEWAY_CERT), Some(token));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// A token for etcd's root user, when the node has its password.
    pub fn root_token(&self) -> Option<String> {
        let password = std::fs::read_to_string(
            self.root
                .join("etc/kubernetes/pki/etcd/users/root.password"),
        )
        .ok()?;
        self.token("root", password.trim())
    }

    /// A token for `user`, with the gateway certificate; `None` when etcd refuses.
    pub fn token(&self, user: &str, password: &str) -> Option<String> {
        let body = serde_json::json!({ "name": user, "password": password }).to_string();
        let out = self.gateway(
            "/v3/auth/authenticate",
            Some(&body),
            Some(GATEWAY_CERT),
            None,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        v["token"].as_str().map(str::to_string)
    }

    /// The raw stored value of `key` and its mod revision, plus the store's revision.
    pub fn raw(&self, key: &str) -> Option<(Vec<u8>, i64, i64)> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let body = serde_json::json!({ "key": b64.encode(key) }).to_string();
        let (ok, text) = self.curl("/v3/kv/range", Some(&body), true);
        assert!(ok, "etcd range: {text}");
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        let revision = v["header"]["revision"].as_str().unwrap().parse().unwrap();
        let kv = v["kvs"].get(0)?;
        Some((
            b64.decode(kv["value"].as_str().unwrap()).unwrap(),
            kv["mod_revision"].as_str().unwrap().parse().unwrap(),
            revision,
        ))
    }
}

/// Decrypts a stored value the way kube-apiserver's secretbox transformer does, with the key
/// from the rendered `EncryptionConfiguration` (parsed here, not by the installer's code).
pub fn decrypt(root: &Path, stored: &[u8]) -> Vec<u8> {
    use crypto_secretbox::aead::{Aead, KeyInit};
    let text = std::fs::read_to_string(root.join("etc/kubernetes/encryption-config.yaml")).unwrap();
    let config: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    assert_eq!(config["kind"], "EncryptionConfiguration");
    assert_eq!(config["apiVersion"], "apiserver.config.k8s.io/v1");
    let resources = &config["resources"][0];
    assert_eq!(resources["resources"][0], "secrets");
    let key = &resources["providers"][0]["secretbox"]["keys"][0];
    let name = key["name"].as_str().unwrap();
    let secret = base64::engine::general_purpose::STANDARD
        .decode(key["secret"].as_str().unwrap())
        .unwrap();
    let prefix = format!("k8s:enc:secretbox:v1:{name}:");
    let rest = stored
        .strip_prefix(prefix.as_bytes())
        .unwrap_or_else(|| panic!("stored value lacks {prefix}"));
    let (nonce, sealed) = rest.split_at(24);
    let cipher = crypto_secretbox::XSalsa20Poly1305::new_from_slice(&secret).unwrap();
    cipher
        .decrypt(crypto_secretbox::Nonce::from_slice(nonce), sealed)
        .expect("decrypts with the EncryptionConfiguration key")
}

/// The decrypted Secret `airgap-system/<name>`, checked to be a `v1 Secret`; data decoded.
pub fn secret(
    probe: &EtcdProbe<'_>,
    name: &str,
) -> (std::collections::BTreeMap<String, Vec<u8>>, Vec<u8>, i64) {
    let (raw, mod_revision, _) = probe
        .raw(&format!("/registry/secrets/airgap-system/{name}"))
        .unwrap_or_else(|| panic!("secret {name} missing"));
    let plain = decrypt(&probe.root, &raw);
    let v: serde_json::Value = serde_json::from_slice(&plain).expect("a JSON object");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["kind"], "Secret");
    assert_eq!(v["metadata"]["name"], name);
    assert_eq!(v["metadata"]["namespace"], "airgap-system");
    assert!(v["metadata"]["uid"].as_str().is_some_and(|u| u.len() == 36));
    assert!(v["metadata"].get("resourceVersion").is_none());
    assert_eq!(v["type"], "Opaque");
    let data = v["data"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_str().unwrap())
                    .unwrap(),
            )
        })
        .collect();
    (data, raw, mod_revision)
}

/// A cert dir skopeo reads: the node's CA as `ca.crt`.
pub fn skopeo_certs(root: &Path, dir: &Path) -> PathBuf {
    let certs = dir.join("skopeo-certs");
    std::fs::create_dir_all(&certs).unwrap();
    std::fs::copy(
        root.join("etc/airgap/pki/fqdn-ca.crt"),
        certs.join("ca.crt"),
    )
    .unwrap();
    certs
}

/// Records every TCP connection made to `address` on `ports` inside a namespace: stands in
/// for the internet (upstream registry names resolve to it) to prove nothing reaches it. Each
/// connection is noted and closed at once. Stops on drop.
pub struct ConnectionRecorder {
    seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl ConnectionRecorder {
    pub fn start(ns: &NetNs, address: &str, ports: &[u16]) -> ConnectionRecorder {
        use std::sync::atomic::AtomicBool;
        use std::sync::{mpsc, Arc, Mutex};
        run(
            "ip",
            &[
                "-n",
                &ns.name,
                "addr",
                "add",
                &format!("{address}/32"),
                "dev",
                "lo",
            ],
        );
        let seen = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = mpsc::channel();
        let netns = PathBuf::from("/run/netns").join(&ns.name);
        let (address, ports) = (address.to_string(), ports.to_vec());
        let (thread_seen, thread_stop) = (seen.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            use std::os::fd::AsRawFd;
            // Sockets belong to the namespace of the thread that creates them: this thread
            // enters the test's namespace and binds there.
            let file = std::fs::File::open(&netns).expect("the namespace's handle");
            // SAFETY: setns on a valid namespace fd affects only this thread.
            let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } == 0;
            assert!(entered, "setns: {}", std::io::Error::last_os_error());
            let listeners: Vec<(u16, std::net::TcpListener)> = ports
                .iter()
                .map(|p| {
                    let l = std::net::TcpListener::bind((address.as_str(), *p))
                        .unwrap_or_else(|e| panic!("bind {address}:{p}: {e}"));
                    l.set_nonblocking(true).unwrap();
                    (*p, l)
                })
                .collect();
            ready_tx.send(()).unwrap();
            while !thread_stop.load(Ordering::SeqCst) {
                for (port, listener) in &listeners {
                    if let Ok((_, peer)) = listener.accept() {
                        thread_seen
                            .lock()
                            .unwrap()
                            .push(format!("{peer} -> port {port}"));
                    }
                }
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        });
        ready_rx.recv().expect("the recorder is listening");
        ConnectionRecorder {
            seen,
            stop,
            thread: Some(thread),
        }
    }

    /// Every connection so far.
    pub fn connections(&self) -> Vec<String> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for ConnectionRecorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The pids in `ns` whose command line contains every one of `words`.
pub fn pids_running(ns: &NetNs, words: &[&str]) -> Vec<i32> {
    ns.pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<String> = cmdline
                .split(|b| *b == 0)
                .map(|a| String::from_utf8_lossy(a).into_owned())
                .collect();
            words.iter().all(|w| args.iter().any(|a| a == w))
        })
        .collect()
}

/// etcdctl in `namespace` against `endpoints` (comma-separated), with the API server's etcd
/// client certificate from `pki` (a node's `etc/kubernetes/pki`).
pub fn etcdctl_in(namespace: &str, endpoints: &str, pki: &Path) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", namespace, "etcdctl"])
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoints}"))
        .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("apiserver-etcd-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("apiserver-etcd-client.key").display()
        ));
    cmd
}
