//! The site binaries as cluster nodes: `CHATROOM_REDIS_URL` makes each a node of the
//! cluster on that Redis; a bad URL or an unreachable Redis stops it with a message
//! that names the variable.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use chatroom_redis::testing::RedisServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BINARIES: [&str; 2] = [
    env!("CARGO_BIN_EXE_axum-site"),
    env!("CARGO_BIN_EXE_actix-site"),
];

#[test]
fn a_bad_or_unreachable_redis_stops_the_site_naming_the_variable() {
    for binary in BINARIES {
        for (url, says) in [
            ("http://example.com/", "not a Redis URL"),
            ("redis://127.0.0.1:1/", "cannot reach Redis"),
        ] {
            let out = Command::new(binary)
                .env("CHATROOM_ADDR", "127.0.0.1:0")
                .env("CHATROOM_REDIS_URL", url)
                .output()
                .expect("runs");
            assert!(!out.status.success(), "{binary} with {url}");
            let err = String::from_utf8_lossy(&out.stderr);
            assert!(
                err.contains("CHATROOM_REDIS_URL=") && err.contains(says),
                "{binary} with {url}: {err}"
            );
        }
    }
}

/// A site node: the process, its address, and what it printed at start.
struct Site {
    child: Child,
    addr: SocketAddr,
    banner: String,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &str, redis: &RedisServer) -> Site {
    let mut child = Command::new(binary)
        .env("CHATROOM_ADDR", "127.0.0.1:0")
        .env("CHATROOM_REDIS_URL", &redis.url)
        .env("CHATROOM_ORIGINS", "*")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut banner = String::new();
    while !banner.contains("node") {
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("reads") > 0, "{banner}");
        banner.push_str(&line);
    }
    let addr = banner
        .lines()
        .next()
        .and_then(|l| l.rsplit("http://").next())
        .and_then(|a| a.trim().parse().ok())
        .expect("address");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    Site {
        child,
        addr,
        banner,
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(site: &Site) -> Ws {
    tokio_tungstenite::connect_async(format!("ws://{}/ws", site.addr))
        .await
        .expect("upgrade")
        .0
}

async fn send(ws: &mut Ws, value: Value) {
    ws.send(Message::text(value.to_string()))
        .await
        .expect("send");
}

async fn next(ws: &mut Ws) -> Value {
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("ok");
        if let Message::Text(text) = frame {
            return serde_json::from_str(&text).expect("JSON");
        }
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).await.expect("read");
    response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn an_axum_node_and_an_actix_node_share_one_room() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let axum = start(BINARIES[0], &redis);
    let actix = start(BINARIES[1], &redis);
    assert!(axum.banner.contains("cluster node"), "{}", axum.banner);

    let mut ann = connect(&axum).await;
    send(
        &mut ann,
        json!({"type": "join", "room": "General", "name": "Ann"}),
    )
    .await;
    let welcome = next(&mut ann).await;
    assert_eq!(welcome["type"], "welcome");
    let mut bob = connect(&actix).await;
    send(
        &mut bob,
        json!({"type": "join", "room": "general", "name": "ann"}),
    )
    .await;
    assert_eq!(next(&mut bob).await["code"], "name_taken");
    send(
        &mut bob,
        json!({"type": "join", "room": "general", "name": "Bob"}),
    )
    .await;
    let w = next(&mut bob).await;
    assert_eq!(w["members"], json!(["Ann", "Bob"]));
    assert_eq!(next(&mut ann).await["type"], "joined");

    send(
        &mut bob,
        json!({"type": "send", "text": "hello across nodes"}),
    )
    .await;
    let m = next(&mut ann).await;
    assert_eq!(
        (m["from"].as_str(), m["text"].as_str()),
        (Some("Bob"), Some("hello across nodes"))
    );
    assert_eq!(next(&mut bob).await, m, "the sender gets the same event");

    // Both nodes answer the HTTP API alike.
    let on_axum = get(axum.addr, "/rooms/general").await;
    assert_eq!(on_axum, get(actix.addr, "/rooms/general").await);
    assert!(on_axum.contains("\"Ann\",\"Bob\""), "{on_axum}");

    // A reload on the other node resumes: nothing announced, the message in history.
    drop(ann);
    let mut again = connect(&actix).await;
    send(
        &mut again,
        json!({"type": "join", "room": "General", "name": "Ann", "resume": welcome["resume"], "since": welcome["last_id"]}),
    )
    .await;
    let resumed = next(&mut again).await;
    assert_eq!(resumed["type"], "welcome", "{resumed}");
    assert_eq!(
        resumed["history"][1]["text"], "hello across nodes",
        "{resumed}"
    );
    send(&mut again, json!({"type": "send", "text": "back"})).await;
    let m = next(&mut bob).await;
    assert_eq!(m["text"], "back", "no left, no joined before it: {m}");
}
