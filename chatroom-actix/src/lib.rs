//! Live chat rooms in an actix-web service: [`configure`] mounts the chat routes on an
//! `App` or a `web::scope`. All behaviour lives in [`chatroom_core`]; this crate only
//! converts actix-ws messages and serves the HTTP API.
//!
//! ```no_run
//! use actix_web::{App, HttpServer, web};
//! use chatroom_actix::chatroom_core::{Hub, Limits};
//!
//! #[actix_web::main]
//! async fn main() -> std::io::Result<()> {
//!     let hub = Hub::builder().limits(Limits::default()).build();
//!     let chat = hub.clone();
//!     let server = HttpServer::new(move || {
//!         App::new()
//!             .route("/", web::get().to(|| async { "my app" }))
//!             .service(web::scope("/chat").configure(chatroom_actix::configure(chat.clone())))
//!     })
//!     .bind(("127.0.0.1", 8080))?
//!     .run();
//!     let handle = server.handle();
//!     actix_web::rt::spawn(async move {
//!         let _ = actix_web::rt::signal::ctrl_c().await;
//!         hub.shutdown().await; // every chat connection closes with 1001
//!         handle.stop(true).await;
//!     });
//!     server.await
//! }
//! ```
//!
//! # Routes
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /ws` | the WebSocket of docs/protocol.md |
//! | `GET /rooms` | `[{"room": "General", "members": 2}]` |
//! | `GET /rooms/{room}` | `{"room": "General", "members": ["Alice", "Bob"]}` or 404 |
//! | `GET /rooms/{room}/names/{name}` | `{"available": bool, "reason": "name_taken" \| "invalid_name" \| null}` |
//!
//! # Your own identity in the join policy
//!
//! If your middleware inserts a [`ConnectionContext`] into the request's extensions
//! (`req.extensions_mut().insert(ConnectionContext::new().with(user))`), the adapter
//! starts from it, so the hub's `authorize_join` hook can read `context.get::<User>()`.
//! The peer address is filled from the connection.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::future::{Future, ready};
use std::pin::Pin;
use std::task::{Context, Poll};

use actix_web::body::{BodySize, BoxBody, MessageBody};
use actix_web::http::{StatusCode, header};
use actix_web::{HttpMessage, HttpRequest, HttpResponse, web};
use actix_ws::{AggregatedMessage, CloseCode, CloseReason, Message, ProtocolError, Session};
use bytes::Bytes;
use bytestring::ByteString;
use chatroom_core::api::{self, ApiResponse};
use chatroom_core::{ConnectionContext, ConnectionEnd, Hub, Incoming, Outgoing};
use futures_util::{SinkExt, StreamExt};
use tokio::sync::oneshot;

pub use chatroom_core;

/// Mounts the chat routes (`/ws`, `/rooms`, `/rooms/{room}`, `/rooms/{room}/names/{name}`)
/// for `App::configure` or `web::scope(...).configure(...)`.
pub fn configure(hub: Hub) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    move |cfg| {
        cfg.app_data(web::Data::new(hub.clone()))
            .route("/ws", web::get().to(websocket))
            .route("/rooms", web::get().to(rooms))
            .route("/rooms/{room}", web::get().to(room))
            .route("/rooms/{room}/names/{name}", web::get().to(name_check));
    }
}

/// The WebSocket handler, for apps that mount it on their own route (with a
/// `web::Data<Hub>` in the app data).
pub async fn websocket(
    req: HttpRequest,
    body: web::Payload,
    hub: web::Data<Hub>,
) -> Result<HttpResponse, actix_web::Error> {
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    if !hub
        .origins()
        .allows(header(header::ORIGIN), header(header::HOST))
    {
        tracing::debug!(origin = ?header(header::ORIGIN), "refused a cross-origin WebSocket");
        return Ok(respond(ApiResponse::origin_rejected()));
    }
    let (response, session, stream) = actix_ws::handle(&req, body)?;
    let (abort, aborted) = oneshot::channel();
    let response = response.map_body(|_, body| {
        AbortableBody {
            body,
            aborted: Some(aborted),
        }
        .boxed()
    });
    let max = hub.limits().max_frame_bytes;
    let stream = stream
        .max_frame_size(max)
        .aggregate_continuations()
        .max_continuation_size(max);
    let mut context = req
        .extensions()
        .get::<ConnectionContext>()
        .cloned()
        .unwrap_or_default();
    if context.peer_addr.is_none() {
        context.peer_addr = req.peer_addr();
    }
    let hub = hub.get_ref().clone();
    // actix-ws sessions are not `Send`: the connection runs on this worker's runtime.
    actix_web::rt::spawn(async move {
        if serve_session(hub, context, session, stream).await == ConnectionEnd::Dropped {
            let _ = abort.send(());
        }
    });
    Ok(response)
}

/// The WebSocket response body, which fails on purpose when the connection was
/// dropped without a closing handshake: actix would otherwise keep draining an upgraded
/// connection's request body until the client goes away, and a failed body is the one
/// way to make it drop the TCP connection now. (actix logs the failure at error level.)
struct AbortableBody {
    body: BoxBody,
    /// `None` once the connection ended normally (the sender was dropped unused).
    aborted: Option<oneshot::Receiver<()>>,
}

impl MessageBody for AbortableBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        BodySize::Stream
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        if let Some(aborted) = self.aborted.as_mut() {
            match Pin::new(aborted).poll(cx) {
                Poll::Ready(Ok(())) => {
                    let dropped = "chat connection dropped without a close handshake";
                    return Poll::Ready(Some(Err(dropped.into())));
                }
                Poll::Ready(Err(_)) => self.aborted = None,
                Poll::Pending => {}
            }
        }
        Pin::new(&mut self.body).poll_next(cx)
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
    hub.serve(context, incoming, outgoing).await
}

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
        // A frame over the codec's limit, or continuations over the aggregate limit
        // (which actix-ws reports as an `Other` I/O error).
        Err(ProtocolError::Overflow) => Some(Incoming::TooLarge),
        Err(ProtocolError::Io(e)) if e.kind() == std::io::ErrorKind::Other => {
            Some(Incoming::TooLarge)
        }
        Err(_) => None,
    }
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

async fn rooms(hub: web::Data<Hub>) -> HttpResponse {
    respond(api::rooms(&hub).await)
}

async fn room(hub: web::Data<Hub>, path: web::Path<String>) -> HttpResponse {
    respond(api::room(&hub, &path.into_inner()).await)
}

async fn name_check(hub: web::Data<Hub>, path: web::Path<(String, String)>) -> HttpResponse {
    let (room, name) = path.into_inner();
    respond(api::name_check(&hub, &room, &name).await)
}

fn respond(answer: ApiResponse) -> HttpResponse {
    let status = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    HttpResponse::build(status)
        .content_type("application/json")
        .body(answer.body)
}
