//! The upstream for `bench/run`: a minimal HTTP/1.1 server that answers every
//! request with the same small JSON body, so a benchmark of a proxy in front
//! of it measures the proxy rather than the backend.
//!
//! ```text
//! bench_upstream 127.0.0.1:PORT [THREADS]
//! ```
//!
//! Prints `listening on ADDR` once bound, then serves until killed. With one
//! thread (the default) it runs on a current-thread runtime, the cheapest per
//! request; more threads use a multi-thread runtime with that many workers.
//!
//! Deployment caveat: it is a load target, not a server. It has no timeouts,
//! no limits and no shutdown, and reads nothing of the request beyond its head.

use std::convert::Infallible;
use std::error::Error;
use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The body of every response: small, like a typical API answer.
const BODY: &[u8] = br#"{"ok":true}"#;

/// Answers one request; `Full` sets Content-Length, so connections stay alive.
async fn answer(_req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let mut response = Response::new(Full::new(Bytes::from_static(BODY)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

async fn serve(listener: TcpListener) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of descriptors and the like: back off rather than spin.
                eprintln!("bench_upstream: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        // Small responses must not wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            eprintln!("bench_upstream: cannot set TCP_NODELAY: {e}");
        }
        tokio::spawn(async move {
            // A client going away mid-request is normal under load; stay quiet.
            let _ = http1::Builder::new().serve_connection(TokioIo::new(stream), service_fn(answer)).await;
        });
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_upstream: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let Some(bind) = args.next() else {
        return Err("usage: bench_upstream 127.0.0.1:PORT [THREADS]".into());
    };
    let bind: SocketAddr = bind.parse().map_err(|e| format!("invalid address {bind:?}: {e}"))?;
    let threads: usize = match args.next() {
        Some(n) => n.parse().map_err(|e| format!("invalid thread count {n:?}: {e}"))?,
        None => 1,
    };
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    runtime.block_on(async {
        let listener = TcpListener::bind(bind).await?;
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "listening on {}", listener.local_addr()?)?;
        stdout.flush()?;
        drop(stdout);
        serve(listener).await;
        Ok(())
    })
}
