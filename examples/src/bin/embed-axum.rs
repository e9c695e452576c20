//! Chat inside your own axum service: your state, your auth middleware, your rules,
//! and a graceful shutdown. `cargo run -p chatroom-examples --bin embed-axum`, then
//! connect to `ws://127.0.0.1:3000/chat/ws?token=ann-secret` and join as `Ann`.
//!
//! What it shows:
//! - the app's own state (`AppState`) holds the hub; `chatroom_axum::routes()` takes it
//!   from there (`FromRef`), next to the app's own routes (`GET /stats`);
//! - an auth middleware finds the user from a bearer token (the `Authorization`
//!   header, or `?token=` since browsers cannot set headers on a WebSocket) and puts
//!   it into the connection's `ConnectionContext`; no token, no chat (401);
//! - hooks: a user joins only under their own name, a word filter rewrites messages,
//!   an observer counts them per user;
//! - SIGINT or SIGTERM: every chat closes with 1001, then the server stops.
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! chatroom-axum = "0.1"
//! axum = "0.8"
//! tokio = { version = "1", features = ["rt-multi-thread", "macros", "net"] }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::extract::{FromRef, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use axum::serve::ListenerExt;
use chatroom_axum::chatroom_core::protocol::Event;
use chatroom_axum::{ConnectionContext, DisplayName, Filter, Hub, Verdict};

/// Who the auth middleware says a connection belongs to.
#[derive(Debug, Clone)]
struct User {
    id: u64,
    name: DisplayName,
}

/// The app's own state; the hub is one part of it.
#[derive(Clone)]
struct AppState {
    hub: Hub,
    /// Stands in for your session store: token -> user.
    sessions: Arc<HashMap<&'static str, User>>,
    /// Messages sent, per user id (filled by the observer hook).
    said: Arc<Mutex<HashMap<u64, u64>>>,
    messages: Arc<AtomicU64>,
}

impl FromRef<AppState> for Hub {
    fn from_ref(state: &AppState) -> Hub {
        state.hub.clone()
    }
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let sessions = demo_sessions()?;
    let said: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let messages: Arc<AtomicU64> = Arc::default();
    let (counts, total) = (said.clone(), messages.clone());
    let hub = Hub::builder()
        // Join only under your own name. Collision keys, not strings: "ANN" or "Аnn"
        // (Cyrillic А) would be the same name as "Ann" to the room.
        .authorize_join(|attempt| match attempt.context.get::<User>() {
            Some(user) if user.name.key() == attempt.name.key() => Verdict::Allow,
            Some(user) => Verdict::Deny(format!("join as {}", user.name)),
            None => Verdict::Deny("sign in first".into()),
        })
        .filter_message(|message| {
            if message.text.contains("darn") {
                Filter::Replace(message.text.replace("darn", "d**n"))
            } else {
                Filter::Allow
            }
        })
        .on_event(move |seen| {
            if let Event::Message(_) = seen.event {
                total.fetch_add(1, Ordering::Relaxed);
                if let Some(user) = seen.context.and_then(|c| c.get::<User>()) {
                    let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
                    *counts.entry(user.id).or_default() += 1;
                }
            }
        })
        .build();
    let state = AppState {
        hub: hub.clone(),
        sessions: Arc::new(sessions),
        said,
        messages,
    };
    // The middleware guards the chat routes; a layer wraps only the routes added
    // before it, so it comes after them.
    let chat = chatroom_axum::routes().layer(middleware::from_fn_with_state(state.clone(), auth));
    let app = Router::new()
        .route("/stats", get(stats))
        .nest("/chat", chat)
        .with_state(state);

    let addr = std::env::var("EMBED_ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("embed-axum listening on http://{}", listener.local_addr()?);
    // Chat frames are small: turn Nagle's algorithm off (it is on by default and
    // can hold a frame until the peer's delayed ACK, up to 40 ms).
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app)
        // SIGINT or SIGTERM: every chat closes with 1001, then the server stops.
        .with_graceful_shutdown(hub.shutdown_on_signal())
        .await
}

/// The auth middleware: a known token, or 401.
async fn auth(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, StatusCode> {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .uri()
        .query()
        .and_then(|q| q.split('&').find_map(|pair| pair.strip_prefix("token=")));
    let user = header
        .or(query)
        .and_then(|token| state.sessions.get(token))
        .ok_or(StatusCode::UNAUTHORIZED)?
        .clone();
    request
        .extensions_mut()
        .insert(ConnectionContext::new().with(user));
    Ok(next.run(request).await)
}

/// The app's own route, reading what the observer hook counted.
async fn stats(State(state): State<AppState>) -> String {
    let said = state.said.lock().unwrap_or_else(PoisonError::into_inner);
    let mut per_user: Vec<String> = said.iter().map(|(id, n)| format!("\"{id}\":{n}")).collect();
    per_user.sort();
    format!(
        "{{\"messages\":{},\"by_user\":{{{}}}}}",
        state.messages.load(Ordering::Relaxed),
        per_user.join(",")
    )
}

/// Two demo users; a real app asks its session store.
fn demo_sessions() -> std::io::Result<HashMap<&'static str, User>> {
    let user = |id, name| {
        DisplayName::parse(name)
            .map(|name| User { id, name })
            .map_err(std::io::Error::other)
    };
    Ok(HashMap::from([
        ("ann-secret", user(1, "Ann")?),
        ("bob-secret", user(2, "Bob")?),
    ]))
}
