//! Who works on a batch besides the calling thread: workers join it when they wake and
//! leave when its scheduler is done. The caller closes the batch once its own share is
//! done and waits only for the workers that joined (they are finishing a task, not
//! waking up): a worker that wakes after the close skips the batch, so a slow wake-up
//! (tens of microseconds on a virtual machine) never holds the caller.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Set once the caller closed the batch; the bits below count the workers in it.
const CLOSED: usize = 1 << (usize::BITS - 1);

/// Spins before the waiting caller starts yielding its core.
const SPINS: u32 = 256;

/// The workers in one batch and the executions they ran.
#[derive(Debug, Default)]
pub(crate) struct Crew {
    state: AtomicUsize,
    executions: AtomicUsize,
}

impl Crew {
    /// Joins the batch: false if the caller closed it already (then the worker must not
    /// touch it).
    pub(crate) fn join(&self) -> Option<Member<'_>> {
        let mut state = self.state.load(Ordering::Acquire);
        loop {
            if state & CLOSED != 0 {
                return None;
            }
            match self.state.compare_exchange_weak(state, state + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Member { crew: self, executions: 0 }),
                Err(now) => state = now,
            }
        }
    }

    /// Closes the batch to late workers and waits for those in it to leave. Returns the
    /// executions they ran.
    pub(crate) fn close(&self) -> usize {
        let mut state = self.state.fetch_or(CLOSED, Ordering::AcqRel) | CLOSED;
        let mut spins = 0u32;
        while state != CLOSED {
            if spins < SPINS {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now();
            }
            state = self.state.load(Ordering::Acquire);
        }
        self.executions.load(Ordering::Acquire)
    }
}

/// A worker's place in a batch: it leaves when dropped (also if its work panicked, so
/// that the caller is never left waiting).
pub(crate) struct Member<'a> {
    crew: &'a Crew,
    /// Executions this worker ran, handed over as it leaves.
    pub executions: usize,
}

impl Drop for Member<'_> {
    fn drop(&mut self) {
        self.crew.executions.fetch_add(self.executions, Ordering::AcqRel);
        self.crew.state.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn a_closed_crew_takes_no_one_and_close_waits_for_those_in_it() {
        let crew = Crew::default();
        let mut member = crew.join().unwrap_or_else(|| panic!("an open crew takes a worker"));
        member.executions = 3;
        let (left, leaving) = std::sync::mpsc::channel();
        std::thread::scope(|scope| {
            let crew = &crew;
            scope.spawn(move || {
                let mut second = crew.join().unwrap_or_else(|| panic!("still open"));
                second.executions = 4;
                drop(member);
                // The caller is waiting for this one now.
                let _ = left.send(());
                drop(second);
            });
            let _ = leaving.recv();
            assert_eq!(crew.close(), 7, "close returns once both left, with what they ran");
            assert!(crew.join().is_none(), "a worker waking after the close skips the batch");
        });
    }

    #[test]
    fn a_member_that_panics_still_leaves() {
        let crew = Arc::new(Crew::default());
        let inside = Arc::clone(&crew);
        let result = std::thread::spawn(move || {
            let _member = inside.join();
            panic!("a worker's task panicked");
        })
        .join();
        assert!(result.is_err());
        assert_eq!(crew.close(), 0, "the caller is not left waiting");
    }
}
