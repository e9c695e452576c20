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
    /// How it persists (`--appendonly ...`), and anything else it was started with;
    /// kept for [`RedisServer::restart`].
    persistence: Vec<String>,
    /// Its URL for nodes (`unix:///...`, or `rediss://127.0.0.1:<port>/`).
    pub url: String,
    /// The certificate authority that issued its TLS certificate (PEM), when it speaks
    /// TLS: trust it with [`TlsCertificates::root_certificate`](crate::TlsCertificates).
    pub ca: Option<String>,
    /// A client certificate and key (PEM) the CA issued, when the server requires one
    /// ([`start_mutual_tls`](Self::start_mutual_tls)).
    pub client: Option<(String, String)>,
    /// The other masters of a Redis Cluster ([`start_cluster`](Self::start_cluster)).
    masters: Vec<Master>,
}

/// A master of a test Redis Cluster besides the first.
struct Master {
    child: Child,
    dir: PathBuf,
    port: u16,
}

impl RedisServer {
    /// Starts a server, or `None` (after saying so) when there is no `redis-server`.
    ///
    /// # Panics
    ///
    /// When the server does not start, or is missing while `CHATROOM_REQUIRE_ALL=1`.
    pub fn start() -> Option<RedisServer> {
        Self::start_persisting(args(&["--appendonly", "no"]))
    }

    /// [`RedisServer::start`], and TLS on a loopback port: [`url`](Self::url) is
    /// `rediss://127.0.0.1:<port>/`, with a certificate issued by a fresh test CA
    /// ([`ca`](Self::ca)). Its Unix socket stays for [`command`](Self::command).
    pub fn start_tls() -> Option<RedisServer> {
        Self::start_tls_with(false)
    }

    /// [`RedisServer::start_tls`], and the server requires a client certificate
    /// issued by its CA ([`client`](Self::client)).
    pub fn start_mutual_tls() -> Option<RedisServer> {
        Self::start_tls_with(true)
    }

    fn start_tls_with(clients: bool) -> Option<RedisServer> {
        let dir = fresh_dir();
        let ca_key = rcgen::KeyPair::generate().expect("a key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "chatroom test CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).expect("a CA");
        let key = rcgen::KeyPair::generate().expect("a key");
        let cert =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("params")
                .signed_by(&key, &ca)
                .expect("a certificate");
        std::fs::write(dir.join("ca.pem"), ca.pem()).expect("writes");
        std::fs::write(dir.join("cert.pem"), cert.pem()).expect("writes");
        std::fs::write(dir.join("key.pem"), key.serialize_pem()).expect("writes");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let client_key = rcgen::KeyPair::generate().expect("a key");
        let client_cert = rcgen::CertificateParams::new(vec!["chatroom-node".to_owned()])
            .expect("params")
            .signed_by(&client_key, &ca)
            .expect("a certificate");
        let auth = if clients { "yes" } else { "no" };
        let mut options = args(&[
            "--appendonly",
            "no",
            "--bind",
            "127.0.0.1",
            "--tls-auth-clients",
            auth,
        ]);
        for (flag, file) in [
            ("--tls-cert-file", "cert.pem"),
            ("--tls-key-file", "key.pem"),
            ("--tls-ca-cert-file", "ca.pem"),
        ] {
            options.push(flag.to_owned());
            options.push(dir.join(file).display().to_string());
        }
        options.push("--tls-port".to_owned());
        options.push(port.to_string());
        let mut server = Self::start_in(dir, options)?;
        server.url = format!("rediss://127.0.0.1:{port}/");
        server.ca = Some(ca.pem());
        if clients {
            server.client = Some((client_cert.pem(), client_key.serialize_pem()));
        }
        Some(server)
    }

    /// [`RedisServer::start`] with an append-only file synced on every write
    /// (`appendfsync always`): a [`restart`](RedisServer::restart) loses nothing.
    pub fn start_with_aof() -> Option<RedisServer> {
        Self::start_persisting(args(&["--appendonly", "yes", "--appendfsync", "always"]))
    }

    fn start_persisting(persistence: Vec<String>) -> Option<RedisServer> {
        Self::start_in(fresh_dir(), persistence)
    }

    fn start_in(dir: PathBuf, persistence: Vec<String>) -> Option<RedisServer> {
        if !installed() {
            return None;
        }
        let socket = dir.join("redis.sock");
        let child = spawn(&dir, &socket, &persistence);
        Some(RedisServer {
            child,
            url: format!("unix://{}", socket.display()),
            dir,
            socket,
            persistence,
            ca: None,
            client: None,
            masters: Vec::new(),
        })
    }

    /// A Redis Cluster of three masters on loopback ports (no replicas, nothing
    /// persisted, `cluster-require-full-coverage no` so that the others serve on while
    /// one restarts), its slots split in three; [`url`](Self::url) is the first
    /// master's. [`command`](Self::command) talks to the first master only.
    ///
    /// # Panics
    ///
    /// When the cluster does not form, or `redis-server` is missing while
    /// `CHATROOM_REQUIRE_ALL=1`.
    pub fn start_cluster() -> Option<RedisServer> {
        if !installed() {
            return None;
        }
        let ports = cluster_ports(3);
        let mut masters: Vec<Master> = ports
            .iter()
            .map(|&port| {
                let dir = fresh_dir();
                Master {
                    child: spawn_cluster_node(&dir, port),
                    dir,
                    port,
                }
            })
            .collect();
        let ranges = [(0, 5460), (5461, 10922), (10923, 16383)];
        for (master, (from, to)) in masters.iter().zip(ranges) {
            cli(
                master.port,
                &[
                    "CLUSTER",
                    "ADDSLOTSRANGE",
                    &from.to_string(),
                    &to.to_string(),
                ],
            );
        }
        for other in &masters[1..] {
            cli(
                masters[0].port,
                &["CLUSTER", "MEET", "127.0.0.1", &other.port.to_string()],
            );
        }
        let started = Instant::now();
        let mut met = Instant::now();
        while !masters
            .iter()
            .all(|m| cli(m.port, &["CLUSTER", "INFO"]).contains("cluster_state:ok"))
        {
            for master in &mut masters {
                if let Ok(Some(status)) = master.child.try_wait() {
                    panic!("a master of the test Redis Cluster exited: {status}");
                }
            }
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the test Redis Cluster did not form: {}",
                cli(masters[0].port, &["CLUSTER", "NODES"])
            );
            // A handshake that failed is dropped by Redis: meet again those the first
            // master does not know yet.
            if met.elapsed() > Duration::from_secs(2) {
                met = Instant::now();
                let known = cli(masters[0].port, &["CLUSTER", "NODES"]);
                for other in &masters[1..] {
                    let known_here = known.lines().any(|l| {
                        l.contains(&format!("127.0.0.1:{}@", other.port))
                            && !l.contains("handshake")
                    });
                    if !known_here {
                        cli(
                            masters[0].port,
                            &["CLUSTER", "MEET", "127.0.0.1", &other.port.to_string()],
                        );
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let first = masters.remove(0);
        Some(RedisServer {
            child: first.child,
            socket: first.dir.join("redis.sock"),
            dir: first.dir,
            persistence: Vec::new(),
            url: format!("redis://127.0.0.1:{}/", first.port),
            ca: None,
            client: None,
            masters,
        })
    }

    /// Kills master `i` of a cluster ([`start_cluster`](Self::start_cluster); 0 is the
    /// first) with SIGKILL and starts it again on its port with its cluster
    /// configuration: it serves its slots again, empty. Returns once the cluster is ok.
    ///
    /// # Panics
    ///
    /// When this is not a cluster, or it does not come back.
    pub fn restart_master(&mut self, i: usize) {
        let port = self.master_port(i);
        let dir = if i == 0 {
            self.dir.clone()
        } else {
            self.masters[i - 1].dir.clone()
        };
        let child = if i == 0 {
            &mut self.child
        } else {
            &mut self.masters[i - 1].child
        };
        let _ = child.kill();
        let _ = child.wait();
        let _ = std::fs::remove_file(dir.join("redis.sock"));
        *child = spawn_cluster_node(&dir, port);
        let started = Instant::now();
        while !cli(port, &["CLUSTER", "INFO"]).contains("cluster_state:ok") {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "the restarted master did not rejoin its cluster"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends a signal (`"STOP"`, `"CONT"`) to master `i` of a cluster.
    ///
    /// # Panics
    ///
    /// When this is not a cluster, or `kill` fails.
    pub fn signal_master(&self, i: usize, signal: &str) {
        let pid = if i == 0 {
            self.child.id()
        } else {
            self.masters[i - 1].child.id()
        };
        kill(pid, signal);
    }

    /// Whether this is a Redis Cluster ([`start_cluster`](Self::start_cluster)).
    pub fn is_cluster(&self) -> bool {
        !self.masters.is_empty()
    }

    /// The port of master `i` of a cluster.
    ///
    /// # Panics
    ///
    /// When this is not a cluster.
    pub fn master_port(&self, i: usize) -> u16 {
        assert!(!self.masters.is_empty(), "not a cluster");
        if i == 0 {
            self.url
                .trim_start_matches("redis://127.0.0.1:")
                .trim_end_matches('/')
                .parse()
                .expect("a port")
        } else {
            self.masters[i - 1].port
        }
    }

    /// Runs a command on master `i` of a cluster with `redis-cli`; its output.
    ///
    /// # Panics
    ///
    /// When this is not a cluster.
    pub fn master_command(&self, i: usize, args: &[&str]) -> String {
        cli(self.master_port(i), args)
    }

    /// The master (its index) that serves the slot of `key` on a cluster.
    ///
    /// # Panics
    ///
    /// When this is not a cluster.
    pub fn master_of(&self, key: &str) -> usize {
        let slot: u16 = cli(self.master_port(0), &["CLUSTER", "KEYSLOT", key])
            .trim()
            .parse()
            .expect("a slot");
        match slot {
            0..=5460 => 0,
            5461..=10922 => 1,
            _ => 2,
        }
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
        kill(self.child.id(), signal);
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
        let backplane = tune(self.backplane().await);
        let crash = backplane.crash_switch();
        (
            Hub::builder().limits(limits).backplane(backplane).build(),
            crash,
        )
    }

    /// A backplane on this server (trusting its CA when it speaks TLS).
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn backplane(&self) -> RedisBackplane {
        let connected = match &self.ca {
            Some(ca) => {
                let mut tls = crate::TlsCertificates::new().root_certificate(ca.as_bytes());
                if let Some((cert, key)) = &self.client {
                    tls = tls.client_certificate(cert.as_bytes(), key.as_bytes());
                }
                RedisBackplane::connect_with_tls(&self.url, tls).await
            }
            None => RedisBackplane::connect(&self.url).await,
        };
        connected.expect("connects to the test server")
    }

    /// Runs a command on the server (`CLIENT PAUSE`, `FLUSHALL`, ...).
    ///
    /// # Panics
    ///
    /// When the command fails.
    pub async fn command(&self, args: &[&str]) -> redis::Value {
        let client =
            redis::Client::open(format!("unix://{}", self.socket.display())).expect("a URL");
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

/// Whether `redis-server` can be run; says so loudly when it cannot (and fails when
/// `CHATROOM_REQUIRE_ALL=1`).
fn installed() -> bool {
    let found = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !found {
        if std::env::var("CHATROOM_REQUIRE_ALL").is_ok_and(|v| v == "1") {
            panic!("redis-server is not installed and CHATROOM_REQUIRE_ALL=1");
        }
        eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
    }
    found
}

/// The hash tag of the keys of room `room` on a Redis Cluster (`{cr.N}`), to find the
/// master that serves it with [`RedisServer::master_of`].
///
/// # Panics
///
/// When `room` is not a valid room name.
pub fn cluster_room_tag(room: &str) -> String {
    let name = chatroom_core::RoomName::parse(room).expect("a room name");
    let id = crate::store::room_id(name.key());
    crate::store::tag(crate::store::partition_of(
        &id,
        crate::store::CLUSTER_PARTITIONS,
    ))
}

/// The sharded pub/sub channel of room `room` on a Redis Cluster.
///
/// # Panics
///
/// When `room` is not a valid room name.
pub fn cluster_room_channel(room: &str) -> String {
    let name = chatroom_core::RoomName::parse(room).expect("a room name");
    let id = crate::store::room_id(name.key());
    crate::store::RoomKeys::new(crate::store::Layout::CLUSTER, &id).channel()
}

fn args(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

fn fresh_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "chatroom-redis-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).expect("a temp dir");
    dir
}

fn spawn(dir: &std::path::Path, socket: &std::path::Path, persistence: &[String]) -> Child {
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
    wait_for(socket);
    child
}

/// Waits (up to 10 s) for a starting redis-server to open its socket.
fn wait_for(socket: &std::path::Path) {
    let started = Instant::now();
    while !socket.exists() {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "redis-server did not open its socket"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Sends a signal to a process with `kill`.
fn kill(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal} failed");
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
        for master in &mut self.masters {
            let _ = Command::new("kill")
                .arg("-CONT")
                .arg(master.child.id().to_string())
                .status();
            let _ = master.child.kill();
            let _ = master.child.wait();
            let _ = std::fs::remove_dir_all(&master.dir);
        }
    }
}

/// `n` loopback ports that are free, each with its cluster bus port (+10000).
/// `n` free ports for cluster masters, each with its cluster bus port (+10,000) free.
/// Both are taken below Linux's ephemeral range (32768 and up), where no outgoing
/// connection of another test can take one between this check and the master's bind.
fn cluster_ports(n: usize) -> Vec<u16> {
    const FIRST: u16 = 20_000;
    const COUNT: u64 = 2_700;
    let mut ports = Vec::new();
    let seed = u64::from(std::process::id())
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(
            u64::try_from(NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
                .unwrap_or(0)
                .wrapping_mul(7919),
        )
        ^ u64::from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0),
        );
    for i in 0..COUNT {
        let port = FIRST + u16::try_from((seed.wrapping_add(i * 13)) % COUNT).unwrap_or(0);
        let free = |p: u16| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
            if ports.len() == n {
                return ports;
            }
        }
    }
    panic!("no free ports for a test Redis Cluster between 20000 and 22700");
}

fn spawn_cluster_node(dir: &std::path::Path, port: u16) -> Child {
    let socket = dir.join("redis.sock");
    let child = Command::new("redis-server")
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .arg("--unixsocket")
        .arg(&socket)
        .args([
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
        ])
        // Long enough that a master frozen for a few seconds by a test is not failed.
        .args(["--cluster-node-timeout", "15000"])
        .args(["--cluster-require-full-coverage", "no"])
        .args(["--save", "", "--appendonly", "no"])
        .arg("--dir")
        .arg(dir)
        .args(["--enable-debug-command", "local"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server starts");
    wait_for(&socket);
    child
}

/// Runs `redis-cli` against a local port; its output.
fn cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .output()
        .expect("redis-cli runs (it comes with redis-server)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
