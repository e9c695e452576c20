//! Chat inside your own actix-web service: your app data, your auth middleware, your
//! rules, and a graceful shutdown. `cargo run -p chatroom-examples --bin embed-actix`,
//! then connect to `ws://127.0.0.1:3001/chat/ws?token=ann-secret` and join as `Ann`.
//!
//! What it shows:
//! - the app's own `web::Data<AppState>` holds the hub; the chat routes are mounted
//!   with `configure`, next to the app's own route (`GET /stats`);
//! - an auth middleware (`middleware::from_fn`) finds the user from a bearer token
//!   (the `Authorization` header, or `?token=` since browsers cannot set headers on a
//!   WebSocket) and puts it into the connection's `ConnectionContext`; no token, no
//!   chat (401);
//! - hooks: a user joins only under their own name, a word filter rewrites messages,
//!   an observer counts them per user;
//! - SIGINT or SIGTERM: every chat closes with 1001, then the server stops.
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [dependencies]
//! chatroom-actix = "0.1"
//! actix-web = { version = "4", default-features = false, features = ["macros"] }
//! tokio = { version = "1", features = ["rt-multi-thread"] }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{Next, from_fn};
use actix_web::{App, HttpMessage, HttpServer, error, web};
use chatroom_actix::chatroom_core::protocol::Event;
use chatroom_actix::{ConnectionContext, DisplayName, Filter, Hub, Verdict};

/// Who the auth middleware says a connection belongs to.
#[derive(Debug, Clone)]
struct User {
    id: u64,
    name: DisplayName,
}

/// The app's own state; the hub is one part of it.
struct AppState {
    hub: Hub,
    /// Stands in for your session store: token -> user.
    sessions: HashMap<&'static str, User>,
    /// Messages sent, per user id (filled by the observer hook).
    said: Arc<Mutex<HashMap<u64, u64>>>,
    messages: Arc<AtomicU64>,
}

#[actix_web::main]
async fn main() -> std::io::Result<()> {
    // actix's workers are single-threaded: the rooms get a multi-threaded runtime.
    let rooms = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let said: Arc<Mutex<HashMap<u64, u64>>> = Arc::default();
    let messages: Arc<AtomicU64> = Arc::default();
    let (counts, total) = (said.clone(), messages.clone());
    let hub = Hub::builder()
        .runtime(rooms.handle().clone())
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
    let state = web::Data::new(AppState {
        hub: hub.clone(),
        sessions: demo_sessions()?,
        said,
        messages,
    });

    let addr = std::env::var("EMBED_ADDR").unwrap_or_else(|_| "127.0.0.1:3001".into());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(state.clone())
            .route("/stats", web::get().to(stats))
            .service(
                web::scope("/chat")
                    .wrap(from_fn(auth))
                    .configure(chatroom_actix::configure(state.hub.clone())),
            )
    })
    // Chat frames are small and latency matters: actix leaves Nagle's algorithm on,
    // which can hold a frame for the peer's delayed ACK (up to 40 ms).
    .tcp_nodelay(true)
    // SIGINT or SIGTERM: every chat closes with 1001, then the server stops gracefully
    // (this replaces actix's own signal handlers, whose forced stop would race the 1001).
    .shutdown_signal(hub.shutdown_on_signal())
    .bind(&addr)?;
    for bound in server.addrs() {
        println!("embed-actix listening on http://{bound}");
    }
    let served = server.run().await;
    rooms.shutdown_background();
    served
}

/// The auth middleware: a known token, or 401.
async fn auth(
    request: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let header = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let query = request
        .query_string()
        .split('&')
        .find_map(|pair| pair.strip_prefix("token="));
    let user = request
        .app_data::<web::Data<AppState>>()
        .and_then(|state| state.sessions.get(header.or(query)?))
        .cloned()
        .ok_or_else(|| error::ErrorUnauthorized("sign in first"))?;
    request
        .extensions_mut()
        .insert(ConnectionContext::new().with(user));
    next.call(request).await
}

/// The app's own route, reading what the observer hook counted.
async fn stats(state: web::Data<AppState>) -> String {
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
