//! The in-process backplane: a registry of rooms, each a tokio task that owns one
//! [`Room`] and performs its effects (fan-out, timers, hooks).
//!
//! The registry lock is taken only to find or create a room and to free it; messages
//! go from a connection straight to its room's task. An event is encoded once and the
//! same bytes are queued to every member. A member whose queue is full is a slow
//! consumer: it is unlinked (its connection closes with 1008) and becomes away; the
//! room never waits for it.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backplane::{
    Backplane, Entry, JoinFailure, JoinRequest, MemberChannel, Membership, RoomDetails, RoomGone,
    RoomSummary,
};
use crate::connection::CloseFrame;
use crate::error::{JoinError, RenameError};
use crate::hooks::Hooks;
use crate::limits::Limits;
use crate::name::{DisplayName, NameKey, RoomName};
use crate::protocol::{Ref, TextFrame, WelcomeParts, ack_frame, error_frame};
use crate::queue::{PushError, QueueSender, queue};
use crate::room::{MemberId, Now, Recorded, Room};
use crate::token::ResumeToken;

/// What the hub and the room tasks share.
struct Shared {
    rooms: Mutex<HashMap<NameKey, RoomEntry>>,
    limits: Arc<Limits>,
    hooks: Arc<dyn Hooks>,
    ids: AtomicU64,
    cancel: CancellationToken,
    tracker: TaskTracker,
}

impl Shared {
    fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, HashMap<NameKey, RoomEntry>> {
        // The map stays consistent even if a holder panicked: every edit is one call.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn handle(&self, key: &NameKey) -> Option<RoomHandle> {
        self.registry().get(key).map(|e| e.handle.clone())
    }
}

struct RoomEntry {
    handle: RoomHandle,
    generation: u64,
    display: Arc<str>,
    members: Arc<AtomicUsize>,
}

/// The sending side of a room task's command queue.
#[derive(Clone)]
struct RoomHandle(mpsc::Sender<Command>);

impl RoomHandle {
    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.0.send(make(tx)).await.ok()?;
        rx.await.ok()
    }
}

/// The in-process [`Backplane`].
pub(crate) struct LocalBackplane {
    shared: Arc<Shared>,
}

impl LocalBackplane {
    pub(crate) fn new(
        limits: Arc<Limits>,
        hooks: Arc<dyn Hooks>,
        cancel: CancellationToken,
        tracker: TaskTracker,
    ) -> Self {
        LocalBackplane {
            shared: Arc::new(Shared {
                rooms: Mutex::new(HashMap::new()),
                limits,
                hooks,
                ids: AtomicU64::new(1),
                cancel,
                tracker,
            }),
        }
    }

    /// The room's handle, creating the room (and its task) for a fresh join.
    fn find_or_create(&self, room: &RoomName, create: bool) -> Option<(RoomHandle, u64)> {
        let shared = &self.shared;
        let mut rooms = shared.registry();
        match rooms.entry(room.key().clone()) {
            MapEntry::Occupied(e) => Some((e.get().handle.clone(), e.get().generation)),
            MapEntry::Vacant(_) if !create => None,
            MapEntry::Vacant(v) => {
                let (tx, rx) = mpsc::channel(shared.limits.room_queue.max(1));
                let generation = shared.next_id();
                let members = Arc::new(AtomicUsize::new(0));
                let handle = RoomHandle(tx);
                v.insert(RoomEntry {
                    handle: handle.clone(),
                    generation,
                    display: room.to_shared(),
                    members: members.clone(),
                });
                let actor = RoomActor {
                    room: Room::new(room.clone(), &shared.limits),
                    links: Vec::new(),
                    shared: shared.clone(),
                    handle: Arc::new(handle.clone()),
                    generation,
                    members,
                    rx,
                };
                let task = shared.tracker.track_future(actor.run());
                tokio::spawn(task);
                Some((handle, generation))
            }
        }
    }

    fn forget(&self, room: &NameKey, generation: u64) {
        let mut rooms = self.shared.registry();
        if rooms.get(room).is_some_and(|e| e.generation == generation) {
            rooms.remove(room);
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
            } = request;
            let fresh = matches!(entry, Entry::Fresh { .. });
            let mut entry = entry;
            // A room that empties while we reach it is freed; find or create it again.
            for _ in 0..8 {
                if self.shared.cancel.is_cancelled() {
                    return Err(JoinError::Unavailable.into());
                }
                // A resume never creates a room: a freed room's tokens are void.
                let Some((handle, generation)) = self.find_or_create(&room, fresh) else {
                    return Err(JoinError::ResumeFailed.into());
                };
                let (reply, answer) = oneshot::channel();
                let command = Command::Join {
                    entry,
                    reference: reference.clone(),
                    reply,
                };
                entry = match handle.0.send(command).await {
                    Ok(()) => match answer.await {
                        Ok(JoinReply::Accepted(m)) => return Ok(m),
                        Ok(JoinReply::Refused(err)) => return Err(err.into()),
                        Ok(JoinReply::Renamed) => return Err(JoinFailure::Renamed),
                        Ok(JoinReply::Retry(e)) => e,
                        Err(_) => return Err(JoinError::Unavailable.into()),
                    },
                    Err(mpsc::error::SendError(Command::Join { entry, .. })) => entry,
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
    ) -> BoxFuture<'_, Option<DisplayName>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            handle?
                .call(|reply| Command::TokenHolder { token, reply })
                .await?
        })
    }

    fn rooms(&self) -> BoxFuture<'_, Vec<RoomSummary>> {
        let mut list: Vec<RoomSummary> = self
            .shared
            .registry()
            .values()
            .map(|e| RoomSummary {
                room: e.display.to_string(),
                members: e.members.load(Ordering::Relaxed),
            })
            .filter(|r| r.members > 0)
            .collect();
        list.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
        Box::pin(std::future::ready(list))
    }

    fn room(&self, room: NameKey) -> BoxFuture<'_, Option<RoomDetails>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move { handle?.call(|reply| Command::Details { reply }).await? })
    }

    fn holder(&self, room: NameKey, name: NameKey) -> BoxFuture<'_, Option<String>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            handle?
                .call(|reply| Command::Holder { name, reply })
                .await?
        })
    }

    fn post(&self, room: NameKey, from: Arc<str>, text: Arc<str>) -> BoxFuture<'_, Option<u64>> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            handle?
                .call(|reply| Command::Post { from, text, reply })
                .await?
        })
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

    fn kick(&self, room: NameKey, name: NameKey, reason: String) -> BoxFuture<'_, bool> {
        let handle = self.shared.handle(&room);
        Box::pin(async move {
            match handle {
                Some(h) => h
                    .call(|reply| Command::Kick {
                        name,
                        reason,
                        reply,
                    })
                    .await
                    .unwrap_or(false),
                None => false,
            }
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
    ) -> BoxFuture<'_, Result<(), RoomGone>> {
        Box::pin(async move {
            self.0
                .send(Command::Send {
                    member,
                    link,
                    text,
                    reference,
                })
                .await
                .map_err(|_| RoomGone)
        })
    }

    fn rename(
        &self,
        member: MemberId,
        link: u64,
        name: Result<DisplayName, RenameError>,
        reference: Option<Ref>,
    ) -> BoxFuture<'_, Result<(), RoomGone>> {
        Box::pin(async move {
            self.0
                .send(Command::Rename {
                    member,
                    link,
                    name,
                    reference,
                })
                .await
                .map_err(|_| RoomGone)
        })
    }

    fn leave(&self, member: MemberId, link: u64) -> BoxFuture<'_, Result<bool, RoomGone>> {
        Box::pin(async move {
            self.call(|reply| Command::Leave {
                member,
                link,
                reply,
            })
            .await
            .ok_or(RoomGone)
        })
    }

    fn disconnect(&self, member: MemberId, link: u64) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // If the room is gone, so is the membership: nothing to do.
            let _ = self.0.send(Command::Disconnect { member, link }).await;
        })
    }
}

enum Command {
    Join {
        entry: Entry,
        reference: Option<Ref>,
        reply: oneshot::Sender<JoinReply>,
    },
    Send {
        member: MemberId,
        link: u64,
        text: Arc<str>,
        reference: Option<Ref>,
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
    Details {
        reply: oneshot::Sender<Option<RoomDetails>>,
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

impl RoomActor {
    async fn run(mut self) {
        let span = tracing::debug_span!("room", room = %self.room.name());
        let _enter = span.enter();
        let mut timer: Option<Pin<Box<Sleep>>> = None;
        let cancel = self.shared.cancel.clone();
        loop {
            let deadline = self.room.next_deadline().map(Instant::from_std);
            match (&mut timer, deadline) {
                (Some(t), Some(d)) if t.deadline() != d => t.as_mut().reset(d),
                (None, Some(d)) => timer = Some(Box::pin(tokio::time::sleep_until(d))),
                (_, None) => timer = None,
                _ => {}
            }
            tokio::select! {
                biased;
                () = cancel.cancelled() => break,
                cmd = self.rx.recv() => match cmd {
                    Some(cmd) => self.handle(cmd).await,
                    None => break,
                },
                () = async { if let Some(t) = timer.as_mut() { t.await } }, if timer.is_some() => {
                    timer = None;
                    for left in self.room.expire_due(now()) {
                        self.deliver(&left, None).await;
                    }
                }
            }
            self.members
                .store(self.room.members().len(), Ordering::Relaxed);
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

    /// Removes the room from the registry and answers what is still queued.
    fn free(&mut self) {
        {
            let mut rooms = self.shared.registry();
            if rooms
                .get(self.room.name().key())
                .is_some_and(|e| e.generation == self.generation)
            {
                rooms.remove(self.room.name().key());
            }
            self.rx.close();
        }
        while let Ok(cmd) = self.rx.try_recv() {
            match cmd {
                Command::Join { entry, reply, .. } => {
                    let _ = reply.send(JoinReply::Retry(entry));
                }
                Command::Details { reply } => {
                    let _ = reply.send(None);
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
                Command::Leave { reply, .. } => {
                    let _ = reply.send(true);
                }
                Command::Send { .. } | Command::Rename { .. } | Command::Disconnect { .. } => {}
                #[cfg(test)]
                Command::Fault => {}
            }
        }
    }

    async fn handle(&mut self, cmd: Command) {
        match cmd {
            Command::Join {
                entry,
                reference,
                reply,
            } => {
                let answer = self.join(entry, reference).await;
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
                ..
            } => {
                let outcome = self.room.send(member, text, now());
                self.answer(member, outcome, reference).await;
            }
            Command::Rename {
                member,
                name,
                reference,
                ..
            } => {
                let outcome = name.and_then(|n| self.room.rename(member, n, now()));
                self.answer(member, outcome, reference).await;
            }
            Command::Leave { member, reply, .. } => {
                self.unlink(member, None);
                if let Ok(left) = self.room.leave(member, now()) {
                    self.deliver(&left, None).await;
                }
                let _ = reply.send(true);
            }
            Command::Disconnect { member, link } => self.disconnect(member, link),
            Command::Details { reply } => {
                let _ = reply.send(Some(RoomDetails {
                    room: self.room.name().to_string(),
                    members: self
                        .room
                        .members()
                        .iter()
                        .map(|m| m.name.to_string())
                        .collect(),
                }));
            }
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
                self.deliver(&event, None).await;
            }
            #[cfg(test)]
            Command::Fault => panic!("injected room fault"),
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
                    self.deliver(&left, None).await;
                }
                let _ = reply.send(true);
            }
        }
    }

    async fn join(&mut self, entry: Entry, reference: Option<Ref>) -> JoinReply {
        let at = now();
        let (member, token, since) = match entry {
            Entry::Fresh { name, token } => {
                let member = self.shared.next_id();
                match self.room.join(member, name, token, at) {
                    Ok(joined) => {
                        // Everybody else gets `joined`; the newcomer finds it in its history.
                        self.deliver(&joined, None).await;
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
                            self.unlink(back.member, Some(CloseFrame::resumed_elsewhere()));
                        }
                        (back.member, token, since)
                    }
                    Err(e) => return JoinReply::Refused(e),
                },
            },
        };
        let Ok(snapshot) = self.room.snapshot(member, since) else {
            return JoinReply::Refused(JoinError::Unavailable);
        };
        let welcome = WelcomeParts {
            room: &snapshot.room,
            name: &snapshot.name,
            members: snapshot.members,
            history: snapshot.history,
            last_id: snapshot.last_id,
            resume: &token.to_string(),
            gap: snapshot.gap,
            reference,
        }
        .encode();
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
    async fn answer<E: crate::error::HasErrorCode>(
        &mut self,
        member: MemberId,
        outcome: Result<Recorded, E>,
        reference: Option<Ref>,
    ) {
        match outcome {
            Ok(event) => {
                let id = event.event.id();
                self.deliver(&event, None).await;
                if let Some(r) = reference {
                    self.push(member, ack_frame(r, id));
                }
            }
            Err(e) => self.push(member, error_frame(&e, reference)),
        }
    }

    /// Queues `frame` for every present member (but `except`), without waiting for any.
    async fn deliver(&mut self, event: &Recorded, except: Option<MemberId>) {
        let mut dropped: Vec<(MemberId, bool)> = Vec::new();
        for link in &self.links {
            if Some(link.member) == except {
                continue;
            }
            match link.frames.push(event.frame.clone()) {
                Ok(()) => {}
                Err(PushError::Full) => dropped.push((link.member, true)),
                Err(PushError::Closed) => dropped.push((link.member, false)),
            }
        }
        for (member, slow) in dropped {
            self.drop_member(member, slow);
        }
        let hooks = &self.shared.hooks;
        let name = self.room.name();
        crate::hooks::guarded("on_event", || hooks.on_event(name, &event.event)).await;
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
            link.frames.end(close);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use futures_util::future::BoxFuture;

    use crate::protocol::Event;
    use crate::testing::{Closed, TestClient};
    use crate::{Hooks, Hub, RoomName, close_code};

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
        // The dead room is replaced on the next join.
        let mut b = TestClient::connect(&hub);
        let w = b.join("r", "B").await.expect("a fresh room");
        assert_eq!(w.members, ["B"]);
    }

    /// Holds the room task inside `on_event` for a `left` until the gate opens.
    struct Gate(Arc<tokio::sync::Semaphore>);

    impl Hooks for Gate {
        fn on_event<'a>(&'a self, _: &'a RoomName, event: &'a Event) -> BoxFuture<'a, ()> {
            Box::pin(async move {
                if matches!(event, Event::Left(_)) {
                    let _ = self.0.acquire().await.map(|p| p.forget());
                }
            })
        }
    }

    #[tokio::test]
    async fn a_join_queued_behind_the_last_leave_gets_a_new_room() {
        let gate = Arc::new(tokio::sync::Semaphore::new(0));
        let hub = Hub::builder().hooks(Gate(gate.clone())).build();
        let mut a = TestClient::connect(&hub);
        a.join("r", "A").await.expect("joins");
        a.send_json(&serde_json::json!({"type": "leave"})).await;
        // The room task is now held in the hook for A's `left`; queue B's join behind it.
        let mut b = TestClient::connect(&hub);
        b.send_json(&serde_json::json!({"type": "join", "room": "R", "name": "B"}))
            .await;
        for _ in 0..50 {
            tokio::task::yield_now().await;
        }
        gate.add_permits(1);
        let w = b.welcome().await.expect("B's join lands in a new room");
        assert_eq!((w.room.as_str(), w.last_id), ("R", 1));
        assert_eq!(w.members, ["B"]);
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
