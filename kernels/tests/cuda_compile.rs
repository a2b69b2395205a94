//! CI check of the CUDA kernels WITHOUT a GPU: every `.cu` file in kernels/cu compiles with
//! NVRTC for sm_80, sm_86 and sm_90 (PTX and CUBIN, with the exact options the run-time
//! loader uses), without warnings, and every kernel the Rust wrappers launch exists in the
//! PTX with the parameter list its `KernelDef` declares.
//!
//! NVRTC comes from NVIDIA's PyPI wheels: `eval "$(scripts/setup_nvrtc.sh)"` sets
//! MOCO_NVRTC_INCLUDE and LD_LIBRARY_PATH (scripts/test.sh does this). Without them these
//! tests FAIL, on purpose: a skipped compile check is how a broken kernel reaches a GPU box.

use moco_kernels::cuda::launch::KernelDef;
use moco_kernels::cuda::nvrtc;
use moco_kernels::cuda::FAMILIES;
use moco_kernels::KernelError;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The architectures CI compiles for: A100 (sm_80), RTX 30-series (sm_86, the main
/// audience), H100 (sm_90).
const ARCHS: [&str; 3] = ["sm_80", "sm_86", "sm_90"];

const SETUP_HINT: &str = "run `eval \"$(scripts/setup_nvrtc.sh)\"` from the repository root \
     (it installs NVRTC from PyPI into .venv-cuda and exports MOCO_NVRTC_INCLUDE and \
     LD_LIBRARY_PATH), then rerun; scripts/test.sh does this for you";

/// The include folder NVRTC needs for cuda_fp16.h; fails with the setup hint when missing.
fn nvrtc_include() -> Vec<String> {
    let include = std::env::var(nvrtc::WHEEL_INCLUDE_ENV)
        .unwrap_or_else(|_| panic!("{} is not set: {SETUP_HINT}", nvrtc::WHEEL_INCLUDE_ENV));
    assert!(
        Path::new(&include).join("cuda_fp16.h").is_file(),
        "{}={include} holds no cuda_fp16.h: {SETUP_HINT}",
        nvrtc::WHEEL_INCLUDE_ENV
    );
    assert!(
        nvrtc::nvrtc_present(),
        "libnvrtc cannot be loaded (LD_LIBRARY_PATH={:?}): {SETUP_HINT}",
        std::env::var("LD_LIBRARY_PATH").unwrap_or_default()
    );
    vec![include]
}

/// `.visible .entry NAME(` followed by `.param .TYPE NAME_param_K` lines: (name, types).
fn ptx_entries(ptx: &str) -> Vec<(String, Vec<String>)> {
    let mut entries = Vec::new();
    let mut lines = ptx.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.trim().strip_prefix(".visible .entry ") else { continue };
        if let Some(name) = rest.trim().strip_suffix("()") {
            entries.push((name.to_string(), Vec::new()));
            continue;
        }
        let name = rest.trim_end_matches('(').trim().to_string();
        let mut params = Vec::new();
        for p in lines.by_ref() {
            let p = p.trim();
            if p.starts_with(')') {
                break;
            }
            if let Some(decl) = p.strip_prefix(".param ") {
                let ty = decl.split_whitespace().next().unwrap_or_default();
                params.push(ty.to_string());
            }
        }
        entries.push((name, params));
    }
    entries
}

/// Differences between the PTX entries of one file and the Rust side's definitions.
fn signature_mismatches(file: &str, ptx: &str, defs: &[&KernelDef]) -> Vec<String> {
    let entries = ptx_entries(ptx);
    let mut problems = Vec::new();
    for def in defs {
        match entries.iter().find(|(name, _)| name == def.name) {
            None => {
                problems.push(format!("{file}: kernel {} is launched from Rust but not in the PTX", def.name))
            }
            Some((_, params)) => {
                let want: Vec<&str> = def.params.iter().map(|p| p.ptx_type()).collect();
                if params.iter().map(String::as_str).ne(want.iter().copied()) {
                    problems.push(format!(
                        "{file}: kernel {} takes {params:?} in PTX but its KernelDef says {want:?}",
                        def.name
                    ));
                }
            }
        }
    }
    for (name, _) in &entries {
        if !defs.iter().any(|d| d.name == name) {
            problems.push(format!("{file}: kernel {name} has no KernelDef (no Rust launcher)"));
        }
    }
    problems
}

#[test]
fn every_cu_file_is_a_listed_family() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("cu");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".cu"))
        .collect();
    let listed: BTreeSet<String> = FAMILIES.iter().map(|f| f.source.file.to_string()).collect();
    assert_eq!(on_disk, listed, "kernels/cu and cuda::FAMILIES must name the same .cu files");
    for family in &FAMILIES {
        let text = std::fs::read_to_string(dir.join(family.source.file)).unwrap();
        assert_eq!(text, family.source.text, "{} embedded text is stale", family.source.file);
        assert!(!family.defs.is_empty(), "{} declares no kernels", family.source.file);
    }
}

#[test]
fn ptx_entry_parser_reads_names_and_parameter_types() {
    let ptx = "//\n.visible .entry k1(\n\t.param .u32 k1_param_0,\n\t.param .u64 .ptr .global .align 4 k1_param_1\n)\n{\n}\n.visible .entry k2()\n{\n}\n";
    let entries = ptx_entries(ptx);
    assert_eq!(entries.len(), 2);
    assert_eq!(entries[0], ("k1".to_string(), vec![".u32".to_string(), ".u64".to_string()]));
    assert_eq!(entries[1], ("k2".to_string(), Vec::new()), "a parameterless entry");
}

#[test]
fn every_kernel_compiles_for_sm80_sm86_sm90_and_matches_its_rust_signature() {
    let include = nvrtc_include();
    let (major, minor) = nvrtc::version().expect("NVRTC version");
    println!("NVRTC {major}.{minor}, include {include:?}");

    // One thread per architecture: the 24 compilations take a few seconds in all.
    let failures: Vec<String> = std::thread::scope(|scope| {
        let handles: Vec<_> = ARCHS
            .iter()
            .map(|&arch| {
                let include = &include;
                scope.spawn(move || {
                    let mut failures = Vec::new();
                    for family in &FAMILIES {
                        let file = family.source.file;
                        match nvrtc::compile(&family.source, arch, include) {
                            Err(KernelError::Compile { log, .. }) => {
                                failures.push(format!("{file} ({arch}) failed to compile:\n{log}"))
                            }
                            Err(other) => failures.push(format!("{file} ({arch}): {other}")),
                            Ok(out) => {
                                if !out.log.trim().is_empty() {
                                    failures.push(format!(
                                        "{file} ({arch}) compiled with warnings:\n{}",
                                        out.log
                                    ));
                                }
                                if !out.cubin.starts_with(b"\x7fELF") {
                                    failures.push(format!("{file} ({arch}): the CUBIN is not an ELF image"));
                                }
                                let target = format!(".target {arch}");
                                if !out.ptx.contains(&target) {
                                    failures.push(format!("{file} ({arch}): the PTX lacks `{target}`"));
                                }
                                if arch == ARCHS[0] {
                                    failures.extend(signature_mismatches(file, &out.ptx, family.defs));
                                }
                            }
                        }
                    }
                    failures
                })
            })
            .collect();
        handles.into_iter().flat_map(|h| h.join().expect("compile thread panicked")).collect()
    });
    assert!(failures.is_empty(), "{} problem(s):\n\n{}", failures.len(), failures.join("\n\n"));
}
