//! The port's tests, one binary: libinjection's own test files (`files`),
//! its attack and false-positive lists (`data_lists`), and, with the C
//! library (feature `libmodsecurity`), the differential tests against it
//! (`differential`) and the generator of `src/data.rs` (`c_data`, ignored).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

#[cfg(feature = "libmodsecurity")]
mod c_data;
mod data_lists;
#[cfg(feature = "libmodsecurity")]
mod differential;
mod files;
