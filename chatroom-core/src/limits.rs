//! Every limit and duration of the protocol, in one struct with documented defaults.

use std::time::Duration;

/// The limits and durations a [`Hub`](crate::Hub) enforces.
///
/// Every field is public and has the default that PROTOCOL.md names; build one with
/// struct-update syntax: `Limits { resume_grace: Duration::from_secs(60), ..Limits::default() }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// How long a new connection may stay without sending a `join` (default 10 s).
    /// The wait starts again after each join attempt and after a `leave`. Closes with 1008.
    pub join_timeout: Duration,
    /// The longest a connection may stay out of a room, however many join attempts it
    /// makes meanwhile (default 60 s), counted from its opening or its last `leave`.
    /// Closes with 1008 `join timeout`.
    pub max_unjoined: Duration,
    /// How long an away member keeps its name and place before it is `left` (default 15 s).
    pub resume_grace: Duration,
    /// How many of the most recent events a room retains for `welcome.history` (default 100).
    pub history: usize,
    /// Longest display name, in Unicode scalar values (default 32).
    pub max_name_chars: usize,
    /// Longest room name, in Unicode scalar values (default 64).
    pub max_room_chars: usize,
    /// Longest message text, in Unicode scalar values after NFC (default 4000).
    pub max_message_chars: usize,
    /// Most members, present or away, in one room (default 10,000). More gives `room_full`.
    pub max_members: usize,
    /// Largest client frame in bytes (default 16 KiB). Larger closes with 1009.
    pub max_frame_bytes: usize,
    /// Token bucket size for client frames (default 20).
    pub rate_burst: u32,
    /// Tokens refilled per second (default 10).
    pub rate_per_sec: u32,
    /// Rejected frames within [`flood_window`](Self::flood_window) that close the connection
    /// with 1008 (default 50).
    pub flood_rejections: u32,
    /// The window over which rejected frames are counted (default 10 s).
    pub flood_window: Duration,
    /// Frames a member may have queued before it is a slow consumer (default 4096). Queued
    /// frames are shared with every other member, so a deep queue costs a pointer per frame.
    pub outgoing_queue: usize,
    /// Interval between keepalive pings (default 20 s); `None` disables them.
    pub ping_interval: Option<Duration>,
    /// How long a peer may stay silent after a ping before it is dropped (default 20 s).
    /// It also bounds every write to the peer: a write that cannot complete within it
    /// (a peer that stopped reading) drops the connection, and so does one still blocked
    /// when the keepalive would have dropped a silent peer.
    pub ping_timeout: Duration,
    /// Commands a room's task may have queued (default 1024). Beyond it the room is
    /// saturated: commands for it are answered `rate_limited` ("the room is busy").
    pub room_queue: usize,
    /// Open chat connections, in total (default 250,000). Beyond it an upgrade is
    /// refused with `503 {"error": "server_full"}` before any WebSocket work.
    pub max_connections: usize,
    /// Open chat connections per client address, an IPv6 address counting by its /64
    /// network (default `None`: no limit). Beyond
    /// it an upgrade is refused with `429 {"error": "too_many_connections"}`. Off by
    /// default because behind a reverse proxy every client has the proxy's address:
    /// when it is on, let the hub read the client's address from the proxy's header
    /// ([`HubBuilder::client_address_header`](crate::HubBuilder::client_address_header)).
    /// It applies where the address is known: axum knows the peer's only when served
    /// with `into_make_service_with_connect_info::<SocketAddr>()`.
    pub max_connections_per_address: Option<usize>,
    /// Rooms in total (default 100,000). A fresh join that would open one more is
    /// answered `too_many_rooms`.
    pub max_rooms: usize,
    /// Fresh joins a room takes per second, refilled continuously (default 1000); each
    /// costs the room a welcome and a `joined` to every member. The excess is answered
    /// `rate_limited`. Resumes are not counted.
    pub room_joins_per_sec: u32,
    /// Fresh joins a room takes at once before the rate applies (default 10,000: a
    /// room can fill up to `max_members` as fast as clients come).
    pub room_join_burst: u32,
    /// What a room may spend per second on members coming and going, counted in
    /// deliveries (default 20,000). A member that leaves (or is left after its grace,
    /// or kicked) costs two deliveries per member (its `left` and the `joined` before
    /// it); a join that stays costs nothing, so filling a room is never refused for it.
    /// Members leaving faster than this put the room in debt, and it answers fresh
    /// joins `rate_limited` until the debt is repaid: clients looping join/leave on a
    /// room of 500 get about 20 cycles a second, on a room of 10 about 1,000 (measured:
    /// 800 cycles a second on a 500-member room raised its delivery p99 9x). Resumes
    /// are not counted.
    pub room_presence_per_sec: u32,
    /// The presence deliveries a room may spend at once before that rate applies
    /// (default 100,000); the room's debt is at most as much.
    pub room_presence_burst: u32,
    /// Requests to the JSON API (`GET /rooms`, `GET /rooms/{room}`, the name check)
    /// the hub answers per second, across all clients (default 2,000). A request
    /// beyond the budget is not refused: it waits for its turn, so that clients that
    /// loop on the API slow down to the budget instead of taking the server's CPU from
    /// the chat (measured: 200 clients looping `GET /rooms/{room}` unpaced raised a
    /// busy room's delivery p99 3x on axum and 8x on actix). The lobby page asks once
    /// every 3 s: the default serves 6,000 open lobbies without a wait.
    pub api_requests_per_sec: u32,
    /// API requests answered at once before the rate applies (default 500).
    pub api_burst: u32,
    /// The longest an API request waits for its turn (default 2 s). A request whose
    /// turn is further off is answered `503 {"error": "busy"}` with `Retry-After: 1`.
    pub api_max_wait: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            join_timeout: Duration::from_secs(10),
            max_unjoined: Duration::from_secs(60),
            resume_grace: Duration::from_secs(15),
            history: 100,
            max_name_chars: crate::name::DEFAULT_MAX_NAME_CHARS,
            max_room_chars: crate::name::DEFAULT_MAX_ROOM_CHARS,
            max_message_chars: 4000,
            max_members: 10_000,
            max_frame_bytes: 16 * 1024,
            rate_burst: 20,
            rate_per_sec: 10,
            flood_rejections: 50,
            flood_window: Duration::from_secs(10),
            outgoing_queue: 4096,
            ping_interval: Some(Duration::from_secs(20)),
            ping_timeout: Duration::from_secs(20),
            room_queue: 1024,
            max_connections: 250_000,
            max_connections_per_address: None,
            max_rooms: 100_000,
            room_joins_per_sec: 1000,
            room_join_burst: 10_000,
            room_presence_per_sec: 20_000,
            room_presence_burst: 100_000,
            api_requests_per_sec: 2000,
            api_burst: 500,
            api_max_wait: Duration::from_secs(2),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_the_protocols() {
        let l = Limits::default();
        assert_eq!(l.join_timeout, Duration::from_secs(10));
        assert_eq!(l.resume_grace, Duration::from_secs(15));
        assert_eq!(l.history, 100);
        assert_eq!(
            (l.max_name_chars, l.max_room_chars, l.max_message_chars),
            (32, 64, 4000)
        );
        assert_eq!((l.rate_burst, l.rate_per_sec), (20, 10));
        assert_eq!(
            (l.flood_rejections, l.flood_window),
            (50, Duration::from_secs(10))
        );
        assert_eq!(l.max_frame_bytes, 16 * 1024);
    }
}
