//! `raft-model`: check the Raft model, or browse it in Stateright's Explorer.

use clap::{Args, Parser, Subcommand, ValueEnum};
use raft_model::check::{self, CheckOptions, Strategy};
use raft_model::{ModelConfig, NetworkKind, RaftModel};
use stateright::Model;
use std::process::ExitCode;
use std::time::Duration;

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
}

#[derive(Args, Clone)]
struct ConfigArgs {
    /// Number of servers (1-5).
    #[arg(long, default_value_t = 3)]
    servers: usize,
    /// Highest term any server may reach.
    #[arg(long, default_value_t = 1)]
    max_term: u64,
    /// Client requests (one client per request).
    #[arg(long, default_value_t = 1)]
    requests: usize,
    /// Total server crashes over an execution.
    #[arg(long, default_value_t = 1)]
    crashes: usize,
    /// Network semantics: unordered-duplicating, unordered-nonduplicating or ordered.
    #[arg(long, default_value = "unordered-duplicating")]
    network: String,
    /// The network may lose messages.
    #[arg(long)]
    lossy: bool,
}

impl ConfigArgs {
    fn config(&self) -> Result<ModelConfig, raft_model::ConfigError> {
        let config = ModelConfig {
            servers: self.servers,
            max_term: self.max_term,
            requests: self.requests,
            crashes: self.crashes,
            network: self.network.parse::<NetworkKind>()?,
            lossy: self.lossy,
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
    /// Search order: bfs (shortest counterexamples) or dfs (less memory; needed for --symmetry).
    #[arg(long, value_enum, default_value = "bfs")]
    strategy: StrategyArg,
    /// Symmetry reduction over server identities (requires --strategy dfs).
    #[arg(long)]
    symmetry: bool,
    /// Checker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Seconds between progress lines.
    #[arg(long, default_value_t = 5)]
    progress_secs: u64,
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
    }
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
    if args.threads == 0 {
        return bad_argument("--threads must be at least 1, got 0");
    }
    let strategy = match args.strategy {
        StrategyArg::Bfs => Strategy::Bfs,
        StrategyArg::Dfs => Strategy::Dfs,
    };
    if args.symmetry && strategy != Strategy::Dfs {
        return bad_argument(
            "--symmetry requires --strategy dfs (Stateright 0.31 reduces symmetry only in DFS)",
        );
    }
    let options = CheckOptions {
        strategy,
        symmetry: args.symmetry,
        threads: args.threads,
        progress_every: Some(Duration::from_secs(args.progress_secs.max(1))),
    };
    println!(
        "Checking {} with strategy={} symmetry={} threads={}",
        config,
        match strategy {
            Strategy::Bfs => "bfs",
            Strategy::Dfs => "dfs",
        },
        args.symmetry,
        args.threads
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
    println!("Explorer for {config} at http://{addr}/");
    RaftModel::new(config).checker().serve(addr);
    ExitCode::SUCCESS
}
