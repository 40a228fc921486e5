//! Real registries for the end-to-end tests: the CNCF distribution registry
//! (`docker-registry`) and `airgap registry serve`, both on loopback with TLS from a CA the
//! test generates (openssl), plus an HTTP proxy in front of a registry that can misbehave on
//! purpose. Every process is killed when its guard drops, pass or fail.
#![allow(dead_code)]

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const USER: &str = "admin";
pub const PASSWORD: &str = "correct horse battery staple";

/// A CA and a server certificate for 127.0.0.1 and localhost.
pub struct Pki {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).unwrap();
        let run = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=airgap test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            dir.join("ext.cnf"),
            "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth,clientAuth\n",
        )
        .unwrap();
        run(&[
            "x509",
            "-req",
            "-in",
            "tls.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "tls.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        // skopeo's --cert-dir wants the CA as *.crt in a directory of its own.
        std::fs::create_dir_all(dir.join("skopeo-certs")).unwrap();
        std::fs::copy(dir.join("ca.crt"), dir.join("skopeo-certs/ca.crt")).unwrap();
        Pki {
            ca: dir.join("ca.crt"),
            cert: dir.join("tls.crt"),
            key: dir.join("tls.key"),
        }
    }

    pub fn skopeo_cert_dir(&self) -> PathBuf {
        self.ca.parent().unwrap().join("skopeo-certs")
    }
}

pub fn write_htpasswd(path: &Path) {
    std::fs::write(
        path,
        registry_server::htpasswd::entry(USER, PASSWORD).unwrap(),
    )
    .unwrap();
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on {port}");
}

/// A child process killed on drop.
pub struct Process {
    pub child: Child,
    pub port: u16,
}

impl Process {
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The CNCF distribution registry with TLS and htpasswd auth.
pub struct Distribution {
    pub process: Process,
    pub storage: PathBuf,
    config: PathBuf,
}

impl Distribution {
    pub fn start(dir: &Path, pki: &Pki) -> Distribution {
        Self::start_on(dir, pki, free_port())
    }

    pub fn start_on(dir: &Path, pki: &Pki, port: u16) -> Distribution {
        let config = Self::configure(dir, pki, port);
        let process = spawn_registry(&config, port);
        Distribution {
            process,
            storage: dir.join("storage"),
            config,
        }
    }

    /// One started by `launcher` (`ip netns exec NS`, say) on `port` of that network; ready
    /// once `ready` says it answers.
    pub fn start_via(
        dir: &Path,
        pki: &Pki,
        port: u16,
        mut launcher: Command,
        ready: impl Fn() -> bool,
    ) -> Distribution {
        let config = Self::configure(dir, pki, port);
        let child = launcher
            .arg("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("docker-registry (apt-get install docker-registry)");
        let mut process = Process { child, port };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !ready() {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("docker-registry exited early: {status}");
            }
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Distribution {
            process,
            storage: dir.join("storage"),
            config,
        }
    }

    /// Writes the registry's configuration (TLS, htpasswd, storage under `dir`).
    fn configure(dir: &Path, pki: &Pki, port: u16) -> PathBuf {
        std::fs::create_dir_all(dir).unwrap();
        let storage = dir.join("storage");
        let htpasswd = dir.join("htpasswd");
        if !htpasswd.exists() {
            write_htpasswd(&htpasswd);
        }
        let config = dir.join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog: {{level: error}}\nstorage:\n  filesystem: {{rootdirectory: {}}}\nhttp:\n  addr: 127.0.0.1:{port}\n  tls: {{certificate: {}, key: {}}}\nauth:\n  htpasswd: {{realm: test, path: {}}}\n",
                storage.display(),
                pki.cert.display(),
                pki.key.display(),
                htpasswd.display()
            ),
        )
        .unwrap();
        config
    }

    /// Starts it again on the same port and storage after `kill`.
    pub fn restart(&mut self) {
        self.process.kill();
        self.process = spawn_registry(&self.config, self.process.port);
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.process.port)
    }
}

fn spawn_registry(config: &Path, port: u16) -> Process {
    let mut child = Command::new("docker-registry")
        .arg("serve")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("docker-registry (apt-get install docker-registry)");
    wait_for_port(port, &mut child, "docker-registry");
    Process { child, port }
}

/// `airgap registry serve SOURCE` with TLS, and htpasswd when asked.
pub fn airgap_serve(source: &Path, pki: &Pki, extra: &[&str]) -> Process {
    let mut args = vec![
        "--tls-cert",
        path_str(&pki.cert),
        "--tls-key",
        path_str(&pki.key),
    ];
    args.extend_from_slice(extra);
    airgap_serve_with(source, &args)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// `airgap registry serve` on a free loopback port with exactly these flags (plain HTTP
/// unless they name a certificate).
pub fn airgap_serve_with(source: &Path, extra: &[&str]) -> Process {
    let port = free_port();
    let mut child = super::airgap()
        .args(["registry", "serve"])
        .arg(source)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("airgap registry serve");
    wait_for_port(port, &mut child, "airgap registry serve");
    Process { child, port }
}

/// curl against a registry with the test CA; returns (status, body).
pub fn curl(pki: &Pki, args: &[&str]) -> (u16, String) {
    let out = Command::new("curl")
        .args([
            "-s",
            "--path-as-is",
            "-o",
            "-",
            "-w",
            "\n%{http_code}",
            "--cacert",
        ])
        .arg(&pki.ca)
        .args(args)
        .output()
        .expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// `registry seed` with the password on stdin; returns (success, stdout, stderr).
pub fn seed(
    bundle: &Path,
    public: &Path,
    to: &str,
    extra: &[&str],
    password: &str,
) -> (bool, String, String) {
    let out = with_stdin(
        super::airgap()
            .args(["registry", "seed"])
            .arg(bundle)
            .arg("--pub")
            .arg(public)
            .args(["--to", to, "--username", USER, "--password-stdin"])
            .args(extra)
            // The default --config-dir is relative: keep it inside the test's directory.
            .current_dir(bundle.parent().unwrap()),
        password,
    );
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs `cmd` with `input` on its standard input (a password for --password-stdin, a bundle).
pub fn with_stdin(cmd: &mut Command, input: impl AsRef<[u8]>) -> std::process::Output {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused before it reads its input (a bad flag, say) closes stdin first.
    let _ = child.stdin.take().unwrap().write_all(input.as_ref());
    child.wait_with_output().unwrap()
}

/// An auth file (`$REGISTRY_AUTH_FILE`) holding the test user's login for `host`.
pub fn write_auth(path: &Path, host: &str, password: &str) {
    let basic = registry::auth::Credentials {
        username: USER.into(),
        password: password.into(),
    }
    .basic_header();
    let auth = basic.trim_start_matches("Basic ");
    std::fs::write(
        path,
        serde_json::json!({"auths": {host: {"auth": auth}}}).to_string(),
    )
    .unwrap();
}

pub fn creds() -> String {
    format!("{USER}:{PASSWORD}")
}

/// `skopeo inspect --raw` of a registry image, or the error text.
pub fn skopeo_raw(pki: &Pki, image: &str, authenticated: bool) -> Result<Vec<u8>, String> {
    let mut cmd = Command::new("skopeo");
    cmd.args(["inspect", "--raw", "--cert-dir"])
        .arg(pki.skopeo_cert_dir());
    if authenticated {
        cmd.args(["--creds", &creds()]);
    } else {
        cmd.arg("--no-creds");
    }
    let out = cmd
        .arg(format!("docker://{image}"))
        .output()
        .expect("skopeo");
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// What a [`FaultProxy`] does to traffic.
#[derive(Default)]
pub struct Faults {
    /// Turn `POST ...?mount=` into a plain upload start: the registry "declines" the mount.
    pub refuse_mounts: AtomicBool,
    /// Mount requests seen.
    pub mounts_seen: AtomicUsize,
    /// Blob uploads committed through the proxy (PUT with `digest=` answered 201).
    pub commits: AtomicUsize,
    /// Once this many commits went through, requests wait until `released` is set: lets a
    /// test take the registry down at a known point of a seed.
    pub hold_after_commits: AtomicUsize,
    pub released: AtomicBool,
    /// Answer this many requests with 500 before passing any through: a registry that is
    /// failing and then recovers.
    pub fail_first: AtomicUsize,
    /// 500s answered so far.
    pub failed: AtomicUsize,
}

/// A plain-HTTP proxy in front of a TLS registry that can refuse mounts and counts commits.
pub struct FaultProxy {
    pub port: u16,
    pub faults: Arc<Faults>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl FaultProxy {
    pub fn start(upstream: &str, pki: &Pki) -> FaultProxy {
        use http_body_util::BodyExt;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let faults = Arc::new(Faults {
            hold_after_commits: AtomicUsize::new(usize::MAX),
            ..Faults::default()
        });
        let ca = std::fs::read(&pki.ca).unwrap();
        registry::crypto::install_default();
        let client = reqwest::Client::builder()
            .tls_certs_only([reqwest::Certificate::from_pem(&ca).unwrap()])
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream_base = format!("https://{upstream}");
        let front = format!("http://127.0.0.1:{port}");
        let f = faults.clone();
        runtime.spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (client, f, upstream_base, front) = (
                    client.clone(),
                    f.clone(),
                    upstream_base.clone(),
                    front.clone(),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: hyper::Request<hyper::body::Incoming>| {
                            let (client, f, upstream_base, front) = (
                                client.clone(),
                                f.clone(),
                                upstream_base.clone(),
                                front.clone(),
                            );
                            async move {
                                while f.commits.load(Ordering::SeqCst)
                                    >= f.hold_after_commits.load(Ordering::SeqCst)
                                    && !f.released.load(Ordering::SeqCst)
                                {
                                    tokio::time::sleep(Duration::from_millis(10)).await;
                                }
                                if f
                                    .fail_first
                                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                                        n.checked_sub(1)
                                    })
                                    .is_ok()
                                {
                                    f.failed.fetch_add(1, Ordering::SeqCst);
                                    let mut r = hyper::Response::new(
                                        http_body_util::Full::new(bytes::Bytes::from_static(
                                            b"{\"errors\":[{\"code\":\"UNKNOWN\",\"message\":\"injected failure\"}]}",
                                        ))
                                        .map_err(|e| match e {})
                                        .boxed_unsync(),
                                    );
                                    *r.status_mut() = hyper::StatusCode::INTERNAL_SERVER_ERROR;
                                    return Ok::<_, std::convert::Infallible>(r);
                                }
                                let method = req.method().clone();
                                let mut path_q = req
                                    .uri()
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default();
                                if method == hyper::Method::POST && path_q.contains("mount=") {
                                    f.mounts_seen.fetch_add(1, Ordering::SeqCst);
                                    if f.refuse_mounts.load(Ordering::SeqCst) {
                                        path_q = path_q
                                            .split('?')
                                            .next()
                                            .unwrap_or_default()
                                            .to_string();
                                    }
                                }
                                let is_commit =
                                    method == hyper::Method::PUT && path_q.contains("digest=");
                                let mut out =
                                    client.request(method, format!("{upstream_base}{path_q}"));
                                for (k, v) in req.headers() {
                                    if k != hyper::header::HOST {
                                        out = out.header(k, v);
                                    }
                                }
                                let body = req.into_body().into_data_stream();
                                let out = out.body(reqwest::Body::wrap_stream(body));
                                let resp = match out.send().await {
                                    Ok(r) => r,
                                    Err(_) => {
                                        let mut r = hyper::Response::new(
                                            http_body_util::Full::new(bytes::Bytes::new())
                                                .map_err(|e| match e {})
                                                .boxed_unsync(),
                                        );
                                        *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                                        return Ok::<_, std::convert::Infallible>(r);
                                    }
                                };
                                if is_commit && resp.status() == reqwest::StatusCode::CREATED {
                                    f.commits.fetch_add(1, Ordering::SeqCst);
                                }
                                let mut r =
                                    hyper::Response::builder().status(resp.status().as_u16());
                                for (k, v) in resp.headers() {
                                    if k == reqwest::header::LOCATION {
                                        let loc = v
                                            .to_str()
                                            .unwrap_or_default()
                                            .replace(&upstream_base, &front);
                                        r = r.header(k.as_str(), loc);
                                    } else {
                                        r = r.header(k.as_str(), v.as_bytes());
                                    }
                                }
                                use futures_util::TryStreamExt;
                                let stream = resp
                                    .bytes_stream()
                                    .map_ok(hyper::body::Frame::data)
                                    .map_err(std::io::Error::other);
                                let body = http_body_util::StreamBody::new(stream).boxed_unsync();
                                Ok(r.body(body).unwrap())
                            }
                        },
                    );
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy {
            port,
            faults,
            runtime: Some(runtime),
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

/// A SOCKS5 proxy (no authentication, CONNECT only) on loopback that counts the connections
/// it relays: shows a client really went through `socks5://` rather than around it.
pub struct Socks5Proxy {
    pub port: u16,
    pub connections: Arc<AtomicUsize>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Socks5Proxy {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl Socks5Proxy {
    pub fn start() -> Socks5Proxy {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        runtime.spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let counter = counter.clone();
                tokio::spawn(async move {
                    let relay = async {
                        let mut head = [0u8; 2];
                        client.read_exact(&mut head).await?;
                        let mut methods = vec![0u8; head[1] as usize];
                        client.read_exact(&mut methods).await?;
                        client.write_all(&[5, 0]).await?;
                        let mut request = [0u8; 4];
                        client.read_exact(&mut request).await?;
                        let host = match request[3] {
                            1 => {
                                let mut ip = [0u8; 4];
                                client.read_exact(&mut ip).await?;
                                std::net::Ipv4Addr::from(ip).to_string()
                            }
                            3 => {
                                let len = client.read_u8().await? as usize;
                                let mut name = vec![0u8; len];
                                client.read_exact(&mut name).await?;
                                String::from_utf8_lossy(&name).into_owned()
                            }
                            _ => return Err(std::io::Error::other("unsupported address type")),
                        };
                        let port = client.read_u16().await?;
                        let mut upstream =
                            tokio::net::TcpStream::connect((host.as_str(), port)).await?;
                        client.write_all(&[5, 0, 0, 1, 0, 0, 0, 0, 0, 0]).await?;
                        counter.fetch_add(1, Ordering::SeqCst);
                        tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
                        Ok::<_, std::io::Error>(())
                    };
                    let _ = relay.await;
                });
            }
        });
        Socks5Proxy {
            port,
            connections,
            runtime: Some(runtime),
        }
    }
}

/// A single-member etcd on loopback with mutual TLS (the test PKI's certificate serves as
/// both the server's and the client's).
pub fn etcd(dir: &Path, pki: &Pki) -> Process {
    let (client, peer) = (free_port(), free_port());
    let data = dir.join("etcd-data");
    std::fs::create_dir_all(&data).unwrap();
    let mut child = Command::new("etcd")
        .arg("--name=t")
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--listen-client-urls=https://127.0.0.1:{client}"))
        .arg(format!(
            "--advertise-client-urls=https://127.0.0.1:{client}"
        ))
        .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
        .arg(format!(
            "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
        ))
        .arg(format!("--initial-cluster=t=http://127.0.0.1:{peer}"))
        .arg(format!("--cert-file={}", pki.cert.display()))
        .arg(format!("--key-file={}", pki.key.display()))
        .arg(format!("--trusted-ca-file={}", pki.ca.display()))
        .arg("--client-cert-auth")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("etcd (Debian package etcd-server)");
    wait_for_port(client, &mut child, "etcd");
    Process {
        child,
        port: client,
    }
}

/// The `registry serve` flags that keep its metadata in `etcd`.
pub fn etcd_flags(etcd: &Process, pki: &Pki) -> Vec<String> {
    vec![
        "--etcd".into(),
        format!("https://127.0.0.1:{}", etcd.port),
        "--etcd-ca".into(),
        pki.ca.display().to_string(),
        "--etcd-cert".into(),
        pki.cert.display().to_string(),
        "--etcd-key".into(),
        pki.key.display().to_string(),
    ]
}
