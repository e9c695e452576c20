//! The host application's side: policy hooks, the message filter, the event observer,
//! and the hub's server-side operations.

mod common;

use std::sync::{Arc, Mutex};

use chatroom_core::protocol::Event;
use chatroom_core::testing::TestClient;
use chatroom_core::{
    ConnectionContext, Filter, Hooks, Hub, JoinAttempt, MessageAttempt, NameCheck, PostError,
    RenameAttempt, RoomName, RoomSummary, Verdict, close_code,
};
use common::*;
use futures_util::future::BoxFuture;
use serde_json::json;

#[derive(Debug, Clone, PartialEq)]
struct User(&'static str);

#[derive(Default, Clone)]
struct Policy {
    seen: Arc<Mutex<Vec<(String, Event)>>>,
}

impl Hooks for Policy {
    fn authorize_join<'a>(&'a self, attempt: JoinAttempt<'a>) -> BoxFuture<'a, Verdict> {
        Box::pin(async move {
            match attempt.context.get::<User>() {
                None => Verdict::Deny("sign in first".into()),
                Some(_) if attempt.room.as_str() == "staff" => Verdict::Deny("staff only".into()),
                Some(_) => Verdict::Allow,
            }
        })
    }

    fn authorize_rename<'a>(&'a self, attempt: RenameAttempt<'a>) -> BoxFuture<'a, Verdict> {
        let deny = attempt.name.as_str().eq_ignore_ascii_case("admin");
        Box::pin(async move {
            if deny {
                Verdict::Deny("reserved name".into())
            } else {
                Verdict::Allow
            }
        })
    }

    fn filter_message<'a>(&'a self, attempt: MessageAttempt<'a>) -> BoxFuture<'a, Filter> {
        Box::pin(async move {
            if attempt.text.contains("spam") {
                Filter::Deny("no spam".into())
            } else if attempt.text.contains("darn") {
                Filter::Replace(attempt.text.replace("darn", "d*rn"))
            } else {
                Filter::Allow
            }
        })
    }

    fn on_event<'a>(&'a self, room: &'a RoomName, event: &'a Event) -> BoxFuture<'a, ()> {
        if let Ok(mut seen) = self.seen.lock() {
            seen.push((room.to_string(), event.clone()));
        }
        Box::pin(async {})
    }
}

fn signed_in(hub: &Hub) -> TestClient {
    TestClient::connect_with(hub, ConnectionContext::new().with(User("u1")), 64)
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
        hub.rooms().await,
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
    let general = hub.room("GENERAL").await.expect("exists");
    assert_eq!(general.room, "General");
    assert_eq!(general.members, ["Alice", "Bob"]);
    assert_eq!(hub.room("nowhere").await, None);
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

    assert!(hub.kick("r", "b", "spamming").await);
    let close = expect_close(&mut b).await;
    assert_eq!(
        (close.code, close.reason.as_str()),
        (close_code::REMOVED, "removed: spamming")
    );
    let Event::Left(l) = expect_event(&mut a).await else {
        panic!()
    };
    assert_eq!(&*l.name, "B");
    assert!(!hub.kick("r", "B", "again").await, "already gone");
    joined(&hub, "r", "B").await; // the name is free at once
}

/// Hooks with a bug: they panic on certain input.
struct Buggy;

impl Hooks for Buggy {
    fn authorize_join<'a>(&'a self, attempt: JoinAttempt<'a>) -> BoxFuture<'a, Verdict> {
        assert_ne!(
            attempt.name.as_str(),
            "boom",
            "bug in the host's join policy"
        );
        Box::pin(async { Verdict::Allow })
    }

    fn filter_message<'a>(&'a self, attempt: MessageAttempt<'a>) -> BoxFuture<'a, Filter> {
        Box::pin(async move {
            assert_ne!(attempt.text, "boom", "bug in the host's filter");
            Filter::Allow
        })
    }

    fn on_event<'a>(&'a self, _: &'a RoomName, event: &'a Event) -> BoxFuture<'a, ()> {
        let explode = matches!(event, Event::Message(m) if &*m.text == "explode");
        Box::pin(async move { assert!(!explode, "bug in the host's observer") })
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
