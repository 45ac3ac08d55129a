//! The history of a Jepsen-style run: every operation the clients issued, with
//! its interval of real time and how it ended, stored as NDJSON (one
//! operation a line).
//!
//! ```text
//! clients ──► Op { id, client, command, invoke_ns, complete_ns, outcome }
//!               │ HistoryWriter::write (one JSON object a line)
//!               ▼
//!        history.ndjson ──► read_history (validated) ──► check::check
//! ```
//!
//! A line is a flat object, e.g.
//!
//! ```text
//! {"id":7,"client":2,"f":"put","key":"k1","value":"v2-7","invoke_ns":1200,"complete_ns":1900,"outcome":"ok","output":"v1-3"}
//! {"id":8,"client":3,"f":"get","key":"k1","invoke_ns":1250,"complete_ns":2100,"outcome":"ok","output":null}
//! {"id":9,"client":1,"f":"delete","key":"k2","invoke_ns":1300,"complete_ns":9000,"outcome":"unknown"}
//! ```
//!
//! `f` is `put`, `get` or `delete`; `value` is present for a put only;
//! `output` is present (a string, or `null` for `None`) exactly when
//! `outcome` is `ok`. No other field is accepted: a misspelt field is an
//! error, not a silently missing one.

use raft_spec::{KvCommand, KvOutput};
use serde::{Deserialize, Deserializer, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// How an operation ended.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The cluster answered with this output.
    Ok(KvOutput),
    /// No answer (timeout, connection lost): the command may or may not have
    /// been applied, possibly later.
    Unknown,
}

/// One operation of a history: a client's command, when it was sent, when
/// the client stopped waiting for it, and what came back.
///
/// Invariant (checked by [`read_history`]): `invoke_ns <= complete_ns`.
///
/// It has no serde implementation of its own: its one serialized form is the
/// history line ([`HistoryWriter`], [`read_history`]).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Op {
    /// Unique in a history.
    pub id: u64,
    /// The client (process) that issued it; a client has one operation in
    /// flight at a time.
    pub client: u64,
    /// The command sent.
    pub command: KvCommand,
    /// Nanoseconds since the run started, when the client sent it.
    pub invoke_ns: u64,
    /// When the answer arrived, or when the client gave up ([`Outcome::Unknown`]).
    pub complete_ns: u64,
    /// How it ended.
    pub outcome: Outcome,
}

impl fmt::Display for Op {
    /// `op 7 put k1=v2-7 -> v1-3 [0.001 ms, 0.002 ms]`; an unknown outcome
    /// shows as `-> ?`, an absent value as `None`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "op {} {} -> ", self.id, self.command)?;
        match &self.outcome {
            Outcome::Ok(output) => write!(f, "{}", DisplayValue(output.as_deref()))?,
            Outcome::Unknown => write!(f, "?")?,
        }
        write!(
            f,
            " [{}, {}]",
            DisplayNs(self.invoke_ns),
            DisplayNs(self.complete_ns)
        )
    }
}

/// Shows a register value: the string itself, or `None`.
pub(crate) struct DisplayValue<'a>(pub(crate) Option<&'a str>);

impl fmt::Display for DisplayValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(value) => f.write_str(value),
            None => f.write_str("None"),
        }
    }
}

/// Shows nanoseconds since the start of the run as milliseconds.
pub(crate) struct DisplayNs(pub(crate) u64);

impl fmt::Display for DisplayNs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:06} ms", self.0 / 1_000_000, self.0 % 1_000_000)
    }
}

/// A history file that cannot be read. Line numbers are 1-based.
#[derive(Debug, Error)]
pub enum HistoryError {
    /// Reading the input failed.
    #[error("line {line}: cannot read: {source}")]
    Io {
        /// The line being read.
        line: usize,
        /// The underlying error.
        source: io::Error,
    },
    /// The line is not a JSON object of the expected shape (bad JSON, a
    /// missing or unknown field, a value of the wrong type).
    #[error("line {line}, column {column}: {message}")]
    Json {
        /// The line.
        line: usize,
        /// The 1-based column where serde_json stopped.
        column: usize,
        /// What serde_json found.
        message: String,
    },
    /// `f` is not `put`, `get` or `delete`.
    #[error("line {line}: unknown \"f\" {f:?} (expected \"put\", \"get\" or \"delete\")")]
    UnknownFunction {
        /// The line.
        line: usize,
        /// The `f` found.
        f: String,
    },
    /// A put without a `value`.
    #[error("line {line}: op {id} is a put without a \"value\"")]
    MissingValue {
        /// The line.
        line: usize,
        /// The operation's id.
        id: u64,
    },
    /// A get or delete with a `value`.
    #[error("line {line}: op {id} is a {f} but has a \"value\" (only a put has one)")]
    UnexpectedValue {
        /// The line.
        line: usize,
        /// The operation's id.
        id: u64,
        /// Its `f`.
        f: &'static str,
    },
    /// `outcome` is not `ok` or `unknown`.
    #[error("line {line}: unknown \"outcome\" {outcome:?} (expected \"ok\" or \"unknown\")")]
    UnknownOutcome {
        /// The line.
        line: usize,
        /// The outcome found.
        outcome: String,
    },
    /// An `ok` operation without `output` (write `"output":null` for `None`).
    #[error("line {line}: op {id} is ok but has no \"output\" (use null for None)")]
    MissingOutput {
        /// The line.
        line: usize,
        /// The operation's id.
        id: u64,
    },
    /// An `unknown` operation with an `output`.
    #[error("line {line}: op {id} has outcome unknown but an \"output\"")]
    UnexpectedOutput {
        /// The line.
        line: usize,
        /// The operation's id.
        id: u64,
    },
    /// `complete_ns < invoke_ns`.
    #[error("line {line}: op {id} completes at {complete_ns} ns, before it is invoked at {invoke_ns} ns")]
    CompleteBeforeInvoke {
        /// The line.
        line: usize,
        /// The operation's id.
        id: u64,
        /// Its invocation time.
        invoke_ns: u64,
        /// Its completion time.
        complete_ns: u64,
    },
    /// Two operations share an id.
    #[error("line {line}: op id {id} already appears on line {first_line}")]
    DuplicateId {
        /// The second line with the id.
        line: usize,
        /// The id.
        id: u64,
        /// The first line with it.
        first_line: usize,
    },
    /// The history file cannot be opened.
    #[error("history file {}: {source}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// An error in the named history file.
    #[error("history file {}: {source}", path.display())]
    InFile {
        /// The file.
        path: PathBuf,
        /// The error, naming the line.
        source: Box<HistoryError>,
    },
}

/// The `f` field: which command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Function {
    Put,
    Get,
    Delete,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::Put => "put",
            Function::Get => "get",
            Function::Delete => "delete",
        }
    }

    fn parse(f: &str) -> Option<Function> {
        match f {
            "put" => Some(Function::Put),
            "get" => Some(Function::Get),
            "delete" => Some(Function::Delete),
            _ => None,
        }
    }
}

/// A line as written: borrows from the [`Op`]. Field order is the order on
/// the line.
#[derive(Serialize)]
struct LineOut<'a> {
    id: u64,
    client: u64,
    f: &'static str,
    key: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<&'a str>,
    invoke_ns: u64,
    complete_ns: u64,
    outcome: &'static str,
    /// `None`: no field (unknown outcome); `Some(None)`: `null`.
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Option<&'a str>>,
}

/// A line as read, before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LineIn {
    id: u64,
    client: u64,
    f: String,
    key: String,
    #[serde(default)]
    value: Option<String>,
    invoke_ns: u64,
    complete_ns: u64,
    outcome: String,
    /// `None`: the field is absent; `Some(None)`: it is `null`.
    #[serde(default, deserialize_with = "present")]
    output: Option<Option<String>>,
}

/// Deserializes a field that is present (possibly `null`) as `Some`, so that
/// `#[serde(default)]` leaves `None` for an absent one.
fn present<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<String>>, D::Error> {
    Option::<String>::deserialize(d).map(Some)
}

impl<'a> LineOut<'a> {
    fn new(op: &'a Op) -> Self {
        let (f, key, value) = match &op.command {
            KvCommand::Put { key, value } => (Function::Put, key, Some(value.as_str())),
            KvCommand::Get { key } => (Function::Get, key, None),
            KvCommand::Delete { key } => (Function::Delete, key, None),
        };
        let (outcome, output) = match &op.outcome {
            Outcome::Ok(output) => ("ok", Some(output.as_deref())),
            Outcome::Unknown => ("unknown", None),
        };
        LineOut {
            id: op.id,
            client: op.client,
            f: f.name(),
            key,
            value,
            invoke_ns: op.invoke_ns,
            complete_ns: op.complete_ns,
            outcome,
            output,
        }
    }
}

impl LineIn {
    /// Validates the line (except for duplicate ids, which need the whole
    /// history) and turns it into an [`Op`].
    fn into_op(self, line: usize) -> Result<Op, HistoryError> {
        let id = self.id;
        let f =
            Function::parse(&self.f).ok_or(HistoryError::UnknownFunction { line, f: self.f })?;
        let command = match (f, self.value) {
            (Function::Put, Some(value)) => KvCommand::Put {
                key: self.key,
                value: value.into(),
            },
            (Function::Put, None) => return Err(HistoryError::MissingValue { line, id }),
            (Function::Get, None) => KvCommand::Get { key: self.key },
            (Function::Delete, None) => KvCommand::Delete { key: self.key },
            (Function::Get | Function::Delete, Some(_)) => {
                return Err(HistoryError::UnexpectedValue {
                    line,
                    id,
                    f: f.name(),
                })
            }
        };
        let outcome = match (self.outcome.as_str(), self.output) {
            ("ok", Some(output)) => Outcome::Ok(output.map(Into::into)),
            ("ok", None) => return Err(HistoryError::MissingOutput { line, id }),
            ("unknown", None) => Outcome::Unknown,
            ("unknown", Some(_)) => return Err(HistoryError::UnexpectedOutput { line, id }),
            _ => {
                return Err(HistoryError::UnknownOutcome {
                    line,
                    outcome: self.outcome,
                })
            }
        };
        if self.complete_ns < self.invoke_ns {
            return Err(HistoryError::CompleteBeforeInvoke {
                line,
                id,
                invoke_ns: self.invoke_ns,
                complete_ns: self.complete_ns,
            });
        }
        Ok(Op {
            id,
            client: self.client,
            command,
            invoke_ns: self.invoke_ns,
            complete_ns: self.complete_ns,
            outcome,
        })
    }
}

/// Writes a history as NDJSON, one [`Op`] a line. It does not buffer: give it
/// a `BufWriter` for a file, and [`flush`](Self::flush) it before reading the
/// file back.
#[derive(Debug)]
pub struct HistoryWriter<W: Write> {
    out: W,
}

impl<W: Write> HistoryWriter<W> {
    /// A writer onto `out`.
    pub fn new(out: W) -> Self {
        HistoryWriter { out }
    }

    /// Appends `op` as one line.
    pub fn write(&mut self, op: &Op) -> io::Result<()> {
        let mut line = serde_json::to_vec(&LineOut::new(op))?;
        line.push(b'\n');
        self.out.write_all(&line)
    }

    /// Flushes the underlying writer.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// The underlying writer (not flushed).
    pub fn into_inner(self) -> W {
        self.out
    }
}

/// Reads and validates a history written by [`HistoryWriter`]. Blank lines
/// are skipped. The first invalid line ends the reading with an error that
/// names it; the caller adds the file name (or use [`read_history_file`]).
pub fn read_history(reader: impl BufRead) -> Result<Vec<Op>, HistoryError> {
    let mut ops = Vec::new();
    // id -> the line it first appeared on.
    let mut lines_of_ids: HashMap<u64, usize> = HashMap::new();
    for (index, text) in reader.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(|source| HistoryError::Io { line, source })?;
        if text.trim().is_empty() {
            continue;
        }
        // serde would also take a struct from a JSON array of its fields.
        if !text.trim_start().starts_with('{') {
            return Err(HistoryError::Json {
                line,
                column: 1 + text.len() - text.trim_start().len(),
                message: "expected a JSON object".to_string(),
            });
        }
        let raw: LineIn = serde_json::from_str(&text).map_err(|e| json_error(line, &e))?;
        let op = raw.into_op(line)?;
        if let Some(&first_line) = lines_of_ids.get(&op.id) {
            return Err(HistoryError::DuplicateId {
                line,
                id: op.id,
                first_line,
            });
        }
        lines_of_ids.insert(op.id, line);
        ops.push(op);
    }
    Ok(ops)
}

/// A [`HistoryError::Json`] at `line`, without serde_json's "at line 1
/// column N" (its line is always 1: it parsed one line).
fn json_error(line: usize, e: &serde_json::Error) -> HistoryError {
    let message = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    HistoryError::Json {
        line,
        column: e.column(),
        message: message
            .strip_suffix(&position)
            .unwrap_or(&message)
            .to_string(),
    }
}

/// [`read_history`] on the file at `path`; errors name the file.
pub fn read_history_file(path: &Path) -> Result<Vec<Op>, HistoryError> {
    let file = File::open(path).map_err(|source| HistoryError::Open {
        path: path.to_path_buf(),
        source,
    })?;
    read_history(BufReader::new(file)).map_err(|source| HistoryError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
