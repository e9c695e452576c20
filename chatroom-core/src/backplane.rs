//! The seam to a cluster: where rooms live, behind one internal trait.
//!
//! The [`Hub`](crate::Hub) and the connection driver talk to rooms only through
//! [`Backplane`] (find or create a room, join, and the server-side queries) and, once
//! joined, through the [`MemberChannel`] of the [`Membership`] that `join` returned.
//! The in-process implementation ([`crate::local`]) runs one actor task per room
//! around the pure [`Room`](crate::room::Room). A Redis-backed one would be another
//! implementation of these two traits; see docs/architecture.md.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::error::{JoinError, RenameError};
use crate::name::{DisplayName, NameKey, RoomName};
use crate::protocol::Ref;
use crate::queue::QueueReceiver;
use crate::room::MemberId;
use crate::token::ResumeToken;

/// How a connection wants in: a fresh membership, or its old one back.
pub(crate) enum Entry {
    Fresh {
        name: DisplayName,
        token: ResumeToken,
    },
    Resume {
        token: ResumeToken,
        since: Option<u64>,
        /// The member's name as the host's policy saw it: if the member was renamed
        /// since, the resume is not done and the policy is asked again.
        name: DisplayName,
    },
}

/// Why a join did not happen.
#[derive(Debug)]
pub(crate) enum JoinFailure {
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
pub(crate) struct JoinRequest {
    pub(crate) room: RoomName,
    pub(crate) entry: Entry,
    pub(crate) reference: Option<Ref>,
    /// The connection's context, for the hooks that observe the room and for
    /// [`Hub::members`](crate::Hub::members).
    pub(crate) context: Arc<crate::hooks::ConnectionContext>,
}

/// A live membership of one connection.
///
/// `frames` carries everything the member is sent (its welcome first, then events,
/// acks and room errors, in order). When the room ends the membership (takeover, kick,
/// slow consumer, shutdown) it ends `frames`, with the close frame saying why.
pub(crate) struct Membership {
    pub(crate) member: MemberId,
    pub(crate) link: u64,
    pub(crate) room: Arc<dyn MemberChannel>,
    pub(crate) frames: QueueReceiver,
}

/// The room went away (its task ended): the membership is over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RoomGone;

/// Why a member's command was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotTaken {
    /// The room's command queue is full: the command had no effect.
    Busy,
    /// The room went away: the membership is over.
    Gone,
}

/// What a joined member can do. Results and errors reach the member through its
/// `frames`, in order with the room's events; only `leave` is awaited. No command waits
/// for room in the room's queue: a connection keeps delivering while its room is
/// saturated, and a command the room has no room for is refused (`NotTaken::Busy`).
///
/// Every command names the connection (`link`) it comes from: a command from a link
/// that no longer holds the membership (taken over by a resume, cut off as a slow
/// consumer, kicked) is ignored, so a stale connection can never act on the newer one.
pub(crate) trait MemberChannel: Send + Sync {
    fn send(
        &self,
        member: MemberId,
        link: u64,
        text: Arc<str>,
        reference: Option<Ref>,
    ) -> Result<(), NotTaken>;
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
    /// ends with the close frame that says why).
    fn leave(
        &self,
        member: MemberId,
        link: u64,
    ) -> Result<BoxFuture<'static, Result<bool, RoomGone>>, NotTaken>;
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
    pub context: Arc<crate::hooks::ConnectionContext>,
}

/// Chooses members by the context of their connection, for
/// [`Hub::kick_identity`](crate::Hub::kick_identity).
pub(crate) type ContextMatch = Box<dyn Fn(&crate::hooks::ConnectionContext) -> bool + Send>;

/// Where rooms live. The in-process implementation is [`crate::local::LocalBackplane`].
pub(crate) trait Backplane: Send + Sync {
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
    fn rooms(&self, after: Option<RoomCursor>, limit: usize) -> BoxFuture<'_, RoomsPage>;
    fn room(&self, room: NameKey) -> BoxFuture<'_, Option<RoomDetails>>;
    /// [`Backplane::room`] encoded as JSON, as `GET /rooms/{room}` answers it.
    fn room_json(&self, room: NameKey) -> BoxFuture<'_, Option<String>> {
        Box::pin(async move {
            let details = self.room(room).await?;
            serde_json::to_string(&details).ok()
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
    fn post(&self, room: NameKey, from: Arc<str>, text: Arc<str>) -> BoxFuture<'_, Option<u64>>;
    /// Holds the room's task until the returned sender is used or dropped; `None` if
    /// there is no such room. For tests of races.
    #[cfg(any(test, feature = "testing"))]
    fn pause(&self, room: NameKey) -> BoxFuture<'_, Option<tokio::sync::oneshot::Sender<()>>>;
    /// Removes a member: its connection closes with 4003. False if there was none.
    fn kick(&self, room: NameKey, name: NameKey, reason: String) -> BoxFuture<'_, bool>;
    /// Removes every member whose context `matches`, as [`Backplane::kick`]; how many.
    fn kick_matching(
        &self,
        room: NameKey,
        matches: ContextMatch,
        reason: String,
    ) -> BoxFuture<'_, usize>;
    /// The room's members in join order; `None` if there is no such room.
    fn members(&self, room: NameKey) -> BoxFuture<'_, Option<Vec<MemberInfo>>>;
    /// Queues `count` system posts to the room without waiting (none if its queue is
    /// full), to test what a backlog does; returns how many were queued.
    #[cfg(test)]
    fn queue_posts(&self, room: NameKey, count: usize) -> usize;
    /// Makes the room's task fail as a bug would, to test what members see.
    #[cfg(test)]
    fn inject_fault(&self, room: NameKey) -> BoxFuture<'_, ()>;
}
