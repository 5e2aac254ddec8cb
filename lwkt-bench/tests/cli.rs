//! End-to-end checks of the command line (quick, cheap benchmarks only).

use std::process::Command;

fn bench() -> Command {
    Command::new(env!("CARGO_BIN_EXE_lwkt-bench"))
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
    let out = bench()
        .args(["--json", "--quick", "--impls", "lwkt,tokio", "spawn_join"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let results = v["results"].as_array().unwrap();
    let impls: Vec<_> = results
        .iter()
        .map(|r| r["impl"].as_str().unwrap())
        .collect();
    assert_eq!(impls, ["lwkt", "tokio"]);
    for r in results {
        assert_eq!(r["bench"], "spawn_join");
        assert_eq!(r["unit"], "ns/op");
        assert!(r["value"].as_f64().unwrap() > 0.0);
    }
}

#[test]
fn token_benches_report_throughput() {
    let out = bench()
        .args([
            "--json",
            "--quick",
            "--impls",
            "lwkt,parking_lot",
            "token_contended",
            "token_block_while_held",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let results = v["results"].as_array().unwrap();
    let rows: Vec<_> = results
        .iter()
        .map(|r| (r["bench"].as_str().unwrap(), r["impl"].as_str().unwrap()))
        .collect();
    assert_eq!(
        rows,
        [
            ("token_contended", "lwkt"),
            ("token_contended", "parking_lot"),
            ("token_block_while_held", "lwkt"),
            ("token_block_while_held", "parking_lot"),
        ]
    );
    for r in results {
        assert_eq!(r["unit"], "ops/s");
        assert!(r["value"].as_f64().unwrap() > 0.0);
        assert!(r["note"].as_str().is_some());
    }
}

#[test]
fn preempt_and_migrate_benches_report() {
    let out = bench()
        .args(["--json", "--quick", "preempt_latency", "migrate_roundtrip"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let results = v["results"].as_array().unwrap();
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

#[test]
fn scaling_reports_every_cpu_count_and_the_big_runtime() {
    let out = bench()
        .args(["--json", "--quick", "scaling"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let results = v["results"].as_array().unwrap();
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
    }
}

/// `kv_service` in quick mode (a few seconds per implementation: two
/// points of 100 ms warm-up + 300 ms window, and starting 10,000 clients):
/// each implementation's one run gives both rows.
#[test]
fn kv_service_reports_throughput_and_p99_for_every_impl() {
    let list = bench().arg("--list").output().unwrap();
    assert!(String::from_utf8_lossy(&list.stdout)
        .lines()
        .any(|l| l == "kv_service"));
    let out = bench()
        .args(["--json", "--quick", "kv_service"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    let results = v["results"].as_array().unwrap();
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
