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
    start_with(node_command(binary, redis))
}

/// The command that starts `binary` as a node on `redis`.
fn node_command(binary: &str, redis: &RedisServer) -> Command {
    let mut command = Command::new(binary);
    command
        .env("CHATROOM_ADDR", "127.0.0.1:0")
        .env("CHATROOM_REDIS_URL", &redis.url)
        .env("CHATROOM_ORIGINS", "*")
        .env("RUST_LOG", "warn");
    command
}

fn start_with(mut command: Command) -> Site {
    let mut child = command
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
    if let Some(redis) = RedisServer::start() {
        share_one_room(redis).await;
    }
}

/// The same on a Redis Cluster of three masters: the sites find it from the URL of one.
#[tokio::test]
async fn an_axum_node_and_an_actix_node_share_one_room_on_a_redis_cluster() {
    if let Some(redis) = RedisServer::start_cluster() {
        share_one_room(redis).await;
    }
}

async fn share_one_room(redis: RedisServer) {
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

async fn status(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).await.expect("read");
    let code = response
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status line");
    let body = response
        .split("\r\n\r\n")
        .nth(1)
        .unwrap_or_default()
        .to_owned();
    (code, body)
}

/// Polls `/readyz` until it answers `code`.
async fn readyz_becomes(site: &Site, code: u16, within: Duration) -> String {
    let asked = std::time::Instant::now();
    loop {
        let (now, body) = status(site.addr, "/readyz").await;
        if now == code {
            return body;
        }
        assert!(asked.elapsed() < within, "/readyz still {now} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_follows_the_store_while_healthz_stays_alive() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    for binary in BINARIES {
        let site = start(binary, &redis);
        assert_eq!(
            readyz_becomes(&site, 200, Duration::from_secs(3)).await,
            "ready\n"
        );
        redis.signal("STOP");
        let body = readyz_becomes(&site, 503, Duration::from_secs(4)).await;
        assert_eq!(body, "store degraded\n", "{binary}");
        assert_eq!(
            status(site.addr, "/healthz").await,
            (200, "alive\n".to_owned())
        );
        redis.signal("CONT");
        readyz_becomes(&site, 200, Duration::from_secs(4)).await;
    }
}

fn signal(site: &Site, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(site.child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success());
}

#[tokio::test]
async fn a_node_paused_past_its_lease_wakes_delivering_nothing_and_closes_with_1012() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let start_leased = |binary| {
        let mut command = node_command(binary, &redis);
        command.env("CHATROOM_NODE_LEASE_MS", "1500");
        command
    };
    let paused = start_with(start_leased(BINARIES[0]));
    let awake = start_with(start_leased(BINARIES[1]));
    let mut ann = connect(&paused).await;
    send(
        &mut ann,
        json!({"type": "join", "room": "pause", "name": "Ann"}),
    )
    .await;
    let welcome = next(&mut ann).await;
    assert_eq!(welcome["type"], "welcome");
    let mut bob = connect(&awake).await;
    send(
        &mut bob,
        json!({"type": "join", "room": "pause", "name": "Bob"}),
    )
    .await;
    assert_eq!(next(&mut bob).await["type"], "welcome");
    assert_eq!(next(&mut ann).await["type"], "joined");

    signal(&paused, "STOP");
    // Reaped within the lease and a reaper tick: Ann is away (her name stays held).
    let stopped = std::time::Instant::now();
    loop {
        // The away set of room "pause" (its key in hex).
        if redis.int(&["ZCARD", "cr:{cr.0}:r:7061757365:away"]).await == 1 {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_millis(1500 + 2000),
            "away in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    send(&mut bob, json!({"type": "send", "text": "while you slept"})).await;
    assert_eq!(next(&mut bob).await["text"], "while you slept");
    signal(&paused, "CONT");

    // The woken node delivers nothing more to Ann and closes her connection with 1012.
    let code = loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), ann.next())
            .await
            .expect("closed in time");
        match frame {
            Some(Ok(Message::Text(text))) => {
                panic!("the woken node delivered {text}")
            }
            Some(Ok(Message::Close(Some(close)))) => break u16::from(close.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    };
    assert_eq!(code, 1012);
    // She resumes on the other node within her grace: nothing was announced.
    let mut again = connect(&awake).await;
    send(
        &mut again,
        json!({"type": "join", "room": "pause", "name": "Ann", "resume": welcome["resume"], "since": welcome["last_id"]}),
    )
    .await;
    let resumed = next(&mut again).await;
    assert_eq!(resumed["type"], "welcome", "{resumed}");
    send(&mut again, json!({"type": "send", "text": "back"})).await;
    assert_eq!(
        next(&mut bob).await["text"],
        "back",
        "no left, no joined before it"
    );
}

#[tokio::test]
async fn a_site_with_other_room_rules_than_the_running_cluster_stops_at_start() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let _running = start(BINARIES[0], &redis);
    let mut other = node_command(BINARIES[1], &redis);
    other.env("CHATROOM_HISTORY", "50");
    let (status, err) = run_briefly(other);
    assert!(!status.success());
    assert!(
        err.contains("other room rules") && err.contains("history 50 here, 100 in the cluster"),
        "{err}"
    );
}

#[tokio::test]
async fn sites_reach_a_tls_redis_trusting_the_ca_file_they_are_given() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    let ca = std::env::temp_dir().join(format!("chatroom-ca-{}.pem", std::process::id()));
    std::fs::write(&ca, redis.ca.as_deref().expect("a CA")).expect("writes");
    let with_ca = |binary| {
        let mut command = node_command(binary, &redis);
        command.env("CHATROOM_REDIS_CA_FILE", &ca);
        command
    };
    let axum = start_with(with_ca(BINARIES[0]));
    let actix = start_with(with_ca(BINARIES[1]));
    let mut ann = connect(&axum).await;
    send(
        &mut ann,
        json!({"type": "join", "room": "tls", "name": "Ann"}),
    )
    .await;
    assert_eq!(next(&mut ann).await["type"], "welcome");
    let mut bob = connect(&actix).await;
    send(
        &mut bob,
        json!({"type": "join", "room": "tls", "name": "Bob"}),
    )
    .await;
    assert_eq!(next(&mut bob).await["members"], json!(["Ann", "Bob"]));
    assert_eq!(next(&mut ann).await["type"], "joined");

    // Without the CA file, the system's roots do not know the server's certificate.
    let (status, err) = run_briefly(node_command(BINARIES[0], &redis));
    assert!(!status.success());
    assert!(
        err.contains("CHATROOM_REDIS_URL=rediss://") && err.to_lowercase().contains("certificate"),
        "{err}"
    );
    let _ = std::fs::remove_file(&ca);
}

/// Runs a site that should stop at start: its exit status and what it printed on
/// stderr. A site that starts after all is killed after 20 s (and fails the test).
fn run_briefly(mut command: Command) -> (std::process::ExitStatus, String) {
    let mut child = command
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waits") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("the site did not stop at start");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        std::io::Read::read_to_string(&mut stderr, &mut err).expect("reads");
    }
    (status, err)
}
