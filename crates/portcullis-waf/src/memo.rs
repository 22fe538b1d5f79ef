//! What a thread worked out about recent values, for the next transactions
//! that see the same bytes.
//!
//! Decision rules:
//! - A value's transformed forms and which regex-set members match them
//!   depend on its bytes alone (and the program), so a value seen before —
//!   a browser's `User-Agent`, `Accept`, cookie names, an API's argument
//!   names — costs a lookup instead of its transformations and searches.
//!   Operators, scores and everything else still run per transaction.
//! - Per thread (what is remembered holds `Rc`s), per program (a new load
//!   starts empty), values of at most [`LONGEST`] bytes (a bearer token
//!   fits; bodies do not).
//! - Bounded: two generations of at most [`GENERATION`] values and
//!   [`GENERATION_BYTES`] bytes of values each; when the newer fills it
//!   becomes the older and the older is dropped, so what keeps being seen
//!   stays and a stream of one-off values (unique query strings) cannot
//!   grow it.
//! - The search caches of the program's regex sets (their lazy DFAs' states)
//!   are kept per thread here too, taken by a transaction for its searches
//!   and given back at its end: the sets' own pool hands a thread that did
//!   not build the set a cache through a lock on every search, and every
//!   inspecting thread is such a thread.

use std::cell::RefCell;

use hashbrown::HashMap;
use regex_automata::meta;

use crate::eval::Known;
use crate::rules::Program;

/// The longest value remembered.
pub const LONGEST: usize = 1024;
/// Values per generation.
const GENERATION: usize = 512;
/// Bytes of values per generation (their transformed forms are kept too,
/// a few times that at most).
const GENERATION_BYTES: usize = 128 << 10;

#[derive(Default)]
struct Memo {
    program: u64,
    newer: HashMap<Box<[u8]>, Known>,
    /// The bytes of the values in `newer`.
    newer_bytes: usize,
    older: HashMap<Box<[u8]>, Known>,
}

thread_local! {
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
    /// The search caches of one program's regex sets, by set.
    static CACHES: RefCell<(u64, Vec<meta::Cache>)> = const { RefCell::new((0, Vec::new())) };
}

/// This thread's search caches for `program`'s regex sets, taken out (new
/// ones the first time, or after another program's), until
/// [`keep_caches`] gives them back.
pub fn take_caches(program: &Program) -> Vec<meta::Cache> {
    let kept = CACHES.with(|caches| caches.try_borrow_mut().map(|mut c| std::mem::take(&mut *c)).ok());
    match kept {
        Some((id, caches)) if id == program.id && caches.len() == program.sets.len() => caches,
        _ => program.sets.iter().map(|set| set.regex.create_cache()).collect(),
    }
}

/// Gives back the caches [`take_caches`] took for program `id`.
pub fn keep_caches(id: u64, caches: Vec<meta::Cache>) {
    CACHES.with(|kept| {
        if let Ok(mut kept) = kept.try_borrow_mut() {
            *kept = (id, caches);
        }
    });
}

/// What this thread remembers of `bytes` under `program`, taken out (a
/// transaction owns it until [`keep`] gives it back).
pub fn recall(program: u64, bytes: &[u8]) -> Option<(Box<[u8]>, Known)> {
    if bytes.len() > LONGEST {
        return None;
    }
    MEMO.with(|memo| {
        let mut memo = memo.try_borrow_mut().ok()?;
        if memo.program != program {
            return None;
        }
        memo.newer.remove_entry(bytes).or_else(|| memo.older.remove_entry(bytes))
    })
}

/// Remembers what a transaction worked out about `bytes` under `program`.
pub fn keep(program: u64, bytes: Box<[u8]>, known: Known) {
    MEMO.with(|memo| {
        let Ok(mut memo) = memo.try_borrow_mut() else { return };
        if memo.program != program {
            *memo = Memo { program, ..Memo::default() };
        }
        if memo.newer.len() >= GENERATION || memo.newer_bytes + bytes.len() > GENERATION_BYTES {
            memo.older = std::mem::take(&mut memo.newer);
            memo.newer_bytes = 0;
        }
        memo.newer_bytes += bytes.len();
        memo.newer.insert(bytes, known);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_remembered_is_bounded_and_recent_values_stay() {
        for n in 0..GENERATION * 3 {
            keep(7, n.to_string().into_bytes().into(), Known::default());
            if n % 3 == 0 {
                // A value seen all along is recalled and kept again.
                let (key, known) =
                    recall(7, b"always").unwrap_or_else(|| (b"always".as_slice().into(), Known::default()));
                keep(7, key, known);
            }
        }
        MEMO.with(|memo| {
            let memo = memo.borrow();
            assert!(memo.newer.len() + memo.older.len() <= 2 * GENERATION);
        });
        assert!(recall(7, b"always").is_some());
        assert!(recall(7, b"0").is_none(), "the oldest values are dropped");
        assert!(recall(7, (GENERATION * 3 - 1).to_string().as_bytes()).is_some());
        // Another program starts from nothing.
        keep(8, b"x".as_slice().into(), Known::default());
        assert!(recall(7, (GENERATION * 3 - 2).to_string().as_bytes()).is_none());
        assert!(recall(9, b"x").is_none());
        assert!(recall(7, &[b'a'; LONGEST + 1]).is_none());
        // Long values fill a generation by bytes first.
        for n in 0..GENERATION {
            let mut value = vec![b'x'; LONGEST];
            value[..8].copy_from_slice(&u64::try_from(n).unwrap_or_default().to_le_bytes());
            keep(7, value.into(), Known::default());
        }
        MEMO.with(|memo| {
            let memo = memo.borrow();
            let bytes: usize = memo.newer.keys().chain(memo.older.keys()).map(|k| k.len()).sum();
            assert!(bytes <= 2 * GENERATION_BYTES, "{bytes}");
            assert!(memo.newer.len() < GENERATION);
        });
    }
}
