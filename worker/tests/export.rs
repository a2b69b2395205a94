//! Export to PyTorch: every key of torchvision's resnet50 state dict except fc, with its shape
//! and dtype, derived here from first principles (not from our topology); OIHW conv layout;
//! moco-v3 key names; the written file read back. `writes_files_for_the_pytorch_check` also
//! leaves a full-width export and a probe (fixed input, features computed here in eval mode)
//! for scripts/check_export.py, in $MOCO_EXPORT_DIR when set.

mod checkpoint_util;

use checkpoint_util::temp_dir;
use moco_kernels::cpu::Cpu;
use moco_worker::checkpoint::export::{export_tensors, ExportData, ExportFormat};
use moco_worker::checkpoint::tensors::{write_safetensors, Entry, TensorFile};
use moco_worker::checkpoint::{write_export, Weights};
use moco_worker::eval::FeatureExtractor;
use moco_worker::model::topology::{ParamKind, Part};
use moco_worker::model::{ModelDims, Topology};
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;

/// torchvision resnet50's state dict without fc: name -> (shape, is int64), from its definition.
fn torchvision_resnet50_keys() -> BTreeMap<String, (Vec<usize>, bool)> {
    let mut keys = BTreeMap::new();
    let bn = |keys: &mut BTreeMap<String, (Vec<usize>, bool)>, name: &str, c: usize| {
        for p in ["weight", "bias", "running_mean", "running_var"] {
            keys.insert(format!("{name}.{p}"), (vec![c], false));
        }
        keys.insert(format!("{name}.num_batches_tracked"), (vec![], true));
    };
    keys.insert("conv1.weight".into(), (vec![64, 3, 7, 7], false));
    bn(&mut keys, "bn1", 64);
    let mut inplanes = 64;
    for (s, blocks) in [3usize, 4, 6, 3].into_iter().enumerate() {
        let planes = 64 << s;
        for b in 0..blocks {
            let n = format!("layer{}.{b}", s + 1);
            keys.insert(format!("{n}.conv1.weight"), (vec![planes, inplanes, 1, 1], false));
            bn(&mut keys, &format!("{n}.bn1"), planes);
            keys.insert(format!("{n}.conv2.weight"), (vec![planes, planes, 3, 3], false));
            bn(&mut keys, &format!("{n}.bn2"), planes);
            keys.insert(format!("{n}.conv3.weight"), (vec![planes * 4, planes, 1, 1], false));
            bn(&mut keys, &format!("{n}.bn3"), planes * 4);
            if b == 0 {
                keys.insert(format!("{n}.downsample.0.weight"), (vec![planes * 4, inplanes, 1, 1], false));
                bn(&mut keys, &format!("{n}.downsample.1"), planes * 4);
            }
            inplanes = planes * 4;
        }
    }
    keys
}

fn full_width() -> Topology {
    Topology::new(ModelDims { width: 1.0, in_channels: 3, proj_hidden: 64, dim: 32, pred_hidden: 64 })
}

/// Random weights whose every backbone tensor matters: BN affine and running statistics away
/// from their init values, bottleneck gammas non-zero.
fn perturbed(topo: &Topology, seed: u64) -> Weights {
    let mut w = Weights::random(topo, seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    for p in &topo.params {
        match p.kind {
            ParamKind::BnGamma { .. } => {
                w.params[p.range()].iter_mut().for_each(|v| *v = rng.gen_range(0.5..1.5))
            }
            ParamKind::BnBeta { .. } => {
                w.params[p.range()].iter_mut().for_each(|v| *v = rng.gen_range(-0.2..0.2))
            }
            _ => {}
        }
    }
    for (name, off, len) in &topo.buffers {
        let (lo, hi) = if name.ends_with("running_var") { (0.5, 1.5) } else { (-0.2, 0.2) };
        w.q_stats[*off..off + len].iter_mut().for_each(|v| *v = rng.gen_range(lo..hi));
    }
    w.key_params.iter_mut().for_each(|v| *v *= 0.5);
    w.bn_updates = 42;
    w
}

#[test]
fn torchvision_export_has_every_resnet50_key_but_fc() {
    let want = torchvision_resnet50_keys();
    assert_eq!(want.len(), 318, "torchvision resnet50 has 320 keys, fc.weight and fc.bias excluded");
    let topo = full_width();
    let w = perturbed(&topo, 1);
    let got = export_tensors(&w, ExportFormat::Torchvision);
    let got_map: BTreeMap<String, (Vec<usize>, bool)> = got
        .iter()
        .map(|t| (t.name.clone(), (t.shape.clone(), matches!(t.data, ExportData::I64(_)))))
        .collect();
    assert_eq!(got.len(), got_map.len(), "duplicate names");
    for (k, v) in &want {
        assert_eq!(got_map.get(k), Some(v), "{k}");
    }
    assert_eq!(
        got_map.len(),
        want.len(),
        "extra keys: {:?}",
        got_map.keys().filter(|k| !want.contains_key(*k)).collect::<Vec<_>>()
    );

    // Values: OIHW conv weights, running statistics of the query encoder, the update count.
    let find = |n: &str| got.iter().find(|t| t.name == n).unwrap();
    let ExportData::F32(c) = &find("layer2.0.conv2.weight").data else { panic!("f32") };
    let spec = topo.param("layer2.0.conv2.weight").unwrap();
    let ours = &w.params[spec.range()];
    let (o, i, y, x, ci, k) = (5, 7, 2, 1, 128, 3);
    assert_eq!(c[((o * ci + i) * k + y) * k + x], ours[((o * k + y) * k + x) * ci + i]);
    let ExportData::F32(rv) = &find("layer3.1.bn2.running_var").data else { panic!("f32") };
    let off = topo.buffers.iter().find(|b| b.0 == "layer3.1.bn2.running_var").unwrap().1;
    assert_eq!(rv[..], w.q_stats[off..off + 256]);
    assert_eq!(find("bn1.num_batches_tracked").data, ExportData::I64(vec![42]));
}

#[test]
fn reduced_width_exports_the_same_names() {
    let topo =
        Topology::new(ModelDims { width: 0.0625, in_channels: 4, proj_hidden: 64, dim: 32, pred_hidden: 64 });
    let got = export_tensors(&Weights::random(&topo, 2), ExportFormat::Torchvision);
    let want = torchvision_resnet50_keys();
    let names: Vec<&String> = got.iter().map(|t| &t.name).collect();
    assert_eq!(names.len(), 318);
    assert!(names.iter().all(|n| want.contains_key(*n)));
    let conv1 = got.iter().find(|t| t.name == "conv1.weight").unwrap();
    assert_eq!(conv1.shape, vec![4, 4, 7, 7], "width 1/16: 4 stem channels, 4 input bands");
}

#[test]
fn moco_v3_export_follows_its_module_names() {
    let topo = full_width();
    let w = perturbed(&topo, 3);
    let got = export_tensors(&w, ExportFormat::MocoV3);
    let shape = |n: &str| got.iter().find(|t| t.name == n).map(|t| t.shape.clone());
    let backbone = torchvision_resnet50_keys();
    for (k, (s, _)) in &backbone {
        assert_eq!(shape(&format!("module.base_encoder.{k}")).as_ref(), Some(s), "{k}");
        assert_eq!(shape(&format!("module.momentum_encoder.{k}")).as_ref(), Some(s), "{k}");
    }
    for enc in ["base_encoder", "momentum_encoder"] {
        let p = format!("module.{enc}.fc");
        assert_eq!(shape(&format!("{p}.0.weight")), Some(vec![64, 2048]));
        for b in ["weight", "bias", "running_mean", "running_var"] {
            assert_eq!(shape(&format!("{p}.1.{b}")), Some(vec![64]), "{p}.1.{b}");
        }
        assert_eq!(shape(&format!("{p}.3.weight")), Some(vec![32, 64]));
        // The projector's last BN has no affine parameters (v3's `BatchNorm1d(dim, affine=False)`).
        assert_eq!(shape(&format!("{p}.4.running_mean")), Some(vec![32]));
        assert_eq!(shape(&format!("{p}.4.weight")), None);
        assert_eq!(shape(&format!("{p}.4.num_batches_tracked")), Some(vec![]));
    }
    assert_eq!(shape("module.predictor.0.weight"), Some(vec![64, 32]));
    assert_eq!(shape("module.predictor.1.bias"), Some(vec![64]));
    assert_eq!(shape("module.predictor.3.weight"), Some(vec![32, 64]));
    let n_head = |prefix: &str| got.iter().filter(|t| t.name.starts_with(prefix)).count();
    // backbone 318 + fc (1 + 5 + 1 + 3) = 328 per encoder, predictor 1 + 5 + 1.
    assert_eq!(n_head("module.base_encoder."), 328);
    assert_eq!(n_head("module.momentum_encoder."), 328);
    assert_eq!(n_head("module.predictor."), 7);
    assert_eq!(got.len(), 328 * 2 + 7);
    // The momentum encoder's weights, not the query's.
    let key = got.iter().find(|t| t.name == "module.momentum_encoder.fc.0.weight").unwrap();
    let spec = topo.param("projector.0.weight").unwrap();
    assert_eq!(key.data, ExportData::F32(w.key_params[spec.range()].to_vec()));
    assert!(topo.params.iter().any(|p| p.part == Part::Predictor));
}

#[test]
fn written_export_reads_back_with_its_shapes() {
    let dir = temp_dir("export-file");
    let topo =
        Topology::new(ModelDims { width: 0.125, in_channels: 3, proj_hidden: 64, dim: 32, pred_hidden: 64 });
    let w = perturbed(&topo, 4);
    let path = dir.join("sub").join("resnet50.safetensors");
    let n = write_export(&w, ExportFormat::Torchvision, &path, "test").unwrap();
    assert_eq!(n, 318);
    let f = TensorFile::open(&path).unwrap();
    for t in export_tensors(&w, ExportFormat::Torchvision) {
        match t.data {
            ExportData::F32(v) => assert_eq!(f.f32(&t.name, Some(&t.shape)).unwrap(), v, "{}", t.name),
            ExportData::I64(v) => assert_eq!(f.i64(&t.name, Some(&t.shape)).unwrap(), v, "{}", t.name),
        }
    }
    assert_eq!(f.metadata().get("format").map(String::as_str), Some("pt"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn writes_files_for_the_pytorch_check() {
    let dir = match std::env::var("MOCO_EXPORT_DIR") {
        Ok(d) => {
            std::fs::create_dir_all(&d).unwrap();
            std::path::PathBuf::from(d)
        }
        Err(_) => temp_dir("export-probe"),
    };
    let topo = full_width();
    let w = perturbed(&topo, 5);
    write_export(&w, ExportFormat::Torchvision, &dir.join("resnet50.safetensors"), "test").unwrap();
    write_export(&w, ExportFormat::MocoV3, &dir.join("resnet50-mocov3.safetensors"), "test").unwrap();
    // A fixed input and the features the Rust backbone computes for it in eval mode.
    let (n, size) = (2usize, 64usize);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(6);
    let nchw: Vec<f32> = (0..n * 3 * size * size).map(|_| rng.gen_range(-2.0f32..2.0)).collect();
    let mut nhwc = vec![0.0f32; nchw.len()];
    for b in 0..n {
        for c in 0..3 {
            for p in 0..size * size {
                nhwc[(b * size * size + p) * 3 + c] = nchw[(b * 3 + c) * size * size + p];
            }
        }
    }
    let feats = FeatureExtractor::new(&Cpu { amp: false }, &w).unwrap().features(&nhwc, n, size).unwrap();
    assert_eq!(feats.len(), n * 2048);
    assert!(feats.iter().all(|v| v.is_finite()));
    assert!(feats.iter().filter(|v| **v > 0.0).count() > feats.len() / 10, "features are not degenerate");
    let entries =
        [Entry::f32("input", vec![n, 3, size, size], &nchw), Entry::f32("features", vec![n, 2048], &feats)];
    let file = std::fs::File::create(dir.join("probe.safetensors")).unwrap();
    write_safetensors(std::io::BufWriter::new(file), &entries, &BTreeMap::new()).unwrap();
    if std::env::var("MOCO_EXPORT_DIR").is_err() {
        let _ = std::fs::remove_dir_all(&dir);
    }
}
