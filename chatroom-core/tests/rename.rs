//! Renames: events, acks, collisions, atomicity and a change of case.

mod common;

use chatroom_core::protocol::Event;
use common::*;
use serde_json::json;

#[tokio::test]
async fn a_rename_is_announced_to_everyone_and_acked() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "Carol").await;
    let (mut b, _) = joined(&hub, "r", "Bob").await;
    expect_event(&mut a).await;
    send(
        &a,
        json!({"type": "rename", "name": "  Caroline ", "ref": 8}),
    )
    .await;
    for c in [&mut a, &mut b] {
        let Event::Renamed(r) = expect_event(c).await else {
            panic!()
        };
        assert_eq!((r.id, &*r.from, &*r.to), (3, "Carol", "Caroline"));
    }
    assert_eq!(expect_ack(&mut a).await, (json!(8), 3));
    // The place in the members list is kept, and messages carry the new name.
    assert_eq!(
        hub.room("r").await.unwrap().map(|r| r.members),
        Some(vec!["Caroline".into(), "Bob".into()])
    );
    send(&a, json!({"type": "send", "text": "hi"})).await;
    assert!(matches!(expect_event(&mut b).await, Event::Message(m) if &*m.from == "Caroline"));
}

#[tokio::test]
async fn a_refused_rename_changes_nothing() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "Carol").await;
    let (mut b, _) = joined(&hub, "r", "Bob").await;
    expect_event(&mut a).await;
    send(&a, json!({"type": "rename", "name": "ｂｏｂ", "ref": 1})).await;
    assert_eq!(expect_error(&mut a, "name_taken").await, Some(json!(1)));
    send(
        &a,
        json!({"type": "rename", "name": "bad\u{0}name", "ref": 2}),
    )
    .await;
    assert_eq!(expect_error(&mut a, "invalid_name").await, Some(json!(2)));
    expect_quiet(&mut b).await;
    assert_eq!(
        hub.room("r").await.unwrap().map(|r| r.members),
        Some(vec!["Carol".into(), "Bob".into()])
    );
    // Carol's old name is still hers: nobody else can take it.
    let mut c = chatroom_core::testing::TestClient::connect(&hub);
    send(&c, join_frame("r", "CAROL")).await;
    expect_error(&mut c, "name_taken").await;
}

#[tokio::test]
async fn a_change_of_case_of_ones_own_name_is_allowed_and_announced() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "carol").await;
    send(&a, json!({"type": "rename", "name": "CAROL"})).await;
    let Event::Renamed(r) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!((&*r.from, &*r.to), ("carol", "CAROL"));
}

#[tokio::test]
async fn the_old_name_is_free_after_a_rename() {
    let hub = hub();
    let (a, _) = joined(&hub, "r", "Carol").await;
    send(&a, json!({"type": "rename", "name": "Caroline", "ref": 1})).await;
    let mut a = a;
    expect_event(&mut a).await;
    expect_ack(&mut a).await;
    joined(&hub, "r", "carol").await;
}
