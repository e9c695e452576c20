//! What members see when a node or Redis fails: never a name held twice, never a
//! silent hole, no zombie member.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::{Duration, Instant};

use chatroom_core::protocol::{Event, Reply, ServerFrame, Welcome};
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{ErrorCode, Limits, StoreHealth, close_code};
use chatroom_redis::testing::{RedisServer, cluster_room_tag};
use common::closed_with;
use serde_json::json;

async fn event(client: &mut TestClient) -> Event {
    tokio::time::timeout(Duration::from_secs(10), client.event())
        .await
        .expect("an event in time")
        .expect("the connection stays open")
}

// On a Redis Cluster the node's lease and its members' rooms are in several
// partitions: every partition's reaper finds the crashed node.
on_both!(
    a_crashed_nodes_members_become_away_then_leave_after_their_grace,
    a_crashed_nodes_members_become_away_then_leave_after_their_grace_on_a_redis_cluster,
    a_crashed_nodes_members_become_away_then_leave_after_their_grace_on
);

async fn a_crashed_nodes_members_become_away_then_leave_after_their_grace_on(redis: RedisServer) {
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

/// Receives until the connection closes; its close code.
async fn close_code_of(client: &mut TestClient) -> u16 {
    closed_with(client, Duration::from_secs(10)).await
}

/// The next frame is an `unavailable` error.
async fn unavailable(client: &mut TestClient) {
    match tokio::time::timeout(Duration::from_secs(5), client.recv())
        .await
        .expect("answered in time")
    {
        Ok(ServerFrame::Reply(Reply::Error { code, .. })) => {
            assert_eq!(code, ErrorCode::Unavailable)
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_frozen_by_sigstop_answers_unavailable_ends_nothing_and_recovers() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let lease = Duration::from_millis(900);
    let (one, _) = redis
        .node_with(Limits::default(), |b| {
            b.lease(lease).call_timeout(Duration::from_millis(300))
        })
        .await;
    let (two, _) = redis.node_with(Limits::default(), |b| b.lease(lease)).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    assert_eq!(one.store_health(), StoreHealth::Connected);

    redis.signal("STOP");
    let frozen = Instant::now();
    a.send_json(&json!({"type": "send", "text": "frozen", "ref": 1}))
        .await;
    unavailable(&mut a).await;
    assert!(
        frozen.elapsed() < Duration::from_secs(2),
        "answered in time"
    );
    let mut c = TestClient::connect(&one);
    c.send_json(&json!({"type": "join", "room": "r", "name": "C"}))
        .await;
    unavailable(&mut c).await;
    // Three leases long: every node's lease ran out in Redis time too.
    tokio::time::sleep(lease * 3).await;
    assert_ne!(one.store_health(), StoreHealth::Connected, "not ready");
    redis.signal("CONT");

    // Nobody was reaped at the thaw, and service resumes on both nodes.
    let back = Instant::now();
    while one.store_health() != StoreHealth::Connected
        || two.store_health() != StoreHealth::Connected
    {
        assert!(back.elapsed() < Duration::from_secs(5), "healthy again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(lease * 2).await;
    a.send_json(&json!({"type": "send", "text": "thawed"}))
        .await;
    for client in [&mut a, &mut b] {
        let Event::Message(m) = event(client).await else {
            panic!("the message, not a left")
        };
        assert_eq!((&*m.text, m.id), ("thawed", 3), "nothing in between");
    }
    let members = two.members("r").await.unwrap().unwrap();
    assert!(members.iter().all(|m| m.present), "{members:?}");
    one.shutdown().await;
    two.shutdown().await;
}

// On a Redis Cluster, the sharded subscriptions of both nodes are cut on the master of
// the room: the cluster client subscribes again and the nodes repair the room.
on_both!(
    killed_subscriptions_lose_no_event,
    killed_sharded_subscriptions_lose_no_event_on_a_redis_cluster,
    killed_subscriptions_lose_no_event_on
);
async fn killed_subscriptions_lose_no_event_on(redis: RedisServer) {
    let one = redis.node(Limits::default()).await;
    let two = redis.node(Limits::default()).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    let killed = if redis.is_cluster() {
        let master = redis.master_of(&cluster_room_tag("r"));
        let killed = redis.master_command(master, &["CLIENT", "KILL", "TYPE", "pubsub"]);
        killed.trim().parse().expect("a count")
    } else {
        redis.int(&["CLIENT", "KILL", "TYPE", "pubsub"]).await
    };
    assert_eq!(killed, 2, "both nodes' subscriptions were cut");
    for i in 0..10 {
        one.post("r", "system", &format!("m{i}"))
            .await
            .expect("posted");
    }
    for client in [&mut a, &mut b] {
        for i in 0..10u64 {
            let Event::Message(m) = event(client).await else {
                panic!("a message")
            };
            assert_eq!((m.text.to_string(), m.id), (format!("m{i}"), 3 + i));
        }
    }
    one.shutdown().await;
    two.shutdown().await;
}

/// A node on a runtime of its own, which the test can stop dead (as a busy or
/// swapped-out process): meanwhile nothing of it runs, its pub/sub socket unread.
struct BusyNode {
    hub: chatroom_core::Hub,
    block: std::sync::mpsc::Sender<Duration>,
}

fn busy_node(redis: &RedisServer, limits: Limits) -> BusyNode {
    let url = redis.url.clone();
    let (ready, hub) = std::sync::mpsc::channel();
    let (block, blocks) = std::sync::mpsc::channel::<Duration>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        runtime.block_on(async move {
            let backplane = chatroom_redis::RedisBackplane::connect(&url)
                .await
                .expect("connects");
            let hub = chatroom_core::Hub::builder()
                .runtime(tokio::runtime::Handle::current())
                .limits(limits)
                .backplane(backplane)
                .build();
            ready.send(hub).expect("the test waits");
            loop {
                match blocks.try_recv() {
                    // The whole runtime stands still.
                    Ok(d) => std::thread::sleep(d),
                    Err(std::sync::mpsc::TryRecvError::Empty) => {
                        tokio::time::sleep(Duration::from_millis(5)).await
                    }
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
            }
        });
    });
    BusyNode {
        hub: hub.recv().expect("the node starts"),
        block,
    }
}

/// Stops `busy` for a while and, meanwhile, posts `count` messages big enough to
/// overflow its subscription's output buffer (set tiny) on `one`; checks that Redis cut
/// the subscriber.
async fn overflow(redis: &RedisServer, busy: &BusyNode, one: &chatroom_core::Hub, count: usize) {
    redis
        .command(&[
            "CONFIG",
            "SET",
            "client-output-buffer-limit",
            "pubsub 4096 0 0",
        ])
        .await;
    // Long enough for the posts below on a loaded machine; shorter than the lease.
    busy.block
        .send(Duration::from_millis(4000))
        .expect("blocks");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let text = "x".repeat(4000);
    for _ in 0..count {
        one.post("r", "system", &text).await.expect("posted");
    }
    // The busy node is still stopped, so it cannot have subscribed again yet.
    let list = redis.command(&["CLIENT", "LIST", "TYPE", "pubsub"]).await;
    let redis::Value::BulkString(text) = list else {
        panic!("CLIENT LIST answered {list:?}")
    };
    let text = String::from_utf8_lossy(&text);
    assert_eq!(
        text.lines().count(),
        1,
        "Redis cut the slow subscriber: {text}"
    );
}

/// A on a normal node, B on a busy one whose subscription Redis cuts while 150 big
/// posts go by (rooms keep `history`): the nodes, B and B's welcome.
async fn a_cut_subscriber(
    redis: &RedisServer,
    history: usize,
) -> (chatroom_core::Hub, BusyNode, TestClient, Welcome) {
    let limits = Limits {
        history,
        ..Limits::default()
    };
    let one = redis.node(limits.clone()).await;
    let busy = busy_node(redis, limits);
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&busy.hub);
    let w = b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    overflow(redis, &busy, &one, 150).await;
    (one, busy, b, w)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_cut_for_its_output_buffer_is_repaired_from_the_stream() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (one, busy, mut b, _) = a_cut_subscriber(&redis, 500).await;
    for i in 0..150u64 {
        let Event::Message(m) = event(&mut b).await else {
            panic!("a message")
        };
        assert_eq!(m.id, 3 + i, "gapless, in order");
    }
    one.shutdown().await;
    busy.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_subscriber_past_the_streams_reach_closes_with_4002_and_the_resume_has_a_gap() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let (one, busy, mut b, w) = a_cut_subscriber(&redis, 10).await;
    let mut last = w.last_id;
    let code = loop {
        match tokio::time::timeout(Duration::from_secs(10), b.recv())
            .await
            .expect("closed in time")
        {
            Ok(ServerFrame::Event(e)) => {
                assert_eq!(e.id(), last + 1, "no silent hole before the close");
                last = e.id();
            }
            Ok(_) => {}
            Err(Closed::Close(c)) => break c.code,
            Err(other) => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(code, close_code::RESYNC);
    let mut again = TestClient::connect(&one);
    again
        .send_json(
            &json!({"type": "join", "room": "r", "name": "B", "resume": w.resume, "since": last}),
        )
        .await;
    let welcome = again.welcome().await.expect("resumes");
    assert!(welcome.gap, "the resume reports the gap");
    one.shutdown().await;
    busy.hub.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_with_aof_loses_nothing() {
    let Some(mut redis) = RedisServer::start_with_aof() else {
        return;
    };
    let one = redis.node(Limits::default()).await;
    let two = redis.node(Limits::default()).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    a.send_json(&json!({"type": "send", "text": "before"}))
        .await;
    for client in [&mut a, &mut b] {
        event(client).await;
    }
    redis.restart();
    // Memberships survive; once Redis answers again, ids go on without a gap.
    let restarted = Instant::now();
    let id = loop {
        match one.post("r", "system", "after").await {
            Ok(id) => break id,
            Err(_) => {
                assert!(
                    restarted.elapsed() < Duration::from_secs(10),
                    "back in time"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    assert_eq!(id, 4);
    for client in [&mut a, &mut b] {
        let Event::Message(m) = event(client).await else {
            panic!("the message")
        };
        assert_eq!((&*m.text, m.id), ("after", 4));
    }
    let members = two.members("r").await.unwrap().unwrap();
    assert_eq!(members.len(), 2);
    assert!(members.iter().all(|m| m.present));
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_restarted_without_its_data_ends_memberships_on_every_node_with_1012() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let one = redis.node(Limits::default()).await;
    let two = redis.node(Limits::default()).await;
    let mut a = TestClient::connect(&one);
    let wa = a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    redis.restart();
    assert_eq!(close_code_of(&mut a).await, close_code::SERVICE_RESTART);
    assert_eq!(close_code_of(&mut b).await, close_code::SERVICE_RESTART);
    // The old token is void; the name is free, and held once.
    let mut again = TestClient::connect(&two);
    again
        .send_json(&json!({"type": "join", "room": "r", "name": "A", "resume": wa.resume}))
        .await;
    match tokio::time::timeout(Duration::from_secs(5), again.recv())
        .await
        .expect("answered")
    {
        Ok(ServerFrame::Reply(Reply::Error { code, .. })) => {
            assert_eq!(code, ErrorCode::ResumeFailed)
        }
        other => panic!("expected resume_failed, got {other:?}"),
    }
    let mut fresh = TestClient::connect(&one);
    let w = fresh.join("r", "A").await.expect("joins afresh");
    assert_eq!(w.last_id, 1);
    let mut twice = TestClient::connect(&two);
    twice
        .send_json(&json!({"type": "join", "room": "r", "name": "a"}))
        .await;
    match tokio::time::timeout(Duration::from_secs(5), twice.recv())
        .await
        .expect("answered")
    {
        Ok(ServerFrame::Reply(Reply::Error { code, .. })) => {
            assert_eq!(code, ErrorCode::NameTaken)
        }
        other => panic!("expected name_taken, got {other:?}"),
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_shuts_down_while_redis_is_frozen_and_the_reaper_settles_its_members() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = Limits {
        resume_grace: Duration::from_millis(500),
        ..Limits::default()
    };
    let lease = Duration::from_millis(900);
    let (one, _) = redis
        .node_with(limits.clone(), |b| {
            b.lease(lease).call_timeout(Duration::from_millis(200))
        })
        .await;
    let (two, _) = redis.node_with(limits, |b| b.lease(lease)).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;

    redis.signal("STOP");
    // A's connection ends while nothing can mark it away; then its node stops.
    a.drop_connection();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tokio::time::timeout(Duration::from_secs(3), one.shutdown())
        .await
        .expect("shutting down waits for no store");
    redis.signal("CONT");
    // The node is gone: the others reap A (away, then left after the grace).
    let Event::Left(left) = event(&mut b).await else {
        panic!("left")
    };
    assert_eq!(&*left.name, "A");
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_outage_limit_connections_close_with_1013_and_resume_when_redis_is_back() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let tune = |b: chatroom_redis::RedisBackplane| {
        b.lease(Duration::from_millis(900))
            .call_timeout(Duration::from_millis(200))
            .outage_limit(Duration::from_millis(1500))
    };
    let (one, _) = redis.node_with(Limits::default(), tune).await;
    let (two, _) = redis.node_with(Limits::default(), tune).await;
    let mut a = TestClient::connect(&one);
    let w = a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    let wb = b.join("r", "B").await.expect("joins");
    event(&mut a).await;

    redis.signal("STOP");
    for client in [&mut a, &mut b] {
        assert_eq!(close_code_of(client).await, close_code::TRY_AGAIN_LATER);
    }
    assert_eq!(one.store_health(), StoreHealth::Lost);
    // Lost stays lost while Redis is out, whatever else fails meanwhile.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(one.store_health(), StoreHealth::Lost);
    redis.signal("CONT");

    // Each node serves again once its own heartbeat renewed its lease.
    let back = Instant::now();
    while one.store_health() != StoreHealth::Connected
        || two.store_health() != StoreHealth::Connected
    {
        assert!(back.elapsed() < Duration::from_secs(5), "healthy again");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Both resume (their memberships were held); nothing was announced meanwhile.
    let mut b = TestClient::connect(&two);
    b.send_json(&json!({"type": "join", "room": "r", "name": "B", "resume": wb.resume, "since": wb.last_id}))
        .await;
    b.welcome().await.expect("resumes");
    let mut again = TestClient::connect(&one);
    again
        .send_json(&json!({"type": "join", "room": "r", "name": "A", "resume": w.resume, "since": w.last_id + 1}))
        .await;
    again.welcome().await.expect("resumes");
    again
        .send_json(&json!({"type": "send", "text": "back"}))
        .await;
    let Event::Message(m) = event(&mut b).await else {
        panic!("the message, no left or joined before it")
    };
    assert_eq!((&*m.text, m.id), ("back", 3));
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_the_server_closes_while_redis_is_frozen_gets_its_close_frame_at_once() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = Limits {
        max_frame_bytes: 4096,
        ..Limits::default()
    };
    let tune = |b: chatroom_redis::RedisBackplane| b.call_timeout(Duration::from_millis(300));
    let (one, _) = redis.node_with(limits.clone(), tune).await;
    let (two, _) = redis.node_with(limits, tune).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;

    redis.signal("STOP");
    let frozen = Instant::now();
    // A frame over the limit: the connection closes with 1009 at once, though the
    // member cannot be marked away until Redis answers.
    a.send_text(&"x".repeat(5000)).await;
    // Within 2 s: it does not wait for Redis.
    assert_eq!(
        closed_with(&mut a, Duration::from_secs(2)).await,
        close_code::TOO_BIG
    );
    let waited = frozen.elapsed();
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(waited)).await;
    redis.signal("CONT");

    // Nothing was forgotten: once Redis answers, A is marked away.
    let thawed = Instant::now();
    loop {
        let members = two.members("r").await.ok().flatten().unwrap_or_default();
        if members.iter().any(|m| m.name == "A" && !m.present) {
            break;
        }
        assert!(
            thawed.elapsed() < Duration::from_secs(5),
            "A never marked away: {members:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_crashes_right_after_redis_lost_its_data_leaves_no_member_behind() {
    let Some(mut redis) = RedisServer::start() else {
        return;
    };
    let limits = Limits {
        resume_grace: Duration::from_millis(500),
        ..Limits::default()
    };
    let lease = Duration::from_millis(1500);
    let (one, crash) = redis.node_with(limits.clone(), |b| b.lease(lease)).await;
    let (two, _) = redis.node_with(limits, |b| b.lease(lease)).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    redis.restart();
    assert_eq!(close_code_of(&mut a).await, close_code::SERVICE_RESTART);
    // A joins afresh on the same node at once, and that node crashes right after.
    let mut again = TestClient::connect(&one);
    again.join("r", "A").await.expect("joins afresh");
    crash.crash();
    // The node must have been listed in the new data set before it let anyone join:
    // the others reap it, and the name is free once A's grace ran out.
    let crashed = Instant::now();
    loop {
        let mut fresh = TestClient::connect(&two);
        match fresh.join("r", "A").await {
            Ok(_) => break,
            Err(Closed::Refused {
                code: ErrorCode::NameTaken | ErrorCode::Unavailable,
                ..
            }) => {}
            Err(other) => panic!("{other:?}"),
        }
        assert!(
            crashed.elapsed() < Duration::from_secs(8),
            "A was left behind: {:?}",
            two.members("r").await
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    two.shutdown().await;
}
