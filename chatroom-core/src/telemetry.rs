//! Metrics through the [`metrics`] facade: the hub records, the host installs a
//! recorder (an exporter) of its choice. Every name, label and meaning is listed in
//! `docs/operations.md`. No label carries a room or a name: per-room figures come from
//! the hub's snapshot API instead.
//!
//! The handles of the hot paths (events, deliveries, latency) are registered once, when
//! the hub is built: install the recorder before building the hub.

use std::sync::Arc;
use std::time::Duration;

use metrics::{
    Counter, Gauge, Histogram, counter, describe_counter, describe_gauge, describe_histogram,
    gauge, histogram,
};

use crate::protocol::Event;

/// The hub's metric handles.
pub(crate) struct Metrics {
    pub(crate) connections_open: Gauge,
    pub(crate) connections_opened: Counter,
    events: [Counter; 4],
    pub(crate) deliveries: Counter,
    pub(crate) delivery_seconds: Histogram,
    pub(crate) queue_depth: Histogram,
    pub(crate) welcome_bytes: Histogram,
    pub(crate) members_present: Gauge,
    pub(crate) members_away: Gauge,
    pub(crate) rooms: Gauge,
    pub(crate) slow_consumers: Counter,
    pub(crate) takeovers: Counter,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Registers (and describes) every metric with the recorder installed now.
    pub(crate) fn new() -> Metrics {
        describe();
        Metrics {
            connections_open: gauge!("chatroom_connections_open"),
            connections_opened: counter!("chatroom_connections_opened_total"),
            events: [
                counter!("chatroom_events_total", "type" => "joined"),
                counter!("chatroom_events_total", "type" => "message"),
                counter!("chatroom_events_total", "type" => "renamed"),
                counter!("chatroom_events_total", "type" => "left"),
            ],
            deliveries: counter!("chatroom_deliveries_total"),
            delivery_seconds: histogram!("chatroom_delivery_seconds"),
            queue_depth: histogram!("chatroom_outgoing_queue_depth"),
            welcome_bytes: histogram!("chatroom_welcome_bytes"),
            members_present: gauge!("chatroom_members", "state" => "present"),
            members_away: gauge!("chatroom_members", "state" => "away"),
            rooms: gauge!("chatroom_rooms"),
            slow_consumers: counter!("chatroom_slow_consumers_total"),
            takeovers: counter!("chatroom_takeovers_total"),
        }
    }

    /// Counts an event of the room's timeline.
    pub(crate) fn event(&self, event: &Event) {
        let i = match event {
            Event::Joined(_) => 0,
            Event::Message(_) => 1,
            Event::Renamed(_) => 2,
            Event::Left(_) => 3,
        };
        self.events[i].increment(1);
    }

    /// Counts a connection's end: by close code, `peer` when the client closed first,
    /// `dropped` when it ended without a closing handshake.
    fn closed(&self, code: CloseLabel) {
        self.connections_open.decrement(1.0);
        let code = match code {
            CloseLabel::Code(code) => code.to_string(),
            CloseLabel::Peer => "peer".to_owned(),
            CloseLabel::Dropped => "dropped".to_owned(),
        };
        counter!("chatroom_connections_closed_total", "code" => code).increment(1);
    }

    /// Counts a `join` frame's outcome: `welcome` or the error code it was refused with.
    pub(crate) fn join(&self, resume: bool, outcome: &'static str) {
        let kind = if resume { "resume" } else { "fresh" };
        counter!("chatroom_joins_total", "kind" => kind, "outcome" => outcome).increment(1);
    }

    /// Counts a frame refused with an `error` frame, by its code.
    pub(crate) fn refused(&self, code: &'static str) {
        counter!("chatroom_frames_refused_total", "code" => code).increment(1);
    }

    /// Records the time from a client's frame to its event being queued for every
    /// member.
    pub(crate) fn delivered_after(&self, elapsed: Duration) {
        self.delivery_seconds.record(elapsed.as_secs_f64());
    }
}

/// One open connection in the metrics: counted open when made, closed once, by
/// [`Open::close`] or, if its future is dropped before it finished (an embedder's
/// timeout, an aborted task, a runtime stopping), as `dropped`.
pub(crate) struct Open {
    metrics: Arc<Metrics>,
    closed: bool,
}

impl Open {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Open {
        metrics.connections_opened.increment(1);
        metrics.connections_open.increment(1.0);
        Open {
            metrics,
            closed: false,
        }
    }

    pub(crate) fn close(&mut self, label: CloseLabel) {
        if !std::mem::replace(&mut self.closed, true) {
            self.metrics.closed(label);
        }
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        self.close(CloseLabel::Dropped);
    }
}

/// How a connection ended, as a label.
pub(crate) enum CloseLabel {
    /// With this close code.
    Code(u16),
    /// The client closed first.
    Peer,
    /// Without a closing handshake.
    Dropped,
}

fn describe() {
    describe_gauge!(
        "chatroom_connections_open",
        "WebSocket connections open now."
    );
    describe_counter!(
        "chatroom_connections_opened_total",
        "WebSocket connections served since start."
    );
    describe_counter!(
        "chatroom_connections_closed_total",
        "Connections ended, by close code (`peer`: the client closed first; `dropped`: no closing handshake)."
    );
    describe_counter!(
        "chatroom_joins_total",
        "`join` frames by kind (fresh, resume) and outcome (welcome, or the error code)."
    );
    describe_gauge!(
        "chatroom_members",
        "Members of this node's rooms, present or away."
    );
    describe_gauge!("chatroom_rooms", "Rooms with members on this node.");
    describe_counter!("chatroom_events_total", "Room events, by type.");
    describe_counter!(
        "chatroom_deliveries_total",
        "Event frames queued for members (one per member per event)."
    );
    describe_counter!(
        "chatroom_frames_refused_total",
        "Client frames answered with an `error` frame, by code."
    );
    describe_counter!(
        "chatroom_slow_consumers_total",
        "Connections closed because their outgoing queue was full."
    );
    describe_counter!(
        "chatroom_takeovers_total",
        "Connections closed with 4001 because a resume took their membership."
    );
    describe_histogram!(
        "chatroom_outgoing_queue_depth",
        "Frames waiting in a connection's outgoing queue, sampled when it writes."
    );
    describe_histogram!(
        "chatroom_delivery_seconds",
        metrics::Unit::Seconds,
        "From a client's `send` to its event being queued for every member of the room."
    );
    describe_histogram!(
        "chatroom_welcome_bytes",
        metrics::Unit::Bytes,
        "Size of each `welcome` frame."
    );
}
