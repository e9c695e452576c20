//! Live chat rooms in an axum service: a [`router`] to nest, or a [`websocket`]
//! handler for your own route. All behaviour lives in [`chatroom_core`]; this crate only
//! converts axum's WebSocket messages and serves the HTTP API.
//!
//! ```no_run
//! use axum::{Router, routing::get, serve::ListenerExt};
//! use chatroom_axum::{Hub, Limits};
//!
//! #[tokio::main]
//! async fn main() -> std::io::Result<()> {
//!     let hub = Hub::builder().limits(Limits::default()).build();
//!     let app = Router::new()
//!         .route("/", get(|| async { "my app" }))
//!         .nest("/chat", chatroom_axum::router(hub.clone())); // /chat/ws, /chat/rooms, ...
//!     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//!     // Chat frames are small: turn Nagle's algorithm off (it is on by default and
//!     // can hold a frame until the peer's delayed ACK, up to 40 ms).
//!     let listener = listener.tap_io(|tcp| {
//!         let _ = tcp.set_nodelay(true);
//!     });
//!     axum::serve(listener, app)
//!         // On SIGINT or SIGTERM every chat closes with 1001, then the server stops.
//!         .with_graceful_shutdown(hub.shutdown_on_signal())
//!         .await
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
//! # Your own identity in the join policy
//!
//! The [`Hooks`] of the hub get a [`ConnectionContext`]. If your auth middleware
//! inserts one into the request's extensions
//! (`request.extensions_mut().insert(ConnectionContext::new().with(user))`), the adapter
//! starts from it, so `authorize_join` can read `context.get::<User>()`. The peer
//! address is filled from `ConnectInfo<SocketAddr>` when the app is served with
//! `into_make_service_with_connect_info`.
//!
//! **Add the middleware after nesting the chat routes**: an axum `layer` wraps only
//! the routes added before it, so in
//! `Router::new().layer(auth).nest("/chat", chatroom_axum::router(hub))` the chat routes
//! never see `auth`, the hooks get an empty context, and a policy that wants a user
//! refuses every join. Write
//! `Router::new().nest("/chat", chatroom_axum::router(hub)).layer(auth)`. A connection
//! that arrives without a context is logged at debug level, with this hint.
#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "testing")]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;

use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{self, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, FromRef, State};
use axum::http::{Extensions, HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use chatroom_core::api::{self, ApiResponse};
use chatroom_core::{Incoming, Outgoing};
use futures_util::{Sink, SinkExt, Stream, StreamExt};

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

/// Read buffer per connection, allocated up front by tungstenite. Client frames are
/// small, and the buffer grows when a frame needs it; 1 KiB instead of 4 KiB took idle
/// memory from 11.6 KB to 8.6 KB per connection.
const READ_BUFFER: usize = 1024;
/// Bytes buffered before a write goes to the socket; a flush always writes everything.
/// The buffer is not capped further: the driver never gives the socket a frame before
/// the last one was taken (`poll_ready`), so it holds at most this plus one frame, and
/// a frame is as large as the largest welcome the limits allow (megabytes with a long
/// history of long messages). A peer that stops reading is dropped by the core's write
/// deadline (`Limits::ping_timeout`), not by a full buffer.
const WRITE_BUFFER: usize = 8 * 1024;

/// The chat routes (`/ws`, `/rooms`, `/rooms/{room}`, `/rooms/{room}/names/{name}`),
/// ready to `nest` under any prefix in an app with any state. For an app whose state
/// already holds the hub, [`routes`] takes it from there.
pub fn router<S>(hub: Hub) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    routes::<Hub>().with_state(hub)
}

/// The same routes as [`router`], taking the hub from the app's state: for an app
/// whose own state holds the [`Hub`] (`impl FromRef<AppState> for Hub`, or
/// `#[derive(FromRef)]` with axum's `macros` feature), so that the hub is not passed
/// twice.
///
/// ```
/// use axum::{Router, extract::FromRef};
/// use chatroom_axum::Hub;
///
/// #[derive(Clone)]
/// struct AppState {
///     hub: Hub,
///     greeting: &'static str,
/// }
///
/// impl FromRef<AppState> for Hub {
///     fn from_ref(state: &AppState) -> Hub {
///         state.hub.clone()
///     }
/// }
///
/// let state = AppState { hub: Hub::new(), greeting: "hello" };
/// let app: Router = Router::new()
///     .nest("/chat", chatroom_axum::routes())
///     .with_state(state);
/// # let _ = app;
/// ```
pub fn routes<S>() -> Router<S>
where
    Hub: FromRef<S>,
    S: Clone + Send + Sync + 'static,
{
    // Every method reaches the handlers, which answer all but GET with the core's 405,
    // so that both adapters answer every request alike.
    Router::new()
        .route("/ws", any(websocket))
        .route("/rooms", any(rooms))
        .route("/rooms/{room}", any(room))
        .route("/rooms/{room}/names/{name}", any(name_check))
}

/// The WebSocket handler, for apps that want their own route:
/// `.route("/live", any(chatroom_axum::websocket))` with a state from which a [`Hub`]
/// can be taken (`Hub: FromRef<YourState>`).
pub async fn websocket(
    hub: State<Hub>,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    extensions: Extensions,
) -> Response {
    upgrade(&hub.0, ws, &method, &uri, &headers, &extensions)
}

/// Judges the request ([`api::check_upgrade`]: the origin first, then the handshake),
/// applies the hub's limits to the socket, and upgrades; the lowest level entry point,
/// for handlers that extract the request themselves. The upgrade extractor is taken as
/// a `Result` so that the origin is checked before axum's own verdict on the handshake.
pub fn upgrade(
    hub: &Hub,
    ws: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    extensions: &Extensions,
) -> Response {
    let pairs = headers.iter().map(|(n, v)| (n.as_str(), v.as_bytes()));
    // A request line in absolute form may carry the scheme; the usual origin form
    // does not, and axum cannot see whether a TLS layer is in front: the hub's
    // configured scheme, or a proxy's `X-Forwarded-Proto`, says so (see
    // `api::check_upgrade`).
    let secure = uri.scheme() == Some(&axum::http::uri::Scheme::HTTPS);
    let mut context = ConnectionContext::from_request(extensions.get::<ConnectionContext>());
    if context.peer_addr.is_none() {
        context.peer_addr = extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0);
    }
    let peer = context.peer_addr.map(|a| a.ip());
    let admission = match api::check_upgrade(hub, method.as_str(), pairs, secure, peer) {
        Ok(admission) => admission,
        Err(refused) => return respond(refused),
    };
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => return respond(ApiResponse::bad_upgrade(&rejection.body_text())),
    };
    let max = hub.limits().max_frame_bytes;
    let hub = hub.clone();
    ws.max_message_size(max)
        .max_frame_size(max)
        .read_buffer_size(READ_BUFFER)
        .write_buffer_size(WRITE_BUFFER)
        .on_upgrade(move |socket| async move {
            // Counted as open for as long as it is served.
            let _admission = admission;
            serve_socket(hub, socket, context).await;
        })
}

/// How long, after the server's close frame, the client has to answer with its own.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Serves an upgraded socket until it closes.
pub async fn serve_socket(hub: Hub, socket: WebSocket, context: ConnectionContext) {
    let mut transport = Transport {
        socket,
        ended: false,
    };
    let end = hub.serve_transport(context, &mut transport).await;
    if let ConnectionEnd::Closed(_) = end {
        // The server closed (1001, 1008, ...): read, and drop, what the client still
        // sends until its close frame answers ours (RFC 6455 §7.1.1), for at most
        // CLOSE_LINGER. Closing the TCP connection with client data unread would send
        // a reset, and a reset makes the client's system discard the frames we sent
        // that the client has not read yet: the close frame among them.
        let drain = async { while transport.next().await.is_some() {} };
        let _ = tokio::time::timeout(CLOSE_LINGER, drain).await;
    }
    // Whatever the ending, dropping the socket here closes the TCP connection.
}

/// The WebSocket as the core's transport, whole: no split halves sharing a lock.
struct Transport {
    socket: WebSocket,
    /// The client's stream ended (or failed): yield nothing more.
    ended: bool,
}

impl Stream for Transport {
    type Item = Incoming;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Incoming>> {
        let this = self.get_mut();
        if this.ended {
            return Poll::Ready(None);
        }
        let next = match this.socket.poll_next_unpin(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(item) => item.and_then(to_incoming),
        };
        this.ended = next.is_none();
        Poll::Ready(next)
    }
}

impl Sink<Outgoing> for Transport {
    type Error = axum::Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.get_mut().socket.poll_ready_unpin(cx)
    }

    fn start_send(self: Pin<&mut Self>, frame: Outgoing) -> Result<(), axum::Error> {
        self.get_mut().socket.start_send_unpin(to_message(frame)?)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.get_mut().socket.poll_flush_unpin(cx)
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), axum::Error>> {
        self.get_mut().socket.poll_close_unpin(cx)
    }
}

/// A client message as the core's frame; `None` ends the connection.
fn to_incoming(item: Result<Message, axum::Error>) -> Option<Incoming> {
    match item {
        Ok(Message::Text(text)) => Some(Incoming::Text(Bytes::from(text))),
        Ok(Message::Binary(_)) => Some(Incoming::Binary),
        Ok(Message::Ping(_) | Message::Pong(_)) => Some(Incoming::Pong),
        Ok(Message::Close(_)) => None,
        Err(e) => match e.into_inner().downcast::<tungstenite::Error>() {
            Ok(e) if matches!(*e, tungstenite::Error::Capacity(_)) => Some(Incoming::TooLarge),
            _ => None,
        },
    }
}

fn to_message(frame: Outgoing) -> Result<Message, axum::Error> {
    Ok(match frame {
        Outgoing::Text(text) => {
            Message::Text(Utf8Bytes::try_from(text.bytes()).map_err(axum::Error::new)?)
        }
        Outgoing::Ping => Message::Ping(Bytes::new()),
        Outgoing::Close(close) => Message::Close(Some(ws::CloseFrame {
            code: close.code,
            reason: close.reason.into(),
        })),
    })
}

// The handlers read the path as received: the core decodes it (axum's `Path` would
// answer a segment that is not UTF-8 with a text/plain 400 of its own).
async fn rooms(State(hub): State<Hub>, method: Method, uri: Uri) -> Response {
    if let Err(refused) = api::check_method(method.as_str()) {
        return respond(refused);
    }
    respond(api::rooms_page(&hub, uri.query()).await)
}

async fn room(State(hub): State<Hub>, method: Method, uri: Uri) -> Response {
    if let Err(refused) = api::check_method(method.as_str()) {
        return respond(refused);
    }
    respond(api::room_at_path(&hub, uri.path()).await)
}

async fn name_check(State(hub): State<Hub>, method: Method, uri: Uri) -> Response {
    if let Err(refused) = api::check_method(method.as_str()) {
        return respond(refused);
    }
    respond(api::name_check_at_path(&hub, uri.path()).await)
}

fn respond(answer: ApiResponse) -> Response {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response();
    for (name, value) in answer.headers {
        if let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            response.headers_mut().insert(name, value);
        }
    }
    response
}
