//! The connection driver against an in-process hub, fed an arbitrary sequence of
//! client actions by several connections (joins, sends, renames, leaves, drops,
//! resumes, garbage frames, time passing), with the protocol's invariants checked
//! after every step.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chatroom_core::protocol::{Event, Reply, ServerFrame};
use chatroom_core::testing::TestClient;
use chatroom_core::{DisplayName, Hub, Limits, NameKey, Outgoing};
use serde_json::json;

const ROOMS: [&str; 2] = ["lobby", "Lobby2"];
const NAMES: [&str; 6] = ["Alice", "ALICE", "Bob", "Аlice", "carol", "Dave"];
const CLIENTS: usize = 4;

/// What one test connection has been told, to check what it is told next.
#[derive(Default)]
struct Seen {
    /// The id the next event must have (`None`: not in a room).
    next_id: Option<u64>,
    /// The server closed the connection.
    ended: bool,
    /// A `leave` was sent: once the frames before it are read, the connection is out
    /// of its room.
    leaving: bool,
}

thread_local! {
    /// One runtime per thread, its clock paused (it moves only when every task waits),
    /// reused by every input: building one costs more than most inputs.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("a runtime");
}

/// Runs the action sequence in `data` (three bytes an action) on a fresh hub.
pub fn driver(data: &[u8]) {
    RUNTIME.with(|runtime| runtime.block_on(run(data)));
}

async fn run(data: &[u8]) {
    let hub = Hub::builder()
        .limits(Limits {
            history: 4,
            max_members: 3,
            rate_burst: 1_000,
            rate_per_sec: 1_000,
            outgoing_queue: 64,
            resume_grace: Duration::from_millis(300),
            join_timeout: Duration::from_secs(5),
            ..Limits::default()
        })
        .build();
    let mut clients: Vec<Option<TestClient>> = (0..CLIENTS).map(|_| None).collect();
    let mut seen: Vec<Seen> = (0..CLIENTS).map(|_| Seen::default()).collect();
    let mut tokens: Vec<(String, u64)> = Vec::new();
    for action in data.chunks(3).take(64) {
        let [op, who, arg] = [
            action[0],
            *action.get(1).unwrap_or(&0),
            *action.get(2).unwrap_or(&0),
        ];
        let who = usize::from(who) % CLIENTS;
        let name = NAMES[usize::from(arg) % NAMES.len()];
        let room = ROOMS[usize::from(arg / 8) % ROOMS.len()];
        if clients[who].as_ref().is_none() || seen[who].ended {
            clients[who] = Some(TestClient::connect(&hub));
            seen[who] = Seen::default();
        }
        let Some(client) = clients[who].as_ref() else {
            continue;
        };
        match op % 10 {
            0 | 1 => {
                client
                    .send_json(&json!({"type": "join", "room": room, "name": name, "ref": 1}))
                    .await
            }
            2 => {
                client
                    .send_json(&json!({"type": "send", "text": format!("m{arg}"), "ref": arg}))
                    .await
            }
            3 => {
                client
                    .send_json(&json!({"type": "rename", "name": name, "ref": 2}))
                    .await
            }
            4 => {
                client.send_json(&json!({"type": "leave"})).await;
                seen[who].leaving = true;
            }
            5 => {
                // The connection is lost (its member becomes away); a later action on
                // this slot opens a new one.
                clients[who] = None;
            }
            6 => {
                if let Some((token, since)) = tokens.get(usize::from(arg) % tokens.len().max(1)) {
                    let frame = json!({"type": "join", "room": room, "name": "x", "resume": token, "since": since});
                    client.send_json(&frame).await;
                }
            }
            7 => client.send_text(&String::from_utf8_lossy(action)).await,
            8 => tokio::time::sleep(Duration::from_millis(u64::from(arg) * 5)).await,
            _ => {
                client
                    .send_json(&json!({"type": "send", "text": " ", "ref": "e"}))
                    .await
            }
        }
        settle().await;
        for (i, c) in clients.iter_mut().enumerate() {
            if let Some(c) = c {
                check_frames(c, &mut seen[i], &mut tokens);
            }
        }
        check_rooms(&hub).await;
    }
    hub.shutdown().await;
}

/// Lets every task run until all of them wait: the paused clock moves only then, so
/// a millisecond's sleep ends once the hub has settled (and one millisecond passed).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// Every frame the client has been sent since the last check, against what it saw.
fn check_frames(client: &mut TestClient, seen: &mut Seen, tokens: &mut Vec<(String, u64)>) {
    while let Some(frame) = client.try_next_raw() {
        assert!(
            !seen.ended || matches!(frame, Outgoing::Close(_)),
            "a frame after the end: {frame:?}"
        );
        let text = match frame {
            Outgoing::Text(text) => text,
            Outgoing::Ping => continue,
            Outgoing::Close(_) => {
                seen.ended = true;
                seen.next_id = None;
                continue;
            }
        };
        let decoded = ServerFrame::decode(text.as_str()).expect("the server sends valid frames");
        match decoded {
            ServerFrame::Reply(Reply::Welcome(w)) => {
                assert!(seen.next_id.is_none(), "a welcome while in a room");
                let ids: Vec<u64> = w.history.iter().map(Event::id).collect();
                for pair in ids.windows(2) {
                    assert_eq!(pair[1], pair[0] + 1, "history has a hole: {ids:?}");
                }
                assert!(
                    ids.last().is_none_or(|last| *last == w.last_id),
                    "history ends at last_id"
                );
                let keys: HashSet<_> = w.members.iter().map(|m| key_of(m)).collect();
                assert_eq!(
                    keys.len(),
                    w.members.len(),
                    "two members share a key: {:?}",
                    w.members
                );
                assert!(w.members.contains(&w.name), "the newcomer is a member");
                seen.next_id = Some(w.last_id + 1);
                tokens.push((w.resume, w.last_id));
            }
            ServerFrame::Event(e) => {
                let expected = seen.next_id.expect("an event outside a room");
                assert_eq!(
                    e.id(),
                    expected,
                    "events arrive once, in order, without holes"
                );
                seen.next_id = Some(expected + 1);
            }
            ServerFrame::Reply(Reply::Ack { id, .. }) => {
                let next = seen.next_id.expect("an ack outside a room");
                assert!(id < next, "an ack follows its event");
            }
            ServerFrame::Reply(Reply::Error { .. }) => {}
        }
    }
    if seen.leaving {
        // The leave has taken effect (the hub settled since it was sent): everything
        // the room owed came before; the connection is out of the room.
        seen.next_id = None;
        seen.leaving = false;
    }
}

/// The collision key of a member's name (a valid name), parsed once per thread: the
/// checks see the same few names over and over.
fn key_of(member: &str) -> NameKey {
    thread_local! {
        static KEYS: RefCell<HashMap<String, NameKey>> = RefCell::default();
    }
    KEYS.with_borrow_mut(|keys| {
        if let Some(key) = keys.get(member) {
            return key.clone();
        }
        let key = DisplayName::parse(member)
            .expect("members have valid names")
            .key()
            .clone();
        keys.insert(member.to_owned(), key.clone());
        key
    })
}

/// Room-wide invariants, through the hub's own view.
async fn check_rooms(hub: &Hub) {
    for room in ROOMS {
        if let Some(details) = hub.room(room).await.unwrap() {
            let keys: HashSet<_> = details.members.iter().map(|m| key_of(m)).collect();
            assert_eq!(
                keys.len(),
                details.members.len(),
                "two members share a key: {:?}",
                details.members
            );
            assert!(details.members.len() <= 3, "more members than the limit");
        }
    }
    let listed: usize = hub.rooms().await.unwrap().iter().map(|r| r.members).sum();
    let counted: usize = {
        let mut n = 0;
        for room in ROOMS {
            n += hub.room(room).await.unwrap().map_or(0, |d| d.members.len());
        }
        n
    };
    assert_eq!(listed, counted, "the listing agrees with the rooms");
}
