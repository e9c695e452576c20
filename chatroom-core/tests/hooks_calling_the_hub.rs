//! Hooks may call the hub: a moderation bot that kicks and posts from `on_event` and
//! `filter_message`, and two rooms whose observers post into each other, neither
//! freeze a room nor keep `Hub::shutdown` from completing.

mod common;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chatroom_core::protocol::Event;
use chatroom_core::{Filter, Hooks, Hub, MessageAttempt, ObservedEvent, close_code};
use common::*;
use serde_json::json;

/// The hub, handed to the hooks once it is built.
type Later = Arc<OnceLock<Hub>>;

struct Moderator(Later);

impl Hooks for Moderator {
    async fn on_event(&self, seen: ObservedEvent<'_>) {
        let (Some(hub), Event::Message(m)) = (self.0.get(), seen.event) else {
            return;
        };
        let room = seen.room;
        if m.text.contains("badword") {
            let _ = hub.kick(room.as_str(), &m.from, "language").await;
            let note = format!("{} was removed", m.from);
            let _ = hub.post(room.as_str(), "moderator", &note).await;
            // A query of the room's own state from inside the hook answers too.
            if matches!(hub.room(room.as_str()).await, Ok(Some(_))) {
                let _ = hub
                    .post(room.as_str(), "moderator", "the room answers")
                    .await;
            }
        }
    }

    async fn filter_message(&self, attempt: MessageAttempt<'_>) -> Filter {
        if let Some(hub) = self.0.get() {
            if attempt.text == "!ping" {
                let _ = hub.post(attempt.room.as_str(), "bot", "pong").await;
            }
            if attempt.text == "!leave-me" {
                let _ = hub.kick(attempt.room.as_str(), "B", "asked to").await;
            }
        }
        Filter::Allow
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not complete: the room is frozen"))
}

fn text(e: &Event) -> Option<(&str, &str)> {
    match e {
        Event::Message(m) => Some((&*m.from, &*m.text)),
        _ => None,
    }
}

#[tokio::test]
async fn a_hook_may_kick_and_post_in_its_own_room() {
    let later = Later::default();
    let hub = Hub::builder().hooks(Moderator(later.clone())).build();
    let _ = later.set(hub.clone());
    let (mut a, _) = joined(&hub, "r", "A").await;
    let (mut b, _) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await; // B joined

    // on_event kicks the sender and posts a notice.
    send(&b, json!({"type": "send", "text": "a badword"})).await;
    within("the kick", async {
        assert_eq!(text(&expect_event(&mut a).await), Some(("B", "a badword")));
        assert!(matches!(expect_event(&mut a).await, Event::Left(l) if &*l.name == "B"));
        assert_eq!(
            text(&expect_event(&mut a).await),
            Some(("moderator", "B was removed"))
        );
        assert_eq!(
            text(&expect_event(&mut a).await),
            Some(("moderator", "the room answers"))
        );
        assert_eq!(expect_close(&mut b).await.code, close_code::REMOVED);
    })
    .await;

    // filter_message posts before the message it lets through.
    send(&a, json!({"type": "send", "text": "!ping"})).await;
    within("the post from the filter", async {
        assert_eq!(text(&expect_event(&mut a).await), Some(("bot", "pong")));
        assert_eq!(text(&expect_event(&mut a).await), Some(("A", "!ping")));
    })
    .await;

    // filter_message kicks another member.
    let (mut b2, _) = joined(&hub, "r", "B").await;
    expect_event(&mut a).await; // B joined
    send(&a, json!({"type": "send", "text": "!leave-me"})).await;
    within("the kick from the filter", async {
        assert_eq!(expect_close(&mut b2).await.code, close_code::REMOVED);
    })
    .await;

    // The room still answers, and shutdown completes.
    within("GET /rooms/r", hub.room("r"))
        .await
        .expect("the room");
    within("shutdown", hub.shutdown()).await;
}

/// On "go" in either room, the observer waits until the other room's observer is
/// also busy with its "go", then posts into the other room: the two hooks call into
/// each other's room at the same time.
struct Crossed {
    hub: Later,
    both: tokio::sync::Barrier,
}

impl Hooks for Crossed {
    async fn on_event(&self, seen: ObservedEvent<'_>) {
        let (Some(hub), Event::Message(m)) = (self.hub.get(), seen.event) else {
            return;
        };
        if &*m.text == "go" {
            self.both.wait().await;
            let room = seen.room;
            let other = if room.as_str() == "x" { "y" } else { "x" };
            let _ = hub.post(other, "relay", &format!("from {room}")).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_rooms_whose_observers_post_into_each_other_do_not_deadlock() {
    let later = Later::default();
    let hooks = Crossed {
        hub: later.clone(),
        both: tokio::sync::Barrier::new(2),
    };
    let hub = Hub::builder().hooks(hooks).build();
    let _ = later.set(hub.clone());
    let (mut x, _) = joined(&hub, "x", "X").await;
    let (mut y, _) = joined(&hub, "y", "Y").await;
    send(&x, json!({"type": "send", "text": "go"})).await;
    send(&y, json!({"type": "send", "text": "go"})).await;
    within("the crossed posts", async {
        assert_eq!(text(&expect_event(&mut x).await), Some(("X", "go")));
        assert_eq!(text(&expect_event(&mut x).await), Some(("relay", "from y")));
        assert_eq!(text(&expect_event(&mut y).await), Some(("Y", "go")));
        assert_eq!(text(&expect_event(&mut y).await), Some(("relay", "from x")));
    })
    .await;
    within("shutdown", hub.shutdown()).await;
}
