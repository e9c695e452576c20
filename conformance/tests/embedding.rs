//! An embedding mistake a new user made: a WebSocket on an actix route of the app's
//! own whose hub lives in the app's own state.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::net::SocketAddr;

use chatroom_conformance::{Client, http_raw};
use chatroom_core::Hub;

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
