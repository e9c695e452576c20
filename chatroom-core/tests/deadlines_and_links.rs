//! Deadlines that every write and every unjoined stretch keeps, commands of a
//! connection that no longer holds its membership, and the host's policy on resume.

mod common;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chatroom_core::protocol::{Event, ServerFrame};
use chatroom_core::testing::{TestClient, pause_room};
use chatroom_core::{ConnectionContext, Hooks, Hub, JoinAttempt, Limits, Verdict, close_code};
use common::*;
use serde_json::json;
use tokio::sync::Semaphore;
use tokio::time::Instant;

#[tokio::test(start_paused = true)]
async fn failed_join_attempts_do_not_keep_a_connection_out_of_a_room_forever() {
    let hub = hub_with(Limits {
        join_timeout: Duration::from_secs(10),
        max_unjoined: Duration::from_secs(60),
        ping_interval: None,
        ..Limits::default()
    });
    let mut c = TestClient::connect(&hub);
    let start = Instant::now();
    // Each attempt would restart the join timeout; the stretch out of a room is capped.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_secs(9)).await;
        send(&c, join_frame("r", "a\tb")).await;
        expect_error(&mut c, "invalid_name").await;
    }
    let close = expect_close(&mut c).await;
    assert_eq!(
        (close.code, close.reason.as_str()),
        (close_code::POLICY, "join timeout")
    );
    let took = start.elapsed();
    assert!(
        took >= Duration::from_secs(60) && took < Duration::from_secs(61),
        "{took:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_leave_starts_a_new_stretch_out_of_a_room() {
    let hub = hub_with(Limits {
        join_timeout: Duration::from_secs(10),
        max_unjoined: Duration::from_secs(15),
        ping_interval: None,
        ..Limits::default()
    });
    let mut c = TestClient::connect(&hub);
    tokio::time::sleep(Duration::from_secs(9)).await;
    c.join("r", "A").await.expect("joins");
    tokio::time::sleep(Duration::from_secs(30)).await;
    send(&c, json!({"type": "leave"})).await;
    let left = Instant::now();
    tokio::time::sleep(Duration::from_secs(9)).await;
    c.join("r", "A")
        .await
        .expect("joins again after 9 s out of the room");
    send(&c, json!({"type": "leave"})).await;
    let close = expect_close(&mut c).await;
    assert_eq!(close.reason, "join timeout");
    assert!(left.elapsed() >= Duration::from_secs(19));
}

/// A member whose client stops reading in a quiet room: the one write that blocks is
/// given up after `ping_timeout`, the member becomes away, and its grace runs out.
#[tokio::test(start_paused = true)]
async fn a_write_that_cannot_complete_ends_the_connection_within_the_keepalive_bound() {
    let hub = hub_with(Limits {
        ping_interval: Some(Duration::from_secs(20)),
        ping_timeout: Duration::from_secs(20),
        resume_grace: Duration::from_secs(15),
        ..Limits::default()
    });
    let (mut a, _) = joined(&hub, "r", "A").await;
    // Room for one frame between the server and this client, which never reads again.
    let mut stuck = TestClient::connect_with_buffer(&hub, ConnectionContext::new(), 1);
    stuck.join("r", "Stuck").await.expect("joins");
    expect_event(&mut a).await; // joined
    let start = Instant::now();
    for text in ["one", "two", "three"] {
        send(&a, json!({"type": "send", "text": text})).await;
        expect_event(&mut a).await;
    }
    let left = tokio::time::timeout(Duration::from_secs(600), expect_event(&mut a))
        .await
        .expect("the stuck member is left, not present forever");
    assert!(
        matches!(&left, Event::Left(e) if &*e.name == "Stuck"),
        "{left:?}"
    );
    // Dropped after 20 s of a blocked write, then 15 s of grace.
    let took = start.elapsed();
    assert!(took <= Duration::from_secs(36), "{took:?}");
    drop(stuck);
}

/// Holds a resume's policy check until its gate opens.
struct ResumeGate(Arc<Semaphore>);

impl Hooks for ResumeGate {
    async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Verdict {
        if attempt.resuming {
            let _ = self.0.acquire().await.map(|p| p.forget());
        }
        Verdict::Allow
    }
}

async fn settle() {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
}

/// Tab A's `send` and `leave` reach the room after tab B took A's membership over: they
/// must not act on B's connection. A only gets its 4001; B gets no ack of A's and is
/// not closed.
#[tokio::test]
async fn commands_of_a_taken_over_connection_do_not_act_on_the_new_one() {
    let resume_gate = Arc::new(Semaphore::new(0));
    let hub = Hub::builder()
        .hooks(ResumeGate(resume_gate.clone()))
        .build();
    let (mut a, wa) = joined(&hub, "r", "A").await;
    let (mut c, _) = joined(&hub, "r", "C").await;
    expect_event(&mut a).await; // C joined
    // B's resume is looked up and waits in the policy.
    let mut b = TestClient::connect(&hub);
    send(
        &b,
        json!({"type": "join", "room": "r", "name": "A", "resume": wa.resume, "since": wa.last_id}),
    )
    .await;
    settle().await;
    // The room is held; B's join, then A's send and leave queue up behind, in order.
    let pause = pause_room(&hub, "r").await.expect("the room exists");
    resume_gate.add_permits(1);
    settle().await;
    send(&a, json!({"type": "send", "text": "from A", "ref": 1})).await;
    send(&a, json!({"type": "leave", "ref": 2})).await;
    settle().await;
    pause.resume();
    let w = b.welcome().await.expect("B resumed");
    assert_eq!(w.name, "A");
    // A: its 4001, nothing else.
    let close = expect_close(&mut a).await;
    assert_eq!(close.code, close_code::RESUMED_ELSEWHERE);
    // B: no ack and no message of A's; the next thing it hears is C.
    send(&c, json!({"type": "send", "text": "after"})).await;
    match b.recv().await {
        Ok(ServerFrame::Event(Event::Message(m))) => {
            assert_eq!((&*m.from, &*m.text), ("C", "after"))
        }
        other => panic!("expected C's message, got {other:?}"),
    }
    expect_event(&mut c).await; // after
    // B still holds the membership and can talk.
    send(&b, json!({"type": "send", "text": "still here", "ref": 3})).await;
    assert!(matches!(expect_event(&mut b).await, Event::Message(m) if &*m.from == "A"));
    assert_eq!(expect_ack(&mut b).await.0, json!(3));
    assert_eq!(
        hub.room("r").await.unwrap().expect("room").members,
        ["A", "C"]
    );
}

#[derive(Debug)]
struct User(&'static str);

/// Only a signed-in user who is not banned joins, and only under their own name.
#[derive(Clone, Default)]
struct Bans(Arc<Mutex<HashSet<&'static str>>>);

impl Hooks for Bans {
    async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Verdict {
        match attempt.context.get::<User>() {
            None => Verdict::Deny("sign in first".into()),
            Some(User(u)) if self.0.lock().is_ok_and(|b| b.contains(u)) => {
                Verdict::Deny("banned".into())
            }
            Some(User(u)) if *u != attempt.name.as_str() => Verdict::Deny(format!("you are {u}")),
            Some(_) => Verdict::Allow,
        }
    }
}

fn as_user(hub: &Hub, user: &'static str) -> TestClient {
    TestClient::connect_with_buffer(hub, ConnectionContext::new().with(User(user)), 64)
}

fn resume_frame(token: &str, since: u64) -> serde_json::Value {
    json!({"type": "join", "room": "r", "name": "ignored", "resume": token, "since": since, "ref": 9})
}

#[tokio::test(start_paused = true)]
async fn the_join_policy_is_asked_on_resume_and_a_refusal_changes_nothing() {
    let bans = Bans::default();
    let hub = Hub::builder()
        .hooks(bans.clone())
        .limits(Limits {
            resume_grace: Duration::from_secs(15),
            ..Limits::default()
        })
        .build();
    let mut bob = as_user(&hub, "bob");
    bob.join("r", "bob").await.expect("bob joins");
    let mut alice = as_user(&hub, "alice");
    let w = alice.join("r", "alice").await.expect("alice joins");
    expect_event(&mut bob).await; // alice joined

    // Someone else with alice's token, while alice is connected: refused, and alice's
    // connection is not taken over.
    let mut mallory = as_user(&hub, "mallory");
    send(&mallory, resume_frame(&w.resume, w.last_id)).await;
    assert_eq!(
        expect_error(&mut mallory, "forbidden").await,
        Some(json!(9))
    );
    send(&alice, json!({"type": "send", "text": "still mine"})).await;
    assert!(
        matches!(expect_event(&mut alice).await, Event::Message(m) if &*m.text == "still mine")
    );
    expect_event(&mut bob).await;

    // Banned since joining: alice's own resume is refused too.
    bans.0.lock().expect("lock").insert("alice");
    alice.drop_connection();
    let mut again = as_user(&hub, "alice");
    send(&again, resume_frame(&w.resume, w.last_id)).await;
    assert_eq!(expect_error(&mut again, "forbidden").await, Some(json!(9)));
    // The membership runs out with its grace period, as if nobody had tried.
    assert_eq!(
        hub.room("r").await.unwrap().expect("room").members,
        ["bob", "alice"]
    );
    let start = Instant::now();
    let left = expect_event(&mut bob).await;
    assert!(
        matches!(&left, Event::Left(e) if &*e.name == "alice"),
        "{left:?}"
    );
    assert!(start.elapsed() <= Duration::from_secs(15));
    // Unbanned, a fresh join works; the old token is void.
    bans.0.lock().expect("lock").clear();
    let mut later = as_user(&hub, "alice");
    send(&later, resume_frame(&w.resume, w.last_id)).await;
    expect_error(&mut later, "resume_failed").await;
    later.join("r", "alice").await.expect("joins afresh");
}

/// Records the names a resume is judged under, holding each check until a permit.
struct Judge {
    gate: Arc<Semaphore>,
    seen: Arc<Mutex<Vec<String>>>,
}

impl Hooks for Judge {
    async fn authorize_join(&self, attempt: JoinAttempt<'_>) -> Verdict {
        if attempt.resuming {
            if let Ok(mut seen) = self.seen.lock() {
                seen.push(attempt.name.to_string());
            }
            let _ = self.gate.acquire().await.map(|p| p.forget());
        }
        Verdict::Allow
    }
}

/// The member is renamed while its resume waits for the policy: the policy is asked
/// again under the new name before the resume is done.
#[tokio::test]
async fn a_rename_while_the_policy_judges_a_resume_asks_the_policy_again() {
    let judge = Judge {
        gate: Arc::new(Semaphore::new(0)),
        seen: Arc::new(Mutex::new(Vec::new())),
    };
    let (gate, seen) = (judge.gate.clone(), judge.seen.clone());
    let hub = Hub::builder().hooks(judge).build();
    let (mut a, wa) = joined(&hub, "r", "A").await;
    let mut b = TestClient::connect(&hub);
    send(
        &b,
        json!({"type": "join", "room": "r", "name": "A", "resume": wa.resume}),
    )
    .await;
    settle().await;
    send(&a, json!({"type": "rename", "name": "A2", "ref": 1})).await;
    assert!(matches!(expect_event(&mut a).await, Event::Renamed(r) if &*r.to == "A2"));
    expect_ack(&mut a).await;
    gate.add_permits(2);
    let w = b.welcome().await.expect("B resumed");
    assert_eq!(w.name, "A2");
    assert_eq!(*seen.lock().expect("lock"), ["A", "A2"]);
    assert_eq!(
        expect_close(&mut a).await.code,
        close_code::RESUMED_ELSEWHERE
    );
}

/// A room whose command queue is full answers at once: its members' commands and new
/// joins get `rate_limited` (the room is busy) instead of waiting in line, and a
/// member keeps receiving meanwhile.
#[tokio::test]
async fn a_saturated_room_answers_busy_at_once_and_never_stalls_a_sender() {
    let hub = hub_with(Limits {
        room_queue: 4,
        rate_burst: 1000,
        rate_per_sec: 1000,
        ..Limits::default()
    });
    let (mut t, _) = joined(&hub, "r", "T").await;
    let (f, _) = joined(&hub, "r", "F").await;
    expect_event(&mut t).await; // F joined
    let pause = pause_room(&hub, "r").await.expect("the room exists");
    for i in 0..4 {
        send(&f, json!({"type": "send", "text": format!("f{i}")})).await;
    }
    settle().await;
    // The queue is full and the room held: T is answered now, not when it drains.
    send(&t, json!({"type": "send", "text": "hello", "ref": "t1"})).await;
    let busy = tokio::time::timeout(Duration::from_secs(2), expect_error(&mut t, "rate_limited"))
        .await
        .expect("answered while the room is held");
    assert_eq!(busy, Some(json!("t1")));
    send(&t, json!({"type": "rename", "name": "T2", "ref": "t2"})).await;
    assert_eq!(
        expect_error(&mut t, "rate_limited").await,
        Some(json!("t2"))
    );
    let mut c = TestClient::connect(&hub);
    send(
        &c,
        json!({"type": "join", "room": "r", "name": "C", "ref": "c1"}),
    )
    .await;
    assert_eq!(
        expect_error(&mut c, "rate_limited").await,
        Some(json!("c1"))
    );
    pause.resume();
    for i in 0..4 {
        let e = expect_event(&mut t).await;
        assert!(
            matches!(&e, Event::Message(m) if *m.text == *format!("f{i}")),
            "{e:?}"
        );
    }
    // Nothing was lost or half done: T talks on, and C gets in on its next try.
    send(&t, json!({"type": "send", "text": "again", "ref": "t3"})).await;
    assert!(matches!(expect_event(&mut t).await, Event::Message(m) if &*m.text == "again"));
    assert_eq!(expect_ack(&mut t).await.0, json!("t3"));
    c.join("r", "C")
        .await
        .expect("joins once the room has room");
}

/// A leave waits for the room while the member's writes are slow: the room's end of
/// the member's frames is the leave itself, not a reason to close the connection.
#[tokio::test]
async fn a_leave_behind_a_backlog_with_a_slow_reader_leaves_cleanly() {
    let hub = hub_with(Limits {
        rate_burst: 1000,
        rate_per_sec: 1000,
        ..Limits::default()
    });
    // Room for one frame between the server and this client until it reads.
    let mut slow = TestClient::connect_with_buffer(&hub, ConnectionContext::new(), 1);
    slow.join("r", "Slow").await.expect("joins");
    let (f, _) = joined(&hub, "r", "F").await;
    expect_event(&mut slow).await; // F joined
    // The room's queue: F's three messages, a second pause, then Slow's leave.
    let first = pause_room(&hub, "r").await.expect("the room exists");
    for i in 0..3 {
        send(&f, json!({"type": "send", "text": format!("m{i}")})).await;
    }
    settle().await;
    let later = hub.clone();
    let second = tokio::spawn(async move { pause_room(&later, "r").await });
    settle().await;
    send(&slow, json!({"type": "leave"})).await;
    settle().await;
    // The messages reach Slow's queue; Slow's driver, waiting for its leave's answer,
    // writes them, and blocks on the second (the client reads nothing yet).
    first.resume();
    let second = second.await.expect("no panic").expect("held again");
    settle().await;
    // Now the room takes the leave and ends Slow's queue while that write waits.
    second.resume();
    settle().await;
    for i in 0..3 {
        let e = expect_event(&mut slow).await;
        assert!(
            matches!(&e, Event::Message(m) if *m.text == *format!("m{i}")),
            "{e:?}"
        );
    }
    // Out of the room, not closed: the socket joins again.
    let w = slow
        .join("r", "Slow")
        .await
        .expect("joins again on the same socket");
    assert_eq!(w.members, ["F", "Slow"]);
}
