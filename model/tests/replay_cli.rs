//! `raft-model replay`: exit statuses and messages, on traces written here
//! through `raft-spec` (the end-to-end suites with raft-node's traces are in
//! the workspace's tests/replay.rs).

mod common;

use raft_spec::trace::{
    Emitted, Header, LogDigest, Step, TraceInput, TraceWriter, OLDEST_VERSION, VERSION,
};
use raft_spec::{ClientId, Input, Kv, KvCommand, NodeId, Server};
use std::path::PathBuf;
use std::process::{Command, Output as ProcessOutput};

fn raft_model(args: &[&str]) -> ProcessOutput {
    Command::new(env!("CARGO_BIN_EXE_raft-model"))
        .args(args)
        .output()
        .expect("run raft-model")
}

fn text(o: &ProcessOutput) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let p = std::env::temp_dir().join(format!("raft-replay-cli-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).expect("temp dir");
        Dir(p)
    }

    fn write(&self, name: &str, content: &str) -> String {
        let p = self.0.join(name);
        std::fs::write(&p, content).expect("write trace");
        p.display().to_string()
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A one-server cluster's trace: start, election, one put. Lines: header,
/// Restart, ElectionTimeout, ClientRequest.
fn one_node_trace(cluster: &str) -> String {
    let header = Header::new(cluster, vec![NodeId(1)], "kv", NodeId(1));
    let (mut server, started) = Server::<Kv>::new(NodeId(1), vec![]);
    let mut digest = LogDigest::default();
    let mut w = TraceWriter::new(Vec::new(), &header).expect("header");
    let start = Step::after(1, TraceInput::Restart, &server, &digest);
    w.write_alone(&start.with_out(Emitted::all(&started, &digest)))
        .expect("step");
    let inputs = [
        Input::ElectionTimeout,
        Input::ClientRequest {
            client_id: ClientId(9),
            request_no: 1,
            command: KvCommand::Put {
                key: "k".into(),
                value: "v".into(),
            },
            ack: raft_spec::Ack::Applied,
        },
    ];
    for (i, input) in inputs.into_iter().enumerate() {
        let (step, _) = Step::take(i as u64 + 2, &mut server, input, &mut digest);
        w.write_alone(&step).expect("step");
    }
    String::from_utf8(w.into_inner().expect("flush")).expect("utf-8")
}

#[test]
fn a_clean_trace_exits_0_with_the_figures() {
    let d = Dir::new("clean");
    let f = d.write("node-1.ndjson", &one_node_trace("c"));
    let o = raft_model(&["replay", &f]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("OK: 3 steps of 1 servers replayed clean (terms up to 1, 1 entries committed, 0 restarts, 1 replies checked against the committed log)"),
        "{out}"
    );
    assert!(out.contains("steps/s"), "{out}");
}

#[test]
fn a_divergence_exits_1_naming_the_step_file_line_and_fields() {
    let d = Dir::new("diverge");
    let t = one_node_trace("c").replace("\"commit_index\":1", "\"commit_index\":0");
    let f = d.write("node-1.ndjson", &t);
    let o = raft_model(&["replay", &f]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(&format!("DIVERGENCE at step 3 ({f}:5), server 1")),
        "{out}"
    );
    assert!(out.contains("ClientRequest"), "{out}");
    assert!(out.contains("commit_index     0"), "{out}");
    assert!(out.contains("last steps replayed:"), "{out}");
}

#[test]
fn bad_input_exits_2_naming_the_file_and_line() {
    let d = Dir::new("bad");
    let good = one_node_trace("c");
    let lines: Vec<&str> = good.lines().collect();
    let cases: Vec<(&str, String, String)> = vec![
        (
            "empty",
            String::new(),
            ":1: empty trace, no header line".into(),
        ),
        (
            "truncated-mid-file",
            format!("{}\n{}\n{}\n{}\n", lines[0], lines[1], &lines[2][..20], lines[3]),
            ":3: malformed trace line".into(),
        ),
        (
            "invalid-json",
            format!("{}\n{}\n{{nope\n{}\n", lines[0], lines[1], lines[3]),
            ":3: malformed trace line".into(),
        ),
        (
            "version",
            good.replace(&format!("\"version\":{VERSION}"), "\"version\":9"),
            format!(
                ":1: bad trace header: version 9, this reader reads {OLDEST_VERSION} to {VERSION}"
            ),
        ),
        (
            "bad-marker",
            format!("{}\n{}\n{{\"synced\":5}}\n", lines[0], lines[1]),
            ":3: bad synced marker: a marker for step 5, but the step before it is 1".into(),
        ),
        (
            "no-outputs",
            {
                let mut step: serde_json::Value = serde_json::from_str(lines[1]).expect("step");
                step.as_object_mut().expect("object").remove("out");
                format!("{}\n{step}\n", lines[0])
            },
            format!(
                ":2: a step without \"out\" in a version-{VERSION} trace (its steps record their outputs)"
            ),
        ),
        (
            "released-in-version-2",
            format!(
                "{}\n{}\n{{\"released\":1,\"out\":[]}}\n",
                lines[0].replace(&format!("\"version\":{VERSION}"), "\"version\":2"),
                lines[1]
            ),
            ":3: bad released marker: a released marker in a version-2 trace (released markers came with version 3)".into(),
        ),
        (
            "foreign-step",
            good.replace("\"server\":1,", "\"server\":2,"),
            ":2: a step of server 2 in the trace recorded by server 1".into(),
        ),
    ];
    // A last line cut short (no newline: its node was killed while writing
    // it) ends the trace, and the summary says so.
    let f = d.write(
        "truncated.ndjson",
        &format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..20]),
    );
    let o = raft_model(&["replay", &f]);
    assert_eq!(o.status.code(), Some(0), "truncated: {}", text(&o));
    assert!(
        text(&o).contains(&format!(
            "note: {f} ends in a line cut short (line 3, 20 bytes)"
        )),
        "truncated: {}",
        text(&o)
    );
    for (name, content, expected) in cases {
        let f = d.write(&format!("{name}.ndjson"), &content);
        let o = raft_model(&["replay", &f]);
        assert_eq!(o.status.code(), Some(2), "{name}: {}", text(&o));
        assert!(
            text(&o).contains(&format!("{f}{expected}")),
            "{name}: {}",
            text(&o)
        );
    }

    // Traces of different clusters, or a missing node's trace.
    let a = d.write("a.ndjson", &good);
    let b = d.write("b.ndjson", &one_node_trace("other"));
    let o = raft_model(&["replay", &a, &b]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("traces of different clusters"),
        "{}",
        text(&o)
    );

    let two = good.replace("\"servers\":[1]", "\"servers\":[1,2]");
    let f = d.write("two.ndjson", &two);
    let o = raft_model(&["replay", &f]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("no trace given for server(s) [2]"),
        "{}",
        text(&o)
    );

    let o = raft_model(&["replay", "/nonexistent/trace.ndjson"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("/nonexistent/trace.ndjson:0: cannot read trace"),
        "{}",
        text(&o)
    );
}

/// A `raft-model replay --explore --addr 127.0.0.1:0 FILES` process,
/// killed when dropped, with what it printed up to its Explorer path.
struct ReplayExplorer {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    printed: String,
    /// The Explorer path it printed (after `#/steps/`).
    path: String,
}

impl ReplayExplorer {
    fn start(files: &[&str]) -> ReplayExplorer {
        use std::io::BufRead as _;
        let mut child = Command::new(env!("CARGO_BIN_EXE_raft-model"))
            .args([
                "replay",
                "--explore",
                "--addr",
                "127.0.0.1:0",
                "--context",
                "10",
            ])
            .args(files)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start raft-model replay --explore");
        let stdout = child.stdout.take().expect("stdout");
        let mut reader = std::io::BufReader::new(stdout);
        let mut printed = String::new();
        let url = loop {
            let mut line = String::new();
            let n = reader.read_line(&mut line).expect("read a line");
            assert!(n > 0, "replay --explore printed no path:\n{printed}");
            printed.push_str(&line);
            if line.contains("path to the state after step") {
                break line.split_whitespace().last().expect("a URL").to_string();
            }
        };
        // Keep reading (and dropping) whatever else it prints.
        std::thread::spawn(move || for _ in reader.lines() {});
        let (base, path) = url.split_once("/#/steps/").expect("an Explorer URL");
        let addr: std::net::SocketAddr = base
            .trim_start_matches("http://")
            .parse()
            .expect("host:port");
        for _ in 0..100 {
            if std::net::TcpStream::connect(addr).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        ReplayExplorer {
            child,
            addr,
            printed,
            path: path.to_string(),
        }
    }

    fn get_json(&self, path: &str) -> serde_json::Value {
        let (status, body) =
            common::request(self.addr, "GET", path, None).unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
    }

    /// The state at the end of the printed path, as the Explorer shows it.
    fn last_state(&self) -> String {
        let (prefix, last) = match self.path.rsplit_once('/') {
            Some((p, l)) => (format!("/.states/{p}"), l),
            None => ("/.states".to_string(), self.path.as_str()),
        };
        let last: u64 = last.parse().expect("an action index");
        let steps = self.get_json(&prefix);
        let entry = steps
            .as_array()
            .and_then(|a| a.iter().find(|s| s["actionIndex"].as_u64() == Some(last)))
            .unwrap_or_else(|| panic!("no action {last} at {prefix}: {steps}"));
        entry["state"].as_str().expect("a state").to_string()
    }

    /// The actions the Explorer offers at the end of the printed path.
    fn offered(&self) -> Vec<String> {
        self.get_json(&format!("/.states/{}", self.path))
            .as_array()
            .expect("steps")
            .iter()
            .filter_map(|s| s["action"].as_str().map(str::to_string))
            .collect()
    }
}

impl Drop for ReplayExplorer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The expected Explorer rendering of the last state both agreed on,
/// computed in this process by the library.
fn expected_last_state(files: &[&str]) -> (String, raft_model::replay::ExplorerPath) {
    let options = raft_model::replay::ReplayOptions::default();
    let (outcome, context) =
        raft_model::replay::replay_for_explorer(files, &options).expect("readable traces");
    let d = outcome.expect_err("a divergence");
    let state = format!("{:?}", context.last_state());
    (state, d.explorer.expect("an Explorer path"))
}

#[test]
fn replay_explore_serves_the_last_agreed_state_and_the_diverging_action() {
    let d = Dir::new("explore");
    // A state mismatch at step 3 (the put): the last agreed state is the
    // elected leader after step 2, and the put is an action offered there.
    let t = one_node_trace("c").replace("\"commit_index\":1", "\"commit_index\":0");
    let f = d.write("node-1.ndjson", &t);
    let (expected, path) = expected_last_state(&[&f]);
    assert_eq!(path.end, 2);
    assert!(
        expected.starts_with("n1 Leader t1 voted n1 log 0 (last term 0) commit 0 applied 0"),
        "{expected}"
    );
    let (action, offered) = path.next.clone().expect("the diverging action");
    assert!(offered, "{action}");

    // The report names the URL and the command that serves it.
    let o = raft_model(&["replay", &f]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains(&format!("http://127.0.0.1:3000/#/steps/{}", path.path)),
        "{out}"
    );
    assert!(
        out.contains(&format!("raft-model replay --explore --context 10 {f}")),
        "{out}"
    );
    assert!(out.contains("which the model offers there"), "{out}");

    let explorer = ReplayExplorer::start(&[&f]);
    assert_eq!(explorer.path, path.path, "{}", explorer.printed);
    assert!(
        explorer.printed.contains("DIVERGENCE at step 3"),
        "{}",
        explorer.printed
    );
    assert_eq!(explorer.last_state(), expected);
    let actions = explorer.offered();
    assert!(actions.contains(&action), "{action} not in {actions:?}");
    drop(explorer);

    // A timer that is not set (step 2 becomes a heartbeat timeout of a
    // follower): the last agreed state is the started follower, and the
    // timeout is not an action offered there.
    let t = one_node_trace("c").replacen("\"ElectionTimeout\"", "\"HeartbeatTimeout\"", 1);
    let f = d.write("node-1-heartbeat.ndjson", &t);
    let (expected, path) = expected_last_state(&[&f]);
    assert_eq!((path.start, path.end, path.path.as_str()), (0, 1, "0"));
    assert!(
        expected.starts_with("n1 Follower t0 voted - log 0 (last term 0) commit 0 applied 0"),
        "{expected}"
    );
    let (action, offered) = path.next.clone().expect("the diverging action");
    assert!(!offered, "{action}");
    let explorer = ReplayExplorer::start(&[&f]);
    assert!(
        explorer
            .printed
            .contains("which the model does not offer there"),
        "{}",
        explorer.printed
    );
    assert_eq!(explorer.last_state(), expected);
    let actions = explorer.offered();
    assert!(!actions.contains(&action), "{action} in {actions:?}");
    assert!(
        actions.iter().any(|a| a.contains("Election timeout")),
        "the election timeout is offered: {actions:?}"
    );
}

#[test]
fn replay_explore_on_a_clean_trace_serves_its_end() {
    let d = Dir::new("explore-clean");
    let f = d.write("node-1.ndjson", &one_node_trace("c"));
    let explorer = ReplayExplorer::start(&[&f]);
    assert!(
        explorer
            .printed
            .starts_with("OK: 3 steps of 1 servers replayed clean"),
        "{}",
        explorer.printed
    );
    assert!(
        explorer.printed.contains("path to the state after step 3"),
        "{}",
        explorer.printed
    );
    // Start, election, the put: the leader has appended, committed and
    // applied it.
    let last = explorer.last_state();
    assert!(
        last.starts_with("n1 Leader t1 voted n1 log 1 (last term 1) commit 1 applied 1"),
        "{last}"
    );
}

#[test]
fn replay_explore_on_a_busy_address_exits_2() {
    let d = Dir::new("explore-busy");
    let f = d.write("node-1.ndjson", &one_node_trace("c"));
    let busy = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = busy.local_addr().expect("addr").to_string();
    let o = raft_model(&["replay", "--explore", "--addr", &addr, &f]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("cannot listen"), "{}", text(&o));
    let o = raft_model(&["replay", "--explore", "--addr", "not-an-address", &f]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("--addr not-an-address"), "{}", text(&o));
}
