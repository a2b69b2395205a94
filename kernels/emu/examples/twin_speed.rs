//! Times host-twin launches: an elementwise kernel (plain-call path) and row_max_sumexp
//! (fiber path: shuffles and barriers), with the project's launch shapes at the default
//! emulated SM count (28 SMs -> at most 224 blocks of 256 threads).
//! `cargo run --release -p moco-emu --example twin_speed`

use moco_emu::kernels;
use std::ffi::c_void;
use std::time::Instant;

fn time(name: &str, grid: [u32; 3], block: [u32; 3], args: &mut [u64], what: &str) {
    let twin = kernels::find(name).expect("twin");
    let ptrs: Vec<*mut c_void> = args.iter_mut().map(|v| (v as *mut u64).cast()).collect();
    let reps = 20;
    let cpu0 = thread_cpu_seconds();
    let start = Instant::now();
    for _ in 0..reps {
        // SAFETY: one 8-byte slot per parameter; pointer slots point at buffers sized for the
        // launch in main.
        unsafe { kernels::run(twin, grid, block, 0, &ptrs) }.expect("launch");
    }
    let per = start.elapsed().as_secs_f64() / f64::from(reps);
    let cpu = (thread_cpu_seconds() - cpu0) / f64::from(reps);
    println!("{name:<20} {what}: {:.3} ms CPU ({:.3} ms wall) per launch", cpu * 1e3, per * 1e3);
}

/// CPU time of this thread: unlike wall time, not inflated when other processes share the cores.
fn thread_cpu_seconds() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: t is a valid timespec for clock_gettime to write.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 + t.tv_nsec as f64 * 1e-9
}

fn main() {
    let n = 1usize << 20;
    let mut x = vec![1.5f32; n];
    let mut y = vec![0.5f32; n];
    let blocks =
        n.div_ceil(256).min(std::env::var("BLOCKS").ok().and_then(|b| b.parse().ok()).unwrap_or(224)) as u32;
    let mut args = [
        n as u64,
        u64::from(0.5f32.to_bits()),
        x.as_mut_ptr() as u64,
        u64::from(2f32.to_bits()),
        y.as_mut_ptr() as u64,
    ];
    time("axpby_f32", [blocks, 1, 1], [256, 1, 1], &mut args, &format!("1M elements, {blocks}x256 threads"));
    let mut args = [n as u64, u64::from(0.5f32.to_bits()), x.as_mut_ptr() as u64, y.as_mut_ptr() as u64];
    time(
        "unscale_check_f32",
        [blocks, 1, 1],
        [256, 1, 1],
        &mut args,
        &format!("1M elements, {blocks}x256 threads (fibers: __any_sync)"),
    );

    let (rows, cols) = (256usize, 4096usize);
    let mut logits: Vec<f32> = (0..rows * cols).map(|i| (i % 97) as f32 * 0.01).collect();
    let (mut m, mut s) = (vec![0f32; rows], vec![0f32; rows]);
    let mut args =
        [rows as u64, cols as u64, logits.as_mut_ptr() as u64, m.as_mut_ptr() as u64, s.as_mut_ptr() as u64];
    time(
        "row_max_sumexp_f32",
        [rows as u32, 1, 1],
        [256, 1, 1],
        &mut args,
        "256 x 4096 (1M logits), 256 blocks",
    );
}
