//! The `raft-model` command line: exit statuses and what it prints.

mod common;

use common::PAPER_PROPERTIES;
use std::process::{Command, Output};

fn raft_model(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_raft-model"))
        .args(args)
        .output()
        .expect("run raft-model")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn check_passes_and_reports_every_property() {
    let o = check_without_crash("2", "2", "1", &[]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(
        out.contains("servers=2 max_term=2 requests=1 crashes=0"),
        "{out}"
    );
    assert!(out.contains("Completed after"), "{out}");
    assert!(out.contains("unique states=321 "), "{out}");
    for name in PAPER_PROPERTIES {
        assert!(
            out.lines().any(|l| l.contains(name) && l.ends_with("held")),
            "{name}: {out}"
        );
    }
    assert!(out.contains("peak memory="), "{out}");
}

#[test]
fn missing_example_exits_1() {
    // With no client request nothing is ever committed: the "an entry is
    // committed" example cannot be found, which is a failed check.
    let o = raft_model(&[
        "check",
        "--servers",
        "2",
        "--max-term",
        "1",
        "--requests",
        "0",
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("NOT FOUND"), "{}", stdout(&o));
}

#[test]
fn bad_arguments_exit_2_naming_the_flag() {
    for (args, flag) in [
        (vec!["check", "--servers", "0"], "--servers"),
        (vec!["check", "--servers", "6"], "--servers"),
        (vec!["check", "--max-term", "0"], "--max-term"),
        (vec!["check", "--network", "carrier-pigeon"], "--network"),
        (vec!["check", "--threads", "0"], "--threads"),
        (vec!["check", "--time-limit", "0"], "--time-limit"),
        (vec!["check", "--time-limit", "soon"], "--time-limit"),
        (vec!["check", "--strategy", "random"], "--strategy"),
        (vec!["check", "--servers", "three"], "--servers"),
        (vec!["explore", "--addr", "not-an-address"], "--addr"),
        (
            vec!["check", "--max-append-entries", "0"],
            "--max-append-entries",
        ),
        (
            vec!["check", "--max-append-entries", "all"],
            "--max-append-entries",
        ),
    ] {
        let o = raft_model(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(flag), "{args:?}: {}", stderr(&o));
    }
}

/// A search cut short by `--time-limit` says so, prints how far it got, claims
/// no property held, and exits 1; one that ends within its limit is complete.
#[test]
fn time_limit_reports_how_far_the_search_got() {
    // (a): 229,674 states, several seconds depth-first.
    let o = check_without_crash("3", "2", "1", &["--strategy", "dfs", "--time-limit", "1"]);
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("time_limit=1s"), "{out}");
    let summary = out
        .lines()
        .find(|l| l.starts_with("INCOMPLETE (stopped at the time limit of 1 s) after "))
        .unwrap_or_else(|| panic!("no INCOMPLETE line: {out}"));
    let unique: usize = summary
        .split("unique states=")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no unique count: {summary}"));
    assert!(unique > 0 && unique < 229_674, "{summary}");
    assert!(summary.contains("bytes per unique state"), "{summary}");
    assert!(
        out.lines().any(|l| l.contains("Election Safety")
            && l.ends_with("no counterexample among the states explored")),
        "{out}"
    );
    assert!(!out.lines().any(|l| l.ends_with(" held")), "{out}");

    let o = raft_model(&["check", "--time-limit", "600"]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("Completed after"), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("unique states=10832 "),
        "{}",
        stdout(&o)
    );
}

/// `raft-model check` on `servers` servers, `max_term` terms, `requests`
/// requests and no crash, with `extra` flags.
fn check_without_crash(servers: &str, max_term: &str, requests: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "check",
        "--servers",
        servers,
        "--max-term",
        max_term,
        "--requests",
        requests,
        "--crashes",
        "0",
    ];
    args.extend_from_slice(extra);
    raft_model(&args)
}

/// `raft-model check` on 3 servers, 1 term, `requests` requests, no crash,
/// with `extra` flags.
fn check_three_servers_one_term(requests: &str, extra: &[&str]) -> Output {
    check_without_crash("3", "1", requests, extra)
}

#[test]
fn symmetry_with_dfs_runs() {
    let o =
        check_three_servers_one_term("1", &["--strategy", "dfs", "--symmetry", "--threads", "1"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(stdout(&o).contains("unique states=312 "), "{}", stdout(&o));
}

#[test]
fn symmetry_with_bfs_runs() {
    let o = check_three_servers_one_term("1", &["--symmetry"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("strategy=bfs symmetry=true"),
        "{}",
        stdout(&o)
    );
    assert!(stdout(&o).contains("unique states=314 "), "{}", stdout(&o));
}

#[test]
fn bug_runs_reduce_by_symmetry_unless_told_not_to() {
    for (extra, symmetry) in [(None, "true"), (Some("--no-symmetry"), "false")] {
        let mut args = vec!["check", "--bug", "match-index-regress"];
        args.extend(extra);
        let o = raft_model(&args);
        assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
        assert!(
            stdout(&o).contains(&format!("strategy=bfs symmetry={symmetry}")),
            "{}",
            stdout(&o)
        );
        assert!(
            stdout(&o)
                .lines()
                .any(|l| l.contains("Match Index Monotonic") && l.contains("VIOLATED (8 steps)")),
            "{}",
            stdout(&o)
        );
    }
}

#[test]
fn replication_options_are_printed_and_checked() {
    let o = check_three_servers_one_term("2", &["--max-append-entries", "1", "--empty-heartbeats"]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("max_append_entries=1 empty_heartbeats"),
        "{out}"
    );
    assert!(out.contains("unique states=23363 "), "{out}");
}

#[test]
fn commit_without_min_is_caught_with_empty_heartbeats() {
    let o = raft_model(&["bugs"]);
    assert_eq!(o.status.code(), Some(0));
    let out = stdout(&o);
    assert!(
        out.lines()
            .any(|l| l
                .contains("--servers 3 --max-term 2 --requests 1 --crashes 0 --empty-heartbeats")),
        "{out}"
    );
    let o = raft_model(&["check", "--bug", "commit-without-min"]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let out = stdout(&o);
    assert!(
        out.contains("Counterexample to \"State Machine Safety\""),
        "{out}"
    );
    assert!(out.contains("   12. "), "{out}");
    assert!(!out.contains("   13. "), "{out}");
}
