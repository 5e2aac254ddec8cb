//! Runnable examples for lwkt: `cargo run --release -p lwkt-examples --example hello`.
