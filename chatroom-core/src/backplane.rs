//! The seam between the hub and where rooms live: for implementors of backplanes.
//!
//! An embedder never needs this module: a hub uses the in-process backplane unless
//! [`HubBuilder::backplane`](crate::HubBuilder::backplane) is given another one (the
//! `chatroom-redis` crate's, for a cluster).
//!
//! The [`Hub`](crate::Hub) and the connection driver talk to rooms only through
//! [`Backplane`] (join, the token and name look-ups, and the server-side queries) and,
//! once joined, through the [`MemberChannel`] of the [`Membership`] that `join`
//! returned. Everything is fenced by link: every member command names the connection
//! it comes from, and a command from a link that no longer holds the membership is
//! ignored. Every operation can answer [`Unavailable`] (the store could not be
//! reached in time), which the hub turns into the protocol's `unavailable` error.
//!
//! A backplane is built by the hub from a [`BackplaneContext`] (the limits, the
//! host's observers, the hub's shutdown token and task tracker) through
//! [`IntoBackplane`]. What every backplane needs to build frames is written once in
//! the core: [`Event::encode`](crate::protocol::Event::encode) encodes an event once
//! for all its receivers, [`WelcomeParts`](crate::protocol::WelcomeParts) assembles a
//! welcome around already-encoded history, and [`queue`] is the bounded member queue
//! the connection driver reads.
//!
//! These traits follow the core's version: a backplane is written against the same
//! `chatroom-core` release as the hub that runs it.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use crate::error::Unavailable;
use crate::error::{JoinError, RenameError};
use crate::hooks::{ConnectionContext, HookSet, LeaveReason, MemberLeft, ObservedEvent};
use crate::limits::Limits;
use crate::name::{DisplayName, NameKey, RoomName};
use crate::protocol::{Event, Ref};
pub use crate::queue::{PushError, QueueReceiver, QueueSender, queue};
pub use crate::room::MemberId;
use crate::token::ResumeToken;

/// How a connection wants in: a fresh membership, or its old one back.
#[derive(Debug)]
pub enum Entry {
    /// A fresh join under `name`, with the resume token the member will hold.
    Fresh {
        /// The name, valid and allowed by the host's policy.
        name: DisplayName,
        /// The member's resume token.
        token: ResumeToken,
    },
    /// A resume of the membership that holds `token`.
    Resume {
        /// The token the client presented.
        token: ResumeToken,
        /// The last event id the client has, if it said.
        since: Option<u64>,
        /// The member's name as the host's policy saw it: if the member was renamed
        /// since, the resume is not done and the policy is asked again.
        name: DisplayName,
    },
}

/// Why a join did not happen.
#[derive(Debug)]
pub enum JoinFailure {
    /// Refused, with the error the client gets.
    Refused(JoinError),
    /// A resume found its member under another name than the policy judged: ask again.
    Renamed,
}

impl From<JoinError> for JoinFailure {
    fn from(e: JoinError) -> Self {
        JoinFailure::Refused(e)
    }
}

/// A join, as the backplane receives it (names already valid, policy already asked).
#[derive(Debug)]
pub struct JoinRequest {
    /// The room, as the client spelled it (a fresh join that creates the room gives
    /// it this display name).
    pub room: RoomName,
    /// Fresh or resume.
    pub entry: Entry,
    /// The join frame's `ref`, for the welcome.
    pub reference: Option<Ref>,
    /// The connection's context, for the hooks that observe the room and for
    /// [`Hub::members`](crate::Hub::members).
    pub context: Arc<ConnectionContext>,
}

/// A live membership of one connection.
///
/// `frames` carries everything the member is sent (its welcome first, then events,
/// acks and room errors, in order). When the room ends the membership (takeover, kick,
/// slow consumer, shutdown) it ends `frames`, with the close frame saying why.
pub struct Membership {
    /// The member, as the backplane knows it.
    pub member: MemberId,
    /// This connection's link to the member: what its commands are fenced by.
    pub link: u64,
    /// Where the member's commands go.
    pub room: Arc<dyn MemberChannel>,
    /// What the member is sent.
    pub frames: QueueReceiver,
}

impl std::fmt::Debug for Membership {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Membership")
            .field("member", &self.member)
            .field("link", &self.link)
            .finish_non_exhaustive()
    }
}

/// Why a member's command was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotTaken {
    /// The room's command queue is full: the command had no effect (`rate_limited`).
    Busy,
    /// The room went away: the membership is over (the connection closes with 1011).
    Gone,
    /// The store could not be reached: the command had no effect (`unavailable`);
    /// the membership stays.
    Unavailable,
}

impl From<Unavailable> for NotTaken {
    fn from(_: Unavailable) -> Self {
        NotTaken::Unavailable
    }
}

/// What a joined member can do. Results and errors reach the member through its
/// `frames`, in order with the room's events; only `leave` is awaited. No command waits
/// for room in the room's queue: a connection keeps delivering while its room is
/// saturated, and a command the room has no room for is refused (`NotTaken::Busy`).
///
/// Every command names the connection (`link`) it comes from: a command from a link
/// that no longer holds the membership (taken over by a resume, cut off as a slow
/// consumer, kicked) is ignored, so a stale connection can never act on the newer one.
pub trait MemberChannel: Send + Sync {
    /// Sends a message (already checked and filtered); its event, or an error, is
    /// queued to the member.
    fn send(
        &self,
        member: MemberId,
        link: u64,
        text: Arc<str>,
        reference: Option<Ref>,
    ) -> Result<(), NotTaken>;
    /// Renames the member (`name` is the new name, or why it was refused before the
    /// room saw it: the error is queued in order with the room's events).
    fn rename(
        &self,
        member: MemberId,
        link: u64,
        name: Result<DisplayName, RenameError>,
        reference: Option<Ref>,
    ) -> Result<(), NotTaken>;
    /// Leaves at once; once the room took the command, the future resolves when the
    /// leave took effect and `frames` has everything the member is owed: `true`, or
    /// `false` when `link` no longer held the membership (nothing changed; `frames`
    /// ends with the close frame that says why). `Err(Gone)`: the room went away;
    /// `Err(Unavailable)`: the leave did not happen (the member stays).
    #[allow(clippy::type_complexity)]
    fn leave(
        &self,
        member: MemberId,
        link: u64,
    ) -> Result<BoxFuture<'static, Result<bool, NotTaken>>, NotTaken>;
    /// The connection of `link` ended without `leave`: the member becomes away.
    fn disconnect(&self, member: MemberId, link: u64) -> BoxFuture<'_, ()>;
}

/// A room and how many members (present or away) it has.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomSummary {
    /// The room's display name.
    pub room: String,
    /// Members, present or away.
    pub members: usize,
}

/// Where a page of [`Hub::rooms_page`](crate::Hub::rooms_page) ends: the next page
/// starts after this room. Its text form, `<members>:<room>`, is the `cursor` of
/// `GET /rooms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCursor {
    /// The member count the room was listed with.
    pub members: usize,
    /// The room's display name.
    pub room: String,
}

impl std::fmt::Display for RoomCursor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.members, self.room)
    }
}

impl std::str::FromStr for RoomCursor {
    type Err = BadCursor;

    fn from_str(s: &str) -> Result<Self, BadCursor> {
        let (members, room) = s.split_once(':').ok_or(BadCursor)?;
        Ok(RoomCursor {
            members: members.parse().map_err(|_| BadCursor)?,
            room: room.to_owned(),
        })
    }
}

/// A cursor that is not `<members>:<room>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a room cursor is <members>:<room>")]
pub struct BadCursor;

/// One page of the rooms with members, most members first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomsPage {
    /// The rooms of this page.
    pub rooms: Vec<RoomSummary>,
    /// Where the next page starts, if there are more rooms.
    pub next: Option<RoomCursor>,
}

/// A room and its members' display names in join order.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RoomDetails {
    /// The room's display name.
    pub room: String,
    /// Display names, present or away, in join order.
    pub members: Vec<String>,
}

/// One member of a room as the host sees it, from [`Hub::members`](crate::Hub::members).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct MemberInfo {
    /// Its current display name.
    pub name: String,
    /// Whether it has a live connection now; `false` while it is away (its connection
    /// ended without `leave` and its resume grace runs).
    pub present: bool,
    /// When it joined: its fresh join, which a resume or a rename does not change.
    pub joined_at: std::time::SystemTime,
    /// The context of its latest connection: whatever your middleware put there (your
    /// user id, say: `member.context.get::<UserId>()`) and the peer address.
    pub context: Arc<ConnectionContext>,
}

impl MemberInfo {
    /// A member as a backplane reports it.
    pub fn new(
        name: String,
        present: bool,
        joined_at: std::time::SystemTime,
        context: Arc<ConnectionContext>,
    ) -> MemberInfo {
        MemberInfo {
            name,
            present,
            joined_at,
            context,
        }
    }
}

/// Whether the hub's store of rooms can serve, as
/// [`Hub::store_health`](crate::Hub::store_health) reports it. The in-process
/// backplane is always [`Connected`](StoreHealth::Connected).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StoreHealth {
    /// The store answers: joins and frames work.
    Connected,
    /// The store has not answered lately: frames that need it are answered
    /// `unavailable` and joins are refused, while open connections stay open.
    Degraded,
    /// The store has been unreachable past its outage limit (connections were closed
    /// with 1013), or it refused this node; it may still come back.
    Lost,
}

impl StoreHealth {
    /// Whether new connections should be sent here: only while
    /// [`Connected`](StoreHealth::Connected). A load balancer's readiness probe.
    pub fn is_ready(self) -> bool {
        self == StoreHealth::Connected
    }

    /// `connected`, `degraded` or `lost`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreHealth::Connected => "connected",
            StoreHealth::Degraded => "degraded",
            StoreHealth::Lost => "lost",
        }
    }
}

impl std::fmt::Display for StoreHealth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Chooses members by the context of their connection, for
/// [`Hub::kick_identity`](crate::Hub::kick_identity).
pub type ContextMatch = Box<dyn Fn(&ConnectionContext) -> bool + Send>;

/// Where rooms live. The in-process implementation is the default; see the module
/// docs for what an implementation owes the hub.
pub trait Backplane: Send + Sync + 'static {
    /// Joins (fresh or resume); the welcome is the first frame of the membership.
    fn join(&self, request: JoinRequest) -> BoxFuture<'_, Result<Membership, JoinFailure>>;
    /// The current name of the member holding resume `token` in `room`, if any; busy
    /// when the room is saturated (the question does not wait in line).
    fn token_holder(
        &self,
        room: NameKey,
        token: ResumeToken,
    ) -> BoxFuture<'_, Result<Option<DisplayName>, NotTaken>>;
    /// The rooms after `after` in the directory's order (most members first, then by
    /// display name), at most `limit`, and where the next page starts.
    fn rooms(
        &self,
        after: Option<RoomCursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RoomsPage, Unavailable>>;
    /// A room's display name and members in join order; `None` if it has none.
    fn room(&self, room: NameKey) -> BoxFuture<'_, Result<Option<RoomDetails>, Unavailable>>;
    /// [`Backplane::room`] encoded as JSON, as `GET /rooms/{room}` answers it.
    fn room_json(&self, room: NameKey) -> BoxFuture<'_, Result<Option<String>, Unavailable>> {
        Box::pin(async move {
            let details = self.room(room).await?;
            Ok(details.and_then(|d| serde_json::to_string(&d).ok()))
        })
    }
    /// The display name of the member whose name collides with `name`, if any; busy
    /// when the room is saturated (the question does not wait in line).
    fn holder(
        &self,
        room: NameKey,
        name: NameKey,
    ) -> BoxFuture<'_, Result<Option<String>, NotTaken>>;
    /// Posts a system message; the new event's id, or `None` if the room does not exist.
    fn post(
        &self,
        room: NameKey,
        from: Arc<str>,
        text: Arc<str>,
    ) -> BoxFuture<'_, Result<Option<u64>, Unavailable>>;
    /// Removes a member: its connection closes with 4003. False if there was none.
    fn kick(
        &self,
        room: NameKey,
        name: NameKey,
        reason: String,
    ) -> BoxFuture<'_, Result<bool, Unavailable>>;
    /// Removes every member whose context `matches`, as [`Backplane::kick`]; how many.
    fn kick_matching(
        &self,
        room: NameKey,
        matches: ContextMatch,
        reason: String,
    ) -> BoxFuture<'_, Result<usize, Unavailable>>;
    /// The room's members in join order; `None` if there is no such room.
    fn members(&self, room: NameKey)
    -> BoxFuture<'_, Result<Option<Vec<MemberInfo>>, Unavailable>>;
    /// Whether the store can serve now. The default (for a store that is the process's
    /// own memory) is always [`StoreHealth::Connected`].
    fn health(&self) -> StoreHealth {
        StoreHealth::Connected
    }
    /// Holds the room until the returned sender is used or dropped; `None` if there is
    /// no such room or the backplane cannot hold one. For tests of races. The
    /// in-process backplane holds the room's task; a store's backplane holds the
    /// delivery of the room's events to this node's members.
    #[cfg(any(test, feature = "testing"))]
    fn pause(&self, room: NameKey) -> BoxFuture<'_, Option<tokio::sync::oneshot::Sender<()>>> {
        let _ = room;
        Box::pin(std::future::ready(None))
    }
    /// Completes once this node's members of the room were given every event the room
    /// had when it was called. For tests that act on one client after another's
    /// action: the in-process backplane hands events out as they happen, so it has
    /// nothing to wait for.
    #[cfg(any(test, feature = "testing"))]
    fn settle(&self, room: NameKey) -> BoxFuture<'_, ()> {
        let _ = room;
        Box::pin(std::future::ready(()))
    }
    /// Ends the grace period of every away member of the room now, as if it had run
    /// out: they leave, in join order. For tests of expiry without waiting.
    #[cfg(any(test, feature = "testing"))]
    fn expire_now(&self, room: NameKey) -> BoxFuture<'_, ()> {
        let _ = room;
        Box::pin(std::future::ready(()))
    }
    /// Queues `count` system posts to the room without waiting (none if its queue is
    /// full), to test what a backlog does; returns how many were queued.
    #[cfg(test)]
    fn queue_posts(&self, room: NameKey, count: usize) -> usize;
    /// Makes the room's task fail as a bug would, to test what members see.
    #[cfg(test)]
    fn inject_fault(&self, room: NameKey) -> BoxFuture<'_, ()>;
}

/// What a hub gives the backplane it builds: its limits, the host's observers, and
/// the hub's shutdown token and task tracker.
pub struct BackplaneContext {
    pub(crate) limits: Arc<Limits>,
    pub(crate) hooks: Arc<HookSet>,
    pub(crate) cancel: CancellationToken,
    pub(crate) tracker: TaskTracker,
    pub(crate) runtime: Option<tokio::runtime::Handle>,
    pub(crate) metrics: Arc<crate::telemetry::Metrics>,
}

impl BackplaneContext {
    /// The hub's limits.
    pub fn limits(&self) -> &Arc<Limits> {
        &self.limits
    }

    /// The host's observers, for the events this backplane causes.
    pub fn observers(&self) -> Observers {
        Observers(self.hooks.clone())
    }

    /// Cancelled when the hub shuts down: every membership ends with 1001.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.cancel
    }

    /// What [`Hub::shutdown`](crate::Hub::shutdown) waits for: track the backplane's
    /// tasks here.
    pub fn tracker(&self) -> &TaskTracker {
        &self.tracker
    }

    /// The runtime rooms run on, if the hub was given or found one.
    pub fn runtime(&self) -> Option<&tokio::runtime::Handle> {
        self.runtime.as_ref()
    }

    /// Spawns a task on the hub's runtime (or the current one), tracked for shutdown.
    pub fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let task = self.tracker.track_future(task);
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }
}

impl std::fmt::Debug for BackplaneContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BackplaneContext")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

/// The host's observer hooks, as a backplane fires them. A panicking hook is caught
/// and logged.
#[derive(Clone)]
pub struct Observers(Arc<HookSet>);

impl Observers {
    /// Whether the host observes events or members leaving at all.
    pub fn observes(&self) -> bool {
        self.0.observes()
    }

    /// Tells the host's event observer of `event` in `room`, caused by the connection
    /// of `context` (`None` for a host's post).
    pub async fn on_event(
        &self,
        room: &RoomName,
        event: &Event,
        context: Option<&ConnectionContext>,
    ) {
        let observed = ObservedEvent {
            room,
            event,
            context,
        };
        self.0.on_event(observed).await;
    }

    /// Tells the host's member-left observer that `name` left `room`.
    pub async fn on_member_left(
        &self,
        room: &RoomName,
        name: &str,
        context: &ConnectionContext,
        reason: LeaveReason,
    ) {
        let left = MemberLeft {
            room,
            name,
            context,
            reason,
        };
        self.0.on_member_left(left).await;
    }
}

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observers")
            .field("observes", &self.observes())
            .finish()
    }
}

/// A backplane the hub can build: give one to
/// [`HubBuilder::backplane`](crate::HubBuilder::backplane).
pub trait IntoBackplane: Send + 'static {
    /// Builds the backplane for a hub.
    fn into_backplane(self, context: BackplaneContext) -> Box<dyn Backplane>;
}
