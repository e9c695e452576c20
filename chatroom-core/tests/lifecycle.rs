//! Join, welcome, events, acks, leave and the errors of the lifecycle, through the
//! connection driver.

mod common;

use chatroom_core::protocol::{Event, Reply, ServerFrame};
use chatroom_core::testing::TestClient;
use chatroom_core::{Incoming, Limits};
use common::*;
use serde_json::json;

#[tokio::test]
async fn welcome_holds_the_room_members_history_and_a_token() {
    let hub = hub();
    let (mut bob, _) = joined(&hub, "General", "Bob").await;
    let mut alice = TestClient::connect(&hub);
    send(
        &alice,
        json!({"type": "join", "room": "general", "name": "Alice", "ref": 1}),
    )
    .await;
    let ServerFrame::Reply(Reply::Welcome(w)) = alice.recv().await.expect("frame") else {
        panic!("expected welcome")
    };
    assert_eq!(w.room, "General", "the creator's spelling is kept");
    assert_eq!(w.name, "Alice");
    assert_eq!(w.members, ["Bob", "Alice"]);
    assert_eq!(w.last_id, 2);
    assert!(matches!(w.history.last(), Some(Event::Joined(j)) if j.id == 2 && &*j.name == "Alice"));
    assert_eq!(
        w.history.len(),
        2,
        "history is an unbroken run ending at last_id"
    );
    assert_eq!(w.resume.len(), 32);
    assert!(!w.gap);
    assert_eq!(serde_json::to_value(&w.reference).expect("ref"), json!(1));
    // Bob gets Alice's `joined` with the same id; Alice gets no `joined` of her own.
    assert!(matches!(expect_event(&mut bob).await, Event::Joined(j) if j.id == 2));
    expect_quiet(&mut alice).await;
}

#[tokio::test]
async fn messages_reach_everyone_in_order_and_acks_follow_refs() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, _) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await; // B joined
    send(
        &b,
        json!({"type": "send", "text": " hi\n<b>x</b> ", "ref": "s1"}),
    )
    .await;
    for c in [&mut a, &mut b] {
        match expect_event(c).await {
            Event::Message(m) => {
                assert_eq!((m.id, &*m.from, &*m.text), (3, "B", " hi\n<b>x</b> "));
                assert!(!m.system);
            }
            other => panic!("expected message, got {other:?}"),
        }
    }
    assert_eq!(expect_ack(&mut b).await, (json!("s1"), 3));
    // Without a ref there is no ack.
    send(&a, json!({"type": "send", "text": "yo"})).await;
    assert!(matches!(expect_event(&mut a).await, Event::Message(m) if m.id == 4));
    assert!(matches!(expect_event(&mut b).await, Event::Message(m) if m.id == 4));
    expect_quiet(&mut a).await;
}

#[tokio::test]
async fn bad_frames_are_answered_and_the_connection_keeps_working() {
    let hub = hub();
    let (mut c, _) = joined(&hub, "r", "A").await;
    for bad in [
        "not json",
        "[]",
        r#"{"type":"dance"}"#,
        r#"{"type":"send"}"#,
        r#"{"type":"send","text":42}"#,
        r#"{"type":"send","text":"x","ref":{"a":1}}"#,
    ] {
        c.send_text(bad).await;
        expect_error(&mut c, "bad_frame").await;
    }
    c.send_text(r#"{"type":"dance","ref":5}"#).await;
    assert_eq!(expect_error(&mut c, "bad_frame").await, Some(json!(5)));
    c.send_raw(Incoming::Binary).await;
    expect_error(&mut c, "bad_frame").await;
    send(&c, json!({"type": "send", "text": "still here", "ref": 1})).await;
    assert!(matches!(expect_event(&mut c).await, Event::Message(_)));
    expect_ack(&mut c).await;
}

#[tokio::test]
async fn frames_before_join_are_not_joined_and_a_second_join_is_already_joined() {
    let hub = hub();
    let mut c = TestClient::connect(&hub);
    for frame in [
        json!({"type": "send", "text": "x", "ref": 1}),
        json!({"type": "rename", "name": "B", "ref": 2}),
        json!({"type": "leave", "ref": 3}),
    ] {
        send(&c, frame).await;
        assert!(
            expect_error(&mut c, "not_joined").await.is_some(),
            "ref is echoed"
        );
    }
    c.join("r", "A").await.expect("joins");
    send(
        &c,
        json!({"type": "join", "room": "other", "name": "Z", "ref": 4}),
    )
    .await;
    assert_eq!(expect_error(&mut c, "already_joined").await, Some(json!(4)));
}

#[tokio::test]
async fn invalid_names_and_rooms_and_a_retry_on_the_same_socket() {
    let hub = hub();
    let (_a, _) = joined(&hub, "r", "Alice").await;
    let mut c = TestClient::connect(&hub);
    for (room, name, code) in [
        ("r", "", "invalid_name"),
        ("r", "a\tb", "invalid_name"),
        ("r", &"x".repeat(33), "invalid_name"),
        ("", "ok", "invalid_room"),
        (&"r".repeat(65), "ok", "invalid_room"),
        ("r", "\u{410}LICE", "name_taken"),
    ] {
        send(&c, join_frame(room, name)).await;
        expect_error(&mut c, code).await;
    }
    let w = c
        .join("R", "Alicia")
        .await
        .expect("another name works on the same socket");
    assert_eq!(w.members, ["Alice", "Alicia"]);
}

#[tokio::test]
async fn room_full() {
    let hub = hub_with(Limits {
        max_members: 2,
        ..Limits::default()
    });
    let _a = joined(&hub, "r", "A").await;
    let _b = joined(&hub, "r", "B").await;
    let mut c = TestClient::connect(&hub);
    send(&c, join_frame("r", "C")).await;
    expect_error(&mut c, "room_full").await;
}

#[tokio::test]
async fn message_errors_change_nothing() {
    let hub = hub_with(Limits {
        max_message_chars: 5,
        ..Limits::default()
    });
    let (mut a, _) = joined(&hub, "r", "A").await;
    send(&a, json!({"type": "send", "text": " \t\n ", "ref": 1})).await;
    expect_error(&mut a, "empty_message").await;
    send(&a, json!({"type": "send", "text": "123456", "ref": 2})).await;
    assert_eq!(
        expect_error(&mut a, "message_too_long").await,
        Some(json!(2))
    );
    send(&a, json!({"type": "send", "text": "12345", "ref": 3})).await;
    let Event::Message(m) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!(m.id, 2, "the refused messages took no id");
}

#[tokio::test]
async fn leave_frees_the_name_voids_the_token_and_keeps_the_socket() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, wb) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await;
    send(&b, json!({"type": "leave", "ref": 9})).await;
    let Event::Left(l) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!(&*l.name, "B");
    expect_quiet(&mut b).await; // no `left` of its own, no ack
    // The token is void.
    send(
        &b,
        json!({"type": "join", "room": "r", "name": "B", "resume": wb.resume, "since": 0}),
    )
    .await;
    expect_error(&mut b, "resume_failed").await;
    // The name is free and the socket can join again.
    let w = b.join("r", "B").await.expect("rejoin");
    assert_eq!(w.members, ["A", "B"]);
}

#[tokio::test]
async fn an_empty_room_is_freed_with_its_history() {
    let hub = hub();
    let (a, _) = joined(&hub, "Lobby", "A").await;
    send(&a, json!({"type": "send", "text": "old"})).await;
    assert_eq!(hub.rooms().await.unwrap().len(), 1);
    send(&a, json!({"type": "leave"})).await;
    for _ in 0..50 {
        if hub.rooms().await.unwrap().is_empty() {
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(hub.rooms().await.unwrap().is_empty());
    assert_eq!(hub.room("lobby").await.unwrap(), None);
    let (_b, w) = joined(&hub, "lobby", "B").await;
    assert_eq!(w.room, "lobby", "a new room, spelled by its new creator");
    assert_eq!(w.last_id, 1, "the old history is gone");
}
