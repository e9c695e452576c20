//! Rooms run on the hub's runtime, not on the web framework's worker that happened to
//! create them: with actix, whose workers are single-threaded, a hub given a
//! multi-threaded runtime runs its rooms there, in parallel and apart from the
//! connections.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::sync::{Arc, Mutex};

use chatroom_conformance::{Adapter, Server};
use chatroom_core::{Hooks, Hub, ObservedEvent};
use serde_json::json;

/// Records the name of the thread each event is observed on (the room's runtime).
#[derive(Clone, Default)]
struct Threads(Arc<Mutex<Vec<String>>>);

impl Hooks for Threads {
    async fn on_event(&self, _: ObservedEvent<'_>) {
        let name = std::thread::current().name().unwrap_or("").to_owned();
        self.0.lock().expect("lock").push(name);
    }
}

async fn rooms_run_on_the_hubs_runtime(adapter: Adapter) {
    let rooms = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("chatroom-rooms")
        .enable_all()
        .build()
        .expect("runtime");
    let threads = Threads::default();
    let hub = Hub::builder()
        .hooks(threads.clone())
        .runtime(rooms.handle().clone())
        .build();
    let server = Server::start(adapter, hub);
    for room in ["a", "b", "c"] {
        let mut c = server.connect().await;
        c.join(room, "X").await;
        c.send(json!({"type": "send", "text": "hi"})).await;
        c.expect("message").await;
    }
    for _ in 0..100 {
        if threads.0.lock().expect("lock").len() >= 6 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let seen = threads.0.lock().expect("lock").clone();
    assert_eq!(seen.len(), 6, "{seen:?}");
    assert!(
        seen.iter().all(|t| t == "chatroom-rooms"),
        "rooms ran on {seen:?}"
    );
    server.shutdown().await;
    rooms.shutdown_background();
}

#[tokio::test]
async fn actix_rooms_run_on_the_hubs_runtime() {
    rooms_run_on_the_hubs_runtime(Adapter::Actix).await;
}

#[tokio::test]
async fn axum_rooms_run_on_the_hubs_runtime() {
    rooms_run_on_the_hubs_runtime(Adapter::Axum).await;
}
