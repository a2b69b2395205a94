//! Writes the PTX NVRTC produces for every kernel family, for one architecture, into a folder:
//! `cargo run -p moco-kernels --example dump_ptx -- <out_dir> [sm_86]`.
//! Used by scripts/ptxas_report.sh (register and spill counts per kernel, no GPU needed).

use moco_kernels::cuda::{nvrtc, FAMILIES};
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let out: PathBuf = args.next().ok_or("usage: dump_ptx <out_dir> [sm_XY]")?.into();
    let arch = args.next().unwrap_or_else(|| "sm_86".to_string());
    let include = nvrtc::default_include_dirs();
    if include.is_empty() {
        return Err("no folder with cuda_fp16.h found: eval \"$(scripts/setup_nvrtc.sh)\" first".into());
    }
    std::fs::create_dir_all(&out)?;
    for family in &FAMILIES {
        let compiled = nvrtc::compile(&family.source, &arch, &include)?;
        let path = out.join(family.source.file.replace(".cu", ".ptx"));
        std::fs::write(&path, compiled.ptx)?;
        println!("{}", path.display());
    }
    Ok(())
}
