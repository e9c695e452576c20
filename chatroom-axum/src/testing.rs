//! Tests of your own router without a network: your middleware, your state and the
//! chat routes, served over an in-memory stream to a real WebSocket client.
//!
//! ```
//! use axum::{Router, extract::Request, http::StatusCode, middleware::{self, Next}, response::Response};
//! use chatroom_axum::{ConnectionContext, Hub, testing};
//!
//! #[derive(Clone, PartialEq)]
//! struct UserId(String);
//!
//! // The app's auth middleware: a bearer token is the user's id.
//! async fn auth(mut request: Request, next: Next) -> Result<Response, StatusCode> {
//!     let user = request
//!         .headers()
//!         .get("authorization")
//!         .and_then(|v| v.to_str().ok())
//!         .and_then(|v| v.strip_prefix("Bearer "))
//!         .ok_or(StatusCode::UNAUTHORIZED)?
//!         .to_owned();
//!     request.extensions_mut().insert(ConnectionContext::new().with(UserId(user)));
//!     Ok(next.run(request).await)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::builder()
//!     .authorize_join(|attempt| match attempt.context.get::<UserId>() {
//!         Some(user) if user.0 == attempt.name.as_str() => chatroom_axum::Verdict::Allow,
//!         _ => chatroom_axum::Verdict::Deny("join under your own name".into()),
//!     })
//!     .build();
//! let app = Router::new()
//!     .nest("/chat", chatroom_axum::router(hub))
//!     .layer(middleware::from_fn(auth));
//!
//! // Without a token the middleware answers 401 before any WebSocket.
//! let refused = testing::connect(app.clone(), Request::get("/chat/ws").body(())?).await;
//! assert_eq!(refused.err().map(|e| e.status), Some(401));
//!
//! // With one, the hooks see the user the middleware found.
//! let request = Request::get("/chat/ws").header("authorization", "Bearer ann").body(())?;
//! let mut ann = testing::connect(app, request).await?;
//! ann.join("General", "ann").await?;
//! # Ok(())
//! # }
//! ```

use axum::Router;
use axum::http::Request;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;

pub use chatroom_core::testing::{Closed, TestClient, UpgradeRefused};

/// Serves `app` over an in-memory stream and upgrades `request` (e.g.
/// `Request::get("/chat/ws").header("authorization", "Bearer ann").body(())`) to a
/// WebSocket through it: everything of `app` runs (layers, extractors, state), as for
/// a real connection, except that there is no peer address (`ConnectInfo` is absent).
/// The WebSocket handshake headers are added to `request` when missing.
///
/// A response other than 101 (your middleware's 401, the origin check's 403, ...) is
/// [`UpgradeRefused`] with its status and body.
pub async fn connect(app: Router, request: Request<()>) -> Result<TestClient, UpgradeRefused> {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let service = TowerToHyperService::new(app);
    tokio::spawn(async move {
        let served = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(server), service)
            .with_upgrades();
        if let Err(e) = served.await {
            tracing::debug!(error = %e, "in-memory test connection ended with an error");
        }
    });
    chatroom_core::testing::connect_over(client, request).await
}
