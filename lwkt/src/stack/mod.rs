//! Guarded, lazily committed thread stacks.
//!
//! Each stack is one anonymous private mapping: a guard page at the low end
//! (stacks grow down) and the usable region above it, reserved with
//! `MAP_NORESERVE` so untouched pages cost neither memory nor commit
//! charge.
//!
//! The guard is a kernel guard marker (`MADV_GUARD_INSTALL`, Linux 6.13+)
//! where the kernel has them: the page faults on access like a `PROT_NONE`
//! one, but the mapping stays whole, so a stack costs at most one entry
//! against `vm.max_map_count` (and neighbouring stacks usually merge into
//! one). Elsewhere the guard is `mprotect(PROT_NONE)`, which splits the
//! mapping in two: two entries per stack. When the limit is reached the
//! error says so instead of aborting.
//!
//! ```text
//!   high addresses   +------------------+ <- base (initial stack pointer)
//!                    |  usable stack    |    RW, committed on first touch
//!                    |  (grows down)    |
//!                    +------------------+ <- limit + page
//!                    |  guard page      |    PROT_NONE: overflow faults here
//!   low addresses    +------------------+ <- limit (mapping start)
//! ```

use std::io;
use std::num::NonZeroUsize;
use std::ptr;

use crate::error::{Error, StackAllocCause};
use crate::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

#[cfg(not(loom))]
pub(crate) mod overflow;

/// The smallest stack a thread may ask for. Catching a panic and formatting
/// its message needs a few KiB; DragonFly's kernel threads use 16 KiB.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The default thread stack size (64 KiB), committed lazily.
pub const DEFAULT_STACK_SIZE: usize = 64 * 1024;

/// The largest stack a thread may ask for (1 GiB). Stacks are reserved
/// with `MAP_NORESERVE`, so a large one costs address space, not memory;
/// the cap keeps a typo from reserving terabytes, and keeps every size
/// arithmetic (rounding to pages, adding the guard) far from overflow.
pub const MAX_STACK_SIZE: usize = 1 << 30;

/// Checks a requested stack size against [`MIN_STACK_SIZE`] and
/// [`MAX_STACK_SIZE`] and rounds it up to whole pages.
pub(crate) fn validate_stack_size(requested: usize) -> Result<usize, Error> {
    if requested < MIN_STACK_SIZE {
        return Err(Error::StackTooSmall {
            requested,
            min: MIN_STACK_SIZE,
        });
    }
    if requested > MAX_STACK_SIZE {
        return Err(Error::StackTooLarge {
            requested,
            max: MAX_STACK_SIZE,
        });
    }
    // Cannot overflow: requested <= 1 GiB.
    Ok(round_stack_size(requested))
}

/// The page size, asked of the OS once (sysconf costs ~150 instructions,
/// too much for every spawn).
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    let p = PAGE.load(Ordering::Relaxed);
    if p != 0 {
        return p;
    }
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let p = if p <= 0 { 4096 } else { p as usize };
    PAGE.store(p, Ordering::Relaxed);
    p
}

/// Rounds a stack size (at most [`MAX_STACK_SIZE`]) up to whole pages.
fn round_stack_size(size: usize) -> usize {
    debug_assert!(size <= MAX_STACK_SIZE);
    let page = page_size();
    (size + page - 1) & !(page - 1)
}

/// A stack's colour: its top starts a little below the end of its mapping,
/// by one of 8 offsets (0 to 448 bytes in steps of a cache line), chosen by
/// hashing the mapping's address. Equal-sized stacks would otherwise put
/// two threads' frames at addresses equal modulo 4 KiB, which the CPU's
/// memory disambiguation mistakes for overlaps (4K aliasing) every time the
/// two alternate: measured as a fifth of a same-CPU yield. The offset stays
/// within the top page, so a sleeping thread touches no more pages than
/// before; the usable stack is at most 448 bytes short of the size asked
/// for. Derived, not stored, to keep a `Stack` three words.
#[inline]
fn color_of(start: usize) -> usize {
    (((start as u64 >> 12).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 61) as usize) * 64
}

/// An owned, guarded stack. Freed (unmapped) on drop.
pub(crate) struct Stack {
    /// Lowest address of the mapping (the guard page).
    start: NonZeroUsize,
    /// Length of the mapping, guard included.
    len: usize,
    /// Tells valgrind this range is a stack (a no-op instruction sequence
    /// elsewhere), so memcheck runs of the tests make sense.
    _valgrind: corosensei::stack::valgrind::ValgrindStackRegistration,
}

// SAFETY: a Stack is plain memory owned by value; nothing in it is tied to
// the OS thread that mapped it.
unsafe impl Send for Stack {}

impl Stack {
    /// Maps a stack with `size` usable bytes (validated and rounded up to
    /// pages by [`validate_stack_size`]) plus a guard page.
    pub(crate) fn new(size: usize) -> Result<Stack, Error> {
        let page = page_size();
        let usable = validate_stack_size(size)?;
        let len = usable + page;
        let flags =
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | map_stack_flag();
        // SAFETY: an anonymous mapping at an address of the kernel's choosing
        // aliases nothing; the result is checked before use.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let os = io::Error::last_os_error();
            return Err(classify(size, os));
        }
        let stack = Stack {
            start: NonZeroUsize::new(p as usize).expect("mmap returned address 0"),
            len,
            _valgrind: corosensei::stack::valgrind::ValgrindStackRegistration::new(
                p as *mut u8,
                len,
            ),
        };
        if let Err(os) = install_guard(p, page) {
            drop(stack); // unmaps
            return Err(classify(size, os));
        }
        Ok(stack)
    }

    /// Usable bytes (guard page excluded).
    pub(crate) fn usable_size(&self) -> usize {
        self.len - page_size()
    }

    /// The guard page's address range, `[start, end)`: a fault there is
    /// this stack overflowing.
    pub(crate) fn guard_range(&self) -> (usize, usize) {
        (self.start.get(), self.start.get() + page_size())
    }
}

#[cfg(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "openbsd"
))]
fn map_stack_flag() -> libc::c_int {
    libc::MAP_STACK
}

#[cfg(not(any(
    target_os = "linux",
    target_os = "android",
    target_os = "freebsd",
    target_os = "openbsd"
)))]
fn map_stack_flag() -> libc::c_int {
    0
}

/// `MADV_GUARD_INSTALL` from the kernel's `mman-common.h` (not yet in the
/// libc crate).
#[cfg(any(target_os = "linux", target_os = "android"))]
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// Whether the kernel takes guard markers: 0 not yet known, 1 yes, 2 no.
static GUARD_MARKERS: AtomicU8 = AtomicU8::new(0);

/// How this process makes the guard page under each thread stack: a
/// kernel guard marker (one mapping per stack) or `mprotect` (two). Decided
/// when the first stack is mapped.
pub fn stack_guard_kind() -> &'static str {
    match GUARD_MARKERS.load(Ordering::Relaxed) {
        1 => "guard marker (MADV_GUARD_INSTALL), one mapping per stack",
        2 => "mprotect(PROT_NONE), two mappings per stack",
        _ => "not decided yet (no stack mapped)",
    }
}

/// Makes the page at `p` (the low end of a fresh stack mapping) fault on
/// any access: a guard marker where the kernel has them, otherwise
/// `PROT_NONE`.
fn install_guard(p: *mut libc::c_void, page: usize) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    if GUARD_MARKERS.load(Ordering::Relaxed) != 2 {
        // SAFETY: the page lies inside the private anonymous mapping just
        // made; nothing refers to it. A kernel without guard markers
        // rejects the advice with EINVAL and changes nothing.
        let rc = unsafe { libc::madvise(p, page, MADV_GUARD_INSTALL) };
        if rc == 0 {
            // Written once, not on every stack: CPUs mapping stacks at
            // once would otherwise bounce this line between them.
            if GUARD_MARKERS.load(Ordering::Relaxed) == 0 {
                GUARD_MARKERS.store(1, Ordering::Relaxed);
            }
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
        GUARD_MARKERS.store(2, Ordering::Relaxed);
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    GUARD_MARKERS.store(2, Ordering::Relaxed);
    // SAFETY: as above; the page becomes inaccessible, which is the point.
    let rc = unsafe { libc::mprotect(p, page, libc::PROT_NONE) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Names the cause of a failed mapping: a process that is near the kernel's
/// limit on mappings gets `ENOMEM` too, and that is worth telling apart.
fn classify(size: usize, os: io::Error) -> Error {
    let cause = if os.raw_os_error() == Some(libc::ENOMEM) {
        match (max_map_count(), current_map_count()) {
            (Some(limit), Some(cur)) if cur + 8 >= limit => {
                StackAllocCause::MapCountLimit { limit }
            }
            _ => StackAllocCause::Memory,
        }
    } else {
        StackAllocCause::Memory
    };
    Error::StackAlloc { size, cause, os }
}

/// The kernel's `vm.max_map_count`, where the OS has one.
pub fn max_map_count() -> Option<usize> {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// How many mappings this process has now (Linux), by counting
/// `/proc/self/maps`.
pub fn current_map_count() -> Option<usize> {
    let s = std::fs::read("/proc/self/maps").ok()?;
    Some(s.iter().filter(|&&b| b == b'\n').count())
}

impl Drop for Stack {
    fn drop(&mut self) {
        // SAFETY: the range is exactly the mapping this Stack owns, and no
        // coroutine runs on it any more (corosensei hands a stack back only
        // once its coroutine has finished or been unwound).
        let rc = unsafe { libc::munmap(self.start.get() as *mut libc::c_void, self.len) };
        debug_assert_eq!(rc, 0, "munmap of a thread stack failed");
    }
}

// SAFETY: `base` and `limit` delimit one mapping owned by this value that
// stays mapped until drop; `base` is page aligned and so meets
// corosensei's STACK_ALIGNMENT; the guard page sits at `limit`.
unsafe impl corosensei::stack::Stack for Stack {
    #[inline]
    fn base(&self) -> corosensei::stack::StackPointer {
        NonZeroUsize::new(self.start.get() + self.len - color_of(self.start.get()))
            .expect("stack base overflow")
    }

    #[inline]
    fn limit(&self) -> corosensei::stack::StackPointer {
        self.start
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smoke() {
        let s = Stack::new(DEFAULT_STACK_SIZE).unwrap();
        assert_eq!(s.usable_size(), DEFAULT_STACK_SIZE);
        let base = corosensei::stack::Stack::base(&s).get();
        // The top page is writable.
        // SAFETY: the byte lies in the usable region just below base.
        unsafe { ptr::write_volatile((base - 1) as *mut u8, 7) };
    }

    #[test]
    fn absurd_size_is_an_error_not_an_abort() {
        for size in [1 << 62, usize::MAX, usize::MAX - 8192, MAX_STACK_SIZE + 1] {
            let e = Stack::new(size)
                .err()
                .expect("a stack above the maximum cannot be mapped");
            assert!(matches!(e, Error::StackTooLarge { .. }), "{e}");
            assert!(e.to_string().contains("above the maximum"), "{e}");
        }
        let e = Stack::new(MIN_STACK_SIZE - 1).err().unwrap();
        assert!(matches!(e, Error::StackTooSmall { .. }), "{e}");
    }
}
