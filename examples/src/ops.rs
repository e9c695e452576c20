//! What an operator gets from the example site: `GET /metrics` (Prometheus text), the
//! probes, and the operator's page at `/admin` with its JSON API under `/admin/api/`.
//!
//! Both binaries hand each request that is not a chat route to [`Site::answer`], so
//! the two adapters serve the same site.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatroom_core::Hub;
use chatroom_core::PostError;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;

use crate::{Page, error_page};

/// How often the operator's page samples the metrics for its charts.
pub const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// How much history the charts keep: ten minutes.
const SAMPLES: usize = 120;
/// The largest request body the admin API reads.
pub const MAX_BODY: usize = 16 * 1024;
/// Who the operator's posts are from.
const FROM: &str = "operator";

const ADMIN_HTML: &str = include_str!("../assets/admin.html");
const ADMIN_JS: &str = include_str!("../assets/admin.js");

/// Installs the Prometheus recorder for the whole process (before the hub is built, so
/// that the hub's metrics reach it). `None`, with a warning, if another recorder is
/// installed already: `/metrics` then answers 404 and the charts stay empty.
pub fn install_metrics() -> Option<PrometheusHandle> {
    match PrometheusBuilder::new().install_recorder() {
        Ok(handle) => Some(handle),
        Err(e) => {
            tracing::warn!(error = %e, "no /metrics: the Prometheus recorder could not be installed");
            None
        }
    }
}

/// One request to the site, as an adapter sees it.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// `GET`, `HEAD`, `POST`...
    pub method: &'a str,
    /// The path, percent-encoded, without the query.
    pub path: &'a str,
    /// The `Authorization` header, if any.
    pub authorization: Option<&'a str>,
    /// The body; `None` when it was longer than [`MAX_BODY`] (the adapter stops reading
    /// there). The token is checked first: an unauthorized request gets 401 whatever
    /// its body.
    pub body: Option<&'a [u8]>,
}

/// One point of the operator's charts.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Sample {
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// WebSocket connections open.
    pub connections: f64,
    /// Messages per second since the previous sample (events of type `message`
    /// delivered on this node).
    pub messages_per_sec: f64,
    /// The 99th percentile of `chatroom_delivery_seconds` over about the last minute,
    /// in milliseconds; `None` without sends in that time.
    pub latency_p99_ms: Option<f64>,
}

/// The example site's own routes around a hub. Cheap to clone.
#[derive(Clone)]
pub struct Site {
    inner: Arc<Inner>,
}

struct Inner {
    hub: Hub,
    metrics: Option<PrometheusHandle>,
    admin_token: Option<Token>,
    samples: Mutex<VecDeque<Sample>>,
    /// The counters at the last sample.
    last: Mutex<Option<Counts>>,
}

#[derive(Clone, Copy)]
struct Counts {
    messages: f64,
    sends: f64,
    at: std::time::Instant,
}

impl std::fmt::Debug for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Site")
            .field("metrics", &self.inner.metrics.is_some())
            .field("admin", &self.inner.admin_token.is_some())
            .finish_non_exhaustive()
    }
}

impl Site {
    /// The site around `hub`; `/metrics` renders `metrics` if given, and `/admin` is
    /// served only with an `admin_token`.
    pub fn new(hub: Hub, metrics: Option<PrometheusHandle>, admin_token: Option<String>) -> Site {
        Site {
            inner: Arc::new(Inner {
                hub,
                metrics,
                admin_token: admin_token.as_deref().map(Token::new),
                samples: Mutex::new(VecDeque::with_capacity(SAMPLES)),
                last: Mutex::new(None),
            }),
        }
    }

    /// Samples the metrics every [`SAMPLE_EVERY`] (and runs the exporter's upkeep)
    /// until the hub shuts down. Spawn it on the hub's runtime.
    pub async fn sample_forever(self) {
        while !self.inner.hub.is_shutting_down() {
            self.sample();
            tokio::time::sleep(SAMPLE_EVERY).await;
        }
    }

    /// Takes one sample for the charts now.
    pub fn sample(&self) {
        let Some(handle) = &self.inner.metrics else {
            return;
        };
        handle.run_upkeep();
        let text = handle.render();
        let read = |name: &str, labels: &str| prometheus_value(&text, name, labels);
        let connections = read("chatroom_connections_open", "").unwrap_or(0.0);
        let messages = read("chatroom_events_total", "type=\"message\"").unwrap_or(0.0);
        let sends = read("chatroom_delivery_seconds_count", "").unwrap_or(0.0);
        let p99 = read("chatroom_delivery_seconds", "quantile=\"0.99\"").filter(|s| s.is_finite());
        let now = std::time::Instant::now();
        let (rate, p99) = {
            let mut last = lock(&self.inner.last);
            let rate = match *last {
                Some(before) if messages >= before.messages => {
                    (messages - before.messages)
                        / now.duration_since(before.at).as_secs_f64().max(0.001)
                }
                _ => 0.0,
            };
            // The percentile spans about a minute: shown only for intervals with sends.
            let p99 = p99.filter(|_| last.map_or(sends > 0.0, |before| sends > before.sends));
            *last = Some(Counts {
                messages,
                sends,
                at: now,
            });
            (rate, p99)
        };
        let at_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut samples = lock(&self.inner.samples);
        if samples.len() == SAMPLES {
            samples.pop_front();
        }
        samples.push_back(Sample {
            at_ms,
            connections,
            messages_per_sec: rate,
            latency_p99_ms: p99.map(|s| s * 1000.0),
        });
    }

    /// The answer to a request for the site (anything but the chat routes): pages,
    /// probes, `/metrics`, and `/admin`.
    pub async fn answer(&self, request: Request<'_>) -> Page {
        let Request { method, path, .. } = request;
        let get = method == "GET" || method == "HEAD";
        if path == "/metrics" {
            return match (&self.inner.metrics, get) {
                (Some(handle), true) => Page {
                    status: 200,
                    content_type: "text/plain; version=0.0.4; charset=utf-8",
                    body: handle.render(),
                    headers: vec![("cache-control", "no-store")],
                },
                (Some(_), false) => error_page(405, "Only GET is served here."),
                (None, _) => error_page(404, "There is no page at this address."),
            };
        }
        if path == "/admin" || path.starts_with("/admin/") {
            return match &self.inner.admin_token {
                Some(token) => self.admin(request, token).await,
                None => error_page(404, "There is no page at this address."),
            };
        }
        if !get {
            return error_page(405, "Only GET is served here.");
        }
        crate::site(path, &self.inner.hub)
    }

    async fn admin(&self, request: Request<'_>, token: &Token) -> Page {
        let Request {
            method,
            path,
            authorization,
            body,
        } = request;
        let get = method == "GET" || method == "HEAD";
        match path {
            "/admin" if get => return asset("text/html; charset=utf-8", ADMIN_HTML),
            "/admin/static/admin.js" if get => {
                return asset("text/javascript; charset=utf-8", ADMIN_JS);
            }
            _ => {}
        }
        let Some(api) = path.strip_prefix("/admin/api/") else {
            return error_page(404, "There is no page at this address.");
        };
        if !token.admits(authorization) {
            return Page {
                status: 401,
                content_type: "text/plain; charset=utf-8",
                body: String::new(),
                headers: vec![
                    ("www-authenticate", "Bearer"),
                    ("cache-control", "no-store"),
                ],
            };
        }
        let Some(body) = body else {
            return json(413, &Failure::new("the body is too large"));
        };
        let hub = &self.inner.hub;
        let segments: Vec<&str> = api.split('/').collect();
        match (method, segments.as_slice()) {
            ("GET" | "HEAD", ["rooms"]) => match hub.rooms().await {
                Ok(rooms) => json(
                    200,
                    &RoomList {
                        rooms: rooms
                            .into_iter()
                            .map(|r| RoomRow {
                                room: r.room,
                                members: r.members,
                            })
                            .collect(),
                    },
                ),
                Err(_) => json(503, &Failure::new("the store is unavailable")),
            },
            ("GET" | "HEAD", ["stats"]) => json(
                200,
                &Stats {
                    interval_ms: SAMPLE_EVERY.as_millis() as u64,
                    store: hub.store_health().to_string(),
                    samples: lock(&self.inner.samples).iter().copied().collect(),
                },
            ),
            ("GET" | "HEAD", ["rooms", room]) => {
                let Some(room) = chatroom_core::api::decode_segment(room) else {
                    return json(400, &Failure::new("the room name is not valid"));
                };
                match hub.members(&room).await {
                    Ok(Some(members)) => json(
                        200,
                        &RoomMembers {
                            room: room.clone(),
                            members: members
                                .into_iter()
                                .map(|m| MemberRow {
                                    name: m.name,
                                    present: m.present,
                                    joined_at_ms: m
                                        .joined_at
                                        .duration_since(UNIX_EPOCH)
                                        .map_or(0, |d| d.as_millis() as u64),
                                })
                                .collect(),
                        },
                    ),
                    Ok(None) => json(404, &Failure::new("there is no such room")),
                    Err(_) => json(503, &Failure::new("the store is unavailable")),
                }
            }
            ("POST", ["rooms", room, "messages"]) => {
                let Some(room) = chatroom_core::api::decode_segment(room) else {
                    return json(400, &Failure::new("the room name is not valid"));
                };
                let Ok(post) = serde_json::from_slice::<PostBody>(body) else {
                    return json(400, &Failure::new("expected {\"text\": \"...\"}"));
                };
                match hub.post(&room, FROM, &post.text).await {
                    Ok(id) => json(200, &Posted { id }),
                    Err(PostError::NoSuchRoom) => json(404, &Failure::new("there is no such room")),
                    Err(e @ (PostError::InvalidRoom(_) | PostError::InvalidText(_))) => {
                        json(400, &Failure::new(&e.to_string()))
                    }
                    Err(e) => json(503, &Failure::new(&e.to_string())),
                }
            }
            ("POST", ["rooms", room, "kick"]) => {
                let Some(room) = chatroom_core::api::decode_segment(room) else {
                    return json(400, &Failure::new("the room name is not valid"));
                };
                let Ok(kick) = serde_json::from_slice::<KickBody>(body) else {
                    return json(400, &Failure::new("expected {\"name\": \"...\"}"));
                };
                let reason = kick.reason.as_deref().unwrap_or("removed by an operator");
                match hub.kick(&room, &kick.name, reason).await {
                    Ok(removed) => json(200, &Kicked { removed }),
                    Err(_) => json(503, &Failure::new("the store is unavailable")),
                }
            }
            (_, ["rooms"] | ["stats"] | ["rooms", _]) => {
                json(405, &Failure::new("only GET is served here"))
            }
            (_, ["rooms", _, "messages" | "kick"]) => {
                json(405, &Failure::new("only POST is served here"))
            }
            _ => json(404, &Failure::new("there is no such endpoint")),
        }
    }
}

/// The operator's token, kept as a keyed digest: what a request presents is digested
/// with the same random key and the digests are compared in constant time, so neither
/// the comparison nor the token's length shows in the time an answer takes.
struct Token {
    keys: [std::collections::hash_map::RandomState; 2],
    digest: [u8; 16],
}

impl Token {
    fn new(token: &str) -> Token {
        let keys = [Default::default(), Default::default()];
        let digest = digest(&keys, token.as_bytes());
        Token { keys, digest }
    }

    /// Whether `authorization` is `Bearer <the token>`.
    fn admits(&self, authorization: Option<&str>) -> bool {
        let Some(given) = authorization.and_then(|a| {
            let (scheme, rest) = a.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        }) else {
            return false;
        };
        digest(&self.keys, given.as_bytes())
            .ct_eq(&self.digest)
            .into()
    }
}

/// 128 bits of two independently keyed SipHashes of `bytes` (a keyed PRF: without the
/// process's random keys, a digest says nothing about the token).
fn digest(keys: &[std::collections::hash_map::RandomState; 2], bytes: &[u8]) -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    let mut out = [0; 16];
    for (key, half) in keys.iter().zip(out.chunks_mut(8)) {
        let mut hasher = key.build_hasher();
        hasher.write(bytes);
        half.copy_from_slice(&hasher.finish().to_le_bytes());
    }
    out
}

/// The value of the sample `name{labels}` in Prometheus text (`labels` as rendered,
/// without braces; empty for none).
fn prometheus_value(text: &str, name: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (key, value) = line.rsplit_once(' ')?;
            let (found, found_labels) = match key.split_once('{') {
                Some((n, rest)) => (n, rest.strip_suffix('}')?),
                None => (key, ""),
            };
            (found == name && found_labels == labels)
                .then(|| value.parse().ok())
                .flatten()
        })
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn asset(content_type: &'static str, body: &str) -> Page {
    Page {
        status: 200,
        content_type,
        body: body.to_owned(),
        headers: Vec::new(),
    }
}

fn json(status: u16, value: &impl Serialize) -> Page {
    Page {
        status,
        content_type: "application/json",
        body: serde_json::to_string(value).unwrap_or_else(|_| "{}".to_owned()),
        headers: vec![("cache-control", "no-store")],
    }
}

#[derive(Serialize)]
struct Failure {
    error: String,
}

impl Failure {
    fn new(error: &str) -> Failure {
        Failure {
            error: error.to_owned(),
        }
    }
}

#[derive(Serialize)]
struct RoomList {
    rooms: Vec<RoomRow>,
}

#[derive(Serialize)]
struct RoomRow {
    room: String,
    members: usize,
}

#[derive(Serialize)]
struct RoomMembers {
    room: String,
    members: Vec<MemberRow>,
}

#[derive(Serialize)]
struct MemberRow {
    name: String,
    present: bool,
    joined_at_ms: u64,
}

#[derive(Serialize)]
struct Stats {
    interval_ms: u64,
    store: String,
    samples: Vec<Sample>,
}

#[derive(Deserialize)]
struct PostBody {
    text: String,
}

#[derive(Serialize)]
struct Posted {
    id: u64,
}

#[derive(Deserialize)]
struct KickBody {
    name: String,
    reason: Option<String>,
}

#[derive(Serialize)]
struct Kicked {
    removed: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_must_match_exactly() {
        let token = Token::new("s3cret-token-value");
        assert!(token.admits(Some("Bearer s3cret-token-value")));
        assert!(token.admits(Some("bearer s3cret-token-value")));
        assert!(!token.admits(Some("Bearer s3cret-token-valu")));
        assert!(!token.admits(Some("Bearer s3cret-token-value2")));
        assert!(!token.admits(Some("Bearer S3cret-token-value")));
        assert!(!token.admits(Some("Basic s3cret-token-value")));
        assert!(!token.admits(Some("s3cret-token-value")));
        assert!(!token.admits(Some("Bearer ")));
        assert!(!token.admits(None));
    }

    #[test]
    fn prometheus_values_are_read_by_name_and_labels() {
        let text = "# TYPE chatroom_events_total counter\n\
                    chatroom_events_total{type=\"joined\"} 3\n\
                    chatroom_events_total{type=\"message\"} 12\n\
                    chatroom_connections_open 2\n\
                    chatroom_delivery_seconds{quantile=\"0.99\"} 0.0042\n";
        assert_eq!(
            prometheus_value(text, "chatroom_events_total", "type=\"message\""),
            Some(12.0)
        );
        assert_eq!(
            prometheus_value(text, "chatroom_connections_open", ""),
            Some(2.0)
        );
        assert_eq!(
            prometheus_value(text, "chatroom_delivery_seconds", "quantile=\"0.99\""),
            Some(0.0042)
        );
        assert_eq!(prometheus_value(text, "chatroom_rooms", ""), None);
    }
}
