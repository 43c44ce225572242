//! `confsum serve` on HTTP: the routes, the request limits, and the one
//! summarizing thread that batches requests together.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/attestation` | [`AttestationDocument`] (token, evidence, runtime data) |
//! | `GET /v1/documents` | signed [`DocumentList`] (ids and sizes, never text) |
//! | `POST /v1/summaries` | [`SummariesRequest`] in, signed [`SummariesPayload`] out |
//! | `GET /healthz` | 200 while the process serves |
//! | `GET /readyz` | 200 while the summarizer runs, else 503 |
//! | `GET /` | the consumer's page (`/app.js`, `/style.css`), which verifies in the browser; served with [`CONTENT_SECURITY_POLICY`](crate::CONTENT_SECURITY_POLICY) |
//!
//! Signed answers are [`SignedResponse`](crate::SignedResponse)s (`application/jose+json`).
//! Errors are `confsum-server`'s envelope and are not signed: a client
//! that needs a verified answer treats every error as no answer.
//!
//! Requests from many clients are summarized together: the thread takes
//! the first waiting request, then gathers more while they keep arriving
//! (each within [`ServiceConfig::batch_window`] of the last), up to
//! [`ServiceConfig::max_batch`] texts, and runs one padded batch
//! (`Summarizer::summarize_batch`). If that batch fails, each request is
//! run alone, so one bad text fails only its own request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use confsum_server::{ApiError, Body, json};
use confsum_summarize::Summarizer;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

use crate::keys::ResponseSigner;
use crate::{AttestationDocument, Workload};

/// Limits and labels of the service.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// The most texts summarized in one batch (default 8).
    pub max_batch: usize,
    /// How long the batcher waits for another request before it starts a
    /// batch that is not full (default 2 ms). Clients whose answers came
    /// back together send their next requests a little apart; without
    /// the wait the first of them would start a batch of one.
    pub batch_window: Duration,
    /// The most documents or texts in one request (default 16).
    pub max_items: usize,
    /// The largest uploaded text in bytes (default 64 KiB).
    pub max_text_bytes: usize,
    /// What the model is, as answers name it (a folder name, a hub id).
    pub model: String,
    /// A note every answer carries, such as "not a real summary" for the
    /// tiny test checkpoint.
    pub note: Option<String>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            max_batch: 8,
            batch_window: Duration::from_millis(2),
            max_items: 16,
            max_text_bytes: 64 * 1024,
            model: String::new(),
            note: None,
        }
    }
}

impl ServiceConfig {
    /// The defaults, for `model`.
    pub fn new(model: &str) -> Self {
        ServiceConfig {
            model: model.to_owned(),
            ..ServiceConfig::default()
        }
    }

    /// Sets [`note`](Self::note).
    pub fn note(mut self, note: &str) -> Self {
        self.note = Some(note.to_owned());
        self
    }

    /// Sets [`max_batch`](Self::max_batch) (at least 1).
    pub fn max_batch(mut self, n: usize) -> Self {
        self.max_batch = n.max(1);
        self
    }

    /// Sets [`batch_window`](Self::batch_window); zero takes only what is
    /// already queued.
    pub fn batch_window(mut self, window: Duration) -> Self {
        self.batch_window = window;
        self
    }
}

/// `GET /v1/documents`: what the image holds, never the text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentList {
    /// The documents, in path order.
    pub documents: Vec<DocumentInfo>,
}

/// One document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DocumentInfo {
    /// The id: its path in the image.
    pub id: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// `POST /v1/summaries`: documents by id, texts, or both (documents
/// first in the answer).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SummariesRequest {
    /// Ids from `/v1/documents`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub documents: Vec<String>,
    /// Uploaded texts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub texts: Vec<String>,
}

/// The signed answer to `POST /v1/summaries`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummariesPayload {
    /// SHA-256 (hex) of the request body exactly as received: binds the
    /// answer to the question, so an answer cannot be replayed for
    /// another request.
    pub request_sha256: String,
    /// The model.
    pub model: String,
    /// A note on the summaries, such as "not a real summary".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// One summary per requested document, then per text.
    pub summaries: Vec<SummaryItem>,
}

/// One summary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SummaryItem {
    /// The document's id, for a document.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub document: Option<String>,
    /// The index in `texts`, for an uploaded text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<usize>,
    /// The summary.
    pub summary: String,
    /// How many tokens were generated.
    pub tokens: usize,
}

type Texts = Vec<Arc<Zeroizing<String>>>;
type Reply = Result<Vec<confsum_summarize::Summary>, confsum_summarize::Error>;

struct Job {
    texts: Texts,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

struct Inner {
    attestation: AttestationDocument,
    signer: ResponseSigner,
    documents: Vec<(String, Arc<Zeroizing<String>>)>,
    jobs: mpsc::Sender<Job>,
    alive: Arc<AtomicBool>,
    config: ServiceConfig,
}

/// The running workload's state: attestation, signing key, documents and
/// the summarizing thread. Cheap to clone.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Service {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Service")
            .field("signer", &self.inner.signer)
            .field("documents", &self.inner.documents.len())
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Service {
    pub(crate) fn start(workload: Workload, config: ServiceConfig) -> Self {
        let Workload {
            keys,
            attestation,
            documents,
            summarizer,
        } = workload;
        let documents = documents
            .iter()
            .map(|d| (d.id.clone(), d.text.clone()))
            .collect();
        Self::new(
            attestation,
            keys.into_signer(),
            documents,
            summarizer,
            config,
        )
    }

    /// A service from parts, for embedders with their own start-up (and
    /// tests): `signer` must be the key `attestation`'s runtime data
    /// publishes, or consumers refuse every answer. `documents` are
    /// `(id, text)` pairs. Starts the summarizing thread.
    pub fn new(
        attestation: AttestationDocument,
        signer: ResponseSigner,
        documents: Vec<(String, Zeroizing<String>)>,
        summarizer: Summarizer,
        config: ServiceConfig,
    ) -> Self {
        let (jobs, queue) = mpsc::channel::<Job>();
        let alive = Arc::new(AtomicBool::new(true));
        let thread_alive = Arc::clone(&alive);
        let max_batch = config.max_batch.max(1);
        let window = config.batch_window;
        std::thread::spawn(move || {
            run_batches(summarizer, &queue, max_batch, window);
            thread_alive.store(false, Ordering::SeqCst);
        });
        Service {
            inner: Arc::new(Inner {
                attestation,
                signer,
                documents: documents
                    .into_iter()
                    .map(|(id, text)| (id, Arc::new(text)))
                    .collect(),
                jobs,
                alive,
                config,
            }),
        }
    }

    /// The attestation the service shows.
    pub fn attestation(&self) -> &AttestationDocument {
        &self.inner.attestation
    }

    /// Summarizes `texts` on the service's thread, batched with other
    /// requests (what `POST /v1/summaries` does, without HTTP).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Model`] for a text the model refuses,
    /// [`crate::Error::Stopped`] if the thread has stopped.
    pub async fn summarize(
        &self,
        texts: Vec<String>,
    ) -> Result<Vec<confsum_summarize::Summary>, crate::Error> {
        let texts = texts
            .into_iter()
            .map(|t| Arc::new(Zeroizing::new(t)))
            .collect();
        self.submit(texts).await?.map_err(crate::Error::Model)
    }

    async fn submit(&self, texts: Texts) -> Result<Reply, crate::Error> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .jobs
            .send(Job { texts, reply })
            .map_err(|_| crate::Error::Stopped)?;
        answer.await.map_err(|_| crate::Error::Stopped)
    }

    fn signed(&self, payload: &impl Serialize) -> Result<Response, ApiError> {
        let bytes = serde_json::to_vec(payload)
            .map_err(|_| ApiError::internal("the answer does not encode"))?;
        let signed = self
            .inner
            .signer
            .sign(&bytes)
            .map_err(|_| ApiError::internal("signing the answer failed"))?;
        let body = serde_json::to_vec(&signed)
            .map_err(|_| ApiError::internal("the answer does not encode"))?;
        Ok((
            StatusCode::OK,
            [(header::CONTENT_TYPE, "application/jose+json")],
            body,
        )
            .into_response())
    }
}

/// The summarizing thread: one batch at a time, until every sender is gone.
fn run_batches(
    mut summarizer: Summarizer,
    queue: &mpsc::Receiver<Job>,
    max_batch: usize,
    window: Duration,
) {
    while let Ok(first) = queue.recv() {
        let mut count = first.texts.len();
        let mut jobs = vec![first];
        while count < max_batch {
            match queue.recv_timeout(window) {
                Ok(job) => {
                    count += job.texts.len();
                    jobs.push(job);
                }
                Err(_) => break,
            }
        }
        let texts: Vec<&str> = jobs
            .iter()
            .flat_map(|j| j.texts.iter().map(|t| t.as_str()))
            .collect();
        let n = texts.len();
        let result = summarizer.summarize_batch(&texts);
        drop(texts);
        match result {
            Ok(mut summaries) if summaries.len() == n => {
                for job in jobs.into_iter().rev() {
                    let mine = summaries.split_off(summaries.len() - job.texts.len());
                    // A client that went away has dropped its receiver.
                    let _ = job.reply.send(Ok(mine));
                }
            }
            // One request's text failed the batch: run each alone.
            _ if jobs.len() > 1 => {
                for job in jobs {
                    let texts: Vec<&str> = job.texts.iter().map(|t| t.as_str()).collect();
                    let _ = job.reply.send(summarizer.summarize_batch(&texts));
                }
            }
            result => {
                let reply = result.and_then(|_| {
                    Err(confsum_summarize::Error::Generation(
                        "the batch lost a summary".to_owned(),
                    ))
                });
                if let Some(job) = jobs.pop() {
                    let _ = job.reply.send(reply);
                }
            }
        }
    }
}

/// The routes of `service` (see the module docs). Mount with
/// `confsum_server::Server::serve`, which adds the body-size, rate and
/// time limits.
pub fn router(service: Service) -> Router {
    Router::new()
        .route("/v1/attestation", get(attestation))
        .route("/v1/documents", get(documents))
        .route("/v1/summaries", post(summaries))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .merge(crate::web::routes())
        .fallback(confsum_server::not_found)
        .method_not_allowed_fallback(confsum_server::method_not_allowed)
        .with_state(service)
}

async fn healthz() -> Response {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

async fn readyz(State(service): State<Service>) -> Response {
    if service.inner.alive.load(Ordering::SeqCst) {
        json(StatusCode::OK, &serde_json::json!({"status": "ready"}))
    } else {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "NotReady",
            "the summarizer has stopped",
        )
        .into_response()
    }
}

async fn attestation(State(service): State<Service>) -> Response {
    json(StatusCode::OK, &service.inner.attestation)
}

async fn documents(State(service): State<Service>) -> Result<Response, ApiError> {
    let list = DocumentList {
        documents: service
            .inner
            .documents
            .iter()
            .map(|(id, text)| DocumentInfo {
                id: id.clone(),
                bytes: text.len() as u64,
            })
            .collect(),
    };
    service.signed(&list)
}

async fn summaries(State(service): State<Service>, Body(body): Body) -> Result<Response, ApiError> {
    let config = &service.inner.config;
    let request: SummariesRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(
            "InvalidRequest",
            format!("expected {{\"documents\": [ids], \"texts\": [text]}}: {e}"),
        )
    })?;
    let count = request.documents.len() + request.texts.len();
    if count == 0 || count > config.max_items {
        return Err(ApiError::bad_request(
            "InvalidRequest",
            format!(
                "ask for 1 to {} documents and texts, not {count}",
                config.max_items
            ),
        ));
    }
    let mut texts: Texts = Vec::with_capacity(count);
    let mut items = Vec::with_capacity(count);
    for id in &request.documents {
        let (_, text) = service
            .inner
            .documents
            .iter()
            .find(|(d, _)| d == id)
            .ok_or_else(|| {
                ApiError::not_found("DocumentNotFound", format!("no document {id:?}"))
            })?;
        texts.push(Arc::clone(text));
        items.push((Some(id.clone()), None));
    }
    for (i, text) in request.texts.into_iter().enumerate() {
        if text.len() > config.max_text_bytes {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "TextTooLarge",
                format!(
                    "text {i} has {} bytes; the limit is {}",
                    text.len(),
                    config.max_text_bytes
                ),
            ));
        }
        texts.push(Arc::new(Zeroizing::new(text)));
        items.push((None, Some(i)));
    }
    let summaries = service
        .submit(texts)
        .await
        .map_err(|_| {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "NotReady",
                "the summarizer has stopped",
            )
        })?
        .map_err(|e| model_error(&e))?;
    let payload = SummariesPayload {
        request_sha256: hex::encode(Sha256::digest(&body)),
        model: config.model.clone(),
        note: config.note.clone(),
        summaries: items
            .into_iter()
            .zip(summaries)
            .map(|((document, text), s)| SummaryItem {
                document,
                text,
                tokens: s.ids.len(),
                summary: s.text,
            })
            .collect(),
    };
    service.signed(&payload)
}

fn model_error(e: &confsum_summarize::Error) -> ApiError {
    use confsum_summarize::Error as E;
    let message = confsum_server::error_chain(e);
    match e {
        E::EmptyInput | E::InputTooLong { .. } | E::InputTooLongPrefix { .. } => {
            ApiError::bad_request("InvalidText", message)
        }
        _ => ApiError::internal(message),
    }
}
