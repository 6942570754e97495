//! Draining a core: stop accepting, let in-flight requests finish, close
//! idle connections.
//!
//! The signal is core-local (a cell and a list of wakers), so the many idle
//! connections that wait on it cost no cross-thread machinery; the core's
//! control task raises it when the main thread asks.

use std::cell::{Cell, RefCell};
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::task::{Context, Poll, Waker};

/// A core's drain signal.
#[derive(Default)]
pub struct Drain {
    raised: Cell<bool>,
    slots: RefCell<Slots>,
}

/// Wakers of the tasks waiting, in reusable slots: a connection that goes
/// idle and busy again a million times reuses one slot, never grows the list.
#[derive(Default)]
struct Slots {
    wakers: Vec<Option<Waker>>,
    free: Vec<usize>,
}

impl Drain {
    pub fn is_raised(&self) -> bool {
        self.raised.get()
    }

    /// Raises the signal and wakes every task waiting for it.
    pub fn raise(&self) {
        self.raised.set(true);
        let wakers: Vec<Waker> = self
            .slots
            .borrow_mut()
            .wakers
            .iter_mut()
            .filter_map(Option::take)
            .collect();
        for waker in wakers {
            waker.wake();
        }
    }

    /// Resolves once the signal is raised.
    pub fn raised(&self) -> Wait<'_> {
        Wait {
            drain: self,
            slot: None,
        }
    }
}

/// The future of [`Drain::raised`]; gives its slot back when dropped.
pub struct Wait<'a> {
    drain: &'a Drain,
    slot: Option<usize>,
}

impl Future for Wait<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.drain.raised.get() {
            return Poll::Ready(());
        }
        let mut slots = self.drain.slots.borrow_mut();
        match self.slot {
            Some(index) => match &mut slots.wakers[index] {
                Some(waker) if waker.will_wake(cx.waker()) => {}
                entry => *entry = Some(cx.waker().clone()),
            },
            None => {
                let waker = Some(cx.waker().clone());
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
        assert!(wait.as_mut().poll(&mut cx).is_ready());
    }
}
