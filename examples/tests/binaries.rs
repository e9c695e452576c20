//! The two site binaries as a user runs them: configuration from the environment,
//! headers of the pages, a graceful shutdown on SIGTERM that closes chats with 1001,
//! and a short soak (`chatroom-load soak`) after which each is back where it started.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

const BINARIES: [&str; 2] = [
    env!("CARGO_BIN_EXE_axum-site"),
    env!("CARGO_BIN_EXE_actix-site"),
];

fn start(binary: &str) -> (Child, SocketAddr) {
    start_with(binary, &[])
}

fn start_with(binary: &str, env: &[(&str, &str)]) -> (Child, SocketAddr) {
    let mut child = Command::new(binary)
        .envs(env.iter().copied())
        .env("CHATROOM_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starts");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    out.read_line(&mut first).expect("address line");
    let addr = first
        .trim()
        .rsplit("http://")
        .next()
        .and_then(|a| a.parse().ok())
        .expect("address");
    let mut rest = String::new();
    out.read_line(&mut rest).expect("configuration header");
    assert!(rest.contains("configuration"), "{rest}");
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, addr)
}

#[test]
fn a_bad_value_stops_the_program_with_a_clear_message() {
    for binary in BINARIES {
        let out = Command::new(binary)
            .env("CHATROOM_RESUME_GRACE_MS", "soon")
            .output()
            .expect("runs");
        assert_eq!(out.status.code(), Some(2));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("CHATROOM_RESUME_GRACE_MS=\"soon\" is not valid"),
            "{err}"
        );
    }
}

async fn get(addr: SocketAddr, path: &str) -> String {
    let mut s = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.expect("write");
    let mut response = String::new();
    s.read_to_string(&mut response).await.expect("read");
    response.to_ascii_lowercase()
}

#[tokio::test]
async fn pages_carry_a_strict_csp_and_sigterm_closes_chats_with_1001() {
    for binary in BINARIES {
        let (mut child, addr) = start(binary);
        let lobby = get(addr, "/").await;
        assert!(lobby.starts_with("http/1.1 200"), "{lobby}");
        assert!(
            lobby.contains("content-security-policy: default-src 'self'"),
            "{lobby}"
        );
        assert!(!lobby.contains("<script>"), "no inline script");
        assert!(get(addr, "/nope").await.starts_with("http/1.1 404"));
        assert!(get(addr, "/room/%00").await.starts_with("http/1.1 400"));
        // The probes: alive, and ready (a single node's store is its own memory).
        let alive = get(addr, "/healthz").await;
        assert!(
            alive.starts_with("http/1.1 200") && alive.ends_with("\r\n\r\nalive\n"),
            "{alive}"
        );
        let ready = get(addr, "/readyz").await;
        assert!(
            ready.starts_with("http/1.1 200") && ready.ends_with("\r\n\r\nready\n"),
            "{ready}"
        );

        stop_with(binary, &mut child, addr, "TERM").await;
    }
}

/// Joins a chat on the site at `addr`, sends `signal` to the site, and checks that the
/// chat closes with 1001 and the site exits cleanly.
async fn stop_with(binary: &str, child: &mut Child, addr: SocketAddr, signal: &str) {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .expect("upgrade");
    ws.send(Message::text(r#"{"type":"join","room":"r","name":"A"}"#))
        .await
        .expect("send");
    let welcome = ws.next().await.expect("frame").expect("ok");
    assert!(welcome.to_text().expect("text").contains("\"welcome\""));
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let close = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("closed in time");
    match close {
        Some(Ok(Message::Close(Some(frame)))) => assert_eq!(u16::from(frame.code), 1001),
        other => panic!("{binary}, SIG{signal}: expected close 1001, got {other:?}"),
    }
    drop(ws);
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

/// Ctrl-C (SIGINT) stops the sites as gracefully as SIGTERM: chats close with 1001.
#[tokio::test]
async fn sigint_closes_chats_with_1001_too() {
    for binary in BINARIES {
        for _ in 0..3 {
            let (mut child, addr) = start(binary);
            stop_with(binary, &mut child, addr, "INT").await;
        }
    }
}

/// The soak scenario for 20 seconds against each site (a short resume grace and
/// keepalive, so that dropped members expire and stalled readers are cut within the
/// run): nothing lost or duplicated, no healthy member cut off, every stalled reader
/// dropped by the server, and nothing left over once the clients are gone (rooms,
/// members, descriptors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_soak_loses_nothing_and_leaves_nothing_behind() {
    use chatroom_benches::{Scenario, SoakPlan, Target, run};
    chatroom_benches::raise_fd_limit(20_000);
    for binary in BINARIES {
        let (mut child, addr) = start_with(
            binary,
            &[
                ("CHATROOM_RESUME_GRACE_MS", "2000"),
                ("CHATROOM_PING_INTERVAL_MS", "2000"),
                ("CHATROOM_PING_TIMEOUT_MS", "2000"),
            ],
        );
        let plan = SoakPlan {
            seconds: 20,
            // A short first round, so the start figures are those of a server that has
            // served (actix starts its workers' descriptors lazily).
            warmup: Duration::from_secs(3),
            rooms: 6,
            members: 5,
            send_every: Duration::from_millis(500),
            action_every: Duration::from_secs(3),
            pause: Duration::from_millis(300),
            churners: 3,
            churn_pause: Duration::from_millis(100),
            bursters: 1,
            stall_every: Duration::from_secs(2),
            // The keepalive bound is 4 s; the margin covers a loaded CI machine.
            stall_bound: Duration::from_secs(7),
            settle: Duration::from_secs(20),
            sample_every: Duration::from_secs(5),
        };
        let target = Target::new(addr, Some(child.id()));
        let report = run(&Scenario::Soak(plan), target).await;
        eprintln!("{binary}\n{}", report.table());
        let soak = report.soak.expect("soak figures");
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            (soak.lost, soak.duplicated, soak.gaps),
            (0, 0, 0),
            "{binary}"
        );
        assert_eq!((soak.unanswered, soak.resume_failed), (0, 0), "{binary}");
        assert!(
            soak.member_closes.is_empty(),
            "{binary}: {:?}",
            soak.member_closes
        );
        assert!(
            soak.connect_errors.is_empty(),
            "{binary}: {:?}",
            soak.connect_errors
        );
        assert!(
            soak.acked > 100 && soak.resumes > 0 && soak.renames > 0,
            "{binary}"
        );
        assert!(
            soak.churn_cycles > 0 && soak.churn_drops > 0 && soak.bursts > 0,
            "{binary}"
        );
        assert!(soak.stallers_due > 0, "{binary}");
        assert_eq!(soak.stallers_dropped, soak.stallers_due, "{binary}");
        assert_eq!(
            (soak.leftover_rooms, soak.leftover_members),
            (0, 0),
            "{binary}"
        );
        let (start, end) = (soak.fds_start.expect("fds"), soak.fds_end.expect("fds"));
        assert!(
            end <= start,
            "{binary}: {start} descriptors at the start, {end} at the end"
        );
    }
}
