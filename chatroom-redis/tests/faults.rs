//! What members see when a node or Redis fails: never a name held twice, never a
//! silent hole, no zombie member.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::{Duration, Instant};

use chatroom_core::protocol::{Event, Reply, ServerFrame};
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{ErrorCode, Limits, close_code};
use chatroom_redis::testing::RedisServer;
use serde_json::json;

async fn event(client: &mut TestClient) -> Event {
    tokio::time::timeout(Duration::from_secs(10), client.event())
        .await
        .expect("an event in time")
        .expect("the connection stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_nodes_members_become_away_then_leave_after_their_grace() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = Limits {
        resume_grace: Duration::from_millis(1500),
        ..Limits::default()
    };
    let lease = Duration::from_millis(900);
    let (one, crash) = redis.node_with(limits.clone(), |b| b.lease(lease)).await;
    let (two, _) = redis.node_with(limits, |b| b.lease(lease)).await;
    let mut a = TestClient::connect(&one);
    let w = a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;

    let crashed = Instant::now();
    crash.crash();
    // Away within the lease (plus a reaper tick or two); nobody told anything yet.
    loop {
        let members = two.members("r").await.unwrap().unwrap();
        if members.iter().any(|m| m.name == "A" && !m.present) {
            break;
        }
        assert!(
            crashed.elapsed() < lease + Duration::from_secs(2),
            "away in time"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Held for its grace: a resume on the live node works meanwhile...
    let mut back = TestClient::connect(&two);
    back.send_json(&json!({"type": "join", "room": "r", "name": "A", "resume": w.resume}))
        .await;
    back.welcome().await.expect("resumed on the live node");
    back.drop_connection();
    // ...and once it is away again and its grace runs out, the others get `left`.
    let Event::Left(left) = event(&mut b).await else {
        panic!("left")
    };
    assert_eq!(&*left.name, "A");
    let mut again = TestClient::connect(&two);
    again.join("r", "a").await.expect("the name is free");
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_redis_answers_unavailable_and_the_frame_never_takes_effect() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (hub, _) = redis
        .node_with(Limits::default(), |b| {
            b.call_timeout(Duration::from_millis(200))
        })
        .await;
    let mut a = TestClient::connect(&hub);
    a.join("r", "A").await.expect("joins");
    redis.command(&["CLIENT", "PAUSE", "1500", "ALL"]).await;
    a.send_json(&json!({"type": "send", "text": "lost", "ref": 1}))
        .await;
    match tokio::time::timeout(Duration::from_secs(5), a.recv())
        .await
        .expect("answered")
    {
        Ok(ServerFrame::Reply(Reply::Error { code, .. })) => {
            assert_eq!(code, ErrorCode::Unavailable)
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    // After the freeze the queued call runs, past its deadline: nothing happens.
    tokio::time::sleep(Duration::from_millis(2000)).await;
    a.send_json(&json!({"type": "send", "text": "after", "ref": 2}))
        .await;
    let Event::Message(m) = event(&mut a).await else {
        panic!("message")
    };
    assert_eq!(
        (&*m.text, m.id),
        ("after", 2),
        "the frozen frame took no id"
    );
    hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_ends_memberships_with_1012_and_names_are_fresh() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let hub = redis.node(Limits::default()).await;
    let mut a = TestClient::connect(&hub);
    a.join("r", "A").await.expect("joins");
    redis.command(&["FLUSHALL"]).await;
    a.send_json(&json!({"type": "send", "text": "into the void"}))
        .await;
    loop {
        match tokio::time::timeout(Duration::from_secs(5), a.recv())
            .await
            .expect("closed in time")
        {
            Err(Closed::Close(c)) => {
                assert_eq!(c.code, close_code::SERVICE_RESTART);
                break;
            }
            Ok(_) => continue,
            other => panic!("expected 1012, got {other:?}"),
        }
    }
    // The node adopted the new data set: a fresh join works, at id 1.
    let mut b = TestClient::connect(&hub);
    let w = b.join("r", "A").await.expect("joins afresh");
    assert_eq!(w.last_id, 1);
    hub.shutdown().await;
}
