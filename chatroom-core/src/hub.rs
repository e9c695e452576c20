//! [`Hub`]: the one way in. A cheap-to-clone handle to every room of a server.

use std::future::Future;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::{
    Backplane, BackplaneContext, Entry, IntoBackplane, JoinFailure, JoinRequest, MemberInfo,
    Membership, NotTaken, RoomCursor, RoomDetails, RoomSummary, RoomsPage, StoreHealth,
};
use crate::error::{JoinError, SendError, Unavailable};
use crate::hooks::{
    ConnectionContext, Disconnected, Filter, HookSet, Hooks, JoinAttempt, MemberLeft,
    MessageAttempt, ObservedEvent, RenameAttempt, Verdict,
};
use crate::limits::Limits;
use crate::local::LocalBackplane;
use crate::name::{DisplayName, NameError, RoomName};
use crate::origin::{OriginPolicy, Scheme};
use crate::protocol::Ref;
use crate::room::check_message;
use crate::token::ResumeToken;

/// A handle to a set of rooms: serve connections, inspect rooms, post, kick, shut down.
///
/// Cloning is cheap and every clone is the same hub. Rooms are created on first join
/// and freed once no member, present or away, is left. Room tasks run on the
/// multi-threaded runtime that was current when the hub was built (or the one given
/// to [`HubBuilder::runtime`]); `Hub::new` itself needs no runtime, and a hub built
/// outside one starts each room on the runtime of the connection that creates it.
///
/// The methods that read or act on rooms return `Err(`[`Unavailable`]`)` only on a
/// cluster (see [`HubBuilder::backplane`]) whose store could not be reached in time;
/// nothing was done then. On the default in-process backplane they never fail.
#[derive(Clone)]
pub struct Hub {
    inner: Arc<Inner>,
}

struct Inner {
    limits: Arc<Limits>,
    origins: OriginPolicy,
    scheme: Option<Scheme>,
    /// The header a trusted proxy puts the client's address in, lower case.
    address_header: Option<String>,
    /// Open connections admitted at the upgrade, in total and per address.
    admitted: Arc<crate::admission::Admitted>,
    /// Paces the JSON API (`Limits::api_requests_per_sec`).
    pacer: crate::admission::Pacer,
    hooks: Arc<HookSet>,
    backplane: Box<dyn Backplane>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("limits", &self.inner.limits)
            .field("shutting_down", &self.inner.cancel.is_cancelled())
            .finish_non_exhaustive()
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub::new()
    }
}

/// Builds a [`Hub`] with custom limits and hooks.
#[derive(Default)]
pub struct HubBuilder {
    limits: Limits,
    origins: OriginPolicy,
    scheme: Option<Scheme>,
    address_header: Option<String>,
    hooks: HookSet,
    runtime: Option<tokio::runtime::Handle>,
    backplane: Option<MakeBackplane>,
}

/// Builds the hub's backplane from what the hub gives it.
type MakeBackplane = Box<dyn FnOnce(BackplaneContext) -> Box<dyn Backplane> + Send>;

impl HubBuilder {
    /// Where the hub's rooms live: by default in this process. Give it another
    /// backplane to share rooms between several servers, e.g. `chatroom-redis`'s
    /// (`Hub::builder().backplane(RedisBackplane::connect(url).await?)`).
    pub fn backplane(mut self, backplane: impl IntoBackplane) -> Self {
        self.backplane = Some(Box::new(move |context| backplane.into_backplane(context)));
        self
    }

    /// Uses these limits instead of the defaults.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Which web origins the adapters let open a WebSocket (default: the same host).
    pub fn origins(mut self, origins: OriginPolicy) -> Self {
        self.origins = origins;
        self
    }

    /// The scheme the site's pages are served under, which [`OriginPolicy::SameHost`]
    /// requires of an `Origin`. Without it, each request says: `https` if its
    /// connection is TLS or a proxy says so (`X-Forwarded-Proto: https` or
    /// `Forwarded: proto=https`), else `http`. Set it when a TLS proxy in front of the
    /// service does not pass the scheme on.
    pub fn scheme(mut self, scheme: Scheme) -> Self {
        self.scheme = Some(scheme);
        self
    }

    /// Takes the client's address, for `Limits::max_connections_per_address`, from
    /// this request header, which a trusted reverse proxy in front sets (e.g.
    /// `X-Real-IP`, or `X-Forwarded-For`, of which the last address is the one the
    /// proxy saw). Without it, or when the header is absent or not an address, the
    /// connection's peer address counts. Set it only behind a proxy that sets the
    /// header itself: a client can write any header.
    pub fn client_address_header(mut self, name: &str) -> Self {
        self.address_header = Some(name.to_ascii_lowercase());
        self
    }

    /// Runs the room tasks (and the `on_event` hooks) on this runtime. By default they
    /// run on the runtime that is current when the hub is built if it is
    /// multi-threaded; otherwise (a hub built outside a runtime, or in a
    /// current-thread one such as `#[tokio::test]`'s) on the runtime of the connection
    /// that creates each room, which works on either flavour.
    ///
    /// Connections run wherever the web framework runs them; rooms are independent of
    /// them. With actix-web, whose workers are single-threaded runtimes, give the hub a
    /// multi-threaded runtime of its own so that rooms run in parallel, apart from the
    /// workers' connections, and outlive a worker's restart:
    ///
    /// ```no_run
    /// let rooms = tokio::runtime::Builder::new_multi_thread()
    ///     .thread_name("chatroom-rooms")
    ///     .enable_all()
    ///     .build()?;
    /// let hub = chatroom_core::Hub::builder().runtime(rooms.handle().clone()).build();
    /// // ... serve; keep `rooms` alive as long as the hub (end it with
    /// // `rooms.shutdown_background()` inside async code).
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn runtime(mut self, runtime: tokio::runtime::Handle) -> Self {
        self.runtime = Some(runtime);
        self
    }

    /// Uses these hooks, for what needs to `await` (see [`Hooks`]). A hook that never
    /// awaits is cheaper as one of the closures below.
    pub fn hooks(mut self, hooks: impl Hooks) -> Self {
        self.hooks.set_hooks(hooks);
        self
    }

    /// A join policy that needs no `await`, called in place on every join and resume
    /// (before [`Hooks::authorize_join`], if both are given): `Deny` answers
    /// `forbidden`.
    ///
    /// Let a signed-in user join only under their own name. Compare collision keys,
    /// not strings: two names with the same key are the same name to the rooms
    /// ("Alice", "ALICE", "Аlice" with a Cyrillic А), so comparing strings would let
    /// "alice" in under "ALICE" but refuse nothing a look-alike could take.
    ///
    /// ```
    /// use chatroom_core::{DisplayName, Hub, Verdict};
    ///
    /// struct User { name: DisplayName }
    ///
    /// let hub = Hub::builder()
    ///     .authorize_join(|attempt| match attempt.context.get::<User>() {
    ///         Some(user) if user.name.key() == attempt.name.key() => Verdict::Allow,
    ///         Some(user) => Verdict::Deny(format!("join as {}", user.name)),
    ///         None => Verdict::Deny("sign in first".into()),
    ///     })
    ///     .build();
    /// ```
    pub fn authorize_join(
        mut self,
        policy: impl Fn(JoinAttempt<'_>) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        self.hooks.join = Some(Box::new(policy));
        self
    }

    /// A rename policy that needs no `await` (see [`HubBuilder::authorize_join`]).
    pub fn authorize_rename(
        mut self,
        policy: impl Fn(RenameAttempt<'_>) -> Verdict + Send + Sync + 'static,
    ) -> Self {
        self.hooks.rename = Some(Box::new(policy));
        self
    }

    /// A message filter that needs no `await`, called in place on the sender's
    /// connection for every message (before [`Hooks::filter_message`], which then sees
    /// the replaced text). [`Hub::post`] is not filtered.
    ///
    /// ```
    /// use chatroom_core::{Filter, Hub};
    ///
    /// let hub = Hub::builder()
    ///     .filter_message(|message| {
    ///         if message.text.contains("darn") {
    ///             Filter::Replace(message.text.replace("darn", "d**n"))
    ///         } else {
    ///             Filter::Allow
    ///         }
    ///     })
    ///     .build();
    /// ```
    pub fn filter_message(
        mut self,
        filter: impl Fn(MessageAttempt<'_>) -> Filter + Send + Sync + 'static,
    ) -> Self {
        self.hooks.message = Some(Box::new(filter));
        self
    }

    /// An observer of every event, with the context of the connection it is about (see
    /// [`Hooks::on_event`] for where it runs and what it may do).
    ///
    /// Store every message with the user who sent it:
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use chatroom_core::Hub;
    /// use chatroom_core::protocol::Event;
    ///
    /// struct UserId(u64);
    ///
    /// let log: Arc<Mutex<Vec<(Option<u64>, String)>>> = Arc::default();
    /// let store = log.clone();
    /// let hub = Hub::builder()
    ///     .on_event(move |seen| {
    ///         if let Event::Message(m) = seen.event {
    ///             let user = seen.context.and_then(|c| c.get::<UserId>()).map(|u| u.0);
    ///             // A real store would hand this to a task of its own (a database).
    ///             store.lock().unwrap().push((user, m.text.to_string()));
    ///         }
    ///     })
    ///     .build();
    /// ```
    pub fn on_event(mut self, observe: impl Fn(ObservedEvent<'_>) + Send + Sync + 'static) -> Self {
        self.hooks.event = Some(Box::new(observe));
        self
    }

    /// Called when a member leaves its room: by `leave`, at the end of its grace
    /// period, or kicked (see [`Hooks::on_member_left`]).
    pub fn on_member_left(
        mut self,
        observe: impl Fn(MemberLeft<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.member_left = Some(Box::new(observe));
        self
    }

    /// Called when a chat connection ends (see [`Hooks::on_disconnect`]).
    pub fn on_disconnect(
        mut self,
        observe: impl Fn(Disconnected<'_>) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.disconnect = Some(Box::new(observe));
        self
    }

    /// Builds the hub.
    pub fn build(self) -> Hub {
        let limits = Arc::new(self.limits);
        let hooks = Arc::new(self.hooks);
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        // A multi-threaded runtime current at build time runs the rooms; a
        // current-thread one is not adopted (it may not be driven while the hub is
        // used, and it would run every room on one thread).
        let runtime = self.runtime.or_else(|| {
            tokio::runtime::Handle::try_current()
                .ok()
                .filter(|h| h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread)
        });
        let metrics = Arc::new(crate::telemetry::Metrics::new());
        let context = BackplaneContext {
            limits: limits.clone(),
            hooks: hooks.clone(),
            cancel: cancel.clone(),
            tracker: tracker.clone(),
            runtime,
            metrics: metrics.clone(),
        };
        let backplane = match self.backplane {
            Some(make) => make(context),
            None => Box::new(LocalBackplane::new(context)),
        };
        Hub {
            inner: Arc::new(Inner {
                limits,
                origins: self.origins,
                scheme: self.scheme,
                address_header: self.address_header,
                admitted: Arc::default(),
                pacer: crate::admission::Pacer::default(),
                hooks,
                backplane,
                cancel,
                tracker,
                metrics,
            }),
        }
    }
}

/// Whether a name could join a room now (the `join` itself stays authoritative).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameCheck {
    /// Nobody in the room holds a colliding name.
    Available,
    /// A member, present or away, holds a colliding name.
    Taken {
        /// The holder's display name.
        holder: String,
    },
    /// The name is not valid.
    InvalidName(NameError),
    /// The room name is not valid.
    InvalidRoom(NameError),
    /// The room is saturated and did not take the question; ask again in a moment.
    Busy,
    /// The rooms' store (a cluster's Redis) could not be reached in time.
    Unavailable,
}

/// Why [`Hub::post`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PostError {
    /// The room name is not valid.
    #[error("that room name is not valid: {0}")]
    InvalidRoom(NameError),
    /// No such room (rooms exist only while they have members).
    #[error("no such room")]
    NoSuchRoom,
    /// The text is empty or too long.
    #[error(transparent)]
    InvalidText(SendError),
    /// The rooms' store (a cluster's Redis) could not be reached in time: nothing was
    /// posted.
    #[error(transparent)]
    Unavailable(#[from] Unavailable),
}

/// A `join` frame's fields, as the connection driver hands them to the hub.
pub(crate) struct JoinFrame<'a> {
    pub(crate) room: &'a str,
    pub(crate) name: &'a str,
    pub(crate) resume: Option<&'a str>,
    pub(crate) since: Option<u64>,
    pub(crate) reference: Option<Ref>,
}

impl Hub {
    /// A hub with default [`Limits`] and hooks that allow everything.
    pub fn new() -> Hub {
        Hub::builder().build()
    }

    /// A builder for limits and hooks.
    pub fn builder() -> HubBuilder {
        HubBuilder::default()
    }

    /// The limits this hub enforces.
    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    /// Which web origins may open a WebSocket; adapters check it before upgrading.
    pub fn origins(&self) -> &OriginPolicy {
        &self.inner.origins
    }

    /// The header set with [`HubBuilder::client_address_header`], if any (lower case).
    pub fn client_address_header(&self) -> Option<&str> {
        self.inner.address_header.as_deref()
    }

    pub(crate) fn admitted(&self) -> &Arc<crate::admission::Admitted> {
        &self.inner.admitted
    }

    pub(crate) fn pacer(&self) -> &crate::admission::Pacer {
        &self.inner.pacer
    }

    /// The scheme set with [`HubBuilder::scheme`], if any.
    pub fn scheme(&self) -> Option<Scheme> {
        self.inner.scheme
    }

    pub(crate) fn limits_arc(&self) -> Arc<Limits> {
        self.inner.limits.clone()
    }

    #[cfg(any(test, feature = "testing"))]
    pub(crate) fn backplane(&self) -> &dyn Backplane {
        &*self.inner.backplane
    }

    pub(crate) fn hooks(&self) -> &HookSet {
        &self.inner.hooks
    }

    pub(crate) fn cancel_token(&self) -> CancellationToken {
        self.inner.cancel.clone()
    }

    /// The tracker of the hub's tasks and connections, which shutdown waits for.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.inner.tracker
    }

    pub(crate) fn metrics(&self) -> &Arc<crate::telemetry::Metrics> {
        &self.inner.metrics
    }

    /// Validates a join, asks the policy hook, and joins through the backplane.
    pub(crate) async fn join(
        &self,
        context: &Arc<ConnectionContext>,
        frame: JoinFrame<'_>,
    ) -> Result<(RoomName, Membership), JoinError> {
        if self.inner.cancel.is_cancelled() {
            return Err(JoinError::Unavailable);
        }
        let limits = &self.inner.limits;
        let room = RoomName::parse_max(frame.room, limits.max_room_chars)
            .map_err(JoinError::InvalidRoom)?;
        let membership = match frame.resume {
            Some(token) => {
                let token = ResumeToken::parse(token).ok_or(JoinError::ResumeFailed)?;
                self.resume(context, &room, token, frame.since, frame.reference)
                    .await?
            }
            None => {
                let name = DisplayName::parse_max(frame.name, limits.max_name_chars)
                    .map_err(JoinError::InvalidName)?;
                self.authorize(context, &room, &name, false).await?;
                let token = ResumeToken::generate().map_err(|e| {
                    tracing::error!(error = %e, "the operating system's random source failed");
                    JoinError::Unavailable
                })?;
                let request = JoinRequest {
                    room: room.clone(),
                    entry: Entry::Fresh { name, token },
                    reference: frame.reference,
                    context: context.clone(),
                };
                match self.inner.backplane.join(request).await {
                    Ok(m) => m,
                    Err(JoinFailure::Refused(e)) => return Err(e),
                    // Only a resume is judged under a name that can change meanwhile.
                    Err(JoinFailure::Renamed) => return Err(JoinError::Unavailable),
                }
            }
        };
        Ok((room, membership))
    }

    /// Asks the host's join policy; a refusal is `forbidden`, a panic `unavailable`.
    async fn authorize(
        &self,
        context: &ConnectionContext,
        room: &RoomName,
        name: &DisplayName,
        resuming: bool,
    ) -> Result<(), JoinError> {
        let attempt = JoinAttempt {
            room,
            name,
            context,
            resuming,
        };
        match self.inner.hooks.authorize_join(attempt).await {
            Some(Verdict::Allow) => Ok(()),
            Some(Verdict::Deny(why)) => Err(JoinError::Forbidden(why)),
            None => Err(JoinError::Unavailable),
        }
    }

    /// A resume, judged by the host's policy like a fresh join: under the member's
    /// current name and the new connection's context. A refusal changes nothing (an
    /// older connection stays open, an away member keeps its grace period).
    async fn resume(
        &self,
        context: &Arc<ConnectionContext>,
        room: &RoomName,
        token: ResumeToken,
        since: Option<u64>,
        reference: Option<Ref>,
    ) -> Result<Membership, JoinError> {
        // A rename between the look-up and the resume sends us round again; a member
        // renamed that often in that instant is answered `unavailable` and may retry.
        for _ in 0..4 {
            let backplane = &self.inner.backplane;
            let name = match backplane.token_holder(room.key().clone(), token).await {
                Ok(Some(name)) => name,
                Ok(None) | Err(NotTaken::Gone) => return Err(JoinError::ResumeFailed),
                Err(NotTaken::Busy) => return Err(JoinError::RoomBusy),
                Err(NotTaken::Unavailable) => return Err(JoinError::StoreUnavailable),
            };
            self.authorize(context, room, &name, true).await?;
            let request = JoinRequest {
                room: room.clone(),
                entry: Entry::Resume { token, since, name },
                reference: reference.clone(),
                context: context.clone(),
            };
            match backplane.join(request).await {
                Ok(m) => return Ok(m),
                Err(JoinFailure::Refused(e)) => return Err(e),
                Err(JoinFailure::Renamed) => continue,
            }
        }
        Err(JoinError::Unavailable)
    }

    /// Rooms that have members, with their member counts (present or away), largest
    /// first (then by name). All of them: for a bounded answer use [`Hub::rooms_page`].
    pub async fn rooms(&self) -> Result<Vec<RoomSummary>, Unavailable> {
        Ok(self.inner.backplane.rooms(None, usize::MAX).await?.rooms)
    }

    /// At most `limit` rooms (at least one) in [`Hub::rooms`]'s order, starting after `after` (from
    /// the start with `None`), and the cursor of the next page if there are more. The
    /// listing is kept up to date by the rooms themselves: reading it waits for no
    /// room and takes no lock that a join needs.
    pub async fn rooms_page(
        &self,
        after: Option<RoomCursor>,
        limit: usize,
    ) -> Result<RoomsPage, Unavailable> {
        self.inner.backplane.rooms(after, limit.max(1)).await
    }

    /// A room's display name and members in join order; `None` if it does not exist
    /// or the name is not a valid room name. Read from what the room last published:
    /// it does not wait for the room's task.
    pub async fn room(&self, room: &str) -> Result<Option<RoomDetails>, Unavailable> {
        let Ok(room) = RoomName::parse_max(room, self.inner.limits.max_room_chars) else {
            return Ok(None);
        };
        self.inner.backplane.room(room.key().clone()).await
    }

    /// [`Hub::room`] as the JSON body of `GET /rooms/{room}`.
    pub(crate) async fn room_json(&self, room: &str) -> Result<Option<String>, Unavailable> {
        let Ok(room) = RoomName::parse_max(room, self.inner.limits.max_room_chars) else {
            return Ok(None);
        };
        self.inner.backplane.room_json(room.key().clone()).await
    }

    /// Whether `name` could join `room` now. For early warnings in a page; the `join`
    /// itself is authoritative.
    pub async fn check_name(&self, room: &str, name: &str) -> NameCheck {
        let limits = &self.inner.limits;
        let room = match RoomName::parse_max(room, limits.max_room_chars) {
            Ok(r) => r,
            Err(e) => return NameCheck::InvalidRoom(e),
        };
        let name = match DisplayName::parse_max(name, limits.max_name_chars) {
            Ok(n) => n,
            Err(e) => return NameCheck::InvalidName(e),
        };
        match self
            .inner
            .backplane
            .holder(room.key().clone(), name.key().clone())
            .await
        {
            Ok(Some(holder)) => NameCheck::Taken { holder },
            Ok(None) | Err(NotTaken::Gone) => NameCheck::Available,
            Err(NotTaken::Busy) => NameCheck::Busy,
            Err(NotTaken::Unavailable) => NameCheck::Unavailable,
        }
    }

    /// Posts a message from the host application (`"system": true`, `from` as given) to
    /// an existing room. Returns the new event's id.
    ///
    /// It does not go through the message filter (the host's own words are not
    /// filtered) nor the rate limits; the observers see it like any message, with
    /// `system: true` and no connection context. A room exists while it has members,
    /// present or away: posting into a room that has none (or never had) creates
    /// nothing and is [`PostError::NoSuchRoom`].
    pub async fn post(&self, room: &str, from: &str, text: &str) -> Result<u64, PostError> {
        let limits = &self.inner.limits;
        let room =
            RoomName::parse_max(room, limits.max_room_chars).map_err(PostError::InvalidRoom)?;
        check_message(text, limits.max_message_chars).map_err(PostError::InvalidText)?;
        self.inner
            .backplane
            .post(room.key().clone(), from.into(), text.into())
            .await?
            .ok_or(PostError::NoSuchRoom)
    }

    /// Removes the member called `name` (by collision key) from `room`: its connection
    /// closes with 4003 and `reason`, the others get `left`. False if there was none.
    pub async fn kick(&self, room: &str, name: &str, reason: &str) -> Result<bool, Unavailable> {
        let limits = &self.inner.limits;
        let (Ok(room), Ok(name)) = (
            RoomName::parse_max(room, limits.max_room_chars),
            DisplayName::parse_max(name, limits.max_name_chars),
        ) else {
            return Ok(false);
        };
        self.inner
            .backplane
            .kick(room.key().clone(), name.key().clone(), reason.to_owned())
            .await
    }

    /// Removes every member of `room` whose connection's context holds `identity` (a
    /// value of your type `T` that your middleware stored with
    /// [`ConnectionContext::with`], compared with `==`): their connections close with
    /// 4003 and `reason`, the others get `left`. Returns how many were removed (one
    /// user may hold several members of a room, under different names; an away member
    /// is matched by the context of its last connection). 0 if the room does not exist.
    ///
    /// ```
    /// # async fn demo(hub: chatroom_core::Hub) {
    /// #[derive(PartialEq)]
    /// struct UserId(u64);
    /// let removed = hub.kick_identity("General", UserId(42), "banned").await;
    /// # let _ = removed;
    /// # }
    /// ```
    pub async fn kick_identity<T>(
        &self,
        room: &str,
        identity: T,
        reason: &str,
    ) -> Result<usize, Unavailable>
    where
        T: std::any::Any + PartialEq + Send + Sync,
    {
        let Ok(room) = RoomName::parse_max(room, self.inner.limits.max_room_chars) else {
            return Ok(0);
        };
        let matches = Box::new(move |context: &ConnectionContext| {
            context.get::<T>().is_some_and(|held| *held == identity)
        });
        self.inner
            .backplane
            .kick_matching(room.key().clone(), matches, reason.to_owned())
            .await
    }

    /// A room's members in join order, present or away, each with its join time and
    /// the context of its connection (the identity your middleware put there). `None`
    /// if the room does not exist or the name is not a valid room name.
    ///
    /// Unlike [`Hub::room`], this asks the room's task (the contexts live there): it
    /// waits its turn behind what the room has queued, like [`Hub::post`].
    pub async fn members(&self, room: &str) -> Result<Option<Vec<MemberInfo>>, Unavailable> {
        let Ok(room) = RoomName::parse_max(room, self.inner.limits.max_room_chars) else {
            return Ok(None);
        };
        self.inner.backplane.members(room.key().clone()).await
    }

    /// Shuts down gracefully: refuses new joins, closes every connection with 1001, and
    /// completes once every connection and room task has ended.
    pub fn shutdown(&self) -> impl Future<Output = ()> + use<> {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        let tracker = self.inner.tracker.clone();
        async move { tracker.wait().await }
    }

    /// Waits for SIGINT (Ctrl-C) or, on Unix, SIGTERM; then shuts the hub down (every
    /// chat connection closes with 1001) and completes once it has. Give it to your
    /// server as its shutdown signal, so that the server stops taking connections and
    /// finishes only after the chats are closed:
    ///
    /// - axum: `axum::serve(listener, app).with_graceful_shutdown(hub.shutdown_on_signal())`;
    /// - actix-web: `HttpServer::new(..).shutdown_signal(hub.shutdown_on_signal())`. This
    ///   also replaces actix's own signal handlers, which would otherwise start a
    ///   *forced* stop on SIGINT at the same moment, so that clients could see 1006
    ///   instead of 1001.
    ///
    /// The signal handlers are installed when the future is first polled. Where they
    /// cannot be installed, the future waits for the other signal (or forever).
    pub fn shutdown_on_signal(&self) -> impl Future<Output = ()> + Send + 'static + use<> {
        let hub = self.clone();
        async move {
            wait_for_a_stop_signal().await;
            tracing::info!("stop signal received: closing every chat connection with 1001");
            hub.shutdown().await;
        }
    }

    /// Whether the store of rooms can serve: always
    /// [`Connected`](StoreHealth::Connected) on the in-process backplane; on a cluster,
    /// whether Redis answers. Serve it as a readiness probe (with
    /// [`StoreHealth::is_ready`]) so that a load balancer sends new connections
    /// elsewhere while this node's store is unusable.
    pub fn store_health(&self) -> StoreHealth {
        self.inner.backplane.health()
    }

    /// Whether [`shutdown`](Self::shutdown) was called.
    pub fn is_shutting_down(&self) -> bool {
        self.inner.cancel.is_cancelled()
    }
}

/// SIGINT, or on Unix SIGTERM, whichever comes first.
async fn wait_for_a_stop_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut terminate) => {
                terminate.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hub_is_built_without_a_runtime_and_is_cheap_to_clone() {
        let hub = Hub::builder()
            .limits(Limits {
                history: 5,
                ..Limits::default()
            })
            .build();
        let clone = hub.clone();
        assert!(Arc::ptr_eq(&hub.inner, &clone.inner));
        assert_eq!(clone.limits().history, 5);
        assert!(!hub.is_shutting_down());
        assert!(format!("{hub:?}").contains("history: 5"));
    }

    #[tokio::test]
    async fn server_side_calls_validate_their_input() {
        let hub = Hub::new();
        assert!(matches!(
            hub.post("", "sys", "x").await,
            Err(PostError::InvalidRoom(NameError::Empty))
        ));
        assert!(!hub.kick("r", "\u{0}", "x").await.unwrap());
        assert_eq!(hub.room("\u{0}").await.unwrap(), None);
        assert!(hub.rooms().await.unwrap().is_empty());
    }
}
