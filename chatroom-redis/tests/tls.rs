//! Nodes reach Redis over TLS (`rediss://`), trusting a CA of their own.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use chatroom_core::Limits;
use chatroom_core::protocol::Event;
use chatroom_core::testing::TestClient;
use chatroom_redis::testing::RedisServer;
use chatroom_redis::{ConnectError, RedisBackplane, TlsCertificates};
use serde_json::json;

async fn event(client: &mut TestClient) -> Event {
    tokio::time::timeout(Duration::from_secs(5), client.event())
        .await
        .expect("an event in time")
        .expect("the connection stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_share_a_room_over_tls() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    assert!(redis.url.starts_with("rediss://"));
    let one = redis.node(Limits::default()).await;
    let two = redis.node(Limits::default()).await;
    let mut ann = TestClient::connect(&one);
    ann.join("r", "Ann").await.expect("joins");
    let mut bob = TestClient::connect(&two);
    let w = bob.join("r", "Bob").await.expect("joins");
    assert_eq!(w.members, ["Ann", "Bob"]);
    event(&mut ann).await;
    bob.send_json(&json!({"type": "send", "text": "encrypted"}))
        .await;
    for client in [&mut ann, &mut bob] {
        let Event::Message(m) = event(client).await else {
            panic!("a message")
        };
        assert_eq!(&*m.text, "encrypted");
    }
    one.shutdown().await;
    two.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_nobody_trusts_is_a_clear_error() {
    let Some(redis) = RedisServer::start_tls() else {
        return;
    };
    // The system's roots do not know the test CA.
    match RedisBackplane::connect(&redis.url).await {
        Err(ConnectError::Unreachable(why)) => {
            assert!(why.to_lowercase().contains("certificate"), "{why}")
        }
        other => panic!("expected an untrusted certificate, got {other:?}"),
    }
    let tls = TlsCertificates::new().root_certificate("not a certificate");
    assert!(matches!(
        RedisBackplane::connect_with_tls(&redis.url, tls).await,
        Err(ConnectError::Tls(_))
    ));
    let tls = TlsCertificates::new().root_certificate(redis.ca.clone().unwrap());
    let plain = redis.url.replace("rediss://", "redis://");
    assert!(matches!(
        RedisBackplane::connect_with_tls(&plain, tls).await,
        Err(ConnectError::Tls(_))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_requires_client_certificates_takes_the_nodes_one() {
    let Some(redis) = RedisServer::start_mutual_tls() else {
        return;
    };
    let ca = redis.ca.clone().unwrap();
    let without = TlsCertificates::new().root_certificate(ca.as_bytes());
    assert!(
        RedisBackplane::connect_with_tls(&redis.url, without)
            .await
            .is_err(),
        "refused without a client certificate"
    );
    let cert = redis.client.clone().unwrap().0;
    let bad_key = TlsCertificates::new()
        .root_certificate(ca.as_bytes())
        .client_certificate(cert.as_bytes(), "no key");
    assert!(matches!(
        RedisBackplane::connect_with_tls(&redis.url, bad_key).await,
        Err(ConnectError::Tls(_))
    ));
    let hub = redis.node(Limits::default()).await;
    let mut ann = TestClient::connect(&hub);
    ann.join("r", "Ann").await.expect("joins");
    hub.shutdown().await;
}
