//! `chatroom_actix::testing::TestServer` runs an app's own middleware in front of the
//! chat, with real WebSocket clients.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use actix_web::dev::Service;
use actix_web::{App, HttpMessage, web};
use chatroom_actix::testing::{Closed, Request, TestServer};
use chatroom_actix::{ConnectionContext, Hub, Verdict};
use chatroom_core::ErrorCode;

#[derive(Clone, PartialEq, Debug)]
struct UserId(String);

fn as_user(user: &str) -> Request {
    Request::get("/chat/ws")
        .header("authorization", format!("Bearer {user}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn the_apps_middleware_runs_in_front_of_the_chat() {
    let hub = Hub::builder()
        .authorize_join(|attempt| match attempt.context.get::<UserId>() {
            Some(user) if user.0 == attempt.name.as_str() => Verdict::Allow,
            _ => Verdict::Deny("join under your own name".into()),
        })
        .build();
    let routes = hub.clone();
    let server = TestServer::start(move || {
        App::new()
            .wrap_fn(|request, service| {
                let user = request
                    .headers()
                    .get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
                    .map(str::to_owned);
                if let Some(user) = user {
                    request
                        .extensions_mut()
                        .insert(ConnectionContext::new().with(UserId(user)));
                }
                service.call(request)
            })
            .service(web::scope("/chat").configure(chatroom_actix::configure(routes.clone())))
    })
    .unwrap();

    let mut ann = server.connect(as_user("ann")).await.unwrap();
    ann.join("General", "ann").await.expect("her own name");
    let mut posing = server.connect(as_user("ann")).await.unwrap();
    match posing.join("General", "bob").await {
        Err(Closed::Refused { code, .. }) => assert_eq!(code, ErrorCode::Forbidden),
        other => panic!("expected forbidden, got {other:?}"),
    }
    let mut anonymous = server
        .connect(Request::get("/chat/ws").body(()).unwrap())
        .await
        .unwrap();
    match anonymous.join("General", "x").await {
        Err(Closed::Refused { code, .. }) => assert_eq!(code, ErrorCode::Forbidden),
        other => panic!("expected forbidden, got {other:?}"),
    }
    let refused = server
        .connect(Request::get("/nowhere").body(()).unwrap())
        .await
        .expect_err("no such route");
    assert_eq!(refused.status, 404);

    let members = hub.members("General").await.unwrap().expect("the room");
    assert_eq!(
        members[0].context.get::<UserId>(),
        Some(&UserId("ann".into()))
    );
}

/// Dropping the test server stops it: its port is closed and the app it held (and
/// with it the hub's clones) is gone.
#[tokio::test]
async fn a_dropped_test_server_stops() {
    let hub = Hub::new();
    let routes = hub.clone();
    let server = TestServer::start(move || {
        App::new().service(web::scope("/chat").configure(chatroom_actix::configure(routes.clone())))
    })
    .unwrap();
    let addr = server.addr();
    let mut client = server.connect(as_user("ann")).await.unwrap();
    client.join("r", "ann").await.expect("joins");
    drop(server);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while tokio::net::TcpStream::connect(addr).await.is_ok() {
        assert!(
            std::time::Instant::now() < deadline,
            "the port is still open 5 s after the drop"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
