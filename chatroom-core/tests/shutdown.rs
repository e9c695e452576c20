//! Graceful shutdown: every connection closes with 1001 and shutdown completes.

mod common;

use chatroom_core::close_code;
use chatroom_core::testing::TestClient;
use common::*;

#[tokio::test]
async fn shutdown_closes_every_connection_with_1001_and_completes() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, _) = joined(&hub, "s", "B").await;
    let mut idle = TestClient::connect(&hub);
    let done = tokio::spawn(hub.shutdown());
    for c in [&mut a, &mut b, &mut idle] {
        let close = expect_close(c).await;
        assert_eq!(close.code, close_code::GOING_AWAY);
    }
    done.await.expect("shutdown completes");
    assert!(hub.is_shutting_down());
    // A connection that arrives afterwards is closed at once.
    let mut late = TestClient::connect(&hub);
    assert_eq!(expect_close(&mut late).await.code, close_code::GOING_AWAY);
}
