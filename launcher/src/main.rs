//! `launcher`: the user's entry point. Parses the command line and hands each verb to its file
//! under `verbs/`; errors are printed once, in full, and turn into a non-zero exit code.

/// A line on stdout that survives a closed pipe: `launcher eval ... | head -1` must not panic
/// (println! does on EPIPE) nor lose the work after the print (the eval's summary.md).
macro_rules! say {
    () => { $crate::stdout::write("\n") };
    ($($t:tt)*) => { $crate::stdout::write(&format!("{}\n", format_args!($($t)*))) };
}
/// `print!` without the newline, with the same care.
macro_rules! say_part {
    ($($t:tt)*) => { $crate::stdout::write(&format!($($t)*)) };
}

mod cli;
mod dataset;
mod error;
mod group;
mod nsys;
mod stdout;
mod verbs;

use clap::Parser;
use moco_worker::rendezvous::control::EXIT_STOPPED;
use std::process::ExitCode;

/// Exit code of a run stopped at once on a second signal, without saving: 130, the shell's
/// code for an interrupted command (128 + SIGINT), whichever signal it was.
const EXIT_KILLED: u8 = 130;

fn main() -> ExitCode {
    // First, before any thread: find the CUDA libraries and put them on the library path
    // (re-executing once if needed); the workers spawned later inherit it.
    if let moco_kernels::cuda::libs::bridge::ProcessEnv::Failed(_, why) =
        moco_kernels::cuda::libs::prepare_process()
    {
        eprintln!("note: {why}");
    }
    let cli = cli::Cli::parse();
    let train = |a: &cli::TrainArgs| match verbs::train::run(a) {
        Ok(verbs::train::Ended::Stopped) => Ok(Some(EXIT_STOPPED as u8)),
        Ok(verbs::train::Ended::Killed) => Ok(Some(EXIT_KILLED)),
        Ok(verbs::train::Ended::Finished) => Ok(None),
        Err(e) => Err(e),
    };
    let result = match cli.command {
        Some(cli::Verb::Presets(a)) => verbs::presets::run(&a).map(|()| None),
        Some(cli::Verb::Plan(a)) => verbs::plan::run(&a).map(|()| None),
        Some(cli::Verb::Preview(a)) => verbs::preview::run(&a).map(|()| None),
        Some(cli::Verb::Bench(a)) => verbs::bench::run(&a).map(|()| None),
        Some(cli::Verb::Export(a)) => verbs::export::run(&a).map(|()| None),
        Some(cli::Verb::Eval(a)) => verbs::eval::run(&a).map(|()| None),
        Some(cli::Verb::Embed(a)) => verbs::embed::run(&a).map(|()| None),
        Some(cli::Verb::Doctor(a)) => verbs::doctor::run(&a),
        Some(cli::Verb::Train(a)) => train(&a),
        None => train(&cli.train),
    };
    // 0: done; 75: stopped on a signal with its checkpoint saved; 130: stopped at once on a
    // second signal; 1: failed (2: bad flags,
    // from clap). README, "Exit codes".
    match result {
        Ok(None) => ExitCode::SUCCESS,
        Ok(Some(code)) => ExitCode::from(code),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
