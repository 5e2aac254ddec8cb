use lwkt::{Runtime, ThreadBuilder};

#[test]
fn smoke() {
    let rt = Runtime::builder().cpus(2).build().unwrap();
    let v = rt.block_on(|td| {
        let a = td.spawn(|td| td.cpu() + 1);
        let b = ThreadBuilder::new()
            .cpu(1)
            .spawn(td, |td| td.cpu() + 1)
            .unwrap();
        td.yield_now();
        a.join(td).unwrap() * 10 + b.join(td).unwrap()
    });
    assert_eq!(v, 12);
}
