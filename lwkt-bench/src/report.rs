//! `--report DIR`: a self-contained HTML page, `DIR/index.html`, with one
//! SVG bar chart per benchmark table (drawn with `plotters`, inlined in the
//! page) and the table beside it, plus the machine the figures came from;
//! and `DIR/results.json`, the same JSON that `--json` prints.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::table::{fmt_value, Group, Row};

/// The machine a run was made on, for the report's header and the
/// terminal table's first line.
#[derive(Debug, Clone)]
pub struct Machine {
    /// CPUs this process may run on (`available_parallelism`).
    pub cores: usize,
    /// CPUs online in the machine.
    pub online: Option<usize>,
    /// CPU model from `/proc/cpuinfo`.
    pub cpu_model: String,
    /// Kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// `MemTotal` from `/proc/meminfo`, in KiB.
    pub mem_kib: Option<u64>,
    /// When the run started, UTC (`2026-01-31 12:00 UTC`).
    pub date: String,
}

impl Machine {
    /// Reads the machine's description from `/proc` and the clock.
    pub fn probe() -> Machine {
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        // SAFETY: sysconf has no preconditions.
        let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
        Machine {
            cores: crate::harness::ncpus(),
            online: usize::try_from(online).ok().filter(|&n| n > 0),
            cpu_model: cpu_model(&cpuinfo).unwrap_or_else(|| "unknown CPU".into()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            mem_kib: std::fs::read_to_string("/proc/meminfo").ok().and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.split_whitespace().next()?.parse().ok())
            }),
            date: utc_now(),
        }
    }

    /// One line: `2 cores, AMD EPYC 7B13, Linux 6.1.0, 2026-01-31 12:00 UTC`.
    pub fn summary(&self) -> String {
        format!(
            "{} cores, {}, Linux {}, {}",
            self.cores, self.cpu_model, self.kernel, self.date
        )
    }
}

/// The CPU model line of a `/proc/cpuinfo` text (x86's `model name`, or
/// what other architectures call it).
fn cpu_model(cpuinfo: &str) -> Option<String> {
    [
        "model name",
        "Model",
        "cpu model",
        "Processor",
        "uarch",
        "cpu",
    ]
    .iter()
    .find_map(|key| {
        cpuinfo.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            (k.trim() == *key && !v.trim().is_empty()).then(|| v.trim().to_string())
        })
    })
}

/// The current time, UTC, to the minute.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let (y, m, d) = civil_date(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02} UTC",
        s / 3600,
        s % 3600 / 60
    )
}

/// The Gregorian (year, month, day) of a day count since 1970-01-01.
fn civil_date(days: i64) -> (i64, u32, u32) {
    // Shift the epoch to 0000-03-01 so leap days end each 4/100/400-year
    // cycle, then split into 400-year eras of 146,097 days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months counted from March, of 153 days per 5 months.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// What the report says about the run besides its tables.
#[derive(Debug, Clone)]
pub struct RunInfo {
    /// The machine the figures came from.
    pub machine: Machine,
    /// The command line that made them.
    pub command: String,
    /// Whether `--quick` (shorter repetitions) was given.
    pub quick: bool,
    /// Cross-benchmark target lines (`preempt_latency` against
    /// `yield_pingpong`), as the terminal prints them.
    pub targets: Vec<String>,
}

/// Colours: lwkt's bars, the peers', CPU-time bars, whiskers.
const LWKT: RGBColor = RGBColor(31, 95, 168);
const PEER: RGBColor = RGBColor(230, 130, 40);
const CPU: RGBColor = RGBColor(90, 90, 90);
const WHISKER: RGBColor = RGBColor(0, 0, 0);

/// Axis numbers: `1.5M`, `20k`, `350`, `2.5`.
fn compact(v: f64) -> String {
    let a = v.abs();
    let (x, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e4 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if x == x.trunc() || x.abs() >= 100.0 {
        format!("{x:.0}")
    } else {
        format!("{x:.1}")
    };
    format!("{s}{suffix}")
}

/// The number of bars [`chart_svg`] draws for a group: one per row with a
/// figure.
pub fn bar_count(g: &Group) -> usize {
    g.rows.iter().filter(|r| r.has_value()).count()
}

/// Whether the chart draws CPU time as bars of their own: only when it is
/// in the figure's own unit (ns per op), so both share the axis.
fn cpu_bars(g: &Group) -> bool {
    g.has_cpu() && g.unit == "ns/op"
}

/// One group's horizontal bar chart as an SVG document: one bar per
/// implementation (lwkt in blue, the peers in orange), the figure written
/// at the bar's end, a min–max whisker when the rows carry their spread,
/// a grey CPU-time bar under the wall-time bar when CPU ns/op is known for
/// an ns/op figure (the axis title says so). Failed implementations are listed with no bar.
pub fn chart_svg(g: &Group) -> Result<String, String> {
    let mut labels: Vec<String> = g.rows.iter().map(|r| r.imp.clone()).collect();
    labels.extend(g.failed.iter().map(|(imp, _)| format!("{imp} (failed)")));
    if labels.is_empty() {
        labels.push("(no results)".into());
    }
    let n = labels.len();
    let with_cpu = cpu_bars(g);
    let best = g.best().map(|r| r.imp.clone());

    // The axis reaches past the longest bar, whisker or CPU bar, leaving
    // room for the figure written after it.
    let mut top: f64 = 0.0;
    for r in g.rows.iter().filter(|r| r.has_value()) {
        top = top.max(r.value);
        if let Some((_, hi)) = r.spread() {
            top = top.max(hi);
        }
        if with_cpu {
            top = top.max(r.cpu_ns.unwrap_or(0.0));
        }
    }
    let xmax = if top.is_finite() && top > 0.0 {
        top * 1.3
    } else {
        1.0
    };
    // A figure too small to show at this scale still gets a sliver.
    let sliver = xmax * 0.008;

    let longest = labels.iter().map(|l| l.chars().count()).max().unwrap_or(4);
    let label_area = (longest as u32 * 8 + 20).clamp(60, 260);
    let (width, height) = (600u32, 96 + 36 * n as u32 + if with_cpu { 24 } else { 0 });
    // Row i owns the band [c, c + 1) of the y axis, c counted from the
    // bottom, so the first row is drawn on top.
    let band = |i: usize| (n - 1 - i) as f64;
    // Wall-time bars fill most of the band, or its upper half when a CPU
    // bar shares it.
    let (wall_lo, wall_hi) = if with_cpu { (0.52, 0.86) } else { (0.18, 0.82) };
    let wall_mid = (wall_lo + wall_hi) / 2.0;

    let mut svg = String::new();
    {
        let err = |e: &dyn std::fmt::Display| format!("drawing the {} chart: {e}", g.bench);
        let root = SVGBackend::with_string(&mut svg, (width, height)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(
                format!("{} ({}, {})", g.bench, g.unit, g.direction_text()),
                ("sans-serif", 21),
            )
            .margin(10)
            .margin_right(24)
            .x_label_area_size(44)
            .y_label_area_size(label_area)
            .build_cartesian_2d(0f64..xmax, 0f64..n as f64)
            .map_err(|e| err(&e))?;
        let no_label = |_: &f64| String::new();
        let x_fmt = |v: &f64| compact(*v);
        chart
            .configure_mesh()
            .disable_y_mesh()
            .x_max_light_lines(1)
            .set_tick_mark_size(LabelAreaPosition::Left, 0)
            .y_label_formatter(&no_label)
            .x_labels(6)
            .x_label_formatter(&x_fmt)
            .x_desc(if with_cpu {
                format!("{} ({}); grey: CPU time per op", g.unit, g.direction_text())
            } else {
                format!("{} ({})", g.unit, g.direction_text())
            })
            .label_style(("sans-serif", 17))
            .draw()
            .map_err(|e| err(&e))?;
        // The implementation names, right-aligned against the y axis,
        // level with their bars.
        let name_style = ("sans-serif", 17)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Right, VPos::Center));
        for (i, label) in labels.iter().enumerate() {
            let y = if i < g.rows.len() { wall_mid } else { 0.5 };
            let (x, y) = chart.backend_coord(&(0.0, band(i) + y));
            root.draw(&Text::new(label.clone(), (x - 8, y), name_style.clone()))
                .map_err(|e| err(&e))?;
        }

        let valued: Vec<(usize, &Row)> = g
            .rows
            .iter()
            .enumerate()
            .filter(|(_, r)| r.has_value())
            .collect();
        chart
            .draw_series(valued.iter().map(|&(i, r)| {
                let colour = if r.imp == "lwkt" || r.imp.starts_with("lwkt_") {
                    LWKT
                } else {
                    PEER
                };
                Rectangle::new(
                    [
                        (0.0, band(i) + wall_hi),
                        (r.value.max(sliver), band(i) + wall_lo),
                    ],
                    colour.filled(),
                )
            }))
            .map_err(|e| err(&e))?;
        if with_cpu {
            chart
                .draw_series(valued.iter().filter_map(|&(i, r)| {
                    Some(Rectangle::new(
                        [
                            (0.0, band(i) + 0.48),
                            (r.cpu_ns?.max(sliver), band(i) + 0.14),
                        ],
                        CPU.filled(),
                    ))
                }))
                .map_err(|e| err(&e))?;
        }
        // min–max whiskers through the middle of the wall-time bar.
        chart
            .draw_series(valued.iter().filter_map(|&(i, r)| {
                let (lo, hi) = r.spread()?;
                Some(ErrorBar::new_horizontal(
                    band(i) + wall_mid,
                    lo,
                    r.median.unwrap_or(r.value),
                    hi,
                    WHISKER.stroke_width(1),
                    8,
                ))
            }))
            .map_err(|e| err(&e))?;
        // The figure after each bar (after its whisker, if longer).
        let figure_style = ("sans-serif", 16)
            .into_font()
            .color(&BLACK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        chart
            .draw_series(valued.iter().map(|&(i, r)| {
                let end = r
                    .spread()
                    .map_or(r.value, |(_, hi)| hi.max(r.value))
                    .max(sliver);
                let mut text = fmt_value(r.value);
                if best.as_deref() == Some(r.imp.as_str()) {
                    text.push_str("  best");
                }
                EmptyElement::at((end, band(i) + wall_mid))
                    + Text::new(text, (5, 0), figure_style.clone())
            }))
            .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    // Inlined in HTML: drop an XML declaration if the backend wrote one.
    if let Some(start) = svg.find("<svg") {
        svg.drain(..start);
    }
    Ok(svg)
}

/// Escapes text for HTML (and XML) content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const STYLE: &str = "
body { font-family: sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { margin-bottom: 0.2em; }
dl.machine { display: grid; grid-template-columns: max-content auto; gap: 0.15em 1em; }
dl.machine dt { font-weight: bold; }
dl.machine dd { margin: 0; }
nav a { margin-right: 0.8em; }
section.bench { border-top: 1px solid #ccc; margin-top: 1.5em; padding-top: 0.5em; }
.pair { display: flex; flex-wrap: wrap; gap: 1.5em; align-items: flex-start; }
figure.chart { margin: 0; }
figure.chart svg { display: block; }
table { border-collapse: collapse; margin-top: 2.5em; }
th, td { padding: 0.25em 0.5em; border-bottom: 1px solid #e4e4e4; text-align: right; }
th:first-child, td:first-child, td.words { text-align: left; }
tr.best td { font-weight: bold; }
tr.lwkt td:first-child { color: #1f5fa8; }
td.failed { color: #a00; text-align: left; }
.verdict { font-weight: bold; }
ul.notes { font-size: 0.9em; color: #444; }
";

/// A group's table as HTML rows: the same cells as the terminal table.
fn table_html(g: &Group) -> String {
    let cells = g.cells();
    let best = g.best().map(|r| r.imp.clone());
    let mut s = String::from("<table>\n<tr>");
    for h in &cells[0] {
        let _ = write!(s, "<th>{}</th>", escape(h));
    }
    s.push_str("</tr>\n");
    let cols = cells[0].len();
    for line in &cells[1..] {
        let mut class = Vec::new();
        if line[0] == "lwkt" || line[0].starts_with("lwkt_") {
            class.push("lwkt");
        }
        if best.as_deref() == Some(line[0].as_str()) {
            class.push("best");
        }
        let _ = write!(s, "<tr class=\"{}\">", class.join(" "));
        for (c, cell) in line.iter().enumerate() {
            let class = if c == cols - 1 && g.compared() {
                " class=\"words\""
            } else {
                ""
            };
            let _ = write!(s, "<td{class}>{}</td>", escape(cell));
        }
        s.push_str("</tr>\n");
    }
    for (imp, e) in &g.failed {
        let _ = writeln!(
            s,
            "<tr><td>{}</td><td class=\"failed\" colspan=\"{}\">failed: {}</td></tr>",
            escape(imp),
            cols - 1,
            escape(e)
        );
    }
    s.push_str("</table>");
    s
}

/// The report page for `groups`. It is well-formed XML as well as HTML, so
/// tests can read it with an XML parser; it loads nothing from elsewhere.
pub fn html(groups: &[Group], info: &RunInfo) -> Result<String, String> {
    let m = &info.machine;
    let mut s = String::new();
    s.push_str("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\"/>\n");
    s.push_str("<title>lwkt-bench report</title>\n<style>");
    s.push_str(STYLE);
    s.push_str("</style>\n</head>\n<body>\n<h1>lwkt-bench report</h1>\n");
    s.push_str("<dl class=\"machine\">\n");
    let mut item = |k: &str, v: String| {
        let _ = writeln!(s, "<dt>{}</dt><dd>{}</dd>", escape(k), escape(&v));
    };
    item("CPU", m.cpu_model.clone());
    item(
        "cores",
        match m.online {
            Some(on) if on != m.cores => format!("{} (of {on} online)", m.cores),
            _ => m.cores.to_string(),
        },
    );
    item("kernel", format!("Linux {}", m.kernel));
    if let Some(kib) = m.mem_kib {
        item(
            "memory",
            format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0)),
        );
    }
    item("date", m.date.clone());
    item(
        "mode",
        if info.quick {
            "--quick (short repetitions: a smoke test, not figures to quote)".into()
        } else {
            "full".into()
        },
    );
    item("command", info.command.clone());
    s.push_str("</dl>\n");
    s.push_str(
        "<p>One chart and table per benchmark. Bars: <span style=\"color:#1f5fa8\">lwkt</span> \
         in blue, its peers in orange; whiskers span min–max over the repetitions where \
         measured. “÷ lwkt” is each figure divided by lwkt's; the words say which way that \
         is better. The raw figures are in <a href=\"results.json\">results.json</a>.</p>\n",
    );
    s.push_str("<nav>");
    for g in groups {
        let _ = write!(s, "<a href=\"#b-{0}\">{0}</a> ", escape(&g.bench));
    }
    s.push_str("</nav>\n");
    for g in groups {
        let name = escape(&g.bench);
        let _ = writeln!(
            s,
            "<section class=\"bench\" id=\"b-{name}\" data-bench=\"{name}\">"
        );
        let _ = writeln!(s, "<h2>{name}</h2>");
        let _ = writeln!(s, "<p class=\"about\">{}</p>", escape(&g.about));
        let _ = writeln!(
            s,
            "<p class=\"unit\">unit: <b>{}</b>; {}</p>",
            escape(&g.unit),
            g.direction_text()
        );
        s.push_str("<div class=\"pair\">\n");
        let _ = writeln!(
            s,
            "<figure class=\"chart\" data-bench=\"{name}\" data-bars=\"{}\">",
            bar_count(g)
        );
        s.push_str(&chart_svg(g)?);
        s.push_str("\n</figure>\n");
        s.push_str(&table_html(g));
        s.push_str("\n</div>\n");
        if let Some(v) = g.verdict() {
            let _ = writeln!(s, "<p class=\"verdict\">{}</p>", escape(&v));
        }
        let notes: Vec<&Row> = g.rows.iter().filter(|r| r.note.is_some()).collect();
        if !notes.is_empty() {
            s.push_str("<ul class=\"notes\">\n");
            for r in notes {
                let _ = writeln!(
                    s,
                    "<li><b>{}</b>: {}</li>",
                    escape(&r.imp),
                    escape(r.note.as_deref().unwrap_or_default())
                );
            }
            s.push_str("</ul>\n");
        }
        s.push_str("</section>\n");
    }
    if !info.targets.is_empty() {
        s.push_str("<section id=\"targets\">\n<h2>Cross-benchmark targets (same run)</h2>\n<ul>\n");
        for t in &info.targets {
            let _ = writeln!(s, "<li>{}</li>", escape(t));
        }
        s.push_str("</ul>\n</section>\n");
    }
    s.push_str("</body>\n</html>\n");
    Ok(s)
}

/// Writes `dir/index.html` (the page) and `dir/results.json` (`json`, the
/// `--json` output), creating `dir` if needed; returns the page's path.
pub fn write(dir: &Path, groups: &[Group], info: &RunInfo, json: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let page = dir.join("index.html");
    let html = html(groups, info)?;
    std::fs::write(&page, html).map_err(|e| format!("writing {}: {e}", page.display()))?;
    let data = dir.join("results.json");
    std::fs::write(&data, format!("{json}\n"))
        .map_err(|e| format!("writing {}: {e}", data.display()))?;
    Ok(page)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::benches;
    use crate::table::groups;
    use crate::table::tests::m;

    fn info() -> RunInfo {
        RunInfo {
            machine: Machine::probe(),
            command: "lwkt-bench --report out".into(),
            quick: true,
            targets: vec!["preempt_latency/lwkt 30 ns/op = 1.50x ... : met".into()],
        }
    }

    /// Groups of three kinds: a comparison with a failure, a
    /// higher-is-better comparison, and a multi-row series.
    fn sample() -> Vec<Group> {
        let mut out = Vec::new();
        let yp = benches::find("yield_pingpong").unwrap();
        let mut lwkt = m("yield_pingpong", "lwkt", 25.0, "ns/op");
        lwkt.note = Some("1 cpu <fast> & \"quoted\"".into());
        out.extend(groups(
            yp,
            &[
                ("lwkt", Ok(vec![lwkt])),
                (
                    "tokio",
                    Ok(vec![m("yield_pingpong", "tokio", 90.0, "ns/op")]),
                ),
                ("may", Err("child exited with 134".into())),
            ],
        ));
        let tc = benches::find("token_contended").unwrap();
        out.extend(groups(
            tc,
            &[
                ("lwkt", Ok(vec![m("token_contended", "lwkt", 4e7, "ops/s")])),
                (
                    "parking_lot",
                    Ok(vec![m("token_contended", "parking_lot", 1.5e7, "ops/s")]),
                ),
            ],
        ));
        let sc = benches::find("scaling").unwrap();
        out.extend(groups(
            sc,
            &[(
                "lwkt",
                Ok(vec![
                    m("scaling_wakeup", "lwkt_c1", 100.0, "ns/op"),
                    m("scaling_wakeup", "lwkt_c2", 900.0, "ns/op"),
                    m("runtime_rss_256", "lwkt", 30.0, "MiB"),
                ]),
            )],
        ));
        out
    }

    /// The elements named `name` under `node`, in any namespace.
    fn all<'a>(node: roxmltree::Node<'a, 'a>, name: &str) -> Vec<roxmltree::Node<'a, 'a>> {
        node.descendants()
            .filter(|n| n.tag_name().name() == name)
            .collect()
    }

    /// Rectangles in an SVG with a colour other than white and an area.
    fn filled_rects(svg: roxmltree::Node) -> usize {
        all(svg, "rect")
            .into_iter()
            .filter(|r| {
                let num = |a: &str| r.attribute(a).and_then(|v| v.parse::<f64>().ok());
                let fill = r.attribute("fill").unwrap_or("none").to_ascii_uppercase();
                num("width").unwrap_or(0.0) > 0.0
                    && num("height").unwrap_or(0.0) > 0.0
                    && fill != "NONE"
                    && fill != "#FFFFFF"
                    && fill != "WHITE"
            })
            .count()
    }

    #[test]
    fn page_has_one_drawn_chart_per_group() {
        let gs = sample();
        let page = html(&gs, &info()).unwrap();
        let doc = roxmltree::Document::parse_with_options(
            &page,
            roxmltree::ParsingOptions {
                allow_dtd: true,
                ..Default::default()
            },
        )
        .expect("the page is well-formed");
        let figures: Vec<_> = all(doc.root(), "figure");
        let names: Vec<&str> = figures
            .iter()
            .map(|f| f.attribute("data-bench").unwrap())
            .collect();
        assert_eq!(
            names,
            [
                "yield_pingpong",
                "token_contended",
                "scaling_wakeup",
                "runtime_rss_256"
            ]
        );
        for (f, g) in figures.iter().zip(&gs) {
            let svgs = all(*f, "svg");
            assert_eq!(svgs.len(), 1, "{}", g.bench);
            let bars: usize = f.attribute("data-bars").unwrap().parse().unwrap();
            assert_eq!(bars, bar_count(g));
            assert!(bars >= 1);
            assert!(filled_rects(svgs[0]) >= bars, "{}", g.bench);
            // Every implementation is named on the chart.
            let text: String = all(svgs[0], "text")
                .iter()
                .filter_map(|t| t.text())
                .collect::<Vec<_>>()
                .join("|");
            for r in &g.rows {
                assert!(text.contains(&r.imp), "{} not in {text}", r.imp);
            }
        }
        assert!(page.contains("may (failed)"));
        assert!(page.contains("failed: child exited with 134"));
        assert!(page.contains("1 cpu &lt;fast&gt; &amp; &quot;quoted&quot;"));
        assert!(page.contains("lower is better") && page.contains("higher is better"));
        assert!(page.contains("best: lwkt, 40,000,000 ops/s"));
        assert!(page.contains("Cross-benchmark targets"));
        let machine = info().machine;
        assert!(page.contains(&escape(&machine.cpu_model)));
        assert!(page.contains(&machine.date));
        // Nothing is loaded from elsewhere: no scripts, links or sources.
        for tag in [" src=", "<link", "<script", "<img", "<iframe", "url("] {
            assert!(!page.contains(tag), "{tag}");
        }
    }

    #[test]
    fn spread_and_cpu_are_drawn_when_present() {
        let cc = benches::find("cross_cpu_pingpong").unwrap();
        let mut g = groups(
            cc,
            &[
                (
                    "lwkt",
                    Ok(vec![m("cross_cpu_pingpong", "lwkt", 1500.0, "ns/op")]),
                ),
                (
                    "std_thread",
                    Ok(vec![m("cross_cpu_pingpong", "std_thread", 6000.0, "ns/op")]),
                ),
            ],
        )
        .remove(0);
        let plain = chart_svg(&g).unwrap();
        g.rows[0].min = Some(1400.0);
        g.rows[0].median = Some(1500.0);
        g.rows[0].max = Some(1800.0);
        g.rows[1].cpu_ns = Some(9000.0);
        let rich = chart_svg(&g).unwrap();
        let doc = roxmltree::Document::parse(&rich).unwrap();
        // Two wall bars, one CPU bar.
        assert!(filled_rects(doc.root()) >= 3, "{rich}");
        assert!(rich.contains("grey: CPU time per op"));
        // The whisker adds lines that the plain chart lacks.
        let lines = |s: &str| s.matches("<line").count() + s.matches("<polyline").count();
        assert!(lines(&rich) > lines(&plain), "{rich}");
        let page = html(std::slice::from_ref(&g), &info()).unwrap();
        assert!(page.contains("min–max") && page.contains("1,400–1,800"));
        assert!(page.contains("CPU ns/op") && page.contains("9,000"));
    }

    #[test]
    fn a_group_with_only_failures_still_gets_a_chart() {
        let b = benches::find("spawn_join").unwrap();
        let g = &groups(b, &[("lwkt", Err("boom".into()))])[0];
        assert_eq!(bar_count(g), 0);
        let svg = chart_svg(g).unwrap();
        assert!(svg.starts_with("<svg") && svg.contains("lwkt (failed)"));
    }

    #[test]
    fn write_makes_the_page_and_the_json() {
        let dir = std::env::temp_dir().join(format!("lwkt-report-unit-{}", std::process::id()));
        let page = write(&dir, &sample(), &info(), "{\"results\":[]}").unwrap();
        assert_eq!(page, dir.join("index.html"));
        assert!(std::fs::read_to_string(&page).unwrap().contains("<figure"));
        assert_eq!(
            std::fs::read_to_string(dir.join("results.json")).unwrap(),
            "{\"results\":[]}\n"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn dates_and_cpu_models() {
        assert_eq!(civil_date(0), (1970, 1, 1));
        assert_eq!(civil_date(11_016), (2000, 2, 29));
        assert_eq!(civil_date(19_723), (2024, 1, 1));
        assert_eq!(civil_date(-1), (1969, 12, 31));
        assert_eq!(
            cpu_model("processor\t: 0\nmodel name\t: AMD EPYC 7B13\n").as_deref(),
            Some("AMD EPYC 7B13")
        );
        assert_eq!(cpu_model("processor : 0\n"), None);
        assert_eq!(compact(1_500_000.0), "1.5M");
        assert_eq!(compact(20_000.0), "20k");
        assert_eq!(compact(350.0), "350");
        assert_eq!(compact(2.5), "2.5");
        let date = utc_now();
        assert!(date.ends_with(" UTC") && date.len() == 20, "{date}");
    }
}
