//! Image folders through the real binaries: a worker trains on a folder (alone and as two ranks
//! started by hand, which share one cache build and one run folder, and refuse two), `--strict-data` refuses a bad file, and
//! `launcher preview` draws a 16-bit 4-band folder, on which a worker also trains with all four bands.

use moco_tests::{assert_contains, clear_rank_env, launcher, run_launcher, worker, TempDir};
use std::path::Path;
use std::process::{Command, Stdio};

/// Small runs: tiny preset at 32 px (tiles stored at 40), batch 8.
const QUICK: &[&str] =
    &["--device", "cpu", "--preset", "tiny", "--batch", "8", "--queue-size", "64", "--image-size", "32"];

/// `n` 48x48 RGB PNGs in two class folders, plus a text file named like an image.
fn folder(d: &Path, n: u32) {
    for i in 0..n {
        let class = if i % 2 == 0 { "roofs" } else { "fields" };
        std::fs::create_dir_all(d.join(class)).unwrap();
        image::RgbImage::from_fn(48, 48, |x, y| {
            image::Rgb([(x * 5 + i) as u8, (y * 5) as u8, (i * 9) as u8])
        })
        .save(d.join(format!("{class}/t{i:02}.png")))
        .unwrap();
    }
    std::fs::write(d.join("roofs/readme.png"), "not an image").unwrap();
}

fn worker_cmd(data: &Path, out: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(worker());
    c.args(QUICK).args(["--data", data.to_str().unwrap(), "--out", out.to_str().unwrap()]).args(extra);
    c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
    clear_rank_env(&mut c);
    c
}

fn caches(data: &Path) -> usize {
    std::fs::read_dir(data.join(".moco-cache"))
        .map(|r| r.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "tiles")).count())
        .unwrap_or(0)
}

#[test]
fn a_worker_trains_on_a_folder_and_reports_it() {
    let d = TempDir::new("folder-train");
    let data = d.path().join("tiles");
    folder(&data, 24);
    let out = worker_cmd(&data, &d.path().join("run"), &["--steps", "2"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_contains(
        &err,
        &[
            "dataset report",
            "24 of 25 image files cached as 40x40 tiles",
            "roofs/readme.png [not an image]",
            "2 classes",
            "step      2/2",
        ],
    );
    assert_eq!(caches(&data), 1);
    // Strict: the same folder is refused, naming the file.
    let out =
        worker_cmd(&data, &d.path().join("strict"), &["--steps", "1", "--strict-data"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_contains(&err, &["--strict-data", "roofs/readme.png"]);
}

/// Two ranks started by hand on one machine, with the given `--out` for each.
fn two_ranks(d: &TempDir, data: &Path, outs: [&str; 2]) -> [std::process::Output; 2] {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let master = format!("127.0.0.1:{port}");
    let rank = |r: usize| {
        worker_cmd(
            data,
            &d.path().join(outs[r]),
            &[
                "--steps",
                "2",
                "--threads",
                "1",
                "--rank",
                &r.to_string(),
                "--world-size",
                "2",
                "--master",
                &master,
            ],
        )
        .spawn()
        .unwrap()
    };
    let (r0, r1) = (rank(0), rank(1));
    [r0.wait_with_output().unwrap(), r1.wait_with_output().unwrap()]
}

#[test]
fn two_ranks_by_hand_train_on_one_folder() {
    let d = TempDir::new("folder-ranks");
    let data = d.path().join("tiles");
    folder(&data, 32);
    let [o0, o1] = two_ranks(&d, &data, ["run", "run"]);
    let e0 = String::from_utf8_lossy(&o0.stderr);
    assert!(o0.status.success(), "{e0}");
    assert!(o1.status.success(), "{}", String::from_utf8_lossy(&o1.stderr));
    assert_contains(&e0, &["step      2/2"]);
    assert_eq!(caches(&data), 1, "both ranks use one cache");
    let ck = d.path().join("run/checkpoints/step-000002");
    for f in ["meta.json", "rank-0.safetensors", "rank-1.safetensors"] {
        assert!(ck.join(f).is_file(), "{} missing", ck.join(f).display());
    }
}

#[test]
fn ranks_with_different_run_folders_stop_before_training() {
    let d = TempDir::new("folder-split");
    let data = d.path().join("tiles");
    folder(&data, 32);
    let [o0, o1] = two_ranks(&d, &data, ["a", "b"]);
    let (e0, e1) = (String::from_utf8_lossy(&o0.stderr), String::from_utf8_lossy(&o1.stderr));
    assert!(!o0.status.success() && !o1.status.success(), "rank 0:\n{e0}\nrank 1:\n{e1}");
    assert_contains(&e0, &["rank(s) 1 do not see this run folder", "same --out"]);
    assert_contains(&e1, &["does not see rank 0's run folder", "same --out"]);
    assert!(!e0.contains("step      1/"), "stopped before the first step:\n{e0}");
    assert!(!d.path().join("b/checkpoints").exists());
}

/// `n` 48x48 16-bit RGBN GeoTIFF-like tiles (one 4-sample strip image each).
fn four_band_folder(data: &Path, n: u32) {
    use tiff::encoder::{colortype, TiffEncoder};
    std::fs::create_dir_all(data).unwrap();
    for i in 0..n {
        // RGBN reflectances in the low part of the 16-bit range, as satellite products store them.
        let px: Vec<u16> = (0..48 * 48 * 4).map(|k| (300 + (k % 197) * 7 + i * 40) as u16).collect();
        let file = std::fs::File::create(data.join(format!("s{i}.tif"))).unwrap();
        let mut enc = TiffEncoder::new(file).unwrap();
        let mut img = enc.new_image::<colortype::Gray16>(48, 48).unwrap();
        img.extra_samples(&[tiff::tags::ExtraSamples::Unspecified; 3]).unwrap();
        img.write_data(&px).unwrap();
    }
}

#[test]
fn a_worker_trains_on_all_four_bands_of_a_sixteen_bit_folder() {
    let d = TempDir::new("folder-4band");
    let data = d.path().join("tiles");
    four_band_folder(&data, 10);
    let run = d.path().join("run");
    let out = worker_cmd(&data, &run, &["--steps", "2", "--bands", "all"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert_contains(&err, &["10 of 10 image files", "4 band(s)", "16-bit", "step      2/2"]);
    assert!(err.lines().any(|l| l.starts_with("step") && l.contains("loss ") && !l.contains("NaN")), "{err}");
    // The stem takes the four bands: the exported conv1 has 4 input channels.
    let tv = d.path().join("rgbn.safetensors");
    let last = run.join("last");
    run_launcher(&["export", "--checkpoint", last.to_str().unwrap(), "--out", tv.to_str().unwrap()])
        .expect_ok();
    let bytes = std::fs::read(&tv).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["conv1.weight"]["shape"], serde_json::json!([8, 4, 7, 7]));
}

#[test]
fn preview_draws_a_sixteen_bit_four_band_folder() {
    let d = TempDir::new("folder-preview");
    let data = d.path().join("tiles");
    four_band_folder(&data, 5);
    let png = d.path().join("preview.png");
    let ran = run_launcher(&[
        "preview",
        "--data",
        data.to_str().unwrap(),
        "--preset",
        "tiny",
        "--image-size",
        "32",
        "--tiles",
        "3",
        "--out",
        png.to_str().unwrap(),
    ])
    .expect_ok();
    assert_contains(&ran.stdout, &["3 of 5 tiles", "(RGB;"]);
    assert_contains(&ran.stderr, &["16-bit", "RGB of RGBN"]);
    let img = image::open(&png).unwrap().to_rgb8();
    // Two triplets per row: 2 x (3 x 32 + 2 x 2) + 10 wide, 2 rows of 32 + 2.
    assert_eq!((img.width(), img.height()), (210, 66));
    // Stretched for display: the tile in the top-left is not black.
    let mean: f64 = (0..32)
        .flat_map(|y| (0..32).map(move |x| (x, y)))
        .map(|(x, y)| img.get_pixel(x, y)[0] as f64)
        .sum::<f64>()
        / 1024.0;
    assert!(mean > 40.0, "preview of 16-bit data is dark: mean {mean}");

    let all = run_launcher(&[
        "preview",
        "--data",
        data.to_str().unwrap(),
        "--preset",
        "tiny",
        "--image-size",
        "32",
        "--bands",
        "all",
        "--out",
        png.to_str().unwrap(),
    ])
    .expect_ok();
    assert_contains(&all.stdout, &["bands 0,1,2 of 4 as RGB"]);
    let _ = launcher();
}

#[test]
fn the_launcher_trains_two_workers_on_a_folder() {
    let d = TempDir::new("folder-launcher");
    let data = d.path().join("tiles");
    folder(&data, 40);
    std::fs::write(data.join("broken.png"), b"\x89PNG\r\n\x1a\n truncated").unwrap();
    let out = d.path().join("run");
    let mut args: Vec<&str> = QUICK.to_vec();
    args.extend([
        "--workers",
        "2",
        "--steps",
        "2",
        "--data",
        data.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    let r = run_launcher(&args).expect_ok();
    // The launcher caches once (report printed once, the broken file named), then both ranks train.
    assert_contains(&r.stderr, &["broken.png", "2 worker(s)", "done: 2 steps"]);
    assert_eq!(r.stderr.matches("broken.png").count(), 1, "{}", r.stderr);
    assert_eq!(caches(&data), 1);
}
