//! Join timeout, rate limit and flooding, frame size, keepalive and slow consumers.

mod common;

use std::time::Duration;

use chatroom_core::protocol::{Event, Reply, ServerFrame};
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{ConnectionContext, Incoming, Limits, Outgoing, close_code};
use common::*;
use serde_json::json;

#[tokio::test(start_paused = true)]
async fn a_connection_that_never_joins_is_closed_with_1008() {
    let hub = hub();
    let mut c = TestClient::connect(&hub);
    let start = tokio::time::Instant::now();
    let close = expect_close(&mut c).await;
    assert_eq!(
        (close.code, close.reason.as_str()),
        (close_code::POLICY, "join timeout")
    );
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn each_join_attempt_restarts_the_join_timeout() {
    let hub = hub();
    let mut c = TestClient::connect(&hub);
    tokio::time::sleep(Duration::from_secs(8)).await;
    send(&c, join_frame("r", "")).await;
    expect_error(&mut c, "invalid_name").await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    c.join("r", "A").await.expect("still open 16 s in");
}

#[tokio::test(start_paused = true)]
async fn frames_beyond_the_bucket_are_rate_limited_and_have_no_effect() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await; // the join took one token
    for i in 0..19 {
        send(&a, json!({"type": "send", "text": format!("m{i}")})).await;
    }
    send(
        &a,
        json!({"type": "send", "text": "one too many", "ref": 1}),
    )
    .await;
    // Errors are answered at once, events come through the room: order between them
    // is not defined, so collect both.
    let (mut ids, mut limited) = (Vec::new(), 0);
    for _ in 0..20 {
        match a.recv().await.expect("frame") {
            ServerFrame::Event(e) => ids.push(e.id()),
            ServerFrame::Reply(Reply::Error { code, .. }) if code.as_str() == "rate_limited" => {
                limited += 1
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(ids, (2..=20).collect::<Vec<u64>>());
    assert_eq!(limited, 1);
    // The bucket refills at 10 per second.
    tokio::time::sleep(Duration::from_millis(100)).await;
    send(&a, json!({"type": "send", "text": "later"})).await;
    let Event::Message(m) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!(
        (m.id, &*m.text),
        (21, "later"),
        "the limited frame took no id"
    );
}

#[tokio::test(start_paused = true)]
async fn persistent_flooding_closes_with_1008_after_the_50th_rejection() {
    let hub = hub();
    let (mut flood, _) = joined(&hub, "r", "F").await;
    let (mut other, _) = joined(&hub, "r", "O").await;
    expect_event(&mut flood).await; // O joined
    for _ in 0..(19 + 50) {
        flood.send_text("x").await; // bad frames cost tokens too
    }
    for _ in 0..19 {
        expect_error(&mut flood, "bad_frame").await;
    }
    for _ in 0..50 {
        expect_error(&mut flood, "rate_limited").await;
    }
    let close = expect_close(&mut flood).await;
    assert_eq!(close.code, close_code::POLICY);
    // The flooder becomes away; the room carries on.
    send(&other, json!({"type": "send", "text": "calm", "ref": 1})).await;
    assert!(matches!(expect_event(&mut other).await, Event::Message(_)));
    assert_eq!(
        hub.room("r").await.unwrap().map(|r| r.members.len()),
        Some(2)
    );
}

#[tokio::test(start_paused = true)]
async fn rejections_spread_over_more_than_the_window_do_not_close() {
    let hub = hub_with(Limits {
        rate_burst: 1,
        rate_per_sec: 1,
        ..Limits::default()
    });
    let (mut c, _) = joined(&hub, "r", "A").await;
    // 30 rejections, a pause longer than the window, 30 more: never 50 within 10 s.
    for _ in 0..2 {
        for _ in 0..30 {
            c.send_text("x").await;
        }
        for _ in 0..30 {
            expect_error(&mut c, "rate_limited").await;
        }
        tokio::time::sleep(Duration::from_millis(10_500)).await;
        c.send_text("x").await; // one token has refilled: a plain bad_frame
        expect_error(&mut c, "bad_frame").await;
    }
}

#[tokio::test]
async fn a_frame_over_the_limit_closes_with_1009_and_the_member_is_away() {
    let hub = hub_with(Limits {
        max_frame_bytes: 100,
        ..Limits::default()
    });
    let (_a, _) = joined(&hub, "r", "A").await;
    let (mut b, _) = joined(&hub, "r", "B").await;
    send(&b, json!({"type": "send", "text": "x".repeat(100)})).await;
    let close = expect_close(&mut b).await;
    assert_eq!(
        (close.code, close.reason.as_str()),
        (close_code::TOO_BIG, "frame too large")
    );
    let (mut c, _) = joined(&hub, "r", "C").await;
    c.send_raw(Incoming::TooLarge).await;
    assert_eq!(expect_close(&mut c).await.code, close_code::TOO_BIG);
    // Both are away, not gone: their names are still held.
    assert_eq!(
        hub.room("r").await.unwrap().map(|r| r.members),
        Some(vec!["A".into(), "B".into(), "C".into()])
    );
}

#[tokio::test(start_paused = true)]
async fn a_peer_that_stops_answering_pings_is_dropped_and_becomes_away() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    // Ping after 20 s of silence; no answer within 20 s more: dropped.
    let start = tokio::time::Instant::now();
    assert_eq!(a.next_raw().await, Some(Outgoing::Ping));
    assert_eq!(start.elapsed(), Duration::from_secs(20));
    assert_eq!(a.next_raw().await, None, "dropped without a close frame");
    assert_eq!(start.elapsed(), Duration::from_secs(40));
    assert_eq!(
        hub.room("r").await.unwrap().map(|r| r.members.len()),
        Some(1),
        "away, not gone"
    );
}

#[tokio::test]
async fn a_stalled_reader_is_disconnected_while_the_others_get_everything_in_order() {
    let hub = hub_with(Limits {
        outgoing_queue: 100,
        rate_burst: 1000,
        ..Limits::default()
    });
    let (mut a, _) = joined(&hub, "r", "A").await;
    // A client whose receive buffer holds one frame and which never reads.
    let mut stalled = TestClient::connect_with_buffer(&hub, ConnectionContext::new(), 1);
    send(&stalled, join_frame("r", "S")).await;
    let (sender, _) = joined(&hub, "r", "B").await;
    let count = 300u64;
    for i in 0..count {
        send(&sender, json!({"type": "send", "text": i.to_string()})).await;
    }
    // A sees S join, B join, then every message in order with gapless ids.
    let mut last = expect_event(&mut a).await.id();
    let mut texts = Vec::new();
    while texts.len() < count as usize {
        let e = expect_event(&mut a).await;
        assert_eq!(e.id(), last + 1, "gapless ids");
        last = e.id();
        if let Event::Message(m) = e {
            texts.push(m.text.to_string());
        }
    }
    assert_eq!(texts, (0..count).map(|i| i.to_string()).collect::<Vec<_>>());
    // The stalled reader got its welcome, then was cut off: 1008 or dropped outright.
    let mut got_welcome = false;
    loop {
        match stalled.recv().await {
            Ok(_) => got_welcome = true,
            Err(Closed::Close(f)) => {
                assert_eq!(
                    (f.code, f.reason.as_str()),
                    (close_code::POLICY, "slow consumer")
                );
                break;
            }
            Err(Closed::Ended) => break,
            Err(other) => panic!("{other:?}"),
        }
    }
    assert!(got_welcome);
    // It is away (still listed), and the room still works for everyone else.
    assert!(
        hub.room("r")
            .await
            .unwrap()
            .is_some_and(|r| r.members.contains(&"S".to_string()))
    );
    send(&sender, json!({"type": "send", "text": "after"})).await;
    assert!(matches!(expect_event(&mut a).await, Event::Message(m) if &*m.text == "after"));
}

#[tokio::test]
async fn a_new_room_beyond_the_room_limit_is_refused_too_many_rooms() {
    let hub = hub_with(Limits {
        max_rooms: 2,
        ..Limits::default()
    });
    let (_a, _) = joined(&hub, "one", "A").await;
    let (b, _) = joined(&hub, "two", "B").await;
    let mut c = chatroom_core::testing::TestClient::connect(&hub);
    send(
        &c,
        json!({"type": "join", "room": "three", "name": "C", "ref": 1}),
    )
    .await;
    assert_eq!(expect_error(&mut c, "too_many_rooms").await, Some(json!(1)));
    // Existing rooms still take members; a freed room makes room for a new one.
    c.join("one", "C").await.expect("an existing room");
    send(&b, json!({"type": "leave"})).await;
    let mut d = chatroom_core::testing::TestClient::connect(&hub);
    let mut welcome = None;
    for _ in 0..100 {
        send(&d, join_frame("three", "D")).await;
        match d.welcome().await {
            Ok(w) => {
                welcome = Some(w);
                break;
            }
            Err(_) => tokio::task::yield_now().await,
        }
    }
    assert_eq!(
        welcome.expect("room three opens once two is freed").room,
        "three"
    );
}

#[tokio::test(start_paused = true)]
async fn fresh_joins_beyond_a_rooms_join_rate_are_rate_limited() {
    let hub = hub_with(Limits {
        room_join_burst: 3,
        room_joins_per_sec: 2,
        ..Limits::default()
    });
    let mut members = Vec::new();
    for i in 0..3 {
        let (c, _) = joined(&hub, "r", &format!("m{i}")).await;
        members.push(c);
    }
    let mut late = chatroom_core::testing::TestClient::connect(&hub);
    send(
        &late,
        json!({"type": "join", "room": "r", "name": "late", "ref": "j"}),
    )
    .await;
    assert_eq!(
        expect_error(&mut late, "rate_limited").await,
        Some(json!("j"))
    );
    // Another room is not affected; this one takes joins again as the bucket refills.
    joined(&hub, "other", "x").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    late.join("r", "late").await.expect("a token came back");
}

#[tokio::test(start_paused = true)]
async fn churn_spends_a_rooms_presence_budget_and_filling_it_does_not() {
    let hub = hub_with(Limits {
        room_presence_burst: 40,
        room_presence_per_sec: 20,
        ..Limits::default()
    });
    // Ten joins that stay cost nothing: a room filling up is never refused for it.
    let mut members = Vec::new();
    for i in 0..10 {
        members.push(joined(&hub, "big", &format!("m{i}")).await);
    }
    let (mut watcher, _) = members.remove(0);
    // A member that leaves costs two deliveries per member (its `joined` and its
    // `left`): 2 x 10, then 2 x 9, then 2 x 8 = 54 of a budget of 40.
    for name in ["m9", "m8", "m7"] {
        let (gone, _) = members.pop().expect("a member");
        send(&gone, json!({"type": "leave"})).await;
        loop {
            match watcher.event().await.expect("open") {
                Event::Left(left) if &*left.name == name => break,
                _ => {}
            }
        }
    }
    // In debt: a fresh join is refused and announces nothing.
    let mut late = TestClient::connect(&hub);
    send(
        &late,
        json!({"type": "join", "room": "big", "name": "late", "ref": 7}),
    )
    .await;
    assert_eq!(
        expect_error(&mut late, "rate_limited").await,
        Some(json!(7))
    );
    assert_eq!(
        hub.room("big")
            .await
            .unwrap()
            .expect("listed")
            .members
            .len(),
        7,
        "the refused join took no place"
    );
    // Another room has a budget of its own.
    joined(&hub, "small", "x").await;
    // A member whose connection was lost resumes at no cost.
    let (mut lost, welcome) = members.pop().expect("a member");
    lost.drop_connection();
    let mut back = TestClient::connect(&hub);
    send(
        &back,
        json!({"type": "join", "room": "big", "name": "m6", "resume": welcome.resume}),
    )
    .await;
    assert_eq!(back.welcome().await.expect("resumed").name, "m6");
    // The debt of 14 is repaid at 20 a second: not yet after half a second, after
    // 0.8 s it is.
    tokio::time::sleep(Duration::from_millis(500)).await;
    send(
        &late,
        json!({"type": "join", "room": "big", "name": "late", "ref": 8}),
    )
    .await;
    assert_eq!(
        expect_error(&mut late, "rate_limited").await,
        Some(json!(8))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    late.join("big", "late")
        .await
        .expect("the budget came back");
    // While members come and go, a join pays upfront (2 x 9 = 18: in debt again at
    // once, so the next is refused) and its leave is then free.
    let mut next = TestClient::connect(&hub);
    send(
        &next,
        json!({"type": "join", "room": "big", "name": "next", "ref": 9}),
    )
    .await;
    assert_eq!(
        expect_error(&mut next, "rate_limited").await,
        Some(json!(9))
    );
    send(&late, json!({"type": "leave"})).await;
    loop {
        match watcher.event().await.expect("open") {
            Event::Left(left) if &*left.name == "late" => break,
            _ => {}
        }
    }
    tokio::time::sleep(Duration::from_millis(900)).await;
    next.join("big", "next")
        .await
        .expect("the leave of a member that paid upfront costs nothing more");
}

/// Clients that loop join/leave on a room whose presence budget is spent are refused
/// at the room's gate: the refusal does not wait for the room's task (which has the
/// room's own traffic to deliver), and the gate opens again when the budget is back.
#[tokio::test]
async fn a_room_refusing_joins_answers_them_without_its_task() {
    let hub = hub_with(Limits {
        room_presence_burst: 20,
        room_presence_per_sec: 20,
        ..Limits::default()
    });
    let mut members = Vec::new();
    for i in 0..8 {
        members.push(joined(&hub, "busy", &format!("m{i}")).await);
    }
    let (mut watcher, _) = members.remove(0);
    // Two leaves cost 2 x 8 + 2 x 7 = 30 of 20: in debt by 10, half a second to repay.
    for name in ["m7", "m6"] {
        let (gone, _) = members.pop().expect("a member");
        send(&gone, json!({"type": "leave"})).await;
        loop {
            match watcher.event().await.expect("open") {
                Event::Left(left) if &*left.name == name => break,
                _ => {}
            }
        }
    }
    let mut looper = TestClient::connect(&hub);
    send(
        &looper,
        json!({"type": "join", "room": "busy", "name": "l", "ref": 1}),
    )
    .await;
    assert_eq!(
        expect_error(&mut looper, "rate_limited").await,
        Some(json!(1))
    );

    // The room's task is held: a join that had to ask it would wait.
    let pause = chatroom_core::testing::pause_room(&hub, "busy")
        .await
        .expect("the room");
    send(
        &looper,
        json!({"type": "join", "room": "busy", "name": "l", "ref": 2}),
    )
    .await;
    let answer = tokio::time::timeout(
        Duration::from_millis(300),
        expect_error(&mut looper, "rate_limited"),
    )
    .await
    .expect("refused at the gate, without waiting for the room");
    assert_eq!(answer, Some(json!(2)));
    pause.resume();

    // Once the debt is repaid the gate is open and the room takes the join.
    tokio::time::sleep(Duration::from_millis(700)).await;
    looper
        .join("busy", "l")
        .await
        .expect("the budget came back");
}
