//! Transport-agnostic chat rooms: the rules, the actors and the wire protocol.
//!
//! Most apps depend on an adapter, `chatroom-axum` or `chatroom-actix`, which
//! re-exports what an embedder types from here: the [`Hub`] and its [`HubBuilder`],
//! the [`Hooks`] (or the builder's closures) with [`ConnectionContext`], the
//! [`Limits`], and the error types ([`JoinError`], [`PostError`], [`ErrorCode`], ...).
//! From the hub, the host reads rooms ([`Hub::rooms_page`], [`Hub::room`],
//! [`Hub::members`]) and acts on them ([`Hub::post`], [`Hub::kick`],
//! [`Hub::kick_identity`], [`Hub::shutdown`]).
//!
//! # Architecture
//!
//! - [`name`]: display and room names, validated once, with a collision key (caseless,
//!   NFKC, UTS #39 skeleton) that decides which names are "the same".
//! - `room::Room`: the rules of one room as a plain state machine (no tokio, no clock,
//!   no randomness): members in join order, present or away, gapless event ids,
//!   history, renames, resume by `since`, the grace period. Public for the benches,
//!   the fuzzers and other backplanes, hidden from these docs: an embedder never
//!   needs it.
//! - [`Hub`]: the cheap-to-clone handle, the only way in. Behind it each room is a tokio
//!   task that owns its `Room`, receives commands on a bounded channel, encodes every
//!   event once and queues the same bytes to each member without waiting for any.
//! - [`Hub::serve`]: the per-connection driver over any `Stream`/`Sink` of frames; web
//!   adapters (axum, actix-web) only convert their WebSocket messages ([`api`] has
//!   what both adapters answer over HTTP).
//! - [`protocol`]: the JSON frames of PROTOCOL.md; [`error`]: one error enum per
//!   operation and the one mapping to protocol codes; [`Limits`]: every limit.
//! - [`Hooks`]: the host application's join/rename policy, message filter and event
//!   observer.
//! - [`backplane`]: the seam rooms live behind, for implementors of other backplanes
//!   (`chatroom-redis` shares rooms between nodes through Redis); a hub uses the
//!   in-process one unless [`HubBuilder::backplane`] says otherwise. Every operation
//!   through it can fail with [`Unavailable`], which only a cluster returns.
//!
//! # Testing room logic without a network
//!
//! With the `testing` feature (`chatroom-core = { version = "0.1", features =
//! ["testing"] }` under `[dev-dependencies]`), `testing::TestClient` is a connection
//! over in-memory channels: your hooks and rules run as they do in production.
//!
//! ```
//! use chatroom_core::{Hub, Limits};
//! use chatroom_core::protocol::{Event, Reply, ServerFrame};
//! use chatroom_core::testing::TestClient;
//! use serde_json::json;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let hub = Hub::builder().limits(Limits::default()).build();
//! let mut alice = TestClient::connect(&hub);
//! let mut bob = TestClient::connect(&hub);
//!
//! let welcome = alice.join("General", "Alice").await?;
//! assert_eq!(welcome.members, ["Alice"]);
//!
//! // Names collide regardless of case, width or look-alike letters.
//! bob.send_json(&json!({"type": "join", "room": "general", "name": "ＡＬＩＣＥ"})).await;
//! let ServerFrame::Reply(Reply::Error { code, .. }) = bob.recv().await? else { panic!() };
//! assert_eq!(code.as_str(), "name_taken");
//!
//! bob.join("general", "Bob").await?;
//! let Event::Joined(joined) = alice.event().await? else { panic!() };
//! assert_eq!(&*joined.name, "Bob");
//!
//! bob.send_json(&json!({"type": "send", "text": "hi Alice"})).await;
//! let Event::Message(m) = alice.event().await? else { panic!() };
//! assert_eq!((&*m.from, &*m.text), ("Bob", "hi Alice"));
//!
//! hub.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]

mod admission;
pub mod api;
pub mod backplane;
mod connection;
pub mod error;
mod hooks;
mod hub;
mod limits;
mod local;
pub mod name;
mod origin;
pub mod protocol;
mod queue;
mod rate;
mod telemetry;
// The pure rules: for benches, fuzzers and backplanes, not for embedders.
#[doc(hidden)]
pub mod room;
#[cfg(any(test, feature = "testing"))]
#[cfg_attr(docsrs, doc(cfg(feature = "testing")))]
pub mod testing;
mod token;
mod transport;

pub use backplane::{
    BadCursor, MemberInfo, RoomCursor, RoomDetails, RoomSummary, RoomsPage, StoreHealth,
};
pub use error::{ErrorCode, FrameError, JoinError, RenameError, SendError, Unavailable};
pub use hooks::{
    AllowAll, ConnectionContext, Disconnected, Filter, Hooks, JoinAttempt, LeaveReason, MemberLeft,
    MessageAttempt, ObservedEvent, RenameAttempt, Verdict,
};
pub use hub::{Hub, HubBuilder, NameCheck, PostError};
pub use limits::Limits;
pub use name::{DisplayName, NameError, NameKey, RoomName};
pub use origin::{OriginPolicy, Scheme};
pub use token::ResumeToken;
pub use transport::{CloseFrame, ConnectionEnd, Incoming, Outgoing, close_code};
