//! The conformance suite: every case is written once and run against both adapters,
//! each serving for real on 127.0.0.1:0 and driven by a real WebSocket client.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::time::{Duration, Instant};

use chatroom_conformance::{Adapter, Client, Ended, Server, http_raw};
use chatroom_core::{
    ConnectionContext, Hooks, Hub, JoinAttempt, Limits, OriginPolicy, Scheme, Verdict,
};
use serde_json::{Value, json};

fn hub(limits: Limits) -> Hub {
    Hub::builder().limits(limits).build()
}

fn start(adapter: Adapter) -> Server {
    Server::start(adapter, hub(Limits::default()))
}

fn start_with(adapter: Adapter, limits: Limits) -> Server {
    Server::start(adapter, hub(limits))
}

/// The same body, one test per adapter.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod axum {
            $(#[tokio::test] async fn $case() { super::$case(super::Adapter::Axum).await })*
        }
        mod actix {
            $(#[tokio::test] async fn $case() { super::$case(super::Adapter::Actix).await })*
        }
    };
}

suite!(
    join_welcome_events_and_acks,
    bad_frames_keep_the_connection,
    not_joined_and_already_joined,
    join_errors_and_a_retry_on_the_same_socket,
    room_full,
    forbidden_by_the_host_policy,
    message_errors,
    rate_limit_and_flood_close,
    a_close_reaches_a_client_that_reads_late,
    join_timeout_closes_with_1008,
    leave_frees_the_name_and_keeps_the_socket,
    rename_and_its_errors,
    resume_after_the_tcp_connection_dropped,
    resume_takes_over_a_still_open_connection,
    unknown_resume_tokens_fail,
    an_away_member_is_left_after_the_grace_period,
    a_frame_over_the_limit_closes_with_1009,
    kick_closes_with_4003,
    keepalive_drops_a_silent_peer,
    slow_consumer_is_cut_off,
    cross_origin_upgrades_are_refused,
    graceful_shutdown_closes_with_1001,
    http_api,
    nested_under_a_prefix_in_an_app_with_state,
    a_client_close_is_answered_at_once_in_every_state,
    the_largest_welcome_the_limits_allow_is_delivered,
    rate_limited_answers_echo_the_ref,
    a_client_that_never_reads_is_dropped_within_the_keepalive_bound,
    a_kick_during_a_pending_write_still_closes_with_4003,
    a_takeover_during_a_pending_write_still_closes_with_4001,
    a_shutdown_during_a_pending_write_still_closes_with_1001,
    a_half_closed_client_is_not_told_its_frame_was_too_large,
    a_fragmented_message_over_the_limit_closes_with_1009,
    http_edges_answer_alike,
    rooms_are_paged_over_http,
    connection_limits_refuse_at_the_upgrade,
    the_api_is_paced,
    the_origin_check_compares_schemes_and_fails_closed,
);

async fn join_welcome_events_and_acks(adapter: Adapter) {
    let server = start(adapter);
    let mut bob = server.connect().await;
    bob.join("General", "Bob").await;
    let mut alice = server.connect().await;
    alice
        .send(json!({"type": "join", "room": "general", "name": "Alice", "ref": "j1"}))
        .await;
    let w = alice.expect("welcome").await;
    assert_eq!(w["room"], "General");
    assert_eq!(w["name"], "Alice");
    assert_eq!(w["members"], json!(["Bob", "Alice"]));
    assert_eq!(w["last_id"], 2);
    assert_eq!(w["gap"], false);
    assert_eq!(w["ref"], "j1");
    assert_eq!(w["resume"].as_str().map(str::len), Some(32));
    let history = w["history"].as_array().expect("history");
    assert_eq!(
        history.last().map(|e| e["type"].clone()),
        Some(json!("joined"))
    );
    let joined = bob.expect("joined").await;
    assert_eq!(
        (joined["id"].clone(), joined["name"].clone()),
        (json!(2), json!("Alice"))
    );
    assert!(
        joined["ts"]
            .as_u64()
            .is_some_and(|ts| ts > 1_700_000_000_000)
    );

    let text = "héllo <script>alert(1)</script>\n  ";
    alice
        .send(json!({"type": "send", "text": text, "ref": 7}))
        .await;
    for c in [&mut alice, &mut bob] {
        let m = c.expect("message").await;
        assert_eq!(
            (m["id"].clone(), m["from"].clone(), m["text"].clone()),
            (json!(3), json!("Alice"), json!(text))
        );
    }
    let ack = alice.expect("ack").await;
    assert_eq!(
        (ack["ref"].clone(), ack["id"].clone()),
        (json!(7), json!(3))
    );
    // No ref, no ack: the next frame Alice sees is Bob's message.
    alice.send(json!({"type": "send", "text": "quiet"})).await;
    bob.send(json!({"type": "send", "text": "hi"})).await;
    assert_eq!(alice.expect("message").await["text"], "quiet");
    assert_eq!(alice.expect("message").await["text"], "hi");
}

async fn bad_frames_keep_the_connection(adapter: Adapter) {
    let server = start(adapter);
    let mut c = server.connect().await;
    c.join("r", "A").await;
    for bad in [
        "not json",
        "[]",
        r#"{"type":"dance"}"#,
        r#"{"type":"send"}"#,
        r#"{"type":"send","text":1}"#,
        r#"{"type":"send","text":"x","ref":true}"#,
    ] {
        c.send_text(bad).await;
        c.expect_error("bad_frame").await;
    }
    c.send_text(r#"{"type":"dance","ref":"r9"}"#).await;
    assert_eq!(c.expect_error("bad_frame").await["ref"], "r9");
    c.send_binary(b"\x00\x01").await;
    c.expect_error("bad_frame").await;
    c.send(json!({"type": "send", "text": "still here", "extra": [1, 2]}))
        .await;
    assert_eq!(c.expect("message").await["text"], "still here");
}

async fn not_joined_and_already_joined(adapter: Adapter) {
    let server = start(adapter);
    let mut c = server.connect().await;
    for frame in [
        json!({"type": "send", "text": "x", "ref": 1}),
        json!({"type": "rename", "name": "B", "ref": 2}),
        json!({"type": "leave", "ref": 3}),
    ] {
        let r = frame["ref"].clone();
        c.send(frame).await;
        assert_eq!(c.expect_error("not_joined").await["ref"], r);
    }
    c.join("r", "A").await;
    c.send(json!({"type": "join", "room": "s", "name": "B", "ref": 4}))
        .await;
    assert_eq!(c.expect_error("already_joined").await["ref"], 4);
}

async fn join_errors_and_a_retry_on_the_same_socket(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "Alice").await;
    let mut c = server.connect().await;
    let long_name = "n".repeat(33);
    let long_room = "r".repeat(65);
    for (room, name, code) in [
        ("r", "", "invalid_name"),
        ("r", "a\nb", "invalid_name"),
        ("r", long_name.as_str(), "invalid_name"),
        ("  ", "x", "invalid_room"),
        (long_room.as_str(), "x", "invalid_room"),
        ("R", "ALICE", "name_taken"),
        ("r", "Ａｌｉｃｅ", "name_taken"),
        ("r", "\u{410}lice", "name_taken"),
    ] {
        c.send(json!({"type": "join", "room": room, "name": name}))
            .await;
        c.expect_error(code).await;
    }
    let w = c.join("r", "Bob").await;
    assert_eq!(w["members"], json!(["Alice", "Bob"]));
}

async fn room_full(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            max_members: 1,
            ..Limits::default()
        },
    );
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut b = server.connect().await;
    b.send(json!({"type": "join", "room": "r", "name": "B", "ref": 1}))
        .await;
    assert_eq!(b.expect_error("room_full").await["ref"], 1);
}

struct NoRoot;

impl Hooks for NoRoot {
    async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Verdict {
        if attempt.name.as_str().eq_ignore_ascii_case("root") {
            Verdict::Deny("that name is reserved".into())
        } else {
            Verdict::Allow
        }
    }
}

async fn forbidden_by_the_host_policy(adapter: Adapter) {
    let server = Server::start(adapter, Hub::builder().hooks(NoRoot).build());
    let mut c = server.connect().await;
    c.send(json!({"type": "join", "room": "r", "name": "root", "ref": 1}))
        .await;
    let e = c.expect_error("forbidden").await;
    assert_eq!(e["message"], "that name is reserved");
    c.join("r", "user").await;
}

async fn message_errors(adapter: Adapter) {
    let server = start(adapter);
    let mut c = server.connect().await;
    c.join("r", "A").await;
    c.send(json!({"type": "send", "text": " \t\n", "ref": 1}))
        .await;
    assert_eq!(c.expect_error("empty_message").await["ref"], 1);
    c.send(json!({"type": "send", "text": "x".repeat(4001), "ref": 2}))
        .await;
    assert_eq!(c.expect_error("message_too_long").await["ref"], 2);
    c.send(json!({"type": "send", "text": "😀".repeat(4000), "ref": 3}))
        .await;
    assert_eq!(
        c.expect("message").await["id"],
        2,
        "4000 characters is the limit"
    );
}

async fn rate_limit_and_flood_close(adapter: Adapter) {
    let server = start(adapter);
    let mut c = server.connect().await;
    c.join("r", "A").await;
    // The join took a token; 19 more pass (a few more if the bucket refills meanwhile,
    // at 10 per second), the rest are limited; the 50th rejection within 10 s is
    // answered and then the connection closes with 1008.
    for _ in 0..(19 + 55) {
        c.send_text("{}").await;
    }
    expect_flood_answers_then_close(&mut c).await;
}

/// Reads a flood's answers to the end: 19 to 24 `bad_frame` (the bucket's 19 tokens
/// left after the join, plus its refill), exactly 50 `rate_limited`, then 1008.
async fn expect_flood_answers_then_close(c: &mut Client) {
    let (mut bad, mut limited) = (0, 0);
    let ended = loop {
        match c.next().await {
            Ok(frame) if frame["code"] == "bad_frame" => bad += 1,
            Ok(frame) if frame["code"] == "rate_limited" => limited += 1,
            Ok(frame) => panic!("unexpected {frame}"),
            Err(e) => break e,
        }
    };
    assert!((19..=24).contains(&bad), "bad_frame answers: {bad}");
    assert_eq!(limited, 50);
    assert_eq!(ended, Ended::Close(1008, "flooding".into()));
}

/// The server closes (flooding) while the client's later frames are still unread on
/// the server's side, and the client reads only afterwards: every answer and the
/// close frame must still arrive. (A server that dropped the TCP connection with data
/// unread would reset it, and the reset would discard what the client had not read.)
async fn a_close_reaches_a_client_that_reads_late(adapter: Adapter) {
    let server = start(adapter);
    let mut c = server.connect().await;
    c.join("r", "A").await;
    // ~1 KB each, so that most of them are still in the server's socket buffer (not
    // yet read by the server at all) when it closes.
    let junk = json!({ "pad": "x".repeat(1000) }).to_string();
    for _ in 0..(24 + 50 + 30) {
        c.send_text(&junk).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    expect_flood_answers_then_close(&mut c).await;
}

async fn join_timeout_closes_with_1008(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            join_timeout: Duration::from_millis(200),
            ..Limits::default()
        },
    );
    let mut c = server.connect().await;
    assert_eq!(c.ended().await, Ended::Close(1008, "join timeout".into()));
}

async fn leave_frees_the_name_and_keeps_the_socket(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut b = server.connect().await;
    let wb = b.join("r", "B").await;
    a.expect("joined").await;
    b.send(json!({"type": "leave", "ref": 5})).await;
    let left = a.expect("left").await;
    assert_eq!(
        (left["name"].clone(), left["id"].clone()),
        (json!("B"), json!(3))
    );
    // No `left` or `ack` for the leaver; its token is void; the socket joins again.
    b.send(json!({"type": "join", "room": "r", "name": "B", "resume": wb["resume"], "since": 2}))
        .await;
    b.expect_error("resume_failed").await;
    let w = b.join("r", "b").await;
    assert_eq!(w["members"], json!(["A", "b"]));
}

async fn rename_and_its_errors(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "Carol").await;
    let mut b = server.connect().await;
    b.join("r", "Bob").await;
    a.expect("joined").await;
    a.send(json!({"type": "rename", "name": "BOB", "ref": 1}))
        .await;
    assert_eq!(a.expect_error("name_taken").await["ref"], 1);
    a.send(json!({"type": "rename", "name": "", "ref": 2}))
        .await;
    a.expect_error("invalid_name").await;
    a.send(json!({"type": "rename", "name": "CAROL", "ref": 3}))
        .await;
    for c in [&mut a, &mut b] {
        let r = c.expect("renamed").await;
        assert_eq!(
            (r["from"].clone(), r["to"].clone(), r["id"].clone()),
            (json!("Carol"), json!("CAROL"), json!(3))
        );
    }
    assert_eq!(a.expect("ack").await["id"], 3);
    let (_, body) = server.get("/rooms/r").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["members"],
        json!(["CAROL", "Bob"])
    );
}

async fn resume_after_the_tcp_connection_dropped(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut b = server.connect().await;
    let wb = b.join("r", "B").await;
    a.expect("joined").await;
    b.drop_tcp();
    // Wait until the server has noticed (B is away, so still listed), then talk.
    a.send(json!({"type": "send", "text": "m1"})).await;
    a.send(json!({"type": "send", "text": "m2"})).await;
    a.expect("message").await;
    a.expect("message").await;
    let mut b2 = server.connect().await;
    b2.send(json!({"type": "join", "room": "r", "name": "B", "resume": wb["resume"], "since": wb["last_id"]}))
        .await;
    let w = b2.expect("welcome").await;
    assert_eq!(w["name"], "B");
    assert_eq!(w["gap"], false);
    let texts: Vec<Value> = w["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|e| e["text"].clone())
        .collect();
    assert_eq!(texts, [json!("m1"), json!("m2")]);
    assert_eq!(w["members"], json!(["A", "B"]));
    // Seamless: A sees neither `left` nor a second `joined`, just B's next message.
    b2.send(json!({"type": "send", "text": "back"})).await;
    let m = a.expect("message").await;
    assert_eq!(
        (m["from"].clone(), m["text"].clone()),
        (json!("B"), json!("back"))
    );
}

async fn resume_takes_over_a_still_open_connection(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    let wa = a.join("r", "A").await;
    let mut a2 = server.connect().await;
    a2.send(json!({"type": "join", "room": "r", "name": "A", "resume": wa["resume"], "since": wa["last_id"]}))
        .await;
    let w = a2.expect("welcome").await;
    assert_eq!(w["history"], json!([]));
    assert_eq!(
        a.ended().await,
        Ended::Close(4001, "resumed elsewhere".into())
    );
    a2.send(json!({"type": "send", "text": "still me", "ref": 1}))
        .await;
    assert_eq!(a2.expect("message").await["from"], "A");
}

async fn unknown_resume_tokens_fail(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut c = server.connect().await;
    for token in ["", "0123", "ffffffffffffffffffffffffffffffff"] {
        c.send(json!({"type": "join", "room": "r", "name": "A", "resume": token, "since": 0, "ref": 1})).await;
        assert_eq!(c.expect_error("resume_failed").await["ref"], 1);
    }
}

async fn an_away_member_is_left_after_the_grace_period(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            resume_grace: Duration::from_millis(300),
            ..Limits::default()
        },
    );
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut b = server.connect().await;
    let wb = b.join("r", "B").await;
    a.expect("joined").await;
    b.close().await;
    let left = a.expect("left").await;
    assert_eq!(left["name"], "B");
    let mut b2 = server.connect().await;
    b2.send(json!({"type": "join", "room": "r", "name": "B", "resume": wb["resume"], "since": 0}))
        .await;
    b2.expect_error("resume_failed").await;
    b2.join("r", "B").await;
}

async fn a_frame_over_the_limit_closes_with_1009(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut big = server.connect().await;
    big.join("r", "Big").await;
    a.expect("joined").await;
    big.send(json!({"type": "send", "text": "x".repeat(17 * 1024)}))
        .await;
    assert!(matches!(big.ended().await, Ended::Close(1009, _)));
    // The sender is away: still listed, the room works on.
    let (_, body) = server.get("/rooms/r").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["members"],
        json!(["A", "Big"])
    );
    a.send(json!({"type": "send", "text": "ok"})).await;
    assert_eq!(a.expect("message").await["text"], "ok");
}

async fn kick_closes_with_4003(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut b = server.connect().await;
    b.join("r", "B").await;
    a.expect("joined").await;
    assert!(server.hub.kick("r", "B", "").await.unwrap());
    assert_eq!(b.ended().await, Ended::Close(4003, "removed".into()));
    assert_eq!(a.expect("left").await["name"], "B");
}

async fn keepalive_drops_a_silent_peer(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            ping_interval: Some(Duration::from_millis(100)),
            ping_timeout: Duration::from_millis(150),
            ..Limits::default()
        },
    );
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut silent = server.connect().await;
    silent.join("r", "S").await;
    a.expect("joined").await;
    // A keeps talking (and its client so answers pings); S reads nothing for a while.
    for _ in 0..12 {
        a.send(json!({"type": "send", "text": "tick"})).await;
        a.expect("message").await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    a.send(json!({"type": "send", "text": "alive", "ref": 1}))
        .await;
    assert_eq!(a.expect("message").await["text"], "alive");
    let (_, body) = server.get("/rooms/r").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["members"],
        json!(["A", "S"]),
        "away, not gone"
    );
    // The silent peer was dropped without a close frame.
    assert_eq!(silent.ended().await, Ended::Dropped);
}

async fn slow_consumer_is_cut_off(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            outgoing_queue: 16,
            rate_burst: 10_000,
            ..Limits::default()
        },
    );
    let mut reader = server.connect().await;
    reader.join("r", "Reader").await;
    let mut stalled = server.connect_with_recv_buffer(8 * 1024).await;
    stalled.join("r", "Stalled").await;
    let mut sender = server.connect().await;
    sender.join("r", "Sender").await;
    reader.expect("joined").await;
    reader.expect("joined").await;
    // 16 kB messages, ~10 MB in all: far more than the stalled client's socket,
    // the server's send buffer and its queue can hold.
    let text = "😀".repeat(4000);
    let count: u64 = 600;
    let reading = tokio::spawn(async move {
        for i in 0..count {
            let frame = reader.recv_text().await;
            let head = format!(r#"{{"type":"message","id":{},"#, 4 + i);
            assert!(
                frame.starts_with(&head),
                "every message, in order: {}",
                &frame[..40]
            );
        }
        reader
    });
    // The sender reads its own echo before sending on, so only the stalled one lags.
    let frame = json!({"type": "send", "text": text}).to_string();
    for _ in 0..count {
        sender.send_text(&frame).await;
        sender.recv_text().await;
    }
    let _reader = reading.await.expect("reader got everything");
    match stalled.ended().await {
        Ended::Close(code, reason) => assert_eq!((code, reason.as_str()), (1008, "slow consumer")),
        Ended::Dropped => {}
    }
    let (_, body) = server.get("/rooms/r").await;
    assert!(
        body.contains("Stalled"),
        "the slow consumer is away, not gone: {body}"
    );
}

async fn cross_origin_upgrades_are_refused(adapter: Adapter) {
    let server = start(adapter);
    let url = server.ws_url();
    assert_eq!(
        Client::connect(&url, Some("http://evil.example"))
            .await
            .err(),
        Some(403)
    );
    let same = format!("http://{}", server.addr);
    let mut ok = Client::connect(&url, Some(&same))
        .await
        .expect("same origin");
    ok.join("r", "A").await;
    Client::connect(&url, None)
        .await
        .expect("no origin: not a browser");
    let listed = Server::start(
        adapter,
        Hub::builder()
            .origins(OriginPolicy::List(vec!["https://app.example".into()]))
            .build(),
    );
    let url = listed.ws_url();
    Client::connect(&url, Some("https://app.example"))
        .await
        .expect("listed origin");
    assert_eq!(Client::connect(&url, Some(&same)).await.err(), Some(403));
}

async fn graceful_shutdown_closes_with_1001(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut b = server.connect().await;
    b.join("s", "B").await;
    let mut idle = server.connect().await;
    let stopping = tokio::spawn(server.shutdown());
    for c in [&mut a, &mut b, &mut idle] {
        assert!(matches!(c.ended().await, Ended::Close(1001, _)));
    }
    drop((a, b, idle));
    tokio::time::timeout(Duration::from_secs(5), stopping)
        .await
        .expect("shutdown completes")
        .expect("no panic");
}

async fn http_api(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("General", "Alice").await;
    let mut b = server.connect().await;
    b.join("general", "Bob").await;
    let mut c = server.connect().await;
    c.join("Side room", "Carol").await;
    let (status, body) = server.get("/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!([{"room": "General", "members": 2}, {"room": "Side room", "members": 1}])
    );
    let (status, body) = server.get("/rooms/GENERAL").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json"),
        json!({"room": "General", "members": ["Alice", "Bob"]})
    );
    let (status, body) = server.get("/rooms/Side%20room").await;
    assert_eq!(
        (
            status,
            serde_json::from_str::<Value>(&body).expect("json")["room"].clone()
        ),
        (200, json!("Side room"))
    );
    let (status, body) = server.get("/rooms/nowhere").await;
    assert_eq!(status, 404);
    assert!(serde_json::from_str::<Value>(&body).expect("json")["error"].is_string());
    for (name, expected) in [
        ("ALICE", json!({"available": false, "reason": "name_taken"})),
        (
            "%E2%80%8Bx",
            json!({"available": false, "reason": "invalid_name"}),
        ),
        ("Dave", json!({"available": true, "reason": null})),
    ] {
        let (status, body) = server.get(&format!("/rooms/general/names/{name}")).await;
        assert_eq!(status, 200);
        assert_eq!(
            serde_json::from_str::<Value>(&body).expect("json"),
            expected,
            "{name}"
        );
    }
}

async fn nested_under_a_prefix_in_an_app_with_state(adapter: Adapter) {
    let server = Server::start_at(adapter, Hub::new(), "/chat");
    assert_eq!(
        chatroom_conformance::http_get(server.addr, "/hello").await,
        (200, "hello".into()),
        "the app's own route and state"
    );
    let mut a = server.connect().await; // ws://.../chat/ws
    a.join("r", "A").await;
    a.send(json!({"type": "send", "text": "nested"})).await;
    assert_eq!(a.expect("message").await["text"], "nested");
    assert_eq!(server.get("/rooms").await.0, 200);
    let _unused = ConnectionContext::new();
}

/// A client's close frame is answered at once, before a join, in a room and after a
/// leave, and then the server ends the TCP connection.
async fn a_client_close_is_answered_at_once_in_every_state(adapter: Adapter) {
    let server = start(adapter);
    for state in ["unjoined", "joined", "left"] {
        let mut c = server.connect().await;
        if state != "unjoined" {
            c.join("r", state).await;
        }
        if state == "left" {
            c.send(json!({"type": "leave"})).await;
            // The leave has taken effect once the name is free again.
            let mut other = server.connect().await;
            other.join("r", state).await;
        }
        let asked = Instant::now();
        let answer = c.close_with(1000).await;
        let took = asked.elapsed();
        assert_eq!(answer.map(|(code, _)| code), Some(1000), "{state}");
        // Far above loopback's milliseconds (with room for a loaded test machine),
        // far below the seconds a client otherwise waits for its close timeout.
        assert!(
            took < Duration::from_millis(500),
            "{state}: answered after {took:?}"
        );
        assert!(
            c.tcp_ends_within(Duration::from_secs(2)).await,
            "{state}: the server ends the TCP connection"
        );
    }
}

/// With the default limits, a room's history of 100 messages of 4000 characters that
/// each take 6 bytes in JSON (a system post may hold control characters) makes a
/// welcome of 2.4 MB; a newcomer gets it whole.
async fn the_largest_welcome_the_limits_allow_is_delivered(adapter: Adapter) {
    let server = start(adapter);
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let emoji = "😀".repeat(4000);
    a.send(json!({"type": "send", "text": emoji})).await;
    a.expect("message").await;
    let control = "\u{1}".repeat(4000);
    for _ in 0..99 {
        server.hub.post("r", "bot", &control).await.expect("posted");
    }
    let mut b = server.connect().await;
    b.send(json!({"type": "join", "room": "r", "name": "B"}))
        .await;
    let text = b.recv_text().await;
    assert!(text.len() > 2_000_000, "a welcome of {} bytes", text.len());
    let w: Value = serde_json::from_str(&text).expect("json");
    assert_eq!(w["type"], "welcome");
    let history = w["history"].as_array().expect("history");
    assert_eq!(history.len(), 100);
    assert!(
        history[0]["text"] == json!(control),
        "the oldest retained post first"
    );
    assert_eq!(history[99]["type"], "joined");
    // B stays connected and present.
    b.send(json!({"type": "send", "text": "here", "ref": 1}))
        .await;
    assert_eq!(b.expect("message").await["text"], "here");
}

/// A rate-limited frame is answered with its `ref` when it has one; a frame that is
/// not JSON gets none.
async fn rate_limited_answers_echo_the_ref(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            rate_burst: 2,
            rate_per_sec: 1,
            ..Limits::default()
        },
    );
    let mut c = server.connect().await;
    c.join("r", "A").await;
    c.send(json!({"type": "send", "text": "one", "ref": "s1"}))
        .await;
    assert_eq!(c.expect("message").await["text"], "one");
    assert_eq!(c.expect("ack").await["ref"], "s1");
    // The bucket is empty now.
    c.send(json!({"type": "send", "text": "two", "ref": "s2"}))
        .await;
    assert_eq!(c.expect_error("rate_limited").await["ref"], "s2");
    c.send(json!({"ref": 77, "type": "rename", "name": "B"}))
        .await;
    assert_eq!(c.expect_error("rate_limited").await["ref"], 77);
    c.send_text("not json, \"ref\": 3").await;
    assert_eq!(c.expect_error("rate_limited").await.get("ref"), None);
    c.send(json!({"type": "send", "text": "x", "ref": [1]}))
        .await;
    assert_eq!(c.expect_error("rate_limited").await.get("ref"), None);
    // Nothing of a refused frame happened.
    let (_, body) = server.get("/rooms/r").await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).expect("json")["members"],
        json!(["A"])
    );
}

/// A client that never reads but keeps sending `join` frames with long refs (each
/// answered with an error that echoes the ref) fills its socket; the server's write
/// blocks, and the connection is dropped within the keepalive bound, so its member
/// becomes away and, after the grace period, is `left`.
async fn a_client_that_never_reads_is_dropped_within_the_keepalive_bound(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            ping_interval: Some(Duration::from_millis(200)),
            ping_timeout: Duration::from_millis(300),
            resume_grace: Duration::from_millis(200),
            rate_burst: 1_000_000,
            rate_per_sec: 1_000_000,
            ..Limits::default()
        },
    );
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let mut stuck = server.connect_with_recv_buffer(4 * 1024).await;
    let client_port = stuck.tcp().local_addr().expect("addr").port();
    stuck.join("r", "Stuck").await;
    a.expect("joined").await;
    let long_ref = "r".repeat(12 * 1024);
    let frame = json!({"type": "join", "room": "r", "name": "S", "ref": long_ref}).to_string();
    let sending = tokio::spawn(async move {
        // Stops once the server no longer takes frames (blocked or gone).
        for _ in 0..2000 {
            let sent = tokio::time::timeout(Duration::from_millis(500), stuck.send_text(&frame));
            if sent.await.is_err() {
                break;
            }
        }
        stuck
    });
    let started = Instant::now();
    // Pings keep A's reads alive, so bound the wait as a whole.
    let left = tokio::time::timeout(Duration::from_secs(10), a.expect("left"))
        .await
        .expect("the stuck member is dropped and left");
    assert_eq!(left["name"], "Stuck");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "dropped after {:?}",
        started.elapsed()
    );
    // The server let go of the socket too (actix needs the kernel's help for that:
    // the harness serves it with `end_stalled_connections`).
    let mut held = chatroom_conformance::server_side_established(server.addr.port(), client_port);
    for _ in 0..50 {
        if held != Some(true) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        held = chatroom_conformance::server_side_established(server.addr.port(), client_port);
    }
    assert_ne!(
        held,
        Some(true),
        "the server still holds the stuck client's socket"
    );
    sending.abort();
}

/// Fills a stalled member's connection so that the server's write to it is pending,
/// then ends the membership with `end`; once the client reads again it gets every frame
/// the server had started to send, then the close frame (not a dropped connection).
async fn close_after_a_pending_write(
    adapter: Adapter,
    end: impl AsyncFnOnce(&Server, &Value),
) -> Ended {
    let server = start_with(
        adapter,
        Limits {
            rate_burst: 10_000,
            rate_per_sec: 10_000,
            ..Limits::default()
        },
    );
    let mut stalled = server.connect_with_recv_buffer(8 * 1024).await;
    let welcome = stalled.join("r", "Stalled").await;
    let mut sender = server.connect().await;
    sender.join("r", "Sender").await;
    // About 8 MB: more than the stalled client's socket, and the server's, can hold;
    // fewer frames than its outgoing queue, so it is not a slow consumer.
    let frame = json!({"type": "send", "text": "😀".repeat(4000)}).to_string();
    for _ in 0..500 {
        sender.send_text(&frame).await;
        sender.recv_text().await;
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    end(&server, &welcome).await;
    let mut messages = 0;
    let ended = loop {
        match stalled.next().await {
            Ok(frame) if frame["type"] == "joined" || frame["type"] == "message" => messages += 1,
            Ok(frame) => panic!("unexpected {frame}"),
            Err(e) => break e,
        }
    };
    assert!(messages > 0, "the pending write was delivered");
    ended
}

async fn a_kick_during_a_pending_write_still_closes_with_4003(adapter: Adapter) {
    let ended = close_after_a_pending_write(adapter, async |server, _| {
        assert!(server.hub.kick("r", "Stalled", "").await.unwrap());
    })
    .await;
    assert_eq!(ended, Ended::Close(4003, "removed".into()));
}

async fn a_takeover_during_a_pending_write_still_closes_with_4001(adapter: Adapter) {
    let ended = close_after_a_pending_write(adapter, async |server, welcome| {
        let mut again = server.connect().await;
        again
            .send(json!({"type": "join", "room": "r", "name": "Stalled", "resume": welcome["resume"]}))
            .await;
        // Its welcome holds the whole history: read past it.
        assert_eq!(again.recv().await["type"], "welcome");
    })
    .await;
    assert_eq!(ended, Ended::Close(4001, "resumed elsewhere".into()));
}

async fn a_shutdown_during_a_pending_write_still_closes_with_1001(adapter: Adapter) {
    let ended = close_after_a_pending_write(adapter, async |server, _| {
        // Shuts the hub down without waiting for the connections to end.
        drop(server.hub.shutdown());
    })
    .await;
    assert_eq!(ended, Ended::Close(1001, "server shutting down".into()));
}

/// A client that ends its side of the TCP connection (no close frame) but still reads
/// is not sent a 1009 `frame too large`: nothing it sent was too large.
async fn a_half_closed_client_is_not_told_its_frame_was_too_large(adapter: Adapter) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = start(adapter);
    let mut c = server.connect().await;
    c.join("r", "A").await;
    let tcp = c.tcp();
    tcp.shutdown().await.expect("half close");
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), tcp.read_to_end(&mut rest)).await;
    // A close frame from the server starts with 0x88; 1009 is 0x03 0xF1.
    let too_large = rest
        .windows(4)
        .any(|w| w[0] == 0x88 && w[2..] == [0x03, 0xF1]);
    assert!(!too_large, "the server answered 1009: {rest:?}");
}

/// A message sent in fragments whose whole is over the frame limit closes with 1009,
/// as one frame over the limit does; one within the limit is served.
async fn a_fragmented_message_over_the_limit_closes_with_1009(adapter: Adapter) {
    let server = start(adapter);
    let mut c = server.connect().await;
    c.join("r", "A").await;
    // 10 KB in four fragments: within the 16 KiB frame limit and 4000 characters.
    let fits = json!({"type": "send", "text": "é€".repeat(2000)}).to_string();
    c.send_fragmented(&fits, 4).await;
    assert!(c.expect("message").await["text"] == json!("é€".repeat(2000)));
    let big = json!({"type": "send", "text": "x".repeat(20 * 1024)}).to_string();
    c.send_fragmented(&big, 8).await;
    assert!(matches!(c.ended().await, Ended::Close(1009, _)));
}

/// `GET /rooms` answers a page at a time, largest first, with a `Link` to the next.
async fn rooms_are_paged_over_http(adapter: Adapter) {
    let server = Server::start_at(adapter, Hub::new(), "/chat");
    let mut clients = Vec::new();
    for (room, size) in [("Side room", 2), ("big", 3), ("a+b", 1)] {
        for i in 0..size {
            let mut c = server.connect().await;
            c.join(room, &format!("m{i}")).await;
            clients.push(c);
        }
    }
    let r = http_raw(server.addr, b"GET /chat/rooms?limit=2 HTTP/1.1").await;
    assert_eq!(r.status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).expect("json"),
        json!([{"room": "big", "members": 3}, {"room": "Side room", "members": 2}])
    );
    let link = r.header("link").expect("a link to the next page");
    assert_eq!(link, r#"<?limit=2&cursor=2%3ASide%20room>; rel="next""#);
    let next = link
        .trim_start_matches("<?")
        .split('>')
        .next()
        .expect("target");
    let r = http_raw(
        server.addr,
        format!("GET /chat/rooms?{next} HTTP/1.1").as_bytes(),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&r.body).expect("json"),
        json!([{"room": "a+b", "members": 1}])
    );
    assert_eq!(r.header("link"), None, "the last page");
    for query in [
        "limit=0",
        "limit=1001",
        "limit=x",
        "cursor=nope",
        "cursor=%FF",
    ] {
        let r = http_raw(
            server.addr,
            format!("GET /chat/rooms?{query} HTTP/1.1").as_bytes(),
        )
        .await;
        assert_eq!(r.status, 400, "{query}");
        assert!(
            r.body.contains(r#""error":"bad_query""#),
            "{query}: {}",
            r.body
        );
    }
    // Without a query: the first 100.
    let (status, body) = server.get("/rooms").await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body)
            .expect("json")
            .as_array()
            .map(Vec::len),
        Some(3)
    );
}

/// Beyond the connection limits an upgrade is refused with 503 or 429 and a JSON body,
/// before any WebSocket work; a closed connection gives its place back.
async fn connection_limits_refuse_at_the_upgrade(adapter: Adapter) {
    let upgrade = |extra: &str| {
        format!(
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=={extra}"
        )
    };
    let server = start_with(
        adapter,
        Limits {
            max_connections: 2,
            ..Limits::default()
        },
    );
    let mut a = server.connect().await;
    a.join("r", "A").await;
    let b = server.connect().await;
    let r = http_raw(server.addr, upgrade("").as_bytes()).await;
    assert_eq!(r.status, 503);
    assert!(r.body.contains(r#""error":"server_full""#), "{}", r.body);
    assert_eq!(r.header("retry-after"), Some("5"));
    b.close().await;
    let mut admitted = false;
    for _ in 0..50 {
        if http_raw(server.addr, upgrade("").as_bytes()).await.status == 101 {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "the closed connection's place is given back");

    let per_address = Server::start(
        adapter,
        Hub::builder()
            .limits(Limits {
                max_connections_per_address: Some(1),
                ..Limits::default()
            })
            .client_address_header("X-Real-IP")
            .build(),
    );
    let url = per_address.ws_url();
    let _one = Client::connect_with_headers(&url, &[("x-real-ip", "192.0.2.1")])
        .await
        .expect("the first from an address");
    let _other = Client::connect_with_headers(&url, &[("x-real-ip", "192.0.2.2")])
        .await
        .expect("another address");
    let r = http_raw(
        per_address.addr,
        upgrade("\r\nX-Real-IP: 192.0.2.1").as_bytes(),
    )
    .await;
    assert_eq!(r.status, 429);
    assert!(
        r.body.contains(r#""error":"too_many_connections""#),
        "{}",
        r.body
    );
}

/// The JSON API answers at most `api_requests_per_sec` requests a second: a request
/// beyond the budget waits for its turn; one whose turn is too far off is answered
/// `503 busy` with `Retry-After: 1`.
async fn the_api_is_paced(adapter: Adapter) {
    let server = start_with(
        adapter,
        Limits {
            api_requests_per_sec: 4,
            api_burst: 1,
            api_max_wait: Duration::from_millis(600),
            ..Limits::default()
        },
    );
    let get = || http_raw(server.addr, b"GET /rooms HTTP/1.1");
    let start = Instant::now();
    assert_eq!(get().await.status, 200);
    assert_eq!(get().await.status, 200, "the second waits for its turn");
    assert!(
        start.elapsed() >= Duration::from_millis(200),
        "answered after {:?}, within a quarter second's budget",
        start.elapsed()
    );
    // Five at once: turns 0.25 s apart, the ones more than 0.6 s away are refused.
    let crowd = futures_util::future::join_all((0..5).map(|_| get())).await;
    let served = crowd.iter().filter(|r| r.status == 200).count();
    let refused: Vec<_> = crowd.iter().filter(|r| r.status == 503).collect();
    assert!(served >= 1, "{crowd:?}");
    assert_eq!(served + refused.len(), 5, "{crowd:?}");
    assert!(!refused.is_empty(), "{crowd:?}");
    assert!(
        refused[0].body.contains(r#""error":"busy""#),
        "{}",
        refused[0].body
    );
    assert_eq!(refused[0].header("retry-after"), Some("1"));
}

/// The HTTP edges answer alike on both adapters: the same status, headers that matter
/// and body for the same request, decided by the core.
async fn http_edges_answer_alike(adapter: Adapter) {
    let server = Server::start_at(adapter, Hub::new(), "/chat");
    let addr = server.addr;
    let bad_path =
        r#"{"error":"bad_path","message":"the path is not valid percent-encoded UTF-8"}"#;
    for path in [
        "/chat/rooms/%FF",
        "/chat/rooms/%FF/names/x",
        "/chat/rooms/r/names/%C3",
        "/chat/rooms/%zz",
    ] {
        let r = http_raw(addr, format!("GET {path} HTTP/1.1").as_bytes()).await;
        assert_eq!((r.status, r.body.as_str()), (400, bad_path), "{path}");
        assert_eq!(r.header("content-type"), Some("application/json"), "{path}");
    }
    let r = http_raw(addr, b"GET /chat/rooms/Side%20room HTTP/1.1").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (404, r#"{"error":"no_such_room","message":"no such room"}"#)
    );
    for head in [
        "POST /chat/rooms HTTP/1.1\r\nContent-Length: 0",
        "DELETE /chat/rooms/r HTTP/1.1",
        "PUT /chat/ws HTTP/1.1\r\nContent-Length: 0",
    ] {
        let r = http_raw(addr, head.as_bytes()).await;
        assert_eq!(
            (r.status, r.body.as_str()),
            (
                405,
                r#"{"error":"method_not_allowed","message":"only GET is served here"}"#
            ),
            "{head}"
        );
        assert_eq!(r.header("allow"), Some("GET"));
    }
    let forbidden =
        r#"{"error":"forbidden_origin","message":"this origin may not open a chat connection"}"#;
    // A malformed upgrade from a foreign origin: the origin is judged first.
    for head in [
        "GET /chat/ws HTTP/1.1\r\nOrigin: http://evil.example",
        "GET /chat/ws HTTP/1.1\r\nOrigin: http://evil.example\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8",
        "POST /chat/ws HTTP/1.1\r\nOrigin: http://evil.example\r\nContent-Length: 0",
    ] {
        let r = http_raw(addr, head.as_bytes()).await;
        assert_eq!((r.status, r.body.as_str()), (403, forbidden), "{head}");
    }
    let r = http_raw(addr, b"GET /chat/ws HTTP/1.1").await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            426,
            r#"{"error":"upgrade_required","message":"this endpoint speaks WebSocket only: send a WebSocket upgrade request"}"#
        )
    );
    assert_eq!(r.header("upgrade"), Some("websocket"));
    let upgrade = "GET /chat/ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade";
    let r = http_raw(
        addr,
        format!(
            "{upgrade}\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            426,
            r#"{"error":"unsupported_version","message":"the WebSocket version must be 13"}"#
        )
    );
    assert_eq!(r.header("sec-websocket-version"), Some("13"));
    let r = http_raw(
        addr,
        format!("{upgrade}\r\nSec-WebSocket-Version: 13").as_bytes(),
    )
    .await;
    assert_eq!(
        (r.status, r.body.as_str()),
        (
            400,
            r#"{"error":"bad_upgrade","message":"Sec-WebSocket-Key must be 16 bytes in base64"}"#
        )
    );
    let r = http_raw(
        addr,
        format!(
            "{upgrade}\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="
        )
        .as_bytes(),
    )
    .await;
    assert_eq!(r.status, 101, "a valid upgrade");
}

/// `Origin: http://host` is refused for a site known to be served over https on the
/// same host and port (configured, or said by a proxy); an `https` page is refused by
/// a site configured as plain `http`; an `Origin` that is not visible ASCII is
/// refused, not taken as absent.
async fn the_origin_check_compares_schemes_and_fails_closed(adapter: Adapter) {
    async fn status(addr: std::net::SocketAddr, extra: &[u8]) -> u16 {
        let upgrade = "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==";
        let mut head = upgrade.as_bytes().to_vec();
        head.extend_from_slice(extra);
        http_raw(addr, &head).await.status
    }
    let origin = |scheme: &str, addr| format!("\r\nOrigin: {scheme}://{addr}").into_bytes();
    let server = start(adapter);
    let addr = server.addr;
    assert_eq!(status(addr, &origin("http", addr)).await, 101);
    // Nothing says how the site is served: an https page is no downgrade.
    assert_eq!(status(addr, &origin("https", addr)).await, 101);
    let mut proxied = origin("http", addr);
    proxied.extend_from_slice(b"\r\nX-Forwarded-Proto: https");
    assert_eq!(
        status(addr, &proxied).await,
        403,
        "http page, https site (proxy)"
    );
    let mut garbled = origin("http", addr);
    garbled.push(0xFF);
    assert_eq!(
        status(addr, &garbled).await,
        403,
        "an Origin that is not ASCII"
    );
    assert_eq!(status(addr, b"\r\nOrigin: ").await, 403, "an empty Origin");

    let tls = Server::start(adapter, Hub::builder().scheme(Scheme::Https).build());
    let addr = tls.addr;
    assert_eq!(status(addr, &origin("https", addr)).await, 101);
    assert_eq!(
        status(addr, &origin("http", addr)).await,
        403,
        "http page, https site"
    );
    let plain = Server::start(adapter, Hub::builder().scheme(Scheme::Http).build());
    let addr = plain.addr;
    assert_eq!(
        status(addr, &origin("https", addr)).await,
        403,
        "https page, http site"
    );
    assert_eq!(status(addr, &origin("http", addr)).await, 101);
}
