//! Live chat rooms in an actix-web service: [`configure`] mounts the chat routes on an
//! `App` or a `web::scope`. All behaviour lives in [`chatroom_core`]; this crate only
//! converts actix-ws messages and serves the HTTP API.
//!
//! ```no_run
//! use std::time::Duration;
//!
//! use actix_web::{App, HttpServer, web};
//! use chatroom_actix::{Hub, Limits};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     // actix's workers are single-threaded: the rooms get a runtime of their own, so
//!     // that they run in parallel, apart from the connections.
//!     let rooms = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
//!     let hub = Hub::builder()
//!         .limits(Limits::default())
//!         .runtime(rooms.handle().clone())
//!         .build();
//!     let chat = hub.clone();
//!     let served = HttpServer::new(move || {
//!         App::new()
//!             .route("/", web::get().to(|| async { "my app" }))
//!             .service(web::scope("/chat").configure(chatroom_actix::configure(chat.clone())))
//!     })
//!     // The kernel ends sockets whose peer stopped reading (see below).
//!     .on_connect(chatroom_actix::end_stalled_connections(Duration::from_secs(30)))
//!     // Chat frames are small and latency matters: actix leaves Nagle's algorithm
//!     // on, which can hold a frame for the peer's delayed ACK (up to 40 ms).
//!     .tcp_nodelay(true)
//!     // On SIGINT or SIGTERM every chat closes with 1001, then the server stops
//!     // gracefully. (This replaces actix's own signal handlers: with them, SIGINT
//!     // starts a forced stop that races the 1001.)
//!     .shutdown_signal(hub.shutdown_on_signal())
//!     .bind(("127.0.0.1", 8080))?
//!     .run()
//!     .await;
//!     rooms.shutdown_background();
//!     served
//! }
//! ```
//!
//! # Routes
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /ws` | the WebSocket of docs/protocol.md |
//! | `GET /rooms?limit=&cursor=` | `[{"room": "General", "members": 2}]`, largest first, 100 a page (`Link: <...>; rel="next"` when more) |
//! | `GET /rooms/{room}` | `{"room": "General", "members": ["Alice", "Bob"]}` or 404 |
//! | `GET /rooms/{room}/names/{name}` | `{"available": bool, "reason": "name_taken" \| "invalid_name" \| null}` |
//!
//! # Logs when a chat connection ends
//!
//! actix keeps reading an upgraded connection's request until the client goes away,
//! while a client that finished the WebSocket closing handshake waits for the server
//! to end the TCP connection. To end it, the adapter makes the WebSocket's response
//! body fail once the connection is over, and actix logs that at error level as
//! `Response payload stream error: "chat connection closed"` (or `"... dropped without
//! a close handshake"`), from the target `actix_http::h1::dispatcher`. Those lines are
//! expected; filter that target (e.g. `RUST_LOG=info,actix_http::h1::dispatcher=off`)
//! if they are noise to you.
//!
//! # Your own identity in the join policy
//!
//! If your middleware inserts a [`ConnectionContext`] into the request's extensions
//! (`req.extensions_mut().insert(ConnectionContext::new().with(user))`), the adapter
//! starts from it, so the hub's `authorize_join` hook can read `context.get::<User>()`.
//! The peer address is filled from the connection. The middleware must wrap the chat
//! routes (`App::wrap`, or `wrap` on their scope); a connection that arrives without a
//! context is logged at debug level.
//!
//! # A WebSocket on a route of your own
//!
//! Mount [`websocket_route`] with the hub: it needs no app data, so the hub can live in
//! your own state:
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use chatroom_actix::Hub;
//!
//! #[derive(Clone)]
//! struct AppState {
//!     hub: Hub,
//! }
//!
//! # async fn run() -> std::io::Result<()> {
//! let state = AppState { hub: Hub::new() };
//! HttpServer::new(move || {
//!     App::new()
//!         .app_data(web::Data::new(state.clone()))
//!         .route("/live", chatroom_actix::websocket_route(state.hub.clone()))
//! })
//! .bind(("127.0.0.1", 8080))?
//! .run()
//! .await
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

use std::future::{Future, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::StatusCode;
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Message, ProtocolError, Session};
use bytes::Bytes;
use bytestring::ByteString;
use chatroom_core::api::{self, ApiResponse};
use chatroom_core::{Incoming, Outgoing};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;

pub use chatroom_core;
// What an embedder types, so that this crate is the only chatroom dependency needed.
pub use chatroom_core::{
    BadCursor, CloseFrame, ConnectionContext, ConnectionEnd, Disconnected, DisplayName, ErrorCode,
    Filter, Hooks, Hub, HubBuilder, JoinAttempt, JoinError, LeaveReason, Limits, MemberInfo,
    MemberLeft, MessageAttempt, NameCheck, NameError, ObservedEvent, OriginPolicy, PostError,
    RenameAttempt, RenameError, RoomCursor, RoomDetails, RoomName, RoomSummary, RoomsPage, Scheme,
    SendError, StoreHealth, Unavailable, Verdict, close_code,
};

// The README's examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// For `HttpServer::on_connect`: lets the kernel end a TCP connection whose peer has
/// taken none of the data sent to it for `timeout` (`TCP_USER_TIMEOUT`; since Linux
/// 5.11 this covers a peer that keeps its receive window closed). Elsewhere, or on a
/// connection that is not plain TCP (TLS), it does nothing.
///
/// The core drops a chat connection whose writes stall (`Limits::ping_timeout`), but
/// actix keeps trying to write what it has already buffered for such a peer, and never
/// lets go of the socket while the peer keeps acknowledging with a closed window: this
/// ends those sockets too. Any timeout above `Limits::ping_timeout` fits; it also ends
/// other connections of the server whose peer vanished with data unacknowledged.
///
/// ```no_run
/// use std::time::Duration;
/// use actix_web::{App, HttpServer, web};
/// use chatroom_actix::Hub;
///
/// # async fn run(hub: Hub) -> std::io::Result<()> {
/// HttpServer::new(move || {
///     App::new().service(web::scope("/chat").configure(chatroom_actix::configure(hub.clone())))
/// })
/// .on_connect(chatroom_actix::end_stalled_connections(Duration::from_secs(30)))
/// .bind(("127.0.0.1", 8080))?
/// .run()
/// .await
/// # }
/// ```
pub fn end_stalled_connections(
    timeout: std::time::Duration,
) -> impl Fn(&dyn std::any::Any, &mut actix_web::dev::Extensions) + Send + Sync + Clone + 'static {
    move |connection, _| {
        #[cfg(target_os = "linux")]
        if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>() {
            if let Err(e) = socket2::SockRef::from(tcp).set_tcp_user_timeout(Some(timeout)) {
                tracing::warn!(error = %e, "could not set TCP_USER_TIMEOUT");
            }
        }
        #[cfg(not(target_os = "linux"))]
        let _ = (connection, timeout);
    }
}

/// Mounts the chat routes (`/ws`, `/rooms`, `/rooms/{room}`, `/rooms/{room}/names/{name}`)
/// for `App::configure` or `web::scope(...).configure(...)`.
pub fn configure(hub: Hub) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg| {
        // Every method reaches the handlers, which answer all but GET with the core's
        // 405, so that both adapters answer every request alike.
        cfg.app_data(web::Data::new(hub.clone()))
            .route("/ws", web::route().to(websocket))
            .route("/rooms", web::route().to(rooms))
            .route("/rooms/{room}", web::route().to(room))
            .route("/rooms/{room}/names/{name}", web::route().to(name_check));
    }
}

/// The WebSocket on a route of your own, served by `hub`, whatever the app's data:
/// `App::new().app_data(state).route("/live", chatroom_actix::websocket_route(hub.clone()))`.
pub fn websocket_route(hub: Hub) -> actix_web::Route {
    web::route().to(move |req: HttpRequest, body: web::Payload| {
        let hub = hub.clone();
        async move { upgrade(&hub, req, body) }
    })
}

/// The WebSocket handler, for `web::route().to(chatroom_actix::websocket)` on your own
/// route. It takes the hub from the app data, as a `web::Data<Hub>` (which
/// [`configure`] adds for its own routes) or a `Hub`; without either it answers 500 and
/// logs what to add. Where the hub lives inside your own app state, use
/// [`websocket_route`] instead, which needs no app data.
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let hub = req
        .app_data::<web::Data<Hub>>()
        .map(|data| data.get_ref().clone())
        .or_else(|| req.app_data::<Hub>().cloned());
    match hub {
        Some(hub) => upgrade(&hub, req, body),
        None => {
            let missing = "chatroom_actix::websocket found no hub in the app data: add \
                           `.app_data(web::Data::new(hub.clone()))` to the App or scope, or \
                           mount `chatroom_actix::websocket_route(hub.clone())` instead";
            tracing::error!("{missing}");
            Ok(respond(ApiResponse::no_hub(missing)))
        }
    }
}

/// Judges and upgrades a chat connection for `hub`.
fn upgrade(
    hub: &Hub,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, actix_web::Error> {
    let pairs = req
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_bytes()));
    let secure = req.app_config().secure();
    let peer = req.peer_addr().map(|a| a.ip());
    let admission = match api::check_upgrade(hub, req.method().as_str(), pairs, secure, peer) {
        Ok(admission) => admission,
        Err(refused) => return Ok(respond(refused)),
    };
    let (response, session, stream) = match actix_ws::handle(&req, body) {
        Ok(upgraded) => upgraded,
        Err(e) => return Ok(respond(ApiResponse::bad_upgrade(&e.to_string()))),
    };
    let (end, ended) = oneshot::channel();
    let response = response.map_body(|_, body| {
        ClosingBody {
            body,
            end: Some(ended),
            finish: false,
            flushed: false,
        }
        .boxed()
    });
    let max = hub.limits().max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let mut context = ConnectionContext::from_request(req.extensions().get::<ConnectionContext>());
    if context.peer_addr.is_none() {
        context.peer_addr = req.peer_addr();
    }
    let hub = hub.clone();
    // actix-ws sessions are not `Send`: the connection runs on this worker's runtime.
    actix_web::rt::spawn(async move {
        // Counted as open for as long as it is served.
        let _admission = admission;
        let how = match serve_session(hub, context, session, stream).await {
            ConnectionEnd::Dropped => BodyEnd::Abort,
            ConnectionEnd::Closed(_) | ConnectionEnd::ClosedByPeer => BodyEnd::Finish,
        };
        let _ = end.send(how);
    });
    Ok(response)
}

/// How the WebSocket's task tells its response body to end the TCP connection.
enum BodyEnd {
    /// The closing handshake is done: end it once the close frame is out.
    Finish,
    /// Dropped without a closing handshake: end it now.
    Abort,
}

/// The WebSocket response body, which fails on purpose to end the TCP connection once
/// the connection's task is done with it. actix would otherwise keep reading an
/// upgraded connection's request body until the client goes away, while a client that
/// completed the closing handshake waits for the server to end the TCP connection
/// (RFC 6455 §7.1.1): each waits for the other until the client's close timeout. A
/// failed body is the one way to make actix drop the connection now. (actix logs the
/// failure at error level, as "Response payload stream error".)
struct ClosingBody {
    body: BoxBody,
    /// `None` once the task has said how to end.
    end: Option<oneshot::Receiver<BodyEnd>>,
    /// The task said [`BodyEnd::Finish`].
    finish: bool,
    /// The body's end was seen once already: actix has had a turn to write out the
    /// last frame (it drops what it buffered when a body fails).
    flushed: bool,
}

impl MessageBody for ClosingBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if let Some(end) = self.end.as_mut() {
            match Pin::new(end).poll(cx) {
                Poll::Ready(Ok(BodyEnd::Abort)) => {
                    let dropped = "chat connection dropped without a close handshake";
                    return Poll::Ready(Some(Err(dropped.into())));
                }
                // Finished, or the task is gone.
                Poll::Ready(_) => {
                    self.end = None;
                    self.finish = true;
                }
                Poll::Pending => {}
            }
        }
        match Pin::new(&mut self.body).poll_next(cx) {
            // The session's close frame was the body's last: once actix has written it
            // out and the task is done, end the connection.
            Poll::Ready(None) if self.finish && !self.flushed => {
                self.flushed = true;
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Ready(None) if self.finish => {
                Poll::Ready(Some(Err("chat connection closed".into())))
            }
            // Wait for the task (its channel holds this waker).
            Poll::Ready(None) => Poll::Pending,
            other => other,
        }
    }
}

/// Serves an upgraded actix-ws session until it closes.
pub async fn serve_session(
    hub: Hub,
    context: ConnectionContext,
    session: Session,
    stream: actix_ws::AggregatedMessageStream,
) -> ConnectionEnd {
    let replies = session.clone();
    let incoming = stream
        .then(move |item| {
            let mut replies = replies.clone();
            async move { to_incoming(item, &mut replies).await }
        })
        .take_while(|item| ready(item.is_some()))
        .filter_map(ready);
    let outgoing = session.with(|frame| ready(Ok::<_, actix_ws::Closed>(to_message(frame))));
    futures_util::pin_mut!(incoming, outgoing);
    let end = hub.serve(context, incoming.as_mut(), outgoing).await;
    if let ConnectionEnd::Closed(_) = end {
        // The server closed: read, and drop, what the client still sends until its
        // close frame answers ours, for at most CLOSE_LINGER, before the TCP connection
        // ends (ending it with client data unread would reset it, and a reset discards
        // what the client has not read yet: our close frame among it).
        let drain = async { while incoming.next().await.is_some() {} };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
    }
    end
}

/// How long, after the server's close frame, the client has to answer with its own.
const CLOSE_LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// A client message as the core's frame; `None` ends the connection. Pings are
/// answered here (actix-ws leaves that to the application), and a client's close is
/// echoed as RFC 6455 asks.
async fn to_incoming(
    item: Result<AggregatedMessage, ProtocolError>,
    session: &mut Session,
) -> Option<Incoming> {
    match item {
        Ok(AggregatedMessage::Text(text)) => Some(Incoming::Text(text.into_bytes())),
        Ok(AggregatedMessage::Binary(_)) => Some(Incoming::Binary),
        Ok(AggregatedMessage::Ping(payload)) => {
            let _ = session.pong(&payload).await;
            Some(Incoming::Pong)
        }
        Ok(AggregatedMessage::Pong(_)) => Some(Incoming::Pong),
        Ok(AggregatedMessage::Close(reason)) => {
            let _ = session.clone().close(reason).await;
            None
        }
        // A frame over the codec's limit, or continuations over the aggregate limit.
        Err(ProtocolError::Overflow) => Some(Incoming::TooLarge),
        Err(ProtocolError::Io(e)) if is_over_size(&e) => Some(Incoming::TooLarge),
        // Anything else (the peer vanished, a broken frame) ends the connection.
        Err(_) => None,
    }
}

/// Whether actix-ws reports continuations over the aggregate limit. It says so with an
/// `Other` I/O error that holds only its message, which is also the kind with which it
/// passes on a failure of the request's payload (the peer vanished): only the message
/// tells the two apart. The conformance suite pins it (a fragmented message over the
/// limit closes with 1009; a peer that half-closes does not get one).
fn is_over_size(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::Other
        && e.get_ref().is_some_and(|inner| {
            !inner.is::<actix_web::error::PayloadError>()
                && inner.to_string().contains("maximum continuation size")
        })
}

fn to_message(frame: Outgoing) -> Message {
    match frame {
        Outgoing::Text(text) => match ByteString::try_from(text.bytes()) {
            Ok(text) => Message::Text(text),
            // Unreachable: frames are built from `String`s.
            Err(_) => Message::Text(ByteString::from(text.as_str())),
        },
        Outgoing::Ping => Message::Ping(Bytes::new()),
        Outgoing::Close(close) => Message::Close(Some(CloseReason {
            code: CloseCode::from(close.code),
            description: Some(close.reason),
        })),
    }
}

// The handlers read the path as received (`req.uri()`): the core decodes it (actix's
// match info would decode a segment that is not UTF-8 lossily).
async fn rooms(req: HttpRequest, hub: web::Data<Hub>) -> HttpResponse {
    if let Err(refused) = api::check_method(req.method().as_str()) {
        return respond(refused);
    }
    let query = Some(req.query_string()).filter(|q| !q.is_empty());
    respond(api::rooms_page(&hub, query).await)
}

async fn room(req: HttpRequest, hub: web::Data<Hub>) -> HttpResponse {
    if let Err(refused) = api::check_method(req.method().as_str()) {
        return respond(refused);
    }
    respond(api::room_at_path(&hub, req.uri().path()).await)
}

async fn name_check(req: HttpRequest, hub: web::Data<Hub>) -> HttpResponse {
    if let Err(refused) = api::check_method(req.method().as_str()) {
        return respond(refused);
    }
    respond(api::name_check_at_path(&hub, req.uri().path()).await)
}

fn respond(answer: ApiResponse) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response.content_type("application/json");
    for (name, value) in answer.headers {
        response.insert_header((name, value));
    }
    response.body(answer.body)
}
