//! A real `redis-server` per test, on a Unix socket in a fresh directory, killed on
//! drop. Without `redis-server` a test skips loudly, and fails when
//! `CHATROOM_REQUIRE_ALL=1` (as in CI).
#![allow(
    dead_code,
    missing_docs,
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic
)]

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::RedisBackplane;
use chatroom_core::{Hub, Limits};

/// A `redis-server` of this test alone; killed (and its directory removed) on drop.
pub struct RedisServer {
    child: Child,
    dir: PathBuf,
    /// Its URL (`unix:///...`).
    pub url: String,
}

impl RedisServer {
    /// Starts a server, or `None` (after saying so) when there is no `redis-server`.
    ///
    /// # Panics
    ///
    /// When the server does not start, or is missing while `CHATROOM_REQUIRE_ALL=1`.
    pub fn start() -> Option<RedisServer> {
        if Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_err()
        {
            if std::env::var("CHATROOM_REQUIRE_ALL").is_ok_and(|v| v == "1") {
                panic!("redis-server is not installed and CHATROOM_REQUIRE_ALL=1");
            }
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return None;
        }
        let dir = std::env::temp_dir().join(format!(
            "chatroom-redis-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let socket = dir.join("redis.sock");
        let child = Command::new("redis-server")
            .args(["--port", "0", "--unixsocket"])
            .arg(&socket)
            .args(["--save", "", "--appendonly", "no", "--dir"])
            .arg(&dir)
            .args(["--enable-debug-command", "local"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let started = Instant::now();
        while !socket.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server did not open its socket"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        Some(RedisServer {
            child,
            url: format!("unix://{}", socket.display()),
            dir,
        })
    }

    /// A hub that is a node of the cluster on this server.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn node(&self, limits: Limits) -> Hub {
        self.node_with(limits, |b| b).await.0
    }

    /// A node whose backplane `tune` adjusts, and the switch that crashes it.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn node_with(
        &self,
        limits: Limits,
        tune: impl FnOnce(RedisBackplane) -> RedisBackplane,
    ) -> (Hub, crate::CrashSwitch) {
        let backplane = tune(
            RedisBackplane::connect(&self.url)
                .await
                .expect("connects to the test server"),
        );
        let crash = backplane.crash_switch();
        (
            Hub::builder().limits(limits).backplane(backplane).build(),
            crash,
        )
    }

    /// Runs a command on the server (`CLIENT PAUSE`, `FLUSHALL`, ...).
    ///
    /// # Panics
    ///
    /// When the command fails.
    pub async fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url.as_str()).expect("a URL");
        let mut con = client
            .get_multiplexed_async_connection()
            .await
            .expect("connects");
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async(&mut con).await.expect("the command runs")
    }
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
