//! In-memory clients for testing room logic without a network.
//!
//! A [`TestClient`] is a connection served by [`Hub::serve`] over in-memory channels:
//! it sends frames exactly as a browser would and reads back what the server sends,
//! so application hooks and room behaviour can be tested in an ordinary `#[tokio::test]`.

use futures_util::stream;
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::PollSender;

use crate::error::ErrorCode;
use crate::hooks::ConnectionContext;
use crate::hub::Hub;
use crate::protocol::{Event, Reply, ServerFrame, Welcome};
use crate::transport::{CloseFrame, Incoming, Outgoing};
#[cfg(feature = "testing")]
use tokio_tungstenite::tungstenite::http;

/// How a [`TestClient`] read ended without a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Closed {
    /// The server closed the connection with this frame.
    #[error("the server closed the connection: {} {}", .0.code, .0.reason)]
    Close(CloseFrame),
    /// The connection ended without a close frame.
    #[error("the connection ended without a close frame")]
    Ended,
    /// The server sent something that is not a valid server frame.
    #[error("the server sent an invalid frame: {0}")]
    Invalid(String),
    /// A `join` was answered with an error.
    #[error("the join was refused: {code}: {message}")]
    Refused {
        /// The error code, e.g. [`ErrorCode::NameTaken`].
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
}

/// Frames a [`TestClient`] may leave unread before the server's writes wait.
const DEFAULT_BUFFER: usize = 1024;

/// One in-memory client connection.
#[derive(Debug)]
pub struct TestClient {
    to_server: Option<mpsc::Sender<Incoming>>,
    from_server: mpsc::Receiver<Outgoing>,
}

impl TestClient {
    /// Connects to `hub` with an empty context. Needs a tokio runtime.
    pub fn connect(hub: &Hub) -> TestClient {
        TestClient::connect_with(hub, ConnectionContext::new())
    }

    /// Connects with a context, as your middleware would have made it: the hooks see
    /// it, e.g. `ConnectionContext::new().with(UserId(7))`.
    pub fn connect_with(hub: &Hub, context: ConnectionContext) -> TestClient {
        TestClient::connect_with_buffer(hub, context, DEFAULT_BUFFER)
    }

    /// Connects with a context and room for at most `frames` frames that the server
    /// sent and this client has not read yet (at least 1; [`connect`](Self::connect)
    /// leaves room for 1024). When it is full the server's writes wait, as they do on a
    /// socket whose reader stopped: with a small buffer that is never read, this is a
    /// slow consumer, which the server disconnects ([`Limits::ping_timeout`](crate::Limits::ping_timeout),
    /// [`Limits::outgoing_queue`](crate::Limits::outgoing_queue)).
    pub fn connect_with_buffer(hub: &Hub, context: ConnectionContext, frames: usize) -> TestClient {
        let buffer = frames;
        let (to_server, mut server_rx) = mpsc::channel::<Incoming>(64);
        let (server_tx, from_server) = mpsc::channel::<Outgoing>(buffer.max(1));
        let incoming = stream::poll_fn(move |cx| server_rx.poll_recv(cx));
        let outgoing = PollSender::new(server_tx);
        let served = hub.serve(context, incoming, outgoing);
        tokio::spawn(async move {
            served.await;
        });
        TestClient {
            to_server: Some(to_server),
            from_server,
        }
    }

    /// Sends any raw frame (text, binary, pong or too-large).
    pub async fn send_raw(&self, frame: Incoming) {
        if let Some(tx) = &self.to_server {
            // A server that is gone simply does not read it, like a closed socket.
            let _ = tx.send(frame).await;
        }
    }

    /// Sends a text frame.
    pub async fn send_text(&self, text: &str) {
        self.send_raw(Incoming::Text(text.to_owned().into())).await;
    }

    /// Sends a value as a JSON text frame, e.g. `serde_json::json!({"type": "leave"})`.
    pub async fn send_json(&self, value: &impl Serialize) {
        let text = serde_json::to_string(value).unwrap_or_default();
        self.send_text(&text).await;
    }

    /// Sends `join` and waits for its `welcome`.
    pub async fn join(&mut self, room: &str, name: &str) -> Result<Welcome, Closed> {
        self.send_json(&serde_json::json!({"type": "join", "room": room, "name": name}))
            .await;
        self.welcome().await
    }

    /// Sends a `send` frame with `text` (no `ref`, so no `ack`: the `message` event,
    /// which the sender gets too, is the confirmation).
    pub async fn send_message(&self, text: &str) {
        self.send_json(&serde_json::json!({"type": "send", "text": text}))
            .await;
    }

    /// Sends a `leave` frame.
    pub async fn leave(&self) {
        self.send_json(&serde_json::json!({"type": "leave"})).await;
    }

    /// Waits for the next frame and expects a `welcome`.
    pub async fn welcome(&mut self) -> Result<Welcome, Closed> {
        match self.recv().await? {
            ServerFrame::Reply(Reply::Welcome(w)) => Ok(w),
            ServerFrame::Reply(Reply::Error { code, message, .. }) => {
                Err(Closed::Refused { code, message })
            }
            other => Err(Closed::Invalid(format!(
                "expected a welcome, got {other:?}"
            ))),
        }
    }

    /// Waits for the next event, skipping nothing: any other frame is an error.
    pub async fn event(&mut self) -> Result<Event, Closed> {
        match self.recv().await? {
            ServerFrame::Event(e) => Ok(e),
            other => Err(Closed::Invalid(format!("expected an event, got {other:?}"))),
        }
    }

    /// Waits for the next text frame the server sends (pings are answered and skipped).
    pub async fn recv(&mut self) -> Result<ServerFrame, Closed> {
        let text = self.recv_text().await?;
        ServerFrame::decode(&text).map_err(|e| Closed::Invalid(format!("{e}: {text}")))
    }

    /// Waits for the next text frame as a string. Pings are answered, as a browser does.
    pub async fn recv_text(&mut self) -> Result<String, Closed> {
        loop {
            match self.from_server.recv().await {
                Some(Outgoing::Text(frame)) => return Ok(frame.as_str().to_owned()),
                Some(Outgoing::Ping) => self.send_raw(Incoming::Pong).await,
                Some(Outgoing::Close(frame)) => return Err(Closed::Close(frame)),
                None => return Err(Closed::Ended),
            }
        }
    }

    /// Waits for the next raw frame, pings included; `None` once the server is done.
    pub async fn next_raw(&mut self) -> Option<Outgoing> {
        self.from_server.recv().await
    }

    /// A frame already waiting, without waiting.
    pub fn try_next_raw(&mut self) -> Option<Outgoing> {
        self.from_server.try_recv().ok()
    }

    /// Ends the connection without a close frame, as a dropped TCP connection would.
    /// The client can still read what the server had sent.
    pub fn drop_connection(&mut self) {
        self.to_server = None;
    }
}

/// A room's task held still by [`pause_room`]; dropping it (or [`resume`](Self::resume))
/// lets the room go on.
#[derive(Debug)]
pub struct RoomPause {
    resume: Option<tokio::sync::oneshot::Sender<()>>,
}

impl RoomPause {
    /// Lets the room go on: it handles, in order, what was queued meanwhile.
    pub fn resume(mut self) {
        if let Some(resume) = self.resume.take() {
            let _ = resume.send(());
        }
    }
}

/// Ends the grace period of every away member of `room` now, as if it had run out:
/// they leave (in join order) and the others get `left`. Completes once the room has
/// done so. For tests of expiry that do not want to wait for the grace period.
pub async fn expire_away_now(hub: &Hub, room: &str) {
    if let Ok(room) = crate::name::RoomName::parse_max(room, hub.limits().max_room_chars) {
        hub.backplane().expire_now(room.key().clone()).await;
    }
}

/// Completes once this hub's members of `room` were given every event the room had
/// when it was called. Nothing to wait for on one node; on a cluster node, events
/// caused elsewhere (or by a call that answered before its event came back through
/// the store) reach this node's members a moment later. For tests that make one
/// change, then act on another client and compare what it saw with a single node.
pub async fn settle(hub: &Hub, room: &str) {
    if let Ok(room) = crate::name::RoomName::parse_max(room, hub.limits().max_room_chars) {
        hub.backplane().settle(room.key().clone()).await;
    }
}

/// Holds `room`'s task (its commands and its timers) until the returned guard is
/// dropped, so that a test can queue commands from several connections behind it and
/// see them handled in a known order. `None` if the room does not exist. On a
/// cluster node it holds, instead, the delivery of the room's events to this node's
/// members (`None` if none of them is in the room).
pub async fn pause_room(hub: &Hub, room: &str) -> Option<RoomPause> {
    let room = crate::name::RoomName::parse_max(room, hub.limits().max_room_chars).ok()?;
    let resume = hub.backplane().pause(room.key().clone()).await?;
    Some(RoomPause {
        resume: Some(resume),
    })
}

/// A WebSocket upgrade request for `connect_over` and the adapters' test helpers (the
/// `http` crate's, as axum's):
/// `Request::get("/chat/ws").header("authorization", "Bearer ann").body(())`.
#[cfg(feature = "testing")]
pub type Request = http::Request<()>;

#[cfg(feature = "testing")]
/// The server answered a WebSocket upgrade with something else than 101.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the upgrade was refused with HTTP {status}: {body}")]
pub struct UpgradeRefused {
    /// The HTTP status, e.g. 403 from your auth middleware.
    pub status: u16,
    /// The response body, as text.
    pub body: String,
}

#[cfg(feature = "testing")]
/// A [`TestClient`] over a real WebSocket on `stream`: sends `request` as the upgrade
/// (the WebSocket handshake headers are added when missing; `Host` defaults to
/// `localhost`), then speaks the protocol over it. What adapters' test helpers build
/// on, e.g. `chatroom_axum::testing::connect`, which serves your whole router over an
/// in-memory stream, so that your own middleware and extractors run as in production.
///
/// Over a real WebSocket a few things differ from [`TestClient::connect`]: the
/// WebSocket answers the server's pings by itself (the client still sees them as
/// [`Outgoing::Ping`]; its own pongs are not sent again), [`Incoming::TooLarge`] is
/// not sent (send a text frame over [`Limits::max_frame_bytes`](crate::Limits::max_frame_bytes)
/// instead), and [`TestClient::drop_connection`] drops the socket as a lost TCP
/// connection would: what the server had not yet delivered to the client is lost.
pub async fn connect_over<S>(
    stream: S,
    request: http::Request<()>,
) -> Result<TestClient, UpgradeRefused>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{Error, Message};

    let request = with_handshake_headers(request);
    let (mut socket, _) = match tokio_tungstenite::client_async(request, stream).await {
        Ok(upgraded) => upgraded,
        Err(Error::Http(response)) => {
            let status = response.status().as_u16();
            let body = response
                .into_body()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
                .unwrap_or_default();
            return Err(UpgradeRefused { status, body });
        }
        Err(e) => {
            return Err(UpgradeRefused {
                status: 0,
                body: format!("the WebSocket handshake failed: {e}"),
            });
        }
    };
    let (to_server, mut from_client) = mpsc::channel::<Incoming>(64);
    let (to_client, from_server) = mpsc::channel::<Outgoing>(DEFAULT_BUFFER);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                frame = from_client.recv() => {
                    let message = match frame {
                        Some(Incoming::Text(text)) => match String::from_utf8(text.to_vec()) {
                            Ok(text) => Message::text(text),
                            Err(_) => continue,
                        },
                        Some(Incoming::Binary) => Message::binary(Vec::new()),
                        // The WebSocket answers the server's pings by itself.
                        Some(Incoming::Pong | Incoming::TooLarge) => continue,
                        // The client was dropped or `drop_connection` was called.
                        None => break,
                    };
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
                message = socket.next() => {
                    let frame = match message {
                        Some(Ok(Message::Text(text))) => Outgoing::Text(text.to_string().into()),
                        // Answered by the WebSocket itself; shown to the client as well.
                        Some(Ok(Message::Ping(_))) => Outgoing::Ping,
                        Some(Ok(Message::Close(close))) => {
                            let (code, reason) = close
                                .map(|c| (u16::from(c.code), c.reason.to_string()))
                                .unwrap_or((1005, String::new()));
                            let _ = to_client.send(Outgoing::Close(CloseFrame::new(code, &reason))).await;
                            break;
                        }
                        Some(Ok(_)) => continue,
                        Some(Err(_)) | None => break,
                    };
                    if to_client.send(frame).await.is_err() {
                        break;
                    }
                }
            }
        }
    });
    Ok(TestClient {
        to_server: Some(to_server),
        from_server,
    })
}

#[cfg(feature = "testing")]
/// `request` with what a WebSocket upgrade needs and it lacks.
fn with_handshake_headers(mut request: http::Request<()>) -> http::Request<()> {
    use http::header::{self, HeaderValue};
    use tokio_tungstenite::tungstenite::handshake::client::generate_key;

    let headers = request.headers_mut();
    let defaults = [
        (header::HOST, HeaderValue::from_static("localhost")),
        (header::CONNECTION, HeaderValue::from_static("Upgrade")),
        (header::UPGRADE, HeaderValue::from_static("websocket")),
        (
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        ),
    ];
    for (name, value) in defaults {
        headers.entry(name).or_insert(value);
    }
    if !headers.contains_key(header::SEC_WEBSOCKET_KEY) {
        if let Ok(key) = HeaderValue::from_str(&generate_key()) {
            headers.insert(header::SEC_WEBSOCKET_KEY, key);
        }
    }
    // tungstenite wants an absolute ws:// or wss:// URI to read the host and scheme from.
    let scheme = request.uri().scheme_str().map(str::to_owned);
    if let Some(secure) = scheme.as_deref().and_then(|s| match s {
        "http" => Some(false),
        "https" => Some(true),
        _ => None,
    }) {
        let rest = request.uri().to_string();
        let rest = rest.split_once("://").map_or("", |(_, r)| r).to_owned();
        let ws = if secure { "wss" } else { "ws" };
        if let Ok(uri) = format!("{ws}://{rest}").parse() {
            *request.uri_mut() = uri;
        }
    } else if request.uri().scheme().is_none() {
        let path = request
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .unwrap_or("localhost")
            .to_owned();
        if let Ok(uri) = format!("ws://{host}{path}").parse() {
            *request.uri_mut() = uri;
        }
    }
    request
}
