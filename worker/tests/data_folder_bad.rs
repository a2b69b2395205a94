//! Image folders with bad input: every bad file is skipped with a reason and listed, an error
//! comes only when nothing usable remains or with --strict-data, and nothing panics. Also the
//! cache's own failure modes: damaged files, a file changing mid-build, concurrent builders.

mod folder_util;

use folder_util::*;
use moco_worker::data::folder::{open_folder, SkipKind};
use moco_worker::data::Dataset;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

/// Four good 40x40 RGB PNGs and one of every bad kind.
fn bad_folder(d: &TempDir) {
    for i in 0..4 {
        png_rgb(&d.file(&format!("good{i}.png")), 40, 40);
    }
    raw(&d.file("zero.png"), b"");
    let png = std::fs::read(d.file("good0.png")).unwrap();
    raw(&d.file("truncated.png"), &png[..png.len() / 2]);
    let mut flipped = png.clone();
    for b in &mut flipped[60..80] {
        *b ^= 0x5A;
    }
    raw(&d.file("corrupt.png"), &flipped);
    raw(&d.file("text.png"), b"this is a text file with an image extension\n");
    jpeg_rgb(&d.file("cut.jpg"), 40, 40);
    let jpg = std::fs::read(d.file("cut.jpg")).unwrap();
    raw(&d.file("cut.jpg"), &jpg[..jpg.len() * 2 / 3]);
    tiff_rgb8(&d.file("cut.tif"), 40, 40);
    let tif = std::fs::read(d.file("cut.tif")).unwrap();
    raw(&d.file("cut.tif"), &tif[..tif.len() / 3]);
    png_gray(&d.file("gray.png"), 40, 40);
    png_rgb16(&d.file("deep.png"), 40, 40);
    png_rgb(&d.file("tiny.png"), 12, 10);
    png_rgb(&d.file("mid.png"), 36, 36);
    raw(&d.file("notes.txt"), b"not an image");
}

fn kind_of(r: &moco_worker::data::folder::DatasetReport, path: &str) -> Option<SkipKind> {
    r.skipped.iter().find(|s| s.path == path).map(|s| s.kind)
}

#[test]
fn bad_files_are_skipped_with_reasons() {
    let d = TempDir::new("bad");
    bad_folder(&d);
    let got = open_folder(d.path(), &opts(32, 40)).unwrap();
    let r = &got.report;
    assert_eq!(kind_of(r, "zero.png"), Some(SkipKind::Empty));
    assert_eq!(kind_of(r, "truncated.png"), Some(SkipKind::Corrupt));
    assert_eq!(kind_of(r, "corrupt.png"), Some(SkipKind::Corrupt));
    assert_eq!(kind_of(r, "text.png"), Some(SkipKind::NotAnImage));
    assert_eq!(kind_of(r, "cut.jpg"), Some(SkipKind::Corrupt));
    assert_eq!(kind_of(r, "cut.tif"), Some(SkipKind::Corrupt));
    assert_eq!(kind_of(r, "gray.png"), Some(SkipKind::BandMismatch));
    assert_eq!(kind_of(r, "deep.png"), Some(SkipKind::DepthMismatch));
    assert_eq!(r.skipped.len(), 8, "{:#?}", r.skipped);
    assert!(r.skipped.iter().all(|s| !s.reason.is_empty()));
    assert_eq!(r.ignored, vec!["notes.txt"]);
    // The tiny image is kept, upscaled, with a warning.
    assert_eq!(r.upscaled.len(), 1);
    assert_eq!(
        (r.upscaled[0].path.as_str(), r.upscaled[0].width, r.upscaled[0].height),
        ("tiny.png", 12, 10)
    );
    assert_eq!((got.dataset.len(), r.cached, r.image_files), (6, 6, 14));
    // Between the crop and the stored size: enlarged without a warning, but noted.
    assert!(
        r.notes.iter().any(|n| n.starts_with("1 tile(s) between the 32-px crop and the 40-px")),
        "{:?}",
        r.notes
    );
    let text = r.to_string();
    for needle in ["skipped 8 file(s)", "truncated.png", "upscaled", "notes.txt", "6 of 14 image files"] {
        assert!(text.contains(needle), "report lacks {needle:?}:\n{text}");
    }
    // Every cached tile decodes to the stored shape.
    for i in 0..got.dataset.len() {
        assert_eq!(got.dataset.tile(i).unwrap().height(), 40);
    }
}

#[test]
fn strict_data_makes_any_skip_an_error_and_writes_no_cache() {
    let d = TempDir::new("strict");
    bad_folder(&d);
    let mut o = opts(32, 40);
    o.strict = true;
    let err = open_folder(d.path(), &o).err().expect("strict with bad files").to_string();
    for needle in ["--strict-data", "zero.png", "tiny.png", "smaller than the 32-px training crop"] {
        assert!(err.contains(needle), "error lacks {needle:?}: {err}");
    }
    let left: Vec<_> = std::fs::read_dir(d.path().join(".moco-cache")).unwrap().flatten().collect();
    assert!(left.is_empty(), "nothing left behind: {left:?}");

    // A lenient cache exists now; strict still refuses to use it.
    assert!(open_folder(d.path(), &opts(32, 40)).is_ok());
    assert!(open_folder(d.path(), &o).is_err());

    let clean = TempDir::new("strict-clean");
    png_rgb(&clean.file("a.png"), 40, 40);
    assert!(open_folder(clean.path(), &o).is_ok());
}

#[test]
fn nothing_usable_is_an_error_that_says_why() {
    let empty = TempDir::new("empty");
    let e = open_folder(empty.path(), &opts(32, 40)).err().unwrap().to_string();
    assert!(e.contains("no PNG, JPEG or TIFF files") && e.contains("empty"), "{e}");

    let other = TempDir::new("only-text");
    raw(&other.file("readme.md"), b"# tiles");
    let e = open_folder(other.path(), &opts(32, 40)).err().unwrap().to_string();
    assert!(e.contains("readme.md"), "{e}");

    let bad = TempDir::new("only-bad");
    raw(&bad.file("a.png"), b"");
    raw(&bad.file("b.tif"), b"II*\0garbage");
    let e = open_folder(bad.path(), &opts(32, 40)).err().unwrap().to_string();
    assert!(
        e.contains("none of the 2 image file(s) is usable") && e.contains("a.png") && e.contains("b.tif"),
        "{e}"
    );

    let e = open_folder(&bad.path().join("missing"), &opts(32, 40)).err().unwrap().to_string();
    assert!(e.contains("missing"), "{e}");
    raw(&bad.file("plain"), b"x");
    assert!(open_folder(&bad.path().join("plain"), &opts(32, 40))
        .err()
        .unwrap()
        .to_string()
        .contains("not a folder"));
}

#[cfg(unix)]
#[test]
fn symlink_loops_and_duplicates_are_listed_not_followed() {
    use std::os::unix::fs::symlink;
    let d = TempDir::new("links");
    png_rgb(&d.file("real/a.png"), 40, 40);
    png_rgb(&d.file("real/sub/b.png"), 40, 40);
    symlink(d.path(), d.file("real/sub/up")).unwrap(); // back to the root: a loop
    symlink(d.file("real/self.png"), d.file("real/self.png")).unwrap(); // resolves to itself
    symlink(d.file("gone.png"), d.file("real/dangling.png")).unwrap();
    symlink(d.file("real"), d.file("alias")).unwrap(); // a second way into real/
    symlink(d.file("real/a.png"), d.file("a_link.png")).unwrap(); // the same file again
    let got = open_folder(d.path(), &opts(32, 40)).unwrap();
    let r = &got.report;
    let names: Vec<&str> = got.dataset.header().unwrap().files.iter().map(|f| f.rel.as_str()).collect();
    assert_eq!(names, ["a_link.png", "real/sub/b.png"], "{:#?}", r.skipped);
    assert_eq!(kind_of(r, "real/sub/up"), Some(SkipKind::SymlinkLoop));
    assert_eq!(kind_of(r, "real/self.png"), Some(SkipKind::SymlinkLoop));
    assert_eq!(kind_of(r, "real/dangling.png"), Some(SkipKind::BrokenLink));
    assert_eq!(kind_of(r, "alias"), Some(SkipKind::SymlinkLoop));
    assert_eq!(kind_of(r, "real/a.png"), Some(SkipKind::Duplicate));
}

#[test]
fn a_file_changed_while_caching_is_skipped_then_picked_up() {
    let d = TempDir::new("changing");
    for n in ["a.png", "b.png", "c.png"] {
        png_rgb(&d.file(n), 40, 40);
    }
    let mut o = opts(32, 40);
    let target = d.file("b.png");
    o.before_read = Some(Arc::new(move |p: &Path| {
        if p == target {
            jpeg_flat(&target, 40, 40, [1, 2, 3]); // new content, new size, new mtime
        }
    }));
    let got = open_folder(d.path(), &o).unwrap();
    assert_eq!(kind_of(&got.report, "b.png"), Some(SkipKind::Changed));
    let h = got.dataset.header().unwrap();
    assert_eq!(h.files.iter().map(|f| f.rel.as_str()).collect::<Vec<_>>(), ["a.png", "c.png"]);
    // What the header lists is what was read.
    for f in &h.files {
        let bytes = std::fs::read(d.file(&f.rel)).unwrap();
        assert_eq!((f.bytes, f.hash), (bytes.len() as u64, xxhash_rust::xxh3::xxh3_64(&bytes)));
    }
    drop(got);
    let next = open_folder(d.path(), &opts(32, 40)).unwrap();
    assert!(next.built && next.report.skipped.is_empty());
    assert_eq!(next.dataset.len(), 3);
}

#[test]
fn damaged_or_foreign_caches_are_detected_and_rebuilt() {
    let d = TempDir::new("damaged");
    for i in 0..2 {
        png_rgb(&d.file(&format!("{i}.png")), 40, 40);
    }
    let o = opts(32, 40);
    let path = open_folder(d.path(), &o).unwrap().dataset.path().to_path_buf();
    let good = std::fs::read(&path).unwrap();

    // A flipped bit in the tile data.
    let mut bad = good.clone();
    bad[4096 + 100] ^= 1;
    std::fs::write(&path, &bad).unwrap();
    let again = open_folder(d.path(), &o).unwrap();
    assert!(again.built, "damaged data is rebuilt");
    assert_eq!(sample(&again.dataset, 0, 0, 33, 0), pattern(33, 0, 0) as u32);
    drop(again);

    // Truncated.
    std::fs::write(&path, &good[..good.len() - 10]).unwrap();
    assert!(open_folder(d.path(), &o).unwrap().built);

    // Another version's file with the same keys, and a foreign file with the extension.
    let mut old = good.clone();
    old[8] = 99;
    std::fs::write(&path, &old).unwrap();
    raw(&d.path().join(".moco-cache/junk.tiles"), b"junk");
    let r = open_folder(d.path(), &o).unwrap();
    assert!(r.built);
    assert_eq!(std::fs::read(&path).unwrap(), good, "the rebuild writes the same bytes it wrote before");
}

#[test]
fn concurrent_openers_build_once() {
    let d = TempDir::new("concurrent");
    for i in 0..6 {
        png_rgb(&d.file(&format!("{i}.png")), 64, 64);
    }
    let root = d.path().to_path_buf();
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let root = root.clone();
            std::thread::spawn(move || {
                let got = open_folder(&root, &opts(32, 64)).unwrap();
                (got.built, got.dataset.path().to_path_buf(), got.dataset.len())
            })
        })
        .collect();
    let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results.iter().filter(|r| r.0).count(), 1, "{results:?}");
    assert!(results.iter().all(|r| r.1 == results[0].1 && r.2 == 6));
}

#[test]
fn a_held_lock_is_waited_for_a_stale_one_removed() {
    let d = TempDir::new("lock");
    png_rgb(&d.file("a.png"), 40, 40);
    let lock_dir = d.path().join(".moco-cache");
    // The lock's name is internal (the folder's quick key): record it from inside a build.
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (s2, dir2) = (seen.clone(), lock_dir.clone());
    let mut o = opts(32, 40);
    o.before_read = Some(Arc::new(move |_: &Path| {
        let locks = std::fs::read_dir(&dir2).unwrap().flatten().map(|e| e.path());
        s2.lock().unwrap().extend(locks.filter(|p| p.extension().is_some_and(|e| e == "lock")));
    }));
    let first = open_folder(d.path(), &o).unwrap();
    assert!(first.built);
    let cache = first.dataset.path().to_path_buf();
    drop(first);
    let lock = seen.lock().unwrap().first().cloned().expect("a lock is held while building");
    assert!(!lock.exists(), "the lock is removed after the build");
    std::fs::remove_file(&cache).unwrap();
    o.before_read = None;
    o.lock_timeout = Duration::from_millis(600);

    // A fresh lock held by "someone else": wait, then time out with a clear message.
    raw(&lock, b"pid 1 on elsewhere");
    let e = open_folder(d.path(), &o).err().expect("times out").to_string();
    assert!(e.contains("pid 1 on elsewhere") && e.contains("delete"), "{e}");

    // Released while waiting: the waiter builds.
    o.lock_timeout = Duration::from_secs(20);
    let l2 = lock.clone();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        std::fs::remove_file(&l2).unwrap();
    });
    assert!(open_folder(d.path(), &o).unwrap().built);
    releaser.join().unwrap();
    std::fs::remove_file(&cache).unwrap();

    // A stale lock (no heartbeat for minutes) is removed.
    raw(&lock, b"pid 1 on elsewhere");
    let f = std::fs::File::options().write(true).open(&lock).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(600)).unwrap();
    drop(f);
    o.lock_timeout = Duration::from_millis(100);
    assert!(open_folder(d.path(), &o).unwrap().built);
}
