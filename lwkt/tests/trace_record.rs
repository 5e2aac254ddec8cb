//! `Trace::record_new_runtimes` is process-wide, so it has this test
//! binary to itself: runtimes built while it is on are traced from their
//! start and hand their capture over when they shut down.

mod common;

use common::bounded;
use lwkt::{Runtime, Trace};

#[test]
fn runtimes_built_while_recording_are_traced_until_shutdown() {
    bounded(30, "record new runtimes", || {
        assert!(Trace::take_recorded().is_empty());
        Trace::record_new_runtimes(true);
        let rt = Runtime::builder().cpus(2).build().unwrap();
        assert!(rt.trace().is_running(), "traced from the build");
        rt.block_on(|td| {
            let h = td.spawn(|td| td.yield_now());
            h.join(td).unwrap();
        });
        assert!(
            Trace::take_recorded().is_empty(),
            "handed over at shutdown only"
        );
        drop(rt);
        Trace::record_new_runtimes(false);
        let untraced = Runtime::builder().cpus(1).build().unwrap();
        assert!(!untraced.trace().is_running());
        untraced.block_on(|td| td.yield_now());
        drop(untraced);
        let got = Trace::take_recorded();
        assert_eq!(got.len(), 1, "one runtime was built while recording");
        assert_eq!(got[0].cpus(), 2);
        assert!(got[0].events() > 4, "{} events", got[0].events());
        assert!(Trace::take_recorded().is_empty(), "taken once");
        // Two runtimes in one document: a pair of processes each.
        let doc: serde_json::Value = serde_json::from_slice(&lwkt::TraceData::chrome_json_of(&[
            got[0].clone(),
            got[0].clone(),
        ]))
        .unwrap();
        let procs: Vec<&str> = doc["traceEvents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["ph"] == "M" && e["name"] == "process_name")
            .map(|e| e["args"]["name"].as_str().unwrap())
            .collect();
        assert_eq!(
            procs,
            [
                "lwkt CPUs (runtime 0)",
                "lwkt threads (runtime 0)",
                "lwkt CPUs (runtime 1)",
                "lwkt threads (runtime 1)"
            ]
        );
    });
}
