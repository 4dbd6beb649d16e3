//! One client connection: frames in, JSON-RPC dispatch, frames out.
//!
//! jsonrpsee ships no local-socket transport, so this module is the
//! server loop: it reads frames ([`crate::server::transport`]), answers malformed
//! input with the JSON-RPC 2.0 error codes, handles batches and
//! notifications, and calls the method callbacks that the `#[rpc]` trait
//! generated — with this connection's own id, its own outgoing channel and
//! its own subscription limit, so that subscriptions are cleaned up when the
//! connection goes away.
//!
//! Every request runs in its own task: a slow run never blocks a status
//! call on the same connection, and a panic answers that request with an
//! internal error and harms nothing else.
//!
//! Memory per connection is bounded. Outgoing messages wait in a queue of
//! [`OUT_QUEUE`] messages; a client that does not read blocks its runs
//! (their tasks block on a full pipe, as under a stopped terminal) and,
//! once [`REQUEST_BUDGET`] bytes of its requests are waiting to be
//! answered, the daemon stops reading its requests too. A batch holds at
//! most [`MAX_BATCH`] requests and [`MAX_BATCH_ANSWER`] bytes of answers,
//! and a connection works on one batch at a time.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use jsonrpsee::core::server::{
    BoundedSubscriptions, ConnectionId, Extensions, MethodCallback, MethodResponse, MethodSink,
    Methods, SubscriptionState,
};
use jsonrpsee::core::traits::IdProvider;
use jsonrpsee::types::{ErrorCode, ErrorObject, Id, Params};
use serde_json::value::RawValue;
use taskrush_protocol::error::{BUSY, INVALID_PARAMS, TOO_LARGE};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::UnixStream;
use tokio::sync::{Semaphore, mpsc, watch};

use crate::server::client_stdio::ClientStdio;
use crate::server::params;
use crate::server::transport::{FrameError, FrameReader, Framing};

/// Requests in flight per connection (subscriptions count while they last).
const MAX_IN_FLIGHT: usize = 64;
/// Live subscriptions (runs) per connection.
const MAX_SUBSCRIPTIONS: u32 = 32;
/// Outgoing messages buffered per connection before senders wait (a run's
/// output event is at most 64 KiB of output).
pub(crate) const OUT_QUEUE: usize = 16;
/// Bytes of received requests being handled per connection; past it the
/// daemon reads no more requests from that client until it reads answers.
pub(crate) const REQUEST_BUDGET: usize = crate::server::transport::MAX_FRAME;
/// Requests in one batch.
pub(crate) const MAX_BATCH: usize = 1000;
/// Bytes of answers to one batch; the requests after that are not run and
/// are answered with an error (`-32006`).
pub(crate) const MAX_BATCH_ANSWER: usize = 4 * 1024 * 1024;
/// Largest response the daemon sends.
const MAX_RESPONSE: usize = 64 * 1024 * 1024;

static NEXT_CONNECTION: AtomicUsize = AtomicUsize::new(1);

/// Subscription ids: a counter, so unique and never reused in the daemon's
/// life. Guessing one gains nothing: a subscription is bound to its
/// connection, and only that connection can unsubscribe it.
#[derive(Debug)]
struct CounterIds;

static NEXT_SUBSCRIPTION: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl IdProvider for CounterIds {
    fn next_id(&self) -> jsonrpsee::types::SubscriptionId<'static> {
        jsonrpsee::types::SubscriptionId::Num(NEXT_SUBSCRIPTION.fetch_add(1, Ordering::Relaxed))
    }
}

/// Once the daemon is stopping, how long a write to a client may wait for
/// it to read; past it the client's last events are dropped, so that runs
/// blocked on a client that does not read end with the daemon.
const STOP_WRITE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// Serve one connection until the peer closes it or breaks the framing.
/// `stopping` becomes true when the daemon stops.
pub(crate) async fn serve(stream: UnixStream, methods: Methods, stopping: watch::Receiver<bool>) {
    let conn_id = ConnectionId(NEXT_CONNECTION.fetch_add(1, Ordering::Relaxed));
    // The first read also takes the descriptors a CLI may pass with its
    // first message (see `client_stdio`).
    let (first, stdio) = match first_read(&stream).await {
        Ok((first, _)) if first.is_empty() => return,
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(conn = conn_id.0, "first read failed: {e}");
            return;
        }
    };
    let client = Arc::new(ClientInfo {
        id: conn_id.0 as u64,
        pid: stream
            .peer_cred()
            .ok()
            .and_then(|c| c.pid())
            .and_then(|p| u32::try_from(p).ok()),
        ..Default::default()
    });
    let (read, write) = stream.into_split();
    let mut reader = FrameReader::with_buffered(read, first);
    let (tx, rx) = mpsc::channel::<Box<RawValue>>(OUT_QUEUE);
    let (gone_tx, gone_rx) = watch::channel(false);
    let ctx = Arc::new(Conn {
        client,
        stdio: stdio.map(Arc::new),
        gone: ClientGone(gone_rx),
        methods,
        conn_id,
        out: tx,
        subscribing: Arc::default(),
        subscriptions: BoundedSubscriptions::new(MAX_SUBSCRIPTIONS),
        in_flight: Arc::new(Semaphore::new(MAX_IN_FLIGHT)),
        batch: Semaphore::new(1),
    });
    let request_bytes = Arc::new(Semaphore::new(REQUEST_BUDGET));

    // The writer starts with the first frame, when the framing is known.
    let mut unstarted = Some((write, rx));
    let mut writer = None;
    loop {
        let frame = match reader.next().await {
            Ok(Some(frame)) => Some(frame),
            Ok(None) => break,
            Err(e) => {
                tracing::debug!(conn = conn_id.0, "closing connection: {e}");
                if !matches!(e, FrameError::TooLarge) {
                    break;
                }
                None
            }
        };
        if let Some((write, rx)) = unstarted.take() {
            let framing = reader.framing().unwrap_or(Framing::Lines);
            writer = Some(tokio::spawn(write_loop(
                write,
                rx,
                framing,
                stopping.clone(),
                ctx.subscribing.clone(),
            )));
        }
        let Some(frame) = frame else {
            // An oversized frame cannot be skipped reliably: answer, close.
            let msg = error_json(Id::Null, TOO_LARGE, "message too large");
            let _ = ctx.out.send(msg).await;
            break;
        };
        // Wait while too many request bytes are unanswered: a client that
        // does not read its answers is not read from either.
        let weight = frame.len().clamp(1, REQUEST_BUDGET) as u32;
        let Ok(bytes) = request_bytes.clone().acquire_many_owned(weight).await else {
            break;
        };
        let Ok(permit) = ctx.in_flight.clone().try_acquire_owned() else {
            let msg = error_json(
                Id::Null,
                BUSY,
                "too many requests in flight on this connection",
            );
            let _ = ctx.out.send(msg).await;
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let _bytes = bytes;
            if let Some(reply) = ctx.handle_frame(frame).await {
                let _ = ctx.out.send(reply).await;
            }
        });
    }
    // The client closed its side (or broke the framing): its runs are
    // cancelled. The writer finishes once every request and subscription
    // has dropped its sender.
    let _ = gone_tx.send(true);
    drop(ctx);
    if let Some(w) = writer {
        let _ = w.await;
    }
}

async fn write_loop<W: AsyncWrite + Unpin>(
    mut write: W,
    mut rx: mpsc::Receiver<Box<RawValue>>,
    framing: Framing,
    mut stopping: watch::Receiver<bool>,
    subscribing: Arc<Subscribing>,
) {
    while let Some(msg) = rx.recv().await {
        let msg = restore_id(msg, &subscribing);
        let bytes = framing.encode(msg.get().as_bytes());
        let mut sent = std::pin::pin!(write.write_all(&bytes));
        let sent = tokio::select! {
            r = &mut sent => r.is_ok(),
            () = async { let _ = stopping.wait_for(|s| *s).await; } => {
                // Stopping: a client that does not read within the grace
                // no longer holds its runs (blocked on this queue) alive.
                matches!(tokio::time::timeout(STOP_WRITE_GRACE, &mut sent).await, Ok(Ok(())))
            }
        };
        if !sent {
            break;
        }
        // Flush only when nothing else is queued: fewer syscalls under load,
        // no latency when idle.
        if rx.is_empty() && write.flush().await.is_err() {
            break;
        }
    }
    // Closing the receiver tells every subscription the client is gone.
    rx.close();
    let _ = write.shutdown().await;
}

/// Put in every request's extensions: becomes `true` when the client
/// closed its side of the connection, which cancels its runs.
#[derive(Clone, Debug)]
pub(crate) struct ClientGone(pub watch::Receiver<bool>);

impl ClientGone {
    /// Resolves once the client is gone.
    pub(crate) async fn wait(mut self) {
        let _ = self.0.wait_for(|gone| *gone).await;
    }
}

/// Who is at the other end of a connection; put in every request's
/// extensions.
#[derive(Debug, Default)]
pub(crate) struct ClientInfo {
    /// The connection's id.
    pub(crate) id: u64,
    /// The client's process id (`SO_PEERCRED`), where known.
    pub(crate) pid: Option<u32>,
    /// The name it gave in `hello`.
    pub(crate) name: std::sync::Mutex<Option<String>>,
    /// The tokens of its runs in progress, and their run ids.
    pub(crate) tokens: std::sync::Mutex<std::collections::HashMap<String, u64>>,
}

impl ClientInfo {
    /// As runs and the event stream tell it.
    pub(crate) fn describe(&self) -> taskrush_protocol::events::RunClient {
        taskrush_protocol::events::RunClient {
            id: self.id,
            name: self.name.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            pid: self.pid,
        }
    }
}

struct Conn {
    /// Who the client is.
    client: Arc<ClientInfo>,
    /// The client's stdin/stdout/stderr, if it passed them.
    stdio: Option<Arc<ClientStdio>>,
    gone: ClientGone,
    methods: Methods,
    conn_id: ConnectionId,
    out: mpsc::Sender<Box<RawValue>>,
    /// Subscription calls not answered yet.
    subscribing: Arc<Subscribing>,
    subscriptions: BoundedSubscriptions,
    in_flight: Arc<Semaphore>,
    /// One batch at a time, from its first request until its answer is
    /// queued.
    batch: Semaphore,
}

impl Conn {
    /// Answer one frame: a single message or a batch. `None` when nothing
    /// is to be sent (notifications, subscriptions that answered already).
    async fn handle_frame(self: &Arc<Self>, frame: Vec<u8>) -> Option<Box<RawValue>> {
        let Ok(text) = std::str::from_utf8(&frame) else {
            return Some(error_json(
                Id::Null,
                ErrorCode::ParseError.code(),
                "message is not UTF-8",
            ));
        };
        let trimmed = text.trim_start();
        if trimmed.starts_with('[') {
            let items: Vec<&RawValue> = match serde_json::from_str(trimmed) {
                Ok(items) => items,
                Err(e) => {
                    return Some(error_json(
                        Id::Null,
                        ErrorCode::ParseError.code(),
                        &e.to_string(),
                    ));
                }
            };
            if items.is_empty() {
                return Some(error_json(
                    Id::Null,
                    ErrorCode::InvalidRequest.code(),
                    "empty batch",
                ));
            }
            if items.len() > MAX_BATCH {
                return Some(error_json(
                    Id::Null,
                    TOO_LARGE,
                    &format!(
                        "batch of {} requests is above the limit of {MAX_BATCH}; send them in smaller batches",
                        items.len()
                    ),
                ));
            }
            let Ok(_one_batch) = self.batch.acquire().await else {
                return None;
            };
            // The answers, joined as they come: past the answer limit, the
            // remaining requests are not run and each gets an error.
            let mut joined = String::from("[");
            let mut any = false;
            for item in items {
                let reply = if joined.len() > MAX_BATCH_ANSWER {
                    request_id(item.get()).map(|id| {
                        error_json(
                            id,
                            TOO_LARGE,
                            &format!(
                                "not run: the answers to this batch passed {} MiB; send smaller batches",
                                MAX_BATCH_ANSWER >> 20
                            ),
                        )
                    })
                } else {
                    self.clone().handle_isolated(item.get().to_owned()).await
                };
                if let Some(r) = reply {
                    if any {
                        joined.push(',');
                    }
                    joined.push_str(restore_id(r, &self.subscribing).get());
                    any = true;
                }
            }
            if !any {
                return None;
            }
            joined.push(']');
            let answer = RawValue::from_string(joined).ok()?;
            // Queue a batch answer only into an empty queue, so that a
            // client that does not read holds at most one.
            if let Ok(mut slots) = self.out.reserve_many(OUT_QUEUE).await
                && let Some(slot) = slots.next()
            {
                slot.send(answer);
            }
            return None;
        }
        self.clone().handle_isolated(text.to_owned()).await
    }

    /// Handle one message in its own task, so that a panic in a method
    /// becomes an internal error for that message only.
    async fn handle_isolated(self: Arc<Self>, text: String) -> Option<Box<RawValue>> {
        let id = request_id(&text);
        let handle = tokio::spawn(async move { self.handle_one(&text).await });
        match handle.await {
            Ok(reply) => reply,
            Err(e) => {
                tracing::error!("request handler failed: {e}");
                id.map(|id| {
                    error_json(
                        id,
                        ErrorCode::InternalError.code(),
                        "internal error while handling the request",
                    )
                })
            }
        }
    }

    async fn handle_one(&self, text: &str) -> Option<Box<RawValue>> {
        match serde_json::from_str::<Envelope<'_>>(text) {
            Ok(msg) => {
                let named = params::by_name(&msg.method, msg.params.map(RawValue::get));
                let params = match &named {
                    Ok(Some(named)) => Some(named.as_str()),
                    Ok(None) => msg.params.map(RawValue::get),
                    Err(_) => None,
                };
                return match (msg.id, &named) {
                    (None, Err(_)) => None,
                    (None, Ok(_)) => {
                        self.call(None, &msg.method, params).await;
                        None
                    }
                    (Some(raw), Err(too_many)) => Some(error_json(
                        placeholder_id(raw).unwrap_or(Id::Null),
                        INVALID_PARAMS,
                        too_many,
                    )),
                    (Some(raw), Ok(_)) => match placeholder_id(raw) {
                        Ok(id) => self.call(Some(id), &msg.method, params).await,
                        Err(kind) => Some(error_json(
                            Id::Null,
                            ErrorCode::InvalidRequest.code(),
                            &format!(
                                "invalid request: `id` must be a number or a string, not {kind}; the request was not carried out"
                            ),
                        )),
                    },
                };
            }
            Err(e) if serde_json::from_str::<&RawValue>(text).is_err() => {
                let msg = serde_json::from_str::<serde_json::Value>(text)
                    .err()
                    .map_or_else(|| e.to_string(), |e| e.to_string());
                return Some(error_json(
                    Id::Null,
                    ErrorCode::ParseError.code(),
                    &format!("parse error: {msg}"),
                ));
            }
            Err(_) => {}
        }
        let id = request_id(text).unwrap_or(Id::Null);
        Some(error_json(
            id,
            ErrorCode::InvalidRequest.code(),
            "invalid request: expected {\"jsonrpc\": \"2.0\", \"method\": …, \"id\": …}",
        ))
    }

    /// Carry out one method; `id` is `None` for a notification, which is
    /// never answered, and which cannot start a subscription (`run`,
    /// `events`, `dispatch`): there would be no way to follow it.
    async fn call(
        &self,
        id: Option<Id<'_>>,
        method: &str,
        params_text: Option<&str>,
    ) -> Option<Box<RawValue>> {
        let notification = id.is_none();
        let id = id.unwrap_or(Id::Null);
        let params = Params::new(params_text);
        // Debug builds only: lets tests prove that a panic while handling
        // one request answers that request and harms nothing else.
        #[cfg(debug_assertions)]
        if method == "debug_panic" {
            panic!("debug_panic requested");
        }
        let mut ext = Extensions::new();
        ext.insert(self.conn_id);
        ext.insert(self.gone.clone());
        ext.insert(self.client.clone());
        if let Some(stdio) = &self.stdio {
            ext.insert(stdio.clone());
        }
        let response = match self.methods.method(method) {
            None => MethodResponse::error(
                id,
                ErrorObject::owned(
                    ErrorCode::MethodNotFound.code(),
                    format!("unknown method `{method}`"),
                    None::<()>,
                ),
            ),
            Some(MethodCallback::Sync(cb)) => (cb)(id, params, MAX_RESPONSE, ext),
            Some(MethodCallback::Async(cb)) => {
                (cb)(
                    id.into_owned(),
                    params.into_owned(),
                    self.conn_id,
                    MAX_RESPONSE,
                    ext,
                )
                .await
            }
            Some(MethodCallback::Unsubscription(cb)) => {
                (cb)(id, params, self.conn_id, MAX_RESPONSE, ext)
            }
            Some(MethodCallback::Subscription(_)) if notification => return None,
            Some(MethodCallback::Subscription(cb)) => {
                let Some(permit) = self.subscriptions.acquire() else {
                    return Some(error_json(id, BUSY, "too many runs on this connection"));
                };
                let state = SubscriptionState {
                    conn_id: self.conn_id,
                    id_provider: &CounterIds,
                    subscription_permit: permit,
                };
                // Its answer goes out through the sink: remember what to
                // name a parameter error with (see `restore_id`).
                let id = self.subscribing.remember(id, method, params_text);
                let sink = MethodSink::new_with_limit(self.out.clone(), MAX_RESPONSE as u32);
                // The callback answers through the sink itself.
                let _ = (cb)(id, params, sink, state, ext).await;
                return None;
            }
        };
        if notification || response.is_notification() {
            return None;
        }
        if response.as_error_code() == Some(INVALID_PARAMS) {
            return Some(params::name_error(
                method,
                params_text,
                response.into_json(),
            ));
        }
        Some(response.into_json())
    }
}

/// Read the first bytes of a connection with `recvmsg`, keeping the file
/// descriptors that came with them (exactly three, or none are kept).
async fn first_read(stream: &UnixStream) -> std::io::Result<(Vec<u8>, Option<ClientStdio>)> {
    use std::mem::MaybeUninit;

    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    loop {
        stream.readable().await?;
        // Small: the first message is the handshake; the rest of a larger
        // one comes through the frame reader.
        let mut buf = vec![0u8; 4 * 1024];
        let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(3))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let got = stream.try_io(tokio::io::Interest::READABLE, || {
            let mut iov = [std::io::IoSliceMut::new(&mut buf)];
            rustix::net::recvmsg(stream, &mut iov, &mut control, RecvFlags::CMSG_CLOEXEC)
                .map_err(std::io::Error::from)
        });
        match got {
            Ok(msg) => {
                let mut fds = Vec::new();
                for m in control.drain() {
                    if let RecvAncillaryMessage::ScmRights(received) = m {
                        fds.extend(received);
                    }
                }
                buf.truncate(msg.bytes);
                buf.shrink_to_fit();
                let stdio = if fds.is_empty() {
                    None
                } else {
                    ClientStdio::from_fds(fds)
                };
                return Ok((buf, stdio));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        }
    }
}

/// The fields of a JSON-RPC message the daemon reads itself. jsonrpsee's
/// own `Id` knows only `null`, unsigned integers and strings, so the id is
/// kept as its raw JSON text: a negative or fractional id is answered with
/// exactly the text the client sent, and an id of another type is refused
/// before the method is carried out.
#[derive(serde::Deserialize)]
struct Envelope<'a> {
    #[allow(dead_code)] // checked by deserializing
    jsonrpc: jsonrpsee::types::TwoPointZero,
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    #[serde(borrow, default)]
    params: Option<&'a RawValue>,
    /// `None` when absent (a notification); `Some("null")` when null.
    #[serde(borrow, default, deserialize_with = "present")]
    id: Option<&'a RawValue>,
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<&'de RawValue>, D::Error> {
    serde::Deserialize::deserialize(d).map(Some)
}

/// Marks a placeholder id: jsonrpsee answers with it, and [`restore_id`]
/// puts the client's own id text back before the answer is sent.
const PLACEHOLDER: &str = "\u{0}rid:";
/// How an answer carrying a placeholder id begins, as jsonrpsee writes it.
const ANSWER_HEAD: &str = "{\"jsonrpc\":\"2.0\",\"id\":";

/// The id to hand to jsonrpsee for a client's raw id: `null` stays null, a
/// number or a string becomes a placeholder holding its exact text; any
/// other type is refused (its kind is returned, for the error message).
fn placeholder_id(raw: &RawValue) -> Result<Id<'static>, &'static str> {
    let text = raw.get();
    match text.as_bytes().first() {
        Some(b'n') => Ok(Id::Null),
        // Ids jsonrpsee writes back exactly as sent need no placeholder
        // (the CLI's, and most clients'): an unsigned integer as
        // serde_json writes it, a string without escapes.
        Some(b'1'..=b'9') | Some(b'0') if text == "0" || !text.starts_with('0') => {
            match text.parse::<u64>() {
                Ok(n) if n.to_string() == text => Ok(Id::Number(n)),
                _ => Ok(Id::Str(format!("{PLACEHOLDER}{text}").into())),
            }
        }
        Some(b'"') if !text.contains('\\') => {
            Ok(Id::Str(text[1..text.len() - 1].to_owned().into()))
        }
        Some(b'"' | b'-' | b'0'..=b'9') => Ok(Id::Str(format!("{PLACEHOLDER}{text}").into())),
        Some(b't' | b'f') => Err("a boolean"),
        Some(b'{') => Err("an object"),
        Some(b'[') => Err("an array"),
        _ => Err("this value"),
    }
}

/// Subscription calls (`run`, `events`, `dispatch`) answer through their
/// sink, straight into the outgoing queue: their placeholder id holds a key
/// to the method and params, so that [`restore_id`] can name a parameter
/// error in the answer.
#[derive(Default)]
pub(crate) struct Subscribing {
    next: std::sync::atomic::AtomicU64,
    calls: std::sync::Mutex<std::collections::HashMap<u64, (String, Option<String>)>>,
}

impl Subscribing {
    /// The id to hand to a subscription callback in place of `id`.
    fn remember(&self, id: Id<'_>, method: &str, params: Option<&str>) -> Id<'static> {
        let raw = match &id {
            Id::Null => "null".to_owned(),
            Id::Number(n) => n.to_string(),
            Id::Str(s) => match s.strip_prefix(PLACEHOLDER) {
                Some(raw) => raw.to_owned(),
                None => serde_json::to_string(s.as_ref()).unwrap_or_else(|_| "null".into()),
            },
        };
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut calls) = self.calls.lock() {
            calls.insert(key, (method.to_owned(), params.map(str::to_owned)));
        }
        Id::Str(format!("{SUBSCRIBING}{key}:{raw}").into())
    }

    fn take(&self, key: u64) -> Option<(String, Option<String>)> {
        self.calls.lock().ok()?.remove(&key)
    }
}

/// Marks the placeholder id of a subscription call: key, `:`, raw id.
const SUBSCRIBING: &str = "\u{0}sub:";

/// Put the client's id text back into an answer that carries a placeholder
/// id (naming a parameter error in a subscription's answer); other
/// messages are returned unchanged.
pub(crate) fn restore_id(msg: Box<RawValue>, subscribing: &Subscribing) -> Box<RawValue> {
    let text = msg.get();
    let Some(rest) = text.strip_prefix(ANSWER_HEAD) else {
        return msg;
    };
    if !rest.starts_with("\"\\u0000") {
        return msg;
    }
    let mut strings = serde_json::Deserializer::from_str(rest).into_iter::<String>();
    let Some(Ok(id)) = strings.next() else {
        return msg;
    };
    let end = strings.byte_offset();
    let (raw, call) = if let Some(raw) = id.strip_prefix(PLACEHOLDER) {
        (raw, None)
    } else if let Some((key, raw)) = id.strip_prefix(SUBSCRIBING).and_then(|r| r.split_once(':')) {
        (raw, key.parse().ok().and_then(|k| subscribing.take(k)))
    } else {
        return msg;
    };
    let is_error = rest[end..].starts_with(",\"error\"");
    let restored = format!("{ANSWER_HEAD}{raw}{}", &rest[end..]);
    let Ok(restored) = RawValue::from_string(restored) else {
        return msg;
    };
    match call {
        // Only an error answer needs it (an accepted subscription's answer
        // is its id).
        Some((method, params)) if is_error => {
            params::name_error(&method, params.as_deref(), restored)
        }
        _ => restored,
    }
}

/// The id of a request to answer it with (a placeholder, see
/// [`restore_id`]), when one can be read from it.
fn request_id(text: &str) -> Option<Id<'static>> {
    #[derive(serde::Deserialize)]
    struct OnlyId<'a> {
        #[serde(borrow, default, deserialize_with = "present")]
        id: Option<&'a RawValue>,
    }
    let raw = serde_json::from_str::<OnlyId<'_>>(text).ok()?.id?;
    placeholder_id(raw).ok()
}

pub(crate) fn error_json(id: Id<'_>, code: i32, message: &str) -> Box<RawValue> {
    let err = ErrorObject::owned(code, message.to_owned(), None::<()>);
    MethodResponse::error(id, err).into_json()
}
