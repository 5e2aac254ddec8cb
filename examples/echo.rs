//! A TCP echo server with a thread per connection, and a client that
//! checks it: each client thread sends lines and reads them back.
//!
//! `cargo run --release -p lwkt-examples --example echo [CLIENTS]`

use std::io::{BufRead, BufReader, Write};
use std::net::Shutdown;

use lwkt::net::{TcpListener, TcpStream};
use lwkt::{CurThread, Runtime, ThreadBuilder};

/// Echoes what `s` sends until it closes.
fn echo(td: &mut CurThread, s: TcpStream) -> std::io::Result<u64> {
    let mut buf = [0u8; 4096];
    let mut total = 0;
    loop {
        let n = s.read(td, &mut buf)?;
        if n == 0 {
            return Ok(total);
        }
        s.write_all(td, &buf[..n])?;
        total += n as u64;
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let clients: usize = std::env::args()
        .nth(1)
        .map(|c| c.parse().expect("CLIENTS must be a number"))
        .unwrap_or(100);
    let rt = Runtime::builder().build()?;
    let echoed = rt.block_on(move |td| -> std::io::Result<u64> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        println!("echo: listening on {addr}");
        let server = td.spawn(move |td| {
            let mut conns = Vec::new();
            for i in 0..clients {
                let (s, _) = l.accept(td)?;
                // Spread connections over the CPUs.
                let cpu = i % td.ncpus();
                conns.push(
                    ThreadBuilder::new()
                        .cpu(cpu)
                        .spawn(td, move |td| echo(td, s))
                        .map_err(std::io::Error::other)?,
                );
            }
            let mut total = 0;
            for c in conns {
                total += c
                    .join(td)
                    .map_err(|_| std::io::Error::other("echo thread panicked"))??;
            }
            Ok::<_, std::io::Error>(total)
        });
        let mut handles = Vec::new();
        for i in 0..clients {
            handles.push(td.spawn(move |td| -> std::io::Result<()> {
                let c = TcpStream::connect(td, addr)?;
                for n in 0..10 {
                    writeln!(c.io(td), "client {i} line {n}")?;
                    let mut line = String::new();
                    BufReader::new(c.io(td)).read_line(&mut line)?;
                    assert_eq!(line, format!("client {i} line {n}\n"));
                }
                c.shutdown(Shutdown::Write)
            }));
        }
        for h in handles {
            h.join(td)
                .map_err(|_| std::io::Error::other("client panicked"))??;
        }
        server
            .join(td)
            .map_err(|_| std::io::Error::other("server panicked"))?
    })?;
    println!("echo: {clients} clients, {echoed} bytes echoed");
    Ok(())
}
