//! Serializing tokens (`lwkt_token.c`): the user API.
//!
//! A token serializes its holders only while they run: every switch-away
//! releases all of the thread's tokens and the scheduler re-acquires all of
//! them before the thread runs again. So a token can be held across
//! blocking calls, taken recursively, and never deadlocks through lock
//! order — but the data it protects may change whenever its holder
//! switches away. Here the compiler enforces that:
//!
//! * data is reached only through [`TokenGuard::get`], which borrows the
//!   running thread's `&mut CurThread` for as long as the data reference
//!   lives (shared guards: `&CurThread`);
//! * every call that can switch away also takes `&mut CurThread`, so a data
//!   reference cannot live across one;
//! * two data references through the same `&mut CurThread` cannot coexist,
//!   so recursive guards of one token cannot alias either. Borrows end at
//!   their last use (plain references, no guard objects with `Drop`).
//!
//! The data lives inline in the [`Token`]; the state the scheduler handles
//! lives in a separate, stable allocation made on first use (see `tokref`),
//! so tokens can be moved and dropped freely, even when a guard was leaked.
//!
//! A data borrow cannot live across any switch point. Each of these is a
//! compile error (the error code is pinned):
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     td.sleep(&T, lwkt::Sleep::default()).ok(); // td is borrowed by v
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     td.sleep_for(std::time::Duration::from_millis(1)).ok();
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! # static F: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     td.sleep_until(&F, lwkt::Sleep::default(), || true).ok();
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     td.yield_now();
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     td.maybe_yield();
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     td.park();
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! # static U: lwkt::Token<u32> = lwkt::Token::new("u", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     let _u = td.get_token(&U); // may block
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! # static U: lwkt::Token<u32> = lwkt::Token::new("u", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     let _u = td.get_token_shared(&U); // may block
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread, h: lwkt::JoinHandle<()>) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     let _ = h.join(td);
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     // SAFETY: nothing thread-bound is live (this is a compile test).
//!     unsafe { td.migrate(1).ok() };
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     let _h = td.spawn(|_| ()); // may preempt and switch
//!     *v += 1;
//! }
//! ```
//!
//! A shared data borrow cannot either:
//!
//! ```compile_fail,E0502
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let s = td.get_token_shared(&T);
//!     let v = s.get(td);
//!     td.yield_now();
//!     let _ = *v;
//! }
//! ```
//!
//! Recursive guards of one token cannot hand out aliasing references:
//!
//! ```compile_fail,E0499
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g1 = td.get_token(&T);
//!     let g2 = td.get_token(&T); // recursive: fine
//!     let a = g1.get(td);
//!     let b = g2.get(td); // a second &mut to the same data: refused
//!     *a += *b;
//! }
//! ```
//!
//! ```compile_fail,E0502
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     let s = td.get_token_shared(&T); // shared inside exclusive: fine
//!     let r = s.get(td);
//!     let w = g.get(td); // &mut while & is live: refused
//!     *w += *r;
//! }
//! ```
//!
//! Guards cannot leave their thread, nor outlive their token:
//!
//! ```compile_fail,E0277
//! # static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     std::thread::spawn(move || drop(g)); // guards are not Send
//! }
//! ```
//!
//! ```compile_fail,E0597
//! fn f(td: &mut lwkt::CurThread) {
//!     let tok = lwkt::Token::new("t", 0u32);
//!     let g = td.get_token(&tok);
//!     let keep: Box<dyn FnOnce() + 'static> = Box::new(move || drop(g));
//!     drop(keep);
//! }
//! ```
//!
//! ```compile_fail,E0277
//! // Shared access needs T: Sync (Cell is not):
//! # static T: lwkt::Token<std::cell::Cell<u32>> = lwkt::Token::new("t", std::cell::Cell::new(0));
//! fn f(td: &mut lwkt::CurThread) {
//!     let _g = td.get_token_shared(&T);
//! }
//! ```
//!
//! ```compile_fail,E0277
//! // A token of non-Send data cannot be shared between threads:
//! fn needs_sync<S: Sync>(_: &S) {}
//! fn f(t: &lwkt::Token<std::rc::Rc<u32>>) { needs_sync(t) }
//! ```
//!
//! What does compile: exclusive tokens of `Send` data are `Sync` (like
//! `Mutex`), and borrows end at their last use, so re-borrowing after a
//! switch, or reading in a tail expression, is fine:
//!
//! ```
//! fn needs_sync<S: Sync>(_: &S) {}
//! fn f(t: &lwkt::Token<std::cell::Cell<u32>>) { needs_sync(t) }
//!
//! static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn g(td: &mut lwkt::CurThread) -> u32 {
//!     let g = td.get_token(&T);
//!     let v = g.get(td);
//!     *v += 1;                // last use of v
//!     td.yield_now();         // fine: v is dead
//!     *g.get(td) += 1;        // re-borrow after the switch (re-check!)
//!     let n = { let h = td.get_token(&T); *h.get(td) };
//!     n
//! }
//! ```

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::mem::ManuallyDrop;
use std::ptr;

use crate::sched::core::with_current;
use crate::sync::atomic::{AtomicPtr, Ordering};
use crate::thread::CurThread;
use crate::tokref::{Got, RawToken};

pub use crate::tokref::MAX_TOKENS;

pub(crate) mod registry;

/// A serializing token protecting a `T` (`struct lwkt_token`).
///
/// ```
/// static VM: lwkt::Token<Vec<u32>> = lwkt::Token::new("vm", Vec::new());
/// let rt = lwkt::Runtime::builder().cpus(1).build()?;
/// rt.block_on(|td| {
///     let g = td.get_token(&VM);
///     g.get(td).push(1);
///     td.yield_now(); // the token is released while we are switched out...
///     assert_eq!(g.get(td).len(), 1); // ...and held again now
/// });
/// # Ok::<(), lwkt::Error>(())
/// ```
pub struct Token<T: ?Sized> {
    /// The scheduler's state, allocated on first use; never moves, and
    /// outlives every reference to it (freed by `Drop` only when nothing
    /// refers to it, leaked otherwise).
    raw: AtomicPtr<RawToken>,
    name: &'static str,
    data: UnsafeCell<T>,
}

// SAFETY: moving a token moves its T (the state allocation is shared only
// through atomics).
unsafe impl<T: ?Sized + Send> Send for Token<T> {}
// SAFETY: exclusive guards hand `&mut T` to one running thread at a time,
// which is sound for T: Send (as for Mutex). Shared guards hand `&T` to
// several threads at once; they require T: Sync at the acquisition call.
unsafe impl<T: ?Sized + Send> Sync for Token<T> {}

impl<T> Token<T> {
    /// A token named `name` protecting `value`; usable in a `static`.
    pub const fn new(name: &'static str, value: T) -> Token<T> {
        Token {
            raw: AtomicPtr::new(ptr::null_mut()),
            name,
            data: UnsafeCell::new(value),
        }
    }

    /// The protected value, consuming the token.
    pub fn into_inner(self) -> T {
        let mut me = ManuallyDrop::new(self);
        me.retire_raw();
        // SAFETY: `me` is never used or dropped again; `data` is read out
        // exactly once (the other fields need no drop: retire_raw handled
        // the state allocation).
        unsafe { ptr::read(&me.data) }.into_inner()
    }
}

impl<T: ?Sized> Token<T> {
    /// The token's name.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// How many acquisitions found the token busy (`t_collisions`).
    pub fn collisions(&self) -> u64 {
        self.raw_if_any().map_or(0, RawToken::collisions)
    }

    /// Direct access when the token itself is borrowed mutably (no guard
    /// can exist).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Whether some thread holds the token exclusively now (a snapshot).
    pub fn is_held_exclusive(&self) -> bool {
        self.raw_if_any().is_some_and(|r| r.word.is_exclusive())
    }

    /// How many shared holds the token has now (a snapshot).
    pub fn shared_holders(&self) -> usize {
        self.raw_if_any().map_or(0, |r| r.word.shared_count())
    }

    /// The scheduler's state, if it was allocated.
    fn raw_if_any(&self) -> Option<&RawToken> {
        let p = self.raw.load(Ordering::Acquire);
        // SAFETY: once set, the allocation lives at least as long as the
        // token (freed only by Drop / into_inner, which need the token by
        // value or `&mut`), and `&self` keeps the token alive.
        unsafe { p.as_ref() }
    }

    /// The scheduler's state, allocated on first use.
    #[inline]
    pub(crate) fn raw(&self) -> &RawToken {
        match self.raw_if_any() {
            Some(r) => r,
            None => self.raw_slow(),
        }
    }

    #[cold]
    fn raw_slow(&self) -> &RawToken {
        let new = RawToken::alloc(self.name);
        match self
            .raw
            .compare_exchange(ptr::null_mut(), new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                registry::register(new);
                // SAFETY: just published; lives as long as the token (above).
                unsafe { &*new }
            }
            Err(existing) => {
                // SAFETY: `new` was never published: this is its only
                // reference; it came from alloc (Box::into_raw).
                drop(unsafe { Box::from_raw(new) });
                // SAFETY: published by the winner; lives as above.
                unsafe { &*existing }
            }
        }
    }

    /// Frees the state allocation when nothing refers to it (see
    /// `tokref`); a reference from a leaked guard keeps it allocated.
    fn retire_raw(&mut self) {
        let p = std::mem::replace(self.raw.get_mut(), ptr::null_mut());
        if !p.is_null() {
            // SAFETY: `p` came from RawToken::alloc and is not freed yet;
            // `&mut self` means no new reference can be made through this
            // token; it was registered when published (raw_slow).
            unsafe { registry::retire(p) };
        }
    }
}

impl<T: ?Sized> Drop for Token<T> {
    fn drop(&mut self) {
        self.retire_raw();
    }
}

impl<T: ?Sized> fmt::Debug for Token<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.name)
            .field("exclusive", &self.is_held_exclusive())
            .field("shared", &self.shared_holders())
            .field("collisions", &self.collisions())
            .finish_non_exhaustive()
    }
}

// -------------------------------------------------------------------
// Guards
// -------------------------------------------------------------------

/// An exclusive hold on a token (`lwkt_gettoken` .. `lwkt_reltoken`).
/// Released when dropped, in any order relative to other guards.
#[must_use = "the token is released when the guard is dropped"]
pub struct TokenGuard<'a, T: ?Sized> {
    token: &'a Token<T>,
    slot: u8,
    /// The id of the thread that took the guard (never reused).
    owner: u64,
    _not_send: PhantomData<*mut ()>,
}

/// A shared hold on a token (`lwkt_gettoken_shared`).
#[must_use = "the token is released when the guard is dropped"]
pub struct SharedTokenGuard<'a, T: ?Sized> {
    token: &'a Token<T>,
    slot: u8,
    owner: u64,
    _not_send: PhantomData<*mut ()>,
}

/// What [`TokenGuard::get`] returns: a plain mutable reference (kept as a
/// name for code written against earlier versions).
pub type TokenMut<'b, T> = &'b mut T;
/// What [`SharedTokenGuard::get`] returns: a plain shared reference.
pub type TokenRef<'b, T> = &'b T;

impl<T: ?Sized> fmt::Debug for TokenGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGuard")
            .field("token", &self.token.name)
            .finish()
    }
}

impl<T: ?Sized> fmt::Debug for SharedTokenGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTokenGuard")
            .field("token", &self.token.name)
            .finish()
    }
}

#[cold]
#[track_caller]
fn wrong_thread(name: &str, owner: u64, td: &CurThread) -> ! {
    panic!(
        "lwkt: a guard of token '{name}' taken by thread td{owner} was used by another thread, \
         {} (guards belong to the thread that took them; a guard kept past its thread's exit \
         is stale)",
        td.id()
    )
}

impl<'a, T: ?Sized> TokenGuard<'a, T> {
    /// Mutable access to the data, for as long as `td` is borrowed: the
    /// borrow ends before the thread can switch away, and no other data
    /// reference through `td` can coexist with it.
    ///
    /// # Panics
    /// If `td` is not the thread that took the guard.
    #[track_caller]
    #[inline]
    pub fn get<'b>(&'b self, td: &'b mut CurThread) -> &'b mut T {
        if td.thread().tid.get() != self.owner {
            wrong_thread(self.token.name, self.owner, td);
        }
        // SAFETY: the running thread `td` took this guard (ids are never
        // reused) and the guard is alive, so its reference is live and the
        // token is held exclusively by `td` (a running thread holds all its
        // tokens). The result borrows `td` mutably, so no other reference
        // to the data obtained through `td` (the only way to reach it)
        // exists while it lives, and none survives a switch.
        unsafe { &mut *self.token.data.get() }
    }

    /// The token this guard holds.
    pub fn token(&self) -> &'a Token<T> {
        self.token
    }
}

impl<'a, T: ?Sized + Sync> SharedTokenGuard<'a, T> {
    /// Shared access to the data, for as long as `td` is borrowed.
    ///
    /// # Panics
    /// If `td` is not the thread that took the guard.
    #[track_caller]
    #[inline]
    pub fn get<'b>(&'b self, td: &'b CurThread) -> &'b T {
        if td.thread().tid.get() != self.owner {
            wrong_thread(self.token.name, self.owner, td);
        }
        // SAFETY: the running thread holds the token (shared, or exclusive
        // with this as a nested shared use); a `&mut` to the data would
        // need `&mut td`, which this shared borrow excludes; T: Sync allows
        // several threads to read at once.
        unsafe { &*self.token.data.get() }
    }
}

impl<'a, T: ?Sized> SharedTokenGuard<'a, T> {
    /// The token this guard holds.
    pub fn token(&self) -> &'a Token<T> {
        self.token
    }
}

impl<T: ?Sized> Drop for TokenGuard<'_, T> {
    #[doc(alias = "lwkt_reltoken")]
    fn drop(&mut self) {
        // The token's name is read only on the slow path (it is for the
        // panic message).
        if !release_fast(self.slot, self.owner) {
            release_slow(self.slot, self.owner, self.token.name);
        }
    }
}

impl<T: ?Sized> Drop for SharedTokenGuard<'_, T> {
    fn drop(&mut self) {
        if !release_fast(self.slot, self.owner) {
            release_slow(self.slot, self.owner, self.token.name);
        }
    }
}

/// A guard's release when the running thread is its owner (`owner` is
/// the thread's id: a structure reused by a later thread has another) and
/// the reference is that thread's only one, held; false (nothing done)
/// otherwise, and [`release_slow`] does the rest. Inlined into the
/// guard's drop.
#[inline(always)]
fn release_fast(slot: u8, owner: u64) -> bool {
    with_current(|core| match core.current() {
        Some(t) => {
            // SAFETY: the running thread is alive while it runs.
            let td = unsafe { t.td() };
            td.tid.get() == owner && td.toks.release_only(slot)
        }
        None => false,
    }) == Some(true)
}

/// The general release. Dropped by another lwkt thread (a guard smuggled
/// through thread-local storage): a panic, and nothing is released (the
/// slot number means nothing in another thread's array). Dropped outside
/// the runtime (a thread-local destructor when the CPU's OS thread ends):
/// nothing to do, the owner's references were dropped when it exited or
/// was cancelled.
#[cold]
#[inline(never)]
fn release_slow(slot: u8, owner: u64, name: &'static str) {
    let outcome = with_current(|core| {
        let Some(t) = core.current() else {
            return Err(None);
        };
        // SAFETY: the running thread is alive while it runs.
        let td = unsafe { t.td() };
        if td.tid.get() != owner {
            return Err(Some(td.tid.get()));
        }
        td.toks.release_slot(slot);
        Ok(())
    });
    match outcome {
        None | Some(Ok(())) | Some(Err(None)) => {}
        Some(Err(Some(by))) => {
            if !std::thread::panicking() {
                panic!(
                    "lwkt: a guard of token '{name}' taken by thread td{owner} was dropped by \
                     another thread, td{by}; guards belong to the thread that took them"
                );
            }
        }
    }
}

// -------------------------------------------------------------------
// Acquisition
// -------------------------------------------------------------------

impl CurThread {
    /// Takes `tok` exclusively, blocking (switching away, which releases
    /// this thread's other tokens until it runs again) while another
    /// thread holds it. Recursive: taking a token this thread already
    /// holds exclusively succeeds at once.
    ///
    /// # Panics
    /// If this thread holds `tok` only shared: waiting for exclusive use
    /// would wait for itself forever (the seed's s/x livelock). Also when
    /// the thread would hold more than [`MAX_TOKENS`] references.
    #[doc(alias = "lwkt_gettoken")]
    #[track_caller]
    #[inline]
    pub fn get_token<'a, T: ?Sized + Send>(&mut self, tok: &'a Token<T>) -> TokenGuard<'a, T> {
        let raw = tok.raw();
        let td = self.thread();
        // The fast path returns straight away: nothing else shares its
        // frame (a guard built once on both paths, with the switch point
        // after it, made the uncontended get + release 4x slower).
        let slot = match td.toks.acquire_fast(raw, true, td.identity()) {
            Some(s) => s,
            None => self.get_blocking(raw, true),
        };
        TokenGuard {
            token: tok,
            slot,
            owner: self.thread().tid.get(),
            _not_send: PhantomData,
        }
    }

    /// Takes `tok` shared, blocking while it is held exclusively by
    /// another thread. A blocked exclusive requester has priority over new
    /// shared requesters that hold no other token.
    ///
    /// # Panics
    /// When the thread would hold more than [`MAX_TOKENS`] references.
    #[doc(alias = "lwkt_gettoken_shared")]
    #[track_caller]
    #[inline]
    pub fn get_token_shared<'a, T: ?Sized + Send + Sync>(
        &mut self,
        tok: &'a Token<T>,
    ) -> SharedTokenGuard<'a, T> {
        let raw = tok.raw();
        let td = self.thread();
        let slot = match td.toks.acquire_fast(raw, false, td.identity()) {
            Some(s) => s,
            None => self.get_blocking(raw, false),
        };
        SharedTokenGuard {
            token: tok,
            slot,
            owner: self.thread().tid.get(),
            _not_send: PhantomData,
        }
    }

    /// Takes `tok` exclusively if that is possible without blocking;
    /// `None` when another thread holds it, or when this thread holds it
    /// only shared (as `lwkt_trytoken`).
    ///
    /// # Panics
    /// When the thread would hold more than [`MAX_TOKENS`] references.
    #[doc(alias = "lwkt_trytoken")]
    #[track_caller]
    pub fn try_token<'a, T: ?Sized + Send>(
        &mut self,
        tok: &'a Token<T>,
    ) -> Option<TokenGuard<'a, T>> {
        let slot = self.acquire_slow(tok.raw(), true, false)?;
        Some(TokenGuard {
            token: tok,
            slot,
            owner: self.thread().tid.get(),
            _not_send: PhantomData,
        })
    }

    /// Takes `tok` shared if that is possible without blocking.
    ///
    /// # Panics
    /// When the thread would hold more than [`MAX_TOKENS`] references.
    #[track_caller]
    pub fn try_token_shared<'a, T: ?Sized + Send + Sync>(
        &mut self,
        tok: &'a Token<T>,
    ) -> Option<SharedTokenGuard<'a, T>> {
        let slot = self.acquire_slow(tok.raw(), false, false)?;
        Some(SharedTokenGuard {
            token: tok,
            slot,
            owner: self.thread().tid.get(),
            _not_send: PhantomData,
        })
    }

    /// A blocking acquisition past the fast path, then a switch point (it
    /// may have blocked). The reference is recorded in the held-token
    /// array before the switch point, so an exit requested meanwhile
    /// releases it while the stack unwinds (`drop_all`), though the
    /// caller's guard does not exist yet.
    #[track_caller]
    #[cold]
    #[inline(never)]
    fn get_blocking(&mut self, raw: &RawToken, exclusive: bool) -> u8 {
        let slot = self
            .acquire_slow(raw, exclusive, true)
            .expect("a blocking acquisition");
        self.switch_point();
        slot
    }

    /// The full acquisition: recursion, the seed's spin, and blocking.
    #[track_caller]
    #[inline(never)]
    fn acquire_slow(&mut self, raw: &RawToken, exclusive: bool, block: bool) -> Option<u8> {
        let core = self.core();
        let td = self.thread();
        match td
            .toks
            .acquire(raw, exclusive, block, td.identity(), &core.policy)
        {
            Got::Held(s) => Some(s),
            Got::Busy => None,
            Got::MustBlock(s) => {
                td.wmesg.set(raw.name);
                // Give up the CPU: the scheduler acquires this token (and
                // re-acquires the others) before we run again.
                core.block_for_tokens(self.td_ptr(), td);
                Some(s)
            }
        }
    }

    /// How many references to `tok` this thread holds (`lwkt_cnttoken`).
    #[doc(alias = "lwkt_cnttoken")]
    pub fn token_count<T: ?Sized>(&self, tok: &Token<T>) -> usize {
        tok.raw_if_any()
            .map_or(0, |r| self.thread().toks.count_of(r))
    }

    /// How many token references this thread holds in all.
    pub fn tokens_held(&self) -> usize {
        self.thread().toks.count()
    }
}

// -------------------------------------------------------------------
// Pool tokens
// -------------------------------------------------------------------

/// Pool size: a prime, as the seed's 16661, so address strides spread.
pub const POOL_TOKENS: usize = 16661;

#[allow(clippy::declare_interior_mutable_const)]
const POOL_INIT: Token<()> = Token::new("pool", ());
static POOL: [Token<()>; POOL_TOKENS] = [POOL_INIT; POOL_TOKENS];

/// The pool token for an address (`lwkt_token_pool_lookup`): any object
/// can be serialized without a token of its own. Different objects may
/// share one pool token, so take pool tokens exclusively (a shared hold on
/// one and an exclusive request on another object that hashes to the same
/// token would livelock, as the seed warns). To keep data under a pool
/// token without `unsafe`, wrap it in [`Pooled`].
#[doc(alias = "lwkt_token_pool_lookup")]
pub fn pool_token<O: ?Sized>(obj: &O) -> &'static Token<()> {
    let a = obj as *const O as *const () as usize;
    // Modulo a prime: objects at any stride that is not a multiple of the
    // prime land in distinct slots (the seed's scheme).
    &POOL[(a >> 3) % POOL_TOKENS]
}

/// Data serialized by the pool token of its own address: a token-protected
/// cell for objects that do not carry a token of their own.
///
/// ```
/// let rt = lwkt::Runtime::builder().cpus(1).build()?;
/// rt.block_on(|td| {
///     let counter = lwkt::Pooled::new(0u64);
///     let g = td.get_token(counter.token());
///     *counter.get(&g, td) += 1;
///     assert_eq!(*counter.get(&g, td), 1);
/// });
/// # Ok::<(), lwkt::Error>(())
/// ```
pub struct Pooled<T: ?Sized> {
    data: UnsafeCell<T>,
}

// SAFETY: as for Token: exclusive access is handed to one running thread at
// a time (T: Send), shared access needs T: Sync at the call.
unsafe impl<T: ?Sized + Send> Sync for Pooled<T> {}
// SAFETY: moving it moves its T.
unsafe impl<T: ?Sized + Send> Send for Pooled<T> {}

impl<T> Pooled<T> {
    /// Wraps `value`.
    pub const fn new(value: T) -> Pooled<T> {
        Pooled {
            data: UnsafeCell::new(value),
        }
    }

    /// The value, consuming the wrapper.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Pooled<T> {
    /// The pool token that serializes this object (it depends on the
    /// object's address, so take it where the object will stay).
    pub fn token(&self) -> &'static Token<()> {
        pool_token(self)
    }

    /// Mutable access, given an exclusive hold on [`token`](Self::token)
    /// by the running thread.
    ///
    /// # Panics
    /// If `guard` is not a guard of this object's pool token (the object
    /// moved, or another object's token was taken), or not `td`'s.
    #[track_caller]
    pub fn get<'b>(&'b self, guard: &'b TokenGuard<'_, ()>, td: &'b mut CurThread) -> &'b mut T {
        self.check(guard.token, guard.owner, td);
        // SAFETY: `td` holds this object's pool token exclusively (checked
        // above: right token, right thread, guard alive), and the result
        // borrows `td` mutably, so no other data reference obtained through
        // `td` coexists with it (as in TokenGuard::get).
        unsafe { &mut *self.data.get() }
    }

    /// Shared access, given a shared (or exclusive) hold on
    /// [`token`](Self::token) by the running thread.
    ///
    /// # Panics
    /// As [`get`](Self::get).
    #[track_caller]
    pub fn get_shared<'b>(&'b self, guard: &'b SharedTokenGuard<'_, ()>, td: &'b CurThread) -> &'b T
    where
        T: Sync,
    {
        self.check(guard.token, guard.owner, td);
        // SAFETY: as in SharedTokenGuard::get.
        unsafe { &*self.data.get() }
    }

    /// Direct access when the wrapper itself is borrowed mutably.
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    #[track_caller]
    fn check(&self, tok: &Token<()>, owner: u64, td: &CurThread) {
        if !ptr::eq(tok, self.token()) {
            panic!(
                "lwkt: Pooled::get with a guard of another token than the object's pool token \
                 (take `obj.token()` where the object now lives)"
            );
        }
        if td.thread().tid.get() != owner {
            wrong_thread(tok.name, owner, td);
        }
    }
}

impl<T: ?Sized> fmt::Debug for Pooled<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pooled").finish_non_exhaustive()
    }
}
