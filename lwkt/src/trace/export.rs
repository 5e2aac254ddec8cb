//! A finished (or running) capture, decoded: [`TraceData`], and its
//! export as Chrome trace-event JSON (`serde_json`), which Perfetto
//! (<https://ui.perfetto.dev>), its trace processor and `chrome://tracing`
//! open.
//!
//! What the export shows, per runtime:
//! * process "lwkt CPUs": one track per CPU; a slice for every stretch a
//!   thread ran (named after the thread, with the reason it switched out);
//!   a handoff shows as a slice nested in the thread that handed off;
//!   instant markers for IPIs sent and received, wakeups, token collisions,
//!   spawns, migrations and preemptions;
//! * process "lwkt threads": one track per thread; consecutive slices for
//!   its states (running, runnable, sleeping on a wait message, blocked on
//!   a named token, preempted, parked, migrating);
//! * flow arrows (flow events v1: `s` bound to the enclosing slice, `f`
//!   bound to the slice it lands in) from the slice of the thread that woke
//!   another (the wakeup itself, or the IPI that carried it to another CPU)
//!   to the slice where the woken thread then ran.
//!
//! Chrome trace-event JSON rather than Perfetto's protobuf: no well-kept
//! Rust crate writes the protobuf format (the `perfetto` crates on
//! crates.io are unmaintained SDK bindings), and the JSON format carries
//! everything above.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::clock::Anchor;
use super::ring::RingBuf;
use super::{ipi, kind, reason, swf, wake, NO_CPU};

/// One decoded event (see the `trace` module header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Ev {
    pub(crate) ts: u64,
    pub(crate) kind: u8,
    pub(crate) sub: u8,
    pub(crate) cpu: u16,
    pub(crate) aux: u32,
    pub(crate) tid: u64,
    pub(crate) arg: u64,
}

impl Ev {
    fn decode(w: [u64; 4]) -> Ev {
        Ev {
            ts: w[0],
            kind: w[1] as u8,
            sub: (w[1] >> 8) as u8,
            cpu: (w[1] >> 16) as u16,
            aux: (w[1] >> 32) as u32,
            tid: w[2],
            arg: w[3],
        }
    }

    /// The string payload (events made by `CoreTrace::emit_str`).
    fn str(&self) -> &'static str {
        if self.arg == 0 || self.aux == 0 {
            return "";
        }
        // SAFETY: string events are only written by `CoreTrace::emit_str`,
        // which stores the address and length (at most u32::MAX, clamped
        // only for strings that long, which no name or wait message is) of
        // a `&'static str`: the bytes live forever and are valid UTF-8.
        unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(
                self.arg as *const u8,
                self.aux as usize,
            ))
        }
    }
}

/// One CPU's part of a capture.
#[derive(Clone, Debug, Default)]
struct CpuLog {
    events: Vec<Ev>,
    dropped: u64,
    capacity: usize,
    /// The CPU's string table (`RingBuf::intern`): number `n` is element
    /// `n - 1`.
    strings: Vec<&'static str>,
}

/// A capture of a runtime's event trace: every CPU's events, the names of
/// the threads they mention, and the clock calibration. Made by
/// [`Trace::stop`](crate::Trace::stop) or [`Trace::data`](crate::Trace::data);
/// exported by [`write_perfetto`](Self::write_perfetto) or, in memory, by
/// [`to_chrome_json`](Self::to_chrome_json).
#[derive(Clone, Debug, Default)]
pub struct TraceData {
    cpus: Vec<CpuLog>,
    names: BTreeMap<u64, String>,
    t0: u64,
    ns_per_tick: f64,
    span: Duration,
}

impl TraceData {
    /// Reads `bufs` (one per CPU, by CPU number), captured between the
    /// anchors `start` and `end`.
    pub(crate) fn collect(bufs: &[Arc<RingBuf>], start: Anchor, end: Anchor) -> TraceData {
        let mut names = BTreeMap::new();
        let cpus = bufs
            .iter()
            .map(|b| {
                let (words, dropped) = b.read();
                for (tid, n) in b.names.lock().unwrap_or_else(|e| e.into_inner()).iter() {
                    names.insert(*tid, n.to_string());
                }
                CpuLog {
                    events: words.into_iter().map(Ev::decode).collect(),
                    dropped,
                    capacity: b.capacity(),
                    strings: b.strings(),
                }
            })
            .collect();
        TraceData {
            cpus,
            names,
            t0: start.ticks,
            ns_per_tick: Anchor::ns_per_tick(start, end),
            span: end.at.saturating_duration_since(start.at),
        }
    }

    /// How many CPUs the capture covers.
    pub fn cpus(&self) -> usize {
        self.cpus.len()
    }

    /// Events recorded, all CPUs together.
    pub fn events(&self) -> usize {
        self.cpus.iter().map(|c| c.events.len()).sum()
    }

    /// Events lost because a CPU's buffer was full (the buffer keeps the
    /// first events of a capture; see `Builder::trace_events`).
    pub fn dropped(&self) -> u64 {
        self.cpus.iter().map(|c| c.dropped).sum()
    }

    /// Events each CPU's buffer holds.
    pub fn capacity_per_cpu(&self) -> usize {
        self.cpus.first().map_or(0, |c| c.capacity)
    }

    /// Wall time from the start of the capture to its end (or to the read,
    /// for a capture still running).
    pub fn duration(&self) -> Duration {
        self.span
    }

    /// The capture as Chrome trace-event JSON (what
    /// [`write_perfetto`](Self::write_perfetto) writes), in memory: for a
    /// page that offers a trace for download, or a test.
    pub fn to_chrome_json(&self) -> Vec<u8> {
        Self::chrome_json_of(std::slice::from_ref(self))
    }

    /// Several captures (several runtimes of one process) in one Chrome
    /// trace-event JSON document: each gets its own pair of processes
    /// ("lwkt CPUs" and "lwkt threads", numbered when there are several).
    pub fn chrome_json_of(traces: &[TraceData]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut flows = 0u64;
        for (k, t) in traces.iter().enumerate() {
            let label = if traces.len() > 1 {
                format!(" (runtime {k})")
            } else {
                String::new()
            };
            Exporter::new(t, k, &label, &mut out, &mut flows).run();
        }
        let doc = json!({
            "traceEvents": out,
            "displayTimeUnit": "ns",
            "otherData": {
                "producer": "lwkt",
                "runtimes": traces.len(),
                "events": traces.iter().map(TraceData::events).sum::<usize>(),
                "dropped_events": traces.iter().map(TraceData::dropped).sum::<u64>(),
                "clock": if cfg!(target_arch = "x86_64") { "rdtsc" } else { "instant" },
            },
        });
        serde_json::to_vec(&doc).expect("a JSON value serializes")
    }

    /// Writes the capture to `path` as Chrome trace-event JSON: open it at
    /// <https://ui.perfetto.dev> (or `chrome://tracing`).
    ///
    /// # Errors
    /// Whatever writing the file reports.
    pub fn write_perfetto(&self, path: impl AsRef<std::path::Path>) -> std::io::Result<()> {
        std::fs::write(path, self.to_chrome_json())
    }
}

/// Per-thread state on its track.
struct ThreadState {
    /// Slice name of the current state, and its arguments.
    name: String,
    args: Value,
    since: u64,
    /// Channel of the sleep it is going into (from the SLEEP event).
    chan: u64,
}

/// A slice open on a CPU track: a thread running.
struct Run {
    tid: u64,
    since: u64,
    /// The thread it runs on top of (handoff), 0 for the CPU loop.
    back: u64,
}

/// One capture's conversion. Events of all CPUs are processed in time
/// order (the clock is the same on every CPU; ties keep CPU order).
struct Exporter<'a> {
    t: &'a TraceData,
    out: &'a mut Vec<Value>,
    flows: &'a mut u64,
    pid_cpu: u64,
    pid_thr: u64,
    cpu_tid_base: u64,
    runs: Vec<Vec<Run>>,
    threads: HashMap<u64, ThreadState>,
    seen: BTreeMap<u64, ()>,
    /// IPI sends: (source CPU, flow id) -> (time, whether a thread ran).
    sends: HashMap<(u16, u32), (u64, bool)>,
    /// Flows waiting for the woken thread's next run: tid -> flow key.
    pending: HashMap<u64, u64>,
    label: &'a str,
}

impl<'a> Exporter<'a> {
    fn new(
        t: &'a TraceData,
        k: usize,
        label: &'a str,
        out: &'a mut Vec<Value>,
        flows: &'a mut u64,
    ) -> Self {
        Exporter {
            t,
            out,
            flows,
            // Perfetto keys threads by tid alone (a tid seen under another
            // pid is taken for a reused id): keep the pids and the CPU
            // tracks' tids far from lwkt thread ids, which count up from 1.
            pid_cpu: 0xFFFF_0000 + 2 * k as u64,
            pid_thr: 0xFFFF_0001 + 2 * k as u64,
            cpu_tid_base: 0xF000_0000 + 1024 * k as u64,
            runs: t.cpus.iter().map(|_| Vec::new()).collect(),
            threads: HashMap::new(),
            seen: BTreeMap::new(),
            sends: HashMap::new(),
            pending: HashMap::new(),
            label,
        }
    }

    fn us(&self, ts: u64) -> f64 {
        ts.saturating_sub(self.t.t0) as f64 * self.t.ns_per_tick / 1000.0
    }

    fn dur_us(&self, a: u64, b: u64) -> f64 {
        b.saturating_sub(a) as f64 * self.t.ns_per_tick / 1000.0
    }

    fn thread_label(&self, tid: u64) -> String {
        match self.t.names.get(&tid) {
            Some(n) => format!("{n} #{tid}"),
            None => format!("thread #{tid}"),
        }
    }

    fn cpu_tid(&self, cpu: usize) -> u64 {
        self.cpu_tid_base + cpu as u64
    }

    fn run(mut self) {
        let mut all: Vec<(u64, usize, usize)> = Vec::new();
        for (c, log) in self.t.cpus.iter().enumerate() {
            all.extend(log.events.iter().enumerate().map(|(i, e)| (e.ts, c, i)));
        }
        all.sort_unstable();
        let end = all.last().map_or(self.t.t0, |e| e.0);
        for &(_, c, i) in &all {
            let e = self.t.cpus[c].events[i];
            self.event(c, e);
        }
        // Close what is still open at the end of the capture.
        for c in 0..self.runs.len() {
            while let Some(r) = self.runs[c].pop() {
                self.cpu_slice(c, &r, end, "running at end of capture", "");
            }
        }
        let open: Vec<u64> = self.threads.keys().copied().collect();
        for tid in open {
            self.close_state(tid, end);
        }
        self.metadata();
    }

    fn metadata(&mut self) {
        let (pc, pt) = (self.pid_cpu, self.pid_thr);
        let mut m = vec![
            json!({"ph": "M", "name": "process_name", "pid": pc,
                   "args": {"name": format!("lwkt CPUs{}", self.label)}}),
            json!({"ph": "M", "name": "process_sort_index", "pid": pc,
                   "args": {"sort_index": pc - 0xFFFF_0000}}),
            json!({"ph": "M", "name": "process_name", "pid": pt,
                   "args": {"name": format!("lwkt threads{}", self.label)}}),
            json!({"ph": "M", "name": "process_sort_index", "pid": pt,
                   "args": {"sort_index": pt - 0xFFFF_0000}}),
        ];
        for c in 0..self.t.cpus.len() {
            let tid = self.cpu_tid(c);
            m.push(
                json!({"ph": "M", "name": "thread_name", "pid": pc, "tid": tid,
                          "args": {"name": format!("cpu {c}")}}),
            );
            m.push(
                json!({"ph": "M", "name": "thread_sort_index", "pid": pc, "tid": tid,
                          "args": {"sort_index": c}}),
            );
        }
        for &tid in self.seen.keys() {
            m.push(
                json!({"ph": "M", "name": "thread_name", "pid": pt, "tid": tid,
                          "args": {"name": self.thread_label(tid)}}),
            );
        }
        self.out.extend(m);
    }

    fn instant(&mut self, cpu: usize, ts: u64, name: String, args: Value) {
        let v = json!({"ph": "i", "s": "t", "cat": "lwkt", "name": name,
                       "pid": self.pid_cpu, "tid": self.cpu_tid(cpu),
                       "ts": self.us(ts), "args": args});
        self.out.push(v);
    }

    fn cpu_slice(&mut self, cpu: usize, r: &Run, end: u64, out: &str, wmesg: &str) {
        let mut args = json!({"tid": r.tid, "switch_out": out});
        if !wmesg.is_empty() {
            args["wmesg"] = json!(wmesg);
        }
        if r.back != 0 {
            args["handed_off_by"] = json!(r.back);
        }
        let v = json!({"ph": "X", "cat": "sched", "name": self.thread_label(r.tid),
                       "pid": self.pid_cpu, "tid": self.cpu_tid(cpu),
                       "ts": self.us(r.since), "dur": self.dur_us(r.since, end).max(0.001),
                       "args": args});
        self.out.push(v);
    }

    fn close_state(&mut self, tid: u64, ts: u64) {
        if let Some(s) = self.threads.remove(&tid) {
            let v = json!({"ph": "X", "cat": "state", "name": s.name,
                           "pid": self.pid_thr, "tid": tid,
                           "ts": self.us(s.since), "dur": self.dur_us(s.since, ts).max(0.001),
                           "args": s.args});
            self.out.push(v);
        }
    }

    fn set_state(&mut self, tid: u64, ts: u64, name: String, args: Value) {
        if tid == 0 {
            return;
        }
        self.seen.insert(tid, ());
        let chan = self.threads.get(&tid).map_or(0, |s| s.chan);
        self.close_state(tid, ts);
        self.threads.insert(
            tid,
            ThreadState {
                name,
                args,
                since: ts,
                chan,
            },
        );
    }

    fn state_name(&self, tid: u64) -> Option<&str> {
        self.threads.get(&tid).map(|s| s.name.as_str())
    }

    /// Starts a flow at `ts` on `cpu`'s track (bound to the slice running
    /// there) that ends where `tid` next runs.
    fn flow_from(&mut self, cpu: usize, ts: u64, tid: u64, name: &str) {
        *self.flows += 1;
        let id = *self.flows;
        let v = json!({"ph": "s", "cat": "wakeup", "name": name, "id": id,
                       "pid": self.pid_cpu, "tid": self.cpu_tid(cpu), "ts": self.us(ts)});
        self.out.push(v);
        self.pending.insert(tid, id);
    }

    /// String number `n` of CPU `c`'s table ("" for 0 or one unknown).
    fn string(&self, c: usize, n: u32) -> &'static str {
        let i = (n as usize).wrapping_sub(1);
        self.t.cpus[c].strings.get(i).copied().unwrap_or("")
    }

    /// Thread `tid` starts running on CPU `c` at `ts`, on top of `back`
    /// (a handoff; 0: the CPU loop started it).
    fn switch_in(&mut self, c: usize, ts: u64, tid: u64, back: u64) {
        if back != 0 && self.state_name(back) == Some("running") {
            let n = format!("handed off to {}", self.thread_label(tid));
            self.set_state(back, ts, n, json!({"cpu": c}));
        }
        self.runs[c].push(Run {
            tid,
            since: ts,
            back,
        });
        self.set_state(tid, ts, "running".into(), json!({"cpu": c}));
        if let Some(id) = self.pending.remove(&tid) {
            // Lands in the slice that starts here (1 ns in, so the slice
            // is already open when the flow end binds).
            let v = json!({"ph": "f", "bp": "e", "cat": "wakeup", "name": "wakeup",
                           "id": id, "pid": self.pid_cpu, "tid": self.cpu_tid(c),
                           "ts": self.us(ts) + 0.001});
            self.out.push(v);
        }
    }

    /// Thread `tid` stops running on CPU `c` at `ts`, for reason `why`,
    /// with wait message `wmesg`.
    fn switch_out(&mut self, c: usize, ts: u64, tid: u64, why: u8, wmesg: &'static str) {
        let pos = self.runs[c].iter().rposition(|r| r.tid == tid);
        let r = match pos {
            Some(p) => {
                let r = self.runs[c].remove(p);
                // Anything nested above it ends with it.
                while self.runs[c].len() > p {
                    let x = self.runs[c].pop().expect("checked length");
                    self.cpu_slice(c, &x, ts, "unknown", "");
                }
                r
            }
            // Already running when the capture started.
            None => Run {
                tid,
                since: self.t.t0,
                back: 0,
            },
        };
        self.cpu_slice(c, &r, ts, reason::name(why), wmesg);
        if r.back != 0 && self.state_name(r.back).is_some_and(|s| s != "running") {
            self.set_state(r.back, ts, "running".into(), json!({"cpu": c}));
        }
        let chan = self.threads.get(&tid).map_or(0, |s| s.chan);
        let (name, args) = match why {
            reason::YIELD => ("runnable".to_string(), json!({"cpu": c})),
            reason::SLEEP => (
                format!("sleeping: {wmesg}"),
                json!({"wmesg": wmesg, "chan": format!("{chan:#x}")}),
            ),
            reason::TOKEN => (format!("blocked on token {wmesg}"), json!({"token": wmesg})),
            reason::PREEMPT => ("preempted".to_string(), json!({"cpu": c})),
            reason::PARK => ("parked".to_string(), json!({"wmesg": wmesg})),
            reason::MIGRATE => ("migrating".to_string(), json!({"from_cpu": c})),
            _ => {
                self.close_state(tid, ts);
                self.instant(
                    c,
                    ts,
                    format!("exit {}", self.thread_label(tid)),
                    json!({"tid": tid}),
                );
                return;
            }
        };
        self.set_state(tid, ts, name, args);
    }

    fn event(&mut self, c: usize, e: Ev) {
        match e.kind {
            kind::SWITCH => {
                let (from, to) = (e.arg, e.tid);
                let handoff = e.sub == reason::HANDOFF;
                if from != 0 && !handoff {
                    let wmesg = self.string(c, e.aux);
                    self.switch_out(c, e.ts, from, e.sub, wmesg);
                }
                // A thread resuming after its handoff goes on in the slice
                // it had (unless the capture started under the handoff).
                let resumes = e.cpu & swf::RESUME != 0 && self.runs[c].iter().any(|r| r.tid == to);
                if to != 0 && !resumes {
                    self.switch_in(c, e.ts, to, if handoff { from } else { 0 });
                }
            }
            kind::SLEEP => {
                if let Some(s) = self.threads.get_mut(&e.tid) {
                    s.chan = e.arg;
                }
                self.instant(
                    c,
                    e.ts,
                    format!("sleep {}", self.thread_label(e.tid)),
                    json!({"tid": e.tid, "chan": format!("{:#x}", e.arg)}),
                );
            }
            kind::WAKEUP => {
                let why = wake::name(e.sub);
                let from = if e.cpu == NO_CPU { c } else { e.cpu as usize };
                self.set_state(
                    e.tid,
                    e.ts,
                    "runnable".into(),
                    json!({"woken_by": why, "from_cpu": from}),
                );
                let label = self.thread_label(e.tid);
                self.instant(
                    c,
                    e.ts,
                    format!("{why} {label}"),
                    json!({"tid": e.tid, "from_cpu": from,
                                    "chan": format!("{:#x}", e.arg)}),
                );
                if e.aux != 0 {
                    // Carried by an IPI: the flow starts at the send.
                    if let Some(&(ts, in_thread)) = self.sends.get(&(e.cpu, e.aux)) {
                        if in_thread {
                            self.flow_from(e.cpu as usize, ts, e.tid, "ipi wakeup");
                        }
                    }
                } else if from == c && !self.runs[c].is_empty() {
                    self.flow_from(c, e.ts, e.tid, "wakeup");
                }
            }
            kind::TOK_BLOCK | kind::TOK_COLLIDE | kind::TOK_ACQUIRE => {
                let tok = e.str();
                let what = match e.kind {
                    kind::TOK_BLOCK => "token blocked",
                    kind::TOK_COLLIDE => "token collision",
                    _ => "token acquired",
                };
                if e.kind == kind::TOK_ACQUIRE {
                    self.set_state(e.tid, e.ts, "runnable".into(), json!({"acquired": tok}));
                }
                self.instant(
                    c,
                    e.ts,
                    format!("{what}: {tok}"),
                    json!({"tid": e.tid, "token": tok}),
                );
            }
            kind::IPI_SEND => {
                let k = ipi::name(e.sub);
                self.sends
                    .insert((c as u16, e.aux), (e.ts, !self.runs[c].is_empty()));
                self.instant(
                    c,
                    e.ts,
                    format!("ipi -> cpu {}: {k}", e.cpu),
                    json!({"kind": k, "to_cpu": e.cpu, "tid": e.tid,
                                    "chan": format!("{:#x}", e.arg)}),
                );
            }
            kind::IPI_RECV => {
                let k = ipi::name(e.sub);
                let from = if e.cpu == NO_CPU {
                    "outside".to_string()
                } else {
                    format!("cpu {}", e.cpu)
                };
                self.instant(
                    c,
                    e.ts,
                    format!("ipi <- {from}: {k}"),
                    json!({"kind": k, "from": from,
                                    "chan": format!("{:#x}", e.arg)}),
                );
            }
            kind::SPAWN => {
                self.set_state(e.tid, e.ts, "runnable".into(), json!({"spawned_by": e.arg}));
                self.instant(
                    c,
                    e.ts,
                    format!("spawn {}", self.thread_label(e.tid)),
                    json!({"tid": e.tid, "parent": e.arg}),
                );
            }
            kind::MIGRATE_OUT => {
                self.instant(
                    c,
                    e.ts,
                    format!("migrate {} -> cpu {}", self.thread_label(e.tid), e.cpu),
                    json!({"tid": e.tid, "to_cpu": e.cpu}),
                );
            }
            kind::MIGRATE_IN => {
                let st = if e.sub != 0 { "runnable" } else { "parked" };
                self.set_state(e.tid, e.ts, st.into(), json!({"cpu": c}));
                self.instant(
                    c,
                    e.ts,
                    format!("adopt {}", self.thread_label(e.tid)),
                    json!({"tid": e.tid}),
                );
            }
            kind::PREEMPT => {
                self.set_state(
                    e.tid,
                    e.ts,
                    "preempted".into(),
                    json!({"by": e.arg, "cpu": c}),
                );
                self.instant(
                    c,
                    e.ts,
                    format!(
                        "{} preempts {}",
                        self.thread_label(e.arg),
                        self.thread_label(e.tid)
                    ),
                    json!({"tid": e.tid, "by": e.arg}),
                );
            }
            kind::LWP_STATE => {
                let st = lwp_state_name(e.sub);
                self.instant(
                    c,
                    e.ts,
                    format!("lwp {}.{} {st}", e.aux, e.arg),
                    json!({"pid": e.aux, "lid": e.arg, "tid": e.tid, "state": st,
                           "netbsd_state": e.sub}),
                );
            }
            _ => {}
        }
    }
}

/// NetBSD's LWP state numbers, by name (`LWP_STATE`'s `sub`).
fn lwp_state_name(s: u8) -> &'static str {
    match s {
        1 => "IDL",
        2 => "RUN",
        3 => "SLEEP",
        4 => "STOP",
        5 => "ZOMB",
        7 => "ONPROC",
        8 => "SUSPENDED",
        _ => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(ts: u64, kind: u8, sub: u8, cpu: u16, aux: u32, tid: u64, arg: u64) -> Ev {
        Ev {
            ts,
            kind,
            sub,
            cpu,
            aux,
            tid,
            arg,
        }
    }

    fn data(cpus: Vec<Vec<Ev>>) -> TraceData {
        TraceData {
            cpus: cpus
                .into_iter()
                .map(|events| CpuLog {
                    events,
                    dropped: 0,
                    capacity: 64,
                    strings: vec!["ball"],
                })
                .collect(),
            names: [(1, "a".to_string()), (2, "b".to_string())].into(),
            t0: 0,
            ns_per_tick: 1.0,
            span: Duration::from_micros(1),
        }
    }

    fn doc(t: &TraceData) -> Vec<Value> {
        let v: Value = serde_json::from_slice(&t.to_chrome_json()).unwrap();
        v["traceEvents"].as_array().unwrap().clone()
    }

    /// A local wakeup: the flow starts in the waker's slice and ends where
    /// the woken thread's next slice starts; a handoff nests.
    #[test]
    fn local_wakeup_flow_and_handoff_nesting() {
        let t = data(vec![vec![
            // The loop starts a.
            ev(1000, kind::SWITCH, 0, 0, 0, 1, 0),
            ev(2000, kind::WAKEUP, wake::CHANNEL, 0, 0, 2, 0xbeef),
            // a yields back to the loop (written out on its own), which
            // starts b later.
            ev(3000, kind::SWITCH, reason::YIELD, 0, 0, 0, 1),
            ev(4000, kind::SWITCH, 0, 0, 0, 2, 0),
            // b hands off to a, which runs nested and exits; b goes on.
            ev(5000, kind::SWITCH, reason::HANDOFF, 0, 0, 1, 2),
            ev(6000, kind::SWITCH, reason::EXIT, swf::RESUME, 0, 2, 1),
            ev(7000, kind::SWITCH, reason::EXIT, 0, 0, 0, 2),
        ]]);
        let d = doc(&t);
        let s: Vec<_> = d.iter().filter(|e| e["ph"] == "s").collect();
        let f: Vec<_> = d.iter().filter(|e| e["ph"] == "f").collect();
        assert_eq!((s.len(), f.len()), (1, 1));
        assert_eq!(s[0]["id"], f[0]["id"]);
        assert_eq!(s[0]["ts"], 2.0);
        assert_eq!(f[0]["ts"], 4.001);
        let runs: Vec<_> = d
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == "sched")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["ts"].as_f64().unwrap(),
                    e["dur"].as_f64().unwrap(),
                )
            })
            .collect();
        assert!(runs.contains(&("a #1".into(), 1.0, 2.0)), "{runs:?}");
        assert!(runs.contains(&("a #1".into(), 5.0, 1.0)), "{runs:?}");
        assert!(runs.contains(&("b #2".into(), 4.0, 3.0)), "{runs:?}");
        // b's states: runnable (woken), running, handed off, running.
        let b: Vec<_> = d
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == "state" && e["tid"] == 2)
            .map(|e| e["name"].as_str().unwrap().to_string())
            .collect();
        assert_eq!(b, ["runnable", "running", "handed off to a #1", "running"]);
    }

    /// An IPI-carried wakeup: the flow starts at the send on the other CPU.
    #[test]
    fn remote_wakeup_flow_starts_at_the_send() {
        let t = data(vec![
            vec![
                ev(1000, kind::SWITCH, 0, 0, 0, 1, 0),
                ev(1500, kind::IPI_SEND, ipi::WAKEUP, 1, 0x100, 1, 0xbeef),
                ev(3000, kind::SWITCH, reason::SLEEP, 0, 1, 0, 1),
            ],
            vec![
                ev(1800, kind::IPI_RECV, ipi::WAKEUP, 0, 0x100, 0, 0xbeef),
                ev(1900, kind::WAKEUP, wake::CHANNEL, 0, 0x100, 2, 0xbeef),
                ev(2500, kind::SWITCH, 0, 0, 0, 2, 0),
            ],
        ]);
        let d = doc(&t);
        let s: Vec<_> = d.iter().filter(|e| e["ph"] == "s").collect();
        let f: Vec<_> = d.iter().filter(|e| e["ph"] == "f").collect();
        assert_eq!((s.len(), f.len()), (1, 1));
        assert_eq!(s[0]["ts"], 1.5);
        assert_eq!(s[0]["tid"], 0xF000_0000u64);
        assert_eq!(f[0]["tid"], 0xF000_0001u64);
        // The run still open at the end is closed there.
        assert!(d.iter().any(|e| e["ph"] == "X"
            && e["name"] == "b #2"
            && e["args"]["switch_out"] == "running at end of capture"));
    }

    /// One event per switch: the thread that stops and the one that
    /// starts share its time; a wait message comes from the string table.
    #[test]
    fn combined_switch_ends_one_slice_and_starts_the_next() {
        let t = data(vec![vec![
            ev(1000, kind::SWITCH, 0, 0, 0, 1, 0),
            // a yields to b.
            ev(2000, kind::SWITCH, reason::YIELD, 0, 0, 2, 1),
            ev(2500, kind::SLEEP, 0, NO_CPU, 0, 2, 0xbeef),
            // b sleeps on "ball" (string 1), a runs again.
            ev(3000, kind::SWITCH, reason::SLEEP, 0, 1, 1, 2),
            // a stops for a token whose name is unknown (number 9).
            ev(4000, kind::SWITCH, reason::TOKEN, 0, 9, 0, 1),
        ]]);
        let d = doc(&t);
        let runs: Vec<_> = d
            .iter()
            .filter(|e| e["ph"] == "X" && e["cat"] == "sched")
            .map(|e| {
                (
                    e["name"].as_str().unwrap().to_string(),
                    e["ts"].as_f64().unwrap(),
                    e["dur"].as_f64().unwrap(),
                    e["args"]["switch_out"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        assert_eq!(
            runs,
            [
                ("a #1".into(), 1.0, 1.0, "yield".into()),
                ("b #2".into(), 2.0, 1.0, "sleep".into()),
                ("a #1".into(), 3.0, 1.0, "token-blocked".into()),
            ]
        );
        let states = |tid: u64| -> Vec<(String, f64)> {
            let mut v: Vec<_> = d
                .iter()
                .filter(|e| e["ph"] == "X" && e["cat"] == "state" && e["tid"] == tid)
                .map(|e| {
                    (
                        e["name"].as_str().unwrap().to_string(),
                        e["ts"].as_f64().unwrap(),
                    )
                })
                .collect();
            v.sort_by(|x, y| x.1.total_cmp(&y.1));
            v
        };
        assert_eq!(
            states(2),
            [("running".into(), 2.0), ("sleeping: ball".into(), 3.0)]
        );
        assert_eq!(
            states(1),
            [
                ("running".into(), 1.0),
                ("runnable".into(), 2.0),
                ("running".into(), 3.0),
                ("blocked on token ".into(), 4.0),
            ]
        );
    }

    #[test]
    fn strings_round_trip() {
        let name: &'static str = "a token name";
        let e = ev(
            0,
            kind::TOK_BLOCK,
            0,
            0,
            name.len() as u32,
            1,
            name.as_ptr() as u64,
        );
        assert_eq!(e.str(), name);
        assert_eq!(ev(0, kind::TOK_BLOCK, 0, 0, 0, 1, 0).str(), "");
    }
}
