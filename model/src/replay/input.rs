//! Reading the traces: one file per node, their headers cross-checked, each
//! read as a stream (one pending step per file).

use super::ReplayError;
use raft_spec::trace::{Header, Record, Released, Step, TraceError, TraceReader};
use raft_spec::Replication;
use raft_spec::{KvCommand, KvOutput, NodeId};
use std::collections::VecDeque;
use std::io::BufRead;
use std::path::Path;
use std::sync::Arc;

/// Unreadable or inconsistent input: exit status 2. Every variant names the
/// file, and the line where it applies.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    /// The trace could not be read or parsed.
    #[error(transparent)]
    Trace(#[from] TraceError),
    /// No trace was given.
    #[error("no trace to replay")]
    NoTrace,
    /// The header does not fit with the other traces or this replayer.
    #[error("{file}:1: {message}")]
    Header {
        /// The file.
        file: String,
        /// What is wrong.
        message: String,
    },
    /// A step line is well-formed JSON but cannot belong to this trace.
    #[error("{file}:{line}: {message}")]
    Step {
        /// The file.
        file: String,
        /// The line.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// A step of the runtime's traces.
pub(super) type KvStep = Step<KvCommand, KvOutput>;

/// A marker read before the trace's next step, with its line: the replayer
/// judges it once the steps before it are replayed.
pub(super) enum Marker {
    /// A synced marker.
    Synced,
    /// A released marker.
    Released(u64, Released<KvOutput>),
}

/// One trace being replayed: its reader, the markers read since its last
/// step, and its next step.
pub(super) struct Trace {
    reader: TraceReader<Box<dyn BufRead>>,
    pub(super) name: Arc<str>,
    pub(super) server: NodeId,
    /// The header's format version.
    pub(super) version: u32,
    /// Whether its header says links are in order
    /// ([`raft_spec::trace::Header::fifo_links`]).
    pub(super) fifo_links: bool,
    /// The line number and bytes of a last line cut short, once read.
    pub(super) torn_tail: Option<(u64, u64)>,
    pub(super) markers: VecDeque<Marker>,
    pub(super) next: Option<(KvStep, u64)>,
    done: bool,
    pub(super) last_seq: u64,
}

impl Trace {
    pub(super) fn file(&self) -> &str {
        self.reader.file()
    }

    /// Whether its steps record their outputs and its batches their
    /// release (version 3 on).
    pub(super) fn records_outputs(&self) -> bool {
        self.version >= raft_spec::trace::OUTPUTS_VERSION
    }

    /// The next step (read if needed), `None` at the end of the file. The
    /// markers on the way join [`Trace::markers`].
    pub(super) fn peek(&mut self) -> Result<Option<&(KvStep, u64)>, InputError> {
        while self.next.is_none() && !self.done {
            match self.reader.next_record::<KvCommand, KvOutput>() {
                None => {
                    self.done = true;
                    self.torn_tail = self.reader.torn_tail();
                }
                Some(Ok(Record::Synced(_))) => self.markers.push_back(Marker::Synced),
                Some(Ok(Record::Released(m))) => {
                    let line = self.reader.line();
                    self.markers.push_back(Marker::Released(line, m));
                }
                Some(Err(e)) => return Err(e.into()),
                Some(Ok(Record::Step(step))) => {
                    let line = self.reader.line();
                    if self.records_outputs() && step.out.is_none() {
                        return Err(InputError::Step {
                            file: self.file().to_string(),
                            line,
                            message: format!(
                                "a step without \"out\" in a version-{} trace (its steps record their outputs)",
                                self.version
                            ),
                        });
                    }
                    if step.server != self.server {
                        return Err(InputError::Step {
                            file: self.file().to_string(),
                            line,
                            message: format!(
                                "a step of server {} in the trace recorded by server {}",
                                step.server.0, self.server.0
                            ),
                        });
                    }
                    self.next = Some((step, line));
                }
            }
        }
        Ok(self.next.as_ref())
    }
}

/// Traces as `(name, reader)` pairs.
pub(super) type Inputs = Vec<(String, Box<dyn BufRead>)>;

pub(super) fn open_files<P: AsRef<Path>>(paths: &[P]) -> Result<Inputs, ReplayError> {
    let mut inputs: Inputs = Vec::new();
    for p in paths {
        let path = p.as_ref();
        let file = std::fs::File::open(path).map_err(|source| TraceError::Io {
            file: path.display().to_string(),
            line: 0,
            source,
        })?;
        inputs.push((
            path.display().to_string(),
            Box::new(std::io::BufReader::new(file)),
        ));
    }
    Ok(inputs)
}

/// The traces, in server order, and the replication settings their headers
/// agree on.
pub(super) type Opened = (Vec<Trace>, Replication);

/// Reads and cross-checks the headers.
pub(super) fn open(inputs: Vec<(String, Box<dyn BufRead>)>) -> Result<Opened, InputError> {
    let mut traces: Vec<Trace> = Vec::new();
    let mut first: Option<(String, Header)> = None;
    for (name, reader) in inputs {
        let reader = TraceReader::new(name.clone(), reader)?;
        let header = reader.header().clone();
        let bad = |message: String| InputError::Header {
            file: name.clone(),
            message,
        };
        if header.state_machine != "kv" {
            return Err(bad(format!(
                "state machine {:?}: the replayer runs the runtime's \"kv\"",
                header.state_machine
            )));
        }
        if header.servers.is_empty() || !header.servers.contains(&header.recorded_by) {
            return Err(bad(format!(
                "recorded_by {} is not one of the servers {:?}",
                header.recorded_by.0,
                ids(&header.servers)
            )));
        }
        match &first {
            None => first = Some((name.clone(), header.clone())),
            Some((f, h)) => {
                if h.cluster_id != header.cluster_id || h.servers != header.servers {
                    return Err(bad(format!(
                        "cluster {:?} of servers {:?}, but {f} is of cluster {:?} of servers {:?}: traces of different clusters",
                        header.cluster_id,
                        ids(&header.servers),
                        h.cluster_id,
                        ids(&h.servers)
                    )));
                }
                // The settings shape every AppendEntries: the servers of
                // one replay model share them.
                if h.replication != header.replication {
                    return Err(bad(format!(
                        "replication settings {}, but {f} records {}: the traces of one cluster must agree on them",
                        describe(&header.replication),
                        describe(&h.replication)
                    )));
                }
            }
        }
        if let Some(other) = traces.iter().find(|t| t.server == header.recorded_by) {
            return Err(bad(format!(
                "a second trace of server {} (the first is {})",
                header.recorded_by.0,
                other.file()
            )));
        }
        traces.push(Trace {
            name: Arc::from(name.as_str()),
            reader,
            server: header.recorded_by,
            version: header.version,
            fifo_links: header.fifo_links,
            torn_tail: None,
            markers: VecDeque::new(),
            next: None,
            done: false,
            last_seq: 0,
        });
    }
    let Some((file, header)) = first else {
        return Err(InputError::NoTrace);
    };
    let missing: Vec<u64> = header
        .servers
        .iter()
        .filter(|n| !traces.iter().any(|t| t.server == **n))
        .map(|n| n.0)
        .collect();
    if !missing.is_empty() {
        return Err(InputError::Header {
            file,
            message: format!(
                "no trace given for server(s) {missing:?} of the cluster {:?}; replay needs every node's trace",
                ids(&header.servers)
            ),
        });
    }
    traces.sort_by_key(|t| t.server);
    Ok((traces, header.replication))
}

/// Replication settings as a trace header spells them.
fn describe(r: &Replication) -> String {
    if r.is_figure_2() {
        return "absent (Figure 2's pacing)".to_string();
    }
    serde_json::to_string(r).unwrap_or_else(|e| e.to_string())
}

fn ids(nodes: &[NodeId]) -> Vec<u64> {
    nodes.iter().map(|n| n.0).collect()
}
