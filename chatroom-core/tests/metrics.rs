//! The metrics a scripted session records, as `docs/operations.md` lists them. One test
//! per process: it installs the global recorder.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

mod common;

use std::collections::HashMap;

use chatroom_core::testing::{Closed, TestClient};
use std::time::Duration;

use chatroom_core::{ConnectionContext, Hub, Incoming, Limits, Outgoing, close_code};
use common::{expect_close, expect_error, expect_event, join_frame, joined, send};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::{CompositeKey, MetricKind};
use serde_json::json;

/// A metric's value by name and labels (sorted `k=v` pairs joined by `,`).
#[derive(Debug)]
struct Seen(HashMap<(MetricKind, String, String), DebugValue>);

impl Seen {
    fn get(&self, kind: MetricKind, name: &str, labels: &str) -> Option<&DebugValue> {
        self.0.get(&(kind, name.to_owned(), labels.to_owned()))
    }

    fn counter(&self, name: &str, labels: &str) -> u64 {
        match self.get(MetricKind::Counter, name, labels) {
            Some(DebugValue::Counter(n)) => *n,
            None => 0,
            other => panic!("{name}{{{labels}}} is {other:?}"),
        }
    }

    fn gauge(&self, name: &str, labels: &str) -> f64 {
        match self.get(MetricKind::Gauge, name, labels) {
            Some(DebugValue::Gauge(v)) => v.into_inner(),
            other => panic!("{name}{{{labels}}} is {other:?}"),
        }
    }

    fn histogram(&self, name: &str) -> Vec<f64> {
        match self.get(MetricKind::Histogram, name, "") {
            Some(DebugValue::Histogram(v)) => v.iter().map(|f| f.into_inner()).collect(),
            other => panic!("{name} is {other:?}"),
        }
    }
}

fn key(k: &CompositeKey) -> (MetricKind, String, String) {
    let mut labels: Vec<String> = k
        .key()
        .labels()
        .map(|l| format!("{}={}", l.key(), l.value()))
        .collect();
    labels.sort();
    (k.kind(), k.key().name().to_owned(), labels.join(","))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scripted_session_moves_the_metrics_as_documented() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    recorder
        .install()
        .expect("the only recorder of this process");
    let hub = Hub::builder()
        .limits(Limits {
            outgoing_queue: 8,
            rate_burst: 1000,
            ..Limits::default()
        })
        .build();

    // A join, a second one, and a join refused with name_taken.
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, wb) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await;
    let mut c = TestClient::connect(&hub);
    send(&c, join_frame("r", "a")).await;
    expect_error(&mut c, "name_taken").await;

    // A send: one message event, queued for both members.
    send(&a, json!({"type": "send", "text": "hello"})).await;
    expect_event(&mut a).await;
    expect_event(&mut b).await;

    // A client that never reads: cut off as a slow consumer.
    let mut stalled = TestClient::connect_with_buffer(&hub, ConnectionContext::new(), 1);
    send(&stalled, join_frame("r", "S")).await;
    expect_event(&mut a).await;
    expect_event(&mut b).await;
    let flood = 40;
    for i in 0..flood {
        send(&a, json!({"type": "send", "text": i.to_string()})).await;
        expect_event(&mut a).await;
        expect_event(&mut b).await;
    }
    loop {
        match stalled.recv().await {
            Ok(_) => {}
            Err(Closed::Close(f)) => {
                assert_eq!(f.code, close_code::POLICY);
                break;
            }
            Err(Closed::Ended) => break,
            Err(other) => panic!("{other:?}"),
        }
    }

    // A resume while B's connection is still open takes it over (4001).
    let mut b2 = TestClient::connect(&hub);
    send(
        &b2,
        json!({"type": "join", "room": "r", "name": "B", "resume": wb.resume}),
    )
    .await;
    b2.welcome().await.expect("resumed");
    assert_eq!(
        expect_close(&mut b).await.code,
        close_code::RESUMED_ELSEWHERE
    );
    drop(c);
    // A connection whose future the host drops (its own timeout) is counted closed.
    let served = hub.serve(
        ConnectionContext::new(),
        futures_util::stream::pending::<Incoming>(),
        futures_util::sink::drain::<Outgoing>(),
    );
    assert!(
        tokio::time::timeout(Duration::from_millis(20), served)
            .await
            .is_err()
    );

    let snapshot = || {
        Seen(
            snapshotter
                .snapshot()
                .into_vec()
                .into_iter()
                .map(|(k, _, _, v)| (key(&k), v))
                .collect(),
        )
    };
    let seen = snapshot();
    let joins = "chatroom_joins_total";
    assert_eq!(seen.counter(joins, "kind=fresh,outcome=welcome"), 3);
    assert_eq!(seen.counter(joins, "kind=fresh,outcome=name_taken"), 1);
    assert_eq!(seen.counter(joins, "kind=resume,outcome=welcome"), 1);
    assert_eq!(
        seen.counter("chatroom_frames_refused_total", "code=name_taken"),
        1
    );
    let events = "chatroom_events_total";
    assert_eq!(seen.counter(events, "type=joined"), 3);
    assert_eq!(seen.counter(events, "type=message"), 1 + flood);
    assert_eq!(seen.counter(events, "type=left"), 0);
    // Every event went to every present member but the cut-off reader's last ones.
    let deliveries = seen.counter("chatroom_deliveries_total", "");
    assert!(
        (2 * (2 + flood)..=3 * (2 + flood)).contains(&deliveries),
        "{deliveries} deliveries"
    );
    assert_eq!(seen.counter("chatroom_slow_consumers_total", ""), 1);
    assert_eq!(seen.counter("chatroom_takeovers_total", ""), 1);
    assert_eq!(seen.counter("chatroom_connections_opened_total", ""), 6);
    assert!(seen.counter("chatroom_connections_closed_total", "code=dropped") >= 1);
    assert_eq!(
        seen.counter("chatroom_connections_closed_total", "code=4001"),
        1
    );
    // A, the resumed B, and C (dropped by the client, not yet noticed or noticed).
    let open = seen.gauge("chatroom_connections_open", "");
    assert!((2.0..=3.0).contains(&open), "{open} open");
    // A and B present; S away.
    assert_eq!(seen.gauge("chatroom_members", "state=present"), 2.0);
    assert_eq!(seen.gauge("chatroom_members", "state=away"), 1.0);
    assert_eq!(seen.gauge("chatroom_rooms", ""), 1.0);
    // One latency per message, each well under a second.
    let latency = seen.histogram("chatroom_delivery_seconds");
    assert_eq!(latency.len() as u64, 1 + flood);
    assert!(latency.iter().all(|s| (0.0..1.0).contains(s)));
    // Four welcomes (A, B, S, B's resume), each with the room's members in it.
    let welcomes = seen.histogram("chatroom_welcome_bytes");
    assert_eq!(welcomes.len(), 4);
    assert!(welcomes.iter().all(|b| *b > 50.0));
    // A's queue was sampled while it wrote the flood.
    let depths = seen.histogram("chatroom_outgoing_queue_depth");
    assert!(!depths.is_empty() && depths.iter().all(|d| *d >= 1.0));

    // At shutdown every connection, member and room leaves the gauges (a snapshot
    // takes the gauges' values: the next one holds what changed since).
    hub.shutdown().await;
    drop((a, b2, stalled));
    let after = snapshot();
    for (name, labels) in [
        ("chatroom_connections_open", ""),
        ("chatroom_members", "state=present"),
        ("chatroom_members", "state=away"),
        ("chatroom_rooms", ""),
    ] {
        assert_eq!(
            seen.gauge(name, labels) + after.gauge(name, labels),
            0.0,
            "{name}{{{labels}}} back to zero"
        );
    }
    assert_eq!(
        seen.counter("chatroom_connections_closed_total", "code=1001")
            + after.counter("chatroom_connections_closed_total", "code=1001"),
        2,
        "A and B's resume closed with 1001"
    );
}
