//! Core benchmarks, no network: room operations, fan-out, names, JSON encoding.
//! Run with `cargo bench -p chatroom-benches --bench core`.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use chatroom_core::protocol::{Event, MessageEvent};
use chatroom_core::room::{Now, Room};
use chatroom_core::testing::TestClient;
use chatroom_core::{
    DisplayName, Filter, Hooks, Hub, Incoming, Limits, MessageAttempt, Outgoing, ResumeToken,
    RoomName,
};
use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use futures_util::{Sink, StreamExt, stream};

fn now() -> Now {
    Now {
        ts: 1_764_070_000_000,
        instant: Instant::now(),
    }
}

fn room_with(members: u64) -> Room {
    let limits = Limits {
        max_members: 100_000,
        ..Limits::default()
    };
    let mut room = Room::new(RoomName::parse("bench").expect("valid"), &limits);
    for id in 0..members {
        let name = DisplayName::parse(&format!("member{id}")).expect("valid");
        room.join(id, name, ResumeToken::from_bytes([0; 16]), now())
            .expect("joins");
    }
    room
}

/// join, rename and leave on a room of 1000 members (the pure state machine).
fn room_operations(c: &mut Criterion) {
    let mut group = c.benchmark_group("room_1000_members");
    group.throughput(Throughput::Elements(1));
    let name = DisplayName::parse("Newcomer").expect("valid");
    let other = DisplayName::parse("Renamed").expect("valid");
    group.bench_function("join+leave", |b| {
        let mut room = room_with(1000);
        b.iter(|| {
            room.join(5000, name.clone(), ResumeToken::from_bytes([1; 16]), now())
                .expect("joins");
            room.leave(5000, now()).expect("leaves");
        })
    });
    group.bench_function("rename_there_and_back", |b| {
        let mut room = room_with(1000);
        let original = DisplayName::parse("member500").expect("valid");
        b.iter(|| {
            room.rename(500, other.clone(), now()).expect("renames");
            room.rename(500, original.clone(), now()).expect("renames");
        })
    });
    group.finish();
}

/// A gate in front of every member's transport: while it is shut, the members'
/// connection drivers cannot write (each holds one frame), so what the room sends stays
/// in the member queues; opened, the drivers drain the queues into [`GatedSink`]s,
/// which count and discard.
#[derive(Default)]
struct Gate {
    open: AtomicBool,
    waiting: Mutex<Vec<Waker>>,
    written: AtomicU64,
}

impl Gate {
    fn set(&self, open: bool) {
        self.open.store(open, Ordering::SeqCst);
        if open {
            for waker in self.waiting.lock().expect("lock").drain(..) {
                waker.wake();
            }
        }
    }

    /// Opens the gate and waits until the sinks have taken `frames` frames in all.
    async fn drain_until(&self, frames: u64) {
        self.set(true);
        while self.written.load(Ordering::SeqCst) < frames {
            tokio::task::yield_now().await;
        }
    }
}

struct GatedSink(Arc<Gate>);

impl Sink<Outgoing> for GatedSink {
    type Error = ();
    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), ()>> {
        if self.0.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        self.0
            .waiting
            .lock()
            .expect("lock")
            .push(cx.waker().clone());
        // Opened meanwhile: its wake-up may have missed this waker.
        if self.0.open.load(Ordering::SeqCst) {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }
    fn start_send(self: Pin<&mut Self>, _: Outgoing) -> Result<(), ()> {
        self.0.written.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), ()>> {
        Poll::Ready(Ok(()))
    }
}

/// Events posted while the gate is shut, per timed round, into fresh members (cold).
const QUEUED_EVENTS: u64 = 2000;
/// Events per timed round into the same members (warm): few enough that a member's
/// queue stays within the capacity a drained queue keeps, as in a live room whose
/// members keep up.
const WARM_EVENTS: u64 = 30;

/// One event into the member queues of a room: the room task stores it in the
/// history, encodes it once and queues it to every member. The gate is shut while the
/// clock runs, so no driver reads a queue then. Timed: `Hub::post` per event (request
/// to the room task, reply before the fan-out) and one final query to the room, which
/// the room answers after its last fan-out.
///
/// `warm`: the same members for every round of 30 events, their queues drained
/// between rounds; the queues stay short, as a live member's does, and keep their
/// small buffers, so nothing is allocated on the clock. `cold`: a fresh hub and fresh
/// members for every round of 2000 events, so every queue grows to 2000 frames (and
/// its memory is first touched) on the clock, as when members fall behind in a burst.
///
/// One thread runs everything (a current-thread runtime), so the figure is what one
/// core does, without the cost of waking another thread per request.
fn fan_out_into_queues(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fan_out_into_queues");
    group.measurement_time(Duration::from_secs(5));
    for members in [10u64, 100, 1000] {
        group.throughput(Throughput::Elements(members));
        for warm in [true, false] {
            let label = if warm { "warm" } else { "cold" };
            let mut room = warm.then(|| runtime.block_on(gated_room(members)));
            group.bench_function(format!("{members}_members/{label}"), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        let mut left = iters;
                        while left > 0 {
                            let chunk = left.min(if warm { WARM_EVENTS } else { QUEUED_EVENTS });
                            let (hub, gate) = match &room {
                                Some(r) => r.clone(),
                                None => gated_room(members).await,
                            };
                            gate.set(false);
                            let start = Instant::now();
                            for _ in 0..chunk {
                                hub.post("fan", "bench", "hello everyone")
                                    .await
                                    .expect("posted");
                            }
                            let details = hub.room("fan").await.unwrap().expect("room");
                            total += start.elapsed();
                            assert_eq!(details.members.len() as u64, members);
                            let before = gate.written.load(Ordering::SeqCst);
                            gate.drain_until(before + chunk * members).await;
                            if room.is_none() {
                                hub.shutdown().await;
                            }
                            left -= chunk;
                        }
                        total
                    })
                })
            });
            if let Some((hub, _)) = room.take() {
                runtime.block_on(hub.shutdown());
            }
        }
    }
    group.finish();
}

/// A hub with one room of `members` members behind an open gate, every `joined`
/// announcement drained.
async fn gated_room(members: u64) -> (Hub, Arc<Gate>) {
    let limits = Limits {
        outgoing_queue: (members + QUEUED_EVENTS + 16) as usize,
        max_members: 100_000,
        ..Limits::default()
    };
    let hub = Hub::builder().limits(limits).build();
    let gate = Arc::new(Gate::default());
    gate.set(true);
    for i in 0..members {
        let join = format!(r#"{{"type":"join","room":"fan","name":"m{i}"}}"#);
        let incoming = stream::iter([Incoming::Text(join.into())]).chain(stream::pending());
        tokio::spawn(hub.serve(Default::default(), incoming, GatedSink(gate.clone())));
    }
    // Each member's welcome, then a `joined` for every later member.
    gate.drain_until(members + members * (members - 1) / 2)
        .await;
    (hub, gate)
}

/// One event delivered to every member of a room through the hub, end to end: the
/// room task encodes it once and queues it to each member's connection driver, which
/// writes it to an in-memory client that reads it.
fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fan_out_end_to_end");
    group.measurement_time(Duration::from_secs(5));
    for members in [10u64, 100, 1000] {
        let limits = Limits {
            rate_burst: u32::MAX,
            rate_per_sec: u32::MAX,
            outgoing_queue: 4096,
            max_members: 100_000,
            ..Limits::default()
        };
        let hub = Hub::builder().limits(limits).build();
        let mut clients = runtime.block_on(joined_room(&hub, "fan", members));
        let batch = 100u64;
        // Every member, the sender included, receives every event.
        group.throughput(Throughput::Elements(batch * members));
        group.bench_function(format!("{members}_members_x{batch}_events"), |b| {
            b.iter(|| runtime.block_on(send_and_drain(&mut clients, batch)))
        });
    }
    group.finish();
}

/// `members` in-process members of `room`, every `joined` announcement drained.
async fn joined_room(hub: &Hub, room: &str, members: u64) -> Vec<TestClient> {
    let mut clients = Vec::new();
    for i in 0..members {
        let mut c = TestClient::connect_with_buffer(hub, Default::default(), 8192);
        c.join(room, &format!("m{i}")).await.expect("joins");
        clients.push(c);
    }
    for (i, c) in clients.iter_mut().enumerate() {
        for _ in i + 1..members as usize {
            c.event().await.expect("joined");
        }
    }
    clients
}

/// The first member sends `batch` messages; every member, the sender included,
/// reads them all.
async fn send_and_drain(clients: &mut [TestClient], batch: u64) {
    for _ in 0..batch {
        clients[0]
            .send_text(r#"{"type":"send","text":"hello everyone"}"#)
            .await;
    }
    for c in clients.iter_mut() {
        for _ in 0..batch {
            black_box(c.next_raw().await);
        }
    }
}

/// A word filter: rewrites "darn", allows the rest.
fn allows(text: &str) -> Filter {
    if text.contains("darn") {
        Filter::Replace(text.replace("darn", "d**n"))
    } else {
        Filter::Allow
    }
}

/// The same filter through the [`Hooks`] trait: its future is boxed for each message,
/// as every hook's was before the closures (and as the default hooks' were).
struct TraitFilter;

impl Hooks for TraitFilter {
    async fn filter_message(&self, attempt: MessageAttempt<'_>) -> Filter {
        allows(attempt.text)
    }
}

/// The message path with a filter hook: 100 messages from one member of a room of 10,
/// each delivered to all; with no hook, the filter as a closure (called in place), and
/// the filter through the `Hooks` trait (a boxed future per message).
fn message_path_with_a_filter(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("message_path_with_a_filter");
    group.measurement_time(Duration::from_secs(5));
    let limits = || Limits {
        rate_burst: u32::MAX,
        rate_per_sec: u32::MAX,
        ..Limits::default()
    };
    let hubs = [
        ("no_hook", Hub::builder().limits(limits()).build()),
        (
            "closure_filter",
            Hub::builder()
                .limits(limits())
                .filter_message(|m| allows(m.text))
                .build(),
        ),
        (
            "trait_filter",
            Hub::builder().limits(limits()).hooks(TraitFilter).build(),
        ),
    ];
    let (members, batch) = (10u64, 100u64);
    group.throughput(Throughput::Elements(batch));
    for (label, hub) in hubs {
        let mut clients = runtime.block_on(joined_room(&hub, "r", members));
        group.bench_function(
            format!("{label}/{members}_members_x{batch}_messages"),
            |b| b.iter(|| runtime.block_on(send_and_drain(&mut clients, batch))),
        );
    }
    group.finish();
}

fn names(c: &mut Criterion) {
    let mut group = c.benchmark_group("names");
    group.throughput(Throughput::Elements(1));
    for (label, input) in [
        ("ascii", "  Alice Smith "),
        ("mixed", "Ｊｏｓé  Ñúñez"),
        ("cyrillic", "Алиса"),
    ] {
        group.bench_function(format!("parse_and_key/{label}"), |b| {
            b.iter(|| DisplayName::parse(black_box(input)).expect("valid"))
        });
    }
    group.finish();
}

fn encoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let event = Event::Message(MessageEvent {
        id: 123_456,
        ts: 1_764_070_000_123,
        from: "Alice".into(),
        text: "hello everyone, this is a typical chat message".into(),
        system: false,
    });
    group.bench_function("message_event", |b| b.iter(|| black_box(&event).encode()));
    group.bench_function("parse_client_frame", |b| {
        b.iter_batched(
            || br#"{"type":"send","text":"hello everyone, this is a typical chat message","ref":7}"#.to_vec(),
            |bytes| chatroom_core::protocol::ClientFrame::decode(&bytes).expect("valid"),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(
    benches,
    room_operations,
    fan_out_into_queues,
    fan_out,
    message_path_with_a_filter,
    names,
    encoding
);
/// `CHATROOM_BENCH_RECORDER=prometheus` installs the Prometheus recorder first, so that
/// the hub's metrics are recorded (as in the example site): run the benches with and
/// without it to see what the metrics cost.
fn main() {
    if std::env::var("CHATROOM_BENCH_RECORDER").is_ok_and(|v| v == "prometheus") {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("the only recorder");
        eprintln!("metrics recorded by a Prometheus recorder");
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
