//! The run folder's TensorBoard events files, read back by TensorBoard's own Python code
//! (scripts/read_tb_events.py in the venv of scripts/setup_tensorboard.sh) and by the Rust
//! reader that checks every record's framing and CRCs.
//!
//! TensorBoard comes from PyPI. scripts/test.sh sets it up and exports MOCO_TB_PYTHON; run
//! alone, these tests run the setup script themselves. If it cannot be installed they fail with
//! the reason, unless MOCO_NO_TENSORBOARD=1 says to leave the Python reader out.

use moco_tests::{launcher, worker, TempDir, TINY_RUN};
use moco_worker::report::tensorboard::{event_files, read_events, Tail};
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root (this crate is `tests/`).
fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent").to_path_buf()
}

/// The Python that imports tensorboard, or None when MOCO_NO_TENSORBOARD=1 opts out.
fn tb_python() -> Option<PathBuf> {
    if std::env::var("MOCO_NO_TENSORBOARD").is_ok_and(|v| v == "1") {
        eprintln!("MOCO_NO_TENSORBOARD=1: TensorBoard's reader is left out of this test");
        return None;
    }
    if let Some(p) = std::env::var_os("MOCO_TB_PYTHON") {
        return Some(PathBuf::from(p));
    }
    let out = Command::new(repo().join("scripts/setup_tensorboard.sh")).output().expect("bash runs");
    assert!(
        out.status.success(),
        "scripts/setup_tensorboard.sh failed, so TensorBoard's reader cannot check the events file \
         (set MOCO_NO_TENSORBOARD=1 to test without it):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let line =
        text.lines().find_map(|l| l.strip_prefix("export MOCO_TB_PYTHON=")).expect("the script exports it");
    Some(PathBuf::from(line.trim_matches('\'')))
}

/// {tag: [(step, value)]} as TensorBoard reads them (`--file`: one file, record by record).
fn tensorboard_scalars(python: &Path, args: &[&Path]) -> (BTreeMap<String, Vec<(i64, f32)>>, String) {
    let out = Command::new(python)
        .arg(repo().join("scripts/read_tb_events.py"))
        .args(args)
        .output()
        .expect("python runs");
    assert!(out.status.success(), "read_tb_events.py failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).expect("the script prints JSON");
    let mut map = BTreeMap::new();
    let mut version = String::new();
    for (tag, points) in v.as_object().expect("an object") {
        if tag == "file_version" {
            // EventAccumulator parses it into a number (2.0); a file loader gives the string.
            version = points.as_str().map(String::from).unwrap_or_else(|| points.to_string());
            continue;
        }
        let pts = points
            .as_array()
            .expect("a list")
            .iter()
            .map(|p| (p[0].as_i64().expect("a step"), p[1].as_f64().expect("a value") as f32));
        map.insert(tag.clone(), pts.collect());
    }
    (map, version)
}

fn jsonl(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines().map(|l| serde_json::from_str(l).expect("a JSON line")).collect()
}

/// (step, value as f32) of `field` in every row of a JSON-lines file that has it.
fn column(rows: &[Value], field: &[&str], scale: f64) -> Vec<(i64, f32)> {
    rows.iter()
        .filter_map(|r| {
            let v = field.iter().try_fold(r, |v, k| v.get(k))?.as_f64()?;
            Some((r["step"].as_i64()?, (v * scale) as f32))
        })
        .collect()
}

#[test]
fn tensorboard_reads_every_scalar_of_a_run_and_they_equal_metrics_and_evals() {
    let d = TempDir::new("tb-run");
    let out = d.path().join("run");
    // 128 tiles at batch 8 on one worker: 16 steps per epoch, so 16 steps end one epoch and
    // bring the collapse monitor and a kNN evaluation.
    let mut args: Vec<String> =
        ["--device", "cpu", "--workers", "1", "--steps", "16", "--eval-data", "synthetic:64:64"]
            .map(String::from)
            .to_vec();
    args.extend(TINY_RUN.iter().map(|s| s.to_string()));
    args.extend(["--out".into(), out.display().to_string()]);
    let r = Command::new(launcher()).args(&args).stdin(Stdio::null()).output().expect("launcher starts");
    assert!(r.status.success(), "training failed:\n{}", String::from_utf8_lossy(&r.stderr));

    let files = event_files(&out);
    assert_eq!(files.len(), 1, "one events file per session: {files:?}");
    let (events, tail) = read_events(&files[0]).expect("every record's framing and CRCs check");
    assert_eq!(tail, Tail::Clean);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert_eq!(events.len(), 1 + 16 + 1, "header, one event per step, one evaluation");

    let metrics = jsonl(&out.join("metrics.jsonl"));
    let evals = jsonl(&out.join("evals.jsonl"));
    assert_eq!(metrics.len(), 16);
    let mib = 1.0 / (1u64 << 20) as f64;
    let want: Vec<(&str, Vec<(i64, f32)>)> = vec![
        ("train/loss", column(&metrics, &["loss"], 1.0)),
        ("train/lr", column(&metrics, &["lr"], 1.0)),
        ("train/momentum", column(&metrics, &["momentum"], 1.0)),
        ("train/loss_scale", column(&metrics, &["loss_scale"], 1.0)),
        ("train/epoch", column(&metrics, &["epoch"], 1.0)),
        ("perf/images_per_sec", column(&metrics, &["images_per_sec"], 1.0)),
        ("perf/memory_mib", column(&metrics, &["memory_bytes"], mib)),
        ("eval/knn_top1", column(&evals, &["knn_top1"], 1.0)),
        ("collapse/embedding_std", column(&evals, &["collapse", "std"], 1.0)),
        ("collapse/effective_rank", column(&evals, &["collapse", "effective_rank"], 1.0)),
    ];
    assert_eq!(want[7].1.len(), 1, "one kNN evaluation at the epoch end: {evals:?}");
    assert_eq!(want[8].1.len(), 1, "one collapse measurement at the epoch end: {evals:?}");

    let Some(python) = tb_python() else { return };
    let (seen, version) = tensorboard_scalars(&python, &[&out]);
    assert_eq!(version, "2.0", "EventAccumulator's parse of \"brain.Event:2\"");
    assert_eq!(seen.len(), want.len(), "tags TensorBoard found: {:?}", seen.keys().collect::<Vec<_>>());
    for (tag, values) in &want {
        assert_eq!(seen.get(*tag), Some(values), "{tag}: TensorBoard's values against the jsonl files");
    }
}

#[test]
fn a_killed_run_leaves_an_events_file_that_both_readers_accept_and_a_torn_record_is_tolerated() {
    let d = TempDir::new("tb-kill");
    let out = d.path().join("run");
    let mut a: Vec<String> = TINY_RUN.iter().map(|s| s.to_string()).collect();
    a.extend(
        ["--device", "cpu", "--epochs", "1000", "--checkpoint-every", "0", "--log-every", "1", "--out"]
            .map(String::from),
    );
    a.push(out.display().to_string());
    let mut child = Command::new(worker())
        .args(&a)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("worker starts");
    let err = BufReader::new(child.stderr.take().expect("piped"));
    // Kill (no chance to clean up) once a few steps are logged.
    let mut steps = 0;
    for line in err.lines().map_while(Result::ok) {
        if line.starts_with("step ") {
            steps += 1;
            if steps == 5 {
                break;
            }
        }
    }
    assert_eq!(steps, 5, "the worker logged 5 steps before it ended");
    child.kill().expect("SIGKILL");
    child.wait().expect("reaped");

    let files = event_files(&out);
    assert_eq!(files.len(), 1, "{files:?}");
    let (events, _) = read_events(&files[0]).expect("a killed run's file still checks");
    // (step, loss) of the step events (an epoch end may have added a collapse event).
    let losses = |events: &[moco_worker::report::tensorboard::Event]| -> Vec<(i64, f32)> {
        events
            .iter()
            .filter_map(|e| e.scalars.first().filter(|s| s.0 == "train/loss").map(|s| (e.step, s.1)))
            .collect()
    };
    let logged = losses(&events);
    assert!(logged.len() >= 5, "the steps logged before the kill are in the file: {logged:?}");

    // A kill in the middle of a write: cut the last record short.
    let torn = d.path().join("torn").join(files[0].file_name().expect("a name"));
    std::fs::create_dir_all(torn.parent().expect("a folder")).unwrap();
    let bytes = std::fs::read(&files[0]).unwrap();
    std::fs::write(&torn, &bytes[..bytes.len() - 7]).unwrap();
    let (kept, tail) = read_events(&torn).expect("a torn record is not an error");
    assert!(matches!(tail, Tail::Torn { .. }));
    assert_eq!(kept.len(), events.len() - 1);

    let Some(python) = tb_python() else { return };
    for (file, want) in [(&files[0], logged), (&torn, losses(&kept))] {
        let (seen, version) = tensorboard_scalars(&python, &[Path::new("--file"), file]);
        assert_eq!(version, "brain.Event:2");
        assert_eq!(seen["train/loss"], want, "{}: TensorBoard reads every complete step", file.display());
    }
}

#[test]
fn a_resume_from_an_older_checkpoint_shows_each_step_once() {
    let d = TempDir::new("tb-resume");
    let out = d.path().join("run");
    let run = |extra: &[&str]| {
        let mut args: Vec<String> = ["--device", "cpu", "--workers", "1"].map(String::from).to_vec();
        args.extend(TINY_RUN.iter().map(|s| s.to_string()));
        args.extend(["--out".into(), out.display().to_string()]);
        args.extend(extra.iter().map(|s| s.to_string()));
        let r = Command::new(launcher()).args(&args).stdin(Stdio::null()).output().expect("launcher starts");
        assert!(r.status.success(), "{extra:?} failed:\n{}", String::from_utf8_lossy(&r.stderr));
    };
    run(&["--steps", "4"]);
    run(&["--steps", "7"]);
    // Back to step 4: steps 5-7 of the second session are redone by the third.
    let step4 = out.join("checkpoints").join("step-000004");
    run(&["--resume", step4.to_str().expect("a UTF-8 path"), "--steps", "6"]);

    let files = event_files(&out);
    assert_eq!(files.len(), 3, "one events file per session: {files:?}");
    let mut steps = Vec::new();
    for f in &files {
        let (events, tail) = read_events(f).expect("every file checks");
        assert_eq!(tail, Tail::Clean);
        steps.extend(events.iter().filter(|e| e.file_version.is_none()).map(|e| e.step));
    }
    steps.sort();
    assert_eq!(steps, [1, 2, 3, 4, 5, 6], "the second session's steps 5-7 were dropped");

    let Some(python) = tb_python() else { return };
    let (seen, _) = tensorboard_scalars(&python, &[&out]);
    let metrics = jsonl(&out.join("metrics.jsonl"));
    assert_eq!(seen["train/loss"], column(&metrics, &["loss"], 1.0));
    assert_eq!(seen["train/loss"].len(), 6);
}
