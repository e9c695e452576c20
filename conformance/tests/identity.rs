//! The documented way to hand the host application's identity to the join policy:
//! middleware puts a `ConnectionContext` into the request's extensions, and the hub's
//! `authorize_join` hook reads it back. One test per framework, since middleware is
//! framework-specific.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;

use chatroom_conformance::{Client, actix_app};
use chatroom_core::{ConnectionContext, Hub, JoinAttempt, Verdict};
use serde_json::json;

#[derive(Clone, Debug)]
struct User(String);

/// Only signed-in users may join, under their own name: a join policy that needs no
/// `await`, given to the builder as a closure.
fn signed_in(attempt: JoinAttempt<'_>) -> Verdict {
    assert!(
        attempt.context.peer_addr.is_some(),
        "the adapter fills the peer address"
    );
    match attempt.context.get::<User>() {
        None => Verdict::Deny("sign in first".into()),
        Some(User(user)) if user != attempt.name.as_str() => {
            Verdict::Deny(format!("you are {user}"))
        }
        Some(_) => Verdict::Allow,
    }
}

fn context_from(header: Option<&str>) -> Option<ConnectionContext> {
    header.map(|user| ConnectionContext::new().with(User(user.to_owned())))
}

async fn check(addr: SocketAddr) {
    let url = format!("ws://{addr}/ws");
    let mut anonymous = Client::connect(&url, None).await.expect("upgrade");
    anonymous
        .send(json!({"type": "join", "room": "r", "name": "alice"}))
        .await;
    assert_eq!(
        anonymous.expect_error("forbidden").await["message"],
        "sign in first"
    );
    let mut alice = Client::connect_with_headers(&url, &[("x-user", "alice")])
        .await
        .expect("upgrade");
    alice
        .send(json!({"type": "join", "room": "r", "name": "bob"}))
        .await;
    assert_eq!(
        alice.expect_error("forbidden").await["message"],
        "you are alice"
    );
    alice.join("r", "alice").await;
}

#[tokio::test]
async fn axum_middleware_identity_reaches_the_join_policy() {
    use axum::extract::Request;
    use axum::middleware::{Next, from_fn};
    let hub = Hub::builder().authorize_join(signed_in).build();
    let app = chatroom_axum::router::<()>(hub).layer(from_fn(
        |mut req: Request, next: Next| async move {
            let user = req
                .headers()
                .get("x-user")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            if let Some(context) = context_from(user.as_deref()) {
                req.extensions_mut().insert(context);
            }
            next.run(req).await
        },
    ));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
    });
    check(addr).await;
}

#[tokio::test]
async fn actix_middleware_identity_reaches_the_join_policy() {
    use actix_web::dev::Service;
    use actix_web::{App, HttpMessage};
    let hub = Hub::builder().authorize_join(signed_in).build();
    let (addr, system) = actix_app(move || {
        App::new()
            .wrap_fn(|req, srv| {
                let user = req
                    .headers()
                    .get("x-user")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_owned);
                if let Some(context) = context_from(user.as_deref()) {
                    req.extensions_mut().insert(context);
                }
                srv.call(req)
            })
            .configure(chatroom_actix::configure(hub.clone()))
    });
    check(addr).await;
    system.stop();
}
