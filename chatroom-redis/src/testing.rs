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
    socket: PathBuf,
    /// How it persists (`--appendonly ...`), kept for [`RedisServer::restart`].
    persistence: Vec<&'static str>,
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
        Self::start_persisting(vec!["--appendonly", "no"])
    }

    /// [`RedisServer::start`] with an append-only file synced on every write
    /// (`appendfsync always`): a [`restart`](RedisServer::restart) loses nothing.
    pub fn start_with_aof() -> Option<RedisServer> {
        Self::start_persisting(vec!["--appendonly", "yes", "--appendfsync", "always"])
    }

    fn start_persisting(persistence: Vec<&'static str>) -> Option<RedisServer> {
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
        let child = spawn(&dir, &socket, &persistence);
        Some(RedisServer {
            child,
            url: format!("unix://{}", socket.display()),
            dir,
            socket,
            persistence,
        })
    }

    /// Kills the server (SIGKILL: no shutdown, no save) and starts it again on the same
    /// socket and directory: with [`start_with_aof`](RedisServer::start_with_aof) it
    /// comes back with everything, otherwise empty.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
        self.child = spawn(&self.dir, &self.socket, &self.persistence);
    }

    /// Sends a signal to the server process (`"STOP"`, `"CONT"`).
    pub fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success(), "kill -{signal} failed");
    }

    /// Runs a command whose answer is an integer.
    ///
    /// # Panics
    ///
    /// When the command fails or answers something else.
    pub async fn int(&self, args: &[&str]) -> i64 {
        match self.command(args).await {
            redis::Value::Int(n) => n,
            other => panic!("{args:?} answered {other:?}"),
        }
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

fn spawn(dir: &std::path::Path, socket: &std::path::Path, persistence: &[&str]) -> Child {
    let child = Command::new("redis-server")
        .args(["--port", "0", "--unixsocket"])
        .arg(socket)
        .args(["--save", ""])
        .args(persistence)
        .arg("--dir")
        .arg(dir)
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
    child
}

static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

impl Drop for RedisServer {
    fn drop(&mut self) {
        // A test that froze the server may end before it thaws it.
        let _ = Command::new("kill")
            .arg("-CONT")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
