//! The WAF on live requests: routes with a WAF have their request line,
//! headers and body inspected by the route's engine (rules and decisions in
//! `portcullis_policy::waf`) before the upstream is called.
//!
//! Decision rules:
//! - Routes without a WAF cost one extension lookup. A request identical to
//!   one already inspected (same line, headers, body and client) reuses its
//!   verdict ([`VerdictCache`]) without waiting for a worker; its decision
//!   and event are made afresh.
//! - The body is read ahead up to `body_limit` and replayed byte for byte. A
//!   larger body is refused with 413 `waf.body_too_large`, or, with
//!   `over_limit = "pass"`, inspected up to the limit and forwarded whole.
//! - A body the engine could not read as the upstream does is refused
//!   without inspection: compressed, or in a charset such as UTF-7 or
//!   UTF-16, with 415 `request.encoding` before it is read
//!   (`portcullis_policy::encoding`); JSON the engine would not parse whole
//!   with 400 `waf.body_unparsable` (`portcullis_policy::waf::body`, which
//!   also strips a byte order mark from the inspected copy). In detect mode
//!   these are logged and pass, like any detection.
//! - A request of at most `inline_limit` bytes (line, headers, inspected
//!   body), for an engine that [runs inline](Engine::runs_inline), is
//!   inspected on the thread serving its connection, once that thread has
//!   been warmed up for the pool's engines: CRS on it costs tens of
//!   microseconds, less than handing it to a worker and back (two thread
//!   wake-ups and the request's bytes crossing cores). Such inspections
//!   are as many at once as there are threads serving connections, and
//!   each of those keeps its own regex caches and memory of recent values.
//! - Every other inspection runs on `workers` threads of its own, so long
//!   rule evaluation never stalls the async runtime, and the threads (each
//!   with its own allocator heap and regex caches, several MiB once CRS has
//!   run on it) are exactly as many as configured: on tokio's blocking pool
//!   a new thread was started whenever an inspection began before the last
//!   one's thread was back waiting, and the gateway's memory grew with
//!   them. Up to `queue` requests wait for a worker; beyond that (or if the
//!   engine fails or panics, inline too) the request is refused with 503
//!   `waf.overloaded` (fail closed, the default) or passes uninspected with
//!   a `waf.overloaded` event (fail open).
//! - A rule-set intervention is a 403 with a `waf.*` reason in block mode,
//!   and an event with action `log` (the request passes) in detect mode.
//! - The engine sees the request target as the client sent it, before path
//!   normalization: CRS has its own decoding and looks for the traversal
//!   sequences normalization removes.
//! - On a route with `responses` on, the upstream's response continues the
//!   request's transaction through phases 3 and 4: its head always, its
//!   body when the media type is one inspected and it is not compressed,
//!   read up to `response_body_limit` (a longer body has that much
//!   inspected, the rest streamed on). A leak (the outbound score reaching
//!   its threshold) withholds the response with 502 `waf.leak` in block
//!   mode, or is logged in detect mode. `101 Switching Protocols` and other
//!   informational answers are never held. An overloaded pool fails as
//!   requests do.
//!
//! Metrics (handles looked up once per route, in [`WafMetrics`]):
//! `portcullis_waf_inspections_total{route, phase}` counts verdicts reached
//! (the engine's or the cache's; `phase` = `request` or `response`),
//! `portcullis_waf_detections_total{route, phase, action}` those that
//! intervened (`action` = `block`, or `log` in detect mode), and
//! `portcullis_waf_inspection_duration_seconds{route, phase}` the time an
//! engine inspection took, waiting for a worker included (cached verdicts
//! are not timed). A request refused before inspection (encoding, size,
//! overload) is counted by its event only.
//!
//! Deployment caveat: the WAF reads bodies before the upstream does, so a
//! route's latency includes the whole upload; keep `body_limit` near what
//! the route really takes.

use futures_util::future::Either;
use std::cell::Cell;
use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body::Body as HttpBody;
use portcullis_policy::waf::{
    Decision, Engine, EngineError, Mode, Transaction, Verdict, VerdictCache, WafRequest, WafResponse, body, decide,
    decide_response,
};
use portcullis_policy::{Denied, Reason};
use tokio::sync::Semaphore;
use tower::{Layer, Service};

use crate::body::Prefix;
use crate::received::OriginalUri;
use crate::refusal::{MoreNoted, Noted, deny, note};
use crate::{Body, ConnInfo, RequestContext, RouteInfo};

/// What a route's WAF does.
#[derive(Debug)]
pub struct WafRoute {
    /// The engine loaded with the route's rule-set profile.
    pub engine: Arc<dyn Engine>,
    /// Block or only log.
    pub mode: Mode,
    /// Verdicts of identical requests already inspected by this engine.
    pub cache: Option<Arc<VerdictCache>>,
    /// Whether responses are inspected, and what a leak does.
    pub responses: Option<Mode>,
    /// Settings shared by every route of one configuration.
    pub settings: Arc<WafSettings>,
    /// The route's inspection counters and timings.
    pub metrics: WafMetrics,
}

/// Counter: WAF verdicts reached, by route and phase.
pub const INSPECTIONS: &str = "portcullis_waf_inspections_total";
/// Counter: WAF verdicts that intervened, by route, phase and action.
pub const DETECTIONS: &str = "portcullis_waf_detections_total";
/// Histogram: time of an engine inspection, by route and phase.
pub const INSPECTION_DURATION: &str = "portcullis_waf_inspection_duration_seconds";

/// A route's WAF metrics, looked up once when the route is built (see the
/// module docs).
#[derive(Debug, Clone)]
pub struct WafMetrics {
    request: PhaseMetrics,
    response: PhaseMetrics,
}

#[derive(Debug, Clone)]
struct PhaseMetrics {
    inspections: metrics::Counter,
    blocked: metrics::Counter,
    logged: metrics::Counter,
    duration: metrics::Histogram,
}

impl PhaseMetrics {
    fn new(route: &str, phase: &'static str) -> Self {
        let detections = |action: &'static str| metrics::counter!(DETECTIONS, "route" => route.to_owned(), "phase" => phase, "action" => action);
        Self {
            inspections: metrics::counter!(INSPECTIONS, "route" => route.to_owned(), "phase" => phase),
            blocked: detections("block"),
            logged: detections("log"),
            duration: metrics::histogram!(INSPECTION_DURATION, "route" => route.to_owned(), "phase" => phase),
        }
    }

    /// Counts a verdict's decision (and its inspection time, when the
    /// engine ran).
    fn decided(&self, decision: &Decision, took: Option<std::time::Duration>) {
        self.inspections.increment(1);
        match decision {
            Decision::Pass => {}
            Decision::Block(_) => self.blocked.increment(1),
            Decision::Log(_) => self.logged.increment(1),
        }
        if let Some(took) = took {
            self.duration.record(took);
        }
    }
}

impl WafMetrics {
    /// The handles of `route`'s series (made visible at 0).
    #[must_use]
    pub fn new(route: &str) -> Self {
        Self { request: PhaseMetrics::new(route, "request"), response: PhaseMetrics::new(route, "response") }
    }
}

/// How much is inspected and what happens under load.
#[derive(Debug)]
pub struct WafSettings {
    /// Body bytes inspected.
    pub body_limit: u64,
    /// Refuse bodies beyond `body_limit` (else inspect the first part).
    pub refuse_over_limit: bool,
    /// Let requests through uninspected when the pool is full.
    pub fail_open: bool,
    /// Response body bytes inspected.
    pub response_body_limit: u64,
    /// Media types (lower case, without parameters) whose response bodies
    /// are inspected.
    pub response_types: Vec<String>,
    /// The inspection workers.
    pub pool: WafPool,
}

/// A bounded set of inspection workers with a bounded queue, and the
/// threads serving connections for small requests.
#[derive(Debug)]
pub struct WafPool {
    /// Unique among the pools of this process: what a thread was warmed for.
    id: u64,
    /// Requests (and responses) up to this many bytes are inspected inline.
    inline_limit: usize,
    workers: usize,
    permits: Arc<Semaphore>,
    waiting: AtomicUsize,
    queue: usize,
    /// The workers' job queue; dropping the pool ends them.
    jobs: mpsc::Sender<Job>,
}

/// One inspection, run on a worker thread.
type Job = Box<dyn FnOnce() + Send>;

/// Pool ids, from 1.
static POOLS: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The pool whose engines this thread (one serving connections) has
    /// been warmed up for; 0: none.
    static WARMED_FOR: Cell<u64> = const { Cell::new(0) };
}

/// The pool could not inspect the request.
#[derive(Debug)]
enum Unavailable {
    Full,
    Failed(String),
}

impl WafPool {
    /// `workers` inspections at once on as many threads, `queue` more
    /// waiting; requests up to `inline_limit` bytes inspected inline.
    ///
    /// # Errors
    /// When a worker thread cannot be started.
    pub fn new(workers: usize, queue: usize, inline_limit: u64) -> std::io::Result<Self> {
        let workers = workers.max(1);
        let (jobs, receiver) = mpsc::channel::<Job>();
        let receiver = Arc::new(Mutex::new(receiver));
        for index in 0..workers {
            let receiver = receiver.clone();
            std::thread::Builder::new().name(format!("portcullis-waf-{index}")).spawn(move || {
                loop {
                    // The lock is held only while waiting for the next job.
                    let next = match receiver.lock() {
                        Ok(jobs) => jobs.recv(),
                        Err(_) => return,
                    };
                    match next {
                        Ok(job) => job(),
                        // The pool was dropped (a reload replaced it).
                        Err(_) => return,
                    }
                }
            })?;
        }
        Ok(Self {
            id: POOLS.fetch_add(1, Ordering::Relaxed),
            inline_limit: usize::try_from(inline_limit).unwrap_or(usize::MAX),
            workers,
            permits: Arc::new(Semaphore::new(workers)),
            waiting: AtomicUsize::new(0),
            queue,
            jobs,
        })
    }

    /// Whether an inspection of `size` bytes by `engine` runs on this
    /// thread: small enough, an engine that runs inline, and this thread
    /// warmed up for this pool.
    fn inline(&self, engine: &dyn Engine, size: usize) -> bool {
        size <= self.inline_limit && engine.runs_inline() && WARMED_FOR.with(Cell::get) == self.id
    }

    /// Runs the canary set through every engine once on each worker thread
    /// (`canary::warm_up`), before the pool serves: the regex engines keep
    /// their caches per thread, and a cold thread's first request costs
    /// milliseconds. Each worker takes exactly one warm-up job (they wait
    /// for each other before starting). Returns once all are done.
    pub async fn warm_up(&self, engines: &[Arc<dyn Engine>]) {
        let barrier = Arc::new(std::sync::Barrier::new(self.workers));
        let mut done = Vec::with_capacity(self.workers);
        for _ in 0..self.workers {
            let (barrier, engines) = (barrier.clone(), engines.to_vec());
            let (answer, answered) = tokio::sync::oneshot::channel::<()>();
            let job: Job = Box::new(move || {
                barrier.wait();
                let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
                    for engine in &engines {
                        portcullis_policy::waf::canary::warm_up(engine.as_ref());
                    }
                }));
                let _ = answer.send(());
            });
            if self.jobs.send(job).is_err() {
                return;
            }
            done.push(answered);
        }
        for answered in done {
            let _ = answered.await;
        }
    }

    /// Warms up the calling thread, one serving connections, for inline
    /// inspections by `engines` (the canary set, as each worker ran it):
    /// from then on this thread inspects this pool's requests of up to
    /// `inline_limit` bytes itself. Nothing to do without an inline limit
    /// or an engine that runs inline, or when done already.
    pub fn warm_here(&self, engines: &[Arc<dyn Engine>]) {
        if self.inline_limit == 0 || !engines.iter().any(|e| e.runs_inline()) || WARMED_FOR.with(Cell::get) == self.id {
            return;
        }
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| {
            for engine in engines.iter().filter(|e| e.runs_inline()) {
                portcullis_policy::waf::canary::warm_up(engine.as_ref());
            }
        }));
        WARMED_FOR.with(|w| w.set(self.id));
    }

    async fn inspect(&self, engine: Arc<dyn Engine>, request: WafRequest) -> Result<Verdict, Unavailable> {
        let inline = self.inline(engine.as_ref(), request_size(&request));
        self.run(inline, move || engine.inspect(&request)).await
    }

    /// Runs `work` here when `inline`, else on a worker: waits in the queue
    /// for one, or fails when the queue is full. Fails when the work fails
    /// or panics.
    async fn run<T: Send + 'static>(
        &self,
        inline: bool,
        work: impl FnOnce() -> Result<T, EngineError> + Send + 'static,
    ) -> Result<T, Unavailable> {
        if inline {
            return match std::panic::catch_unwind(AssertUnwindSafe(work)) {
                Ok(Ok(verdict)) => Ok(verdict),
                Ok(Err(e)) => Err(Unavailable::Failed(e.to_string())),
                Err(_) => Err(Unavailable::Failed("the engine panicked".into())),
            };
        }
        let permit = if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            permit
        } else {
            if self.waiting.fetch_add(1, Ordering::AcqRel) >= self.queue {
                self.waiting.fetch_sub(1, Ordering::AcqRel);
                return Err(Unavailable::Full);
            }
            let _waiting = Waiting(&self.waiting);
            self.permits.clone().acquire_owned().await.map_err(|_| Unavailable::Full)?
        };
        let (answer, answered) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let verdict = std::panic::catch_unwind(AssertUnwindSafe(work));
            // The permit goes back once the worker is free again.
            drop(permit);
            let _ = answer.send(verdict);
        });
        if self.jobs.send(job).is_err() {
            return Err(Unavailable::Failed("the inspection workers are gone".into()));
        }
        match answered.await {
            Ok(Ok(Ok(verdict))) => Ok(verdict),
            Ok(Ok(Err(e))) => Err(Unavailable::Failed(e.to_string())),
            Ok(Err(_)) => Err(Unavailable::Failed("the engine panicked".into())),
            Err(_) => Err(Unavailable::Failed("the inspection worker went away".into())),
        }
    }
}

/// Leaves the queue when dropped (also when the client goes away).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Adds the WAF.
#[derive(Debug, Clone, Copy, Default)]
pub struct WafLayer;

impl<S> Layer<S> for WafLayer {
    type Service = WafService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        WafService { inner }
    }
}

/// The WAF service.
#[derive(Debug, Clone)]
pub struct WafService<S> {
    inner: S,
}

impl<S> Service<Request<Body>> for WafService<S>
where
    S: Service<Request<Body>, Response = Response<Body>, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Either<S::Future, crate::GatewayFuture>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let Some(waf) = req.extensions().get::<Arc<RouteInfo>>().and_then(|r| r.waf.clone()) else {
            return Either::Left(self.inner.call(req));
        };
        let mut inner = self.inner.clone();
        std::mem::swap(&mut inner, &mut self.inner);
        Either::Right(Box::pin(async move {
            let (parts, body) = req.into_parts();
            let (unreadable, inspected, body) = match read_inspected(&parts, body, &waf.settings).await {
                Ok(read) => read,
                Err(denied) => return Ok(deny(denied)),
            };
            let req;
            let responses = waf.responses.filter(|_| waf.engine.inspects_responses());
            // The request (and its transaction) the response continues.
            let mut exchange: Option<(WafRequest, Option<Transaction>)> = None;
            let decision = if let Some(denied) = unreadable {
                if responses.is_some() {
                    exchange = Some((waf_request(&parts, Bytes::new()), None));
                }
                req = Request::from_parts(parts, body);
                match waf.mode {
                    Mode::Block => Decision::Block(denied),
                    Mode::Detect => Decision::Log(denied),
                }
            } else {
                let mut request = waf_request(&parts, inspected.bytes);
                request.body_complete = inspected.complete;
                req = Request::from_parts(parts, body);
                let key = waf.cache.as_ref().map(|cache| cache.key(&request));
                let cached = waf.cache.as_ref().zip(key.as_ref()).and_then(|(cache, key)| cache.get(key));
                let remember = |verdict: &Verdict| {
                    if let (Some(cache), Some(key)) = (&waf.cache, key) {
                        cache.insert(key, verdict.clone());
                    }
                };
                let from_cache = cached.is_some();
                let started = std::time::Instant::now();
                let verdict = match (cached, responses) {
                    (Some(verdict), _) => {
                        // A response after a cached verdict runs the request
                        // phases again first (there is no transaction).
                        exchange = responses.map(|_| (request, None));
                        Ok(verdict)
                    }
                    (None, None) => waf.settings.pool.inspect(waf.engine.clone(), request).await.inspect(remember),
                    (None, Some(_)) => {
                        let engine = waf.engine.clone();
                        let inline = waf.settings.pool.inline(engine.as_ref(), request_size(&request));
                        let begun =
                            waf.settings.pool.run(inline, move || engine.begin(&request).map(|(v, t)| (v, t, request)));
                        begun.await.map(|(verdict, transaction, request)| {
                            remember(&verdict);
                            exchange = Some((request, transaction));
                            verdict
                        })
                    }
                };
                match verdict {
                    Ok(verdict) => {
                        let decision = decide(waf.engine.name(), verdict, waf.mode);
                        waf.metrics.request.decided(&decision, (!from_cache).then(|| started.elapsed()));
                        decision
                    }
                    Err(unavailable) => overloaded(unavailable, waf.settings.fail_open),
                }
            };
            let mut response = match decision {
                Decision::Pass => crate::call_boxed(&mut inner, req).await?,
                Decision::Block(denied) => return Ok(deny(denied)),
                Decision::Log(denied) => {
                    let mut response = crate::call_boxed(&mut inner, req).await?;
                    note(&mut response, denied);
                    response
                }
            };
            if let (Some(mode), Some((request, transaction))) = (responses, exchange) {
                response = check_response(&waf, mode, request, transaction, response).await;
            }
            Ok(response)
        }))
    }
}

/// Runs the upstream's response through the response phases and decides:
/// the response as it was (its body replayed byte for byte), noted in
/// detect mode, or withheld with 502 `waf.leak` in block mode.
async fn check_response(
    waf: &WafRoute,
    mode: Mode,
    request: WafRequest,
    transaction: Option<Transaction>,
    response: Response<Body>,
) -> Response<Body> {
    if response.status().is_informational() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let settings = &waf.settings;
    let (inspected, body) = if inspects_body(&parts.headers, &settings.response_types) {
        let prefix = Prefix::read(body, settings.response_body_limit).await;
        let limit = usize::try_from(settings.response_body_limit).unwrap_or(usize::MAX);
        let bytes = prefix.bytes.slice(..prefix.bytes.len().min(limit));
        (Some(bytes), prefix.into_body())
    } else {
        (None, body)
    };
    let seen = WafResponse::new(parts.status, parts.version, &parts.headers, inspected);
    let engine = waf.engine.clone();
    let size =
        seen.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() + seen.body.as_ref().map_or(0, Bytes::len);
    let inline = settings.pool.inline(engine.as_ref(), size);
    let started = std::time::Instant::now();
    let verdict = settings.pool.run(inline, move || engine.inspect_response(&request, transaction, &seen)).await;
    let decision = match verdict {
        Ok(verdict) => {
            let decision = decide_response(waf.engine.name(), verdict, mode);
            waf.metrics.response.decided(&decision, Some(started.elapsed()));
            decision
        }
        Err(unavailable) => overloaded(unavailable, settings.fail_open),
    };
    match decision {
        Decision::Pass => Response::from_parts(parts, body),
        Decision::Log(denied) => {
            let mut response = Response::from_parts(parts, body);
            note(&mut response, denied);
            response
        }
        Decision::Block(denied) => {
            // The request's own notes (a detection let through) still count.
            let mut withheld = deny(denied);
            if let Some(Noted(first)) = parts.extensions.remove::<Noted>() {
                note(&mut withheld, first);
            }
            for more in parts.extensions.remove::<MoreNoted>().map(|m| m.0).unwrap_or_default() {
                note(&mut withheld, more);
            }
            withheld
        }
    }
}

/// Whether a response's body is inspected: a media type in `types`, and
/// no content coding (the engine would see compressed bytes).
fn inspects_body(headers: &http::HeaderMap, types: &[String]) -> bool {
    let identity = headers
        .get_all(http::header::CONTENT_ENCODING)
        .iter()
        .all(|v| v.to_str().is_ok_and(|v| v.trim().eq_ignore_ascii_case("identity")));
    let media = headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or_default().trim().to_ascii_lowercase());
    identity && media.is_some_and(|m| types.contains(&m))
}

/// The decision when the pool could not inspect: 503 `waf.overloaded`, or
/// logged and passed when the WAF fails open.
fn overloaded(unavailable: Unavailable, fail_open: bool) -> Decision {
    let detail = match unavailable {
        Unavailable::Full => "every inspection worker is busy and the queue is full".to_owned(),
        Unavailable::Failed(e) => e,
    };
    let denied = Denied::new(Reason::WafOverloaded)
        .with_detail(detail)
        .with_header(http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    if fail_open { Decision::Log(denied) } else { Decision::Block(denied) }
}

/// The request as the engine sees it ([`WafRequest::new`]), with the
/// target from before path normalization and the resolved client.
/// Reads the part of the body the engine inspects, returning the body to
/// forward whole. The first value is a body the engine could not read as
/// the upstream does (compressed, in another charset, JSON it does not
/// parse whole), decided by the route's mode; `Err` is a refusal in every
/// mode (too slow, too large).
async fn read_inspected(
    parts: &http::request::Parts,
    body: Body,
    settings: &WafSettings,
) -> Result<(Option<Denied>, Inspected, Body), Denied> {
    if body.is_end_stream() {
        return Ok((None, Inspected::whole(Bytes::new()), body));
    }
    if let Err(denied) = portcullis_policy::encoding::inspectable(&parts.headers) {
        return Ok((Some(denied), Inspected::whole(Bytes::new()), body));
    }
    let prefix = Prefix::read(body, settings.body_limit).await;
    if let Some(denied) = prefix.timed_out() {
        return Err(denied);
    }
    if let Err(denied) = portcullis_policy::encoding::inspectable_bytes(&parts.headers, &prefix.bytes) {
        return Ok((Some(denied), Inspected::whole(Bytes::new()), prefix.into_body()));
    }
    let limit = usize::try_from(settings.body_limit).unwrap_or(usize::MAX);
    if prefix.bytes.len() > limit {
        if settings.refuse_over_limit {
            return Err(Denied::new(Reason::WafBodyTooLarge)
                .with_detail(format!("body over the WAF's inspection limit of {limit} bytes")));
        }
        return Ok((None, Inspected { bytes: prefix.bytes.slice(..limit), complete: false }, prefix.into_body()));
    }
    let whole = prefix.bytes.clone();
    let json = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(body::is_json);
    if json && prefix.complete() {
        return match body::json_body(&whole) {
            Ok(inspected) => Ok((None, Inspected::whole(whole.slice_ref(inspected)), prefix.into_body())),
            Err(denied) => Ok((Some(denied), Inspected::whole(Bytes::new()), prefix.into_body())),
        };
    }
    Ok((None, Inspected::whole(whole), prefix.into_body()))
}

/// The bytes an inspection reads: target, headers and inspected body.
fn request_size(request: &WafRequest) -> usize {
    request.uri.len() + request.headers.iter().map(|(n, v)| n.len() + v.len()).sum::<usize>() + request.body.len()
}

/// The part of a body the engine inspects.
struct Inspected {
    bytes: Bytes,
    /// The whole body, not a prefix cut at the limit.
    complete: bool,
}

impl Inspected {
    const fn whole(bytes: Bytes) -> Self {
        Self { bytes, complete: true }
    }
}

fn waf_request(parts: &http::request::Parts, body: Bytes) -> WafRequest {
    let uri = parts.extensions.get::<OriginalUri>().map_or(&parts.uri, |o| &o.0);
    let client_ip = parts.extensions.get::<RequestContext>().map_or_else(
        || parts.extensions.get::<ConnInfo>().map_or(std::net::Ipv4Addr::UNSPECIFIED.into(), |c| c.peer.ip()),
        |c| c.client.ip,
    );
    let client_port = parts.extensions.get::<ConnInfo>().map_or(0, |c| c.peer.port());
    WafRequest::new(
        &parts.method,
        uri,
        parts.version,
        &parts.headers,
        body,
        std::net::SocketAddr::new(client_ip, client_port),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use portcullis_policy::waf::RuleMatch;

    use super::*;

    /// Blocks requests whose target contains "attack"; holds every inspection
    /// until released, to fill the pool.
    #[derive(Debug)]
    struct Toy {
        hold: AtomicBool,
    }

    impl Engine for Toy {
        fn name(&self) -> &'static str {
            "toy"
        }
        fn inspect(&self, request: &WafRequest) -> Result<Verdict, EngineError> {
            while self.hold.load(Ordering::Acquire) {
                std::thread::yield_now();
            }
            assert!(!request.uri.contains("panic"), "the engine panics");
            if let Ok(mut threads) = THREADS.lock() {
                threads.insert(std::thread::current().name().unwrap_or("unnamed").to_owned());
            }
            let attack = request.uri.contains("attack") || request.body.as_ref().windows(6).any(|w| w == b"attack");
            Ok(Verdict {
                intervened: attack,
                score: Some(if attack { 5 } else { 0 }),
                matches: if attack {
                    vec![RuleMatch { id: 942_100, location: "ARGS:q".into(), snippet: "attack".into() }]
                } else {
                    vec![]
                },
            })
        }
    }

    /// Names of the threads the toy engine ran on.
    static THREADS: std::sync::Mutex<std::collections::BTreeSet<String>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());

    fn request_for(uri: &str) -> WafRequest {
        WafRequest {
            method: "GET".into(),
            uri: uri.into(),
            version: "HTTP/1.1",
            headers: vec![],
            body: Bytes::new(),
            body_complete: true,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            client_port: 1,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn inspections_run_on_exactly_the_configured_threads_and_survive_a_panicking_engine() {
        let toy = Arc::new(Toy { hold: AtomicBool::new(false) });
        // The toy engine does not run inline: every inspection, small ones
        // too, goes to the workers.
        let pool = Arc::new(WafPool::new(2, 1000, 1 << 14).unwrap());
        let tasks: Vec<_> = (0..400)
            .map(|i| {
                let (pool, toy) = (pool.clone(), toy.clone());
                tokio::spawn(async move { pool.inspect(toy, request_for(&format!("/item/{i}"))).await })
            })
            .collect();
        for task in tasks {
            assert!(task.await.unwrap().is_ok());
        }
        let threads = THREADS.lock().unwrap().clone();
        assert!(
            !threads.is_empty() && threads.iter().all(|t| t == "portcullis-waf-0" || t == "portcullis-waf-1"),
            "inspections ran on {threads:?}"
        );
        // A panicking engine is a failed inspection, and costs no worker.
        for _ in 0..3 {
            assert!(matches!(pool.inspect(toy.clone(), request_for("/panic")).await, Err(Unavailable::Failed(_))));
        }
        assert!(pool.inspect(toy.clone(), request_for("/after")).await.is_ok());
        assert_eq!(pool.permits.available_permits(), 2);
    }

    /// Counts the inspections each thread ran.
    #[derive(Debug, Default)]
    struct Counting(Mutex<std::collections::BTreeMap<String, usize>>);

    impl Engine for Counting {
        fn name(&self) -> &'static str {
            "counting"
        }
        fn inspect(&self, _: &WafRequest) -> Result<Verdict, EngineError> {
            let name = std::thread::current().name().unwrap_or("unnamed").to_owned();
            *self.0.lock().unwrap().entry(name).or_default() += 1;
            Ok(Verdict::default())
        }
    }

    #[tokio::test]
    async fn every_worker_warms_up_once_before_serving() {
        let pool = WafPool::new(3, 10, 0).unwrap();
        let engine = Arc::new(Counting::default());
        pool.warm_up(&[engine.clone() as Arc<dyn Engine>]).await;
        let counts = engine.0.lock().unwrap().clone();
        let threads: Vec<&str> = counts.keys().map(String::as_str).collect();
        assert_eq!(threads, ["portcullis-waf-0", "portcullis-waf-1", "portcullis-waf-2"], "{counts:?}");
        let per_thread: Vec<usize> = counts.values().copied().collect();
        assert!(per_thread[0] >= 5 && per_thread.iter().all(|n| *n == per_thread[0]), "{counts:?}");
        assert_eq!(pool.permits.available_permits(), 3);
    }

    #[tokio::test]
    async fn a_full_pool_fails_closed_and_recovers() {
        let toy = Arc::new(Toy { hold: AtomicBool::new(true) });
        let pool = Arc::new(WafPool::new(1, 1, 0).unwrap());
        let request = || WafRequest {
            method: "GET".into(),
            uri: "/".into(),
            version: "HTTP/1.1",
            headers: vec![],
            body: Bytes::new(),
            body_complete: true,
            client_ip: std::net::Ipv4Addr::LOCALHOST.into(),
            client_port: 1,
        };
        let running = tokio::spawn({
            let (pool, toy) = (pool.clone(), toy.clone());
            async move { pool.inspect(toy, request()).await }
        });
        while pool.permits.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let queued = tokio::spawn({
            let (pool, toy) = (pool.clone(), toy.clone());
            async move { pool.inspect(toy, request()).await }
        });
        while pool.waiting.load(Ordering::Acquire) == 0 {
            tokio::task::yield_now().await;
        }
        assert!(matches!(pool.inspect(toy.clone(), request()).await, Err(Unavailable::Full)));
        toy.hold.store(false, Ordering::Release);
        assert!(running.await.unwrap().is_ok());
        assert!(queued.await.unwrap().is_ok());
        assert_eq!(pool.waiting.load(Ordering::Acquire), 0);
        assert!(pool.inspect(toy, request()).await.is_ok());
    }

    /// Records the thread of each inspection (and of the warm-up's apart);
    /// runs inline; panics on `/panic`.
    #[derive(Debug, Default)]
    struct Inline {
        warmed: Mutex<Vec<String>>,
        inspected: Mutex<Vec<String>>,
    }

    impl Engine for Inline {
        fn name(&self) -> &'static str {
            "inline"
        }
        fn runs_inline(&self) -> bool {
            true
        }
        fn inspect(&self, request: &WafRequest) -> Result<Verdict, EngineError> {
            assert!(!request.uri.contains("panic"), "the engine panics");
            let thread = std::thread::current();
            let name = format!("{} {:?}", thread.name().unwrap_or("unnamed"), thread.id());
            // The canary set's client (see `canary::warm_up`).
            if request.client_ip == std::net::IpAddr::from([192, 0, 2, 10]) {
                self.warmed.lock().unwrap().push(name);
            } else {
                self.inspected.lock().unwrap().push(name);
            }
            Ok(Verdict::default())
        }
    }

    fn on_workers(threads: &[String]) -> usize {
        threads.iter().filter(|t| t.starts_with("portcullis-waf-")).count()
    }

    #[tokio::test]
    async fn small_requests_are_inspected_inline_on_a_warmed_thread_large_ones_on_the_workers() {
        let engine = Arc::new(Inline::default());
        let engines = [engine.clone() as Arc<dyn Engine>];
        let pool = WafPool::new(2, 100, 1024).unwrap();
        pool.warm_up(&engines).await;
        // This thread is cold: even a small request goes to a worker.
        pool.inspect(engine.clone(), request_for("/before")).await.unwrap();
        assert_eq!(on_workers(&engine.inspected.lock().unwrap()), 1);
        pool.warm_here(&engines);
        let warmed: std::collections::BTreeSet<String> = engine.warmed.lock().unwrap().iter().cloned().collect();
        assert_eq!(warmed.len(), 3, "both workers and this thread: {warmed:?}");
        engine.inspected.lock().unwrap().clear();
        for i in 0..10 {
            pool.inspect(engine.clone(), request_for(&format!("/item/{i}"))).await.unwrap();
        }
        // Over the limit: a worker.
        let mut large = request_for("/large");
        large.body = Bytes::from(vec![b'a'; 2000]);
        pool.inspect(engine.clone(), large).await.unwrap();
        let threads = engine.inspected.lock().unwrap().clone();
        assert_eq!(on_workers(&threads[..10]), 0, "small requests went to the workers: {threads:?}");
        assert_eq!(on_workers(&threads[10..]), 1, "the large request stayed here: {threads:?}");
        // An engine panicking inline is a failed inspection; the thread
        // goes on serving.
        assert!(matches!(pool.inspect(engine.clone(), request_for("/panic")).await, Err(Unavailable::Failed(_))));
        assert!(pool.inspect(engine.clone(), request_for("/after")).await.is_ok());
        assert_eq!(pool.permits.available_permits(), 2);
        // A new pool (a reload) needs its own warm-up of this thread.
        engine.inspected.lock().unwrap().clear();
        let next = WafPool::new(1, 10, 1024).unwrap();
        next.inspect(engine.clone(), request_for("/next")).await.unwrap();
        assert_eq!(on_workers(&engine.inspected.lock().unwrap()), 1);
    }

    #[tokio::test]
    async fn without_an_inline_limit_every_inspection_goes_to_the_workers() {
        let engine = Arc::new(Inline::default());
        let engines = [engine.clone() as Arc<dyn Engine>];
        let pool = WafPool::new(2, 100, 0).unwrap();
        pool.warm_up(&engines).await;
        pool.warm_here(&engines);
        let warmed = engine.warmed.lock().unwrap().clone();
        assert_eq!(on_workers(&warmed), warmed.len(), "warm-ups ran on {warmed:?}");
        for i in 0..10 {
            pool.inspect(engine.clone(), request_for(&format!("/item/{i}"))).await.unwrap();
        }
        assert_eq!(on_workers(&engine.inspected.lock().unwrap()), 10);
    }
}
