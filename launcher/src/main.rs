//! `launcher`: the user's entry point. Parses the command line and hands each verb to its file
//! under `verbs/`; errors are printed once, in full, and turn into a non-zero exit code.

mod cli;
mod dataset;
mod error;
mod group;
mod nsys;
mod verbs;

use clap::Parser;
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        Some(cli::Verb::Presets(a)) => verbs::presets::run(&a),
        Some(cli::Verb::Plan(a)) => verbs::plan::run(&a),
        Some(cli::Verb::Preview(a)) => verbs::preview::run(&a),
        Some(cli::Verb::Bench(a)) => verbs::bench::run(&a),
        Some(cli::Verb::Export(a)) => verbs::export::run(&a),
        Some(cli::Verb::Eval(a)) => verbs::eval::run(&a),
        Some(cli::Verb::Embed(a)) => verbs::embed::run(&a),
        Some(cli::Verb::Train(a)) => verbs::train::run(&a),
        None => verbs::train::run(&cli.train),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
