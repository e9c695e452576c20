//! Nodes on a real Redis Cluster of three masters: rooms spread over the masters'
//! slots, delivered through sharded pub/sub, and a master that restarts empty ends
//! only the memberships of its own rooms. (The multi-node cases of `tests/cluster.rs`
//! also run on a Redis Cluster, as their `..._on_a_redis_cluster` twins.)
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use chatroom_core::protocol::Event;
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{ErrorCode, Limits};
use chatroom_redis::testing::{RedisServer, cluster_room_channel, cluster_room_tag};
use common::{closed_with, event};
use serde_json::json;

/// The node's and the redis client's logs, shown for a failing test (`RUST_LOG`).
fn logs() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn limits() -> Limits {
    Limits {
        resume_grace: Duration::from_secs(5),
        ..Limits::default()
    }
}

/// Room names whose keys live on master `master` (of three).
fn rooms_on(redis: &RedisServer, master: usize, n: usize) -> Vec<String> {
    (0..)
        .map(|i| format!("room {i}"))
        .filter(|room| redis.master_of(&cluster_room_tag(room)) == master)
        .take(n)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_spread_over_the_masters_and_are_delivered_by_sharded_pub_sub() {
    let Some(redis) = RedisServer::start_cluster() else {
        return;
    };
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;
    let mut rooms = Vec::new();
    for master in 0..3 {
        rooms.extend(rooms_on(&redis, master, 2));
    }
    let mut pairs = Vec::new();
    for room in &rooms {
        let mut a = TestClient::connect(&one);
        a.join(room, "Ann").await.expect("ann joins");
        let mut b = TestClient::connect(&two);
        b.join(room, "Bob").await.expect("bob joins");
        let Event::Joined(_) = event(&mut a).await else {
            panic!("joined")
        };
        pairs.push((a, b));
    }
    // Every master holds rooms, and every room's channel is a sharded one, on the
    // master of its room.
    for master in 0..3 {
        let keys: i64 = redis
            .master_command(master, &["DBSIZE"])
            .trim()
            .parse()
            .expect("a number");
        assert!(keys > 0, "master {master} holds no key");
        let sharded = redis.master_command(master, &["PUBSUB", "SHARDCHANNELS"]);
        assert_eq!(
            sharded.lines().filter(|l| !l.is_empty()).count(),
            2,
            "master {master}'s sharded channels: {sharded:?}"
        );
        let plain = redis.master_command(master, &["PUBSUB", "CHANNELS"]);
        assert!(plain.trim().is_empty(), "plain channels: {plain:?}");
    }
    for (room, (a, b)) in rooms.iter().zip(pairs.iter_mut()) {
        b.send_json(&json!({"type": "send", "text": room})).await;
        let Event::Message(m) = event(a).await else {
            panic!("message")
        };
        assert_eq!((&*m.from, &*m.text, m.id), ("Bob", room.as_str(), 3));
    }
    // Either node lists every room of every partition.
    for hub in [&one, &two] {
        let listed = hub.rooms().await.unwrap();
        assert_eq!(listed.len(), rooms.len());
        assert!(listed.iter().all(|r| r.members == 2));
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_rooms_counts_the_rooms_of_every_partition() {
    let Some(redis) = RedisServer::start_cluster() else {
        return;
    };
    let limits = Limits {
        max_rooms: 3,
        ..limits()
    };
    let one = redis.node(limits.clone()).await;
    let two = redis.node(limits).await;
    // Three rooms on three masters (so in three partitions), opened from both nodes.
    let rooms: Vec<String> = (0..3).flat_map(|m| rooms_on(&redis, m, 1)).collect();
    let mut members = Vec::new();
    for (i, room) in rooms.iter().enumerate() {
        let hub = if i % 2 == 0 { &one } else { &two };
        let mut c = TestClient::connect(hub);
        c.join(room, "A").await.expect("joins");
        members.push(c);
    }
    // A fourth room, in yet another partition, is one too many on either node.
    let fourth = rooms_on(&redis, 0, 2).pop().expect("a room");
    tokio::time::sleep(Duration::from_millis(150)).await;
    for hub in [&one, &two] {
        let mut c = TestClient::connect(hub);
        let refused = c.join(&fourth, "B").await;
        assert!(
            matches!(
                &refused,
                Err(Closed::Refused {
                    code: ErrorCode::TooManyRooms,
                    ..
                })
            ),
            "{refused:?}"
        );
    }
    // A room that exists still takes members.
    let mut c = TestClient::connect(&two);
    c.join(&rooms[0], "B").await.expect("joins an open room");
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_restarted_empty_ends_only_its_rooms_memberships_and_the_nodes_serve_on() {
    logs();
    let Some(mut redis) = RedisServer::start_cluster() else {
        return;
    };
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;
    let lost_room = rooms_on(&redis, 1, 1).pop().expect("a room");
    let kept_room = rooms_on(&redis, 2, 1).pop().expect("a room");

    let mut lost_a = TestClient::connect(&one);
    lost_a.join(&lost_room, "Ann").await.expect("joins");
    let mut lost_b = TestClient::connect(&two);
    lost_b.join(&lost_room, "Bob").await.expect("joins");
    let mut kept_a = TestClient::connect(&one);
    kept_a.join(&kept_room, "Ann").await.expect("joins");
    let mut kept_b = TestClient::connect(&two);
    kept_b.join(&kept_room, "Bob").await.expect("joins");
    let Event::Joined(_) = event(&mut kept_a).await else {
        panic!("joined")
    };
    let Event::Joined(_) = event(&mut lost_a).await else {
        panic!("joined")
    };

    redis.restart_master(1);

    // The members of the room whose master lost its data close with 1012, on both
    // nodes: their memberships (and tokens) are gone.
    for client in [&mut lost_a, &mut lost_b] {
        assert_eq!(
            closed_with(client, Duration::from_secs(10)).await,
            chatroom_core::close_code::SERVICE_RESTART
        );
    }
    // While the master rejoins, the cluster client refreshes its slot map and calls may
    // be answered `unavailable` for a moment; both nodes then renew their leases in
    // every partition again, without a restart.
    let started = tokio::time::Instant::now();
    while [&one, &two]
        .iter()
        .any(|hub| hub.store_health() != chatroom_core::StoreHealth::Connected)
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the nodes did not renew their leases after the restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The other room's members stayed, and their timeline goes on without a gap.
    for i in 0..5 {
        kept_b
            .send_json(&json!({"type": "send", "text": format!("m{i}")}))
            .await;
        let Event::Message(m) = event(&mut kept_a).await else {
            panic!("message")
        };
        assert_eq!((&*m.text, m.id), (format!("m{i}").as_str(), 3 + i));
    }
    // The lost room starts again from nothing: the names are free, ids restart at 1,
    // and its members on two nodes talk again.
    let mut again_a = TestClient::connect(&two);
    let w = again_a
        .join(&lost_room, "Ann")
        .await
        .expect("a fresh join after the loss");
    assert_eq!((w.last_id, w.members.clone()), (1, vec!["Ann".to_owned()]));
    let mut again_b = TestClient::connect(&one);
    again_b.join(&lost_room, "Bob").await.expect("joins");
    let Event::Joined(_) = event(&mut again_a).await else {
        panic!("joined")
    };
    // Both nodes are subscribed again on the restarted master (the cluster client
    // restores sharded subscriptions after a lost connection)...
    let channel = cluster_room_channel(&lost_room);
    let started = tokio::time::Instant::now();
    while !redis
        .master_command(1, &["PUBSUB", "SHARDNUMSUB", &channel])
        .lines()
        .any(|l| l.trim() == "2")
    {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "the nodes did not subscribe again on the restarted master"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ... so an event arrives through the channel, well before the 2 s position check
    // would find it.
    again_b
        .send_json(&json!({"type": "send", "text": "back"}))
        .await;
    let m = tokio::time::timeout(Duration::from_millis(1000), again_a.event())
        .await
        .expect("delivered through the channel")
        .expect("open");
    let Event::Message(m) = m else {
        panic!("message")
    };
    assert_eq!((&*m.text, m.id), ("back", 3));
    for hub in [&one, &two] {
        let details = hub.room(&lost_room).await.unwrap().expect("the room");
        assert_eq!(details.members, ["Ann", "Bob"]);
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_master_that_may_evict_is_refused_though_the_seed_does_not() {
    let Some(redis) = RedisServer::start_cluster() else {
        return;
    };
    redis.master_command(2, &["CONFIG", "SET", "maxmemory-policy", "allkeys-lru"]);
    let refused = chatroom_redis::RedisBackplane::connect(&redis.url).await;
    assert!(
        matches!(
            &refused,
            Err(chatroom_redis::ConnectError::Eviction { policy }) if policy == "allkeys-lru"
        ),
        "{refused:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_holds_up_only_its_own_rooms() {
    logs();
    let Some(redis) = RedisServer::start_cluster() else {
        return;
    };
    let lease = Duration::from_secs(2);
    let (one, _) = redis.node_with(limits(), |b| b.lease(lease)).await;
    let (two, _) = redis.node_with(limits(), |b| b.lease(lease)).await;
    let frozen_room = rooms_on(&redis, 1, 1).pop().expect("a room");
    let live_room = rooms_on(&redis, 2, 1).pop().expect("a room");
    let mut frozen_a = TestClient::connect(&one);
    frozen_a.join(&frozen_room, "Ann").await.expect("joins");
    let mut frozen_b = TestClient::connect(&two);
    frozen_b.join(&frozen_room, "Bob").await.expect("joins");
    let mut live_a = TestClient::connect(&one);
    live_a.join(&live_room, "Ann").await.expect("joins");
    let mut live_b = TestClient::connect(&two);
    live_b.join(&live_room, "Bob").await.expect("joins");
    for client in [&mut frozen_a, &mut live_a] {
        let Event::Joined(_) = event(client).await else {
            panic!("joined")
        };
    }

    // Frozen for 5 s: well past both nodes' leases (2 s) in the master's partitions.
    redis.signal_master(1, "STOP");
    let thaw = tokio::time::Instant::now() + Duration::from_secs(5);
    tokio::time::sleep(lease + Duration::from_millis(500)).await;
    // The live room's members talk on while it is frozen: their node's leases in the
    // other partitions still hold (with one lease for the whole node, nothing would be
    // delivered until the thaw).
    for i in 0..3u64 {
        live_b
            .send_json(&json!({"type": "send", "text": format!("m{i}")}))
            .await;
        let m = tokio::time::timeout_at(thaw, live_a.event())
            .await
            .expect("delivered while the other master is frozen")
            .expect("open");
        let Event::Message(m) = m else {
            panic!("message")
        };
        assert_eq!((m.text.to_string(), m.id), (format!("m{i}"), 3 + i));
    }
    // The lobby lists the rooms of the masters that answer.
    let listed = one
        .rooms()
        .await
        .expect("a listing while one master is frozen");
    assert!(
        listed.iter().any(|r| r.room == live_room && r.members == 2),
        "{listed:?}"
    );
    tokio::time::sleep_until(thaw).await;
    redis.signal_master(1, "CONT");

    // Once it thaws, the frozen room's members are all still there and talk again.
    let started = tokio::time::Instant::now();
    loop {
        frozen_b
            .send_json(&json!({"type": "send", "text": "back"}))
            .await;
        match tokio::time::timeout(Duration::from_secs(5), frozen_b.recv()).await {
            Ok(Ok(chatroom_core::protocol::ServerFrame::Event(Event::Message(m)))) => {
                assert_eq!(&*m.text, "back");
                break;
            }
            Ok(Ok(_)) => {}
            other => panic!("{other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(10), "never back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Event::Message(m) = event(&mut frozen_a).await else {
        panic!("message")
    };
    assert_eq!(&*m.text, "back");
    for hub in [&one, &two] {
        let details = hub.room(&frozen_room).await.unwrap().expect("the room");
        assert_eq!(details.members, ["Ann", "Bob"]);
    }
    one.shutdown().await;
    two.shutdown().await;
}

/// Subscribers of a room's sharded channel on a master (`PUBSUB SHARDNUMSUB`).
fn subscribers(redis: &RedisServer, master: usize, channel: &str) -> u64 {
    let answer = redis.master_command(master, &["PUBSUB", "SHARDNUMSUB", channel]);
    let mut lines = answer.lines().map(str::trim).filter(|l| !l.is_empty());
    assert_eq!(lines.next(), Some(channel), "{answer:?}");
    lines.next().and_then(|n| n.parse().ok()).expect("a count")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sharded_subscription_that_redis_drops_is_made_again() {
    logs();
    let Some(redis) = RedisServer::start_cluster() else {
        return;
    };
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;
    let room = rooms_on(&redis, 0, 1).pop().expect("a room");
    let channel = cluster_room_channel(&room);
    let mut a = TestClient::connect(&one);
    a.join(&room, "Ann").await.expect("ann joins");
    let mut b = TestClient::connect(&two);
    b.join(&room, "Bob").await.expect("bob joins");
    let Event::Joined(_) = event(&mut a).await else {
        panic!("joined")
    };
    assert_eq!(subscribers(&redis, 0, &channel), 2);

    // The master gives the room's slot up and takes it back, as a slot that moves
    // away and returns: Redis sends both nodes `sunsubscribe` for the room's channel
    // and forgets their subscriptions.
    let slot = redis.master_command(0, &["CLUSTER", "KEYSLOT", &cluster_room_tag(&room)]);
    let slot = slot.trim();
    assert_eq!(
        redis
            .master_command(0, &["CLUSTER", "DELSLOTS", slot])
            .trim(),
        "OK"
    );
    assert_eq!(subscribers(&redis, 0, &channel), 0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        redis
            .master_command(0, &["CLUSTER", "ADDSLOTS", slot])
            .trim(),
        "OK"
    );

    // Both nodes subscribe again, and the members hear each other.
    let started = tokio::time::Instant::now();
    while subscribers(&redis, 0, &channel) < 2 {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the nodes never subscribed again"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.send_json(&json!({"type": "send", "text": "still here"}))
        .await;
    let Event::Message(m) = event(&mut a).await else {
        panic!("message")
    };
    assert_eq!(&*m.text, "still here");
    a.send_json(&json!({"type": "send", "text": "me too"}))
        .await;
    loop {
        if let Event::Message(m) = event(&mut b).await
            && &*m.text == "me too"
        {
            break;
        }
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_master_does_not_hold_up_joins_into_other_rooms() {
    logs();
    let Some(redis) = RedisServer::start_cluster() else {
        return;
    };
    // A call timeout longer than the lease: a join that waited for the frozen master
    // would take it.
    let tune = |b: chatroom_redis::RedisBackplane| {
        b.lease(Duration::from_secs(2))
            .call_timeout(Duration::from_secs(4))
    };
    let (one, _) = redis.node_with(limits(), tune).await;
    let frozen_rooms = rooms_on(&redis, 1, 2);
    let live_rooms = rooms_on(&redis, 2, 2);
    let mut first = TestClient::connect(&one);
    first.join(&live_rooms[0], "Ann").await.expect("joins");

    redis.signal_master(1, "STOP");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // A join into a new room of the frozen master is refused at once ...
    let asked = tokio::time::Instant::now();
    let mut refused = TestClient::connect(&one);
    match refused.join(&frozen_rooms[0], "Bob").await {
        Err(Closed::Refused { code, .. }) => assert_eq!(code, ErrorCode::Unavailable),
        other => panic!("{other:?}"),
    }
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    // ... and fresh joins into the other masters' rooms do not wait for it.
    for room in &live_rooms {
        let asked = tokio::time::Instant::now();
        let mut c = TestClient::connect(&one);
        c.join(room, "Cid")
            .await
            .expect("joins while a master is frozen");
        assert!(
            asked.elapsed() < Duration::from_secs(2),
            "{:?}",
            asked.elapsed()
        );
    }
    redis.signal_master(1, "CONT");
    one.shutdown().await;
}
