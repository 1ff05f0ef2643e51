//! guts-testkit: what every test crate of the workspace shares (a
//! dev-dependency only; nothing here ships).
//!
//! - [`git`]: the one way tests run C git, the oracle: an isolated
//!   configuration (no system or user config, no prompts) and fixed
//!   identities and dates, so every run makes the same objects;
//! - [`wait_until`]: the one way tests wait for something to happen, by
//!   polling a condition up to a deadline (never a bare sleep);
//! - [`corpus_bundle`]: the real repositories in `../shared/corpus`,
//!   beside the checkout;
//! - [`python_with`]: a Python interpreter that has the modules a test
//!   needs, provisioned on first use into a virtual environment under the
//!   target directory when the system's Python lacks them.

mod git;
mod python;

pub use git::{commit_all, corpus_bundle, git, git_bytes, git_ok, git_out, git_run, run, run_ok};
pub use python::python_with;

use std::time::{Duration, Instant};

/// Poll `cond` every 20 ms until it holds or `timeout` passes; returns
/// whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
