//! The run folder through the real binaries: one owner at a time (a launcher, or rank 0 of
//! workers started by hand).

use moco_tests::{assert_contains, launcher, run_launcher, spawn_stderr_lines, worker, TempDir, TINY_RUN};
use std::path::Path;
use std::process::{Child, Command};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

fn args(out: &Path, extra: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = ["--device", "cpu", "--workers", "1"].iter().map(|s| s.to_string()).collect();
    v.extend(TINY_RUN.iter().map(|s| s.to_string()));
    v.extend(["--out".to_string(), out.display().to_string()]);
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

/// Read lines until one contains `needle` (panics with what was seen after 60 s).
fn wait_for(rx: &Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = String::new();
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                seen.push_str(&l);
                seen.push('\n');
                if l.contains(needle) {
                    return seen;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(_) => break,
        }
    }
    panic!("no line with {needle:?}; saw:\n{seen}");
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill").args([sig, &child.id().to_string()]).status().unwrap().success();
    assert!(ok, "kill {sig} failed");
}

#[test]
fn a_second_launcher_on_a_busy_run_folder_is_refused_and_told_who_holds_it() {
    let dir = TempDir::new("lock");
    let out = dir.path().join("run");
    // Long enough to still be training when the second launcher starts.
    let (mut first, rx) =
        spawn_stderr_lines(&launcher(), &args(&out, &["--epochs", "1000", "--checkpoint-every", "0"]));
    wait_for(&rx, " loss ");
    let err = run_launcher(&args(&out, &["--steps", "2"]).iter().map(|s| s.as_str()).collect::<Vec<_>>())
        .expect_err();
    assert_contains(
        &err,
        &["this run folder is in use by another run", &format!("pid {} on host", first.id())],
    );
    signal(&first, "-INT");
    let status = first.wait().unwrap();
    assert!(status.code().is_some(), "the first launcher exits by itself: {status:?}");
    // Its lock went with it: the folder can be used (and resumed) again.
    let r = run_launcher(
        &args(&out, &["--epochs", "1000", "--steps", "3"]).iter().map(|s| s.as_str()).collect::<Vec<_>>(),
    );
    let r = r.expect_ok();
    assert!(!r.stderr.contains("ended without releasing"), "{}", r.stderr);
}

#[test]
fn a_hand_started_rank_0_owns_the_folder_and_a_killed_owner_does_not_block_it() {
    let dir = TempDir::new("lock-stale");
    let out = dir.path().join("run");
    // A worker started by hand (one rank, no launcher) owns its run folder as rank 0.
    let mut a: Vec<String> = TINY_RUN.iter().map(|s| s.to_string()).collect();
    a.extend(["--device", "cpu", "--epochs", "1000", "--checkpoint-every", "0", "--out"].map(String::from));
    a.push(out.display().to_string());
    let (mut worker, rx) = spawn_stderr_lines(&worker(), &a);
    wait_for(&rx, " loss ");
    let quick = args(&out, &["--steps", "2"]);
    let quick: Vec<&str> = quick.iter().map(|s| s.as_str()).collect();
    let err = run_launcher(&quick).expect_err();
    assert_contains(&err, &["in use by another run", &format!("pid {} on host", worker.id())]);
    // Killed, it cannot release anything; the kernel drops its lock, and its note is left.
    signal(&worker, "-KILL");
    worker.wait().unwrap();
    let r = run_launcher(&quick).expect_ok();
    assert_contains(&r.stderr, &["ended without releasing it", &format!("pid {} on host", worker.id())]);
}

/// `n` 48x48 16-bit four-band TIFF tiles.
fn four_band_folder(data: &Path, n: u32) {
    use tiff::encoder::{colortype, TiffEncoder};
    std::fs::create_dir_all(data).unwrap();
    for i in 0..n {
        let px: Vec<u16> = (0..48 * 48 * 4).map(|k| (300 + (k % 197) * 7 + i * 40) as u16).collect();
        let file = std::fs::File::create(data.join(format!("s{i}.tif"))).unwrap();
        let mut enc = TiffEncoder::new(file).unwrap();
        let mut img = enc.new_image::<colortype::Gray16>(48, 48).unwrap();
        img.extra_samples(&[tiff::tags::ExtraSamples::Unspecified; 3]).unwrap();
        img.write_data(&px).unwrap();
    }
}

#[test]
fn resume_alone_continues_on_the_runs_own_data_and_bands() {
    let d = TempDir::new("resume-data");
    let data = d.path().join("tiles");
    four_band_folder(&data, 10);
    let out = d.path().join("run");
    let (o, t) = (out.to_str().unwrap(), data.to_str().unwrap());
    let quick =
        ["--device", "cpu", "--preset", "tiny", "--batch", "8", "--queue-size", "64", "--image-size", "32"];
    let mut first = quick.to_vec();
    first.extend(["--data", t, "--bands", "all", "--steps", "2", "--out", o]);
    run_launcher(&first).expect_ok();
    // `--resume RUN` alone: the same four bands of the same folder, and it says so.
    let r = run_launcher(&["--device", "cpu", "--resume", o, "--steps", "3"]).expect_ok();
    let canonical = std::fs::canonicalize(&data).unwrap();
    assert_contains(
        &r.stderr,
        &[
            &format!("continuing on the run's data {}", canonical.display()),
            "with the run's --bands all",
            "usable images in",
            "(step 2,",
        ],
    );
    assert!(out.join("checkpoints/step-000003/meta.json").is_file());
    // A flag overrides the record, and the run says so (synthetic tiles have 3 bands: refused).
    let err = run_launcher(&["--device", "cpu", "--resume", o, "--steps", "4", "--data", "synthetic:64:64"])
        .expect_err();
    assert_contains(&err, &["--data synthetic:64:64 replaces the run's own data"]);
}

/// xxh3 of every rank file, from meta.json.
fn hashes(step: &Path) -> String {
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(step.join("meta.json")).unwrap()).unwrap();
    meta["files"].to_string()
}

#[test]
fn a_damaged_newest_checkpoint_falls_back_and_a_step_folder_resumes_that_step() {
    let d = TempDir::new("resume-damaged");
    let out = d.path().join("run");
    let o = out.to_str().unwrap();
    let run = |extra: &[&str]| {
        let mut a = vec!["--device", "cpu", "--workers", "1"];
        a.extend(TINY_RUN);
        a.extend(extra);
        run_launcher(&a)
    };
    run(&["--out", o, "--steps", "3"]).expect_ok();
    run(&["--out", o, "--steps", "6"]).expect_ok();
    let (s3, s6) = (out.join("checkpoints/step-000003"), out.join("checkpoints/step-000006"));
    let clean6 = hashes(&s6);
    // Damage the newest: one byte appended to its rank file.
    let f = s6.join("rank-0.safetensors");
    let mut bytes = std::fs::read(&f).unwrap();
    bytes.push(0);
    std::fs::write(&f, bytes).unwrap();
    let r = run(&["--out", o, "--steps", "6"]).expect_ok();
    assert_contains(
        &r.stderr,
        &["step-000006 is damaged and was skipped", "resuming from", "step-000003 (step 3,"],
    );
    assert_eq!(hashes(&s6), clean6, "steps 4-6 redone from step 3 give the same state");

    // A step folder resumes that step, in its run folder, with or without --out.
    let s3s = s3.to_str().unwrap();
    let r = run(&["--resume", s3s, "--out", o, "--steps", "5"]).expect_ok();
    assert_contains(&r.stderr, &["step-000003 (step 3,"]);
    assert!(out.join("checkpoints/step-000005/meta.json").is_file());
    let r = run(&["--resume", s3s, "--steps", "4"]).expect_ok();
    assert_contains(&r.stderr, &["step-000003 (step 3,", &format!("run folder {o}")]);
    assert!(out.join("checkpoints/step-000004/meta.json").is_file());
    assert!(
        !s3.join("checkpoints").exists() && !s3.join("metrics.jsonl").exists(),
        "the step folder is not a run folder"
    );
    // The named step became the run's head: a plain resume continues from what it saved.
    let r = run(&["--out", o, "--steps", "5"]).expect_ok();
    assert_contains(&r.stderr, &["step-000004 (step 4,"]);
}
