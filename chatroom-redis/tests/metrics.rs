//! The metrics two nodes on a real Redis record for a scripted session, as
//! `docs/operations.md` lists them. One test per process: it installs the global
//! recorder.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::HashMap;
use std::time::Duration;

use chatroom_core::protocol::Event;
use chatroom_core::testing::TestClient;
use chatroom_core::{Hub, Limits};
use chatroom_redis::testing::RedisServer;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use serde_json::json;

fn key(k: &CompositeKey) -> (MetricKind, String, String) {
    let mut labels: Vec<String> = k
        .key()
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    (k.kind(), k.key().name().to_owned(), labels.join(","))
}

async fn event(client: &mut TestClient) -> Event {
    tokio::time::timeout(Duration::from_secs(5), client.event())
        .await
        .expect("an event within 5 s")
        .expect("the connection stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_record_calls_events_deliveries_and_latency() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let one: Hub = redis.node(Limits::default()).await;
    let two: Hub = redis.node(Limits::default()).await;
    let mut a = TestClient::connect(&one);
    a.join("r", "A").await.expect("joins");
    let mut b = TestClient::connect(&two);
    b.join("r", "B").await.expect("joins");
    event(&mut a).await;
    let mut c = TestClient::connect(&two);
    c.send_json(&json!({"type": "join", "room": "r", "name": "a"}))
        .await;
    assert!(c.recv_text().await.unwrap().contains("name_taken"));
    let sends = 5;
    for i in 0..sends {
        // With a ref: the ack comes after the node recorded the call and the latency.
        a.send_json(&json!({"type": "send", "text": i.to_string(), "ref": i}))
            .await;
        let mut acked = false;
        while !acked {
            let frame = tokio::time::timeout(Duration::from_secs(5), a.recv_text())
                .await
                .expect("a frame within 5 s")
                .expect("open");
            acked = frame.contains("\"ack\"");
        }
        assert!(matches!(event(&mut b).await, Event::Message(_)));
    }
    // A rename refused by the script is a refused frame too.
    b.send_json(&json!({"type": "rename", "name": "A"})).await;
    loop {
        let frame = tokio::time::timeout(Duration::from_secs(5), b.recv_text())
            .await
            .expect("a frame within 5 s")
            .expect("open");
        if frame.contains("name_taken") {
            break;
        }
    }

    let seen: HashMap<_, _> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(k, _, _, v)| (key(&k), v))
        .collect();
    let counter = |name: &str, labels: &str| match seen.get(&(
        MetricKind::Counter,
        name.to_owned(),
        labels.to_owned(),
    )) {
        Some(DebugValue::Counter(n)) => *n,
        None => 0,
        other => panic!("{name}{{{labels}}} is {other:?}"),
    };
    let histogram = |name: &str, labels: &str| match seen.get(&(
        MetricKind::Histogram,
        name.to_owned(),
        labels.to_owned(),
    )) {
        Some(DebugValue::Histogram(v)) => v.iter().map(|f| f.into_inner()).collect::<Vec<_>>(),
        other => panic!("{name}{{{labels}}} is {other:?}"),
    };
    // Three join scripts (one refused), five sends; each answered call is timed.
    assert_eq!(counter("chatroom_backplane_calls_total", "op=join"), 3);
    assert_eq!(counter("chatroom_backplane_calls_total", "op=send"), sends);
    assert_eq!(counter("chatroom_backplane_errors_total", "op=send"), 0);
    assert_eq!(
        histogram("chatroom_backplane_call_seconds", "op=send").len() as u64,
        sends
    );
    assert!(counter("chatroom_backplane_calls_total", "op=heartbeat") >= 2);
    // Each node counts the events it delivered to its own members: both nodes saw
    // every message, and B's join was delivered on the first node only (its welcome
    // holds it on the second).
    assert_eq!(counter("chatroom_events_total", "type=message"), 2 * sends);
    assert_eq!(counter("chatroom_deliveries_total", ""), 2 * sends + 1);
    assert_eq!(
        counter("chatroom_joins_total", "kind=fresh,outcome=name_taken"),
        1
    );
    assert_eq!(
        counter("chatroom_frames_refused_total", "code=name_taken"),
        2
    );
    assert!(counter("chatroom_backplane_calls_total", "op=rename") == 1);
    // One latency per send of the first node, from the frame to its delivery there.
    let latency = histogram("chatroom_delivery_seconds", "");
    assert_eq!(latency.len() as u64, sends);
    assert!(latency.iter().all(|s| (0.0..2.0).contains(s)));
    assert_eq!(histogram("chatroom_welcome_bytes", "").len(), 2);
    one.shutdown().await;
    two.shutdown().await;
}
