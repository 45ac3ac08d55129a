//! `etcd-bench`: puts against an etcd cluster through etcd's own gRPC API
//! (`etcdserverpb.KV/Put`), every client on one HTTP/2 connection, printed
//! as `raft-node bench` prints its writes, so that scripts/etcd-compare can
//! set the two side by side. Built only with the `etcd` feature.
//!
//! Each client puts its own keys back to back for the measured window, with
//! a value of `--value-size` bytes, as `raft-node bench` does.

use clap::Parser;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tonic::codegen::http::uri::PathAndQuery;

/// etcd's `PutRequest` (api/etcdserverpb/rpc.proto), the fields used.
#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// etcd's `PutResponse`: its header, whose revision shows the put landed.
#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {
    #[prost(message, optional, tag = "1")]
    header: Option<ResponseHeader>,
}

/// etcd's `ResponseHeader`.
#[derive(Clone, PartialEq, prost::Message)]
struct ResponseHeader {
    #[prost(uint64, tag = "1")]
    cluster_id: u64,
    #[prost(uint64, tag = "2")]
    member_id: u64,
    #[prost(int64, tag = "3")]
    revision: i64,
    #[prost(uint64, tag = "4")]
    raft_term: u64,
}

/// Puts against etcd over its gRPC API, one connection for all clients.
#[derive(Parser)]
#[command(name = "etcd-bench")]
struct Args {
    /// The etcd member to connect to (its client URL).
    #[arg(long, default_value = "http://127.0.0.1:12379")]
    endpoint: String,
    /// Concurrent clients, one measurement each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// How long each measurement runs.
    #[arg(long, default_value_t = 3)]
    duration_secs: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 16)]
    value_size: usize,
}

/// One measurement: operations per second and latency percentiles.
struct Figures {
    clients: usize,
    ops_per_sec: f64,
    p50: Duration,
    p99: Duration,
    errors: u64,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn measure(
    channel: tonic::transport::Channel,
    clients: usize,
    duration: Duration,
    value: Vec<u8>,
) -> Figures {
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for t in 0..clients {
        let mut grpc = tonic::client::Grpc::new(channel.clone());
        let stop = stop.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let request = PutRequest {
                    key: format!("b{clients}-{t}-{i}").into_bytes(),
                    value: value.clone(),
                };
                let done = match grpc.ready().await {
                    Ok(()) => grpc
                        .unary::<_, PutResponse, _>(
                            tonic::Request::new(request),
                            PathAndQuery::from_static("/etcdserverpb.KV/Put"),
                            tonic::codec::ProstCodec::default(),
                        )
                        .await
                        .is_ok_and(|r| r.get_ref().header.as_ref().is_some_and(|h| h.revision > 0)),
                    Err(_) => false,
                };
                if done {
                    latencies.push(started.elapsed());
                } else {
                    errors += 1;
                }
                i += 1;
            }
            (latencies, errors)
        }));
    }
    // As raft-node bench: let every client start, then measure a window.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::sleep(duration).await;
    stop.store(true, Ordering::Relaxed);
    let elapsed = started.elapsed() + Duration::from_millis(300);
    let mut all = Vec::new();
    let mut errors = 0;
    for task in tasks {
        if let Ok((l, e)) = task.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_unstable();
    Figures {
        clients,
        ops_per_sec: all.len() as f64 / elapsed.as_secs_f64(),
        p50: percentile(&all, 0.50),
        p99: percentile(&all, 0.99),
        errors,
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("etcd-bench: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let endpoint = match tonic::transport::Endpoint::from_shared(args.endpoint.clone()) {
            Ok(e) => e,
            Err(e) => {
                eprintln!("etcd-bench: bad --endpoint {}: {e}", args.endpoint);
                return ExitCode::from(2);
            }
        };
        let channel = match endpoint.connect().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("etcd-bench: cannot connect to {}: {e}", args.endpoint);
                return ExitCode::FAILURE;
            }
        };
        let value = vec![b'x'; args.value_size];
        println!(
            "{:<24} {:>7} {:>10} {:>8} {:>8} {:>7}",
            "operation", "clients", "ops/s", "p50 ms", "p99 ms", "errors"
        );
        for &clients in &args.clients {
            let f = measure(
                channel.clone(),
                clients,
                Duration::from_secs(args.duration_secs),
                value.clone(),
            )
            .await;
            println!(
                "{:<24} {:>7} {:>10.0} {:>8.2} {:>8.2} {:>7}",
                "etcd put",
                f.clients,
                f.ops_per_sec,
                f.p50.as_secs_f64() * 1e3,
                f.p99.as_secs_f64() * 1e3,
                f.errors
            );
        }
        ExitCode::SUCCESS
    })
}
