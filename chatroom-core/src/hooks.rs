//! Hooks through which the host application takes part: join and rename policy, a
//! message filter, and an observer of every event.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use futures_util::FutureExt;
use futures_util::future::BoxFuture;

use crate::name::{DisplayName, RoomName};
use crate::protocol::Event;

/// What the adapter knows about a connection, filled from the HTTP request.
///
/// Host applications put their own identity here and read it back in [`Hooks`]. The
/// adapters start from a `ConnectionContext` found in the request's extensions (insert
/// one in your auth middleware) and fill in the peer address.
#[derive(Default, Clone)]
pub struct ConnectionContext {
    /// The peer's socket address, when the transport knows it.
    pub peer_addr: Option<SocketAddr>,
    extensions: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl ConnectionContext {
    /// An empty context.
    pub fn new() -> Self {
        Self::default()
    }

    /// Stores a value of type `T`, replacing any earlier one; returns `self` for chaining.
    pub fn with<T: Any + Send + Sync>(mut self, value: T) -> Self {
        self.insert(value);
        self
    }

    /// Stores a value of type `T`, replacing any earlier one.
    pub fn insert<T: Any + Send + Sync>(&mut self, value: T) {
        self.extensions.insert(TypeId::of::<T>(), Arc::new(value));
    }

    /// The value of type `T`, if one was stored.
    pub fn get<T: Any + Send + Sync>(&self) -> Option<&T> {
        self.extensions
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
    }

    /// For adapters: the context a connection starts from, given the one found in the
    /// upgrade request's extensions, if any. Without one the hooks get an empty
    /// context, and that is logged at debug level, since it is what a host's auth
    /// middleware that does not wrap the chat routes looks like (in axum, a `layer`
    /// added before the chat routes were nested; in actix, a `wrap` on another scope).
    pub fn from_request(found: Option<&ConnectionContext>) -> ConnectionContext {
        match found {
            Some(context) => context.clone(),
            None => {
                tracing::debug!(
                    "no ConnectionContext in the upgrade request's extensions: the hooks \
                     get an empty one. If your middleware inserts one, it does not wrap \
                     the chat routes (axum: add the layer after `.nest(..)` of the chat \
                     router; actix: `wrap` the scope that has the chat routes)"
                );
                ConnectionContext::default()
            }
        }
    }
}

impl std::fmt::Debug for ConnectionContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionContext")
            .field("peer_addr", &self.peer_addr)
            .field("extensions", &self.extensions.len())
            .finish()
    }
}

/// A policy decision. `Deny` becomes the `forbidden` error, with its text as the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allow,
    /// Refuse, with a message for the client.
    Deny(String),
}

/// What to do with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Filter {
    /// Deliver it as sent.
    Allow,
    /// Deliver this text instead.
    Replace(String),
    /// Refuse it with `forbidden` and this message.
    Deny(String),
}

/// A join the application may refuse: a fresh join, or a resume.
///
/// A resume (a `join` with a resume token) is asked too, with the member's current name
/// and the new connection's context, so that a user banned since joining, or anyone
/// holding someone else's token, cannot keep a membership alive by resuming it. A
/// refused resume changes nothing: the membership runs out with its grace period.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct JoinAttempt<'a> {
    /// The room asked for.
    pub room: &'a RoomName,
    /// The name asked for; for a resume, the member's current name.
    pub name: &'a DisplayName,
    /// The connection's context.
    pub context: &'a ConnectionContext,
    /// True when the connection resumes an existing membership with its token.
    pub resuming: bool,
}

/// A rename the application may refuse.
#[derive(Debug, Clone, Copy)]
pub struct RenameAttempt<'a> {
    /// The member's room.
    pub room: &'a RoomName,
    /// The new name.
    pub name: &'a DisplayName,
    /// The connection's context.
    pub context: &'a ConnectionContext,
}

/// A message the application may filter.
#[derive(Debug, Clone, Copy)]
pub struct MessageAttempt<'a> {
    /// The member's room.
    pub room: &'a RoomName,
    /// The text, already checked for emptiness and length.
    pub text: &'a str,
    /// The connection's context.
    pub context: &'a ConnectionContext,
}

/// Why a member left its room, for [`Hooks::on_member_left`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LeaveReason {
    /// It sent `leave`.
    Left,
    /// It was away (its connection lost) for longer than the grace period.
    Expired,
    /// The host removed it ([`Hub::kick`](crate::Hub::kick) or
    /// [`Hub::kick_identity`](crate::Hub::kick_identity)).
    Kicked,
}

/// An event of a room, as [`Hooks::on_event`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct ObservedEvent<'a> {
    /// The room.
    pub room: &'a RoomName,
    /// The event, as every member got it.
    pub event: &'a Event,
    /// The context of the connection the event is about: the sender of a message
    /// (`None` for a [`Hub::post`](crate::Hub::post)), the member that joined, renamed
    /// or left (for a member that resumed, its latest connection's).
    pub context: Option<&'a ConnectionContext>,
}

/// A member that left its room, as [`Hooks::on_member_left`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct MemberLeft<'a> {
    /// The room.
    pub room: &'a RoomName,
    /// The member's display name when it left.
    pub name: &'a str,
    /// The context of the member's latest connection.
    pub context: &'a ConnectionContext,
    /// Why it left.
    pub reason: LeaveReason,
}

/// A chat connection that ended, as [`Hooks::on_disconnect`] sees it.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct Disconnected<'a> {
    /// The connection's context.
    pub context: &'a ConnectionContext,
    /// How it ended.
    pub end: &'a crate::transport::ConnectionEnd,
}

/// The host application's hooks, for what needs to `await` (a database, another
/// service). Every method has an allow-everything, observe-nothing default; write the
/// ones you need as `async fn`:
///
/// ```
/// use chatroom_core::{Hooks, Hub, JoinAttempt, MessageAttempt, Filter, Verdict};
///
/// struct Bans; // e.g. a handle to your database
///
/// impl Hooks for Bans {
///     async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Verdict {
///         // let banned = self.db.is_banned(attempt.name.as_str()).await;
///         let banned = attempt.name.as_str() == "mallory";
///         if banned { Verdict::Deny("banned".into()) } else { Verdict::Allow }
///     }
///
///     async fn filter_message(&self, attempt: MessageAttempt<'_>) -> Filter {
///         Filter::Replace(attempt.text.replace("darn", "d**n"))
///     }
/// }
///
/// let hub = Hub::builder().hooks(Bans).build();
/// ```
///
/// A hook that never awaits is cheaper as a closure on the builder
/// ([`HubBuilder::authorize_join`](crate::HubBuilder::authorize_join),
/// [`filter_message`](crate::HubBuilder::filter_message), ...): it is called in place,
/// while a method of this trait costs one allocation per call (its future is boxed).
/// A method left to its default costs nothing. Where both are given, the closure runs
/// first: a refusal stops there, and a replaced text is what the trait's filter sees.
///
/// A panic in a hook is caught and logged: a policy or filter that panics answers the
/// client `internal`, an observer that panics misses that one event.
pub trait Hooks: Send + Sync + 'static {
    /// May this connection join `room` as `name`, or resume its membership there
    /// ([`JoinAttempt::resuming`])? `Deny` answers `forbidden`. It runs on the
    /// connection's task.
    fn authorize_join(&self, attempt: JoinAttempt<'_>) -> impl Future<Output = Verdict> + Send {
        let _ = attempt;
        Allow::new()
    }

    /// May this member take the new name? `Deny` answers `forbidden`.
    fn authorize_rename(&self, attempt: RenameAttempt<'_>) -> impl Future<Output = Verdict> + Send {
        let _ = attempt;
        Allow::new()
    }

    /// Allow, replace or refuse a message before it becomes an event. It runs on the
    /// sender's connection task (which waits for it), not on the room's, so it may call
    /// any [`Hub`](crate::Hub) method too. [`Hub::post`](crate::Hub::post) does not go
    /// through it: the host's own messages are not filtered.
    fn filter_message(&self, attempt: MessageAttempt<'_>) -> impl Future<Output = Filter> + Send {
        let _ = attempt;
        Allow::new()
    }

    /// Observes every event of every room, in order per room, once it was delivered,
    /// with the context of the connection it is about ([`ObservedEvent::context`]).
    /// A [`Hub::post`](crate::Hub::post) is observed too, as a message with
    /// `system: true` and no context.
    ///
    /// It runs on a task of its own for each room, never on the room's: the room does
    /// not wait for it, so it may call any [`Hub`](crate::Hub) method on any room, its
    /// own included (a moderation bot that kicks or posts). What it costs the room is
    /// one clone of the event (a few reference counts) and one queue push. Events wait
    /// in that queue while the hook is busy: a hook slower than its room's events builds
    /// a backlog in memory (logged at warn level each 1024 events), so hand heavy work
    /// to a task of your own. [`Hub::shutdown`](crate::Hub::shutdown) completes once
    /// every event before it was observed.
    fn on_event(&self, event: ObservedEvent<'_>) -> impl Future<Output = ()> + Send {
        let _ = event;
        Allow::new()
    }

    /// A member left its room (after its `left` event was observed), with the context
    /// of its latest connection and why. Runs where [`on_event`](Hooks::on_event) runs.
    fn on_member_left(&self, left: MemberLeft<'_>) -> impl Future<Output = ()> + Send {
        let _ = left;
        Allow::new()
    }

    /// A chat connection ended (its member, if any, is away or gone by then). Runs on
    /// the connection's task, after the connection is closed.
    fn on_disconnect(&self, ended: Disconnected<'_>) -> impl Future<Output = ()> + Send {
        let _ = ended;
        Allow::new()
    }
}

/// What a default hook answers: allow, observe nothing. Zero-sized, so boxing it
/// allocates nothing.
struct Allow<T>(std::marker::PhantomData<fn() -> T>);

impl<T> Allow<T> {
    fn new() -> Self {
        Allow(std::marker::PhantomData)
    }
}

/// The answer of a hook that allows everything.
trait Allowing {
    fn allow() -> Self;
}

impl Allowing for Verdict {
    fn allow() -> Self {
        Verdict::Allow
    }
}

impl Allowing for Filter {
    fn allow() -> Self {
        Filter::Allow
    }
}

impl Allowing for () {
    fn allow() -> Self {}
}

impl<T: Allowing> Future for Allow<T> {
    type Output = T;

    fn poll(self: std::pin::Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<T> {
        std::task::Poll::Ready(T::allow())
    }
}

/// [`Hooks`] as an object: each call's future boxed (free for a default method, whose
/// future is zero-sized).
trait DynHooks: Send + Sync + 'static {
    fn authorize_join<'a>(&'a self, attempt: JoinAttempt<'a>) -> BoxFuture<'a, Verdict>;
    fn authorize_rename<'a>(&'a self, attempt: RenameAttempt<'a>) -> BoxFuture<'a, Verdict>;
    fn filter_message<'a>(&'a self, attempt: MessageAttempt<'a>) -> BoxFuture<'a, Filter>;
    fn on_event<'a>(&'a self, event: ObservedEvent<'a>) -> BoxFuture<'a, ()>;
    fn on_member_left<'a>(&'a self, left: MemberLeft<'a>) -> BoxFuture<'a, ()>;
    fn on_disconnect<'a>(&'a self, ended: Disconnected<'a>) -> BoxFuture<'a, ()>;
}

impl<H: Hooks> DynHooks for H {
    fn authorize_join<'a>(&'a self, attempt: JoinAttempt<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(Hooks::authorize_join(self, attempt))
    }
    fn authorize_rename<'a>(&'a self, attempt: RenameAttempt<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(Hooks::authorize_rename(self, attempt))
    }
    fn filter_message<'a>(&'a self, attempt: MessageAttempt<'a>) -> BoxFuture<'a, Filter> {
        Box::pin(Hooks::filter_message(self, attempt))
    }
    fn on_event<'a>(&'a self, event: ObservedEvent<'a>) -> BoxFuture<'a, ()> {
        Box::pin(Hooks::on_event(self, event))
    }
    fn on_member_left<'a>(&'a self, left: MemberLeft<'a>) -> BoxFuture<'a, ()> {
        Box::pin(Hooks::on_member_left(self, left))
    }
    fn on_disconnect<'a>(&'a self, ended: Disconnected<'a>) -> BoxFuture<'a, ()> {
        Box::pin(Hooks::on_disconnect(self, ended))
    }
}

pub(crate) type JoinPolicy = Box<dyn Fn(JoinAttempt<'_>) -> Verdict + Send + Sync>;
pub(crate) type RenamePolicy = Box<dyn Fn(RenameAttempt<'_>) -> Verdict + Send + Sync>;
pub(crate) type MessageFilter = Box<dyn Fn(MessageAttempt<'_>) -> Filter + Send + Sync>;
pub(crate) type EventObserver = Box<dyn Fn(ObservedEvent<'_>) + Send + Sync>;
pub(crate) type LeftObserver = Box<dyn Fn(MemberLeft<'_>) + Send + Sync>;
pub(crate) type DisconnectObserver = Box<dyn Fn(Disconnected<'_>) + Send + Sync>;

/// Every hook the hub has: closures given to the builder, and one [`Hooks`]
/// implementation. A hook not given costs nothing.
#[derive(Default)]
pub(crate) struct HookSet {
    pub(crate) join: Option<JoinPolicy>,
    pub(crate) rename: Option<RenamePolicy>,
    pub(crate) message: Option<MessageFilter>,
    pub(crate) event: Option<EventObserver>,
    pub(crate) member_left: Option<LeftObserver>,
    pub(crate) disconnect: Option<DisconnectObserver>,
    hooks: Option<Box<dyn DynHooks>>,
}

/// Calls a closure hook; a panic is logged and becomes `None`.
fn guarded_now<T>(hook: &'static str, call: impl FnOnce() -> T) -> Option<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)) {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::error!(hook, "a host application hook panicked");
            None
        }
    }
}

impl HookSet {
    pub(crate) fn set_hooks(&mut self, hooks: impl Hooks) {
        self.hooks = Some(Box::new(hooks));
    }

    /// Whether anything observes events or departures (else rooms need not keep their
    /// members' contexts, nor run an observer).
    pub(crate) fn observes(&self) -> bool {
        self.hooks.is_some() || self.event.is_some() || self.member_left.is_some()
    }

    /// The join policy's verdict; `None` if a hook panicked.
    pub(crate) async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Option<Verdict> {
        if let Some(join) = &self.join {
            match guarded_now("authorize_join", || join(attempt))? {
                Verdict::Allow => {}
                deny => return Some(deny),
            }
        }
        match &self.hooks {
            Some(hooks) => guarded("authorize_join", || hooks.authorize_join(attempt)).await,
            None => Some(Verdict::Allow),
        }
    }

    /// The rename policy's verdict; `None` if a hook panicked.
    pub(crate) async fn authorize_rename(&self, attempt: RenameAttempt<'_>) -> Option<Verdict> {
        if let Some(rename) = &self.rename {
            match guarded_now("authorize_rename", || rename(attempt))? {
                Verdict::Allow => {}
                deny => return Some(deny),
            }
        }
        match &self.hooks {
            Some(hooks) => guarded("authorize_rename", || hooks.authorize_rename(attempt)).await,
            None => Some(Verdict::Allow),
        }
    }

    /// What becomes of a message; `None` if a hook panicked.
    pub(crate) async fn filter_message(&self, attempt: MessageAttempt<'_>) -> Option<Filter> {
        let replaced = match &self.message {
            Some(filter) => match guarded_now("filter_message", || filter(attempt))? {
                Filter::Allow => None,
                Filter::Replace(text) => Some(text),
                deny => return Some(deny),
            },
            None => None,
        };
        let Some(hooks) = &self.hooks else {
            return Some(replaced.map_or(Filter::Allow, Filter::Replace));
        };
        let attempt = MessageAttempt {
            text: replaced.as_deref().unwrap_or(attempt.text),
            ..attempt
        };
        match guarded("filter_message", || hooks.filter_message(attempt)).await? {
            Filter::Allow => Some(replaced.map_or(Filter::Allow, Filter::Replace)),
            other => Some(other),
        }
    }

    pub(crate) async fn on_event(&self, event: ObservedEvent<'_>) {
        if let Some(observe) = &self.event {
            guarded_now("on_event", || observe(event));
        }
        if let Some(hooks) = &self.hooks {
            guarded("on_event", || hooks.on_event(event)).await;
        }
    }

    pub(crate) async fn on_member_left(&self, left: MemberLeft<'_>) {
        if let Some(observe) = &self.member_left {
            guarded_now("on_member_left", || observe(left));
        }
        if let Some(hooks) = &self.hooks {
            guarded("on_member_left", || hooks.on_member_left(left)).await;
        }
    }

    pub(crate) async fn on_disconnect(&self, ended: Disconnected<'_>) {
        if let Some(observe) = &self.disconnect {
            guarded_now("on_disconnect", || observe(ended));
        }
        if let Some(hooks) = &self.hooks {
            guarded("on_disconnect", || hooks.on_disconnect(ended)).await;
        }
    }
}

/// Runs a hook's future; a panic in the host's code is logged and becomes `None`, so a
/// bug in a hook answers `internal` instead of tearing down a connection or a room.
pub(crate) async fn guarded<'a, T>(
    hook: &'static str,
    call: impl FnOnce() -> BoxFuture<'a, T>,
) -> Option<T> {
    use std::panic::{AssertUnwindSafe, catch_unwind};
    let outcome = match catch_unwind(AssertUnwindSafe(call)) {
        Ok(future) => AssertUnwindSafe(future).catch_unwind().await,
        Err(panic) => Err(panic),
    };
    match outcome {
        Ok(value) => Some(value),
        Err(_) => {
            tracing::error!(hook, "a host application hook panicked");
            None
        }
    }
}

/// Hooks that allow everything and observe nothing: every method left to its default.
#[derive(Debug, Clone, Copy, Default)]
pub struct AllowAll;

impl Hooks for AllowAll {}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    struct UserId(u32);

    #[test]
    fn context_holds_typed_values() {
        let ctx = ConnectionContext::new().with(UserId(7)).with("tenant-a");
        assert_eq!(ctx.get::<UserId>(), Some(&UserId(7)));
        assert_eq!(ctx.get::<&str>(), Some(&"tenant-a"));
        assert_eq!(ctx.get::<u8>(), None);
    }
}
