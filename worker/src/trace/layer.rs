//! The `tracing` layer: every span entered and exited goes to the recorder (and to NVTX).

use super::nvtx::Nvtx;
use super::recorder::Recorder;
use std::sync::Arc;
use tracing::span::Id;
use tracing::Subscriber;
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// Records span intervals for phase totals and the Chrome trace; pushes NVTX ranges of the
/// same names when the NVTX library is present.
pub struct PhaseLayer {
    recorder: Arc<Recorder>,
    nvtx: Option<Nvtx>,
}

impl PhaseLayer {
    pub(super) fn new(recorder: Arc<Recorder>) -> PhaseLayer {
        PhaseLayer { recorder, nvtx: Nvtx::load() }
    }
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for PhaseLayer {
    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let name = span.metadata().name();
        self.recorder.enter(id.into_u64(), name);
        if let Some(n) = &self.nvtx {
            n.push(name);
        }
    }

    fn on_exit(&self, id: &Id, _ctx: Context<'_, S>) {
        if let Some(n) = &self.nvtx {
            n.pop();
        }
        self.recorder.exit(id.into_u64());
    }
}
