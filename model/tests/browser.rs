//! The Explorer in a real browser: `raft-model explore` driven through
//! headless Chromium by ChromeDriver (the W3C WebDriver HTTP API), clicking
//! through an election and a replication.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`,
//! `/usr/bin/chromedriver`; `.ci/run` installs them; elsewhere set
//! `CHROMIUM` and `CHROMEDRIVER`). Without them the test fails, saying how
//! to install them: it never passes without a browser. Leaves a screenshot
//! at `<target dir>/explorer-screenshot.png`.

mod common;

use base64::Engine as _;
use common::{free_port, request, Explorer, PAPER_PROPERTIES};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The element key of W3C WebDriver.
const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

/// How long any one wait in the page may take.
const WAIT: Duration = Duration::from_secs(20);

fn executable(var: &str, default: &str) -> PathBuf {
    let path = PathBuf::from(std::env::var(var).unwrap_or_else(|_| default.to_string()));
    assert!(
        path.exists(),
        "{} not found: the Explorer browser test needs Debian's Chromium and ChromeDriver. \
         Install them with `apt-get install -y chromium chromium-driver` (.ci/run does), or set \
         {var} to the executable's path.",
        path.display()
    );
    path
}

/// A ChromeDriver with one headless Chromium session; both end when dropped.
struct Browser {
    driver: Child,
    addr: SocketAddr,
    session: String,
    profile: PathBuf,
}

impl Browser {
    fn start() -> Browser {
        let chromium = executable("CHROMIUM", "/usr/bin/chromium");
        let chromedriver = executable("CHROMEDRIVER", "/usr/bin/chromedriver");
        let port = free_port();
        let driver = Command::new(&chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", chromedriver.display()));
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, body)) = request(addr, "GET", "/status", None) {
                if body.contains("\"ready\":true") {
                    break;
                }
            }
            assert!(Instant::now() < deadline, "chromedriver not ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = std::env::temp_dir().join(format!(
            "raft-model-explorer-chromium-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&profile);
        // The flags that work on the CI machine (as root, no network but
        // loopback): without the background-networking ones Chromium's own
        // connections are refused many at a time.
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--window-size=1400,1300",
            &format!("--user-data-dir={}", profile.display()),
        ];
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium, "args": args},
        }}});
        let mut browser = Browser {
            driver,
            addr,
            session: String::new(),
            profile,
        };
        let created = browser.call("POST", "/session", Some(capabilities));
        browser.session = created["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session: {created}"))
            .to_string();
        browser
    }

    /// A WebDriver command; panics on an error, returns its `value`.
    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        self.try_call(method, path, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    fn try_call(&self, method: &str, path: &str, body: Option<Value>) -> Result<Value, String> {
        let body = body.map(|b| b.to_string());
        let (status, text) =
            request(self.addr, method, path, body.as_deref()).map_err(|e| e.to_string())?;
        let value: Value = serde_json::from_str(&text).map_err(|e| format!("{e}: {text}"))?;
        if status == 200 {
            Ok(value["value"].clone())
        } else {
            Err(format!("{status}: {text}"))
        }
    }

    fn session_path(&self, rest: &str) -> String {
        format!("/session/{}{rest}", self.session)
    }

    fn goto(&self, url: &str) {
        self.call(
            "POST",
            &self.session_path("/url"),
            Some(json!({"url": url})),
        );
    }

    fn eval(&self, script: &str) -> Value {
        self.call(
            "POST",
            &self.session_path("/execute/sync"),
            Some(json!({"script": script, "args": []})),
        )
    }

    fn text(&self, selector: &str) -> String {
        let script = format!(
            "const e = document.querySelector({}); return e ? (e.innerText ?? e.textContent) : '';",
            json!(selector)
        );
        self.eval(&script).as_str().unwrap_or_default().to_string()
    }

    /// Waits until `selector`'s text satisfies `ok`; returns that text.
    fn wait_for_text(&self, selector: &str, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let text = self.text(selector);
            if ok(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "waited {WAIT:?} for {what} in {selector}; it reads:\n{text}\n\nwhole page:\n{}",
                self.text("body")
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the next action whose text starts with `prefix`, and waits
    /// until the page has taken the step.
    fn click_action(&self, prefix: &str) {
        let xpath = format!(
            "//h2[normalize-space(.)='Next Action Choices']/following-sibling::ul[1]\
             /li/a[@href and starts-with(normalize-space(.), {})]",
            xpath_literal(prefix)
        );
        let deadline = Instant::now() + WAIT;
        let element = loop {
            match self.try_call(
                "POST",
                &self.session_path("/element"),
                Some(json!({"using": "xpath", "value": xpath})),
            ) {
                Ok(found) => break found[ELEMENT].as_str().unwrap_or_default().to_string(),
                Err(e) => assert!(
                    Instant::now() < deadline,
                    "no next action {prefix:?} ({e}); the page reads:\n{}",
                    self.text("body")
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.call(
            "POST",
            &self.session_path(&format!("/element/{element}/click")),
            Some(json!({})),
        );
        // The step is taken once it ends the path of actions.
        self.wait_for_text("ol.path-list", &format!("{prefix:?} taken"), |t| {
            t.lines().last().is_some_and(|l| l.starts_with(prefix))
        });
    }

    fn screenshot(&self, to: &PathBuf) {
        let encoded = self.call("GET", &self.session_path("/screenshot"), None);
        let png = base64::engine::general_purpose::STANDARD
            .decode(encoded.as_str().unwrap_or_default())
            .expect("a base64 screenshot");
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        if let Some(dir) = to.parent() {
            std::fs::create_dir_all(dir).expect("create the target dir");
        }
        std::fs::write(to, png).expect("write the screenshot");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = request(self.addr, "DELETE", &self.session_path(""), None);
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// `s` as an XPath string literal (the prefixes hold no quote of both kinds).
fn xpath_literal(s: &str) -> String {
    if s.contains('\'') {
        format!("\"{s}\"")
    } else {
        format!("'{s}'")
    }
}

/// The cargo target directory this test was built in (`CARGO_TARGET_DIR`
/// or `target/`): the test binary is `<target>/<profile>/deps/<name>`.
fn target_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
}

#[test]
fn explorer_in_chromium_clicks_through_an_election_and_a_replication() {
    let explorer = Explorer::start(&["--servers", "3", "--max-term", "1", "--requests", "1"]);
    let browser = Browser::start();
    browser.goto(&explorer.url);

    // The properties, by their paper names, from the Explorer's status.
    let page = browser.wait_for_text("body", "the properties", |t| {
        t.contains("Always State Machine Safety")
    });
    for name in PAPER_PROPERTIES
        .into_iter()
        .chain(["Sometimes a leader is elected"])
    {
        assert!(page.contains(name), "{name} in:\n{page}");
    }

    // The initial state, then an election and a replication, by clicks.
    browser.click_action("Init 0");
    let state = browser.wait_for_text("section.main-flex-right", "the initial state", |t| {
        t.contains("n0 Follower t0 voted - log [] commit 0, timers: Election")
    });
    assert!(state.contains("3 → 0 : ClientRequest #1"), "{state}");
    for action in [
        "0 Election timeout",
        "0 → 1 : RequestVote t1 from n0 last 0@0",
        "1 → 0 : RequestVoteResponse t1 granted",
        "3 → 0 : ClientRequest #1",
        "0 → 1 : AppendEntries t1 from n0 prev 0@0 [1@1(c3)] commit 0",
        "1 → 0 : AppendEntriesResponse t1 ok index 1",
    ] {
        browser.click_action(action);
    }
    let state = browser.wait_for_text("section.main-flex-right", "the committed entry", |t| {
        t.contains("n0 Leader t1 voted n0 log [1@1(c3)] commit 1, timers: Heartbeat")
    });
    for line in [
        "step: 1 → 0 : AppendEntriesResponse t1 ok index 1",
        "sends 0 → 3 : ClientReply #1 ok 0",
        "n1 Follower t1 voted n0 log [1@1(c3)] commit 0, timers: Election",
        "n2 Follower t0 voted - log [] commit 0, timers: Election",
        "examples here: a leader is elected; an entry is committed",
    ] {
        assert!(state.contains(line), "{line:?} in:\n{state}");
    }
    // Stateright's sequence diagram, with readable labels.
    let svg = browser.text("section.main-flex-right svg");
    assert!(
        svg.contains("RequestVote t1 from n0 last 0@0") && svg.contains("Timeout(Election)"),
        "{svg}"
    );
    // The address bar names the path, as `check` prints it.
    let hash = browser.eval("return window.location.hash;");
    let hash = hash.as_str().unwrap_or_default();
    assert!(
        hash.starts_with("#/steps/0/") && hash.split('/').count() == 9,
        "{hash}"
    );

    let shot = target_dir().join("explorer-screenshot.png");
    browser.screenshot(&shot);
    println!("screenshot: {}", shot.display());
}
