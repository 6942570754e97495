//! Stop signals, taken synchronously by the main thread.
//!
//! SIGINT and SIGTERM are blocked before any core starts, so every thread
//! inherits the mask and only the main thread, in `sigwait`, ever sees them.
//! SIGPIPE is ignored: a peer that closes while croupier writes must fail
//! that write with EPIPE, not kill the process.

use std::io;

/// The blocked stop signals, ready to be waited for.
pub struct StopSignals {
    set: libc::sigset_t,
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it starts) and
/// ignores SIGPIPE. Call it before starting any thread.
pub fn block() -> io::Result<StopSignals> {
    // SAFETY: sigemptyset and sigaddset initialise and fill a sigset_t we
    // own; pthread_sigmask and signal only change this process's signal
    // disposition, with valid arguments.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(io::Error::from_raw_os_error(rc));
        }
        if libc::signal(libc::SIGPIPE, libc::SIG_IGN) == libc::SIG_ERR {
            return Err(io::Error::last_os_error());
        }
        Ok(StopSignals { set })
    }
}

impl StopSignals {
    /// Waits up to `timeout` for SIGINT or SIGTERM.
    pub fn wait_for(&self, timeout: std::time::Duration) -> Option<i32> {
        let spec = libc::timespec {
            tv_sec: timeout.as_secs() as libc::time_t,
            tv_nsec: timeout.subsec_nanos() as libc::c_long,
        };
        // SAFETY: `self.set` was initialised in `block`; `spec` is a valid
        // timespec; a null info pointer is allowed.
        let signal = unsafe { libc::sigtimedwait(&self.set, std::ptr::null_mut(), &spec) };
        (signal > 0).then_some(signal)
    }

    /// Waits for SIGINT or SIGTERM and returns its number.
    pub fn wait(&self) -> i32 {
        let mut signal: libc::c_int = 0;
        loop {
            // SAFETY: `self.set` was initialised in `block`, and `signal` is
            // a valid place for the result.
            let rc = unsafe { libc::sigwait(&self.set, &mut signal) };
            if rc == 0 {
                return signal;
            }
        }
    }
}
