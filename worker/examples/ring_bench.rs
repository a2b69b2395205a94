//! All-reduce bus bandwidth of the TCP ring between real processes on loopback.
//!
//! `cargo run --release -p moco-worker --example ring_bench -- --world 2`
//!
//! Starts `--world` copies of itself as ranks, connects them through the same rendezvous
//! pattern the launcher uses (each rank binds, reports its address, receives everyone's), and
//! times `all_reduce_sum_f32` per size. Each sample is the slowest rank's time of one call
//! after a barrier; the figure is the median of `--iters` samples. Bus bandwidth as nccl-tests
//! defines it: busbw = 2 (W-1)/W * bytes / time, comparable across world sizes.

use clap::Parser;
use moco_worker::collective::{Collective, RingCollective, RingOptions};
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Stdio};
use std::time::Instant;

#[derive(Parser, Debug)]
struct Args {
    /// Number of rank processes.
    #[arg(long, default_value_t = 2)]
    world: usize,
    /// Buffer sizes in MB (10^6 bytes), comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,64,256")]
    sizes_mb: Vec<usize>,
    /// Timed calls per size (after one warm-up call).
    #[arg(long, default_value_t = 7)]
    iters: usize,
    /// Pipeline segment size in KiB.
    #[arg(long, default_value_t = 512)]
    segment_kib: usize,
    /// Internal: run as this rank (set by the parent process).
    #[arg(long, hide = true)]
    rank: Option<usize>,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    match args.rank {
        Some(rank) => run_rank(&args, rank),
        None => run_parent(&args),
    }
}

fn run_parent(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let exe = std::env::current_exe()?;
    let sizes: Vec<String> = args.sizes_mb.iter().map(|s| s.to_string()).collect();
    let mut children = Vec::new();
    for rank in 0..args.world {
        let child = Command::new(&exe)
            .args(["--world", &args.world.to_string(), "--rank", &rank.to_string()])
            .args(["--iters", &args.iters.to_string(), "--segment-kib", &args.segment_kib.to_string()])
            .args(["--sizes-mb", &sizes.join(",")])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        children.push(child);
    }
    // Rendezvous: each rank prints its listener address first; hand the full list to everyone.
    let mut outs = Vec::new();
    let mut addrs = Vec::new();
    for c in children.iter_mut() {
        let mut out = BufReader::new(c.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        out.read_line(&mut line)?;
        addrs.push(
            line.trim().strip_prefix("ADDR ").ok_or_else(|| format!("bad rank output {line:?}"))?.to_string(),
        );
        outs.push(out);
    }
    for c in children.iter_mut() {
        writeln!(c.stdin.take().ok_or("no stdin")?, "{}", addrs.join(" "))?;
    }
    // Rank 0 prints the table; pass it through.
    for line in outs.remove(0).lines() {
        println!("{}", line?);
    }
    for mut c in children {
        if !c.wait()?.success() {
            return Err("a rank failed".into());
        }
    }
    Ok(())
}

fn run_rank(args: &Args, rank: usize) -> Result<(), Box<dyn std::error::Error>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("ADDR {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let peers = line.split_whitespace().map(|a| a.parse()).collect::<Result<Vec<SocketAddr>, _>>()?;
    let opts = RingOptions { segment_bytes: args.segment_kib << 10, ..RingOptions::default() };
    let ring = RingCollective::connect_with(rank, args.world, listener, &peers, 0xbe_4c, opts)?;

    let w = args.world as f64;
    if rank == 0 {
        println!(
            "ring all-reduce (f32 sum, rank order), world {}, {} KiB segments, median of {} calls",
            args.world, args.segment_kib, args.iters
        );
        println!("{:>10} {:>12} {:>14} {:>14}", "size", "time (ms)", "algbw (GB/s)", "busbw (GB/s)");
    }
    for &mb in &args.sizes_mb {
        let n = mb * 1_000_000 / 4;
        let mut buf: Vec<f32> = (0..n).map(|i| (i % 1000) as f32 + rank as f32).collect();
        let mut samples = Vec::with_capacity(args.iters);
        for it in 0..=args.iters {
            ring.barrier()?;
            let t = Instant::now();
            ring.all_reduce_sum_f32(&mut buf)?;
            let slowest = ring.all_reduce_max_f64(t.elapsed().as_secs_f64())?;
            if it > 0 {
                samples.push(slowest);
            }
        }
        // Guard against timing a broken exchange: element 1 after k+1 calls.
        let calls = (args.iters + 1) as i32;
        let sum_ranks = (0..args.world).map(|r| 1.0 + r as f64).sum::<f64>();
        let want = sum_ranks * w.powi(calls - 1);
        if (f64::from(buf[1]) - want).abs() > 1e-3 * want {
            return Err(format!("wrong result {} (expected {want})", buf[1]).into());
        }
        samples.sort_by(f64::total_cmp);
        let t = samples[samples.len() / 2];
        let bytes = (n * 4) as f64;
        if rank == 0 {
            println!(
                "{:>7} MB {:>12.2} {:>14.3} {:>14.3}",
                mb,
                t * 1e3,
                bytes / t / 1e9,
                2.0 * (w - 1.0) / w * bytes / t / 1e9
            );
        }
    }
    // Latency of a small call (SyncBN statistics are a few hundred floats per layer).
    let mut small = vec![1.0f32; 256];
    let mut lat = Vec::with_capacity(200);
    for _ in 0..200 {
        ring.barrier()?;
        let t = Instant::now();
        ring.all_reduce_sum_f32(&mut small)?;
        lat.push(ring.all_reduce_max_f64(t.elapsed().as_secs_f64())?);
    }
    lat.sort_by(f64::total_cmp);
    if rank == 0 {
        println!("1 KiB all-reduce latency: median {:.1} us over 200 calls", lat[100] * 1e6);
    }
    ring.barrier()?;
    Ok(())
}
