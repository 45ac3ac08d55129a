use super::*;

fn op(id: u64, command: KvCommand, outcome: Outcome) -> Op {
    Op {
        id,
        client: id % 3,
        command,
        invoke_ns: 1_000 * id,
        complete_ns: 1_000 * id + 700,
        outcome,
    }
}

/// One op of every shape: each command, each outcome, `None` and `Some`
/// outputs, and strings that need escaping.
fn every_shape() -> Vec<Op> {
    vec![
        op(1, KvCommand::put("k1", "v1"), Outcome::Ok(None)),
        op(
            2,
            KvCommand::put("k1", "v \"2\"\n"),
            Outcome::Ok(Some("v1".into())),
        ),
        op(
            3,
            KvCommand::get("k1"),
            Outcome::Ok(Some("v \"2\"\n".into())),
        ),
        op(4, KvCommand::get("k2"), Outcome::Ok(None)),
        op(
            5,
            KvCommand::Delete { key: "k1".into() },
            Outcome::Ok(Some("v \"2\"\n".into())),
        ),
        op(6, KvCommand::Delete { key: "k2".into() }, Outcome::Unknown),
        op(7, KvCommand::put("k2", "v7"), Outcome::Unknown),
        op(8, KvCommand::get("k2"), Outcome::Unknown),
    ]
}

fn write_all(ops: &[Op]) -> String {
    let mut writer = HistoryWriter::new(Vec::new());
    for op in ops {
        writer.write(op).unwrap();
    }
    writer.flush().unwrap();
    String::from_utf8(writer.into_inner()).unwrap()
}

#[test]
fn a_written_history_reads_back_equal() {
    let ops = every_shape();
    let text = write_all(&ops);
    assert_eq!(text.lines().count(), ops.len());
    assert_eq!(read_history(text.as_bytes()).unwrap(), ops);
}

#[test]
fn lines_are_flat_objects_with_output_only_when_ok() {
    let text = write_all(&every_shape());
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[1],
        r#"{"id":2,"client":2,"f":"put","key":"k1","value":"v \"2\"\n","invoke_ns":2000,"complete_ns":2700,"outcome":"ok","output":"v1"}"#
    );
    assert_eq!(
        lines[3],
        r#"{"id":4,"client":1,"f":"get","key":"k2","invoke_ns":4000,"complete_ns":4700,"outcome":"ok","output":null}"#
    );
    assert_eq!(
        lines[5],
        r#"{"id":6,"client":0,"f":"delete","key":"k2","invoke_ns":6000,"complete_ns":6700,"outcome":"unknown"}"#
    );
}

#[test]
fn blank_lines_are_skipped() {
    let ops = every_shape();
    let text = write_all(&ops).replace('\n', "\n\n  \n");
    assert_eq!(read_history(format!("\n{text}").as_bytes()).unwrap(), ops);
}

const GOOD: &str = r#"{"id":1,"client":1,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null}"#;

/// Reads `GOOD`, a blank line, then `bad` (so on line 3) and returns the
/// error's message.
fn error_on_third_line(bad: &str) -> HistoryError {
    let text = format!("{GOOD}\n\n{bad}\n{GOOD}\n");
    read_history(text.as_bytes()).unwrap_err()
}

#[test]
fn malformed_lines_are_errors_that_name_the_line() {
    let cases: &[(&str, &str)] = &[
        ("{\"id\":2,", "line 3, column 8: EOF while parsing a value"),
        (
            r#" [2,1,"get","k",null,1,2,"ok",null]"#,
            "line 3, column 2: expected a JSON object",
        ),
        ("\"get\"", "line 3, column 1: expected a JSON object"),
        (
            r#"{"id":2,"client":1,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null} x"#,
            "line 3, column 100: trailing characters",
        ),
        (
            r#"{"id":2,"client":1,"f":"cas","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null}"#,
            r#"line 3: unknown "f" "cas" (expected "put", "get" or "delete")"#,
        ),
        (
            r#"{"id":2,"client":1,"f":"put","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null}"#,
            r#"line 3: op 2 is a put without a "value""#,
        ),
        (
            r#"{"id":2,"client":1,"f":"get","key":"k","value":"v","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null}"#,
            r#"line 3: op 2 is a get but has a "value" (only a put has one)"#,
        ),
        (
            r#"{"id":2,"client":1,"f":"get","key":"k","invoke_ns":5,"complete_ns":4,"outcome":"ok","output":null}"#,
            "line 3: op 2 completes at 4 ns, before it is invoked at 5 ns",
        ),
        (
            r#"{"id":1,"client":2,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null}"#,
            "line 3: op id 1 already appears on line 1",
        ),
        (
            r#"{"id":2,"client":1,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok"}"#,
            r#"line 3: op 2 is ok but has no "output" (use null for None)"#,
        ),
        (
            r#"{"id":2,"client":1,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"unknown","output":null}"#,
            r#"line 3: op 2 has outcome unknown but an "output""#,
        ),
        (
            r#"{"id":2,"client":1,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"fail"}"#,
            r#"line 3: unknown "outcome" "fail" (expected "ok" or "unknown")"#,
        ),
        (
            r#"{"id":2,"client":1,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","ouput":null}"#,
            "line 3, column 91: unknown field `ouput`, expected one of",
        ),
        (
            r#"{"id":-2,"client":1,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null}"#,
            "line 3, column 8: invalid value: integer `-2`, expected u64",
        ),
        (
            r#"{"id":2,"f":"get","key":"k","invoke_ns":1,"complete_ns":2,"outcome":"ok","output":null}"#,
            "line 3, column 87: missing field `client`",
        ),
    ];
    for (bad, expected) in cases {
        let message = error_on_third_line(bad).to_string();
        assert!(
            message.starts_with(expected),
            "{bad}\n gave {message:?}\n expected it to start with {expected:?}"
        );
    }
}

#[test]
fn invalid_utf8_is_an_error_naming_the_line() {
    let mut text = format!("{GOOD}\n").into_bytes();
    text.extend_from_slice(b"\xff\xfe\n");
    let error = read_history(text.as_slice()).unwrap_err();
    assert!(matches!(error, HistoryError::Io { line: 2, .. }), "{error}");
}

#[test]
fn a_history_file_reads_back_and_its_errors_name_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("history.ndjson");
    let ops = every_shape();
    std::fs::write(&path, write_all(&ops)).unwrap();
    assert_eq!(read_history_file(&path).unwrap(), ops);

    std::fs::write(&path, format!("{GOOD}\n{{not json\n")).unwrap();
    let message = read_history_file(&path).unwrap_err().to_string();
    let expected = format!(
        "history file {}: line 2, column 2: key must be a string",
        path.display()
    );
    assert!(message.starts_with(&expected), "{message}");

    let missing = dir.path().join("missing.ndjson");
    let message = read_history_file(&missing).unwrap_err().to_string();
    assert!(
        message.starts_with(&format!("history file {}: ", missing.display())),
        "{message}"
    );
}

#[test]
fn ops_display_their_command_output_and_interval() {
    let ops = every_shape();
    assert_eq!(
        ops[1].to_string(),
        "op 2 put k1=v \"2\"\n -> v1 [0.002000 ms, 0.002700 ms]"
    );
    assert_eq!(
        ops[3].to_string(),
        "op 4 get k2 -> None [0.004000 ms, 0.004700 ms]"
    );
    assert_eq!(
        ops[6].to_string(),
        "op 7 put k2=v7 -> ? [0.007000 ms, 0.007700 ms]"
    );
}

#[test]
fn the_module_docs_example_lines_read_as_documented() {
    let text = r#"{"id":7,"client":2,"f":"put","key":"k1","value":"v2-7","invoke_ns":1200,"complete_ns":1900,"outcome":"ok","output":"v1-3"}
{"id":8,"client":3,"f":"get","key":"k1","invoke_ns":1250,"complete_ns":2100,"outcome":"ok","output":null}
{"id":9,"client":1,"f":"delete","key":"k2","invoke_ns":1300,"complete_ns":9000,"outcome":"unknown"}
"#;
    let expected = vec![
        Op {
            id: 7,
            client: 2,
            command: KvCommand::put("k1", "v2-7"),
            invoke_ns: 1200,
            complete_ns: 1900,
            outcome: Outcome::Ok(Some("v1-3".into())),
        },
        Op {
            id: 8,
            client: 3,
            command: KvCommand::get("k1"),
            invoke_ns: 1250,
            complete_ns: 2100,
            outcome: Outcome::Ok(None),
        },
        Op {
            id: 9,
            client: 1,
            command: KvCommand::Delete { key: "k2".into() },
            invoke_ns: 1300,
            complete_ns: 9000,
            outcome: Outcome::Unknown,
        },
    ];
    assert_eq!(read_history(text.as_bytes()).unwrap(), expected);
    assert_eq!(write_all(&expected), text);
}
