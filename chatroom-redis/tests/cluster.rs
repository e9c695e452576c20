//! Several nodes (hubs) on one real Redis: the rules of PROTOCOL.md hold across them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod support;

use std::time::Duration;

use chatroom_core::protocol::{Event, Reply, ServerFrame};
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{ErrorCode, Hub, Limits};
use serde_json::json;
use support::RedisServer;

fn limits() -> Limits {
    Limits {
        resume_grace: Duration::from_secs(5),
        ..Limits::default()
    }
}

async fn event(client: &mut TestClient) -> Event {
    tokio::time::timeout(Duration::from_secs(5), client.event())
        .await
        .expect("an event within 5 s")
        .expect("the connection stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_on_two_nodes_share_a_room() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;

    let mut ann = TestClient::connect(&one);
    let welcome = ann.join("General", "Ann").await.expect("ann joins");
    assert_eq!(welcome.members, ["Ann"]);
    assert_eq!(welcome.last_id, 1);

    let mut bob = TestClient::connect(&two);
    let welcome = bob.join("general", "Bob").await.expect("bob joins");
    assert_eq!(welcome.room, "General", "the creator's spelling");
    assert_eq!(welcome.members, ["Ann", "Bob"]);
    assert_eq!(welcome.last_id, 2);
    let Event::Joined(joined) = event(&mut ann).await else {
        panic!("joined")
    };
    assert_eq!((&*joined.name, joined.id), ("Bob", 2));

    // A colliding name is taken on the other node too.
    let mut eve = TestClient::connect(&two);
    let refused = eve.join("GENERAL", "ＡＮＮ").await;
    assert!(
        matches!(
            &refused,
            Err(Closed::Refused {
                code: ErrorCode::NameTaken,
                ..
            })
        ),
        "{refused:?}"
    );

    bob.send_json(&json!({"type": "send", "text": "hi Ann", "ref": 7}))
        .await;
    let Event::Message(m) = event(&mut ann).await else {
        panic!("message")
    };
    assert_eq!((&*m.from, &*m.text, m.id), ("Bob", "hi Ann", 3));
    let Event::Message(own) = event(&mut bob).await else {
        panic!("own message")
    };
    assert_eq!(own.id, 3);
    match bob.recv().await {
        Ok(ServerFrame::Reply(Reply::Ack { id, .. })) => assert_eq!(id, 3),
        other => panic!("expected the ack after the event, got {other:?}"),
    }

    // Both nodes answer the HTTP reads for the whole cluster.
    for hub in [&one, &two] {
        let details = hub.room("general").await.unwrap().expect("the room");
        assert_eq!(details.members, ["Ann", "Bob"]);
        let rooms = hub.rooms().await.unwrap();
        assert_eq!(rooms.len(), 1);
        assert_eq!((rooms[0].room.as_str(), rooms[0].members), ("General", 2));
    }

    // A name left on one node is free at once on the other.
    ann.leave().await;
    let Event::Left(left) = event(&mut bob).await else {
        panic!("left")
    };
    assert_eq!(&*left.name, "Ann");
    let mut ann2 = TestClient::connect(&two);
    ann2.join("General", "Ann").await.expect("the name is free");
    shutdown(&[one, two]).await;
}

async fn shutdown(hubs: &[Hub]) {
    for hub in hubs {
        hub.shutdown().await;
    }
}
