//! A `ps`-like listing of threads: CPU, priority, state and wait message.
//!
//! Each CPU describes its own threads (their structures are CPU-owned), so
//! the listing is gathered by sending every CPU a request and collecting
//! the answers.

use std::fmt;

use super::cur::{CurThread, Sleep, ThreadId};
use super::handle::Handle;
use crate::priority::Priority;
use crate::sched::core::{with_current, Core};
use crate::sched::machine::{Machine, Msg};
use crate::sched::td::{tdf, Thread};
use crate::sync::atomic::{AtomicUsize, Ordering};
use crate::sync::{lock, Arc, Mutex};

/// What a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThreadState {
    /// On its CPU now.
    Running,
    /// Waiting in its CPU's run queue.
    Runnable,
    /// Runnable, but waiting for a token another thread holds.
    TokenWait,
    /// Asleep on a wait channel.
    Sleeping,
    /// Descheduled (`park`, `deschedule`): runs only when scheduled.
    Parked,
    /// On its CPU, but another thread runs on top of it: an interrupt
    /// thread preempted it, or it handed off to the thread it joins.
    Preempted,
}

impl fmt::Display for ThreadState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ThreadState::Running => "ONPROC",
            ThreadState::Runnable => "RUN",
            ThreadState::TokenWait => "TOKWAIT",
            ThreadState::Sleeping => "SLEEP",
            ThreadState::Parked => "PARKED",
            ThreadState::Preempted => "PREEMPT",
        })
    }
}

/// One line of the listing.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ThreadInfo {
    /// The thread.
    pub id: ThreadId,
    /// Its CPU.
    pub cpu: usize,
    /// Its name, if any.
    pub name: Option<String>,
    /// Its priority.
    pub priority: Priority,
    /// What it is doing.
    pub state: ThreadState,
    /// While sleeping or waiting for a token: the sleep's wait message or
    /// the token's name; empty otherwise.
    pub wmesg: &'static str,
    /// For an LWP (see [`crate::lwp`]): its process id and LWP id, as
    /// raw numbers (`Pid::get`, `Lid::get`).
    pub lwp: Option<(u32, u32)>,
    /// Token references in its held-token array (held now, or released at
    /// its last switch-out and re-acquired before it runs again; nested
    /// holds count once each).
    pub tokens_held: usize,
}

impl fmt::Display for ThreadInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lwp = match self.lwp {
            Some((p, l)) => format!("{p}.{l}"),
            None => "-".to_owned(),
        };
        write!(
            f,
            "{:>12} {:>9} cpu{:<3} pri {:>2} {:<7} {:<16} {}",
            self.id.to_string(),
            lwp,
            self.cpu,
            self.priority.get(),
            self.state.to_string(),
            self.wmesg,
            self.name.as_deref().unwrap_or("-")
        )
    }
}

fn describe(core: &Core, td: &Thread) -> ThreadInfo {
    let state = if td.has(tdf::RUNNING) {
        ThreadState::Running
    } else if td.has(tdf::PREEMPTED | tdf::HANDOFF) {
        ThreadState::Preempted
    } else if td.has(tdf::PARKED) {
        ThreadState::Parked
    } else if td.has(tdf::SLEEPING) {
        ThreadState::Sleeping
    } else if td.toks.blocked_name().is_some() {
        ThreadState::TokenWait
    } else {
        ThreadState::Runnable
    };
    let wmesg = match state {
        ThreadState::Sleeping | ThreadState::TokenWait | ThreadState::Parked => td.wmesg.get(),
        _ => "",
    };
    ThreadInfo {
        id: ThreadId::from_raw(td.tid.get()),
        cpu: core.id,
        name: td.name().map(str::to_owned),
        priority: Priority::new(td.pri.get()).unwrap_or_default(),
        state,
        wmesg,
        lwp: match td.lwp_tag.get() {
            (0, _) => None,
            tag => Some(tag),
        },
        tokens_held: td.toks.count(),
    }
}

struct Collect {
    out: Mutex<Vec<ThreadInfo>>,
    left: AtomicUsize,
    os_waiter: Mutex<Option<std::thread::Thread>>,
}

fn request(m: &Machine, from: Option<&Core>) -> Arc<Collect> {
    let n = m.ncpus();
    let c = Arc::new(Collect {
        out: Mutex::new(Vec::new()),
        left: AtomicUsize::new(n),
        os_waiter: Mutex::new(Some(std::thread::current())),
    });
    for id in 0..n {
        let c2 = c.clone();
        let msg = Msg::Call(Box::new(move |core: &Core| {
            let mut v = Vec::new();
            core.for_each_thread(|td| v.push(describe(core, td)));
            lock(&c2.out).extend(v);
            if c2.left.fetch_sub(1, Ordering::SeqCst) == 1 {
                crate::sched::synch::wakeup(
                    &core.machine,
                    Some(core),
                    Arc::as_ptr(&c2) as usize,
                    false,
                );
                if let Some(t) = lock(&c2.os_waiter).take() {
                    t.unpark();
                }
            }
        }));
        match from {
            Some(core) => core.send(id, msg),
            None => {
                if m.send_external(id, msg).is_err() {
                    c.left.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }
    c
}

fn finish(c: &Collect) -> Vec<ThreadInfo> {
    let mut v = std::mem::take(&mut *lock(&c.out));
    v.sort_by_key(|i| (i.cpu, i.id));
    v
}

impl ThreadInfo {
    /// Lists every thread of the calling thread's runtime (sleeping while
    /// the other CPUs answer).
    pub fn collect(td: &mut CurThread) -> Vec<ThreadInfo> {
        let c = {
            let core = td.core();
            request(&core.machine, Some(core))
        };
        // An error means the runtime is shutting down: list what arrived.
        let _ = td.sleep_until(&*c, Sleep::default().wmesg("ps"), || {
            c.left.load(Ordering::SeqCst) == 0
        });
        finish(&c)
    }
}

impl Handle {
    /// Lists every thread of the runtime, from a plain OS thread (which
    /// blocks until every CPU has answered). From an lwkt thread use
    /// [`ThreadInfo::collect`].
    ///
    /// # Panics
    /// When called from a thread of this runtime (it would block its CPU).
    pub fn threads(&self) -> Vec<ThreadInfo> {
        if with_current(|c| std::ptr::eq(&*c.machine, &*self.machine)) == Some(true) {
            panic!(
                "lwkt: Handle::threads called from inside the runtime; use ThreadInfo::collect(td)"
            );
        }
        let c = request(&self.machine, None);
        while c.left.load(Ordering::SeqCst) != 0 {
            crate::sync::thread::park_timeout(std::time::Duration::from_millis(10));
            if self.machine.is_shutdown() {
                break;
            }
        }
        finish(&c)
    }
}
