//! Stopping long work early: a deadline, and a flag the requester sets
//! when nobody waits for the result any more (the client went away).
//! Long loops (object walks, pack ingest) poll it now and then and stop
//! with an error once it is set.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// Loop iterations between looks at the clock and the flag.
pub const CHECK_EVERY: u32 = 256;

/// When to stop. The default never stops.
#[derive(Debug, Clone, Default)]
pub struct Interrupt {
    deadline: Option<Instant>,
    flag: Option<Arc<AtomicBool>>,
}

impl Interrupt {
    /// Stop at `deadline` (if any) or once `flag` (if any) is set.
    pub fn new(deadline: Option<Instant>, flag: Option<Arc<AtomicBool>>) -> Interrupt {
        Interrupt { deadline, flag }
    }

    /// Whether the work should stop now.
    pub fn is_set(&self) -> bool {
        self.flag
            .as_ref()
            .is_some_and(|f| f.load(Ordering::Relaxed))
            || self.deadline.is_some_and(|d| Instant::now() > d)
    }
}

/// Counts loop iterations and looks at an [`Interrupt`] every
/// [`CHECK_EVERY`] of them.
#[derive(Debug, Default)]
pub(crate) struct Poll {
    interrupt: Interrupt,
    count: u32,
}

impl Poll {
    pub(crate) fn new(interrupt: Interrupt) -> Poll {
        Poll {
            interrupt,
            count: 0,
        }
    }

    /// True when the work should stop (checked every [`CHECK_EVERY`] calls).
    pub(crate) fn stop(&mut self) -> bool {
        self.count += 1;
        if self.count < CHECK_EVERY {
            return false;
        }
        self.count = 0;
        self.interrupt.is_set()
    }
}
