//! Helpers shared by the test files that run cases on a Redis and on a Redis Cluster.
#![allow(dead_code, unused_macros, clippy::expect_used)]

use std::time::Duration;

use chatroom_core::protocol::Event;
use chatroom_core::testing::TestClient;

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
