//! The README's complete embedding examples (`embed-axum`, `embed-actix`), run as a
//! user runs them: the auth middleware turns away a connection without a token, the
//! join policy holds a user to their own name, the filter rewrites, the observer's
//! count shows on the app's own route, and SIGTERM and SIGINT close chats with 1001.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const EXAMPLES: [&str; 2] = [
    env!("CARGO_BIN_EXE_embed-axum"),
    env!("CARGO_BIN_EXE_embed-actix"),
];

/// A started example, killed if the test ends without stopping it (an assertion
/// failed), so that no server is left behind.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Starts an example on a free port; its process and address.
fn start(binary: &str) -> (Example, SocketAddr) {
    let mut child = Example(
        Command::new(binary)
            .env("EMBED_ADDR", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starts"),
    );
    let mut out = BufReader::new(child.0.stdout.take().expect("stdout"));
    let mut line = String::new();
    out.read_line(&mut line).expect("address line");
    let addr = line
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{binary} printed {line:?}"));
    (child, addr)
}

/// Connects with a token (as a header or in the query); the HTTP status if refused.
async fn connect(addr: SocketAddr, header: Option<&str>, query: &str) -> Result<Socket, u16> {
    let mut request = format!("ws://{addr}/chat/ws{query}")
        .into_client_request()
        .expect("request");
    if let Some(token) = header {
        request.headers_mut().insert(
            "authorization",
            format!("Bearer {token}").parse().expect("header"),
        );
    }
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("connect: {e}"),
    }
}

async fn send(socket: &mut Socket, frame: Value) {
    socket
        .send(Message::text(frame.to_string()))
        .await
        .expect("send");
}

async fn recv(socket: &mut Socket) -> Value {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(text) = message {
            return serde_json::from_str(&text).expect("json");
        }
    }
}

async fn join(socket: &mut Socket, name: &str) -> Value {
    send(
        socket,
        json!({"type": "join", "room": "General", "name": name}),
    )
    .await;
    recv(socket).await
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).await.expect("read");
    response
}

/// Sends `signal`; the chat closes with 1001 and the example exits successfully.
async fn stop(binary: &str, example: &mut Example, chat: &mut Socket, signal: &str) {
    let child = &mut example.0;
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let close = loop {
        match tokio::time::timeout(Duration::from_secs(5), chat.next())
            .await
            .expect("closed in time")
        {
            Some(Ok(Message::Close(frame))) => break frame,
            Some(Ok(_)) => continue,
            other => panic!("{binary}, SIG{signal}: expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(
        close.map(|f| u16::from(f.code)),
        Some(1001),
        "{binary}, SIG{signal}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{binary} did not exit after SIG{signal}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        exit.success(),
        "{binary} exited with {exit} after SIG{signal}"
    );
}

#[tokio::test]
async fn the_embedding_examples_do_what_the_readme_says() {
    for binary in EXAMPLES {
        for signal in ["TERM", "INT"] {
            let (mut child, addr) = start(binary);

            assert_eq!(connect(addr, None, "").await.err(), Some(401), "{binary}");
            assert_eq!(
                connect(addr, Some("forged"), "").await.err(),
                Some(401),
                "{binary}"
            );

            // Ann by header, Bob by query; each may join only as themself.
            let mut ann = connect(addr, Some("ann-secret"), "").await.expect("ann");
            let mut posing = connect(addr, None, "?token=ann-secret").await.expect("ann");
            let refused = join(&mut posing, "Bob").await;
            assert_eq!(refused["code"], "forbidden", "{binary}: {refused}");
            assert_eq!(refused["message"], "join as Ann");
            let welcome = join(&mut ann, "ann").await;
            assert_eq!(welcome["type"], "welcome", "{binary}: {welcome}");
            let mut bob = connect(addr, None, "?token=bob-secret").await.expect("bob");
            assert_eq!(join(&mut bob, "Bob").await["type"], "welcome");
            assert_eq!(recv(&mut ann).await["type"], "joined");

            send(&mut bob, json!({"type": "send", "text": "darn it"})).await;
            let said = recv(&mut ann).await;
            assert_eq!(said["text"], "d**n it", "{binary}: {said}");
            assert_eq!(recv(&mut bob).await["text"], "d**n it", "{binary}");

            // The observer runs off the room's task: its count shows up shortly.
            let mut stats = String::new();
            for _ in 0..100 {
                stats = get(addr, "/stats").await;
                if stats.contains(r#"{"messages":1,"by_user":{"2":1}}"#) {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            assert!(
                stats.contains(r#"{"messages":1,"by_user":{"2":1}}"#),
                "{binary}: {stats}"
            );

            stop(binary, &mut child, &mut ann, signal).await;
        }
    }
}
