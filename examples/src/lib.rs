//! Runnable examples for lwkt: `cargo run --release -p lwkt-examples --example hello`.
//!
//! The library part holds code shared by an example and the benchmarks:
//! [`http`], the plaintext HTTP server of `http_hello` (which
//! `lwkt-bench http_plaintext` runs).
#![warn(missing_docs)]

pub mod http;
