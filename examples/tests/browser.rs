//! The example site in a real browser (headless Chromium through WebDriver), against
//! both binaries. Without Chromium these tests skip loudly, unless
//! `CHATROOM_REQUIRE_ALL=1` (as in CI), when they fail.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic, missing_docs)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use futures_util::{SinkExt, StreamExt};
use futures_util_free::catch;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A child process killed on drop.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    names.iter().find_map(|name| {
        std::env::split_paths(&path)
            .map(|dir| dir.join(name))
            .find(|candidate| candidate.is_file())
    })
}

/// chromedriver and Chromium, or `None` (skip) when missing and not required.
fn browser_programs() -> Option<(PathBuf, PathBuf)> {
    let driver = find_program(&["chromedriver"]);
    let chromium = find_program(&["chromium", "chromium-browser", "google-chrome"]);
    match (driver, chromium) {
        (Some(d), Some(c)) => Some((d, c)),
        _ if std::env::var("CHATROOM_REQUIRE_ALL").is_ok_and(|v| v == "1") => {
            panic!("chromium and chromedriver are required (CHATROOM_REQUIRE_ALL=1) but missing")
        }
        _ => {
            eprintln!(
                "\n!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
                 !! SKIPPED: browser tests need chromium and chromedriver on PATH       !!\n\
                 !! (apt-get install chromium chromium-driver); CI runs them.          !!\n\
                 !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
            );
            None
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn wait_for_port(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} never opened");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Driver {
    url: String,
    chromium: PathBuf,
    _process: Process,
}

impl Driver {
    fn start() -> Option<Driver> {
        let (driver, chromium) = browser_programs()?;
        let port = free_port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let process = Process(child);
        wait_for_port(port);
        Some(Driver {
            url: format!("http://127.0.0.1:{port}"),
            chromium,
            _process: process,
        })
    }

    async fn browser(&self) -> Client {
        let profile = std::env::temp_dir().join(format!(
            "chatroom-browser-{}-{}",
            std::process::id(),
            free_port()
        ));
        let caps = json!({
            "browserName": "chrome",
            "goog:loggingPrefs": {"browser": "ALL"},
            "goog:chromeOptions": {
                "binary": self.chromium,
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                         "--no-first-run", "--disable-background-networking",
                         "--disable-component-update", "--disable-sync",
                         "--window-size=1100,800",
                         format!("--user-data-dir={}", profile.display())]
            }
        });
        let caps = match caps {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        // chromedriver may accept connections a moment before it serves them, and a
        // loaded machine can reset the first attempt: retry a few times.
        let mut attempt = 0;
        loop {
            let session =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&self.url)
                    .await;
            match session {
                Ok(client) => return client,
                Err(e) if attempt < 5 => {
                    attempt += 1;
                    eprintln!("browser session attempt {attempt} failed ({e}); retrying");
                    tokio::time::sleep(Duration::from_millis(300 * attempt)).await;
                }
                Err(e) => panic!("no browser session after {attempt} retries: {e}"),
            }
        }
    }
}

/// One of the site binaries, on a free port.
struct Site {
    addr: SocketAddr,
    _process: Process,
}

impl Site {
    fn start(binary: &str) -> Site {
        Site::start_with(binary, &[])
    }

    fn start_with(binary: &str, env: &[(&str, &str)]) -> Site {
        let mut child = Command::new(binary)
            .envs(env.iter().copied())
            .env("CHATROOM_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("site starts");
        let stdout = child.stdout.take().expect("stdout");
        let process = Process(child);
        let mut lines = BufReader::new(stdout);
        let mut first = String::new();
        lines
            .read_line(&mut first)
            .expect("the site prints its address");
        // Keep draining its output so that the site never writes to a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut lines, &mut std::io::sink()));
        let addr = first
            .trim()
            .rsplit("http://")
            .next()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no address in {first:?}"));
        Site {
            addr,
            _process: process,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// chromedriver's browser console log (since the last call).
#[derive(Debug)]
struct BrowserLog;

impl WebDriverCompatibleCommand for BrowserLog {
    fn endpoint(
        &self,
        base: &url::Url,
        session: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/se/log", session.unwrap_or_default()))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        (http::Method::POST, Some(r#"{"type":"browser"}"#.into()))
    }
}

async fn console_errors(browser: &Client) -> Vec<String> {
    let log = browser.issue_cmd(BrowserLog).await.expect("browser log");
    log.as_array()
        .into_iter()
        .flatten()
        .filter(|entry| entry["level"] == "SEVERE")
        .map(|entry| entry["message"].as_str().unwrap_or_default().to_owned())
        .collect()
}

const PATIENCE: Duration = Duration::from_secs(10);

/// Texts of the elements matching `css`.
async fn texts(browser: &Client, css: &str) -> Vec<String> {
    let mut out = Vec::new();
    for element in browser
        .find_all(Locator::Css(css))
        .await
        .unwrap_or_default()
    {
        out.push(element.text().await.unwrap_or_default());
    }
    out
}

/// Waits until `check` holds for the texts of `css`.
async fn wait_texts(
    browser: &Client,
    css: &str,
    what: &str,
    check: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let deadline = Instant::now() + PATIENCE;
    loop {
        let found = texts(browser, css).await;
        if check(&found) {
            return found;
        }
        assert!(
            Instant::now() < deadline,
            "waited for {what} in {css}; found {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn visible(browser: &Client, id: &str) -> bool {
    browser
        .execute(
            &format!("return !document.getElementById('{id}').hidden"),
            vec![],
        )
        .await
        .expect("script")
        .as_bool()
        .unwrap_or(false)
}

async fn wait_visible(browser: &Client, id: &str) {
    let deadline = Instant::now() + PATIENCE;
    while !visible(browser, id).await {
        assert!(Instant::now() < deadline, "#{id} never became visible");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn type_into(browser: &Client, id: &str, text: &str) {
    let input = browser.find(Locator::Id(id)).await.expect("input");
    input.clear().await.expect("clear");
    input.send_keys(text).await.expect("type");
}

async fn press_enter(browser: &Client, id: &str) {
    let input = browser.find(Locator::Id(id)).await.expect("input");
    input.send_keys("\u{E007}").await.expect("enter");
}

/// Enters `name` at the name prompt and waits for the chat.
async fn enter_as(browser: &Client, name: &str) {
    wait_visible(browser, "prompt").await;
    type_into(browser, "name-input", name).await;
    press_enter(browser, "name-input").await;
    wait_visible(browser, "chat").await;
}

async fn say(browser: &Client, text: &str) {
    type_into(browser, "message-input", text).await;
    press_enter(browser, "message-input").await;
}

fn has(texts: &[String], wanted: &str) -> bool {
    texts.iter().any(|t| t == wanted)
}

fn count(texts: &[String], wanted: &str) -> usize {
    texts.iter().filter(|t| *t == wanted).count()
}

async fn the_whole_site(site: &Site, alice: &Client, bob: &Client, carol: &Client) {
    // The lobby: create a room by typing its name.
    alice.goto(&site.url("/")).await.expect("lobby");
    type_into(alice, "room-input", "Test Room").await;
    press_enter(alice, "room-input").await;
    enter_as(alice, "Alice").await;
    assert_eq!(
        alice.current_url().await.expect("url").path(),
        "/room/Test%20Room"
    );

    // Bob finds the room in the lobby's live list and follows its link.
    bob.goto(&site.url("/")).await.expect("lobby");
    wait_texts(bob, "#rooms li a", "the room", |t| has(t, "Test Room")).await;
    assert!(has(&texts(bob, "#rooms li span").await, "1 member"));
    bob.find(Locator::LinkText("Test Room"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");

    // The name-taken flow: the prompt says so and shows the taken name.
    wait_visible(bob, "prompt").await;
    type_into(bob, "name-input", "ALICE").await;
    press_enter(bob, "name-input").await;
    wait_visible(bob, "taken").await;
    assert_eq!(texts(bob, "#taken-name").await, ["ALICE"]);
    assert!(!visible(bob, "chat").await);
    type_into(bob, "name-input", "Bob").await;
    press_enter(bob, "name-input").await;
    wait_visible(bob, "chat").await;

    // Both see each other, and messages flow both ways.
    for b in [alice, bob] {
        wait_texts(b, "#members li", "both members", |t| t == ["Alice", "Bob"]).await;
    }
    wait_texts(alice, "#messages li.system .note", "Bob's arrival", |t| {
        has(t, "Bob joined")
    })
    .await;
    say(alice, "hello Bob").await;
    say(bob, "hi Alice").await;
    for b in [alice, bob] {
        wait_texts(b, "#messages li.message .text", "both messages", |t| {
            has(t, "hello Bob") && has(t, "hi Alice")
        })
        .await;
    }

    // Hostile text is shown as text and never runs.
    let payloads = [
        "<img src=x onerror=\"window.__xss=1\">",
        "<script>window.__xss=2</script>",
    ];
    for p in payloads {
        say(bob, p).await;
    }
    let shown = wait_texts(alice, "#messages li.message .text", "the payloads", |t| {
        payloads.iter().all(|p| has(t, p))
    })
    .await;
    assert!(payloads.iter().all(|p| has(&shown, p)));
    for b in [alice, bob] {
        let xss = b
            .execute("return [window.__xss === undefined, document.querySelectorAll('#messages img, #messages script').length]", vec![])
            .await
            .expect("script");
        assert_eq!(xss, json!([true, 0]), "no script ran, no element was made");
    }

    // A rename shows for both.
    type_into(bob, "rename-input", "Robert").await;
    press_enter(bob, "rename-input").await;
    for b in [alice, bob] {
        wait_texts(b, "#messages li.system .note", "the rename", |t| {
            has(t, "Bob is now Robert")
        })
        .await;
        wait_texts(b, "#members li", "the new name", |t| {
            t == ["Alice", "Robert"]
        })
        .await;
    }
    // ...and a taken name is refused next to the field.
    type_into(bob, "rename-input", "alice").await;
    press_enter(bob, "rename-input").await;
    wait_texts(bob, "#rename-error", "the error", |t| {
        t.iter().any(|e| e.contains("already called Alice"))
    })
    .await;

    // A reload resumes with the same name and shows what was said meanwhile, once.
    bob.goto("about:blank").await.expect("away");
    say(alice, "while you were away 1").await;
    say(alice, "while you were away 2").await;
    wait_texts(alice, "#messages li.message .text", "own messages", |t| {
        has(t, "while you were away 2")
    })
    .await;
    bob.goto(&site.url("/room/Test%20Room"))
        .await
        .expect("the room again");
    wait_visible(bob, "chat").await;
    let seen = wait_texts(
        bob,
        "#messages li.message .text",
        "the missed messages",
        |t| has(t, "while you were away 1") && has(t, "while you were away 2"),
    )
    .await;
    for text in [
        "hello Bob",
        "hi Alice",
        "while you were away 1",
        "while you were away 2",
    ] {
        assert_eq!(count(&seen, text), 1, "{text:?} shown once in {seen:?}");
    }
    wait_texts(bob, "#members li", "the same membership", |t| {
        t == ["Alice", "Robert"]
    })
    .await;
    let system = texts(alice, "#messages li.system .note").await;
    assert!(
        !system
            .iter()
            .any(|s| s.contains("left") || s.contains("Robert joined")),
        "seamless: {system:?}"
    );

    // A remembered name enters automatically...
    bob.find(Locator::Id("leave"))
        .await
        .expect("leave")
        .click()
        .await
        .expect("click");
    wait_texts(alice, "#messages li.system .note", "Robert leaving", |t| {
        has(t, "Robert left")
    })
    .await;
    bob.goto(&site.url("/room/Test%20Room"))
        .await
        .expect("room");
    wait_visible(bob, "chat").await;
    wait_texts(alice, "#members li", "Robert back", |t| {
        t == ["Alice", "Robert"]
    })
    .await;
    // ...unless it is taken: then the prompt says so and waits.
    carol.goto(&site.url("/")).await.expect("lobby");
    carol
        .execute("localStorage.setItem('chatroom.name', 'Alice')", vec![])
        .await
        .expect("script");
    carol
        .goto(&site.url("/room/Test%20Room"))
        .await
        .expect("room");
    wait_visible(carol, "taken").await;
    assert_eq!(texts(carol, "#taken-name").await, ["Alice"]);
    assert!(!visible(carol, "chat").await);

    for b in [alice, bob, carol] {
        assert_eq!(
            console_errors(b).await,
            Vec::<String>::new(),
            "no errors in the console"
        );
    }

    // Error pages, in the shared layout.
    carol
        .goto(&site.url("/room/%20%20"))
        .await
        .expect("bad room");
    assert_eq!(texts(carol, "main h1").await, ["400"]);
    carol
        .goto(&site.url("/no/such/page"))
        .await
        .expect("unknown");
    assert_eq!(texts(carol, "main h1").await, ["404"]);
    assert_eq!(texts(carol, "header .brand").await, ["chatroom"]);

    // The lobby lists 50 rooms a page, largest first, and "More rooms" shows the rest.
    let mut members = Vec::new();
    for i in 0..55 {
        let url = format!("ws://{}/ws", site.addr);
        let (mut ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("upgrade");
        let join = format!(r#"{{"type":"join","room":"extra {i:02}","name":"x"}}"#);
        ws.send(Message::text(join)).await.expect("join");
        ws.next().await.expect("welcome").expect("a frame");
        members.push(ws);
    }
    carol.goto(&site.url("/")).await.expect("lobby");
    wait_texts(carol, "#rooms li a", "a page of rooms", |t| t.len() == 50).await;
    let first = texts(carol, "#rooms li a").await;
    assert_eq!(
        first.first().map(String::as_str),
        Some("Test Room"),
        "largest first"
    );
    assert!(visible(carol, "more-rooms").await);
    carol
        .find(Locator::Id("more-rooms"))
        .await
        .expect("button")
        .click()
        .await
        .expect("click");
    wait_texts(carol, "#rooms li a", "every room", |t| t.len() == 56).await;
    assert!(!visible(carol, "more-rooms").await);
    drop(members);
}

async fn run(binary: &str, label: &str) {
    let Some(driver) = Driver::start() else {
        return;
    };
    let site = Site::start(binary);
    let alice = driver.browser().await;
    let bob = driver.browser().await;
    let carol = driver.browser().await;
    let outcome = catch(the_whole_site(&site, &alice, &bob, &carol)).await;
    finish(
        label,
        [("alice", alice), ("bob", bob), ("carol", carol)],
        outcome,
    )
    .await;
}

/// Screenshots (on failure, or with `CHATROOM_SCREENSHOT`), closes the browsers, then
/// re-raises the test's panic if it had one.
async fn finish<const N: usize>(
    label: &str,
    browsers: [(&str, Client); N],
    outcome: Result<(), Box<dyn std::any::Any + Send>>,
) {
    if outcome.is_err() || std::env::var_os("CHATROOM_SCREENSHOT").is_some() {
        let target = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target");
        for (who, browser) in &browsers {
            if let Ok(png) = browser.screenshot().await {
                let path = target.join(format!("browser-{label}-{who}.png"));
                let _ = std::fs::write(&path, png);
                eprintln!("screenshot: {}", path.display());
            }
        }
    }
    for (_, browser) in browsers {
        let _ = browser.close().await;
    }
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn axum_site_in_a_browser() {
    run(env!("CARGO_BIN_EXE_axum-site"), "axum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn actix_site_in_a_browser() {
    run(env!("CARGO_BIN_EXE_actix-site"), "actix").await;
}

/// Two nodes of one cluster (an axum site and an actix site on one Redis), a browser
/// on each: one set of rooms, one set of names, one conversation.
async fn two_sites(one: &Site, two: &Site, alice: &Client, bob: &Client) {
    alice.goto(&one.url("/")).await.expect("lobby");
    type_into(alice, "room-input", "Shared Room").await;
    press_enter(alice, "room-input").await;
    enter_as(alice, "Alice").await;

    // The other node's lobby lists the room, with its member.
    bob.goto(&two.url("/")).await.expect("lobby");
    wait_texts(bob, "#rooms li a", "the room", |t| has(t, "Shared Room")).await;
    assert!(has(&texts(bob, "#rooms li span").await, "1 member"));
    bob.find(Locator::LinkText("Shared Room"))
        .await
        .expect("link")
        .click()
        .await
        .expect("click");
    // Names are the cluster's: Alice's is taken on this node too.
    wait_visible(bob, "prompt").await;
    type_into(bob, "name-input", "alice").await;
    press_enter(bob, "name-input").await;
    wait_visible(bob, "taken").await;
    type_into(bob, "name-input", "Bob").await;
    press_enter(bob, "name-input").await;
    wait_visible(bob, "chat").await;

    for b in [alice, bob] {
        wait_texts(b, "#members li", "both members", |t| t == ["Alice", "Bob"]).await;
    }
    say(alice, "from the axum node").await;
    say(bob, "from the actix node").await;
    for b in [alice, bob] {
        wait_texts(b, "#messages li.message .text", "both messages", |t| {
            has(t, "from the axum node") && has(t, "from the actix node")
        })
        .await;
    }
    type_into(bob, "rename-input", "Robert").await;
    press_enter(bob, "rename-input").await;
    wait_texts(alice, "#members li", "the new name", |t| {
        t == ["Alice", "Robert"]
    })
    .await;

    // A reload resumes: nothing announced to the other node, nothing shown twice.
    bob.goto("about:blank").await.expect("away");
    say(alice, "while you reloaded").await;
    bob.goto(&two.url("/room/Shared%20Room"))
        .await
        .expect("the room again");
    wait_visible(bob, "chat").await;
    let seen = wait_texts(bob, "#messages li.message .text", "the missed one", |t| {
        has(t, "while you reloaded")
    })
    .await;
    for text in [
        "from the axum node",
        "from the actix node",
        "while you reloaded",
    ] {
        assert_eq!(count(&seen, text), 1, "{text:?} once in {seen:?}");
    }
    let system = texts(alice, "#messages li.system .note").await;
    assert!(
        !system
            .iter()
            .any(|s| s.contains("left") || s.contains("Robert joined")),
        "seamless: {system:?}"
    );
    for b in [alice, bob] {
        assert_eq!(console_errors(b).await, Vec::<String>::new());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_cluster_nodes_in_two_browsers() {
    let Some(driver) = Driver::start() else {
        return;
    };
    let Some(redis) = chatroom_redis::testing::RedisServer::start() else {
        return;
    };
    let env = [("CHATROOM_REDIS_URL", redis.url.as_str())];
    let one = Site::start_with(env!("CARGO_BIN_EXE_axum-site"), &env);
    let two = Site::start_with(env!("CARGO_BIN_EXE_actix-site"), &env);
    let alice = driver.browser().await;
    let bob = driver.browser().await;
    let outcome = catch(two_sites(&one, &two, &alice, &bob)).await;
    finish("cluster", [("alice", alice), ("bob", bob)], outcome).await;
}

const ADMIN_TOKEN: &str = "operator-token-0123456789";

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn member(site: &Site, room: &str, name: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", site.addr))
        .await
        .expect("upgrade");
    let join = json!({"type": "join", "room": room, "name": name}).to_string();
    ws.send(Message::text(join)).await.expect("join");
    ws.next().await.expect("welcome").expect("a frame");
    ws
}

/// The next JSON frame or close of a member, skipping `joined`/`left` events.
async fn next_of(ws: &mut Ws) -> Result<Value, (u16, String)> {
    loop {
        let frame = tokio::time::timeout(PATIENCE, ws.next())
            .await
            .expect("a frame in time")
            .expect("open")
            .expect("a frame");
        match frame {
            Message::Text(text) => {
                let v: Value = serde_json::from_str(&text).expect("JSON");
                if v["type"] != "joined" && v["type"] != "left" {
                    return Ok(v);
                }
            }
            Message::Close(Some(f)) => return Err((u16::from(f.code), f.reason.to_string())),
            _ => {}
        }
    }
}

async fn click(browser: &Client, css: &str) {
    browser
        .find(Locator::Css(css))
        .await
        .expect("element")
        .click()
        .await
        .expect("click");
}

/// How many points chart `id` drew, and how many of its pixels are the line's colour
/// (the accent, #2f6fde; the axis is grey).
async fn chart(browser: &Client, id: &str) -> (u64, u64) {
    let script = format!(
        "const c = document.getElementById('{id}'); \
         const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data; \
         let line = 0; for (let i = 0; i < d.length; i += 4) {{ \
           if (d[i + 3] > 200 && Math.abs(d[i] - 47) < 30 && Math.abs(d[i + 1] - 111) < 30 \
               && Math.abs(d[i + 2] - 222) < 30) line++; }} \
         return [Number(c.dataset.points || 0), line];"
    );
    let v = browser.execute(&script, vec![]).await.expect("script");
    (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
}

async fn operator(site: &Site, browser: &Client) {
    let mut alice = member(site, "Ops Room", "Alice").await;
    let mut bob = member(site, "Ops Room", "Bob").await;

    // The page asks for the token; a wrong one is refused and asked for again.
    browser.goto(&site.url("/admin")).await.expect("admin");
    wait_visible(browser, "login").await;
    type_into(browser, "token-input", "not-the-token-at-all").await;
    press_enter(browser, "token-input").await;
    wait_texts(browser, "#token-hint", "the refusal", |t| {
        has(t, "That token was not accepted.")
    })
    .await;
    assert!(!visible(browser, "console").await);
    type_into(browser, "token-input", ADMIN_TOKEN).await;
    press_enter(browser, "token-input").await;
    wait_visible(browser, "console").await;

    // The room, with its member count; then its members.
    wait_texts(browser, "#admin-rooms li button", "the room", |t| {
        has(t, "Ops Room")
    })
    .await;
    wait_texts(browser, "#admin-rooms li span", "its count", |t| {
        has(t, "2 members")
    })
    .await;
    click(browser, "#admin-rooms li button").await;
    wait_texts(browser, "#room-members .member-name", "the members", |t| {
        has(t, "Alice") && has(t, "Bob")
    })
    .await;

    // A post reaches the members, as a system message from the operator.
    type_into(browser, "post-input", "Maintenance at <b>noon</b>").await;
    press_enter(browser, "post-input").await;
    let said = next_of(&mut alice).await.expect("a message");
    assert_eq!(said["type"], "message");
    assert_eq!(said["text"], "Maintenance at <b>noon</b>");
    assert_eq!(said["system"], true);
    assert_eq!(said["from"], "operator");

    // Removing Bob closes his connection with 4003; the room shows one member.
    let remove = "return [...document.querySelectorAll('#room-members li')]\
         .find(li => li.querySelector('.member-name').firstChild.textContent === 'Bob')\
         .querySelector('button').click();";
    browser.execute(remove, vec![]).await.expect("remove");
    // (After the post, which Bob got too.)
    let (code, _) = loop {
        if let Err(close) = next_of(&mut bob).await {
            break close;
        }
    };
    assert_eq!(code, 4003);
    wait_texts(browser, "#admin-rooms li span", "the new count", |t| {
        has(t, "1 member")
    })
    .await;
    wait_texts(browser, "#room-members .member-name", "Bob gone", |t| {
        t.len() == 1 && has(t, "Alice")
    })
    .await;

    // The charts draw, while Alice talks: two samples (5 s apart) of connections and
    // messages, and a latency for the interval with her sends.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut said = 0;
    loop {
        said += 1;
        let send = json!({"type": "send", "text": format!("tick {said}")}).to_string();
        alice.send(Message::text(send)).await.expect("send");
        let connections = chart(browser, "chart-connections").await;
        let messages = chart(browser, "chart-messages").await;
        let latency = chart(browser, "chart-latency").await;
        if connections.0 >= 2 && messages.0 >= 2 && latency.0 >= 1 {
            assert!(
                connections.1 > 20 && messages.1 > 20 && latency.1 > 5,
                "lines drawn: {connections:?} {messages:?} {latency:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the charts never drew");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let rate = wait_texts(browser, "#now-messages", "a rate", |t| {
        t.first()
            .and_then(|n| n.parse::<f64>().ok())
            .is_some_and(|r| r > 0.0)
    })
    .await;
    assert!(rate[0].parse::<f64>().unwrap() < 10.0, "{rate:?}");
    let connections = wait_texts(browser, "#now-connections", "a count", |t| {
        t.first().is_some_and(|n| n != "–")
    })
    .await;
    assert!(connections[0].parse::<f64>().is_ok(), "{connections:?}");

    // Text is text: the posted markup was never rendered as markup anywhere.
    assert!(browser.find(Locator::Css("main b")).await.is_err());
    // A narrow window scrolls nothing sideways.
    browser.set_window_size(380, 800).await.expect("resize");
    let overflow = browser
        .execute(
            "return document.documentElement.scrollWidth > document.documentElement.clientWidth",
            vec![],
        )
        .await
        .expect("script");
    assert_eq!(overflow, Value::Bool(false), "no sideways scrolling");
    browser.set_window_size(1100, 800).await.expect("resize");
    // Nothing went wrong but the wrong token's two refusals.
    let errors = console_errors(browser).await;
    assert!(
        errors.len() == 2 && errors.iter().all(|e| e.contains("401 (Unauthorized)")),
        "{errors:?}"
    );
    drop(alice);
}

async fn operator_page(binary: &str, label: &str) {
    let Some(driver) = Driver::start() else {
        return;
    };
    let site = Site::start_with(binary, &[("CHATROOM_ADMIN_TOKEN", ADMIN_TOKEN)]);
    let browser = driver.browser().await;
    let outcome = catch(operator(&site, &browser)).await;
    finish(label, [("operator", browser)], outcome).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_page_on_axum() {
    operator_page(env!("CARGO_BIN_EXE_axum-site"), "admin-axum").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operators_page_on_actix() {
    operator_page(env!("CARGO_BIN_EXE_actix-site"), "admin-actix").await;
}

/// Catching a panic in an async block without a futures dependency.
mod futures_util_free {
    use std::any::Any;
    use std::future::Future;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::pin::Pin;
    use std::task::{Context, Poll};

    pub(crate) struct Catch<F>(Pin<Box<F>>);

    impl<F: Future> Future for Catch<F> {
        type Output = Result<F::Output, Box<dyn Any + Send>>;

        fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
            match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
                Ok(Poll::Pending) => Poll::Pending,
                Ok(Poll::Ready(v)) => Poll::Ready(Ok(v)),
                Err(panic) => Poll::Ready(Err(panic)),
            }
        }
    }

    pub(crate) fn catch<F: Future>(future: F) -> Catch<F> {
        Catch(Box::pin(future))
    }
}
