//! What a transport carries: the frames between an adapter and the connection driver,
//! close frames and their codes, and how a connection ended. Everything else in the
//! crate builds on these; they build on nothing but the wire frames.

use bytes::Bytes;

use crate::protocol::TextFrame;

/// A frame from the client, as the adapter hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A text frame (the transport guarantees UTF-8).
    Text(Bytes),
    /// A binary frame: answered with `bad_frame`.
    Binary,
    /// A ping or pong: the peer is alive.
    Pong,
    /// The transport refused a frame over its size limit: closes with 1009.
    TooLarge,
}

/// A frame for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outgoing {
    /// A text frame.
    Text(TextFrame),
    /// A keepalive ping.
    Ping,
    /// Close the connection with this code and reason.
    Close(CloseFrame),
}

/// A WebSocket close code and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CloseFrame {
    /// The close code.
    pub code: u16,
    /// The reason, at most 123 bytes.
    pub reason: String,
}

/// Close codes of PROTOCOL.md.
pub mod close_code {
    /// The server is shutting down.
    pub const GOING_AWAY: u16 = 1001;
    /// Join timeout, persistent flooding, or a slow consumer.
    pub const POLICY: u16 = 1008;
    /// A frame over the limit.
    pub const TOO_BIG: u16 = 1009;
    /// An internal fault.
    pub const INTERNAL: u16 = 1011;
    /// The server lost this membership's state (a cluster's store lost its data, or
    /// the node lost its lease): reconnect and resume, or join afresh if that fails.
    /// Only a cluster sends it.
    pub const SERVICE_RESTART: u16 = 1012;
    /// The rooms' store has been unreachable for too long: reconnect later. Only a
    /// cluster sends it.
    pub const TRY_AGAIN_LATER: u16 = 1013;
    /// A newer connection took this membership over.
    pub const RESUMED_ELSEWHERE: u16 = 4001;
    /// `resync`: the server could not deliver an unbroken run of events; reconnect
    /// and resume with `since`. Only a cluster sends it.
    pub const RESYNC: u16 = 4002;
    /// The embedding application removed the member.
    pub const REMOVED: u16 = 4003;
}

impl CloseFrame {
    /// A close frame; the reason is cut to 123 bytes at a character boundary.
    pub fn new(code: u16, reason: &str) -> CloseFrame {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        CloseFrame {
            code,
            reason: reason.get(..end).unwrap_or_default().to_owned(),
        }
    }

    /// 1001: the server is shutting down.
    pub fn going_away() -> CloseFrame {
        CloseFrame::new(close_code::GOING_AWAY, "server shutting down")
    }

    /// 1008: the member's queue overflowed.
    pub fn slow_consumer() -> CloseFrame {
        CloseFrame::new(close_code::POLICY, "slow consumer")
    }

    /// 4001: a newer connection took the membership over.
    pub fn resumed_elsewhere() -> CloseFrame {
        CloseFrame::new(close_code::RESUMED_ELSEWHERE, "resumed elsewhere")
    }

    /// 4003: the host removed the member, with its reason.
    pub fn removed(reason: &str) -> CloseFrame {
        if reason.is_empty() {
            CloseFrame::new(close_code::REMOVED, "removed")
        } else {
            CloseFrame::new(close_code::REMOVED, &format!("removed: {reason}"))
        }
    }
}

/// How a connection served by [`Hub::serve`](crate::Hub::serve) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConnectionEnd {
    /// The server closed it with this close frame.
    Closed(CloseFrame),
    /// The client closed it (its stream of frames ended).
    ClosedByPeer,
    /// It was dropped without a closing handshake: the peer stopped answering pings, a
    /// write blocked while the member was cut off as a slow consumer, or the transport
    /// failed. An adapter should make sure the transport is torn down.
    Dropped,
}
