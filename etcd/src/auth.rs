//! etcd's authentication and role-based access, as the JSON gateway offers them.
//!
//! The gateway cannot authenticate by client-certificate common name (etcd refuses a gateway
//! request whose certificate has one once auth is on, and never maps it to a user: etcd PR
//! #10366), so a client names a user and password, trades them for a token
//! (`/v3/auth/authenticate`) and sends the token with every request. Tokens are etcd's
//! "simple" tokens: per member and expiring, so one is kept per endpoint and fetched again
//! when a member says it is no longer valid. Before auth is enabled a member answers
//! "authentication is not enabled" and requests go without a token.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::Deserialize;
use serde_json::json;

use crate::{EtcdClient, EtcdError};

/// A user and its password. The password is zeroed on drop and never printed.
#[derive(Clone)]
pub struct Credentials {
    pub user: String,
    password: Arc<zeroize::Zeroizing<String>>,
}

impl Credentials {
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        Credentials {
            user: user.into(),
            password: Arc::new(zeroize::Zeroizing::new(password.into())),
        }
    }
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// A client's credentials and the token each endpoint gave for them: `None` when the member
/// said auth is not enabled.
#[derive(Debug, Clone)]
pub(crate) struct Session {
    credentials: Credentials,
    tokens: Arc<Mutex<HashMap<String, Option<String>>>>,
}

impl Session {
    pub(crate) fn new(credentials: Credentials) -> Self {
        Session {
            credentials,
            tokens: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    pub(crate) fn forget(&self, endpoint: &str) {
        if let Ok(mut t) = self.tokens.lock() {
            t.remove(endpoint);
        }
    }
}

/// Whether an answer says the request's token (or its lack) was the problem: the client then
/// authenticates again and retries once.
pub(crate) fn is_token_refusal(body: &str) -> bool {
    body.contains("invalid auth token")
        || body.contains("user name is empty")
        || body.contains("auth token is not set")
}

#[derive(Deserialize)]
struct AuthenticateResponse {
    token: String,
}

/// etcd's permission types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    ReadWrite,
}

impl EtcdClient {
    /// The same client, authenticating as `credentials` on every member it talks to.
    pub fn with_credentials(mut self, credentials: Credentials) -> Self {
        self.session = Some(Session::new(credentials));
        self
    }

    /// The token to send to `endpoint`, authenticating first when none is kept.
    pub(crate) async fn token_for(&self, endpoint: &str) -> Result<Option<String>, EtcdError> {
        let Some(session) = &self.session else {
            return Ok(None);
        };
        if let Some(kept) = session
            .tokens
            .lock()
            .ok()
            .and_then(|t| t.get(endpoint).cloned())
        {
            return Ok(kept);
        }
        let body = json!({
            "name": session.credentials.user,
            "password": session.credentials.password.as_str(),
        })
        .to_string();
        let response = self
            .http
            .post(format!("{endpoint}/v3/auth/authenticate"))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(zeroize::Zeroizing::new(body).to_string())
            .send()
            .await
            .map_err(|source| EtcdError::Request {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let status = response.status();
        let bytes = response
            .bytes()
            .await
            .map_err(|source| EtcdError::Request {
                endpoint: endpoint.to_string(),
                source,
            })?;
        let token = if status.is_success() {
            let parsed: AuthenticateResponse =
                serde_json::from_slice(&bytes).map_err(|source| EtcdError::Answer {
                    endpoint: endpoint.to_string(),
                    source,
                })?;
            Some(parsed.token)
        } else {
            let text = String::from_utf8_lossy(&bytes);
            if !text.contains("authentication is not enabled") {
                return Err(EtcdError::Status {
                    endpoint: endpoint.to_string(),
                    status: status.as_u16(),
                    body: format!(
                        "authenticating as {}: {}",
                        session.credentials.user,
                        text.chars().take(200).collect::<String>()
                    ),
                });
            }
            None
        };
        if let Ok(mut t) = session.tokens.lock() {
            t.insert(endpoint.to_string(), token.clone());
        }
        Ok(token)
    }

    /// Adds `user` (with `password`, or none: a user only a client certificate's common name
    /// names, over gRPC). An existing user is left as it is.
    pub async fn user_add(&self, user: &str, password: Option<&str>) -> Result<(), EtcdError> {
        let body = match password {
            Some(p) => json!({ "name": user, "password": p }),
            None => json!({ "name": user, "options": { "no_password": true } }),
        };
        tolerate_exists(self.post("/v3/auth/user/add", body).await)
    }

    /// Sets `user`'s password (while auth is off, or as root).
    pub async fn user_change_password(&self, user: &str, password: &str) -> Result<(), EtcdError> {
        self.post(
            "/v3/auth/user/changepw",
            json!({ "name": user, "password": password }),
        )
        .await
        .map(drop)
    }

    pub async fn role_add(&self, role: &str) -> Result<(), EtcdError> {
        tolerate_exists(
            self.post("/v3/auth/role/add", json!({ "name": role }))
                .await,
        )
    }

    /// Grants `role` `permission` on every key under `prefix`.
    pub async fn role_grant_prefix(
        &self,
        role: &str,
        prefix: &str,
        permission: Permission,
    ) -> Result<(), EtcdError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let perm = match permission {
            Permission::Read => "READ",
            Permission::ReadWrite => "READWRITE",
        };
        self.post(
            "/v3/auth/role/grant",
            json!({ "name": role, "perm": {
                "permType": perm,
                "key": b64.encode(prefix),
                "range_end": b64.encode(crate::prefix_end(prefix)),
            }}),
        )
        .await
        .map(drop)
    }

    pub async fn user_grant_role(&self, user: &str, role: &str) -> Result<(), EtcdError> {
        self.post("/v3/auth/user/grant", json!({ "user": user, "role": role }))
            .await
            .map(drop)
    }

    /// Turns authentication on (a no-op when it is on).
    pub async fn auth_enable(&self) -> Result<(), EtcdError> {
        self.post("/v3/auth/enable", json!({})).await.map(drop)
    }

    /// Whether the member has authentication on: it refuses a request without a user.
    pub async fn auth_enabled(&self) -> Result<bool, EtcdError> {
        let response = self
            .http
            .post(format!("{}/v3/auth/user/list", self.endpoint))
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body("{}")
            .send()
            .await
            .map_err(|e| self.request_error(e))?;
        let ok = response.status().is_success();
        let body = response.text().await.map_err(|e| self.request_error(e))?;
        Ok(!ok && is_token_refusal(&body))
    }
}

fn tolerate_exists(result: Result<Vec<u8>, EtcdError>) -> Result<(), EtcdError> {
    match result {
        Ok(_) => Ok(()),
        Err(EtcdError::Status { body, .. }) if body.contains("already exists") => Ok(()),
        Err(e) => Err(e),
    }
}
