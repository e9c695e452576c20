//! One node of the cluster: the [`Backplane`] the hub talks to.
//!
//! Redis decides (one script per room operation); the node fans out. It subscribes to
//! a room's channel before its first join or resume there, mirrors the room's events
//! to its own members ([`Mirror`]), repairs gaps from the room's stream, renews its
//! lease, and reaps dead nodes and expired members with everybody else.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use chatroom_core::backplane::{
    Backplane, BackplaneContext, ContextMatch, Entry, JoinFailure, JoinRequest, MemberChannel,
    MemberId, MemberInfo, Membership, NotTaken, Observers, StoreHealth, Unavailable, queue,
};
use chatroom_core::error::HasErrorCode;
use chatroom_core::protocol::{Event, Ref, TextFrame, WelcomeParts, ack_frame, error_frame};
use chatroom_core::{
    CloseFrame, ConnectionContext, DisplayName, FrameError, JoinError, LeaveReason, Limits,
    NameKey, RenameError, ResumeToken, RoomCursor, RoomDetails, RoomName, RoomSummary, RoomsPage,
    close_code,
};
use futures_util::StreamExt;
use futures_util::future::BoxFuture;
use redis::Value;
use redis::aio::PubSubSink;
use redis::cluster_async::ClusterConnection;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::mirror::{Effects, Ev, Kind, Local, Mirror, resync};
use crate::store::{
    self, Con, Layout, PartitionKeys, Reply, RoomKeys, Scripts, room_call, room_id,
};
use crate::{Options, Unreachable};

/// What every task of the node shares.
pub(crate) struct Shared {
    /// This node's id: random per start, and again after its lease was reaped.
    node: Mutex<String>,
    /// The id of the Redis data set of each partition (see `cr:{cr.N}:instance`);
    /// adopted anew after Redis lost that partition's data.
    instances: Mutex<Vec<String>>,
    /// How many partitions, and whether Redis is a cluster.
    pub(crate) layout: Layout,
    /// Rooms in each partition, as last read (for `max_rooms` across partitions).
    room_counts: Mutex<Option<(tokio::time::Instant, Vec<u64>)>>,
    /// The node's lease in each partition (each is reaped by its own leases: on a
    /// Redis Cluster, a master that does not answer stops only its partitions' rooms).
    leases: Mutex<Vec<Lease>>,
    /// [`StoreHealth`] as an index of [`HEALTH`].
    health: AtomicU8,
    /// The cluster refused this node (other room rules): it serves nothing.
    refused: AtomicBool,
    /// This node's room rules, as the cluster stores them.
    rules: String,
    /// A test's "crash": the node stops calling Redis at all.
    pub(crate) crashed: CancellationToken,
    /// One reaping round at a time.
    reaping: Arc<tokio::sync::Semaphore>,
    subscriber: crate::Subscriber,
    pub(crate) con: Con,
    pub(crate) scripts: Scripts,
    pub(crate) options: Options,
    pub(crate) limits: Arc<Limits>,
    pub(crate) observers: Observers,
    /// Cancelled when the hub shuts down or the node "crashes": the node's loops stop.
    pub(crate) cancel: CancellationToken,
    pub(crate) context: BackplaneContext,
    /// Redis `TIME` minus this node's clock, in ms: to give scripts deadlines.
    pub(crate) offset_ms: AtomicI64,
    pub(crate) ids: AtomicU64,
    mirrors: Mutex<HashMap<String, Arc<Mutex<Mirror>>>>,
    /// What the mirrors record in the metrics.
    counted: Arc<crate::mirror::Counted>,
    slow_consumers: metrics::Counter,
    /// This node's rooms and present members (set every `check_interval`).
    gauges: (metrics::Gauge, metrics::Gauge),
    welcome_bytes: metrics::Histogram,
    subs: tokio::sync::Mutex<Subs>,
    /// Members of this node by (room, member): the room's display name, for hooks.
    rooms: Mutex<HashMap<String, RoomName>>,
}

/// The node's pub/sub connection: where to subscribe, and to what.
struct Subs {
    sink: Option<Sink>,
    channels: HashSet<String>,
}

/// Where subscriptions are made: a single Redis's pub/sub connection, or a cluster
/// connection (sharded channels, each on the master of its room's slot).
enum Sink {
    Single(PubSubSink),
    Cluster(ClusterConnection),
}

impl Sink {
    async fn subscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Sink::Single(sink) => sink.subscribe(channel).await,
            Sink::Cluster(con) => con.ssubscribe(channel).await,
        }
    }

    async fn unsubscribe(&mut self, channel: &str) -> redis::RedisResult<()> {
        match self {
            Sink::Single(sink) => sink.unsubscribe(channel).await,
            Sink::Cluster(con) => con.sunsubscribe(channel).await,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every edit under these locks is a single step: the state stays consistent.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Shared {
    pub(crate) fn new(backplane: crate::RedisBackplane, context: BackplaneContext) -> Arc<Shared> {
        let crate::RedisBackplane {
            crashed,
            subscriber,
            con,
            layout,
            instances,
            offset_ms,
            options,
        } = backplane;
        Arc::new(Shared {
            node: Mutex::new(crate::random_hex()),
            instances: Mutex::new(instances),
            layout,
            room_counts: Mutex::new(None),
            leases: Mutex::new(vec![
                Lease::default();
                usize::from(layout.partitions.max(1))
            ]),
            health: AtomicU8::new(0),
            refused: AtomicBool::new(false),
            rules: store::rules(context.limits(), layout),
            crashed,
            reaping: Arc::new(tokio::sync::Semaphore::new(1)),
            subscriber,
            con,
            scripts: Scripts::new(layout),
            options,
            limits: context.limits().clone(),
            observers: context.observers(),
            cancel: context.shutdown().child_token(),
            context,
            offset_ms: AtomicI64::new(offset_ms),
            ids: AtomicU64::new(1),
            mirrors: Mutex::new(HashMap::new()),
            counted: Arc::default(),
            slow_consumers: metrics::counter!("chatroom_slow_consumers_total"),
            gauges: (
                metrics::gauge!("chatroom_rooms"),
                metrics::gauge!("chatroom_members", "state" => "present"),
            ),
            welcome_bytes: metrics::histogram!("chatroom_welcome_bytes"),
            subs: tokio::sync::Mutex::new(Subs {
                sink: None,
                channels: HashSet::new(),
            }),
            rooms: Mutex::new(HashMap::new()),
        })
    }

    fn next_link(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// A deadline for a call made now, in Redis time.
    fn deadline(&self) -> u64 {
        let local = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        let timeout = self.options.call_timeout.as_millis() as i64;
        (local + self.offset_ms.load(Ordering::Relaxed) + timeout).max(1) as u64
    }

    fn stream_cap(&self) -> usize {
        self.limits.history.max(1) * 2
    }

    fn grace_ms(&self) -> u64 {
        self.limits.resume_grace.as_millis() as u64
    }

    fn node(&self) -> String {
        lock(&self.node).clone()
    }

    /// The data-set id this node knows for `partition`.
    fn instance(&self, partition: u16) -> String {
        lock(&self.instances)
            .get(usize::from(partition))
            .cloned()
            .unwrap_or_default()
    }

    fn keys<'a>(&self, room: &'a str) -> RoomKeys<'a> {
        RoomKeys::new(self.layout, room)
    }

    fn call<'a>(&'a self, script: &'a redis::Script, room: &str) -> Call<'a> {
        let keys = self.keys(room);
        let partition = keys.partition().0;
        Call {
            invocation: room_call(
                script,
                &keys,
                &self.node(),
                &self.instance(partition),
                self.deadline(),
                self.stream_cap(),
            ),
            partition,
        }
    }

    async fn run(&self, op: &'static str, call: &Call<'_>) -> Result<Reply, Unreachable> {
        if self.lease(call.partition).renewed.is_none() {
            self.first_lease(call.partition).await;
        }
        if self.crashed.is_cancelled()
            || self.refused.load(Ordering::Relaxed)
            || !self.lease_holds(call.partition)
        {
            return Err(Unreachable);
        }
        let (sent_as, sent_with) = (self.node(), self.instance(call.partition));
        let value = store::run(op, &call.invocation, &self.con, self.options.call_timeout).await?;
        let reply = Reply::new(value);
        if matches!(reply.status().as_str(), "late" | "lost" | "reaped") {
            tracing::debug!(op, status = %reply.status(), partition = call.partition, "a call was refused");
        }
        match reply.status().as_str() {
            // Past the deadline: the call's caller has already given up.
            "late" => Err(Unreachable),
            "lost" => {
                self.data_lost(call.partition, &sent_with).await;
                Err(Unreachable)
            }
            "reaped" => {
                self.reaped(&sent_as);
                Err(Unreachable)
            }
            _ => Ok(reply),
        }
    }

    /// The node's lease in `partition`, as it stands.
    fn lease(&self, partition: u16) -> Lease {
        lock(&self.leases)
            .get(usize::from(partition))
            .copied()
            .unwrap_or_default()
    }

    /// Whether this node's lease in `partition` still holds by its own clock. Once it
    /// does not, the others may take the node for dead there at any moment: it must
    /// neither deliver nor act in that partition's rooms until a heartbeat renews it
    /// (or tells it that it was reaped).
    pub(crate) fn lease_holds(&self, partition: u16) -> bool {
        let mut leases = lock(&self.leases);
        let Some(lease) = leases.get_mut(usize::from(partition)) else {
            return false;
        };
        match lease.renewed {
            Some(at) if at.elapsed() < self.options.lease => return true,
            // Not started yet: nothing to deliver, nothing to suspend.
            None => return false,
            Some(_) => {}
        }
        // Under the lock, so that a renewal cannot slip in between.
        if !lease.suspended {
            lease.suspended = true;
            tracing::warn!(
                partition,
                "this node's lease ran out by its own clock: it delivers nothing in \
                 these rooms until Redis renews it"
            );
            self.degrade("the node's lease ran out");
        }
        false
    }

    /// Waits (a little) for the node's first heartbeat in `partition`: a call made
    /// before it would act for a node that holds no lease, which nobody could reap.
    async fn first_lease(&self, partition: u16) {
        let give_up = tokio::time::Instant::now() + self.options.call_timeout * 4;
        while self.lease(partition).renewed.is_none()
            && tokio::time::Instant::now() < give_up
            && !self.gave_up()
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) fn health(&self) -> StoreHealth {
        HEALTH
            .get(usize::from(self.health.load(Ordering::Relaxed)))
            .copied()
            .unwrap_or(StoreHealth::Lost)
    }

    /// Records the store's health as the heartbeat finds it; a change is logged once,
    /// with its cause. A refused node stays `lost`.
    fn set_health(&self, health: StoreHealth, cause: &str) {
        let index = HEALTH.iter().position(|h| *h == health).unwrap_or(2) as u8;
        let lost = HEALTH.len() as u8 - 1;
        let refused = self.refused.load(Ordering::Relaxed);
        let changed = self
            .health
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |before| {
                let stays = before == index || (before == lost && refused);
                (!stays).then_some(index)
            });
        if changed.is_ok() {
            Self::log_health(health, cause);
        }
    }

    /// `connected` becomes `degraded` (a lease ran out between two heartbeats); a worse
    /// health stays until the heartbeat says otherwise.
    fn degrade(&self, cause: &str) {
        let connected = 0u8;
        let degraded = 1u8;
        if self
            .health
            .compare_exchange(connected, degraded, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            Self::log_health(StoreHealth::Degraded, cause);
        }
    }

    fn log_health(health: StoreHealth, cause: &str) {
        match health {
            StoreHealth::Connected => tracing::info!(cause, "store health: connected"),
            StoreHealth::Degraded => tracing::warn!(cause, "store health: degraded"),
            _ => tracing::error!(cause, "store health: lost"),
        }
    }

    /// The others took this node for dead (a long pause?) and made its members away:
    /// its connections close so that their clients resume, and the node goes on under
    /// a new id (the old one stays dead, and no script acts under it any more).
    fn reaped(&self, old: &str) {
        {
            let mut node = lock(&self.node);
            if *node != old {
                return;
            }
            tracing::error!("this node's lease was reaped: its members resume");
            *node = crate::random_hex();
            // The new id holds no lease anywhere yet: nothing is done under it until
            // the next heartbeat has listed it in every partition.
            for lease in lock(&self.leases).iter_mut() {
                lease.renewed = None;
                lease.suspended = false;
            }
        }
        self.close_everything(CloseFrame::new(
            close_code::SERVICE_RESTART,
            "node lease lost; resume",
        ));
    }

    /// Redis lost the data of `partition` (its instance id changed or is gone; on a
    /// Redis Cluster, a master that restarted empty loses only its own partitions):
    /// every membership of this node in that partition's rooms is void (its token
    /// too). Members close with 1012 and join afresh; the node adopts the data set
    /// Redis has now. Names are never re-asserted from memory.
    async fn data_lost(&self, partition: u16, sent_with: &str) {
        if self.instance(partition) != sent_with {
            // A late answer to a call made before the node adopted the new data set.
            return;
        }
        // Adopt the data set Redis has now before the clients hear about it, so that
        // their fresh joins find the node ready.
        let mut con = self.con.clone();
        let key = PartitionKeys(partition).instance();
        let adopt = async {
            let _: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(crate::random_hex())
                .arg("NX")
                .query_async(&mut con)
                .await?;
            redis::cmd("GET")
                .arg(&key)
                .query_async::<String>(&mut con)
                .await
        };
        let adopted = tokio::time::timeout(self.options.call_timeout, adopt).await;
        {
            // Only the caller that swaps the id ends the memberships: several calls may
            // find the loss at once, and members who joined anew since then hold
            // memberships of the new data set.
            let mut instances = lock(&self.instances);
            let Some(known) = instances.get_mut(usize::from(partition)) else {
                return;
            };
            if *known != sent_with {
                return;
            }
            if let Ok(Ok(instance)) = adopted {
                *known = instance;
            }
        }
        // The node is not listed in the new data set until a heartbeat there: were it
        // to crash before, nobody would reap what it did in the partition. Nothing is
        // done there until it is listed, which is done now, before the members hear.
        {
            let mut leases = lock(&self.leases);
            if let Some(lease) = leases.get_mut(usize::from(partition)) {
                lease.renewed = None;
                lease.suspended = false;
            }
        }
        let (node, instance) = (self.node(), self.instance(partition));
        let sent = tokio::time::Instant::now();
        let interval = self.options.lease / 3;
        let listed = self
            .heartbeat_call(partition, &node, &instance, self.options.lease, interval)
            .await;
        if matches!(&listed, Ok(reply) if reply.status() == "ok") && self.node() == node {
            let mut leases = lock(&self.leases);
            if let Some(lease) = leases.get_mut(usize::from(partition))
                && lease.renewed.is_none()
            {
                lease.renewed = Some(sent);
            }
        }
        tracing::error!(
            partition,
            "Redis lost this cluster's data: every membership here in its rooms ends with 1012"
        );
        let mirrors: Vec<_> = lock(&self.mirrors)
            .iter()
            .filter(|(room, _)| self.layout.of(room) == partition)
            .map(|(_, mirror)| mirror.clone())
            .collect();
        let close = CloseFrame::new(
            close_code::SERVICE_RESTART,
            "state lost; resume or join afresh",
        );
        for mirror in mirrors {
            // Room epochs restart too: what the mirror knew is of another data set.
            lock(&mirror).forget(close.clone());
        }
    }

    fn mirror(&self, room: &str) -> Arc<Mutex<Mirror>> {
        lock(&self.mirrors)
            .entry(room.to_owned())
            .or_insert_with(|| Arc::new(Mutex::new(Mirror::new(self.counted.clone()))))
            .clone()
    }

    /// Sets the gauges of this node's rooms and present members (its away members
    /// belong to no node: the store keeps them).
    fn count_members(&self) {
        let mirrors: Vec<_> = lock(&self.mirrors).values().cloned().collect();
        let present: usize = mirrors.iter().map(|m| lock(m).members.len()).sum();
        self.gauges.0.set(mirrors.len() as f64);
        self.gauges.1.set(present as f64);
    }

    fn existing_mirror(&self, room: &str) -> Option<Arc<Mutex<Mirror>>> {
        lock(&self.mirrors).get(room).cloned()
    }

    /// Subscribes to the room's channel (awaiting Redis's confirmation) and pins its
    /// mirror, before a join or resume: every event after the script's is then seen.
    async fn pin(&self, room: &str) -> Result<Arc<Mutex<Mirror>>, Unreachable> {
        let partition = self.layout.of(room);
        if self.lease(partition).renewed.is_some() && !self.lease_holds(partition) {
            // Its master has not answered for a lease: the join's script would not be
            // sent anyway, and a subscription that waits for that master would hold
            // up every other room's.
            return Err(Unreachable);
        }
        // Right after the node starts (or while it reconnects), wait a little for its
        // pub/sub connection.
        let give_up = tokio::time::Instant::now() + self.options.call_timeout * 4;
        let mut subs = loop {
            let subs = self.subs.lock().await;
            if subs.sink.is_some() || tokio::time::Instant::now() >= give_up {
                break subs;
            }
            drop(subs);
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        if subs.sink.is_none() {
            // Reconnecting: a subscription made now could not be confirmed.
            return Err(Unreachable);
        }
        let mirror = self.mirror(room);
        lock(&mirror).pins += 1;
        let channel = self.keys(room).channel();
        if !subs.channels.contains(&channel) {
            let subscribed = match subs.sink.as_mut() {
                Some(sink) => {
                    tokio::time::timeout(self.options.call_timeout, sink.subscribe(&channel))
                        .await
                        .map_err(|_| Unreachable)
                        .and_then(|r| r.map_err(|_| Unreachable))
                }
                None => Err(Unreachable),
            };
            if subscribed.is_err() {
                lock(&mirror).pins -= 1;
                return Err(Unreachable);
            }
            subs.channels.insert(channel);
        }
        Ok(mirror)
    }

    fn unpin(&self, mirror: &Mutex<Mirror>) {
        let mut m = lock(mirror);
        m.pins = m.pins.saturating_sub(1);
    }

    /// Applies what a mirror change asks for: slow consumers become away, gaps are
    /// repaired.
    fn effects(self: &Arc<Self>, room: &str, effects: Effects) {
        self.slow_consumers.increment(effects.slow.len() as u64);
        for (member, link) in effects.slow {
            let shared = self.clone();
            let room = room.to_owned();
            self.context.spawn(async move {
                shared.disconnect_member(&room, member, link, None).await;
            });
        }
        if effects.repair {
            self.repair(room);
        }
    }

    /// Reads the room's stream from the first event the mirror misses and delivers in
    /// order; closes the room's members here with 4002 if the stream no longer reaches
    /// back that far.
    fn repair(self: &Arc<Self>, room: &str) {
        if !self.lease_holds(self.layout.of(room)) {
            // Repaired when the lease is renewed (every room is, then).
            return;
        }
        let Some(mirror) = self.existing_mirror(room) else {
            return;
        };
        {
            let mut m = lock(&mirror);
            if m.repairing {
                m.repair_again = true;
                return;
            }
            m.repairing = true;
        }
        let shared = self.clone();
        let room = room.to_owned();
        self.context.spawn(async move {
            let partition = shared.layout.of(&room);
            let sent_with = shared.instance(partition);
            let epoch = lock(&mirror).epoch;
            let mut outcome = shared.repair_once(&room, &mirror).await;
            let suspect = match &outcome {
                Ok(events) => !events.is_empty(),
                Err(Repair::Unrepairable) => true,
                Err(Repair::Unreachable) => false,
            };
            if suspect && shared.data_set_changed(partition, &sent_with).await {
                // Not a gap, and not this room's events: Redis lost everything (a
                // restart without its data), and every membership of this node in the
                // partition ends with 1012, not 4002.
                shared.data_lost(partition, &sent_with).await;
                outcome = Ok(Vec::new());
            }
            let mut effects = Effects::default();
            {
                let mut m = lock(&mirror);
                m.repairing = false;
                effects.repair = std::mem::take(&mut m.repair_again);
                match outcome {
                    // Delivered once the lease is renewed (which repairs every room).
                    _ if !shared.lease_holds(partition) => {}
                    // The mirror moved on meanwhile (a welcome of the room made anew):
                    // what was read is of the room before.
                    _ if m.epoch != epoch => effects.repair = m.epoch != 0,
                    Ok(events) => {
                        for ev in events {
                            m.offer(ev, &mut effects);
                        }
                    }
                    Err(Repair::Unrepairable) => {
                        tracing::warn!(room, "a gap could not be repaired: members resume");
                        m.close_all(resync());
                    }
                    Err(Repair::Unreachable) => effects.repair = true,
                }
            }
            if effects.repair {
                if shared.gave_up() {
                    return;
                }
                // Still missing something (or Redis did not answer): try again shortly.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            shared.effects(&room, effects);
        });
    }

    async fn repair_once(&self, room: &str, mirror: &Mutex<Mirror>) -> Result<Vec<Ev>, Repair> {
        let (epoch, from) = {
            let m = lock(mirror);
            (m.epoch, m.wants())
        };
        if epoch == 0 {
            return Ok(Vec::new());
        }
        // The counter first: whatever it counts is in the stream by the time it is read
        // (unless trimmed away), so an empty read below it is a real gap.
        let mut meta_con = self.con.clone();
        let meta: (Option<u64>, Option<u64>) = match store::command(
            "repair",
            self.options.call_timeout,
            redis::cmd("HMGET")
                .arg(self.keys(room).meta())
                .arg("epoch")
                .arg("seq")
                .query_async(&mut meta_con),
        )
        .await
        {
            Ok(Ok(v)) => v,
            _ => return Err(Repair::Unreachable),
        };
        let mut con = self.con.clone();
        let mut xrange = redis::cmd("XRANGE");
        xrange
            .arg(self.keys(room).stream())
            .arg(format!("{from}-1"))
            .arg("+")
            .arg("COUNT")
            .arg(10_000);
        let read = xrange.query_async::<Value>(&mut con);
        let value = match store::command("repair", self.options.call_timeout, read).await {
            Ok(Ok(v)) => v,
            _ => return Err(Repair::Unreachable),
        };
        let events = parse_entries(&value, epoch);
        match meta {
            // The room's counter went backwards (a failover lost its tail): what the
            // members here saw is not what Redis has.
            (Some(e), Some(seq)) if e == epoch && seq + 1 < from => Err(Repair::Unrepairable),
            (Some(e), Some(seq)) if e == epoch => {
                // The stream must start at `from` if anything from there on exists.
                match events.first() {
                    Some(first) if first.id > from => Err(Repair::Unrepairable),
                    None if seq >= from => Err(Repair::Unrepairable),
                    _ => Ok(events),
                }
            }
            // The room was freed (and maybe made anew): the members here missed its end.
            _ => Err(Repair::Unrepairable),
        }
    }

    /// Whether Redis no longer holds the data set `sent_with` (it restarted empty, or
    /// was flushed). False when it cannot be told.
    async fn data_set_changed(&self, partition: u16, sent_with: &str) -> bool {
        let mut con = self.con.clone();
        let mut get = redis::cmd("GET");
        get.arg(PartitionKeys(partition).instance());
        let get = get.query_async::<Option<String>>(&mut con);
        match store::command("instance", self.options.call_timeout, get).await {
            Ok(Ok(now)) => now.as_deref() != Some(sent_with),
            _ => false,
        }
    }

    /// Ends every membership of this node (Redis lost its data, or the node its lease).
    fn close_everything(&self, close: CloseFrame) {
        let mirrors: Vec<_> = lock(&self.mirrors).values().cloned().collect();
        for mirror in mirrors {
            lock(&mirror).close_all(close.clone());
        }
    }

    /// Ends every membership of this node in the rooms of `partition`.
    fn close_partition(&self, partition: u16, close: CloseFrame) {
        let mirrors: Vec<_> = lock(&self.mirrors)
            .iter()
            .filter(|(room, _)| self.layout.of(room) == partition)
            .map(|(_, mirror)| mirror.clone())
            .collect();
        for mirror in mirrors {
            lock(&mirror).close_all(close.clone());
        }
    }

    /// The member's connection ended (or was cut off): it becomes away. Retried (each
    /// time with a fresh deadline) until Redis answers: a member must not stay present
    /// without a connection. A node that crashed, or whose lease was reaped, leaves it
    /// to the reaper. `tried` is told after the first attempt, whatever its outcome:
    /// the connection's close frame waits for that, not for Redis to come back.
    async fn disconnect_member(
        &self,
        room: &str,
        member: MemberId,
        link: u64,
        mut tried: Option<oneshot::Sender<()>>,
    ) {
        if let Some(mirror) = self.existing_mirror(room) {
            lock(&mirror).detach(member, link, None);
        }
        let mut attempt = 0u64;
        loop {
            let mut call = self.call(&self.scripts.disconnect, room);
            call.arg(member).arg(link).arg(self.grace_ms()).arg("");
            let done = self.run("disconnect", &call).await.is_ok() || self.gave_up();
            if let Some(tried) = tried.take() {
                let _ = tried.send(());
            }
            if done {
                return;
            }
            attempt += 1;
            if attempt.is_multiple_of(50) {
                tracing::warn!(room, member, "still cannot mark a member away; retrying");
            }
            tokio::time::sleep(Duration::from_millis((100 * attempt).min(1000))).await;
        }
    }

    /// A join or resume whose answer never came may have run: the member could be
    /// present with no connection. Make it away (the script is fenced by this link, so
    /// it changes nothing if the call did not run), retrying until Redis answers or
    /// the node is gone.
    fn settle_unknown(
        self: &Arc<Self>,
        room: &str,
        member: Option<MemberId>,
        token: String,
        link: u64,
    ) {
        let shared = self.clone();
        let room = room.to_owned();
        self.context.spawn(async move {
            for attempt in 0..600u32 {
                let mut call = shared.call(&shared.scripts.disconnect, &room);
                call.arg(member.map(|m| m.to_string()).unwrap_or_default())
                    .arg(link)
                    .arg(shared.grace_ms())
                    .arg(&token);
                if shared.run("disconnect", &call).await.is_ok() || shared.gave_up() {
                    return;
                }
                let pause = Duration::from_millis(100 * u64::from(attempt.min(20) + 1));
                tokio::time::sleep(pause).await;
            }
        });
    }

    /// Whether a call that keeps failing is better left to the reaper: the node crashed,
    /// was refused, or is shutting down (its heartbeat stops, so once its lease runs out
    /// the others make its remaining members away). Shutting down waits for no store.
    fn gave_up(&self) -> bool {
        self.crashed.is_cancelled()
            || self.refused.load(Ordering::Relaxed)
            || self.cancel.is_cancelled()
    }

    /// How many rooms are open in the partitions other than `partition` (none on a
    /// single Redis), read at most every [`ROOM_COUNTS_FRESH`]: `max_rooms` counts the
    /// rooms of every partition. A partition's script counts its own rooms exactly;
    /// rooms opened in other partitions within that window are not seen yet.
    async fn rooms_elsewhere(&self, partition: u16) -> u64 {
        if self.layout.partitions <= 1 {
            return 0;
        }
        let cached = lock(&self.room_counts).clone();
        let counts = match cached {
            Some((at, counts)) if at.elapsed() < ROOM_COUNTS_FRESH => counts,
            _ => {
                let reads = self.layout.all().map(|p| {
                    let mut con = self.con.clone();
                    let mut zcard = redis::cmd("ZCARD");
                    zcard.arg(PartitionKeys(p).rooms());
                    // A partition whose heartbeats fail (or whose lease ran out) is not
                    // asked: every fresh join would wait for its master.
                    let failing = self.lease(p).failing_since.is_some()
                        || (self.lease(p).renewed.is_some() && !self.lease_holds(p));
                    async move {
                        if failing {
                            return None;
                        }
                        let read = zcard.query_async::<u64>(&mut con);
                        match store::command("rooms", self.options.call_timeout, read).await {
                            Ok(Ok(n)) => Some(n),
                            _ => None,
                        }
                    }
                });
                let read = futures_util::future::join_all(reads).await;
                let before = cached.map(|(_, counts)| counts).unwrap_or_default();
                // A master that does not answer: its partitions' rooms as last read
                // (kept for the same while, so that joins do not each wait for it).
                let counts: Vec<u64> = read
                    .iter()
                    .enumerate()
                    .map(|(p, n)| n.unwrap_or_else(|| before.get(p).copied().unwrap_or(0)))
                    .collect();
                *lock(&self.room_counts) = Some((tokio::time::Instant::now(), counts.clone()));
                counts
            }
        };
        counts
            .iter()
            .enumerate()
            .filter(|(p, _)| *p != usize::from(partition))
            .map(|(_, n)| *n)
            .sum()
    }

    /// A join of this node opened a room in `partition`.
    fn opened_room(&self, partition: u16) {
        if let Some((_, counts)) = lock(&self.room_counts).as_mut()
            && let Some(n) = counts.get_mut(usize::from(partition))
        {
            *n += 1;
        }
    }

    fn room_name(&self, room: &str) -> Option<RoomName> {
        lock(&self.rooms).get(room).cloned()
    }

    /// Tells the observers of the event a frame encodes (in a room this node serves,
    /// or the room called `display`).
    async fn observe(
        &self,
        room: &str,
        frame: &str,
        context: Option<&ConnectionContext>,
        display: Option<&str>,
    ) {
        if !self.observers.observes() {
            return;
        }
        let name = self
            .room_name(room)
            .or_else(|| RoomName::parse(display?).ok());
        let (Some(name), Ok(event)) = (name, serde_json::from_str::<Event>(frame)) else {
            return;
        };
        self.observers.on_event(&name, &event, context).await;
    }
}

/// How old the room counts of the other partitions may be when a fresh join is
/// checked against `max_rooms` (Redis Cluster only).
const ROOM_COUNTS_FRESH: Duration = Duration::from_millis(100);

/// The node's lease in one partition.
#[derive(Debug, Default, Clone, Copy)]
struct Lease {
    /// When the last heartbeat that succeeded there was sent: the lease holds until
    /// then plus the lease, by this node's own clock. `None` until the first heartbeat
    /// answers: until then the node has no lease there.
    renewed: Option<tokio::time::Instant>,
    /// The lease ran out by this node's clock (a long pause, an outage): the node
    /// delivers nothing and calls nothing in the partition's rooms until a heartbeat
    /// answers.
    suspended: bool,
    /// Past the outage limit, its rooms' connections were closed with 1013.
    closed_for_outage: bool,
    /// When its renewals began to fail (cleared by a renewal).
    failing_since: Option<tokio::time::Instant>,
}

/// The values of [`Shared::health`], by index.
const HEALTH: [StoreHealth; 3] = [
    StoreHealth::Connected,
    StoreHealth::Degraded,
    StoreHealth::Lost,
];

enum Repair {
    Unrepairable,
    Unreachable,
}

/// A room script's call, and the partition it acts in.
struct Call<'a> {
    invocation: redis::ScriptInvocation<'a>,
    partition: u16,
}

impl<'a> std::ops::Deref for Call<'a> {
    type Target = redis::ScriptInvocation<'a>;

    fn deref(&self) -> &Self::Target {
        &self.invocation
    }
}

impl std::ops::DerefMut for Call<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.invocation
    }
}

/// Events from an `XRANGE` answer.
fn parse_entries(value: &Value, epoch: u64) -> Vec<Ev> {
    let Value::Array(entries) = value else {
        return Vec::new();
    };
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let Value::Array(parts) = entry else { continue };
        let (Some(id), Some(Value::Array(fields))) = (parts.first(), parts.get(1)) else {
            continue;
        };
        let Some(id) = store::text(id).and_then(|s| s.split('-').next()?.parse().ok()) else {
            continue;
        };
        let mut frame = None;
        let mut actor = 0;
        let mut kind = None;
        let mut reason = String::new();
        for pair in fields.chunks(2) {
            let (Some(k), Some(v)) = (pair.first().and_then(store::text), pair.get(1)) else {
                continue;
            };
            match k.as_str() {
                "f" => frame = store::text(v),
                "a" => actor = store::int(v).unwrap_or(0),
                "k" => kind = store::text(v).and_then(|s| Kind::parse(&s)),
                "r" => reason = store::text(v).unwrap_or_default(),
                _ => {}
            }
        }
        if let (Some(frame), Some(kind)) = (frame, kind) {
            out.push(Ev {
                epoch,
                id,
                actor,
                kind,
                reason,
                frame: TextFrame::from(frame),
            });
        }
    }
    out
}

/// The node as the hub sees it.
pub(crate) struct Node {
    pub(crate) shared: Arc<Shared>,
}

impl Node {
    /// Starts the node's tasks: pub/sub, heartbeat and reaper, position checks.
    pub(crate) fn start(shared: Arc<Shared>) -> Node {
        let s = shared.clone();
        shared.context.spawn(async move {
            tokio::select! {
                () = s.crashed.cancelled() => {
                    tracing::warn!(node = %s.node(), "crashed (a test's fault)");
                    s.cancel.cancel();
                    let mirrors: Vec<_> = lock(&s.mirrors).drain().map(|(_, m)| m).collect();
                    for mirror in mirrors {
                        let mut m = lock(&mirror);
                        for (_, local) in m.members.drain() {
                            drop(local);
                        }
                    }
                }
                () = s.cancel.cancelled() => {}
            }
        });
        let s = shared.clone();
        shared.context.spawn(async move { s.pubsub_loop().await });
        let s = shared.clone();
        shared
            .context
            .spawn(async move { s.heartbeat_loop().await });
        let s = shared.clone();
        shared.context.spawn(async move { s.check_loop().await });
        Node { shared }
    }
}

impl Shared {
    /// Keeps the pub/sub connection: (re)connects, resubscribes, dispatches messages,
    /// and repairs every room after a reconnection (messages may have been lost).
    async fn pubsub_loop(self: Arc<Self>) {
        let client = match &self.subscriber {
            crate::Subscriber::Single(client) => (**client).clone(),
            crate::Subscriber::Cluster(seeds) => {
                let seeds = seeds.clone();
                return self.sharded_loop(seeds).await;
            }
        };
        let mut first = true;
        loop {
            if self.cancel.is_cancelled() {
                return;
            }
            let connected =
                tokio::time::timeout(self.options.call_timeout * 4, client.get_async_pubsub())
                    .await;
            let Ok(Ok(pubsub)) = connected else {
                tokio::select! {
                    () = self.cancel.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(200)) => continue,
                }
            };
            let (mut sink, mut stream) = pubsub.split();
            {
                let mut subs = self.subs.lock().await;
                let mut ok = true;
                for channel in &subs.channels {
                    if sink.subscribe(channel).await.is_err() {
                        ok = false;
                        break;
                    }
                }
                if !ok {
                    continue;
                }
                subs.sink = Some(Sink::Single(sink));
            }
            if !first {
                self.repair_all();
            }
            first = false;
            loop {
                let message = tokio::select! {
                    () = self.cancel.cancelled() => return,
                    m = stream.next() => m,
                };
                let Some(message) = message else { break };
                if let Some(room) = store::room_of_channel(message.get_channel_name()) {
                    self.dispatch(room, message.get_payload_bytes());
                }
            }
            tracing::warn!("lost the pub/sub connection to Redis; reconnecting");
            self.subs.lock().await.sink = None;
        }
    }

    /// The pub/sub of a node on a Redis Cluster: one RESP3 cluster connection whose
    /// sharded subscriptions the client restores by itself after a lost connection
    /// (a master that restarted, a slot that moved); every room whose subscription was
    /// lost or restored is repaired from its stream.
    async fn sharded_loop(self: Arc<Self>, seeds: Vec<redis::ConnectionInfo>) {
        let (tx, mut pushes) = mpsc::unbounded_channel::<redis::PushInfo>();
        let client = match redis::cluster::ClusterClient::builder(seeds)
            .use_protocol(redis::ProtocolVersion::RESP3)
            .push_sender(tx)
            .connection_timeout(self.options.call_timeout * 4)
            .response_timeout(self.options.call_timeout * 4)
            .build()
        {
            Ok(client) => client,
            Err(e) => {
                tracing::error!(error = %e, "cannot make a pub/sub connection to the Redis Cluster");
                return;
            }
        };
        let con = loop {
            let connected =
                tokio::time::timeout(self.options.call_timeout * 4, client.get_async_connection())
                    .await;
            if let Ok(Ok(con)) = connected {
                break con;
            }
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        };
        self.subs.lock().await.sink = Some(Sink::Cluster(con));
        loop {
            let push = tokio::select! {
                () = self.cancel.cancelled() => return,
                p = pushes.recv() => p,
            };
            let Some(push) = push else { return };
            match push.kind {
                redis::PushKind::SMessage | redis::PushKind::Message => {
                    let (Some(channel), Some(Value::BulkString(payload))) =
                        (push.data.first().and_then(store::text), push.data.get(1))
                    else {
                        continue;
                    };
                    if let Some(room) = store::room_of_channel(&channel) {
                        self.dispatch(room, payload);
                    }
                }
                redis::PushKind::Disconnection => {
                    tracing::warn!(
                        "lost a pub/sub connection to a Redis Cluster master; the client \
                         reconnects and subscribes again"
                    );
                    self.repair_all();
                }
                // Redis dropped a subscription (its slot moved to another master: a
                // failover, resharding). The client forgets it too: subscribe again
                // (on the slot's new master), then repair the room.
                redis::PushKind::SUnsubscribe => {
                    if let Some(channel) = push.data.first().and_then(store::text) {
                        let me = self.clone();
                        self.context
                            .spawn(async move { me.subscribe_again(channel).await });
                    }
                }
                // A subscription made again after a lost connection: what was published
                // meanwhile is read from the stream.
                redis::PushKind::SSubscribe => {
                    if let Some(room) = push
                        .data
                        .first()
                        .and_then(store::text)
                        .as_deref()
                        .and_then(store::room_of_channel)
                    {
                        self.repair(room);
                    }
                }
                _ => {}
            }
        }
    }

    /// Subscribes again to a sharded channel that Redis dropped while the node still
    /// needs it, retrying until it holds (or the node no longer needs it).
    async fn subscribe_again(self: Arc<Self>, channel: String) {
        for attempt in 0u64.. {
            if self.gave_up() {
                return;
            }
            {
                let mut subs = self.subs.lock().await;
                if !subs.channels.contains(&channel) {
                    return;
                }
                if let Some(sink) = subs.sink.as_mut() {
                    let made =
                        tokio::time::timeout(self.options.call_timeout, sink.subscribe(&channel))
                            .await;
                    if matches!(made, Ok(Ok(()))) {
                        drop(subs);
                        if let Some(room) = store::room_of_channel(&channel) {
                            self.repair(room);
                        }
                        return;
                    }
                }
            }
            if attempt % 50 == 49 {
                tracing::warn!(channel, "still cannot subscribe again to a room's channel");
            }
            tokio::time::sleep(Duration::from_millis((50 * (attempt + 1)).min(1000))).await;
        }
    }

    /// Repairs every mirrored room (after a lost pub/sub connection).
    fn repair_all(self: &Arc<Self>) {
        let rooms: Vec<String> = lock(&self.mirrors).keys().cloned().collect();
        for room in rooms {
            self.repair(&room);
        }
    }

    fn dispatch(self: &Arc<Self>, room: &str, payload: &[u8]) {
        let Some(mirror) = self.existing_mirror(room) else {
            return;
        };
        if !self.lease_holds(self.layout.of(room)) {
            // Its members may be another node's by now. Whatever it misses meanwhile
            // is repaired from the stream once the lease is renewed.
            return;
        }
        if payload.first() == Some(&b'C') {
            // `C <member> <node> <link>`: a resume took the membership over.
            let text = String::from_utf8_lossy(payload);
            let mut parts = text.split(' ').skip(1);
            if let (Some(member), Some(node), Some(link)) =
                (parts.next(), parts.next(), parts.next())
                && node == self.node()
                && let (Ok(member), Ok(link)) = (member.parse(), link.parse())
            {
                lock(&mirror).detach(member, link, Some(CloseFrame::resumed_elsewhere()));
            }
            return;
        }
        let Some(ev) = Ev::parse(payload) else {
            tracing::warn!(room, "an unreadable message on a room's channel");
            return;
        };
        let mut effects = Effects::default();
        {
            let mut m = lock(&mirror);
            if ev.epoch > m.epoch && m.epoch != 0 && !m.members.is_empty() {
                // The room was made anew, or Redis lost its data: repair tells which
                // (and closes the members here with 4002 or 1012).
                effects.repair = true;
            } else {
                m.offer(ev, &mut effects);
            }
        }
        self.effects(room, effects);
    }

    /// Renews the lease every third of it; reaps dead nodes and expired members.
    async fn heartbeat_loop(self: Arc<Self>) {
        let lease = self.options.lease;
        let interval = lease / 3;
        loop {
            let sent = tokio::time::Instant::now();
            let mut renewed = Vec::new();
            let mut failed = None;
            {
                // Each partition's answer is taken as it comes: a master that does not
                // answer (each call waits up to the call timeout) must not delay the
                // others' renewals.
                let me: &Shared = &self;
                let mut answers: futures_util::stream::FuturesUnordered<_> = self
                    .layout
                    .all()
                    .map(|partition| async move {
                        (partition, me.heartbeat_in(partition, lease, interval).await)
                    })
                    .collect();
                while let Some((partition, answer)) = answers.next().await {
                    match answer {
                        Ok(()) => {
                            self.renewed(partition, sent);
                            renewed.push(partition);
                        }
                        Err(cause) => {
                            self.outage(partition);
                            failed.get_or_insert(cause);
                        }
                    }
                }
            }
            if self.refused.load(Ordering::Relaxed) {
                // For good: the node serves nothing, and its health stays `lost`.
                return;
            }
            match failed {
                None => self.set_health(StoreHealth::Connected, "a heartbeat succeeded"),
                Some(cause) => {
                    let all_out = lock(&self.leases).iter().all(|l| l.closed_for_outage);
                    if all_out {
                        self.set_health(StoreHealth::Lost, "unreachable past the outage limit");
                    } else {
                        self.set_health(StoreHealth::Degraded, &cause);
                    }
                }
            }
            // Reaping (a script per room of a dead node) must not hold up the next
            // renewal: it runs beside it, one round at a time, and only in the
            // partitions where this node's own lease was just renewed.
            if !renewed.is_empty()
                && let Ok(permit) = self.reaping.clone().try_acquire_owned()
            {
                let me = self.clone();
                self.context.spawn(async move {
                    me.reap(&renewed).await;
                    drop(permit);
                });
            }
            // From the start of this round: a master that does not answer (each call
            // waits up to the call timeout) must not space out the others' renewals.
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep_until(sent + interval.min(Duration::from_secs(1))) => {}
            }
        }
    }

    /// The lease of `partition` was not renewed: past the outage limit, the node's
    /// connections in its rooms close with 1013 (once).
    fn outage(&self, partition: u16) {
        let past = {
            let mut leases = lock(&self.leases);
            match leases.get_mut(usize::from(partition)) {
                Some(lease) => {
                    let now = tokio::time::Instant::now();
                    let failing_since = *lease.failing_since.get_or_insert(now);
                    // Since its last renewal, or since it began failing if it never was
                    // renewed (its master was down when the node started).
                    let since = lease.renewed.unwrap_or(failing_since);
                    let past = !lease.closed_for_outage
                        && now.saturating_duration_since(since) > self.options.outage_limit;
                    lease.closed_for_outage |= past;
                    past
                }
                None => false,
            }
        };
        if past {
            tracing::error!(
                partition,
                "Redis has been unreachable too long: connections close with 1013"
            );
            self.close_partition(
                partition,
                CloseFrame::new(
                    close_code::TRY_AGAIN_LATER,
                    "store unreachable; reconnect later",
                ),
            );
        }
    }

    /// A heartbeat sent at `sent` succeeded in `partition`: the lease holds there again
    /// from then on, and what was held back while it did not is repaired from the
    /// streams.
    fn renewed(self: &Arc<Self>, partition: u16, sent: tokio::time::Instant) {
        let resumed = {
            let mut leases = lock(&self.leases);
            let Some(lease) = leases.get_mut(usize::from(partition)) else {
                return;
            };
            lease.renewed = Some(sent);
            lease.closed_for_outage = false;
            lease.failing_since = None;
            std::mem::take(&mut lease.suspended)
        };
        if resumed {
            tracing::info!(partition, "lease renewed: delivering again");
            let rooms: Vec<String> = lock(&self.mirrors)
                .keys()
                .filter(|room| self.layout.of(room) == partition)
                .cloned()
                .collect();
            for room in rooms {
                self.repair(&room);
            }
        }
    }

    /// Renews the lease in one partition (each keeps its own leases, on its own
    /// master); why not, if it was not.
    async fn heartbeat_in(
        &self,
        partition: u16,
        lease: Duration,
        interval: Duration,
    ) -> Result<(), String> {
        let (sent_as, sent_with) = (self.node(), self.instance(partition));
        let sent = SystemTime::now();
        let reply = self
            .heartbeat_call(partition, &sent_as, &sent_with, lease, interval)
            .await?;
        match reply.status().as_str() {
            // Renewed for an id the node no longer goes by (another partition reaped
            // it meanwhile): the new id holds no lease here yet.
            "ok" if self.node() != sent_as => Err("the node was reaped meanwhile".to_owned()),
            "ok" => {
                if let (Some(redis_now), Ok(local)) =
                    (reply.int(1), sent.duration_since(UNIX_EPOCH))
                {
                    let offset = redis_now as i64 - local.as_millis() as i64;
                    self.offset_ms.store(offset, Ordering::Relaxed);
                }
                Ok(())
            }
            "reaped" => {
                self.reaped(&sent_as);
                Err("the others took this node for dead".to_owned())
            }
            "rules" => {
                let theirs = reply.text(1).unwrap_or_default();
                let differences = store::rules_diff(&self.rules, &theirs).join("; ");
                tracing::error!(
                    differences,
                    "the cluster runs with other room rules: this node serves nothing"
                );
                self.refused.store(true, Ordering::Relaxed);
                self.set_health(StoreHealth::Lost, "the cluster has other room rules");
                self.close_everything(CloseFrame::new(
                    close_code::TRY_AGAIN_LATER,
                    "node misconfigured; reconnect",
                ));
                Err("the cluster has other room rules".to_owned())
            }
            _ => {
                self.data_lost(partition, &sent_with).await;
                Err("Redis lost this cluster's data".to_owned())
            }
        }
    }

    /// The heartbeat script of `partition`, as node `node` of data set `instance`.
    async fn heartbeat_call(
        &self,
        partition: u16,
        node: &str,
        instance: &str,
        lease: Duration,
        interval: Duration,
    ) -> Result<Reply, String> {
        let keys = PartitionKeys(partition);
        let mut call = self.scripts.heartbeat.prepare_invoke();
        call.key(keys.nodes())
            .key(keys.heartbeat())
            .key(keys.holdoff())
            .key(keys.dead())
            .key(keys.instance())
            .key(keys.rules())
            .arg(node)
            .arg(lease.as_millis() as u64)
            .arg(interval.as_millis() as u64)
            .arg(instance)
            .arg(&self.rules);
        let mut con = self.con.clone();
        match store::command(
            "heartbeat",
            self.options.call_timeout,
            call.invoke_async::<Value>(&mut con),
        )
        .await
        {
            Ok(Ok(value)) => Ok(Reply::new(value)),
            Ok(Err(e)) => Err(format!("Redis: {e}")),
            Err(_) => Err(format!(
                "no answer from Redis within {} ms",
                self.options.call_timeout.as_millis()
            )),
        }
    }

    /// Expires the rooms of dead nodes and the rooms with members past their grace,
    /// in `partitions`.
    async fn reap(&self, partitions: &[u16]) {
        for &partition in partitions {
            self.reap_in(PartitionKeys(partition)).await;
        }
    }

    /// [`Shared::reap`] in one partition.
    async fn reap_in(&self, keys: PartitionKeys) {
        if !self.lease_holds(keys.0) {
            // A node whose own lease ran out meanwhile reaps nobody there.
            return;
        }
        let mut call = self.scripts.reap.prepare_invoke();
        call.key(keys.nodes())
            .key(keys.holdoff())
            .key(keys.dead())
            .key(keys.dying())
            .key(keys.heartbeat())
            .arg(self.node())
            .arg(self.deadline())
            .arg(self.options.lease.as_millis() as u64)
            .arg((self.options.lease / 3).as_millis() as u64);
        let Ok(Value::Array(dying)) =
            store::run("reap", &call, &self.con, self.options.call_timeout).await
        else {
            return;
        };
        for pair in dying.chunks(2) {
            let (Some(dead), Some(lease_end)) = (
                pair.first().and_then(store::text),
                pair.get(1).and_then(store::int),
            ) else {
                continue;
            };
            let mut con = self.con.clone();
            let mut smembers = redis::cmd("SMEMBERS");
            smembers.arg(keys.node_rooms(&dead));
            let read = smembers.query_async::<Vec<String>>(&mut con);
            let Ok(Ok(rooms)) = store::command("reap", self.options.call_timeout, read).await
            else {
                continue;
            };
            let mut all = true;
            for room in rooms {
                all &= self.expire(&room, &dead, lease_end).await;
            }
            if all {
                let _: Result<(), _> = redis::pipe()
                    .cmd("DEL")
                    .arg(keys.node_rooms(&dead))
                    .cmd("SREM")
                    .arg(keys.dying())
                    .arg(&dead)
                    .query_async(&mut con)
                    .await;
            }
        }
        let mut con = self.con.clone();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64)
            + self.offset_ms.load(Ordering::Relaxed);
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range.arg(keys.due()).arg("-inf").arg(now);
        let read = range.query_async::<Vec<String>>(&mut con);
        let due = match store::command("expire", self.options.call_timeout, read).await {
            Ok(Ok(due)) => due,
            _ => return,
        };
        for room in due {
            self.expire(&room, "", 0).await;
        }
    }

    /// Runs `expire` on a room; true if it ran.
    async fn expire(&self, room: &str, dead: &str, lease_end: u64) -> bool {
        self.expire_with(room, dead, lease_end, false).await
    }

    /// [`Shared::expire`], or with `force` every away member's grace ends now.
    async fn expire_with(&self, room: &str, dead: &str, lease_end: u64, force: bool) -> bool {
        let mut call = self.call(&self.scripts.expire, room);
        call.arg(dead)
            .arg(lease_end)
            .arg(self.grace_ms())
            .arg(if force { "1" } else { "0" });
        let Ok(reply) = self.run("expire", &call).await else {
            return false;
        };
        if reply.status() == "ok" && self.observers.observes() {
            // A `left` caused by the reaper fires on the reaper's node. The member's
            // context stays on the node that served it: the hooks get an empty one.
            let display = reply.text(2);
            let name = self
                .room_name(room)
                .or_else(|| RoomName::parse(display.as_deref()?).ok());
            let Some(name) = name else {
                return true;
            };
            let context = ConnectionContext::new();
            for left in reply.list(1) {
                let Value::Array(parts) = left else { continue };
                if let Some(frame) = parts.get(3).and_then(store::text) {
                    self.observe(room, &frame, Some(&context), display.as_deref())
                        .await;
                }
                if let Some(who) = parts.get(1).and_then(store::text) {
                    self.observers
                        .on_member_left(&name, &who, &context, LeaveReason::Expired)
                        .await;
                }
            }
        }
        true
    }

    /// Every few seconds: the position of every mirrored room (a lost message at the
    /// tail, a wedged subscription), and mirrors nobody needs any more.
    async fn check_loop(self: Arc<Self>) {
        loop {
            tokio::select! {
                () = self.cancel.cancelled() => return,
                () = tokio::time::sleep(self.options.check_interval) => {}
            }
            self.count_members();
            let rooms: Vec<(String, Arc<Mutex<Mirror>>)> = {
                let mirrors = lock(&self.mirrors);
                mirrors
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect()
            };
            for (room, mirror) in rooms {
                if !self.lease_holds(self.layout.of(&room)) {
                    // Nothing is asked or changed without a lease.
                    continue;
                }
                let (epoch, delivered, idle) = {
                    let m = lock(&mirror);
                    (m.epoch, m.delivered, m.members.is_empty() && m.pins == 0)
                };
                if idle {
                    self.forget_room(&room).await;
                    continue;
                }
                let mut con = self.con.clone();
                let mut hmget = redis::cmd("HMGET");
                hmget.arg(self.keys(&room).meta()).arg("epoch").arg("seq");
                let read = hmget.query_async::<(Option<u64>, Option<u64>)>(&mut con);
                let meta = match store::command("check", self.options.call_timeout, read).await {
                    Ok(meta) => meta,
                    Err(_) => continue,
                };
                match meta {
                    Ok((Some(e), Some(seq))) if e == epoch && seq < delivered => {
                        let partition = self.layout.of(&room);
                        let instance = self.instance(partition);
                        if self.data_set_changed(partition, &instance).await {
                            // A room of a new data set that happens to share the epoch.
                            self.data_lost(partition, &instance).await;
                            continue;
                        }
                        // The room's counter went backwards (a failover lost its tail):
                        // what the members here saw is not what Redis has.
                        tracing::warn!(
                            room,
                            "a room's event counter went backwards: members resume"
                        );
                        lock(&mirror).forget(resync());
                    }
                    Ok((Some(e), Some(seq))) if e == epoch && seq > delivered => self.repair(&room),
                    Ok((e, _)) if epoch != 0 && e != Some(epoch) => self.repair(&room),
                    _ => {}
                }
                self.check_links(&room, &mirror).await;
            }
        }
    }

    /// Closes with 4001 the members here whose membership another link took over (in
    /// case the takeover's message on the channel was lost).
    async fn check_links(&self, room: &str, mirror: &Mutex<Mirror>) {
        let asked = std::time::Instant::now();
        let mut call = self.call(&self.scripts.read, room);
        call.arg("links").arg("");
        let Ok(reply) = self.run("read", &call).await else {
            return;
        };
        if reply.status() != "ok" {
            return;
        }
        let here = self.node();
        let mut m = lock(mirror);
        for entry in reply.list(2) {
            let Value::Array(parts) = entry else { continue };
            let (Some(mid), Some(node), Some(link)) = (
                parts.first().and_then(store::int),
                parts.get(1).and_then(store::text),
                parts.get(2).and_then(store::int),
            ) else {
                continue;
            };
            // A member attached since the question was asked is newer than the answer.
            let Some(held) = m
                .members
                .get(&mid)
                .filter(|l| l.attached < asked)
                .map(|l| l.link)
            else {
                continue;
            };
            if node != here || link != held {
                m.detach(mid, held, Some(CloseFrame::resumed_elsewhere()));
            }
        }
    }

    /// Unsubscribes from a room nobody here is in any more.
    async fn forget_room(&self, room: &str) {
        let mut subs = self.subs.lock().await;
        let removed = {
            let mut mirrors = lock(&self.mirrors);
            let idle = mirrors.get(room).is_some_and(|m| {
                let m = lock(m);
                m.members.is_empty() && m.pins == 0
            });
            idle && mirrors.remove(room).is_some()
        };
        if !removed {
            return;
        }
        lock(&self.rooms).remove(room);
        let channel = self.keys(room).channel();
        subs.channels.remove(&channel);
        if let Some(sink) = subs.sink.as_mut() {
            let _ =
                tokio::time::timeout(self.options.call_timeout, sink.unsubscribe(&channel)).await;
        }
    }
}

/// What a membership's worker does, in order, one script at a time.
enum Command {
    Send {
        text: Arc<str>,
        reference: Option<Ref>,
        /// When the connection handed the frame over (for the delivery latency).
        at: std::time::Instant,
    },
    Rename {
        name: Result<DisplayName, RenameError>,
        reference: Option<Ref>,
    },
    Leave {
        reply: oneshot::Sender<Result<bool, NotTaken>>,
    },
    Disconnect {
        done: oneshot::Sender<()>,
    },
}

/// A membership's commands, to its worker.
struct Channel {
    tx: mpsc::Sender<Command>,
    /// How long a connection waits for its member to be marked away (the call
    /// timeout): past it, the close goes on and the worker keeps retrying.
    patience: Duration,
}

impl MemberChannel for Channel {
    fn send(
        &self,
        _member: MemberId,
        _link: u64,
        text: Arc<str>,
        reference: Option<Ref>,
    ) -> Result<(), NotTaken> {
        offer(
            &self.tx,
            Command::Send {
                text,
                reference,
                at: std::time::Instant::now(),
            },
        )
    }

    fn rename(
        &self,
        _member: MemberId,
        _link: u64,
        name: Result<DisplayName, RenameError>,
        reference: Option<Ref>,
    ) -> Result<(), NotTaken> {
        offer(&self.tx, Command::Rename { name, reference })
    }

    fn leave(
        &self,
        _member: MemberId,
        _link: u64,
    ) -> Result<BoxFuture<'static, Result<bool, NotTaken>>, NotTaken> {
        let (reply, answer) = oneshot::channel();
        offer(&self.tx, Command::Leave { reply })?;
        Ok(Box::pin(async move {
            answer.await.unwrap_or(Err(NotTaken::Gone))
        }))
    }

    fn disconnect(&self, _member: MemberId, _link: u64) -> BoxFuture<'_, ()> {
        let (done, finished) = oneshot::channel();
        let tx = self.tx.clone();
        let patience = self.patience;
        Box::pin(async move {
            // Not queued in time (the worker is behind on calls Redis does not answer):
            // the worker marks the member away once this channel is dropped.
            let _ = tokio::time::timeout(patience, async {
                if tx.send(Command::Disconnect { done }).await.is_ok() {
                    let _ = finished.await;
                }
            })
            .await;
        })
    }
}

fn offer(tx: &mpsc::Sender<Command>, command: Command) -> Result<(), NotTaken> {
    tx.try_send(command).map_err(|e| match e {
        mpsc::error::TrySendError::Full(_) => NotTaken::Busy,
        mpsc::error::TrySendError::Closed(_) => NotTaken::Gone,
    })
}

/// Runs one membership's commands in order: at most one script in flight per link.
struct Worker {
    shared: Arc<Shared>,
    room: String,
    member: MemberId,
    link: u64,
    context: Arc<ConnectionContext>,
    mirror: Arc<Mutex<Mirror>>,
}

impl Worker {
    async fn run(self, mut rx: mpsc::Receiver<Command>) {
        while let Some(command) = rx.recv().await {
            match command {
                Command::Send {
                    text,
                    reference,
                    at,
                } => self.send(text, reference, at).await,
                Command::Rename { name, reference } => self.rename(name, reference).await,
                Command::Leave { reply } => {
                    if self.leave(reply).await {
                        return;
                    }
                }
                // The connection waits for the first attempt only: while Redis is
                // out its close frame must not wait, and the retries go on here.
                Command::Disconnect { done } => {
                    self.shared
                        .disconnect_member(&self.room, self.member, self.link, Some(done))
                        .await;
                    return;
                }
            }
        }
        // The connection is gone without a word (dropped): the member becomes away.
        self.shared
            .disconnect_member(&self.room, self.member, self.link, None)
            .await;
    }

    /// Queues an answer for the member behind event `after`.
    fn answer(&self, after: u64, frame: TextFrame) {
        let slow = lock(&self.mirror).answer(self.member, self.link, after, frame);
        if let Some((member, link)) = slow {
            let effects = Effects {
                slow: vec![(member, link)],
                repair: false,
            };
            self.shared.effects(&self.room, effects);
        }
    }

    /// Answers an `error` frame behind event `after`: a refused frame, counted and
    /// logged as such.
    fn refuse(&self, after: u64, error: &dyn HasErrorCode, reference: Option<Ref>) {
        let code = error.code().as_str();
        metrics::counter!("chatroom_frames_refused_total", "code" => code).increment(1);
        tracing::debug!(room = %self.room, member = self.member, code, "frame refused");
        self.answer(after, error_frame(error, reference));
    }

    /// The last event this node delivered in the room: errors follow it.
    fn now(&self) -> u64 {
        lock(&self.mirror).delivered
    }

    async fn send(&self, text: Arc<str>, reference: Option<Ref>, at: std::time::Instant) {
        let jtext = serde_json::to_string(&*text).unwrap_or_else(|_| "\"\"".to_owned());
        let mut call = self.shared.call(&self.shared.scripts.send, &self.room);
        call.arg(self.member).arg(self.link).arg(jtext).arg("");
        match self.shared.run("send", &call).await {
            Ok(reply) if reply.status() == "ok" => {
                let id = reply.int(1).unwrap_or(0);
                lock(&self.mirror).sent(id, at);
                if let Some(r) = reference {
                    self.answer(id, ack_frame(r, id));
                }
                if let Some(frame) = reply.text(2) {
                    self.shared
                        .observe(&self.room, &frame, Some(&self.context), None)
                        .await;
                }
            }
            Ok(_) => {}
            Err(Unreachable) => {
                self.refuse(self.now(), &FrameError::StoreUnavailable, reference);
            }
        }
    }

    async fn rename(&self, name: Result<DisplayName, RenameError>, reference: Option<Ref>) {
        let name = match name {
            Ok(n) => n,
            Err(e) => {
                // Refused before Redis saw it; still answered behind every event the
                // room had at this moment, as on one node.
                let mut call = self.shared.call(&self.shared.scripts.read, &self.room);
                call.arg("seq").arg("");
                let after = match self.shared.run("read", &call).await {
                    Ok(reply) => reply.int(1).unwrap_or(0),
                    Err(Unreachable) => self.now(),
                };
                return self.refuse(after, &e, reference);
            }
        };
        let jname = serde_json::to_string(name.as_str()).unwrap_or_else(|_| "\"\"".to_owned());
        let mut call = self.shared.call(&self.shared.scripts.rename, &self.room);
        call.arg(self.member)
            .arg(self.link)
            .arg(name.key().as_str())
            .arg(name.as_str())
            .arg(jname);
        match self.shared.run("rename", &call).await {
            Ok(reply) => match reply.status().as_str() {
                "ok" => {
                    let id = reply.int(1).unwrap_or(0);
                    if let Some(r) = reference {
                        self.answer(id, ack_frame(r, id));
                    }
                    if let Some(frame) = reply.text(2) {
                        self.shared
                            .observe(&self.room, &frame, Some(&self.context), None)
                            .await;
                    }
                }
                "name_taken" => {
                    let taken = reply.text(1).unwrap_or_default();
                    let after = reply.int(2).unwrap_or(0);
                    let error = RenameError::NameTaken { taken };
                    self.refuse(after, &error, reference);
                }
                _ => {}
            },
            Err(Unreachable) => {
                self.refuse(self.now(), &FrameError::StoreUnavailable, reference);
            }
        }
    }

    /// True when the membership ended.
    async fn leave(&self, reply: oneshot::Sender<Result<bool, NotTaken>>) -> bool {
        let (left, leaving) = oneshot::channel();
        if let Some(local) = lock(&self.mirror).members.get_mut(&self.member) {
            local.leaving = Some(left);
        }
        let mut call = self.shared.call(&self.shared.scripts.leave, &self.room);
        call.arg("leave").arg(self.member).arg(self.link).arg("");
        match self.shared.run("leave", &call).await {
            Ok(r) if r.status() == "ok" => {
                // Answered once the mirror delivered everything before the `left`.
                let done =
                    tokio::time::timeout(self.shared.options.call_timeout * 4, leaving).await;
                let _ = reply.send(Ok(true));
                if done.is_err() {
                    // The `left` did not come through the channel in time: the events
                    // before it may be missing here, so the connection resumes to see.
                    lock(&self.mirror).detach(self.member, self.link, Some(resync()));
                }
                if let Some(frame) = r.text(4) {
                    self.shared
                        .observe(&self.room, &frame, Some(&self.context), None)
                        .await;
                }
                if let Some(name) = r.text(3) {
                    self.left_hooks(&name, LeaveReason::Left).await;
                }
                true
            }
            Ok(_) => {
                // Superseded or gone: nothing changed here; the close says why.
                let _ = reply.send(Ok(false));
                false
            }
            Err(Unreachable) => {
                if let Some(local) = lock(&self.mirror).members.get_mut(&self.member) {
                    local.leaving = None;
                }
                let _ = reply.send(Err(NotTaken::Unavailable));
                false
            }
        }
    }

    async fn left_hooks(&self, name: &str, reason: LeaveReason) {
        if let Some(room) = self.shared.room_name(&self.room) {
            self.shared
                .observers
                .on_member_left(&room, name, &self.context, reason)
                .await;
        }
    }
}

impl Node {
    /// Hands a member whose script answered `ok` its welcome and attaches it to the
    /// room's mirror behind the welcome's last event.
    async fn joined(
        &self,
        room: &RoomName,
        room_hex: &str,
        mirror: &Arc<Mutex<Mirror>>,
        context: Arc<ConnectionContext>,
        welcomed: Welcomed,
    ) -> Membership {
        let Welcomed {
            member,
            link,
            welcome,
            epoch,
            mut at,
        } = welcomed;
        let shared = &self.shared;
        let (sender, frames) = queue(shared.limits.outgoing_queue.max(2));
        let _ = sender.push(welcome);
        let local = Local::new(link, sender, at + 1, context.clone());
        let mut effects = Effects::default();
        lock(&shared.rooms).insert(room_hex.to_owned(), room.clone());
        // A welcome that ends before events this node has already delivered (joins
        // that ran at the same moment, a later one attached first and skipped what
        // nobody here needed yet) gets the events in between from the room's stream,
        // so that its member is not sent to resume at once. The check and the attach
        // happen under one lock: another join cannot move the mirror on in between.
        // What cannot be read is left to `attach`, which then asks for a resume.
        let mut reads = 3;
        loop {
            let to = {
                let mut m = lock(mirror);
                if reads == 0 || m.epoch != epoch || m.reaches(at) {
                    m.attach(member, local, epoch, at, &mut effects);
                    m.pins = m.pins.saturating_sub(1);
                    break;
                }
                m.delivered
            };
            reads -= 1;
            match self.read_between(room_hex, epoch, at, to).await {
                Some(events) => {
                    for ev in events {
                        if ev.id != at + 1 || (ev.kind.removes_actor() && ev.actor == member) {
                            reads = 0;
                            break;
                        }
                        // A queue too small for them fails the next push, as for
                        // any slow reader.
                        let _ = local.sender.push(ev.frame);
                        at = ev.id;
                    }
                }
                None => reads = 0,
            }
        }
        shared.effects(room_hex, effects);
        let (tx, rx) = mpsc::channel(shared.limits.room_queue.max(1));
        let worker = Worker {
            shared: shared.clone(),
            room: room_hex.to_owned(),
            member,
            link,
            context,
            mirror: mirror.clone(),
        };
        shared.context.spawn(worker.run(rx));
        Membership {
            member,
            link,
            room: Arc::new(Channel {
                tx,
                patience: shared.options.call_timeout,
            }),
            frames,
        }
    }

    /// The room's events after `at` up to `to` (of room `epoch`), read from its
    /// stream; `None` when Redis does not answer in time.
    async fn read_between(&self, room: &str, epoch: u64, at: u64, to: u64) -> Option<Vec<Ev>> {
        let shared = &self.shared;
        let mut con = shared.con.clone();
        let mut xrange = redis::cmd("XRANGE");
        xrange
            .arg(shared.keys(room).stream())
            .arg(format!("{}-1", at + 1))
            .arg(format!("{to}-1"));
        let read = xrange.query_async::<Value>(&mut con);
        match store::command("read", shared.options.call_timeout, read).await {
            Ok(Ok(value)) => Some(parse_entries(&value, epoch)),
            _ => None,
        }
    }
}

/// How long a welcome waits for the node's other members of the room to be given the
/// events before it. Past that (a channel that lost the event, repaired later) the
/// welcome goes out anyway: its member's own timeline is right either way.
const CATCH_UP: Duration = Duration::from_millis(250);

/// Waits (at most [`CATCH_UP`]) until the mirror has given this node's members every
/// event of room `epoch` up to `at`, so a welcome never overtakes, on its node, the
/// event it announces: clients of one node see what a single node would show them.
async fn caught_up(mirror: &Arc<Mutex<Mirror>>, epoch: u64, at: u64) {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    let progress = lock(mirror).progress.clone();
    loop {
        // Armed before the check: a delivery right after it still wakes us.
        let notified = progress.notified();
        {
            let m = lock(mirror);
            if m.members.is_empty() || m.epoch != epoch || m.delivered >= at {
                return;
            }
        }
        if tokio::time::timeout_at(deadline, notified).await.is_err() {
            return;
        }
    }
}

/// A join or resume that Redis accepted: the member, its link, its welcome, and the
/// event (of the room's epoch) the welcome ends at.
struct Welcomed {
    member: MemberId,
    link: u64,
    welcome: TextFrame,
    epoch: u64,
    at: u64,
}

/// A welcome's members, from a script's reply, as a JSON array.
fn names_json(names: &[Value]) -> String {
    let names: Vec<String> = names.iter().filter_map(store::text).collect();
    serde_json::to_string(&names).unwrap_or_else(|_| "[]".to_owned())
}

fn frames(values: &[Value]) -> Vec<TextFrame> {
    values
        .iter()
        .filter_map(store::text)
        .map(TextFrame::from)
        .collect()
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        // Member ids only need to be unlikely to repeat; `join` refuses a repeat.
        return SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64);
    }
    u64::from_le_bytes(bytes) >> 12 // below 2^52: exact in Lua's numbers
}

impl Backplane for Node {
    fn health(&self) -> StoreHealth {
        self.shared.health()
    }

    fn join(&self, request: JoinRequest) -> BoxFuture<'_, Result<Membership, JoinFailure>> {
        Box::pin(async move {
            let shared = &self.shared;
            if shared.cancel.is_cancelled() {
                return Err(JoinError::Unavailable.into());
            }
            let JoinRequest {
                room,
                entry,
                reference,
                context,
            } = request;
            let room_hex = room_id(room.key());
            let mirror = shared
                .pin(&room_hex)
                .await
                .map_err(|_| JoinError::StoreUnavailable)?;
            let link = shared.next_link();
            let (fresh, name, token, since) = match entry {
                Entry::Fresh { name, token } => (Some(random_u64()), name, token, None),
                Entry::Resume { name, token, since } => (None, name, token, since),
            };
            let elsewhere = match fresh {
                Some(_) => shared.rooms_elsewhere(shared.layout.of(&room_hex)).await,
                None => 0,
            };
            let call = match fresh {
                Some(member) => {
                    let jname = serde_json::to_string(name.as_str()).unwrap_or_default();
                    let mut call = shared.call(&shared.scripts.join, &room_hex);
                    call.arg(member)
                        .arg(link)
                        .arg(name.key().as_str())
                        .arg(name.as_str())
                        .arg(jname)
                        .arg(token.to_string())
                        .arg(room.as_str())
                        .arg(shared.limits.max_members)
                        .arg(shared.limits.max_rooms)
                        .arg(shared.limits.history.max(1))
                        .arg(elsewhere);
                    call
                }
                None => {
                    let mut call = shared.call(&shared.scripts.resume, &room_hex);
                    call.arg(token.to_string())
                        .arg(link)
                        .arg(since.map(|s| s.to_string()).unwrap_or_default())
                        .arg(name.as_str())
                        .arg(shared.limits.history.max(1));
                    call
                }
            };
            let op = if fresh.is_some() { "join" } else { "resume" };
            let reply = match shared.run(op, &call).await {
                Ok(reply) => reply,
                Err(Unreachable) => {
                    shared.unpin(&mirror);
                    // The call may have run: make sure no member stays present here
                    // without a connection.
                    shared.settle_unknown(&room_hex, fresh, token.to_string(), link);
                    return Err(JoinError::StoreUnavailable.into());
                }
            };
            let refused = |e: JoinError| {
                shared.unpin(&mirror);
                Err(JoinFailure::Refused(e))
            };
            match reply.status().as_str() {
                "ok" => {}
                "name_taken" => {
                    return refused(JoinError::NameTaken {
                        taken: reply.text(1).unwrap_or_default(),
                    });
                }
                "room_full" => {
                    return refused(JoinError::RoomFull {
                        max: shared.limits.max_members,
                    });
                }
                "too_many_rooms" => {
                    return refused(JoinError::TooManyRooms {
                        max: shared.limits.max_rooms,
                    });
                }
                "resume_failed" => return refused(JoinError::ResumeFailed),
                "renamed" => {
                    shared.unpin(&mirror);
                    return Err(JoinFailure::Renamed);
                }
                _ => return refused(JoinError::Unavailable),
            }
            let epoch = reply.int(1).unwrap_or(0);
            let at = reply.int(2).unwrap_or(0);
            if fresh.is_some() && at == 1 {
                // This join opened the room: the next fresh join on this node counts it
                // even before the other partitions' counts are read again.
                shared.opened_room(shared.layout.of(&room_hex));
            }
            let display = reply.text(3).unwrap_or_else(|| room.as_str().to_owned());
            let members = names_json(&reply.list(4));
            let history = frames(&reply.list(5));
            let gap = reply.int(6).unwrap_or(0) == 1;
            let member = match fresh {
                Some(m) => m,
                None => reply.int(7).unwrap_or(0),
            };
            let token_text = token.to_string();
            let welcome = WelcomeParts {
                room: &display,
                name: name.as_str(),
                members: &members,
                history,
                last_id: at,
                resume: &token_text,
                gap,
                reference,
            }
            .encode();
            let room_name = RoomName::parse(&display).unwrap_or(room);
            self.shared.welcome_bytes.record(welcome.len() as f64);
            let welcomed = Welcomed {
                member,
                link,
                welcome,
                epoch,
                at,
            };
            caught_up(&mirror, epoch, at).await;
            let membership = self
                .joined(&room_name, &room_hex, &mirror, context.clone(), welcomed)
                .await;
            if fresh.is_some() {
                // The newcomer's `joined` is the last event of its welcome's history.
                if let Some(joined) = reply.list(5).last().and_then(store::text) {
                    shared
                        .observe(&room_hex, &joined, Some(&context), None)
                        .await;
                }
            }
            Ok(membership)
        })
    }

    fn token_holder(
        &self,
        room: NameKey,
        token: ResumeToken,
    ) -> BoxFuture<'_, Result<Option<DisplayName>, NotTaken>> {
        Box::pin(async move {
            let reply = self
                .read(&room, "token", &token.to_string())
                .await
                .map_err(|_| NotTaken::Unavailable)?;
            Ok(match reply.status().as_str() {
                "ok" => reply.text(1).and_then(|n| DisplayName::parse(&n).ok()),
                _ => None,
            })
        })
    }

    fn rooms(
        &self,
        after: Option<RoomCursor>,
        limit: usize,
    ) -> BoxFuture<'_, Result<RoomsPage, Unavailable>> {
        Box::pin(async move {
            // Each partition lists its own rooms (on a Redis Cluster, on its own master).
            let reads = self.shared.layout.all().map(|partition| {
                let keys = PartitionKeys(partition);
                let mut con = self.shared.con.clone();
                async move {
                    let mut pipe = redis::pipe();
                    pipe.cmd("ZRANGE")
                        .arg(keys.rooms())
                        .arg(0)
                        .arg(-1)
                        .arg("WITHSCORES")
                        .cmd("HGETALL")
                        .arg(keys.rdisp());
                    let read =
                        pipe.query_async::<(Vec<(String, u64)>, HashMap<String, String>)>(&mut con);
                    store::command("rooms", self.shared.options.call_timeout, read)
                        .await
                        .map_err(|_| Unavailable)?
                        .map_err(|_| Unavailable)
                }
            });
            // On a Redis Cluster with a master out, the rooms of the others are listed
            // (those of the master out cannot be joined meanwhile anyway); unavailable
            // only when no partition answers.
            let mut all: Vec<RoomSummary> = Vec::new();
            let mut answered = false;
            let mut out = 0usize;
            for listed in futures_util::future::join_all(reads).await {
                let Ok((counts, names)) = listed else {
                    out += 1;
                    continue;
                };
                answered = true;
                all.extend(counts.into_iter().filter(|(_, n)| *n > 0).filter_map(
                    |(room, members)| {
                        Some(RoomSummary {
                            room: names.get(&room)?.clone(),
                            members: members as usize,
                        })
                    },
                ));
            }
            if !answered {
                return Err(Unavailable);
            }
            if out > 0 {
                tracing::debug!(
                    partitions = out,
                    "the room listing leaves out partitions whose master does not answer"
                );
            }
            all.sort_by(|a, b| b.members.cmp(&a.members).then_with(|| a.room.cmp(&b.room)));
            let start = match &after {
                Some(c) => all
                    .iter()
                    .position(|r| {
                        (std::cmp::Reverse(r.members), r.room.as_str())
                            > (std::cmp::Reverse(c.members), c.room.as_str())
                    })
                    .unwrap_or(all.len()),
                None => 0,
            };
            let mut page: Vec<RoomSummary> = all
                .into_iter()
                .skip(start)
                .take(limit.saturating_add(1))
                .collect();
            let next = if page.len() > limit {
                page.truncate(limit);
                page.last().map(|last| RoomCursor {
                    members: last.members,
                    room: last.room.clone(),
                })
            } else {
                None
            };
            Ok(RoomsPage { rooms: page, next })
        })
    }

    fn room(&self, room: NameKey) -> BoxFuture<'_, Result<Option<RoomDetails>, Unavailable>> {
        Box::pin(async move {
            let reply = self
                .read(&room, "room", "")
                .await
                .map_err(|_| Unavailable)?;
            if reply.status() != "ok" {
                return Ok(None);
            }
            let members: Vec<String> = reply.list(2).iter().filter_map(store::text).collect();
            Ok((!members.is_empty()).then(|| RoomDetails {
                room: reply.text(1).unwrap_or_default(),
                members,
            }))
        })
    }

    fn holder(
        &self,
        room: NameKey,
        name: NameKey,
    ) -> BoxFuture<'_, Result<Option<String>, NotTaken>> {
        Box::pin(async move {
            let reply = self
                .read(&room, "holder", name.as_str())
                .await
                .map_err(|_| NotTaken::Unavailable)?;
            Ok((reply.status() == "ok").then(|| reply.text(1)).flatten())
        })
    }

    fn post(
        &self,
        room: NameKey,
        from: Arc<str>,
        text: Arc<str>,
    ) -> BoxFuture<'_, Result<Option<u64>, Unavailable>> {
        Box::pin(async move {
            let shared = &self.shared;
            let room_hex = room_id(&room);
            let jtext = serde_json::to_string(&*text).unwrap_or_default();
            let jfrom = serde_json::to_string(&*from).unwrap_or_default();
            let mut call = shared.call(&shared.scripts.send, &room_hex);
            call.arg("").arg(0).arg(jtext).arg(jfrom);
            let reply = shared.run("send", &call).await.map_err(|_| Unavailable)?;
            if reply.status() != "ok" {
                return Ok(None);
            }
            let id = reply.int(1).unwrap_or(0);
            if let Some(frame) = reply.text(2) {
                let display = reply.text(3);
                shared
                    .observe(&room_hex, &frame, None, display.as_deref())
                    .await;
            }
            Ok(Some(id))
        })
    }

    #[cfg(feature = "testing")]
    fn pause(&self, room: NameKey) -> BoxFuture<'_, Option<oneshot::Sender<()>>> {
        Box::pin(async move {
            let room_hex = room_id(&room);
            let mirror = self.shared.existing_mirror(&room_hex)?;
            {
                let mut m = lock(&mirror);
                if m.members.is_empty() {
                    return None;
                }
                m.held = true;
            }
            let (resume, resumed) = oneshot::channel::<()>();
            let shared = self.shared.clone();
            self.shared.context.spawn(async move {
                let _ = resumed.await;
                let mut effects = Effects::default();
                {
                    let mut m = lock(&mirror);
                    m.held = false;
                    m.drain(&mut effects);
                }
                shared.effects(&room_hex, effects);
            });
            Some(resume)
        })
    }

    #[cfg(feature = "testing")]
    fn settle(&self, room: NameKey) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Ok(reply) = self.read(&room, "room", "").await else {
                return;
            };
            if reply.status() != "ok" {
                return;
            }
            let (seq, epoch) = (reply.int(3).unwrap_or(0), reply.int(4).unwrap_or(0));
            let Some(mirror) = self.shared.existing_mirror(&room_id(&room)) else {
                return;
            };
            let progress = lock(&mirror).progress.clone();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                let notified = progress.notified();
                {
                    let m = lock(&mirror);
                    if m.members.is_empty()
                        || m.epoch > epoch
                        || (m.epoch == epoch && m.delivered >= seq)
                    {
                        return;
                    }
                }
                if tokio::time::timeout_at(deadline, notified).await.is_err() {
                    return;
                }
            }
        })
    }

    #[cfg(feature = "testing")]
    fn expire_now(&self, room: NameKey) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.shared.expire_with(&room_id(&room), "", 0, true).await;
        })
    }

    fn kick(
        &self,
        room: NameKey,
        name: NameKey,
        reason: String,
    ) -> BoxFuture<'_, Result<bool, Unavailable>> {
        Box::pin(async move {
            self.remove(&room, "key", name.as_str(), &reason)
                .await
                .map(|r| r.is_some())
        })
    }

    fn kick_matching(
        &self,
        room: NameKey,
        matches: ContextMatch,
        reason: String,
    ) -> BoxFuture<'_, Result<usize, Unavailable>> {
        Box::pin(async move {
            // Contexts live on the node that serves each member: this node matches its
            // own members.
            let room_hex = room_id(&room);
            let chosen: Vec<MemberId> = match self.shared.existing_mirror(&room_hex) {
                Some(mirror) => {
                    let m = lock(&mirror);
                    m.members
                        .iter()
                        .filter(|(_, local)| {
                            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                matches(&local.context)
                            }))
                            .unwrap_or(false)
                        })
                        .map(|(mid, _)| *mid)
                        .collect()
                }
                None => Vec::new(),
            };
            let mut removed = 0;
            for member in chosen {
                if self
                    .remove(&room, "mid", &member.to_string(), &reason)
                    .await?
                    .is_some()
                {
                    removed += 1;
                }
            }
            Ok(removed)
        })
    }

    fn members(
        &self,
        room: NameKey,
    ) -> BoxFuture<'_, Result<Option<Vec<MemberInfo>>, Unavailable>> {
        Box::pin(async move {
            let reply = self
                .read(&room, "members", "")
                .await
                .map_err(|_| Unavailable)?;
            if reply.status() != "ok" {
                return Ok(None);
            }
            let contexts: HashMap<MemberId, Arc<ConnectionContext>> =
                match self.shared.existing_mirror(&room_id(&room)) {
                    Some(mirror) => lock(&mirror)
                        .members
                        .iter()
                        .map(|(mid, l)| (*mid, l.context.clone()))
                        .collect(),
                    None => HashMap::new(),
                };
            let members: Vec<MemberInfo> = reply
                .list(2)
                .iter()
                .filter_map(|m| {
                    let Value::Array(parts) = m else { return None };
                    let mid = parts.first().and_then(store::int)?;
                    let name = parts.get(1).and_then(store::text)?;
                    let present = parts.get(2).and_then(store::text).as_deref() == Some("p");
                    let joined = parts.get(3).and_then(store::int).unwrap_or(0);
                    Some(member_info(
                        name,
                        present,
                        joined,
                        contexts.get(&mid).cloned().unwrap_or_default(),
                    ))
                })
                .collect();
            Ok((!members.is_empty()).then_some(members))
        })
    }
}

fn member_info(
    name: String,
    present: bool,
    joined_ms: u64,
    context: Arc<ConnectionContext>,
) -> MemberInfo {
    MemberInfo::new(
        name,
        present,
        UNIX_EPOCH + Duration::from_millis(joined_ms),
        context,
    )
}

impl Node {
    async fn read(&self, room: &NameKey, what: &str, arg: &str) -> Result<Reply, Unreachable> {
        let shared = &self.shared;
        let mut call = shared.call(&shared.scripts.read, &room_id(room));
        call.arg(what).arg(arg);
        shared.run("read", &call).await
    }

    /// Kicks one member (by name key or member id): `Some(name)` if there was one.
    async fn remove(
        &self,
        room: &NameKey,
        how: &str,
        who: &str,
        reason: &str,
    ) -> Result<Option<String>, Unavailable> {
        let shared = &self.shared;
        let room_hex = room_id(room);
        let mut call = shared.call(&shared.scripts.leave, &room_hex);
        call.arg(how).arg(who).arg(0).arg(reason);
        let reply = shared.run("leave", &call).await.map_err(|_| Unavailable)?;
        if reply.status() != "ok" {
            return Ok(None);
        }
        let name = reply.text(3).unwrap_or_default();
        if shared.observers.observes() {
            let member = reply.int(2).unwrap_or(0);
            let context = shared
                .existing_mirror(&room_hex)
                .and_then(|m| lock(&m).members.get(&member).map(|l| l.context.clone()))
                .unwrap_or_default();
            let display = reply.text(5);
            if let Some(frame) = reply.text(4) {
                shared
                    .observe(&room_hex, &frame, Some(&context), display.as_deref())
                    .await;
            }
            let room_name = shared
                .room_name(&room_hex)
                .or_else(|| RoomName::parse(display.as_deref()?).ok());
            if let Some(room_name) = room_name {
                shared
                    .observers
                    .on_member_left(&room_name, &name, &context, LeaveReason::Kicked)
                    .await;
            }
        }
        Ok(Some(name))
    }
}
