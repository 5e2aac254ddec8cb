//! LWP-specific data (`lwp_specific_key_create`, `lwp_setspecific`,
//! `lwp_getspecific`): a [`Key<T>`] names one value per LWP, with an
//! optional destructor that runs when the LWP exits.
//!
//! Values set during destructors: none can be. A destructor receives only
//! its value (no [`CurThread`]), and every `Key` method needs the LWP's
//! `CurThread`, so the type system rules it out; one round of destructors
//! at exit sees every value (POSIX needs up to
//! `PTHREAD_DESTRUCTOR_ITERATIONS` rounds because its destructors can call
//! `pthread_setspecific`).

use std::any::Any;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::{current_ctx, Lwp};
use crate::thread::CurThread;

/// Key ids are process-wide and never reused (0 means "not yet given").
static NEXT_KEY: AtomicUsize = AtomicUsize::new(1);

/// A key for one value of type `T` per LWP. Usually a `static`:
///
/// ```
/// static CONN: lwkt::lwp::Key<String> = lwkt::lwp::Key::new();
/// ```
///
/// Values live in the LWP's own storage; only the LWP itself reads or
/// changes them (every method takes its [`CurThread`]). A plain thread
/// (not an LWP) has no storage: `get` finds nothing and `set` panics.
pub struct Key<T: Send + 'static> {
    id: AtomicUsize,
    dtor: Option<fn(T)>,
    _t: PhantomData<fn() -> T>,
}

/// One stored value, with the key's destructor.
pub(crate) trait Slot: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    fn destroy(self: Box<Self>);
}

struct Held<T: Send + 'static> {
    v: Option<T>,
    dtor: Option<fn(T)>,
}

impl<T: Send + 'static> Slot for Held<T> {
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }
    fn destroy(mut self: Box<Self>) {
        if let (Some(v), Some(d)) = (self.v.take(), self.dtor) {
            d(v);
        }
    }
}

impl<T: Send + 'static> Default for Key<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Send + 'static> Key<T> {
    /// A key whose values are simply dropped at exit
    /// (`lwp_specific_key_create` with no destructor).
    #[doc(alias = "lwp_specific_key_create")]
    pub const fn new() -> Key<T> {
        Key {
            id: AtomicUsize::new(0),
            dtor: None,
            _t: PhantomData,
        }
    }

    /// A key whose values are passed to `dtor` when their LWP exits.
    pub const fn with_destructor(dtor: fn(T)) -> Key<T> {
        Key {
            id: AtomicUsize::new(0),
            dtor: Some(dtor),
            _t: PhantomData,
        }
    }

    fn id(&self) -> usize {
        let id = self.id.load(Ordering::Acquire);
        if id != 0 {
            return id;
        }
        let new = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
        match self
            .id
            .compare_exchange(0, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => new,
            Err(won) => won,
        }
    }

    fn ctx(td: &CurThread) -> Option<&Lwp> {
        current_ctx(td)
    }

    /// Sets this LWP's value (`lwp_setspecific`), returning the old one.
    ///
    /// # Panics
    /// When the calling thread is not an LWP.
    #[doc(alias = "lwp_setspecific")]
    pub fn set(&self, td: &mut CurThread, v: T) -> Option<T> {
        let id = self.id();
        let ctx = Self::ctx(td).expect("lwkt: Key::set called from a thread that is not an LWP");
        let slot: Box<dyn Slot> = Box::new(Held {
            v: Some(v),
            dtor: self.dtor,
        });
        let old = ctx.specific_replace(id, Some(slot));
        old.and_then(|mut s| {
            s.as_any()
                .downcast_mut::<Held<T>>()
                .and_then(|h| h.v.take())
        })
    }

    /// Runs `f` with this LWP's value, if any (`lwp_getspecific`).
    #[doc(alias = "lwp_getspecific")]
    pub fn with<R>(&self, td: &mut CurThread, f: impl FnOnce(Option<&mut T>) -> R) -> R {
        let id = self.id();
        match Self::ctx(td) {
            Some(ctx) => ctx.specific_with(id, |s| {
                f(s.and_then(|s| s.as_any().downcast_mut::<Held<T>>())
                    .and_then(|h| h.v.as_mut()))
            }),
            None => f(None),
        }
    }

    /// A copy of this LWP's value, if any.
    pub fn get(&self, td: &mut CurThread) -> Option<T>
    where
        T: Clone,
    {
        self.with(td, |v| v.cloned())
    }

    /// Removes this LWP's value and returns it; its destructor does not
    /// run.
    pub fn delete(&self, td: &mut CurThread) -> Option<T> {
        let id = self.id();
        let ctx = Self::ctx(td)?;
        ctx.specific_replace(id, None).and_then(|mut s| {
            s.as_any()
                .downcast_mut::<Held<T>>()
                .and_then(|h| h.v.take())
        })
    }
}
