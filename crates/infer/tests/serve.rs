//! The local API over HTTP, in process: a server on 127.0.0.1:0 over an engine whose weights
//! make greedy decoding walk a known cycle of bytes (`CYCLE`), asked by a plain HTTP/1.1 client
//! written here, so every answer's text is known in advance. Checks OpenAI's shapes (whole and
//! streamed), the context's limit, refused parameters, the body limit, and that streamed text is
//! cut only between whole UTF-8 sequences.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use pazar_infer::engine::{Engine, EngineOptions, Precision, SimdLevel};
use pazar_infer::serve::{
    self, ApiFinish, ChatChunk, ChatCompletion, Completion, ErrorBody, Health, ModelList, ServeConfig, MAX_BODY_BYTES,
};
use pazar_types::train::ModelSpec;
use serde_json::{json, Value};

const MODEL: &str = "pazar-0123456789ab";
const CONTEXT: usize = 32;
/// What greedy decoding generates after `a`, over and over: one-, two-, three- and four-byte
/// UTF-8 sequences (every byte distinct), so a stream cut inside a sequence would show.
const CYCLE: &str = "é€😀ba";

/// A model whose blocks do nothing (all matrices zero, so the residual is the embedding) and
/// whose output head maps each byte of the cycle to the next: token `CYCLE[i]` embeds as the
/// basis vector `e_i`, and the head's column for `CYCLE[i+1]` is `e_i`. Every other byte embeds
/// as `e_31`, which leads to `a`.
fn cycle_engine() -> Engine {
    let (v, d, f, layers) = (256usize, 32usize, 64usize, 1usize);
    let spec = ModelSpec {
        vocab: v as u32,
        dim: d as u32,
        layers: layers as u16,
        heads: 4,
        ffn_dim: f as u32,
        seq_len: CONTEXT as u32,
    };
    // The cycle's bytes, starting at the prompt's `a`.
    let cycle: Vec<u8> = "aé€😀b".bytes().collect();
    assert!(cycle.len() < d);
    let mut emb = vec![0.0f32; v * d];
    for t in 0..v {
        let i = cycle.iter().position(|&c| usize::from(c) == t).unwrap_or(d - 1);
        emb[t * d + i] = 1.0;
    }
    let mut head = vec![0.0f32; d * v];
    for (i, _) in cycle.iter().enumerate() {
        let next = cycle[(i + 1) % cycle.len()];
        head[i * v + usize::from(next)] = 10.0;
    }
    head[(d - 1) * v + usize::from(b'a')] = 10.0;
    let mut params = emb;
    for _ in 0..layers {
        params.extend(vec![1.0; d]);
        params.extend(vec![0.0; 4 * d * d]);
        params.extend(vec![1.0; d]);
        params.extend(vec![0.0; 3 * d * f]);
    }
    params.extend(vec![1.0; d]);
    params.extend(head);
    Engine::new(
        &spec,
        &params,
        EngineOptions {
            precision: Precision::F32,
            threads: 1,
            simd: SimdLevel::Best,
        },
    )
    .expect("the cycle model loads")
}

/// The greedy text after the prompt `a`: the cycle repeated, `n` bytes of it.
fn cycle_bytes(n: usize) -> Vec<u8> {
    CYCLE.bytes().cycle().take(n).collect()
}

struct Server {
    addr: SocketAddr,
    _rt: tokio::runtime::Runtime,
}

fn config() -> ServeConfig {
    ServeConfig {
        model_id: MODEL.into(),
        created: 1_700_000_000,
        concurrency: 1,
        queue: 4,
        allow_remote: false,
        send_timeout: serve::DEFAULT_SEND_TIMEOUT,
    }
}

fn start() -> Server {
    start_with(config())
}

fn start_with(config: ServeConfig) -> Server {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let app = serve::router(Arc::new(cycle_engine()), config).expect("a router");
    rt.spawn(serve::serve(
        listener,
        app,
        std::future::pending(),
        serve::DEFAULT_SHUTDOWN_GRACE,
    ));
    Server { addr, _rt: rt }
}

/// One request with the given header lines (no `Connection`, `Content-Length` or trailing blank
/// line: those are added).
fn raw(server: &Server, method: &str, path: &str, headers: &[String], body: Option<&[u8]>) -> Answer {
    let mut s = TcpStream::connect(server.addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nConnection: close\r\n");
    for h in headers {
        head.push_str(h);
        head.push_str("\r\n");
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    if let Some(b) = body {
        s.write_all(b).expect("write");
    }
    read_answer(s)
}

struct Answer {
    status: u16,
    content_type: String,
    body: Vec<u8>,
}

impl Answer {
    fn json<T: serde::de::DeserializeOwned>(&self) -> T {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The `data:` lines of an SSE body, in order.
    fn events(&self) -> Vec<String> {
        let text = std::str::from_utf8(&self.body).expect("an SSE body is UTF-8");
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                e.lines()
                    .filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:")))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .collect()
    }
}

/// One HTTP/1.1 request on its own connection, read to the end (chunked bodies decoded).
fn request(server: &Server, method: &str, path: &str, body: Option<&[u8]>) -> Answer {
    let mut s = TcpStream::connect(server.addr).expect("connect");
    // A guard against a hung test, not a timing assertion.
    s.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    s.write_all(head.as_bytes()).expect("write");
    if let Some(b) = body {
        s.write_all(b).expect("write");
    }
    read_answer(s)
}

fn read_answer(s: TcpStream) -> Answer {
    let mut r = BufReader::new(s);
    let mut line = String::new();
    r.read_line(&mut line).expect("status line");
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("status line {line:?}"));
    let (mut chunked, mut content_type) = (false, String::new());
    loop {
        line.clear();
        r.read_line(&mut line).expect("header");
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let (k, v) = l.split_once(':').expect("a header");
        match k.to_ascii_lowercase().as_str() {
            "transfer-encoding" => chunked = v.trim().eq_ignore_ascii_case("chunked"),
            "content-type" => content_type = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = Vec::new();
    if chunked {
        loop {
            line.clear();
            r.read_line(&mut line).expect("chunk size");
            let n = usize::from_str_radix(line.trim(), 16).expect("hex chunk size");
            let mut chunk = vec![0; n + 2];
            r.read_exact(&mut chunk).expect("chunk");
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else {
        r.read_to_end(&mut body).expect("body");
    }
    Answer {
        status,
        content_type,
        body,
    }
}

fn post(server: &Server, path: &str, body: Value) -> Answer {
    request(server, "POST", path, Some(body.to_string().as_bytes()))
}

#[test]
fn health_and_models_name_the_served_model() {
    let s = start();
    let h: Health = request(&s, "GET", "/health", None).json();
    assert_eq!((h.status.as_str(), h.model.as_str()), ("ok", MODEL));
    let m: ModelList = request(&s, "GET", "/v1/models", None).json();
    assert_eq!(m.object, "list");
    assert_eq!(m.data.len(), 1);
    assert_eq!((m.data[0].id.as_str(), m.data[0].object.as_str()), (MODEL, "model"));
    assert_eq!(m.data[0].context_length, CONTEXT);
    let one = request(&s, "GET", &format!("/v1/models/{MODEL}"), None);
    assert_eq!(one.status, 200);
    let other = request(&s, "GET", "/v1/models/gpt-4o", None);
    assert_eq!(other.status, 404);
    assert_eq!(other.json::<ErrorBody>().error.code.as_deref(), Some("model_not_found"));
}

#[test]
fn a_completion_has_openai_shape_text_and_usage() {
    let s = start();
    let a = post(
        &s,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "a", "max_tokens": 9, "temperature": 0, "user": "ignored"}),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let c: Completion = a.json();
    assert_eq!(c.object, "text_completion");
    assert_eq!(c.model, MODEL);
    assert!(c.id.starts_with("cmpl-") && c.created > 1_700_000_000);
    assert_eq!(c.choices.len(), 1);
    assert_eq!(c.choices[0].text, "é€😀");
    assert_eq!(c.choices[0].finish_reason, Some(ApiFinish::Length));
    let u = c.usage.expect("usage");
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (1, 9, 10));
    // The raw JSON has OpenAI's nulls, not missing fields.
    let raw: Value = a.json();
    assert_eq!(raw["choices"][0]["logprobs"], Value::Null);

    let again: Completion = post(
        &s,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "a", "max_tokens": 9, "temperature": 0}),
    )
    .json();
    assert_ne!(again.id, c.id, "ids are unique");
}

#[test]
fn a_stop_sequence_ends_the_text_with_finish_reason_stop() {
    let s = start();
    let c: Completion = post(
        &s,
        "/v1/completions",
        json!({"model": MODEL, "prompt": ["a"], "max_tokens": 20, "temperature": 0, "stop": ["😀", "zz"]}),
    )
    .json();
    assert_eq!(c.choices[0].text, "é€");
    assert_eq!(c.choices[0].finish_reason, Some(ApiFinish::Stop));
}

#[test]
fn max_tokens_is_capped_by_the_context_left_after_the_prompt() {
    let s = start();
    let c: Completion = post(
        &s,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "a", "max_tokens": 1000, "temperature": 0}),
    )
    .json();
    // One token from each of the context's positions.
    let u = c.usage.expect("usage");
    assert_eq!(u.completion_tokens, CONTEXT);
    assert_eq!(c.choices[0].finish_reason, Some(ApiFinish::Length));
    assert_eq!(
        c.choices[0].text,
        String::from_utf8_lossy(&cycle_bytes(CONTEXT)).into_owned()
    );
}

#[test]
fn a_prompt_longer_than_the_context_is_refused_as_context_length_exceeded() {
    let s = start();
    let long = "x".repeat(CONTEXT + 1);
    for (path, body) in [
        ("/v1/completions", json!({"model": MODEL, "prompt": long})),
        (
            "/v1/chat/completions",
            json!({"model": MODEL, "messages": [{"role": "user", "content": long}]}),
        ),
    ] {
        let a = post(&s, path, body);
        assert_eq!(a.status, 400);
        assert!(a.content_type.starts_with("application/json"));
        let e: ErrorBody = a.json();
        assert_eq!(e.error.kind, "invalid_request_error");
        assert_eq!(e.error.code.as_deref(), Some("context_length_exceeded"));
        assert!(
            e.error.message.contains("maximum context length is 32 tokens"),
            "{}",
            e.error.message
        );
    }
}

#[test]
fn parameters_that_would_change_the_answer_silently_are_refused() {
    let s = start();
    let chat = |extra: Value| {
        let mut b = json!({"model": MODEL, "messages": [{"role": "user", "content": "a"}]});
        for (k, v) in extra.as_object().expect("an object") {
            b[k] = v.clone();
        }
        post(&s, "/v1/chat/completions", b)
    };
    for (extra, param) in [
        (json!({"n": 2}), "n"),
        (json!({"logprobs": true}), "logprobs"),
        (
            json!({"tools": [{"type": "function", "function": {"name": "f"}}]}),
            "tools",
        ),
        (
            json!({"response_format": {"type": "json_schema", "json_schema": {}}}),
            "response_format",
        ),
        (json!({"presence_penalty": 0.5}), "presence_penalty"),
        (json!({"logit_bias": {"97": 5}}), "logit_bias"),
        (
            json!({"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]}),
            "messages",
        ),
    ] {
        let a = chat(extra.clone());
        assert_eq!(a.status, 400, "{extra}");
        let e: ErrorBody = a.json();
        assert_eq!(e.error.code.as_deref(), Some("unsupported_parameter"), "{extra}");
        assert_eq!(e.error.param.as_deref(), Some(param), "{extra}");
    }
    // Fields that ask for what is done anyway pass.
    let ok = chat(
        json!({"n": 1, "logprobs": false, "tools": [], "response_format": {"type": "text"}, "presence_penalty": 0}),
    );
    assert_eq!(ok.status, 200, "{}", String::from_utf8_lossy(&ok.body));
    let a = post(
        &s,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "a", "logprobs": 2}),
    );
    assert_eq!(a.json::<ErrorBody>().error.param.as_deref(), Some("logprobs"));
    let a = post(&s, "/v1/completions", json!({"model": MODEL, "prompt": ["a", "b"]}));
    assert_eq!(
        a.json::<ErrorBody>().error.code.as_deref(),
        Some("unsupported_parameter")
    );
}

#[test]
fn bad_requests_get_openai_errors_not_panics() {
    let s = start();
    let wrong_model = post(&s, "/v1/completions", json!({"model": "gpt-4o", "prompt": "a"}));
    assert_eq!(wrong_model.status, 404);
    assert_eq!(
        wrong_model.json::<ErrorBody>().error.code.as_deref(),
        Some("model_not_found")
    );
    let not_json = request(&s, "POST", "/v1/completions", Some(b"{not json"));
    assert_eq!(not_json.status, 400);
    assert_eq!(not_json.json::<ErrorBody>().error.kind, "invalid_request_error");
    let wrong_type = post(
        &s,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "a", "temperature": "hot"}),
    );
    assert_eq!(wrong_type.status, 400);
    for (body, param) in [
        (json!({"model": MODEL, "prompt": ""}), "prompt"),
        (json!({"model": MODEL, "prompt": "a", "max_tokens": 0}), "max_tokens"),
        (json!({"model": MODEL, "prompt": "a", "temperature": 3}), "temperature"),
        (json!({"model": MODEL, "prompt": "a", "top_p": 0}), "top_p"),
        (json!({"model": MODEL, "prompt": [300]}), "prompt"),
    ] {
        let a = post(&s, "/v1/completions", body.clone());
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.json::<ErrorBody>().error.param.as_deref(), Some(param), "{body}");
    }
    let chat = post(&s, "/v1/chat/completions", json!({"model": MODEL, "messages": []}));
    assert_eq!(chat.json::<ErrorBody>().error.param.as_deref(), Some("messages"));
    let nowhere = request(&s, "GET", "/v1/embeddings", None);
    assert_eq!(nowhere.status, 404);
    assert!(nowhere.json::<ErrorBody>().error.message.contains("/v1/completions"));
    let method = request(&s, "GET", "/v1/completions", None);
    assert_eq!(method.status, 405);
    method.json::<ErrorBody>();
}

#[test]
fn a_body_over_the_limit_is_refused_before_it_is_read() {
    let s = start();
    let mut c = TcpStream::connect(s.addr).expect("connect");
    c.set_read_timeout(Some(Duration::from_secs(60))).expect("timeout");
    // Only the headers are sent: the server refuses on the declared length.
    let head = format!(
        "POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        MAX_BODY_BYTES + 1
    );
    c.write_all(head.as_bytes()).expect("write");
    let a = read_answer(c);
    assert_eq!(a.status, 413);
    let e: ErrorBody = a.json();
    assert_eq!(e.error.code.as_deref(), Some("request_too_large"));
}

#[test]
fn a_chat_completion_continues_the_messages_joined_by_newlines() {
    let s = start();
    // The template gives "a\n" for this message; "\n" embeds like any byte off the cycle and
    // leads to `a`, then the cycle.
    let a = post(
        &s,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "a"}], "max_completion_tokens": 10, "temperature": 0}),
    );
    assert_eq!(a.status, 200, "{}", String::from_utf8_lossy(&a.body));
    let c: ChatCompletion = a.json();
    assert_eq!(c.object, "chat.completion");
    assert!(c.id.starts_with("chatcmpl-"));
    assert_eq!(c.choices[0].message.role, "assistant");
    assert_eq!(c.choices[0].message.content, "aé€😀");
    assert_eq!(c.choices[0].finish_reason, ApiFinish::Length);
    assert_eq!((c.usage.prompt_tokens, c.usage.completion_tokens), (2, 10));
}

#[test]
fn a_streamed_chat_sends_the_role_then_whole_utf8_pieces_then_the_finish_and_done() {
    let s = start();
    let a = post(
        &s,
        "/v1/chat/completions",
        json!({"model": MODEL, "messages": [{"role": "user", "content": "a"}], "max_tokens": 23,
               "temperature": 0, "stream": true, "stream_options": {"include_usage": true}}),
    );
    assert_eq!(a.status, 200);
    assert!(a.content_type.starts_with("text/event-stream"), "{}", a.content_type);
    let events = a.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<ChatChunk> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect();
    let (first, rest) = chunks.split_first().expect("chunks");
    assert_eq!(first.choices[0].delta.role.as_deref(), Some("assistant"));
    let usage_chunk = rest.last().expect("a usage chunk");
    assert!(usage_chunk.choices.is_empty());
    let u = usage_chunk.usage.expect("usage");
    assert_eq!((u.prompt_tokens, u.completion_tokens, u.total_tokens), (2, 23, 25));
    let finish = &rest[rest.len() - 2];
    assert_eq!(finish.choices[0].finish_reason, Some(ApiFinish::Length));
    assert_eq!(finish.choices[0].delta.content, None);
    let pieces: Vec<&str> = rest[..rest.len() - 2]
        .iter()
        .map(|c| {
            assert_eq!(c.object, "chat.completion.chunk");
            assert_eq!((c.id.as_str(), c.created), (first.id.as_str(), first.created));
            assert_eq!(c.choices[0].finish_reason, None);
            c.choices[0].delta.content.as_deref().expect("content")
        })
        .collect();
    // Every multi-byte sequence arrived whole: no piece has a replacement character, and the
    // pieces are the characters of the text (one per byte-complete sequence).
    let text: String = pieces.concat();
    let mut expected = vec![b'a'];
    expected.extend(cycle_bytes(22));
    assert_eq!(text.as_bytes(), expected.as_slice());
    assert!(
        pieces.iter().all(|p| !p.contains('\u{fffd}') && p.chars().count() == 1),
        "{pieces:?}"
    );
}

#[test]
fn a_streamed_completion_ends_with_finish_reason_and_done_and_a_cut_sequence_is_lossy_at_the_end() {
    let s = start();
    // Three bytes after `a` are é and the first byte of €: the stream ends with that byte lossily.
    let a = post(
        &s,
        "/v1/completions",
        json!({"model": MODEL, "prompt": "a", "max_tokens": 3, "temperature": 0, "stream": true, "echo": true}),
    );
    assert_eq!(a.status, 200);
    let events = a.events();
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Completion> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap_or_else(|err| panic!("{err}: {e}")))
        .collect();
    assert!(chunks
        .iter()
        .all(|c| c.object == "text_completion" && c.usage.is_none()));
    let texts: Vec<&str> = chunks.iter().map(|c| c.choices[0].text.as_str()).collect();
    assert_eq!(texts, ["a", "é", "\u{fffd}", ""]);
    assert_eq!(
        chunks.last().and_then(|c| c.choices[0].finish_reason),
        Some(ApiFinish::Length)
    );
    assert!(chunks[..chunks.len() - 1]
        .iter()
        .all(|c| c.choices[0].finish_reason.is_none()));
}

#[test]
fn a_router_refuses_a_model_that_is_not_byte_tokenized() {
    let spec = ModelSpec {
        vocab: 300,
        dim: 8,
        layers: 1,
        heads: 1,
        ffn_dim: 8,
        seq_len: 4,
    };
    let n = spec.params() as usize;
    let engine = Engine::new(
        &spec,
        &vec![0.01; n],
        EngineOptions {
            precision: Precision::F32,
            threads: 1,
            simd: SimdLevel::Best,
        },
    )
    .expect("an engine");
    let r = serve::router(
        Arc::new(engine),
        ServeConfig {
            model_id: MODEL.into(),
            created: 0,
            concurrency: 1,
            queue: 0,
            allow_remote: false,
            send_timeout: serve::DEFAULT_SEND_TIMEOUT,
        },
    );
    assert!(matches!(r, Err(serve::ServeError::NotByteModel(300))));
}

#[test]
fn requests_a_web_page_could_send_are_refused_but_local_json_ones_are_served() {
    let s = start();
    let port = s.addr.port();
    let body = json!({"model": MODEL, "prompt": "a", "max_tokens": 2, "temperature": 0}).to_string();
    let json_type = "Content-Type: application/json".to_string();
    // DNS rebinding: a page's own name, resolved to 127.0.0.1, reads the answers.
    for host in [
        format!("evil.example:{port}"),
        "127.0.0.1.evil.example".into(),
        "0.0.0.0".into(),
    ] {
        let a = raw(&s, "GET", "/v1/models", &[format!("Host: {host}")], None);
        assert_eq!(a.status, 403, "{host}");
        let e: ErrorBody = a.json();
        assert_eq!(e.error.code.as_deref(), Some("forbidden_host"), "{host}");
        assert!(e.error.message.contains("--allow-remote"), "{}", e.error.message);
    }
    let no_host = raw(&s, "GET", "/health", &[], None);
    assert_eq!(no_host.status, 403);
    assert_eq!(
        no_host.json::<ErrorBody>().error.code.as_deref(),
        Some("forbidden_host")
    );
    // A page elsewhere posting to loopback.
    for origin in ["http://evil.example", "null", "https://localhost.evil.example"] {
        let a = raw(
            &s,
            "POST",
            "/v1/completions",
            &[
                format!("Host: 127.0.0.1:{port}"),
                format!("Origin: {origin}"),
                json_type.clone(),
            ],
            Some(body.as_bytes()),
        );
        assert_eq!(a.status, 403, "{origin}");
        assert_eq!(a.json::<ErrorBody>().error.code.as_deref(), Some("forbidden_origin"));
    }
    // A "simple" request a browser sends without a preflight.
    for content_type in [Some("text/plain"), Some("application/x-www-form-urlencoded"), None] {
        let mut headers = vec![format!("Host: 127.0.0.1:{port}")];
        headers.extend(content_type.map(|c| format!("Content-Type: {c}")));
        let a = raw(&s, "POST", "/v1/completions", &headers, Some(body.as_bytes()));
        assert_eq!(a.status, 415, "{content_type:?}");
        let e: ErrorBody = a.json();
        assert_eq!(e.error.code.as_deref(), Some("unsupported_media_type"));
        assert!(e.error.message.contains("application/json"), "{}", e.error.message);
    }
    // Loopback names in any case, any port, a local origin, JSON with a charset: served.
    for (host, origin) in [
        (format!("127.0.0.1:{port}"), None),
        (format!("[::1]:{port}"), None),
        ("LocalHost".to_string(), Some("http://localhost:5173")),
    ] {
        let mut headers = vec![
            format!("Host: {host}"),
            "Content-Type: application/json; charset=utf-8".to_string(),
        ];
        headers.extend(origin.map(|o| format!("Origin: {o}")));
        let a = raw(&s, "POST", "/v1/completions", &headers, Some(body.as_bytes()));
        assert_eq!(a.status, 200, "{host} {}", String::from_utf8_lossy(&a.body));
        let c: Completion = a.json();
        assert_eq!(c.choices[0].text.as_bytes(), &cycle_bytes(2)[..]);
    }
}

#[test]
fn with_remote_access_allowed_any_host_and_origin_is_served_but_posts_must_still_be_json() {
    let s = start_with(ServeConfig {
        allow_remote: true,
        ..config()
    });
    let a = raw(
        &s,
        "GET",
        "/v1/models",
        &["Host: model.lan:8080".into(), "Origin: http://dashboard.lan".into()],
        None,
    );
    assert_eq!(a.status, 200);
    let plain = raw(
        &s,
        "POST",
        "/v1/completions",
        &["Host: model.lan:8080".into(), "Content-Type: text/plain".into()],
        Some(json!({"model": MODEL, "prompt": "a"}).to_string().as_bytes()),
    );
    assert_eq!(plain.status, 415);
}

#[test]
fn a_stop_ends_the_server_even_while_a_request_never_finishes() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("a loopback port");
    let addr = listener.local_addr().expect("its address");
    let app = serve::router(Arc::new(cycle_engine()), config()).expect("a router");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = rt.spawn(serve::serve(
        listener,
        app,
        async move {
            let _ = stopped.await;
        },
        Duration::from_millis(200),
    ));
    // A request whose body never comes: graceful shutdown alone would wait for it forever.
    let mut c = TcpStream::connect(addr).expect("connect");
    c.write_all(
        b"POST /v1/completions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
          Content-Length: 100\r\n\r\n{",
    )
    .expect("write");
    // The request is in flight once the server answers another connection after it.
    let s = Server {
        addr,
        _rt: tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime"),
    };
    assert_eq!(request(&s, "GET", "/health", None).status, 200);
    stop.send(()).expect("the server waits for the stop");
    // A guard against a hung test, not a timing assertion: without the grace's end the server
    // never returns.
    let ended = rt
        .block_on(async { tokio::time::timeout(Duration::from_secs(60), server).await })
        .expect("the server ends after its grace")
        .expect("the server's task");
    assert!(ended.is_ok(), "{ended:?}");
    drop(c);
}
