//! Checkpoints that go wrong: a save killed at any point (simulated at each stage, and a real
//! child process SIGKILLed while saving in a loop) leaves the previous checkpoint loadable and
//! its debris is cleaned by the next save; a failing save leaves the previous one intact; a
//! truncated, corrupted or foreign checkpoint gives an error that says what it is.

mod checkpoint_util;

use checkpoint_util::*;
use moco_worker::checkpoint::atomic::is_temp_name;
use moco_worker::checkpoint::tensors::TensorFile;
use moco_worker::checkpoint::{
    find_latest, resume, save, Checkpoint, SaveRequest, Snapshot, CHECKPOINTS, LATEST,
};
use moco_worker::data::SamplerPos;
use moco_worker::moco::comm::Solo;
use std::io::BufRead;
use std::path::Path;

fn request(dir: &Path) -> SaveRequest<'_> {
    SaveRequest {
        run_dir: dir,
        run_id: "faults",
        epoch: 0.0,
        data_position: SamplerPos::default(),
        band_stats: None,
        keep_last: 3,
    }
}

/// Every file name under `root`, recursively.
fn all_names(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            if e.file_type().unwrap().is_dir() {
                stack.push(e.path());
            }
            out.push(e.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

#[test]
fn an_interrupted_save_at_any_stage_leaves_the_previous_checkpoint() {
    let dir = temp_dir("stages");
    let mut m = new_moco(&tiny_cfg());
    m.steps = 1;
    let first = save(&m, &Solo, &request(&dir)).unwrap();
    let good = std::fs::read(first.dir.join("rank-0.safetensors")).unwrap();
    let root = dir.join(CHECKPOINTS);
    let step2 = root.join("step-000002");
    std::fs::create_dir_all(&step2).unwrap();

    // Killed while writing the rank file: a partial temporary file.
    std::fs::write(step2.join(".rank-0.safetensors.tmp-99999-0"), &good[..good.len() / 3]).unwrap();
    assert_eq!(find_latest(&dir).unwrap().unwrap().step(), 1);
    // Killed after the rename, before meta.json: the folder is incomplete and reads as such.
    std::fs::write(step2.join("rank-0.safetensors"), &good).unwrap();
    assert_eq!(find_latest(&dir).unwrap().unwrap().step(), 1);
    let e = Checkpoint::resolve(&step2).unwrap_err().to_string();
    assert!(e.contains("no meta.json") && e.contains("interrupted"), "{e}");
    // Killed while writing meta.json: a partial temporary description.
    std::fs::write(step2.join(".meta.json.tmp-99999-1"), b"{\"format\": \"moco-rs-chec").unwrap();
    assert_eq!(find_latest(&dir).unwrap().unwrap().step(), 1);
    // Killed while writing the pointer.
    std::fs::write(root.join(".latest.tmp-99999-2"), b"step-0000").unwrap();
    let ck = find_latest(&dir).unwrap().unwrap();
    assert_eq!(ck.step(), 1);
    assert_eq!(ck.load_snapshot(0).unwrap(), Snapshot::of(&m).unwrap());

    // The next save removes the debris (temporaries, the incomplete folder).
    m.steps = 3;
    let third = save(&m, &Solo, &request(&dir)).unwrap();
    assert!(third.pruned.contains(&step2), "{:?}", third.pruned);
    let names = all_names(&root);
    assert!(!names.iter().any(|n| is_temp_name(n)), "{names:?}");
    assert!(!step2.exists());
    assert_eq!(find_latest(&dir).unwrap().unwrap().step(), 3);
    assert!(root.join("step-000001").join("meta.json").is_file(), "the older complete checkpoint is kept");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_save_returns_an_error_and_keeps_the_previous_checkpoint() {
    let dir = temp_dir("failsave");
    let mut m = new_moco(&tiny_cfg());
    m.steps = 1;
    save(&m, &Solo, &request(&dir)).unwrap();
    // A folder where the rank file must go: the final rename fails (as a full disk would fail
    // the write), after the temporary file was written.
    m.steps = 2;
    let blocked = dir.join(CHECKPOINTS).join("step-000002").join("rank-0.safetensors");
    std::fs::create_dir_all(blocked.join("x")).unwrap();
    let e = save(&m, &Solo, &request(&dir)).unwrap_err().to_string();
    assert!(e.contains("rank-0.safetensors"), "the error names the file: {e}");
    assert_eq!(std::fs::read_to_string(dir.join(CHECKPOINTS).join(LATEST)).unwrap().trim(), "step-000001");
    let ck = find_latest(&dir).unwrap().unwrap();
    assert_eq!(ck.step(), 1);
    ck.load_snapshot(0).unwrap();
    let names = all_names(&dir.join(CHECKPOINTS));
    assert!(!names.iter().any(|n| is_temp_name(n)), "a failed write removes its temporary file: {names:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_and_corrupted_checkpoints_are_named_as_such() {
    let dir = temp_dir("truncated");
    let m = new_moco(&tiny_cfg());
    let saved = save(&m, &Solo, &request(&dir)).unwrap();
    let file = saved.dir.join("rank-0.safetensors");
    let good = std::fs::read(&file).unwrap();

    std::fs::write(&file, &good[..good.len() - 1000]).unwrap();
    let ck = find_latest(&dir).unwrap().unwrap();
    let e = ck.load_snapshot(0).unwrap_err().to_string();
    assert!(e.contains("truncated") && e.contains("rank-0.safetensors"), "{e}");
    // The file on its own (no meta.json to compare with) is also recognised as cut off.
    let e = TensorFile::open(&file).err().unwrap().to_string();
    assert!(e.contains("truncated"), "{e}");

    let mut flipped = good.clone();
    let last = flipped.len() - 5;
    flipped[last] ^= 0x40;
    std::fs::write(&file, &flipped).unwrap();
    let e = ck.load_snapshot(0).unwrap_err().to_string();
    assert!(e.contains("checksum mismatch"), "{e}");

    std::fs::remove_file(&file).unwrap();
    let e = ck.load_snapshot(0).unwrap_err().to_string();
    assert!(e.contains("missing"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn foreign_files_and_other_networks_are_refused_clearly() {
    let dir = temp_dir("foreign");
    let cfg = tiny_cfg();
    let m = new_moco(&cfg);
    let saved = save(&m, &Solo, &request(&dir)).unwrap();

    // Another network: resuming a wider model from it.
    let mut wide = cfg.clone();
    wide.width = 0.125;
    let mut w = new_moco(&wide);
    let ck = Checkpoint::resolve(&dir).unwrap();
    let e = resume(&mut w, &ck, 0, 1).unwrap_err().to_string();
    assert!(e.contains("width 0.0625 -> 0.125"), "{e}");
    assert!(e.contains("--init-from"), "{e}");

    // A description of another format.
    let other = temp_dir("foreign-meta");
    let step = other.join(CHECKPOINTS).join("step-000001");
    std::fs::create_dir_all(&step).unwrap();
    std::fs::write(step.join("meta.json"), b"{\"format\": \"lightning\", \"epoch\": 3}").unwrap();
    let e = Checkpoint::resolve(&other).unwrap_err().to_string();
    assert!(e.contains("not a moco-rs checkpoint"), "{e}");

    // Random bytes named like a checkpoint file, and a plain torch-style safetensors file.
    let junk = other.join("model.safetensors");
    std::fs::write(&junk, [7u8; 64]).unwrap();
    let e = Checkpoint::resolve(&junk).unwrap_err().to_string();
    assert!(e.contains("not a safetensors file"), "{e}");
    let weights = Checkpoint::open(&saved.dir).unwrap().load_weights().unwrap();
    let export = other.join("resnet50.safetensors");
    moco_worker::checkpoint::write_export(
        &weights,
        moco_worker::checkpoint::ExportFormat::Torchvision,
        &export,
        "test",
    )
    .unwrap();
    let e = Checkpoint::resolve(&export).unwrap_err().to_string();
    assert!(e.contains("torchvision-style keys"), "{e}");
    let e = Checkpoint::resolve(&other.join("nothing-here")).unwrap_err().to_string();
    assert!(e.contains("no such file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&other);
}

/// The child's side of `a_save_killed_mid_write_leaves_a_loadable_checkpoint`: save step 1,
/// say so, then save steps 2, 3, ... until killed.
fn child_saves_forever(dir: &Path) -> ! {
    let mut cfg = tiny_cfg();
    cfg.width = 0.25; // ~20 MB files: the kill lands inside a write most of the time
    let mut m = new_moco(&cfg);
    m.steps = 1;
    save(&m, &Solo, &request(dir)).unwrap();
    println!("ready");
    loop {
        m.steps += 1;
        save(&m, &Solo, &request(dir)).unwrap();
    }
}

#[test]
fn a_save_killed_mid_write_leaves_a_loadable_checkpoint() {
    if let Ok(dir) = std::env::var("MOCO_CKPT_KILL_CHILD") {
        child_saves_forever(Path::new(&dir));
    }
    let mut cfg = tiny_cfg();
    cfg.width = 0.25;
    let want = Snapshot::of(&new_moco(&cfg)).unwrap();
    for (round, delay_ms) in [15u64, 120, 400].into_iter().enumerate() {
        let dir = temp_dir(&format!("kill-{round}"));
        let mut child = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "a_save_killed_mid_write_leaves_a_loadable_checkpoint", "--nocapture"])
            .env("MOCO_CKPT_KILL_CHILD", &dir)
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.any(|l| l.unwrap().trim() == "ready"), "the child never finished its first save");
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        child.kill().unwrap(); // SIGKILL: no destructor, no cleanup
        child.wait().unwrap();

        // Whatever the kill interrupted, the newest complete checkpoint loads and verifies.
        let ck = find_latest(&dir).unwrap().expect("the first save was complete");
        let debris: Vec<String> =
            all_names(&dir.join(CHECKPOINTS)).into_iter().filter(|n| is_temp_name(n)).collect();
        eprintln!(
            "round {round}: killed after {delay_ms} ms; newest complete step {}; left behind {debris:?}",
            ck.step()
        );
        let got = ck.load_snapshot(0).unwrap();
        assert_eq!(got.params, want.params, "round {round}");
        assert_eq!(got.steps, ck.step());
        // A new save cleans what the killed one left behind.
        let mut m = new_moco(&cfg);
        m.steps = ck.step() + 1;
        save(&m, &Solo, &request(&dir)).unwrap();
        let names = all_names(&dir.join(CHECKPOINTS));
        assert!(!names.iter().any(|n| is_temp_name(n)), "round {round}: {names:?}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
