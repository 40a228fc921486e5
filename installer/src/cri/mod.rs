//! A small client for the Kubernetes Container Runtime Interface (CRI, `runtime.v1`): gRPC over
//! HTTP/2 on containerd's unix socket, the path the kubelet itself pulls and runs through.
//! airgap uses it to probe the runtime it configured (is it up, which sandbox image does it
//! use) and its tests use it to pull bundle images and run pods exactly as the kubelet would.
//! Only the calls airgap needs are here; each is one unary RPC.

pub mod wire;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use wire::{Message, WireError};

const IMAGE: &str = "/runtime.v1.ImageService";
const RUNTIME: &str = "/runtime.v1.RuntimeService";

#[derive(Debug, thiserror::Error)]
pub enum CriError {
    #[error("cannot connect to the CRI socket {}", socket.display())]
    Connect {
        socket: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("CRI {method}: HTTP/2")]
    Transport {
        method: &'static str,
        #[source]
        source: h2::Error,
    },
    #[error("CRI {method}: {message} (gRPC status {code})")]
    Status {
        method: &'static str,
        code: u32,
        message: String,
    },
    #[error(
        "the runtime is not ready (conditions {conditions:?}, sandbox image {sandbox_image:?})"
    )]
    NotReady {
        conditions: BTreeMap<String, bool>,
        sandbox_image: Option<String>,
    },
    #[error("CRI {method}: the answer is not a gRPC message")]
    Framing { method: &'static str },
    #[error("CRI {method}: the answer does not decode")]
    Decode {
        method: &'static str,
        #[source]
        source: WireError,
    },
}

/// What `Version` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeVersion {
    pub runtime_name: String,
    pub runtime_version: String,
    pub runtime_api_version: String,
}

/// What `Status` reports: the runtime's conditions (`RuntimeReady`, `NetworkReady`) and, with
/// verbose, its effective configuration as JSON under `info["config"]`.
#[derive(Debug, Clone, Default)]
pub struct RuntimeStatus {
    pub conditions: BTreeMap<String, bool>,
    pub info: BTreeMap<String, String>,
}

impl RuntimeStatus {
    pub fn runtime_ready(&self) -> bool {
        self.conditions.get("RuntimeReady") == Some(&true)
    }

    /// The sandbox (pause) image the runtime runs every pod with, from its verbose config.
    pub fn sandbox_image(&self) -> Option<String> {
        let config: serde_json::Value = serde_json::from_str(self.info.get("config")?).ok()?;
        config["sandboxImage"].as_str().map(str::to_string)
    }
}

/// An image as the runtime holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub repo_tags: Vec<String>,
    pub repo_digests: Vec<String>,
}

/// The parts of a pod sandbox the tests and probes need: host network (no CNI), a log
/// directory for its containers.
#[derive(Debug, Clone)]
pub struct PodSpec<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub uid: &'a str,
    pub log_directory: &'a Path,
}

/// A container in a pod: image, command, and its log file relative to the pod's directory.
#[derive(Debug, Clone)]
pub struct ContainerSpec<'a> {
    pub name: &'a str,
    pub image: &'a str,
    pub command: &'a [&'a str],
    pub log_path: &'a str,
}

pub struct CriClient {
    socket: PathBuf,
}

impl CriClient {
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        CriClient {
            socket: socket.into(),
        }
    }

    pub async fn version(&self) -> Result<RuntimeVersion, CriError> {
        const M: &str = "Version";
        let out = self
            .call(RUNTIME, M, Message::new().string(1, "v1"))
            .await?;
        let s = |tag| wire::string_field(&out, tag).map_err(decode(M));
        Ok(RuntimeVersion {
            runtime_name: s(2)?,
            runtime_version: s(3)?,
            runtime_api_version: s(4)?,
        })
    }

    pub async fn status(&self, verbose: bool) -> Result<RuntimeStatus, CriError> {
        const M: &str = "Status";
        let out = self
            .call(RUNTIME, M, Message::new().bool(1, verbose))
            .await?;
        let d = decode(M);
        let status = wire::bytes_field(&out, 1).map_err(d)?;
        let mut conditions = BTreeMap::new();
        for c in wire::all_bytes(status, 1).map_err(decode(M))? {
            conditions.insert(
                wire::string_field(c, 1).map_err(decode(M))?,
                wire::bool_field(c, 2).map_err(decode(M))?,
            );
        }
        Ok(RuntimeStatus {
            conditions,
            info: wire::map_field(&out, 2).map_err(decode(M))?,
        })
    }

    /// Pulls `image` as the kubelet does (no credentials in the request: the runtime's own
    /// registry configuration must supply them); returns the image reference it resolved to.
    pub async fn pull_image(&self, image: &str) -> Result<String, CriError> {
        const M: &str = "PullImage";
        let req = Message::new().message(1, Message::new().string(1, image));
        let out = self.call(IMAGE, M, req).await?;
        wire::string_field(&out, 1).map_err(decode(M))
    }

    /// The image if the runtime has it.
    pub async fn image_status(&self, image: &str) -> Result<Option<ImageInfo>, CriError> {
        const M: &str = "ImageStatus";
        let req = Message::new().message(1, Message::new().string(1, image));
        let out = self.call(IMAGE, M, req).await?;
        let image = wire::bytes_field(&out, 1).map_err(decode(M))?;
        if image.is_empty() {
            return Ok(None);
        }
        Ok(Some(ImageInfo {
            id: wire::string_field(image, 1).map_err(decode(M))?,
            repo_tags: wire::strings_field(image, 2).map_err(decode(M))?,
            repo_digests: wire::strings_field(image, 3).map_err(decode(M))?,
        }))
    }

    pub async fn remove_image(&self, image: &str) -> Result<(), CriError> {
        let req = Message::new().message(1, Message::new().string(1, image));
        self.call(IMAGE, "RemoveImage", req).await.map(|_| ())
    }

    /// Starts a pod sandbox (its pause container) on the host network; returns its id.
    pub async fn run_pod_sandbox(&self, pod: &PodSpec<'_>) -> Result<String, CriError> {
        const M: &str = "RunPodSandbox";
        let req = Message::new().message(1, pod_config(pod));
        let out = self.call(RUNTIME, M, req).await?;
        wire::string_field(&out, 1).map_err(decode(M))
    }

    /// Creates and starts a container in a sandbox; returns its id.
    pub async fn start_container(
        &self,
        sandbox: &str,
        pod: &PodSpec<'_>,
        container: &ContainerSpec<'_>,
    ) -> Result<String, CriError> {
        const M: &str = "CreateContainer";
        let config = Message::new()
            .message(1, Message::new().string(1, container.name))
            .message(2, Message::new().string(1, container.image))
            .strings(3, container.command)
            .string(11, container.log_path);
        let req = Message::new()
            .string(1, sandbox)
            .message(2, config)
            .message(3, pod_config(pod));
        let out = self.call(RUNTIME, M, req).await?;
        let id = wire::string_field(&out, 1).map_err(decode(M))?;
        self.call(RUNTIME, "StartContainer", Message::new().string(1, &id))
            .await?;
        Ok(id)
    }

    /// The container's state: 0 created, 1 running, 2 exited, 3 unknown; and its exit code.
    pub async fn container_state(&self, id: &str) -> Result<(u64, u64), CriError> {
        const M: &str = "ContainerStatus";
        let out = self.call(RUNTIME, M, Message::new().string(1, id)).await?;
        let status = wire::bytes_field(&out, 1).map_err(decode(M))?;
        let number = |tag| -> Result<u64, CriError> {
            Ok(wire::fields(status)
                .map_err(decode(M))?
                .into_iter()
                .rev()
                .find_map(|(t, v)| match v {
                    wire::Value::Varint(n) if t == tag => Some(n),
                    _ => None,
                })
                .unwrap_or(0))
        };
        Ok((number(3)?, number(7)?))
    }

    /// Stops and removes a sandbox and its containers.
    pub async fn remove_pod_sandbox(&self, id: &str) -> Result<(), CriError> {
        self.call(RUNTIME, "StopPodSandbox", Message::new().string(1, id))
            .await?;
        self.call(RUNTIME, "RemovePodSandbox", Message::new().string(1, id))
            .await
            .map(|_| ())
    }

    /// One unary call: a length-prefixed message out, one back, the status in the trailers.
    async fn call(
        &self,
        service: &str,
        method: &'static str,
        request: Message,
    ) -> Result<Vec<u8>, CriError> {
        let transport = |source| CriError::Transport { method, source };
        let stream = tokio::net::UnixStream::connect(&self.socket)
            .await
            .map_err(|source| CriError::Connect {
                socket: self.socket.clone(),
                source,
            })?;
        let (client, connection) = h2::client::handshake(stream).await.map_err(transport)?;
        let driver = tokio::spawn(connection);
        let result = async {
            let mut client = client.ready().await.map_err(transport)?;
            let Ok(req) = http::Request::builder()
                .method("POST")
                .uri(format!("http://localhost{service}/{method}"))
                .header("content-type", "application/grpc")
                .header("te", "trailers")
                .body(())
            else {
                return Err(CriError::Framing { method });
            };
            let (response, mut send) = client.send_request(req, false).map_err(transport)?;
            let body = request.into_bytes();
            let mut framed = Vec::with_capacity(body.len() + 5);
            framed.push(0);
            framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
            framed.extend_from_slice(&body);
            send.send_data(Bytes::from(framed), true)
                .map_err(transport)?;
            let response = response.await.map_err(transport)?;
            let (head, mut body) = response.into_parts();
            let mut data = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(transport)?;
                let _ = body.flow_control().release_capacity(chunk.len());
                data.extend_from_slice(&chunk);
            }
            let trailers = body.trailers().await.map_err(transport)?;
            // A trailers-only answer carries the status in the headers.
            let status_of = |h: &http::HeaderMap| {
                h.get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u32>().ok())
                    .map(|code| {
                        let message = h
                            .get("grpc-message")
                            .and_then(|v| v.to_str().ok())
                            .map(percent_decode)
                            .unwrap_or_default();
                        (code, message)
                    })
            };
            let status = trailers
                .as_ref()
                .and_then(status_of)
                .or_else(|| status_of(&head.headers));
            match status {
                Some((0, _)) => {}
                Some((code, message)) => {
                    return Err(CriError::Status {
                        method,
                        code,
                        message,
                    })
                }
                None => return Err(CriError::Framing { method }),
            }
            if data.is_empty() {
                return Ok(Vec::new());
            }
            let (prefix, message) = data
                .split_at_checked(5)
                .ok_or(CriError::Framing { method })?;
            let len = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
            if prefix[0] != 0 || message.len() != len {
                return Err(CriError::Framing { method });
            }
            Ok(message.to_vec())
        }
        .await;
        driver.abort();
        result
    }
}

fn decode(method: &'static str) -> impl Fn(WireError) -> CriError {
    move |source| CriError::Decode { method, source }
}

fn pod_config(pod: &PodSpec<'_>) -> Message {
    // linux.security_context.namespace_options.network = NODE (2): the host network, so a
    // node without CNI can still run the pod.
    let namespaces = Message::new().uint(1, 2);
    let security = Message::new().message(1, namespaces);
    let linux = Message::new().message(2, security);
    Message::new()
        .message(
            1,
            Message::new()
                .string(1, pod.name)
                .string(2, pod.uid)
                .string(3, pod.namespace),
        )
        // No hostname (field 2): a host-network pod has the node's, as the kubelet does it.
        .string(3, &pod.log_directory.display().to_string())
        .message(8, linux)
}

/// gRPC percent-encodes `grpc-message`.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
