//! The in-process backplane: a registry of rooms, each a tokio task that owns one
//! [`Room`] and performs its effects (fan-out, timers, hooks).
//!
//! The registry lock is taken only to find or create a room and to free it; messages
//! go from a connection straight to its room's task. An event is encoded once and the
//! same bytes are queued to every member. A member whose queue is full is a slow
//! consumer: it is unlinked (its connection closes with 1008) and becomes away; the
//! room never waits for it.

use std::cmp::Reverse;
use std::collections::hash_map::Entry as MapEntry;
use std::collections::{BTreeSet, HashMap};
use std::ops::Bound;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::FutureExt;
use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::backplane::{
    Backplane, BackplaneContext, ContextMatch, Entry, JoinFailure, JoinRequest, MemberChannel,
    MemberInfo, Membership, NotTaken, RoomCursor, RoomDetails, RoomSummary, RoomsPage, Unavailable,
};
use crate::error::{JoinError, RenameError};
use crate::hooks::{ConnectionContext, HookSet, LeaveReason, MemberLeft, ObservedEvent};
use crate::limits::Limits;
use crate::name::{DisplayName, NameKey, RoomName};
use crate::protocol::{Event, Ref, TextFrame, WelcomeParts, ack_frame, error_frame};
use crate::queue::{PushError, QueueSender, queue};
use crate::rate::Bucket;
use crate::room::{MemberId, Now, Presence, Recorded, Room};
use crate::token::ResumeToken;
use crate::transport::CloseFrame;

/// What the hub and the room tasks share.
struct Shared {
    rooms: Mutex<HashMap<NameKey, RoomEntry>>,
    /// Every room with members, largest first then by name: what `GET /rooms` pages
    /// through. Rooms update their own place in it when their member count changes,
    /// so a listing takes neither the registry's lock nor any room's task.
    directory: Mutex<BTreeSet<Listed>>,
    limits: Arc<Limits>,
    hooks: Arc<HookSet>,
    ids: AtomicU64,
    cancel: CancellationToken,
    tracker: TaskTracker,
    /// Where room tasks (and their observers) run; `None`: the runtime of whoever
    /// creates the room.
    runtime: Option<tokio::runtime::Handle>,
    /// What rooms' join gates count from.
    epoch: Instant,
    metrics: Arc<crate::telemetry::Metrics>,
}

impl Shared {
    /// Spawns a room's task (tracked for shutdown) on the hub's runtime.
    fn spawn(&self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let task = self.tracker.track_future(task);
        match &self.runtime {
            Some(runtime) => drop(runtime.spawn(task)),
            None => drop(tokio::spawn(task)),
        }
    }

    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<NameKey, RoomEntry>> {
        // The map stays consistent even if a holder panicked: every edit is one call.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, BTreeSet<Listed>> {
        // Likewise: every edit is one insert or remove.
        self.directory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves a room's place in the directory from `old` members to `new` (0: absent).
    fn relist(&self, display: &Arc<str>, old: usize, new: usize) {
        if old == new {
            return;
        }
        let mut directory = self.directory();
        if old > 0 {
            directory.remove(&(Reverse(old), display.clone()));
        }
        if new > 0 {
            directory.insert((Reverse(new), display.clone()));
        }
    }

    fn handle(&self, key: &NameKey) -> Option<RoomHandle> {
        self.registry().get(key).map(|e| e.handle.clone())
    }
}

/// A room's place in the directory: most members first, then by display name.
type Listed = (Reverse<usize>, Arc<str>);

struct RoomEntry {
    handle: RoomHandle,
    generation: u64,
    display: Arc<str>,
    /// The member count the room last listed in the directory.
    members: Arc<AtomicUsize>,
    /// The members' display names as a JSON array, as the room last published them.
    roster: Arc<Mutex<Arc<str>>>,
    /// The room's join gate (see [`JoinGate`]).
    gate: Arc<JoinGate>,
}

/// Until when a room refuses fresh joins (`room_busy`), as it last said: a join that
/// arrives before then is refused without a word with the room's task. Clients that
/// loop join/leave on a room whose budget is spent thus cost the room nothing, and
/// are answered without waiting behind the room's traffic. The room reopens the
/// gate by itself: its budgets refill with time.
#[derive(Default)]
struct JoinGate {
    /// Nanoseconds after the backplane's epoch; 0: open.
    closed_until: AtomicU64,
}

impl JoinGate {
    fn is_closed(&self, shared: &Shared) -> bool {
        let now = Instant::now().saturating_duration_since(shared.epoch);
        let now = u64::try_from(now.as_nanos()).unwrap_or(u64::MAX);
        self.closed_until.load(Ordering::Relaxed) > now
    }

    fn close_until(&self, shared: &Shared, until: Instant) {
        let until = until.saturating_duration_since(shared.epoch);
        let until = u64::try_from(until.as_nanos()).unwrap_or(u64::MAX);
        self.closed_until.store(until, Ordering::Relaxed);
    }
}

/// The sending side of a room task's command queue, and the runtime rooms run on.
#[derive(Clone)]
struct RoomHandle(mpsc::Sender<Command>, Option<tokio::runtime::Handle>);

impl RoomHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.0.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// [`call`](Self::call) without waiting for room in the queue: what a client's
    /// request asks of a room must not wait in line behind a saturated one.
    async fn call_now<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, NotTaken> {
        let (tx, rx) = oneshot::channel();
        self.offer(make(tx))?;
        rx.await.map_err(|_| NotTaken::Gone)
    }
}

/// The in-process [`Backplane`].
pub(crate) struct LocalBackplane {
    shared: Arc<Shared>,
}

impl LocalBackplane {
    /// A room's display name and roster (a JSON array of names) as it last published
    /// them: a look-up in the registry, not a word with the room's task.
    fn published(&self, room: &NameKey) -> Option<(Arc<str>, Arc<str>)> {
        let (display, roster) = {
            let registry = self.shared.registry();
            let entry = registry.get(room)?;
            (entry.display.clone(), entry.roster.clone())
        };
        let roster = roster
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        Some((display, roster))
    }

    pub(crate) fn new(context: BackplaneContext) -> Self {
        let BackplaneContext {
            limits,
            hooks,
            cancel,
            tracker,
            runtime,
            metrics,
        } = context;
        LocalBackplane {
            shared: Arc::new(Shared {
                rooms: Mutex::new(HashMap::new()),
                directory: Mutex::new(BTreeSet::new()),
                limits,
                hooks,
                ids: AtomicU64::new(1),
                cancel,
                tracker,
                runtime,
                epoch: Instant::now(),
                metrics,
            }),
        }
    }

    /// The room's handle, creating the room (and its task) for a fresh join. A resume
    /// never creates a room (a freed room's tokens are void): `resume_failed`.
    fn find_or_create(
        &self,
        room: &RoomName,
        create: bool,
    ) -> Result<(RoomHandle, u64, Arc<JoinGate>), JoinError> {
        let shared = &self.shared;
        let mut rooms = shared.registry();
        let max_rooms = shared.limits.max_rooms;
        let open = rooms.len();
        match rooms.entry(room.key().clone()) {
            MapEntry::Occupied(e) => {
                let entry = e.get();
                Ok((entry.handle.clone(), entry.generation, entry.gate.clone()))
            }
            MapEntry::Vacant(_) if !create => Err(JoinError::ResumeFailed),
            MapEntry::Vacant(_) if open >= max_rooms => {
                Err(JoinError::TooManyRooms { max: max_rooms })
            }
            MapEntry::Vacant(v) => {
                let (tx, rx) = mpsc::channel(shared.limits.room_queue.max(1));
                let generation = shared.next_id();
                let members = Arc::new(AtomicUsize::new(0));
                let roster: Arc<Mutex<Arc<str>>> = Arc::new(Mutex::new(Arc::from("[]")));
                let handle = RoomHandle(tx, shared.runtime.clone());
                let gate = Arc::new(JoinGate::default());
                v.insert(RoomEntry {
                    handle: handle.clone(),
                    generation,
                    display: room.to_shared(),
                    members: members.clone(),
                    roster: roster.clone(),
                    gate: gate.clone(),
                });
                let actor = RoomActor {
                    room: Room::new(room.clone(), &shared.limits),
                    links: Vec::new(),
                    shared: shared.clone(),
                    handle: Arc::new(handle.clone()),
                    generation,
                    members,
                    rx,
                    observer: shared
                        .hooks
                        .observes()
                        .then(|| Observer::start(shared, room)),
                    contexts: HashMap::new(),
                    roster: Arc::from("[]"),
                    roster_stale: false,
                    roster_changed: false,
                    published: roster,
                    display: room.to_shared(),
                    listed: 0,
                    counted: (0, 0),
                    joins: Bucket::with_rate(
                        shared.limits.room_join_burst,
                        shared.limits.room_joins_per_sec,
                        Instant::now(),
                    ),
                    presence: Bucket::with_rate(
                        shared.limits.room_presence_burst,
                        shared.limits.room_presence_per_sec,
                        Instant::now(),
                    ),
                    prepaid: 0,
                    gate: gate.clone(),
                };
                shared.metrics.rooms.increment(1.0);
                let span = tracing::info_span!(parent: None, "room", room = %room);
                let (key, registry) = (room.key().clone(), shared.clone());
                let run = async move {
                    // A panic (a bug) ends the room: its members' queues are dropped, so
                    // they close with 1011, and the room leaves the registry at once.
                    if std::panic::AssertUnwindSafe(actor.run())
                        .catch_unwind()
                        .await
                        .is_err()
                    {
                        tracing::error!("a room task panicked; its members are closed with 1011");
                        forget(&registry, &key, generation);
                    }
                };
                shared.spawn(run.instrument(span));
                Ok((handle, generation, gate))
            }
        }
    }

    fn forget(&self, room: &NameKey, generation: u64) {
        forget(&self.shared, room, generation);
    }
}

/// Removes the registry's entry for `room` if it is still this `generation`'s, and
/// gives back the map's capacity once it is mostly empty.
fn forget(shared: &Shared, room: &NameKey, generation: u64) {
    let mut rooms = shared.registry();
    if rooms.get(room).is_some_and(|e| e.generation == generation) {
        if let Some(gone) = rooms.remove(room) {
            shared.metrics.rooms.decrement(1.0);
            let listed = gone.members.swap(0, Ordering::Relaxed);
            shared.relist(&gone.display, listed, 0);
        }
        let len = rooms.len();
        if rooms.capacity() > 64 && len < rooms.capacity() / 4 {
            rooms.shrink_to(len * 2);
        }
    }
}

/// A join's answer from the room task.
enum JoinReply {
    Accepted(Membership),
    Refused(JoinError),
    /// The resuming member was renamed after the policy judged it.
    Renamed,
    /// The room was being freed; find or create it again.
    Retry(Entry),
}

impl Backplane for LocalBackplane {
    fn join(&self, request: JoinRequest) -> BoxFuture<'_, Result<Membership, JoinFailure>> {
        Box::pin(async move {
            let JoinRequest {
                room,
                entry,
                reference,
                context,
            } = request;
            let fresh = matches!(entry, Entry::Fresh { .. });
            let mut entry = entry;
            // A room that empties while we reach it is freed; find or create it again.
            for _ in 0..8 {
                if self.shared.cancel.is_cancelled() {
                    return Err(JoinError::Unavailable.into());
                }
                let (handle, generation, gate) = self.find_or_create(&room, fresh)?;
                if fresh && gate.is_closed(&self.shared) {
                    return Err(JoinError::RoomBusy.into());
                }
                let (reply, answer) = oneshot::channel();
                let command = Command::Join {
                    entry,
                    reference: reference.clone(),
                    context: context.clone(),
                    reply,
                };
                entry = match handle.0.try_send(command) {
                    Ok(()) => match answer.await {
                        Ok(JoinReply::Accepted(m)) => return Ok(m),
                        Ok(JoinReply::Refused(err)) => return Err(err.into()),
                        Ok(JoinReply::Renamed) => return Err(JoinFailure::Renamed),
                        Ok(JoinReply::Retry(e)) => e,
                        Err(_) => return Err(JoinError::Unavailable.into()),
                    },
                    // Saturated: refused at once rather than waiting in line.
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        return Err(JoinError::RoomBusy.into());
                    }
                    Err(mpsc::error::TrySendError::Closed(Command::Join { entry, .. })) => entry,
                    Err(_) => return Err(JoinError::Unavailable.into()),
                };
                self.forget(room.key(), generation);
            }
            Err(JoinError::Unavailable.into())
        })
    }

    fn token_holder(
        &self,
        room: NameKey,
        token: ResumeToken,
    ) -> BoxFuture<'_, Result<Option<DisplayName>, NotTaken>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            match handle {
                Some(h) => {
                    h.call_now(|reply| Command::TokenHolder { token, reply })
                        .await
                }
                None => Ok(None),
            }
        })
    }

    fn rooms(
        &self,
        after: Option<RoomCursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RoomsPage, Unavailable>> {
        let directory = self.shared.directory();
        let start = match &after {
            Some(c) => Bound::Excluded((Reverse(c.members), Arc::<str>::from(c.room.as_str()))),
            None => Bound::Unbounded,
        };
        let listed: Vec<Listed> = directory
            .range((start, Bound::Unbounded))
            .take(limit.saturating_add(1))
            .cloned()
            .collect();
        drop(directory);
        // Strings are made once the lock that rooms update is given back.
        let mut page: Vec<RoomSummary> = listed
            .into_iter()
            .map(|(Reverse(members), room)| RoomSummary {
                room: room.to_string(),
                members,
            })
            .collect();
        let next = (page.len() > limit).then(|| {
            page.truncate(limit);
            page.last().map(|last| RoomCursor {
                members: last.members,
                room: last.room.clone(),
            })
        });
        Box::pin(std::future::ready(Ok(RoomsPage {
            rooms: page,
            next: next.flatten(),
        })))
    }

    fn room(&self, room: NameKey) -> BoxFuture<'_, Result<Option<RoomDetails>, Unavailable>> {
        let details = self.published(&room).and_then(|(display, roster)| {
            let members: Vec<String> = serde_json::from_str(&roster).ok()?;
            (!members.is_empty()).then(|| RoomDetails {
                room: display.to_string(),
                members,
            })
        });
        Box::pin(std::future::ready(Ok(details)))
    }

    fn room_json(&self, room: NameKey) -> BoxFuture<'_, Result<Option<String>, Unavailable>> {
        // The published roster is already a JSON array: it is copied into the answer,
        // not decoded and encoded again (for a room of 500, that was most of the cost
        // of answering).
        let body = self.published(&room).and_then(|(display, roster)| {
            if *roster == *"[]" {
                return None;
            }
            let display = serde_json::to_string(&*display).ok()?;
            Some(format!(r#"{{"room":{display},"members":{roster}}}"#))
        });
        Box::pin(std::future::ready(Ok(body)))
    }

    fn holder(
        &self,
        room: NameKey,
        name: NameKey,
    ) -> BoxFuture<'_, Result<Option<String>, NotTaken>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            match handle {
                Some(h) => h.call_now(|reply| Command::Holder { name, reply }).await,
                None => Ok(None),
            }
        })
    }

    fn post(
        &self,
        room: NameKey,
        from: Arc<str>,
        text: Arc<str>,
    ) -> BoxFuture<'_, Result<Option<u64>, Unavailable>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            let Some(handle) = handle else {
                return Ok(None);
            };
            let posted = handle
                .call(|reply| Command::Post { from, text, reply })
                .await;
            Ok(posted.flatten())
        })
    }

    #[cfg(test)]
    fn queue_posts(&self, room: NameKey, count: usize) -> usize {
        let Some(handle) = self.shared.handle(&room) else {
            return 0;
        };
        (0..count)
            .filter(|i| {
                let (reply, _) = oneshot::channel();
                let post = Command::Post {
                    from: "bot".into(),
                    text: i.to_string().into(),
                    reply,
                };
                handle.0.try_send(post).is_ok()
            })
            .count()
    }

    #[cfg(test)]
    fn inject_fault(&self, room: NameKey) -> BoxFuture<'_, ()> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            if let Some(h) = handle {
                let _ = h.0.send(Command::Fault).await;
            }
        })
    }

    #[cfg(any(test, feature = "testing"))]
    fn pause(&self, room: NameKey) -> BoxFuture<'_, Option<oneshot::Sender<()>>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            let (paused, is_paused) = oneshot::channel();
            let (resume, resumed) = oneshot::channel();
            let command = Command::Pause {
                paused,
                resume: resumed,
            };
            handle?.0.send(command).await.ok()?;
            is_paused.await.ok()?;
            Some(resume)
        })
    }

    #[cfg(any(test, feature = "testing"))]
    fn expire_now(&self, room: NameKey) -> BoxFuture<'_, ()> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            if let Some(h) = handle {
                let _ = h.call(|done| Command::ExpireNow { done }).await;
            }
        })
    }

    fn kick(
        &self,
        room: NameKey,
        name: NameKey,
        reason: String,
    ) -> BoxFuture<'_, Result<bool, Unavailable>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            Ok(match handle {
                Some(h) => h
                    .call(|reply| Command::Kick {
                        name,
                        reason,
                        reply,
                    })
                    .await
                    .unwrap_or(false),
                None => false,
            })
        })
    }

    fn kick_matching(
        &self,
        room: NameKey,
        matches: ContextMatch,
        reason: String,
    ) -> BoxFuture<'_, Result<usize, Unavailable>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            Ok(match handle {
                Some(h) => h
                    .call(|reply| Command::KickMatching {
                        matches,
                        reason,
                        reply,
                    })
                    .await
                    .unwrap_or(0),
                None => 0,
            })
        })
    }

    fn members(
        &self,
        room: NameKey,
    ) -> BoxFuture<'_, Result<Option<Vec<MemberInfo>>, Unavailable>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            let Some(handle) = handle else {
                return Ok(None);
            };
            let members = handle.call(|reply| Command::Members { reply }).await;
            Ok(members.filter(|m| !m.is_empty()))
        })
    }
}

impl RoomHandle {
    /// Queues `command` without waiting for room in the queue.
    fn offer(&self, command: Command) -> Result<(), NotTaken> {
        self.0.try_send(command).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => NotTaken::Busy,
            mpsc::error::TrySendError::Closed(_) => NotTaken::Gone,
        })
    }
}

impl MemberChannel for RoomHandle {
    fn send(
        &self,
        member: MemberId,
        link: u64,
        text: Arc<str>,
        reference: Option<Ref>,
    ) -> Result<(), NotTaken> {
        self.offer(Command::Send {
            member,
            link,
            text,
            reference,
            at: std::time::Instant::now(),
        })
    }

    fn rename(
        &self,
        member: MemberId,
        link: u64,
        name: Result<DisplayName, RenameError>,
        reference: Option<Ref>,
    ) -> Result<(), NotTaken> {
        self.offer(Command::Rename {
            member,
            link,
            name,
            reference,
        })
    }

    fn leave(
        &self,
        member: MemberId,
        link: u64,
    ) -> Result<BoxFuture<'static, Result<bool, NotTaken>>, NotTaken> {
        let (reply, answer) = oneshot::channel();
        self.offer(Command::Leave {
            member,
            link,
            reply,
        })?;
        Ok(Box::pin(
            async move { answer.await.map_err(|_| NotTaken::Gone) },
        ))
    }

    fn disconnect(&self, member: MemberId, link: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // If the room is gone, so is the membership: nothing to do. A full queue
            // does not hold up the connection's close: the command waits on a task.
            if let Err(NotTaken::Busy) = self.offer(Command::Disconnect { member, link }) {
                // On the rooms' runtime: the connection's may be going away.
                let queue = self.0.clone();
                let send = async move {
                    let _ = queue.send(Command::Disconnect { member, link }).await;
                };
                match &self.1 {
                    Some(runtime) => drop(runtime.spawn(send)),
                    None => drop(tokio::spawn(send)),
                }
            }
        })
    }
}

enum Command {
    Join {
        entry: Entry,
        reference: Option<Ref>,
        context: Arc<ConnectionContext>,
        reply: oneshot::Sender<JoinReply>,
    },
    Send {
        member: MemberId,
        link: u64,
        text: Arc<str>,
        reference: Option<Ref>,
        /// When the connection handed the frame over (for the delivery latency).
        at: std::time::Instant,
    },
    Rename {
        member: MemberId,
        link: u64,
        /// A name the connection could not parse is still sent here, so that its error
        /// is answered in order with the member's other frames.
        name: Result<DisplayName, RenameError>,
        reference: Option<Ref>,
    },
    Leave {
        member: MemberId,
        link: u64,
        reply: oneshot::Sender<bool>,
    },
    Disconnect {
        member: MemberId,
        link: u64,
    },
    Holder {
        name: NameKey,
        reply: oneshot::Sender<Option<String>>,
    },
    TokenHolder {
        token: ResumeToken,
        reply: oneshot::Sender<Option<DisplayName>>,
    },
    Post {
        from: Arc<str>,
        text: Arc<str>,
        reply: oneshot::Sender<Option<u64>>,
    },
    Kick {
        name: NameKey,
        reason: String,
        reply: oneshot::Sender<bool>,
    },
    KickMatching {
        matches: ContextMatch,
        reason: String,
        reply: oneshot::Sender<usize>,
    },
    Members {
        reply: oneshot::Sender<Vec<MemberInfo>>,
    },
    /// Holds the room task (commands and timers) until `resume` resolves or is
    /// dropped; `paused` says it is held. For tests of races (`testing::pause_room`).
    #[cfg(any(test, feature = "testing"))]
    Pause {
        paused: oneshot::Sender<()>,
        resume: oneshot::Receiver<()>,
    },
    /// Ends the grace period of every away member now (`testing::expire_away_now`).
    #[cfg(any(test, feature = "testing"))]
    ExpireNow {
        done: oneshot::Sender<()>,
    },
    /// Panics inside the room task, as a bug would.
    #[cfg(test)]
    Fault,
}

/// The room task's end of a present member's connection.
struct Link {
    member: MemberId,
    id: u64,
    frames: QueueSender,
}

struct RoomActor {
    room: Room,
    /// Present members' links, in no particular order.
    links: Vec<Link>,
    shared: Arc<Shared>,
    /// Shared by every membership of the room (one allocation per room, not per member).
    handle: Arc<RoomHandle>,
    generation: u64,
    members: Arc<AtomicUsize>,
    rx: mpsc::Receiver<Command>,
    /// The room's events for the host's `on_event`, which runs on a task of its own;
    /// `None` when no hook observes.
    observer: Option<Observer>,
    /// The context of each member's latest connection (present or away), for the
    /// hooks and `Hub::members`.
    contexts: HashMap<MemberId, Arc<ConnectionContext>>,
    /// The members' display names as a JSON array, for welcomes and `GET /rooms/{room}`:
    /// a join appends to it; a leave or a rename marks it stale, and it is encoded
    /// anew once, when next needed.
    roster: Arc<str>,
    roster_stale: bool,
    /// The roster changed since it was last published.
    roster_changed: bool,
    /// Where the roster is published for readers outside the room's task.
    published: Arc<Mutex<Arc<str>>>,
    /// The room's display name, as listed in the directory.
    display: Arc<str>,
    /// Fresh joins the room still takes now (`Limits::room_joins_per_sec`).
    joins: Bucket,
    /// What the room may still spend on members coming and going, in deliveries
    /// (`Limits::room_presence_per_sec`); it may be in debt.
    presence: Bucket,
    /// Members' comings and goings paid for upfront, at a join, not yet gone.
    prepaid: usize,
    /// Closed while the budgets above refuse fresh joins.
    gate: Arc<JoinGate>,
    /// The member count the room is listed with in the directory (0: not listed).
    listed: usize,
    /// The present and away members the room last counted in the metrics.
    counted: (usize, usize),
}

/// Hands a room's events, in order, to a task that runs the host's `on_event` hook for
/// each: the room never waits for the hook, so a hook may call any `Hub` method, on
/// any room, its own included. The queue is unbounded (a bounded one would make the
/// room wait for a hook that waits for the room); a hook slower than its room's events
/// builds a backlog, which is logged at warn level each time it passes another 1024.
struct Observer {
    events: mpsc::UnboundedSender<Observed>,
    backlog: Arc<AtomicUsize>,
}

/// What the observing task hands the hooks.
enum Observed {
    Event(Event, Option<Arc<ConnectionContext>>),
    Left {
        name: Arc<str>,
        context: Arc<ConnectionContext>,
        reason: LeaveReason,
    },
}

/// Whom a delivered event is about.
#[derive(Clone, Copy)]
enum About {
    /// No member (a host's post).
    Nobody,
    /// This member (it joined, sent or renamed).
    Member(MemberId),
    /// This member, which left, and why.
    Departed(MemberId, LeaveReason),
}

impl Observer {
    /// Starts the observing task for `room`; it ends once the room's `Observer` is
    /// dropped and every event before it was observed.
    fn start(shared: &Shared, room: &RoomName) -> Observer {
        let (events, mut queue) = mpsc::unbounded_channel::<Observed>();
        let backlog = Arc::new(AtomicUsize::new(0));
        let (hooks, room_name, left) = (shared.hooks.clone(), room.clone(), backlog.clone());
        let observe = async move {
            while let Some(observed) = queue.recv().await {
                match observed {
                    Observed::Event(event, context) => {
                        let seen = ObservedEvent {
                            room: &room_name,
                            event: &event,
                            context: context.as_deref(),
                        };
                        hooks.on_event(seen).await;
                    }
                    Observed::Left {
                        name,
                        context,
                        reason,
                    } => {
                        let gone = MemberLeft {
                            room: &room_name,
                            name: &name,
                            context: &context,
                            reason,
                        };
                        hooks.on_member_left(gone).await;
                    }
                }
                left.fetch_sub(1, Ordering::Relaxed);
            }
        };
        let span = tracing::debug_span!(parent: None, "on_event", room = %room);
        shared.spawn(observe.instrument(span));
        Observer { events, backlog }
    }

    fn observe(&self, observed: Observed) {
        // Counted before it is sent: the observer may take it at once.
        let backlog = self.backlog.fetch_add(1, Ordering::Relaxed) + 1;
        if self.events.send(observed).is_err() {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
        } else if backlog % 1024 == 0 {
            tracing::warn!(
                backlog,
                "the on_event hook is falling behind its room's events"
            );
        }
    }
}

/// `roster` (a JSON array of names) with `name` appended.
fn roster_with(roster: &str, name: &str) -> Arc<str> {
    let name = serde_json::to_string(name).unwrap_or_else(|_| "\"\"".into());
    let head = roster.strip_suffix(']').unwrap_or("[");
    let separator = if head == "[" { "" } else { "," };
    Arc::from(format!("{head}{separator}{name}]"))
}

fn now() -> Now {
    let ts = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    Now {
        ts,
        instant: Instant::now().into_std(),
    }
}

impl Drop for RoomActor {
    /// However the room ends (freed, the hub shut down, a panic), its members and the
    /// room itself leave the metrics, and the registry's entry (if still this room's).
    fn drop(&mut self) {
        let metrics = &self.shared.metrics;
        metrics.members_present.decrement(self.counted.0 as f64);
        metrics.members_away.decrement(self.counted.1 as f64);
        self.counted = (0, 0);
        forget(&self.shared, self.room.name().key(), self.generation);
    }
}

impl RoomActor {
    async fn run(mut self) {
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let cancel = self.shared.cancel.clone();
        loop {
            let deadline = self.room.next_deadline().map(Instant::from_std);
            // Due expiries run before new commands: under a steady backlog of commands
            // away members would otherwise never expire (the timer below is not polled
            // while a command is ready, nor fired until the time driver runs), and
            // their names would stay held. So the clock is read here, and again when a
            // command wakes the room.
            let due = || deadline.is_some_and(|d| d <= Instant::now());
            if due() {
                self.expire_due();
            } else {
                match (&mut timer, deadline) {
                    (Some(t), Some(d)) if t.deadline() != d => t.as_mut().reset(d),
                    (None, Some(d)) => timer = Some(Box::pin(tokio::time::sleep_until(d))),
                    (_, None) => timer = None,
                    _ => {}
                }
                tokio::select! {
                    biased;
                    () = cancel.cancelled() => break,
                    () = async { if let Some(t) = timer.as_mut() { t.await } }, if timer.is_some() => {
                        timer = None;
                        self.expire_due();
                    }
                    cmd = self.rx.recv() => match cmd {
                        #[cfg(any(test, feature = "testing"))]
                        Some(Command::Pause { paused, resume }) => {
                            let _ = paused.send(());
                            tokio::select! {
                                _ = resume => {}
                                () = cancel.cancelled() => break,
                            }
                        }
                        Some(cmd) => {
                            if due() {
                                self.expire_due();
                            }
                            self.handle(cmd);
                        }
                        None => break,
                    },
                }
            }
            self.publish();
            if self.room.is_empty() {
                self.free();
                break;
            }
        }
        if cancel.is_cancelled() {
            for link in self.links.drain(..) {
                link.frames.end(Some(CloseFrame::going_away()));
            }
        }
    }

    /// Frees every away member whose grace ran out, announcing each `left`.
    fn expire_due(&mut self) {
        for (member, left) in self.room.expire_due(now()) {
            self.deliver(&left, About::Departed(member, LeaveReason::Expired));
        }
    }

    /// Removes the room from the registry and answers what is still queued.
    fn free(&mut self) {
        forget(&self.shared, self.room.name().key(), self.generation);
        self.rx.close();
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Join { entry, reply, .. } => {
                    let _ = reply.send(JoinReply::Retry(entry));
                }
                Command::Holder { reply, .. } => {
                    let _ = reply.send(None);
                }
                Command::TokenHolder { reply, .. } => {
                    let _ = reply.send(None);
                }
                Command::Post { reply, .. } => {
                    let _ = reply.send(None);
                }
                Command::Kick { reply, .. } => {
                    let _ = reply.send(false);
                }
                Command::KickMatching { reply, .. } => {
                    let _ = reply.send(0);
                }
                Command::Members { reply } => {
                    let _ = reply.send(Vec::new());
                }
                Command::Leave { reply, .. } => {
                    let _ = reply.send(true);
                }
                Command::Send { .. } | Command::Rename { .. } | Command::Disconnect { .. } => {}
                #[cfg(any(test, feature = "testing"))]
                Command::Pause { .. } | Command::ExpireNow { .. } => {}
                #[cfg(test)]
                Command::Fault => {}
            }
        }
    }

    fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                entry,
                reference,
                context,
                reply,
            } => {
                let answer = self.join(entry, reference, context);
                if let Err(JoinReply::Accepted(m)) = reply.send(answer) {
                    // The connection gave up waiting: treat it as a lost connection.
                    self.disconnect(m.member, m.link);
                }
            }
            // A command from a connection that no longer holds the membership (taken
            // over, cut off, kicked) is ignored: that connection only gets its close.
            Command::Send { member, link, .. } | Command::Rename { member, link, .. }
                if !self.is_current(member, link) => {}
            Command::Leave {
                member,
                link,
                reply,
            } if !self.is_current(member, link) => {
                let _ = reply.send(false);
            }
            Command::Send {
                member,
                text,
                reference,
                at,
                ..
            } => {
                let outcome = self.room.send(member, text, now());
                let sent = outcome.is_ok();
                self.answer(member, outcome, reference);
                if sent {
                    self.shared.metrics.delivered_after(at.elapsed());
                }
            }
            Command::Rename {
                member,
                name,
                reference,
                ..
            } => {
                let outcome = name.and_then(|n| self.room.rename(member, n, now()));
                self.answer(member, outcome, reference);
            }
            Command::Leave { member, reply, .. } => {
                self.unlink(member, None);
                if let Ok(left) = self.room.leave(member, now()) {
                    self.deliver(&left, About::Departed(member, LeaveReason::Left));
                }
                let _ = reply.send(true);
            }
            Command::Disconnect { member, link } => self.disconnect(member, link),
            Command::Holder { name, reply } => {
                let holder = self.room.member_by_key(&name).map(|m| m.name.to_string());
                let _ = reply.send(holder);
            }
            Command::TokenHolder { token, reply } => {
                let _ = reply.send(self.room.token_holder(&token).map(|m| m.name.clone()));
            }
            Command::Post { from, text, reply } => {
                let event = self.room.post(from, text, now());
                let _ = reply.send(Some(event.event.id()));
                self.deliver(&event, About::Nobody);
            }
            #[cfg(test)]
            Command::Fault => panic!("injected room fault"),
            // Taken by the run loop.
            #[cfg(any(test, feature = "testing"))]
            Command::Pause { .. } => {}
            #[cfg(any(test, feature = "testing"))]
            Command::ExpireNow { done } => {
                let mut at = now();
                at.instant += Duration::from_secs(365 * 24 * 3600);
                for (member, left) in self.room.expire_due(at) {
                    self.deliver(&left, About::Departed(member, LeaveReason::Expired));
                }
                let _ = done.send(());
            }
            Command::Kick {
                name,
                reason,
                reply,
            } => {
                let Some(member) = self.room.member_by_key(&name).map(|m| m.id) else {
                    let _ = reply.send(false);
                    return;
                };
                self.unlink(member, Some(CloseFrame::removed(&reason)));
                if let Ok(left) = self.room.leave(member, now()) {
                    self.deliver(&left, About::Departed(member, LeaveReason::Kicked));
                }
                let _ = reply.send(true);
            }
            Command::KickMatching {
                matches,
                reason,
                reply,
            } => {
                let chosen: Vec<MemberId> = self
                    .room
                    .members()
                    .iter()
                    .filter(|m| {
                        self.contexts.get(&m.id).is_some_and(|c| {
                            // The host's `==` runs here: a panic in it must not end the room.
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| matches(c)))
                                .unwrap_or_else(|_| {
                                    tracing::error!("kick_identity: the identity's == panicked");
                                    false
                                })
                        })
                    })
                    .map(|m| m.id)
                    .collect();
                for &member in &chosen {
                    self.unlink(member, Some(CloseFrame::removed(&reason)));
                    if let Ok(left) = self.room.leave(member, now()) {
                        self.deliver(&left, About::Departed(member, LeaveReason::Kicked));
                    }
                }
                let _ = reply.send(chosen.len());
            }
            Command::Members { reply } => {
                let members = self
                    .room
                    .members()
                    .iter()
                    .map(|m| MemberInfo {
                        name: m.name.to_string(),
                        present: m.presence == Presence::Present,
                        joined_at: std::time::UNIX_EPOCH + Duration::from_millis(m.joined_at),
                        context: self.contexts.get(&m.id).cloned().unwrap_or_default(),
                    })
                    .collect();
                let _ = reply.send(members);
            }
        }
    }

    /// Whether the room takes one more fresh join now: its presence budget owes
    /// nothing and its join rate has room.
    ///
    /// The presence budget pays for churn: a member that comes and goes costs the
    /// room two deliveries per member (its `joined` and its `left`). A join into a room
    /// that has seen no churn for a while (a full budget) is free, so a room filling
    /// up is never refused; its member pays when it leaves. While members come and
    /// go, a join pays upfront instead (and its leave is then free), so that clients
    /// looping join/leave are let in one at a time as the budget refills, not in waves
    /// that all pay later.
    fn takes_a_fresh_join(&mut self) -> bool {
        let now = Instant::now();
        if self.presence.in_credit(now) && self.joins.take(now) {
            return true;
        }
        // Refused: until the budgets allow a join again, joins are refused at the gate.
        let wait = self
            .presence
            .time_until(0.0, now)
            .max(self.joins.time_until(1.0, now))
            .min(Duration::from_secs(60));
        self.gate.close_until(&self.shared, now + wait);
        false
    }

    /// A fresh join was let in: it pays upfront if members came and went lately.
    fn pay_for_a_fresh_join(&mut self) {
        let now = Instant::now();
        if !self.presence.is_full(now) {
            self.presence.charge(self.churn_cost(), now);
            self.prepaid += 1;
        }
    }

    /// What a member coming and going costs the room now: its `joined` and its
    /// `left` to every member.
    fn churn_cost(&self) -> f64 {
        2.0 * (self.room.members().len() + 1) as f64
    }

    fn join(
        &mut self,
        entry: Entry,
        reference: Option<Ref>,
        context: Arc<ConnectionContext>,
    ) -> JoinReply {
        let at = now();
        let (member, token, since) = match entry {
            Entry::Fresh { .. } if !self.takes_a_fresh_join() => {
                return JoinReply::Refused(JoinError::RoomBusy);
            }
            Entry::Fresh { name, token } => {
                let member = self.shared.next_id();
                match self.room.join(member, name, token, at) {
                    Ok(joined) => {
                        self.pay_for_a_fresh_join();
                        self.contexts.insert(member, context);
                        // Everybody else gets `joined`; the newcomer finds it in its history.
                        self.deliver(&joined, About::Member(member));
                        (member, token, None)
                    }
                    Err(e) => return JoinReply::Refused(e),
                }
            }
            Entry::Resume { token, since, name } => match self.room.token_holder(&token) {
                // Renamed since the policy judged it: the caller asks the policy again.
                Some(m) if m.name.as_str() != name.as_str() => return JoinReply::Renamed,
                _ => match self.room.resume(&token) {
                    Ok(back) => {
                        if back.was_present {
                            self.shared.metrics.takeovers.increment(1);
                            self.unlink(back.member, Some(CloseFrame::resumed_elsewhere()));
                        }
                        self.contexts.insert(back.member, context);
                        (back.member, token, since)
                    }
                    Err(e) => return JoinReply::Refused(e),
                },
            },
        };
        let Some(name) = self.room.member(member).map(|m| m.name.to_shared()) else {
            return JoinReply::Refused(JoinError::Unavailable);
        };
        let (history, gap) = self.room.history_since(since);
        let roster = self.roster();
        let welcome = WelcomeParts {
            room: self.room.name().as_str(),
            name: &name,
            members: &roster,
            history,
            last_id: self.room.last_id(),
            resume: &token.to_string(),
            gap,
            reference,
        }
        .encode();
        self.shared
            .metrics
            .welcome_bytes
            .record(welcome.len() as f64);
        let (frames_tx, frames) = queue(self.shared.limits.outgoing_queue.max(2));
        // The queue is new and empty, so the welcome always fits.
        let _ = frames_tx.push(welcome);
        let link = self.shared.next_id();
        self.links.push(Link {
            member,
            id: link,
            frames: frames_tx,
        });
        JoinReply::Accepted(Membership {
            member,
            link,
            room: self.handle.clone(),
            frames,
        })
    }

    /// Delivers a successful operation's event to all, then acks it to `member`, or
    /// answers the error to `member` alone.
    fn answer<E: crate::error::HasErrorCode>(
        &mut self,
        member: MemberId,
        outcome: Result<Recorded, E>,
        reference: Option<Ref>,
    ) {
        match outcome {
            Ok(event) => {
                let id = event.event.id();
                self.deliver(&event, About::Member(member));
                if let Some(r) = reference {
                    self.push(member, ack_frame(r, id));
                }
            }
            Err(e) => {
                self.shared.metrics.refused(e.code().as_str());
                self.push(member, error_frame(&e, reference));
            }
        }
    }

    /// Queues `frame` for every present member without waiting for any, then hands the
    /// event to the observers with the context of the member it is `about`.
    fn deliver(&mut self, event: &Recorded, about: About) {
        let mut dropped: Vec<(MemberId, bool)> = Vec::new();
        for link in &self.links {
            match link.frames.push(event.frame.clone()) {
                Ok(()) => {}
                Err(PushError::Full) => dropped.push((link.member, true)),
                Err(PushError::Closed) => dropped.push((link.member, false)),
            }
        }
        let metrics = &self.shared.metrics;
        metrics.event(&event.event);
        metrics
            .deliveries
            .increment((self.links.len() - dropped.len()) as u64);
        for (member, slow) in dropped {
            self.drop_member(member, slow);
        }
        match &event.event {
            Event::Joined(joined) if !self.roster_stale => {
                self.roster = roster_with(&self.roster, &joined.name);
                self.roster_changed = true;
            }
            Event::Left(_) => {
                self.roster_stale = true;
                self.roster_changed = true;
                // A member that leaves pays for its coming and going, unless a join
                // paid upfront (see `takes_a_fresh_join`; which member it was does not
                // matter to the budget).
                if self.prepaid > 0 {
                    self.prepaid -= 1;
                } else {
                    let cost = self.churn_cost();
                    self.presence.charge(cost, Instant::now());
                }
            }
            Event::Joined(_) | Event::Renamed(_) => {
                self.roster_stale = true;
                self.roster_changed = true;
            }
            Event::Message(_) => {}
        }
        // What readers outside the room see is up to date before anyone hears of the
        // event (a joiner's welcome, a hook that asks the hub).
        self.publish();
        let (member, departure) = match about {
            About::Nobody => (None, None),
            About::Member(m) => (Some(m), None),
            About::Departed(m, why) => (Some(m), Some(why)),
        };
        let context = member.and_then(|m| self.contexts.get(&m)).cloned();
        let departed = match (member, departure, &event.event) {
            (Some(member), Some(reason), Event::Left(left)) => {
                let context = self.contexts.remove(&member).unwrap_or_default();
                if self.contexts.capacity() > 16
                    && self.contexts.len() < self.contexts.capacity() / 4
                {
                    self.contexts.shrink_to(self.contexts.len() * 2);
                }
                Some((left.name.clone(), context, reason))
            }
            _ => None,
        };
        if let Some(observer) = &self.observer {
            observer.observe(Observed::Event(event.event.clone(), context));
            if let Some((name, context, reason)) = departed {
                observer.observe(Observed::Left {
                    name,
                    context,
                    reason,
                });
            }
        }
    }

    /// The roster, encoded anew if a leave or a rename made it stale.
    fn roster(&mut self) -> Arc<str> {
        if self.roster_stale {
            let names: Vec<&str> = self
                .room
                .members()
                .iter()
                .map(|m| m.name.as_str())
                .collect();
            self.roster = serde_json::to_string(&names).map_or_else(|_| Arc::from("[]"), Arc::from);
            self.roster_stale = false;
        }
        self.roster.clone()
    }

    /// Publishes the member count (in the directory) and the roster, if they changed.
    fn publish(&mut self) {
        let count = self.room.members().len();
        let counted = (self.links.len(), count.saturating_sub(self.links.len()));
        if counted != self.counted {
            let metrics = &self.shared.metrics;
            let gauge = |g: &metrics::Gauge, old: usize, new: usize| {
                g.increment(new as f64 - old as f64);
            };
            gauge(&metrics.members_present, self.counted.0, counted.0);
            gauge(&metrics.members_away, self.counted.1, counted.1);
            self.counted = counted;
        }
        if count != self.listed {
            self.members.store(count, Ordering::Relaxed);
            self.shared.relist(&self.display, self.listed, count);
            self.listed = count;
        }
        if self.roster_changed {
            self.roster_changed = false;
            let roster = self.roster();
            *self
                .published
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = roster;
        }
    }

    /// Queues a frame for one member.
    fn push(&mut self, member: MemberId, frame: TextFrame) {
        let Some(link) = self.links.iter().find(|l| l.member == member) else {
            return;
        };
        match link.frames.push(frame) {
            Ok(()) => {}
            Err(PushError::Full) => self.drop_member(member, true),
            Err(PushError::Closed) => self.drop_member(member, false),
        }
    }

    /// The member's connection is too slow or gone: unlink it; it becomes away.
    fn drop_member(&mut self, member: MemberId, slow: bool) {
        if slow {
            self.shared.metrics.slow_consumers.increment(1);
            tracing::debug!(member, "slow consumer disconnected");
        }
        self.unlink(member, slow.then(CloseFrame::slow_consumer));
        self.room.disconnect(member, now());
    }

    /// Whether `link` is the connection that holds `member`'s membership now.
    fn is_current(&self, member: MemberId, link: u64) -> bool {
        self.links
            .iter()
            .any(|l| l.member == member && l.id == link)
    }

    fn disconnect(&mut self, member: MemberId, link: u64) {
        // A stale disconnect (the membership was resumed on a newer link) is ignored.
        if self.is_current(member, link) {
            self.unlink(member, None);
            self.room.disconnect(member, now());
        }
    }

    /// Ends a member's link; with a close frame, its connection closes with it.
    fn unlink(&mut self, member: MemberId, close: Option<CloseFrame>) {
        if let Some(pos) = self.links.iter().position(|l| l.member == member) {
            let link = self.links.swap_remove(pos);
            crate::room::shrink_after_peak(&mut self.links);
            link.frames.end(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::protocol::Event;
    use crate::testing::{Closed, TestClient};
    use crate::{Hub, RoomName, close_code};

    #[tokio::test]
    async fn members_of_a_failed_room_are_closed_with_1011_and_the_room_can_start_again() {
        let hub = Hub::new();
        let mut a = TestClient::connect(&hub);
        a.join("r", "A").await.expect("joins");
        let key = RoomName::parse("r").expect("valid").key().clone();
        hub.backplane().inject_fault(key).await;
        match a.recv().await {
            Err(Closed::Close(f)) => assert_eq!(f.code, close_code::INTERNAL),
            other => panic!("expected 1011, got {other:?}"),
        }
        // The dead room is gone from the list at once, and replaced on the next join.
        assert_eq!(hub.rooms().await.unwrap(), []);
        assert_eq!(hub.room("r").await.unwrap(), None);
        let mut b = TestClient::connect(&hub);
        let w = b.join("r", "B").await.expect("a fresh room");
        assert_eq!(w.members, ["B"]);
    }

    #[tokio::test]
    async fn a_join_queued_behind_the_last_leave_gets_a_new_room() {
        let hub = Hub::new();
        let mut a = TestClient::connect(&hub);
        a.join("r", "A").await.expect("joins");
        let pause = crate::testing::pause_room(&hub, "r")
            .await
            .expect("the room exists");
        a.send_json(&serde_json::json!({"type": "leave"})).await;
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        // The room is held with A's leave queued; queue B's join behind it.
        let mut b = TestClient::connect(&hub);
        b.send_json(&serde_json::json!({"type": "join", "room": "R", "name": "B"}))
            .await;
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        pause.resume();
        let w = b.welcome().await.expect("B's join lands in a new room");
        assert_eq!((w.room.as_str(), w.last_id), ("R", 1));
        assert_eq!(w.members, ["B"]);
    }

    /// A backlog of commands is queued when an away member's grace runs out: its
    /// `left` comes before the backlog's events, not after all of them.
    #[tokio::test(start_paused = true)]
    async fn due_expiries_run_before_a_backlog_of_commands() {
        use crate::Limits;
        use std::time::Duration;
        let hub = Hub::builder()
            .limits(Limits {
                resume_grace: Duration::from_secs(1),
                ping_interval: None,
                ..Limits::default()
            })
            .build();
        let mut a = TestClient::connect(&hub);
        a.join("r", "A").await.expect("joins");
        let mut b = TestClient::connect(&hub);
        b.join("r", "B").await.expect("joins");
        assert!(matches!(a.event().await, Ok(Event::Joined(_))));
        b.drop_connection();
        // B is away once A's message, sent after B's drop, has come back.
        a.send_json(&serde_json::json!({"type": "send", "text": "sync"}))
            .await;
        assert!(matches!(a.event().await, Ok(Event::Message(_))));
        for _ in 0..20 {
            tokio::task::yield_now().await;
        }
        let key = RoomName::parse("r").expect("valid").key().clone();
        // 100 posts queued without letting the room run, then B's grace runs out.
        assert_eq!(hub.backplane().queue_posts(key, 100), 100);
        tokio::time::advance(Duration::from_millis(1100)).await;
        match a.event().await {
            Ok(Event::Left(left)) => assert_eq!(&*left.name, "B"),
            other => panic!("expected B's left first, got {other:?}"),
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn joins_racing_a_room_being_freed_always_land() {
        let hub = Hub::new();
        let mut tasks = Vec::new();
        for who in ["A", "B"] {
            let hub = hub.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..200 {
                    let mut c = TestClient::connect(&hub);
                    let name = format!("{who}{i}");
                    c.join("churn", &name).await.expect("every join lands");
                    c.send_json(&serde_json::json!({"type": "leave"})).await;
                }
            }));
        }
        for t in tasks {
            t.await.expect("no panic");
        }
    }
}
