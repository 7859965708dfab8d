//! Connecting like a real NATS client, against nats-servers that demand it: a token, an nkey,
//! a credentials file (decentralized auth: operator, account and user JWTs), and TLS with
//! client certificates (a CA, a server and a client certificate made by rcgen).
//! Each is used by an in-process worker (the config's `[nats]` section) and by `mofa exec`
//! (the flags); a connection without the credential is refused.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use mofa_bus::connection::NatsAuth;
use mofa_bus::wire::Value;

/// `mofa exec echo 7` against `server`'s URL (as written in `url`) with `flags`.
fn exec(url: &str, flags: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_mofa"))
        .args(["exec", "echo", "7", "--timeout", "2s", "--nats", url])
        .args(flags)
        .env_remove("MOFA_NATS_TOKEN")
        .output()
        .expect("mofa runs")
}

/// A worker on `server` authenticating with `auth`.
async fn worker_with_auth(
    server: &NatsServer,
    url: String,
    auth: NatsAuth,
) -> mofa_bus::worker::Worker {
    let plugins = plugins_dir(&[]);
    let config = mofa_bus::config::WorkerConfig {
        nats_url: url,
        nats: auth,
        ..config(server, plugins.path())
    };
    worker(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token() {
    let server = NatsServer::start_with_conf("authorization { token: \"s3cret-token\" }");
    let worker = worker_with_auth(
        &server,
        server.url(),
        NatsAuth {
            token: Some("s3cret-token".into()),
            ..Default::default()
        },
    )
    .await;
    let ok = exec(&server.url(), &["--token", "s3cret-token"]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "7");
    let refused = exec(&server.url(), &[]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    worker.shutdown().await.expect("clean stop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nkey_seed_inline_or_in_a_file() {
    let user = nkeys::KeyPair::new_user();
    let seed = user.seed().expect("seed");
    let server = NatsServer::start_with_conf(&format!(
        "authorization {{ users: [ {{ nkey: {} }} ] }}",
        user.public_key()
    ));
    let worker = worker_with_auth(
        &server,
        server.url(),
        NatsAuth {
            nkey: Some(seed.clone()),
            ..Default::default()
        },
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("user.nk");
    std::fs::write(&file, format!("{seed}\n")).expect("seed file");
    let ok = exec(&server.url(), &["--nkey", file.to_str().expect("utf-8")]);
    assert!(ok.status.success(), "{ok:?}");
    let other = nkeys::KeyPair::new_user().seed().expect("seed");
    let refused = exec(&server.url(), &["--nkey", &other]);
    assert_eq!(
        refused.status.code(),
        Some(2),
        "an unknown key is refused: {refused:?}"
    );
    worker.shutdown().await.expect("clean stop");
}

/// A CA and, signed by it, a server certificate for 127.0.0.1 and a client certificate, as
/// PEM files in `dir`: ca.pem, server.pem, server.key, client.pem, client.key.
fn certificates(dir: &Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, CertifiedIssuer, ExtendedKeyUsagePurpose, IsCa,
        KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().expect("CA key")).expect("CA");
    std::fs::write(dir.join("ca.pem"), ca.pem()).expect("written");
    for (name, purpose, names) in [
        (
            "server",
            ExtendedKeyUsagePurpose::ServerAuth,
            vec!["127.0.0.1".to_string(), "localhost".to_string()],
        ),
        (
            "client",
            ExtendedKeyUsagePurpose::ClientAuth,
            vec!["mofa-client".to_string()],
        ),
    ] {
        let key = KeyPair::generate().expect("key");
        let mut params = CertificateParams::new(names).expect("params");
        params.extended_key_usages = vec![purpose];
        let cert = params.signed_by(&key, &ca).expect("signed");
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).expect("written");
        std::fs::write(dir.join(format!("{name}.key")), key.serialize_pem()).expect("written");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_a_client_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    certificates(dir.path());
    let path = |f: &str| dir.path().join(f).display().to_string();
    let server = NatsServer::start_with_conf(&format!(
        "tls {{ cert_file: {:?}, key_file: {:?}, ca_file: {:?}, verify: true }}",
        path("server.pem"),
        path("server.key"),
        path("ca.pem")
    ));
    let url = format!("tls://127.0.0.1:{}", server.port());
    let auth = NatsAuth {
        tls_ca: Some(path("ca.pem").into()),
        tls_cert: Some(path("client.pem").into()),
        tls_key: Some(path("client.key").into()),
        ..Default::default()
    };
    let worker = worker_with_auth(&server, url.clone(), auth.clone()).await;
    let ok = exec(
        &url,
        &[
            "--tls-ca",
            &path("ca.pem"),
            "--tls-cert",
            &path("client.pem"),
            "--tls-key",
            &path("client.key"),
        ],
    );
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "7");
    // The server verifies clients: the CA alone is not enough.
    let refused = exec(&url, &["--tls-ca", &path("ca.pem")]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    // And a client that does not trust the server's CA refuses it.
    let untrusted = exec(&url, &[]);
    assert_eq!(untrusted.status.code(), Some(2), "{untrusted:?}");

    // A missing certificate file is named before any connection is tried.
    let missing = exec(&url, &["--tls-ca", &path("nope.pem")]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("nope.pem"),
        "{missing:?}"
    );
    // The worker's own TLS connection answers (echo is served by it alone).
    let requests = auth
        .options()
        .await
        .expect("options")
        .connect(url.as_str())
        .await
        .expect("connects");
    assert_eq!(
        call(&requests, "echo", Value::from(3)).await.expect_value(),
        Value::from(3)
    );
    worker.shutdown().await.expect("clean stop");
}

/// A JWT of `claims` (whose `iss` is `issuer`), signed the way NATS signs them (ed25519 nkey).
fn jwt(issuer: &nkeys::KeyPair, mut claims: serde_json::Value) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    claims["iss"] = issuer.public_key().into();
    claims["iat"] = 1_700_000_000u64.into();
    claims["jti"] = nuid::next().to_string().into();
    let header = b64.encode(r#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    let body = b64.encode(claims.to_string());
    let signed = format!("{header}.{body}");
    let signature = issuer.sign(signed.as_bytes()).expect("signed");
    format!("{signed}.{}", b64.encode(signature))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credentials_file() {
    let operator = nkeys::KeyPair::new_operator();
    let account = nkeys::KeyPair::new_account();
    let user = nkeys::KeyPair::new_user();
    let operator_jwt = jwt(
        &operator,
        serde_json::json!({"name": "op", "sub": operator.public_key(),
            "nats": {"type": "operator", "version": 2}}),
    );
    let account_jwt = jwt(
        &operator,
        serde_json::json!({"name": "mofa", "sub": account.public_key(),
            "nats": {"type": "account", "version": 2,
                "limits": {"subs": -1, "data": -1, "payload": -1, "imports": -1,
                    "exports": -1, "wildcards": true, "conn": -1, "leaf": -1}}}),
    );
    let user_jwt = jwt(
        &account,
        serde_json::json!({"name": "worker", "sub": user.public_key(),
            "nats": {"type": "user", "version": 2, "pub": {}, "sub": {},
                "subs": -1, "data": -1, "payload": -1}}),
    );
    // JetStream (which the test servers run) needs a system account in operator mode.
    let system = nkeys::KeyPair::new_account();
    let system_jwt = jwt(
        &operator,
        serde_json::json!({"name": "SYS", "sub": system.public_key(),
            "nats": {"type": "account", "version": 2}}),
    );
    let server = NatsServer::start_with_conf(&format!(
        "operator: {operator_jwt}\nsystem_account: {sys}\nresolver: MEMORY\n\
         resolver_preload: {{ {acc}: {account_jwt}, {sys}: {system_jwt} }}",
        sys = system.public_key(),
        acc = account.public_key()
    ));
    let dir = tempfile::tempdir().expect("temp dir");
    let creds = dir.path().join("worker.creds");
    std::fs::write(
        &creds,
        format!(
            "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
             -----BEGIN USER NKEY SEED-----\n{}\n------END USER NKEY SEED------\n",
            user.seed().expect("seed")
        ),
    )
    .expect("creds written");
    let worker = worker_with_auth(
        &server,
        server.url(),
        NatsAuth {
            creds: Some(creds.clone()),
            ..Default::default()
        },
    )
    .await;
    let ok = exec(&server.url(), &["--creds", creds.to_str().expect("utf-8")]);
    assert!(ok.status.success(), "{ok:?}");
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "7");
    let refused = exec(&server.url(), &[]);
    assert_eq!(refused.status.code(), Some(2), "{refused:?}");
    let missing = exec(&server.url(), &["--creds", "/nonexistent/x.creds"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/nonexistent/x.creds"),
        "{missing:?}"
    );
    worker.shutdown().await.expect("clean stop");
}
