//! What a run looks like to a person: results grouped into one table per
//! benchmark, each implementation's figure, its ratio to lwkt, and which
//! implementation is best. The terminal table ([`Group::render`]) and the
//! HTML report (`report.rs`) are both drawn from the [`Group`]s built here.
//!
//! A multi-row benchmark (`scaling`) gives one group per bench name its rows
//! carry (`scaling_wakeup`, `scaling_token`, ...): rows are only compared
//! with rows of the same bench and unit.

use crate::benches::{self, Bench, Better};
use crate::harness::Measurement;

/// One implementation's outcome: its rows, or why it failed.
pub type Outcome = Result<Vec<Measurement>, String>;

/// One implementation's figure, as the table and the report show it.
///
/// The spread and CPU fields are optional so that the rendering works for
/// measurements that carry them and for those that do not; a column or a
/// whisker appears only when some row of a group has the figure.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// Implementation name (`lwkt`, `tokio`, `lwkt_c4`, ...).
    pub imp: String,
    /// The figure, in the group's unit.
    pub value: f64,
    /// Configuration used, limits met.
    pub note: Option<String>,
    /// Smallest figure over the repetitions (same unit as `value`).
    pub min: Option<f64>,
    /// Median over the repetitions (same unit as `value`).
    pub median: Option<f64>,
    /// Largest figure over the repetitions (same unit as `value`).
    pub max: Option<f64>,
    /// CPU time per operation, in ns (all threads of the run).
    pub cpu_ns: Option<f64>,
    /// Whether the row takes part in the "best" verdict (false for the
    /// benchmark's `unranked` implementations: shown for reference only).
    pub ranked: bool,
}

impl Row {
    /// The row for one measurement.
    pub fn from_measurement(m: &Measurement) -> Row {
        Row {
            imp: m.imp.clone(),
            value: m.value,
            note: m.note.clone(),
            min: m.min,
            median: m.median,
            max: m.max,
            cpu_ns: m.cpu_ns,
            ranked: true,
        }
    }

    /// `(min, max)` over the repetitions, when both are known.
    pub fn spread(&self) -> Option<(f64, f64)> {
        Some((self.min?, self.max?))
    }

    /// Whether the figure can be compared and drawn.
    pub fn has_value(&self) -> bool {
        self.value.is_finite() && self.value >= 0.0
    }
}

/// One table and one chart: the rows that share a bench name and a unit.
#[derive(Debug, Clone)]
pub struct Group {
    /// The rows' bench name (`yield_pingpong`, or `scaling_wakeup` for a
    /// row of `scaling`).
    pub bench: String,
    /// One-line description (the parent's for rows of a multi-row bench).
    pub about: String,
    /// Unit of every row's `value`.
    pub unit: String,
    /// Which way the figure is better.
    pub better: Better,
    /// Rows in the order the implementations ran.
    pub rows: Vec<Row>,
    /// Implementations that produced no figure, with the reason.
    pub failed: Vec<(String, String)>,
    /// Whether the rows come from more than one implementation in the
    /// registry (a comparison), rather than several rows of one run (a
    /// series, such as `scaling`'s CPU counts). Only a comparison names a
    /// best implementation.
    pub compares_impls: bool,
}

/// Which way a sub-row of a multi-row benchmark is better: the registry's
/// word when the row's bench is itself a registered benchmark, else the
/// parent's when the unit is the parent's, else a guess from the unit
/// (throughput higher, time and memory lower).
fn direction(bench: &str, unit: &str, parent: &Bench) -> Better {
    if let Some(b) = benches::find(bench) {
        return b.better;
    }
    if unit == parent.unit {
        return parent.better;
    }
    let per_second = ["ops/s", "req/s", "requests/s", "ops/sec"];
    let lower = ["ns", "ns/op", "us", "µs", "ms", "s", "KiB", "MiB", "GiB"];
    if per_second.contains(&unit) {
        Better::Higher
    } else if lower.contains(&unit) || unit.starts_with("KiB/") || unit.starts_with("MiB/") {
        Better::Lower
    } else {
        parent.better
    }
}

/// Groups one benchmark's outcomes (registry implementation name, and its
/// rows or the reason it failed) into tables, one per (bench, unit) the
/// rows carry, in the order they first appear. Failures go to the group
/// named after the benchmark itself (created when no row has that name).
pub fn groups(bench: &Bench, outcomes: &[(&str, Outcome)]) -> Vec<Group> {
    let mut out: Vec<Group> = Vec::new();
    let mut sources: Vec<Vec<&str>> = Vec::new();
    let index = |out: &mut Vec<Group>, sources: &mut Vec<Vec<&str>>, name: &str, unit: &str| {
        if let Some(i) = out.iter().position(|g| g.bench == name && g.unit == unit) {
            return i;
        }
        let about = if name == bench.name {
            bench.about.to_string()
        } else {
            format!("part of `{}`: {}", bench.name, bench.about)
        };
        out.push(Group {
            bench: name.to_string(),
            about,
            unit: unit.to_string(),
            better: direction(name, unit, bench),
            rows: Vec::new(),
            failed: Vec::new(),
            compares_impls: false,
        });
        sources.push(Vec::new());
        out.len() - 1
    };
    for (imp, outcome) in outcomes {
        match outcome {
            Ok(ms) => {
                for m in ms {
                    let i = index(&mut out, &mut sources, &m.bench, &m.unit);
                    let mut row = Row::from_measurement(m);
                    row.ranked = !bench.unranked.contains(imp);
                    out[i].rows.push(row);
                    if !sources[i].contains(imp) {
                        sources[i].push(imp);
                    }
                }
            }
            Err(e) => {
                let i = out
                    .iter()
                    .position(|g| g.bench == bench.name)
                    .unwrap_or_else(|| index(&mut out, &mut sources, bench.name, bench.unit));
                out[i].failed.push((imp.to_string(), e.clone()));
                if !sources[i].contains(imp) {
                    sources[i].push(imp);
                }
            }
        }
    }
    for (g, s) in out.iter_mut().zip(&sources) {
        g.compares_impls = s.len() > 1;
    }
    out
}

/// Formats a figure: whole numbers for large values (with thousands
/// separators), two or one decimals for small ones.
pub fn fmt_value(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v.abs() >= 1000.0 || (v == v.trunc() && v.abs() < 1e15) {
        let digits = format!("{:.0}", v.abs());
        let mut grouped = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                grouped.push(',');
            }
            grouped.push(c);
        }
        if v < 0.0 {
            grouped.insert(0, '-');
        }
        grouped
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Formats a ratio or factor: more decimals for small ones.
pub fn fmt_ratio(r: f64) -> String {
    if r >= 100.0 {
        format!("{r:.0}")
    } else if r >= 10.0 {
        format!("{r:.1}")
    } else {
        format!("{r:.2}")
    }
}

/// Words for "better" and "worse" in a unit: `faster` / `slower` for
/// time, `less memory` / `more memory`, and so on.
pub fn wording(unit: &str, better: bool) -> &'static str {
    let time = ["ns/op", "ns", "us", "µs", "ms", "s"];
    let memory = unit.starts_with("KiB") || unit.starts_with("MiB") || unit.starts_with("GiB");
    match (unit, better) {
        (u, true) if time.contains(&u) => "faster",
        (u, false) if time.contains(&u) => "slower",
        ("ms/s", true) => "less CPU",
        ("ms/s", false) => "more CPU",
        (u, true) if u.ends_with("/s") => "more throughput",
        (u, false) if u.ends_with("/s") => "less throughput",
        (_, true) if memory => "less memory",
        (_, false) if memory => "more memory",
        (_, true) => "better",
        (_, false) => "worse",
    }
}

impl Group {
    /// The row the others are compared with: `lwkt` when present, else
    /// the first row (`lwkt_c1` in a `scaling` series).
    pub fn reference(&self) -> Option<&Row> {
        self.rows
            .iter()
            .find(|r| r.imp == "lwkt")
            .or_else(|| self.rows.first())
            .filter(|r| r.has_value() && r.value > 0.0)
    }

    /// `row.value / reference.value`: how many times the reference's
    /// figure this row's is (below 1: smaller).
    pub fn ratio(&self, row: &Row) -> Option<f64> {
        let base = self.reference()?;
        let r = row.value / base.value;
        (row.has_value() && r.is_finite()).then_some(r)
    }

    /// The best row of a comparison (lowest or highest figure, as the
    /// benchmark says) among the ranked rows; `None` for a series or fewer
    /// than two ranked figures.
    pub fn best(&self) -> Option<&Row> {
        if !self.compares_impls {
            return None;
        }
        let valued: Vec<&Row> = self
            .rows
            .iter()
            .filter(|r| r.has_value() && r.ranked)
            .collect();
        if valued.len() < 2 {
            return None;
        }
        self.best_of(valued)
    }

    /// The best of `rows` by the benchmark's direction (the first of equals).
    fn best_of<'a>(&self, rows: impl IntoIterator<Item = &'a Row>) -> Option<&'a Row> {
        rows.into_iter().reduce(|a, b| match self.better {
            Better::Lower if b.value < a.value => b,
            Better::Higher if b.value > a.value => b,
            _ => a,
        })
    }

    /// How `row` stands against `base`, in words: `2.50x faster`,
    /// `1.30x less throughput`, `same`.
    pub fn relative(&self, row: &Row, base: &Row) -> Option<String> {
        let r = row.value / base.value;
        if !(row.has_value() && base.has_value() && r.is_finite()) || r <= 0.0 {
            return None;
        }
        if (r - 1.0).abs() < 0.005 {
            return Some("same".into());
        }
        let row_better = match self.better {
            Better::Lower => r < 1.0,
            Better::Higher => r > 1.0,
        };
        let factor = if r >= 1.0 { r } else { 1.0 / r };
        Some(format!(
            "{}x {}",
            fmt_ratio(factor),
            wording(&self.unit, row_better)
        ))
    }

    /// The one-line verdict: which implementation is best, and where lwkt
    /// stands (`best: tokio, 80.0 ns/op; lwkt 1.25x slower`).
    pub fn verdict(&self) -> Option<String> {
        let best = self.best()?;
        let head = format!(
            "best: {}, {} {}",
            best.imp,
            fmt_value(best.value),
            self.unit
        );
        let Some(reference) = self.reference() else {
            return Some(head);
        };
        if best.imp == reference.imp {
            // lwkt leads: by how much over the runner-up.
            let second = self.best_of(
                self.rows
                    .iter()
                    .filter(|r| r.has_value() && r.ranked && r.imp != best.imp),
            )?;
            let by = self.relative(second, best)?;
            Some(format!("{head}; next: {}, {by}", second.imp))
        } else {
            let by = self.relative(reference, best)?;
            Some(format!("{head}; {} {by}", reference.imp))
        }
    }

    /// "lower is better" / "higher is better".
    pub fn direction_text(&self) -> &'static str {
        match self.better {
            Better::Lower => "lower is better",
            Better::Higher => "higher is better",
        }
    }

    /// Whether any row carries a min/max spread.
    pub fn has_spread(&self) -> bool {
        self.rows.iter().any(|r| r.spread().is_some())
    }

    /// Whether any row carries CPU time per operation.
    pub fn has_cpu(&self) -> bool {
        self.rows.iter().any(|r| r.cpu_ns.is_some())
    }

    /// Whether the table compares rows: it has more than one, so it gets
    /// the ratio and standing columns.
    pub fn compared(&self) -> bool {
        self.rows.len() > 1
    }

    /// The table's cells, one line per row (header first): impl, figure,
    /// min–max and CPU ns/op (when some row has them), then, when the table
    /// compares rows, the ratio to the reference and the standing in words
    /// (always the last column). The terminal and the HTML report both lay
    /// these out.
    pub fn cells(&self) -> Vec<Vec<String>> {
        let reference = self.reference().map(|r| r.imp.clone());
        let best = self.best().map(|r| r.imp.clone());
        let mut header = vec!["impl".to_string(), self.unit.clone()];
        if self.has_spread() {
            header.push("min–max".into());
        }
        if self.has_cpu() {
            header.push("CPU ns/op".into());
        }
        if self.compared() {
            header.push(format!("÷ {}", reference.as_deref().unwrap_or("lwkt")));
            header.push(String::new());
        }
        let mut lines = vec![header];
        for row in &self.rows {
            let mut line = vec![row.imp.clone(), fmt_value(row.value)];
            if self.has_spread() {
                line.push(
                    row.spread()
                        .map(|(lo, hi)| format!("{}–{}", fmt_value(lo), fmt_value(hi)))
                        .unwrap_or_default(),
                );
            }
            if self.has_cpu() {
                line.push(row.cpu_ns.map(fmt_value).unwrap_or_default());
            }
            if !self.compared() {
                lines.push(line);
                continue;
            }
            line.push(self.ratio(row).map(fmt_ratio).unwrap_or_default());
            let mut words = Vec::new();
            if reference.as_deref() != Some(row.imp.as_str()) {
                if let Some(base) = self.reference() {
                    words.extend(self.relative(row, base));
                }
            }
            if best.as_deref() == Some(row.imp.as_str()) {
                words.push("best".into());
            }
            if !row.ranked {
                words.push("reference, not ranked".into());
            }
            line.push(words.join(", "));
            lines.push(line);
        }
        lines
    }

    /// The terminal table: a title line, the aligned table, failures, the
    /// verdict, then the notes.
    pub fn render(&self) -> String {
        let mut s = format!(
            "{} ({}, {}): {}\n",
            self.bench,
            self.unit,
            self.direction_text(),
            self.about
        );
        let cells = self.cells();
        let cols = cells[0].len();
        let width: Vec<usize> = (0..cols)
            .map(|c| {
                cells
                    .iter()
                    .map(|l| l[c].chars().count())
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for line in &cells {
            let mut out = String::new();
            for (c, cell) in line.iter().enumerate() {
                let w = width[c];
                // Names left-aligned, figures right-aligned, words last.
                if c == 0 || (c == cols - 1 && self.compared()) {
                    out.push_str(&format!("  {cell:<w$}"));
                } else {
                    out.push_str(&format!("  {cell:>w$}"));
                }
            }
            s.push_str(out.trim_end());
            s.push('\n');
        }
        for (imp, e) in &self.failed {
            s.push_str(&format!("  {imp:<w$}  failed: {e}\n", w = width[0]));
        }
        if let Some(v) = self.verdict() {
            s.push_str(&format!("  {v}\n"));
        }
        for row in &self.rows {
            if let Some(n) = &row.note {
                s.push_str(&format!("    {}: {n}\n", row.imp));
            }
        }
        s
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A measurement of `bench`/`imp`.
    pub(crate) fn m(bench: &str, imp: &str, value: f64, unit: &str) -> Measurement {
        Measurement {
            bench: bench.into(),
            imp: imp.into(),
            value,
            unit: unit.into(),
            note: None,
            ..Measurement::default()
        }
    }

    fn one(
        bench: &'static str,
        rows: &[(&'static str, f64)],
    ) -> (&'static Bench, Vec<(&'static str, Outcome)>) {
        let b = benches::find(bench).unwrap();
        let outcomes = rows
            .iter()
            .map(|&(imp, v)| (imp, Ok(vec![m(bench, imp, v, b.unit)])))
            .collect();
        (b, outcomes)
    }

    #[test]
    fn lower_is_better_table() {
        let (b, mut outcomes) = one(
            "yield_pingpong",
            &[("lwkt", 25.0), ("corosensei", 10.0), ("tokio", 100.0)],
        );
        outcomes.push(("may", Err("child exited with 134".into())));
        let gs = groups(b, &outcomes);
        assert_eq!(gs.len(), 1);
        let g = &gs[0];
        assert_eq!(g.best().unwrap().imp, "corosensei");
        assert_eq!(g.ratio(&g.rows[2]), Some(4.0));
        let t = g.render();
        assert!(
            t.starts_with("yield_pingpong (ns/op, lower is better): "),
            "{t}"
        );
        assert!(t.contains("÷ lwkt"), "{t}");
        let line = |imp: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(&format!("{imp} ")))
                .unwrap_or_else(|| panic!("no {imp} line in\n{t}"))
                .to_string()
        };
        assert!(
            line("corosensei").ends_with("0.40  2.50x faster, best"),
            "{t}"
        );
        assert!(line("tokio").ends_with("4.00  4.00x slower"), "{t}");
        assert!(line("lwkt").ends_with("1.00"), "{t}");
        assert!(line("may").contains("failed: child exited with 134"), "{t}");
        assert!(
            t.contains("best: corosensei, 10 ns/op; lwkt 2.50x slower"),
            "{t}"
        );
        // No spread or CPU column when nothing carries them.
        assert!(!t.contains("min–max") && !t.contains("CPU ns/op"), "{t}");
    }

    /// A bench's `unranked` rows are shown and compared, but never named
    /// best: cross_cpu_pingpong's same-worker hand-offs and machine floor.
    #[test]
    fn unranked_rows_are_never_best() {
        let (b, outcomes) = one(
            "cross_cpu_pingpong",
            &[
                ("lwkt", 300.0),
                ("tokio", 150.0),
                ("may", 190.0),
                ("tokio_2rt", 30_000.0),
                ("std_thread_spin", 50.0),
                ("spin_floor", 60.0),
            ],
        );
        let g = &groups(b, &outcomes)[0];
        assert_eq!(g.best().unwrap().imp, "std_thread_spin");
        let t = g.render();
        let line = |imp: &str| {
            t.lines()
                .find(|l| l.trim_start().starts_with(&format!("{imp} ")))
                .unwrap_or_else(|| panic!("no {imp} line in\n{t}"))
                .to_string()
        };
        for imp in ["tokio", "may", "spin_floor"] {
            assert!(line(imp).ends_with("reference, not ranked"), "{t}");
        }
        assert!(!line("std_thread_spin").contains("not ranked"), "{t}");
        // Without the ranked cross-CPU rows, the best ranked one is lwkt,
        // though the same-worker tokio row is faster.
        let (b, outcomes) = one(
            "cross_cpu_pingpong",
            &[("lwkt", 300.0), ("tokio", 150.0), ("tokio_2rt", 30_000.0)],
        );
        let g = &groups(b, &outcomes)[0];
        assert_eq!(g.best().unwrap().imp, "lwkt");
        assert!(
            g.verdict().unwrap().contains("next: tokio_2rt"),
            "{:?}",
            g.verdict()
        );
    }

    #[test]
    fn higher_is_better_table() {
        let (b, outcomes) = one(
            "token_contended",
            &[("lwkt", 3e6), ("parking_lot", 1e6), ("std_mutex", 2e6)],
        );
        let g = &groups(b, &outcomes)[0];
        assert_eq!(g.better, Better::Higher);
        assert_eq!(g.best().unwrap().imp, "lwkt");
        let t = g.render();
        assert!(t.contains("3,000,000"), "{t}");
        assert!(t.contains("3.00x less throughput"), "{t}");
        assert!(
            t.contains("best: lwkt, 3,000,000 ops/s; next: std_mutex, 1.50x less throughput"),
            "{t}"
        );
    }

    #[test]
    fn one_implementation_names_no_best() {
        let (b, outcomes) = one("max_threads", &[("lwkt", 123456.0)]);
        let g = &groups(b, &outcomes)[0];
        assert!(g.best().is_none() && g.verdict().is_none());
        let t = g.render();
        assert!(t.contains("lwkt  123,456"), "{t}");
        // Nothing to compare with: no ratio column.
        assert!(!t.contains('÷') && !t.contains("1.00"), "{t}");
        assert_eq!(g.cells()[0], ["impl", "threads"]);
    }

    #[test]
    fn multi_row_bench_groups_by_row_bench() {
        let b = benches::find("scaling").unwrap();
        let rows = vec![
            m("scaling_wakeup", "lwkt_c1", 100.0, "ns/op"),
            m("scaling_wakeup", "lwkt_c2", 300.0, "ns/op"),
            m("scaling_token", "lwkt_c1", 20.0, "ns/op"),
            m("scaling_token", "lwkt_c2", 40.0, "ns/op"),
            m("runtime_build_256", "lwkt", 170.0, "ms"),
            m("runtime_rss_256", "lwkt", 300.0, "MiB"),
        ];
        let gs = groups(b, &[("lwkt", Ok(rows))]);
        let names: Vec<&str> = gs.iter().map(|g| g.bench.as_str()).collect();
        assert_eq!(
            names,
            [
                "scaling_wakeup",
                "scaling_token",
                "runtime_build_256",
                "runtime_rss_256"
            ]
        );
        let w = &gs[0];
        assert_eq!((w.unit.as_str(), w.better), ("ns/op", Better::Lower));
        assert!(!w.compares_impls && w.best().is_none());
        assert_eq!(w.reference().unwrap().imp, "lwkt_c1");
        let t = w.render();
        assert!(t.contains("÷ lwkt_c1"), "{t}");
        assert!(t.contains("3.00x slower"), "{t}");
        assert!(t.contains("part of `scaling`"), "{t}");
        assert_eq!(gs[3].unit, "MiB");
        assert_eq!(gs[3].better, Better::Lower);
        // A failed run of a multi-row bench lands in a group of its own.
        let gs = groups(b, &[("lwkt", Err("timed out".into()))]);
        assert_eq!(gs.len(), 1);
        assert_eq!(gs[0].bench, "scaling");
        assert!(gs[0].render().contains("failed: timed out"));
    }

    #[test]
    fn sub_row_direction_follows_its_unit() {
        let b = benches::find("token_contended").unwrap();
        assert_eq!(direction("kv_p99", "µs", b), Better::Lower);
        assert_eq!(direction("kv", "req/s", b), Better::Higher);
        assert_eq!(direction("token_contended", "ops/s", b), Better::Higher);
        assert_eq!(direction("yield_pingpong", "ns/op", b), Better::Lower);
        assert_eq!(direction("odd", "widgets", b), Better::Higher);
    }

    #[test]
    fn spread_and_cpu_columns_appear_when_present() {
        let (b, outcomes) = one(
            "cross_cpu_pingpong",
            &[("lwkt", 1500.0), ("std_thread", 6000.0)],
        );
        let mut g = groups(b, &outcomes).remove(0);
        g.rows[0].min = Some(1400.0);
        g.rows[0].max = Some(1700.0);
        g.rows[0].cpu_ns = Some(2900.0);
        g.rows[1].cpu_ns = Some(5000.0);
        let t = g.render();
        assert!(t.contains("min–max") && t.contains("CPU ns/op"), "{t}");
        assert!(t.contains("1,400–1,700"), "{t}");
        assert!(t.contains("2,900") && t.contains("5,000"), "{t}");
        let cells = g.cells();
        assert!(cells.iter().all(|l| l.len() == cells[0].len()));
    }

    #[test]
    fn wording_and_formatting() {
        assert_eq!(wording("ns/op", true), "faster");
        assert_eq!(wording("KiB/thread", false), "more memory");
        assert_eq!(wording("ms/s", true), "less CPU");
        assert_eq!(wording("ops/s", false), "less throughput");
        assert_eq!(wording("threads", true), "better");
        assert_eq!(fmt_value(1234567.0), "1,234,567");
        assert_eq!(fmt_value(-1234.4), "-1,234");
        assert_eq!(fmt_value(12.34), "12.3");
        assert_eq!(fmt_value(1.234), "1.23");
        assert_eq!(fmt_value(7.0), "7");
        assert_eq!(fmt_ratio(123.4), "123");
    }

    #[test]
    fn zero_or_missing_reference_gives_no_ratio() {
        let (b, outcomes) = one("spawn_join", &[("lwkt", 0.0), ("tokio", 5.0)]);
        let g = &groups(b, &outcomes)[0];
        assert!(g.reference().is_none());
        assert!(g.ratio(&g.rows[1]).is_none());
        // The best is still named; the lwkt comparison is left out.
        assert_eq!(g.best().unwrap().imp, "lwkt");
        let t = g.render();
        assert!(!t.contains("inf") && !t.contains("NaN"), "{t}");
    }
}
