//! The documented graceful shutdown, run as the crate docs write it: a server whose
//! shutdown signal is `hub.shutdown_on_signal()` closes every chat with 1001 on SIGINT
//! and on SIGTERM, on both adapters, and then stops.
//!
//! The signals are sent to this test's own process, so this file is its own test
//! binary with a single test, and the cases run one after the other.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;
use std::time::Duration;

use chatroom_conformance::{Adapter, Client, Ended};
use chatroom_core::Hub;
use serde_json::json;

/// Serves `hub` on its own thread, with the documented shutdown; returns where, and a
/// receiver that fires once the server has stopped.
fn serve(adapter: Adapter, hub: Hub) -> (SocketAddr, std::sync::mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let addr = listener.local_addr().expect("addr");
    let (stopped_tx, stopped) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        match adapter {
            Adapter::Axum => {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .enable_all()
                    .build()
                    .expect("runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                    let app = axum::Router::new().nest("/chat", chatroom_axum::router(hub.clone()));
                    axum::serve(listener, app)
                        .with_graceful_shutdown(hub.shutdown_on_signal())
                        .await
                        .expect("axum serves");
                });
            }
            Adapter::Actix => {
                use actix_web::{App, HttpServer, web};
                actix_web::rt::System::new().block_on(async move {
                    let chat = hub.clone();
                    HttpServer::new(move || {
                        App::new().service(
                            web::scope("/chat").configure(chatroom_actix::configure(chat.clone())),
                        )
                    })
                    .workers(1)
                    .shutdown_signal(hub.shutdown_on_signal())
                    .listen(listener)
                    .expect("listen")
                    .run()
                    .await
                    .expect("actix serves");
                });
            }
        }
        let _ = stopped_tx.send(());
    });
    (addr, stopped)
}

#[test]
fn sigint_and_sigterm_close_every_chat_with_1001_then_stop_the_server() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    // Each case three times: the pattern this replaces lost the 1001 in about half of
    // the SIGINT runs on actix.
    for signal in ["INT", "TERM", "INT", "TERM", "INT", "TERM"] {
        for adapter in [Adapter::Axum, Adapter::Actix] {
            let hub = Hub::new();
            let (addr, stopped) = serve(adapter, hub.clone());
            runtime.block_on(async {
                let url = format!("ws://{addr}/chat/ws");
                let mut clients = Vec::new();
                for name in ["Ann", "Bob"] {
                    let mut client = Client::connect(&url, None).await.expect("upgrade");
                    client
                        .send(json!({"type": "join", "room": "r", "name": name}))
                        .await;
                    client.expect("welcome").await;
                    clients.push(client);
                }
                let sent = std::process::Command::new("kill")
                    .args([format!("-{signal}"), std::process::id().to_string()])
                    .status()
                    .expect("kill runs");
                assert!(sent.success());
                for client in &mut clients {
                    let ended = tokio::time::timeout(Duration::from_secs(5), client.ended())
                        .await
                        .expect("closed in time");
                    assert!(
                        matches!(ended, Ended::Close(1001, _)),
                        "{adapter:?}, SIG{signal}: {ended:?}"
                    );
                }
            });
            stopped
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("{adapter:?} did not stop after SIG{signal}"));
            assert!(hub.is_shutting_down());
        }
    }
}
