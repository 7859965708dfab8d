//! How every part of mofa connects to NATS: one or several server URLs (the client reconnects
//! across them) and the credentials and TLS settings a production server asks for.
//!
//! The worker reads these from its config file's `[nats]` section; every CLI verb takes the
//! same settings as flags (`--creds`, `--nkey`, `--user`/`--password`, `--token`, `--tls-ca`,
//! `--tls-cert`/`--tls-key`, `--tls-first`) or environment variables (`MOFA_NATS_CREDS`, …), so
//! a client, a publisher and a monitor each connect with their own least-privilege user.

use std::path::{Path, PathBuf};

use async_nats::{ConnectOptions, ServerAddr};
use serde::{Deserialize, Serialize};

/// Credentials and TLS for the NATS connection. Every field is optional; at most one way to
/// authenticate (creds file, nkey seed, user and password, token) may be set. Its `Debug`
/// shows which secrets are set, never their values.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsAuth {
    /// A `.creds` file (a user JWT and its nkey seed, as `nsc` writes them).
    pub creds: Option<PathBuf>,
    /// An nkey seed (`SU…`), or a file holding one.
    pub nkey: Option<String>,
    /// User name; needs `password`.
    pub user: Option<String>,
    /// Password for `user`.
    pub password: Option<String>,
    /// Authentication token.
    pub token: Option<String>,
    /// PEM file of the CA certificates that sign the server's certificate.
    pub tls_ca: Option<PathBuf>,
    /// PEM client certificate (mutual TLS); needs `tls_key`.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Require TLS even when the server does not ask for it.
    pub tls_required: bool,
    /// Start TLS before the server's INFO (servers with `handshake_first`).
    pub tls_first: bool,
}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let hidden = |secret: &Option<String>| secret.as_ref().map(|_| "<hidden>");
        let nkey = self.nkey.as_ref().map(|nkey| {
            if nkey.starts_with("SU") {
                "<hidden seed>".to_string()
            } else {
                nkey.clone()
            }
        });
        f.debug_struct("NatsAuth")
            .field("creds", &self.creds)
            .field("nkey", &nkey)
            .field("user", &self.user)
            .field("password", &hidden(&self.password))
            .field("token", &hidden(&self.token))
            .field("tls_ca", &self.tls_ca)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("tls_required", &self.tls_required)
            .field("tls_first", &self.tls_first)
            .finish()
    }
}

/// A connection setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// A server URL does not parse.
    #[error("NATS server URL {url:?} is invalid: {reason} (nats_url / --nats takes nats://HOST:PORT, tls://HOST:PORT or a comma-separated list)")]
    Url {
        /// The URL.
        url: String,
        /// Why.
        reason: String,
    },
    /// Two ways to authenticate, or half of one.
    #[error("NATS credentials: {0}")]
    Auth(String),
    /// A credentials, key or certificate file cannot be read.
    #[error("NATS credentials: cannot read {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// The server addresses in `urls`, a comma-separated list (blanks around commas ignored).
pub fn servers(urls: &str) -> Result<Vec<ServerAddr>, ConnectionError> {
    let addrs: Vec<ServerAddr> = urls
        .split(',')
        .map(str::trim)
        .filter(|url| !url.is_empty())
        .map(|url| {
            url.parse::<ServerAddr>().map_err(|e| ConnectionError::Url {
                url: url.to_string(),
                reason: e.to_string(),
            })
        })
        .collect::<Result<_, _>>()?;
    if addrs.is_empty() {
        return Err(ConnectionError::Url {
            url: urls.to_string(),
            reason: "no server given".into(),
        });
    }
    Ok(addrs)
}

impl NatsAuth {
    /// These settings, with the `user:password@` of a server URL in `urls` as the user and
    /// password when no other credential is set. (The NATS client does not read credentials
    /// from a URL; a URL that carries them would otherwise connect anonymously.)
    pub fn with_url_credentials(mut self, urls: &str) -> NatsAuth {
        let unset = self.creds.is_none()
            && self.nkey.is_none()
            && self.user.is_none()
            && self.password.is_none()
            && self.token.is_none();
        if !unset {
            return self;
        }
        let credentials = urls.split(',').find_map(|url| {
            let addr = url.trim().parse::<ServerAddr>().ok()?;
            Some((addr.username()?.to_string(), addr.password()?.to_string()))
        });
        if let Some((user, password)) = credentials {
            self.user = Some(user);
            self.password = Some(password);
        }
        self
    }

    /// Whether anything is set (a plain anonymous connection otherwise).
    pub fn is_empty(&self) -> bool {
        self == &NatsAuth::default()
    }

    /// Fills every field that is unset here from `other` (flags over a config file).
    pub fn or(self, other: &NatsAuth) -> NatsAuth {
        NatsAuth {
            creds: self.creds.or_else(|| other.creds.clone()),
            nkey: self.nkey.or_else(|| other.nkey.clone()),
            user: self.user.or_else(|| other.user.clone()),
            password: self.password.or_else(|| other.password.clone()),
            token: self.token.or_else(|| other.token.clone()),
            tls_ca: self.tls_ca.or_else(|| other.tls_ca.clone()),
            tls_cert: self.tls_cert.or_else(|| other.tls_cert.clone()),
            tls_key: self.tls_key.or_else(|| other.tls_key.clone()),
            tls_required: self.tls_required || other.tls_required,
            tls_first: self.tls_first || other.tls_first,
        }
    }

    /// Checks the combination without touching files.
    pub fn validate(&self) -> Result<(), ConnectionError> {
        let ways = [
            self.creds.is_some(),
            self.nkey.is_some(),
            self.user.is_some() || self.password.is_some(),
            self.token.is_some(),
        ];
        if ways.iter().filter(|set| **set).count() > 1 {
            return Err(ConnectionError::Auth(
                "set one of creds, nkey, user/password and token, not several".into(),
            ));
        }
        if self.user.is_some() != self.password.is_some() {
            return Err(ConnectionError::Auth(
                "user and password go together: set both (--user/--password, MOFA_NATS_USER/MOFA_NATS_PASSWORD)".into(),
            ));
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return Err(ConnectionError::Auth(
                "a TLS client certificate needs its key: set both tls_cert and tls_key (--tls-cert/--tls-key)".into(),
            ));
        }
        Ok(())
    }

    /// Connect options carrying these settings (the caller adds its name, callbacks, capacity).
    pub async fn options(&self) -> Result<ConnectOptions, ConnectionError> {
        self.validate()?;
        let mut options = match &self.creds {
            Some(path) => ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|source| ConnectionError::File {
                    path: path.clone(),
                    source,
                })?,
            None => ConnectOptions::new(),
        };
        if let Some(nkey) = &self.nkey {
            options = options.nkey(read_secret(nkey)?);
        }
        if let (Some(user), Some(password)) = (&self.user, &self.password) {
            options = options.user_and_password(user.clone(), password.clone());
        }
        if let Some(token) = &self.token {
            options = options.token(token.clone());
        }
        if let Some(ca) = &self.tls_ca {
            readable(ca)?;
            options = options.add_root_certificates(ca.clone());
        }
        if let (Some(cert), Some(key)) = (&self.tls_cert, &self.tls_key) {
            readable(cert)?;
            readable(key)?;
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.tls_required {
            options = options.require_tls(true);
        }
        if self.tls_first {
            options = options.tls_first();
        }
        Ok(options)
    }
}

/// An nkey seed given inline (`S…`), or the first seed line of the file it names.
fn read_secret(value: &str) -> Result<String, ConnectionError> {
    let value = value.trim();
    if value.starts_with('S') && !Path::new(value).exists() {
        return Ok(value.to_string());
    }
    let text = std::fs::read_to_string(value).map_err(|source| ConnectionError::File {
        path: PathBuf::from(value),
        source,
    })?;
    text.lines()
        .map(str::trim)
        .find(|line| line.starts_with('S'))
        .map(str::to_string)
        .ok_or_else(|| {
            ConnectionError::Auth(format!(
                "{value} holds no nkey seed (a line starting with S)"
            ))
        })
}

/// Fails early, with the path, on a file the TLS setup would only reject at connect time.
fn readable(path: &Path) -> Result<(), ConnectionError> {
    std::fs::metadata(path)
        .map(|_| ())
        .map_err(|source| ConnectionError::File {
            path: path.to_path_buf(),
            source,
        })
}

/// Why a connection failed, said once: the innermost cause of `error` (async-nats wraps an
/// I/O error and repeats it in its own message).
pub fn cause(error: &(dyn std::error::Error + 'static)) -> String {
    let mut last = error;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// A server URL (or comma-separated list) as messages show it: without a user name or
/// password written into it.
pub fn shown(urls: &str) -> String {
    urls.split(',')
        .map(|url| {
            let url = url.trim();
            let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
            let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
            if scheme.is_empty() {
                rest.to_string()
            } else {
                format!("{scheme}://{rest}")
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Checks that the server `client` is connected to can serve `what` (hot reload, durable
/// jobs): nats-server 2.10 or newer (the JetStream Key-Value API) with JetStream on. Otherwise
/// the one sentence a user needs: which server, its version, and the fix.
pub fn require_jetstream(client: &async_nats::Client, what: &str) -> Result<(), String> {
    let info = client.server_info();
    let server = format!("the NATS server at {}:{}", info.host, info.port);
    let fix = "start `mofa worker --dev` (it runs a current server that every mofa command then \
               finds), or run nats-server 2.10 or newer with `-js`";
    let version = crate::nats_server::Version::parse(&info.version);
    if !version.is_some_and(crate::nats_server::Version::has_kv) {
        return Err(format!(
            "{server} is nats-server {}, older than the 2.10 {what} needs: {fix}",
            info.version
        ));
    }
    if !info.jetstream {
        return Err(format!(
            "{server} (nats-server {}) runs without JetStream, which {what} needs: {fix}",
            info.version
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_comma_list_is_every_server() {
        let addrs = servers("nats://127.0.0.1:4222, nats://127.0.0.1:4223,").expect("parses");
        assert_eq!(addrs.len(), 2);
        assert_eq!(addrs[1].port(), 4223);
        assert!(matches!(servers(" , "), Err(ConnectionError::Url { .. })));
    }

    #[test]
    fn one_way_to_authenticate_and_whole() {
        let both = NatsAuth {
            token: Some("t".into()),
            user: Some("u".into()),
            password: Some("p".into()),
            ..Default::default()
        };
        assert!(both
            .validate()
            .unwrap_err()
            .to_string()
            .contains("not several"));
        let half = NatsAuth {
            user: Some("u".into()),
            ..Default::default()
        };
        assert!(half
            .validate()
            .unwrap_err()
            .to_string()
            .contains("go together"));
        let key = NatsAuth {
            tls_cert: Some("c.pem".into()),
            ..Default::default()
        };
        assert!(key
            .validate()
            .unwrap_err()
            .to_string()
            .contains("needs its key"));
    }

    #[test]
    fn flags_fill_over_the_file() {
        let file = NatsAuth {
            creds: Some("/etc/mofa/worker.creds".into()),
            tls_ca: Some("/etc/mofa/ca.pem".into()),
            ..Default::default()
        };
        let flags = NatsAuth {
            tls_ca: Some("ca.pem".into()),
            ..Default::default()
        };
        let merged = flags.or(&file);
        assert_eq!(merged.tls_ca, Some("ca.pem".into()));
        assert_eq!(merged.creds, Some("/etc/mofa/worker.creds".into()));
    }
}
