//! `raft-node`: run a node, a local cluster, a client command or the
//! benchmark. Exit codes: 0 success, 1 operation failed, 2 bad arguments.

use clap::{Args, Parser, Subcommand, ValueEnum};
use raft_node::bench::{self, BenchOptions};
use raft_node::client::{Answer, Client, ClientOptions};
use raft_node::cluster::{ClusterOptions, LocalCluster};
use raft_node::config::{self, ConfigError, Peers, Timing};
use raft_node::jepsen::{self, nemesis::Nemesis, run::JepsenOptions};
use raft_node::runtime::{self, ServeError, ServeOptions};
use raft_node::wire::DEFAULT_MAX_FRAME;
use raft_spec::{Ack, KvCommand, NodeId, ReadMode, Replication, Role};
use std::io::Write as _;
use std::num::NonZeroUsize;
use std::path::PathBuf;
use std::process::ExitCode;
use std::thread;
use std::time::Duration;
use tracing_subscriber::EnvFilter;

#[derive(Parser, Debug)]
#[command(
    name = "raft-node",
    version,
    about = "Raft nodes running raft-spec's transition functions"
)]
struct Cli {
    /// Log format on stderr (filter with RUST_LOG, e.g. RUST_LOG=debug).
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Args, Debug, Clone)]
struct TimingArgs {
    /// Election timeout range in milliseconds, MIN..MAX (drawn uniformly).
    #[arg(long, default_value = "150..300")]
    election_timeout_ms: String,
    /// Leader heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 50)]
    heartbeat_ms: u64,
}

impl TimingArgs {
    fn timing(&self) -> Result<Timing, ConfigError> {
        let bad = || {
            ConfigError::BadTiming(format!(
                "--election-timeout-ms {:?}: expected MIN..MAX in milliseconds",
                self.election_timeout_ms
            ))
        };
        let (lo, hi) = self.election_timeout_ms.split_once("..").ok_or_else(bad)?;
        let lo = lo.trim().parse().map_err(|_| bad())?;
        let hi = hi.trim().parse().map_err(|_| bad())?;
        Timing::from_millis(lo, hi, self.heartbeat_ms)
    }
}

#[derive(Args, Debug, Clone)]
struct AppendArgs {
    /// The most entries one AppendEntries carries, N >= 1 (default: no cap,
    /// every entry from the follower's next index on). Recorded in the
    /// trace header.
    #[arg(long, value_name = "N", value_parser = config::parse_max_append_entries)]
    max_append_entries: Option<NonZeroUsize>,
    /// The most bytes of entries one AppendEntries carries (default: 1 MiB,
    /// at most half of --max-frame-bytes); an entry larger than that
    /// travels alone. Recorded in the trace header.
    #[arg(long, value_name = "BYTES")]
    max_append_bytes: Option<u64>,
    /// Flow control: at most N batches of entries unacknowledged per
    /// follower once it has matched (default: 64); 0 turns flow control off
    /// (Figure 2's pacing: every AppendEntries and heartbeat carries the
    /// entries from the follower's next index on). Recorded in the trace
    /// header.
    #[arg(long, value_name = "N")]
    window: Option<usize>,
    /// The leader makes its own new entries durable before sending them
    /// (default: it writes them in parallel with sending them and counts
    /// itself toward a majority once they are durable, Raft thesis
    /// §10.2.1). Recorded in the trace header.
    #[arg(long)]
    serial_write: bool,
}

impl AppendArgs {
    /// The replication settings, for frames of at most `max_frame` bytes.
    fn replication(&self, max_frame: usize) -> Result<Replication, config::ConfigError> {
        config::replication(
            self.max_append_entries,
            self.max_append_bytes,
            self.window,
            self.serial_write,
            max_frame,
        )
    }
}

#[derive(Args, Debug, Clone)]
struct ClientArgs {
    /// The cluster's nodes: ID=HOST:PORT,... (the same addresses as --peers).
    #[arg(long)]
    cluster: String,
    /// Cluster id to present (empty: the nodes do not check it).
    #[arg(long, default_value = "")]
    cluster_id: String,
    /// How long to keep trying (finding the leader, retrying), in ms.
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run one node.
    Serve {
        /// This node's id (one of --peers).
        #[arg(long)]
        id: u64,
        /// Every node of the cluster, this one included: ID=HOST:PORT,...
        /// Peers and clients use the same addresses.
        #[arg(long)]
        peers: String,
        /// Where the node keeps its term, vote and log.
        #[arg(long)]
        data_dir: PathBuf,
        /// Record an NDJSON trace of every step (format: raft_spec::trace).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// The cluster id; nodes of other clusters are refused.
        #[arg(long, default_value = "local")]
        cluster_id: String,
        /// Address to listen on (default: 127.0.0.1 with this node's port).
        #[arg(long)]
        listen: Option<String>,
        /// Largest frame accepted, in bytes.
        #[arg(long, default_value_t = DEFAULT_MAX_FRAME)]
        max_frame_bytes: usize,
        /// Accept the test-only partition control from clients.
        #[arg(long, hide = true)]
        test_control: bool,
        /// The most inbound connections (peers and clients) served at once;
        /// more are refused.
        #[arg(long, default_value_t = raft_node::transport::DEFAULT_MAX_CONNECTIONS)]
        max_connections: usize,
        /// How long a client connection may stay silent before the node
        /// closes it, in milliseconds.
        #[arg(long, default_value_t = 60_000)]
        client_idle_timeout_ms: u64,
        /// Create the node's state if the data directory holds none. Needed
        /// on a node's first start only; without it, a directory that holds
        /// no state (new, or wiped) is refused.
        #[arg(long)]
        bootstrap: bool,
        /// Exit when stdin closes (used by `cluster`, so that nodes do not
        /// outlive their launcher).
        #[arg(long, hide = true)]
        exit_on_stdin_eof: bool,
        #[command(flatten)]
        timing: TimingArgs,
        #[command(flatten)]
        append: AppendArgs,
    },
    /// Start a local cluster of node processes and show their events.
    Cluster {
        /// Number of nodes.
        #[arg(long, default_value_t = 3)]
        nodes: u64,
        /// Parent of the nodes' data directories.
        #[arg(long)]
        data_dir: PathBuf,
        /// Write each node's trace to DIR/node-N.ndjson.
        #[arg(long)]
        trace_dir: Option<PathBuf>,
        /// Port of node 1; node N listens on BASE+N-1.
        #[arg(long, default_value_t = 7001)]
        base_port: u16,
        /// The cluster id.
        #[arg(long, default_value = "local")]
        cluster_id: String,
        #[command(flatten)]
        timing: TimingArgs,
        #[command(flatten)]
        append: AppendArgs,
    },
    /// Set KEY to VALUE.
    Put {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
        /// The value (or give --value-file).
        #[arg(required_unless_present = "value_file")]
        value: Option<String>,
        /// Read the value from FILE ("-": standard input), for values too
        /// large for the command line; it must be UTF-8 text.
        #[arg(long, value_name = "FILE", conflicts_with = "value")]
        value_file: Option<PathBuf>,
        /// When the leader answers: stored (in its own log; not fault
        /// tolerant), committed, replicated (on every node), applied (with
        /// the previous value), quorum-applied (a majority applied it) or
        /// all-applied (every node applied it); the last three with the
        /// previous value.
        #[arg(long, value_name = "LEVEL", default_value = "applied")]
        ack: Ack,
    },
    /// Read KEY: through the log (linearizable), by the leader's read index
    /// or lease (linearizable, no log write), from a follower at its
    /// leader's read index (linearizable), or from the node asked (may be
    /// stale).
    Get {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
        /// How the read is served: log, read-index, lease, follower or
        /// follower-read-index.
        #[arg(long, value_name = "MODE", default_value = "log")]
        read: ReadMode,
        /// Ask this node first (with --read follower or
        /// follower-read-index, the node that answers).
        #[arg(long, value_name = "ID")]
        node: Option<u64>,
    },
    /// Remove KEY.
    Delete {
        #[command(flatten)]
        client: ClientArgs,
        /// The key.
        key: String,
    },
    /// One line per node: id, role, term, commit index, last log index.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Measure throughput, latency and failover on a local 3-node cluster.
    Bench {
        /// Where the nodes keep their data (default: a fresh temporary dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Concurrencies to measure.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        clients: Vec<usize>,
        /// Seconds per concurrency.
        #[arg(long, default_value_t = 5)]
        duration_secs: u64,
        /// Failover trials (0: skip).
        #[arg(long, default_value_t = 10)]
        trials: u32,
        /// Value size in bytes.
        #[arg(long, default_value_t = 16)]
        value_size: usize,
        /// Also put one value of each of these sizes in MiB (e.g. 16,60)
        /// and report the time to commit and the elections meanwhile.
        #[arg(long, value_delimiter = ',', value_name = "MIB")]
        large_puts_mib: Vec<usize>,
        /// Also pause a follower while this many 1 MiB puts commit, then
        /// report its catch-up time, the elections meanwhile and the
        /// leader's memory.
        #[arg(long, default_value_t = 0, value_name = "MIB")]
        catch_up_mib: usize,
        /// Also measure reads of one key in these modes (log, read-index,
        /// lease, follower, follower-read-index; the follower modes spread
        /// over the followers), at each concurrency.
        #[arg(long, value_delimiter = ',', value_name = "MODE")]
        reads: Vec<ReadMode>,
        /// Also measure writes answered at these levels (stored, committed,
        /// replicated, quorum-applied, all-applied), at each concurrency.
        #[arg(long, value_delimiter = ',', value_name = "LEVEL")]
        acks: Vec<Ack>,
        #[command(flatten)]
        timing: TimingArgs,
        #[command(flatten)]
        append: AppendArgs,
    },
    /// Jepsen-style test: a local cluster under faults, concurrent clients,
    /// the history checked for linearizability. Exits 1 if it is not
    /// linearizable or an acknowledged write was lost.
    Jepsen {
        /// Seconds the clients run.
        #[arg(long, default_value_t = 60)]
        time: u64,
        /// Faults: none, kill, pause, partition or mixed.
        #[arg(long, default_value = "mixed", value_parser = parse_nemesis)]
        nemesis: Nemesis,
        /// Concurrent clients.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        clients: u64,
        /// Nodes in the cluster.
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=9))]
        nodes: u64,
        /// Keys the clients work on.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..))]
        keys: u64,
        /// Milliseconds from one fault to the next (each lasts half of it).
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(10..))]
        fault_interval_ms: u64,
        /// Milliseconds after which an operation is recorded as of unknown
        /// outcome.
        #[arg(long, default_value_t = 2_000, value_parser = clap::value_parser!(u64).range(1..))]
        op_timeout_ms: u64,
        /// Seeds the operations and the faults.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Where the nodes keep their data (default: a fresh temporary dir).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Where to write the history, NDJSON (default:
        /// ./jepsen-history.ndjson).
        #[arg(long, default_value = "jepsen-history.ndjson")]
        history: PathBuf,
        /// Write each node's trace to DIR/node-N.ndjson.
        #[arg(long)]
        trace_dir: Option<PathBuf>,
        #[command(flatten)]
        timing: TimingArgs,
    },
    /// Check a history (NDJSON, as `jepsen` writes) for linearizability per
    /// key; prints the verdict, the time and the peak memory. Exits 1 if it
    /// is not linearizable.
    CheckHistory {
        /// The history file.
        file: PathBuf,
    },
}

fn parse_nemesis(s: &str) -> Result<Nemesis, String> {
    s.parse()
}

/// What a command that starts a local cluster of this executable needs:
/// the timing, the executable, and `dir` or a fresh temporary directory
/// named `prefix...` (removed when the returned guard drops). Bad timing
/// exits 2, the rest 1.
fn local_run(
    timing: &TimingArgs,
    dir: Option<PathBuf>,
    prefix: &str,
) -> Result<(Timing, PathBuf, PathBuf, Option<tempfile::TempDir>), ExitCode> {
    let timing = timing.timing().map_err(usage)?;
    let exe = std::env::current_exe()
        .map_err(|e| failed(format!("cannot find the raft-node executable: {e}")))?;
    match dir {
        Some(d) => Ok((timing, exe, d, None)),
        None => {
            let tmp = tempfile::Builder::new()
                .prefix(prefix)
                .tempdir()
                .map_err(|e| failed(format!("cannot create a temporary data directory: {e}")))?;
            Ok((timing, exe, tmp.path().to_path_buf(), Some(tmp)))
        }
    }
}

/// The peak resident memory of this process, from /proc (Linux).
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

fn init_logging(format: LogFormat, default: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    // A log line that cannot be written (stderr closed: the terminal or the
    // pipe is gone) is dropped; the node runs on, and does not panic.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// Exit code 2: bad arguments.
/// The value of `put --value-file FILE` ("-": standard input), which must
/// be UTF-8: the map holds text.
fn read_value(file: &std::path::Path) -> Result<String, String> {
    let bytes = if file.as_os_str() == "-" {
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
            .map_err(|e| format!("cannot read the value from standard input: {e}"))?;
        bytes
    } else {
        std::fs::read(file)
            .map_err(|e| format!("cannot read the value file {}: {e}", file.display()))?
    };
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{}: not UTF-8 text at byte offset {}: the map holds text values",
            if file.as_os_str() == "-" {
                "standard input".to_string()
            } else {
                file.display().to_string()
            },
            e.utf8_error().valid_up_to()
        )
    })
}

fn usage(msg: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {msg}");
    ExitCode::from(2)
}

/// Exit code 1: the operation failed.
fn failed(msg: impl std::fmt::Display) -> ExitCode {
    let _ = writeln!(std::io::stderr(), "error: {msg}");
    ExitCode::from(1)
}

fn client_options(args: &ClientArgs) -> Result<ClientOptions, ConfigError> {
    let peers: Peers = config::parse_peers(&args.cluster)?;
    let mut o = ClientOptions::new(peers);
    o.cluster_id = args.cluster_id.clone();
    o.timeout = Duration::from_millis(args.timeout_ms);
    Ok(o)
}

/// How a command asks to be answered: a write's level, a read's mode, the
/// node to ask first.
#[derive(Clone, Copy, Default)]
struct Ask {
    ack: Ack,
    read: Option<ReadMode>,
    node: Option<u64>,
}

fn run_command(args: &ClientArgs, command: KvCommand, ask: Ask) -> ExitCode {
    let options = match client_options(args) {
        Ok(o) => o,
        Err(e) => return usage(e),
    };
    let is_get = matches!(command, KvCommand::Get { .. });
    let timeout = options.timeout;
    let mut client = Client::new(options);
    if let Some(node) = ask.node {
        client.prefer(NodeId(node));
    }
    // After a second without an answer, say what the client is doing.
    let (answered, waiting) = std::sync::mpsc::channel::<()>();
    let notice = thread::spawn(move || {
        if let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
            waiting.recv_timeout(Duration::from_secs(1))
        {
            let _ = writeln!(
                std::io::stderr(),
                "waiting for a leader to answer (giving up after {} ms)...",
                timeout.as_millis()
            );
        }
    });
    let result = client.call_as(command, ask.ack, ask.read);
    let _ = answered.send(());
    let _ = notice.join();
    let result = match result {
        Ok(Answer::Accepted { index, term }) => {
            println!(
                "OK ({}: at index {}, written by the leader of term {})",
                ask.ack.name(),
                index.0,
                term.0
            );
            return ExitCode::SUCCESS;
        }
        Ok(Answer::Done(output)) => Ok(output),
        Err(e) => Err(e),
    };
    match result {
        Ok(Some(v)) if is_get => {
            println!("{v}");
            ExitCode::SUCCESS
        }
        Ok(None) if is_get => {
            eprintln!("(not found)");
            ExitCode::SUCCESS
        }
        Ok(previous) => {
            match previous {
                Some(p) => println!("OK (previous value: {p})"),
                None => println!("OK"),
            }
            ExitCode::SUCCESS
        }
        Err(e) => failed(e),
    }
}

fn serve_exit(e: &ServeError) -> ExitCode {
    match e {
        ServeError::Config(_) => usage(e),
        _ => failed(e),
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    match cli.command {
        Cmd::Serve {
            id,
            peers,
            data_dir,
            trace,
            cluster_id,
            listen,
            max_frame_bytes,
            test_control,
            max_connections,
            client_idle_timeout_ms,
            exit_on_stdin_eof,
            bootstrap,
            timing,
            append,
        } => {
            init_logging(cli.log_format, "info");
            if exit_on_stdin_eof {
                thread::spawn(|| {
                    let mut sink = Vec::new();
                    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
                    tracing::info!("stdin closed: the launcher is gone, exiting");
                    std::process::exit(0);
                });
            }
            let peers = match config::parse_peers(&peers) {
                Ok(p) => p,
                Err(e) => return usage(e),
            };
            let timing = match timing.timing() {
                Ok(t) => t,
                Err(e) => return usage(e),
            };
            if let Err(e) = listen
                .as_deref()
                .map_or(Ok(()), config::check_listen)
                .and_then(|()| config::check_max_frame(max_frame_bytes))
                .and_then(|()| config::check_max_connections(max_connections))
            {
                return usage(e);
            }
            let replication = match append.replication(max_frame_bytes) {
                Ok(r) => r,
                Err(e) => return usage(e),
            };
            let options = ServeOptions {
                id: NodeId(id),
                peers,
                cluster_id,
                data_dir,
                trace,
                timing,
                replication,
                listen,
                max_frame: max_frame_bytes,
                test_control,
                max_connections,
                client_idle_timeout: Duration::from_millis(client_idle_timeout_ms.max(1)),
                bootstrap,
            };
            match runtime::serve(options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    serve_exit(&e)
                }
            }
        }
        Cmd::Cluster {
            nodes,
            data_dir,
            trace_dir,
            base_port,
            cluster_id,
            timing,
            append,
        } => {
            init_logging(cli.log_format, "info");
            let timing = match timing.timing() {
                Ok(t) => t,
                Err(e) => return usage(e),
            };
            if nodes == 0 {
                return usage("--nodes must be at least 1");
            }
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => return failed(format!("cannot find the raft-node executable: {e}")),
            };
            let mut options = ClusterOptions::new(exe, data_dir);
            options.nodes = nodes;
            options.trace_dir = trace_dir;
            options.base_port = Some(base_port);
            options.cluster_id = cluster_id;
            options.timing = timing;
            options.replication = match append.replication(DEFAULT_MAX_FRAME) {
                Ok(r) => r,
                Err(e) => return usage(e),
            };
            options.inherit_output = true;
            options.log_json = cli.log_format == LogFormat::Json;
            if std::env::var_os("RUST_LOG").is_none() {
                options.rust_log = Some("info".into());
            }
            let mut cluster = match LocalCluster::start(options) {
                Ok(c) => c,
                Err(e) => return failed(format!("cannot start the cluster: {e}")),
            };
            eprintln!(
                "cluster started: --peers {}\n  try: raft-node put --cluster {} greeting hello",
                cluster.peers_arg(),
                cluster.peers_arg()
            );
            loop {
                for (id, status) in cluster.exited() {
                    eprintln!("node {} exited: {status}", id.0);
                }
                if cluster.running().is_empty() {
                    return failed("every node has exited");
                }
                thread::sleep(Duration::from_millis(200));
            }
        }
        Cmd::Put {
            client,
            key,
            value,
            value_file,
            ack,
        } => {
            init_logging(cli.log_format, "warn");
            let value = match (value, value_file) {
                (Some(v), _) => v,
                (None, Some(file)) => match read_value(&file) {
                    Ok(v) => v,
                    Err(e) => return failed(e),
                },
                (None, None) => return usage("put: give VALUE or --value-file FILE"),
            };
            let ask = Ask {
                ack,
                ..Ask::default()
            };
            run_command(&client, KvCommand::put(key, value), ask)
        }
        Cmd::Get {
            client,
            key,
            read,
            node,
        } => {
            init_logging(cli.log_format, "warn");
            let ask = Ask {
                read: (read != ReadMode::Log).then_some(read),
                node,
                ..Ask::default()
            };
            run_command(&client, KvCommand::Get { key }, ask)
        }
        Cmd::Delete { client, key } => {
            init_logging(cli.log_format, "warn");
            run_command(&client, KvCommand::Delete { key }, Ask::default())
        }
        Cmd::Status { client } => {
            init_logging(cli.log_format, "warn");
            let mut options = match client_options(&client) {
                Ok(o) => o,
                Err(e) => return usage(e),
            };
            options.attempt_timeout = Duration::from_millis(1000);
            let mut c = Client::new(options);
            let mut answered = 0;
            for (id, s) in c.cluster_status() {
                match s {
                    Ok(s) => {
                        answered += 1;
                        let role = match s.role {
                            Role::Leader => "leader",
                            Role::Candidate => "candidate",
                            Role::Follower => "follower",
                        };
                        println!(
                            "node {}: {role}, term {}, commit index {}, last log index {}",
                            id.0, s.term.0, s.commit_index.0, s.last_log_index.0
                        );
                    }
                    Err(e) => println!("node {}: unreachable ({e})", id.0),
                }
            }
            if answered == 0 {
                failed("no node answered")
            } else {
                ExitCode::SUCCESS
            }
        }
        Cmd::Bench {
            data_dir,
            clients,
            duration_secs,
            trials,
            value_size,
            large_puts_mib,
            catch_up_mib,
            reads,
            acks,
            timing,
            append,
        } => {
            init_logging(cli.log_format, "warn");
            let (timing, exe, data_dir, _tmp) =
                match local_run(&timing, data_dir, "raft-node-bench-") {
                    Ok(r) => r,
                    Err(code) => return code,
                };
            let options = BenchOptions {
                exe,
                data_dir,
                clients,
                duration: Duration::from_secs(duration_secs),
                trials,
                timing,
                replication: match append.replication(DEFAULT_MAX_FRAME) {
                    Ok(r) => r,
                    Err(e) => return usage(e),
                },
                value_size,
                large_puts_mib,
                catch_up_mib,
                reads,
                acks,
            };
            match bench::run(&options) {
                Ok(report) => {
                    println!(
                        "operation                clients      ops/s   p50 ms   p99 ms  errors"
                    );
                    for t in &report.throughput {
                        println!(
                            "{:<24} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>7}",
                            t.op.label(),
                            t.clients,
                            t.per_sec,
                            t.p50.as_secs_f64() * 1e3,
                            t.p99.as_secs_f64() * 1e3,
                            t.errors
                        );
                    }
                    let ms = |d: Option<Duration>| {
                        d.map_or("failed".to_string(), |d| {
                            format!("{:.0} ms", d.as_secs_f64() * 1e3)
                        })
                    };
                    for l in &report.large {
                        println!(
                            "large put {} MiB: {}, {} elections",
                            l.mib,
                            ms(l.took),
                            l.elections
                        );
                    }
                    if let Some(c) = &report.catch_up {
                        println!(
                            "catch-up of a follower {} MiB behind: {}, {} elections; leader memory {:.0} MiB resident, {:.0} MiB peak ({:.2}x the data)",
                            c.mib,
                            ms(c.took),
                            c.elections,
                            c.leader_rss_mib,
                            c.leader_peak_mib,
                            c.leader_peak_mib / c.mib as f64
                        );
                    }
                    if let Some(f) = &report.failover {
                        let ms = |d: Duration| d.as_secs_f64() * 1e3;
                        println!(
                            "failover over {} trials: median {:.1} ms, min {:.1} ms, max {:.1} ms; \
                             bound election_max + 2*rtt = {:.1} ms (rtt {:.2} ms); 2*election_max = {:.0} ms",
                            f.trials.len(),
                            ms(f.median),
                            ms(f.trials.iter().copied().min().unwrap_or_default()),
                            ms(f.trials.iter().copied().max().unwrap_or_default()),
                            ms(f.bound),
                            ms(f.rtt),
                            ms(2 * timing.election_max)
                        );
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => failed(e),
            }
        }
        Cmd::Jepsen {
            time,
            nemesis,
            clients,
            nodes,
            keys,
            fault_interval_ms,
            op_timeout_ms,
            seed,
            data_dir,
            history,
            trace_dir,
            timing,
        } => {
            init_logging(cli.log_format, "warn");
            let (timing, exe, data_dir, _tmp) =
                match local_run(&timing, data_dir, "raft-node-jepsen-") {
                    Ok(r) => r,
                    Err(code) => return code,
                };
            let mut options = JepsenOptions::new(exe, data_dir);
            options.time = Duration::from_secs(time);
            options.nemesis = nemesis;
            options.clients = clients as usize;
            options.nodes = nodes;
            options.keys = keys as usize;
            options.fault_interval = Duration::from_millis(fault_interval_ms);
            options.op_timeout = Duration::from_millis(op_timeout_ms);
            options.seed = seed;
            options.history = history;
            options.trace_dir = trace_dir;
            options.timing = timing;
            match jepsen::run::run(&options) {
                Ok(report) => {
                    println!("{report}");
                    if report.passed() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::from(1)
                    }
                }
                Err(e) => failed(e),
            }
        }
        Cmd::CheckHistory { file } => {
            let ops = match jepsen::history::read_history_file(&file) {
                Ok(ops) => ops,
                Err(e) => return failed(e),
            };
            let started = std::time::Instant::now();
            let report = jepsen::check::check(&ops);
            let took = started.elapsed();
            let lost = jepsen::run::lost_writes(&ops);
            println!("{report}");
            if !lost.is_empty() {
                println!("acknowledged writes lost (op ids): {lost:?}");
            }
            println!(
                "checked {} ops in {:.2} s, peak memory {}",
                ops.len(),
                took.as_secs_f64(),
                peak_rss_mib().map_or("unknown".to_string(), |m| format!("{m:.0} MiB"))
            );
            if report.is_linearizable() && lost.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}
