//! The Redis side: key names, the Lua scripts, and calls with a deadline.
//!
//! Every room operation is one script (`lua/*.lua`, each prefixed with
//! `lua/prelude.lua`) that checks everything first, then writes, appends the event to
//! the room's stream and publishes it. Rust computes every key and encodes every
//! string the scripts splice into a frame; Lua only compares and concatenates.

use std::time::Duration;

use chatroom_core::NameKey;
use redis::aio::ConnectionManager;
use redis::cluster_async::ClusterConnection;
use redis::{Script, Value};

use crate::Unreachable;

/// How many partitions the rooms of a Redis Cluster are spread over (one on a single
/// Redis). A partition's keys share one hash tag, so a partition is the unit that
/// lives on one master: 16 lets a cluster spread its rooms over up to 16 masters.
pub(crate) const CLUSTER_PARTITIONS: u16 = 16;

/// The partition tag of a partition's keys (never user text).
pub(crate) fn tag(partition: u16) -> String {
    format!("{{cr.{partition}}}")
}

/// The partition of a room (its id in key names) when there are `partitions`: FNV-1a,
/// the same on every node and every version.
pub(crate) fn partition_of(room: &str, partitions: u16) -> u16 {
    if partitions <= 1 {
        return 0;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(partitions)) as u16
}

/// Where a node's keys live: how many partitions, and whether the store is a Redis
/// Cluster (sharded pub/sub: `SPUBLISH`/`SSUBSCRIBE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    pub(crate) partitions: u16,
    pub(crate) sharded: bool,
}

impl Layout {
    pub(crate) const SINGLE: Layout = Layout {
        partitions: 1,
        sharded: false,
    };
    pub(crate) const CLUSTER: Layout = Layout {
        partitions: CLUSTER_PARTITIONS,
        sharded: true,
    };

    /// The partition of a room.
    pub(crate) fn of(&self, room: &str) -> u16 {
        partition_of(room, self.partitions)
    }

    /// Every partition.
    pub(crate) fn all(&self) -> std::ops::Range<u16> {
        0..self.partitions.max(1)
    }
}

fn script(body: &str, read_only: bool, layout: Layout) -> Script {
    let shebang = if read_only {
        "#!lua flags=no-writes"
    } else {
        "#!lua"
    };
    publishing(
        &format!("{shebang}\n{}\n{body}", include_str!("../lua/prelude.lua")),
        layout,
    )
}

/// A script that publishes with `SPUBLISH` on a Redis Cluster (sharded pub/sub: the
/// channel lives in the room's slot), `PUBLISH` on a single Redis.
fn publishing(source: &str, layout: Layout) -> Script {
    if layout.sharded {
        Script::new(&source.replace("redis.call('PUBLISH',", "redis.call('SPUBLISH',"))
    } else {
        Script::new(source)
    }
}

/// The scripts, loaded once per process (EVALSHA, with EVAL when Redis lost them).
pub(crate) struct Scripts {
    pub(crate) join: Script,
    pub(crate) resume: Script,
    pub(crate) send: Script,
    pub(crate) rename: Script,
    pub(crate) leave: Script,
    pub(crate) disconnect: Script,
    pub(crate) expire: Script,
    pub(crate) read: Script,
    pub(crate) heartbeat: Script,
    pub(crate) reap: Script,
    pub(crate) check_rules: Script,
}

impl Scripts {
    /// Loads every script into Redis, so that the first calls need one round trip.
    pub(crate) async fn load(&self, con: &mut Con) -> redis::RedisResult<()> {
        for script in [
            &self.join,
            &self.resume,
            &self.send,
            &self.rename,
            &self.leave,
            &self.disconnect,
            &self.expire,
            &self.read,
            &self.heartbeat,
            &self.reap,
            &self.check_rules,
        ] {
            script.load_async(con).await?;
        }
        Ok(())
    }

    pub(crate) fn new(layout: Layout) -> Scripts {
        Scripts {
            join: script(include_str!("../lua/join.lua"), false, layout),
            resume: script(include_str!("../lua/resume.lua"), false, layout),
            send: script(include_str!("../lua/send.lua"), false, layout),
            rename: script(include_str!("../lua/rename.lua"), false, layout),
            leave: script(include_str!("../lua/leave.lua"), false, layout),
            disconnect: script(include_str!("../lua/disconnect.lua"), false, layout),
            expire: script(include_str!("../lua/expire.lua"), false, layout),
            read: script(include_str!("../lua/read.lua"), true, layout),
            heartbeat: Script::new(&format!(
                "#!lua\n{}\n{}",
                include_str!("../lua/rules.lua"),
                include_str!("../lua/heartbeat.lua")
            )),
            check_rules: Script::new(&format!(
                "#!lua flags=no-writes\n{}\n{}",
                include_str!("../lua/rules.lua"),
                include_str!("../lua/check_rules.lua")
            )),
            reap: Script::new(&format!("#!lua\n{}", include_str!("../lua/reap.lua"))),
        }
    }
}

/// A connection for commands and scripts: to a single Redis, or to a Redis Cluster
/// (which routes each call to the master of its keys' slot).
#[derive(Clone)]
pub(crate) enum Con {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl redis::aio::ConnectionLike for Con {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a redis::Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Con::Single(c) => c.req_packed_command(cmd),
            Con::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a redis::Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Con::Single(c) => c.req_packed_commands(cmd, offset, count),
            Con::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Con::Single(c) => c.get_db(),
            Con::Cluster(c) => c.get_db(),
        }
    }
}

/// A room's id in key names: its collision key in hex (never user text in a tag, and
/// no two rooms share one).
pub(crate) fn room_id(room: &NameKey) -> String {
    let mut out = String::with_capacity(room.as_str().len() * 2);
    for b in room.as_str().bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The keys of one partition: its rooms, and the nodes' leases, tombstones, rules and
/// data-set id as that partition knows them.
pub(crate) struct PartitionKeys(pub(crate) u16);

impl PartitionKeys {
    pub(crate) fn rooms(&self) -> String {
        format!("cr:{}:rooms", tag(self.0))
    }
    pub(crate) fn rdisp(&self) -> String {
        format!("cr:{}:rdisp", tag(self.0))
    }
    pub(crate) fn due(&self) -> String {
        format!("cr:{}:due", tag(self.0))
    }
    pub(crate) fn epoch(&self) -> String {
        format!("cr:{}:epoch", tag(self.0))
    }
    pub(crate) fn instance(&self) -> String {
        format!("cr:{}:instance", tag(self.0))
    }
    pub(crate) fn node_rooms(&self, node: &str) -> String {
        format!("cr:{}:n:{node}", tag(self.0))
    }
    pub(crate) fn nodes(&self) -> String {
        format!("cr:{}:nodes", tag(self.0))
    }
    pub(crate) fn heartbeat(&self) -> String {
        format!("cr:{}:hb", tag(self.0))
    }
    pub(crate) fn holdoff(&self) -> String {
        format!("cr:{}:holdoff", tag(self.0))
    }
    pub(crate) fn dead(&self) -> String {
        format!("cr:{}:dead", tag(self.0))
    }
    pub(crate) fn dying(&self) -> String {
        format!("cr:{}:dying", tag(self.0))
    }
    pub(crate) fn rules(&self) -> String {
        format!("cr:{}:rules", tag(self.0))
    }
}

/// The room rules every node of a cluster must share, as stored in Redis: the limits
/// the scripts apply or that shape what every member sees.
pub(crate) fn rules(limits: &chatroom_core::Limits, layout: Layout) -> String {
    [
        ("partitions", u128::from(layout.partitions)),
        ("history", limits.history as u128),
        ("resume_grace_ms", limits.resume_grace.as_millis()),
        ("max_members", limits.max_members as u128),
        ("max_rooms", limits.max_rooms as u128),
        ("max_name_chars", limits.max_name_chars as u128),
        ("max_room_chars", limits.max_room_chars as u128),
        ("max_message_chars", limits.max_message_chars as u128),
    ]
    .iter()
    .map(|(name, value)| format!("{name}={value}"))
    .collect::<Vec<_>>()
    .join(";")
}

/// How this node's rules differ from the cluster's, for people:
/// `history 50 here, 100 in the cluster`.
pub(crate) fn rules_diff(here: &str, cluster: &str) -> Vec<String> {
    let pairs = |rules: &str| -> Vec<(String, String)> {
        rules
            .split(';')
            .filter_map(|p| p.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    };
    let (here, cluster) = (pairs(here), pairs(cluster));
    let mut out = Vec::new();
    for (name, mine) in &here {
        match cluster.iter().find(|(k, _)| k == name) {
            Some((_, theirs)) if theirs == mine => {}
            Some((_, theirs)) => out.push(format!("{name} {mine} here, {theirs} in the cluster")),
            None => out.push(format!("{name} {mine} here, unknown to the cluster")),
        }
    }
    for (name, theirs) in &cluster {
        if !here.iter().any(|(k, _)| k == name) {
            out.push(format!("{name} {theirs} in the cluster, unknown here"));
        }
    }
    out
}

/// The keys of one room (`room` is its id in key names): all in its partition's slot.
pub(crate) struct RoomKeys<'a> {
    room: &'a str,
    partition: u16,
}

impl<'a> RoomKeys<'a> {
    pub(crate) fn new(layout: Layout, room: &'a str) -> RoomKeys<'a> {
        RoomKeys {
            room,
            partition: layout.of(room),
        }
    }

    /// The room's partition.
    pub(crate) fn partition(&self) -> PartitionKeys {
        PartitionKeys(self.partition)
    }

    /// One of the room's keys (`meta`, `ev`, ...).
    pub(crate) fn key(&self, part: &str) -> String {
        format!("cr:{}:r:{}:{part}", tag(self.partition), self.room)
    }

    /// The room's pub/sub channel.
    pub(crate) fn channel(&self) -> String {
        self.key("ch")
    }

    /// The stream of the room's events.
    pub(crate) fn stream(&self) -> String {
        self.key("ev")
    }

    /// The room's meta hash.
    pub(crate) fn meta(&self) -> String {
        self.key("meta")
    }
}

/// The room (its id in key names) whose channel `channel` is.
pub(crate) fn room_of_channel(channel: &str) -> Option<&str> {
    let rest = channel.strip_prefix("cr:{cr.")?;
    let (partition, rest) = rest.split_once("}:r:")?;
    if partition.is_empty() || !partition.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.strip_suffix(":ch")
}

/// A call of a room script: the keys of the room, and the common arguments.
pub(crate) fn room_call<'a>(
    script: &'a Script,
    keys: &RoomKeys<'_>,
    node: &str,
    instance: &str,
    deadline_ms: u64,
    stream_cap: usize,
) -> redis::ScriptInvocation<'a> {
    let mut call = script.prepare_invoke();
    for part in ["meta", "ev", "names", "order", "tok", "away", "mem"] {
        call.key(keys.key(part));
    }
    let partition = keys.partition();
    call.key(partition.rooms())
        .key(partition.rdisp())
        .key(partition.due())
        .key(partition.epoch())
        .key(partition.instance())
        .key(partition.node_rooms(node))
        .key(partition.dead());
    call.arg(instance)
        .arg(deadline_ms)
        .arg(node)
        .arg(keys.channel())
        .arg(stream_cap)
        .arg(keys.room);
    call
}

/// Runs a call within `timeout`: `Unreachable` if Redis did not answer in time or the
/// connection failed (the script refuses to act past its deadline, so a call that
/// timed out has no effect later; a call that failed mid-flight may have run, which
/// its caller treats as an unknown outcome).
pub(crate) async fn run(
    op: &'static str,
    call: &redis::ScriptInvocation<'_>,
    con: &Con,
    timeout: Duration,
) -> Result<Value, Unreachable> {
    let mut con = con.clone();
    let started = tokio::time::Instant::now();
    match command(op, timeout, call.invoke_async::<Value>(&mut con)).await {
        Ok(Ok(value)) => Ok(value),
        Err(_) => Err(Unreachable),
        Ok(Err(e)) => {
            tracing::warn!(op, error = %e, "a Redis call failed");
            // A call that failed on the way may still reach Redis and run before its
            // deadline: `unavailable` is only said once that deadline has passed.
            tokio::time::sleep_until(started + timeout).await;
            Err(Unreachable)
        }
    }
}

/// A direct command (not a script) within `timeout`, counted in the metrics like a
/// script call; answers as `tokio::time::timeout` does.
pub(crate) async fn command<T>(
    op: &'static str,
    timeout: Duration,
    call: impl std::future::Future<Output = redis::RedisResult<T>>,
) -> Result<redis::RedisResult<T>, tokio::time::error::Elapsed> {
    let timed = Timed::start(op);
    let out = tokio::time::timeout(timeout, call).await;
    match &out {
        Ok(Ok(_)) => timed.answered(),
        _ => timed.failed(),
    }
    out
}

/// One call to Redis, counted in the metrics by operation: `chatroom_backplane_calls_total`,
/// `chatroom_backplane_errors_total` (no answer in time, or a failed connection) and
/// `chatroom_backplane_call_seconds` (answered calls).
struct Timed {
    op: &'static str,
    started: std::time::Instant,
}

impl Timed {
    fn start(op: &'static str) -> Timed {
        metrics::counter!("chatroom_backplane_calls_total", "op" => op).increment(1);
        Timed {
            op,
            started: std::time::Instant::now(),
        }
    }

    fn answered(self) {
        metrics::histogram!("chatroom_backplane_call_seconds", "op" => self.op)
            .record(self.started.elapsed().as_secs_f64());
    }

    fn failed(self) {
        metrics::counter!("chatroom_backplane_errors_total", "op" => self.op).increment(1);
    }
}

/// A script's reply, read leniently: an array whose first element is a status word.
pub(crate) struct Reply(Vec<Value>);

impl Reply {
    pub(crate) fn new(value: Value) -> Reply {
        match value {
            Value::Array(items) => Reply(items),
            other => Reply(vec![other]),
        }
    }

    pub(crate) fn status(&self) -> String {
        self.text(0).unwrap_or_default()
    }

    pub(crate) fn text(&self, i: usize) -> Option<String> {
        text(self.0.get(i)?)
    }

    pub(crate) fn int(&self, i: usize) -> Option<u64> {
        int(self.0.get(i)?)
    }

    pub(crate) fn list(&self, i: usize) -> Vec<Value> {
        match self.0.get(i) {
            Some(Value::Array(items)) => items.clone(),
            _ => Vec::new(),
        }
    }
}

/// A Redis value as text.
pub(crate) fn text(value: &Value) -> Option<String> {
    match value {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok(),
        Value::SimpleString(s) => Some(s.clone()),
        Value::VerbatimString { text, .. } => Some(text.clone()),
        Value::Int(i) => Some(i.to_string()),
        Value::Okay => Some("OK".to_owned()),
        _ => None,
    }
}

/// A Redis value as a number.
pub(crate) fn int(value: &Value) -> Option<u64> {
    match value {
        Value::Int(i) => u64::try_from(*i).ok(),
        Value::Double(d) if *d >= 0.0 => Some(*d as u64),
        other => text(other)?.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_name_each_difference() {
        let mine = chatroom_core::Limits {
            history: 50,
            ..chatroom_core::Limits::default()
        };
        let theirs = chatroom_core::Limits::default();
        assert_eq!(
            rules_diff(&rules(&mine, Layout::SINGLE), &rules(&mine, Layout::SINGLE)),
            Vec::<String>::new()
        );
        assert_eq!(
            rules_diff(
                &rules(&mine, Layout::SINGLE),
                &rules(&theirs, Layout::SINGLE)
            ),
            ["history 50 here, 100 in the cluster"]
        );
        assert_eq!(
            rules_diff("history=1", "history=1;max_rooms=9"),
            ["max_rooms 9 in the cluster, unknown here"]
        );
    }
}
