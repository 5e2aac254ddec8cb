//! Headless Chromium for the tests that check a page in a real browser
//! (lwkt's introspection page; lwkt-bench's report, which includes this
//! file by path).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Whether the `CI` environment variable asks for every check to run (a
/// missing browser is then a failure, not a skip).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// A browser that runs: the first of the usual names on `PATH` whose
/// `--version` succeeds (Ubuntu's `chromium-browser` can be a stub that
/// only asks for the snap).
pub fn find_browser() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ] {
        for dir in std::env::split_paths(&path) {
            let exe = dir.join(name);
            if !exe.is_file() {
                continue;
            }
            let ok = Command::new(&exe)
                .arg("--version")
                .stdin(Stdio::null())
                .output()
                .is_ok_and(|o| {
                    o.status.success() && String::from_utf8_lossy(&o.stdout).contains("Chrom")
                });
            if ok {
                return Some(exe);
            }
        }
    }
    None
}

/// Loads `url` in headless `browser` (with `extra` flags, a throw-away
/// profile at `profile`) and returns the DOM after the page's scripts ran
/// for the virtual time the flags allow; an error when the browser fails
/// or runs longer than `limit`.
pub fn dump_dom(
    browser: &Path,
    url: &str,
    extra: &[&str],
    profile: &Path,
    limit: Duration,
) -> Result<String, String> {
    let mut child = Command::new(browser)
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--no-first-run",
        ])
        .args(extra)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg("--dump-dom")
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("starting {}: {e}", browser.display()))?;
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
        s
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let _ = std::fs::remove_dir_all(profile);
            return Err(format!(
                "the browser did not finish within {} s",
                limit.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let dom = reader.join().unwrap();
    let _ = std::fs::remove_dir_all(profile);
    if !status.success() {
        return Err(format!("the browser exited with {status}"));
    }
    Ok(dom)
}
