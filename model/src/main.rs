//! `raft-model`: check the Raft model, or browse it in Stateright's Explorer.

use clap::{Args, Parser, Subcommand, ValueEnum};
use raft_model::bugs::{self, Expected, SeededBug};
use raft_model::check::{self, CheckOptions, Strategy};
use raft_model::{ModelConfig, NetworkKind, RaftModel};
use raft_spec::bugs::{Bug, UnknownBug};
use raft_spec::{Ack, ReadMode, Replication};
use stateright::Model;
use std::num::NonZeroUsize;
use std::process::ExitCode;
use std::time::Duration;

/// `println!` that ignores a closed stdout (e.g. `raft-model bugs | head`)
/// instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

#[derive(Parser)]
#[command(
    name = "raft-model",
    version,
    about = "Exhaustive model checking of Raft (Figure 2) for the five safety properties of Figure 3"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Explore every state of a bounded configuration and check the properties.
    ///
    /// Exit status: 0 if the search completed, every `always` property held and
    /// every `sometimes` property was found; 1 otherwise; 2 on bad arguments.
    Check(CheckArgs),
    /// Serve Stateright's Explorer for a configuration.
    Explore(ExploreArgs),
    /// List the seeded bugs `check --bug` can switch on.
    Bugs,
    /// Replay raft-node traces (one file per node) against the model.
    ///
    /// Every recorded step must be an action the model allows, leave the
    /// server in the recorded state, and keep every safety property. A
    /// divergence report ends with the Explorer URL of the last state both
    /// agreed on and the `replay --explore` command that serves it.
    /// Exit status: 0 clean; 1 first divergence or property violation
    /// (reported); 2 unreadable or inconsistent input.
    Replay(ReplayArgs),
}

#[derive(Args)]
struct ReplayArgs {
    /// The trace files, one per node of the cluster.
    #[arg(required = true, value_name = "FILE")]
    files: Vec<std::path::PathBuf>,
    /// Serve Stateright's Explorer on the replayed path: its model starts
    /// --context steps before the last state the traces and the model agree
    /// on (the end of a clean replay, or the state before the divergence).
    #[arg(long)]
    explore: bool,
    /// With --explore: the address to serve on (port 0: any free port,
    /// printed).
    #[arg(long, default_value = "127.0.0.1:3000", requires = "explore")]
    addr: String,
    /// How many replayed steps the Explorer's path covers (with --explore,
    /// and in the Explorer path a divergence report prints).
    #[arg(long, default_value_t = raft_model::replay::DEFAULT_CONTEXT)]
    context: u64,
}

/// The configuration flags shared by `check` and `explore`. A flag left out
/// takes its value from the base configuration: the seeded bug's smallest
/// configuration with `--bug`, otherwise the default check (3 servers, max
/// term 1, 1 request, 1 crash, unordered duplicating network).
#[derive(Args, Clone)]
struct ConfigArgs {
    /// Number of servers (1-5) [default: 3].
    #[arg(long)]
    servers: Option<usize>,
    /// Highest term any server may reach [default: 1].
    #[arg(long)]
    max_term: Option<u64>,
    /// Client requests (one client per request) [default: 1].
    #[arg(long)]
    requests: Option<usize>,
    /// Total server crashes over an execution [default: 1].
    #[arg(long)]
    crashes: Option<usize>,
    /// Network semantics: unordered-duplicating, unordered-nonduplicating or
    /// ordered [default: unordered-duplicating].
    #[arg(long)]
    network: Option<String>,
    /// The network may lose messages.
    #[arg(long)]
    lossy: bool,
    /// Run the servers with a seeded bug (see `raft-model bugs`).
    #[arg(long, value_name = "NAME")]
    bug: Option<String>,
    /// The most entries one AppendEntries carries (at least 1) [default: no
    /// limit].
    #[arg(long, value_name = "N")]
    max_append_entries: Option<NonZeroUsize>,
    /// Heartbeats carry no entries (Figure 2's "empty AppendEntries").
    #[arg(long)]
    empty_heartbeats: bool,
    /// Flow control: followers in probe or replicate state, at most N
    /// unacknowledged batches per follower (raft_spec::flow) [default:
    /// Figure 2's pacing].
    #[arg(long, value_name = "N")]
    window: Option<NonZeroUsize>,
    /// A leader writes its own entries in parallel with sending them and
    /// counts itself only once they are durable (Raft thesis §10.2.1); a
    /// crash loses what is not durable yet.
    #[arg(long)]
    parallel_write: bool,
    /// CheckQuorum: a leader steps down when a majority has not answered
    /// it within an election timeout (raft_spec::lease).
    #[arg(long)]
    check_quorum: bool,
    /// The followers' quiet period and leader leases (raft_spec::lease);
    /// on whenever reads are lease reads.
    #[arg(long)]
    leases: bool,
    /// When a leader answers a write: stored (in its own log), committed,
    /// replicated (on every server), applied (the paper's), quorum-applied
    /// (a majority applied it) or all-applied (every server applied it;
    /// these two turn on followers' reports of their applied index)
    /// [default: applied].
    #[arg(long, value_name = "LEVEL")]
    ack: Option<Ack>,
    /// Client reads (one client per read, each sent when the checker
    /// chooses) [default: 0].
    #[arg(long)]
    reads: Option<usize>,
    /// How reads are served: log (as a write, the paper's), read-index (the
    /// leader confirms it still leads; Raft thesis §6.4), lease (the leader
    /// answers at once while it holds a lease; §6.4.1), follower (the
    /// server asked answers from its own state) or follower-read-index
    /// (the follower asked answers once it has applied its leader's read
    /// index; §6.4) [default: log].
    #[arg(long, value_name = "MODE")]
    read: Option<ReadMode>,
}

/// A configuration error of the command line.
#[derive(Debug, thiserror::Error)]
enum ArgError {
    #[error(transparent)]
    Config(#[from] raft_model::ConfigError),
    #[error("--bug: {0}")]
    Bug(#[from] UnknownBug),
}

impl ConfigArgs {
    fn bug(&self) -> Result<Option<SeededBug>, ArgError> {
        Ok(match &self.bug {
            Some(name) => Some(bugs::seeded(name.parse::<Bug>()?)),
            None => None,
        })
    }

    fn config(&self) -> Result<ModelConfig, ArgError> {
        let base = self
            .bug()?
            .map_or_else(ModelConfig::default_check, |b| b.config);
        let config = ModelConfig {
            servers: self.servers.unwrap_or(base.servers),
            max_term: self.max_term.unwrap_or(base.max_term),
            requests: self.requests.unwrap_or(base.requests),
            crashes: self.crashes.unwrap_or(base.crashes),
            network: match &self.network {
                Some(n) => n.parse::<NetworkKind>()?,
                None => base.network,
            },
            lossy: self.lossy || base.lossy,
            bug: base.bug,
            replication: Replication {
                max_append_entries: self
                    .max_append_entries
                    .or(base.replication.max_append_entries),
                max_append_bytes: base.replication.max_append_bytes,
                window: self.window.or(base.replication.window),
                empty_heartbeats: self.empty_heartbeats || base.replication.empty_heartbeats,
                parallel_write: self.parallel_write || base.replication.parallel_write,
                check_quorum: self.check_quorum || base.replication.check_quorum,
                leases: self.leases
                    || self.read == Some(ReadMode::Lease)
                    || base.replication.leases,
                report_applied: self.ack.is_some_and(Ack::counts_applied)
                    || base.replication.report_applied,
            },
            ack: self.ack.unwrap_or(base.ack),
            reads: self.reads.unwrap_or(base.reads),
            read: self.read.unwrap_or(base.read),
        };
        config.validate()?;
        Ok(config)
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum StrategyArg {
    Bfs,
    Dfs,
}

#[derive(Args)]
struct CheckArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Search order: bfs (shortest counterexamples) or dfs (less memory).
    #[arg(long, value_enum, default_value = "bfs")]
    strategy: StrategyArg,
    /// Symmetry reduction over server identities (either strategy; on by
    /// default with --bug).
    #[arg(long, overrides_with = "no_symmetry")]
    symmetry: bool,
    /// No symmetry reduction, also with --bug.
    #[arg(long, overrides_with = "symmetry")]
    no_symmetry: bool,
    /// Checker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
    /// Stop the search after this many seconds and report how far it got
    /// (exit 1: the check is incomplete) [default: no limit].
    #[arg(long, value_name = "SECS")]
    time_limit: Option<u64>,
}

#[derive(Args)]
struct ExploreArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Address to serve the Explorer on (port 0: any free port, printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check(args) => run_check(args),
        Command::Explore(args) => run_explore(args),
        Command::Bugs => list_bugs(),
        Command::Replay(args) => run_replay(args),
    }
}

fn run_replay(args: ReplayArgs) -> ExitCode {
    let options = raft_model::replay::ReplayOptions {
        context: args.context,
        ..Default::default()
    };
    if args.explore {
        return run_replay_explore(&args, &options);
    }
    match raft_model::replay::replay_files_with(&args.files, &options) {
        Ok(summary) => {
            out!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            match &e {
                raft_model::replay::ReplayError::Divergence(d) => out!("{d}"),
                other => eprintln!("error: {other}"),
            }
            ExitCode::from(e.exit_code())
        }
    }
}

fn run_replay_explore(args: &ReplayArgs, options: &raft_model::replay::ReplayOptions) -> ExitCode {
    // Bind once first, as `explore` does: a busy or invalid address is a
    // clear error before any replay, and port 0 prints the port served.
    let addr = match std::net::TcpListener::bind(&args.addr).and_then(|l| l.local_addr()) {
        Ok(addr) => addr,
        Err(e) => return bad_argument(format!("--addr {}: cannot listen: {e}", args.addr)),
    };
    let (outcome, context) = match raft_model::replay::replay_for_explorer(&args.files, options) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(e.exit_code());
        }
    };
    match &outcome {
        Ok(summary) => out!("{summary}"),
        Err(d) => out!("{d}"),
    }
    let base = format!("http://{addr}");
    out!(
        "Explorer at {base}/ : the replay model from the state after step {}",
        context.start
    );
    out!(
        "  path to the state after step {} (the last both agreed on): {base}/#/steps/{}",
        context.end,
        context.encoded_path()
    );
    if let Some((action, offered)) = context.next() {
        out!(
            "  the diverging step, \"{action}\", is {}an action the model offers there",
            if offered { "" } else { "not " }
        );
    }
    context.model.checker().serve(addr);
    ExitCode::SUCCESS
}

fn list_bugs() -> ExitCode {
    out!("Seeded bugs (run one with `raft-model check --bug NAME`):");
    for entry in bugs::catalogue() {
        let c = entry.config;
        let breaks = match entry.expected {
            Expected::Violates(p) => format!("breaks \"{p}\""),
            Expected::Unreachable(p) => {
                format!("breaks no safety property; never reached: \"{p}\"")
            }
        };
        out!("\n{}  ({})", entry.bug.name(), breaks);
        out!("    {}", entry.bug.description());
        out!("    seen in: {}", entry.bug.seen_in());
        let mut flags = String::new();
        if c.replication.empty_heartbeats {
            flags.push_str(" --empty-heartbeats");
        }
        if c.replication.parallel_write {
            flags.push_str(" --parallel-write");
        }
        if c.reads > 0 {
            flags.push_str(&format!(" --reads {} --read {}", c.reads, c.read.name()));
        }
        out!(
            "    smallest configuration: --servers {} --max-term {} --requests {} --crashes {}{flags}",
            c.servers,
            c.max_term,
            c.requests,
            c.crashes,
        );
        if !entry.note.is_empty() {
            out!("    note: {}", entry.note);
        }
    }
    ExitCode::SUCCESS
}

fn bad_argument(message: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {message}");
    ExitCode::from(2)
}

fn run_check(args: CheckArgs) -> ExitCode {
    let config = match args.config.config() {
        Ok(c) => c,
        Err(e) => return bad_argument(e),
    };
    let seeded = match args.config.bug() {
        Ok(b) => b,
        Err(e) => return bad_argument(e),
    };
    if args.threads == 0 {
        return bad_argument("--threads must be at least 1, got 0");
    }
    if args.time_limit == Some(0) {
        return bad_argument("--time-limit must be at least 1 second, got 0");
    }
    let strategy = match args.strategy {
        StrategyArg::Bfs => Strategy::Bfs,
        StrategyArg::Dfs => Strategy::Dfs,
    };
    // A seeded bug's run reduces by symmetry: its counterexample is as short
    // (renaming servers keeps path lengths) and is shown with the names the
    // servers have from the start; figure-8's takes a third of the states.
    let symmetry = !args.no_symmetry && (args.symmetry || seeded.is_some());
    let options = CheckOptions {
        shortest_examples: true,
        strategy,
        symmetry,
        threads: args.threads,
        progress_every: Some(Duration::from_secs(args.progress_secs.max(1))),
        // A seeded bug's run stops at its counterexample; one that breaks no
        // safety property must search everything to show the missing example.
        stop_at: seeded.and_then(|b| match b.expected {
            Expected::Violates(p) => Some(p),
            Expected::Unreachable(_) => None,
        }),
        time_limit: args.time_limit.map(Duration::from_secs),
    };
    if let Some(b) = seeded {
        out!(
            "Seeded bug {}: {} (expected: {})",
            b.bug.name(),
            b.bug.description(),
            match b.expected {
                Expected::Violates(p) => format!("a counterexample to \"{p}\""),
                Expected::Unreachable(p) => format!("\"{p}\" is never found"),
            }
        );
        if !b.note.is_empty() {
            out!("Note: {}", b.note);
        }
    }
    out!(
        "Checking {} with strategy={} symmetry={} threads={}{}",
        config,
        match strategy {
            Strategy::Bfs => "bfs",
            Strategy::Dfs => "dfs",
        },
        symmetry,
        args.threads,
        args.time_limit
            .map_or(String::new(), |s| format!(" time_limit={s}s"))
    );
    let mut stdout = std::io::stdout();
    let report = check::run(config, options, &mut stdout);
    check::write_report(&report, "http://127.0.0.1:3000", &mut stdout);
    if report.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn run_explore(args: ExploreArgs) -> ExitCode {
    let config = match args.config.config() {
        Ok(c) => c,
        Err(e) => return bad_argument(e),
    };
    // Bind once ourselves, so a busy or invalid address is a clear error
    // rather than a panic inside the Explorer, and so that port 0 (any free
    // port) prints the port actually served.
    let addr = match std::net::TcpListener::bind(&args.addr).and_then(|l| l.local_addr()) {
        Ok(addr) => addr,
        Err(e) => return bad_argument(format!("--addr {}: cannot listen: {e}", args.addr)),
    };
    out!("Explorer for {config} at http://{addr}/");
    RaftModel::new(config).checker().serve(addr);
    ExitCode::SUCCESS
}
