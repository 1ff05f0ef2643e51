//! A process-wide budget of open pack files.
//!
//! Every pack of every open repository used to keep its file open, so a
//! repository pushed to 20,000 times held 20,000 descriptors and the node
//! ran out (accept, repository creation and pushes elsewhere failed with
//! "Too many open files"). A [`BudgetedFile`] opens its file on first use
//! and keeps it open while it is used; when the number of open budgeted
//! files reaches the budget ([`set_open_files_max`]), the least recently
//! used ones are closed (a clock sweep over reference bits: no list to
//! reorder on every read), to be reopened on demand. A reader already
//! holding a file keeps it until its read is done.
//!
//! If opening still fails for lack of descriptors (other files count
//! too), the budget is halved towards what the process can hold, files are
//! closed to fit, and the open is retried once.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};

/// Budgeted files open at once unless [`set_open_files_max`] says otherwise.
pub const OPEN_FILES_MAX_DEFAULT: usize = 4096;
/// The budget never shrinks below this on descriptor exhaustion.
const OPEN_FILES_MIN: usize = 16;

struct Slot {
    /// The file's name now (a retired pack file is renamed; see
    /// [`BudgetedFile::rename`]). Held while the file is (re)opened.
    path: Mutex<PathBuf>,
    file: Mutex<Option<Arc<File>>>,
    /// Set on use; cleared by the sweep, which closes files found clear.
    used: AtomicBool,
}

struct Budget {
    max: AtomicUsize,
    open: AtomicUsize,
    /// Every live slot (dead ones are dropped by the sweep), and the hand.
    slots: Mutex<(Vec<Weak<Slot>>, usize)>,
}

fn budget() -> &'static Budget {
    static BUDGET: OnceLock<Budget> = OnceLock::new();
    BUDGET.get_or_init(|| Budget {
        max: AtomicUsize::new(OPEN_FILES_MAX_DEFAULT),
        open: AtomicUsize::new(0),
        slots: Mutex::new((Vec::new(), 0)),
    })
}

/// Set the most budgeted files open at once (at least 1).
pub fn set_open_files_max(max: usize) {
    budget().max.store(max.max(1), Ordering::Relaxed);
}

/// The budget in force.
pub fn open_files_max() -> usize {
    budget().max.load(Ordering::Relaxed)
}

/// Budgeted files open now.
pub fn open_files() -> usize {
    budget().open.load(Ordering::Relaxed)
}

impl Budget {
    /// Close unused files until fewer than `max` are open (or every open
    /// file is in use, after two turns of the clock).
    fn make_room(&self) {
        let max = self.max.load(Ordering::Relaxed);
        if self.open.load(Ordering::Relaxed) < max {
            return;
        }
        let Ok(mut guard) = self.slots.lock() else {
            return;
        };
        let (slots, hand) = &mut *guard;
        let mut steps = 2 * slots.len() + 1;
        while self.open.load(Ordering::Relaxed) >= max && steps > 0 && !slots.is_empty() {
            steps -= 1;
            if *hand >= slots.len() {
                *hand = 0;
            }
            let Some(slot) = slots[*hand].upgrade() else {
                slots.swap_remove(*hand);
                continue;
            };
            *hand += 1;
            if slot.used.swap(false, Ordering::Relaxed) {
                continue; // used since the last turn: a second chance
            }
            let closed = match slot.file.try_lock() {
                Ok(mut file) => file.take().is_some(),
                Err(_) => false,
            };
            if closed {
                self.open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    fn register(&self, slot: &Arc<Slot>) {
        if let Ok(mut guard) = self.slots.lock() {
            let (slots, _) = &mut *guard;
            // Drop dead entries now and then so the list tracks live files.
            if slots.len() >= 1024 && slots.len().is_power_of_two() {
                slots.retain(|w| w.strong_count() > 0);
            }
            slots.push(Arc::downgrade(slot));
        }
    }

    /// Out of descriptors: hold fewer files from now on.
    fn shrink(&self) {
        let open = self.open.load(Ordering::Relaxed);
        let max = self.max.load(Ordering::Relaxed);
        let smaller = (open.min(max) / 2).max(OPEN_FILES_MIN);
        if smaller < max {
            self.max.store(smaller, Ordering::Relaxed);
            tracing::warn!(
                from = max,
                to = smaller,
                "out of file descriptors: lowering the open pack file budget"
            );
        }
    }
}

fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE))
}

/// A read-only file opened on demand under the process's budget.
pub struct BudgetedFile {
    slot: Arc<Slot>,
}

impl std::fmt::Debug for BudgetedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BudgetedFile")
            .field("path", &self.path())
            .finish()
    }
}

impl BudgetedFile {
    /// Open `path` now (so that a missing file is an error here), under the budget.
    pub fn open(path: &Path) -> io::Result<BudgetedFile> {
        let slot = Arc::new(Slot {
            path: Mutex::new(path.to_path_buf()),
            file: Mutex::new(None),
            used: AtomicBool::new(true),
        });
        budget().register(&slot);
        let f = BudgetedFile { slot };
        f.file()?;
        Ok(f)
    }

    /// The open file, opening it again if the budget closed it.
    pub fn file(&self) -> io::Result<Arc<File>> {
        self.slot.used.store(true, Ordering::Relaxed);
        if let Ok(slot) = self.slot.file.lock() {
            if let Some(f) = slot.as_ref() {
                return Ok(f.clone());
            }
        }
        let b = budget();
        b.make_room();
        let opened = {
            // Opened under the name lock, so a rename cannot slip between
            // reading the name and opening it.
            let path = self
                .slot
                .path
                .lock()
                .map_err(|_| io::Error::other("file slot poisoned"))?;
            match File::open(&*path) {
                Err(e) if out_of_descriptors(&e) => {
                    b.shrink();
                    b.make_room();
                    File::open(&*path)?
                }
                other => other?,
            }
        };
        let mut slot = self
            .slot
            .file
            .lock()
            .map_err(|_| io::Error::other("file slot poisoned"))?;
        if let Some(f) = slot.as_ref() {
            // Opened by another reader meanwhile: use theirs, close ours.
            return Ok(f.clone());
        }
        let f = Arc::new(opened);
        *slot = Some(f.clone());
        b.open.fetch_add(1, Ordering::Relaxed);
        Ok(f)
    }

    /// The file's path (its name now, if it was renamed).
    pub fn path(&self) -> PathBuf {
        match self.slot.path.lock() {
            Ok(p) => p.clone(),
            Err(e) => e.into_inner().clone(),
        }
    }

    /// Rename the file on disk to `to` and read it from there from now on.
    /// Readers holding the open file are unaffected; a reader reopening it
    /// after the budget closed it finds it under the new name.
    pub fn rename(&self, to: &Path) -> io::Result<()> {
        let mut path = self
            .slot
            .path
            .lock()
            .map_err(|_| io::Error::other("file slot poisoned"))?;
        std::fs::rename(&*path, to)?;
        *path = to.to_path_buf();
        Ok(())
    }

    /// Close the file now if it is open (it reopens on the next read).
    pub fn close(&self) {
        if let Ok(mut slot) = self.slot.file.lock() {
            if slot.take().is_some() {
                budget().open.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

impl Drop for BudgetedFile {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn files_beyond_the_budget_are_closed_and_reopened() {
        let dir = tempfile::tempdir().unwrap();
        let before = open_files();
        let max = open_files_max();
        set_open_files_max(before + 4);
        let files: Vec<BudgetedFile> = (0..40)
            .map(|i| {
                let p = dir.path().join(format!("f{i}"));
                std::fs::write(&p, format!("file {i:02}")).unwrap();
                BudgetedFile::open(&p).unwrap()
            })
            .collect();
        for round in 0..3 {
            for (i, f) in files.iter().enumerate() {
                let mut buf = [0u8; 7];
                f.file().unwrap().read_exact_at(&mut buf, 0).unwrap();
                assert_eq!(&buf, format!("file {i:02}").as_bytes(), "round {round}");
                // Other tests in this process may hold budgeted files too.
                assert!(open_files() <= before + 4 + 8, "{} open", open_files());
            }
        }
        drop(files);
        set_open_files_max(max);
    }
}
