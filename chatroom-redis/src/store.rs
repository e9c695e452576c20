//! The Redis side: key names, the Lua scripts, and calls with a deadline.
//!
//! Every room operation is one script (`lua/*.lua`, each prefixed with
//! `lua/prelude.lua`) that checks everything first, then writes, appends the event to
//! the room's stream and publishes it. Rust computes every key and encodes every
//! string the scripts splice into a frame; Lua only compares and concatenates.

use std::time::Duration;

use chatroom_core::NameKey;
use redis::aio::ConnectionManager;
use redis::{Script, Value};

use crate::Unreachable;

/// The partition tag of every key: one partition on a single Redis.
const TAG: &str = "{cr.0}";

fn script(body: &str, read_only: bool) -> Script {
    let shebang = if read_only {
        "#!lua flags=no-writes"
    } else {
        "#!lua"
    };
    Script::new(&format!(
        "{shebang}\n{}\n{body}",
        include_str!("../lua/prelude.lua")
    ))
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
    pub(crate) async fn load(&self, con: &mut ConnectionManager) -> redis::RedisResult<()> {
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

    pub(crate) fn new() -> Scripts {
        Scripts {
            join: script(include_str!("../lua/join.lua"), false),
            resume: script(include_str!("../lua/resume.lua"), false),
            send: script(include_str!("../lua/send.lua"), false),
            rename: script(include_str!("../lua/rename.lua"), false),
            leave: script(include_str!("../lua/leave.lua"), false),
            disconnect: script(include_str!("../lua/disconnect.lua"), false),
            expire: script(include_str!("../lua/expire.lua"), false),
            read: script(include_str!("../lua/read.lua"), true),
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

/// A room's id in key names: its collision key in hex (never user text in a tag, and
/// no two rooms share one).
pub(crate) fn room_id(room: &NameKey) -> String {
    let mut out = String::with_capacity(room.as_str().len() * 2);
    for b in room.as_str().bytes() {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// The keys of one partition and of the nodes.
pub(crate) struct PartitionKeys;

impl PartitionKeys {
    pub(crate) fn rooms() -> String {
        format!("cr:{TAG}:rooms")
    }
    pub(crate) fn rdisp() -> String {
        format!("cr:{TAG}:rdisp")
    }
    pub(crate) fn due() -> String {
        format!("cr:{TAG}:due")
    }
    pub(crate) fn epoch() -> String {
        format!("cr:{TAG}:epoch")
    }
    pub(crate) fn instance() -> String {
        format!("cr:{TAG}:instance")
    }
    pub(crate) fn node_rooms(node: &str) -> String {
        format!("cr:{TAG}:n:{node}")
    }
    pub(crate) fn nodes() -> String {
        format!("cr:{TAG}:nodes")
    }
    pub(crate) fn heartbeat() -> String {
        format!("cr:{TAG}:hb")
    }
    pub(crate) fn holdoff() -> String {
        format!("cr:{TAG}:holdoff")
    }
    pub(crate) fn dead() -> String {
        format!("cr:{TAG}:dead")
    }
    pub(crate) fn dying() -> String {
        format!("cr:{TAG}:dying")
    }
    pub(crate) fn rules() -> String {
        format!("cr:{TAG}:rules")
    }
}

/// The room rules every node of a cluster must share, as stored in Redis: the limits
/// the scripts apply or that shape what every member sees.
pub(crate) fn rules(limits: &chatroom_core::Limits) -> String {
    [
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

/// The pub/sub channel of a room.
pub(crate) fn channel(room: &str) -> String {
    format!("cr:{TAG}:r:{room}:ch")
}

/// The stream of a room's events.
pub(crate) fn stream(room: &str) -> String {
    format!("cr:{TAG}:r:{room}:ev")
}

/// The meta hash of a room.
pub(crate) fn meta(room: &str) -> String {
    format!("cr:{TAG}:r:{room}:meta")
}

/// A call of a room script: the keys of the room, and the common arguments.
pub(crate) fn room_call<'a>(
    script: &'a Script,
    room: &str,
    node: &str,
    instance: &str,
    deadline_ms: u64,
    stream_cap: usize,
) -> redis::ScriptInvocation<'a> {
    let mut call = script.prepare_invoke();
    for part in ["meta", "ev", "names", "order", "tok", "away", "mem"] {
        call.key(format!("cr:{TAG}:r:{room}:{part}"));
    }
    call.key(PartitionKeys::rooms())
        .key(PartitionKeys::rdisp())
        .key(PartitionKeys::due())
        .key(PartitionKeys::epoch())
        .key(PartitionKeys::instance())
        .key(PartitionKeys::node_rooms(node))
        .key(PartitionKeys::dead());
    call.arg(instance)
        .arg(deadline_ms)
        .arg(node)
        .arg(channel(room))
        .arg(stream_cap)
        .arg(room);
    call
}

/// Runs a call within `timeout`: `Unreachable` if Redis did not answer in time or the
/// connection failed (the script refuses to act past its deadline, so a call that
/// timed out has no effect later; a call that failed mid-flight may have run, which
/// its caller treats as an unknown outcome).
pub(crate) async fn run(
    op: &'static str,
    call: &redis::ScriptInvocation<'_>,
    con: &ConnectionManager,
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
            rules_diff(&rules(&mine), &rules(&mine)),
            Vec::<String>::new()
        );
        assert_eq!(
            rules_diff(&rules(&mine), &rules(&theirs)),
            ["history 50 here, 100 in the cluster"]
        );
        assert_eq!(
            rules_diff("history=1", "history=1;max_rooms=9"),
            ["max_rooms 9 in the cluster, unknown here"]
        );
    }
}
