//! Every `extern "C" __global__` entry of kernels/cu/*.cu has a host twin whose parameter
//! layout is the one the source declares. The sources are scanned here independently of
//! build.rs: each `__global__` declaration is cut at its body's `{`, the parameter list is the
//! last parenthesised group, and each parameter is a pointer iff it contains `*`.

use moco_emu::kernels;
use std::collections::BTreeMap;

/// name -> [(size, is_pointer)] for every entry in the sources.
fn scan_sources() -> BTreeMap<String, Vec<(usize, bool)>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../cu");
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "cu") {
            continue;
        }
        let src: String = std::fs::read_to_string(&path)
            .unwrap()
            .lines()
            .map(|l| l.split("//").next().unwrap())
            .collect::<Vec<_>>()
            .join("\n");
        for piece in src.split("__global__").skip(1) {
            let decl = &piece[..piece.find('{').expect("an entry has a body")];
            let close = decl.rfind(')').unwrap();
            let open = decl[..close].rfind('(').unwrap();
            let name = decl[..open].split_whitespace().last().unwrap().to_string();
            let params = decl[open + 1..close]
                .split(',')
                .filter(|p| !p.trim().is_empty())
                .map(|p| {
                    let ptr = p.contains('*');
                    let size = if ptr || p.contains("double") {
                        8
                    } else {
                        assert!(p.contains("int") || p.contains("float"), "{name}: unexpected parameter {p}");
                        4
                    };
                    (size, ptr)
                })
                .collect();
            assert!(found.insert(name.clone(), params).is_none(), "{name} defined twice");
        }
    }
    found
}

#[test]
fn every_cu_entry_has_a_twin_with_the_declared_parameters() {
    let sources = scan_sources();
    assert!(sources.len() >= 56, "the scan found only {} entries", sources.len());
    let mut names = kernels::names();
    names.sort();
    assert_eq!(names, sources.keys().cloned().collect::<Vec<_>>(), "twins vs. source entries");
    for (name, want) in &sources {
        let twin = kernels::find(name).unwrap();
        let got: Vec<(usize, bool)> = kernels::params(twin).iter().map(|p| (p.size, p.is_pointer)).collect();
        assert_eq!(&got, want, "{name}: parameters");
    }
}
