//! HTTP/1.1 "Hello, World!" (TechEmpower's plaintext test) on lwkt: one
//! `SO_REUSEPORT` listener per CPU, a thread per connection, keep-alive
//! and pipelining, `httparse` for parsing, one reused response buffer per
//! connection (see `examples/src/http.rs`).
//!
//! `cargo run --release -p lwkt-examples --example http_hello [ADDR] [CPUS]`
//! (default `127.0.0.1:8080`, every CPU), then e.g.
//! `curl http://127.0.0.1:8080/plaintext`.

fn main() {
    let mut args = std::env::args().skip(1);
    let addr = args
        .next()
        .unwrap_or_else(|| "127.0.0.1:8080".into())
        .parse()
        .expect("ADDR must be ip:port");
    let cpus = args
        .next()
        .map(|c| c.parse().expect("CPUS must be a number"))
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let r = lwkt_examples::http::serve(addr, cpus, move |a| {
        println!("http_hello: serving http://{a}/plaintext on {cpus} CPU(s)");
    });
    if let Err(e) = r {
        eprintln!("http_hello: {e}");
        std::process::exit(1);
    }
}
