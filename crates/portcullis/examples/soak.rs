//! The client and upstream of `bench/soak`: a long run of the mixed traffic in
//! `tests/support/soak.rs` (the same mix `tests/soak.rs` runs briefly)
//! through a running gateway, with the gateway's memory, threads and open
//! descriptors sampled from `/proc` as it goes.
//!
//! ```text
//! soak config --dir DIR --upstream ADDR --listen ADDR --admin ADDR --crs DIR
//! soak run    --dir DIR --gateway ADDR --admin ADDR --upstream ADDR --api-key-file FILE
//!             [--requests 1000000] [--connections 32] [--fresh-every 19] [--threads 2]
//!             [--pid PID] [--sample-ms 1000] [--json FILE] [--skip KIND,...]
//! ```
//!
//! `config` writes the gateway configuration, its OpenAPI document and the
//! issuer's key pair into DIR. `run` serves the upstream on ADDR, primes the
//! gateway (spends the rate-limited route's one request, fetches a CSRF
//! token), sends the mix, and prints per kind what was sent and how many
//! answers were unexpected, requests/s, the event counters' comparison and
//! the `/proc` samples; `--json` writes all of it. Exit status 1 when any
//! answer was unexpected or missing, the upstream did not see exactly the
//! admitted requests, or the event counters disagree with the client.
//!
//! Deployment caveat: benchmark tooling (tokens from the test-only forge, a
//! constant admin token); loopback only.

#[path = "../tests/support/soak.rs"]
mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use serde_json::json;

#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Write the gateway configuration and its files.
    Config {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        upstream: SocketAddr,
        #[arg(long)]
        listen: SocketAddr,
        #[arg(long)]
        admin: SocketAddr,
        /// OWASP CRS v4 release directory.
        #[arg(long)]
        crs: PathBuf,
    },
    /// Serve the upstream and send the mix through the gateway.
    Run(RunArgs),
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    #[arg(long)]
    dir: PathBuf,
    #[arg(long)]
    gateway: SocketAddr,
    #[arg(long)]
    admin: SocketAddr,
    /// Where to serve the upstream (the address the configuration names).
    #[arg(long)]
    upstream: SocketAddr,
    /// A file holding a key from `portcullis apikey create`.
    #[arg(long)]
    api_key_file: PathBuf,
    #[arg(long, default_value_t = 1_000_000)]
    requests: u64,
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Every N-th request on a fresh connection (0: none).
    #[arg(long, default_value_t = 19)]
    fresh_every: u64,
    /// Runtime threads of the client and upstream.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// The gateway's process id, to sample `/proc`.
    #[arg(long)]
    pid: Option<u32>,
    #[arg(long, default_value_t = 1000)]
    sample_ms: u64,
    #[arg(long)]
    json: Option<PathBuf>,
    /// Kinds of the mix not to send (names as in the report), to find out
    /// which traffic a figure comes from.
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let result = match args.command {
        Command::Config { dir, upstream, listen, admin, crs } => {
            soak::Files::write(&dir, &soak::Addresses { upstream, listen, admin }, &crs).map(|files| {
                println!("{}", files.config().display());
                true
            })
        }
        Command::Run(run_args) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(run_args.threads.max(1))
            .enable_all()
            .build()
            .map_err(soak::Error::from)
            .and_then(|runtime| runtime.block_on(run(run_args))),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

/// What `/proc` says about the gateway at one moment.
#[derive(Debug, Clone, Copy, Default)]
struct ProcStats {
    rss_kib: u64,
    threads: u64,
    fds: u64,
    /// User + system CPU time, in clock ticks.
    cpu_ticks: u64,
}

fn proc_stats(pid: u32) -> Option<ProcStats> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status.lines().find_map(|l| l.strip_prefix(name)).and_then(|v| v.split_whitespace().next()?.parse().ok())
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?.count() as u64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the ")" of comm: utime and stime are the 12th and 13th.
    let after_comm = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let tick = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStats { rss_kib: field("VmRSS:")?, threads: field("Threads:")?, fds, cpu_ticks: tick(11)? + tick(12)? })
}

#[derive(Debug, Clone, Copy)]
struct Sample {
    seconds: f64,
    done: u64,
    stats: ProcStats,
}

async fn run(args: RunArgs) -> Result<bool, soak::Error> {
    if let Some(unknown) = args.skip.iter().find(|name| !soak::MIX.iter().any(|k| k.name == name.as_str())) {
        return Err(format!("--skip {unknown}: no such kind in the mix").into());
    }
    let schedule: Vec<usize> =
        soak::schedule().into_iter().filter(|&i| !args.skip.iter().any(|name| soak::MIX[i].name == name)).collect();
    if schedule.is_empty() {
        return Err("--skip leaves nothing to send".into());
    }
    let files = soak::Files { dir: std::fs::canonicalize(&args.dir)? };
    let api_key = std::fs::read_to_string(&args.api_key_file)?.trim().to_owned();
    let upstream = soak::Upstream::start(args.upstream).await?;
    eprintln!("soak: upstream on {}", upstream.addr);
    let credentials = soak::Credentials::new(&files, args.gateway, api_key).await?;
    soak::prime(&credentials, args.gateway).await?;

    let metrics_before = soak::Metrics::fetch(args.admin).await?;
    let upstream_before = upstream.seen();
    let before = args.pid.and_then(proc_stats);

    let done = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let sampler = args.pid.map(|pid| {
        let (done, stop) = (done.clone(), stop.clone());
        let every = Duration::from_millis(args.sample_ms.max(10));
        let total = args.requests;
        tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut ticker = tokio::time::interval(every);
            let mut last_print = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                ticker.tick().await;
                let Some(stats) = proc_stats(pid) else { break };
                let sample =
                    Sample { seconds: started.elapsed().as_secs_f64(), done: done.load(Ordering::Relaxed), stats };
                if last_print.elapsed() >= Duration::from_secs(10) {
                    last_print = Instant::now();
                    eprintln!(
                        "soak: {:>8}/{total} requests, {:>6.0} s, gateway RSS {:.1} MiB, {} threads, {} fds",
                        sample.done,
                        sample.seconds,
                        mib(stats.rss_kib),
                        stats.threads,
                        stats.fds
                    );
                }
                samples.push(sample);
            }
            samples
        })
    });

    let options = soak::Options {
        gateway: args.gateway,
        requests: args.requests,
        connections: args.connections,
        fresh_every: args.fresh_every,
    };
    let tally = soak::drive(options, schedule, Arc::new(credentials), done.clone()).await;
    let elapsed = started.elapsed();
    let at_end = args.pid.and_then(proc_stats);
    stop.store(true, Ordering::Relaxed);
    let mut samples = match sampler {
        Some(task) => task.await?,
        None => Vec::new(),
    };
    if let (Some(stats), true) = (at_end, args.pid.is_some()) {
        samples.push(Sample { seconds: elapsed.as_secs_f64(), done: done.load(Ordering::Relaxed), stats });
    }
    let metrics_after = soak::Metrics::fetch(args.admin).await?;
    let counted = metrics_after.since(&metrics_before);
    let upstream_seen = upstream.seen() - upstream_before;
    // The client's connections are closed; the gateway's idle upstream
    // connections close after its pool_idle_timeout (4 s). Wait for the
    // descriptors to come back to where they were, for at most 10 s.
    let settled = match (args.pid, before) {
        (Some(pid), Some(before)) => {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut last = proc_stats(pid);
            while Instant::now() < deadline && last.is_some_and(|s| s.fds > before.fds) {
                tokio::time::sleep(Duration::from_millis(200)).await;
                last = proc_stats(pid);
            }
            last
        }
        _ => None,
    };

    let problems = soak::compare_events(&tally, &counted, &metrics_after);
    let upstream_ok = upstream_seen == tally.admitted;
    let ok = tally.unexpected == 0 && tally.transport_errors == 0 && problems.is_empty() && upstream_ok;
    let rps = tally.sent() as f64 / elapsed.as_secs_f64();

    println!(
        "Soak: {} requests over {} connections (every {}th on a fresh one) in {:.1} s: {rps:.0} req/s",
        tally.sent(),
        args.connections,
        args.fresh_every,
        elapsed.as_secs_f64()
    );
    print!("{}", soak::mix_table(&tally));
    println!(
        "unexpected answers: {}; requests without an answer: {}; connections opened: {}",
        tally.unexpected, tally.transport_errors, tally.connections_opened
    );
    for line in &tally.samples {
        println!("  {line}");
    }
    println!(
        "admitted (2xx): {}; requests the upstream saw: {upstream_seen} ({})",
        tally.admitted,
        if upstream_ok { "equal" } else { "DIFFERENT" }
    );
    println!("refusals by reason (client) = deny events (gateway /metrics):");
    for (reason, n) in &tally.reasons {
        let gateway = counted.get(&(reason.clone(), "deny".to_owned())).copied().unwrap_or(0);
        println!("  {reason:<22} {n:>9} {gateway:>9}{}", if gateway == *n { "" } else { "  MISMATCH" });
    }
    for problem in &problems {
        println!("  {problem}");
    }
    println!("event series in /metrics: {} before, {} after", metrics_before.event_series, metrics_after.event_series);
    if let (Some(b), Some(e)) = (before, at_end) {
        let hz = 100.0; // USER_HZ on Linux
        let cpu_us = (e.cpu_ticks - b.cpu_ticks) as f64 / hz * 1e6 / tally.sent().max(1) as f64;
        println!("gateway CPU: {cpu_us:.1} µs per request");
        println!("gateway before: RSS {:.1} MiB, {} threads, {} fds", mib(b.rss_kib), b.threads, b.fds);
        println!("gateway at end: RSS {:.1} MiB, {} threads, {} fds", mib(e.rss_kib), e.threads, e.fds);
    }
    if let Some(s) = settled {
        println!(
            "gateway after (client gone, ≤ 10 s): RSS {:.1} MiB, {} threads, {} fds",
            mib(s.rss_kib),
            s.threads,
            s.fds
        );
    }

    if let Some(path) = &args.json {
        let stats = |s: Option<ProcStats>| {
            s.map(|s| json!({"rss_kib": s.rss_kib, "threads": s.threads, "fds": s.fds, "cpu_ticks": s.cpu_ticks}))
        };
        let report = json!({
            "requests": tally.sent(),
            "seconds": elapsed.as_secs_f64(),
            "rps": rps,
            "connections": args.connections,
            "fresh_every": args.fresh_every,
            "connections_opened": tally.connections_opened,
            "unexpected": tally.unexpected,
            "transport_errors": tally.transport_errors,
            "unexpected_samples": tally.samples,
            "admitted": tally.admitted,
            "upstream_seen": upstream_seen,
            "kinds": soak::MIX.iter().zip(&tally.kinds).map(|(k, t)| json!({
                "name": k.name, "weight": k.weight, "status": k.status, "reason": k.reason,
                "request": k.what, "sent": t.sent, "unexpected": t.unexpected,
            })).collect::<Vec<_>>(),
            "refusals": tally.reasons,
            "events": counted.iter().map(|((reason, action), n)| json!({"reason": reason, "action": action, "count": n})).collect::<Vec<_>>(),
            "event_problems": problems,
            "event_series": {"before": metrics_before.event_series, "after": metrics_after.event_series},
            "gateway": {"before": stats(before), "at_end": stats(at_end), "after": stats(settled)},
            "samples": samples.iter().map(|s| json!({
                "seconds": s.seconds, "done": s.done, "rss_kib": s.stats.rss_kib,
                "threads": s.stats.threads, "fds": s.stats.fds,
            })).collect::<Vec<_>>(),
            "ok": ok,
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(ok)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}
