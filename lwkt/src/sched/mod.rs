//! The per-CPU scheduler: DragonFly's LWKT core.
//!
//! | file        | what                                                      |
//! |-------------|-----------------------------------------------------------|
//! | `machine.rs`| state shared by a runtime's CPUs (config, mailboxes,      |
//! |             | sleep masks, clock); the IPI message type                 |
//! | `core.rs`   | a CPU's owner-only state; thread creation, exit, cancel   |
//! | `switch.rs` | the switch path: the CPU loop, pick, yield, park, token   |
//! |             | waits, preemption, messages, timers                       |
//! | `synch.rs`  | sleep and wakeup, and wakeup routing between CPUs         |
//! | `ops.rs`    | explicit scheduling requests and migration hand-off       |
//! | `td.rs`     | the thread structure and its flag bits                    |
//! | `ctl.rs`    | a thread's control block, shared with its handles         |
//! | `runq.rs`   | 32-level run queue with a priority bitmap                 |
//! | `sleepq.rs` | per-CPU sleep queues (hashed by wait channel)             |
//! | `sleepmask.rs` | the runtime's sleep-bucket masks (loom-checked)        |
//! | `timers.rs` | per-CPU sleep timeouts                                    |
//! | `poll.rs`   | per-CPU fd readiness (epoll), `wait_fd`; created lazily   |
//! | `tracepoints.rs` | what each trace event site records                   |
//!
//! Layering: this module uses `ipi`, `tokref`, `stack`, `trace` and the
//! leaf modules; nothing here imports the thread API, tokens or the runtime.

pub(crate) mod core;
pub(crate) mod ctl;
pub(crate) mod machine;
pub(crate) mod ops;
pub(crate) mod poll;
pub(crate) mod runq;
pub(crate) mod sleepmask;
pub(crate) mod sleepq;
pub(crate) mod switch;
pub(crate) mod synch;
pub(crate) mod td;
pub(crate) mod timers;
pub(crate) mod tracepoints;
