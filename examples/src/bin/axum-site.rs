//! The example chat site on axum: `cargo run --release -p chatroom-examples`.

use std::net::SocketAddr;
use std::process::ExitCode;

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::serve::ListenerExt;
use chatroom_examples::{CSP, MAX_BODY, Page, Request, Site, SiteConfig};

#[tokio::main]
async fn main() -> ExitCode {
    chatroom_examples::init_logging();
    chatroom_examples::tune_allocator();
    let config = match SiteConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("axum-site: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("axum-site: cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(config.addr);
    // Chat frames are small and latency matters: no Nagle delay.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    });
    // Before the hub: its metrics go to the recorder installed when it is built.
    let metrics = config
        .metrics
        .then(chatroom_examples::install_metrics)
        .flatten();
    let hub = match config.start_hub(config.hub_builder()).await {
        Ok(hub) => hub,
        Err(e) => {
            eprintln!("axum-site: {e}");
            return ExitCode::FAILURE;
        }
    };
    chatroom_examples::announce("axum-site", addr, &config);
    let site = Site::new(hub.clone(), metrics, config.admin_token.clone());
    tokio::spawn(site.clone().sample_forever());
    let app = chatroom_axum::router(hub.clone()).fallback(
        move |method: Method, uri: Uri, headers: HeaderMap, body: Body| {
            let site = site.clone();
            async move {
                // Read up to the limit; past it the site answers 413 (after the token).
                let body = axum::body::to_bytes(body, MAX_BODY).await.ok();
                let request = Request {
                    method: method.as_str(),
                    path: uri.path(),
                    authorization: headers
                        .get(header::AUTHORIZATION)
                        .and_then(|v| v.to_str().ok()),
                    body: body.as_deref(),
                };
                respond(site.answer(request).await)
            }
        },
    );
    let served = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    // SIGINT or SIGTERM: every chat closes with 1001, then the server stops.
    .with_graceful_shutdown(hub.shutdown_on_signal())
    .await;
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("axum-site: {e}");
            ExitCode::FAILURE
        }
    }
}

fn respond(page: Page) -> Response {
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, page.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(page.content_type),
    );
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    for (name, value) in page.headers {
        headers.insert(
            HeaderName::from_static(name),
            HeaderValue::from_static(value),
        );
    }
    response
}
