//! The event trace: a scripted scenario exported and checked track by
//! track, slice by slice and flow by flow; the capture's lifecycle
//! (off by default, start/stop, restart, a full buffer, shutdown); and,
//! where Perfetto's trace processor can run, the same file loaded into it.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::bounded;
use lwkt::{Runtime, Sleep, ThreadBuilder, ThreadInfo, ThreadState, Token, TraceData};
use serde_json::Value;

/// Spins until `cond`, failing with `what` after 10 s.
fn spin_until(what: &str, mut cond: impl FnMut() -> bool) {
    let t = Instant::now();
    while !cond() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "timed out waiting for {what}"
        );
        std::hint::spin_loop();
    }
}

/// The scripted scenario: thread "alpha" (CPU 0) holds token
/// "scenario-tok" until thread "beta" (CPU 1) has blocked on it, then
/// releases it; beta takes it, drops it and sleeps on `ball` (wait
/// message "ball"); alpha waits until beta sleeps and wakes it from CPU 0
/// (a cross-CPU wakeup). Returns the capture and the two thread ids.
fn scenario() -> (TraceData, u64, u64) {
    static TOK: Token<u64> = Token::new("scenario-tok", 0);
    let rt = Runtime::builder()
        .cpus(2)
        .token_backoff_max(0)
        .build()
        .unwrap();
    let trace = rt.trace();
    trace.start().unwrap();
    let h = rt.handle();
    let (a_id, b_id) = rt.block_on(move |td| {
        let held = Arc::new(AtomicBool::new(false));
        let ball = Arc::new(AtomicU64::new(0));
        let (held2, ball2) = (held.clone(), ball.clone());
        let beta = ThreadBuilder::new()
            .name("beta")
            .cpu(1)
            .spawn(td, move |td| {
                spin_until("alpha to hold the token", || held2.load(Ordering::Acquire));
                let g = td.get_token(&TOK); // blocks: alpha holds it
                *g.get(td) += 1;
                drop(g);
                td.sleep_until(&*ball2, Sleep::default().wmesg("ball"), || {
                    ball2.load(Ordering::Acquire) == 1
                })
                .unwrap();
                td.id().as_u64()
            })
            .unwrap();
        let beta_id = beta.id().as_u64();
        let alpha = ThreadBuilder::new()
            .name("alpha")
            .cpu(0)
            .spawn(td, move |td| {
                let g = td.get_token(&TOK);
                held.store(true, Ordering::Release);
                spin_until("beta to block on the token", || {
                    h.stats().total.token_blocks >= 1
                });
                drop(g);
                // Until beta sleeps on the ball.
                let t = Instant::now();
                loop {
                    let l = ThreadInfo::collect(td);
                    let b = l.iter().find(|i| i.id.as_u64() == beta_id);
                    if b.is_some_and(|b| b.state == ThreadState::Sleeping && b.wmesg == "ball") {
                        break;
                    }
                    assert!(t.elapsed() < Duration::from_secs(10), "beta never slept");
                    td.sleep_for(Duration::from_millis(1)).unwrap();
                }
                ball.store(1, Ordering::Release);
                lwkt::wakeup(&*ball);
                td.id().as_u64()
            })
            .unwrap();
        let a = alpha.join(td).unwrap();
        let b = beta.join(td).unwrap();
        (a, b)
    });
    let data = trace.stop();
    (data, a_id, b_id)
}

fn events(doc: &Value) -> &Vec<Value> {
    doc["traceEvents"]
        .as_array()
        .expect("traceEvents is an array")
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

/// (pid, tid) of the track named `name` by a metadata event.
fn track(doc: &Value, meta: &str, name: &str) -> (u64, u64) {
    let e = events(doc)
        .iter()
        .find(|e| str_of(e, "ph") == "M" && str_of(e, "name") == meta && e["args"]["name"] == name)
        .unwrap_or_else(|| panic!("no {meta} named {name:?}"));
    (e["pid"].as_u64().unwrap(), e["tid"].as_u64().unwrap_or(0))
}

/// Complete slices on the track (pid, tid).
fn slices(doc: &Value, (pid, tid): (u64, u64)) -> Vec<&Value> {
    events(doc)
        .iter()
        .filter(|e| str_of(e, "ph") == "X" && e["pid"] == pid && e["tid"] == tid)
        .collect()
}

fn ts(e: &Value) -> f64 {
    e["ts"].as_f64().unwrap()
}

fn end(e: &Value) -> f64 {
    ts(e) + e["dur"].as_f64().unwrap()
}

#[test]
fn scenario_tracks_slices_and_flows() {
    let (data, alpha, beta) = bounded(60, "trace scenario", scenario);
    assert_eq!(data.cpus(), 2);
    assert_eq!(data.dropped(), 0, "a short scenario fits the buffers");
    assert!(data.events() > 10, "only {} events", data.events());
    let json = data.to_chrome_json();
    let doc: Value = serde_json::from_slice(&json).expect("the export is JSON");
    // Processes and tracks: one per CPU, one per thread.
    let (cpus_pid, _) = track(&doc, "process_name", "lwkt CPUs");
    let (thr_pid, _) = track(&doc, "process_name", "lwkt threads");
    assert_ne!(cpus_pid, thr_pid);
    let cpu0 = track(&doc, "thread_name", "cpu 0");
    let cpu1 = track(&doc, "thread_name", "cpu 1");
    assert_eq!((cpu0.0, cpu1.0), (cpus_pid, cpus_pid));
    let alpha_label = format!("alpha #{alpha}");
    let beta_label = format!("beta #{beta}");
    let alpha_trk = track(&doc, "thread_name", &alpha_label);
    let beta_trk = track(&doc, "thread_name", &beta_label);
    assert_eq!(alpha_trk, (thr_pid, alpha));
    assert_eq!(beta_trk, (thr_pid, beta));
    // CPU tracks: which thread ran when, each on its own CPU only.
    let on0 = slices(&doc, cpu0);
    let on1 = slices(&doc, cpu1);
    let alpha_runs: Vec<_> = on0
        .iter()
        .filter(|s| s["name"] == alpha_label.as_str())
        .collect();
    let beta_runs: Vec<_> = on1
        .iter()
        .filter(|s| s["name"] == beta_label.as_str())
        .collect();
    assert!(!alpha_runs.is_empty(), "alpha never ran on cpu 0");
    assert!(
        beta_runs.len() >= 3,
        "beta ran {} times on cpu 1",
        beta_runs.len()
    );
    assert!(!on1.iter().any(|s| s["name"] == alpha_label.as_str()));
    assert!(!on0.iter().any(|s| s["name"] == beta_label.as_str()));
    let outs: Vec<&str> = beta_runs
        .iter()
        .map(|s| str_of(&s["args"], "switch_out"))
        .collect();
    assert!(
        outs.contains(&"token-blocked"),
        "beta's switch-outs: {outs:?}"
    );
    assert!(outs.contains(&"sleep"), "beta's switch-outs: {outs:?}");
    assert_eq!(outs.last(), Some(&"exit"), "beta's switch-outs: {outs:?}");
    let slept = beta_runs
        .iter()
        .find(|s| s["args"]["switch_out"] == "sleep")
        .unwrap();
    assert_eq!(slept["args"]["wmesg"], "ball");
    // Thread track: beta's states, with the token's name on the blocked
    // span and the wait message on the sleep.
    let states = slices(&doc, beta_trk);
    let names: Vec<&str> = states.iter().map(|s| str_of(s, "name")).collect();
    let blocked = states
        .iter()
        .find(|s| s["name"] == "blocked on token scenario-tok")
        .unwrap_or_else(|| panic!("no blocked span in {names:?}"));
    assert_eq!(blocked["args"]["token"], "scenario-tok");
    let sleeping = states
        .iter()
        .find(|s| s["name"] == "sleeping: ball")
        .unwrap_or_else(|| panic!("no sleep span in {names:?}"));
    assert!(
        end(blocked) <= ts(sleeping) + 1e-3,
        "blocked before it slept"
    );
    // The sleep ends with a wakeup from cpu 0.
    let woken = states
        .iter()
        .find(|s| ts(s) >= end(sleeping) - 1e-3 && s["name"] == "runnable")
        .unwrap_or_else(|| panic!("nothing follows the sleep in {names:?}"));
    assert_eq!(woken["args"]["woken_by"], "wakeup");
    assert_eq!(woken["args"]["from_cpu"], 0);
    // States on a thread track do not overlap.
    let mut sorted = states.clone();
    sorted.sort_by(|a, b| ts(a).total_cmp(&ts(b)));
    for w in sorted.windows(2) {
        assert!(end(w[0]) <= ts(w[1]) + 1e-3, "overlap: {} / {}", w[0], w[1]);
    }
    // Token instants on cpu 1.
    let instants: Vec<&str> = events(&doc)
        .iter()
        .filter(|e| str_of(e, "ph") == "i" && e["tid"] == cpu1.1)
        .map(|e| str_of(e, "name"))
        .collect();
    assert!(
        instants.contains(&"token blocked: scenario-tok"),
        "{instants:?}"
    );
    assert!(
        instants.contains(&"token acquired: scenario-tok"),
        "{instants:?}"
    );
    assert!(
        instants
            .iter()
            .any(|n| n.starts_with("ipi <- cpu 0: wakeup")),
        "{instants:?}"
    );
    // The flow: from alpha's slice on cpu 0 (the IPI carrying the wakeup)
    // to the beta slice on cpu 1 that the wakeup started.
    let flow_ends: Vec<&Value> = events(&doc)
        .iter()
        .filter(|e| str_of(e, "ph") == "f" && e["tid"] == cpu1.1)
        .collect();
    let cross = flow_ends
        .iter()
        .find_map(|f| {
            let s = events(&doc)
                .iter()
                .find(|s| str_of(s, "ph") == "s" && s["id"] == f["id"])?;
            (s["tid"] == cpu0.1).then_some((s, *f))
        })
        .expect("a flow from cpu 0 to cpu 1");
    let (s, f) = cross;
    assert_eq!(s["name"], "ipi wakeup");
    assert_eq!(f["bp"], "e");
    assert!(
        alpha_runs.iter().any(|r| ts(r) <= ts(s) && ts(s) <= end(r)),
        "the flow starts inside one of alpha's slices"
    );
    let landed = beta_runs
        .iter()
        .find(|r| ts(r) <= ts(f) && ts(f) <= end(r))
        .expect("the flow lands in a beta slice");
    assert!(
        ts(f) - ts(landed) < 0.01,
        "it lands where that slice starts"
    );
    assert!(ts(f) >= end(sleeping) - 1e-3, "after the sleep");
    // Every flow end has its start.
    for f in events(&doc).iter().filter(|e| str_of(e, "ph") == "f") {
        assert!(
            events(&doc)
                .iter()
                .any(|s| str_of(s, "ph") == "s" && s["id"] == f["id"]),
            "flow {} has no start",
            f["id"]
        );
    }
    perfetto_check(&json, &alpha_label, &beta_label);
}

/// Loads the export into Perfetto's trace processor (the `perfetto`
/// Python package) and checks its view: the tracks, the blocked span and
/// at least one flow between slices. Skips, saying why, where the package
/// or its trace-processor binary is not available (the binary is
/// downloaded on first use, which needs the network).
fn perfetto_check(json: &[u8], alpha: &str, beta: &str) {
    let dir = std::env::temp_dir().join(format!("lwkt-trace-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("scenario.json");
    std::fs::write(&path, json).unwrap();
    let script = format!(
        r#"
import sys
try:
    from perfetto.trace_processor import TraceProcessor
except Exception as e:
    print("SKIP: python package perfetto not importable:", e); sys.exit(0)
try:
    tp = TraceProcessor(trace={path:?})
except Exception as e:
    print("SKIP: trace processor could not start:", type(e).__name__, e); sys.exit(0)
q = lambda s: list(tp.query(s))
names = {{r.name for r in q("select name from thread")}}
assert "cpu 0" in names and "cpu 1" in names, names
assert {alpha:?} in names and {beta:?} in names, names
blocked = q("select count(*) as n from slice where name = 'blocked on token scenario-tok'")
assert blocked[0].n >= 1, "no blocked slice"
flows = q("select count(*) as n from flow")
assert flows[0].n >= 1, "no flows"
print("OK: trace processor sees", len(names), "threads and", flows[0].n, "flows")
"#,
        path = path.display().to_string(),
    );
    match std::process::Command::new("python3")
        .arg("-c")
        .arg(&script)
        .output()
    {
        Ok(out) => {
            let so = String::from_utf8_lossy(&out.stdout);
            let se = String::from_utf8_lossy(&out.stderr);
            assert!(
                out.status.success(),
                "trace processor check failed:\n{so}\n{se}"
            );
            eprintln!("perfetto check: {}", so.trim());
        }
        Err(e) => eprintln!("perfetto check: SKIP: python3 not runnable: {e}"),
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn off_by_default_and_nothing_after_stop() {
    bounded(30, "trace lifecycle", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let trace = rt.trace();
        rt.block_on(|td| td.yield_now());
        assert!(!trace.is_running());
        assert_eq!(trace.data().events(), 0, "nothing recorded while off");
        let err = trace.write_perfetto(std::env::temp_dir().join("lwkt-never.json"));
        assert_eq!(err.unwrap_err().kind(), std::io::ErrorKind::InvalidInput);
        assert_eq!(trace.stop().events(), 0, "stop without start is empty");

        trace.start().unwrap();
        assert!(trace.is_running());
        rt.block_on(|td| {
            for _ in 0..10 {
                td.yield_now();
            }
        });
        // Readable while running.
        let running = trace.data().events();
        assert!(running > 0);
        let data = trace.stop();
        assert!(!trace.is_running());
        assert!(data.events() >= running);
        rt.block_on(|td| {
            for _ in 0..100 {
                td.yield_now();
            }
        });
        assert_eq!(trace.data().events(), data.events(), "recorded after stop");

        // A new capture starts empty.
        trace.start().unwrap();
        let fresh = trace.stop();
        assert!(fresh.events() < data.events());
    });
}

#[test]
fn full_buffer_drops_and_counts() {
    bounded(30, "trace full", || {
        let rt = Runtime::builder()
            .cpus(1)
            .trace_events(lwkt::MIN_TRACE_EVENTS)
            .build()
            .unwrap();
        let trace = rt.trace();
        trace.start().unwrap();
        rt.block_on(|td| {
            let other = td.spawn(|td| {
                for _ in 0..100 {
                    td.yield_now();
                }
            });
            for _ in 0..100 {
                td.yield_now();
            }
            other.join(td).unwrap();
        });
        let data = trace.stop();
        assert_eq!(
            data.events(),
            lwkt::MIN_TRACE_EVENTS,
            "keeps the first events"
        );
        assert_eq!(data.capacity_per_cpu(), lwkt::MIN_TRACE_EVENTS);
        // 200 yields are 200 switch events at least (one per switch; two
        // yielding threads hand the CPU straight to each other, one switch
        // per yield).
        assert!(data.dropped() >= 200 - 16, "dropped {}", data.dropped());
        let doc: Value = serde_json::from_slice(&data.to_chrome_json()).unwrap();
        assert_eq!(doc["otherData"]["dropped_events"], data.dropped());
    });
}

/// A switch is one event: two threads yielding to each other on one CPU
/// record one event per yield (plus a few for the spawn, the join and the
/// exits), and on the CPU track each yield ends one slice exactly where
/// the next starts.
#[test]
fn a_yield_is_one_event() {
    const N: usize = 200;
    bounded(30, "trace yields", || {
        let rt = Runtime::builder().cpus(1).build().unwrap();
        let trace = rt.trace();
        trace.start().unwrap();
        rt.block_on(|td| {
            let other = ThreadBuilder::new()
                .name("other")
                .spawn(td, |td| {
                    for _ in 0..N {
                        td.yield_now();
                    }
                })
                .unwrap();
            for _ in 0..N {
                td.yield_now();
            }
            other.join(td).unwrap();
        });
        let data = trace.stop();
        assert_eq!(data.dropped(), 0);
        let n = data.events();
        assert!(
            (2 * N..2 * N + 24).contains(&n),
            "{n} events for {} yields",
            2 * N
        );
        let doc: Value = serde_json::from_slice(&data.to_chrome_json()).unwrap();
        let cpu0 = track(&doc, "thread_name", "cpu 0");
        let mut runs: Vec<&Value> = slices(&doc, cpu0)
            .into_iter()
            .filter(|s| s["cat"] == "sched")
            .collect();
        runs.sort_by(|a, b| ts(a).total_cmp(&ts(b)));
        let yields: Vec<_> = runs
            .windows(2)
            .filter(|w| w[0]["args"]["switch_out"] == "yield")
            .collect();
        assert!(yields.len() >= 2 * N - 2, "{} yield slices", yields.len());
        for w in yields {
            assert_ne!(w[0]["name"], w[1]["name"], "a yield switches threads");
            assert!(
                (end(w[0]) - ts(w[1])).abs() < 1e-3,
                "the slice after a yield starts where it ends: {} / {}",
                w[0],
                w[1]
            );
        }
    });
}

#[test]
fn bad_buffer_size_is_refused() {
    for n in [0, lwkt::MIN_TRACE_EVENTS - 1, lwkt::MAX_TRACE_EVENTS + 1] {
        let e = Runtime::builder().trace_events(n).build().unwrap_err();
        assert!(e.to_string().contains("trace_events"), "{e}");
    }
}

#[test]
fn start_and_stop_from_inside() {
    bounded(30, "trace inside", || {
        let rt = Runtime::builder().cpus(2).build().unwrap();
        let trace = rt.trace();
        let t2 = trace.clone();
        let data = rt.block_on(move |td| {
            t2.start_in(td).unwrap();
            let h = ThreadBuilder::new()
                .name("mover")
                .cpu(0)
                .spawn(td, |td| {
                    // SAFETY: nothing thread-bound lives across the
                    // migration (no locals at all).
                    unsafe { td.migrate(1) }.unwrap();
                    td.cpu()
                })
                .unwrap();
            assert_eq!(h.join(td).unwrap(), 1);
            t2.stop_in(td).unwrap()
        });
        assert!(!trace.is_running());
        let doc: Value = serde_json::from_slice(&data.to_chrome_json()).unwrap();
        let names: Vec<&str> = events(&doc).iter().map(|e| str_of(e, "name")).collect();
        assert!(names
            .iter()
            .any(|n| n.starts_with("migrate mover #") && n.ends_with("-> cpu 1")));
        assert!(names.iter().any(|n| n.starts_with("adopt mover #")));
        assert!(names.contains(&"migrating"), "{names:?}");
        // The main thread was running when the capture began: its slice
        // starts with the capture.
        assert!(names.iter().any(|n| n.starts_with("main #")));
        // A thread of another runtime cannot control this trace.
        let other = Runtime::builder().cpus(1).build().unwrap();
        let t3 = trace.clone();
        let r = other.block_on(move |td| t3.start_in(td));
        assert!(matches!(r, Err(lwkt::Error::ForeignRuntime)), "{r:?}");
    });
}

#[test]
#[should_panic(expected = "use Trace::start_in(td)")]
fn start_from_inside_without_td_panics() {
    let rt = Runtime::builder().cpus(1).build().unwrap();
    let trace = rt.trace();
    let r = rt.block_on(move |_| std::panic::catch_unwind(|| trace.start()));
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
}

#[test]
fn traced_from_build_and_after_shutdown() {
    bounded(30, "trace at build", || {
        let rt = Runtime::builder().cpus(1).trace(true).build().unwrap();
        let trace = rt.trace();
        assert!(trace.is_running());
        rt.block_on(|td| td.yield_now());
        drop(rt);
        assert!(matches!(trace.start(), Err(lwkt::Error::Shutdown)));
        let data = trace.stop();
        let doc: Value = serde_json::from_slice(&data.to_chrome_json()).unwrap();
        let names: Vec<&str> = events(&doc).iter().map(|e| str_of(e, "name")).collect();
        assert!(
            names.iter().any(|n| n.starts_with("spawn main #")),
            "{names:?}"
        );
    });
}
