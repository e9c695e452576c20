//! Nodes served by the real adapters over real sockets: axum and actix-web nodes on one
//! Redis, clients speaking WebSocket over loopback TCP.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use chatroom_core::protocol::Event;
use chatroom_core::testing::{Closed, Request, TestClient, connect_over};
use chatroom_core::{Hub, Limits, close_code};
use chatroom_redis::testing::RedisServer;
use common::{closed_with, event};
use serde_json::json;

/// A node and the web server in front of it.
enum Front {
    Axum(Hub, SocketAddr),
    Actix(Hub, chatroom_actix::testing::TestServer),
}

impl Front {
    async fn axum(hub: Hub) -> Front {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = chatroom_axum::router(hub.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Front::Axum(hub, addr)
    }

    fn actix(hub: Hub) -> Front {
        let served = hub.clone();
        let server = chatroom_actix::testing::TestServer::start(move || {
            actix_web::App::new().configure(chatroom_actix::configure(served.clone()))
        })
        .expect("the actix test server starts");
        Front::Actix(hub, server)
    }

    fn hub(&self) -> &Hub {
        match self {
            Front::Axum(hub, _) | Front::Actix(hub, _) => hub,
        }
    }

    /// A client over a real WebSocket on loopback.
    async fn client(&self) -> TestClient {
        let request = || Request::get("/ws").body(()).expect("a request");
        match self {
            Front::Axum(_, addr) => {
                let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
                let mut request = request();
                request
                    .headers_mut()
                    .insert("host", addr.to_string().parse().expect("a header"));
                connect_over(stream, request).await.expect("upgraded")
            }
            Front::Actix(_, server) => server.connect(request()).await.expect("upgraded"),
        }
    }
}

/// An axum node, an actix node and another axum node, on one Redis.
async fn three_fronts(redis: &RedisServer, limits: Limits) -> [Front; 3] {
    [
        Front::axum(redis.node(limits.clone()).await).await,
        Front::actix(redis.node(limits.clone()).await),
        Front::axum(redis.node(limits).await).await,
    ]
}

on_both!(
    six_members_on_axum_and_actix_nodes_get_one_gapless_timeline,
    six_members_on_axum_and_actix_nodes_get_one_gapless_timeline_on_a_redis_cluster,
    six_members_on_axum_and_actix_nodes_get_one_gapless_timeline_on
);
async fn six_members_on_axum_and_actix_nodes_get_one_gapless_timeline_on(redis: RedisServer) {
    let limits = Limits {
        rate_burst: 1000,
        rate_per_sec: 1000,
        ..Limits::default()
    };
    let fronts = three_fronts(&redis, limits).await;
    let mut members = Vec::new();
    for i in 0..6 {
        let mut c = fronts[i % 3].client().await;
        c.join("busy", &format!("m{i}")).await.expect("joins");
        members.push(c);
    }
    for (i, c) in members.iter_mut().enumerate() {
        for _ in i + 1..6 {
            event(c).await;
        }
    }
    const EACH: usize = 30;
    for i in 0..EACH {
        for c in &members {
            c.send_json(&json!({"type": "send", "text": format!("{i}")}))
                .await;
        }
    }
    let mut timelines = Vec::new();
    for c in &mut members {
        let mut got = Vec::new();
        while got.len() < 6 * EACH {
            if let Event::Message(m) = event(c).await {
                got.push((m.id, m.from.to_string(), m.text.to_string()));
            }
        }
        timelines.push(got);
    }
    for t in &timelines {
        assert_eq!(t, &timelines[0], "every member sees the same timeline");
        assert!(t.windows(2).all(|w| w[1].0 == w[0].0 + 1), "gapless");
    }
    for sender in 0..6 {
        let name = format!("m{sender}");
        let texts: Vec<usize> = timelines[0]
            .iter()
            .filter(|(_, from, _)| *from == name)
            .map(|(_, _, t)| t.parse().unwrap())
            .collect();
        assert_eq!(
            texts,
            (0..EACH).collect::<Vec<_>>(),
            "each sender's order is kept"
        );
    }
    for front in &fronts {
        front.hub().shutdown().await;
    }
}

on_both!(
    twelve_joins_racing_for_one_name_on_three_nodes_have_one_winner,
    twelve_joins_racing_for_one_name_on_three_nodes_have_one_winner_on_a_redis_cluster,
    twelve_joins_racing_for_one_name_on_three_nodes_have_one_winner_on
);
async fn twelve_joins_racing_for_one_name_on_three_nodes_have_one_winner_on(redis: RedisServer) {
    let fronts = three_fronts(&redis, Limits::default()).await;
    let mut clients = Vec::new();
    for i in 0..12 {
        clients.push((i, fronts[i % 3].client().await));
    }
    let mut tasks = Vec::new();
    for (i, mut c) in clients {
        let name = ["Zoë", "ZOË", "zoë", "Ｚoë"][i % 4];
        tasks.push(tokio::spawn(async move {
            let won = c.join("race", name).await.is_ok();
            (won, c)
        }));
    }
    let mut winners = 0;
    let mut keep = Vec::new();
    for t in tasks {
        let (won, c) = t.await.expect("task");
        winners += usize::from(won);
        keep.push(c);
    }
    assert_eq!(winners, 1);
    let details: Vec<_> =
        futures_util::future::join_all(fronts.iter().map(|f| f.hub().room("race"))).await;
    for d in &details {
        assert_eq!(d.as_ref().unwrap().as_ref().expect("room").members.len(), 1);
    }
    assert!(
        details.windows(2).all(|w| w[0] == w[1]),
        "every node answers alike"
    );
    for front in &fronts {
        front.hub().shutdown().await;
    }
}

on_both!(
    the_host_posts_and_kicks_from_any_node_and_a_leaver_gets_no_left,
    the_host_posts_and_kicks_from_any_node_and_a_leaver_gets_no_left_on_a_redis_cluster,
    the_host_posts_and_kicks_from_any_node_and_a_leaver_gets_no_left_on
);
async fn the_host_posts_and_kicks_from_any_node_and_a_leaver_gets_no_left_on(redis: RedisServer) {
    let fronts = three_fronts(&redis, Limits::default()).await;
    let mut ann = fronts[0].client().await;
    ann.join("General", "Ann").await.expect("joins");
    let mut bob = fronts[1].client().await;
    bob.join("General", "Bob").await.expect("joins");
    event(&mut ann).await;

    // The third node has no member in the room: it posts and kicks all the same.
    let id = fronts[2]
        .hub()
        .post("general", "host", "welcome all")
        .await
        .expect("posted");
    for c in [&mut ann, &mut bob] {
        let Event::Message(m) = event(c).await else {
            panic!("the post")
        };
        assert_eq!((m.id, m.system, &*m.text), (id, true, "welcome all"));
    }
    assert!(
        fronts[2]
            .hub()
            .kick("general", "BOB", "spam")
            .await
            .unwrap()
    );
    match tokio::time::timeout(Duration::from_secs(5), bob.recv())
        .await
        .expect("closed")
    {
        Err(Closed::Close(c)) => {
            assert_eq!(c.code, close_code::REMOVED);
            assert!(c.reason.contains("spam"), "{}", c.reason);
        }
        other => panic!("expected 4003, got {other:?}"),
    }
    let Event::Left(left) = event(&mut ann).await else {
        panic!("left")
    };
    assert_eq!(&*left.name, "Bob");

    // A leaver gets no `left` of its own; its connection may join again.
    let mut cy = fronts[2].client().await;
    cy.join("General", "Cy").await.expect("joins");
    event(&mut ann).await;
    cy.send_json(&json!({"type": "leave"})).await;
    let Event::Left(left) = event(&mut ann).await else {
        panic!("left")
    };
    assert_eq!(&*left.name, "Cy");
    cy.send_json(&json!({"type": "join", "room": "General", "name": "Cy", "ref": 1}))
        .await;
    let welcome = cy
        .welcome()
        .await
        .expect("welcomed again, with nothing before it");
    assert_eq!(welcome.members, ["Ann", "Cy"]);
    for front in &fronts {
        front.hub().shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_closed_while_redis_is_frozen_gets_its_close_frame_on_axum_and_actix() {
    let Some(redis) = RedisServer::start() else {
        return;
    };
    let limits = Limits {
        max_frame_bytes: 4096,
        ..Limits::default()
    };
    let tune = |b: chatroom_redis::RedisBackplane| b.call_timeout(Duration::from_millis(300));
    let fronts = [
        Front::axum(redis.node_with(limits.clone(), tune).await.0).await,
        Front::actix(redis.node_with(limits, tune).await.0),
    ];
    let mut clients = Vec::new();
    for (i, front) in fronts.iter().enumerate() {
        let mut client = front.client().await;
        client.join("r", &format!("M{i}")).await.expect("joins");
        clients.push(client);
    }

    redis.signal("STOP");
    // A frame over the limit: each connection closes with 1009 within the call
    // timeout, not when Redis comes back.
    for client in &mut clients {
        client.send_text(&"x".repeat(5000)).await;
        assert_eq!(
            closed_with(client, Duration::from_secs(2)).await,
            close_code::TOO_BIG
        );
    }
    redis.signal("CONT");
    for front in &fronts {
        front.hub().shutdown().await;
    }
}
