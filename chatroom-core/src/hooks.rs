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

/// The host application's hooks. Every method has an allow-everything default.
///
/// Methods return boxed futures so that the hub can hold any implementation as
/// `Arc<dyn Hooks>`; write `Box::pin(async move { ... })`.
pub trait Hooks: Send + Sync + 'static {
    /// May this connection join `room` as `name`, or resume its membership there
    /// ([`JoinAttempt::resuming`])? `Deny` answers `forbidden`.
    fn authorize_join<'a>(&'a self, attempt: JoinAttempt<'a>) -> BoxFuture<'a, Verdict> {
        let _ = attempt;
        Box::pin(std::future::ready(Verdict::Allow))
    }

    /// May this member take the new name? `Deny` answers `forbidden`.
    fn authorize_rename<'a>(&'a self, attempt: RenameAttempt<'a>) -> BoxFuture<'a, Verdict> {
        let _ = attempt;
        Box::pin(std::future::ready(Verdict::Allow))
    }

    /// Allow, replace or refuse a message before it becomes an event. It runs on the
    /// sender's connection task (which waits for it), not on the room's, so it may call
    /// any [`Hub`](crate::Hub) method too.
    fn filter_message<'a>(&'a self, attempt: MessageAttempt<'a>) -> BoxFuture<'a, Filter> {
        let _ = attempt;
        Box::pin(std::future::ready(Filter::Allow))
    }

    /// Observes every event of every room, in order per room, once it was delivered.
    ///
    /// It runs on a task of its own for each room, never on the room's: the room does
    /// not wait for it, so it may call any [`Hub`](crate::Hub) method on any room, its
    /// own included (a moderation bot that kicks or posts). What it costs the room is
    /// one clone of the event (a few reference counts) and one queue push. Events wait
    /// in that queue while the hook is busy: a hook slower than its room's events builds
    /// a backlog in memory (logged at warn level each 1024 events), so hand heavy work
    /// to a task of your own. [`Hub::shutdown`](crate::Hub::shutdown) completes once
    /// every event before it was observed.
    fn on_event<'a>(&'a self, room: &'a RoomName, event: &'a Event) -> BoxFuture<'a, ()> {
        let _ = (room, event);
        Box::pin(std::future::ready(()))
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

/// The default hooks: allow everything, observe nothing.
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
