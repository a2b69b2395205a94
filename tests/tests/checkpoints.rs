//! Checkpoints through the real binaries: resume (by hand and after a crash with
//! --max-restarts) continues bit for bit, a stop signal saves before exiting, --init-from
//! says what it does not carry over, and export / eval / embed read what training wrote.

use moco_tests::{
    assert_contains, launcher, run_launcher, spawn_stderr_lines, wait_for_line, TempDir, TINY_RUN,
};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Small, quick runs: 128 synthetic tiles, batch 8, 2 workers: 8 steps per epoch.
const BASE: &[&str] = &["--device", "cpu", "--workers", "2"];

/// `BASE` plus the shared smallest training config.
fn quick() -> Vec<&'static str> {
    [BASE, TINY_RUN].concat()
}

fn train(out: &Path, extra: &[&str]) -> moco_tests::Ran {
    let mut args = quick();
    args.extend(["--out", out.to_str().unwrap()]);
    args.extend(extra);
    run_launcher(&args)
}

/// (file, xxh3) of every rank file of a step folder: equal lists mean bit-identical state
/// (weights, momentum encoder, optimiser, BN statistics, queue, counters).
fn rank_hashes(step_dir: &Path) -> Vec<(String, String)> {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step_dir.join("meta.json")).unwrap()).unwrap();
    meta["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["file"].as_str().unwrap().to_string(), f["xxh3"].as_str().unwrap().to_string()))
        .collect()
}

fn step_dir(out: &Path, step: u64) -> PathBuf {
    out.join(format!("checkpoints/step-{step:06}"))
}

fn metric_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["step"].as_u64().unwrap())
        .collect()
}

/// The tensors of a safetensors file: name -> shape (the header is JSON after a u64 length).
fn safetensors_shapes(path: &Path) -> BTreeMap<String, Vec<u64>> {
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != "__metadata__")
        .map(|(k, v)| {
            (k.clone(), v["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).collect())
        })
        .collect()
}

#[test]
fn resume_through_the_launcher_is_bit_identical() {
    let dir = TempDir::new("resume");
    let (whole, split) = (dir.path().join("whole"), dir.path().join("split"));
    train(&whole, &["--steps", "6"]).expect_ok();
    train(&split, &["--steps", "3"]).expect_ok();
    // Automatic: the run folder already has a checkpoint.
    let r = train(&split, &["--steps", "6"]).expect_ok();
    assert_contains(&r.stderr, &["resuming from", "step-000003", "(step 3,"]);
    assert_eq!(rank_hashes(&step_dir(&whole, 6)), rank_hashes(&step_dir(&split, 6)));
    assert_eq!(rank_hashes(&step_dir(&whole, 6)).len(), 2, "one file per rank");
    assert_eq!(metric_steps(&split), [1, 2, 3, 4, 5, 6]);

    // `--resume RUN_DIR` alone takes the run's own config and folder.
    let r = run_launcher(&[
        "--device",
        "cpu",
        "--workers",
        "2",
        "--resume",
        split.to_str().unwrap(),
        "--steps",
        "7",
    ])
    .expect_ok();
    assert_contains(&r.stderr, &["using the run's config", "resuming from", "(step 6,"]);
    assert!(step_dir(&split, 7).join("meta.json").is_file());
    assert!(split.join("summary.md").is_file() && split.join("plots/loss.png").is_file());
}

/// The launcher's exit code once it ends (None: it had to be killed).
fn drain(child: &mut Child, rx: &std::sync::mpsc::Receiver<String>, seen: &mut Vec<String>) -> Option<i32> {
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
            seen.push(l);
        }
        if let Ok(Some(s)) = child.try_wait() {
            while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
                seen.push(l);
            }
            return s.code();
        }
    }
    let _ = child.kill();
    None
}

fn pid_of(seen: &[String], rank: usize) -> u32 {
    let prefix = format!("rank {rank}: pid ");
    seen.iter().find_map(|l| l.strip_prefix(&prefix)).and_then(|p| p.trim().parse().ok()).expect("pid line")
}

fn kill(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).status();
}

fn quick_args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = quick().iter().map(|s| s.to_string()).collect();
    v.extend(["--out".to_string(), out.display().to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

#[test]
fn a_crashed_group_restarts_from_the_last_checkpoint_and_ends_as_if_uninterrupted() {
    let dir = TempDir::new("restart");
    let (whole, crashed) = (dir.path().join("whole"), dir.path().join("crashed"));
    // 8 steps per epoch: checkpoints at 8 and 16, the end at 20.
    train(&whole, &["--steps", "20", "--checkpoint-every", "1"]).expect_ok();
    let (mut child, rx) = spawn_stderr_lines(
        &launcher(),
        &quick_args(&crashed, &["--steps", "20", "--checkpoint-every", "1", "--max-restarts", "1"]),
    );
    let mut seen = Vec::new();
    assert!(wait_for_line(&rx, "rank 1: pid", Duration::from_secs(60), &mut seen), "{}", seen.join("\n"));
    // Wait for the first checkpoint, then kill rank 1 as a crash would.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !step_dir(&crashed, 8).join("meta.json").is_file() && Instant::now() < deadline {
        while let Ok(l) = rx.recv_timeout(Duration::from_millis(20)) {
            seen.push(l);
        }
    }
    assert!(
        step_dir(&crashed, 8).join("meta.json").is_file(),
        "no checkpoint at step 8:\n{}",
        seen.join("\n")
    );
    kill(pid_of(&seen, 1), "-9");
    let code = drain(&mut child, &rx, &mut seen);
    let text = seen.join("\n");
    assert_eq!(code, Some(0), "finished after the restart:\n{text}");
    assert_contains(&text, &["killed by signal 9", "restarting the group (1/1)", "resuming from"]);
    assert_eq!(rank_hashes(&step_dir(&whole, 20)), rank_hashes(&step_dir(&crashed, 20)));
}

#[test]
fn a_stop_signal_saves_the_last_step_before_exiting() {
    let dir = TempDir::new("sigusr1");
    let out = dir.path().join("run");
    // --checkpoint-every 0: only the end and signals save.
    let (mut child, rx) =
        spawn_stderr_lines(&launcher(), &quick_args(&out, &["--steps", "100000", "--checkpoint-every", "0"]));
    let mut seen = Vec::new();
    assert!(wait_for_line(&rx, "step 1/", Duration::from_secs(60), &mut seen), "{}", seen.join("\n"));
    // SLURM's warning before preemption goes to the job's processes: here rank 0.
    kill(pid_of(&seen, 0), "-USR1");
    let code = drain(&mut child, &rx, &mut seen);
    let text = seen.join("\n");
    // 75: stopped on a signal with the checkpoint saved (not finished, not failed).
    assert_eq!(code, Some(75), "{text}");
    assert_contains(&text, &["stopped on request"]);
    let steps = metric_steps(&out);
    let last = *steps.last().unwrap();
    assert!(last < 100000);
    assert!(
        step_dir(&out, last).join("meta.json").is_file(),
        "no checkpoint of the last step {last}:\n{text}"
    );
    assert_contains(&text, &["checkpoint:", "--resume"]);
}

#[test]
fn init_from_starts_a_new_run_and_says_what_is_not_carried_over() {
    let dir = TempDir::new("initfrom");
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    train(&first, &["--steps", "2"]).expect_ok();
    // Another temperature and optimiser: allowed, the weights carry over.
    let r = train(
        &second,
        &[
            "--steps",
            "2",
            "--temperature",
            "0.3",
            "--optimizer",
            "adamw",
            "--init-from",
            first.to_str().unwrap(),
        ],
    )
    .expect_ok();
    // The warning reaches the launcher's terminal (and rank 0's log).
    assert_contains(
        &r.stderr,
        &["starting a new run from the weights of", "step-000002", "NOT carried over"],
    );
    let log = std::fs::read_to_string(second.join("logs/rank-0.log")).unwrap();
    assert_contains(&log, &["NOT carried over", "optimiser state", "queue"]);
    assert_eq!(metric_steps(&second), [1, 2], "a new run counts from step 1");
    let summary = std::fs::read_to_string(second.join("summary.md")).unwrap();
    assert_contains(&summary, &["NOT carried over"]);

    // A different backbone cannot take the weights.
    let e = train(
        &dir.path().join("third"),
        &["--steps", "1", "--width", "0.25", "--init-from", first.to_str().unwrap()],
    )
    .expect_err();
    assert_contains(&e, &["same backbone"]);
}

#[test]
fn export_eval_and_embed_read_a_trained_run() {
    let dir = TempDir::new("export");
    let run = dir.path().join("run");
    // One epoch (8 steps) with kNN on labelled synthetic tiles at its end.
    let r = train(&run, &["--steps", "8", "--eval-data", "synthetic:64:64"]).expect_ok();
    assert_contains(&r.stderr, &["epoch 1: kNN top-1"]);
    let evals: Vec<serde_json::Value> = std::fs::read_to_string(run.join("evals.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(evals.len(), 1, "{evals:?}");
    let acc = evals[0]["knn_top1"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&acc));
    let c = &evals[0]["collapse"];
    assert!(c["effective_rank"].as_f64().unwrap() > 1.0 && c["std"].as_f64().unwrap() > 0.0, "{c}");

    let tv = dir.path().join("resnet50.safetensors");
    let last = format!("{}/last", run.display());
    let r = run_launcher(&["export", "--checkpoint", &last, "--out", tv.to_str().unwrap()]).expect_ok();
    assert_contains(&r.stdout, &["load_state_dict", "strict=False"]);
    let shapes = safetensors_shapes(&tv);
    // tiny: ResNet-50 at width 1/8: 8 stem channels, 256-d features.
    assert_eq!(shapes["conv1.weight"], [8, 3, 7, 7]);
    assert_eq!(shapes["layer4.2.conv3.weight"], [256, 64, 1, 1]);
    assert_eq!(shapes["bn1.num_batches_tracked"], Vec::<u64>::new());
    assert!(!shapes.keys().any(|k| k.starts_with("fc.")));
    assert_eq!(
        shapes.len(),
        318,
        "torchvision's resnet50 state_dict has 320 entries; fc.weight and fc.bias are left out"
    );

    let v3 = dir.path().join("mocov3.safetensors");
    run_launcher(&[
        "export",
        "--checkpoint",
        run.to_str().unwrap(),
        "--out",
        v3.to_str().unwrap(),
        "--format",
        "moco-v3",
    ])
    .expect_ok();
    let shapes = safetensors_shapes(&v3);
    for k in [
        "module.base_encoder.conv1.weight",
        "module.base_encoder.fc.0.weight",
        "module.predictor.0.weight",
        "module.momentum_encoder.conv1.weight",
    ] {
        assert!(shapes.contains_key(k), "no {k}");
    }

    let r = run_launcher(&["eval", "--checkpoint", run.to_str().unwrap(), "--data", "synthetic:80:64"])
        .expect_ok();
    assert_contains(
        &r.stdout,
        &["| metric | trained | random init |", "kNN top-1 (k = 20, T = 0.07)", "linear probe top-1"],
    );
    assert_contains(
        &std::fs::read_to_string(run.join("summary.md")).unwrap(),
        &["## Evaluation", "random init"],
    );

    let feats = dir.path().join("features.safetensors");
    let r = run_launcher(&[
        "embed",
        "--checkpoint",
        run.to_str().unwrap(),
        "--data",
        "synthetic:40:64",
        "--out",
        feats.to_str().unwrap(),
    ])
    .expect_ok();
    assert_contains(&r.stdout, &["40 x 256 features"]);
    let shapes = safetensors_shapes(&feats);
    assert_eq!(shapes["features"], [40, 256]);
    assert_eq!(shapes["labels"], [40]);
}

#[test]
fn bad_checkpoints_are_clear_errors() {
    let dir = TempDir::new("badck");
    let e = run_launcher(&["export", "--checkpoint", dir.path().join("nope").to_str().unwrap()]).expect_err();
    assert_contains(&e, &["no such file or folder"]);
    let foreign = dir.path().join("model.safetensors");
    std::fs::write(&foreign, b"\x08\0\0\0\0\0\0\0{}      ").unwrap();
    let e = run_launcher(&["eval", "--checkpoint", foreign.to_str().unwrap(), "--data", "synthetic"])
        .expect_err();
    assert_contains(&e, &["not part of a moco-rs checkpoint"]);
    let e = run_launcher(&["--device", "cpu", "--resume", dir.path().to_str().unwrap(), "--steps", "1"])
        .expect_err();
    assert_contains(&e, &["holds no moco-rs checkpoint", "run folder"]);
}
