//! The host application's side: policy hooks, the message filter, the event observer,
//! and the hub's server-side operations.

mod common;

use std::sync::{Arc, Mutex};

use chatroom_core::protocol::Event;
use chatroom_core::testing::TestClient;
use chatroom_core::{
    ConnectionContext, Filter, Hooks, Hub, JoinAttempt, MessageAttempt, NameCheck, ObservedEvent,
    PostError, RenameAttempt, RoomSummary, Verdict, close_code,
};
use common::*;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
struct User(&'static str);

#[derive(Default, Clone)]
struct Policy {
    seen: Arc<Mutex<Vec<(String, Event)>>>,
}

impl Hooks for Policy {
    async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Verdict {
        match attempt.context.get::<User>() {
            None => Verdict::Deny("sign in first".into()),
            Some(_) if attempt.room.as_str() == "staff" => Verdict::Deny("staff only".into()),
            Some(_) => Verdict::Allow,
        }
    }

    async fn authorize_rename(&self, attempt: RenameAttempt<'_>) -> Verdict {
        if attempt.name.as_str().eq_ignore_ascii_case("admin") {
            Verdict::Deny("reserved name".into())
        } else {
            Verdict::Allow
        }
    }

    async fn filter_message(&self, attempt: MessageAttempt<'_>) -> Filter {
        if attempt.text.contains("spam") {
            Filter::Deny("no spam".into())
        } else if attempt.text.contains("darn") {
            Filter::Replace(attempt.text.replace("darn", "d*rn"))
        } else {
            Filter::Allow
        }
    }

    async fn on_event(&self, seen: ObservedEvent<'_>) {
        if let Ok(mut log) = self.seen.lock() {
            log.push((seen.room.to_string(), seen.event.clone()));
        }
    }
}

fn signed_in(hub: &Hub) -> TestClient {
    TestClient::connect_with(hub, ConnectionContext::new().with(User("u1")))
}

#[tokio::test]
async fn policy_hooks_refuse_with_forbidden_and_the_filter_can_rewrite() {
    let policy = Policy::default();
    let hub = Hub::builder().hooks(policy.clone()).build();
    let mut anon = TestClient::connect(&hub);
    send(
        &anon,
        json!({"type": "join", "room": "r", "name": "A", "ref": 1}),
    )
    .await;
    assert_eq!(expect_error(&mut anon, "forbidden").await, Some(json!(1)));
    let mut a = signed_in(&hub);
    send(&a, join_frame("staff", "A")).await;
    expect_error(&mut a, "forbidden").await;
    a.join("r", "A").await.expect("allowed");

    send(&a, json!({"type": "rename", "name": "Admin", "ref": 2})).await;
    assert_eq!(expect_error(&mut a, "forbidden").await, Some(json!(2)));
    send(&a, json!({"type": "send", "text": "buy spam", "ref": 3})).await;
    assert_eq!(expect_error(&mut a, "forbidden").await, Some(json!(3)));
    send(&a, json!({"type": "send", "text": "darn it"})).await;
    let Event::Message(m) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!(&*m.text, "d*rn it");

    send(&a, json!({"type": "rename", "name": "Al"})).await;
    expect_event(&mut a).await;
    send(&a, json!({"type": "leave"})).await;
    expect_quiet(&mut a).await;
    // The observer saw every event, in order, once (on its own task, soon after).
    for _ in 0..1000 {
        if policy.seen.lock().expect("lock").len() >= 4 {
            break;
        }
        tokio::task::yield_now().await;
    }
    let seen = policy.seen.lock().expect("lock").clone();
    let kinds: Vec<(String, &str, u64)> = seen
        .iter()
        .map(|(room, e)| {
            let kind = match e {
                Event::Joined(_) => "joined",
                Event::Message(_) => "message",
                Event::Renamed(_) => "renamed",
                Event::Left(_) => "left",
            };
            (room.clone(), kind, e.id())
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("r".to_string(), "joined", 1),
            ("r".to_string(), "message", 2),
            ("r".to_string(), "renamed", 3),
            ("r".to_string(), "left", 4)
        ]
    );
}

#[tokio::test]
async fn the_hub_lists_rooms_and_members_and_checks_names() {
    let hub = hub();
    let (_a, _) = joined(&hub, "General", "Alice").await;
    let (_b, _) = joined(&hub, "general", "Bob").await;
    let (_c, _) = joined(&hub, "Side", "Carol").await;
    assert_eq!(
        hub.rooms().await.unwrap(),
        [
            RoomSummary {
                room: "General".into(),
                members: 2
            },
            RoomSummary {
                room: "Side".into(),
                members: 1
            },
        ]
    );
    let general = hub.room("GENERAL").await.unwrap().expect("exists");
    assert_eq!(general.room, "General");
    assert_eq!(general.members, ["Alice", "Bob"]);
    assert_eq!(hub.room("nowhere").await.unwrap(), None);
    assert_eq!(
        hub.check_name("general", "Dave").await,
        NameCheck::Available
    );
    assert_eq!(
        hub.check_name("general", "ＡＬＩＣＥ").await,
        NameCheck::Taken {
            holder: "Alice".into()
        }
    );
    assert!(matches!(
        hub.check_name("general", "").await,
        NameCheck::InvalidName(_)
    ));
    assert!(matches!(
        hub.check_name("", "x").await,
        NameCheck::InvalidRoom(_)
    ));
    assert_eq!(
        hub.check_name("empty room", "Alice").await,
        NameCheck::Available
    );
}

#[tokio::test]
async fn the_host_can_post_system_messages_and_kick_members() {
    let hub = hub();
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, _) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await;
    let id = hub.post("R", "moderator", "be nice").await.expect("posted");
    for c in [&mut a, &mut b] {
        let Event::Message(m) = expect_event(c).await else {
            panic!()
        };
        assert_eq!(
            (m.id, &*m.from, &*m.text, m.system),
            (id, "moderator", "be nice", true)
        );
    }
    assert_eq!(
        hub.post("nowhere", "m", "x").await,
        Err(PostError::NoSuchRoom)
    );
    assert!(matches!(
        hub.post("r", "m", " ").await,
        Err(PostError::InvalidText(_))
    ));

    assert!(hub.kick("r", "b", "spamming").await.unwrap());
    let close = expect_close(&mut b).await;
    assert_eq!(
        (close.code, close.reason.as_str()),
        (close_code::REMOVED, "removed: spamming")
    );
    let Event::Left(l) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!(&*l.name, "B");
    assert!(!hub.kick("r", "B", "again").await.unwrap(), "already gone");
    joined(&hub, "r", "B").await; // the name is free at once
}

/// Hooks with a bug: they panic on certain input.
struct Buggy;

impl Hooks for Buggy {
    async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Verdict {
        assert_ne!(
            attempt.name.as_str(),
            "boom",
            "bug in the host's join policy"
        );
        Verdict::Allow
    }

    async fn filter_message(&self, attempt: MessageAttempt<'_>) -> Filter {
        assert_ne!(attempt.text, "boom", "bug in the host's filter");
        Filter::Allow
    }

    async fn on_event(&self, seen: ObservedEvent<'_>) {
        let explode = matches!(seen.event, Event::Message(m) if &*m.text == "explode");
        assert!(!explode, "bug in the host's observer");
    }
}

#[tokio::test]
async fn a_panicking_hook_is_answered_internal_and_nothing_else_breaks() {
    let hub = Hub::builder().hooks(Buggy).build();
    let mut a = TestClient::connect(&hub);
    send(
        &a,
        json!({"type": "join", "room": "r", "name": "boom", "ref": 1}),
    )
    .await;
    assert_eq!(expect_error(&mut a, "internal").await, Some(json!(1)));
    a.join("r", "A").await.expect("the connection still works");
    send(&a, json!({"type": "send", "text": "boom", "ref": 2})).await;
    assert_eq!(expect_error(&mut a, "internal").await, Some(json!(2)));
    send(&a, json!({"type": "send", "text": "explode"})).await;
    send(&a, json!({"type": "send", "text": "after"})).await;
    for text in ["explode", "after"] {
        let Event::Message(m) = expect_event(&mut a).await else {
            panic!()
        };
        assert_eq!(&*m.text, text, "the room survived its observer's panic");
    }
}

/// What the observers were told, in order.
#[derive(Clone, Default)]
struct Journal(Arc<Mutex<Vec<String>>>);

impl Journal {
    fn note(&self, line: String) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(line);
    }

    /// Waits (a bounded number of turns) until `line` was noted.
    async fn saw(&self, line: &str) -> Vec<String> {
        for _ in 0..2000 {
            if self
                .0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .iter()
                .any(|l| l == line)
            {
                return self
                    .0
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!(
            "never saw {line:?}: {:?}",
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        );
    }
}

fn user_of(context: Option<&ConnectionContext>) -> &'static str {
    context.and_then(|c| c.get::<User>()).map_or("-", |u| u.0)
}

/// The observers get the context of the connection an event is about (the sender of
/// a message, the member that joined, renamed or left; none for a host's post), why a
/// member left, and each connection's end.
#[tokio::test(start_paused = true)]
async fn observers_see_who_did_what_why_members_left_and_connections_ending() {
    let journal = Journal::default();
    let (events, lefts, ends) = (journal.clone(), journal.clone(), journal.clone());
    let hub = Hub::builder()
        .limits(chatroom_core::Limits {
            resume_grace: std::time::Duration::from_secs(5),
            ..chatroom_core::Limits::default()
        })
        .on_event(move |seen| {
            let what = match seen.event {
                Event::Message(m) => format!("message {} from {}", m.text, m.from),
                Event::Joined(j) => format!("joined {}", j.name),
                Event::Left(l) => format!("left {}", l.name),
                Event::Renamed(r) => format!("renamed {} to {}", r.from, r.to),
            };
            events.note(format!(
                "{what} by {} in {}",
                user_of(seen.context),
                seen.room
            ));
        })
        .on_member_left(move |gone| {
            lefts.note(format!(
                "{} ({}) {:?}",
                gone.name,
                user_of(Some(gone.context)),
                gone.reason
            ))
        })
        .on_disconnect(move |ended| {
            ends.note(format!(
                "disconnected {} {:?}",
                user_of(Some(ended.context)),
                ended.end
            ))
        })
        .build();
    let as_user = |user: &'static str| {
        TestClient::connect_with(&hub, ConnectionContext::new().with(User(user)))
    };
    let mut a = as_user("u1");
    a.join("r", "A").await.expect("joins");
    let mut b = as_user("u2");
    b.join("r", "B").await.expect("joins");
    let mut c = as_user("u3");
    c.join("r", "C").await.expect("joins");
    send(&a, json!({"type": "send", "text": "hi"})).await;
    send(&b, json!({"type": "rename", "name": "Bee"})).await;
    hub.post("r", "host", "notice").await.expect("posted");
    send(&a, json!({"type": "leave"})).await;
    journal.saw("A (u1) Left").await;
    assert!(hub.kick("r", "Bee", "enough").await.unwrap());
    journal.saw("Bee (u2) Kicked").await;
    c.drop_connection();
    journal.saw("C (u3) Expired").await;
    drop(a);
    let seen = journal.saw("disconnected u1 ClosedByPeer").await;
    for line in [
        "joined A by u1 in r",
        "joined B by u2 in r",
        "message hi from A by u1 in r",
        "renamed B to Bee by u2 in r",
        "message notice from host by - in r",
        "left A by u1 in r",
        "left Bee by u2 in r",
        "left C by u3 in r",
        "disconnected u3 ClosedByPeer",
        "disconnected u2 Closed(CloseFrame { code: 4003, reason: \"removed: enough\" })",
    ] {
        assert!(seen.iter().any(|l| l == line), "{line:?} in {seen:?}");
    }
    let order = |line: &str| seen.iter().position(|l| l == line).unwrap();
    assert!(
        order("left A by u1 in r") < order("A (u1) Left"),
        "the event comes first"
    );
}

/// A closure filter runs first, in place; the trait's filter sees its replaced text;
/// a refusal from either stops the message.
#[tokio::test]
async fn closure_and_trait_filters_compose() {
    struct Shout;
    impl Hooks for Shout {
        async fn filter_message(&self, attempt: MessageAttempt<'_>) -> Filter {
            if attempt.text.contains("secret") {
                Filter::Deny("no secrets".into())
            } else {
                Filter::Replace(attempt.text.to_uppercase())
            }
        }
    }
    let hub = Hub::builder()
        .hooks(Shout)
        .filter_message(|m| match m.text {
            "spam" => Filter::Deny("no spam".into()),
            text => Filter::Replace(text.replace("darn", "d*rn")),
        })
        .build();
    let (mut a, _) = joined(&hub, "r", "A").await;
    send(&a, json!({"type": "send", "text": "darn it"})).await;
    let Event::Message(m) = a.event().await.expect("event") else {
        panic!("a message")
    };
    assert_eq!(&*m.text, "D*RN IT");
    send(&a, json!({"type": "send", "text": "spam", "ref": 1})).await;
    assert_eq!(expect_error(&mut a, "forbidden").await, Some(json!(1)));
    send(&a, json!({"type": "send", "text": "a secret", "ref": 2})).await;
    assert_eq!(expect_error(&mut a, "forbidden").await, Some(json!(2)));
}
