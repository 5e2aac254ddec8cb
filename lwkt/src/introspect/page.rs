//! What the page shows: a snapshot of the runtime, as JSON and as HTML.

use serde_json::{json, Value};

use crate::stats::{CpuStats, Stats};
use crate::thread::{CurThread, ThreadInfo};
use crate::token::registry::{self, TokenSnapshot};

/// Reads one counter out of a snapshot.
type Reader = fn(&CpuStats) -> u64;

/// The counters shown, in order: JSON key and reader.
const COUNTERS: [(&str, Reader); 9] = [
    ("switches", |c| c.switches),
    ("ipis_sent", |c| c.ipis_sent),
    ("ipis_avoided", |c| c.ipis_avoided),
    ("ipis_processed", |c| c.ipis_processed),
    ("parks", |c| c.parks),
    ("wakeups", |c| c.wakeups),
    ("preempt_hits", |c| c.preempt_hits),
    ("preempt_misses", |c| c.preempt_misses),
    ("threads_alive", |c| c.threads_alive),
];

/// Everything one answer shows, taken at one moment.
pub(super) struct Snapshot {
    stats: Stats,
    threads: Vec<ThreadInfo>,
    tokens: Vec<TokenSnapshot>,
}

impl Snapshot {
    /// Takes one from a thread of the runtime (sleeps while the CPUs list
    /// their threads).
    pub(super) fn take(td: &mut CurThread) -> Snapshot {
        let threads = ThreadInfo::collect(td);
        Snapshot {
            stats: td.handle().stats(),
            threads,
            tokens: registry::tokens(),
        }
    }
}

fn counters(c: &CpuStats) -> Value {
    let mut m = serde_json::Map::new();
    for (k, f) in COUNTERS {
        m.insert(k.to_owned(), f(c).into());
    }
    Value::Object(m)
}

fn token_state(t: &TokenSnapshot) -> &'static str {
    if t.exclusive {
        "exclusive"
    } else if t.shared > 0 {
        "shared"
    } else {
        "free"
    }
}

/// `/api/stats`.
pub(super) fn json(s: &Snapshot) -> String {
    let per_cpu: Vec<Value> = s
        .stats
        .per_cpu
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let mut v = counters(c);
            v["cpu"] = i.into();
            v
        })
        .collect();
    let threads: Vec<Value> = s
        .threads
        .iter()
        .map(|t| {
            json!({
                "id": t.id.to_string(),
                "cpu": t.cpu,
                "name": t.name,
                "priority": t.priority.get(),
                "state": t.state.to_string(),
                "wmesg": t.wmesg,
                "lwp": t.lwp.map(|(p, l)| format!("{p}.{l}")),
                "tokens_held": t.tokens_held,
            })
        })
        .collect();
    let tokens: Vec<Value> = s
        .tokens
        .iter()
        .map(|t| {
            json!({
                "name": t.name,
                "collisions": t.collisions,
                "state": token_state(t),
                "shared_holders": t.shared,
            })
        })
        .collect();
    json!({
        "cpus": s.stats.per_cpu.len(),
        "total": counters(&s.stats.total),
        "per_cpu": per_cpu,
        "threads": threads,
        "tokens": tokens,
    })
    .to_string()
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// The rows of the counter table: one per CPU and the total, cells with
/// ids `cpuN-KEY` and `total-KEY`.
fn counter_rows(s: &Snapshot) -> String {
    let mut o = String::new();
    let rows = s
        .stats
        .per_cpu
        .iter()
        .enumerate()
        .map(|(i, c)| (format!("cpu{i}"), c))
        .chain(std::iter::once(("total".to_owned(), &s.stats.total)));
    for (label, c) in rows {
        o.push_str(&format!("<tr><th>{label}</th>"));
        for (k, f) in COUNTERS {
            o.push_str(&format!("<td id=\"{label}-{k}\">{}</td>", f(c)));
        }
        o.push_str("</tr>");
    }
    o
}

fn thread_rows(s: &Snapshot) -> String {
    let mut o = String::new();
    for t in &s.threads {
        let lwp = t.lwp.map_or("-".to_owned(), |(p, l)| format!("{p}.{l}"));
        o.push_str(&format!(
            "<tr class=\"thread\"><td>{}</td><td>{lwp}</td><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td class=\"name\">{}</td></tr>",
            t.id,
            t.cpu,
            t.priority.get(),
            t.state,
            esc(t.wmesg),
            t.tokens_held,
            esc(t.name.as_deref().unwrap_or("-"))
        ));
    }
    o
}

fn token_rows(s: &Snapshot) -> String {
    let mut o = String::new();
    for t in &s.tokens {
        o.push_str(&format!(
            "<tr class=\"token\"><td class=\"name\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(t.name),
            t.collisions,
            token_state(t),
            t.shared
        ));
    }
    o
}

/// `/`: the tables rendered now, refreshed by the script from
/// `/api/stats` every second.
pub(super) fn html(s: &Snapshot) -> String {
    let heads: String = COUNTERS
        .iter()
        .map(|(k, _)| format!("<th>{}</th>", k.replace('_', " ")))
        .collect();
    PAGE.replace("{{COUNTER_HEADS}}", &heads)
        .replace("{{COUNTERS}}", &counter_rows(s))
        .replace("{{THREADS}}", &thread_rows(s))
        .replace("{{TOKENS}}", &token_rows(s))
}

const PAGE: &str = r##"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>lwkt introspection</title>
<style>
body{font:14px system-ui,sans-serif;margin:1.5em}
table{border-collapse:collapse;margin-bottom:1.5em}
td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
td.name{text-align:left}
#status{color:#666}
</style></head><body>
<h1>lwkt runtime</h1>
<p id="status">rendered by the server; refreshing every second</p>
<p><a id="trace" href="/api/trace?ms=500" download="lwkt-trace.json">Capture a 500 ms trace</a>
(Chrome trace-event JSON: open it in <a href="https://ui.perfetto.dev">Perfetto</a>)</p>
<h2>Counters</h2>
<table id="counters"><thead><tr><th>CPU</th>{{COUNTER_HEADS}}</tr></thead><tbody>{{COUNTERS}}</tbody></table>
<h2>Threads</h2>
<table id="threads"><thead><tr><th>id</th><th>pid.lid</th><th>cpu</th><th>pri</th><th>state</th><th>wmesg</th><th>tokens</th><th>name</th></tr></thead><tbody>{{THREADS}}</tbody></table>
<h2>Tokens</h2>
<p>Every token of the process that has been used (tokens are not tied to a runtime). The holder is shown as a state: the token word records a holder's identity, not its thread id.</p>
<table id="tokens"><thead><tr><th>name</th><th>collisions</th><th>state</th><th>shared holders</th></tr></thead><tbody>{{TOKENS}}</tbody></table>
<script>
"use strict";
const KEYS=[...document.querySelectorAll("#counters thead th")].slice(1).map(h=>h.textContent.replace(/ /g,"_"));
function cell(v,cls){const td=document.createElement("td");td.textContent=(v===null||v===undefined)?"-":String(v);if(cls)td.className=cls;return td;}
function row(cells,cls){const tr=document.createElement("tr");if(cls)tr.className=cls;cells.forEach(c=>tr.appendChild(c));return tr;}
function counterRow(label,c){const th=document.createElement("th");th.textContent=label;const tr=row([th]);KEYS.forEach(k=>{const td=cell(c[k]);td.id=label+"-"+k;tr.appendChild(td);});return tr;}
function render(d){
  const cb=document.querySelector("#counters tbody");cb.replaceChildren(...d.per_cpu.map(c=>counterRow("cpu"+c.cpu,c)),counterRow("total",d.total));
  document.querySelector("#threads tbody").replaceChildren(...d.threads.map(t=>row([cell(t.id),cell(t.lwp),cell(t.cpu),cell(t.priority),cell(t.state),cell(t.wmesg),cell(t.tokens_held),cell(t.name,"name")],"thread")));
  document.querySelector("#tokens tbody").replaceChildren(...d.tokens.map(t=>row([cell(t.name,"name"),cell(t.collisions),cell(t.state),cell(t.shared_holders)],"token")));
}
async function poll(){
  try{const r=await fetch("/api/stats",{cache:"no-store"});render(await r.json());document.getElementById("status").textContent="updated "+new Date().toLocaleTimeString();}
  catch(e){document.getElementById("status").textContent="cannot reach the runtime: "+e;}
}
setInterval(poll,1000);
</script></body></html>
"##;
