//! Threads on every CPU, each saying hello, joined from the main thread.
//!
//! `cargo run --release -p lwkt-examples --example hello`

use lwkt::{Runtime, ThreadBuilder};

fn main() -> Result<(), lwkt::Error> {
    let rt = Runtime::builder().build()?;
    let lines = rt.block_on(|td| -> Result<Vec<String>, lwkt::Error> {
        let mut handles = Vec::new();
        for cpu in 0..td.ncpus() {
            handles.push(
                ThreadBuilder::new()
                    .name(format!("hello{cpu}"))
                    .cpu(cpu)
                    .spawn(td, |td| {
                        format!(
                            "hello from {} ({}) on CPU {} at priority {}",
                            td.name().unwrap_or("?"),
                            td.id(),
                            td.cpu(),
                            td.priority()
                        )
                    })?,
            );
        }
        Ok(handles
            .into_iter()
            .map(|h| h.join(td).expect("hello thread panicked"))
            .collect())
    })?;
    for l in lines {
        println!("{l}");
    }
    let s = rt.stats().total;
    println!(
        "switches {} ipis sent {} avoided {} processed {}",
        s.switches, s.ipis_sent, s.ipis_avoided, s.ipis_processed
    );
    Ok(())
}
