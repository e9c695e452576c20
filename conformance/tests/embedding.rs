//! Embedding mistakes a new user makes, and what they see: a WebSocket on an actix
//! route of the app's own whose hub lives in the app's own state, and an axum auth
//! layer that does not wrap the chat routes.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};

use chatroom_conformance::{Client, http_raw};
use chatroom_core::{ConnectionContext, Hooks, Hub, JoinAttempt, Verdict};
use futures_util::future::BoxFuture;
use serde_json::json;

/// The app's own state, with the hub inside it.
#[derive(Clone)]
struct AppState {
    hub: Hub,
}

/// Starts an actix app built by `app` on its own thread; its address and system.
fn actix_app<F, A>(app: F) -> (SocketAddr, actix_web::rt::System)
where
    F: Fn() -> actix_web::App<A> + Send + Clone + 'static,
    A: actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
            Error = actix_web::Error,
            InitError = (),
        > + 'static,
{
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        actix_web::rt::System::new().block_on(async move {
            let server = actix_web::HttpServer::new(app)
                .workers(1)
                .disable_signals()
                .listen(listener)
                .expect("listen")
                .run();
            ready_tx
                .send(actix_web::rt::System::current())
                .expect("report");
            let _ = server.await;
        });
    });
    (addr, ready_rx.recv().expect("started"))
}

/// Defect: `chatroom_actix::websocket` on an own route needed a second
/// `web::Data<Hub>` and failed at run time with actix's generic 500. Now
/// `websocket_route(hub)` needs no app data, and the handler without a hub says
/// what to add.
#[tokio::test]
async fn actix_an_own_route_serves_a_hub_kept_in_the_apps_state() {
    use actix_web::{App, web};
    let state = AppState { hub: Hub::new() };
    let (addr, system) = actix_app(move || {
        App::new()
            .app_data(web::Data::new(state.clone()))
            .route("/live", chatroom_actix::websocket_route(state.hub.clone()))
            .route("/bare", web::get().to(chatroom_actix::websocket))
    });
    let mut alice = Client::connect(&format!("ws://{addr}/live"), None)
        .await
        .expect("upgrade on the own route");
    alice.join("r", "Alice").await;

    let r = http_raw(
        addr,
        b"GET /bare HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
    )
    .await;
    assert_eq!(r.status, 500);
    assert!(r.body.contains(r#""error":"no_hub""#), "{}", r.body);
    assert!(
        r.body.contains("web::Data::new(hub.clone())") && r.body.contains("websocket_route"),
        "the answer says what to add: {}",
        r.body
    );
    system.stop();
}

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

/// Only signed-in users may join, under their own name.
struct SignedIn;

impl Hooks for SignedIn {
    fn authorize_join<'a>(&'a self, attempt: JoinAttempt<'a>) -> BoxFuture<'a, Verdict> {
        let verdict = match attempt.context.get::<User>() {
            None => Verdict::Deny("sign in first".into()),
            Some(User(user)) if user != attempt.name.as_str() => {
                Verdict::Deny(format!("you are {user}"))
            }
            Some(_) => Verdict::Allow,
        };
        Box::pin(std::future::ready(verdict))
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

    let right = Hub::builder().hooks(SignedIn).build();
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

    let wrong = Hub::builder().hooks(SignedIn).build();
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
