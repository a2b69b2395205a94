//! Image folders with good files: what the cache holds (pixel values, bands, depth, labels,
//! statistics), when it is reused and when it is rebuilt. The files are real PNG, JPEG and TIFF
//! files written by the tests (folder_util).

mod folder_util;

use folder_util::*;
use moco_worker::data::folder::{open_folder, BandChoice, SkipKind};
use moco_worker::data::{Dataset, PixelDepth};
use std::path::Path;

fn mtime(p: &Path) -> std::time::SystemTime {
    std::fs::metadata(p).unwrap().modified().unwrap()
}

fn caches(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir.join(".moco-cache"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "tiles"))
        .collect();
    v.sort();
    v
}

#[test]
fn png_jpeg_tiff_are_cached_in_path_order_and_reused() {
    let d = TempDir::new("mixed-formats");
    png_rgb(&d.file("a.png"), 80, 80);
    jpeg_flat(&d.file("b.jpg"), 80, 80, [200, 100, 50]);
    tiff_rgb8(&d.file("c.TIF"), 80, 80);
    png_gray(&d.file("d_gray.png"), 80, 80);
    let o = opts(64, 80);
    let first = open_folder(d.path(), &o).unwrap();
    assert!(first.built);
    let ds = &first.dataset;
    assert_eq!((ds.len(), ds.bands(), ds.depth(), ds.tile_size()), (3, 3, PixelDepth::U8, 80));
    let r = &first.report;
    assert_eq!((r.image_files, r.cached, r.source_bands, r.depth_bits), (4, 3, 3, 8));
    let names: Vec<&str> = ds.header().unwrap().files.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(names, ["a.png", "b.jpg", "c.TIF"]);
    // The grey PNG is the minority kind (1 band of 3).
    assert_eq!(r.skipped.len(), 1);
    assert_eq!((r.skipped[0].path.as_str(), r.skipped[0].kind), ("d_gray.png", SkipKind::BandMismatch));
    // Stored at native size: lossless formats are exact, JPEG within its quantisation.
    for (y, x) in [(0, 0), (5, 70), (79, 79), (40, 13)] {
        for b in 0..3 {
            let want = pattern(x as u32, y as u32, b as u32) as u32;
            assert_eq!(sample(ds, 0, y, x, b), want, "png ({y},{x},{b})");
            assert_eq!(sample(ds, 2, y, x, b), want, "tiff ({y},{x},{b})");
            let got = sample(ds, 1, y, x, b) as i32;
            assert!((got - [200, 100, 50][b]).abs() <= 3, "jpeg ({y},{x},{b}) = {got}");
        }
    }
    // Statistics over the stored tiles: two pattern tiles and one flat one.
    for b in 0..3u32 {
        let mut sum = 0.0;
        for y in 0..80 {
            for x in 0..80 {
                sum += pattern(x, y, b) as f64;
            }
        }
        let flat = [200.0, 100.0, 50.0][b as usize];
        let want = (2.0 * sum / 6400.0 + flat) / 3.0 / 255.0;
        let got = ds.stats().mean[b as usize] as f64;
        assert!((got - want).abs() < 1.5 / 255.0, "band {b} mean {got} want {want}");
    }
    assert!(ds.label(0).is_none(), "files at the top level: unlabeled");

    let path = ds.path().to_path_buf();
    let when = mtime(&path);
    drop(first);
    let again = open_folder(d.path(), &o).unwrap();
    assert!(!again.built, "an unchanged folder reuses its cache");
    assert_eq!(again.dataset.path(), path);
    assert_eq!(mtime(&path), when);
    assert_eq!(again.report, open_folder(d.path(), &o).unwrap().report);
}

#[test]
fn a_changed_folder_rebuilds_and_stale_caches_go() {
    let d = TempDir::new("rebuild");
    for i in 0..3 {
        png_rgb(&d.file(&format!("t{i}.png")), 40, 40);
    }
    let o = opts(32, 40);
    let a = open_folder(d.path(), &o).unwrap();
    assert_eq!(a.dataset.len(), 3);
    let first_path = a.dataset.path().to_path_buf();

    png_rgb(&d.file("t3.png"), 40, 40);
    let b = open_folder(d.path(), &o).unwrap();
    assert!(b.built, "a new file rebuilds");
    assert_eq!(b.dataset.len(), 4);
    assert_ne!(b.dataset.path(), first_path);
    assert_eq!(caches(d.path()), vec![b.dataset.path().to_path_buf()], "the stale cache is removed");

    // Touching a file without changing it rebuilds into the same (content-named) file.
    let f = std::fs::File::options().write(true).open(d.file("t0.png")).unwrap();
    f.set_modified(std::time::SystemTime::now() + std::time::Duration::from_secs(5)).unwrap();
    drop(f);
    let c = open_folder(d.path(), &o).unwrap();
    assert!(c.built);
    assert_eq!(c.dataset.path(), b.dataset.path());

    // New content under an old name rebuilds with the new pixels.
    jpeg_flat(&d.file("t1.png"), 40, 40, [10, 240, 10]);
    let e = open_folder(d.path(), &o).unwrap();
    assert!(e.built);
    assert!((sample(&e.dataset, 1, 20, 20, 1) as i32 - 240).abs() <= 3);
    assert_eq!(caches(d.path()).len(), 1);

    // Other parameters (stored size) are another cache, and the first stays.
    let other = open_folder(d.path(), &opts(32, 48)).unwrap();
    assert!(other.built);
    assert_eq!(other.dataset.tile_size(), 48);
    assert_eq!(caches(d.path()).len(), 2);
    assert!(!open_folder(d.path(), &o).unwrap().built);
}

#[test]
fn resizing_takes_the_centre_square_within_one_level() {
    // 160 wide x 120 high, value (x + y) / 2: linear, so an area-weighted resize must give the
    // value at each output pixel's centre in source coordinates.
    let d = TempDir::new("resize");
    image::ImageBuffer::from_fn(160, 120, |x, y| image::Luma([((x + y) / 2) as u8]))
        .save(d.file("wide.png"))
        .unwrap();
    let got = open_folder(d.path(), &opts(32, 60)).unwrap();
    let ds = &got.dataset;
    assert_eq!(ds.bands(), 1);
    // Centre square: columns 20..140; scale 2.
    for yo in 1..59 {
        for xo in 1..59 {
            let sx = 20.0 + (xo as f64 + 0.5) * 2.0 - 0.5;
            let sy = (yo as f64 + 0.5) * 2.0 - 0.5;
            let want = (sx + sy) / 2.0;
            let v = sample(ds, 0, yo, xo, 0) as f64;
            assert!((v - want).abs() <= 1.0, "({yo},{xo}) = {v}, want {want:.2}");
        }
    }
    let h = ds.header().unwrap();
    assert_eq!((h.files[0].width, h.files[0].height), (160, 120));
    assert_eq!(got.report.sizes, vec![(120, 160, 1)]);
}

#[test]
fn sixteen_bit_four_band_tiff_defaults_to_rgb_and_bands_select() {
    let d = TempDir::new("rgbn16");
    for i in 0..3 {
        tiff_multi16(&d.file(&format!("s{i}.tif")), 48, 48, 4);
    }
    let mut o = opts(32, 48);
    let rgb = open_folder(d.path(), &o).unwrap();
    assert_eq!((rgb.dataset.bands(), rgb.dataset.depth()), (3, PixelDepth::U16));
    assert_eq!(rgb.report.bands, vec![0, 1, 2]);
    assert_eq!(rgb.report.source_bands, 4);
    assert!(rgb.report.notes.iter().any(|n| n.contains("--bands 0,1,2,3")), "{:?}", rgb.report.notes);
    for (y, x) in [(0, 0), (47, 3), (20, 31)] {
        for b in 0..3 {
            assert_eq!(sample(&rgb.dataset, 2, y, x, b), pattern16(x as u32, y as u32, b as u32) as u32);
        }
    }
    // 16-bit statistics in 0..1 of 65535: the pattern uses a small part of the range.
    let m = rgb.dataset.stats().mean[0];
    assert!(m > 0.05 && m < 0.3, "{m}");

    o.bands = BandChoice::List(vec![3, 0]);
    let nir = open_folder(d.path(), &o).unwrap();
    assert!(nir.built, "another band choice is another cache");
    assert_eq!(nir.dataset.bands(), 2);
    assert_eq!(sample(&nir.dataset, 0, 7, 9, 0), pattern16(9, 7, 3) as u32);
    assert_eq!(sample(&nir.dataset, 0, 7, 9, 1), pattern16(9, 7, 0) as u32);

    o.bands = BandChoice::List(vec![4]);
    let err = open_folder(d.path(), &o).err().expect("band 4 of 4 bands").to_string();
    assert!(err.contains("band 4 does not exist") && err.contains("4 band(s)"), "{err}");
}

#[test]
fn a_tie_of_band_counts_asks_the_user_instead_of_dropping_half() {
    let d = TempDir::new("band-tie");
    for i in 0..3 {
        png_rgb(&d.file(&format!("rgb{i}.png")), 40, 40);
        tiff_rgbn8(&d.file(&format!("rgbn{i}.tif")), 40, 40);
    }
    let mut o = opts(32, 40);
    let err = open_folder(d.path(), &o).err().expect("3 x 3-band and 3 x 4-band is a tie").to_string();
    assert!(err.contains("as many 3-band as 4-band images (3 each)") && err.contains("--bands all"), "{err}");
    // --bands all asks for the fourth band: the 4-band images are kept, the others listed.
    o.bands = BandChoice::All;
    let all = open_folder(d.path(), &o).unwrap();
    assert_eq!((all.dataset.len(), all.dataset.bands()), (3, 4));
    assert_eq!(all.report.skipped.iter().filter(|s| s.kind == SkipKind::BandMismatch).count(), 3);
    // Without a tie the majority still wins quietly (with a note).
    png_rgb(&d.file("rgb3.png"), 40, 40);
    o.bands = BandChoice::Default;
    assert_eq!(open_folder(d.path(), &o).unwrap().dataset.bands(), 3);
}

#[test]
fn many_band_planar_and_rgb_plus_extra_tiffs_keep_every_band() {
    let d = TempDir::new("multiband");
    tiff_multi8(&d.file("five/a.tif"), 40, 40, 5);
    tiff_multi8(&d.file("five/b.tif"), 40, 40, 5);
    let five = open_folder(&d.file("five"), &opts(32, 40)).unwrap();
    assert_eq!(five.dataset.bands(), 5, "5+ bands: all by default");
    assert!(five.report.notes.iter().any(|n| n.contains("5-band")));
    assert_eq!(sample(&five.dataset, 1, 3, 4, 4), pattern(4, 3, 4) as u32);

    tiff_planar8(&d.file("planar/p.tif"), 40, 40, 4);
    let mut o = opts(32, 40);
    o.bands = BandChoice::All;
    let planar = open_folder(&d.file("planar"), &o).unwrap();
    assert_eq!(planar.dataset.bands(), 4);
    for b in 0..4 {
        assert_eq!(
            sample(&planar.dataset, 0, 11, 29, b),
            pattern(29, 11, b as u32) as u32,
            "planar band {b}"
        );
    }

    tiff_rgbn8(&d.file("rgbn/n.tif"), 40, 40);
    let rgbn = open_folder(&d.file("rgbn"), &o).unwrap();
    assert_eq!(rgbn.report.source_bands, 4, "RGB-tagged TIFF with an extra band keeps it");
    assert_eq!(sample(&rgbn.dataset, 0, 17, 2, 3), pattern(2, 17, 3) as u32);
}

#[test]
fn sixteen_bit_png_is_stored_in_sixteen_bits() {
    let d = TempDir::new("png16");
    png_rgb16(&d.file("x.png"), 36, 36);
    let got = open_folder(d.path(), &opts(32, 36)).unwrap();
    assert_eq!(got.dataset.depth(), PixelDepth::U16);
    assert_eq!(got.report.depth_bits, 16);
    assert_eq!(sample(&got.dataset, 0, 35, 30, 2), pattern16(30, 35, 2) as u32);
}

#[test]
fn first_level_folders_are_labels() {
    let d = TempDir::new("labels");
    png_rgb(&d.file("water/a.png"), 40, 40);
    png_rgb(&d.file("solar/deep/b.png"), 40, 40);
    png_rgb(&d.file("solar/c.png"), 40, 40);
    let got = open_folder(d.path(), &opts(32, 40)).unwrap();
    let ds = &got.dataset;
    assert_eq!(ds.class_names(), vec!["solar", "water"]);
    let labels: Vec<Option<u32>> = (0..ds.len()).map(|i| ds.label(i)).collect();
    // Path order: solar/c.png, solar/deep/b.png, water/a.png.
    assert_eq!(labels, vec![Some(0), Some(0), Some(1)]);

    png_rgb(&d.file("loose.png"), 40, 40);
    let mixed = open_folder(d.path(), &opts(32, 40)).unwrap();
    assert!(mixed.dataset.class_names().is_empty() && mixed.dataset.label(0).is_none());
}

#[test]
fn explicit_cache_dir_is_used_and_the_data_folder_left_alone() {
    let d = TempDir::new("cachedir-data");
    let c = TempDir::new("cachedir-cache");
    png_rgb(&d.file("a.png"), 40, 40);
    let mut o = opts(32, 40);
    o.cache_dir = Some(c.path().join("nested"));
    let got = open_folder(d.path(), &o).unwrap();
    assert!(got.dataset.path().starts_with(c.path()));
    assert!(!d.path().join(".moco-cache").exists());
    assert!(!open_folder(d.path(), &o).unwrap().built);
}
