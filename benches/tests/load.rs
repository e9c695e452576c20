//! The load generator runs a tiny bounded scenario of each kind against a real server.
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

use chatroom_benches::{AbusePlan, Scenario, Target, run};
use chatroom_core::{Hub, Limits};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scenario_runs_small_and_loses_nothing() {
    let limits = Limits {
        rate_burst: 100_000,
        rate_per_sec: 100_000,
        ..Limits::default()
    };
    let hub = Hub::builder().limits(limits).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, chatroom_axum::router(hub)).await });
    let target = Target::new(addr, Some(std::process::id()));

    let burst = run(
        &Scenario::Burst {
            rooms: 2,
            clients: 5,
            senders: 2,
            messages: 20,
        },
        target,
    )
    .await;
    assert_eq!(
        (burst.expected, burst.delivered, burst.lost),
        (2 * 5 * 2 * 20, 400, 0)
    );
    assert!(burst.latency_us[0] > 0 && burst.latency_us[3] >= burst.latency_us[0]);
    assert!(burst.server_cpu_s_per_million.is_some());

    let steady = run(
        &Scenario::Steady {
            rooms: 2,
            clients: 3,
            rate: 50,
            seconds: 1,
        },
        target,
    )
    .await;
    assert_eq!((steady.expected, steady.lost), (2 * 3 * 50, 0));

    let idle = run(
        &Scenario::Idle {
            connections: 20,
            rooms: 4,
            seconds: 1,
        },
        target,
    )
    .await;
    assert_eq!(idle.held, 20);
    assert!(idle.rss_per_connection.is_some());

    let churn = run(
        &Scenario::Churn {
            cycles: 20,
            concurrency: 4,
        },
        target,
    )
    .await;
    assert_eq!((churn.delivered, churn.lost), (20, 0));
    assert!(churn.joins_per_sec > 0.0);
    assert!(chatroom_benches::check_target("10.0.0.1:80".parse().expect("addr")).is_err());

    // The abuse scenario, tiny: four phases, each abuse doing something, nothing lost.
    let abuse = run(
        &Scenario::Abuse(AbusePlan {
            members: 20,
            senders: 2,
            rate: 20,
            seconds: 1,
            http: 3,
            churners: 3,
            nonreaders: 3,
        }),
        target,
    )
    .await;
    let figures = abuse.abuse.expect("abuse figures");
    let phases: Vec<&str> = figures.phases.iter().map(|p| p.phase.as_str()).collect();
    assert_eq!(phases, ["alone", "http", "join-leave", "non-readers"]);
    for p in &figures.phases {
        assert!(p.sent > 0, "{p:?}");
        assert_eq!(p.delivered, p.expected, "{p:?}");
        assert!(p.latency_us[1] > 0, "{p:?}");
    }
    assert!(figures.phases[1..].iter().all(|p| p.abuse_ops > 0));
    assert_eq!((figures.lost, figures.duplicated), (0, 0));
}
