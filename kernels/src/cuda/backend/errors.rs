//! Deferred errors: most `Backend` ops return `()` (on the GPU they only queue work, whose
//! failures surface later anyway), so an op that fails records its error here and the next
//! fallible call (`zeros`, `from_host`, `to_host`, `write`, `sync`, ...) returns it. This is
//! the CUDA model of sticky errors, made explicit: after the first error the backend refuses
//! every fallible call, because the state of the buffers is no longer trustworthy.

use crate::error::{KernelError, Result};
use std::sync::Mutex;

#[derive(Debug, Default)]
enum State {
    #[default]
    Clean,
    /// The first error, not yet reported.
    Pending(KernelError),
    /// Reported once; later calls get this description of it.
    Reported(String),
}

#[derive(Debug, Default)]
pub struct Deferred {
    state: Mutex<State>,
}

impl Deferred {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keeps `result`'s error if it is the first one.
    pub fn record(&self, op: &'static str, result: Result<()>) {
        if let Err(e) = result {
            let mut state = self.lock();
            if matches!(*state, State::Clean) {
                tracing::error!(op, error = %e, "CUDA backend op failed; reported at the next fallible call");
                *state = State::Pending(e);
            } else {
                tracing::debug!(op, error = %e, "further CUDA backend error after the first");
            }
        }
    }

    /// The value of `result`, or `fallback` after recording the error.
    pub fn value<T>(&self, op: &'static str, result: Result<T>, fallback: T) -> T {
        match result {
            Ok(v) => v,
            Err(e) => {
                self.record(op, Err(e));
                fallback
            }
        }
    }

    /// `Err` with the first recorded error (its original kind, once; a description after).
    pub fn check(&self) -> Result<()> {
        let mut state = self.lock();
        match std::mem::take(&mut *state) {
            State::Clean => Ok(()),
            State::Pending(e) => {
                *state = State::Reported(e.to_string());
                Err(e)
            }
            State::Reported(msg) => {
                *state = State::Reported(msg.clone());
                Err(KernelError::Cuda { op: "an earlier op", detail: msg })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_is_reported_with_its_kind_then_described() {
        let d = Deferred::default();
        assert!(d.check().is_ok());
        d.record("ok", Ok(()));
        assert!(d.check().is_ok());
        d.record("conv2d_fwd", Err(KernelError::OutOfMemory("workspace".into())));
        d.record("bn_apply", Err(KernelError::Cuda { op: "bn_apply", detail: "later".into() }));
        assert!(d.value("sumsq", Err(KernelError::NoCuda("x".into())), f64::NAN).is_nan());
        let first = d.check().unwrap_err();
        assert!(matches!(first, KernelError::OutOfMemory(ref m) if m == "workspace"), "{first}");
        let again = d.check().unwrap_err().to_string();
        assert!(again.contains("workspace") && !again.contains("later"), "{again}");
    }
}
