//! Stack-overflow reports for lwkt threads.
//!
//! An lwkt thread runs on its own guarded stack (one mapping, guard page at
//! the low end). Deep recursion runs into the guard page and the kernel
//! raises `SIGSEGV` (`SIGBUS` on some systems). Rust's std handler only
//! knows the guard pages of OS threads, so without help the process dies
//! silently with signal 11. This module installs a `SIGSEGV`/`SIGBUS`
//! handler that asks a [`Lookup`] whether the fault address lies in the
//! guard of the lwkt thread running on the faulting OS thread; if so it
//! prints, like std does for OS threads,
//!
//! ```text
//! lwkt thread '<name>' (td <tid>) on CPU <cpu> has overflowed its stack
//! fatal runtime error: stack overflow, aborting
//! ```
//!
//! and calls `abort()`.
//!
//! # The alternate signal stack
//!
//! The faulting stack has no room left, so the handler runs on the OS
//! thread's alternate signal stack (`SA_ONSTACK`). std gives each thread it
//! starts one of `max(SIGSTKSZ, AT_MINSIGSTKSZ)` bytes; [`ensure_altstack`]
//! keeps an alternate stack that leaves at least `HANDLER_RESERVE` (8 KiB)
//! above the kernel's signal frame (and is at least `SIGSTKSZ`), and
//! otherwise maps a guarded one of `ALTSTACK_SIZE` (64 KiB), freed when
//! the OS thread exits.
//!
//! # Async-signal safety
//!
//! The handler only loads atomics, calls the lookup (which by contract
//! only reads thread-local and plain memory), formats the report by hand
//! into a fixed buffer on its own stack (no allocation, no locks, no
//! `core::fmt`), and calls `write(2)`, `sigaction(2)`, `raise(3)` and
//! `abort(3)`, all async-signal-safe in POSIX. It cannot panic: every
//! buffer access is bounds-clamped. The lookup is asked about every fault
//! the kernel raises in the process (`si_code > 0`), on the faulting OS
//! thread, lwkt or not; it must not panic, allocate or lock.
//!
//! A fault while the handler runs (in the lookup, or past the alternate
//! stack's own guard page) finds the signal blocked, and the kernel kills
//! the process with it, without a report. Two CPUs overflowing at once
//! each print their report with a single `write` (unless stderr takes it
//! in pieces) and the first `abort` ends the process.
//!
//! # Chaining
//!
//! [`install`] saves the previous `SIGSEGV` and `SIGBUS` actions in atomics
//! before installing its own. A fault the lookup does not claim goes to the
//! previous action: an `SA_SIGINFO` handler gets the same
//! `(signum, info, ctx)`, a plain handler gets `signum`, and for `SIG_DFL`
//! or `SIG_IGN` the default action is restored and the handler returns, so
//! the faulting instruction runs again and the default action kills the
//! process (a signal sent with `kill` is raised again instead). In a Rust
//! program the previous action is std's own handler, which reports overflows
//! of OS-thread stacks and otherwise does the same restore-and-return.
//! The previous handler runs with this handler's signal mask and on the
//! alternate stack, whatever its own `sa_mask` and flags asked for.

/// What the handler reports about the lwkt thread whose stack overflowed.
pub(crate) struct OverflowInfo {
    /// The thread's name, truncated to 64 bytes; may be empty (unnamed).
    pub(crate) name: [u8; 64],
    /// How many bytes of `name` are used (clamped to 64 when printed).
    pub(crate) name_len: usize,
    /// The thread's id (printed in decimal).
    pub(crate) tid: u64,
    /// The CPU (scheduler index) it ran on.
    pub(crate) cpu: usize,
}

/// Called from the signal handler, on the faulting OS thread, with the fault
/// address. Returns the running lwkt thread's details if `addr` lies in its
/// stack's guard page (or within its guard region). Must be async-signal-safe:
/// it only reads thread-local and plain memory.
pub(crate) type Lookup = fn(addr: usize) -> Option<OverflowInfo>;

/// Installs the SIGSEGV and SIGBUS handler process-wide, once (later calls do
/// nothing; the first lookup wins). Saves the previous actions to chain to.
pub(crate) fn install(lookup: Lookup) {
    #[cfg(unix)]
    imp::install(lookup);
    #[cfg(not(unix))]
    let _ = lookup;
}

/// Makes sure the calling OS thread has an alternate signal stack big enough
/// for the handler (std gives its threads one; install one if the thread has
/// none or too small). Called at the start of every CPU OS thread.
pub(crate) fn ensure_altstack() {
    #[cfg(unix)]
    imp::ensure_altstack();
}

/// Bytes the handler may use on the alternate stack above the kernel's
/// signal frame: this handler and the lookup need well under 1 KiB, and
/// std's handler, when chained to, returns without formatting for a fault
/// that is not on one of its own guard pages. An alternate stack std gave
/// the thread (`max(SIGSTKSZ, AT_MINSIGSTKSZ)`, 8 KiB on x86_64 with
/// AVX-512) is then kept, which saves a mapping and three system calls per
/// CPU thread; a smaller one is replaced.
#[cfg(unix)]
const HANDLER_RESERVE: usize = 4 * 1024;

/// Size of the alternate stacks this module maps (at least; more if the
/// kernel's signal frame asks for it). Lazily committed: only the pages a
/// handler touches cost memory.
#[cfg(unix)]
const ALTSTACK_SIZE: usize = 64 * 1024;

/// Longest report: the fixed text (about 100 bytes), a 64-byte name and
/// two 20-digit numbers.
#[cfg(unix)]
const REPORT_MAX: usize = 256;

/// A fixed-size byte buffer that silently truncates instead of panicking.
#[cfg(unix)]
struct Report {
    buf: [u8; REPORT_MAX],
    len: usize,
}

#[cfg(unix)]
impl Report {
    fn new() -> Report {
        Report {
            buf: [0; REPORT_MAX],
            len: 0,
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        let free = self.buf.get_mut(self.len..).unwrap_or_default();
        let n = free.len().min(bytes.len());
        for (dst, src) in free.iter_mut().zip(bytes) {
            *dst = *src;
        }
        self.len += n;
    }

    fn push_decimal(&mut self, mut v: u64) {
        let mut digits = [0u8; 20]; // u64::MAX has 20 digits
        let mut start = digits.len();
        loop {
            start -= 1;
            digits[start] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(digits.get(start..).unwrap_or_default());
    }

    fn bytes(&self) -> &[u8] {
        self.buf.get(..self.len).unwrap_or_default()
    }
}

/// Formats the report for `info` without allocating.
#[cfg(unix)]
fn format_report(info: &OverflowInfo) -> Report {
    let mut r = Report::new();
    let name = info
        .name
        .get(..info.name_len.min(info.name.len()))
        .unwrap_or_default();
    r.push(b"\nlwkt thread '");
    r.push(if name.is_empty() { b"<unnamed>" } else { name });
    r.push(b"' (td ");
    r.push_decimal(info.tid);
    r.push(b") on CPU ");
    r.push_decimal(info.cpu as u64);
    r.push(b" has overflowed its stack\nfatal runtime error: stack overflow, aborting\n");
    r
}

#[cfg(unix)]
mod imp {
    use crate::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::cell::Cell;
    use std::mem;
    use std::ptr;
    use std::sync::Once;

    use libc::{c_int, c_void, siginfo_t};

    use super::{format_report, Lookup, ALTSTACK_SIZE, HANDLER_RESERVE};

    /// The lookup given to the first `install`, as an address; 0 until then.
    static LOOKUP: AtomicUsize = AtomicUsize::new(0);

    /// A signal's action before `install`, reduced to what chaining needs.
    struct Prev {
        /// `sa_sigaction` (also `SIG_DFL`/`SIG_IGN`).
        handler: AtomicUsize,
        /// Whether `sa_flags` had `SA_SIGINFO`.
        siginfo: AtomicBool,
    }

    static PREV_SEGV: Prev = Prev {
        handler: AtomicUsize::new(libc::SIG_DFL),
        siginfo: AtomicBool::new(false),
    };
    static PREV_BUS: Prev = Prev {
        handler: AtomicUsize::new(libc::SIG_DFL),
        siginfo: AtomicBool::new(false),
    };

    /// An `SA_SIGINFO` handler.
    type SigAction = unsafe extern "C" fn(c_int, *mut siginfo_t, *mut c_void);
    /// A plain handler.
    type SigHandler = unsafe extern "C" fn(c_int);

    pub(super) fn install(lookup: Lookup) {
        static ONCE: Once = Once::new();
        ONCE.call_once(|| {
            LOOKUP.store(lookup as usize, Ordering::Release);
            for (signum, prev) in [(libc::SIGSEGV, &PREV_SEGV), (libc::SIGBUS, &PREV_BUS)] {
                // SAFETY: all-zero bytes are a valid `sigaction` (plain
                // integers, a null-equivalent handler, an empty mask).
                let mut old: libc::sigaction = unsafe { mem::zeroed() };
                // SAFETY: `signum` is a valid signal; a null new action
                // only queries, writing the current one into `old`.
                if unsafe { libc::sigaction(signum, ptr::null(), &mut old) } != 0 {
                    continue;
                }
                // Saved before the handler that reads them is installed.
                // (An action another thread installs between the query
                // and the install below is lost; std has the same window.)
                prev.handler.store(old.sa_sigaction, Ordering::Release);
                prev.siginfo
                    .store(old.sa_flags & libc::SA_SIGINFO != 0, Ordering::Release);

                // SAFETY: as above.
                let mut new: libc::sigaction = unsafe { mem::zeroed() };
                new.sa_sigaction = handler as SigAction as usize;
                new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
                // SAFETY: `new.sa_mask` is a valid, writable sigset_t.
                unsafe { libc::sigemptyset(&mut new.sa_mask) };
                // SAFETY: `new` is fully initialised and names an
                // `SA_SIGINFO` handler with the matching signature, which
                // stays valid for the life of the process.
                unsafe { libc::sigaction(signum, &new, ptr::null_mut()) };
            }
        });
    }

    /// The `SIGSEGV`/`SIGBUS` handler.
    ///
    /// # Safety
    ///
    /// Only the kernel calls it, as an `SA_SIGINFO` handler: `info` and
    /// `ctx` are the signal's.
    unsafe extern "C" fn handler(signum: c_int, info: *mut siginfo_t, ctx: *mut c_void) {
        // Only a fault raised by the kernel (si_code > 0) has a meaningful
        // si_addr; a signal sent with kill/raise (si_code <= 0) carries a
        // pid there instead.
        let fault_addr = if info.is_null() {
            None
        } else {
            // SAFETY: the kernel passes a valid siginfo_t to an SA_SIGINFO
            // handler; for SIGSEGV/SIGBUS with si_code > 0 the fault
            // address member of its union is the one filled in.
            unsafe {
                if (*info).si_code > 0 {
                    Some((*info).si_addr() as usize)
                } else {
                    None
                }
            }
        };
        let lookup = LOOKUP.load(Ordering::Acquire);
        if let Some(addr) = fault_addr.filter(|_| lookup != 0) {
            // SAFETY: a non-zero LOOKUP was stored from a `Lookup` fn
            // pointer by `install`; fn pointers and usize have the same size.
            let lookup = unsafe { mem::transmute::<usize, Lookup>(lookup) };
            if let Some(td) = lookup(addr) {
                let report = format_report(&td);
                write_stderr(report.bytes());
                // SAFETY: abort is async-signal-safe and has no preconditions.
                unsafe { libc::abort() };
            }
        }
        // SAFETY: the arguments are this handler's own, passed on unchanged.
        unsafe { chain(signum, info, ctx, fault_addr.is_some()) };
    }

    /// Hands an unclaimed signal to the action saved by `install`.
    ///
    /// # Safety
    ///
    /// `signum`, `info` and `ctx` are those of a signal being handled now.
    unsafe fn chain(signum: c_int, info: *mut siginfo_t, ctx: *mut c_void, fault: bool) {
        let prev = match signum {
            libc::SIGSEGV => &PREV_SEGV,
            libc::SIGBUS => &PREV_BUS,
            _ => return,
        };
        let h = prev.handler.load(Ordering::Acquire);
        if h == libc::SIG_DFL || h == libc::SIG_IGN {
            // SAFETY: all-zero bytes are a valid `sigaction` whose handler
            // is SIG_DFL (0) and whose mask is empty.
            let mut dfl: libc::sigaction = unsafe { mem::zeroed() };
            dfl.sa_sigaction = libc::SIG_DFL;
            // SAFETY: `dfl` is a valid action for a valid signal;
            // sigaction is async-signal-safe.
            unsafe { libc::sigaction(signum, &dfl, ptr::null_mut()) };
            if !fault {
                // A sent signal does not come back by itself: raise it
                // again; it stays blocked until this handler returns, then
                // the default action applies. SAFETY: raise is
                // async-signal-safe and has no preconditions.
                unsafe { libc::raise(signum) };
            }
            // A fault: returning re-executes the faulting instruction,
            // which now gets the default action.
        } else if prev.siginfo.load(Ordering::Acquire) {
            // SAFETY: `h` was the sa_sigaction of an action with
            // SA_SIGINFO, so it is a function with that signature, and it
            // is handed exactly the arguments the kernel gave us.
            unsafe {
                let f = mem::transmute::<usize, SigAction>(h);
                f(signum, info, ctx);
            }
        } else {
            // SAFETY: `h` was the sa_handler of an action without
            // SA_SIGINFO and is neither SIG_DFL nor SIG_IGN, so it is a
            // plain handler taking the signal number.
            unsafe {
                let f = mem::transmute::<usize, SigHandler>(h);
                f(signum);
            }
        }
    }

    /// Writes all of `bytes` to file descriptor 2 with write(2) only.
    fn write_stderr(mut bytes: &[u8]) {
        while !bytes.is_empty() {
            // SAFETY: `bytes` is valid for reads of its length; write(2) is
            // async-signal-safe.
            let n = unsafe { libc::write(2, bytes.as_ptr().cast(), bytes.len()) };
            if n > 0 {
                bytes = bytes.get(n as usize..).unwrap_or_default();
            } else if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            } else {
                return;
            }
        }
    }

    /// The page size (no caching: called once per CPU thread at most).
    fn page_size() -> usize {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        if p <= 0 {
            4096
        } else {
            p as usize
        }
    }

    /// The size of the signal frame the kernel pushes, where it says
    /// (Linux: `AT_MINSIGSTKSZ`, which grows with AVX-512, AMX, SVE state).
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn signal_frame_size() -> usize {
        // SAFETY: getauxval has no preconditions; it returns 0 for an
        // entry the kernel does not provide.
        unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) as usize }
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn signal_frame_size() -> usize {
        0
    }

    /// The smallest alternate stack `ensure_altstack` accepts.
    pub(super) fn min_altstack_size() -> usize {
        libc::SIGSTKSZ.max(signal_frame_size() + HANDLER_RESERVE)
    }

    #[cfg(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "openbsd"
    ))]
    const MAP_STACK: c_int = libc::MAP_STACK;
    #[cfg(not(any(
        target_os = "linux",
        target_os = "android",
        target_os = "freebsd",
        target_os = "openbsd"
    )))]
    const MAP_STACK: c_int = 0;

    /// An alternate signal stack this module mapped: a guard page, then
    /// `size` usable bytes. Unmapped on drop (disabled first if it is still
    /// the thread's alternate stack).
    pub(super) struct AltStack {
        /// Start of the mapping (the guard page).
        map: *mut c_void,
        /// Length of the mapping, guard included.
        map_len: usize,
        /// Lowest usable address (`ss_sp`).
        pub(super) sp: *mut c_void,
        /// Usable bytes (`ss_size`).
        pub(super) size: usize,
    }

    impl AltStack {
        fn map(size: usize) -> Option<AltStack> {
            let page = page_size();
            let size = size.checked_add(page - 1)? & !(page - 1);
            let map_len = size.checked_add(page)?;
            // SAFETY: an anonymous mapping at an address of the kernel's
            // choosing aliases nothing; the result is checked.
            let map = unsafe {
                libc::mmap(
                    ptr::null_mut(),
                    map_len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE | libc::MAP_ANON | MAP_STACK,
                    -1,
                    0,
                )
            };
            if map == libc::MAP_FAILED {
                return None;
            }
            let alt = AltStack {
                map,
                map_len,
                sp: map.cast::<u8>().wrapping_add(page).cast(),
                size,
            };
            // SAFETY: the first page of the mapping just made; nothing
            // refers to it. It becomes the guard against handler overflow.
            if unsafe { libc::mprotect(map, page, libc::PROT_NONE) } != 0 {
                return None; // `alt` unmaps on drop
            }
            Some(alt)
        }
    }

    impl Drop for AltStack {
        fn drop(&mut self) {
            // SAFETY: all-zero bytes are a valid stack_t.
            let mut cur: libc::stack_t = unsafe { mem::zeroed() };
            // SAFETY: a null new stack only queries into `cur`.
            let ok = unsafe { libc::sigaltstack(ptr::null(), &mut cur) } == 0;
            if ok && cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_sp == self.sp {
                if cur.ss_flags & libc::SS_ONSTACK != 0 {
                    return; // running on it (cannot happen here): leak it
                }
                // SAFETY: as above.
                let mut off: libc::stack_t = unsafe { mem::zeroed() };
                off.ss_flags = libc::SS_DISABLE;
                // Some systems check the size even when disabling.
                off.ss_size = self.size;
                // SAFETY: disabling the alternate stack of this thread,
                // which is not running on it.
                unsafe { libc::sigaltstack(&off, ptr::null_mut()) };
            }
            // SAFETY: exactly the mapping this value owns; no signal
            // handler can run on it any more (it is not, or no longer,
            // this thread's alternate stack, and no other thread's).
            unsafe { libc::munmap(self.map, self.map_len) };
        }
    }

    thread_local! {
        /// The alternate stack `ensure_altstack` mapped for this thread.
        static OWN_ALTSTACK: Cell<Option<AltStack>> = const { Cell::new(None) };
    }

    pub(super) fn ensure_altstack() {
        // SAFETY: all-zero bytes are a valid stack_t.
        let mut cur: libc::stack_t = unsafe { mem::zeroed() };
        // SAFETY: a null new stack only queries into `cur`.
        if unsafe { libc::sigaltstack(ptr::null(), &mut cur) } != 0 {
            return;
        }
        if cur.ss_flags & libc::SS_ONSTACK != 0 {
            return; // called from a handler on it: cannot be changed now
        }
        if cur.ss_flags & libc::SS_DISABLE == 0 && cur.ss_size >= min_altstack_size() {
            return;
        }
        let Some(alt) = AltStack::map(ALTSTACK_SIZE.max(min_altstack_size())) else {
            return; // best effort: an overflow then dies without a report
        };
        // SAFETY: as above.
        let mut ss: libc::stack_t = unsafe { mem::zeroed() };
        ss.ss_sp = alt.sp;
        ss.ss_size = alt.size;
        ss.ss_flags = 0;
        // SAFETY: `ss` describes writable memory owned by `alt`, which is
        // kept (below) until this thread exits, and drop disables it
        // before unmapping.
        if unsafe { libc::sigaltstack(&ss, ptr::null_mut()) } != 0 {
            return; // `alt` unmaps on drop
        }
        // A stack mapped earlier by this function and since replaced is
        // dropped (unmapped) here. If this thread's thread-locals are
        // already gone, the closure is dropped unrun and `alt` with it:
        // disabled again and unmapped, rather than leaked.
        let _ = OWN_ALTSTACK.try_with(|own| own.replace(Some(alt)));
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::imp::min_altstack_size;
    use super::*;

    use std::io::Read;
    use std::num::NonZeroUsize;
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, ExitStatus, Stdio};
    use std::ptr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// Set (to the test's name) in a child that must do the crashing part.
    const CHILD_ENV: &str = "LWKT_OVERFLOW_TEST_CHILD";

    /// How long a child may take before it is killed.
    const CHILD_TIMEOUT: Duration = Duration::from_secs(20);

    /// Whether this process is the child for `test`.
    fn is_child(test: &str) -> bool {
        std::env::var(CHILD_ENV).is_ok_and(|v| v == test)
    }

    /// Re-runs this test binary on just `test` (a function in this module)
    /// with CHILD_ENV set; returns its status and stderr.
    fn run_child(test: &str) -> (ExitStatus, String) {
        let module = module_path!();
        // The harness names tests without the crate name.
        let module = module.split_once("::").map_or(module, |(_, rest)| rest);
        let path = format!("{module}::{test}");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", &path, "--nocapture", "--test-threads=1"])
            .env(CHILD_ENV, test)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child test process");
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let out = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = out.read_to_end(&mut v);
            v
        });
        let err = std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = err.read_to_end(&mut v);
            v
        });
        let deadline = Instant::now() + CHILD_TIMEOUT;
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("child for {path} still running after {CHILD_TIMEOUT:?}; killed it");
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let out = String::from_utf8_lossy(&out.join().unwrap()).into_owned();
        let err = String::from_utf8_lossy(&err.join().unwrap()).into_owned();
        eprintln!("child {path}: {status}\n--- stdout ---\n{out}--- stderr ---\n{err}---");
        (status, err)
    }

    /// In a child about to crash: no core dump (slow, and litter).
    fn no_core_dump() {
        let zero = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: `zero` is a valid rlimit; lowering a limit is allowed.
        unsafe { libc::setrlimit(libc::RLIMIT_CORE, &zero) };
        #[cfg(any(target_os = "linux", target_os = "android"))]
        // SAFETY: PR_SET_DUMPABLE takes an integer; 0 only turns off
        // core dumps (also through a core_pattern pipe) for this process.
        unsafe {
            libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)
        };
    }

    fn page() -> usize {
        // SAFETY: sysconf has no preconditions.
        unsafe { libc::sysconf(libc::_SC_PAGESIZE) as usize }
    }

    /// The guard page the test lookup claims: [GUARD_LO, GUARD_LO + page).
    static GUARD_LO: AtomicUsize = AtomicUsize::new(0);

    fn info(name: &[u8], tid: u64, cpu: usize) -> OverflowInfo {
        let mut i = OverflowInfo {
            name: [0; 64],
            name_len: name.len().min(64),
            tid,
            cpu,
        };
        i.name[..i.name_len].copy_from_slice(&name[..i.name_len]);
        i
    }

    /// Claims faults in the GUARD_LO page (only plain atomic reads).
    fn test_lookup(addr: usize) -> Option<OverflowInfo> {
        let lo = GUARD_LO.load(Ordering::Relaxed);
        if lo != 0 && addr >= lo && addr - lo < page() {
            Some(info(b"deep-recursion", 42, 3))
        } else {
            None
        }
    }

    /// Would claim every fault: must never be used, as install only takes
    /// the first lookup.
    fn second_lookup(_addr: usize) -> Option<OverflowInfo> {
        Some(info(b"second-lookup", 7, 7))
    }

    /// A mapping of `pages` pages, all PROT_NONE except as the caller
    /// changes them. Leaked (the child dies anyway).
    fn map_none(pages: usize) -> usize {
        // SAFETY: a fresh anonymous mapping aliases nothing.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                pages * page(),
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANON,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        p as usize
    }

    /// A coroutine stack: guard page at the low end, `usable` bytes above.
    struct TestStack {
        start: usize,
        len: usize,
        /// Tells valgrind the range is a stack (a no-op elsewhere).
        _valgrind: corosensei::stack::valgrind::ValgrindStackRegistration,
    }

    impl TestStack {
        fn new(usable: usize) -> TestStack {
            let len = usable + page();
            let start = map_none(len / page());
            // SAFETY: the pages above the guard, inside the mapping just
            // made; nothing refers to them.
            let rc = unsafe {
                libc::mprotect(
                    (start + page()) as *mut libc::c_void,
                    usable,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            assert_eq!(rc, 0);
            TestStack {
                start,
                len,
                _valgrind: corosensei::stack::valgrind::ValgrindStackRegistration::new(
                    start as *mut u8,
                    len,
                ),
            }
        }
    }

    // SAFETY: base..limit is one mapping owned by the value and never
    // unmapped (leaked); base is page aligned (meets STACK_ALIGNMENT); the
    // guard page sits at `limit`; usable size is above MIN_STACK_SIZE.
    unsafe impl corosensei::stack::Stack for TestStack {
        fn base(&self) -> corosensei::stack::StackPointer {
            NonZeroUsize::new(self.start + self.len).unwrap()
        }
        fn limit(&self) -> corosensei::stack::StackPointer {
            NonZeroUsize::new(self.start).unwrap()
        }
    }

    /// Recurses until the stack runs out (the add after the call keeps it
    /// from becoming a loop).
    #[inline(never)]
    fn recurse(depth: u64) -> u64 {
        let frame = std::hint::black_box([depth; 32]);
        if std::hint::black_box(depth) == u64::MAX {
            return 0;
        }
        recurse(depth + 1).wrapping_add(frame[(depth % 32) as usize])
    }

    fn query_altstack() -> libc::stack_t {
        // SAFETY: all-zero bytes are a valid stack_t.
        let mut cur: libc::stack_t = unsafe { std::mem::zeroed() };
        // SAFETY: a null new stack only queries into `cur`.
        assert_eq!(unsafe { libc::sigaltstack(ptr::null(), &mut cur) }, 0);
        cur
    }

    fn disable_altstack() {
        // SAFETY: all-zero bytes are a valid stack_t.
        let mut off: libc::stack_t = unsafe { std::mem::zeroed() };
        off.ss_flags = libc::SS_DISABLE;
        off.ss_size = libc::SIGSTKSZ;
        // SAFETY: disabling this thread's alternate stack, not running on
        // it; std's (if any) stays mapped and is freed at thread exit.
        assert_eq!(unsafe { libc::sigaltstack(&off, ptr::null_mut()) }, 0);
    }

    #[test]
    fn report_text_is_exact() {
        let r = format_report(&info(b"deep-recursion", 42, 3));
        assert_eq!(
            r.bytes(),
            b"\nlwkt thread 'deep-recursion' (td 42) on CPU 3 has overflowed its stack\n\
              fatal runtime error: stack overflow, aborting\n"
        );
        let r = format_report(&info(b"", u64::MAX, 0));
        assert_eq!(
            r.bytes(),
            b"\nlwkt thread '<unnamed>' (td 18446744073709551615) on CPU 0 \
              has overflowed its stack\nfatal runtime error: stack overflow, aborting\n"
        );
        // A bogus name_len is clamped, and the longest report fits.
        let mut i = info(&[b'x'; 64], u64::MAX, usize::MAX);
        i.name_len = 1000;
        let r = format_report(&i);
        let s = String::from_utf8(r.bytes().to_vec()).unwrap();
        assert!(s.contains(&format!("'{}'", "x".repeat(64))), "{s}");
        assert!(s.contains(&format!("CPU {} has", usize::MAX)), "{s}");
        assert!(s.ends_with("stack overflow, aborting\n"), "{s}");
    }

    #[test]
    fn ensure_altstack_installs_one_and_keeps_a_big_one() {
        std::thread::spawn(|| {
            disable_altstack();
            ensure_altstack();
            let cur = query_altstack();
            assert_eq!(cur.ss_flags & libc::SS_DISABLE, 0);
            assert!(cur.ss_size >= min_altstack_size().max(ALTSTACK_SIZE));
            // Idempotent: a second call keeps the stack it installed.
            ensure_altstack();
            assert_eq!(query_altstack().ss_sp, cur.ss_sp);
        })
        .join()
        .unwrap();

        std::thread::spawn(|| {
            // A big enough alternate stack of someone else's stays.
            let len = 4 * min_altstack_size();
            let mem = vec![0u8; len];
            // SAFETY: all-zero bytes are a valid stack_t.
            let mut ss: libc::stack_t = unsafe { std::mem::zeroed() };
            ss.ss_sp = mem.as_ptr() as *mut libc::c_void;
            ss.ss_size = len;
            // SAFETY: `mem` outlives its use as the alternate stack: it is
            // disabled below before `mem` drops, and no signal is handled
            // in between.
            assert_eq!(unsafe { libc::sigaltstack(&ss, ptr::null_mut()) }, 0);
            ensure_altstack();
            let cur = query_altstack();
            assert_eq!(cur.ss_sp, ss.ss_sp);
            assert_eq!(cur.ss_size, len);
            disable_altstack();
            drop(mem);
            // A disabled one is replaced by a mapped one.
            ensure_altstack();
            let cur = query_altstack();
            assert_eq!(cur.ss_flags & libc::SS_DISABLE, 0);
            assert_ne!(cur.ss_sp, ss.ss_sp);
        })
        .join()
        .unwrap();
    }

    #[test]
    fn lwkt_thread_overflow_is_reported() {
        const NAME: &str = "lwkt_thread_overflow_is_reported";
        if is_child(NAME) {
            no_core_dump();
            let stack = TestStack::new(64 * 1024);
            GUARD_LO.store(stack.start, Ordering::Relaxed);
            install(test_lookup);
            // Ignored: the first lookup wins.
            install(second_lookup);
            // Like a CPU thread: an OS thread whose alternate stack comes
            // from ensure_altstack (std's is switched off first, so the
            // handler can only run on ours).
            std::thread::Builder::new()
                .name("cpu3".into())
                .spawn(move || {
                    disable_altstack();
                    ensure_altstack();
                    let mut co = corosensei::Coroutine::with_stack(
                        stack,
                        |_: &corosensei::Yielder<(), ()>, ()| recurse(0),
                    );
                    let _ = co.resume(());
                })
                .unwrap()
                .join()
                .unwrap();
            eprintln!("child survived the overflow");
            return;
        }
        let (status, err) = run_child(NAME);
        assert!(!status.success(), "child did not die: {status}");
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
        assert!(err.contains("lwkt thread 'deep-recursion'"), "{err}");
        assert!(err.contains("td 42"), "{err}");
        assert!(err.contains("CPU 3"), "{err}");
        assert!(err.contains("overflowed its stack"), "{err}");
        assert!(err.contains("fatal runtime error: stack overflow"), "{err}");
        assert!(!err.contains("second-lookup"), "{err}");
    }

    #[test]
    fn unclaimed_fault_still_kills_with_sigsegv() {
        const NAME: &str = "unclaimed_fault_still_kills_with_sigsegv";
        if is_child(NAME) {
            no_core_dump();
            // Two inaccessible pages: the lookup claims the first, the
            // fault hits the second.
            let base = map_none(2);
            GUARD_LO.store(base, Ordering::Relaxed);
            install(test_lookup);
            ensure_altstack();
            let other = (base + page()) as *mut u8;
            // SAFETY: deliberately faults: the page is PROT_NONE. The
            // handler does not claim it and chains; the process dies.
            unsafe { ptr::write_volatile(other, 1) };
            eprintln!("child survived the fault");
            return;
        }
        let (status, err) = run_child(NAME);
        assert_eq!(status.signal(), Some(libc::SIGSEGV), "{status}");
        assert!(!err.contains("lwkt thread"), "{err}");
        assert!(!err.contains("overflowed"), "{err}");
    }

    #[test]
    fn std_thread_overflow_is_still_reported_by_std() {
        const NAME: &str = "std_thread_overflow_is_still_reported_by_std";
        if is_child(NAME) {
            no_core_dump();
            GUARD_LO.store(map_none(1), Ordering::Relaxed);
            install(test_lookup);
            std::thread::Builder::new()
                .name("std-overflow".into())
                .stack_size(256 * 1024)
                .spawn(|| recurse(0))
                .unwrap()
                .join()
                .unwrap();
            eprintln!("child survived the overflow");
            return;
        }
        let (status, err) = run_child(NAME);
        assert!(!status.success(), "child did not die: {status}");
        assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
        assert!(err.contains("thread 'std-overflow'"), "{err}");
        assert!(err.contains("has overflowed its stack"), "{err}");
        assert!(!err.contains("lwkt thread"), "{err}");
    }
}
