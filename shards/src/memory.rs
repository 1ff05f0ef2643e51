//! The node's memory budget: what requests may hold in memory at once,
//! summed over every shard. Requests reserve what they keep (a parsed
//! negotiation, push commands, a push's ingest buffers) before they keep
//! it; once the budget is spent, new work is refused with a 503 and a
//! `Retry-After` instead of growing the process until the kernel kills it.
//!
//! Lock-free (one atomic counter shared by the shards); a reservation
//! returns its bytes when dropped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

/// Reservations grow and shrink in steps of this many bytes, so that the
/// shared counter is touched once per step, not once per pkt.
pub const RESERVATION_STEP_BYTES: u64 = 256 * 1024;

/// Seconds a client refused for memory is told to wait (`Retry-After`).
pub const MEMORY_RETRY_AFTER_S: u64 = 5;

/// The budget is spent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the node's memory budget is spent ({used} of {limit} bytes in use; {wanted} more wanted)")]
pub struct MemoryError {
    /// Bytes the request wanted on top of what it held.
    pub wanted: u64,
    /// Bytes in use by all requests.
    pub used: u64,
    /// The node's budget.
    pub limit: u64,
}

/// The node-wide budget.
#[derive(Debug)]
pub struct MemoryBudget {
    limit: u64,
    used: AtomicU64,
}

static NODE: OnceLock<Arc<MemoryBudget>> = OnceLock::new();

impl MemoryBudget {
    /// A budget of `limit` bytes (for tests and tools; a node uses [`MemoryBudget::node`]).
    pub fn new(limit: u64) -> Arc<MemoryBudget> {
        Arc::new(MemoryBudget {
            limit,
            used: AtomicU64::new(0),
        })
    }

    /// The process's budget, shared by every shard; the first call sets
    /// its size.
    pub fn node(limit: u64) -> Arc<MemoryBudget> {
        NODE.get_or_init(|| MemoryBudget::new(limit)).clone()
    }

    /// The budget in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Bytes reserved now.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// An empty reservation, grown with [`Reservation::resize`].
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }

    /// A reservation of `bytes`, or the error if the budget cannot hold it.
    pub fn reserve(self: &Arc<Self>, bytes: u64) -> Result<Reservation, MemoryError> {
        let mut r = self.reservation();
        r.resize(usize::try_from(bytes).unwrap_or(usize::MAX))?;
        Ok(r)
    }

    fn take(&self, bytes: u64) -> Result<(), MemoryError> {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            let next = used.saturating_add(bytes);
            if next > self.limit {
                crate::metrics::record_memory_refused();
                return Err(MemoryError {
                    wanted: bytes,
                    used,
                    limit: self.limit,
                });
            }
            match self
                .used
                .compare_exchange_weak(used, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => {
                    crate::metrics::set_memory(next, self.limit);
                    return Ok(());
                }
                Err(now) => used = now,
            }
        }
    }

    fn give_back(&self, bytes: u64) {
        let before = self.used.fetch_sub(bytes, Ordering::Relaxed);
        crate::metrics::set_memory(before - bytes, self.limit);
    }
}

/// Bytes held against the node's budget; returned when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<MemoryBudget>,
    bytes: u64,
}

impl Reservation {
    /// Hold at least `bytes` (rounded up to a step), or fail without
    /// changing what is held. Shrinking always succeeds.
    pub fn resize(&mut self, bytes: usize) -> Result<(), MemoryError> {
        let want = (bytes as u64).div_ceil(RESERVATION_STEP_BYTES) * RESERVATION_STEP_BYTES;
        if want > self.bytes {
            self.budget.take(want - self.bytes)?;
        } else if want < self.bytes {
            self.budget.give_back(self.bytes - want);
        }
        self.bytes = want;
        Ok(())
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// Half the machine's memory: the default budget.
pub fn default_budget_bytes() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let (pages, page) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    if pages > 0 && page > 0 {
        (pages as u64 * page as u64 / 2).max(256 << 20)
    } else {
        1 << 30
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_are_bounded_and_returned() {
        let budget = MemoryBudget::new(4 * RESERVATION_STEP_BYTES);
        let mut a = budget.reservation();
        a.resize(1).unwrap();
        assert_eq!(budget.used(), RESERVATION_STEP_BYTES);
        let b = budget.reserve(2 * RESERVATION_STEP_BYTES).unwrap();
        let err = a.resize(3 * RESERVATION_STEP_BYTES as usize).unwrap_err();
        assert_eq!(err.limit, 4 * RESERVATION_STEP_BYTES);
        assert_eq!(
            a.bytes(),
            RESERVATION_STEP_BYTES,
            "a failed resize changes nothing"
        );
        drop(b);
        a.resize(3 * RESERVATION_STEP_BYTES as usize).unwrap();
        a.resize(0).unwrap();
        assert_eq!(budget.used(), 0);
        a.resize(10).unwrap();
        drop(a);
        assert_eq!(budget.used(), 0);
    }
}
