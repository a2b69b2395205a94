//! The run report: plots drawn with the bundled font (no system font needed) and summary.md,
//! from metrics.jsonl and evals.jsonl as the trainer writes them.

mod checkpoint_util;

use checkpoint_util::temp_dir;
use moco_worker::eval::CollapseStats;
use moco_worker::report::records::read_jsonl;
use moco_worker::report::{write_report, EvalLog, EvalRecord, ReportInput, RunRecords};
use moco_worker::train::{MetricsLog, StepMetrics};

fn fake_run(dir: &std::path::Path, steps: u64) {
    let mut log = MetricsLog::open(dir).unwrap();
    for s in 1..=steps {
        let e = s as f64 / 20.0;
        log.write(&StepMetrics {
            step: s,
            epoch: e,
            loss: (11.0 * (-(s as f32) / 80.0).exp() + 2.0 + 0.3 * ((s * 7 % 13) as f32 / 13.0)),
            lr: if e < 1.0 {
                0.3 * e as f32
            } else {
                0.3 * (0.5 * (1.0 + (std::f64::consts::PI * (e - 1.0) / 9.0).cos())) as f32
            },
            momentum: 0.99 + 0.01 * (e / 10.0) as f32,
            loss_scale: if s % 50 == 0 { 32768.0 } else { 65536.0 },
            applied: s % 50 != 0,
            images_per_sec: 180.0 + (s % 5) as f32,
            elapsed_s: s as f64 * 0.7,
            memory_bytes: 3 << 30,
        })
        .unwrap();
    }
    let mut evals = EvalLog::open(dir).unwrap();
    for epoch in 1..=(steps / 20) {
        // Healthy at first (std ~1/sqrt(32), rank 28 of 32), collapsing by the last epochs.
        let fall = 0.6f32.powi(epoch as i32 - 1);
        let c = CollapseStats { std: 0.17 * fall, effective_rank: 28.0 * fall, dim: 32, samples: 512 };
        evals
            .write(&EvalRecord {
                step: epoch * 20,
                epoch: epoch as f64,
                knn_top1: Some(0.3 + 0.05 * epoch as f32),
                collapse: Some(c),
                warning: c.warning(),
            })
            .unwrap();
    }
}

/// Fraction of non-white pixels in rows `y0..y1` of a PNG.
fn ink(img: &image::RgbImage, y0: u32, y1: u32) -> f64 {
    let mut dark = 0;
    for y in y0..y1 {
        for x in 0..img.width() {
            if img.get_pixel(x, y).0.iter().any(|&c| c < 200) {
                dark += 1;
            }
        }
    }
    dark as f64 / ((y1 - y0) * img.width()) as f64
}

#[test]
fn report_draws_every_plot_with_text_and_writes_the_summary() {
    let dir = temp_dir("report");
    fake_run(&dir, 200);
    let cfg = checkpoint_util::tiny_cfg();
    let files = write_report(
        &dir,
        &ReportInput {
            run_id: "run-42",
            config: Some(&cfg),
            world: 2,
            warnings: vec!["queue larger than the dataset".into()],
            ..Default::default()
        },
    )
    .unwrap();
    let names: Vec<String> =
        files.plots.iter().map(|p| p.file_name().unwrap().to_string_lossy().into_owned()).collect();
    assert_eq!(
        names,
        ["loss.png", "lr_momentum.png", "loss_scale.png", "throughput.png", "knn.png", "collapse.png"]
    );
    for p in &files.plots {
        let img = image::open(p).unwrap().to_rgb8();
        assert_eq!(img.width(), 900, "{}", p.display());
        // The caption band holds the title's glyphs (text rendering works), and the plot area
        // holds lines and labels.
        assert!(ink(&img, 10, 34) > 0.005, "{}: no title text", p.display());
        assert!(ink(&img, 60, 400) > 0.01, "{}: empty plot", p.display());
    }
    let md = std::fs::read_to_string(&files.summary).unwrap();
    for want in [
        "# moco-rs run `run-42`",
        "| steps | 200 (epoch 10.00) |",
        "| skipped steps (inf/NaN) | 4 |",
        "| ranks | 2 |",
        "kNN top-1 during training: 80.0% at epoch 10.0",
        "## Collapse monitor",
        "queue larger than the dataset",
        "possible representation collapse",
        "![loss](plots/loss.png)",
        "\"width\": 0.0625",
    ] {
        assert!(md.contains(want), "summary.md lacks {want:?}:\n{md}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn records_tolerate_a_torn_last_line_and_resumed_duplicates() {
    let dir = temp_dir("records");
    fake_run(&dir, 40);
    // A resumed run logs steps 31..40 again; a kill tore the last line.
    let mut log = MetricsLog::open(&dir).unwrap();
    let steps: Vec<StepMetrics> = read_jsonl(&dir.join("metrics.jsonl")).unwrap();
    for m in &steps[30..] {
        log.write(&StepMetrics { loss: 1.0, ..*m }).unwrap();
    }
    drop(log);
    let mut f = std::fs::OpenOptions::new().append(true).open(dir.join("metrics.jsonl")).unwrap();
    std::io::Write::write_all(&mut f, b"{\"step\": 41, \"epo").unwrap();
    let r = RunRecords::read(&dir).unwrap();
    assert_eq!(r.steps.len(), 40);
    assert!(r.steps[30..].iter().all(|m| m.loss == 1.0), "the redone steps win");
    assert_eq!(r.evals.len(), 2);
    // A bad line in the middle is an error that names it.
    let good = serde_json::to_string(&r.evals[0]).unwrap();
    std::fs::write(dir.join("evals.jsonl"), format!("{good}\nnot json\n{good}\n")).unwrap();
    let e = RunRecords::read(&dir).unwrap_err().to_string();
    assert!(e.contains("evals.jsonl") && e.contains("line 2"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_later_eval_rewrite_keeps_the_sessions_summary_and_warnings() {
    let dir = temp_dir("report-rewrite");
    fake_run(&dir, 40);
    let cfg = checkpoint_util::tiny_cfg();
    let summary = moco_worker::train::Summary {
        steps: 40,
        first_loss: 9.0,
        last_loss: 3.0,
        tail_loss: 3.1,
        images_per_sec: 180.0,
        elapsed_s: 28.5,
        skipped_steps: 0,
        interrupted: true,
    };
    // End of training: the session's summary and the run's warnings.
    write_report(
        &dir,
        &ReportInput {
            run_id: "run-7",
            config: Some(&cfg),
            world: 2,
            summary: Some(&summary),
            warnings: vec!["queue larger than the dataset".into()],
            ..Default::default()
        },
    )
    .unwrap();
    // `launcher eval` later: it knows neither, and must not drop them.
    let files = write_report(
        &dir,
        &ReportInput { run_id: "run-7", config: Some(&cfg), world: 2, ..Default::default() },
    )
    .unwrap();
    let md = std::fs::read_to_string(&files.summary).unwrap();
    for want in
        ["| this session | 40 steps in 28.5 s, stopped early on request |", "- queue larger than the dataset"]
    {
        assert!(md.contains(want), "missing {want:?} in:\n{md}");
    }
    // A damaged session.json costs only those lines.
    std::fs::write(dir.join("session.json"), "{not json").unwrap();
    let files = write_report(
        &dir,
        &ReportInput { run_id: "run-7", config: Some(&cfg), world: 2, ..Default::default() },
    )
    .unwrap();
    let md = std::fs::read_to_string(&files.summary).unwrap();
    assert!(md.contains("| steps | 40") && !md.contains("this session"), "{md}");
}
