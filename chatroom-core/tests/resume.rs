//! Lost connections, away members, the grace period, resume and takeover.

mod common;

use std::time::Duration;

use chatroom_core::protocol::Event;
use chatroom_core::testing::TestClient;
use chatroom_core::{Limits, close_code};
use common::*;
use serde_json::json;

fn resume_frame(name: &str, token: &str, since: u64) -> serde_json::Value {
    json!({"type": "join", "room": "r", "name": name, "resume": token, "since": since})
}

#[tokio::test(start_paused = true)]
async fn an_away_member_keeps_its_name_until_the_grace_runs_out() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, _) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await;
    b.drop_connection();
    tokio::time::sleep(Duration::from_secs(14)).await;
    // Still a member, still holding the name; nobody was told anything.
    expect_quiet(&mut a).await;
    assert_eq!(
        hub.room("r").await.unwrap().map(|r| r.members),
        Some(vec!["A".to_string(), "B".to_string()])
    );
    let mut c = TestClient::connect(&hub);
    send(&c, join_frame("r", "b")).await;
    expect_error(&mut c, "name_taken").await;
    // Grace (15 s) runs out: the others get `left` and the name is free.
    let Event::Left(l) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!((&*l.name, l.id), ("B", 3));
    c.join("r", "b").await.expect("the name is free again");
}

#[tokio::test(start_paused = true)]
async fn a_resume_within_grace_is_seamless_and_replays_exactly_the_missed_events() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, wb) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await;
    send(&b, json!({"type": "send", "text": "before"})).await;
    let Event::Message(seen) = expect_event(&mut b).await else {
        panic!()
    };
    b.drop_connection();
    tokio::time::sleep(Duration::from_secs(1)).await;
    send(&a, json!({"type": "send", "text": "m1"})).await;
    send(&a, json!({"type": "send", "text": "m2"})).await;
    tokio::time::sleep(Duration::from_secs(5)).await;

    let mut b2 = TestClient::connect(&hub);
    send(&b2, resume_frame("ignored", &wb.resume, seen.id)).await;
    let w = b2.welcome().await.expect("resumed");
    assert_eq!(w.name, "B");
    assert_eq!(w.members, ["A", "B"]);
    let texts: Vec<_> = w
        .history
        .iter()
        .map(|e| match e {
            Event::Message(m) => m.text.to_string(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(texts, ["m1", "m2"]);
    assert!(!w.gap);
    assert_eq!(w.last_id, seen.id + 2);
    // No `left` and no second `joined` for the others, then life goes on.
    for _ in 0..3 {
        assert!(matches!(expect_event(&mut a).await, Event::Message(_)));
    }
    tokio::time::sleep(Duration::from_secs(20)).await;
    expect_quiet(&mut a).await;
    send(&b2, json!({"type": "send", "text": "back"})).await;
    assert!(matches!(expect_event(&mut a).await, Event::Message(m) if &*m.from == "B"));
}

#[tokio::test(start_paused = true)]
async fn a_resume_after_history_moved_on_reports_a_gap() {
    let hub = hub_with(Limits {
        history: 3,
        ..Limits::default()
    });
    let (a, _) = joined(&hub, "r", "A").await;
    let (mut b, wb) = joined(&hub, "r", "B").await;
    b.drop_connection();
    for i in 0..5 {
        send(&a, json!({"type": "send", "text": format!("m{i}")})).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut b2 = TestClient::connect(&hub);
    send(&b2, resume_frame("B", &wb.resume, wb.last_id)).await;
    let w = b2.welcome().await.expect("resumed");
    assert!(w.gap);
    let ids: Vec<u64> = w.history.iter().map(Event::id).collect();
    assert_eq!(ids, [5, 6, 7]);
    assert_eq!(w.last_id, 7);
}

#[tokio::test(start_paused = true)]
async fn a_resume_takes_over_a_still_open_connection_with_4001() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, wb) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await;
    let mut b2 = TestClient::connect(&hub);
    send(&b2, resume_frame("B", &wb.resume, wb.last_id)).await;
    let w = b2.welcome().await.expect("resumed");
    assert!(w.history.is_empty());
    let close = expect_close(&mut b).await;
    assert_eq!(
        (close.code, close.reason.as_str()),
        (close_code::RESUMED_ELSEWHERE, "resumed elsewhere")
    );
    // Still a member, on the new connection: messages flow, nobody saw a `left`.
    send(&a, json!({"type": "send", "text": "hello"})).await;
    assert!(matches!(expect_event(&mut b2).await, Event::Message(m) if &*m.text == "hello"));
    assert!(matches!(expect_event(&mut a).await, Event::Message(_)));
    tokio::time::sleep(Duration::from_secs(30)).await;
    expect_quiet(&mut a).await;
}

#[tokio::test(start_paused = true)]
async fn unknown_malformed_and_expired_tokens_fail() {
    let hub = hub();
    let (_a, _) = joined(&hub, "r", "A").await;
    let (mut b, wb) = joined(&hub, "r", "B").await;
    let mut c = TestClient::connect(&hub);
    for token in [
        "nope",
        "00000000000000000000000000000000",
        &wb.resume.to_uppercase(),
    ] {
        send(&c, json!({"type": "join", "room": "r", "name": "B", "resume": token, "since": 0, "ref": 1})).await;
        assert_eq!(expect_error(&mut c, "resume_failed").await, Some(json!(1)));
    }
    // A token is only good in its own room.
    send(
        &c,
        json!({"type": "join", "room": "elsewhere", "name": "B", "resume": wb.resume}),
    )
    .await;
    expect_error(&mut c, "resume_failed").await;
    b.drop_connection();
    tokio::time::sleep(Duration::from_secs(16)).await;
    let mut c = TestClient::connect(&hub);
    send(&c, resume_frame("B", &wb.resume, 0)).await;
    expect_error(&mut c, "resume_failed").await;
    // The client then joins afresh on the same socket.
    c.join("r", "B").await.expect("fresh join");
}
