//! The HTTP API that both adapters serve, as framework-neutral responses, so that the
//! two return byte-identical answers: the same status, headers and body for the same
//! request, whatever the framework's own extractors would have said.
//!
//! - `GET /rooms`: `[{"room": "General", "members": 2}]`
//! - `GET /rooms/{room}`: `{"room": "General", "members": ["Alice", "Bob"]}`, or 404
//! - `GET /rooms/{room}/names/{name}`: `{"available": false, "reason": "name_taken"}`
//! - `GET /ws`: [`check_upgrade`] decides, before the framework's WebSocket code runs.
//!
//! Path segments are taken from the request's path as received (percent-encoded) and
//! decoded here; one that is not valid percent-encoded UTF-8 is a 400 `bad_path`. Any
//! method but `GET` is a 405 `method_not_allowed`. On a cluster whose store cannot be
//! reached in time, the reads answer 503 `unavailable` (with `Retry-After: 1`).

use std::net::IpAddr;
use std::sync::atomic::Ordering;

use serde::Serialize;

use crate::backplane::RoomCursor;
use crate::error::{ErrorCode, Unavailable};
use crate::hub::{Hub, NameCheck};
use crate::origin::Scheme;

/// A JSON response: status code, extra headers and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The HTTP status code.
    pub status: u16,
    /// Headers besides `Content-Type: application/json` (e.g. `Allow` on a 405, `Link`
    /// to the next page of `GET /rooms`); names in lower case.
    pub headers: Vec<(&'static str, String)>,
    /// The JSON body.
    pub body: String,
}

impl ApiResponse {
    fn json(status: u16, value: &impl Serialize) -> ApiResponse {
        match serde_json::to_string(value) {
            Ok(body) => ApiResponse {
                status,
                headers: Vec::new(),
                body,
            },
            Err(e) => {
                tracing::error!(error = %e, "could not encode an API response");
                ApiResponse {
                    status: 500,
                    headers: Vec::new(),
                    body: r#"{"error":"internal","message":"internal server error"}"#.into(),
                }
            }
        }
    }

    fn error(status: u16, error: &str, message: &str) -> ApiResponse {
        ApiResponse::json(
            status,
            &serde_json::json!({"error": error, "message": message}),
        )
    }

    fn with_header(mut self, name: &'static str, value: impl Into<String>) -> ApiResponse {
        self.headers.push((name, value.into()));
        self
    }

    /// The 403 answer to a WebSocket upgrade from an origin the policy does not allow.
    pub fn origin_rejected() -> ApiResponse {
        ApiResponse::error(
            403,
            "forbidden_origin",
            "this origin may not open a chat connection",
        )
    }

    /// The 404 answer for a path the API does not serve.
    pub fn not_found() -> ApiResponse {
        ApiResponse::error(404, "not_found", "no such resource")
    }

    /// The 405 answer to any method but `GET`.
    pub fn method_not_allowed() -> ApiResponse {
        ApiResponse::error(405, "method_not_allowed", "only GET is served here")
            .with_header("allow", "GET")
    }

    /// The 400 answer to a path segment that is not valid percent-encoded UTF-8.
    pub fn bad_path() -> ApiResponse {
        ApiResponse::error(
            400,
            "bad_path",
            "the path is not valid percent-encoded UTF-8",
        )
    }

    /// The 500 answer of an adapter's handler mounted without a hub to serve; `message`
    /// says what to add.
    pub fn no_hub(message: &str) -> ApiResponse {
        ApiResponse::error(500, "no_hub", message)
    }

    /// The 400 answer to a WebSocket upgrade the framework refused although
    /// [`check_upgrade`] passed it (which should not happen).
    pub fn bad_upgrade(message: &str) -> ApiResponse {
        ApiResponse::error(400, "bad_upgrade", message)
    }
}

pub use crate::admission::Admission;

/// The 503 `unavailable` answer: the rooms' store (a cluster's Redis) could not be
/// reached in time.
fn unavailable() -> ApiResponse {
    ApiResponse::error(
        503,
        ErrorCode::Unavailable.as_str(),
        &Unavailable.to_string(),
    )
    .with_header("retry-after", "1")
}

/// The 503 `busy` answer of a request whose turn is too far off.
fn busy() -> ApiResponse {
    ApiResponse::error(
        503,
        "busy",
        "the server is answering too many requests; ask again in a moment",
    )
    .with_header("retry-after", "1")
}

/// The address a connection counts under: an IPv4 address (or one mapped into IPv6)
/// as it is, an IPv6 address by its /64 network, which one client commonly holds.
fn counted_as(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let network = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(std::net::Ipv6Addr::from(network))
            }
        },
    }
}

/// Counts a connection from `address` against the limits, or answers why not.
fn admit(hub: &Hub, address: Option<IpAddr>) -> Result<Admission, ApiResponse> {
    let limits = hub.limits();
    let admitted = hub.admitted();
    let total = admitted.total.fetch_add(1, Ordering::Relaxed);
    // From here on, dropping the admission gives the count back.
    let mut admission = Admission {
        admitted: admitted.clone(),
        address: None,
    };
    if total >= limits.max_connections {
        return Err(ApiResponse::error(
            503,
            "server_full",
            "the server has as many chat connections as it takes; try again later",
        )
        .with_header("retry-after", "5"));
    }
    if let (Some(max), Some(address)) = (limits.max_connections_per_address, address) {
        let address = counted_as(address);
        let mut per_address = admitted.per_address();
        if per_address.get(&address).copied().unwrap_or(0) >= max {
            return Err(ApiResponse::error(
                429,
                "too_many_connections",
                "this address has as many chat connections open as it may",
            )
            .with_header("retry-after", "5"));
        }
        *per_address.entry(address).or_insert(0) += 1;
        admission.address = Some(address);
    }
    Ok(admission)
}

/// `Ok` for `GET`, else the 405 answer.
pub fn check_method(method: &str) -> Result<(), ApiResponse> {
    if method == "GET" {
        Ok(())
    } else {
        Err(ApiResponse::method_not_allowed())
    }
}

/// Judges a WebSocket upgrade request before any framework code sees it, in this order:
///
/// 1. the `Origin`, by the hub's [`OriginPolicy`](crate::OriginPolicy): 403
///    `forbidden_origin` (an `Origin` that is not visible ASCII, or several, is refused);
/// 2. the method: 405 `method_not_allowed` unless `GET`;
/// 3. the handshake (RFC 6455 §4.2.1): without `Upgrade: websocket` and
///    `Connection: upgrade`, 426 `upgrade_required` (with `Upgrade: websocket`); a
///    `Sec-WebSocket-Version` other than 13, 426 `unsupported_version` (with
///    `Sec-WebSocket-Version: 13`); a `Sec-WebSocket-Key` that is not 16 bytes in
///    base64, 400 `bad_upgrade`.
///
/// `headers` are the request's headers as (name, raw value) pairs; `secure` says
/// whether the connection itself is TLS. The site's scheme, which a same-host origin
/// must have, is the hub's [`scheme`](Hub::scheme) if set. Else it is `https` when
/// `secure` or when the request's `X-Forwarded-Proto` (or `Forwarded: proto=`) says
/// `https` (a page cannot set those headers on a WebSocket request, so trusting them
/// gives a page nothing); and when nothing says `https`, a page of either scheme on the
/// same host and port is allowed, since a TLS proxy may not pass the scheme on. Set
/// [`HubBuilder::scheme`](crate::HubBuilder::scheme) to `Https` behind such a proxy
/// to refuse `http` pages.
///
/// WebSocket over HTTP/2 (extended `CONNECT`, RFC 8441) is not served: its method is
/// answered 405.
///
/// Last, a request that passed is counted against the connection limits: beyond
/// `Limits::max_connections`, 503 `server_full`; beyond
/// `Limits::max_connections_per_address` for the client's address (`peer`, or the
/// header named by [`HubBuilder::client_address_header`](crate::HubBuilder::client_address_header)),
/// 429 `too_many_connections`; both with `Retry-After: 5`. The [`Admission`] it
/// returns must be kept for as long as the connection is served.
pub fn check_upgrade<'a>(
    hub: &Hub,
    method: &str,
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    secure: bool,
    peer: Option<IpAddr>,
) -> Result<Admission, ApiResponse> {
    let mut origins = 0;
    let mut origin = None;
    let mut host = None;
    let mut forwarded = None;
    let mut x_forwarded = None;
    let (mut upgrade, mut connection) = (false, false);
    let (mut version, mut key) = (None, None);
    let address_header = hub.client_address_header();
    let mut proxied_address = None;
    for (name, value) in headers {
        let is = |n: &str| name.eq_ignore_ascii_case(n);
        if address_header.is_some_and(is) {
            proxied_address = last_address(value);
        }
        if is("origin") {
            origins += 1;
            origin = Some(value);
        } else if is("host") {
            host = Some(value);
        } else if is("upgrade") {
            // Exactly `websocket`, as browsers send it (and as axum requires).
            upgrade |= value.trim_ascii().eq_ignore_ascii_case(b"websocket");
        } else if is("connection") {
            connection |= has_token(value, "upgrade");
        } else if is("sec-websocket-version") {
            version = Some(value);
        } else if is("sec-websocket-key") {
            key = Some(value);
        } else if is("x-forwarded-proto") {
            x_forwarded = x_forwarded.or(Some(value));
        } else if is("forwarded") {
            forwarded = forwarded.or(Some(value));
        }
    }
    let allowed = |scheme| hub.origins().allows(origin, host, scheme);
    let allowed = match hub.scheme() {
        Some(configured) => allowed(configured),
        None => {
            let proxied = forwarded
                .and_then(forwarded_proto)
                .or_else(|| x_forwarded.and_then(first_value).and_then(Scheme::parse));
            match (secure, proxied) {
                (true, _) | (false, Some(Scheme::Https)) => allowed(Scheme::Https),
                // Nothing says TLS, but a TLS proxy may not say so: an `https` page of
                // this host is no downgrade, so it may connect too. An `http` page is
                // refused only where the site is known to be `https`.
                _ => allowed(Scheme::Http) || allowed(Scheme::Https),
            }
        }
    };
    if origins > 1 || !allowed {
        tracing::debug!(origin = ?origin.map(String::from_utf8_lossy), "refused a cross-origin WebSocket");
        return Err(ApiResponse::origin_rejected());
    }
    check_method(method)?;
    if !(upgrade && connection) {
        return Err(ApiResponse::error(
            426,
            "upgrade_required",
            "this endpoint speaks WebSocket only: send a WebSocket upgrade request",
        )
        .with_header("upgrade", "websocket"));
    }
    if version.map(<[u8]>::trim_ascii) != Some(b"13".as_slice()) {
        return Err(ApiResponse::error(
            426,
            "unsupported_version",
            "the WebSocket version must be 13",
        )
        .with_header("sec-websocket-version", "13"));
    }
    if !key.is_some_and(valid_key) {
        return Err(ApiResponse::bad_upgrade(
            "Sec-WebSocket-Key must be 16 bytes in base64",
        ));
    }
    admit(hub, proxied_address.or(peer))
}

/// The last address of a comma-separated header value (`X-Forwarded-For`: the one the
/// nearest proxy saw; `X-Real-IP`: the only one), if it is one.
fn last_address(value: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(value).ok()?;
    let last = text.rsplit(',').next()?.trim();
    last.parse::<IpAddr>()
        .ok()
        .or_else(|| last.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
}

/// Whether a comma-separated header value holds `token`, in any case.
fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// The first comma-separated element of a header value, as text.
fn first_value(value: &[u8]) -> Option<&str> {
    let first = value.split(|b| *b == b',').next()?;
    std::str::from_utf8(first.trim_ascii()).ok()
}

/// `proto=` of the first element of a `Forwarded` header (RFC 7239), if any.
fn forwarded_proto(value: &[u8]) -> Option<Scheme> {
    first_value(value)?
        .split(';')
        .filter_map(|pair| pair.split_once('='))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("proto"))
        .and_then(|(_, v)| Scheme::parse(v.trim().trim_matches('"')))
}

/// A `Sec-WebSocket-Key`: 16 bytes in base64 (22 characters and `==`).
fn valid_key(key: &[u8]) -> bool {
    let key = key.trim_ascii();
    key.len() == 24
        && key.ends_with(b"==")
        && key.get(..22).is_some_and(|k| {
            k.iter()
                .all(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        })
}

/// Decodes one path segment as received (percent-encoded); `None` if an escape is
/// malformed or the result is not UTF-8.
pub fn decode_segment(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            if !hex.iter().all(u8::is_ascii_hexdigit) {
                return None;
            }
            out.push(u8::from_str_radix(std::str::from_utf8(hex).ok()?, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The `n`th segment of `path` from its end (0: the last), decoded.
fn segment_from_end(path: &str, n: usize) -> Result<String, ApiResponse> {
    path.rsplit('/')
        .nth(n)
        .and_then(decode_segment)
        .ok_or_else(ApiResponse::bad_path)
}

/// How many rooms `GET /rooms` answers when the request does not say.
pub const ROOMS_PAGE: usize = 100;
/// The most rooms one `GET /rooms` answers, whatever `limit` asks.
pub const ROOMS_PAGE_MAX: usize = 1000;

/// `GET /rooms`: the first [`ROOMS_PAGE`] rooms with members, largest first.
pub async fn rooms(hub: &Hub) -> ApiResponse {
    rooms_page(hub, None).await
}

/// `GET /rooms?limit=N&cursor=C`: a page of the rooms with members, largest first
/// (then by name), as a JSON array. `limit` is 1 to [`ROOMS_PAGE_MAX`] (default
/// [`ROOMS_PAGE`]); `cursor` is where the previous page ended. When more rooms follow,
/// the answer has a `Link: <?limit=N&cursor=C>; rel="next"` header (RFC 8288). A
/// `query` that cannot be read is a 400 `bad_query`. `query` is the request's query
/// string as received (percent-encoded), without the `?`.
pub async fn rooms_page(hub: &Hub, query: Option<&str>) -> ApiResponse {
    if hub.pacer().wait_turn(hub.limits()).await.is_err() {
        return busy();
    }
    let bad = |message: &str| ApiResponse::error(400, "bad_query", message);
    let mut limit = ROOMS_PAGE;
    let mut after = None;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let Some(value) = decode_segment(&value.replace('+', " ")) else {
            return bad("the query is not valid percent-encoded UTF-8");
        };
        match key {
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=ROOMS_PAGE_MAX).contains(&n) => limit = n,
                _ => return bad("limit must be a number from 1 to 1000"),
            },
            "cursor" => match value.parse::<RoomCursor>() {
                Ok(cursor) => after = Some(cursor),
                Err(_) => return bad("cursor must be one that a previous page gave"),
            },
            _ => {}
        }
    }
    let page = match hub.rooms_page(after, limit).await {
        Ok(page) => page,
        Err(Unavailable) => return unavailable(),
    };
    let answer = ApiResponse::json(200, &page.rooms);
    match page.next {
        Some(next) => {
            let cursor = encode_query_value(&next.to_string());
            answer.with_header(
                "link",
                format!("<?limit={limit}&cursor={cursor}>; rel=\"next\""),
            )
        }
        None => answer,
    }
}

/// Percent-encodes everything but unreserved characters (RFC 3986).
fn encode_query_value(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// [`room`] for a request's path as received (percent-encoded): the room is its last
/// segment; a segment that is not valid percent-encoded UTF-8 is a 400 `bad_path`.
pub async fn room_at_path(hub: &Hub, path: &str) -> ApiResponse {
    if hub.pacer().wait_turn(hub.limits()).await.is_err() {
        return busy();
    }
    match segment_from_end(path, 0) {
        Ok(name) => room_now(hub, &name).await,
        Err(bad) => bad,
    }
}

/// `GET /rooms/{room}`: the room's display name and members, 404 if it has none.
/// `room` is the decoded room name.
pub async fn room(hub: &Hub, room: &str) -> ApiResponse {
    if hub.pacer().wait_turn(hub.limits()).await.is_err() {
        return busy();
    }
    room_now(hub, room).await
}

/// [`room`] once its turn came.
async fn room_now(hub: &Hub, room: &str) -> ApiResponse {
    match hub.room_json(room).await {
        Ok(Some(body)) => ApiResponse {
            status: 200,
            headers: Vec::new(),
            body,
        },
        Ok(None) => ApiResponse::error(404, "no_such_room", "no such room"),
        Err(Unavailable) => unavailable(),
    }
}

/// [`name_check`] for a request's path as received (percent-encoded): the room and the
/// name are its third-last and last segments; a segment that is not valid
/// percent-encoded UTF-8 is a 400 `bad_path`.
pub async fn name_check_at_path(hub: &Hub, path: &str) -> ApiResponse {
    if hub.pacer().wait_turn(hub.limits()).await.is_err() {
        return busy();
    }
    match (segment_from_end(path, 2), segment_from_end(path, 0)) {
        (Ok(room), Ok(name)) => name_check_now(hub, &room, &name).await,
        (Err(bad), _) | (_, Err(bad)) => bad,
    }
}

/// `GET /rooms/{room}/names/{name}`: whether the name could join now. An invalid room
/// name is a 400 with `invalid_room`. `room` and `name` are decoded.
pub async fn name_check(hub: &Hub, room: &str, name: &str) -> ApiResponse {
    if hub.pacer().wait_turn(hub.limits()).await.is_err() {
        return busy();
    }
    name_check_now(hub, room, name).await
}

/// [`name_check`] once its turn came.
async fn name_check_now(hub: &Hub, room: &str, name: &str) -> ApiResponse {
    #[derive(Serialize)]
    struct Availability {
        available: bool,
        reason: Option<ErrorCode>,
    }
    let answer = |reason: Option<ErrorCode>| Availability {
        available: reason.is_none(),
        reason,
    };
    match hub.check_name(room, name).await {
        NameCheck::Available => ApiResponse::json(200, &answer(None)),
        NameCheck::Taken { .. } => ApiResponse::json(200, &answer(Some(ErrorCode::NameTaken))),
        NameCheck::InvalidName(_) => ApiResponse::json(200, &answer(Some(ErrorCode::InvalidName))),
        NameCheck::Busy => {
            ApiResponse::error(503, "room_busy", "the room is busy; ask again in a moment")
                .with_header("retry-after", "1")
        }
        NameCheck::Unavailable => unavailable(),
        NameCheck::InvalidRoom(e) => ApiResponse::error(
            400,
            ErrorCode::InvalidRoom.as_str(),
            &format!("that room name is not valid: {e}"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestClient;

    #[tokio::test]
    async fn responses_have_the_documented_shapes() {
        let hub = Hub::new();
        let mut a = TestClient::connect(&hub);
        a.join("General", "Alice").await.expect("joins");
        assert_eq!(
            rooms(&hub).await,
            ApiResponse {
                status: 200,
                headers: vec![],
                body: r#"[{"room":"General","members":1}]"#.into()
            }
        );
        assert_eq!(
            room_at_path(&hub, "/rooms/general").await.body,
            r#"{"room":"General","members":["Alice"]}"#
        );
        assert_eq!(room_at_path(&hub, "/chat/rooms/nope").await.status, 404);
        assert_eq!(
            name_check_at_path(&hub, "/rooms/general/names/ALICE")
                .await
                .body,
            r#"{"available":false,"reason":"name_taken"}"#
        );
        assert_eq!(
            name_check_at_path(&hub, "/rooms/general/names/a%09b")
                .await
                .body,
            r#"{"available":false,"reason":"invalid_name"}"#
        );
        assert_eq!(
            name_check_at_path(&hub, "/rooms/general/names/Bob")
                .await
                .body,
            r#"{"available":true,"reason":null}"#
        );
        assert_eq!(
            name_check_at_path(&hub, "/rooms//names/Bob").await.status,
            400
        );
    }

    #[tokio::test]
    async fn paths_are_decoded_strictly() {
        assert_eq!(decode_segment("Side%20room").as_deref(), Some("Side room"));
        assert_eq!(decode_segment("a+b%2Fc").as_deref(), Some("a+b/c"));
        assert_eq!(decode_segment("%C3%A9").as_deref(), Some("é"));
        for bad in ["%FF", "%", "%4", "%zz", "%C3", "%+F", "%-1"] {
            assert_eq!(decode_segment(bad), None, "{bad}");
        }
        let hub = Hub::new();
        let bad = room_at_path(&hub, "/rooms/%FF").await;
        assert_eq!((bad.status, bad.body.contains("bad_path")), (400, true));
        assert_eq!(
            name_check_at_path(&hub, "/rooms/r/names/%FF").await.status,
            400
        );
        assert_eq!(
            name_check_at_path(&hub, "/rooms/%FF/names/x").await.status,
            400
        );
    }

    const KEY: &[u8] = b"dGhlIHNhbXBsZSBub25jZQ==";

    fn upgrade(hub: &Hub, headers: &[(&str, &[u8])], secure: bool) -> Result<(), u16> {
        let mut all: Vec<(&str, &[u8])> = vec![
            ("host", b"chat.example.com"),
            ("upgrade", b"websocket"),
            ("connection", b"keep-alive, Upgrade"),
            ("sec-websocket-version", b"13"),
            ("sec-websocket-key", KEY),
        ];
        for (name, value) in headers {
            all.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
            if !value.is_empty() {
                all.push((name, value));
            }
        }
        check_upgrade(hub, "GET", all, secure, None)
            .map(drop)
            .map_err(|r| r.status)
    }

    #[test]
    fn upgrades_are_judged_origin_first() {
        let hub = Hub::new();
        assert_eq!(upgrade(&hub, &[], false), Ok(()));
        assert_eq!(
            upgrade(&hub, &[("origin", b"http://chat.example.com")], false),
            Ok(())
        );
        // The origin comes before anything else is looked at.
        assert_eq!(
            upgrade(
                &hub,
                &[("origin", b"http://evil.example"), ("upgrade", b"")],
                false
            ),
            Err(403)
        );
        assert_eq!(upgrade(&hub, &[("upgrade", b"")], false), Err(426));
        assert_eq!(upgrade(&hub, &[("connection", b"close")], false), Err(426));
        assert_eq!(
            upgrade(&hub, &[("upgrade", b"websocket, h2c")], false),
            Err(426)
        );
        assert_eq!(upgrade(&hub, &[("upgrade", b" WebSocket ")], false), Ok(()));
        assert_eq!(
            upgrade(&hub, &[("sec-websocket-version", b"8")], false),
            Err(426)
        );
        assert_eq!(
            upgrade(&hub, &[("sec-websocket-key", b"short")], false),
            Err(400)
        );
        assert_eq!(
            upgrade(&hub, &[("sec-websocket-key", b"")], false),
            Err(400)
        );
        let post = check_upgrade(
            &hub,
            "POST",
            [("upgrade", b"websocket".as_slice())],
            false,
            None,
        );
        assert_eq!(post.map(drop).map_err(|r| r.status), Err(405));
    }

    #[test]
    fn connections_are_counted_against_the_limits_while_admitted() {
        let hub = Hub::builder()
            .limits(crate::Limits {
                max_connections: 3,
                max_connections_per_address: Some(2),
                ..crate::Limits::default()
            })
            .client_address_header("X-Real-IP")
            .build();
        let peer: Option<IpAddr> = "10.0.0.1".parse().ok();
        let from = |hub: &Hub, real: Option<&'static [u8]>| {
            let mut headers: Vec<(&str, &[u8])> = vec![
                ("upgrade", b"websocket"),
                ("connection", b"upgrade"),
                ("sec-websocket-version", b"13"),
                ("sec-websocket-key", KEY),
            ];
            headers.extend(real.map(|r| ("x-real-ip", r)));
            check_upgrade(hub, "GET", headers, false, peer)
        };
        let a1 = from(&hub, Some(b"192.0.2.1")).expect("first from a");
        let a2 = from(&hub, Some(b"192.0.2.1")).expect("second from a");
        let refused = from(&hub, Some(b"192.0.2.1"))
            .map(drop)
            .map_err(|r| r.status);
        assert_eq!(refused, Err(429), "a third from the same address");
        // X-Forwarded-For style: the last address counts.
        let b = from(&hub, Some(b"203.0.113.9, 192.0.2.7")).expect("another address");
        let full = from(&hub, Some(b"192.0.2.8"))
            .map(drop)
            .map_err(|r| r.status);
        assert_eq!(full, Err(503), "three open in total");
        drop((a1, b));
        let again = from(&hub, Some(b"192.0.2.1")).expect("counts are given back");
        // Without the header (or with garbage in it), the peer's address counts.
        let p1 = {
            drop(a2);
            from(&hub, Some(b"not an address")).expect("the peer")
        };
        drop((again, p1));
        assert_eq!(hub.admitted().total.load(Ordering::Relaxed), 0);
        assert!(hub.admitted().per_address().is_empty());

        // IPv6 counts by /64; refusals leave nothing behind.
        let v6 = |a: &'static [u8]| from(&hub, Some(a));
        let x = v6(b"2001:db8:1:2::1").expect("first in the /64");
        let y = v6(b"2001:db8:1:2:ffff::9").expect("second in the /64");
        let third = v6(b"2001:db8:1:2:abcd::1").map(drop).map_err(|r| r.status);
        assert_eq!(third, Err(429));
        let z = v6(b"2001:db8:1:3::1").expect("another /64");
        drop((x, y, z));
        assert!(hub.admitted().per_address().is_empty());
        let none = Hub::builder()
            .limits(crate::Limits {
                max_connections_per_address: Some(0),
                ..crate::Limits::default()
            })
            .build();
        for _ in 0..3 {
            assert!(from(&none, None).is_err());
        }
        assert!(
            none.admitted().per_address().is_empty(),
            "no entry per refusal"
        );
    }

    #[test]
    fn the_sites_scheme_comes_from_the_hub_the_connection_or_the_proxy() {
        let hub = Hub::new();
        let https = ("origin", b"https://chat.example.com".as_slice());
        let http = ("origin", b"http://chat.example.com".as_slice());
        // Nothing says TLS: a TLS proxy may not say so, and an https page is no
        // downgrade.
        assert_eq!(upgrade(&hub, &[https], false), Ok(()));
        assert_eq!(upgrade(&hub, &[http], false), Ok(()));
        assert_eq!(upgrade(&hub, &[https], true), Ok(()));
        assert_eq!(upgrade(&hub, &[http], true), Err(403));
        assert_eq!(
            upgrade(&hub, &[https, ("x-forwarded-proto", b"https")], false),
            Ok(())
        );
        assert_eq!(
            upgrade(&hub, &[http, ("x-forwarded-proto", b"https")], false),
            Err(403)
        );
        assert_eq!(
            upgrade(
                &hub,
                &[
                    https,
                    ("forwarded", b"for=1.2.3.4;Proto=\"https\", proto=http")
                ],
                false
            ),
            Ok(())
        );
        let tls = Hub::builder().scheme(Scheme::Https).build();
        assert_eq!(upgrade(&tls, &[https], false), Ok(()));
        assert_eq!(
            upgrade(&tls, &[http, ("x-forwarded-proto", b"http")], false),
            Err(403)
        );
        let plain = Hub::builder().scheme(Scheme::Http).build();
        assert_eq!(upgrade(&plain, &[https], false), Err(403));
        assert_eq!(
            upgrade(&plain, &[https, ("x-forwarded-proto", b"https")], true),
            Err(403)
        );
        // Two Origin headers are refused.
        let twice: Vec<(&str, &[u8])> = vec![
            ("host", b"chat.example.com"),
            ("origin", b"http://chat.example.com"),
            ("origin", b"http://evil.example"),
        ];
        assert_eq!(
            check_upgrade(&hub, "GET", twice, false, None)
                .map(drop)
                .map_err(|r| r.status),
            Err(403)
        );
    }

    /// Requests beyond the API's budget wait for their turn (a client looping on the
    /// API slows down to the budget); one whose turn is further off than the longest
    /// wait is answered 503 `busy`; a quiet spell gives the burst back.
    #[tokio::test(start_paused = true)]
    async fn the_api_paces_requests_beyond_its_budget() {
        use std::time::Duration;
        use tokio::time::Instant;
        let hub = Hub::builder()
            .limits(crate::Limits {
                api_requests_per_sec: 10,
                api_burst: 3,
                api_max_wait: Duration::from_millis(500),
                ..crate::Limits::default()
            })
            .build();
        let mut a = TestClient::connect(&hub);
        a.join("General", "Alice").await.expect("joins");
        let start = Instant::now();
        for _ in 0..3 {
            assert_eq!(room_at_path(&hub, "/rooms/general").await.status, 200);
        }
        assert_eq!(
            start.elapsed(),
            Duration::ZERO,
            "the burst is answered at once"
        );
        for _ in 0..5 {
            assert_eq!(name_check(&hub, "General", "Bob").await.status, 200);
        }
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(500),
            "then one request every 100 ms"
        );
        let crowd = futures_util::future::join_all((0..8).map(|_| rooms(&hub))).await;
        let served = crowd.iter().filter(|r| r.status == 200).count();
        assert_eq!(served, 5, "turns up to 500 ms away are waited for");
        let refused: Vec<_> = crowd.iter().filter(|r| r.status == 503).collect();
        assert_eq!(refused.len(), 3);
        assert!(
            refused[0].body.contains(r#""error":"busy""#),
            "{:?}",
            refused[0]
        );
        assert_eq!(refused[0].headers, vec![("retry-after", "1".to_owned())]);
        assert_eq!(start.elapsed(), Duration::from_millis(1000));
        tokio::time::sleep(Duration::from_secs(1)).await;
        let quiet = Instant::now();
        for _ in 0..3 {
            assert_eq!(rooms_page(&hub, Some("limit=1")).await.status, 200);
        }
        assert_eq!(quiet.elapsed(), Duration::ZERO, "the burst is back");
    }
}
