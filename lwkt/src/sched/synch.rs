//! Sleep and wakeup (`kern_synch.c`): `tsleep`, `tsleep_interlock`,
//! `wakeup`, `wakeup_one`, and the routing of a wakeup to the CPUs that
//! may have sleepers on its channel.
//!
//! A sleeper registers on its own CPU's sleep queue and publishes that CPU
//! in the channel's bucket mask; a wakeup reads the mask and sends one
//! message to each CPU whose bit is set (or handles its own CPU directly).
//! The interlock that makes this lossless is described in `sleepq.rs`.

use std::time::{Duration, Instant};

use super::core::Core;
use super::machine::{Machine, Msg};
use super::sleepq::bucket_of;
use super::td::{tdf, TdPtr, Thread, Wake};
use super::timers::Timer;
use crate::error::SleepError;
use crate::sync::atomic::{fence, Ordering};
use crate::trace::{trace_event, wake};

impl Core {
    /// Ends a sleep of `t` (or records the wakeup if it registered with the
    /// interlock but has not reached `sleep` yet). Wait-channel wakeups,
    /// timeouts, interrupts and raw schedules all land here.
    pub(crate) fn wake(&self, t: TdPtr, why: Wake) {
        // SAFETY: `t` is owned by this CPU and linked (sleep queue or
        // timer entry or control block followed on this CPU).
        let td = unsafe { t.td() };
        if td.has(tdf::TSLEEPQ) {
            self.sleepq.remove(t);
        }
        if td.has(tdf::SLEEPING) {
            td.clear(tdf::SLEEPING | tdf::SINTR);
            td.wake.set(why);
            self.stats().wakeups.bump();
            trace_event!(self, tr_wake(td, why));
            self.make_runnable(t);
        } else if why == Wake::Wakeup {
            td.set(tdf::WOKEN);
        }
    }

    /// `join`'s direct wait (a same-runtime joiner does not use the sleep
    /// queues): records the running thread as `ctl`'s joiner and sleeps
    /// until [`wake_joiner`](Self::wake_joiner), a raw schedule, or
    /// shutdown. The caller has announced itself in the packet and checks
    /// the packet again when this returns; it clears the record before it
    /// leaves `join`, whichever way it leaves.
    #[inline(always)]
    pub(crate) fn sleep_join_cur(&self, td: &Thread) -> Result<(), SleepError> {
        if td.has(tdf::CANCEL) {
            return Err(SleepError::Interrupted);
        }
        td.wmesg.set("join");
        td.set(tdf::SLEEPING);
        self.switch_out(td);
        if td.has(tdf::CANCEL) {
            return Err(SleepError::Interrupted);
        }
        Ok(())
    }

    /// `ctl`'s thread and its priority, if it is queued on this CPU.
    #[inline]
    pub(crate) fn queued_here(&self, ctl: &super::ctl::Ctl) -> Option<(TdPtr, u8)> {
        if ctl.cpu.load(Ordering::Relaxed) != self.id || ctl.migrating.load(Ordering::Relaxed) {
            return None;
        }
        let t = TdPtr::from_raw(ctl.td.load(Ordering::Acquire))?;
        // SAFETY: `Ctl::td` is non-null only while the thread exists, and
        // it is owned by this CPU (checked above, on the only CPU that can
        // hand it away).
        let td = unsafe { t.td() };
        td.has(tdf::RUNQ).then(|| (t, td.pri.get()))
    }

    /// Wakes the thread waiting in `join` on `ctl`'s thread, if it still
    /// waits. Runs on the joiner's CPU: the joiner sets and clears
    /// `ctl.joiner` on this same OS thread, and does not leave `join` (nor
    /// exit, nor migrate) while it is set, so a non-null value here is a
    /// live thread of this CPU.
    pub(crate) fn wake_joiner(&self, ctl: &super::ctl::Ctl) {
        let Some(t) = TdPtr::from_raw(ctl.joiner.load(Ordering::Relaxed)) else {
            return; // it saw the result by itself and left
        };
        // SAFETY: see above: set only while the joiner waits on this CPU.
        let td = unsafe { t.td() };
        if td.has(tdf::SLEEPING) {
            td.clear(tdf::SLEEPING);
            td.wake.set(Wake::Wakeup);
            self.stats().wakeups.bump();
            trace_event!(self, tr_wakeup(td, wake::JOIN, 0));
            self.make_runnable(t);
        }
    }

    /// Wakes sleepers on `chan` on this CPU (all, or one), for a wakeup
    /// that came by message: another CPU saw this CPU's bit in the bucket
    /// mask. Returns whether any was found.
    #[inline(always)]
    pub(crate) fn wakeup_local(&self, chan: usize, one: bool) -> bool {
        self.wakeup_visit(chan, one, true)
    }

    /// Wakes sleepers on `chan` on this CPU for a wakeup made on this CPU
    /// (no message): as [`wakeup_local`](Self::wakeup_local), but keeps
    /// this CPU's bit in the bucket mask even when it finds nobody. The
    /// bit is only a hint that this CPU may have sleepers there (set
    /// whenever it does: see sleepq.rs), so a stale one is harmless: it
    /// costs a remote waker one message, whose visit then withdraws it.
    /// Withdrawing here instead would cost a read-modify-write of the
    /// shared mask line on every local wakeup that finds nobody, and the
    /// next sleep on the channel another to set the bit again: in a
    /// request/response between two CPUs, where each side wakes the other
    /// and then sleeps on the same channel, two writes per turn to a line
    /// the other side reads next.
    #[inline(always)]
    pub(crate) fn wakeup_own(&self, chan: usize, one: bool) -> bool {
        self.wakeup_visit(chan, one, false)
    }

    /// `wakeup_local` / `wakeup_own`. `withdraw`: clear this CPU's bit in
    /// the bucket mask when the visit finds nobody. One body for both
    /// (out of line, as the hot paths expect).
    fn wakeup_visit(&self, chan: usize, one: bool, withdraw: bool) -> bool {
        let mut found = false;
        let empty = self.sleepq.take(chan, one, |t| {
            found = true;
            // SAFETY: just taken off this CPU's sleep queue (take()
            // unlinked it); still on the all-list.
            let td = unsafe { t.td() };
            if td.has(tdf::SLEEPING) {
                td.clear(tdf::SLEEPING | tdf::SINTR);
                td.wake.set(Wake::Wakeup);
                self.stats().wakeups.bump();
                trace_event!(self, tr_wakeup(td, wake::CHANNEL, chan));
                self.make_runnable(t);
            } else {
                td.set(tdf::WOKEN);
            }
        });
        // Withdraw from the bucket mask only after a visit by message found
        // nobody (see sleepq.rs).
        if withdraw && empty && !found {
            self.machine.sleep.clear(bucket_of(chan), self.id);
        }
        found
    }

    /// Registers the running thread on `chan` without sleeping yet
    /// (`tsleep_interlock`, without the fence: see
    /// [`sleep_interlock_cur`](Self::sleep_interlock_cur)).
    pub(crate) fn sleep_register(&self, t: TdPtr, td: &Thread, chan: usize) {
        if td.has(tdf::TSLEEPQ) {
            self.sleepq.remove(t);
        }
        td.clear(tdf::WOKEN);
        if self.sleepq.insert(t, chan) {
            self.machine.sleep.set(bucket_of(chan), self.id);
        }
    }

    /// `tsleep_interlock`: registers, then orders the registration before
    /// the caller's reads of its condition (pairs with the fence in
    /// [`wakeup`]).
    pub(crate) fn sleep_interlock_cur(&self, t: TdPtr, td: &Thread, chan: usize) {
        self.sleep_register(t, td, chan);
        fence(Ordering::SeqCst);
    }

    /// Withdraws an interlocked registration (`tsleep_remove`).
    pub(crate) fn sleep_remove_cur(&self, t: TdPtr, td: &Thread) {
        if td.has(tdf::TSLEEPQ) {
            self.sleepq.remove(t);
        }
        td.clear(tdf::WOKEN);
    }

    /// Arms a timeout for the current sleep of `t`.
    pub(crate) fn arm_timer(&self, t: TdPtr, td: &Thread, when: Instant) {
        td.timer_refs.set(td.timer_refs.get() + 1);
        self.timers.push(Timer {
            when,
            seq: td.sleep_seq.get(),
            td: t,
        });
        // Look at the clock soon: the deadline may be near.
        self.timer_countdown.set(1);
    }

    /// `tsleep`: sleeps on `chan` until a wakeup on it, the timeout, or
    /// (when interruptible) an interrupt. The running thread's tokens are
    /// released while it sleeps and re-acquired before this returns.
    pub(crate) fn sleep_cur(
        &self,
        t: TdPtr,
        td: &Thread,
        chan: usize,
        timeout: Option<Duration>,
        interruptible: bool,
        wmesg: &'static str,
    ) -> Result<(), SleepError> {
        if td.has(tdf::CANCEL) {
            return Err(SleepError::Interrupted);
        }
        if interruptible
            && td
                .ctl()
                .is_some_and(|c| c.interrupt.swap(false, Ordering::AcqRel))
        {
            self.sleep_remove_cur(t, td);
            return Err(SleepError::Interrupted);
        }
        let registered = td.has(tdf::TSLEEPQ) && td.wchan.get() == chan;
        if !registered {
            if td.has(tdf::WOKEN) && td.wchan.get() == chan {
                // Woken between sleep_interlock and here.
                td.clear(tdf::WOKEN);
                return Ok(());
            }
            self.sleep_register(t, td, chan);
        }
        td.clear(tdf::WOKEN);
        td.wmesg.set(wmesg);
        td.set(if interruptible {
            tdf::SLEEPING | tdf::SINTR
        } else {
            tdf::SLEEPING
        });
        td.sleep_seq.set(td.sleep_seq.get() + 1);
        // A timeout beyond the clock's range is no timeout.
        if let Some(when) = timeout.and_then(|d| Instant::now().checked_add(d)) {
            self.arm_timer(t, td, when);
        }
        trace_event!(self, tr_sleep(td, chan));
        self.switch_out(td);
        // Any timer still armed for this sleep is now stale.
        td.sleep_seq.set(td.sleep_seq.get() + 1);
        if td.has(tdf::CANCEL) {
            return Err(SleepError::Interrupted);
        }
        match td.wake.get() {
            Wake::Wakeup => Ok(()),
            Wake::Timeout => Err(SleepError::TimedOut),
            Wake::Interrupt => Err(SleepError::Interrupted),
        }
    }
}

/// Routes a wakeup on `chan` to the CPUs of `m` that may have sleepers
/// there (`wakeup` / `wakeup_one`). `from` is the calling CPU when the
/// caller runs on one of `m`'s CPUs. Does not preempt: callers run
/// `preempt_check` once they are done.
pub(crate) fn wakeup(m: &Machine, from: Option<&Core>, chan: usize, one: bool) {
    // Pairs with the sleeper's SeqCst registration: the caller's change to
    // the condition is ordered before our read of the mask.
    fence(Ordering::SeqCst);
    wakeup_ordered(m, from, chan, one)
}

/// [`wakeup`] for callers that already ordered their condition change
/// before this call with a SeqCst read-modify-write.
pub(crate) fn wakeup_ordered(m: &Machine, from: Option<&Core>, chan: usize, one: bool) {
    let b = bucket_of(chan);
    if one {
        match from {
            Some(core) => {
                if m.sleep.has(b, core.id) && core.wakeup_own(chan, true) {
                    return;
                }
                if let Some(next) = m.sleep.next_after(b, core.id, core.id) {
                    core.send(
                        next,
                        Msg::WakeupOne {
                            chan,
                            stop: core.id,
                            flow: core.tr_flow(),
                        },
                    );
                }
            }
            None => {
                if let Some(c) = m.sleep.first(b) {
                    let _ = m.send_external(
                        c,
                        Msg::WakeupOne {
                            chan,
                            stop: c,
                            flow: 0,
                        },
                    );
                }
            }
        }
        return;
    }
    // The caller's own CPU last: the messages to the others go out first,
    // ahead of the local wakeup's queue work (and, when it finds nobody,
    // its write to the mask word). Wakeups on different CPUs are
    // unordered anyway.
    let mut local = None;
    m.sleep.for_each(b, |c| match from {
        Some(core) if core.id == c => local = Some(core),
        Some(core) => core.send(
            c,
            Msg::Wakeup {
                chan,
                flow: core.tr_flow(),
            },
        ),
        None => {
            let _ = m.send_external(c, Msg::Wakeup { chan, flow: 0 });
        }
    });
    if let Some(core) = local {
        core.wakeup_own(chan, false);
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::ThreadBuilder;

    /// Whether CPU `cpu`'s bit is set in the bucket of `chan`.
    fn bit(td: &crate::CurThread, chan: usize, cpu: usize) -> bool {
        td.core().machine.sleep.has(bucket_of(chan), cpu)
    }

    /// The bucket-mask bit of a CPU stays set through a wakeup made on
    /// that CPU that finds nobody (`wakeup_own`), and is withdrawn by the
    /// visit of a wakeup that came from another CPU by message
    /// (`wakeup_local`), which found nobody either.
    #[test]
    fn own_wakeups_keep_the_bit_and_message_visits_withdraw_it() {
        static CHAN: u64 = 0;
        let chan = &CHAN as *const u64 as usize;
        let rt = crate::Runtime::builder().cpus(2).build().unwrap();
        rt.block_on(move |td| {
            // A stale bit on CPU 1: register, then withdraw the
            // registration (the bit stays: bits are cleared lazily).
            let h = ThreadBuilder::new()
                .cpu(1)
                .spawn(td, move |td| {
                    td.sleep_interlock(&CHAN);
                    td.sleep_remove();
                    assert!(bit(td, chan, 1), "registration sets the bit");
                    // Nobody sleeps there: a wakeup from this CPU keeps it.
                    crate::wakeup(&CHAN);
                    bit(td, chan, 1)
                })
                .unwrap();
            assert!(h.join(td).unwrap(), "a local wakeup withdrew the bit");
            // From CPU 0: the wakeup goes to CPU 1 by message, whose visit
            // finds nobody and withdraws the bit.
            let h = ThreadBuilder::new()
                .cpu(0)
                .spawn(td, move |td| {
                    assert!(bit(td, chan, 1));
                    crate::wakeup(&CHAN);
                    // The message is processed on CPU 1 in its own time.
                    for _ in 0..5000 {
                        if !bit(td, chan, 1) {
                            return true;
                        }
                        let _ = td.sleep(
                            &(),
                            crate::Sleep::default().timeout(Duration::from_millis(1)),
                        );
                    }
                    false
                })
                .unwrap();
            assert!(
                h.join(td).unwrap(),
                "the message's visit did not withdraw the bit"
            );
        });
    }
}
