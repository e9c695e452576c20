//! An embedding mistake a new user made: a WebSocket on an actix route of the app's
//! own whose hub lives in the app's own state.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use chatroom_conformance::{Client, actix_app, http_raw};
use chatroom_core::Hub;

/// The app's own state, with the hub inside it.
#[derive(Clone)]
struct AppState {
    hub: Hub,
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
