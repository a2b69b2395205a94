//! The writer and the resume truncation, through files.

use super::*;
use crate::eval::CollapseStats;

fn temp_dir(tag: &str) -> PathBuf {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let p = std::env::temp_dir().join(format!("moco-tb-{tag}-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&p).unwrap();
    p
}

fn metrics(step: u64) -> StepMetrics {
    StepMetrics {
        step,
        epoch: step as f64 / 4.0,
        loss: 6.0 - step as f32 * 0.01,
        lr: 0.5,
        momentum: 0.99,
        loss_scale: 65536.0,
        applied: true,
        images_per_sec: 123.5,
        elapsed_s: step as f64,
        memory_bytes: 150 << 20,
    }
}

fn write_run(dir: &Path, steps: u64) -> PathBuf {
    let mut log = TbLog::create(dir).unwrap();
    for s in 1..=steps {
        log.write_step(&metrics(s)).unwrap();
        if s % 4 == 0 {
            let c = CollapseStats { std: 0.05, effective_rank: 20.0, dim: 64, samples: 64 };
            let r = EvalRecord {
                step: s,
                epoch: s as f64 / 4.0,
                knn_top1: Some(0.5),
                collapse: Some(c),
                warning: None,
            };
            log.write_eval(&r).unwrap();
        }
    }
    log.path().to_path_buf()
}

#[test]
fn a_run_writes_a_header_then_one_event_per_step_and_per_evaluation() {
    let dir = temp_dir("write");
    let path = write_run(&dir, 8);
    let name = path.file_name().unwrap().to_str().unwrap();
    assert!(name.starts_with(FILE_PREFIX) && name.ends_with(&format!(".{}", std::process::id())), "{name}");
    assert_eq!(event_files(&dir), vec![path.clone()]);
    let (events, tail) = read_events(&path).unwrap();
    assert_eq!(tail, Tail::Clean);
    assert_eq!(events[0].file_version.as_deref(), Some("brain.Event:2"));
    assert_eq!(events.len(), 1 + 8 + 2);
    assert_eq!(events[1].step, 1);
    assert_eq!(events[1].scalars, step_scalars(&metrics(1)));
    let mem = events[1].scalars.iter().find(|(t, _)| t == "perf/memory_mib").unwrap().1;
    assert_eq!(mem, 150.0);
    let eval = &events[5];
    assert_eq!(eval.step, 4);
    let tags: Vec<&str> = eval.scalars.iter().map(|(t, _)| t.as_str()).collect();
    assert_eq!(tags, ["eval/knn_top1", "collapse/embedding_std", "collapse/effective_rank"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn truncate_after_drops_later_events_and_a_torn_tail_and_keeps_the_header() {
    let dir = temp_dir("truncate");
    let path = write_run(&dir, 8);
    // A killed writer: half of one more record.
    let extra =
        record::frame(&Event { wall_time: 0.0, step: 9, file_version: None, scalars: vec![] }.encode());
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&extra[..extra.len() / 2]).unwrap();
    drop(f);
    let (before, tail) = read_events(&path).unwrap();
    assert_eq!(before.len(), 11);
    assert!(matches!(tail, Tail::Torn { .. }));
    truncate_after(&dir, 4).unwrap();
    let (after, tail) = read_events(&path).unwrap();
    assert_eq!(tail, Tail::Clean);
    let steps: Vec<i64> = after.iter().map(|e| e.step).collect();
    assert_eq!(steps, [0, 1, 2, 3, 4, 4]);
    assert_eq!(after[..], before[..6]);
    // Nothing past step 8: the file is not rewritten (same bytes, no temporary left behind).
    let bytes = std::fs::read(&path).unwrap();
    truncate_after(&dir, 8).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_corrupt_events_file_is_an_error_naming_it() {
    let dir = temp_dir("corrupt");
    let path = write_run(&dir, 2);
    let mut bytes = std::fs::read(&path).unwrap();
    let n = bytes.len();
    bytes[n - 10] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    let err = truncate_after(&dir, 1).unwrap_err().to_string();
    assert!(err.contains(path.to_str().unwrap()) && err.contains("CRC"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}
