//! Every validation error through the real binary: a non-zero exit and a message that names
//! the problem and the fix.

use moco_tests::{assert_contains, run_launcher, TempDir};

fn plan_err(args: &[&str]) -> String {
    let mut all = vec!["plan"];
    all.extend_from_slice(args);
    run_launcher(&all).expect_err()
}

#[test]
fn queue_not_a_multiple_of_keys_per_step() {
    let e = plan_err(&["--preset", "optimized", "--queue-size", "65536"]);
    // 2 views x 96 x 2 GPUs x 4 accumulation = 1536 keys per step (effective-batch negatives
    // write the whole step's keys at once); 65536 / 1536 = 42.67.
    let kps = 2 * 96 * 2 * 4;
    let below = 65536 / kps * kps;
    assert_contains(
        &e,
        &[
            "--queue-size 65536",
            &format!("= {kps}"),
            &format!("--queue-size {below} or {}", below + kps),
            // Per-GPU batches that divide the queue on 2 GPUs are powers of two; of those nearest
            // 96, only the ones a rank's share of the assumed 2,000 images can feed (1,000 per
            // rank, 4 micro-batches per step: at most 250) are offered.
            "--batch 16, 32, 64, 128.",
            "queue_size % batch_size == 0",
        ],
    );
}

#[test]
fn the_stricter_rule_catches_what_the_seeds_rule_misses() {
    // 64000 % 80 == 0 (the seeds' rule holds), but 64000 % (2 x 80 x 3) != 0.
    let e = plan_err(&["--preset", "conservative", "--gpus", "3"]);
    assert_contains(&e, &["64000 % 80 = 0", "is weaker than what the fused enqueue needs"]);
}

#[test]
fn queue_larger_than_the_dataset_warns_with_a_size() {
    let out = run_launcher(&["plan", "--preset", "optimized", "--dataset-size", "2000"]).expect_ok();
    let kps = 2 * 96 * 2 * 4;
    assert_contains(
        &out.stdout,
        &["warning:", "larger than the dataset", &format!("--queue-size {}", 2000 / kps * kps)],
    );
}

#[test]
fn batch_larger_than_a_ranks_shard() {
    // 50 images over 2 ranks = 25 each, fewer than tiny's 32 per GPU.
    let e = plan_err(&["--preset", "tiny", "--gpus", "2", "--dataset-size", "50"]);
    assert_contains(&e, &["larger than a rank's share", "25 each", "--batch 25 or smaller"]);
}

#[test]
fn too_few_micro_batches_for_one_step() {
    // 300 images / (64 x 2) = 2 micro-batches per epoch, fewer than 4 accumulation steps.
    let e = plan_err(&["--preset", "low-vram", "--dataset-size", "300"]);
    assert_contains(&e, &["2 micro-batch(es) per epoch", "--accumulation 2 or lower"]);
}

#[test]
fn empty_dataset() {
    assert_contains(&plan_err(&["--preset", "tiny", "--dataset-size", "0"]), &["no images", "--data"]);
}

#[test]
fn zero_accumulation_and_zero_world() {
    assert_contains(
        &plan_err(&["--preset", "tiny", "--accumulation", "0"]),
        &["--accumulation 0", "--accumulation 1"],
    );
    assert_contains(&plan_err(&["--preset", "tiny", "--gpus", "0"]), &["world size is 0", "--gpus 1"]);
}

#[test]
fn image_size_not_a_multiple_of_32() {
    assert_contains(
        &plan_err(&["--preset", "tiny", "--image-size", "200"]),
        &["--image-size 200", "192 or 224"],
    );
    assert_contains(&plan_err(&["--preset", "tiny", "--image-size", "16"]), &["--image-size 32"]);
}

#[test]
fn global_batch_that_does_not_split() {
    let e = plan_err(&["--preset", "paper", "--gpus", "3", "--dataset-size", "1281167"]);
    assert_contains(&e, &["--global-batch 4096", "3 rank(s)", "one of 1, 2, 4, 8, 16, 32, 64"]);
    let e = plan_err(&["--preset", "paper", "--batch", "64", "--global-batch", "4096", "--gpus", "16"]);
    assert_contains(&e, &["--batch 64 and --global-batch 4096", "gives 256 per GPU"]);
}

#[test]
fn shuffle_groups_that_do_not_split_the_batch() {
    let e = plan_err(&["--preset", "tiny", "--shuffle-groups", "5"]);
    assert_contains(&e, &["--shuffle-groups 5", "1, 2, 4, 8, 16", "--bn-mode local"]);
}

#[test]
fn out_of_range_scalars() {
    assert_contains(
        &plan_err(&["--preset", "tiny", "--temperature", "0"]),
        &["--temperature 0", "must be > 0"],
    );
    assert_contains(
        &plan_err(&["--preset", "tiny", "--warmup-epochs", "20"]),
        &["--warmup-epochs 20", "--epochs (10)"],
    );
    assert_contains(&plan_err(&["--preset", "tiny", "--hflip-p", "1.5"]), &["--hflip-p 1.5", "probability"]);
}

#[test]
fn every_problem_is_reported_at_once() {
    let e = plan_err(&[
        "--preset",
        "optimized",
        "--queue-size",
        "65536",
        "--image-size",
        "200",
        "--temperature",
        "0",
    ]);
    assert_contains(&e, &["3 problems", "--queue-size 65536", "--image-size 200", "--temperature 0"]);
}

#[test]
fn unknown_preset_flag_and_config_key() {
    assert_contains(&plan_err(&["--preset", "huge"]), &["unknown preset \"huge\"", "low-vram", "tiny"]);
    let clap = run_launcher(&["plan", "--batch-size", "8"]);
    assert_eq!(clap.code, Some(2), "clap usage error");
    assert_contains(&clap.stderr, &["--batch-size"]);
    let dir = TempDir::new("config-key");
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "batch = 32\nqueue_sise = 1024\n").unwrap();
    let e = plan_err(&["--preset", "tiny", "--config", file.to_str().unwrap()]);
    assert_contains(&e, &["queue_sise", "run.toml"]);
}

#[test]
fn config_file_values_apply_and_flags_win() {
    let dir = TempDir::new("config-file");
    let file = dir.path().join("run.toml");
    std::fs::write(&file, "batch = 16\nqueue_size = 4096\n[aug]\nrot90 = false\n").unwrap();
    let f = file.to_str().unwrap();
    let out = run_launcher(&["plan", "--preset", "tiny", "--config", f, "--queue-size", "2048"]).expect_ok();
    assert_contains(&out.stdout, &["per-GPU batch      16 images", "queue              2048 keys"]);
}

#[test]
fn bad_vram_sizes() {
    let r = run_launcher(&["plan", "--preset", "tiny", "--vram", "8"]);
    assert_eq!(r.code, Some(2));
    assert_contains(&r.stderr, &["no unit", "8GiB"]);
    let r = run_launcher(&["plan", "--preset", "tiny", "--vram", "8 gigs"]);
    assert_contains(&r.stderr, &["unknown unit"]);
}

#[test]
fn readme_first_command_trains_tiny_with_two_cpu_workers() {
    // The README's first command, as written, except a shorter --steps and a temporary --out.
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("target/release/launcher "))
        .expect("a launcher command in the README");
    let cmd = line.split("target/release/launcher ").nth(1).unwrap();
    let words: Vec<&str> = cmd.split_whitespace().collect();
    assert_contains(cmd, &["--device cpu", "--workers 2", "--preset tiny", "--data synthetic"]);
    let dir = TempDir::new("readme");
    let out_dir = dir.path().join("demo");
    let mut args: Vec<String> = Vec::new();
    let mut i = 0;
    while i < words.len() {
        match words[i] {
            "--steps" => {
                args.extend(["--steps".into(), "3".into()]);
                i += 2;
            }
            "--out" => {
                args.extend(["--out".into(), out_dir.display().to_string()]);
                i += 2;
            }
            w => {
                args.push(w.to_string());
                i += 1;
            }
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = run_launcher(&refs).expect_ok();
    assert_contains(&out.stderr, &["preset tiny", "2048 images", "2 worker(s)", "done: 3 steps"]);
    assert!(out_dir.join("metrics.jsonl").is_file());
}

#[test]
fn dataset_size_comes_from_data_when_given() {
    let dir = TempDir::new("tiles");
    for i in 0..20 {
        std::fs::write(dir.path().join(format!("tile{i}.png")), b"").unwrap();
    }
    std::fs::write(dir.path().join("notes.txt"), b"not an image").unwrap();
    // 20 tiles cannot fill one batch of 32.
    let e = plan_err(&["--preset", "tiny", "--data", dir.path().to_str().unwrap()]);
    assert_contains(&e, &["20 images / 1 rank(s)", "--batch 20 or smaller"]);
    let out = run_launcher(&["plan", "--preset", "tiny", "--data", "synthetic:4096"]).expect_ok();
    assert_contains(&out.stdout, &["4096 images (synthetic tiles)"]);
    let out = run_launcher(&["plan", "--preset", "tiny"]).expect_ok();
    assert_contains(&out.stdout, &["2000 images (assumed"]);
}
