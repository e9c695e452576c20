//! Core benchmarks, no network: room operations, fan-out, names, JSON encoding.
//! Run with `cargo bench -p chatroom-benches --bench core`.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use chatroom_core::protocol::{Event, MessageEvent};
use chatroom_core::room::{Now, Room};
use chatroom_core::testing::TestClient;
use chatroom_core::{DisplayName, Hub, Limits, ResumeToken, RoomName};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};

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

/// One event delivered to every member of a room through the hub: the room task
/// encodes it once and queues it to each member's connection driver.
fn fan_out(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut group = c.benchmark_group("fan_out");
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
        let mut clients = runtime.block_on(async {
            let mut clients = Vec::new();
            for i in 0..members {
                let mut c = TestClient::connect_with(&hub, Default::default(), 8192);
                c.join("fan", &format!("m{i}")).await.expect("joins");
                clients.push(c);
            }
            // Drain the `joined` announcements.
            for (i, c) in clients.iter_mut().enumerate() {
                for _ in i + 1..members as usize {
                    c.event().await.expect("joined");
                }
            }
            clients
        });
        let batch = 100u64;
        // Every member, the sender included, receives every event.
        group.throughput(Throughput::Elements(batch * members));
        group.bench_function(format!("{members}_members_x{batch}_events"), |b| {
            b.iter(|| {
                runtime.block_on(async {
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
                })
            })
        });
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

criterion_group!(benches, room_operations, fan_out, names, encoding);
criterion_main!(benches);
