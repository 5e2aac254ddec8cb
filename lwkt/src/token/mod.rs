//! Serializing tokens (`lwkt_token.c`).
//!
//! A token serializes its holders only while they run: every switch-away
//! releases all of the thread's tokens and the scheduler re-acquires all of
//! them before the thread runs again. So a token can be held across
//! blocking calls, taken recursively, and never deadlocks through lock
//! order — but the data it protects may change whenever its holder
//! switches away. Here the compiler enforces that: data is reached only
//! through [`TokenGuard::get`] / [`SharedTokenGuard::get`], whose borrows
//! hold `&CurThread`, and every call that can switch away takes
//! `&mut CurThread`.
//!
//! ```compile_fail
//! // A data borrow cannot live across a sleep:
//! static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let mut g = td.get_token(&T);
//!     let mut v = g.get(td);
//!     td.sleep(&T, lwkt::Sleep::default()).ok(); // error: td is borrowed
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail
//! // ...nor across a yield:
//! static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let mut g = td.get_token(&T);
//!     let mut v = g.get(td);
//!     td.yield_now();
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail
//! // ...nor across a blocking acquisition of another token:
//! static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! static U: lwkt::Token<u32> = lwkt::Token::new("u", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let mut g = td.get_token(&T);
//!     let mut v = g.get(td);
//!     let _u = td.get_token(&U);
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail
//! // ...nor across a join:
//! static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread, h: lwkt::JoinHandle<()>) {
//!     let mut g = td.get_token(&T);
//!     let mut v = g.get(td);
//!     let _ = h.join(td);
//!     *v += 1;
//! }
//! ```
//!
//! ```compile_fail
//! // Guards cannot leave their thread:
//! static T: lwkt::Token<u32> = lwkt::Token::new("t", 0);
//! fn f(td: &mut lwkt::CurThread) {
//!     let g = td.get_token(&T);
//!     std::thread::spawn(move || drop(g));
//! }
//! ```
//!
//! ```compile_fail
//! // Shared access needs T: Sync (Cell is not):
//! static T: lwkt::Token<std::cell::Cell<u32>> = lwkt::Token::new("t", std::cell::Cell::new(0));
//! fn f(td: &mut lwkt::CurThread) {
//!     let _g = td.get_token_shared(&T);
//! }
//! ```
//!
//! ```compile_fail
//! // A token of non-Send data cannot be shared between threads:
//! fn needs_sync<S: Sync>(_: &S) {}
//! fn f(t: &lwkt::Token<std::rc::Rc<u32>>) { needs_sync(t) }
//! ```
//!
//! ```
//! // Exclusive tokens of Send data are Sync (like Mutex):
//! fn needs_sync<S: Sync>(_: &S) {}
//! fn f(t: &lwkt::Token<std::cell::Cell<u32>>) { needs_sync(t) }
//! ```

pub(crate) mod sched;
pub(crate) mod word;

use std::cell::UnsafeCell;
use std::fmt;
use std::marker::PhantomData;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

use crossbeam_utils::CachePadded;

use crate::thread::CurThread;
use word::Word;

/// Most token references one thread may hold at once (`LWKT_MAXTOKENS`).
pub const MAX_TOKENS: usize = 32;

/// The non-generic part of a token, which the scheduler handles.
pub(crate) struct RawToken {
    pub(crate) word: Word,
    /// Failed acquisitions (`t_collisions`).
    collisions: AtomicU64,
    /// The token's name (`t_desc`), shown as a waiter's wait message.
    pub(crate) name: &'static str,
    /// Data borrow state, RefCell-style: 0 free, n > 0 shared borrows, -1
    /// a mutable borrow. Touched only by the thread holding the token
    /// exclusively (so there is one writer at a time).
    borrow: AtomicIsize,
}

impl RawToken {
    pub(crate) fn collide(&self) {
        self.collisions.fetch_add(1, Ordering::Relaxed);
    }
}

/// A serializing token protecting a `T` (`struct lwkt_token`).
///
/// ```
/// static VM: lwkt::Token<Vec<u32>> = lwkt::Token::new("vm", Vec::new());
/// let rt = lwkt::Runtime::builder().cpus(1).build()?;
/// rt.block_on(|td| {
///     let mut g = td.get_token(&VM);
///     g.get(td).push(1);
///     td.yield_now(); // the token is released while we are switched out...
///     assert_eq!(g.get(td).len(), 1); // ...and held again now
/// });
/// # Ok::<(), lwkt::Error>(())
/// ```
pub struct Token<T: ?Sized> {
    raw: RawToken,
    data: UnsafeCell<T>,
}

// SAFETY: moving a token moves its T.
unsafe impl<T: ?Sized + Send> Send for Token<T> {}
// SAFETY: exclusive guards hand `&mut T` to one thread at a time, which is
// sound for T: Send (as for Mutex). Shared guards hand `&T` to several
// threads at once; they require T: Sync at the acquisition call.
unsafe impl<T: ?Sized + Send> Sync for Token<T> {}

impl<T> Token<T> {
    /// A token named `name` protecting `value`; usable in a `static`.
    pub const fn new(name: &'static str, value: T) -> Token<T> {
        Token {
            raw: RawToken {
                word: Word::new(),
                collisions: AtomicU64::new(0),
                name,
                borrow: AtomicIsize::new(0),
            },
            data: UnsafeCell::new(value),
        }
    }

    /// The protected value, consuming the token.
    pub fn into_inner(self) -> T {
        self.data.into_inner()
    }
}

impl<T: ?Sized> Token<T> {
    /// The token's name.
    pub fn name(&self) -> &'static str {
        self.raw.name
    }

    /// How many acquisitions found the token busy (`t_collisions`).
    pub fn collisions(&self) -> u64 {
        self.raw.collisions.load(Ordering::Relaxed)
    }

    /// Direct access when the token itself is borrowed mutably (no other
    /// holder can exist).
    pub fn get_mut(&mut self) -> &mut T {
        self.data.get_mut()
    }

    /// Whether some thread holds the token exclusively now (a snapshot).
    pub fn is_held_exclusive(&self) -> bool {
        self.raw.word.is_exclusive()
    }

    /// How many shared holds the token has now (a snapshot).
    pub fn shared_holders(&self) -> usize {
        self.raw.word.shared_count()
    }

    pub(crate) fn raw(&self) -> &RawToken {
        &self.raw
    }
}

impl<T: ?Sized> fmt::Debug for Token<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("name", &self.raw.name)
            .field("exclusive", &self.raw.word.is_exclusive())
            .field("shared", &self.raw.word.shared_count())
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
    owner: usize,
    _not_send: PhantomData<*mut ()>,
}

/// A shared hold on a token (`lwkt_gettoken_shared`).
#[must_use = "the token is released when the guard is dropped"]
pub struct SharedTokenGuard<'a, T: ?Sized> {
    token: &'a Token<T>,
    slot: u8,
    owner: usize,
    _not_send: PhantomData<*mut ()>,
}

impl<T: ?Sized> fmt::Debug for TokenGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenGuard")
            .field("token", &self.token.raw.name)
            .finish()
    }
}

impl<T: ?Sized> fmt::Debug for SharedTokenGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SharedTokenGuard")
            .field("token", &self.token.raw.name)
            .finish()
    }
}

#[cold]
#[track_caller]
fn wrong_thread(name: &str) -> ! {
    panic!("lwkt: a guard of token '{name}' was used by a thread other than the one holding it")
}

impl<'a, T: ?Sized> TokenGuard<'a, T> {
    /// Mutable access to the data, for as long as `td` is borrowed: the
    /// borrow ends before the thread can switch away.
    ///
    /// # Panics
    /// If the data is already borrowed through another guard of the same
    /// token held recursively by this thread (like `RefCell`), or if `td`
    /// is not the thread that took the guard.
    #[track_caller]
    pub fn get<'b>(&'b mut self, td: &'b CurThread) -> TokenMut<'b, T> {
        if td.identity() != self.owner {
            wrong_thread(self.token.raw.name);
        }
        let raw = &self.token.raw;
        // When this guard is the thread's only token reference, no other
        // guard exists to alias through, and none can be made while the
        // borrow lives (that takes `&mut CurThread`): skip the flag.
        let tracked = td.td_ptr().td().tok_used.get() != 1 << self.slot;
        if tracked {
            // We hold the token exclusively: only this thread touches `borrow`.
            let b = raw.borrow.load(Ordering::Relaxed);
            if b != 0 {
                already_borrowed(raw.name, b > 0);
            }
            raw.borrow.store(-1, Ordering::Relaxed);
        }
        TokenMut {
            // SAFETY: the thread holds the token exclusively (it is running
            // and the guard is alive), and either this guard is its only
            // reference or the borrow flag shows no other reference to the
            // data exists.
            data: unsafe { &mut *self.token.data.get() },
            raw: if tracked { Some(raw) } else { None },
            _td: PhantomData,
        }
    }

    /// The token this guard holds.
    pub fn token(&self) -> &'a Token<T> {
        self.token
    }
}

#[cold]
#[track_caller]
fn already_borrowed(name: &str, shared: bool) -> ! {
    if shared {
        panic!(
            "lwkt: token '{name}': data already borrowed shared through another guard of this \
             thread (recursive acquisition); drop that borrow first"
        )
    } else {
        panic!(
            "lwkt: token '{name}': data already borrowed mutably through another guard of this \
             thread (recursive acquisition); drop that borrow first"
        )
    }
}

impl<'a, T: ?Sized + Sync> SharedTokenGuard<'a, T> {
    /// Shared access to the data, for as long as `td` is borrowed.
    ///
    /// # Panics
    /// If this thread also holds the token exclusively and has the data
    /// borrowed mutably through that guard, or if `td` is not the thread
    /// that took the guard.
    #[track_caller]
    pub fn get<'b>(&'b self, td: &'b CurThread) -> TokenRef<'b, T> {
        if td.identity() != self.owner {
            wrong_thread(self.token.raw.name);
        }
        let raw = &self.token.raw;
        // Only when we also hold it exclusively can a mutable borrow exist;
        // then only this thread touches `borrow`.
        let tracked = raw.word.is_held_by(self.owner);
        if tracked {
            let b = raw.borrow.load(Ordering::Relaxed);
            if b < 0 {
                already_borrowed(raw.name, false);
            }
            raw.borrow.store(b + 1, Ordering::Relaxed);
        }
        TokenRef {
            // SAFETY: the thread holds the token (shared, or exclusive with
            // no mutable borrow outstanding); T: Sync allows several
            // threads to read at once.
            data: unsafe { &*self.token.data.get() },
            raw,
            tracked,
            _td: PhantomData,
        }
    }
}

impl<'a, T: ?Sized> SharedTokenGuard<'a, T> {
    /// The token this guard holds.
    pub fn token(&self) -> &'a Token<T> {
        self.token
    }
}

impl<T: ?Sized> Drop for TokenGuard<'_, T> {
    fn drop(&mut self) {
        release_slot(self.slot, self.owner);
    }
}

impl<T: ?Sized> Drop for SharedTokenGuard<'_, T> {
    fn drop(&mut self) {
        release_slot(self.slot, self.owner);
    }
}

#[inline]
fn release_slot(slot: u8, owner: usize) {
    // Fast path: the running thread drops its only token reference, held
    // primary (not pending, not nested). Nothing else to fix up.
    if let Some(cpu) = crate::sched::cpu::current_cpu() {
        if let Some(t) = cpu.current() {
            if t.as_ptr() as usize == owner {
                let td = t.td();
                let used = td.tok_used.get();
                if used == 1 << slot {
                    let r = td.toks[slot as usize].get();
                    // SAFETY: token references point at tokens that
                    // outlive the guard that made them.
                    let tok = unsafe { &*r.tok };
                    match r.mode {
                        mode::EXCL => {
                            tok.word.release_exclusive();
                            td.tok_used.set(0);
                            return;
                        }
                        mode::SHARED => {
                            tok.word.release_shared();
                            td.tok_used.set(0);
                            return;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    release_slot_slow(slot, owner)
}

#[cold]
fn release_slot_slow(slot: u8, owner: usize) {
    let cpu =
        crate::sched::cpu::current_cpu().expect("lwkt: token guard dropped outside the runtime");
    let t = cpu
        .current()
        .expect("lwkt: token guard dropped outside a thread");
    if t.as_ptr() as usize != owner {
        if std::thread::panicking() {
            // Already unwinding (after a misuse panic): leave the reference;
            // its owner releases it when it finishes.
            return;
        }
        panic!("lwkt: a token guard was dropped by a thread other than its owner");
    }
    cpu.token_release_slot(t, slot as usize);
}

/// A mutable borrow of token data; see [`TokenGuard::get`].
pub struct TokenMut<'b, T: ?Sized> {
    data: &'b mut T,
    /// The token whose borrow flag this borrow set, if it set it.
    raw: Option<&'b RawToken>,
    _td: PhantomData<&'b CurThread>,
}

impl<T: ?Sized> Deref for TokenMut<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data
    }
}

impl<T: ?Sized> DerefMut for TokenMut<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.data
    }
}

impl<T: ?Sized> Drop for TokenMut<'_, T> {
    fn drop(&mut self) {
        if let Some(raw) = self.raw {
            raw.borrow.store(0, Ordering::Relaxed);
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for TokenMut<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

/// A shared borrow of token data; see [`SharedTokenGuard::get`].
pub struct TokenRef<'b, T: ?Sized> {
    data: &'b T,
    raw: &'b RawToken,
    tracked: bool,
    _td: PhantomData<&'b CurThread>,
}

impl<T: ?Sized> Deref for TokenRef<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.data
    }
}

impl<T: ?Sized> Drop for TokenRef<'_, T> {
    fn drop(&mut self) {
        if self.tracked {
            let b = self.raw.borrow.load(Ordering::Relaxed);
            self.raw.borrow.store(b - 1, Ordering::Relaxed);
        }
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for TokenRef<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// -------------------------------------------------------------------
// Acquisition (thread side)
// -------------------------------------------------------------------

/// How a tokref holds its token.
pub(crate) mod mode {
    /// Primary exclusive hold: the word counts it.
    pub(crate) const EXCL: u8 = 1;
    /// Primary shared hold: the word counts it.
    pub(crate) const SHARED: u8 = 2;
    /// Nested exclusive use under our own exclusive hold.
    pub(crate) const REC_EXCL: u8 = 3;
    /// Nested shared use under our own exclusive hold.
    pub(crate) const REC_SHARED: u8 = 4;
    /// Flag: a primary the thread does not hold right now (released at
    /// switch-out, or still to be acquired); the scheduler acquires it.
    pub(crate) const PENDING: u8 = 0x80;
}

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
        let slot = match self.token_fast(tok.raw(), true) {
            Some(s) => s,
            None => self
                .token_acquire(tok.raw(), true, true)
                .expect("blocking acquisition"),
        };
        TokenGuard {
            token: tok,
            slot,
            owner: self.identity(),
            _not_send: PhantomData,
        }
    }

    /// Takes `tok` shared, blocking while it is held exclusively by
    /// another thread. A blocked exclusive requester has priority over new
    /// shared requesters that hold no other token.
    #[doc(alias = "lwkt_gettoken_shared")]
    #[track_caller]
    #[inline]
    pub fn get_token_shared<'a, T: ?Sized + Send + Sync>(
        &mut self,
        tok: &'a Token<T>,
    ) -> SharedTokenGuard<'a, T> {
        let slot = match self.token_fast(tok.raw(), false) {
            Some(s) => s,
            None => self
                .token_acquire(tok.raw(), false, true)
                .expect("blocking acquisition"),
        };
        SharedTokenGuard {
            token: tok,
            slot,
            owner: self.identity(),
            _not_send: PhantomData,
        }
    }

    /// Takes `tok` exclusively if that is possible without blocking.
    #[doc(alias = "lwkt_trytoken")]
    #[track_caller]
    pub fn try_token<'a, T: ?Sized + Send>(
        &mut self,
        tok: &'a Token<T>,
    ) -> Option<TokenGuard<'a, T>> {
        let slot = self.token_acquire(tok.raw(), true, false)?;
        Some(TokenGuard {
            token: tok,
            slot,
            owner: self.identity(),
            _not_send: PhantomData,
        })
    }

    /// Takes `tok` shared if that is possible without blocking.
    #[track_caller]
    pub fn try_token_shared<'a, T: ?Sized + Send + Sync>(
        &mut self,
        tok: &'a Token<T>,
    ) -> Option<SharedTokenGuard<'a, T>> {
        let slot = self.token_acquire(tok.raw(), false, false)?;
        Some(SharedTokenGuard {
            token: tok,
            slot,
            owner: self.identity(),
            _not_send: PhantomData,
        })
    }

    /// How many references to `tok` this thread holds (`lwkt_cnttoken`).
    #[doc(alias = "lwkt_cnttoken")]
    pub fn token_count<T: ?Sized>(&self, tok: &Token<T>) -> usize {
        let td = self.td_ptr().td();
        let raw: *const RawToken = tok.raw();
        let mut used = td.tok_used.get();
        let mut n = 0;
        while used != 0 {
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            if td.toks[i].get().tok == raw {
                n += 1;
            }
        }
        n
    }

    /// How many token references this thread holds in all.
    pub fn tokens_held(&self) -> usize {
        self.td_ptr().td().tok_used.get().count_ones() as usize
    }
}

// -------------------------------------------------------------------
// Pool tokens
// -------------------------------------------------------------------

/// Pool size: a prime, as the seed's 16661, so address strides spread.
pub const POOL_TOKENS: usize = 16661;

#[allow(clippy::declare_interior_mutable_const)]
const POOL_INIT: CachePadded<Token<()>> = CachePadded::new(Token::new("pool", ()));
static POOL: [CachePadded<Token<()>>; POOL_TOKENS] = [POOL_INIT; POOL_TOKENS];

/// The pool token for an address (`lwkt_token_pool_lookup`): any object
/// can be serialized without a token of its own. Different objects may
/// share one pool token, so take pool tokens exclusively (a shared hold on
/// one and an exclusive request on another object that hashes to the same
/// token would livelock, as the seed warns).
#[doc(alias = "lwkt_token_pool_lookup")]
pub fn pool_token<O: ?Sized>(obj: &O) -> &'static Token<()> {
    let a = obj as *const O as *const () as usize;
    // Modulo a prime: objects at any stride that is not a multiple of the
    // prime land in distinct slots (the seed's scheme).
    &POOL[(a >> 3) % POOL_TOKENS]
}
