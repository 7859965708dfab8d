//! The worker's side of durable jobs (see [`crate::jobs`]): for each plugin it serves, one task
//! pulls the plugin's jobs from the durable consumer every worker shares and runs them on the
//! plugin's endpoint.
//!
//! The task asks the server for only as many jobs as it has free slots (`jobs.concurrency`), so
//! a job never waits inside a worker where a dead worker would take it along: jobs beyond the
//! slots wait in the stream for whichever worker frees one first. A job is acked only once its
//! result is stored; while it runs, a progress signal every half `ack_wait_ms` keeps the server
//! from delivering it elsewhere. When the worker stops, jobs handed to it but not started are
//! given back at once, and the ones running finish and are acked within the drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::PullConsumer, AckKind};
use futures::{FutureExt, StreamExt};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use super::endpoint::Endpoint;
use crate::jobs::{self, DeadLetter, JobResult, JobState, Jobs};
use crate::plugin::PluginError;
use crate::{subjects, wire};

/// How long one pull request stays open waiting for jobs: an idle worker asks again this
/// often per plugin. A reconnection ends the pull at once (the server forgot it).
const PULL_EXPIRES: Duration = Duration::from_secs(30);
/// Pause after a failed pull (server gone, consumer missing) before the next.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// What a jobs task listens to besides its jobs.
pub(crate) struct Signals {
    /// The worker shuts down.
    pub(crate) shutdown: watch::Receiver<bool>,
    /// The plugin is removed.
    pub(crate) removed: watch::Receiver<bool>,
    /// The connection to NATS was made again.
    pub(crate) reconnects: watch::Receiver<u64>,
}

/// Resolves once the worker shuts down or the plugin is removed.
async fn stopped(shutdown: &mut watch::Receiver<bool>, removed: &mut watch::Receiver<bool>) {
    tokio::select! {
        _ = shutdown.wait_for(|stop| *stop) => {}
        _ = removed.wait_for(|stop| *stop) => {}
    }
}

/// Pulls and runs `endpoint`'s jobs until the worker shuts down or the plugin is removed.
pub(crate) async fn consume(
    endpoint: Arc<Endpoint>,
    jobs: Arc<Jobs>,
    worker: Arc<str>,
    signals: Signals,
    tracker: TaskTracker,
) {
    let Signals {
        shutdown,
        removed,
        mut reconnects,
    } = signals;
    reconnects.borrow_and_update();
    let concurrency = jobs.config().concurrency;
    let mut puller = Puller {
        name: endpoint.name.clone(),
        endpoint,
        jobs,
        worker,
        tracker,
        shutdown,
        removed,
        reconnects,
        slots: Arc::new(Semaphore::new(concurrency)),
        concurrency,
        consumer: None,
        failing: false,
    };
    loop {
        match puller.round().await {
            Ok(()) | Err(Flow::Again) => {}
            Err(Flow::Stop) => return,
        }
    }
}

/// Why a pull round ended early.
enum Flow {
    /// The worker stops or the plugin is removed.
    Stop,
    /// Something failed (said once, see `Puller::failing`) and was waited out: start again.
    Again,
}

/// One plugin's jobs task: its signals, its slots and the shared consumer.
struct Puller {
    name: String,
    endpoint: Arc<Endpoint>,
    jobs: Arc<Jobs>,
    worker: Arc<str>,
    tracker: TaskTracker,
    shutdown: watch::Receiver<bool>,
    removed: watch::Receiver<bool>,
    reconnects: watch::Receiver<u64>,
    /// `jobs.concurrency` permits: a job runs holding one.
    slots: Arc<Semaphore>,
    concurrency: usize,
    /// The consumer, once made; made again after a failed pull (it may have been deleted).
    consumer: Option<PullConsumer>,
    /// The last attempt failed: the failure was logged, and its end will be.
    failing: bool,
}

impl Puller {
    /// One round: the consumer, free slots, a pull for that many jobs, and each job started.
    async fn round(&mut self) -> Result<(), Flow> {
        let pull = self.consumer().await?;
        let mut reserved = self.reserve().await?;
        let mut batch = self.pull(&pull, reserved.num_permits()).await?;
        if self.failing {
            tracing::info!(plugin = %self.name, "pulling jobs again");
            self.failing = false;
        }
        self.start_each(&mut batch, &mut reserved).await
    }

    /// The consumer, made (every worker shares it) if this task has none yet.
    async fn consumer(&mut self) -> Result<PullConsumer, Flow> {
        if let Some(pull) = &self.consumer {
            return Ok(pull.clone());
        }
        let made = tokio::select! {
            _ = stopped(&mut self.shutdown, &mut self.removed) => return Err(Flow::Stop),
            made = self.jobs.consumer(&self.name) => made,
        };
        match made {
            Ok(pull) => {
                self.consumer = Some(pull.clone());
                Ok(pull)
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!(plugin = %self.name, error = %e, "jobs not consumed; retrying");
                    self.failing = true;
                }
                Err(self.pause().await)
            }
        }
    }

    /// One free slot at least, then every other free one: a pull asks for exactly that many.
    async fn reserve(&mut self) -> Result<OwnedSemaphorePermit, Flow> {
        let mut reserved = tokio::select! {
            biased;
            _ = stopped(&mut self.shutdown, &mut self.removed) => return Err(Flow::Stop),
            slot = self.slots.clone().acquire_owned() => slot.map_err(|_| Flow::Stop)?,
        };
        while reserved.num_permits() < self.concurrency {
            match self.slots.clone().try_acquire_owned() {
                Ok(slot) => reserved.merge(slot),
                Err(_) => break,
            }
        }
        Ok(reserved)
    }

    /// A pull for `wanted` jobs.
    async fn pull(
        &mut self,
        pull: &PullConsumer,
        wanted: usize,
    ) -> Result<jetstream::consumer::pull::Batch, Flow> {
        let batch = tokio::select! {
            _ = stopped(&mut self.shutdown, &mut self.removed) => return Err(Flow::Stop),
            batch = pull
                .batch()
                .max_messages(wanted)
                .expires(PULL_EXPIRES)
                .messages() => batch,
        };
        match batch {
            Ok(batch) => Ok(batch),
            Err(e) => {
                if !self.failing {
                    tracing::warn!(plugin = %self.name, error = %e, "cannot pull jobs; retrying");
                    self.failing = true;
                }
                // The consumer may be gone (deleted by hand): make it again.
                self.consumer = None;
                Err(self.pause().await)
            }
        }
    }

    /// Starts each job of `batch` on a slot of `reserved` until the pull ends. When the worker
    /// stops, the jobs already on their way to it go back for another worker to take.
    async fn start_each(
        &mut self,
        batch: &mut jetstream::consumer::pull::Batch,
        reserved: &mut OwnedSemaphorePermit,
    ) -> Result<(), Flow> {
        loop {
            let next = tokio::select! {
                biased;
                _ = stopped(&mut self.shutdown, &mut self.removed) => {
                    while let Some(Some(Ok(message))) = batch.next().now_or_never() {
                        give_back(&message).await;
                    }
                    return Err(Flow::Stop);
                }
                // The server dropped this pull with the old connection: ask again.
                Ok(()) = self.reconnects.changed() => return Ok(()),
                next = batch.next() => next,
            };
            match next {
                Some(Ok(message)) => match reserved.split(1) {
                    Some(slot) => {
                        self.tracker.spawn(run(
                            self.endpoint.clone(),
                            self.jobs.clone(),
                            self.worker.clone(),
                            message,
                            slot,
                        ));
                    }
                    // The server never sends more than asked for; should it, the job goes back.
                    None => give_back(&message).await,
                },
                Some(Err(e)) => {
                    tracing::debug!(plugin = %self.name, error = %e, "pull ended");
                    return Ok(());
                }
                None => return Ok(()),
            }
        }
    }

    /// Waits `RETRY_PAUSE` after a failure: `Again`, or `Stop` if the worker stops meanwhile.
    async fn pause(&mut self) -> Flow {
        tokio::select! {
            _ = stopped(&mut self.shutdown, &mut self.removed) => Flow::Stop,
            _ = tokio::time::sleep(RETRY_PAUSE) => Flow::Again,
        }
    }
}

/// Hands a job this worker will not run back to the server for immediate redelivery.
async fn give_back(message: &jetstream::Message) {
    if let Err(e) = message.ack_with(AckKind::Nak(None)).await {
        tracing::debug!(error = %e, "job not given back; it is redelivered after ack_wait_ms");
    }
}

/// Runs one delivered job and settles it: acked once its result is stored, naked with the
/// backoff delay after a transient failure, dead-lettered after a permanent one or the last
/// attempt.
async fn run(
    endpoint: Arc<Endpoint>,
    jobs: Arc<Jobs>,
    worker: Arc<str>,
    message: jetstream::Message,
    slot: OwnedSemaphorePermit,
) {
    let _slot = slot;
    let (sequence, delivered) = match message.info() {
        Ok(info) => (
            info.stream_sequence,
            u64::try_from(info.delivered).unwrap_or(1).max(1),
        ),
        Err(e) => {
            tracing::warn!(plugin = %endpoint.name, error = %e, "not a JetStream job delivery; dropped");
            return;
        }
    };
    let config = jobs.config();
    let job = jobs::job_id(message.headers.as_ref(), sequence);
    let settle = Settle {
        jobs: &jobs,
        message: &message,
        plugin: &endpoint.name,
        job: &job,
        worker: &worker,
        sequence,
        attempts: delivered,
    };
    if !subjects::is_token(&job) {
        let error = PluginError::BadInput(format!(
            "job id {job:?} cannot be a subject token: ids may only contain A-Z, a-z, 0-9, '_' and '-' (1 to 128 characters)"
        ));
        settle.give_up(&error, None).await;
        return;
    }
    let previous = if delivered > 1 {
        jobs.result(&job).await.ok().flatten()
    } else {
        None
    };
    if let Some(previous) = &previous {
        // Run and stored, but its worker stopped before the ack (or before publishing the
        // result): the result stands, published again for whoever waits on it.
        if previous.state == JobState::Done && previous.sequence == Some(sequence) {
            if let Err(e) = jobs.publish(previous).await {
                tracing::debug!(job = %job, error = %e, "stored result not published again");
            }
            settle.ack().await;
            return;
        }
    }
    if delivered > u64::from(config.max_deliver) {
        // The last attempt never settled: its worker died, or the job ran past ack_wait_ms.
        let last = previous
            .filter(|p| p.sequence == Some(sequence))
            .and_then(|p| p.message)
            .unwrap_or_else(|| "none recorded".into());
        let error = PluginError::Unavailable(format!(
            "job {job} of plugin {}: attempt {} did not finish (its worker stopped, or it ran past jobs.ack_wait_ms = {} ms) and jobs.max_deliver = {} attempts are used up; last error: {last}",
            endpoint.name,
            delivered - 1,
            config.ack_wait_ms,
            config.max_deliver
        ));
        settle.give_up(&error, None).await;
        return;
    }
    let ack_wait = Duration::from_millis(config.ack_wait_ms);
    let (result, revision) =
        with_progress(&message, ack_wait, endpoint.run_job(&message.payload, &job)).await;
    match result {
        Ok(output) => {
            let mut record = settle.record(JobState::Done, revision);
            record.ok = true;
            record.output = Some(output);
            match jobs.store(&record).await {
                Ok(()) => settle.ack().await,
                Err(e) => {
                    tracing::warn!(plugin = %endpoint.name, job = %job, error = %e, "result not stored; the job runs again");
                    settle.retry().await;
                }
            }
        }
        Err(error)
            if jobs::retryable(error.code()) && delivered < u64::from(config.max_deliver) =>
        {
            let mut record = settle.record(JobState::Retrying, revision);
            record.code = Some(error.code().as_u16());
            record.message = Some(wire::bounded_message(error.to_string()));
            if let Err(e) = jobs.store(&record).await {
                tracing::debug!(job = %job, error = %e, "retrying state not stored");
            }
            settle.retry().await;
        }
        Err(error) => settle.give_up(&error, revision).await,
    }
}

/// What settling one delivered job needs.
struct Settle<'a> {
    jobs: &'a Jobs,
    message: &'a jetstream::Message,
    plugin: &'a str,
    job: &'a str,
    worker: &'a str,
    sequence: u64,
    attempts: u64,
}

impl Settle<'_> {
    /// The job's record in `state`, the rest to fill in.
    fn record(&self, state: JobState, revision: Option<u64>) -> JobResult {
        JobResult {
            state,
            attempts: self.attempts,
            worker: Some(self.worker.to_string()),
            revision,
            sequence: Some(self.sequence),
            ..JobResult::queued(self.job, self.plugin)
        }
    }

    /// Done with it: the server removes it from the work queue.
    async fn ack(&self) {
        if let Err(e) = self.message.double_ack().await {
            tracing::warn!(plugin = %self.plugin, job = %self.job, error = %e, "ack not confirmed; the job may be delivered again (its result stands)");
        }
    }

    /// Again after the backoff of this attempt.
    async fn retry(&self) {
        let delay = self.jobs.config().backoff(self.attempts);
        if let Err(e) = self.message.ack_with(AckKind::Nak(Some(delay))).await {
            tracing::debug!(job = %self.job, error = %e, "nak not sent; the job is redelivered after ack_wait_ms");
        }
    }

    /// Moves the job to the dead-letter stream with `error`, stores it as failed, acks it.
    async fn give_up(&self, error: &PluginError, revision: Option<u64>) {
        let message = wire::bounded_message(error.to_string());
        let letter = DeadLetter {
            sequence: 0,
            plugin: self.plugin.to_string(),
            job: self.job.to_string(),
            code: error.code().as_u16(),
            error: message.clone(),
            attempts: self.attempts,
            worker: self.worker.to_string(),
            input: wire::Value::Nil,
            timestamp_ms: wire::unix_ms(),
        };
        let dead_letter = match self
            .jobs
            .dead_letter(&letter, self.message.payload.clone(), self.sequence)
            .await
        {
            Ok(sequence) => sequence,
            Err(e) => {
                tracing::warn!(plugin = %self.plugin, job = %self.job, error = %e, "job not dead-lettered; trying again later");
                self.retry().await;
                return;
            }
        };
        tracing::warn!(plugin = %self.plugin, job = %self.job, attempts = self.attempts, dead_letter, error = %message, "job dead-lettered");
        if subjects::is_token(self.job) {
            let mut record = self.record(JobState::Failed, revision);
            record.code = Some(letter.code);
            record.message = Some(message);
            record.dead_letter = Some(dead_letter);
            if let Err(e) = self.jobs.store(&record).await {
                tracing::warn!(job = %self.job, error = %e, "failed state not stored");
            }
        }
        self.ack().await;
    }
}

/// Runs `work`, telling the server every half `ack_wait` that the job is still in progress.
async fn with_progress<F: Future>(
    message: &jetstream::Message,
    ack_wait: Duration,
    work: F,
) -> F::Output {
    let every = ack_wait / 2;
    let mut work = std::pin::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            done = &mut work => return done,
            _ = ticks.tick() => {
                if let Err(e) = message.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress not sent");
                }
            }
        }
    }
}
