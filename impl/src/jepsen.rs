//! A Jepsen-style test of real clusters: node processes on TCP and disk,
//! concurrent clients recording every operation ([`history`]), faults
//! injected while they run ([`nemesis`]: kill -9 and restart, SIGSTOP and
//! SIGCONT, partitions), and the history checked for linearizability per key
//! ([`check`]) and for acknowledged writes lost ([`run::lost_writes`]).
//!
//! `raft-node jepsen` runs it ([`run::run`]); `raft-node check-history`
//! checks a history file written by a run (or by anything else that writes
//! the format of [`history`]).

pub mod check;
pub mod history;
pub mod nemesis;
pub mod run;
