//! A node's mirror of one room: its own members of the room, and the events it has
//! delivered to them, in id order, once.
//!
//! Events arrive on the room's pub/sub channel (or from the stream, when repairing a
//! gap). The mirror delivers event `delivered + 1` and nothing else: an event that
//! arrives early waits in `early` while the gap is repaired from the stream; an event
//! already delivered is ignored. A newcomer is attached at the id its script returned
//! (its welcome ends there) and gets every event after it; its welcome is released
//! once the node's other members of the room were given the events before it (as on
//! one node, where the room hands out both at once). An answer (an `ack`, a room
//! error) waits until its member has been given the event the answer follows.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Arc;

use chatroom_core::backplane::{MemberId, PushError, QueueSender};
use chatroom_core::protocol::TextFrame;
use chatroom_core::{CloseFrame, ConnectionContext, close_code};
use tokio::sync::{Notify, oneshot};

/// What an event did, as the scripts record it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Joined,
    Message,
    Renamed,
    /// The actor left.
    Left,
    /// The actor was removed by the host.
    Kicked,
    /// The actor's grace period ran out.
    Expired,
}

impl Kind {
    pub(crate) fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "j" => Kind::Joined,
            "m" => Kind::Message,
            "r" => Kind::Renamed,
            "l" => Kind::Left,
            "k" => Kind::Kicked,
            "x" => Kind::Expired,
            _ => return None,
        })
    }

    pub(crate) fn removes_actor(self) -> bool {
        matches!(self, Kind::Left | Kind::Kicked | Kind::Expired)
    }
}

/// One event of the room's timeline.
#[derive(Debug, Clone)]
pub(crate) struct Ev {
    pub(crate) epoch: u64,
    pub(crate) id: u64,
    pub(crate) actor: MemberId,
    pub(crate) kind: Kind,
    pub(crate) reason: String,
    pub(crate) frame: TextFrame,
}

impl Ev {
    /// Parses a pub/sub payload: `E <epoch> <id> <actor> <kind> <reason length>\n`
    /// then the reason, then the frame.
    pub(crate) fn parse(payload: &[u8]) -> Option<Ev> {
        let text = std::str::from_utf8(payload).ok()?;
        let (head, rest) = text.split_once('\n')?;
        let mut fields = head.split(' ');
        if fields.next()? != "E" {
            return None;
        }
        let epoch = fields.next()?.parse().ok()?;
        let id = fields.next()?.parse().ok()?;
        let actor = fields.next()?.parse().ok()?;
        let kind = Kind::parse(fields.next()?)?;
        let reason_len: usize = fields.next()?.parse().ok()?;
        let reason = rest.get(..reason_len)?.to_owned();
        let frame = rest.get(reason_len..)?;
        Some(Ev {
            epoch,
            id,
            actor,
            kind,
            reason,
            frame: TextFrame::from(frame.to_owned()),
        })
    }
}

/// A member of this node in the room.
pub(crate) struct Local {
    pub(crate) link: u64,
    pub(crate) sender: QueueSender,
    /// The next event id this member is owed.
    pub(crate) next: u64,
    /// Answers waiting for the event they follow: (that event's id, frame).
    answers: VecDeque<(u64, TextFrame)>,
    /// A `leave` waiting for its `left` event.
    pub(crate) leaving: Option<oneshot::Sender<bool>>,
    pub(crate) context: Arc<ConnectionContext>,
    /// When it was attached: a check of links read before then says nothing about it.
    pub(crate) attached: std::time::Instant,
}

impl Local {
    pub(crate) fn new(
        link: u64,
        sender: QueueSender,
        next: u64,
        context: Arc<ConnectionContext>,
    ) -> Local {
        Local {
            link,
            sender,
            next,
            answers: VecDeque::new(),
            leaving: None,
            context,
            attached: std::time::Instant::now(),
        }
    }
}

/// What the node must do after the mirror changed: members cut off as slow
/// consumers become away (a script call), and whether the gap needs repair.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) slow: Vec<(MemberId, u64)>,
    pub(crate) repair: bool,
}

/// The metrics a node's mirrors record (the names of `chatroom-core`'s, documented in
/// `docs/operations.md`): with a store, events and deliveries are this node's.
pub(crate) struct Counted {
    events: [metrics::Counter; 4],
    deliveries: metrics::Counter,
    pub(crate) takeovers: metrics::Counter,
    delivery_seconds: metrics::Histogram,
}

impl Default for Counted {
    fn default() -> Counted {
        Counted {
            events: [
                metrics::counter!("chatroom_events_total", "type" => "joined"),
                metrics::counter!("chatroom_events_total", "type" => "message"),
                metrics::counter!("chatroom_events_total", "type" => "renamed"),
                metrics::counter!("chatroom_events_total", "type" => "left"),
            ],
            deliveries: metrics::counter!("chatroom_deliveries_total"),
            takeovers: metrics::counter!("chatroom_takeovers_total"),
            delivery_seconds: metrics::histogram!("chatroom_delivery_seconds"),
        }
    }
}

impl Counted {
    fn event(&self, kind: Kind) {
        let i = match kind {
            Kind::Joined => 0,
            Kind::Message => 1,
            Kind::Renamed => 2,
            Kind::Left | Kind::Kicked | Kind::Expired => 3,
        };
        self.events[i].increment(1);
    }
}

/// How many delivered events a mirror keeps for newcomers attached behind it.
const RING: usize = 1024;

#[derive(Default)]
pub(crate) struct Mirror {
    pub(crate) epoch: u64,
    pub(crate) delivered: u64,
    pub(crate) members: HashMap<MemberId, Local>,
    ring: VecDeque<Ev>,
    early: BTreeMap<u64, Ev>,
    /// Joins and resumes under way (subscribed, script not answered yet): the mirror
    /// stays while any is.
    pub(crate) pins: usize,
    pub(crate) repairing: bool,
    /// A repair was asked for while one ran (a subscription made again, a message
    /// out of order): it runs again once that one ends, reading from where it stopped.
    pub(crate) repair_again: bool,
    /// Woken whenever events were delivered: a join waits on it for the events its
    /// welcome follows.
    pub(crate) progress: Arc<Notify>,
    /// Delivery held by a test (`Backplane::pause`): events wait in `early`.
    #[cfg(feature = "testing")]
    pub(crate) held: bool,
    pub(crate) counted: Arc<Counted>,
    /// Sends of this node waiting for their event to be delivered here: (event id,
    /// when the connection handed the frame over), for the delivery latency.
    sends: VecDeque<(u64, std::time::Instant)>,
}

impl Mirror {
    /// An empty mirror that records into `counted`.
    pub(crate) fn new(counted: Arc<Counted>) -> Mirror {
        Mirror {
            counted,
            ..Mirror::default()
        }
    }

    /// Records the delivery latency of a send of this node once its event `id` was
    /// delivered here.
    pub(crate) fn sent(&mut self, id: u64, at: std::time::Instant) {
        if id <= self.delivered {
            self.counted
                .delivery_seconds
                .record(at.elapsed().as_secs_f64());
        } else if self.sends.len() < RING {
            // Replies come back in any order: keep the waiting sends sorted by id.
            let index = self.sends.partition_point(|(waiting, _)| *waiting < id);
            self.sends.insert(index, (id, at));
        }
    }

    /// Takes an event from the channel or the stream.
    pub(crate) fn offer(&mut self, ev: Ev, effects: &mut Effects) {
        if self.epoch == 0 || ev.epoch < self.epoch {
            // Nobody is attached yet (the first script has not answered), or an event
            // of a room that was since freed: nothing to deliver it to.
            if self.epoch == 0 {
                self.early.insert(ev.id, ev);
            }
            return;
        }
        if ev.epoch > self.epoch {
            // The room was freed and made anew while we were not looking: our members
            // missed its end. Their clients resume (and join afresh if that fails).
            self.reset(ev.epoch, 0);
        }
        if ev.id <= self.delivered {
            return;
        }
        self.early.insert(ev.id, ev);
        self.drain(effects);
    }

    /// Delivers every waiting event that is next in line; asks for repair if one is
    /// missing.
    pub(crate) fn drain(&mut self, effects: &mut Effects) {
        #[cfg(feature = "testing")]
        if self.held {
            return;
        }
        let before = self.delivered;
        self.drain_events(effects);
        if self.delivered != before {
            self.progress.notify_waiters();
        }
    }

    fn drain_events(&mut self, effects: &mut Effects) {
        while let Some(entry) = self.early.first_entry() {
            if *entry.key() <= self.delivered {
                entry.remove();
                continue;
            }
            if *entry.key() != self.delivered + 1 {
                effects.repair = true;
                return;
            }
            let ev = entry.remove();
            self.deliver(&ev, effects);
            self.delivered = ev.id;
            while let Some(&(id, at)) = self.sends.front() {
                if id > ev.id {
                    break;
                }
                self.sends.pop_front();
                self.counted
                    .delivery_seconds
                    .record(at.elapsed().as_secs_f64());
            }
            if self.ring.len() == RING {
                self.ring.pop_front();
            }
            self.ring.push_back(ev);
        }
    }

    fn deliver(&mut self, ev: &Ev, effects: &mut Effects) {
        self.counted.event(ev.kind);
        let mut delivered = 0;
        let mut gone = Vec::new();
        for (&mid, local) in &mut self.members {
            if local.next > ev.id {
                continue;
            }
            if ev.kind.removes_actor() && ev.actor == mid {
                flush(local, ev.id.saturating_sub(1));
                gone.push(mid);
                continue;
            }
            match local.sender.push(ev.frame.clone()) {
                Ok(()) => {
                    delivered += 1;
                    local.next = ev.id.saturating_add(1);
                    if !flush(local, ev.id) {
                        effects.slow.push((mid, local.link));
                        gone.push(mid);
                    }
                }
                Err(PushError::Full) => {
                    effects.slow.push((mid, local.link));
                    gone.push(mid);
                }
                Err(PushError::Closed) => gone.push(mid),
            }
        }
        self.counted.deliveries.increment(delivered);
        for mid in gone {
            let Some(local) = self.members.remove(&mid) else {
                continue;
            };
            if ev.actor == mid && ev.kind.removes_actor() {
                removed(local, ev);
            } else if effects.slow.iter().any(|(m, _)| *m == mid) {
                local.sender.end(Some(CloseFrame::slow_consumer()));
            }
        }
    }

    /// Attaches a member whose welcome ends at event `at` of room `epoch` (the welcome
    /// is already in its queue). It gets every event after `at`.
    pub(crate) fn attach(
        &mut self,
        member: MemberId,
        mut local: Local,
        epoch: u64,
        at: u64,
        effects: &mut Effects,
    ) {
        if epoch != self.epoch {
            if epoch < self.epoch {
                // The room this welcome is from is gone already.
                local.sender.end(Some(resync()));
                return;
            }
            self.reset(epoch, at);
        } else if self.members.is_empty() && self.delivered < at {
            // Nobody here needs the events up to `at`.
            self.delivered = at;
            self.ring.clear();
        }
        if let Some(old) = self.members.remove(&member) {
            self.counted.takeovers.increment(1);
            old.sender.end(Some(CloseFrame::resumed_elsewhere()));
        }
        local.next = at + 1;
        if self.delivered > at {
            // Events after the welcome were delivered here already: replay them from
            // the ring, or have the client resume if it does not reach back.
            let reaches = self.ring.front().is_some_and(|e| e.id <= at + 1);
            if !reaches {
                local.sender.end(Some(resync()));
                return;
            }
            for ev in self.ring.iter().filter(|e| e.id > at) {
                if ev.kind.removes_actor() && ev.actor == member {
                    removed(local, ev);
                    return;
                }
                if local.sender.push(ev.frame.clone()).is_err() {
                    local.sender.end(Some(CloseFrame::slow_consumer()));
                    effects.slow.push((member, local.link));
                    return;
                }
                local.next = ev.id + 1;
            }
        }
        self.members.insert(member, local);
        self.drain(effects);
    }

    /// Whether the events after `at` are all still here to replay (or none was
    /// delivered after it).
    pub(crate) fn reaches(&self, at: u64) -> bool {
        self.delivered <= at || self.ring.front().is_some_and(|e| e.id <= at + 1)
    }

    /// Forgets everything: a new epoch of the room starts at `delivered`. Members still
    /// attached (of the old epoch) are closed with 4002.
    fn reset(&mut self, epoch: u64, delivered: u64) {
        for (_, local) in self.members.drain() {
            local.sender.end(Some(resync()));
        }
        self.epoch = epoch;
        self.delivered = delivered;
        self.ring.clear();
        self.sends.clear();
        self.progress.notify_waiters();
        self.early
            .retain(|id, ev| ev.epoch == epoch && *id > delivered);
    }

    /// Queues an answer for `member` behind event `after` (0: behind nothing). A
    /// member whose queue has no room for it is cut off as a slow consumer (returned,
    /// to be made away).
    pub(crate) fn answer(
        &mut self,
        member: MemberId,
        link: u64,
        after: u64,
        frame: TextFrame,
    ) -> Option<(MemberId, u64)> {
        let local = self.members.get_mut(&member).filter(|l| l.link == link)?;
        if local.next <= after {
            local.answers.push_back((after, frame));
            return None;
        }
        match local.sender.push(frame) {
            Ok(()) | Err(PushError::Closed) => None,
            Err(PushError::Full) => {
                let local = self.members.remove(&member)?;
                local.sender.end(Some(CloseFrame::slow_consumer()));
                Some((member, link))
            }
        }
    }

    /// Closes every member with `close` (4002 when a gap cannot be repaired, 1012
    /// when the store lost the room).
    pub(crate) fn close_all(&mut self, close: CloseFrame) {
        for (_, local) in self.members.drain() {
            local.sender.end(Some(close.clone()));
        }
        self.early.clear();
        self.progress.notify_waiters();
    }

    /// Closes every member with `close` and forgets the room's position: Redis lost
    /// the data it came from.
    pub(crate) fn forget(&mut self, close: CloseFrame) {
        self.close_all(close);
        self.epoch = 0;
        self.delivered = 0;
        self.ring.clear();
        self.sends.clear();
    }

    /// Removes the member if `link` still holds it, ending its queue with `close`.
    pub(crate) fn detach(&mut self, member: MemberId, link: u64, close: Option<CloseFrame>) {
        if self.members.get(&member).is_some_and(|l| l.link == link)
            && let Some(local) = self.members.remove(&member)
        {
            if close
                .as_ref()
                .is_some_and(|c| c.code == close_code::RESUMED_ELSEWHERE)
            {
                self.counted.takeovers.increment(1);
            }
            local.sender.end(close);
        }
    }

    /// The first event id this mirror is missing, if it has events waiting beyond a
    /// gap.
    pub(crate) fn wants(&self) -> u64 {
        self.delivered + 1
    }
}

/// Delivers the answers that were waiting for event `upto`; false if the member's
/// queue had no room for one (a slow consumer).
fn flush(local: &mut Local, upto: u64) -> bool {
    while local
        .answers
        .front()
        .is_some_and(|(after, _)| *after <= upto)
    {
        if let Some((_, frame)) = local.answers.pop_front()
            && local.sender.push(frame) == Err(PushError::Full)
        {
            return false;
        }
    }
    true
}

/// Ends the queue of a member that event `ev` removed: a kick closes with 4003 and its
/// reason, a leave completes (the leaver gets no `left`), and anything else (the member
/// expired while a stale connection of it was still here) asks the client to resume.
fn removed(mut local: Local, ev: &Ev) {
    match ev.kind {
        Kind::Kicked => local.sender.end(Some(CloseFrame::removed(&ev.reason))),
        Kind::Left if local.leaving.is_some() => {
            if let Some(done) = local.leaving.take() {
                let _ = done.send(true);
            }
            local.sender.end(None);
        }
        _ => local.sender.end(Some(resync())),
    }
}

/// Close 4002: the events could not be delivered unbroken; the client resumes.
pub(crate) fn resync() -> CloseFrame {
    CloseFrame::new(close_code::RESYNC, "resync")
}
