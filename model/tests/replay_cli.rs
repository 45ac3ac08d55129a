//! `raft-model replay`: exit statuses and messages, on traces written here
//! through `raft-spec` (the end-to-end suites with raft-node's traces are in
//! the workspace's tests/replay.rs).

use raft_spec::trace::{Header, LogDigest, Step, TraceInput};
use raft_spec::{ClientId, Input, Kv, KvCommand, NodeId, Output, Server};
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
    let mut out = serde_json::to_string(&header).expect("header") + "\n";
    let (mut server, _) = Server::<Kv>::new(NodeId(1), vec![]);
    let mut digest = LogDigest::default();
    let mut line = |s: &Step<KvCommand>| {
        out.push_str(&serde_json::to_string(s).expect("step"));
        out.push('\n');
    };
    line(&Step::after(1, TraceInput::Restart, &server, &digest));
    let inputs = [
        Input::ElectionTimeout,
        Input::ClientRequest {
            client_id: ClientId(9),
            request_no: 1,
            command: KvCommand::Put {
                key: "k".into(),
                value: "v".into(),
            },
        },
    ];
    for (i, input) in inputs.into_iter().enumerate() {
        for o in server.step(input.clone()) {
            if let Output::Persist(p) = o {
                if let Some(w) = &p.log {
                    digest.apply(w);
                }
            }
        }
        line(&Step::after(i as u64 + 2, input.into(), &server, &digest));
    }
    out
}

#[test]
fn a_clean_trace_exits_0_with_the_figures() {
    let d = Dir::new("clean");
    let f = d.write("node-1.ndjson", &one_node_trace("c"));
    let o = raft_model(&["replay", &f]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let out = text(&o);
    assert!(
        out.contains("OK: 3 steps of 1 servers replayed clean (terms up to 1, 1 entries committed, 0 restarts)"),
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
        out.contains(&format!("DIVERGENCE at step 3 ({f}:4), server 1")),
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
            "truncated",
            format!("{}\n{}\n{}", lines[0], lines[1], &lines[2][..20]),
            ":3: malformed trace line".into(),
        ),
        (
            "invalid-json",
            format!("{}\n{}\n{{nope\n{}\n", lines[0], lines[1], lines[3]),
            ":3: malformed trace line".into(),
        ),
        (
            "version",
            good.replace("\"version\":1", "\"version\":9"),
            ":1: bad trace header: version 9, this reader reads 1".into(),
        ),
        (
            "foreign-step",
            good.replace("\"server\":1,", "\"server\":2,"),
            ":2: a step of server 2 in the trace recorded by server 1".into(),
        ),
    ];
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
