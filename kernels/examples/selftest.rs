//! The backend self-test as a standalone program, for GPU boxes where only prebuilt binaries
//! run (scripts/gpu_verify.sh uses it beside `worker selftest --device cuda`).
//!
//! `selftest --device cuda [--gpu N]`: the CPU against CUDA (fp16 and fp32 activations).
//! `selftest --device cpu [--full]`: the CPU against itself (a sanity check of the harness,
//! and a measure of the CPU reference's time at full size).
//! Exit status: 0 when every comparison passed, 1 when one failed, 2 on an error.

use moco_kernels::cpu::Cpu;
use moco_kernels::selftest::{self, Options, Scale};
use std::process::ExitCode;
use std::time::Instant;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| args.iter().position(|a| a == flag).and_then(|i| args.get(i + 1)).cloned();
    let device = value("--device").unwrap_or_else(|| "cuda".into());
    let gpu: usize = match value("--gpu").map(|v| v.parse()) {
        None => 0,
        Some(Ok(g)) => g,
        Some(Err(_)) => {
            eprintln!("selftest: --gpu takes a device number");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let report = match device.as_str() {
        "cuda" => selftest::selftest_cuda(gpu),
        "cpu" => {
            let scale = if args.iter().any(|a| a == "--full") { Scale::Full } else { Scale::Quick };
            let mut all = selftest::Report::default();
            let mut result = Ok(());
            for amp in [true, false] {
                let opts = Options { scale, act_fp16: amp, ..Options::default() };
                match selftest::run(&Cpu { amp }, &Cpu { amp }, &opts) {
                    Ok(r) => all.extend(r),
                    Err(e) => result = Err(e),
                }
            }
            result.map(|()| all)
        }
        other => {
            eprintln!("selftest: unknown --device {other} (cpu or cuda)");
            return ExitCode::from(2);
        }
    };
    match report {
        Ok(report) => {
            report.print();
            println!("({:.1} s)", started.elapsed().as_secs_f64());
            if report.passed() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("selftest: {e}");
            ExitCode::from(2)
        }
    }
}
