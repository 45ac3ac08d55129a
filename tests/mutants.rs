//! The mutation benchmark of the runtime: each mutation below is a bug that
//! Raft implementations have shipped, made in raft-node's own code (impl/
//! only, never spec/ or model/). For each, a copy of the workspace with the
//! mutation applied is built, and the mutant is caught either by raft-node's
//! own tests (a skipped fsync: the storage tests' power-loss model) or by
//! replaying the traces of a real three-process cluster that runs a fixed
//! schedule of writes, reads, a partition and `kill -9`s
//! ([`scenario`]), with the replayer of this (unmutated) workspace. The
//! schedule is built so that each class is caught whatever the timing: it
//! restarts a node that has truncated its log, one whose term is above its
//! last entry's term and that voted in that term, and reads back values.
//!
//! Run it with `scripts/mutants-impl` (about a minute per mutant on two
//! cores): it prints one line per mutant and the catch rate, and fails if a
//! mutant escapes or the unmutated binary does not replay clean. Not part of
//! the default suite (it builds every mutant).

use raft_model::replay::{replay, DivergenceKind, ReplayError};
use raft_node::client::ClientOptions;
use raft_node::cluster::{ClusterOptions, LocalCluster};
use raft_node::wire::StatusInfo;
use raft_spec::{KvCommand, LogIndex, NodeId};
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A mutation: in `file`, the one occurrence of `find` becomes `replace`.
struct Mutation {
    name: &'static str,
    /// What catches it: the replay of the scenario's traces, or a test
    /// command of raft-node.
    caught_by: Catcher,
    file: &'static str,
    find: &'static str,
    replace: &'static str,
}

#[derive(Clone, Copy)]
enum Catcher {
    Replay,
    /// `cargo test -p raft-node --lib <filter>` fails.
    NodeTests(&'static str),
}

const MUTATIONS: &[Mutation] = &[
    Mutation {
        name: "reply before commit (a write acknowledged when the leader appends it)",
        caught_by: Catcher::Replay,
        file: "impl/src/node.rs",
        find: "                    self.step(now, input, &mut batch)?;\n                }\n                Event::Status { conn } => {",
        replace: "                    self.step(now, input, &mut batch)?;\n                    if self.server.role() == Role::Leader {\n                        if let Some(conn) = self.pending.remove(&(client_id, request_no)) {\n                            batch.release.push(Release::Reply(conn, Response::Ok(None), Some((client_id, request_no))));\n                        }\n                    }\n                }\n                Event::Status { conn } => {",
    },
    Mutation {
        name: "wrong reply value (every answer says the key was absent)",
        caught_by: Catcher::Replay,
        file: "impl/src/node.rs",
        find: "ClientReply::Ok(output) => Response::Ok(output),",
        replace: "ClientReply::Ok(_) => Response::Ok(None),",
    },
    Mutation {
        name: "release before fsync (a batch's sends leave before its writes are durable)",
        caught_by: Catcher::Replay,
        file: "impl/src/node.rs",
        find: "        if batch.persisted {\n            self.storage.sync()?;",
        replace: "        if let Some((r, recorded)) = release.take() {\n            self.release(r, &recorded, io)?;\n        }\n        if batch.persisted {\n            self.storage.sync()?;",
    },
    Mutation {
        name: "term recovery (current_term recovered as the last entry's term)",
        caught_by: Catcher::Replay,
        file: "impl/src/storage.rs",
        find: "    Ok((state, recovery))\n}\n\nimpl<F: WalFile> Storage",
        replace: "    state.current_term = state.log.last_term();\n    Ok((state, recovery))\n}\n\nimpl<F: WalFile> Storage",
    },
    Mutation {
        name: "vote recovery (voted_for not recovered)",
        caught_by: Catcher::Replay,
        file: "impl/src/storage.rs",
        find: "    Ok((state, recovery))\n}\n\nimpl<F: WalFile> Storage",
        replace: "    state.voted_for = None;\n    Ok((state, recovery))\n}\n\nimpl<F: WalFile> Storage",
    },
    Mutation {
        name: "log recovery (the last entry lost on every restart)",
        caught_by: Catcher::Replay,
        file: "impl/src/storage.rs",
        find: "    Ok((state, recovery))\n}\n\nimpl<F: WalFile> Storage",
        replace: "    if !state.log.is_empty() {\n        let last = state.log.last_index();\n        state.log.truncate_from(last);\n    }\n    Ok((state, recovery))\n}\n\nimpl<F: WalFile> Storage",
    },
    Mutation {
        name: "truncation lost on recovery (a log write replayed as an append)",
        caught_by: Catcher::Replay,
        file: "impl/src/storage.rs",
        find: "                state.apply_persist(&persist);",
        replace: "                let mut persist = persist;\n                if let Some(w) = &mut persist.log {\n                    w.from = w.from.max(raft_spec::LogIndex(state.log.len() as u64 + 1));\n                }\n                state.apply_persist(&persist);",
    },
    Mutation {
        name: "sender id swapped (a peer's messages attributed to another peer)",
        caught_by: Catcher::Replay,
        file: "impl/src/transport.rs",
        find: "if events.send(Event::Peer { from: id, message }).is_err() {",
        replace: "if events.send(Event::Peer { from: NodeId(id.0 % 3 + 1), message }).is_err() {",
    },
    Mutation {
        name: "a step recorded but not taken (heartbeat timeouts never reach the server)",
        caught_by: Catcher::Replay,
        file: "impl/src/node.rs",
        find: "        let outputs = self.server.step(input);",
        replace: "        let outputs = if matches!(input, Input::HeartbeatTimeout) { Vec::new() } else { self.server.step(input) };",
    },
    Mutation {
        name: "skipped fsync (the WAL is written but never fdatasynced)",
        caught_by: Catcher::NodeTests("storage::"),
        file: "impl/src/storage.rs",
        find: "        if self.fsync {",
        replace: "        if self.fsync && self.buf.len() == usize::MAX {",
    },
];

/// The leader, waiting up to 10 s for one other than `not`.
fn leader(c: &LocalCluster, not: Option<NodeId>) -> Result<StatusInfo, String> {
    let start = Instant::now();
    loop {
        if let Some(l) = c.wait_for_leader(Duration::from_secs(10)) {
            if Some(l.id) != not {
                return Ok(l);
            }
        }
        if start.elapsed() > Duration::from_secs(10) {
            return Err(format!("no leader other than {not:?} within 10 s"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until every node runs and answers.
fn all_up(c: &LocalCluster) -> Result<(), String> {
    let start = Instant::now();
    while !c.status().into_iter().all(|(_, s)| s.is_ok()) {
        if start.elapsed() > Duration::from_secs(10) {
            return Err("a restarted node did not come back within 10 s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// The fixed schedule, on the cluster of `exe` recording into `dir`:
///
/// 1. writes, overwrites and reads through the first leader L1;
/// 2. L1 cut off from the others; a write sent to it appends an entry it
///    can never commit; the majority elects L2 and takes writes; healed,
///    L1 truncates that entry; L1 is killed (`kill -9`) and restarted: its
///    recovery must reflect the truncation;
/// 3. L2 killed; the third node elects L3 in a new term with no entry of
///    its own yet, with the vote of the other survivor, which is killed and
///    restarted (its term is above its last entry's and it voted in it);
/// 4. L2 restarted; writes and reads until every node has committed them.
///
/// Client errors (a mutant's wrong answers) are not failures here: the
/// replay judges. Returns whether the schedule ran to its end (a mutant
/// may stop it: no leader is elected), and the traces, which are read
/// either way, once the cluster is stopped.
fn scenario(exe: &Path, dir: &Path) -> (Result<(), String>, Result<Traces, String>) {
    let mut o = ClusterOptions::new(exe.to_path_buf(), dir.join("data"));
    o.trace_dir = Some(dir.join("traces"));
    o.test_control = true;
    let ran = match LocalCluster::start(o) {
        Ok(mut c) => schedule(&mut c),
        Err(e) => Err(format!("start: {e}")),
    };
    let traces = (1..=3)
        .map(|i| {
            let path = dir.join(format!("traces/node-{i}.ndjson"));
            std::fs::read_to_string(&path)
                .map(|t| (NodeId(i), t))
                .map_err(|e| format!("{}: {e}", path.display()))
        })
        .collect();
    (ran, traces)
}

/// The traces of a run, by node.
type Traces = BTreeMap<NodeId, String>;

/// The schedule of [`scenario`] on a running cluster (stopped when `c` is
/// dropped by the caller).
fn schedule(c: &mut LocalCluster) -> Result<(), String> {
    let mut client = c.client();
    let call = |c: &LocalCluster, prefer: Option<NodeId>, command: KvCommand| {
        let mut cl = c.client();
        if let Some(p) = prefer {
            cl.prefer(p);
        }
        let _ = cl.call(command);
    };
    let l1 = leader(c, None)?;
    for i in 0..3 {
        let _ = client.call(KvCommand::put(format!("a{i}"), "1"));
        let _ = client.call(KvCommand::put(format!("a{i}"), "2"));
        let _ = client.call(KvCommand::get(format!("a{i}")));
    }

    let others: Vec<NodeId> = c.peers().keys().copied().filter(|&n| n != l1.id).collect();
    let mut ctl = c.client();
    ctl.partition(l1.id, &others)
        .map_err(|e| format!("partition: {e}"))?;
    for &n in &others {
        ctl.partition(n, &[l1.id])
            .map_err(|e| format!("partition: {e}"))?;
    }
    let mut minority =
        ClientOptions::new([(l1.id, c.peers()[&l1.id].clone())].into_iter().collect());
    minority.timeout = Duration::from_millis(300);
    let _ = raft_node::client::Client::new(minority).call(KvCommand::put("lost", "x"));
    let l2 = leader(c, Some(l1.id))?;
    for i in 0..3 {
        call(c, Some(l2.id), KvCommand::put(format!("b{i}"), "1"));
    }
    for n in c.peers().keys() {
        ctl.partition(*n, &[]).map_err(|e| format!("heal: {e}"))?;
    }
    // L1 hears of L2's term and takes its entries in place of its own.
    let start = Instant::now();
    loop {
        let caught_up = c.status().into_iter().any(|(n, s)| {
            n == l1.id && s.is_ok_and(|s| s.commit_index >= LogIndex(10) && s.term >= l2.term)
        });
        if caught_up {
            break;
        }
        if start.elapsed() > Duration::from_secs(10) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    c.kill(l1.id).map_err(|e| format!("kill: {e}"))?;
    c.start_node(l1.id).map_err(|e| format!("restart: {e}"))?;
    all_up(c)?;

    let l2 = leader(c, None)?;
    c.kill(l2.id).map_err(|e| format!("kill: {e}"))?;
    let l3 = leader(c, Some(l2.id))?;
    let voter = c
        .peers()
        .keys()
        .copied()
        .find(|&n| n != l2.id && n != l3.id)
        .ok_or("no third node")?;
    c.kill(voter).map_err(|e| format!("kill: {e}"))?;
    c.start_node(voter).map_err(|e| format!("restart: {e}"))?;
    c.start_node(l2.id).map_err(|e| format!("restart: {e}"))?;
    all_up(c)?;
    for i in 0..3 {
        call(c, None, KvCommand::put(format!("c{i}"), "1"));
        call(c, None, KvCommand::get(format!("a{i}")));
    }
    std::thread::sleep(Duration::from_millis(300));
    Ok(())
}

/// The replay's verdict on the traces: `Ok(summary line)` or the
/// divergence, in one line.
fn verdict(traces: &BTreeMap<NodeId, String>) -> Result<String, String> {
    let inputs: Vec<(String, Box<dyn BufRead>)> = traces
        .iter()
        .map(|(id, t)| {
            (
                format!("node-{}.ndjson", id.0),
                Box::new(std::io::Cursor::new(t.clone().into_bytes())) as Box<dyn BufRead>,
            )
        })
        .collect();
    match replay(inputs) {
        Ok(s) => Ok(s.to_string()),
        Err(ReplayError::Divergence(d)) => {
            let kind = match &d.kind {
                DivergenceKind::NotEnabled { .. } => "not enabled",
                DivergenceKind::StateMismatch { .. } => "state mismatch",
                DivergenceKind::PropertyViolated { .. } => "property violated",
                DivergenceKind::OutOfSequence { .. } => "out of sequence",
                DivergenceKind::NotStarted => "not started",
                DivergenceKind::OutputMismatch { .. } => "output mismatch",
                DivergenceKind::ReleasedBeforeSynced => "released before synced",
                DivergenceKind::ReleaseMismatch { .. } => "release mismatch",
                DivergenceKind::HistoryViolated { .. } => "history violated",
                DivergenceKind::Internal { .. } => "internal",
            };
            let input: String = d.input.chars().take(60).collect();
            Err(format!("{kind} at {}:{} ({input})", d.file, d.line))
        }
        Err(e) => Err(format!("bad input: {e}")),
    }
}

/// The workspace's tracked files copied to `to` (what a clean checkout
/// holds).
fn copy_workspace(root: &Path, to: &Path) -> Result<(), String> {
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root)
        .output()
        .map_err(|e| format!("git ls-files: {e}"))?;
    for name in out.stdout.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let rel = Path::new(std::str::from_utf8(name).map_err(|e| e.to_string())?);
        let dst = to.join(rel);
        if let Some(parent) = dst.parent() {
            std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        std::fs::copy(root.join(rel), &dst).map_err(|e| format!("copy {}: {e}", rel.display()))?;
    }
    Ok(())
}

fn apply(tree: &Path, m: &Mutation, original: &str) -> Result<(), String> {
    let path = tree.join(m.file);
    if original.matches(m.find).count() != 1 {
        return Err(format!(
            "the mutation's text is not found exactly once in {}: the table is out of date",
            m.file
        ));
    }
    std::fs::write(&path, original.replacen(m.find, m.replace, 1)).map_err(|e| e.to_string())
}

fn cargo(tree: &Path, target: &Path, args: &[&str]) -> Result<bool, String> {
    let status = Command::new(env!("CARGO"))
        .args(args)
        .current_dir(tree)
        .env("CARGO_TARGET_DIR", target)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    Ok(status.success())
}

#[test]
#[allow(clippy::unwrap_used)]
#[ignore = "mutation benchmark, minutes per mutant: scripts/mutants-impl"]
fn every_runtime_mutation_is_caught() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let work = std::env::var_os("MUTANTS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("raft-mutants"));
    let tree = work.join("tree");
    let target = work.join("target");
    let _ = std::fs::remove_dir_all(&tree);
    copy_workspace(&root, &tree).unwrap();
    let exe = target
        .join("debug")
        .join(format!("raft-node{}", std::env::consts::EXE_SUFFIX));
    let build = ["build", "-p", "raft-node", "--bin", "raft-node"];

    // The control: the unmutated binary replays clean.
    assert!(
        cargo(&tree, &target, &build).unwrap(),
        "the unmutated build failed"
    );
    let run = tempfile::tempdir().unwrap();
    let (ran, clean) = scenario(&exe, run.path());
    ran.unwrap();
    match verdict(&clean.unwrap()) {
        Ok(summary) => println!("unmutated: {summary}"),
        Err(d) => panic!("the unmutated binary does not replay clean: {d}"),
    }

    let mut caught = 0;
    let mut escaped = Vec::new();
    for m in MUTATIONS {
        let started = Instant::now();
        let original = std::fs::read_to_string(tree.join(m.file)).unwrap();
        apply(&tree, m, &original).unwrap();
        let outcome: Result<String, String> = match m.caught_by {
            Catcher::NodeTests(filter) => {
                let args = ["test", "-p", "raft-node", "--lib", "--", filter];
                match cargo(&tree, &target, &args) {
                    Ok(false) => Ok(format!("raft-node's tests ({filter}) fail")),
                    Ok(true) => Err("raft-node's tests pass".into()),
                    Err(e) => Err(e),
                }
            }
            Catcher::Replay => match cargo(&tree, &target, &build) {
                Ok(true) => {
                    // Caught only if the replay diverges: a schedule the
                    // mutant stopped is noted, not counted.
                    let run = tempfile::tempdir().unwrap();
                    let (ran, traces) = scenario(&exe, run.path());
                    let stopped = ran.err().map(|e| format!(" (the schedule stopped: {e})"));
                    match traces.map(|t| verdict(&t)) {
                        Ok(Err(d)) => Ok(format!("replay: {d}{}", stopped.unwrap_or_default())),
                        Ok(Ok(summary)) => Err(format!(
                            "replays clean: {summary}{}",
                            stopped.unwrap_or_default()
                        )),
                        Err(e) => Err(format!("no traces: {e}")),
                    }
                }
                Ok(false) => Err("the mutant does not build".into()),
                Err(e) => Err(e),
            },
        };
        std::fs::write(tree.join(m.file), &original).unwrap();
        let secs = started.elapsed().as_secs();
        match outcome {
            Ok(how) => {
                caught += 1;
                println!("CAUGHT  {:<80} {how} [{secs} s]", m.name);
            }
            Err(why) => {
                println!("MISSED  {:<80} {why} [{secs} s]", m.name);
                escaped.push(m.name);
            }
        }
    }
    println!(
        "caught {caught} of {} runtime mutations ({:.0} %)",
        MUTATIONS.len(),
        100.0 * caught as f64 / MUTATIONS.len() as f64
    );
    assert!(escaped.is_empty(), "escaped: {escaped:?}");
}
