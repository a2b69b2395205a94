//! Opaque handles for the library stand-ins (cuBLAS handles, cuDNN handles and descriptors).
//!
//! A handle is a number, not a pointer to the Rust value: looking it up in a table means a
//! destroyed, foreign or garbage handle is refused with the library's status code instead of
//! being dereferenced. The numbers come from one counter shared by every table, so a tensor
//! descriptor passed where a filter descriptor belongs is "not a filter descriptor" rather than
//! some other filter that happens to share its number.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// Starts well above the small values (0, 1, 2) that callers use as sentinels.
static NEXT: AtomicUsize = AtomicUsize::new(0x7e00_0000);

pub struct Registry<T> {
    live: Mutex<Option<HashMap<usize, T>>>,
}

impl<T: Clone> Registry<T> {
    pub const fn new() -> Self {
        Registry { live: Mutex::new(None) }
    }

    fn with<R>(&self, f: impl FnOnce(&mut HashMap<usize, T>) -> R) -> R {
        // Every update is a single map operation, so a poisoned lock still holds consistent data.
        let mut g = self.live.lock().unwrap_or_else(|p| p.into_inner());
        f(g.get_or_insert_with(HashMap::new))
    }

    /// Stores `v` and returns its new handle.
    pub fn insert(&self, v: T) -> usize {
        let id = NEXT.fetch_add(0x10, Ordering::Relaxed);
        self.with(|m| m.insert(id, v));
        id
    }

    /// A copy of the value behind `id`.
    pub fn get(&self, id: usize) -> Option<T> {
        self.with(|m| m.get(&id).cloned())
    }

    /// Changes the value behind `id`; false if there is none.
    pub fn update(&self, id: usize, f: impl FnOnce(&mut T)) -> bool {
        self.with(|m| m.get_mut(&id).map(f).is_some())
    }

    pub fn remove(&self, id: usize) -> Option<T> {
        self.with(|m| m.remove(&id))
    }
}

impl<T: Clone> Default for Registry<T> {
    fn default() -> Self {
        Self::new()
    }
}
