//! Differential test: random operation sequences (joins, sends, renames with
//! colliding and confusable names, leaves, dropped connections, resumes, expiries) run
//! against the in-process backplane and against the Redis one. Every client must
//! receive the same frames on both (ids, order, verdicts, welcomes; timestamps and
//! resume tokens aside): the room rules exist twice (the pure `Room` and the Lua
//! scripts), and this keeps them equal.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::time::Duration;

use chatroom_core::testing::{TestClient, expire_away_now, settle};
use chatroom_core::{Hub, Limits, Outgoing};
use chatroom_redis::testing::RedisServer;
use proptest::prelude::*;
use serde_json::{Value, json};

const SLOTS: usize = 5;

/// Names that collide with each other in every way the rules know (case, width,
/// confusables, folding), and some that are not valid.
const NAMES: [&str; 16] = [
    "Alice",
    "alice",
    "ＡＬＩＣＥ",
    "\u{410}lice",
    "Bob",
    "bob ",
    "Straße",
    "STRASSE",
    "Carol",
    "",
    "  ",
    "a\tb",
    "Dave",
    "d\u{430}ve",
    "e\u{200b}ve",
    "yyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyyy",
];

const TEXTS: [&str; 5] = ["hi", "  ", "0123456789x", "0123456789", "two\nlines"];

#[derive(Debug, Clone)]
enum Op {
    Join {
        slot: usize,
        name: usize,
    },
    Send {
        slot: usize,
        text: usize,
    },
    Rename {
        slot: usize,
        name: usize,
    },
    Leave {
        slot: usize,
    },
    Drop {
        slot: usize,
    },
    Resume {
        slot: usize,
        stale: bool,
        since: bool,
    },
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..SLOTS, 0..NAMES.len()).prop_map(|(slot, name)| Op::Join { slot, name }),
        3 => (0..SLOTS, 0..TEXTS.len()).prop_map(|(slot, text)| Op::Send { slot, text }),
        3 => (0..SLOTS, 0..NAMES.len()).prop_map(|(slot, name)| Op::Rename { slot, name }),
        1 => (0..SLOTS).prop_map(|slot| Op::Leave { slot }),
        2 => (0..SLOTS).prop_map(|slot| Op::Drop { slot }),
        2 => (0..SLOTS, any::<bool>(), any::<bool>())
            .prop_map(|(slot, stale, since)| Op::Resume { slot, stale, since }),
        1 => Just(Op::Expire),
    ]
}

fn limits() -> Limits {
    Limits {
        history: 5,
        max_members: 3,
        max_message_chars: 10,
        // Expiry happens only when the sequence says so, and no timer of the
        // connection (keepalive, join timeout) runs during a sequence.
        resume_grace: Duration::from_secs(600),
        ping_interval: None,
        join_timeout: Duration::from_secs(600),
        max_unjoined: Duration::from_secs(600),
        rate_burst: 10_000,
        rate_per_sec: 10_000,
        room_joins_per_sec: 10_000,
        room_join_burst: 10_000,
        room_presence_per_sec: 10_000,
        room_presence_burst: 10_000,
        ..Limits::default()
    }
}

/// One backplane's run of a sequence.
struct Side {
    label: &'static str,
    hub: Hub,
    room: String,
    /// The live client of each slot.
    clients: Vec<Option<TestClient>>,
    /// Every client ever made, by (slot, incarnation): what it received.
    transcripts: Vec<((usize, usize), Vec<String>)>,
    /// The clients replaced or dropped, still read for their last frames.
    retired: Vec<((usize, usize), TestClient)>,
    incarnation: [usize; SLOTS],
    /// Resume tokens each slot was given, oldest first, and the last event id seen.
    tokens: Vec<Vec<(String, u64)>>,
    in_room: [bool; SLOTS],
}

impl Side {
    fn new(label: &'static str, hub: Hub, room: &str) -> Side {
        Side {
            label,
            hub,
            room: room.to_owned(),
            clients: (0..SLOTS).map(|_| None).collect(),
            transcripts: Vec::new(),
            retired: Vec::new(),
            incarnation: [0; SLOTS],
            tokens: vec![Vec::new(); SLOTS],
            in_room: [false; SLOTS],
        }
    }

    fn log(&mut self, slot: usize, entry: String) {
        let key = (slot, self.incarnation[slot]);
        match self.transcripts.iter_mut().find(|(k, _)| *k == key) {
            Some((_, t)) => t.push(entry),
            None => self.transcripts.push((key, vec![entry])),
        }
    }

    /// A fresh client for `slot`; the old one (if any) is kept to read its last frames.
    fn fresh(&mut self, slot: usize) {
        if let Some(old) = self.clients[slot].take() {
            self.retired.push(((slot, self.incarnation[slot]), old));
        }
        self.incarnation[slot] += 1;
        self.clients[slot] = Some(TestClient::connect(&self.hub));
        self.in_room[slot] = false;
    }

    /// Reads `slot`'s frames until an answer (welcome, ack or error) arrives.
    async fn until_answer(&mut self, slot: usize) {
        loop {
            let Some(client) = self.clients[slot].as_mut() else {
                return;
            };
            let frame = tokio::time::timeout(Duration::from_secs(5), client.next_raw())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: slot {slot} got no answer within 5 s; it has {:?}",
                        self.label,
                        self.transcripts
                            .iter()
                            .find(|(k, _)| k.0 == slot && k.1 == self.incarnation[slot])
                    )
                });
            let Some(frame) = frame else {
                return;
            };
            let mut answer = matches!(frame, Outgoing::Close(_));
            if let Outgoing::Text(text) = &frame {
                let v: Value = serde_json::from_str(text.as_str()).expect("JSON");
                answer = ["welcome", "ack", "error"].iter().any(|t| v["type"] == *t);
                if v["type"] == "welcome" {
                    self.in_room[slot] = true;
                    let token = v["resume"].as_str().unwrap_or_default().to_owned();
                    let last = v["last_id"].as_u64().unwrap_or(0);
                    self.tokens[slot].push((token, last));
                }
            }
            let entry = normalize(frame);
            self.log(slot, entry);
            if answer {
                return;
            }
        }
    }

    /// Reads whatever every client has, until nothing came for a while.
    async fn drain(&mut self) {
        let mut quiet_rounds = 0;
        while quiet_rounds < 3 {
            let mut got = false;
            for slot in 0..SLOTS {
                while let Some(client) = self.clients[slot].as_mut() {
                    match tokio::time::timeout(Duration::from_millis(5), client.next_raw()).await {
                        Ok(Some(frame)) => {
                            let entry = normalize(frame);
                            got = true;
                            self.log(slot, entry);
                        }
                        _ => break,
                    }
                }
            }
            let mut retired = std::mem::take(&mut self.retired);
            for (key, client) in &mut retired {
                while let Ok(Some(frame)) =
                    tokio::time::timeout(Duration::from_millis(5), client.next_raw()).await
                {
                    got = true;
                    let entry = normalize(frame);
                    match self.transcripts.iter_mut().find(|(k, _)| k == key) {
                        Some((_, t)) => t.push(entry),
                        None => self.transcripts.push((*key, vec![entry])),
                    }
                }
            }
            self.retired = retired;
            quiet_rounds = if got { 0 } else { quiet_rounds + 1 };
        }
    }

    async fn members(&self) -> Vec<(String, bool)> {
        self.hub
            .members(&self.room)
            .await
            .unwrap()
            .unwrap_or_default()
            .into_iter()
            .map(|m| (m.name, m.present))
            .collect()
    }

    async fn apply(&mut self, op: &Op) {
        match *op {
            Op::Join { slot, name } => {
                if self.clients[slot].is_none() || self.in_room[slot] {
                    self.fresh(slot);
                }
                let frame =
                    json!({"type": "join", "room": self.room, "name": NAMES[name], "ref": "j"});
                self.send(slot, frame).await;
            }
            Op::Send { slot, text } => {
                if self.clients[slot].is_some() {
                    let frame = json!({"type": "send", "text": TEXTS[text], "ref": "s"});
                    self.send(slot, frame).await;
                }
            }
            Op::Rename { slot, name } => {
                if self.clients[slot].is_some() {
                    let frame = json!({"type": "rename", "name": NAMES[name], "ref": "r"});
                    self.send(slot, frame).await;
                }
            }
            Op::Leave { slot } => {
                if self.clients[slot].is_none() {
                    return;
                }
                if self.in_room[slot] {
                    let before = self.members().await.len();
                    let client = self.clients[slot].as_ref().expect("checked above");
                    client.send_json(&json!({"type": "leave"})).await;
                    self.in_room[slot] = false;
                    let start = std::time::Instant::now();
                    while self.members().await.len() == before {
                        assert!(
                            start.elapsed() < Duration::from_secs(5),
                            "{}: slot {slot}'s leave did not take effect",
                            self.label
                        );
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                } else {
                    self.send(slot, json!({"type": "leave", "ref": "l"})).await;
                }
            }
            Op::Drop { slot } => {
                let present = |m: &[(String, bool)]| m.iter().filter(|(_, p)| *p).count();
                let before = present(&self.members().await);
                let Some(mut client) = self.clients[slot].take() else {
                    return;
                };
                client.drop_connection();
                self.retired.push(((slot, self.incarnation[slot]), client));
                if self.in_room[slot] {
                    self.in_room[slot] = false;
                    let start = std::time::Instant::now();
                    while present(&self.members().await) == before {
                        assert!(
                            start.elapsed() < Duration::from_secs(5),
                            "{}: slot {slot}'s dropped connection did not make it away",
                            self.label
                        );
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            Op::Resume { slot, stale, since } => {
                let tokens = &self.tokens[slot];
                let chosen = if stale {
                    tokens.len().checked_sub(2).map(|i| tokens[i].clone())
                } else {
                    tokens.last().cloned()
                };
                let Some((token, last)) = chosen else {
                    return;
                };
                self.fresh(slot);
                let mut frame = json!({"type": "join", "room": self.room, "name": "x", "resume": token, "ref": "u"});
                if since {
                    frame["since"] = json!(last.saturating_sub(2));
                }
                self.send(slot, frame).await;
            }
            Op::Expire => expire_away_now(&self.hub, &self.room).await,
        }
        if matches!(op, Op::Leave { .. } | Op::Drop { .. } | Op::Expire) {
            // These answer nobody: the test saw them take effect in the store, and on a
            // cluster node their events reach the other members a moment later. Wait
            // for that, as a single node's room hands them out at once.
            settle(&self.hub, &self.room).await;
        }
    }

    async fn send(&mut self, slot: usize, frame: Value) {
        let Some(client) = self.clients[slot].as_ref() else {
            return;
        };
        client.send_json(&frame).await;
        self.until_answer(slot).await;
    }
}

/// A frame as compared: JSON without timestamps, resume tokens replaced.
fn normalize(frame: Outgoing) -> String {
    match frame {
        Outgoing::Text(text) => {
            let mut v: Value = serde_json::from_str(text.as_str()).expect("JSON");
            strip(&mut v);
            v.to_string()
        }
        Outgoing::Close(close) => format!("close {} {}", close.code, close.reason),
        Outgoing::Ping => "ping".to_owned(),
    }
}

fn strip(v: &mut Value) {
    match v {
        Value::Object(map) => {
            map.remove("ts");
            if map.contains_key("resume") {
                map.insert("resume".to_owned(), json!("<token>"));
            }
            for (_, inner) in map.iter_mut() {
                strip(inner);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip),
        _ => {}
    }
}

/// Runs `ops` on both backplanes and compares what every client received.
async fn compare(redis: &Hub, case: usize, ops: &[Op]) -> Result<(), TestCaseError> {
    let room = format!("Room{case}");
    let mut local = Side::new("local", Hub::builder().limits(limits()).build(), &room);
    let mut cluster = Side::new("redis", redis.clone(), &room);
    for op in ops {
        local.apply(op).await;
        cluster.apply(op).await;
    }
    local.drain().await;
    cluster.drain().await;
    local.transcripts.sort();
    cluster.transcripts.sort();
    for (a, b) in local.transcripts.iter().zip(&cluster.transcripts) {
        prop_assert_eq!(a.0, b.0, "the same clients; ops: {:?}", ops);
        for (i, (x, y)) in a.1.iter().zip(&b.1).enumerate() {
            prop_assert_eq!(x, y, "client {:?}, frame {}; ops: {:?}", a.0, i, ops);
        }
        prop_assert_eq!(
            a.1.len(),
            b.1.len(),
            "client {:?}: {:?} / {:?}; ops: {:?}",
            a.0,
            a.1,
            b.1,
            ops
        );
    }
    prop_assert_eq!(local.transcripts.len(), cluster.transcripts.len());
    // Leave the shared node's room empty for the next case.
    for slot in 0..SLOTS {
        if let Some(client) = cluster.clients[slot].as_ref() {
            client.send_json(&json!({"type": "leave"})).await;
        }
    }
    local.hub.shutdown().await;
    Ok(())
}

#[test]
fn the_redis_backplane_answers_every_client_as_the_in_process_one_does() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let node = runtime.block_on(redis.node(limits()));
    let cases = std::env::var("CHATROOM_DIFFERENTIAL_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let config = ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    // A runner of our own: the `proptest!` macro would let `PROPTEST_CASES` (10,000 in
    // CI, for the fast property tests) override the count of this slow one.
    let mut runner = proptest::test_runner::TestRunner::new(config);
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let outcome = runner.run(&proptest::collection::vec(op(), 1..24), |ops| {
        let case = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        runtime.block_on(compare(&node, case, &ops))
    });
    if let Err(failure) = outcome {
        panic!("{failure}");
    }
    eprintln!(
        "{} sequences compared",
        counter.load(std::sync::atomic::Ordering::Relaxed)
    );
    runtime.block_on(node.shutdown());
}
