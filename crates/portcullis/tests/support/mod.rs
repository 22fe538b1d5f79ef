//! Test code beside the harness: the go-ftw corpus reader (`ftw`) and the
//! soak mix (`soak`), which `examples/waf_corpus.rs` and `examples/soak.rs`
//! also include by path, and a raw HTTP/2 client (`h2raw`).

pub mod ftw;
pub mod h2raw;
pub mod soak;
