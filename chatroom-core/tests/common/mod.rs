//! Helpers shared by the integration tests.
#![allow(dead_code, missing_docs, clippy::expect_used, clippy::unwrap_used)]

use chatroom_core::protocol::{Event, Reply, ServerFrame, Welcome};
use chatroom_core::testing::{Closed, TestClient};
use chatroom_core::{CloseFrame, Hub, Incoming, Limits, Outgoing};
use serde_json::{Value, json};

/// A hub with default limits.
pub(crate) fn hub() -> Hub {
    Hub::new()
}

/// A hub with these limits.
pub(crate) fn hub_with(limits: Limits) -> Hub {
    Hub::builder().limits(limits).build()
}

/// Connects and joins, returning the client and its welcome.
pub(crate) async fn joined(hub: &Hub, room: &str, name: &str) -> (TestClient, Welcome) {
    let mut c = TestClient::connect(hub);
    let w = c.join(room, name).await.expect("join succeeds");
    (c, w)
}

/// Sends a JSON value.
pub(crate) async fn send(c: &TestClient, v: Value) {
    c.send_json(&v).await;
}

/// Reads the next frame and asserts it is an `error` with this code; returns its ref.
pub(crate) async fn expect_error(c: &mut TestClient, code: &str) -> Option<Value> {
    match c.recv().await {
        Ok(ServerFrame::Reply(Reply::Error {
            code: got,
            reference,
            message,
        })) => {
            assert_eq!(got.as_str(), code, "message was: {message}");
            assert!(!message.is_empty());
            reference.map(|r| serde_json::to_value(r).expect("ref"))
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// Reads the next frame and asserts it is an `ack`; returns (ref, id).
pub(crate) async fn expect_ack(c: &mut TestClient) -> (Value, u64) {
    match c.recv().await {
        Ok(ServerFrame::Reply(Reply::Ack { reference, id })) => {
            (serde_json::to_value(reference).expect("ref"), id)
        }
        other => panic!("expected ack, got {other:?}"),
    }
}

/// Reads the next event.
pub(crate) async fn expect_event(c: &mut TestClient) -> Event {
    c.event().await.expect("an event")
}

/// Reads until the connection closes; returns the close frame (skipping text frames).
pub(crate) async fn expect_close(c: &mut TestClient) -> CloseFrame {
    loop {
        match c.recv_text().await {
            Ok(_) => continue,
            Err(Closed::Close(frame)) => return frame,
            Err(other) => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// Asserts nothing is waiting for the client right now (after letting tasks run).
pub(crate) async fn expect_quiet(c: &mut TestClient) {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    while let Some(frame) = c.try_next_raw() {
        match frame {
            Outgoing::Ping => c.send_raw(Incoming::Pong).await,
            other => panic!("expected nothing, got {other:?}"),
        }
    }
}

/// A `join` frame.
pub(crate) fn join_frame(room: &str, name: &str) -> Value {
    json!({"type": "join", "room": room, "name": name})
}
