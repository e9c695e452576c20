//! The room listing and a room's details are served from what rooms publish: paged,
//! in order, and without waiting for any room's task.

mod common;

use std::time::Duration;

use chatroom_core::testing::{TestClient, pause_room};
use chatroom_core::{Hub, RoomCursor, RoomSummary};
use common::*;
use serde_json::json;

fn summary(room: &str, members: usize) -> RoomSummary {
    RoomSummary {
        room: room.into(),
        members,
    }
}

#[tokio::test]
async fn rooms_are_listed_largest_first_a_page_at_a_time() {
    let hub = Hub::new();
    let mut clients: Vec<TestClient> = Vec::new();
    for (room, size) in [("b", 2), ("a", 2), ("c", 3), ("d", 1), ("e", 1)] {
        for i in 0..size {
            let (c, _) = joined(&hub, room, &format!("{room}{i}")).await;
            clients.push(c);
        }
    }
    let all = [
        summary("c", 3),
        summary("a", 2),
        summary("b", 2),
        summary("d", 1),
        summary("e", 1),
    ];
    assert_eq!(hub.rooms().await.unwrap(), all);
    let first = hub.rooms_page(None, 2).await.unwrap();
    assert_eq!(first.rooms, all[..2]);
    let cursor = first.next.expect("more");
    assert_eq!(cursor.to_string(), "2:a");
    let second = hub
        .rooms_page(Some(cursor.to_string().parse().expect("cursor")), 2)
        .await
        .unwrap();
    assert_eq!(second.rooms, all[2..4]);
    let third = hub.rooms_page(second.next, 2).await.unwrap();
    assert_eq!((third.rooms.as_slice(), third.next), (&all[4..], None));
    // A room that grows moves up; a room whose members all left is gone.
    let (c, _) = joined(&hub, "e", "e1").await;
    clients.push(c);
    send(&clients[7], json!({"type": "leave"})).await; // d0
    let mut page = hub.rooms_page(None, 10).await.unwrap();
    for _ in 0..1000 {
        if page.rooms.len() == 4 {
            break;
        }
        tokio::task::yield_now().await;
        page = hub.rooms_page(None, 10).await.unwrap();
    }
    assert_eq!(
        page.rooms,
        [
            summary("c", 3),
            summary("a", 2),
            summary("b", 2),
            summary("e", 2)
        ]
    );
    assert!("2".parse::<RoomCursor>().is_err());
}

#[tokio::test]
async fn a_rooms_details_do_not_wait_for_its_task() {
    let hub = Hub::new();
    let (_a, _) = joined(&hub, "General", "Alice").await;
    let (_b, _) = joined(&hub, "general", "Bob").await;
    let pause = pause_room(&hub, "general").await.expect("the room exists");
    let details = tokio::time::timeout(Duration::from_secs(2), hub.room("GENERAL"))
        .await
        .expect("answered while the room's task is held")
        .unwrap()
        .expect("the room");
    assert_eq!(details.room, "General");
    assert_eq!(details.members, ["Alice", "Bob"]);
    let listing = tokio::time::timeout(Duration::from_secs(2), hub.rooms())
        .await
        .expect("answered while the room's task is held")
        .unwrap();
    assert_eq!(listing, [summary("General", 2)]);
    pause.resume();
}

#[tokio::test]
async fn the_published_members_follow_joins_renames_and_leaves() {
    let hub = Hub::new();
    let (a, _) = joined(&hub, "r", "A\"q").await;
    let (mut b, wb) = joined(&hub, "r", "B").await;
    assert_eq!(wb.members, ["A\"q", "B"]);
    send(&a, json!({"type": "rename", "name": "A2"})).await;
    expect_event(&mut b).await;
    let (_c, wc) = joined(&hub, "r", "C").await;
    assert_eq!(wc.members, ["A2", "B", "C"]);
    send(&a, json!({"type": "leave"})).await;
    expect_event(&mut b).await; // C joined
    expect_event(&mut b).await; // A2 left
    let (_d, wd) = joined(&hub, "r", "D").await;
    assert_eq!(wd.members, ["B", "C", "D"]);
    assert_eq!(
        hub.room("r").await.unwrap().expect("room").members,
        ["B", "C", "D"]
    );
}
