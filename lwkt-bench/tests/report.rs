//! `--report DIR`: the page has one drawn chart per benchmark, and headless
//! Chromium renders it (every chart present, laid out, with its bars).
//!
//! The browser check runs when `chromium`, `chromium-browser`,
//! `google-chrome` or `google-chrome-stable` is installed and works. Without
//! one it says that it skipped the check and passes, unless the `CI`
//! environment variable is set (`.ci/run` sets it after installing
//! Chromium): then a missing browser fails the test.

#[path = "../../lwkt/tests/common/browser.rs"]
mod browser;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

/// The benchmarks the report is made from: cheap ones.
const BENCHES: [&str; 2] = ["yield_pingpong", "spawn_join"];
/// The implementations run for each.
const IMPLS: [&str; 2] = ["lwkt", "tokio"];

/// Runs the cheap benchmarks once with `--json --report` and returns the
/// report's directory. Checks on the way that stdout is still only the
/// JSON, and that `results.json` holds the same bytes.
fn report_dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("report-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(env!("CARGO_BIN_EXE_lwkt-bench"))
            .args(["--json", "--quick", "--impls", &IMPLS.join(","), "--report"])
            .arg(&dir)
            .args(BENCHES)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
        assert_eq!(v["results"].as_array().unwrap().len(), 4, "{v}");
        let saved = std::fs::read(dir.join("results.json")).unwrap();
        assert_eq!(saved, out.stdout, "results.json differs from --json");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("report written to"), "{err}");
        dir
    })
}

fn page() -> String {
    std::fs::read_to_string(report_dir().join("index.html")).unwrap()
}

/// Checks the page without a browser: it parses (it is well-formed XML as
/// well as HTML), and it has one chart per expected benchmark, in order,
/// each a non-empty SVG with at least as many filled rectangles as the
/// bars it announces (`data-bars`, at least one).
fn check_page(html: &str, expected: &[&str]) -> Result<(), String> {
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(html, opts)
        .map_err(|e| format!("the page does not parse: {e}"))?;
    let figures: Vec<_> = doc
        .descendants()
        .filter(|n| n.has_tag_name("figure") && n.attribute("class") == Some("chart"))
        .collect();
    let names: Vec<&str> = figures
        .iter()
        .map(|f| f.attribute("data-bench").unwrap_or("?"))
        .collect();
    if names != expected {
        return Err(format!("charts for {names:?}, expected {expected:?}"));
    }
    for f in &figures {
        let name = f.attribute("data-bench").unwrap_or("?");
        let bars: usize = f
            .attribute("data-bars")
            .and_then(|b| b.parse().ok())
            .ok_or_else(|| format!("{name}: no data-bars"))?;
        if bars == 0 {
            return Err(format!("{name}: a chart with no bars"));
        }
        let svgs: Vec<_> = f
            .descendants()
            .filter(|n| n.tag_name().name() == "svg")
            .collect();
        let [svg] = svgs.as_slice() else {
            return Err(format!("{name}: {} svg elements", svgs.len()));
        };
        let num = |n: &roxmltree::Node, a: &str| {
            n.attribute(a)
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        };
        if num(svg, "width") <= 0.0 || num(svg, "height") <= 0.0 {
            return Err(format!("{name}: the svg has no size"));
        }
        let filled = svg
            .descendants()
            .filter(|n| n.tag_name().name() == "rect")
            .filter(|r| {
                let fill = r.attribute("fill").unwrap_or("none").to_ascii_lowercase();
                num(r, "width") > 0.0
                    && num(r, "height") > 0.0
                    && !["none", "#ffffff", "white"].contains(&fill.as_str())
            })
            .count();
        if filled < bars {
            return Err(format!("{name}: {filled} filled rects for {bars} bars"));
        }
    }
    Ok(())
}

/// Drops the chart (the `<svg>` element) of the `nth` figure.
fn without_chart(html: &str, nth: usize) -> String {
    let fig = html
        .match_indices("<figure class=\"chart\"")
        .nth(nth)
        .unwrap()
        .0;
    let start = fig + html[fig..].find("<svg").unwrap();
    let end = start + html[start..].find("</svg>").unwrap() + "</svg>".len();
    format!("{}{}", &html[..start], &html[end..])
}

#[test]
fn report_has_one_drawn_chart_per_bench() {
    let html = page();
    check_page(&html, &BENCHES).unwrap();
    for imp in IMPLS {
        assert!(html.contains(&format!("<td>{imp}</td>")), "no {imp} row");
    }
    assert!(html.contains("lower is better"));
    assert!(html.contains("<dt>cores</dt>") && html.contains("<dt>CPU</dt>"));
    // The checks catch a report that lacks a chart, or a bench.
    assert!(check_page(&without_chart(&html, 1), &BENCHES).is_err());
    assert!(check_page(&html, &["yield_pingpong"]).is_err());
    let empty = html.replacen("data-bars=\"2\"", "data-bars=\"9\"", 1);
    assert!(check_page(&empty, &BENCHES).is_err());
}

/// Script added to a copy of the page: once the page has loaded, it
/// measures every chart as the browser laid it out and writes what it
/// found, as JSON, into a `<pre id="render-check">` for `--dump-dom`.
const PROBE: &str = r#"<script>
window.addEventListener('load', function () {
  var out = { title: document.title, charts: [] };
  document.querySelectorAll('figure.chart').forEach(function (f) {
    var svgs = f.querySelectorAll('svg');
    var c = { bench: f.getAttribute('data-bench'), bars: Number(f.getAttribute('data-bars')),
              svgs: svgs.length, width: 0, height: 0, marks: 0, texts: 0 };
    if (svgs.length > 0) {
      var svg = svgs[0], r = svg.getBoundingClientRect();
      c.width = r.width; c.height = r.height;
      svg.querySelectorAll('rect').forEach(function (e) {
        var b = e.getBoundingClientRect(), fill = getComputedStyle(e).fill;
        if (b.width > 0 && b.height > 0 && fill !== 'none' && fill !== 'rgb(255, 255, 255)') c.marks++;
      });
      svg.querySelectorAll('text').forEach(function (t) {
        if (t.textContent.trim() !== '' && t.getBBox().width > 0) c.texts++;
      });
    }
    out.charts.push(c);
  });
  var pre = document.createElement('pre');
  pre.id = 'render-check';
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
});
</script>
"#;

/// Loads `html` (written next to the report, so it sees the same files) in
/// headless `browser` and checks what the probe measured: the page loaded
/// and ran, and each expected benchmark has one chart, laid out at a real
/// size, with at least its bars drawn and its labels set.
fn render_check(browser: &Path, html: &str, expected: &[&str]) -> Result<(), String> {
    let dir = report_dir();
    static RUNS: AtomicUsize = AtomicUsize::new(0);
    let id = format!(
        "{}-{}",
        std::process::id(),
        RUNS.fetch_add(1, Ordering::Relaxed)
    );
    let probe_page = dir.join(format!("render-check-{id}.html"));
    let with_probe = html.replacen("</body>", &format!("{PROBE}</body>"), 1);
    std::fs::write(&probe_page, with_probe).unwrap();
    let profile = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("chromium-profile-{id}"));
    let dom = browser::dump_dom(
        browser,
        &format!("file://{}", probe_page.display()),
        &[
            "--hide-scrollbars",
            "--window-size=1280,1024",
            "--virtual-time-budget=5000",
        ],
        &profile,
        Duration::from_secs(90),
    );
    let _ = std::fs::remove_file(&probe_page);
    let dom = dom?;
    let start = dom
        .find("<pre id=\"render-check\">")
        .ok_or("the page did not load (no probe result in the DOM)")?
        + "<pre id=\"render-check\">".len();
    let end = start + dom[start..].find("</pre>").ok_or("unterminated probe")?;
    let result: serde_json::Value =
        serde_json::from_str(&dom[start..end]).map_err(|e| format!("probe output: {e}"))?;
    if result["title"] != "lwkt-bench report" {
        return Err(format!("unexpected page title {}", result["title"]));
    }
    let charts = result["charts"].as_array().ok_or("no charts array")?;
    let names: Vec<&str> = charts.iter().filter_map(|c| c["bench"].as_str()).collect();
    if names != expected {
        return Err(format!("rendered charts {names:?}, expected {expected:?}"));
    }
    for c in charts {
        let n = |k: &str| c[k].as_f64().unwrap_or(0.0);
        let name = &c["bench"];
        if n("svgs") != 1.0 {
            return Err(format!("{name}: {} svg elements", c["svgs"]));
        }
        if n("width") < 100.0 || n("height") < 50.0 {
            return Err(format!("{name}: rendered {}x{}", c["width"], c["height"]));
        }
        if n("bars") < 1.0 || n("marks") < n("bars") {
            return Err(format!(
                "{name}: {} filled shapes drawn for {} bars",
                c["marks"], c["bars"]
            ));
        }
        if n("texts") < n("bars") + 1.0 {
            return Err(format!("{name}: only {} labels drawn", c["texts"]));
        }
    }
    Ok(())
}

#[test]
fn report_renders_in_headless_chromium() {
    let Some(browser) = browser::find_browser() else {
        assert!(
            !browser::in_ci(),
            "CI is set but no working chromium, chromium-browser or google-chrome is \
             installed: the report's render check cannot run (.ci/run installs chromium)"
        );
        // Straight to stderr, past the test harness's capture, so a plain
        // `cargo test` shows it.
        let _ = writeln!(
            std::io::stderr(),
            "report_renders_in_headless_chromium: skipped the browser check: no chromium, \
             chromium-browser or google-chrome found (set CI=true to make this a failure)"
        );
        return;
    };
    let html = page();
    render_check(&browser, &html, &BENCHES).unwrap();
    // The check fails for a report with a chart missing.
    let broken = without_chart(&html, 0);
    let err = render_check(&browser, &broken, &BENCHES).unwrap_err();
    assert!(err.contains("svg elements"), "{err}");
}
