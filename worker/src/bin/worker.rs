//! `worker`: one rank of a moco-rs run. Started by the launcher, by srun, or by hand:
//!
//! ```text
//! worker --device cpu --preset tiny --data synthetic --steps 100 --out runs/demo   # alone
//! worker --rank 0 --world-size 2 --master host0:29500 ...                        # by hand
//! srun worker ...                                                                # SLURM_* env
//! ```

use clap::{Parser, Subcommand};
use moco_worker::rendezvous::control::{EXIT_GROUP_BROKEN, EXIT_STOPPED};
use moco_worker::session::args::TrainArgs;
use moco_worker::WorkerError;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

/// Signals received so far (any of the three): the second one ends the process.
static SIGNALS: AtomicUsize = AtomicUsize::new(0);

/// What a second signal prints before the process ends.
const SECOND_SIGNAL: &[u8] = b"\nworker: second signal: stopping at once, without saving this step; \
the newest checkpoint on disk is whole (checkpoints are written atomically): run the same \
command to resume from it\n";

/// What the first signal prints.
const FIRST_SIGNAL: &[u8] =
    b"\nworker: stop requested: finishing this step and saving (signal again to stop at once)\n";

/// First signal: set `stop` (the step finishes, the checkpoint is saved, exit 75). Second:
/// print why and exit at once with 128 + the signal, as the default action would report it.
fn on_signal(sig: i32, stop: Arc<AtomicBool>) -> std::io::Result<signal_hook::SigId> {
    let action = move || {
        if SIGNALS.fetch_add(1, Ordering::SeqCst) >= 1 {
            // SAFETY: write(2) on stderr's descriptor with a valid static buffer; write(2) is
            // async-signal-safe. A failed write is ignored: there is nothing else to do.
            unsafe {
                let _ = libc::write(2, SECOND_SIGNAL.as_ptr().cast(), SECOND_SIGNAL.len());
            }
            // _exit(2): no destructors or atexit handlers, async-signal-safe. Files being
            // written are temporary names; the last renamed checkpoint stays whole.
            signal_hook::low_level::exit(128 + sig);
        }
        stop.store(true, Ordering::SeqCst);
        // SAFETY: as above, write(2) with a valid static buffer is async-signal-safe.
        unsafe {
            let _ = libc::write(2, FIRST_SIGNAL.as_ptr().cast(), FIRST_SIGNAL.len());
        }
    };
    // SAFETY: the action only touches atomics and calls write(2) and _exit(2), all of which
    // are async-signal-safe; it allocates nothing and takes no lock.
    unsafe { signal_hook::low_level::register(sig, action) }
}

#[derive(Parser)]
#[command(
    name = "worker",
    version,
    about = "One rank of a moco-rs hybrid-MoCo run",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    train: TrainArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Train (the default).
    Train(Box<TrainArgs>),
    /// Every op on the GPU against the CPU reference, then a few training steps on both.
    Selftest(SelftestArgs),
}

#[derive(clap::Args)]
struct SelftestArgs {
    /// cuda (the GPU against the CPU) or cpu (the CPU against itself: checks the harness).
    #[arg(long, default_value = "cuda")]
    device: String,
    /// GPU number.
    #[arg(long, default_value_t = 0)]
    gpu: usize,
}

fn main() -> ExitCode {
    // First, before any thread: find the CUDA libraries and put them on the library path
    // (re-executing once if needed), as the launcher does; a worker the launcher spawned
    // inherits its result and searches nothing.
    if let moco_kernels::cuda::libs::bridge::ProcessEnv::Failed(_, why) =
        moco_kernels::cuda::libs::prepare_process()
    {
        eprintln!("note: {why}");
    }
    let cli = Cli::parse();
    let args = match cli.command {
        Some(Command::Train(a)) => *a,
        Some(Command::Selftest(s)) => {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(
                    tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
                )
                .with_writer(std::io::stderr)
                .try_init();
            return match moco_worker::selftest::run(&s.device, s.gpu) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            };
        }
        None => cli.train,
    };
    // SIGINT/SIGTERM/SIGUSR1 (SLURM's warning before preemption): finish the step and stop.
    // A second one stops at once (a step of a full-size preset on the CPU takes minutes).
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM, signal_hook::consts::SIGUSR1] {
        if let Err(e) = on_signal(sig, stop.clone()) {
            eprintln!("warning: cannot handle signal {sig}: {e}");
        }
    }
    // Log lines on stderr (RUST_LOG) and the phase layer; `--trace` adds the Chrome trace,
    // written when the guard finishes (per rank once the group is joined).
    let mut trace = match moco_worker::trace::init(args.run.trace.as_deref(), 0) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = moco_worker::session::run(&args, stop, &mut trace);
    if let Some(f) = trace.file().map(|f| f.to_path_buf()) {
        match trace.finish() {
            Ok(()) => eprintln!("trace written to {}", f.display()),
            Err(e) => eprintln!("warning: the trace was not written: {e}"),
        }
    }
    match result {
        Ok(o) if o.summary.interrupted => ExitCode::from(EXIT_STOPPED as u8),
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            match e {
                WorkerError::Collective(_) => ExitCode::from(EXIT_GROUP_BROKEN as u8),
                _ => ExitCode::FAILURE,
            }
        }
    }
}
