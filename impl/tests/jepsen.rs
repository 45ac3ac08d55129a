//! The Jepsen-style suite on real processes: a short run under every kind of
//! fault must be linearizable with nothing acknowledged lost, and the
//! history checker, given the run's own history tampered with, must fail.

#![allow(clippy::unwrap_used)]

use raft_node::jepsen::history::{read_history_file, HistoryWriter, Op, Outcome};
use raft_node::jepsen::nemesis::Nemesis;
use raft_node::jepsen::run::{self, JepsenOptions};
use raft_spec::KvCommand;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const EXE: &str = env!("CARGO_BIN_EXE_raft-node");

fn check_history(path: &Path) -> (Option<i32>, String) {
    let out = Command::new(EXE)
        .arg("check-history")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

fn write(path: &Path, ops: &[Op]) {
    let mut w = HistoryWriter::new(std::fs::File::create(path).unwrap());
    for op in ops {
        w.write(op).unwrap();
    }
    w.flush().unwrap();
}

/// The index of the first answered operation after `from` matching `f`.
fn find(ops: &[Op], from: usize, f: impl Fn(&Op) -> bool) -> usize {
    (from..ops.len())
        .find(|&i| matches!(ops[i].outcome, Outcome::Ok(_)) && f(&ops[i]))
        .expect("such an operation in the history")
}

#[test]
fn a_run_under_mixed_faults_is_linearizable_and_tampering_is_caught() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = JepsenOptions::new(PathBuf::from(EXE), dir.path().join("data"));
    o.history = dir.path().join("history.ndjson");
    o.time = Duration::from_secs(20);
    o.nemesis = Nemesis::Mixed;
    o.fault_interval = Duration::from_millis(1_500);
    let report = run::run(&o).unwrap();
    println!("{report}");
    assert!(report.passed(), "{report}");
    for kind in ["kill", "pause", "partition"] {
        assert!(
            report.faults.get(kind).copied().unwrap_or(0) >= 1,
            "{report}"
        );
    }
    assert!(report.ok > 1_000, "{report}");

    // The history on disk is the one checked, and the command agrees.
    let ops = read_history_file(&o.history).unwrap();
    assert_eq!(ops.len(), report.ops);
    let (code, out) = check_history(&o.history);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("linearizable"), "{out}");

    // Negative controls, each on a copy of the real history.
    let tampered = dir.path().join("tampered.ndjson");
    let late = ops.len() / 2;
    // A stale read: a get answered with the value its key held before the
    // write it must see.
    {
        let mut t = ops.clone();
        let i = find(&t, late, |op| {
            matches!(
                (&op.command, &op.outcome),
                (KvCommand::Put { .. }, Outcome::Ok(Some(_)))
            )
        });
        let (key, old) = match (&t[i].command, &t[i].outcome) {
            (KvCommand::Put { key, .. }, Outcome::Ok(Some(old))) => (key.clone(), old.clone()),
            _ => unreachable!("find matched a put with a previous value"),
        };
        let after = t[i].complete_ns;
        let j = find(&t, i + 1, |op| {
            op.invoke_ns > after && matches!(&op.command, KvCommand::Get { key: k } if *k == key)
        });
        t[j].outcome = Outcome::Ok(Some(old));
        write(&tampered, &t);
        let (code, out) = check_history(&tampered);
        assert_eq!(code, Some(1), "stale read not caught: {out}");
        assert!(out.contains("not linearizable"), "{out}");
    }
    // A lost write: every later answer on its key reads as if an
    // acknowledged put never happened.
    {
        let mut t = ops.clone();
        let seen_later = |i: usize, value: &str| {
            t[i + 1..]
                .iter()
                .any(|op| matches!(&op.outcome, Outcome::Ok(Some(v)) if v == value))
        };
        let i = find(&t, late, |op| matches!(op.command, KvCommand::Put { .. }));
        let i = (i..t.len())
            .find(|&i| match (&t[i].command, &t[i].outcome) {
                (KvCommand::Put { value, .. }, Outcome::Ok(_)) => seen_later(i, value),
                _ => false,
            })
            .expect("an acknowledged put whose value is read later");
        let (value, before) = match (&t[i].command, &t[i].outcome) {
            (KvCommand::Put { value, .. }, Outcome::Ok(before)) => (value.clone(), before.clone()),
            _ => unreachable!("matched an answered put"),
        };
        for op in &mut t[i + 1..] {
            if let Outcome::Ok(Some(v)) = &op.outcome {
                if *v == value {
                    op.outcome = Outcome::Ok(before.clone());
                }
            }
        }
        write(&tampered, &t);
        let (code, out) = check_history(&tampered);
        assert_eq!(code, Some(1), "lost write not caught: {out}");
    }
    // A wrong previous value.
    {
        let mut t = ops.clone();
        let i = find(&t, late, |op| {
            matches!(
                (&op.command, &op.outcome),
                (KvCommand::Put { .. }, Outcome::Ok(Some(_)))
            )
        });
        t[i].outcome = Outcome::Ok(Some("never-written".into()));
        write(&tampered, &t);
        let (code, out) = check_history(&tampered);
        assert_eq!(code, Some(1), "wrong previous value not caught: {out}");
    }
    // A malformed history is an error naming the line.
    std::fs::write(&tampered, "{\"id\":0}\n").unwrap();
    let (code, out) = check_history(&tampered);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("line 1"), "{out}");
}
