//! What an operator gets from both site binaries: `/metrics` in Prometheus text, the
//! admin API behind its bearer token (404 without `CHATROOM_ADMIN_TOKEN`, 401 for a
//! wrong token), posting and removing through it, and JSON logs with a line per close.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BINARIES: [&str; 2] = [
    env!("CARGO_BIN_EXE_axum-site"),
    env!("CARGO_BIN_EXE_actix-site"),
];
const TOKEN: &str = "operator-token-0123456789";

/// A site binary, killed on drop, with its output lines on a channel.
struct Site {
    child: Child,
    addr: SocketAddr,
    logs: mpsc::Receiver<String>,
}

impl Drop for Site {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(binary: &str, env: &[(&str, &str)]) -> Site {
    let mut child = Command::new(binary)
        .envs(env.iter().copied())
        .env("CHATROOM_ADDR", "127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    // Lines logged before it (actix's workers starting) are skipped.
    let addr = loop {
        let mut line = String::new();
        assert!(out.read_line(&mut line).expect("output") > 0, "no address");
        if let Some(addr) = line.trim().split_once(" listening on http://") {
            break addr.1.parse().expect("address");
        }
    };
    // The log goes to stdout (after the address), warnings of the start to stderr.
    let (tx, logs) = mpsc::channel();
    let err = BufReader::new(child.stderr.take().expect("stderr"));
    let forward = |lines: Box<dyn BufRead + Send>, tx: mpsc::Sender<String>| {
        std::thread::spawn(move || {
            for line in lines.lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        })
    };
    forward(Box::new(out), tx.clone());
    forward(Box::new(err), tx);
    Site { child, addr, logs }
}

/// An HTTP/1.1 exchange: the status and the body.
async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{auth}\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    s.read_to_end(&mut response).await.expect("read");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, rest) = response.split_once("\r\n\r\n").expect("a response");
    let status = head[9..12].parse().expect("status");
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(rest)
    } else {
        rest.to_owned()
    };
    (status, body)
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    while let Some((size, after)) = rest.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 {
            break;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
    out
}

async fn api(addr: SocketAddr, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let (status, body) = request(addr, method, path, Some(TOKEN), body).await;
    (status, serde_json::from_str(&body).expect("JSON"))
}

/// Checks that `text` is Prometheus text exposition: comments, or `name{labels} value`
/// with a valid name, well-formed labels and a number; returns the samples.
fn parse_prometheus(text: &str) -> Vec<(String, f64)> {
    let mut samples = Vec::new();
    for line in text.lines() {
        if line.is_empty() || line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (key, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("a number in {line:?}"));
        let name = key.split('{').next().unwrap();
        assert!(
            !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
            "a metric name in {line:?}"
        );
        let labels = &key[name.len()..];
        if !labels.is_empty() {
            let inner = labels
                .strip_prefix('{')
                .and_then(|l| l.strip_suffix('}'))
                .unwrap_or_else(|| panic!("labels in braces in {line:?}"));
            for pair in inner.split("\",").filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once("=\"").expect("label=\"value\"");
                assert!(k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
                assert!(!v.trim_end_matches('"').contains('"') || v.contains("\\\""));
            }
        }
        samples.push((key.to_owned(), value));
    }
    samples
}

fn sample(samples: &[(String, f64)], key: &str) -> Option<f64> {
    samples.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
}

#[tokio::test]
async fn without_a_token_there_is_no_admin_and_metrics_parse() {
    for binary in BINARIES {
        let site = start(binary, &[("RUST_LOG", "warn")]);
        assert_eq!(request(site.addr, "GET", "/admin", None, None).await.0, 404);
        assert_eq!(
            request(site.addr, "GET", "/admin/api/rooms", Some(TOKEN), None)
                .await
                .0,
            404
        );
        let (status, text) = request(site.addr, "GET", "/metrics", None, None).await;
        assert_eq!(status, 200);
        let samples = parse_prometheus(&text);
        assert_eq!(
            sample(&samples, "chatroom_connections_open"),
            Some(0.0),
            "{binary}"
        );
    }
}

#[test]
fn a_short_admin_token_stops_the_site_without_printing_it() {
    for binary in BINARIES {
        let out = Command::new(binary)
            .env("CHATROOM_ADMIN_TOKEN", "hunter2")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("CHATROOM_ADMIN_TOKEN"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_posts_and_removes_and_the_metrics_follow() {
    for binary in BINARIES {
        let site = start(
            binary,
            &[
                ("CHATROOM_ADMIN_TOKEN", TOKEN),
                ("CHATROOM_LOG_FORMAT", "json"),
                ("RUST_LOG", "info"),
            ],
        );
        let addr = site.addr;
        // The page is served; its API wants the token, and nothing else is said.
        let (status, page) = request(addr, "GET", "/admin", None, None).await;
        assert_eq!(status, 200);
        assert!(page.contains("/admin/static/admin.js"));
        for token in [None, Some("operator-token-012345678"), Some("wrong")] {
            let (status, body) = request(addr, "GET", "/admin/api/rooms", token, None).await;
            assert_eq!((status, body.as_str()), (401, ""), "{binary} {token:?}");
        }
        let (status, body) = request(
            addr,
            "POST",
            "/admin/api/rooms/Ops/messages",
            None,
            Some(json!({"text": "sneaky"})),
        )
        .await;
        assert_eq!((status, body.as_str()), (401, ""));
        // A body past the limit: still 401 without the token, 413 with it.
        let big = Some(json!({"text": "x".repeat(20_000)}));
        let path = "/admin/api/rooms/Ops/messages";
        let (status, body) = request(addr, "POST", path, None, big.clone()).await;
        assert_eq!((status, body.as_str()), (401, ""));
        assert_eq!(request(addr, "POST", path, Some(TOKEN), big).await.0, 413);

        let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
            .await
            .expect("upgrade");
        ws.send(Message::text(
            r#"{"type":"join","room":"Ops Room","name":"alice"}"#,
        ))
        .await
        .unwrap();
        let welcome = ws.next().await.unwrap().unwrap().into_text().unwrap();
        assert!(welcome.contains("\"welcome\""), "{welcome}");

        let (status, rooms) = api(addr, "GET", "/admin/api/rooms", None).await;
        assert_eq!(status, 200);
        assert_eq!(rooms["rooms"], json!([{"room": "Ops Room", "members": 1}]));
        let (status, room) = api(addr, "GET", "/admin/api/rooms/Ops%20Room", None).await;
        assert_eq!(status, 200);
        assert_eq!(room["members"][0]["name"], "alice");
        assert_eq!(room["members"][0]["present"], true);
        assert_eq!(
            api(addr, "GET", "/admin/api/rooms/Nowhere", None).await.0,
            404
        );

        let (status, posted) = api(
            addr,
            "POST",
            "/admin/api/rooms/Ops%20Room/messages",
            Some(json!({"text": "maintenance at noon"})),
        )
        .await;
        assert_eq!(status, 200, "{posted}");
        let said: Value =
            serde_json::from_str(&ws.next().await.unwrap().unwrap().into_text().unwrap()).unwrap();
        assert_eq!(said["type"], "message");
        assert_eq!(said["text"], "maintenance at noon");
        assert_eq!(said["system"], true);
        assert_eq!(said["id"], posted["id"]);
        assert_eq!(
            api(
                addr,
                "POST",
                "/admin/api/rooms/Ops%20Room/messages",
                Some(json!({"nope": 1}))
            )
            .await
            .0,
            400
        );
        assert_eq!(
            api(addr, "GET", "/admin/api/rooms/Ops%20Room/kick", None)
                .await
                .0,
            405
        );

        let (status, kicked) = api(
            addr,
            "POST",
            "/admin/api/rooms/Ops%20Room/kick",
            Some(json!({"name": "ALICE", "reason": "spam"})),
        )
        .await;
        assert_eq!((status, kicked), (200, json!({"removed": true})));
        let close = loop {
            match ws.next().await {
                Some(Ok(Message::Close(frame))) => break frame.expect("a close frame"),
                Some(Ok(_)) => continue,
                other => panic!("{other:?}"),
            }
        };
        assert_eq!(
            (u16::from(close.code), close.reason.as_str()),
            (4003, "removed: spam")
        );

        // The metrics saw it all.
        let (_, text) = request(addr, "GET", "/metrics", None, None).await;
        let samples = parse_prometheus(&text);
        let joins = "chatroom_joins_total{kind=\"fresh\",outcome=\"welcome\"}";
        assert_eq!(sample(&samples, joins), Some(1.0), "{text}");
        assert_eq!(
            sample(&samples, "chatroom_events_total{type=\"message\"}"),
            Some(1.0)
        );
        assert_eq!(
            sample(&samples, "chatroom_connections_closed_total{code=\"4003\"}"),
            Some(1.0)
        );
        // The close was logged at info, as JSON, with its code and reason.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        let logged = loop {
            let line = site
                .logs
                .recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()))
                .expect("a close line in the log");
            let Ok(entry) = serde_json::from_str::<Value>(&line) else {
                // The configuration it prints at start.
                assert!(
                    line.starts_with("  CHATROOM_") || !line.starts_with(' '),
                    "{line}"
                );
                continue;
            };
            if entry["fields"]["message"] == "closed" {
                break entry;
            }
        };
        assert_eq!(logged["level"], "INFO");
        assert_eq!(logged["fields"]["code"], 4003);
        assert_eq!(logged["fields"]["reason"], "removed: spam");
        assert_eq!(logged["span"]["room"], "Ops Room");
        assert_eq!(logged["span"]["member"], "alice");
        assert!(logged["span"]["link"].is_u64());
    }
}
