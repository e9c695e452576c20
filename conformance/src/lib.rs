//! Test harness: start either adapter for real on 127.0.0.1:0 and drive it with a real
//! WebSocket client (tokio-tungstenite) and a minimal HTTP client.
#![forbid(unsafe_code)]
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::net::SocketAddr;
use std::time::Duration;

use chatroom_core::Hub;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// How long any single read may take before the test fails (a hang guard, not a timing
/// assertion).
pub const PATIENCE: Duration = Duration::from_secs(5);

/// Which web framework serves the chat.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Adapter {
    /// chatroom-axum.
    Axum,
    /// chatroom-actix.
    Actix,
}

enum Stopper {
    Axum(oneshot::Sender<()>),
    Actix(actix_web::dev::ServerHandle, actix_web::rt::System),
}

/// A chat server running on its own thread and runtime.
pub struct Server {
    /// Where it listens.
    pub addr: SocketAddr,
    /// The path prefix of the chat routes ("" or e.g. "/chat").
    pub prefix: &'static str,
    /// Its hub, for server-side calls.
    pub hub: Hub,
    adapter: Adapter,
    stopper: Option<Stopper>,
    done: Option<oneshot::Receiver<()>>,
}

impl Server {
    /// Starts `adapter` serving `hub` at the root.
    pub fn start(adapter: Adapter, hub: Hub) -> Server {
        Server::start_at(adapter, hub, "")
    }

    /// Starts `adapter` with the chat routes nested under `prefix` in an app that has
    /// routes and state of its own.
    pub fn start_at(adapter: Adapter, hub: Hub, prefix: &'static str) -> Server {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = oneshot::channel();
        let served = hub.clone();
        std::thread::spawn(move || {
            match adapter {
                Adapter::Axum => run_axum(listener, served, prefix, ready_tx),
                Adapter::Actix => run_actix(listener, served, prefix, ready_tx),
            }
            let _ = done_tx.send(());
        });
        let stopper = ready_rx.recv().expect("server started");
        Server {
            addr,
            prefix,
            hub,
            adapter,
            stopper: Some(stopper),
            done: Some(done_rx),
        }
    }

    /// The adapter under test.
    pub fn adapter(&self) -> Adapter {
        self.adapter
    }

    /// `ws://` URL of the chat socket.
    pub fn ws_url(&self) -> String {
        format!("ws://{}{}/ws", self.addr, self.prefix)
    }

    /// Connects a WebSocket client.
    pub async fn connect(&self) -> Client {
        Client::connect(&self.ws_url(), None)
            .await
            .expect("upgrade accepted")
    }

    /// Connects a client whose socket receive buffer is `bytes` (so that a client that
    /// stops reading backs up quickly).
    pub async fn connect_with_recv_buffer(&self, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket.set_recv_buffer_size(bytes).expect("SO_RCVBUF");
        let stream = socket.connect(self.addr).await.expect("connect");
        let (ws, _) = tokio_tungstenite::client_async(self.ws_url(), MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade accepted");
        Client { ws }
    }

    /// Graceful shutdown the way each framework does it: axum's
    /// `with_graceful_shutdown` (whose signal shuts the hub down), actix's
    /// `hub.shutdown()` then `ServerHandle::stop(true)`. Completes once the server's
    /// thread has finished.
    pub async fn shutdown(mut self) {
        match self.stopper.take() {
            Some(Stopper::Axum(trigger)) => {
                let _ = trigger.send(());
            }
            Some(Stopper::Actix(handle, _)) => {
                self.hub.shutdown().await;
                handle.stop(true).await;
            }
            None => {}
        }
        if let Some(done) = self.done.take() {
            tokio::time::timeout(PATIENCE, done)
                .await
                .expect("server thread ends")
                .expect("server thread signals");
        }
    }

    /// `GET path` (relative to the prefix): status and body.
    pub async fn get(&self, path: &str) -> (u16, String) {
        http_get(self.addr, &format!("{}{}", self.prefix, path)).await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        match self.stopper.take() {
            Some(Stopper::Axum(trigger)) => {
                let _ = trigger.send(());
            }
            Some(Stopper::Actix(_, system)) => system.stop(),
            None => {}
        }
    }
}

#[derive(Clone)]
struct AppState {
    greeting: &'static str,
}

impl axum::extract::FromRef<AppState> for &'static str {
    fn from_ref(state: &AppState) -> Self {
        state.greeting
    }
}

async fn hello(axum::extract::State(greeting): axum::extract::State<&'static str>) -> &'static str {
    greeting
}

fn run_axum(
    listener: std::net::TcpListener,
    hub: Hub,
    prefix: &'static str,
    ready: std::sync::mpsc::Sender<Stopper>,
) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
        let app: axum::Router = if prefix.is_empty() {
            chatroom_axum::router(hub.clone())
        } else {
            // An app with state and routes of its own, the chat nested inside.
            axum::Router::<AppState>::new()
                .route("/hello", axum::routing::get(hello))
                .nest(prefix, chatroom_axum::router(hub.clone()))
                .with_state(AppState { greeting: "hello" })
        };
        let (trigger, stop) = oneshot::channel::<()>();
        ready.send(Stopper::Axum(trigger)).expect("report");
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            let _ = stop.await;
            hub.shutdown().await;
        })
        .await
        .expect("axum serves");
    });
}

fn run_actix(
    listener: std::net::TcpListener,
    hub: Hub,
    prefix: &'static str,
    ready: std::sync::mpsc::Sender<Stopper>,
) {
    use actix_web::{App, HttpServer, web};
    let system = actix_web::rt::System::new();
    system.block_on(async move {
        let server = HttpServer::new(move || {
            let chat = chatroom_actix::configure(hub.clone());
            if prefix.is_empty() {
                App::new().configure(chat)
            } else {
                App::new()
                    .app_data(web::Data::new("hello"))
                    .route(
                        "/hello",
                        web::get().to(|s: web::Data<&'static str>| async move { **s }),
                    )
                    .service(web::scope(prefix).configure(chat))
            }
        })
        .workers(1)
        .shutdown_timeout(2)
        // As a deployment should: the kernel ends sockets whose peer takes nothing.
        .on_connect(chatroom_actix::end_stalled_connections(
            std::time::Duration::from_secs(1),
        ))
        // actix holds a WebSocket's TCP connection after the close handshake until this
        // timeout (default 1 s); shorter keeps the suite fast.
        .client_disconnect_timeout(std::time::Duration::from_millis(200))
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        ready
            .send(Stopper::Actix(
                server.handle(),
                actix_web::rt::System::current(),
            ))
            .expect("report");
        let _ = server.await;
    });
}

/// Whether the server side of the TCP connection between `server_port` and
/// `client_port` on 127.0.0.1 is still established, from `/proc/net/tcp` (Linux).
/// `None` where that file cannot be read.
pub fn server_side_established(server_port: u16, client_port: u16) -> Option<bool> {
    let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let port = |address: &str| {
        address
            .rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    Some(table.lines().skip(1).any(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        fields.len() > 3
            && port(fields[1]) == Some(server_port)
            && port(fields[2]) == Some(client_port)
            && fields[3] == "01"
    }))
}

/// An HTTP response as received: status, headers (names in lower case) and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Header names (lower case) and values.
    pub headers: Vec<(String, String)>,
    /// The body (the test requests never get a chunked one).
    pub body: String,
}

impl RawResponse {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Starts an actix app built by `app` (one worker, no signal handlers) on a thread of
/// its own; its address, and its system to stop it with.
pub fn actix_app<F, A, B>(app: F) -> (SocketAddr, actix_web::rt::System)
where
    F: Fn() -> actix_web::App<A> + Send + Clone + 'static,
    A: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<B>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
    B: actix_web::body::MessageBody + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(app)
                .workers(1)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run();
            ready_tx
                .send(actix_web::rt::System::current())
                .expect("report");
            let _ = server.await;
        });
    });
    (addr, ready_rx.recv().expect("started"))
}

/// Sends `head` (request line and headers, without the final blank line) as raw bytes,
/// with `Host` added (and `Connection: close` unless `head` has a `Connection`), and
/// reads the response: for a 101, its head only. For requests no HTTP client would
/// build: header values that are not ASCII, broken upgrades, odd methods.
pub async fn http_raw(addr: SocketAddr, head: &[u8]) -> RawResponse {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let mut request = head.to_vec();
    request.extend_from_slice(format!("\r\nHost: {addr}").as_bytes());
    if !String::from_utf8_lossy(head)
        .to_ascii_lowercase()
        .contains("\r\nconnection:")
    {
        request.extend_from_slice(b"\r\nConnection: close");
    }
    request.extend_from_slice(b"\r\n\r\n");
    stream.write_all(&request).await.expect("write");
    let read = async {
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                break i;
            }
            let n = stream.read(&mut buf).await.expect("read");
            assert!(n > 0, "the response ended inside its head");
            response.extend_from_slice(&buf[..n]);
        };
        let head = String::from_utf8(response[..head_end].to_vec()).expect("ascii head");
        let mut lines = head.split("\r\n");
        let status: u16 = lines
            .next()
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok())
            .expect("status");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let mut body = response[head_end + 4..].to_vec();
        let length = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse::<usize>().ok());
        if status != 101 {
            while length.is_none_or(|l| body.len() < l) {
                let n = stream.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                body.extend_from_slice(&buf[..n]);
            }
        }
        RawResponse {
            status,
            headers,
            body: String::from_utf8(body).expect("utf-8 body"),
        }
    };
    tokio::time::timeout(PATIENCE, read)
        .await
        .expect("response in time")
}

/// A minimal HTTP/1.1 GET: status code and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    tokio::time::timeout(PATIENCE, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read");
    let text = String::from_utf8(response).expect("utf-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status");
    (status, body.to_owned())
}

/// A WebSocket client speaking PROTOCOL.md.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What ended a read without a frame.
#[derive(Debug, PartialEq)]
pub enum Ended {
    /// A close frame with code and reason.
    Close(u16, String),
    /// The connection ended without a close frame.
    Dropped,
}

impl Client {
    /// Connects, with an `Origin` header if given; an HTTP refusal gives its status.
    pub async fn connect(url: &str, origin: Option<&str>) -> Result<Client, u16> {
        let headers: Vec<(&str, &str)> = origin.map(|o| ("origin", o)).into_iter().collect();
        Client::connect_with_headers(url, &headers).await
    }

    /// Connects with extra request headers; an HTTP refusal gives its status.
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Client, u16> {
        let mut request = url.into_client_request().expect("request");
        for (name, value) in headers {
            let name = tungstenite::http::HeaderName::from_bytes(name.as_bytes()).expect("name");
            request
                .headers_mut()
                .insert(name, value.parse().expect("header value"));
        }
        match tokio_tungstenite::connect_async(request).await {
            Ok((ws, _)) => Ok(Client { ws }),
            Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
            Err(e) => panic!("connect failed: {e}"),
        }
    }

    /// Sends a JSON frame.
    pub async fn send(&mut self, frame: Value) {
        self.send_text(&frame.to_string()).await;
    }

    /// Sends a raw text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.expect("send text");
    }

    /// Sends `text` as one message in `parts` fragments (a text frame, then
    /// continuation frames).
    pub async fn send_fragmented(&mut self, text: &str, parts: usize) {
        use tungstenite::protocol::frame::Frame;
        use tungstenite::protocol::frame::coding::{Data, OpCode};
        let bytes = text.as_bytes();
        let size = bytes.len().div_ceil(parts.max(1)).max(1);
        let chunks: Vec<&[u8]> = bytes.chunks(size).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let opcode = if i == 0 {
                OpCode::Data(Data::Text)
            } else {
                OpCode::Data(Data::Continue)
            };
            let frame = Frame::message(chunk.to_vec(), opcode, i + 1 == chunks.len());
            self.ws
                .send(Message::Frame(frame))
                .await
                .expect("send fragment");
        }
    }

    /// Sends a binary frame.
    pub async fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .await
            .expect("send binary");
    }

    /// The next text frame, or how the connection ended (pings and pongs are skipped;
    /// tungstenite answers pings while reading).
    async fn frame(&mut self) -> Result<String, Ended> {
        loop {
            let item = tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("a frame in time");
            match item {
                Some(Ok(Message::Text(text))) => return Ok(text.to_string()),
                Some(Ok(Message::Close(frame))) => {
                    return Err(frame
                        .map(|CloseFrame { code, reason }| {
                            Ended::Close(u16::from(code), reason.to_string())
                        })
                        .unwrap_or(Ended::Close(1005, String::new())));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Err(Ended::Dropped),
            }
        }
    }

    /// The next frame: a JSON text frame, or how the connection ended.
    pub async fn next(&mut self) -> Result<Value, Ended> {
        let text = self.frame().await?;
        Ok(serde_json::from_str(&text).expect("server sends JSON"))
    }

    /// The next text frame, unparsed; panics if the connection ended.
    pub async fn recv_text(&mut self) -> String {
        match self.frame().await {
            Ok(text) => text,
            Err(e) => panic!("expected a text frame, connection ended: {e:?}"),
        }
    }

    /// The next JSON frame; panics if the connection ended.
    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Ok(v) => v,
            Err(e) => panic!("expected a frame, connection ended: {e:?}"),
        }
    }

    /// The next frame, which must have this `type`.
    pub async fn expect(&mut self, kind: &str) -> Value {
        let frame = self.recv().await;
        assert_eq!(frame["type"], kind, "got {frame}");
        frame
    }

    /// The next frame, which must be an `error` with this code; returns it.
    pub async fn expect_error(&mut self, code: &str) -> Value {
        let frame = self.expect("error").await;
        assert_eq!(frame["code"], code, "got {frame}");
        assert!(frame["message"].as_str().is_some_and(|m| !m.is_empty()));
        frame
    }

    /// Reads (without parsing) frames until the connection ends; returns how.
    pub async fn ended(&mut self) -> Ended {
        loop {
            if let Err(e) = self.frame().await {
                return e;
            }
        }
    }

    /// Joins and returns the welcome.
    pub async fn join(&mut self, room: &str, name: &str) -> Value {
        self.send(json!({"type": "join", "room": room, "name": name}))
            .await;
        self.expect("welcome").await
    }

    /// Drops the TCP connection without a close frame.
    pub fn drop_tcp(self) {
        drop(self.ws);
    }

    /// Starts the closing handshake with `code` and reads until the server's close
    /// frame: returns it, or `None` if the connection ended without one.
    pub async fn close_with(&mut self, code: u16) -> Option<(u16, String)> {
        let frame = CloseFrame {
            code: code.into(),
            reason: "bye".into(),
        };
        self.ws.close(Some(frame)).await.expect("close frame sent");
        loop {
            match tokio::time::timeout(PATIENCE, self.ws.next())
                .await
                .expect("the server answers a close frame in time")
            {
                Some(Ok(Message::Close(frame))) => {
                    return Some(frame.map_or((1005, String::new()), |f| {
                        (u16::from(f.code), f.reason.to_string())
                    }));
                }
                Some(Ok(_)) => continue,
                Some(Err(tungstenite::Error::ConnectionClosed)) | None => return None,
                Some(Err(_)) => return None,
            }
        }
    }

    /// After a closing handshake: whether the server ends the TCP connection within
    /// `within` (the client reads end of stream).
    pub async fn tcp_ends_within(&mut self, within: Duration) -> bool {
        let tcp = self.tcp();
        tokio::time::timeout(within, async {
            let mut buf = [0u8; 256];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(_) => continue,
                }
            }
        })
        .await
        .is_ok()
    }

    /// The underlying TCP stream, for tests that misbehave below WebSocket.
    pub fn tcp(&mut self) -> &mut TcpStream {
        match self.ws.get_mut() {
            MaybeTlsStream::Plain(tcp) => tcp,
            _ => panic!("tests use plain TCP"),
        }
    }

    /// Closes the way a browser does (close frame, then waits for the server's).
    pub async fn close(mut self) {
        let _ = self.ws.close(None).await;
        let _ =
            tokio::time::timeout(PATIENCE, async { while self.ws.next().await.is_some() {} }).await;
    }
}
