//! Divergence through the real binaries: skipped steps change nothing, a run that keeps
//! skipping stops with a diagnosis, no checkpoint holds NaN/inf, and export / eval / embed
//! refuse a checkpoint that does, naming the tensor.

use moco_tests::{assert_contains, run_launcher, TempDir, TINY_RUN};
use moco_worker::checkpoint::tensors::TensorFile;
use std::path::{Path, PathBuf};

fn step_dir(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoints/step-{step:06}"))
}

fn train(out: &Path, workers: &str, extra: &[&str]) -> moco_tests::Ran {
    let mut args = vec!["--device", "cpu", "--workers", workers];
    args.extend(TINY_RUN);
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    run_launcher(&args)
}

/// Every f32 tensor of every rank file of a step folder: (file, tensor) -> values.
fn tensors(dir: &Path) -> Vec<((String, String), Vec<f32>)> {
    let mut v = Vec::new();
    for r in 0..2 {
        let file = format!("rank-{r}.safetensors");
        let f = TensorFile::open(&dir.join(&file)).unwrap();
        for name in f.names() {
            if let Ok(x) = f.f32(&name, None) {
                v.push(((file.clone(), name), x));
            }
        }
    }
    v
}

#[test]
fn a_diverging_run_stops_with_a_diagnosis_and_its_checkpoints_stay_finite() {
    let dir = TempDir::new("diverge");
    let out = dir.path().join("run");
    // lr 1e6: the first ~14 steps apply (the weights grow to ~1e10), then every forward
    // overflows and the steps are skipped; with 8 steps per epoch, the checkpoints at 24 and 32
    // fall inside that stretch (checked below).
    let err = train(
        &out,
        "2",
        &["--base-lr", "1e6", "--steps", "60", "--checkpoint-every", "1", "--keep-last", "0"],
    )
    .expect_err();
    assert_contains(
        &err,
        &[
            "training diverged: 20 optimiser steps in a row were skipped (steps ",
            "(limit: --max-skipped-steps 20). At step ",
            ": lr ",
            "loss scale 1;",
            "BN running statistic(s) non-finite (put back): query.",
            "largest |weight|",
            "lower --base-lr",
        ],
    );
    assert!(!err.contains("restarting"), "a divergence is not restarted:\n{err}");
    let range = err.split("skipped (steps ").nth(1).and_then(|r| r.split(')').next()).unwrap();
    let (first, last) = range.split_once('-').unwrap();
    let (first, last): (u64, u64) = (first.parse().unwrap(), last.parse().unwrap());
    assert!(first <= 24 && last >= 32 && last - first == 19, "skipped {first}-{last}");
    assert!(!step_dir(&out, 40).exists(), "nothing is saved after the divergence");
    let (before, during) = (tensors(&step_dir(&out, 24)), tensors(&step_dir(&out, 32)));
    for ((file, name), v) in before.iter().chain(&during) {
        assert!(v.iter().all(|x| x.is_finite()), "{file}: {name} holds NaN/inf");
    }
    // Steps 25-32 were all skipped: they changed nothing but the momentum encoder's EMA
    // (toward unchanged weights), BN statistics and queue included.
    assert_eq!(before.len(), during.len());
    for (((file, name), a), (_, b)) in before.iter().zip(&during) {
        if !name.starts_with("key_param.") {
            assert!(a == b, "{file}: {name} changed during skipped steps");
        }
    }
}

#[test]
fn amp_stops_when_the_loss_scale_falls_below_the_floor() {
    let dir = TempDir::new("diverge-amp");
    let out = dir.path().join("run");
    let err = train(&out, "1", &["--amp", "--base-lr", "1e6", "--steps", "60"]).expect_err();
    assert_contains(
        &err,
        &["training diverged: the AMP loss scale fell to", "below --min-loss-scale 1e0", "--no-amp"],
    );
    assert!(!out.join("checkpoints/latest").exists(), "nothing was saved");
}

/// Write NaN into the first value of `tensor` in `file` and fix meta.json's checksum, as a
/// diverged run of an older version would have left it.
fn poison(step: &Path, file: &str, tensor: &str) {
    patch(step, file, tensor, &f32::NAN.to_le_bytes());
}

/// Overwrite the first bytes of `tensor` in `file` with `value` and fix meta.json's checksum.
fn patch(step: &Path, file: &str, tensor: &str, value: &[u8]) {
    let path = step.join(file);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    let begin = header[tensor]["data_offsets"][0].as_u64().unwrap() as usize + 8 + n;
    bytes[begin..begin + value.len()].copy_from_slice(value);
    std::fs::write(&path, &bytes).unwrap();
    let sum = format!("{:016x}", TensorFile::open(&path).unwrap().xxh3());
    let meta_path = step.join("meta.json");
    let mut meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta_path).unwrap()).unwrap();
    for f in meta["files"].as_array_mut().unwrap() {
        if f["file"] == file {
            f["xxh3"] = serde_json::Value::String(sum.clone());
        }
    }
    std::fs::write(&meta_path, serde_json::to_string(&meta).unwrap()).unwrap();
}

#[test]
fn export_eval_and_embed_refuse_a_checkpoint_with_nan_naming_the_tensor() {
    let dir = TempDir::new("nan-ck");
    let out = dir.path().join("run");
    train(&out, "1", &["--steps", "2"]).expect_ok();
    let tensor = "q_stats.layer1.0.bn1.running_var";
    poison(&step_dir(&out, 2), "rank-0.safetensors", tensor);
    let ck = out.to_str().unwrap();
    let file = dir.path().join("w.safetensors");
    let feats = dir.path().join("f.safetensors");
    for args in [
        vec!["export", "--checkpoint", ck, "--out", file.to_str().unwrap()],
        vec!["eval", "--checkpoint", ck, "--data", "synthetic:64:64"],
        vec!["embed", "--checkpoint", ck, "--data", "synthetic:64:64", "--out", feats.to_str().unwrap()],
    ] {
        let err = run_launcher(&args).expect_err();
        assert_contains(&err, &[tensor, "non-finite value(s) (NaN/inf)", "older checkpoint"]);
    }
    assert!(!file.exists() && !feats.exists(), "nothing written from a NaN checkpoint");
}

#[test]
fn a_checkpoint_whose_queue_pointer_is_off_a_whole_step_stops_the_resumed_run_naming_it() {
    let dir = TempDir::new("qptr-ck");
    let out = dir.path().join("run");
    train(&out, "1", &["--steps", "2"]).expect_ok();
    // 3 is a row of the 64-row shard (the loader checks the range) but not a multiple of the 16
    // keys a step enqueues: the device-pointer enqueue must refuse it and write nothing.
    patch(&step_dir(&out, 2), "rank-0.safetensors", "queue.ptr", &3i64.to_le_bytes());
    let args = ["--device", "cpu", "--workers", "1", "--resume", out.to_str().unwrap(), "--steps", "4"];
    let err = run_launcher(&args).expect_err();
    assert_contains(
        &err,
        &[
            "the negative queue's enqueue was refused at step 3 on rank 0",
            "write pointer of its 64-row shard is 3",
            "Nothing was written",
            "resume from an older checkpoint",
        ],
    );
    assert!(!step_dir(&out, 4).exists(), "nothing is saved after the refusal");
}
