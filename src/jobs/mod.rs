//! Durable jobs: work that must not be lost, on JetStream beside request/reply.
//!
//! A request on `mofa.exec.<plugin>` lives only as long as its caller waits and the worker that
//! took it runs; a job survives both. A job is a MessagePack input published on
//! `mofa.jobs.<plugin>` into the work-queue stream `MOFA_JOBS`, where it stays until a worker
//! has stored its result. Every worker pulls a plugin's jobs through one shared durable
//! consumer (`jobs-<plugin>`), so jobs spread over the fleet and a job whose worker dies is
//! delivered again once `ack_wait_ms` passes. The worker acks only after the result is in the
//! results bucket (`mofa_results`, kept `result_ttl_s`) and published on
//! `mofa.results.<job-id>`; a transient failure is naked with a delay from `backoff_ms`, and
//! after `max_deliver` attempts, or at once on a permanent error, the job moves to the
//! dead-letter stream `MOFA_DLQ` (`mofa.dlq.<plugin>`) with its last error, from where it can
//! be replayed. Submissions with the same `Nats-Msg-Id` within `dedup_window_ms` are stored
//! once.
//!
//! The guarantee is at-least-once: a worker that dies after running a job but before its ack
//! reaches the server makes it run again. A plugin run as a job must tolerate that (make the
//! effect idempotent, keyed by the job id, which is the result event's `request_id`).
//!
//! This module is the shared part (names, configuration, the [`Jobs`] handle both the clients
//! and the worker use); the worker's consuming side is `worker::jobs`.

mod record;

use std::time::Duration;

use async_nats::jetstream::{self, consumer, kv, stream};
use async_nats::HeaderMap;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

pub use record::{retryable, DeadLetter, JobResult, JobState};

use crate::provision::{self, ProvisionError, Provisioned};
use crate::subjects;
use crate::wire::{self, Value};

/// The work-queue stream holding submitted jobs (`mofa.jobs.>`).
pub const JOBS_STREAM: &str = "MOFA_JOBS";
/// The stream holding dead-lettered jobs (`mofa.dlq.>`).
pub const DLQ_STREAM: &str = "MOFA_DLQ";
/// The Key-Value bucket holding each job's latest state, by job id.
pub const RESULTS_BUCKET: &str = "mofa_results";

/// Header naming the job (a submission's id; kept when a dead letter is replayed).
pub const HEADER_JOB_ID: &str = "Mofa-Job-Id";
/// JetStream's deduplication header; a submission sets it to the job id.
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Dead-letter header: deliveries made.
pub const HEADER_ATTEMPTS: &str = "Mofa-Attempts";
/// Dead-letter header: the worker that gave up.
pub const HEADER_WORKER: &str = "Mofa-Worker";
/// Dead-letter header: when it was dead-lettered (Unix milliseconds).
pub const HEADER_FAILED_MS: &str = "Mofa-Failed-Ms";

/// The durable consumer every worker shares for `plugin`'s jobs.
pub fn consumer_name(plugin: &str) -> String {
    format!("jobs-{plugin}")
}

/// The id of a job as delivered: its `Mofa-Job-Id` header, else its `Nats-Msg-Id`, else its
/// sequence in the jobs stream (a job published by a plain client with neither header).
pub fn job_id(headers: Option<&HeaderMap>, sequence: u64) -> String {
    headers
        .and_then(|h| h.get(HEADER_JOB_ID).or_else(|| h.get(HEADER_MSG_ID)))
        .map(|v| v.as_str().to_string())
        .unwrap_or_else(|| sequence.to_string())
}

/// How workers run durable jobs, and how the streams are made when a worker or client creates
/// them (an existing stream or bucket keeps its settings).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct JobsConfig {
    /// Consume `mofa.jobs.<plugin>` for every plugin served (needs JetStream).
    pub enabled: bool,
    /// Jobs of one plugin running at once on this worker (beside its requests); further jobs
    /// wait in the stream, not in the worker.
    pub concurrency: usize,
    /// How long a delivered job may go without an ack (or a progress signal, sent every half of
    /// this while it runs) before the server delivers it again, in milliseconds: how soon the
    /// jobs of a worker that died run elsewhere.
    pub ack_wait_ms: u64,
    /// Attempts before a job that keeps failing moves to the dead-letter stream.
    pub max_deliver: u32,
    /// Pause before attempt n + 1 after attempt n failed, in milliseconds; the last value
    /// repeats.
    pub backoff_ms: Vec<u64>,
    /// Window in which a second submission with the same `Nats-Msg-Id` is dropped, in
    /// milliseconds (set when the jobs stream is created).
    pub dedup_window_ms: u64,
    /// How long results stay in the results bucket, in seconds (set when it is created).
    pub result_ttl_s: u64,
    /// How long dead letters are kept, in seconds (set when the stream is created).
    pub dlq_max_age_s: u64,
    /// Copies of the jobs streams and the results bucket when a worker creates them: 1 on a
    /// single server, 3 on a 3-node cluster.
    pub replicas: usize,
}

impl Default for JobsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            concurrency: 64,
            ack_wait_ms: 30_000,
            max_deliver: 5,
            backoff_ms: vec![1_000, 5_000, 30_000],
            dedup_window_ms: 120_000,
            result_ttl_s: 86_400,
            dlq_max_age_s: 7 * 86_400,
            replicas: 1,
        }
    }
}

impl JobsConfig {
    /// Checks the values a worker cannot run with.
    pub fn validate(&self) -> Result<(), String> {
        if self.concurrency == 0 || self.max_deliver == 0 {
            return Err("jobs.concurrency and jobs.max_deliver must be at least 1".into());
        }
        if !(1..=5).contains(&self.replicas) {
            return Err(format!(
                "jobs.replicas is {}: JetStream keeps 1 to 5 copies of a stream (1 on a single server, 3 on a 3-node cluster)",
                self.replicas
            ));
        }
        if self.ack_wait_ms < 100 {
            return Err("jobs.ack_wait_ms must be at least 100".into());
        }
        if self.dedup_window_ms == 0 || self.result_ttl_s == 0 || self.dlq_max_age_s == 0 {
            return Err(
                "jobs.dedup_window_ms, jobs.result_ttl_s and jobs.dlq_max_age_s must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    /// The pause before the attempt after attempt `attempt` (1-based) failed.
    pub fn backoff(&self, attempt: u64) -> Duration {
        let index = usize::try_from(attempt.saturating_sub(1)).unwrap_or(usize::MAX);
        let ms = self
            .backoff_ms
            .get(index)
            .or(self.backoff_ms.last())
            .copied()
            .unwrap_or(0);
        Duration::from_millis(ms)
    }
}

/// Why a jobs operation failed.
#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    /// A stream or the results bucket cannot be opened or created.
    #[error("JetStream {what}: {message} (durable jobs need nats-server 2.10 or newer running with JetStream, `nats-server -js`, or `mofa worker --dev`)")]
    Unavailable {
        /// Which stream or bucket.
        what: String,
        /// What failed.
        message: String,
    },
    /// A job id or plugin name that cannot be a subject token.
    #[error("invalid job id {0:?}: ids may only contain A-Z, a-z, 0-9, '_' and '-' (1 to 128 characters)")]
    InvalidId(String),
    /// No dead letter at that sequence.
    #[error("no dead letter at sequence {0} in {DLQ_STREAM} (see `mofa dlq`)")]
    NoDeadLetter(u64),
    /// A stream or bucket operation failed.
    #[error("{0}")]
    Operation(String),
    /// The server cannot hold the streams (too old, or JetStream off): which, and the fix.
    #[error("{0}")]
    Server(String),
    /// A stream or the results bucket is missing and this credential may not create it.
    #[error(transparent)]
    Provision(#[from] ProvisionError),
}

fn op(context: &'static str) -> impl Fn(String) -> JobsError {
    move |e| JobsError::Operation(format!("{context}: {e}"))
}

/// What a submission did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Submitted {
    /// The job id (given, or generated).
    pub job: String,
    /// The plugin.
    pub plugin: String,
    /// Sequence in the jobs stream.
    pub sequence: u64,
    /// True when a job with this id was already submitted within the dedup window: nothing
    /// new was stored and it will not run twice.
    pub duplicate: bool,
}

/// The jobs stream, the dead-letter stream and the results bucket of one NATS connection.
#[derive(Clone)]
pub struct Jobs {
    js: jetstream::Context,
    client: async_nats::Client,
    results: kv::Store,
    config: JobsConfig,
}

impl std::fmt::Debug for Jobs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jobs")
            .field("config", &self.config)
            .finish()
    }
}

impl Jobs {
    /// Opens both streams and the results bucket, creating what does not exist yet with
    /// `config`'s settings where this connection may (see [`crate::provision`]).
    pub async fn open(client: async_nats::Client, config: &JobsConfig) -> Result<Jobs, JobsError> {
        Ok(Self::provision(client, config).await?.0)
    }

    /// [`Jobs::open`], saying for each stream and bucket whether it was created or found
    /// (`mofa setup`).
    pub async fn provision(
        client: async_nats::Client,
        config: &JobsConfig,
    ) -> Result<(Jobs, Vec<Provisioned>), JobsError> {
        crate::connection::require_jetstream(&client, "durable jobs").map_err(JobsError::Server)?;
        let js = jetstream::new(client.clone());
        let jobs = stream::Config {
            name: JOBS_STREAM.into(),
            description: Some("mofa-bus durable jobs: one subject per plugin, mofa.jobs.<plugin>; removed once run".into()),
            subjects: vec![format!("{}.>", subjects::JOBS_PREFIX)],
            retention: stream::RetentionPolicy::WorkQueue,
            storage: stream::StorageType::File,
            duplicate_window: Duration::from_millis(config.dedup_window_ms),
            num_replicas: config.replicas,
            ..Default::default()
        };
        let dlq = stream::Config {
            name: DLQ_STREAM.into(),
            description: Some(
                "mofa-bus dead-lettered jobs, mofa.dlq.<plugin>, with their last error".into(),
            ),
            subjects: vec![format!("{}.>", subjects::DLQ_PREFIX)],
            storage: stream::StorageType::File,
            max_age: Duration::from_secs(config.dlq_max_age_s),
            num_replicas: config.replicas,
            ..Default::default()
        };
        let results = kv::Config {
            bucket: RESULTS_BUCKET.into(),
            description: "mofa-bus job results and states, by job id".into(),
            history: 1,
            max_age: Duration::from_secs(config.result_ttl_s),
            num_replicas: config.replicas,
            storage: stream::StorageType::File,
            ..Default::default()
        };
        let mut done = Vec::new();
        for config in [jobs, dlq] {
            let name = config.name.clone();
            done.push(
                provision::ensure(&js, "stream", &name, &name, || async {
                    js.create_stream(config).await.map(|_| ())
                })
                .await?,
            );
        }
        let stream = format!("KV_{RESULTS_BUCKET}");
        done.push(
            provision::ensure(&js, "bucket", RESULTS_BUCKET, &stream, || async {
                js.create_key_value(results).await.map(|_| ())
            })
            .await?,
        );
        let results =
            js.get_key_value(RESULTS_BUCKET)
                .await
                .map_err(|e| JobsError::Unavailable {
                    what: format!("bucket {RESULTS_BUCKET}"),
                    message: e.to_string(),
                })?;
        let jobs = Jobs {
            js,
            client,
            results,
            config: config.clone(),
        };
        Ok((jobs, done))
    }

    /// The configuration this handle was opened with.
    pub fn config(&self) -> &JobsConfig {
        &self.config
    }

    /// Submits `input` as a job of `plugin`, with id `id` (generated when `None`). A second
    /// submission of the same id within the dedup window is not stored again
    /// ([`Submitted::duplicate`]).
    pub async fn submit(
        &self,
        plugin: &str,
        input: &Value,
        id: Option<&str>,
    ) -> Result<Submitted, JobsError> {
        subjects::validate_name(plugin).map_err(|e| JobsError::Operation(e.to_string()))?;
        let job = match id {
            Some(id) if subjects::is_token(id) => id.to_string(),
            Some(id) => return Err(JobsError::InvalidId(id.to_string())),
            None => nuid::next().as_str().to_string(),
        };
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_JOB_ID, job.as_str());
        headers.insert(HEADER_MSG_ID, job.as_str());
        self.enqueue(plugin, &job, headers, wire::encode(input))
            .await
    }

    async fn enqueue(
        &self,
        plugin: &str,
        job: &str,
        headers: HeaderMap,
        payload: bytes::Bytes,
    ) -> Result<Submitted, JobsError> {
        let ack = self
            .js
            .publish_with_headers(subjects::jobs(plugin), headers, payload)
            .await
            .map_err(|e| op("submitting the job")(e.to_string()))?
            .await
            .map_err(|e| op("submitting the job")(e.to_string()))?;
        Ok(Submitted {
            job: job.to_string(),
            plugin: plugin.to_string(),
            sequence: ack.sequence,
            duplicate: ack.duplicate,
        })
    }

    /// The latest state of job `id`, if the results bucket has one (results expire after
    /// `result_ttl_s`).
    pub async fn result(&self, id: &str) -> Result<Option<JobResult>, JobsError> {
        if !subjects::is_token(id) {
            return Err(JobsError::InvalidId(id.to_string()));
        }
        match self.results.get(id).await {
            Ok(Some(bytes)) => JobResult::decode(&bytes)
                .map(Some)
                .map_err(op("reading the result")),
            Ok(None) => Ok(None),
            Err(e) => Err(op("reading the result")(e.to_string())),
        }
    }

    /// Waits up to `timeout` for job `id` to reach a final state; returns its latest state
    /// either way (`None`: nothing stored for it).
    pub async fn wait(&self, id: &str, timeout: Duration) -> Result<Option<JobResult>, JobsError> {
        self.wait_until(id, None, timeout).await
    }

    /// Waits up to `timeout` for the final state of the job `submitted` made (not a state left
    /// by an earlier submission of the same id); returns its latest state either way.
    pub async fn wait_for(
        &self,
        submitted: &Submitted,
        timeout: Duration,
    ) -> Result<Option<JobResult>, JobsError> {
        self.wait_until(&submitted.job, Some(submitted.sequence), timeout)
            .await
    }

    async fn wait_until(
        &self,
        id: &str,
        sequence: Option<u64>,
        timeout: Duration,
    ) -> Result<Option<JobResult>, JobsError> {
        if !subjects::is_token(id) {
            return Err(JobsError::InvalidId(id.to_string()));
        }
        let is_final =
            |r: &JobResult| r.state.is_final() && sequence.is_none_or(|s| r.sequence == Some(s));
        // Subscribed before reading the bucket: a result stored after the read is published
        // after the subscription, so it cannot slip between the two.
        let mut published = self
            .client
            .subscribe(subjects::results(id))
            .await
            .map_err(|e| op("subscribing to the result")(e.to_string()))?;
        let latest = self.result(id).await?;
        if latest.as_ref().is_some_and(is_final) {
            return Ok(latest);
        }
        let deadline = tokio::time::Instant::now() + timeout;
        while let Ok(Some(message)) = tokio::time::timeout_at(deadline, published.next()).await {
            if let Ok(result) = JobResult::decode(&message.payload) {
                if is_final(&result) {
                    return Ok(Some(result));
                }
            }
        }
        self.result(id).await
    }

    /// Stores `result` as the job's latest state; a final state is also published on
    /// `mofa.results.<job-id>`.
    pub async fn store(&self, result: &JobResult) -> Result<(), JobsError> {
        let bytes = result.encode().map_err(op("encoding the result"))?;
        self.results
            .put(&result.job, bytes.clone())
            .await
            .map_err(|e| op("storing the result")(e.to_string()))?;
        if result.state.is_final() {
            self.publish_encoded(&result.job, bytes).await?;
        }
        Ok(())
    }

    /// Publishes `result` on `mofa.results.<job-id>` (again: it is already stored).
    pub(crate) async fn publish(&self, result: &JobResult) -> Result<(), JobsError> {
        let bytes = result.encode().map_err(op("encoding the result"))?;
        self.publish_encoded(&result.job, bytes).await
    }

    async fn publish_encoded(&self, job: &str, bytes: bytes::Bytes) -> Result<(), JobsError> {
        self.client
            .publish(subjects::results(job), bytes)
            .await
            .map_err(|e| op("publishing the result")(e.to_string()))
    }

    /// Whether any worker has ever consumed `plugin`'s jobs (its durable consumer exists). A
    /// job of a plugin no worker consumes waits in the stream until one does.
    pub async fn consumed(&self, plugin: &str) -> Result<bool, JobsError> {
        let stream = self
            .js
            .get_stream(JOBS_STREAM)
            .await
            .map_err(|e| op("opening the jobs stream")(e.to_string()))?;
        Ok(stream.consumer_info(consumer_name(plugin)).await.is_ok())
    }

    /// The durable consumer of `plugin`'s jobs, created (or brought to this configuration).
    pub(crate) async fn consumer(&self, plugin: &str) -> Result<consumer::PullConsumer, JobsError> {
        let stream = self
            .js
            .get_stream(JOBS_STREAM)
            .await
            .map_err(|e| op("opening the jobs stream")(e.to_string()))?;
        stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(consumer_name(plugin)),
                description: Some(format!("mofa-bus workers running {plugin}'s jobs")),
                filter_subject: subjects::jobs(plugin),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(self.config.ack_wait_ms),
                // One delivery more than the attempts: the worker that gets it dead-letters a
                // job whose last attempt was lost (its worker died) instead of running it.
                max_deliver: i64::from(self.config.max_deliver) + 1,
                // Each worker bounds its own jobs in flight (`concurrency`).
                max_ack_pending: -1,
                ..Default::default()
            })
            .await
            .map_err(|e| op("creating the jobs consumer")(e.to_string()))
    }

    /// Makes (or brings to this configuration) the durable consumer of `plugin`'s jobs, saying
    /// whether it existed (`mofa setup`, for the plugins already published).
    pub async fn provision_consumer(&self, plugin: &str) -> Result<Provisioned, JobsError> {
        subjects::validate_name(plugin).map_err(|e| JobsError::Operation(e.to_string()))?;
        let existed = self.consumed(plugin).await?;
        self.consumer(plugin).await?;
        Ok(Provisioned {
            kind: "consumer",
            name: format!("{JOBS_STREAM}/{}", consumer_name(plugin)),
            created: !existed,
        })
    }

    /// Moves a job to the dead-letter stream with its last error; returns its sequence there.
    /// `jobs_sequence` (its sequence in the jobs stream) makes a repeated move a duplicate.
    pub(crate) async fn dead_letter(
        &self,
        letter: &DeadLetter,
        payload: bytes::Bytes,
        jobs_sequence: u64,
    ) -> Result<u64, JobsError> {
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_JOB_ID, letter.job.as_str());
        headers.insert(HEADER_MSG_ID, format!("dlq-{jobs_sequence}").as_str());
        headers.insert(
            wire::HEADER_ERROR,
            wire::header_safe(&letter.error).as_str(),
        );
        headers.insert(wire::HEADER_ERROR_CODE, letter.code.to_string().as_str());
        headers.insert(HEADER_ATTEMPTS, letter.attempts.to_string().as_str());
        headers.insert(HEADER_WORKER, letter.worker.as_str());
        headers.insert(HEADER_FAILED_MS, letter.timestamp_ms.to_string().as_str());
        let ack = self
            .js
            .publish_with_headers(subjects::dlq(&letter.plugin), headers, payload)
            .await
            .map_err(|e| op("dead-lettering the job")(e.to_string()))?
            .await
            .map_err(|e| op("dead-lettering the job")(e.to_string()))?;
        Ok(ack.sequence)
    }

    /// The dead letters of `plugin` (all plugins: `None`), oldest first.
    pub async fn dead_letters(&self, plugin: Option<&str>) -> Result<Vec<DeadLetter>, JobsError> {
        let filter = match plugin {
            Some(plugin) => {
                subjects::validate_name(plugin).map_err(|e| JobsError::Operation(e.to_string()))?;
                subjects::dlq(plugin)
            }
            None => format!("{}.>", subjects::DLQ_PREFIX),
        };
        let stream = self
            .js
            .get_stream(DLQ_STREAM)
            .await
            .map_err(|e| op("opening the dead-letter stream")(e.to_string()))?;
        let reader = stream
            .create_consumer(consumer::pull::OrderedConfig {
                filter_subject: filter,
                deliver_policy: consumer::DeliverPolicy::All,
                ..Default::default()
            })
            .await
            .map_err(|e| op("reading the dead-letter stream")(e.to_string()))?;
        let mut letters = Vec::new();
        if reader.cached_info().num_pending == 0 {
            return Ok(letters);
        }
        let mut messages = reader
            .messages()
            .await
            .map_err(|e| op("reading the dead-letter stream")(e.to_string()))?;
        while let Some(message) = messages.next().await {
            let message =
                message.map_err(|e| op("reading the dead-letter stream")(e.to_string()))?;
            let info = message
                .info()
                .map_err(|e| op("reading the dead-letter stream")(e.to_string()))?;
            let (sequence, pending) = (info.stream_sequence, info.pending);
            letters.push(dead_letter_from(
                sequence,
                message.subject.as_str(),
                message.headers.as_ref(),
                &message.payload,
            ));
            if pending == 0 {
                break;
            }
        }
        Ok(letters)
    }

    /// Submits the dead letter at `sequence` again under its job id (a fresh submission, not
    /// deduplicated against the first) and removes it from the dead-letter stream.
    pub async fn replay(&self, sequence: u64) -> Result<Submitted, JobsError> {
        let stream = self
            .js
            .get_stream(DLQ_STREAM)
            .await
            .map_err(|e| op("opening the dead-letter stream")(e.to_string()))?;
        let message = stream
            .get_raw_message(sequence)
            .await
            .map_err(|_| JobsError::NoDeadLetter(sequence))?;
        let letter = dead_letter_from(
            sequence,
            message.subject.as_str(),
            Some(&message.headers),
            &message.payload,
        );
        let mut headers = HeaderMap::new();
        headers.insert(HEADER_JOB_ID, letter.job.as_str());
        headers.insert(
            HEADER_MSG_ID,
            format!("{}-replay-{sequence}", letter.job).as_str(),
        );
        let submitted = self
            .enqueue(&letter.plugin, &letter.job, headers, message.payload)
            .await?;
        stream
            .delete_message(sequence)
            .await
            .map_err(|e| op("removing the replayed dead letter")(e.to_string()))?;
        Ok(submitted)
    }
}

/// A dead letter as stored: the plugin from its subject, the rest from its headers.
fn dead_letter_from(
    sequence: u64,
    subject: &str,
    headers: Option<&HeaderMap>,
    payload: &[u8],
) -> DeadLetter {
    let header = |name: &str| {
        headers
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
            .unwrap_or_default()
    };
    let number = |name: &str| header(name).parse::<u64>().unwrap_or(0);
    DeadLetter {
        sequence,
        plugin: subject
            .strip_prefix(subjects::DLQ_PREFIX)
            .and_then(|s| s.strip_prefix('.'))
            .unwrap_or(subject)
            .to_string(),
        job: header(HEADER_JOB_ID),
        code: u16::try_from(number(wire::HEADER_ERROR_CODE)).unwrap_or(500),
        error: header(wire::HEADER_ERROR),
        attempts: number(HEADER_ATTEMPTS),
        worker: header(HEADER_WORKER),
        input: wire::decode(payload).unwrap_or_else(|_| Value::Binary(payload.to_vec())),
        timestamp_ms: number(HEADER_FAILED_MS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_repeats_its_last_value() {
        let config = JobsConfig {
            backoff_ms: vec![10, 20],
            ..JobsConfig::default()
        };
        assert_eq!(config.backoff(1), Duration::from_millis(10));
        assert_eq!(config.backoff(2), Duration::from_millis(20));
        assert_eq!(config.backoff(9), Duration::from_millis(20));
        let none = JobsConfig {
            backoff_ms: vec![],
            ..JobsConfig::default()
        };
        assert_eq!(none.backoff(1), Duration::ZERO);
    }

    #[test]
    fn only_transient_errors_are_retried() {
        use crate::wire::ErrorCode;
        assert!(retryable(ErrorCode::Timeout));
        assert!(retryable(ErrorCode::Unavailable));
        assert!(retryable(ErrorCode::Internal));
        assert!(!retryable(ErrorCode::BadRequest));
        assert!(!retryable(ErrorCode::LimitExceeded));
    }
}
