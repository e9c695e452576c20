//! What the host application asks the hub about members, and does to them: members
//! with presence, join time and identity; removal by identity; typed join refusals in
//! the test client.

mod common;

use std::time::{Duration, SystemTime};

use chatroom_core::protocol::Event;
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{ConnectionContext, ErrorCode, Hub, close_code};
use common::*;

#[derive(Debug, Clone, PartialEq)]
struct UserId(u64);

fn as_user(hub: &Hub, id: u64) -> TestClient {
    TestClient::connect_with(hub, ConnectionContext::new().with(UserId(id)))
}

#[tokio::test]
async fn members_come_with_presence_join_time_and_the_identity_of_their_connection() {
    let hub = hub();
    let before = SystemTime::now() - Duration::from_secs(1);
    let mut ann = as_user(&hub, 1);
    ann.join("General", "Ann").await.expect("ann joins");
    let mut bob = as_user(&hub, 2);
    bob.join("General", "Bob").await.expect("bob joins");
    expect_event(&mut ann).await; // Bob joined

    let members = hub
        .members("general")
        .await
        .unwrap()
        .expect("the room exists");
    let seen: Vec<(&str, bool, Option<u64>)> = members
        .iter()
        .map(|m| {
            (
                m.name.as_str(),
                m.present,
                m.context.get::<UserId>().map(|u| u.0),
            )
        })
        .collect();
    assert_eq!(seen, [("Ann", true, Some(1)), ("Bob", true, Some(2))]);
    assert!(
        members
            .iter()
            .all(|m| m.joined_at >= before && m.joined_at <= SystemTime::now())
    );
    assert!(members[0].joined_at <= members[1].joined_at);

    // Bob's connection drops: he is away, still with his identity and join time.
    let bob_joined = members[1].joined_at;
    bob.drop_connection();
    drop(bob);
    let away = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let members = hub
                .members("General")
                .await
                .unwrap()
                .expect("the room exists");
            if !members[1].present {
                break members;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("Bob is away within 5 s of losing his connection");
    assert_eq!(away[1].name, "Bob");
    assert_eq!(away[1].context.get::<UserId>(), Some(&UserId(2)));
    assert_eq!(away[1].joined_at, bob_joined);

    assert!(hub.members("nowhere").await.unwrap().is_none());
    assert!(hub.members("").await.unwrap().is_none(), "not a room name");
}

#[tokio::test]
async fn a_member_can_be_removed_by_the_identity_its_middleware_gave_it() {
    let hub = hub();
    let (mut watcher, _) = joined(&hub, "r", "Watcher").await;
    // User 7 holds two members of the room, under two names.
    let mut first = as_user(&hub, 7);
    first.join("r", "Troll").await.expect("joins");
    let mut second = as_user(&hub, 7);
    second.join("r", "Troll2").await.expect("joins");
    let mut other = as_user(&hub, 8);
    other.join("r", "Fine").await.expect("joins");
    for _ in 0..3 {
        expect_event(&mut watcher).await;
    }

    assert_eq!(
        hub.kick_identity("r", UserId(9), "nobody").await.unwrap(),
        0
    );
    assert_eq!(
        hub.kick_identity("r", 7_u64, "wrong type").await.unwrap(),
        0
    );
    assert_eq!(
        hub.kick_identity("r", UserId(7), "banned").await.unwrap(),
        2
    );

    for troll in [&mut first, &mut second] {
        let close = expect_close(troll).await;
        assert_eq!(close.code, close_code::REMOVED);
        assert_eq!(close.reason, "removed: banned");
    }
    let mut left = Vec::new();
    for _ in 0..2 {
        match expect_event(&mut watcher).await {
            Event::Left(e) => left.push(e.name.to_string()),
            other => panic!("expected left, got {other:?}"),
        }
    }
    left.sort();
    assert_eq!(left, ["Troll", "Troll2"]);
    let names: Vec<String> = hub
        .members("r")
        .await
        .unwrap()
        .expect("room")
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(names, ["Watcher", "Fine"]);
    assert_eq!(
        hub.kick_identity("nowhere", UserId(8), "x").await.unwrap(),
        0
    );
}

#[tokio::test]
async fn a_refused_join_in_the_test_client_carries_its_error_code() {
    let hub = hub();
    let (_ann, _) = joined(&hub, "r", "Ann").await;
    let mut other = TestClient::connect(&hub);
    match other.join("r", "ANN").await {
        Err(Closed::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::NameTaken);
            assert!(message.contains("Ann"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

/// An identity type whose `==` panics.
#[derive(Debug)]
struct Fragile;

impl PartialEq for Fragile {
    fn eq(&self, _: &Self) -> bool {
        panic!("a host bug in ==")
    }
}

#[tokio::test]
async fn a_panicking_identity_comparison_removes_nobody_and_spares_the_room() {
    let hub = hub();
    let mut held = TestClient::connect_with(&hub, ConnectionContext::new().with(Fragile));
    held.join("r", "Held").await.expect("joins");
    assert_eq!(hub.kick_identity("r", Fragile, "x").await.unwrap(), 0);
    // The room still runs: a post reaches the member.
    hub.post("r", "host", "still here")
        .await
        .expect("the room is alive");
    match expect_event(&mut held).await {
        Event::Message(m) => assert_eq!(&*m.text, "still here"),
        other => panic!("expected the post, got {other:?}"),
    }
}
