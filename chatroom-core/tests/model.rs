//! Property test: random sequences of join, send, rename, leave, disconnect, resume and
//! expire run against the room state machine and against a deliberately simple model
//! (a `Vec` and loops). After every step the invariants of PROTOCOL.md are checked:
//! unique keys, gapless ids, history an unbroken suffix, atomic renames, the same
//! members in the same order, and a room that is empty exactly when the model is.

#![allow(clippy::expect_used)]

use std::time::{Duration, Instant};

use chatroom_core::protocol::{Event, ServerFrame};
use chatroom_core::room::{Now, Presence, Recorded, Room};
use chatroom_core::{
    DisplayName, JoinError, Limits, NameKey, RenameError, ResumeToken, RoomName, SendError,
};
use proptest::prelude::*;

const SLOTS: u8 = 6;
const GRACE_MS: u64 = 15_000;

fn names() -> Vec<String> {
    [
        "Alice",
        "alice",
        "ALICE",
        "Ａｌｉｃｅ",
        "\u{410}lice",
        "Bob",
        "bob ",
        "  BOB",
        "Straße",
        "STRASSE",
        "Carol",
        "",
        "  ",
        "a\tb",
        "Dave",
        "d\u{430}ve",
        "Eve",
        "e\u{200b}ve",
    ]
    .into_iter()
    .map(String::from)
    .chain(["x".repeat(33), "y".repeat(32)])
    .collect()
}

const TEXTS: [&str; 6] = ["hi", "  ", "", "0123456789x", "0123456789", "two\nlines"];

#[derive(Debug, Clone)]
enum Op {
    Join { slot: u8, name: usize },
    Send { slot: u8, text: usize },
    Rename { slot: u8, name: usize },
    Leave { slot: u8 },
    Disconnect { slot: u8 },
    Resume { slot: u8, stale: bool },
    Advance { secs: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    let n = names().len();
    prop_oneof![
        3 => (0..SLOTS, 0..n).prop_map(|(slot, name)| Op::Join { slot, name }),
        3 => (0..SLOTS, 0..TEXTS.len()).prop_map(|(slot, text)| Op::Send { slot, text }),
        2 => (0..SLOTS, 0..n).prop_map(|(slot, name)| Op::Rename { slot, name }),
        1 => (0..SLOTS).prop_map(|slot| Op::Leave { slot }),
        2 => (0..SLOTS).prop_map(|slot| Op::Disconnect { slot }),
        2 => (0..SLOTS, any::<bool>()).prop_map(|(slot, stale)| Op::Resume { slot, stale }),
        1 => (0u8..20).prop_map(|secs| Op::Advance { secs }),
    ]
}

/// The reference model: members in join order, and counters.
#[derive(Debug, Clone, PartialEq)]
struct ModelMember {
    slot: u8,
    id: u64,
    name: String,
    key: NameKey,
    away_until: Option<u64>,
}

struct Model {
    members: Vec<ModelMember>,
    last_id: u64,
    now_ms: u64,
    max_members: usize,
}

impl Model {
    fn slot(&self, slot: u8) -> Option<&ModelMember> {
        self.members.iter().find(|m| m.slot == slot)
    }
    fn present(&self, slot: u8) -> Option<u64> {
        self.slot(slot)
            .filter(|m| m.away_until.is_none())
            .map(|m| m.id)
    }
    fn holder(&self, key: &NameKey) -> Option<&ModelMember> {
        self.members.iter().find(|m| &m.key == key)
    }
}

fn token(slot: u8, generation: u32) -> ResumeToken {
    let mut b = [0u8; 16];
    b[0] = slot;
    b[1..5].copy_from_slice(&generation.to_le_bytes());
    ResumeToken::from_bytes(b)
}

fn check_event(model: &mut Model, rec: &Recorded) {
    model.last_id += 1;
    assert_eq!(rec.event.id(), model.last_id, "ids are gapless");
    assert_eq!(rec.event.ts(), model.now_ms);
    let decoded = ServerFrame::decode(rec.frame.as_str()).expect("frame decodes");
    assert_eq!(
        decoded,
        ServerFrame::Event(rec.event.clone()),
        "frame matches event"
    );
}

fn check_invariants(room: &Room, model: &Model, history_cap: usize, base: Instant) {
    // The next grace deadline is the earliest away member's.
    let earliest = model.members.iter().filter_map(|m| m.away_until).min();
    assert_eq!(
        room.next_deadline(),
        earliest.map(|ms| base + Duration::from_millis(ms))
    );
    let members = room.members();
    // Unique keys, present or away.
    for (i, a) in members.iter().enumerate() {
        for b in &members[i + 1..] {
            assert_ne!(a.name.key(), b.name.key(), "two members share a key");
        }
    }
    // Same members, same order, same names and presence as the model.
    let got: Vec<(u64, &str, bool)> = members
        .iter()
        .map(|m| (m.id, m.name.as_str(), m.presence == Presence::Present))
        .collect();
    let want: Vec<(u64, &str, bool)> = model
        .members
        .iter()
        .map(|m| (m.id, m.name.as_str(), m.away_until.is_none()))
        .collect();
    assert_eq!(got, want);
    assert_eq!(room.last_id(), model.last_id);
    // History is an unbroken run of the most recent events, ending at last_id.
    let ids: Vec<u64> = room.history().map(|(id, _)| id).collect();
    let expected_len = (model.last_id as usize).min(history_cap);
    assert_eq!(ids.len(), expected_len);
    for (i, id) in ids.iter().enumerate() {
        assert_eq!(*id, model.last_id - (expected_len - 1 - i) as u64);
    }
    assert_eq!(
        room.is_empty(),
        model.members.is_empty(),
        "freed exactly when empty"
    );
}

fn run(ops: Vec<Op>) {
    let limits = Limits {
        history: 7,
        max_members: 4,
        max_message_chars: 10,
        resume_grace: Duration::from_millis(GRACE_MS),
        ..Limits::default()
    };
    let names = names();
    let base = Instant::now();
    let mut room = Room::new(RoomName::parse("Room").expect("valid"), &limits);
    let mut model = Model {
        members: Vec::new(),
        last_id: 0,
        now_ms: 0,
        max_members: limits.max_members,
    };
    let mut generation = [0u32; SLOTS as usize];
    let mut next_id = 1u64;
    let mut last_token: [Option<u32>; SLOTS as usize] = [None; SLOTS as usize];
    for op in ops {
        let now = Now {
            ts: model.now_ms,
            instant: base + Duration::from_millis(model.now_ms),
        };
        match op {
            Op::Join { slot, name } => {
                if model.slot(slot).is_some() {
                    continue; // one membership per connection
                }
                let Ok(parsed) = DisplayName::parse(&names[name]) else {
                    continue;
                };
                generation[slot as usize] += 1;
                let id = next_id;
                next_id += 1;
                let result = room.join(
                    id,
                    parsed.clone(),
                    token(slot, generation[slot as usize]),
                    now,
                );
                let expected = if let Some(h) = model.holder(parsed.key()) {
                    Err(JoinError::NameTaken {
                        taken: h.name.clone(),
                    })
                } else if model.members.len() >= model.max_members {
                    Err(JoinError::RoomFull {
                        max: model.max_members,
                    })
                } else {
                    Ok(())
                };
                match (&result, expected) {
                    (Ok(rec), Ok(())) => {
                        last_token[slot as usize] = Some(generation[slot as usize]);
                        model.members.push(ModelMember {
                            slot,
                            id,
                            name: parsed.as_str().to_owned(),
                            key: parsed.key().clone(),
                            away_until: None,
                        });
                        check_event(&mut model, rec);
                        let snap = room.snapshot(id, None).expect("member");
                        assert_eq!(snap.last_id, model.last_id);
                        assert_eq!(
                            snap.history.last(),
                            Some(&rec.frame),
                            "welcome ends with own join"
                        );
                    }
                    (Err(got), Err(want)) => assert_eq!(got, &want),
                    (got, want) => panic!("join: got {got:?}, model says {want:?}"),
                }
            }
            Op::Send { slot, text } => {
                let Some(id) = model.present(slot) else {
                    continue;
                };
                let text = TEXTS[text];
                let result = room.send(id, text.into(), now);
                let expected = if text.trim().is_empty() {
                    Err(SendError::Empty)
                } else if text.chars().count() > 10 {
                    Err(SendError::TooLong {
                        len: text.chars().count(),
                        max: 10,
                    })
                } else {
                    Ok(())
                };
                match (&result, expected) {
                    (Ok(rec), Ok(())) => {
                        check_event(&mut model, rec);
                        let from = &model.slot(slot).expect("member").name;
                        assert!(
                            matches!(&rec.event, Event::Message(m) if &*m.from == from.as_str() && &*m.text == text)
                        );
                    }
                    (Err(got), Err(want)) => assert_eq!(got, &want),
                    (got, want) => panic!("send: got {got:?}, model says {want:?}"),
                }
            }
            Op::Rename { slot, name } => {
                let Some(id) = model.present(slot) else {
                    continue;
                };
                let Ok(parsed) = DisplayName::parse(&names[name]) else {
                    continue;
                };
                let before = room.members().to_vec();
                let result = room.rename(id, parsed.clone(), now);
                match model
                    .holder(parsed.key())
                    .filter(|h| h.id != id)
                    .map(|h| h.name.clone())
                {
                    Some(taken) => {
                        assert_eq!(result.map(|_| ()), Err(RenameError::NameTaken { taken }));
                        let after = room.members();
                        assert_eq!(
                            before.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                            after.iter().map(|m| m.name.as_str()).collect::<Vec<_>>(),
                            "a refused rename changes nothing"
                        );
                    }
                    None => {
                        let rec = result.expect("rename allowed by the model");
                        let m = model
                            .members
                            .iter_mut()
                            .find(|m| m.id == id)
                            .expect("member");
                        let old = std::mem::replace(&mut m.name, parsed.as_str().to_owned());
                        m.key = parsed.key().clone();
                        check_event(&mut model, &rec);
                        assert!(
                            matches!(&rec.event, Event::Renamed(r) if *r.from == *old && &*r.to == parsed.as_str())
                        );
                    }
                }
            }
            Op::Leave { slot } => {
                let Some(id) = model.present(slot) else {
                    continue;
                };
                let rec = room.leave(id, now).expect("member");
                model.members.retain(|m| m.id != id);
                check_event(&mut model, &rec);
            }
            Op::Disconnect { slot } => {
                let present = model.present(slot);
                let id = model.slot(slot).map(|m| m.id).unwrap_or(u64::MAX);
                assert_eq!(room.disconnect(id, now), present.is_some());
                if let Some(m) = model.members.iter_mut().find(|m| Some(m.id) == present) {
                    m.away_until = Some(model.now_ms + GRACE_MS);
                }
            }
            Op::Resume { slot, stale } => {
                // The token of the slot's latest membership (void once it left or
                // expired), or one that was never issued.
                let t = match (stale, last_token[slot as usize]) {
                    (false, Some(g)) => token(slot, g),
                    _ => token(slot, u32::MAX),
                };
                let result = room.resume(&t);
                match model
                    .slot(slot)
                    .filter(|_| !stale && last_token[slot as usize].is_some())
                {
                    Some(m) => {
                        let (id, was_present) = (m.id, m.away_until.is_none());
                        let r = result.expect("resumable");
                        assert_eq!((r.member, r.was_present), (id, was_present));
                        if let Some(m) = model.members.iter_mut().find(|m| m.id == id) {
                            m.away_until = None;
                        }
                    }
                    None => assert_eq!(result.map(|_| ()), Err(JoinError::ResumeFailed)),
                }
            }
            Op::Advance { secs } => {
                model.now_ms += u64::from(secs) * 1000;
                let now = Now {
                    ts: model.now_ms,
                    instant: base + Duration::from_millis(model.now_ms),
                };
                let left = room.expire_due(now);
                let due: Vec<String> = model
                    .members
                    .iter()
                    .filter(|m| m.away_until.is_some_and(|t| t <= model.now_ms))
                    .map(|m| m.name.clone())
                    .collect();
                model
                    .members
                    .retain(|m| m.away_until.is_none_or(|t| t > model.now_ms));
                assert_eq!(left.len(), due.len());
                for ((_, rec), name) in left.iter().zip(&due) {
                    check_event(&mut model, rec);
                    assert!(matches!(&rec.event, Event::Left(l) if *l.name == **name));
                }
            }
        }
        check_invariants(&room, &model, limits.history, base);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn the_room_matches_the_model(ops in prop::collection::vec(op(), 1..60)) {
        run(ops);
    }
}
