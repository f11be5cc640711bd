//! One tokio task per call, hosting the call's actors: its [`CallController`] and its
//! [`Leg`]s. Each stays an actix actor of its own, with its own `Context`, mailbox,
//! address, timers and handlers; what they share is the task that polls their
//! `ContextFut`s (actix's `Actor::start` would spawn one task per actor).
//!
//! Why: a held call is idle, and an idle actix actor is mostly its tokio task (a
//! 128-byte-aligned cell around the actor's `ContextFut`). Three tasks per call were
//! about 2.7 KB of a held call's memory; one task holding the three futures saves the
//! per-task header, trailer and alignment twice, and two spawns per call.
//!
//! A call gains legs while it lives (a forwarded call's C-leg): the controller hands a
//! new leg's future to [`adopt`], and the task takes it in right after polling the
//! controller. The hand-over is a thread-local queue, not a channel per call: a call's
//! controller runs only inside its own task's poll (its `ContextFut` is polled nowhere
//! else, and every call runs on the driver's thread), so whatever is in the queue when
//! that poll returns was put there by this task's controller. No call pays a byte for a
//! leg it never adds.
//!
//! Supervision is unchanged: each actor's handlers run under its own `catch_unwind`
//! guard (a panic ends that call only, see `controller.rs`). A panic that escaped them
//! anyway would end this task, i.e. this call's actors together, and never another call.

use super::controller::CallController;
use super::leg::Leg;
use actix::dev::ContextFut;
use actix::Context;
use smallvec::SmallVec;
use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

/// The future that runs a leg.
pub type LegFuture = ContextFut<Leg, Context<Leg>>;
/// The future that runs a controller.
pub type ControllerFuture = ContextFut<CallController, Context<CallController>>;

thread_local! {
    /// Leg futures added by the controller being polled, for its task to take in.
    static NURSERY: RefCell<Vec<LegFuture>> = const { RefCell::new(Vec::new()) };
}

/// Adds a leg to the call whose controller is running now (only a controller's handler
/// calls this: see the module doc). Its actor's `started` runs at the task's next poll
/// of it, which comes in the same poll of the task.
pub fn adopt(leg: LegFuture) {
    NURSERY.with(|n| n.borrow_mut().push(leg));
}

/// A call's actors, polled by one task. Done when every one of them has stopped.
pub struct CallTask {
    /// Nobody holds a strong address of a call's actors: each stops when its call is
    /// over (the controller at `done`, the legs at the `Stop` it sends them).
    controller: Option<ControllerFuture>,
    /// A, then the B-legs, in the order they were added (a leg's `LegId` is the
    /// controller's business: this is only what to poll). Inline for the usual A + one B.
    legs: SmallVec<[Option<LegFuture>; 2]>,
}

impl CallTask {
    /// The task of a controller and its legs' futures (each actor's `started` runs at
    /// the task's first poll; messages sent before wait in the mailboxes).
    pub fn new(
        controller: ControllerFuture,
        legs: impl IntoIterator<Item = LegFuture>,
    ) -> CallTask {
        CallTask {
            controller: Some(controller),
            legs: legs.into_iter().map(Some).collect(),
        }
    }

    /// Takes in the legs the controller just added, in free slots first.
    fn take_in(&mut self) {
        NURSERY.with(|n| {
            for leg in n.borrow_mut().drain(..) {
                match self.legs.iter_mut().find(|s| s.is_none()) {
                    Some(slot) => *slot = Some(leg),
                    None => self.legs.push(Some(leg)),
                }
            }
        });
    }

    fn poll_legs(&mut self, cx: &mut std::task::Context<'_>) {
        for slot in self.legs.iter_mut() {
            if let Some(f) = slot {
                if Pin::new(f).poll(cx).is_ready() {
                    *slot = None;
                }
            }
        }
    }
}

impl Future for CallTask {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        // Legs, controller, legs: what the driver gave a leg reaches the controller and
        // the controller's commands reach the legs within one poll of the task. Anything
        // sent later wakes the task (every future registered its waker).
        this.poll_legs(cx);
        if let Some(c) = &mut this.controller {
            debug_assert!(NURSERY.with(|n| n.borrow().is_empty()));
            if Pin::new(c).poll(cx).is_ready() {
                this.controller = None;
            }
            this.take_in();
        }
        this.poll_legs(cx);
        if this.controller.is_none() && this.legs.iter().all(Option::is_none) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[cfg(test)]
mod tests {
    /// The size every held call pays for its task: tokio adds its header and trailer
    /// (about 176 B with tokio 1 here) and rounds the cell to 128 B, mimalloc rounds that to its bin. At
    /// 1,616 B the cell is 1,792 B, one of mimalloc's bins; a few bytes more cost every
    /// held call 256 B (the 2,048 B bin). A field that a held call does not use belongs
    /// in a box (`Setup`, `Rare`).
    #[test]
    fn the_call_task_fits_its_allocator_bin() {
        let size = std::mem::size_of::<super::CallTask>();
        assert!(size <= 1616, "CallTask is {size} B, over 1,616 B");
    }
}
