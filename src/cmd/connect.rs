//! How every verb reaches NATS: the connection flags (under their own heading in `--help`),
//! the server URL and where it came from, and connecting with errors that say which server
//! was asked and what to do.

use std::path::{Path, PathBuf};

use super::dev::{self, UrlOrigin};
use mofa_bus::config::{ReloadConfig, PRODUCTION};
use mofa_bus::distribution::Distribution;
use mofa_bus::subjects;

/// Where and how a command connects to NATS: the same flags on every verb, shown after the
/// verb's own options.
#[derive(clap::Args, Debug, Clone, Default)]
#[command(next_help_heading = "Connection")]
pub(crate) struct NatsArgs {
    /// NATS server URL, or several comma-separated (a cluster: the client reconnects to
    /// another when one goes down) [default: a live `mofa worker --dev` server, else
    /// nats://127.0.0.1:4222]
    #[arg(long, env = "MOFA_NATS_URL")]
    pub(crate) nats: Option<String>,
    /// Credentials file (user JWT and nkey seed, as `nsc` writes it).
    #[arg(long, env = "MOFA_NATS_CREDS")]
    pub(crate) creds: Option<PathBuf>,
    /// nkey seed (SU…), or a file holding it.
    #[arg(long, env = "MOFA_NATS_NKEY", hide_env_values = true)]
    pub(crate) nkey: Option<String>,
    /// User name (with --password).
    #[arg(long, env = "MOFA_NATS_USER")]
    pub(crate) user: Option<String>,
    /// Password of --user.
    #[arg(long, env = "MOFA_NATS_PASSWORD", hide_env_values = true)]
    pub(crate) password: Option<String>,
    /// Authentication token.
    #[arg(long, env = "MOFA_NATS_TOKEN", hide_env_values = true)]
    pub(crate) token: Option<String>,
    /// PEM file of the CA certificates that sign the server's certificate.
    #[arg(long, env = "MOFA_NATS_TLS_CA")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// PEM client certificate, for servers that verify clients (with --tls-key).
    #[arg(long, env = "MOFA_NATS_TLS_CERT")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, env = "MOFA_NATS_TLS_KEY")]
    pub(crate) tls_key: Option<PathBuf>,
    /// Require TLS even if the server does not ask for it.
    #[arg(long)]
    pub(crate) tls: bool,
    /// Start TLS before the server's greeting (servers with `handshake_first`).
    #[arg(long)]
    pub(crate) tls_first: bool,
    /// The environment: its own plugins bucket (mofa_plugins in production,
    /// mofa_plugins_<env> otherwise) and its own subjects (mofa.exec.<plugin> in production,
    /// mofa-<env>.exec.<plugin> otherwise) [default: production; for a worker, the config's
    /// reload.env]
    #[arg(long, env = "MOFA_ENV")]
    pub(crate) env: Option<String>,
}

impl NatsArgs {
    pub(crate) fn auth(&self) -> mofa_bus::connection::NatsAuth {
        warn_about_secrets_in_arguments();
        mofa_bus::connection::NatsAuth {
            creds: self.creds.clone(),
            nkey: self.nkey.clone(),
            user: self.user.clone(),
            password: self.password.clone(),
            token: self.token.clone(),
            tls_ca: self.tls_ca.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            tls_required: self.tls,
            tls_first: self.tls_first,
        }
    }

    /// The URL (or the `--dev` server's) with the credentials and the environment.
    pub(crate) fn resolve(&self) -> Nats {
        let (url, origin) = dev::resolve(self.nats.clone());
        Nats {
            origin: describe(&url, &origin),
            url,
            auth: self.auth(),
            env: self.env.clone().unwrap_or_else(|| PRODUCTION.to_string()),
        }
    }
}

/// Warns, once, about a secret given as a command-line argument: every user of the machine
/// can read a process's arguments (`ps`, `/proc/<pid>/cmdline`), unlike its environment.
fn warn_about_secrets_in_arguments() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let args: Vec<String> = std::env::args().collect();
        let value_of = |flag: &str| {
            args.iter().enumerate().find_map(|(at, arg)| {
                if arg == flag {
                    args.get(at + 1).cloned()
                } else {
                    arg.strip_prefix(&format!("{flag}=")).map(str::to_string)
                }
            })
        };
        let mut exposed = Vec::new();
        for (flag, env) in [
            ("--password", "MOFA_NATS_PASSWORD"),
            ("--token", "MOFA_NATS_TOKEN"),
        ] {
            if value_of(flag).is_some() {
                exposed.push(format!("{flag} (set ${env} instead)"));
            }
        }
        if value_of("--nkey").is_some_and(|v| v.starts_with("SU") && !Path::new(&v).exists()) {
            exposed.push("the --nkey seed (give the file holding it)".to_string());
        }
        if value_of("--sign").is_some_and(|v| v.starts_with("SU") && !Path::new(&v).exists()) {
            exposed.push("the --sign seed (give the file holding it)".to_string());
        }
        if value_of("--nats").is_some_and(|url| url_has_password(&url)) {
            exposed.push("the password in the --nats URL (set $MOFA_NATS_PASSWORD instead)".to_string());
        }
        if !exposed.is_empty() {
            eprintln!(
                "warning: secrets on the command line are visible to every user of this machine (ps): {}; or use --creds FILE",
                exposed.join(", ")
            );
        }
    });
}

/// Whether any of the comma-separated URLs carries `user:password@`.
fn url_has_password(urls: &str) -> bool {
    urls.split(',').any(|url| {
        url.split_once("://")
            .map_or(url, |(_, rest)| rest)
            .split_once('@')
            .is_some_and(|(credentials, _)| credentials.contains(':'))
    })
}

/// Where `url` came from, said for an error about its server.
pub(crate) fn describe(url: &str, origin: &UrlOrigin) -> String {
    match origin {
        UrlOrigin::Given => {
            let from_env = std::env::var("MOFA_NATS_URL").is_ok_and(|env| env == url)
                && !std::env::args().any(|a| a == "--nats" || a.starts_with("--nats="));
            if from_env {
                "from $MOFA_NATS_URL".to_string()
            } else {
                "from --nats".to_string()
            }
        }
        UrlOrigin::DevServer(file) => {
            format!("the `mofa worker --dev` server recorded in {}", file.display())
        }
        UrlOrigin::Default(file) => format!(
            "the default: no --nats, no $MOFA_NATS_URL, and no live `mofa worker --dev` server recorded in {}",
            file.display()
        ),
    }
}

/// A client command's connection settings, resolved.
pub(crate) struct Nats {
    pub(crate) url: String,
    /// Where the URL came from, for messages.
    pub(crate) origin: String,
    pub(crate) auth: mofa_bus::connection::NatsAuth,
    pub(crate) env: String,
}

impl Nats {
    /// The environment's subjects.
    pub(crate) fn namespace(&self) -> anyhow::Result<subjects::Namespace> {
        mofa_bus::config::validate_env(&self.env)?;
        Ok(subjects::Namespace::of(&self.env))
    }

    /// The environment's plugins bucket.
    pub(crate) async fn distribution(&self) -> anyhow::Result<Distribution> {
        let client = self.connect("mofa").await?;
        let config = ReloadConfig::default().in_env(&self.env)?;
        Ok(Distribution::open(client, &config).await?)
    }

    /// The server's URL as messages show it (no credentials).
    pub(crate) fn shown(&self) -> String {
        mofa_bus::connection::shown(&self.url)
    }

    /// Connects as `name` (shown by the server's monitoring). A failure says which server was
    /// asked, where its URL came from, why (once) and what to do.
    pub(crate) async fn connect(&self, name: &str) -> anyhow::Result<async_nats::Client> {
        let servers = mofa_bus::connection::servers(&self.url)?;
        let connected = self
            .auth
            .clone()
            .with_url_credentials(&self.url)
            .options()
            .await?
            .name(name)
            // A permission violation only times the operation out: say why on stderr.
            .event_callback(|event| async move {
                if let async_nats::Event::ServerError(e) = event {
                    eprintln!("warning: the NATS server reported: {e}");
                }
            })
            .connect(servers.as_slice())
            .await;
        connected.map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to NATS at {} ({}): {}; start a server with `mofa worker --dev`, or name one with --nats or $MOFA_NATS_URL",
                self.shown(),
                self.origin,
                mofa_bus::connection::cause(&e)
            )
        })
    }
}

/// How the commands that write the plugins buckets (`publish`, `watch`) connect, sign and
/// create them.
#[derive(clap::Args, Debug)]
pub(crate) struct BucketArgs {
    /// Sign the revisions with this nkey seed (`SU…`), or the seed in this file (see
    /// `mofa keygen`); workers with `reload.trusted_keys` load only signed revisions.
    #[arg(long, env = "MOFA_SIGNING_KEY", hide_env_values = true)]
    pub(crate) sign: Option<String>,
    /// Copies of the plugins buckets when this command creates them: 1 on a single
    /// server, 3 on a 3-node cluster (like the workers' reload.replicas).
    #[arg(long, env = "MOFA_BUCKET_REPLICAS", default_value_t = 1)]
    pub(crate) replicas: usize,
    #[command(flatten)]
    pub(crate) nats: NatsArgs,
}

impl BucketArgs {
    /// The buckets (created with `replicas` copies if missing), signing what it puts when
    /// `--sign` names a key.
    pub(crate) async fn open(&self) -> anyhow::Result<Distribution> {
        let key = self
            .sign
            .as_deref()
            .map(mofa_bus::distribution::signature::signing_key)
            .transpose()
            .map_err(anyhow::Error::msg)?;
        let nats = self.nats.resolve();
        let client = nats.connect("mofa").await?;
        let config = ReloadConfig {
            replicas: self.replicas,
            ..ReloadConfig::default()
        }
        .in_env(&nats.env)?;
        let mut distribution = Distribution::open(client, &config).await?;
        if let Some(key) = key {
            distribution.sign_with(key);
        }
        Ok(distribution)
    }
}
