//! Draining a core, and the coarse deadlines of idle connections.
//!
//! The signal is core-local (a cell and a list of wakers), so the many idle
//! connections that wait on it cost no cross-thread machinery; the core's
//! control task raises it when the main thread asks.
//!
//! An idle connection also waits here for its keep-alive timeout, and a read
//! with a long timeout for that timeout. A monoio timer per wait would cost a
//! timer entry (640 bytes, 128-byte aligned, so every future holding one is
//! allocated aligned) and a wheel insertion and removal per request; instead
//! each waiter leaves its deadline in its slot and the core's once-a-second
//! sweep wakes those past it. Such a timeout is up to one sweep late (and,
//! counted from the sweep's clock, up to one sweep early), which for timeouts
//! of [`COARSE_MIN`] and more does not matter; shorter ones use real timers.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

/// Timeouts at least this long are kept coarsely, by the core's sweep,
/// rather than by a timer: give or take one sweep (a second), they end on
/// time.
pub const COARSE_MIN: Duration = Duration::from_secs(10);

thread_local! {
    /// The drain signal of the core this thread runs, so a read deep in the
    /// request path finds the core's coarse clock without it being passed
    /// down every call.
    static CORE: Rc<Drain> = Rc::new(Drain::default());
}

/// A core's drain signal.
#[derive(Default)]
pub struct Drain {
    raised: Cell<bool>,
    /// The time at the last sweep: good enough for deadlines that are
    /// themselves swept once a second, and free to read.
    swept_at: Cell<Option<Instant>>,
    slots: RefCell<Slots>,
}

/// Wakers of the tasks waiting, in reusable slots: a connection that goes
/// idle and busy again a million times reuses one slot, never grows the list.
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Slot>>,
    free: Vec<usize>,
}

struct Slot {
    waker: Waker,
    deadline: Option<Instant>,
}

/// Why a [`Wait`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Woken {
    Drained,
    Expired,
}

impl Drain {
    /// The signal of the core this thread runs.
    pub fn current() -> Rc<Drain> {
        CORE.with(Rc::clone)
    }

    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Raises the signal and wakes every task waiting for it.
    pub fn raise(&self) {
        self.raised.set(true);
        let woken: Vec<Slot> = {
            let mut slots = self.slots.borrow_mut();
            slots.wakers.iter_mut().filter_map(Option::take).collect()
        };
        for slot in woken {
            slot.waker.wake();
        }
    }

    /// The time of the last sweep (or now, before the first): up to one
    /// sweep behind the clock.
    pub fn coarse_now(&self) -> Instant {
        match self.swept_at.get() {
            Some(at) => at,
            None => {
                let now = Instant::now();
                self.swept_at.set(Some(now));
                now
            }
        }
    }

    /// Wakes every waiter whose deadline is past `now`.
    pub fn wake_expired(&self, now: Instant) {
        self.swept_at.set(Some(now));
        let expired = |slot: &Option<Slot>| {
            slot.as_ref().and_then(|s| s.deadline).is_some_and(|deadline| deadline <= now)
        };
        let woken: Vec<Slot> = {
            let mut slots = self.slots.borrow_mut();
            slots.wakers.iter_mut().filter(|s| expired(s)).filter_map(Option::take).collect()
        };
        for slot in woken {
            slot.waker.wake();
        }
    }

    /// Resolves once the signal is raised.
    pub fn raised(&self) -> Wait<'_> {
        Wait { drain: self, slot: None, deadline: None, ends_on_drain: true }
    }

    /// Resolves once the signal is raised or, give or take one sweep,
    /// `deadline` passes.
    pub fn until(&self, deadline: Instant) -> Wait<'_> {
        Wait { drain: self, slot: None, deadline: Some(deadline), ends_on_drain: true }
    }

    /// Resolves once, give or take one sweep, `timeout` from now has passed;
    /// a drain does not end it.
    pub fn after(&self, timeout: Duration) -> Wait<'_> {
        let deadline = Some(self.coarse_now() + timeout);
        Wait { drain: self, slot: None, deadline, ends_on_drain: false }
    }
}

/// The future of [`Drain::raised`]; gives its slot back when dropped.
pub struct Wait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
    deadline: Option<Instant>,
    ends_on_drain: bool,
}

impl Future for Wait<'_> {
    type Output = Woken;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Woken> {
        if self.ends_on_drain && self.drain.raised.get() {
            return Poll::Ready(Woken::Drained);
        }
        // The sweep sets its clock before it wakes the expired, so the
        // coarse clock is all a deadline needs: no clock read per poll.
        let deadline = self.deadline;
        if deadline.is_some_and(|d| d <= self.drain.coarse_now()) {
            return Poll::Ready(Woken::Expired);
        }
        let mut slots = self.drain.slots.borrow_mut();
        match self.slot {
            Some(index) => match &mut slots.wakers[index] {
                Some(slot) if slot.waker.will_wake(cx.waker()) => {}
                entry => *entry = Some(Slot { waker: cx.waker().clone(), deadline }),
            },
            None => {
                let waker = Some(Slot { waker: cx.waker().clone(), deadline });
                let index = match slots.free.pop() {
                    Some(index) => {
                        slots.wakers[index] = waker;
                        index
                    }
                    None => {
                        slots.wakers.push(waker);
                        slots.wakers.len() - 1
                    }
                };
                drop(slots);
                self.slot = Some(index);
            }
        }
        Poll::Pending
    }
}

impl Drop for Wait<'_> {
    fn drop(&mut self) {
        if let Some(index) = self.slot {
            let mut slots = self.drain.slots.borrow_mut();
            slots.wakers[index] = None;
            slots.free.push(index);
        }
    }
}

/// Waits for `future`, or for `wait`, whichever comes first. `Err` means
/// `wait` ended first (and `future` was dropped).
///
/// A struct rather than an `async fn`: every idle connection holds one, and
/// an `async fn` keeps both its arguments twice (as arguments and as the
/// pinned locals), which is a hundred bytes an idle connection would carry.
pub fn unless<F: Future>(wait: Wait<'_>, future: F) -> Unless<'_, F> {
    Unless { wait, future }
}

pin_project_lite::pin_project! {
    /// The future of [`unless`].
    pub struct Unless<'a, F> {
        wait: Wait<'a>,
        #[pin]
        future: F,
    }
}

impl<F: Future> Future for Unless<'_, F> {
    type Output = Result<F::Output, Woken>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(output) = this.future.poll(cx) {
            return Poll::Ready(Ok(output));
        }
        // `Wait` is Unpin: it holds a reference, an index and an instant.
        Pin::new(this.wait).poll(cx).map(Err)
    }
}

/// Waits for `future`, or for the drain signal, whichever comes first.
/// `None` means the signal came first (and `future` was dropped).
pub async fn or_drain<F: Future>(drain: &Drain, future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut raised = std::pin::pin!(drain.raised());
    poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        if raised.as_mut().poll(cx).is_ready() {
            return Poll::Ready(None);
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_reused_and_raise_wakes() {
        let drain = Drain::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        for _ in 0..1000 {
            let mut wait = std::pin::pin!(drain.raised());
            assert!(wait.as_mut().poll(&mut cx).is_pending());
        }
        assert_eq!(drain.slots.borrow().wakers.len(), 1);
        let mut wait = std::pin::pin!(drain.raised());
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drain.raise();
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Woken::Drained));
    }

    #[test]
    fn deadlines_expire() {
        let drain = Drain::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let soon = Instant::now() + std::time::Duration::from_millis(20);
        let mut wait = std::pin::pin!(drain.until(soon));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drain.wake_expired(Instant::now());
        assert!(drain.slots.borrow().wakers[0].is_some(), "not expired yet");
        std::thread::sleep(std::time::Duration::from_millis(30));
        drain.wake_expired(Instant::now());
        assert!(drain.slots.borrow().wakers[0].is_none(), "woken and emptied");
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Woken::Expired));
    }

    #[test]
    fn a_read_deadline_outlives_a_drain() {
        let drain = Drain::default();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut wait = std::pin::pin!(drain.after(std::time::Duration::from_millis(20)));
        assert!(wait.as_mut().poll(&mut cx).is_pending());
        drain.raise();
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "a drain does not end it");
        std::thread::sleep(std::time::Duration::from_millis(30));
        assert!(wait.as_mut().poll(&mut cx).is_pending(), "only a sweep sees the time pass");
        drain.wake_expired(Instant::now());
        assert_eq!(wait.as_mut().poll(&mut cx), Poll::Ready(Woken::Expired));
    }
}
