//! The example chat site, shared by the `axum-site` and `actix-site` binaries: its
//! configuration from environment variables, and its pages and assets, all embedded in
//! the binary. Each binary only mounts the chat routes of its adapter and answers every
//! other `GET` with [`page`].
#![forbid(unsafe_code)]

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use chatroom_core::{Hub, HubBuilder, Limits, OriginPolicy, RoomName, Scheme};

mod ops;
pub use ops::{MAX_BODY, Request, SAMPLE_EVERY, Sample, Site, install_metrics};

/// The sites allocate through jemalloc. With glibc's malloc a server never gave back
/// what a crowd of clients had used: after 9,000 idle connections left, its heap held
/// 74 MB for 0.5 MB in use (freed memory stays in the worker threads' arenas), and a
/// 10-minute soak ended 22-25% above its start. jemalloc returns freed pages after a
/// decay time (see docs/reliability.md, "Soak"). The library crates leave the choice
/// of allocator to the application.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Lets the allocator give freed memory back to the system from a background thread
/// (otherwise it does so only while it is being called, so an idle server would keep
/// the memory of its last crowd).
pub fn tune_allocator() {
    let _ = tikv_jemalloc_ctl::background_thread::write(true);
}

/// The `Content-Security-Policy` of every page: nothing but this server, no inline script.
pub const CSP: &str = "default-src 'self'; connect-src 'self'; img-src 'self'; \
                       style-src 'self'; script-src 'self'; object-src 'none'; \
                       base-uri 'none'; frame-ancestors 'none'; form-action 'self'";

/// The log filter without `RUST_LOG`.
const DEFAULT_LOG_FILTER: &str = "info,actix_http::h1::dispatcher=off";

/// The shortest operator token the site accepts.
const MIN_ADMIN_TOKEN: usize = 16;

/// The site's configuration.
#[derive(Debug, Clone)]
pub struct SiteConfig {
    /// Where to listen (`CHATROOM_ADDR`, default `127.0.0.1:8080`).
    pub addr: SocketAddr,
    /// The hub's limits.
    pub limits: Limits,
    /// Which origins may open a WebSocket (`CHATROOM_ORIGINS`).
    pub origins: OriginPolicy,
    /// The scheme the site is served under (`CHATROOM_SCHEME`); `None`: each request's.
    pub scheme: Option<Scheme>,
    /// The header a trusted proxy puts the client's address in
    /// (`CHATROOM_ADDRESS_HEADER`), for the per-address connection limit.
    pub address_header: Option<String>,
    /// The Redis through which this site shares its rooms with other nodes
    /// (`CHATROOM_REDIS_URL`: `redis://host:port/`, `rediss://`, `unix:///path`);
    /// `None`: a single node.
    pub redis_url: Option<String>,
    /// A PEM file of the certificate authority to trust for a `rediss://` URL
    /// (`CHATROOM_REDIS_CA_FILE`) instead of the system's roots.
    pub redis_ca_file: Option<std::path::PathBuf>,
    /// How long this node's lease in Redis lasts (`CHATROOM_NODE_LEASE_MS`, default
    /// 6000).
    pub node_lease: Duration,
    /// The operator's token (`CHATROOM_ADMIN_TOKEN`, at least 16 characters): with it,
    /// the site serves the operator's page at `/admin`; without it, `/admin` is 404.
    pub admin_token: Option<String>,
    /// Whether the site records metrics and serves `/metrics` (`CHATROOM_METRICS`:
    /// `on`, the default, or `off`).
    pub metrics: bool,
}

/// Why the site cannot run as a cluster node.
#[derive(Debug, thiserror::Error)]
#[error("CHATROOM_REDIS_URL={url}: {cause}")]
pub struct ClusterError {
    /// The URL, with any password hidden.
    pub url: String,
    /// What went wrong.
    #[source]
    pub cause: chatroom_redis::ConnectError,
}

/// `url` with the password of its user info (if any) replaced by `***`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            let hidden = if userinfo.contains(':') {
                format!("{user}:***")
            } else {
                "***".to_owned()
            };
            format!("{scheme}://{hidden}@{host}")
        }
        None => url.to_owned(),
    }
}

/// A configuration variable that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name}={value:?} is not valid: {why}")]
pub struct ConfigError {
    /// The variable.
    pub name: &'static str,
    /// Its value.
    pub value: String,
    /// What was expected.
    pub why: &'static str,
}

impl SiteConfig {
    /// Reads the configuration from the process environment.
    pub fn from_env() -> Result<SiteConfig, ConfigError> {
        SiteConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (a variable's value, if set).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<SiteConfig, ConfigError> {
        let d = Limits::default();
        let get = |name: &'static str| lookup(name).map(|v| (name, v));
        let ms = |name: &'static str, default: Duration| -> Result<Duration, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some((name, v)) => v
                    .trim()
                    .parse::<u64>()
                    .ok()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or(ConfigError {
                        name,
                        value: v,
                        why: "expected milliseconds, above 0",
                    }),
            }
        };
        let count = |name: &'static str, default: usize| -> Result<usize, ConfigError> {
            match get(name) {
                None => Ok(default),
                Some((name, v)) => {
                    v.trim()
                        .parse::<usize>()
                        .ok()
                        .filter(|n| *n > 0)
                        .ok_or(ConfigError {
                            name,
                            value: v,
                            why: "expected a whole number above 0",
                        })
                }
            }
        };
        let small = |name: &'static str, default: u32| -> Result<u32, ConfigError> {
            let n = count(name, default as usize)?;
            u32::try_from(n).map_err(|_| ConfigError {
                name,
                value: n.to_string(),
                why: "too large",
            })
        };
        let addr = match get("CHATROOM_ADDR") {
            None => SocketAddr::from(([127, 0, 0, 1], 8080)),
            Some((name, v)) => v.trim().parse().map_err(|_| ConfigError {
                name,
                value: v,
                why: "expected an address like 127.0.0.1:8080",
            })?,
        };
        let ping_interval = match get("CHATROOM_PING_INTERVAL_MS") {
            Some((_, v)) if v.trim() == "0" => None,
            _ => Some(ms("CHATROOM_PING_INTERVAL_MS", Duration::from_secs(20))?),
        };
        let limits = Limits {
            join_timeout: ms("CHATROOM_JOIN_TIMEOUT_MS", d.join_timeout)?,
            max_unjoined: ms("CHATROOM_MAX_UNJOINED_MS", d.max_unjoined)?,
            resume_grace: ms("CHATROOM_RESUME_GRACE_MS", d.resume_grace)?,
            history: count("CHATROOM_HISTORY", d.history)?,
            max_name_chars: count("CHATROOM_MAX_NAME_CHARS", d.max_name_chars)?,
            max_room_chars: count("CHATROOM_MAX_ROOM_CHARS", d.max_room_chars)?,
            max_message_chars: count("CHATROOM_MAX_MESSAGE_CHARS", d.max_message_chars)?,
            max_members: count("CHATROOM_MAX_MEMBERS", d.max_members)?,
            max_frame_bytes: count("CHATROOM_MAX_FRAME_BYTES", d.max_frame_bytes)?,
            rate_burst: small("CHATROOM_RATE_BURST", d.rate_burst)?,
            rate_per_sec: small("CHATROOM_RATE_PER_SEC", d.rate_per_sec)?,
            flood_rejections: small("CHATROOM_FLOOD_REJECTIONS", d.flood_rejections)?,
            flood_window: ms("CHATROOM_FLOOD_WINDOW_MS", d.flood_window)?,
            outgoing_queue: count("CHATROOM_OUTGOING_QUEUE", d.outgoing_queue)?,
            ping_interval,
            ping_timeout: ms("CHATROOM_PING_TIMEOUT_MS", d.ping_timeout)?,
            room_queue: count("CHATROOM_ROOM_QUEUE", d.room_queue)?,
            max_connections: count("CHATROOM_MAX_CONNECTIONS", d.max_connections)?,
            max_connections_per_address: match get("CHATROOM_MAX_CONNECTIONS_PER_ADDRESS") {
                None => None,
                Some(_) => Some(count("CHATROOM_MAX_CONNECTIONS_PER_ADDRESS", 1)?),
            },
            max_rooms: count("CHATROOM_MAX_ROOMS", d.max_rooms)?,
            room_joins_per_sec: small("CHATROOM_ROOM_JOINS_PER_SEC", d.room_joins_per_sec)?,
            room_join_burst: small("CHATROOM_ROOM_JOIN_BURST", d.room_join_burst)?,
            room_presence_per_sec: small(
                "CHATROOM_ROOM_PRESENCE_PER_SEC",
                d.room_presence_per_sec,
            )?,
            room_presence_burst: small("CHATROOM_ROOM_PRESENCE_BURST", d.room_presence_burst)?,
            api_requests_per_sec: small("CHATROOM_API_PER_SEC", d.api_requests_per_sec)?,
            api_burst: small("CHATROOM_API_BURST", d.api_burst)?,
            api_max_wait: ms("CHATROOM_API_MAX_WAIT_MS", d.api_max_wait)?,
        };
        let address_header = get("CHATROOM_ADDRESS_HEADER")
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let origins = match get("CHATROOM_ORIGINS") {
            None => OriginPolicy::SameHost,
            Some((_, v)) if v.trim() == "*" => OriginPolicy::Any,
            Some((_, v)) if v.trim().is_empty() => OriginPolicy::SameHost,
            Some((_, v)) => OriginPolicy::List(v.split(',').map(|o| o.trim().to_owned()).collect()),
        };
        let scheme = match get("CHATROOM_SCHEME") {
            None => None,
            Some((_, v)) if v.trim().is_empty() => None,
            Some((_, v)) => Some(Scheme::parse(v.trim()).ok_or(ConfigError {
                name: "CHATROOM_SCHEME",
                value: v,
                why: "expected http or https",
            })?),
        };
        let redis_url = get("CHATROOM_REDIS_URL")
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        let redis_ca_file = get("CHATROOM_REDIS_CA_FILE")
            .map(|(_, v)| v.trim().to_owned())
            .filter(|v| !v.is_empty())
            .map(std::path::PathBuf::from);
        let node_lease = ms("CHATROOM_NODE_LEASE_MS", Duration::from_millis(6000))?;
        let admin_token = match get("CHATROOM_ADMIN_TOKEN") {
            None => None,
            Some((_, v)) if v.trim().is_empty() => None,
            Some((name, v)) => {
                let token = v.trim();
                if token.chars().count() < MIN_ADMIN_TOKEN
                    || !token.chars().all(|c| c.is_ascii_graphic())
                {
                    return Err(ConfigError {
                        name,
                        // Never printed: it is a secret.
                        value: "(hidden)".to_owned(),
                        why: "expected at least 16 printable ASCII characters without spaces",
                    });
                }
                Some(token.to_owned())
            }
        };
        let metrics = match get("CHATROOM_METRICS") {
            None => true,
            Some((name, v)) => match v.trim() {
                "on" | "" => true,
                "off" => false,
                _ => {
                    return Err(ConfigError {
                        name,
                        value: v,
                        why: "expected on or off",
                    });
                }
            },
        };
        Ok(SiteConfig {
            addr,
            limits,
            origins,
            scheme,
            address_header,
            redis_url,
            redis_ca_file,
            node_lease,
            admin_token,
            metrics,
        })
    }

    /// The hub `builder` builds: a node of the cluster on `CHATROOM_REDIS_URL` if it is
    /// set (connecting to Redis and checking it), else a single node.
    pub async fn start_hub(&self, builder: HubBuilder) -> Result<Hub, ClusterError> {
        let Some(url) = &self.redis_url else {
            return Ok(builder.build());
        };
        let failed = |cause| ClusterError {
            url: redact(url),
            cause,
        };
        let backplane = match &self.redis_ca_file {
            None => chatroom_redis::RedisBackplane::connect(url).await,
            Some(path) => {
                let ca = std::fs::read(path).map_err(|e| {
                    failed(chatroom_redis::ConnectError::Tls(format!(
                        "CHATROOM_REDIS_CA_FILE={}: {e}",
                        path.display()
                    )))
                })?;
                let tls = chatroom_redis::TlsCertificates::new().root_certificate(ca);
                chatroom_redis::RedisBackplane::connect_with_tls(url, tls).await
            }
        }
        .map_err(failed)?;
        // A node whose room rules differ from the running cluster's would be refused at
        // its first heartbeat: say so now, naming each difference.
        backplane.check_rules(&self.limits).await.map_err(failed)?;
        Ok(builder.backplane(backplane.lease(self.node_lease)).build())
    }

    /// A hub with this configuration.
    pub fn hub(&self) -> Hub {
        self.hub_builder().build()
    }

    /// A hub builder with this configuration, for more settings (the rooms' runtime).
    pub fn hub_builder(&self) -> HubBuilder {
        let mut builder = Hub::builder()
            .limits(self.limits.clone())
            .origins(self.origins.clone());
        if let Some(scheme) = self.scheme {
            builder = builder.scheme(scheme);
        }
        if let Some(header) = &self.address_header {
            builder = builder.client_address_header(header);
        }
        builder
    }

    /// The configuration, one `VARIABLE=value` a line, for the log at start.
    pub fn describe(&self) -> String {
        let l = &self.limits;
        let ms = |d: Duration| d.as_millis().to_string();
        let origins = match &self.origins {
            OriginPolicy::SameHost => "(same host)".to_owned(),
            OriginPolicy::Any => "*".to_owned(),
            OriginPolicy::List(list) => list.join(","),
        };
        let rows: [(&str, String); 36] = [
            ("CHATROOM_ADDR", self.addr.to_string()),
            ("CHATROOM_JOIN_TIMEOUT_MS", ms(l.join_timeout)),
            ("CHATROOM_MAX_UNJOINED_MS", ms(l.max_unjoined)),
            ("CHATROOM_RESUME_GRACE_MS", ms(l.resume_grace)),
            ("CHATROOM_HISTORY", l.history.to_string()),
            ("CHATROOM_MAX_NAME_CHARS", l.max_name_chars.to_string()),
            ("CHATROOM_MAX_ROOM_CHARS", l.max_room_chars.to_string()),
            (
                "CHATROOM_MAX_MESSAGE_CHARS",
                l.max_message_chars.to_string(),
            ),
            ("CHATROOM_MAX_MEMBERS", l.max_members.to_string()),
            ("CHATROOM_MAX_FRAME_BYTES", l.max_frame_bytes.to_string()),
            ("CHATROOM_RATE_BURST", l.rate_burst.to_string()),
            ("CHATROOM_RATE_PER_SEC", l.rate_per_sec.to_string()),
            ("CHATROOM_FLOOD_REJECTIONS", l.flood_rejections.to_string()),
            ("CHATROOM_FLOOD_WINDOW_MS", ms(l.flood_window)),
            ("CHATROOM_OUTGOING_QUEUE", l.outgoing_queue.to_string()),
            (
                "CHATROOM_PING_INTERVAL_MS",
                l.ping_interval.map_or("0".into(), ms),
            ),
            ("CHATROOM_PING_TIMEOUT_MS", ms(l.ping_timeout)),
            ("CHATROOM_ROOM_QUEUE", l.room_queue.to_string()),
            ("CHATROOM_MAX_CONNECTIONS", l.max_connections.to_string()),
            (
                "CHATROOM_MAX_CONNECTIONS_PER_ADDRESS",
                l.max_connections_per_address
                    .map_or("(unset: no limit)".into(), |n| n.to_string()),
            ),
            (
                "CHATROOM_ADDRESS_HEADER",
                self.address_header
                    .clone()
                    .unwrap_or_else(|| "(the peer address)".into()),
            ),
            ("CHATROOM_MAX_ROOMS", l.max_rooms.to_string()),
            (
                "CHATROOM_ROOM_JOINS_PER_SEC",
                l.room_joins_per_sec.to_string(),
            ),
            ("CHATROOM_ROOM_JOIN_BURST", l.room_join_burst.to_string()),
            (
                "CHATROOM_ROOM_PRESENCE_PER_SEC",
                l.room_presence_per_sec.to_string(),
            ),
            (
                "CHATROOM_ROOM_PRESENCE_BURST",
                l.room_presence_burst.to_string(),
            ),
            ("CHATROOM_API_PER_SEC", l.api_requests_per_sec.to_string()),
            ("CHATROOM_API_BURST", l.api_burst.to_string()),
            ("CHATROOM_API_MAX_WAIT_MS", ms(l.api_max_wait)),
            ("CHATROOM_ORIGINS", origins),
            (
                "CHATROOM_REDIS_URL",
                self.redis_url
                    .as_deref()
                    .map_or("(unset: a single node)".to_owned(), redact),
            ),
            (
                "CHATROOM_REDIS_CA_FILE",
                self.redis_ca_file
                    .as_ref()
                    .map_or("(unset: the system's roots)".to_owned(), |p| {
                        p.display().to_string()
                    }),
            ),
            ("CHATROOM_NODE_LEASE_MS", ms(self.node_lease)),
            (
                "CHATROOM_METRICS",
                if self.metrics { "on" } else { "off" }.to_owned(),
            ),
            (
                "CHATROOM_ADMIN_TOKEN",
                if self.admin_token.is_some() {
                    "(set: the operator's page is at /admin)".to_owned()
                } else {
                    "(unset: no /admin)".to_owned()
                },
            ),
            (
                "CHATROOM_SCHEME",
                self.scheme
                    .map_or("(from each request)", Scheme::as_str)
                    .to_owned(),
            ),
        ];
        let mut out = String::new();
        for (name, value) in rows {
            let _ = writeln!(out, "  {name}={value}");
        }
        out
    }
}

/// A page or asset: status, content type and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Page {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
    /// Other response headers (lower-case names).
    pub headers: Vec<(&'static str, &'static str)>,
}

const STYLE: &str = include_str!("../assets/style.css");
const CLIENT_JS: &str = include_str!("../assets/chatroom.js");
const APP_JS: &str = include_str!("../assets/app.js");
const ICON: &str = include_str!("../assets/icon.svg");
const LOBBY: &str = include_str!("../assets/lobby.html");
const ROOM: &str = include_str!("../assets/room.html");

/// The page or asset for a `GET` of `path` (percent-encoded, without the query). The
/// chat routes (`/ws`, `/rooms...`) are the adapter's; everything else is here.
pub fn page(path: &str, limits: &Limits) -> Page {
    const HTML: &str = "text/html; charset=utf-8";
    let asset = |content_type, body: &str| Page {
        status: 200,
        content_type,
        body: body.to_owned(),
        headers: Vec::new(),
    };
    match path {
        "/" => asset(HTML, &layout("Lobby", "lobby", LOBBY)),
        "/static/style.css" => asset("text/css; charset=utf-8", STYLE),
        "/static/chatroom.js" => asset("text/javascript; charset=utf-8", CLIENT_JS),
        "/static/app.js" => asset("text/javascript; charset=utf-8", APP_JS),
        "/static/icon.svg" | "/favicon.ico" => asset("image/svg+xml", ICON),
        _ => match path.strip_prefix("/room/") {
            Some(encoded) => match chatroom_core::api::decode_segment(encoded)
                .and_then(|room| RoomName::parse_max(&room, limits.max_room_chars).ok())
            {
                Some(_) => asset(HTML, &layout("Room", "room", ROOM)),
                None => error_page(400, "That is not a valid room name."),
            },
            None => error_page(404, "There is no page at this address."),
        },
    }
}

/// What the site answers a `GET` of `path` with: the probes, or [`page`].
///
/// - `/healthz`: 200 `alive` while the process serves at all (a liveness probe);
/// - `/readyz`: 200 `ready` while new connections are welcome here, else 503 with the
///   reason (`store degraded`, `store lost`, `shutting down`): a load balancer's
///   readiness probe, which follows [`Hub::store_health`].
pub fn site(path: &str, hub: &Hub) -> Page {
    let text = |status, body: String| Page {
        status,
        content_type: "text/plain; charset=utf-8",
        body,
        headers: vec![("cache-control", "no-store")],
    };
    match path {
        "/healthz" => text(200, "alive\n".to_owned()),
        "/readyz" => {
            let health = hub.store_health();
            if hub.is_shutting_down() {
                text(503, "shutting down\n".to_owned())
            } else if health.is_ready() {
                text(200, "ready\n".to_owned())
            } else {
                text(503, format!("store {health}\n"))
            }
        }
        _ => page(path, hub.limits()),
    }
}

/// The error page: status and message in the shared layout.
pub fn error_page(status: u16, message: &str) -> Page {
    let main = format!(
        "<section class=\"card error\"><h1>{status}</h1><p id=\"error-message\">{}</p>\
         <p><a href=\"/\">Back to the lobby</a></p></section>",
        escape(message)
    );
    Page {
        status,
        content_type: "text/html; charset=utf-8",
        body: layout(&format!("Error {status}"), "error", &main),
        headers: Vec::new(),
    }
}

fn layout(title: &str, page: &str, main: &str) -> String {
    format!(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{} · chatroom</title>\n<link rel=\"icon\" href=\"/static/icon.svg\" type=\"image/svg+xml\">\n\
         <link rel=\"stylesheet\" href=\"/static/style.css\">\n\
         <script type=\"module\" src=\"/static/app.js\"></script>\n</head>\n\
         <body data-page=\"{page}\">\n<header class=\"site\"><a class=\"brand\" href=\"/\">chatroom</a></header>\n\
         <main>\n{main}\n</main>\n<footer>chatroom example site</footer>\n</body>\n</html>\n",
        escape(title)
    )
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Logs through `tracing-subscriber`, filtered by `RUST_LOG` (default `info`, without
/// actix's `Response payload stream error` line at the end of each chat on actix-site:
/// see chatroom-actix's docs): lines for people by default, one JSON object per line
/// with `CHATROOM_LOG_FORMAT=json`.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(DEFAULT_LOG_FILTER));
    let format = std::env::var("CHATROOM_LOG_FORMAT").unwrap_or_default();
    match format.trim() {
        "json" => tracing_subscriber::fmt()
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .with_env_filter(filter)
            .init(),
        "" | "text" => tracing_subscriber::fmt().with_env_filter(filter).init(),
        other => {
            tracing_subscriber::fmt().with_env_filter(filter).init();
            tracing::warn!(
                "CHATROOM_LOG_FORMAT={other:?} is neither `text` nor `json`: logging as text"
            );
        }
    }
}

/// Prints, once, where the site listens and its configuration.
pub fn announce(binary: &str, addr: SocketAddr, config: &SiteConfig) {
    println!("{binary} listening on http://{addr}");
    println!("configuration (set any of these environment variables to change it):");
    print!("{}", config.describe());
    match &config.redis_url {
        Some(url) => println!(
            "cluster node: rooms are shared with every node on the Redis at {}",
            redact(url)
        ),
        None => println!("single node (set CHATROOM_REDIS_URL to share rooms through Redis)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_overrides() {
        let none = SiteConfig::from_lookup(|_| None).expect("defaults");
        assert_eq!(none.addr.to_string(), "127.0.0.1:8080");
        assert_eq!(none.limits, Limits::default());
        assert_eq!(
            none.redis_url, None,
            "a single node unless CHATROOM_REDIS_URL is set"
        );
        assert_eq!(none.node_lease, Duration::from_millis(6000));
        let node = SiteConfig::from_lookup(|name| match name {
            "CHATROOM_REDIS_URL" => Some(" redis://:secret@10.0.0.1:6379/ ".into()),
            "CHATROOM_NODE_LEASE_MS" => Some("3000".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(
            node.redis_url.as_deref(),
            Some("redis://:secret@10.0.0.1:6379/")
        );
        assert_eq!(node.node_lease, Duration::from_millis(3000));
        assert!(
            !node.describe().contains("secret"),
            "the password is not printed"
        );
        assert_eq!(redact("redis://u:p@h:1/"), "redis://u:***@h:1/");
        let set = SiteConfig::from_lookup(|name| match name {
            "CHATROOM_ADDR" => Some("0.0.0.0:9000".into()),
            "CHATROOM_RESUME_GRACE_MS" => Some("500".into()),
            "CHATROOM_PING_INTERVAL_MS" => Some("0".into()),
            "CHATROOM_ORIGINS" => Some("https://a.example, https://b.example".into()),
            _ => None,
        })
        .expect("valid");
        assert_eq!(set.addr.port(), 9000);
        assert_eq!(set.limits.resume_grace, Duration::from_millis(500));
        assert_eq!(set.limits.ping_interval, None);
        assert_eq!(
            set.origins,
            OriginPolicy::List(vec!["https://a.example".into(), "https://b.example".into()])
        );
        assert!(set.describe().contains("CHATROOM_RESUME_GRACE_MS=500"));
    }

    #[test]
    fn bad_values_name_the_variable() {
        let err =
            SiteConfig::from_lookup(|name| (name == "CHATROOM_HISTORY").then(|| "lots".into()))
                .expect_err("invalid");
        assert_eq!(err.name, "CHATROOM_HISTORY");
        assert!(err.to_string().contains("CHATROOM_HISTORY=\"lots\""));
        assert!(
            SiteConfig::from_lookup(|n| (n == "CHATROOM_ADDR").then(|| "nowhere".into())).is_err()
        );
        assert!(
            SiteConfig::from_lookup(|n| (n == "CHATROOM_RATE_BURST").then(|| "0".into())).is_err()
        );
    }

    #[test]
    fn pages_and_errors() {
        let l = Limits::default();
        assert_eq!(page("/", &l).status, 200);
        assert_eq!(page("/room/General%20chat", &l).status, 200);
        assert_eq!(page("/room/caf%C3%A9", &l).status, 200);
        assert_eq!(page("/room/%20%20", &l).status, 400);
        assert_eq!(page("/room/%ZZ", &l).status, 400);
        assert_eq!(page("/room/%FF", &l).status, 400);
        assert_eq!(page(&format!("/room/{}", "r".repeat(65)), &l).status, 400);
        let missing = page("/nope", &l);
        assert_eq!(missing.status, 404);
        assert!(missing.body.contains("<h1>404</h1>"));
        assert_eq!(
            page("/static/app.js", &l).content_type,
            "text/javascript; charset=utf-8"
        );
        assert!(error_page(400, "<b>").body.contains("&lt;b&gt;"));
    }
}

// The repository README's Rust examples compile as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
