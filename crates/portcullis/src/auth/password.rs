//! Password hashing for the built-in accounts, off the async workers.
//!
//! Defends against: a login flood starving the proxy (argon2id costs tens of
//! milliseconds of a core and 19 MiB per hash, so hashes run on a pool of
//! `concurrency` dedicated threads, named [`THREAD_NAME`], whose scheduling
//! priority is lowered once when they start ([`HASH_NICE`] nicer, on Linux):
//! when the cores are contended the kernel gives the proxy's workers first
//! claim on them and hashing the rest, and when they are idle a hash runs at
//! full speed. A caller that cannot get a slot within `queue_timeout` is told
//! [`PasswordError::Busy`] rather than queueing without end), and telling
//! unknown accounts from wrong passwords by timing (an unknown account is
//! checked against a dummy hash made with the current parameters, so both
//! cost one argon2id run).
//!
//! Decision rules: the rules of `portcullis_policy::password` (NFC, 12–128
//! characters, common passwords refused, argon2id no weaker than OWASP's
//! parameters); a match against a hash made with other parameters reports
//! `rehash`, and the caller stores a new hash of the same password.
//!
//! Deployment caveat: `concurrency` cores can be busy hashing when nothing
//! else wants them (half the machine's by default); under a proxy load that
//! fills every core, logins slow down first and get `Busy` after
//! `queue_timeout`, by design. Where the priority cannot be lowered (a
//! seccomp profile that refuses `setpriority`, a platform other than Linux)
//! the threads hash at normal priority and one warning says so; keep the
//! login rate limits on, or a flood that stays under them still holds those
//! cores.

use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use aws_lc_rs::rand;
use portcullis_policy::password::{self, HashError, HashParams, Rejected, SALT_BYTES};
use tokio::sync::{Semaphore, oneshot};

use crate::store::hex;

/// How long a caller waits for a hashing slot by default.
pub const DEFAULT_QUEUE_TIMEOUT: Duration = Duration::from_secs(2);

/// The name of every hashing thread (what `ps -L` and `top -H` show; Linux
/// keeps 15 bytes of a thread's name).
pub const THREAD_NAME: &str = "portcullis-hash";

/// How much nicer than the rest of the gateway the hashing threads make
/// themselves (nice 10 for a gateway at the normal 0; 19, the lowest
/// priority, is the most). See docs/defaults.md for why this value.
pub const HASH_NICE: i32 = 10;

/// The largest nice value Linux knows.
#[cfg(any(target_os = "linux", target_os = "android"))]
const LOWEST_PRIORITY: i32 = 19;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// A new password breaks the policy (the client's doing).
    #[error(transparent)]
    Rejected(#[from] Rejected),
    /// Every hashing slot stayed busy for the whole queue timeout.
    #[error("password hashing is saturated; try again later")]
    Busy,
    /// Invalid parameters, or a stored hash this code cannot have written.
    #[error(transparent)]
    Hash(#[from] HashError),
    /// The system's random generator failed.
    #[error("the system random generator failed")]
    Random,
    /// A hashing task panicked or was cancelled.
    #[error("a password hashing task failed: {0}")]
    Task(String),
    /// The operating system refused to start a hashing thread.
    #[error("could not start a password hashing thread: {0}")]
    Spawn(#[source] std::io::Error),
    /// The pool was given no slots.
    #[error("the password hashing pool needs at least one slot")]
    NoSlots,
}

/// The outcome of checking a presented password.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verified {
    /// It matches. `rehash`: the stored hash was made with other parameters;
    /// store [`PasswordHasher::hash_new`]'s hash of the same password.
    Match {
        /// Whether the stored hash should be replaced.
        rehash: bool,
    },
    /// It does not match, or there was no account to match.
    Mismatch,
}

/// Hashes and checks passwords on a bounded pool. Cheap to clone; the clones
/// share the pool.
#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: HashParams,
    slots: Arc<Semaphore>,
    /// Feeds the hashing threads; they end once every clone is dropped.
    jobs: Sender<Job>,
    queue_timeout: Duration,
    /// A hash of a random password made with `params`: what an unknown
    /// account's password is checked against.
    dummy: String,
}

impl fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PasswordHasher")
            .field("params", &self.inner.params)
            .field("idle_slots", &self.idle_slots())
            .field("queue_timeout", &self.inner.queue_timeout)
            .finish_non_exhaustive()
    }
}

impl PasswordHasher {
    /// A pool hashing with `params`, `concurrency` hashes at once, callers
    /// waiting at most `queue_timeout` for a slot. Makes the dummy hash, so it
    /// takes one hash's time.
    ///
    /// # Errors
    /// Parameters weaker than OWASP's, no slots, or a random generator failure.
    pub async fn new(params: HashParams, concurrency: usize, queue_timeout: Duration) -> Result<Self, PasswordError> {
        if concurrency == 0 {
            return Err(PasswordError::NoSlots);
        }
        params.argon2()?;
        let slots = Arc::new(Semaphore::new(concurrency));
        let jobs = start_threads(concurrency)?;
        let (secret, salt) = (hex(&random::<32>()?), random::<SALT_BYTES>()?);
        let dummy = run(&slots, &jobs, queue_timeout, move || Ok(password::hash(&secret, &salt, &params)?)).await?;
        Ok(Self { inner: Arc::new(Inner { params, slots, jobs, queue_timeout, dummy }) })
    }

    /// Half the machine's cores, at least one: the default `concurrency`.
    #[must_use]
    pub fn default_concurrency() -> usize {
        std::thread::available_parallelism().map_or(1, |n| (n.get() / 2).max(1))
    }

    /// The parameters new hashes are made with.
    #[must_use]
    pub fn params(&self) -> HashParams {
        self.inner.params
    }

    /// Slots not hashing right now (for metrics and tests).
    #[must_use]
    pub fn idle_slots(&self) -> usize {
        self.inner.slots.available_permits()
    }

    /// Checks a new password against the policy and hashes its normalized
    /// form: the PHC string to store.
    ///
    /// # Errors
    /// The policy refuses it, the pool is saturated, or hashing failed.
    pub async fn hash_new(&self, password: &str) -> Result<String, PasswordError> {
        let normalized = password::check(password)?;
        self.hash_normalized(normalized).await
    }

    /// Checks `password` against `stored`, the account's hash, or against the
    /// dummy hash when there is no account (or it has no password), which
    /// costs the same and always answers [`Verified::Mismatch`].
    ///
    /// # Errors
    /// The pool is saturated, or `stored` is not an argon2id hash.
    pub async fn verify(&self, password: &str, stored: Option<&str>) -> Result<Verified, PasswordError> {
        let normalized = password::normalize(password);
        // No stored password can be longer than the policy's limit; the
        // dummy keeps the answer's time the same.
        let too_long = normalized.chars().count() > password::MAX_CHARS;
        let (hash, real) = match stored {
            Some(stored) if !too_long => (stored.to_owned(), true),
            _ => (self.inner.dummy.clone(), false),
        };
        let params = self.inner.params;
        run(&self.inner.slots, &self.inner.jobs, self.inner.queue_timeout, move || {
            let matched = password::verify(&normalized, &hash)?;
            Ok(if matched && real {
                Verified::Match { rehash: password::needs_rehash(&hash, &params) }
            } else {
                Verified::Mismatch
            })
        })
        .await
    }

    /// Hashes a password that already verified against an older hash, with
    /// the current parameters: the login's rehash. The policy is not asked
    /// again (it may have changed since the password was chosen; the user
    /// is not locked out for it).
    ///
    /// # Errors
    /// The pool is saturated, or hashing failed.
    pub async fn rehash(&self, password: &str) -> Result<String, PasswordError> {
        self.hash_normalized(password::normalize(password)).await
    }

    async fn hash_normalized(&self, normalized: String) -> Result<String, PasswordError> {
        let salt = random::<SALT_BYTES>()?;
        let params = self.inner.params;
        run(&self.inner.slots, &self.inner.jobs, self.inner.queue_timeout, move || {
            Ok(password::hash(&normalized, &salt, &params)?)
        })
        .await
    }
}

/// Work for a hashing thread; it sends its own result.
type Job = Box<dyn FnOnce() + Send>;

/// Starts `count` hashing threads taking jobs from one channel, and returns
/// its sender. The threads end when the sender and all its clones are gone.
fn start_threads(count: usize) -> Result<Sender<Job>, PasswordError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for _ in 0..count {
        let queue = Arc::clone(&queue);
        std::thread::Builder::new()
            .name(THREAD_NAME.to_owned())
            .spawn(move || hashing_thread(&queue))
            .map_err(PasswordError::Spawn)?;
    }
    Ok(jobs)
}

fn hashing_thread(queue: &Mutex<Receiver<Job>>) {
    lower_priority();
    loop {
        // The lock is held only while waiting: the next job's thread waits
        // for it while this one hashes.
        let next = queue.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = next else { return };
        // A panicking job drops its result sender (the caller sees `Task`);
        // the thread stays for the next one.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Warned about once per process, not once per thread or pool.
static PRIORITY_WARNED: AtomicBool = AtomicBool::new(false);

/// Makes the calling thread [`HASH_NICE`] nicer; says once if it cannot.
fn lower_priority() {
    if let Err(e) = set_nice(HASH_NICE)
        && !PRIORITY_WARNED.swap(true, Ordering::Relaxed)
    {
        tracing::warn!(
            error = %e,
            nicer_by = HASH_NICE,
            "could not lower the password hashing threads' priority; they hash at normal priority, \
             so a login flood takes a fair share of the cores from proxying"
        );
    }
}

/// On Linux a nice value belongs to one thread: `setpriority` on the
/// thread's id changes that thread only. Relative to the value the thread
/// inherited, so a gateway started with `nice -n 5` still hashes below its
/// proxy workers.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn set_nice(increment: i32) -> std::io::Result<()> {
    let me = Some(rustix::thread::gettid());
    let current = rustix::process::getpriority_process(me)?;
    let nice = current.saturating_add(increment).min(LOWEST_PRIORITY);
    rustix::process::setpriority_process(me, nice).map_err(std::io::Error::from)
}

/// Elsewhere `setpriority` would renice the whole process: leave it alone.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn set_nice(_increment: i32) -> std::io::Result<()> {
    Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "per-thread priorities are only set on Linux"))
}

/// Runs `job` on a hashing thread once one of `slots` is free, waiting at
/// most `queue_timeout` for it. The slot is held until the job ends, even if
/// the caller stops waiting, so a free slot always finds an idle thread.
async fn run<T: Send + 'static>(
    slots: &Arc<Semaphore>,
    jobs: &Sender<Job>,
    queue_timeout: Duration,
    job: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
) -> Result<T, PasswordError> {
    let slot = tokio::time::timeout(queue_timeout, slots.clone().acquire_owned())
        .await
        .map_err(|_| PasswordError::Busy)?
        .map_err(|_| PasswordError::Busy)?;
    let (done, result) = oneshot::channel();
    jobs.send(Box::new(move || {
        let result = job();
        // Free before answering: a caller holding its result finds the slot free.
        drop(slot);
        // The caller may have stopped waiting; its result is then dropped.
        let _ = done.send(result);
    }))
    .map_err(|_| PasswordError::Task("the hashing threads have stopped".to_owned()))?;
    result.await.map_err(|_| PasswordError::Task("the hashing job panicked".to_owned()))?
}

fn random<const N: usize>() -> Result<[u8; N], PasswordError> {
    let mut bytes = [0; N];
    rand::fill(&mut bytes).map_err(|_| PasswordError::Random)?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "correct horse battery staple";

    async fn hasher(concurrency: usize, queue_timeout: Duration) -> PasswordHasher {
        PasswordHasher::new(HashParams::OWASP, concurrency, queue_timeout).await.unwrap()
    }

    #[tokio::test]
    async fn new_passwords_are_checked_then_hashed() {
        let h = hasher(2, DEFAULT_QUEUE_TIMEOUT).await;
        assert!(matches!(h.hash_new("short").await, Err(PasswordError::Rejected(Rejected::TooShort))));
        assert!(matches!(h.hash_new("password123456").await, Err(PasswordError::Rejected(Rejected::Common))));
        let stored = h.hash_new(GOOD).await.unwrap();
        assert!(stored.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{stored}");
        assert_ne!(stored, h.hash_new(GOOD).await.unwrap(), "each hash has its own salt");
        assert_eq!(h.verify(GOOD, Some(&stored)).await.unwrap(), Verified::Match { rehash: false });
        assert_eq!(h.verify("correct horse battery stable", Some(&stored)).await.unwrap(), Verified::Mismatch);
    }

    #[tokio::test]
    async fn the_presented_password_is_normalized_too() {
        let h = hasher(1, DEFAULT_QUEUE_TIMEOUT).await;
        let stored = h.hash_new("caf\u{e9} cr\u{e8}me br\u{fb}l\u{e9}e").await.unwrap();
        let decomposed = "cafe\u{301} cre\u{300}me bru\u{302}le\u{301}e";
        assert_eq!(h.verify(decomposed, Some(&stored)).await.unwrap(), Verified::Match { rehash: false });
    }

    #[tokio::test]
    async fn unknown_accounts_and_overlong_passwords_cost_a_hash_and_never_match() {
        let h = hasher(1, DEFAULT_QUEUE_TIMEOUT).await;
        // The dummy is made with the current parameters, so it costs what a real hash costs.
        assert!(!password::needs_rehash(&h.inner.dummy, &h.params()));
        assert_eq!(h.verify(GOOD, None).await.unwrap(), Verified::Mismatch);
        let long = "x".repeat(password::MAX_CHARS + 1);
        let stored = password::hash(&long, &[1; SALT_BYTES], &HashParams::OWASP).unwrap();
        assert_eq!(h.verify(&long, Some(&stored)).await.unwrap(), Verified::Mismatch);
    }

    #[tokio::test]
    async fn hashes_with_old_parameters_ask_for_a_rehash() {
        let stronger = HashParams { memory_kib: 32 * 1024, ..HashParams::OWASP };
        let old = hasher(1, DEFAULT_QUEUE_TIMEOUT).await.hash_new(GOOD).await.unwrap();
        let h = PasswordHasher::new(stronger, 1, DEFAULT_QUEUE_TIMEOUT).await.unwrap();
        assert_eq!(h.verify(GOOD, Some(&old)).await.unwrap(), Verified::Match { rehash: true });
        let new = h.hash_new(GOOD).await.unwrap();
        assert_eq!(h.verify(GOOD, Some(&new)).await.unwrap(), Verified::Match { rehash: false });
        assert!(matches!(h.verify(GOOD, Some("$2b$12$bcrypt")).await, Err(PasswordError::Hash(_))));
    }

    #[tokio::test]
    async fn a_saturated_pool_answers_busy_instead_of_queueing() {
        // A zero timeout takes a free slot at once and never waits for one.
        let h = hasher(1, Duration::ZERO).await;
        assert_eq!(h.idle_slots(), 1);
        let first = tokio::spawn({
            let h = h.clone();
            async move { h.hash_new(GOOD).await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while h.idle_slots() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the first hash never took its slot");
            tokio::task::yield_now().await;
        }
        assert!(matches!(h.verify(GOOD, None).await, Err(PasswordError::Busy)));
        assert!(first.await.unwrap().is_ok());
        assert_eq!(h.idle_slots(), 1);
        assert_eq!(h.verify(GOOD, None).await.unwrap(), Verified::Mismatch);
    }

    #[tokio::test]
    async fn hashes_run_on_named_low_priority_threads_and_full_slots_answer_busy() {
        // The test's own thread's nice value: what the hashing threads inherited.
        #[cfg(target_os = "linux")]
        let inherited = rustix::process::getpriority_process(None).unwrap();
        let h = hasher(2, Duration::ZERO).await;
        // Two jobs that hold both slots until released, each reporting its thread.
        let mut release = Vec::new();
        let mut held = Vec::new();
        for _ in 0..2 {
            let (go, wait) = std::sync::mpsc::channel::<()>();
            release.push(go);
            let (slots, jobs) = (h.inner.slots.clone(), h.inner.jobs.clone());
            held.push(tokio::spawn(async move {
                run(&slots, &jobs, Duration::ZERO, move || {
                    let _ = wait.recv_timeout(Duration::from_secs(10));
                    let me = std::thread::current();
                    #[cfg(target_os = "linux")]
                    let nice = rustix::process::getpriority_process(None).ok();
                    #[cfg(not(target_os = "linux"))]
                    let nice = None::<i32>;
                    Ok((me.name().map(str::to_owned), me.id(), nice))
                })
                .await
            }));
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while h.idle_slots() > 0 {
            assert!(tokio::time::Instant::now() < deadline, "the jobs never took both slots");
            tokio::task::yield_now().await;
        }
        assert!(matches!(h.verify(GOOD, None).await, Err(PasswordError::Busy)));
        assert!(matches!(h.hash_new(GOOD).await, Err(PasswordError::Busy)));
        for go in release {
            go.send(()).unwrap();
        }
        let mut threads = Vec::new();
        for job in held {
            let (name, id, nice) = job.await.unwrap().unwrap();
            assert_eq!(name.as_deref(), Some(THREAD_NAME));
            // getpriority(PRIO_PROCESS, 0) reads the calling thread's nice value on Linux.
            #[cfg(target_os = "linux")]
            if let Some(nice) = nice.filter(|_| !PRIORITY_WARNED.load(Ordering::Relaxed)) {
                let expected = (inherited + HASH_NICE).min(LOWEST_PRIORITY);
                assert_eq!(nice, expected, "the hashing thread did not lower its priority");
            }
            threads.push(id);
        }
        assert_ne!(threads[0], threads[1], "two slots, two threads hashing at once");
        assert_eq!(h.idle_slots(), 2);
        assert_eq!(h.verify(GOOD, None).await.unwrap(), Verified::Mismatch);
    }

    #[tokio::test]
    async fn weak_parameters_and_empty_pools_are_refused() {
        let weak = HashParams { iterations: 1, ..HashParams::OWASP };
        assert!(matches!(PasswordHasher::new(weak, 1, DEFAULT_QUEUE_TIMEOUT).await, Err(PasswordError::Hash(_))));
        assert!(matches!(
            PasswordHasher::new(HashParams::OWASP, 0, DEFAULT_QUEUE_TIMEOUT).await,
            Err(PasswordError::NoSlots)
        ));
        assert!(PasswordHasher::default_concurrency() >= 1);
    }
}
