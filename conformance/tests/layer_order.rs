//! An embedding mistake a new user made, and what they see: an axum auth layer that
//! does not wrap the chat routes. Its own test binary: it reads what the process logs.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use chatroom_conformance::Client;
use chatroom_core::{ConnectionContext, Hub, JoinAttempt, Verdict};
use serde_json::json;

/// What the process logged at any level, as text (one subscriber for this test
/// binary: the servers run on threads of their own).
fn logs() -> &'static Arc<Mutex<String>> {
    static LOGS: OnceLock<Arc<Mutex<String>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(String::new()));
        tracing::subscriber::set_global_default(Capture(logs.clone())).expect("one subscriber");
        logs
    })
}

/// A subscriber that keeps every event's message.
struct Capture(Arc<Mutex<String>>);

impl tracing::Subscriber for Capture {
    fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
        true
    }
    fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
        tracing::span::Id::from_u64(1)
    }
    fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
    fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
    fn event(&self, event: &tracing::Event<'_>) {
        struct Message<'a>(&'a mut String);
        impl tracing::field::Visit for Message<'_> {
            fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    let _ = writeln!(self.0, "{value:?}");
                }
            }
        }
        event.record(&mut Message(&mut self.0.lock().unwrap()));
    }
    fn enter(&self, _: &tracing::span::Id) {}
    fn exit(&self, _: &tracing::span::Id) {}
}

#[derive(Clone, Debug)]
struct User(String);

/// Only signed-in users may join, under their own name: a join policy that needs no
/// `await`, given to the builder as a closure.
fn signed_in(attempt: JoinAttempt<'_>) -> Verdict {
    match attempt.context.get::<User>() {
        None => Verdict::Deny("sign in first".into()),
        Some(User(user)) if user != attempt.name.as_str() => {
            Verdict::Deny(format!("you are {user}"))
        }
        Some(_) => Verdict::Allow,
    }
}

async fn sign_in(
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if let Some(user) = req.headers().get("x-user").and_then(|v| v.to_str().ok()) {
        let context = ConnectionContext::new().with(User(user.to_owned()));
        req.extensions_mut().insert(context);
    }
    next.run(req).await
}

async fn serve_axum(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Defect: an axum auth layer added before the chat routes were nested does not wrap
/// them, and every join was silently `forbidden`. The identity reaches the policy when
/// the layer comes after `.nest`; when it comes before, the hook still cannot see it
/// (axum does not run the layer), but the adapter logs why.
#[tokio::test]
async fn axum_a_layer_that_does_not_wrap_the_chat_routes_is_logged() {
    use axum::middleware::from_fn;
    let logs = logs();
    let hint = "add the layer after `.nest(..)`";

    let right = Hub::builder().authorize_join(signed_in).build();
    let app = axum::Router::new()
        .nest("/chat", chatroom_axum::router(right))
        .layer(from_fn(sign_in));
    let addr = serve_axum(app).await;
    let url = format!("ws://{addr}/chat/ws");
    let mut alice = Client::connect_with_headers(&url, &[("x-user", "alice")])
        .await
        .expect("upgrade");
    alice.join("r", "alice").await;
    assert!(!logs.lock().unwrap().contains(hint), "nothing to say");

    let wrong = Hub::builder().authorize_join(signed_in).build();
    let app = axum::Router::new()
        .layer(from_fn(sign_in))
        .nest("/chat", chatroom_axum::router(wrong));
    let addr = serve_axum(app).await;
    let url = format!("ws://{addr}/chat/ws");
    let mut bob = Client::connect_with_headers(&url, &[("x-user", "bob")])
        .await
        .expect("upgrade");
    bob.send(json!({"type": "join", "room": "r", "name": "bob"}))
        .await;
    assert_eq!(
        bob.expect_error("forbidden").await["message"],
        "sign in first"
    );
    let logged = logs.lock().unwrap().clone();
    assert!(
        logged.contains("no ConnectionContext") && logged.contains(hint),
        "the wrong order is logged: {logged}"
    );
}
