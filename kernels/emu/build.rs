//! Compiles the host twins of kernels/cu/*.cu with the system C++ compiler (C++20, -O2).
//!
//! For each `.cu` file one translation unit is generated into OUT_DIR: the shim prelude
//! (cxx/prelude.h: CUDA qualifiers, thread coordinates, intrinsics), the unmodified `.cu` file
//! included inside a namespace of its own (two files may define helpers of the same name), and
//! a table with one `moco_emu::Twin` per `extern "C" __global__` entry found in the file. The
//! twins take their parameter layout from the C++ signature itself (cxx/twin.h), so only the
//! entry NAMES come from scanning the source. A registry unit lists every file's table.
//! New `.cu` files and new entries are picked up by the next build (rerun-if-changed on the
//! folder).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// The source with comments blanked out (kept the same length, newlines kept), so a kernel
/// that is commented out is not taken for an entry. String literals are skipped over.
fn strip_comments(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'"' {
            let start = i;
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i = (i + 1).min(b.len());
            out.extend_from_slice(&b[start..i]);
        } else if b[i..].starts_with(b"//") {
            while i < b.len() && b[i] != b'\n' {
                out.push(b' ');
                i += 1;
            }
        } else if b[i..].starts_with(b"/*") {
            let end = src[i + 2..].find("*/").map(|e| i + 2 + e + 2).unwrap_or(b.len());
            out.extend(b[i..end].iter().map(|&c| if c == b'\n' { b'\n' } else { b' ' }));
            i = end;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).expect("only ASCII bytes were replaced")
}

fn skip_ws(s: &[u8], mut i: usize) -> usize {
    while i < s.len() && s[i].is_ascii_whitespace() {
        i += 1;
    }
    i
}

/// `word` at i (as a whole identifier): the index after it.
fn eat(s: &[u8], i: usize, word: &str) -> Option<usize> {
    let end = i + word.len();
    let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    (s.get(i..end)? == word.as_bytes() && !s.get(end).is_some_and(|&c| ident(c))).then_some(end)
}

fn ident(s: &[u8], i: usize) -> Option<(String, usize)> {
    let mut e = i;
    while e < s.len() && (s[e].is_ascii_alphanumeric() || s[e] == b'_') {
        e += 1;
    }
    (e > i && !s[i].is_ascii_digit()).then(|| (String::from_utf8_lossy(&s[i..e]).into_owned(), e))
}

/// Names of the `extern "C" __global__ void [__launch_bounds__(...)] NAME(` entries, in
/// order of appearance, each once. Whitespace, including newlines, may separate the tokens.
fn entries(src: &str) -> Vec<String> {
    let text = strip_comments(src);
    let s = text.as_bytes();
    let mut names = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("extern") {
        let start = from + at;
        from = start + 6;
        let entry = (|| {
            let mut i = eat(s, start, "extern")?;
            i = skip_ws(s, i);
            i = s[i..].starts_with(b"\"C\"").then_some(i + 3)?;
            i = eat(s, skip_ws(s, i), "__global__")?;
            i = eat(s, skip_ws(s, i), "void")?;
            i = skip_ws(s, i);
            if let Some(j) = eat(s, i, "__launch_bounds__") {
                // Balanced parentheses: the bounds may hold macros and parenthesised maths.
                let mut k = skip_ws(s, j);
                (s.get(k) == Some(&b'(')).then_some(())?;
                let mut depth = 0;
                loop {
                    match s.get(k)? {
                        b'(' => depth += 1,
                        b')' => depth -= 1,
                        _ => {}
                    }
                    k += 1;
                    if depth == 0 {
                        break;
                    }
                }
                i = skip_ws(s, k);
            }
            let (name, j) = ident(s, i)?;
            (s.get(skip_ws(s, j)) == Some(&b'(')).then_some(name)
        })();
        if let Some(name) = entry {
            if !names.contains(&name) {
                names.push(name);
            }
        }
    }
    names
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let cu_dir = manifest.join("../cu").canonicalize().expect("kernels/cu exists");
    let cxx_dir = manifest.join("cxx");
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    println!("cargo:rerun-if-changed={}", cu_dir.display());
    println!("cargo:rerun-if-changed={}", cxx_dir.display());
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=MOCO_EMU_FORCE_UCONTEXT");

    let mut files: Vec<PathBuf> = std::fs::read_dir(&cu_dir)
        .expect("read kernels/cu")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "cu"))
        .collect();
    files.sort();

    let mut units = Vec::new();
    let mut registry = String::from("// Generated by kernels/emu/build.rs.\n#include \"twin.h\"\n");
    let mut tables = Vec::new();
    for path in &files {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let id: String = stem.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        let src = std::fs::read_to_string(path).expect("read .cu");
        let names = entries(&src);
        let mut unit = format!(
            "// Generated by kernels/emu/build.rs from {path}.\n#include \"prelude.h\"\n\
             namespace moco_emu_{id} {{\n#include \"{path}\"\n}}\n#include \"twin.h\"\n",
            path = path.display()
        );
        writeln!(unit, "extern \"C\" const moco_emu::Twin moco_emu_twins_{id}[] = {{").unwrap();
        for n in &names {
            writeln!(unit, "    moco_emu::twin<&moco_emu_{id}::{n}>(\"{n}\"),").unwrap();
        }
        // A file without entries still gets a (never read) element: no zero-length arrays.
        writeln!(unit, "    moco_emu::Twin{{}},\n}};").unwrap();
        writeln!(unit, "extern \"C\" const unsigned long moco_emu_twins_{id}_len = {};", names.len())
            .unwrap();
        let unit_path = out.join(format!("twins_{id}.cpp"));
        write_if_changed(&unit_path, &unit);
        units.push(unit_path);
        writeln!(
            registry,
            "extern \"C\" const moco_emu::Twin moco_emu_twins_{id}[];\n\
             extern \"C\" const unsigned long moco_emu_twins_{id}_len;"
        )
        .unwrap();
        tables.push(id);
    }
    registry.push_str("static const moco_emu::Twin* const kTables[] = {");
    for id in &tables {
        write!(registry, "moco_emu_twins_{id}, ").unwrap();
    }
    registry.push_str("nullptr};\nstatic const unsigned long* const kLens[] = {");
    for id in &tables {
        write!(registry, "&moco_emu_twins_{id}_len, ").unwrap();
    }
    registry.push_str(
        "nullptr};\n\
         // The i-th twin over all files, in file then source order; null past the end.\n\
         extern \"C\" const moco_emu::Twin* moco_emu_twin_at(unsigned long i) {\n\
         \x20   for (unsigned long t = 0; kTables[t] != nullptr; ++t) {\n\
         \x20       if (i < *kLens[t]) return &kTables[t][i];\n\
         \x20       i -= *kLens[t];\n\
         \x20   }\n\
         \x20   return nullptr;\n\
         }\n",
    );
    let registry_path = out.join("twins_registry.cpp");
    write_if_changed(&registry_path, &registry);
    units.push(registry_path);

    let mut build = cc::Build::new();
    build
        .cpp(true)
        .std("c++20")
        // Speed matters (CI trains through these twins) and debug builds of the crate would
        // otherwise get -O0; no contraction into FMAs, so results do not depend on -march.
        .opt_level(2)
        .flag("-ffp-contract=off")
        .flag("-fvisibility=hidden")
        .include(&cxx_dir)
        .include(&cu_dir)
        .file(cxx_dir.join("runtime.cpp"))
        .file(cxx_dir.join("fiber.cpp"))
        .files(&units);
    if std::env::var_os("MOCO_EMU_FORCE_UCONTEXT").is_some() {
        build.define("MOCO_EMU_FORCE_UCONTEXT", None);
    }
    build.compile("moco_emu_twins");
}

fn write_if_changed(path: &Path, text: &str) {
    if std::fs::read_to_string(path).ok().as_deref() != Some(text) {
        std::fs::write(path, text).expect("write generated unit");
    }
}
