//! Work proportional to a request runs off the shard's executor, on its
//! blocking pool, under a budget: negotiation over many haves, object
//! walks, pack planning and generation, pack ingest. The executor only
//! parses and moves bytes, so one heavy request cannot freeze every
//! repository on the shard (or `/health`).
//!
//! A [`Budget`] is a deadline plus a cancellation flag; long loops call
//! [`Budget::check`] and stop with an error once the request has used its
//! time or its client has gone away (the request future was dropped).

use guts_io::interrupt::Interrupt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Why work stopped early.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    /// The request used more time than its budget.
    #[error("request exceeded its work budget of {limit_ms} ms")]
    Exceeded { limit_ms: u64 },
    /// The client went away; nobody waits for the result.
    #[error("request cancelled: the client went away")]
    Cancelled,
}

/// A bug in work run off the executor: the panic's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("internal error: {what}")]
pub struct Panicked {
    pub what: String,
}

/// Why work run off the executor did not finish.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkError {
    #[error(transparent)]
    Budget(#[from] BudgetError),
    #[error(transparent)]
    Panicked(#[from] Panicked),
}

/// A request's budget for work off the executor. Cheap to clone and `Send`.
#[derive(Debug, Clone)]
pub struct Budget {
    deadline: Instant,
    limit_ms: u64,
    cancelled: Arc<AtomicBool>,
}

impl Budget {
    /// A budget of `limit_ms` milliseconds from now.
    pub fn new(limit_ms: u64) -> Budget {
        Budget {
            deadline: Instant::now() + Duration::from_millis(limit_ms),
            limit_ms,
            cancelled: Arc::new(AtomicBool::new(false)),
        }
    }

    /// `Ok` while the request may go on working.
    pub fn check(&self) -> Result<(), BudgetError> {
        if self.cancelled.load(Ordering::Relaxed) {
            return Err(BudgetError::Cancelled);
        }
        if Instant::now() > self.deadline {
            return Err(BudgetError::Exceeded {
                limit_ms: self.limit_ms,
            });
        }
        Ok(())
    }

    /// True once the request was cancelled.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// The same budget as the storage layer's [`Interrupt`], for long
    /// loops there (object walks, pack ingest).
    pub fn interrupt(&self) -> Interrupt {
        Interrupt::new(Some(self.deadline), Some(self.cancelled.clone()))
    }

    /// A guard that cancels this budget when dropped: hold it in the
    /// request's future, so that a client going away (the future dropped)
    /// stops the work done for it.
    pub fn cancel_on_drop(&self) -> CancelOnDrop {
        CancelOnDrop(self.cancelled.clone())
    }
}

/// Cancels a [`Budget`] when dropped, unless [`CancelOnDrop::disarm`]ed.
pub struct CancelOnDrop(Arc<AtomicBool>);

impl CancelOnDrop {
    /// Keep the work going after this guard is dropped.
    pub fn disarm(self) {
        std::mem::forget(self);
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// Run `work` on the shard's blocking pool under `budget`. A panic fails
/// this one request with an error instead of taking a pool thread down;
/// dropping the returned future (the client went away) cancels the budget.
pub async fn blocking<T, E, F>(budget: &Budget, work: F) -> Result<T, E>
where
    T: Send + 'static,
    E: From<WorkError> + Send + 'static,
    F: FnOnce(&Budget) -> Result<T, E> + Send + 'static,
{
    let guard = budget.cancel_on_drop();
    let inner = budget.clone();
    let out = glommio::executor()
        .spawn_blocking(move || {
            if let Err(e) = inner.check() {
                return Err(WorkError::from(e).into());
            }
            contained(move || work(&inner))
        })
        .await;
    guard.disarm();
    out
}

/// Run `work` so that a bug (a panic) fails this one request with an
/// error instead of taking a pool thread down with it.
pub fn contained<T, E: From<WorkError>>(work: impl FnOnce() -> Result<T, E>) -> Result<T, E> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(work)) {
        Ok(result) => result,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown".into());
            tracing::error!(panic = %what, "internal error in a git service worker");
            Err(WorkError::from(Panicked { what }).into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_runs_out_and_cancels() {
        let b = Budget::new(60_000);
        assert!(b.check().is_ok());
        {
            let _guard = b.cancel_on_drop();
        }
        assert_eq!(b.check(), Err(BudgetError::Cancelled));
        let b = Budget::new(60_000);
        b.cancel_on_drop().disarm();
        assert!(b.check().is_ok());
        let b = Budget::new(0);
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(b.check(), Err(BudgetError::Exceeded { limit_ms: 0 }));
    }
}
