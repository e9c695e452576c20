//! `chatroom_axum::testing::connect` runs an app's own middleware and state in front of
//! the chat, without a network.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use axum::Router;
use axum::extract::{FromRef, Request};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use chatroom_axum::testing::{self, Closed};
use chatroom_axum::{ConnectionContext, Hub, Verdict};
use chatroom_core::ErrorCode;

#[derive(Clone, PartialEq, Debug)]
struct UserId(String);

#[derive(Clone)]
struct AppState {
    hub: Hub,
}

impl FromRef<AppState> for Hub {
    fn from_ref(state: &AppState) -> Hub {
        state.hub.clone()
    }
}

async fn auth(mut request: Request, next: Next) -> Result<Response, StatusCode> {
    let user = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or(StatusCode::UNAUTHORIZED)?
        .to_owned();
    request
        .extensions_mut()
        .insert(ConnectionContext::new().with(UserId(user)));
    Ok(next.run(request).await)
}

fn app() -> (Router, Hub) {
    let hub = Hub::builder()
        .authorize_join(|attempt| match attempt.context.get::<UserId>() {
            Some(user) if user.0 == attempt.name.as_str() => Verdict::Allow,
            _ => Verdict::Deny("join under your own name".into()),
        })
        .build();
    let app = Router::new()
        .nest("/chat", chatroom_axum::routes())
        .layer(middleware::from_fn(auth))
        .with_state(AppState { hub: hub.clone() });
    (app, hub)
}

fn as_user(user: &str) -> Request<()> {
    Request::get("/chat/ws")
        .header("authorization", format!("Bearer {user}"))
        .body(())
        .unwrap()
}

#[tokio::test]
async fn the_apps_middleware_and_state_run_in_front_of_an_in_memory_chat() {
    let (app, hub) = app();
    let refused = testing::connect(app.clone(), Request::get("/chat/ws").body(()).unwrap())
        .await
        .expect_err("no token, no upgrade");
    assert_eq!(refused.status, 401);

    let mut ann = testing::connect(app.clone(), as_user("ann")).await.unwrap();
    ann.join("General", "ann").await.expect("her own name");
    let mut posing = testing::connect(app.clone(), as_user("ann")).await.unwrap();
    match posing.join("General", "bob").await {
        Err(Closed::Refused { code, message }) => {
            assert_eq!(code, ErrorCode::Forbidden);
            assert!(message.contains("own name"), "{message}");
        }
        other => panic!("expected forbidden, got {other:?}"),
    }

    let mut bob = testing::connect(app, as_user("bob")).await.unwrap();
    bob.join("General", "bob").await.expect("his own name");
    let members = hub.members("General").await.unwrap().expect("the room");
    let users: Vec<_> = members
        .iter()
        .map(|m| m.context.get::<UserId>().map(|u| u.0.clone()))
        .collect();
    assert_eq!(users, [Some("ann".into()), Some("bob".into())]);
    // The hub came from the app's state: it is the one the routes serve.
    assert_eq!(
        hub.kick_identity("General", UserId("bob".into()), "bye")
            .await
            .unwrap(),
        1
    );
    let close = loop {
        match bob.recv().await {
            Err(Closed::Close(frame)) => break frame,
            Ok(_) => continue,
            Err(e) => panic!("expected a close frame, got {e}"),
        }
    };
    assert_eq!(close.code, 4003);
}
