//! Tests of your own actix app (your middleware, your `app_data`, the chat routes) with
//! real WebSocket clients, on actix's own server on a loopback port, as
//! `actix_web::test` does for plain HTTP.
//!
//! ```
//! use actix_web::{App, HttpMessage, dev::Service, web};
//! use chatroom_actix::{ConnectionContext, Hub, Verdict, testing::{Request, TestServer}};
//!
//! #[derive(Clone, PartialEq)]
//! struct UserId(String);
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::builder()
//!     .authorize_join(|attempt| match attempt.context.get::<UserId>() {
//!         Some(user) if user.0 == attempt.name.as_str() => Verdict::Allow,
//!         _ => Verdict::Deny("join under your own name".into()),
//!     })
//!     .build();
//! let server = TestServer::start(move || {
//!     App::new()
//!         // The app's auth middleware: a bearer token is the user's id.
//!         .wrap_fn(|request, service| {
//!             let user = request
//!                 .headers()
//!                 .get("authorization")
//!                 .and_then(|v| v.to_str().ok())
//!                 .and_then(|v| v.strip_prefix("Bearer "))
//!                 .map(str::to_owned);
//!             if let Some(user) = user {
//!                 request.extensions_mut().insert(ConnectionContext::new().with(UserId(user)));
//!             }
//!             service.call(request)
//!         })
//!         .service(web::scope("/chat").configure(chatroom_actix::configure(hub.clone())))
//! })?;
//!
//! let request = Request::get("/chat/ws").header("authorization", "Bearer ann").body(())?;
//! let mut ann = server.connect(request).await?;
//! ann.join("General", "ann").await?;
//! # Ok(())
//! # }
//! ```

use std::net::SocketAddr;

pub use chatroom_core::testing::{Closed, Request, TestClient, UpgradeRefused};

use chatroom_core::testing::connect_over;

/// An actix app served on a loopback port by a server of its own (one worker, its own
/// thread and actix system, no signal handlers), stopped when this is dropped.
#[derive(Debug)]
pub struct TestServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
}

impl TestServer {
    /// Starts the app that `app` builds, as `HttpServer::new(app)` would serve it.
    pub fn start<F, A, B>(app: F) -> std::io::Result<TestServer>
    where
        F: Fn() -> actix_web::App<A> + Send + Clone + 'static,
        A: actix_web::dev::ServiceFactory<
                actix_web::dev::ServiceRequest,
                Config = (),
                Response = actix_web::dev::ServiceResponse<B>,
                Error = actix_web::Error,
                InitError = (),
            > + 'static,
        B: actix_web::body::MessageBody + 'static,
    {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("chatroom-test-server".into())
            .spawn(move || {
                actix_web::rt::System::new().block_on(async move {
                    let server = actix_web::HttpServer::new(app)
                        .workers(1)
                        .disable_signals()
                        .listen(listener);
                    match server {
                        Ok(server) => {
                            let server = server.run();
                            let _ = ready_tx.send(Ok(server.handle()));
                            let _ = server.await;
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                });
            })?;
        let handle = ready_rx
            .recv()
            .map_err(|_| std::io::Error::other("the test server's thread ended at start"))??;
        Ok(TestServer { addr, handle })
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Upgrades `request` (e.g. `Request::get("/chat/ws").header("authorization",
    /// "Bearer ann").body(())`) to a WebSocket through the app. The handshake headers
    /// (and `Host`, the server's address) are added when missing. A response other than 101 (your middleware's 401, the
    /// origin check's 403, ...) is [`UpgradeRefused`] with its status and body.
    pub async fn connect(&self, mut request: Request) -> Result<TestClient, UpgradeRefused> {
        let stream = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|e| UpgradeRefused {
                status: 0,
                body: format!("could not connect to the test server: {e}"),
            })?;
        if !request.headers().contains_key("host") {
            if let Ok(host) = self.addr.to_string().parse() {
                request.headers_mut().insert("host", host);
            }
        }
        connect_over(stream, request).await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // The stop command is sent at once; the returned future only reports its end.
        // Not graceful: open connections are dropped, the port is freed, the app (and
        // the hub clones it holds) goes away, and the server's thread ends.
        drop(self.handle.stop(false));
    }
}
