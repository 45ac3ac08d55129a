//! `raft-model explore` over HTTP: what it serves, its errors, and the
//! Explorer URLs that `check` prints.

mod common;

use common::{state_at, Explorer, PAPER_PROPERTIES};
use raft_model::check::{self, CheckOptions, Outcome};
use raft_model::model::names;
use raft_model::{ModelConfig, RaftModel};
use std::process::Command;
use std::time::{Duration, Instant};

const SMALL: &[&str] = &[
    "--servers",
    "2",
    "--max-term",
    "1",
    "--requests",
    "1",
    "--crashes",
    "0",
];

fn small_config() -> ModelConfig {
    ModelConfig {
        servers: 2,
        max_term: 1,
        requests: 1,
        crashes: 0,
        ..ModelConfig::default_check()
    }
}

#[test]
fn explore_serves_the_page_properties_and_readable_states() {
    let explorer = Explorer::start(SMALL);
    assert!(
        explorer.url.starts_with("http://127.0.0.1:") && explorer.url.ends_with('/'),
        "{}",
        explorer.url
    );
    let (status, page) = explorer.get("/");
    assert_eq!(status, 200);
    assert!(page.contains("Stateright Explorer"), "{page}");

    let status = explorer.get_json("/.status");
    let properties: Vec<&str> = status["properties"]
        .as_array()
        .expect("properties")
        .iter()
        .filter_map(|p| p[1].as_str())
        .collect();
    for name in PAPER_PROPERTIES {
        assert!(properties.contains(&name), "{name}: {properties:?}");
    }

    let init = explorer.get_json("/.states");
    let state = init[0]["state"].as_str().expect("init state");
    assert_eq!(
        state,
        "servers:\n\
         \x20 n0 Follower t0 voted - log [] commit 0, timers: Election\n\
         \x20 n1 Follower t0 voted - log [] commit 0, timers: Election\n\
         clients:\n\
         \x20 client 2 request #1 pending\n\
         network: 2 messages in flight\n\
         \x20 2 → 0 : ClientRequest #1\n\
         \x20 2 → 1 : ClientRequest #1\n\
         history:\n\
         \x20 leaders [], applied [], conflict overwritten: no, crashes 0, recovered [], \
         rejoined: no, client operations 1 (linearizable)\n"
    );
    let svg = init[0]["svg"].as_str().expect("a sequence diagram");
    assert!(svg.starts_with("<svg") && svg.contains("2 client"), "{svg}");

    // The next steps: readable action names, and each step described.
    let next = explorer.get_json("/.states/0");
    let actions: Vec<&str> = next
        .as_array()
        .expect("steps")
        .iter()
        .filter_map(|s| s["action"].as_str())
        .collect();
    assert!(actions.contains(&"0 Election timeout"), "{actions:?}");
    let timeout = next
        .as_array()
        .and_then(|a| a.iter().find(|s| s["action"] == "0 Election timeout"))
        .expect("an election timeout");
    let outcome = timeout["outcome"].as_str().expect("a step description");
    let always = status["properties"]
        .as_array()
        .expect("properties")
        .iter()
        .filter(|p| p[0] == "Always")
        .count();
    for line in [
        "step: 0 Election timeout",
        "  before: n0 Follower t0 voted - log [] commit 0, timers: Election",
        "  after:  n0 Candidate t1 voted n0 log [] commit 0, timers: Election",
        "  sends 0 → 1 : RequestVote t1 from n0 last 0@0",
        &format!("properties: all {always} `always` properties hold here"),
        "  0 → 1 : RequestVote t1 from n0 last 0@0",
    ] {
        assert!(outcome.lines().any(|l| l == line), "{line:?} in\n{outcome}");
    }
    let svg = timeout["svg"].as_str().expect("a sequence diagram");
    assert!(svg.contains("Timeout(Election)"), "{svg}");
}

#[test]
fn explore_on_a_busy_address_exits_2() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let o = Command::new(env!("CARGO_BIN_EXE_raft-model"))
        .args(["explore", "--addr", &addr])
        .output()
        .expect("run raft-model");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!("--addr {addr}: cannot listen")),
        "{stderr}"
    );
}

/// The URL `check` prints for a path (`check::explorer_url`) opens that path
/// in an Explorer started with the same configuration flags: the Explorer
/// replays the action indices to the very same state.
#[test]
fn an_explorer_url_from_check_opens_its_path_in_explore() {
    let config = small_config();
    let report = check::run(config, CheckOptions::default(), &mut std::io::sink());
    let Some(Outcome::Found(path)) = report.verdict(names::CLIENT_REPLY).map(|v| &v.outcome) else {
        panic!("no example of a client reply: {report:?}");
    };
    let explorer = Explorer::start(SMALL);
    let model = RaftModel::new(config);
    let url = check::explorer_url(&model, path, &explorer.url);
    let encoded = url
        .strip_prefix(&format!("{}#/steps/", explorer.url))
        .unwrap_or_else(|| panic!("{url} is not an Explorer steps URL of {}", explorer.url));
    // What the page fetches for the last step of the URL: the next steps
    // from the path's final state.
    let (status, body) = explorer.get(&format!("/.states/{encoded}"));
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with('['), "{body}");
    // And the final state itself, as the Explorer shows it.
    let last = state_at(&explorer, encoded);
    assert_eq!(
        last["state"].as_str(),
        Some(format!("{:#?}", path.last_state()).as_str()),
        "{last}"
    );
    assert!(
        last["state"]
            .as_str()
            .is_some_and(|s| s.contains("client 2 request #1 done, got 0")),
        "{last}"
    );
}

/// Times the Explorer on the deep configuration (3 servers, max term 3,
/// 2 requests, 1 crash, lossy): the first page, then `/.states` along a
/// path of an election, a replication and 24 more steps, each fetched 5
/// times. Prints medians and maxima; asserts nothing about time.
///
/// `cargo test --release -p raft-model --test explorer -- --ignored --nocapture`
#[test]
#[ignore = "benchmark: cargo test --release -p raft-model --test explorer -- --ignored --nocapture"]
fn explorer_responsiveness_on_the_deep_configuration() {
    let explorer = Explorer::start(&[
        "--servers",
        "3",
        "--max-term",
        "3",
        "--requests",
        "2",
        "--crashes",
        "1",
        "--lossy",
    ]);
    let time = |path: &str| {
        let start = Instant::now();
        let (status, body) = explorer.get(path);
        assert_eq!(status, 200, "GET {path}: {body}");
        start.elapsed()
    };
    let median = |mut v: Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let first_page: Vec<Duration> = (0..5)
        .map(|_| time("/") + time("/app.js") + time("/.status") + time("/.states"))
        .collect();
    println!(
        "first page (/, /app.js, /.status, /.states): median {:?}, max {:?}",
        median(first_page.clone()),
        first_page.iter().max().expect("runs")
    );
    // An election, a replication, then pseudo-random steps (fixed seed).
    let script = [
        "0 Election timeout",
        "0 → 1 : RequestVote t1",
        "1 → 0 : RequestVoteResponse t1 granted",
        "3 → 0 : ClientRequest #1",
        "0 → 1 : AppendEntries t1 from n0 prev 0@0 [1@1(c3)]",
        "1 → 0 : AppendEntriesResponse t1 ok index 1",
    ];
    let mut path = "/0".to_string();
    let mut seed: u64 = 0x5eed;
    let mut all = Vec::new();
    for depth in 1..=30 {
        let runs: Vec<Duration> = (0..5).map(|_| time(&format!("/.states{path}"))).collect();
        let steps = explorer.get_json(&format!("/.states{path}"));
        let steps = steps.as_array().expect("steps");
        println!(
            "depth {depth:>2} ({:>2} actions): median {:?}, max {:?}",
            steps.len(),
            median(runs.clone()),
            runs.iter().max().expect("runs")
        );
        all.extend(runs);
        let live: Vec<&serde_json::Value> =
            steps.iter().filter(|s| s.get("state").is_some()).collect();
        let next = match script.get(depth - 1) {
            Some(prefix) => live
                .iter()
                .find(|s| s["action"].as_str().is_some_and(|a| a.starts_with(prefix)))
                .unwrap_or_else(|| panic!("no {prefix:?} at {path}")),
            None => {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                match live.get((seed >> 33) as usize % live.len().max(1)) {
                    Some(s) => s,
                    None => break,
                }
            }
        };
        path = format!("{path}/{}", next["actionIndex"]);
    }
    println!(
        "all steps: median {:?}, max {:?} ({} requests); final path {path}",
        median(all.clone()),
        all.iter().max().expect("runs"),
        all.len()
    );
}

/// A seeded bug's counterexamples, as `check --bug` prints them, open in
/// `explore --bug` with the same flags: each URL reaches a state whose step
/// names the property it violates.
#[test]
fn check_bug_counterexample_urls_open_in_explore() {
    let flags = ["--bug", "vote-not-persisted"];
    let o = Command::new(env!("CARGO_BIN_EXE_raft-model"))
        .arg("check")
        .args(flags)
        .output()
        .expect("run raft-model check");
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(o.status.code(), Some(1), "{out}");
    // Each counterexample: its heading names the property, its last line the URL.
    let mut counterexamples = Vec::new();
    let mut property = None;
    for line in out.lines() {
        if let Some(name) = line
            .strip_prefix("Counterexample to \"")
            .and_then(|l| l.strip_suffix("\":"))
        {
            property = Some(name.to_string());
        }
        if let Some(url) = line.trim().strip_prefix("Explorer: ") {
            let url = url.split_whitespace().next().unwrap_or_default();
            let encoded = url
                .strip_prefix("http://127.0.0.1:3000/#/steps/")
                .unwrap_or_else(|| panic!("not an Explorer steps URL: {url}"));
            let name = property.take().expect("a heading before the URL");
            counterexamples.push((name, encoded.to_string()));
        }
    }
    assert!(
        counterexamples
            .iter()
            .any(|(name, _)| name == "Election Safety"),
        "{out}"
    );
    let explorer = Explorer::start(&flags);
    for (name, encoded) in &counterexamples {
        let (status, body) = explorer.get(&format!("/.states/{encoded}"));
        assert_eq!(status, 200, "{name}: {encoded}: {body}");
        let last = state_at(&explorer, encoded);
        let outcome = last["outcome"].as_str().unwrap_or_default();
        let violated = outcome
            .lines()
            .find_map(|l| l.strip_prefix("properties: VIOLATED here: "))
            .unwrap_or_else(|| panic!("{name}: no violation at {encoded}:\n{outcome}"));
        assert!(
            violated.split(", ").any(|p| p == name),
            "{name} at {encoded}:\n{outcome}"
        );
    }
}
