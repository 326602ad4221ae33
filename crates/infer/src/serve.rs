//! The local API: an OpenAI-compatible HTTP server over one [`Engine`], so that editors,
//! scripts and chat UIs written for OpenAI's API (or for local servers that copy it) run
//! against a verified model unchanged.
//!
//! **Endpoints.** `GET /v1/models` (and `/v1/models/{id}`), `POST /v1/completions`,
//! `POST /v1/chat/completions` (both with `stream: true` as Server-Sent Events: one
//! `data: {chunk}` per piece of text, then `data: [DONE]`), and `GET /health`. Every error is
//! OpenAI's shape, `{"error": {"message", "type", "param", "code"}}` ([`ErrorBody`]).
//!
//! **Loopback only.** There is no authentication: whoever reaches the port runs the model. The
//! caller binds the listener; [`check_listen`] refuses any address but loopback unless remote
//! access is asked for. Nothing here opens any other socket.
//!
//! **Web pages.** A page the user visits can reach loopback too: it can POST a "simple" request
//! (`text/plain`, no CORS preflight), or rebind a DNS name of its own to 127.0.0.1 and read the
//! answers. So, unless [`ServeConfig::allow_remote`], a request whose `Host` is not
//! `127.0.0.1`, `[::1]` or `localhost` (any port), or whose `Origin` names another host, is
//! refused (HTTP 403); and every POST must be `Content-Type: application/json` (HTTP 415
//! otherwise), which a browser sends cross-origin only after a preflight, which this server never
//! grants (it sends no CORS headers).
//!
//! **The model.** Its id is `pazar-` and the first 12 hex digits of its checkpoint
//! ([`model_id`]); a request must name it (`model_not_found` otherwise, as OpenAI answers), so a
//! client configured for another model fails loudly instead of talking to the wrong one. The
//! tokenizer is bytes (a token is a UTF-8 byte): a prompt's token count is its byte count, and
//! streamed text is cut only between whole UTF-8 sequences ([`crate::text::Utf8Stream`]).
//!
//! **Context.** A prompt longer than the model's context is refused (HTTP 400,
//! `context_length_exceeded`). `max_tokens` (for chat also `max_completion_tokens`) is capped
//! by what the context has left after the prompt, and a generation cut by either ends with
//! `finish_reason: "length"`. Defaults are OpenAI's: 16 tokens for a completion, the rest of the
//! context for a chat; temperature 1 and top_p 1; a random seed unless `seed` is given.
//!
//! **Chat template.** Messages become text as each message's content followed by `"\n"`, in
//! order, roles dropped; the reply is what the model writes after that. The context is a few
//! dozen bytes: any role marker would take a large share of it, and the models are trained on
//! plain text, not on a chat format.
//!
//! **Parameters.** Honoured: `model`, `prompt` (a string, a list of one string, or a list of
//! token ids), `messages` (roles system, developer, user and assistant; content a string or a
//! list of `text` parts), `max_tokens`, `max_completion_tokens`, `temperature`, `top_p`,
//! `top_k` (an extension of llama.cpp and vLLM), `seed`, `stop` (a string or up to 4), `stream`,
//! `stream_options.include_usage`, and `echo` (completions). Refused with HTTP 400
//! `unsupported_parameter`, because honouring them silently would change the answer: `n` or
//! `best_of` above 1, `logprobs`, `top_logprobs`, `suffix`, a non-empty `logit_bias`, non-zero
//! `presence_penalty` or `frequency_penalty`, `tools`, `functions`, a `tool_choice` other than
//! `none`/`auto`, a `response_format` other than `text`, `audio`, output `modalities` other than
//! text, tool messages and non-text content parts. Any other field (`user`, `metadata`, `store`,
//! vendor extensions) is ignored: clients send many that do not bear on the output.
//!
//! **Load.** At most [`ServeConfig::concurrency`] generations run at once (each on a blocking
//! thread; the engine's products take turns on its pool); up to [`ServeConfig::queue`] more
//! wait, and any beyond get HTTP 503 `server_busy` with `Retry-After`. A client that goes away
//! stops its generation at the next token, and a streaming client that stops reading loses its
//! generation (and its slot) once a piece has waited [`ServeConfig::send_timeout`] to be taken.
//! Bodies are at most [`MAX_BODY_BYTES`]. [`serve`] lets the requests in flight end when told to
//! stop, for at most a grace period, then drops the connections left.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequest, Path, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures_util::stream::{self, Stream};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

use crate::engine::{Engine, EngineError, FinishReason, Flow, GenerateOptions, Generation, Sampling};
use crate::text::Utf8Stream;

/// Largest request body. A prompt fits the model's context (a few kilobytes for any model the
/// ledger allows); the rest of a body is messages' framing and options.
pub const MAX_BODY_BYTES: usize = 1 << 20;
/// Most stop sequences in one request (OpenAI's limit).
pub const MAX_STOPS: usize = 4;
/// Longest stop sequence, in bytes.
pub const MAX_STOP_BYTES: usize = 256;
/// A completion's `max_tokens` when the request has none (OpenAI's default).
pub const DEFAULT_COMPLETION_TOKENS: usize = 16;
/// Highest temperature accepted (OpenAI's range is 0 to 2).
pub const MAX_TEMPERATURE: f32 = 2.0;
/// Pieces of text a streaming generation may run ahead of a slow reader.
const STREAM_BUFFER: usize = 64;
/// How long a streaming generation waits for its reader to take a piece before it gives up
/// ([`ServeConfig::send_timeout`]'s usual value).
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long [`serve`] lets the requests in flight end once told to stop (the CLI's value).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// The hosts a request may name (in `Host` or `Origin`) unless remote access is allowed.
const LOCAL_HOSTS: [&str; 3] = ["127.0.0.1", "[::1]", "localhost"];

/// Why the server cannot start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "{0} is not a loopback address: the API has no authentication, so anyone who can reach it runs the \
         model (pass --allow-remote to serve it anyway)"
    )]
    NotLoopback(SocketAddr),
    #[error("the API serves byte-tokenized models (a vocabulary of at most 256), this one has {0} tokens")]
    NotByteModel(usize),
    #[error("{0}")]
    Config(String),
}

/// How the server runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The id clients name the model by ([`model_id`]).
    pub model_id: String,
    /// Reported as the model's `created` (Unix seconds): when its checkpoint was committed.
    pub created: u64,
    /// Generations that run at once (at least 1).
    pub concurrency: usize,
    /// Requests that may wait for a generation slot; more are refused with 503.
    pub queue: usize,
    /// Served beyond loopback (`--allow-remote`): requests are not refused for their `Host` or
    /// `Origin` (see the module's doc).
    pub allow_remote: bool,
    /// How long a streaming generation waits for its client to take a piece of text before it
    /// stops and frees its slot ([`DEFAULT_SEND_TIMEOUT`]).
    pub send_timeout: Duration,
}

/// The id a bundle's model is served under: `pazar-` and the first 12 hex digits of its
/// checkpoint hash.
pub fn model_id(checkpoint: &[u8; 32]) -> String {
    format!("pazar-{}", &hex::encode(checkpoint)[..12])
}

/// Refuses an address other than loopback unless `allow_remote`.
pub fn check_listen(addr: SocketAddr, allow_remote: bool) -> Result<(), ServeError> {
    if addr.ip().is_loopback() || allow_remote {
        Ok(())
    } else {
        Err(ServeError::NotLoopback(addr))
    }
}

/// The API's routes over `engine`.
pub fn router(engine: Arc<Engine>, config: ServeConfig) -> Result<Router, ServeError> {
    let vocab = engine.shape().vocab;
    if vocab > 256 {
        return Err(ServeError::NotByteModel(vocab));
    }
    if config.concurrency == 0 {
        return Err(ServeError::Config("concurrency must be at least 1".into()));
    }
    if config.model_id.is_empty() {
        return Err(ServeError::Config("the model id is empty".into()));
    }
    if config.send_timeout.is_zero() {
        return Err(ServeError::Config("the send timeout must be above zero".into()));
    }
    let shared = Arc::new(Shared {
        running: Arc::new(Semaphore::new(config.concurrency)),
        admitted: Arc::new(AtomicUsize::new(0)),
        engine,
        ids: AtomicU64::new(0),
        boot: now_nanos(),
        config,
    });
    Ok(Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{id}", get(model))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found_error",
                "no such endpoint: this server has /v1/models, /v1/completions, /v1/chat/completions and /health",
            )
            .code("unknown_url")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "invalid_request_error",
                "this endpoint does not take that method",
            )
            .code("method_not_allowed")
        })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(middleware::from_fn_with_state(shared.clone(), guard))
        .with_state(shared))
}

/// Serves `app` on `listener` until `shutdown` resolves, then lets the requests in flight end
/// for at most `grace`; connections still open then are dropped (a client that never reads
/// must not keep the server from stopping).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
    grace: Duration,
) -> std::io::Result<()> {
    let (fired, stopping) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = fired.send(());
    };
    let server = std::future::IntoFuture::into_future(axum::serve(listener, app).with_graceful_shutdown(shutdown));
    tokio::pin!(server);
    tokio::select! {
        r = &mut server => r,
        // An error means the shutdown future was dropped, which only the ended server does.
        Ok(()) = stopping => tokio::time::timeout(grace, &mut server).await.unwrap_or(Ok(())),
    }
}

/// Refuses what a web page could send: a `Host` or `Origin` other than loopback (unless remote
/// access is allowed), and a POST that is not JSON (see the module's doc).
async fn guard(State(shared): State<Arc<Shared>>, req: Request, next: Next) -> Response {
    match check_request(&req, shared.config.allow_remote) {
        Ok(()) => next.run(req).await,
        Err(e) => e.into_response(),
    }
}

fn check_request(req: &Request, allow_remote: bool) -> Result<(), ApiError> {
    if !allow_remote {
        let host = req
            .headers()
            .get(header::HOST)
            .map(|h| h.to_str().unwrap_or(""))
            .or_else(|| req.uri().authority().map(|a| a.as_str()));
        match host {
            Some(h) if is_local_authority(h) => {}
            Some(h) => {
                return Err(forbidden(
                    "forbidden_host",
                    format!(
                        "the Host {h:?} is not this machine's loopback: this server answers requests for \
                         127.0.0.1, [::1] or localhost only (a web page may have rebound its name to this \
                         address); serve with --allow-remote to answer other names"
                    ),
                ))
            }
            None => {
                return Err(forbidden(
                    "forbidden_host",
                    "the request has no Host: this server answers requests for 127.0.0.1, [::1] or localhost only",
                ))
            }
        }
        if let Some(origin) = req.headers().get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("");
            if !origin_is_local(origin) {
                return Err(forbidden(
                    "forbidden_origin",
                    format!(
                        "requests from the origin {origin:?} are refused: a web page may not use this server; \
                         only pages served from 127.0.0.1, [::1] or localhost may"
                    ),
                ));
            }
        }
    }
    if req.method() == Method::POST {
        let content_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap_or("?"));
        if !content_type.is_some_and(is_json_media_type) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "invalid_request_error",
                format!(
                    "the body must be sent as Content-Type: application/json, not {}",
                    content_type.map_or_else(|| "without a Content-Type".to_string(), |c| format!("{c:?}"))
                ),
            )
            .code("unsupported_media_type"));
        }
    }
    Ok(())
}

fn forbidden(code: &str, message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "invalid_request_error", message).code(code)
}

/// `application/json`, with or without parameters (`; charset=utf-8`), in any case.
fn is_json_media_type(v: &str) -> bool {
    v.split(';')
        .next()
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
}

/// `host[:port]` where host is one of [`LOCAL_HOSTS`] (in any case) and the port any number.
fn is_local_authority(authority: &str) -> bool {
    let (host, port) = if authority.starts_with('[') {
        match authority.find(']') {
            Some(end) => (&authority[..=end], &authority[end + 1..]),
            None => return false,
        }
    } else {
        match authority.rsplit_once(':') {
            Some((h, _)) => (h, &authority[h.len()..]),
            None => (authority, ""),
        }
    };
    let port_ok = port.is_empty()
        || port
            .strip_prefix(':')
            .is_some_and(|p| p.bytes().all(|b| b.is_ascii_digit()));
    port_ok && LOCAL_HOSTS.iter().any(|l| host.eq_ignore_ascii_case(l))
}

/// An `Origin` (`scheme://host[:port]`) whose host is one of [`LOCAL_HOSTS`]; `null` and
/// anything else is not.
fn origin_is_local(origin: &str) -> bool {
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| is_local_authority(rest.split('/').next().unwrap_or(rest)))
}

// ---------------------------------------------------------------------------------------------
// The wire types, both ways (the tests read answers back with them).

/// An error, as OpenAI answers one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub error: ErrorObject,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ErrorObject {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Health {
    pub status: String,
    pub model: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<ModelObject>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelObject {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub owned_by: String,
    /// The model's context in tokens (an extension: tools that size prompts read it).
    pub context_length: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiFinish {
    /// A stop sequence was generated.
    Stop,
    /// `max_tokens` or the model's context ran out.
    Length,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

/// `object: "text_completion"`, whole or as a streamed chunk (then `finish_reason` is null but
/// in the last chunk, and `usage` is absent but in the usage chunk).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Completion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<CompletionChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionChoice {
    pub text: String,
    pub index: u32,
    /// Always null: log-probabilities are refused.
    pub logprobs: Option<Value>,
    pub finish_reason: Option<ApiFinish>,
}

/// `object: "chat.completion"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatCompletion {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChatChoice>,
    pub usage: Usage,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChoice {
    pub index: u32,
    pub message: ChatReply,
    pub logprobs: Option<Value>,
    pub finish_reason: ApiFinish,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatReply {
    pub role: String,
    pub content: String,
}

/// `object: "chat.completion.chunk"`: the first chunk's delta has the role, the next ones the
/// content, the last an empty delta and the finish reason; with `include_usage` a final chunk
/// has no choices and the usage.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatChunk {
    pub id: String,
    pub object: String,
    pub created: u64,
    pub model: String,
    pub choices: Vec<ChunkChoice>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChunkChoice {
    pub index: u32,
    pub delta: Delta,
    pub logprobs: Option<Value>,
    pub finish_reason: Option<ApiFinish>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
}

/// `POST /v1/completions`. Fields not listed are ignored (see the module's doc).
#[derive(Debug, Deserialize)]
struct CompletionRequest {
    model: String,
    prompt: Value,
    max_tokens: Option<u64>,
    #[serde(flatten)]
    knobs: Knobs,
    echo: Option<bool>,
    best_of: Option<u64>,
    logprobs: Option<Value>,
    suffix: Option<String>,
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    #[serde(flatten)]
    knobs: Knobs,
    logprobs: Option<bool>,
    top_logprobs: Option<Value>,
    tools: Option<Vec<Value>>,
    functions: Option<Vec<Value>>,
    tool_choice: Option<Value>,
    function_call: Option<Value>,
    response_format: Option<Value>,
    audio: Option<Value>,
    modalities: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct ChatMessage {
    role: String,
    content: Option<Value>,
    tool_calls: Option<Vec<Value>>,
}

/// The options both endpoints share.
#[derive(Debug, Deserialize)]
struct Knobs {
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<u32>,
    seed: Option<i64>,
    stop: Option<Value>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    n: Option<u64>,
    logit_bias: Option<Value>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
}

#[derive(Debug, Deserialize)]
struct StreamOptions {
    include_usage: Option<bool>,
}

// ---------------------------------------------------------------------------------------------
// Errors.

/// An error answer: a status and OpenAI's error object.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    fn new(status: StatusCode, kind: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: ErrorObject {
                    message: message.into(),
                    kind: kind.into(),
                    param: None,
                    code: None,
                },
            },
        }
    }

    /// HTTP 400, `invalid_request_error`.
    fn invalid(param: Option<&str>, message: impl Into<String>) -> ApiError {
        let mut e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_request_error", message);
        e.body.error.param = param.map(str::to_string);
        e
    }

    /// HTTP 400 for a parameter this server cannot honour.
    fn unsupported(param: &str, message: impl Into<String>) -> ApiError {
        ApiError::invalid(Some(param), message).code("unsupported_parameter")
    }

    fn with_param(mut self, param: &str) -> ApiError {
        self.body.error.param = Some(param.into());
        self
    }

    fn code(mut self, code: &str) -> ApiError {
        self.body.error.code = Some(code.into());
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let busy = self.status == StatusCode::SERVICE_UNAVAILABLE;
        let mut r = (self.status, Json(self.body)).into_response();
        if busy {
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        r
    }
}

/// The body as JSON of `T`, or the error a client can act on (too large, not JSON, a field of
/// the wrong type).
async fn parse_body<T: serde::de::DeserializeOwned>(req: Request) -> Result<T, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            format!("the request body is larger than {MAX_BODY_BYTES} bytes"),
        )
        .code("request_too_large")
    };
    // A declared length over the limit is refused before a byte of the body is read (the
    // limit on the body itself catches a chunked one as it is read).
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = Bytes::from_request(req, &()).await.map_err(|r| {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            too_large()
        } else {
            ApiError::new(r.status(), "invalid_request_error", r.body_text())
        }
    })?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(None, format!("the body is not a valid request: {e}")))
}

// ---------------------------------------------------------------------------------------------
// Requests, validated into what the engine runs.

/// A request checked and translated: everything the generation and its answer need.
#[derive(Debug)]
struct Job {
    prompt: Vec<u32>,
    gen: GenerateOptions,
    stream: bool,
    include_usage: bool,
    /// A completion's `echo`: the prompt's text comes before the generated text.
    echo: bool,
}

/// Which endpoint a job came from: its answer's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Completion,
    Chat,
}

impl Kind {
    /// The parameter that holds the prompt, for errors about it.
    fn prompt_param(self) -> &'static str {
        match self {
            Kind::Completion => "prompt",
            Kind::Chat => "messages",
        }
    }
}

fn check_model(shared: &Shared, model: &str) -> Result<(), ApiError> {
    if model == shared.config.model_id {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        format!(
            "The model `{model}` does not exist: this server serves `{}` (GET /v1/models)",
            shared.config.model_id
        ),
    )
    .code("model_not_found")
    .with_param("model"))
}

/// `n`, penalties and biases: refused unless they ask for what generation does anyway.
fn check_knobs(k: &Knobs) -> Result<(), ApiError> {
    if k.n.is_some_and(|n| n != 1) {
        return Err(ApiError::unsupported(
            "n",
            "n must be 1: this server generates one choice per request",
        ));
    }
    for (name, v) in [
        ("presence_penalty", k.presence_penalty),
        ("frequency_penalty", k.frequency_penalty),
    ] {
        if v.is_some_and(|v| v != 0.0) {
            return Err(ApiError::unsupported(name, format!("{name} is not supported (only 0)")));
        }
    }
    if k.logit_bias.as_ref().is_some_and(|b| !is_empty(b)) {
        return Err(ApiError::unsupported("logit_bias", "logit_bias is not supported"));
    }
    Ok(())
}

/// Null, `{}`, `[]` or `""`.
fn is_empty(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Object(o) => o.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::String(s) => s.is_empty(),
        _ => false,
    }
}

/// Stop strings as byte sequences; empty ones are dropped (they would match nothing).
fn stop_sequences(stop: Option<&Value>) -> Result<Vec<Vec<u32>>, ApiError> {
    let strings: Vec<&str> = match stop {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(s)) => vec![s.as_str()],
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| ApiError::invalid(Some("stop"), "stop must be a string or a list of strings"))
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid(
                Some("stop"),
                "stop must be a string or a list of strings",
            ))
        }
    };
    if strings.len() > MAX_STOPS {
        return Err(ApiError::invalid(
            Some("stop"),
            format!("at most {MAX_STOPS} stop sequences, got {}", strings.len()),
        ));
    }
    if let Some(s) = strings.iter().find(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::invalid(
            Some("stop"),
            format!("a stop sequence has {} bytes; at most {MAX_STOP_BYTES}", s.len()),
        ));
    }
    Ok(strings
        .into_iter()
        .filter(|s| !s.is_empty())
        .map(|s| s.bytes().map(u32::from).collect())
        .collect())
}

/// A completion's prompt as tokens: a string, a list of one string, or a list of token ids.
fn completion_prompt(p: &Value) -> Result<Vec<u32>, ApiError> {
    let bad = || {
        ApiError::invalid(
            Some("prompt"),
            "prompt must be a string, a list of one string, or a list of token ids",
        )
    };
    match p {
        Value::String(s) => Ok(s.bytes().map(u32::from).collect()),
        Value::Array(items) => match items.as_slice() {
            [Value::String(s)] => Ok(s.bytes().map(u32::from).collect()),
            [Value::String(_), ..] | [Value::Array(_), ..] => Err(ApiError::unsupported(
                "prompt",
                format!(
                    "a batch of {} prompts is not supported: send one prompt per request",
                    items.len()
                ),
            )),
            tokens => tokens
                .iter()
                .map(|t| t.as_u64().and_then(|t| u32::try_from(t).ok()).ok_or_else(bad))
                .collect(),
        },
        _ => Err(bad()),
    }
}

/// The chat template: each message's content and a newline, in order (see the module's doc).
fn chat_prompt(messages: &[ChatMessage]) -> Result<Vec<u32>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(Some("messages"), "messages must not be empty"));
    }
    let mut text = String::new();
    for (i, m) in messages.iter().enumerate() {
        match m.role.as_str() {
            "system" | "developer" | "user" | "assistant" => {}
            "tool" | "function" => {
                return Err(ApiError::unsupported(
                    "messages",
                    format!("messages[{i}]: role {:?} is not supported (no tools)", m.role),
                ))
            }
            other => {
                return Err(ApiError::invalid(
                    Some("messages"),
                    format!("messages[{i}]: unknown role {other:?}"),
                ))
            }
        }
        if m.tool_calls.as_ref().is_some_and(|c| !c.is_empty()) {
            return Err(ApiError::unsupported(
                "messages",
                format!("messages[{i}]: tool_calls are not supported"),
            ));
        }
        match &m.content {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => text.push_str(s),
            Some(Value::Array(parts)) => {
                for (j, part) in parts.iter().enumerate() {
                    match (
                        part.get("type").and_then(Value::as_str),
                        part.get("text").and_then(Value::as_str),
                    ) {
                        (Some("text"), Some(t)) => text.push_str(t),
                        (Some(kind), _) if kind != "text" => {
                            return Err(ApiError::unsupported(
                                "messages",
                                format!("messages[{i}].content[{j}]: {kind:?} parts are not supported, only text"),
                            ))
                        }
                        _ => {
                            return Err(ApiError::invalid(
                                Some("messages"),
                                format!(
                                    "messages[{i}].content[{j}]: a part must be {{\"type\": \"text\", \"text\": ...}}"
                                ),
                            ))
                        }
                    }
                }
            }
            Some(_) => {
                return Err(ApiError::invalid(
                    Some("messages"),
                    format!("messages[{i}].content must be a string or a list of text parts"),
                ))
            }
        }
        text.push('\n');
    }
    Ok(text.bytes().map(u32::from).collect())
}

/// Fields of a chat request that ask for what a byte model without tools cannot do.
fn check_chat_extras(r: &ChatRequest) -> Result<(), ApiError> {
    if r.logprobs == Some(true) || r.top_logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::unsupported("logprobs", "log-probabilities are not supported"));
    }
    if r.tools.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported("tools", "tools are not supported"));
    }
    if r.functions.as_ref().is_some_and(|t| !t.is_empty()) {
        return Err(ApiError::unsupported("functions", "functions are not supported"));
    }
    for (name, v) in [("tool_choice", &r.tool_choice), ("function_call", &r.function_call)] {
        match v {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s == "none" || s == "auto" => {}
            Some(_) => {
                return Err(ApiError::unsupported(
                    name,
                    format!("{name} is not supported (no tools; only \"none\" or \"auto\")"),
                ))
            }
        }
    }
    match &r.response_format {
        None | Some(Value::Null) => {}
        Some(f) if f.get("type").and_then(Value::as_str) == Some("text") => {}
        Some(_) => {
            return Err(ApiError::unsupported(
                "response_format",
                "only response_format {\"type\": \"text\"} is supported: the model cannot be held to JSON",
            ))
        }
    }
    if r.audio.as_ref().is_some_and(|a| !a.is_null()) {
        return Err(ApiError::unsupported("audio", "audio output is not supported"));
    }
    if r.modalities.as_ref().is_some_and(|m| m.iter().any(|m| m != "text")) {
        return Err(ApiError::unsupported("modalities", "only text output is supported"));
    }
    Ok(())
}

/// The generation a request asks for, checked against the model: sampling in range, the prompt
/// within the context, `max_tokens` capped by what the context has left.
fn job(
    shared: &Shared,
    kind: Kind,
    prompt: Vec<u32>,
    max_tokens: Option<u64>,
    knobs: &Knobs,
    echo: bool,
) -> Result<Job, ApiError> {
    let engine = &shared.engine;
    let context = engine.shape().seq_len;
    if prompt.len() > context {
        return Err(ApiError::invalid(
            Some(kind.prompt_param()),
            format!(
                "This model's maximum context length is {context} tokens. However, your {} resulted in {} tokens \
                 (one token per UTF-8 byte). Please reduce the length of the {}.",
                kind.prompt_param(),
                prompt.len(),
                kind.prompt_param()
            ),
        )
        .code("context_length_exceeded"));
    }
    engine.check_prompt(&prompt).map_err(|e| match e {
        EngineError::EmptyPrompt => ApiError::invalid(
            Some(kind.prompt_param()),
            "the prompt is empty: a byte model needs at least one byte to continue",
        ),
        other => ApiError::invalid(Some(kind.prompt_param()), other.to_string()),
    })?;
    // The engine decides one token from the prompt's last position and one from each position
    // after it, up to the context's last.
    let room = context - prompt.len() + 1;
    let max_tokens = match max_tokens {
        Some(0) => return Err(ApiError::invalid(Some("max_tokens"), "max_tokens must be at least 1")),
        Some(n) => usize::try_from(n).unwrap_or(usize::MAX).min(room),
        None => match kind {
            Kind::Completion => DEFAULT_COMPLETION_TOKENS.min(room),
            Kind::Chat => room,
        },
    };
    let temperature = knobs.temperature.unwrap_or(1.0);
    if !(0.0..=MAX_TEMPERATURE).contains(&temperature) {
        return Err(ApiError::invalid(
            Some("temperature"),
            format!("temperature must be between 0 and {MAX_TEMPERATURE}, got {temperature}"),
        ));
    }
    let top_p = knobs.top_p.unwrap_or(1.0);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            Some("top_p"),
            format!("top_p must be in (0, 1], got {top_p}"),
        ));
    }
    // Without a seed a sampled answer differs from call to call, as OpenAI's does.
    let seed = knobs.seed.map_or_else(|| shared.fresh_seed(), |s| s as u64);
    let sampling = Sampling {
        temperature,
        top_k: knobs.top_k.map_or(0, |k| k as usize),
        top_p,
        seed,
    };
    sampling
        .validate()
        .map_err(|e| ApiError::invalid(None, e.to_string()))?;
    let stream = knobs.stream.unwrap_or(false);
    let include_usage = knobs
        .stream_options
        .as_ref()
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    Ok(Job {
        prompt,
        gen: GenerateOptions {
            max_tokens,
            sampling,
            stop: stop_sequences(knobs.stop.as_ref())?,
        },
        stream,
        include_usage,
        echo,
    })
}

// ---------------------------------------------------------------------------------------------
// Handlers.

struct Shared {
    engine: Arc<Engine>,
    config: ServeConfig,
    running: Arc<Semaphore>,
    /// Requests holding or waiting for a generation slot.
    admitted: Arc<AtomicUsize>,
    ids: AtomicU64,
    /// The server's start (ns since the epoch): ids of different runs differ.
    boot: u128,
}

impl Shared {
    fn next_id(&self, prefix: &str) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        format!("{prefix}-{:x}{n:06x}", self.boot)
    }

    fn fresh_seed(&self) -> u64 {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        (now_nanos() as u64) ^ n.rotate_left(32)
    }
}

fn now_nanos() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos())
}

fn now_secs() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// A request's place among those running or waiting; gives it back when dropped.
#[derive(Debug)]
struct Admission(Arc<AtomicUsize>);

impl Drop for Admission {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A place in the queue, then a generation slot. Refuses at once when the queue is full.
async fn admit(shared: &Shared) -> Result<(Admission, OwnedSemaphorePermit), ApiError> {
    let limit = shared.config.concurrency + shared.config.queue;
    let before = shared.admitted.fetch_add(1, Ordering::AcqRel);
    let admission = Admission(shared.admitted.clone());
    if before >= limit {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            format!(
                "the server is busy: {} generations running and {} waiting; retry later",
                shared.config.concurrency, shared.config.queue
            ),
        )
        .code("server_busy"));
    }
    let permit = shared.running.clone().acquire_owned().await.map_err(|_| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "the server is stopping",
        )
    })?;
    Ok((admission, permit))
}

/// Set when the request's handler is dropped (the client went away): a generation without a
/// stream to notice it stops at its next token.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Release);
    }
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<Health> {
    Json(Health {
        status: "ok".into(),
        model: shared.config.model_id.clone(),
    })
}

fn model_object(shared: &Shared) -> ModelObject {
    ModelObject {
        id: shared.config.model_id.clone(),
        object: "model".into(),
        created: shared.config.created,
        owned_by: "pazar".into(),
        context_length: shared.engine.shape().seq_len,
    }
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<ModelList> {
    Json(ModelList {
        object: "list".into(),
        data: vec![model_object(&shared)],
    })
}

async fn model(State(shared): State<Arc<Shared>>, Path(id): Path<String>) -> Result<Json<ModelObject>, ApiError> {
    check_model(&shared, &id)?;
    Ok(Json(model_object(&shared)))
}

async fn completions(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let r: CompletionRequest = match parse_body(req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let job = match completion_job(&shared, &r) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    run(shared, Kind::Completion, job).await
}

fn completion_job(shared: &Shared, r: &CompletionRequest) -> Result<Job, ApiError> {
    check_model(shared, &r.model)?;
    check_knobs(&r.knobs)?;
    if r.best_of.is_some_and(|b| b != 1) {
        return Err(ApiError::unsupported("best_of", "best_of must be 1"));
    }
    if r.logprobs.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(ApiError::unsupported("logprobs", "log-probabilities are not supported"));
    }
    if r.suffix.as_ref().is_some_and(|s| !s.is_empty()) {
        return Err(ApiError::unsupported("suffix", "suffix (insertion) is not supported"));
    }
    let prompt = completion_prompt(&r.prompt)?;
    job(
        shared,
        Kind::Completion,
        prompt,
        r.max_tokens,
        &r.knobs,
        r.echo.unwrap_or(false),
    )
}

async fn chat_completions(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let r: ChatRequest = match parse_body(req).await {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let job = match chat_job(&shared, &r) {
        Ok(j) => j,
        Err(e) => return e.into_response(),
    };
    run(shared, Kind::Chat, job).await
}

fn chat_job(shared: &Shared, r: &ChatRequest) -> Result<Job, ApiError> {
    check_model(shared, &r.model)?;
    check_knobs(&r.knobs)?;
    check_chat_extras(r)?;
    let prompt = chat_prompt(&r.messages)?;
    job(
        shared,
        Kind::Chat,
        prompt,
        r.max_completion_tokens.or(r.max_tokens),
        &r.knobs,
        false,
    )
}

/// Waits for a slot and generates: one JSON answer, or an SSE stream.
async fn run(shared: Arc<Shared>, kind: Kind, job: Job) -> Response {
    let (admission, permit) = match admit(&shared).await {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let answer = Answer {
        id: shared.next_id(match kind {
            Kind::Completion => "cmpl",
            Kind::Chat => "chatcmpl",
        }),
        created: now_secs(),
        model: shared.config.model_id.clone(),
        kind,
        include_usage: job.include_usage,
    };
    if job.stream {
        return stream_answer(shared, answer, job, admission, permit).into_response();
    }
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(cancelled.clone());
    let engine = shared.engine.clone();
    let prompt = job.prompt.clone();
    let gen = job.gen.clone();
    let done = tokio::task::spawn_blocking(move || {
        let _slot = (admission, permit);
        engine.generate(&prompt, &gen, |_| {
            if cancelled.load(Ordering::Acquire) {
                Flow::Stop
            } else {
                Flow::Continue
            }
        })
    })
    .await;
    let g = match done {
        Ok(Ok(g)) => g,
        Ok(Err(e)) => return ApiError::invalid(None, e.to_string()).into_response(),
        Err(e) => {
            return ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                format!("the generation failed: {e}"),
            )
            .into_response()
        }
    };
    let mut text = if job.echo {
        bytes_text(&job.prompt)
    } else {
        String::new()
    };
    text.push_str(&bytes_text(&g.tokens));
    let usage = usage(&g);
    let finish = api_finish(g.finish);
    match kind {
        Kind::Completion => Json(Completion {
            id: answer.id,
            object: "text_completion".into(),
            created: answer.created,
            model: answer.model,
            choices: vec![CompletionChoice {
                text,
                index: 0,
                logprobs: None,
                finish_reason: Some(finish),
            }],
            usage: Some(usage),
        })
        .into_response(),
        Kind::Chat => Json(ChatCompletion {
            id: answer.id,
            object: "chat.completion".into(),
            created: answer.created,
            model: answer.model,
            choices: vec![ChatChoice {
                index: 0,
                message: ChatReply {
                    role: "assistant".into(),
                    content: text,
                },
                logprobs: None,
                finish_reason: finish,
            }],
            usage,
        })
        .into_response(),
    }
}

fn usage(g: &Generation) -> Usage {
    Usage {
        prompt_tokens: g.stats.prompt_tokens,
        completion_tokens: g.tokens.len(),
        total_tokens: g.stats.prompt_tokens + g.tokens.len(),
    }
}

/// OpenAI has two reasons: a stop sequence, or a length (ours or the context's). A generation
/// stopped by its callback has no reader left to tell.
fn api_finish(f: FinishReason) -> ApiFinish {
    match f {
        FinishReason::Stop | FinishReason::Callback => ApiFinish::Stop,
        FinishReason::Length | FinishReason::Context => ApiFinish::Length,
    }
}

/// Tokens (bytes) as text; a sequence that is not UTF-8 becomes U+FFFD.
fn bytes_text(tokens: &[u32]) -> String {
    let bytes: Vec<u8> = tokens.iter().map(|&t| u8::try_from(t).unwrap_or(b'?')).collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Streaming.

/// What every chunk of one answer shares.
struct Answer {
    id: String,
    created: u64,
    model: String,
    kind: Kind,
    include_usage: bool,
}

impl Answer {
    fn event(&self, text: Option<String>, role: bool, finish: Option<ApiFinish>, usage: Option<Usage>) -> Event {
        let no_choice = usage.is_some();
        let json = match self.kind {
            Kind::Completion => serde_json::to_string(&Completion {
                id: self.id.clone(),
                object: "text_completion".into(),
                created: self.created,
                model: self.model.clone(),
                choices: if no_choice {
                    Vec::new()
                } else {
                    vec![CompletionChoice {
                        text: text.unwrap_or_default(),
                        index: 0,
                        logprobs: None,
                        finish_reason: finish,
                    }]
                },
                usage,
            }),
            Kind::Chat => serde_json::to_string(&ChatChunk {
                id: self.id.clone(),
                object: "chat.completion.chunk".into(),
                created: self.created,
                model: self.model.clone(),
                choices: if no_choice {
                    Vec::new()
                } else {
                    vec![ChunkChoice {
                        index: 0,
                        delta: Delta {
                            role: role.then(|| "assistant".to_string()),
                            content: text,
                        },
                        logprobs: None,
                        finish_reason: finish,
                    }]
                },
                usage,
            }),
        };
        Event::default().data(json.expect("plain structs with string keys serialize"))
    }
}

/// What the generating thread sends the response stream.
enum Piece {
    Text(String),
    End(Result<Generation, EngineError>),
}

struct StreamState {
    rx: mpsc::Receiver<Piece>,
    pending: VecDeque<Event>,
    ended: bool,
    answer: Answer,
}

/// Why a piece could not be handed to the response stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SendFailure {
    /// The stream was dropped: the client went away.
    Closed,
    /// The stream took nothing for the whole deadline: the client stopped reading.
    TimedOut,
}

/// Sends `item` from a blocking thread of `handle`'s runtime, waiting at most `deadline` for
/// room in the channel.
fn send_within<T>(
    handle: &tokio::runtime::Handle,
    tx: &mpsc::Sender<T>,
    item: T,
    deadline: Duration,
) -> Result<(), SendFailure> {
    match tx.try_send(item) {
        Ok(()) => Ok(()),
        Err(mpsc::error::TrySendError::Closed(_)) => Err(SendFailure::Closed),
        Err(mpsc::error::TrySendError::Full(item)) => {
            match handle.block_on(async { tokio::time::timeout(deadline, tx.send(item)).await }) {
                Ok(Ok(())) => Ok(()),
                Ok(Err(_)) => Err(SendFailure::Closed),
                Err(_) => Err(SendFailure::TimedOut),
            }
        }
    }
}

fn stream_answer(
    shared: Arc<Shared>,
    answer: Answer,
    job: Job,
    admission: Admission,
    permit: OwnedSemaphorePermit,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let engine = shared.engine.clone();
    let deadline = shared.config.send_timeout;
    let handle = tokio::runtime::Handle::current();
    let Job { prompt, gen, echo, .. } = job;
    let mut pending = VecDeque::new();
    match answer.kind {
        Kind::Chat => pending.push_back(answer.event(Some(String::new()), true, None, None)),
        Kind::Completion if echo => pending.push_back(answer.event(Some(bytes_text(&prompt)), false, None, None)),
        Kind::Completion => {}
    }
    tokio::task::spawn_blocking(move || {
        let _slot = (admission, permit);
        let mut utf8 = Utf8Stream::default();
        let mut gone = false;
        let send = |piece| send_within(&handle, &tx, piece, deadline);
        let result = engine.generate(&prompt, &gen, |t| {
            let text = utf8.push(u8::try_from(t).unwrap_or(b'?'));
            if text.is_empty() {
                return Flow::Continue;
            }
            // The client went away (the stream was dropped) or stopped reading: either way
            // the slot goes to the next request.
            if send(Piece::Text(text)).is_err() {
                gone = true;
                return Flow::Stop;
            }
            Flow::Continue
        });
        if gone {
            return;
        }
        let tail = utf8.finish();
        if !tail.is_empty() && send(Piece::Text(tail)).is_err() {
            return;
        }
        let _ = send(Piece::End(result));
    });
    let state = StreamState {
        rx,
        pending,
        ended: false,
        answer,
    };
    let events = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.pending.pop_front() {
                return Some((Ok(e), st));
            }
            if st.ended {
                return None;
            }
            st.ended = match st.rx.recv().await {
                Some(Piece::Text(text)) => {
                    let e = st.answer.event(Some(text), false, None, None);
                    st.pending.push_back(e);
                    false
                }
                Some(Piece::End(Ok(g))) => {
                    let finish = Some(api_finish(g.finish));
                    let last = match st.answer.kind {
                        Kind::Chat => st.answer.event(None, false, finish, None),
                        Kind::Completion => st.answer.event(Some(String::new()), false, finish, None),
                    };
                    st.pending.push_back(last);
                    if st.answer.include_usage {
                        let u = st.answer.event(None, false, None, Some(usage(&g)));
                        st.pending.push_back(u);
                    }
                    st.pending.push_back(Event::default().data("[DONE]"));
                    true
                }
                end => {
                    // The generation failed or its thread died: an error object in the stream, as
                    // OpenAI sends one, and no [DONE].
                    let message = match end {
                        Some(Piece::End(Err(e))) => e.to_string(),
                        _ => "the generation stopped before its end: the stream was not read for too long, \
                              or the generation failed"
                            .to_string(),
                    };
                    let body = ErrorBody {
                        error: ErrorObject {
                            message,
                            kind: "server_error".into(),
                            param: None,
                            code: None,
                        },
                    };
                    let json = serde_json::to_string(&body).expect("plain structs with string keys serialize");
                    st.pending.push_back(Event::default().data(json));
                    true
                }
            };
        }
    });
    Sse::new(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    use futures_util::FutureExt;

    fn shared(concurrency: usize, queue: usize) -> Shared {
        let spec = pazar_types::train::ModelSpec {
            vocab: 256,
            dim: 8,
            layers: 1,
            heads: 1,
            ffn_dim: 8,
            seq_len: 4,
        };
        let opts = crate::engine::EngineOptions {
            threads: 1,
            ..Default::default()
        };
        let engine = Engine::new(&spec, &vec![0.0; spec.params() as usize], opts).expect("an engine");
        Shared {
            engine: Arc::new(engine),
            config: ServeConfig {
                model_id: "m".into(),
                created: 0,
                concurrency,
                queue,
                allow_remote: false,
                send_timeout: DEFAULT_SEND_TIMEOUT,
            },
            running: Arc::new(Semaphore::new(concurrency)),
            admitted: Arc::new(AtomicUsize::new(0)),
            ids: AtomicU64::new(0),
            boot: 0,
        }
    }

    #[test]
    fn a_request_beyond_the_running_and_queued_ones_is_refused_as_busy_until_one_ends() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let s = shared(1, 1);
            let running = admit(&s).await.expect("the first runs");
            // The second waits for the slot: its admission is taken, its permit is not.
            let mut waiting = Box::pin(admit(&s));
            assert!((&mut waiting).now_or_never().is_none());
            let busy = admit(&s).await.expect_err("the third is refused");
            assert_eq!(busy.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(busy.body.error.code.as_deref(), Some("server_busy"));
            drop(running);
            let second = waiting.await.expect("the waiting one runs");
            let mut third = Box::pin(admit(&s));
            assert!((&mut third).now_or_never().is_none(), "queued behind the second");
            drop(second);
            let _third = third.await.expect("then it runs");
        });
    }

    #[test]
    fn only_loopback_addresses_are_served_without_allow_remote() {
        for ok in ["127.0.0.1:8080", "[::1]:0", "127.0.0.2:1"] {
            let a: SocketAddr = ok.parse().expect("address");
            assert!(check_listen(a, false).is_ok(), "{ok}");
        }
        for bad in ["0.0.0.0:8080", "[::]:8080", "192.168.1.2:80"] {
            let a: SocketAddr = bad.parse().expect("address");
            assert!(
                matches!(check_listen(a, false), Err(ServeError::NotLoopback(_))),
                "{bad}"
            );
            assert!(check_listen(a, true).is_ok(), "{bad}");
        }
    }

    #[test]
    fn stop_strings_become_byte_sequences_and_more_than_four_are_refused() {
        let v = serde_json::json!(["\n", "", "é"]);
        assert_eq!(stop_sequences(Some(&v)).ok(), Some(vec![vec![10], vec![0xc3, 0xa9]]));
        let v = serde_json::json!("end");
        assert_eq!(stop_sequences(Some(&v)).ok(), Some(vec![vec![101, 110, 100]]));
        let v = serde_json::json!(["a", "b", "c", "d", "e"]);
        assert!(stop_sequences(Some(&v)).is_err());
        let v = serde_json::json!(7);
        assert!(stop_sequences(Some(&v)).is_err());
    }

    #[test]
    fn the_chat_template_is_each_content_and_a_newline() {
        let m: Vec<ChatMessage> = serde_json::from_value(serde_json::json!([
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "!"}]},
        ]))
        .expect("messages");
        let p = chat_prompt(&m).expect("a prompt");
        assert_eq!(
            String::from_utf8(p.iter().map(|&t| t as u8).collect()).ok().as_deref(),
            Some("be brief\nhi!\n")
        );
    }

    #[test]
    fn a_piece_nobody_takes_is_given_up_after_the_deadline_and_a_taken_one_is_sent() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("a runtime");
        let handle = rt.handle().clone();
        let (tx, mut rx) = mpsc::channel::<u32>(1);
        let deadline = Duration::from_millis(100);
        let sender = rt.spawn_blocking(move || {
            // Room for one: sent at once.
            let first = send_within(&handle, &tx, 1, deadline);
            // The channel is full and nobody reads: given up.
            let stalled = send_within(&handle, &tx, 2, deadline);
            (first, stalled, handle, tx)
        });
        let (first, stalled, handle, tx) = rt.block_on(sender).expect("the sender ends");
        assert_eq!(first, Ok(()));
        assert_eq!(stalled, Err(SendFailure::TimedOut));
        // Once the reader takes a piece, the next one goes through.
        assert_eq!(rx.try_recv().ok(), Some(1));
        let again = rt
            .block_on(rt.spawn_blocking(move || (send_within(&handle, &tx, 3, deadline), handle, tx)))
            .expect("the sender ends");
        assert_eq!(again.0, Ok(()));
        assert_eq!(rx.try_recv().ok(), Some(3));
        // A dropped reader is told apart from a slow one.
        drop(rx);
        let (_, handle, tx) = again;
        let closed = rt
            .block_on(rt.spawn_blocking(move || send_within(&handle, &tx, 4, deadline)))
            .expect("the sender ends");
        assert_eq!(closed, Err(SendFailure::Closed));
    }

    #[test]
    fn only_loopback_hosts_and_origins_are_local_with_any_port_in_any_case() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:0",
            "localhost",
            "LocalHost:3000",
        ] {
            assert!(is_local_authority(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "localhost.evil.example:80",
            "127.0.0.2:8080",
            "[::1",
            "[::1]x",
            "localhost:80x",
            "0.0.0.0:8080",
        ] {
            assert!(!is_local_authority(bad), "{bad}");
        }
        assert!(origin_is_local("http://localhost:5173"));
        assert!(origin_is_local("http://[::1]:8080"));
        assert!(origin_is_local("https://127.0.0.1"));
        for bad in ["null", "http://evil.example", "https://localhost.evil.example", ""] {
            assert!(!origin_is_local(bad), "{bad}");
        }
    }

    #[test]
    fn json_media_types_may_carry_parameters_but_text_plain_is_not_json() {
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
        ] {
            assert!(is_json_media_type(ok), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data",
            "",
            "application/jsonx",
        ] {
            assert!(!is_json_media_type(bad), "{bad}");
        }
    }

    #[test]
    fn a_completion_prompt_is_a_string_one_string_or_token_ids_but_not_a_batch() {
        assert_eq!(completion_prompt(&serde_json::json!("ab")).ok(), Some(vec![97, 98]));
        assert_eq!(completion_prompt(&serde_json::json!(["ab"])).ok(), Some(vec![97, 98]));
        assert_eq!(completion_prompt(&serde_json::json!([97, 98])).ok(), Some(vec![97, 98]));
        let batch = completion_prompt(&serde_json::json!(["a", "b"])).expect_err("refused");
        assert_eq!(batch.body.error.code.as_deref(), Some("unsupported_parameter"));
        assert!(completion_prompt(&serde_json::json!([-1])).is_err());
        assert!(completion_prompt(&serde_json::json!({"a": 1})).is_err());
    }
}
