//! The example chat site on actix-web: `cargo run --release -p chatroom-examples --bin actix-site`.

use std::process::ExitCode;
use std::time::Duration;

use actix_web::http::{StatusCode, header};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use chatroom_examples::{CSP, MAX_BODY, Page, Request, Site, SiteConfig};

#[actix_web::main]
async fn main() -> ExitCode {
    chatroom_examples::init_logging();
    chatroom_examples::tune_allocator();
    let config = match SiteConfig::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("actix-site: {e}");
            return ExitCode::from(2);
        }
    };
    let listener = match std::net::TcpListener::bind(config.addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("actix-site: cannot listen on {}: {e}", config.addr);
            return ExitCode::FAILURE;
        }
    };
    let addr = listener.local_addr().unwrap_or(config.addr);
    // actix's workers are single-threaded runtimes: the rooms get a multi-threaded one
    // of their own, so that they run in parallel, apart from the connections, and
    // outlive a worker's restart.
    let rooms = match tokio::runtime::Builder::new_multi_thread()
        .thread_name("chatroom-rooms")
        .enable_all()
        .build()
    {
        Ok(rooms) => rooms,
        Err(e) => {
            eprintln!("actix-site: cannot start the rooms' runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Before the hub: its metrics go to the recorder installed when it is built.
    let metrics = config
        .metrics
        .then(chatroom_examples::install_metrics)
        .flatten();
    // A cluster node's Redis connections live on the rooms' runtime too.
    let builder = config.hub_builder().runtime(rooms.handle().clone());
    let starting = config.clone();
    let hub = match rooms
        .spawn(async move { starting.start_hub(builder).await })
        .await
    {
        Ok(Ok(hub)) => hub,
        Ok(Err(e)) => {
            eprintln!("actix-site: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("actix-site: could not start: {e}");
            return ExitCode::FAILURE;
        }
    };
    let chat = hub.clone();
    let site = Site::new(hub.clone(), metrics, config.admin_token.clone());
    rooms.spawn(site.clone().sample_forever());
    let server = HttpServer::new(move || {
        let site = site.clone();
        App::new()
            .configure(chatroom_actix::configure(chat.clone()))
            .default_service(web::to(move |req: HttpRequest, payload: web::Payload| {
                let site = site.clone();
                async move {
                    // Read up to the limit; past it the site answers 413 (after the
                    // token).
                    let body = payload
                        .to_bytes_limited(MAX_BODY)
                        .await
                        .ok()
                        .and_then(Result::ok);
                    let request = Request {
                        method: req.method().as_str(),
                        path: req.path(),
                        authorization: req
                            .headers()
                            .get(header::AUTHORIZATION)
                            .and_then(|v| v.to_str().ok()),
                        body: body.as_deref(),
                    };
                    respond(site.answer(request).await)
                }
            }))
    })
    // SIGINT or SIGTERM: every chat closes with 1001, then a graceful stop. This
    // replaces actix's own signal handlers (a forced stop on SIGINT would race the 1001).
    .shutdown_signal(hub.shutdown_on_signal())
    .shutdown_timeout(5)
    .client_disconnect_timeout(Duration::from_millis(250))
    // Chat frames are small and latency matters: no Nagle delay. actix leaves Nagle on
    // by default, and a small frame written while an earlier one is unacknowledged
    // then waits for the peer's delayed ACK (up to 40 ms).
    .tcp_nodelay(true)
    // A peer that takes nothing for 10 s past the write deadline is ended by the kernel.
    .on_connect(chatroom_actix::end_stalled_connections(
        config.limits.ping_timeout + Duration::from_secs(10),
    ))
    .listen(listener);
    let server = match server {
        Ok(s) => s.run(),
        Err(e) => {
            eprintln!("actix-site: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    chatroom_examples::announce("actix-site", addr, &config);
    let served = server.await;
    // Every room has ended by now (the hub was shut down); a runtime may not be
    // dropped inside async code, so it is let go in the background.
    rooms.shutdown_background();
    match served {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("actix-site: {e}");
            ExitCode::FAILURE
        }
    }
}

fn respond(page: Page) -> HttpResponse {
    let status = StatusCode::from_u16(page.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = HttpResponse::build(status);
    response
        .content_type(page.content_type)
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "no-referrer"));
    for header in page.headers {
        response.insert_header(header);
    }
    response.body(page.body)
}
