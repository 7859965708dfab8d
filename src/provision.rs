//! Making the fleet's streams and buckets, once, with a credential that may.
//!
//! Every stream and bucket the fleet uses (the plugins buckets, the module object store, the
//! jobs and dead-letter streams, the results bucket) is made by an admin with `mofa setup`, so
//! the runtime roles need no stream administration: a worker, client or publisher only looks
//! a stream up (`$JS.API.STREAM.INFO`). Where one is missing, the connection tries to create it
//! (a development server, where every connection may); where that is refused, the error says to
//! run `mofa setup`. The permission check happens on the server, not here: this module only
//! tells "not there" from "not allowed" and says what to do.

use async_nats::jetstream::{self, context::GetStreamErrorKind, ErrorCode};
use serde::Serialize;

/// What `mofa setup` (or an open that may create) did about one stream or bucket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Provisioned {
    /// `stream`, `bucket`, `object store` or `consumer`.
    pub kind: &'static str,
    /// Its name (a bucket's, not its stream's).
    pub name: String,
    /// True when this call created it; false when it was there already (its settings kept).
    pub created: bool,
}

/// A stream or bucket that is missing and could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// Missing, and this connection may not (or could not) create it.
    #[error("{kind} {name} does not exist and this connection could not create it ({cause}): run `mofa setup` once with an admin credential (deploy/nats/permissions.conf), then start the workers")]
    Missing {
        /// `stream`, `bucket` or `object store`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// Why the creation failed (a permissions violation shows as a timeout).
        cause: String,
    },
    /// Looking it up failed (the server did not answer, or refused the lookup).
    #[error("cannot look up {kind} {name}: {cause}")]
    Lookup {
        /// `stream`, `bucket` or `object store`.
        kind: &'static str,
        /// Its name.
        name: String,
        /// What failed.
        cause: String,
    },
}

/// Whether stream `stream` exists.
pub(crate) async fn exists(js: &jetstream::Context, stream: &str) -> Result<bool, String> {
    match js.get_stream(stream).await {
        Ok(_) => Ok(true),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(error)
                if error.error_code() == ErrorCode::STREAM_NOT_FOUND =>
            {
                Ok(false)
            }
            _ => Err(e.to_string()),
        },
    }
}

/// Makes sure the stream behind `name` (`stream` is its JetStream name: `KV_<bucket>` for a
/// bucket) exists, running `create` when it does not. Another connection creating it at the
/// same time counts as found.
pub(crate) async fn ensure<F, Fut, E>(
    js: &jetstream::Context,
    kind: &'static str,
    name: &str,
    stream: &str,
    create: F,
) -> Result<Provisioned, ProvisionError>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = Result<(), E>>,
    E: std::fmt::Display,
{
    let found = |created| Provisioned {
        kind,
        name: name.to_string(),
        created,
    };
    let lookup = |cause| ProvisionError::Lookup {
        kind,
        name: name.to_string(),
        cause,
    };
    if exists(js, stream).await.map_err(lookup)? {
        return Ok(found(false));
    }
    match create().await {
        Ok(()) => Ok(found(true)),
        Err(e) => match exists(js, stream).await {
            Ok(true) => Ok(found(false)),
            _ => Err(ProvisionError::Missing {
                kind,
                name: name.to_string(),
                cause: e.to_string(),
            }),
        },
    }
}
