//! Several nodes (hubs) on one real Redis: the rules of PROTOCOL.md hold across them.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::time::Duration;

use chatroom_core::protocol::{Event, Reply, ServerFrame};
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{ErrorCode, Hub, Limits};
use chatroom_redis::testing::RedisServer;
use common::event;
use serde_json::json;

fn limits() -> Limits {
    Limits {
        resume_grace: Duration::from_secs(5),
        ..Limits::default()
    }
}

on_both!(
    members_on_two_nodes_share_a_room,
    members_on_two_nodes_share_a_room_on_a_redis_cluster,
    members_on_two_nodes_share_a_room_on
);
async fn members_on_two_nodes_share_a_room_on(redis: RedisServer) {
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

async fn send(client: &TestClient, value: serde_json::Value) {
    client.send_json(&value).await;
}

/// Waits until `check` holds, for up to `within`.
async fn eventually<F, Fut>(within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = tokio::time::Instant::now();
    while !check().await {
        assert!(start.elapsed() < within, "did not happen within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

on_both!(a_resume_on_another_node_returns_exactly_the_missed_events_and_announces_nothing, a_resume_on_another_node_returns_exactly_the_missed_events_and_announces_nothing_on_a_redis_cluster, a_resume_on_another_node_returns_exactly_the_missed_events_and_announces_nothing_on);
async fn a_resume_on_another_node_returns_exactly_the_missed_events_and_announces_nothing_on(
    redis: RedisServer,
) {
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;
    let mut ann = TestClient::connect(&one);
    ann.join("r", "Ann").await.expect("joins");
    let mut bob = TestClient::connect(&one);
    let bob_welcome = bob.join("r", "Bob").await.expect("joins");
    event(&mut ann).await;
    send(&bob, json!({"type": "send", "text": "before"})).await;
    let Event::Message(seen) = event(&mut bob).await else {
        panic!()
    };
    event(&mut ann).await;

    bob.drop_connection();
    // Bob becomes away (his connection's end reaches Redis), then Ann talks.
    eventually(Duration::from_secs(5), || async {
        one.members("r")
            .await
            .unwrap()
            .unwrap()
            .iter()
            .any(|m| m.name == "Bob" && !m.present)
    })
    .await;
    send(&ann, json!({"type": "send", "text": "m1"})).await;
    send(&ann, json!({"type": "send", "text": "m2"})).await;
    event(&mut ann).await;
    event(&mut ann).await;

    let mut back = TestClient::connect(&two);
    send(
        &back,
        json!({"type": "join", "room": "r", "name": "Bob", "resume": bob_welcome.resume, "since": seen.id}),
    )
    .await;
    let w = back.welcome().await.expect("resumed on the other node");
    assert_eq!(
        (w.name.as_str(), w.members.clone()),
        ("Bob", vec!["Ann".to_owned(), "Bob".to_owned()])
    );
    let texts: Vec<String> = w
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
    // Nothing announced to Ann; life goes on across the nodes.
    send(&back, json!({"type": "send", "text": "back"})).await;
    let Event::Message(m) = event(&mut ann).await else {
        panic!("no left, no joined")
    };
    assert_eq!((&*m.text, m.id), ("back", seen.id + 3));
    assert!(
        one.members("r")
            .await
            .unwrap()
            .unwrap()
            .iter()
            .all(|m| m.present)
    );
    shutdown(&[one, two]).await;
}

on_both!(
    a_resume_takes_over_a_connection_on_another_node_with_4001,
    a_resume_takes_over_a_connection_on_another_node_with_4001_on_a_redis_cluster,
    a_resume_takes_over_a_connection_on_another_node_with_4001_on
);
async fn a_resume_takes_over_a_connection_on_another_node_with_4001_on(redis: RedisServer) {
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;
    let mut ann = TestClient::connect(&one);
    let w = ann.join("r", "Ann").await.expect("joins");
    let mut again = TestClient::connect(&two);
    send(
        &again,
        json!({"type": "join", "room": "r", "name": "Ann", "resume": w.resume}),
    )
    .await;
    again.welcome().await.expect("taken over");
    let closed = tokio::time::timeout(Duration::from_secs(5), ann.recv())
        .await
        .expect("closed in time");
    assert!(
        matches!(&closed, Err(Closed::Close(c)) if c.code == chatroom_core::close_code::RESUMED_ELSEWHERE),
        "{closed:?}"
    );
    // The old connection's end does not make the member away.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(one.members("r").await.unwrap().unwrap()[0].present);
    shutdown(&[one, two]).await;
}

on_both!(
    a_name_is_unique_across_nodes_under_a_race_of_twelve_joins,
    a_name_is_unique_across_nodes_under_a_race_of_twelve_joins_on_a_redis_cluster,
    a_name_is_unique_across_nodes_under_a_race_of_twelve_joins_on
);
async fn a_name_is_unique_across_nodes_under_a_race_of_twelve_joins_on(redis: RedisServer) {
    let nodes = [
        redis.node(limits()).await,
        redis.node(limits()).await,
        redis.node(limits()).await,
    ];
    let mut tasks = Vec::new();
    for i in 0..12 {
        let hub = nodes[i % 3].clone();
        // The same key under different spellings.
        let name = ["Zoë", "ZOË", "zoë", "Ｚoë"][i % 4];
        tasks.push(tokio::spawn(async move {
            let mut c = TestClient::connect(&hub);
            let joined = c.join("race", name).await;
            (joined.is_ok(), c)
        }));
    }
    let mut winners = 0;
    let mut clients = Vec::new();
    for t in tasks {
        let (won, c) = t.await.expect("task");
        winners += usize::from(won);
        clients.push(c);
    }
    assert_eq!(winners, 1, "exactly one join wins the name");
    for hub in &nodes {
        assert_eq!(
            hub.room("race").await.unwrap().expect("room").members.len(),
            1
        );
    }
    shutdown(&nodes).await;
}

on_both!(
    a_rename_race_across_nodes_has_one_winner,
    a_rename_race_across_nodes_has_one_winner_on_a_redis_cluster,
    a_rename_race_across_nodes_has_one_winner_on
);
async fn a_rename_race_across_nodes_has_one_winner_on(redis: RedisServer) {
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    send(&a, json!({"type": "rename", "name": "Same", "ref": "a"})).await;
    send(&b, json!({"type": "rename", "name": "SAME", "ref": "b"})).await;
    let mut outcomes = Vec::new();
    for c in [&mut a, &mut b] {
        let mut renamed = 0;
        let mut answer = None;
        while answer.is_none() {
            match tokio::time::timeout(Duration::from_secs(5), c.recv())
                .await
                .expect("answer")
            {
                Ok(ServerFrame::Event(Event::Renamed(_))) => renamed += 1,
                Ok(ServerFrame::Reply(r)) => answer = Some(r),
                other => panic!("unexpected {other:?}"),
            }
        }
        outcomes.push((renamed, answer));
    }
    let acks = outcomes
        .iter()
        .filter(|(_, a)| matches!(a, Some(Reply::Ack { .. })))
        .count();
    let taken = outcomes
        .iter()
        .filter(|(_, a)| {
            matches!(
                a,
                Some(Reply::Error {
                    code: ErrorCode::NameTaken,
                    ..
                })
            )
        })
        .count();
    assert_eq!((acks, taken), (1, 1), "{outcomes:?}");
    let members = one.room("r").await.unwrap().expect("room").members;
    assert!(members.contains(&"Same".to_owned()) || members.contains(&"SAME".to_owned()));
    shutdown(&[one, two]).await;
}

on_both!(
    six_members_on_three_nodes_get_one_gapless_timeline,
    six_members_on_three_nodes_get_one_gapless_timeline_on_a_redis_cluster,
    six_members_on_three_nodes_get_one_gapless_timeline_on
);
async fn six_members_on_three_nodes_get_one_gapless_timeline_on(redis: RedisServer) {
    let fast = Limits {
        rate_burst: 1000,
        rate_per_sec: 1000,
        ..limits()
    };
    let nodes = [
        redis.node(fast.clone()).await,
        redis.node(fast.clone()).await,
        redis.node(fast).await,
    ];
    let mut members = Vec::new();
    for i in 0..6 {
        let mut c = TestClient::connect_with_buffer(&nodes[i % 3], Default::default(), 4096);
        c.join("busy", &format!("m{i}")).await.expect("joins");
        members.push(c);
    }
    // Everybody has heard every join before the talking starts.
    for (i, c) in members.iter_mut().enumerate() {
        for _ in i + 1..6 {
            event(c).await;
        }
    }
    const EACH: usize = 40;
    for i in 0..EACH {
        for c in &members {
            c.send_json(&json!({"type": "send", "text": format!("{i}")}))
                .await;
        }
    }
    let mut timelines = Vec::new();
    for c in &mut members {
        let mut got = Vec::new();
        while got.len() < 6 * EACH {
            if let Event::Message(m) = event(c).await {
                got.push((m.id, m.from.to_string(), m.text.to_string()));
            }
        }
        timelines.push(got);
    }
    for t in &timelines {
        assert_eq!(t, &timelines[0], "every member sees the same timeline");
        let ids: Vec<u64> = t.iter().map(|(id, ..)| *id).collect();
        assert!(ids.windows(2).all(|w| w[1] == w[0] + 1), "gapless");
    }
    for sender in 0..6 {
        let name = format!("m{sender}");
        let texts: Vec<usize> = timelines[0]
            .iter()
            .filter(|(_, from, _)| *from == name)
            .map(|(_, _, t)| t.parse().unwrap())
            .collect();
        assert_eq!(
            texts,
            (0..EACH).collect::<Vec<_>>(),
            "each sender's order is kept"
        );
    }
    shutdown(&nodes).await;
}

on_both!(
    an_empty_room_is_freed_everywhere_and_starts_again_at_one,
    an_empty_room_is_freed_everywhere_and_starts_again_at_one_on_a_redis_cluster,
    an_empty_room_is_freed_everywhere_and_starts_again_at_one_on
);
async fn an_empty_room_is_freed_everywhere_and_starts_again_at_one_on(redis: RedisServer) {
    let one = redis.node(limits()).await;
    let two = redis.node(limits()).await;
    let mut a = TestClient::connect(&one);
    a.join("Lobby", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("lobby", "B").await.expect("joins");
    a.leave().await;
    b.leave().await;
    eventually(Duration::from_secs(1), || async {
        one.room("lobby").await.unwrap().is_none() && two.rooms().await.unwrap().is_empty()
    })
    .await;
    let mut c = TestClient::connect(&two);
    let w = c.join("LOBBY", "C").await.expect("a new room");
    assert_eq!((w.room.as_str(), w.last_id), ("LOBBY", 1));
    assert_eq!(w.history.len(), 1, "only its own joined");
    shutdown(&[one, two]).await;
}

on_both!(
    an_away_member_expires_after_its_grace_on_whichever_node_reaps,
    an_away_member_expires_after_its_grace_on_whichever_node_reaps_on_a_redis_cluster,
    an_away_member_expires_after_its_grace_on_whichever_node_reaps_on
);
async fn an_away_member_expires_after_its_grace_on_whichever_node_reaps_on(redis: RedisServer) {
    let short = Limits {
        resume_grace: Duration::from_millis(600),
        ..Limits::default()
    };
    let one = redis.node(short.clone()).await;
    let two = redis.node(short).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    b.drop_connection();
    let Event::Left(left) = event(&mut a).await else {
        panic!("left")
    };
    assert_eq!(&*left.name, "B");
    let mut b2 = TestClient::connect(&one);
    b2.join("r", "b").await.expect("the name is free");
    shutdown(&[one, two]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_welcome_does_not_overtake_on_its_node_the_joined_it_announces() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one = redis.node(limits()).await;
    let mut ann = TestClient::connect(&one);
    ann.join("Lobby", "Ann").await.expect("ann joins");

    // Hold the room's deliveries on this node: Bob's `joined` reaches Redis's channel
    // but not Ann. On one node, Ann has Bob's `joined` by the time Bob has his welcome;
    // a cluster node must not show Bob his welcome first either.
    let pause = chatroom_core::testing::pause_room(&one, "Lobby")
        .await
        .expect("the room is held");
    let mut bob = TestClient::connect(&one);
    send(
        &bob,
        json!({"type": "join", "room": "Lobby", "name": "Bob"}),
    )
    .await;
    let early = tokio::time::timeout(Duration::from_millis(150), bob.next_raw()).await;
    assert!(
        early.is_err(),
        "Bob got {early:?} while Ann could not have Bob's `joined` yet"
    );
    drop(pause);
    let Event::Joined(joined) = event(&mut ann).await else {
        panic!("joined")
    };
    assert_eq!((&*joined.name, joined.id), ("Bob", 2));
    match tokio::time::timeout(Duration::from_secs(5), bob.recv()).await {
        Ok(Ok(ServerFrame::Reply(Reply::Welcome(w)))) => assert_eq!(w.last_id, 2),
        other => panic!("expected Bob's welcome, got {other:?}"),
    }
    shutdown(&[one]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_other_room_rules_is_refused_while_the_cluster_runs() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let lease = Duration::from_millis(600);
    let (one, crash) = redis.node_with(limits(), |b| b.lease(lease)).await;
    let mut ann = TestClient::connect(&one);
    ann.join("r", "Ann").await.expect("joins");
    let other = Limits {
        history: 50,
        ..limits()
    };
    let backplane = chatroom_redis::RedisBackplane::connect(&redis.url)
        .await
        .expect("connects");
    match backplane.check_rules(&other).await {
        Err(chatroom_redis::ConnectError::RulesDiffer { differences }) => {
            assert_eq!(differences, ["history 50 here, 100 in the cluster"])
        }
        other => panic!("expected RulesDiffer, got {other:?}"),
    }
    backplane.check_rules(&limits()).await.expect("same rules");

    // Started anyway, the node is refused at its first heartbeat and serves nothing.
    let stubborn = Hub::builder()
        .limits(other.clone())
        .backplane(backplane)
        .build();
    let started = std::time::Instant::now();
    while stubborn.store_health() != chatroom_core::StoreHealth::Lost {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "refused in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut bob = TestClient::connect(&stubborn);
    bob.send_json(&json!({"type": "join", "room": "r", "name": "Bob"}))
        .await;
    match tokio::time::timeout(Duration::from_secs(5), bob.recv())
        .await
        .expect("answered")
    {
        Ok(ServerFrame::Reply(Reply::Error { code, .. })) => {
            assert_eq!(code, ErrorCode::Unavailable)
        }
        other => panic!("expected unavailable, got {other:?}"),
    }
    ann.send_json(&json!({"type": "send", "text": "still here"}))
        .await;
    let Event::Message(m) = event(&mut ann).await else {
        panic!("a message")
    };
    assert_eq!(m.id, 2, "the cluster went on, without Bob");
    tokio::time::timeout(Duration::from_secs(5), stubborn.shutdown())
        .await
        .expect("the refused hub shuts down");

    // Once no node of the old rules is alive, new rules are the cluster's.
    crash.crash();
    tokio::time::sleep(lease * 2).await;
    let (three, _) = redis.node_with(other.clone(), |b| b.lease(lease)).await;
    let fresh = chatroom_redis::RedisBackplane::connect(&redis.url)
        .await
        .expect("connects");
    let started = std::time::Instant::now();
    while fresh.check_rules(&other).await.is_err() {
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "adopted in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        fresh.check_rules(&limits()).await,
        Err(chatroom_redis::ConnectError::RulesDiffer { .. })
    ));
    tokio::time::timeout(Duration::from_secs(5), three.shutdown())
        .await
        .expect("shuts down");
}

on_both!(
    members_joining_one_room_at_the_same_moment_all_stay,
    members_joining_one_room_at_the_same_moment_all_stay_on_a_redis_cluster,
    members_joining_one_room_at_the_same_moment_all_stay_on
);
async fn members_joining_one_room_at_the_same_moment_all_stay_on(redis: RedisServer) {
    let hub = redis.node(limits()).await;
    // Many rooms, each joined by ten members at once: answers from Redis come back
    // in any order, and a later join may attach before an earlier one.
    let mut rooms = Vec::new();
    for r in 0..20 {
        let mut joins = Vec::new();
        for m in 0..10 {
            let hub = hub.clone();
            joins.push(tokio::spawn(async move {
                let mut client = TestClient::connect(&hub);
                client
                    .join(&format!("room {r}"), &format!("m{m}"))
                    .await
                    .expect("joins");
                client
            }));
        }
        rooms.push(joins);
    }
    for (r, joins) in rooms.into_iter().enumerate() {
        let mut clients = Vec::new();
        for join in joins {
            clients.push(join.await.expect("a join"));
        }
        hub.post(&format!("room {r}"), "system", "everyone here?")
            .await
            .expect("posted");
        for client in &mut clients {
            // Every member gets every event after its welcome, up to the post: none
            // is sent away to resume.
            loop {
                match event(client).await {
                    Event::Message(m) if &*m.text == "everyone here?" => break,
                    Event::Joined(_) => continue,
                    other => panic!("unexpected {other:?}"),
                }
            }
        }
    }
    hub.shutdown().await;
}

on_both!(
    the_observer_sees_each_event_once_in_the_whole_cluster,
    the_observer_sees_each_event_once_in_the_whole_cluster_on_a_redis_cluster,
    the_observer_sees_each_event_once_in_the_whole_cluster_on
);
async fn the_observer_sees_each_event_once_in_the_whole_cluster_on(redis: RedisServer) {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut hubs = Vec::new();
    for node in 0..3 {
        let seen = seen.clone();
        hubs.push(
            Hub::builder()
                .limits(limits())
                .on_event(move |e| seen.lock().unwrap().push((node, e.event.id())))
                .backplane(redis.backplane().await)
                .build(),
        );
    }
    let mut clients = Vec::new();
    for (i, hub) in hubs.iter().enumerate() {
        let mut client = TestClient::connect(hub);
        client.join("r", &format!("m{i}")).await.expect("joins");
        clients.push(client);
    }
    for client in &clients {
        send(client, json!({"type": "send", "text": "hi"})).await;
    }
    hubs[1].post("r", "system", "a post").await.expect("posted");
    // 3 joins, 3 messages, 1 post: every member gets all of them.
    for client in &mut clients {
        while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(500), client.event())
            .await
            .map(Result::ok)
        {
            if e.id() == 7 {
                break;
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut ids: Vec<u64> = seen.lock().unwrap().iter().map(|(_, id)| *id).collect();
    ids.sort_unstable();
    assert_eq!(
        ids,
        (1..=7).collect::<Vec<_>>(),
        "each once: {:?}",
        seen.lock().unwrap()
    );
    shutdown(&hubs).await;
}
