//! End-to-end checks of the command line (quick, cheap benchmarks only).

use std::process::Command;

/// The benchmark runs in this file take the machine one at a time: each
/// pins threads or starts thousands of them (`kv_service` runs 10,000 OS
/// threads), and side by side they would starve each other's repetitions.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Holds the machine for one test's benchmark runs (a failed test's poison
/// does not matter: the lock only orders the runs).
fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lwkt-bench"))
}

/// Runs `lwkt-bench` with `args`, checks it succeeded, and returns its
/// `results` array.
fn run_json(args: &[&str]) -> Vec<serde_json::Value> {
    let out = bench().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    v["results"].as_array().unwrap().clone()
}

/// A row that is the median of repetitions: `min <= value <= max`, and
/// `median == value`.
fn assert_spread(r: &serde_json::Value) {
    let f = |k: &str| {
        r[k].as_f64()
            .unwrap_or_else(|| panic!("{k} missing or not a number in {r}"))
    };
    let (min, value, median, max) = (f("min"), f("value"), f("median"), f("max"));
    // A single repetition may see nothing done at all when the machine is
    // loaded (these tests run side by side, each pinning threads), so only
    // the median must be positive.
    assert!(
        min >= 0.0 && value > 0.0 && min <= value && value <= max,
        "{r}"
    );
    assert_eq!(median, value, "{r}");
}

/// The row's `cpu_ns`, which must be present and positive.
fn cpu_ns(r: &serde_json::Value) -> f64 {
    let c = r["cpu_ns"]
        .as_f64()
        .unwrap_or_else(|| panic!("no cpu_ns in {r}"));
    assert!(c > 0.0 && c.is_finite(), "{r}");
    c
}

fn impls_of<'a>(results: &'a [serde_json::Value], bench: &str) -> Vec<&'a str> {
    results
        .iter()
        .filter(|r| r["bench"] == bench)
        .map(|r| r["impl"].as_str().unwrap())
        .collect()
}

#[test]
fn list_prints_the_names() {
    let out = bench().arg("--list").output().unwrap();
    assert!(out.status.success());
    let names: Vec<_> = std::str::from_utf8(&out.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    for n in [
        "yield_pingpong",
        "spawn_join",
        "cross_cpu_pingpong",
        "sleeping_thread_rss",
        "max_threads",
        "idle_cpu",
        "token_uncontended",
        "token_contended",
        "token_block_while_held",
        "preempt_latency",
        "migrate_roundtrip",
        "scaling",
        "kv_service",
        "lwp_create_wait",
        "lwp_suspend_resume",
        "token_study",
    ] {
        assert!(names.iter().any(|l| l == n), "{n} missing from {names:?}");
    }
}

#[test]
fn unknown_bench_fails_clearly() {
    let out = bench().args(["--json", "no_such_bench"]).output().unwrap();
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown benchmark `no_such_bench`"), "{err}");
}

#[test]
fn json_mode_prints_only_json() {
    let _machine = serial();
    let results = &run_json(&["--json", "--quick", "--impls", "lwkt,tokio", "spawn_join"]);
    let impls: Vec<_> = results
        .iter()
        .map(|r| r["impl"].as_str().unwrap())
        .collect();
    assert_eq!(impls, ["lwkt", "tokio"]);
    for r in results {
        assert_eq!(r["bench"], "spawn_join");
        assert_eq!(r["unit"], "ns/op");
        assert!(r["value"].as_f64().unwrap() > 0.0);
        assert_spread(r);
    }
}

#[test]
fn token_benches_report_throughput() {
    let _machine = serial();
    let results = run_json(&[
        "--json",
        "--quick",
        "--impls",
        "lwkt,parking_lot,std_mutex,tokio_mutex,parking_lot_pinned,std_mutex_pinned,\
         tokio_std_mutex,parking_lot_drop_guard,std_mutex_drop_guard,tokio_drop_guard",
        "token_contended",
        "token_block_while_held",
    ]);
    assert_eq!(
        impls_of(&results, "token_contended"),
        [
            "lwkt",
            "parking_lot",
            "std_mutex",
            "tokio_mutex",
            "parking_lot_pinned",
            "std_mutex_pinned",
            "tokio_std_mutex"
        ]
    );
    assert_eq!(
        impls_of(&results, "token_block_while_held"),
        [
            "lwkt",
            "parking_lot",
            "std_mutex",
            "tokio_mutex",
            "parking_lot_drop_guard",
            "std_mutex_drop_guard",
            "tokio_drop_guard"
        ]
    );
    assert_eq!(results.len(), 14);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for r in &results {
        assert_eq!(r["unit"], "ops/s");
        assert_spread(r);
        cpu_ns(r);
        let (bench, imp) = (r["bench"].as_str().unwrap(), r["impl"].as_str().unwrap());
        let note = r["note"].as_str().unwrap();
        assert!(
            note.contains("cpu_ns is process CPU ns per increment"),
            "{note}"
        );
        if imp.ends_with("_pinned") {
            assert!(
                note.starts_with(&format!("{cpus} OS threads, one pinned to each")),
                "{note}"
            );
        }
        if bench == "token_block_while_held" {
            if imp.ends_with("_drop_guard") {
                assert!(note.contains("with the guard dropped"), "{note}");
            } else if imp != "lwkt" {
                // A peer that sleeps holding its mutex: nobody can move
                // the counter meanwhile.
                assert!(note.contains("while holding"), "{note}");
                assert!(note.contains("moved by others in 0% of sleeps"), "{note}");
            }
        }
    }
}

#[test]
fn timing_rows_report_their_spread() {
    let _machine = serial();
    let results = run_json(&[
        "--json",
        "--quick",
        "yield_pingpong",
        "token_uncontended",
        "spawn_join",
    ]);
    assert_eq!(
        impls_of(&results, "yield_pingpong"),
        ["lwkt", "corosensei", "may", "tokio", "std_thread"]
    );
    for r in &results {
        assert_eq!(r["unit"], "ns/op");
        assert_spread(r);
    }
    let note = |imp: &str| {
        results
            .iter()
            .find(|r| r["bench"] == "yield_pingpong" && r["impl"] == imp)
            .and_then(|r| r["note"].as_str())
            .unwrap()
            .to_owned()
    };
    assert!(
        note("corosensei").starts_with("ns per stack switch"),
        "{}",
        note("corosensei")
    );
    assert!(
        note("lwkt").contains("1.00 thread switches per yield"),
        "{}",
        note("lwkt")
    );
    assert!(
        note("lwkt").contains("1 stack switch (the yield handoff"),
        "{}",
        note("lwkt")
    );
}

#[test]
fn cross_cpu_rows_report_cpu_time() {
    let _machine = serial();
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("cross_cpu_rows_report_cpu_time: skipped, needs 2 CPUs");
        return;
    }
    let results = run_json(&["--json", "--quick", "cross_cpu_pingpong"]);
    assert_eq!(
        impls_of(&results, "cross_cpu_pingpong"),
        [
            "lwkt",
            "may",
            "tokio",
            "tokio_2rt",
            "std_thread",
            "std_thread_spin",
            "spin_floor"
        ]
    );
    for r in &results {
        assert_eq!(r["unit"], "ns/op");
        assert_spread(r);
        cpu_ns(r);
        let note = r["note"].as_str().unwrap();
        match r["impl"].as_str().unwrap() {
            "may" | "tokio" => assert!(note.contains("rank lwkt against tokio_2rt"), "{note}"),
            "std_thread_spin" => assert!(note.contains("polls for up to 50 µs"), "{note}"),
            "lwkt" => assert!(note.contains("for up to 50 µs"), "{note}"),
            _ => {}
        }
    }
}

#[test]
fn preempt_and_migrate_benches_report() {
    let _machine = serial();
    let results = &run_json(&["--json", "--quick", "preempt_latency", "migrate_roundtrip"]);
    let rows: Vec<_> = results
        .iter()
        .map(|r| (r["bench"].as_str().unwrap(), r["impl"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [("preempt_latency", "lwkt"), ("migrate_roundtrip", "lwkt")]
    );
    for r in results {
        assert_eq!(r["unit"], "ns/op");
        assert!(r["value"].as_f64().unwrap() > 0.0);
    }
    let note = |i: usize| results[i]["note"].as_str().unwrap();
    assert!(note(0).contains("every call preempted"), "{}", note(0));
    assert!(note(1).contains("2.00 migrations"), "{}", note(1));
}

/// The LWP benches keep their JSON names: `lwp_create_wait` with its
/// three rows, `lwp_suspend_resume` with CPU time beside wall time.
#[test]
fn lwp_benches_report_their_rows() {
    let _machine = serial();
    let results = &run_json(&["--json", "--quick", "lwp_create_wait", "lwp_suspend_resume"]);
    assert_eq!(
        impls_of(results, "lwp_create_wait"),
        ["lwkt_lwp", "lwkt_spawn_join", "std_thread"]
    );
    assert_eq!(impls_of(results, "lwp_suspend_resume"), ["lwkt_lwp"]);
    for r in results {
        assert_eq!(r["unit"], "ns/op");
        assert_spread(r);
        assert!(r["note"].as_str().is_some_and(|n| !n.is_empty()), "{r}");
    }
    cpu_ns(&results[3]);
}

#[test]
fn scaling_reports_every_cpu_count_and_the_big_runtime() {
    let _machine = serial();
    let results = &run_json(&["--json", "--quick", "scaling"]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let row = |bench: &str, imp: &str| {
        results
            .iter()
            .find(|r| r["bench"] == bench && r["impl"] == imp)
            .unwrap_or_else(|| panic!("no {bench}/{imp} row in {results:?}"))
    };
    // 1, the cores, and the oversubscribed point (twice the cores, at least 4).
    let over = (2 * cores).max(4);
    for bench in ["scaling_wakeup", "scaling_token"] {
        for n in [1, cores, over] {
            let r = row(bench, &format!("lwkt_c{n}"));
            assert_eq!(r["unit"], "ns/op", "{r}");
            let note = r["note"].as_str().unwrap();
            assert!(
                note.starts_with(&format!("{n} cpus on {cores} cores")),
                "{note}"
            );
            assert_eq!(note.contains(" oversubscribed"), n <= cores, "{note}");
        }
        assert!(row(bench, &format!("lwkt_c{over}"))
            .to_string()
            .contains("(oversubscribed"));
    }
    assert_eq!(row("runtime_build_256", "lwkt")["unit"], "ms");
    assert_eq!(row("runtime_rss_256", "lwkt")["unit"], "MiB");
    for r in results {
        let bench = r["bench"].as_str().unwrap();
        assert!(
            [
                "scaling_wakeup",
                "scaling_token",
                "runtime_build_256",
                "runtime_rss_256"
            ]
            .contains(&bench),
            "{r}"
        );
        let value = r["value"].as_f64().unwrap_or(f64::NAN);
        assert!(value.is_finite() && value > 0.0, "{r}");
        assert!(r["note"].as_str().is_some(), "{r}");
        // Repeated figures report their spread; the one RSS reading not.
        if bench == "runtime_rss_256" {
            assert!(r.get("min").is_none() && r.get("max").is_none(), "{r}");
        } else {
            assert_spread(r);
        }
    }
}

/// `kv_service` in quick mode (a few seconds per implementation: two
/// points of 100 ms warm-up + 300 ms window, and starting 10,000 clients):
/// each implementation's one run gives both rows.
#[test]
fn kv_service_reports_throughput_and_p99_for_every_impl() {
    let _machine = serial();
    let list = bench().arg("--list").output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l == "kv_service"));
    let results = &run_json(&["--json", "--quick", "kv_service"]);
    let impls = ["lwkt", "tokio", "may", "std_thread"];
    assert_eq!(results.len(), 2 * impls.len(), "{results:?}");
    for (bench, unit) in [("kv_service", "req/s"), ("kv_service_p99", "us")] {
        for imp in impls {
            let rows: Vec<_> = results
                .iter()
                .filter(|r| r["bench"] == bench && r["impl"] == imp)
                .collect();
            assert_eq!(rows.len(), 1, "{bench}/{imp} in {results:?}");
            let r = rows[0];
            assert_eq!(r["unit"], unit, "{r}");
            let value = r["value"].as_f64().unwrap_or(f64::NAN);
            assert!(value.is_finite() && value > 0.0, "{r}");
            let note = r["note"].as_str().unwrap();
            assert!(
                note.contains("1000 clients") && note.contains("10000 clients"),
                "{note}"
            );
        }
    }
}

/// `http_plaintext` in quick mode where `wrk` is installed (each server on
/// one core, wrk on the other, 1 s per point): both rows for every
/// implementation, with the server's CPU use in the notes. Where `wrk` is
/// missing, the bench must say it skipped and why, and print no rows.
#[test]
fn http_plaintext_reports_throughput_and_p99_or_says_why_it_skipped() {
    let _machine = serial();
    let have_wrk = Command::new("wrk").arg("--version").output().is_ok();
    let out = bench()
        .args(["--json", "--quick", "http_plaintext"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let results = v["results"].as_array().unwrap();
    if !have_wrk {
        assert!(
            stderr.contains("http_plaintext: skipped: wrk not found"),
            "{stderr}"
        );
        assert!(results.is_empty(), "{results:?}");
        eprintln!("wrk not installed: checked the skip message only");
        return;
    }
    let impls = ["lwkt", "may_minihttp", "tokio_hyper", "std_thread"];
    assert_eq!(results.len(), 2 * impls.len(), "{results:?}");
    for (b, unit) in [("http_plaintext", "req/s"), ("http_plaintext_p99", "us")] {
        for imp in impls {
            let r = results
                .iter()
                .find(|r| r["bench"] == b && r["impl"] == imp)
                .unwrap_or_else(|| panic!("no {b}/{imp} in {results:?}"));
            assert_eq!(r["unit"], unit, "{r}");
            let value = r["value"].as_f64().unwrap_or(f64::NAN);
            assert!(value.is_finite() && value > 0.0, "{r}");
            let note = r["note"].as_str().unwrap();
            assert!(note.contains("server CPU"), "{note}");
            if b == "http_plaintext_p99" {
                // The script's hook read wrk's histogram (wrk with
                // LuaJIT, as Debian and Ubuntu ship it) and undid its
                // correction without a negative count.
                assert!(
                    note.contains("from the latencies wrk measured"),
                    "the p99 is not the measured one: {note}"
                );
            }
        }
    }
}
#[test]
fn trace_overhead_reports_its_three_rows() {
    let _machine = serial();
    let results = &run_json(&["--json", "--quick", "trace_overhead"]);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let want: &[(&str, &str)] = if cores >= 2 {
        &[
            ("ns_per_event", "ns"),
            ("yield_slowdown", "x"),
            ("cross_cpu_slowdown", "x"),
        ]
    } else {
        &[("ns_per_event", "ns"), ("yield_slowdown", "x")]
    };
    for (imp, unit) in want {
        let r = results
            .iter()
            .find(|r| r["bench"] == "trace_overhead" && r["impl"] == *imp)
            .unwrap_or_else(|| panic!("no trace_overhead/{imp} row in {results:?}"));
        assert_eq!(r["unit"], *unit, "{r}");
        assert!(r["value"].as_f64().unwrap().is_finite(), "{r}");
        assert!(r["note"].as_str().unwrap().contains("alternating"), "{r}");
    }
}

#[test]
fn trace_flag_writes_a_trace_of_one_run() {
    let _machine = serial();
    let dir = std::env::temp_dir().join(format!("lwkt-bench-trace-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.json");
    let p = path.to_str().unwrap();
    let results = run_json(&["--json", "--quick", "--trace", p, "yield_pingpong"]);
    // Every implementation still ran; only lwkt's row was traced.
    assert_eq!(results.len(), 5, "{results:?}");
    let lwkt = results.iter().find(|r| r["impl"] == "lwkt").unwrap();
    assert!(lwkt["note"].as_str().unwrap().contains("--trace"), "{lwkt}");
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("trace written")).unwrap();
    let ev = doc["traceEvents"].as_array().unwrap();
    assert!(ev.iter().any(|e| e["ph"] == "X" && e["cat"] == "sched"));
    assert!(ev
        .iter()
        .any(|e| e["ph"] == "M" && e["args"]["name"] == "lwkt CPUs"));
    assert!(doc["otherData"]["events"].as_u64().unwrap() > 0);
    // Misuse: two benchmarks, or none with an lwkt row.
    for args in [
        &["--json", "--trace", p, "yield_pingpong", "spawn_join"][..],
        &["--json", "--trace", p, "--impls", "tokio", "yield_pingpong"][..],
    ] {
        let out = bench().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(String::from_utf8_lossy(&out.stderr).contains("--trace"));
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `token_study --quick`: the headline rows for both algorithms, and with
/// `--report` the study page and its tables (a few points, short windows:
/// a couple of seconds).
#[test]
fn token_study_reports_the_headline_and_writes_the_study_page() {
    let _g = serial();
    let dir = std::env::temp_dir().join(format!("lwkt-study-cli-{}", std::process::id()));
    let d = dir.to_str().unwrap();
    let results = run_json(&["--quick", "--json", "--report", d, "token_study"]);
    for bench in [
        "token_study_wasted",
        "token_study_throughput",
        "token_study_fairness",
    ] {
        assert_eq!(impls_of(&results, bench), ["seed", "lwkt"], "{bench}");
    }
    for r in &results {
        let v = r["value"].as_f64().unwrap();
        assert!(v.is_finite() && v >= 0.0, "{r}");
        assert!(r["note"].as_str().unwrap().contains("M=16 N=4"), "{r}");
        if r["bench"] == "token_study_throughput" {
            assert!(v > 0.0, "{r}");
            cpu_ns(r);
        }
        if r["bench"] == "token_study_fairness" {
            assert!(v >= 1.0, "{r}");
        }
    }
    let md = std::fs::read_to_string(dir.join("token-contention.md")).unwrap();
    for want in [
        "## The question",
        "## Short answer",
        "## Targets",
        "| seed |",
        "| lwkt |",
        "--quick run",
        "token_study --report docs",
    ] {
        assert!(md.contains(want), "{want} missing from the study page");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
