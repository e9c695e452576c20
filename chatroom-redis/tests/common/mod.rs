//! Helpers shared by the test files that run cases on a Redis and on a Redis Cluster.
#![allow(dead_code, unused_macros, clippy::expect_used)]

use std::time::Duration;

use chatroom_core::protocol::Event;
use chatroom_core::testing::{Closed, TestClient};

/// A case run twice: on a single Redis, and on a Redis Cluster of three masters
/// (sharded pub/sub, rooms spread over the masters' slots).
macro_rules! on_both {
    ($single:ident, $cluster:ident, $case:ident) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $single() {
            if let Some(redis) = chatroom_redis::testing::RedisServer::start() {
                $case(redis).await;
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $cluster() {
            if let Some(redis) = chatroom_redis::testing::RedisServer::start_cluster() {
                $case(redis).await;
            }
        }
    };
}

/// The next event a client gets, within 5 s.
pub(crate) async fn event(client: &mut TestClient) -> Event {
    tokio::time::timeout(Duration::from_secs(5), client.event())
        .await
        .expect("an event within 5 s")
        .expect("the connection stays open")
}

/// How a client's connection ended, within `within`.
pub(crate) async fn closed_with(client: &mut TestClient, within: Duration) -> u16 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, client.recv()).await {
            Err(_) => panic!("still open after {within:?}"),
            Ok(Err(Closed::Close(c))) => return c.code,
            Ok(Err(other)) => panic!("ended without a close frame: {other:?}"),
            Ok(Ok(_)) => {}
        }
    }
}
