//! Faults between nodes, with two "nodes" on this machine: network namespaces joined by a veth
//! pair or by a userspace wire (two TAP devices whose frames this test process carries, see
//! netns_faults/wire.rs), addresses only inside them, one rank of a hand-started group in
//! each, over the TCP ring. Injected: the link cut mid-step (`ip link set down`), a node's
//! process frozen (SIGSTOP), a delay spike longer than `--peer-timeout` (the wire holds every
//! frame for twice the timeout), a slow and lossy link (tc `tbf`: a low rate with a short queue
//! adds queueing delay and tail drops), and added delay with jitter and random loss (the wire:
//! 25-35 ms each way, 1 % of frames dropped). A cut, a freeze or a spike must end in a clean
//! stop within `--peer-timeout` that names the lost rank and its node's address, with the
//! newest checkpoint intact (the run resumes from it); a slow, delayed or lossy link must only
//! slow the run down (the same loss at every step and bit-identical checkpoints).
//!
//! Needs root and network namespaces (CI runs as root), and /dev/net/tun for the wire.
//! Elsewhere each test prints "SKIPPED: <reason>" and returns. tc's `netem` is not used: the
//! kernels this was written on lack it (`sch_netem`, no modules), hence `tbf` and the
//! userspace wire, which need no kernel module beyond TUN/TAP. Namespaces, links, TAP devices
//! and processes are removed even when an assertion fails (Drop guards).

use moco_tests::{
    assert_contains, checkpoint_hashes, spawn_stderr_lines, wait_for_line, worker, TempDir, TINY_RUN,
};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

// Not a test target of its own: a file in a folder named after this one.
#[path = "netns_faults/wire.rs"]
mod wire;
use wire::{Shape, Wire};

/// Seconds of silence from a ring neighbour before a worker stops (short, for the tests).
const PEER_TIMEOUT: u64 = 5;

/// Two namespaces `a`, `b` joined by a veth pair or a userspace wire (TAP devices), with
/// `10.231.<net>.1` and `.2`; removed on drop.
struct Nodes {
    ns: [String; 2],
    dev: [String; 2],
    addr: [String; 2],
    /// The delaying wire that joins them, where it is not a veth pair.
    wire: Option<Wire>,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let o = Command::new("ip").args(args).output().map_err(|e| format!("ip: {e}"))?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!("ip {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
    }
}

impl Nodes {
    /// The two nodes, joined by a veth pair, or by a wire of `shape` if given; or why they
    /// cannot be made here (not root, no namespaces, no veth, no TUN/TAP).
    fn new(net: u8, shape: Option<Shape>) -> Result<Nodes, String> {
        // The effective uid, from /proc (this crate has no libc).
        let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
        let euid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(2));
        if euid != Some("0") {
            return Err("network namespaces need root (CI runs as root)".into());
        }
        let tag = format!("{}{net}", std::process::id() % 100_000);
        let mut nodes = Nodes {
            ns: [format!("moco-{tag}-a"), format!("moco-{tag}-b")],
            dev: [format!("mc{tag}a"), format!("mc{tag}b")],
            addr: [format!("10.231.{net}.1"), format!("10.231.{net}.2")],
            wire: None,
        };
        for ns in &nodes.ns {
            ip(&["netns", "add", ns])?;
        }
        match shape {
            None => ip(&["link", "add", &nodes.dev[0], "type", "veth", "peer", "name", &nodes.dev[1]])?,
            // The TAP devices are made here and then moved: their files stay attached.
            Some(shape) => nodes.wire = Some(Wire::new([&nodes.dev[0], &nodes.dev[1]], shape, net.into())?),
        }
        for i in 0..2 {
            ip(&["link", "set", &nodes.dev[i], "netns", &nodes.ns[i]])?;
            ip(&["-n", &nodes.ns[i], "addr", "add", &format!("{}/24", nodes.addr[i]), "dev", &nodes.dev[i]])?;
            ip(&["-n", &nodes.ns[i], "link", "set", &nodes.dev[i], "up"])?;
            ip(&["-n", &nodes.ns[i], "link", "set", "lo", "up"])?;
        }
        Ok(nodes)
    }

    /// `worker ARGS` inside node `i`, its stderr lines on the channel.
    fn spawn(&self, i: usize, args: &[String]) -> (Proc, Receiver<String>) {
        let mut full = vec!["netns".to_string(), "exec".into(), self.ns[i].clone()];
        full.push(worker().to_str().unwrap().to_string());
        full.extend(args.iter().cloned());
        // `ip netns exec` execs the worker: the pid is the worker's.
        let (child, rx) = spawn_stderr_lines(Path::new("ip"), &full);
        (Proc(child), rx)
    }

    /// Bring node `i`'s end of the link down or up.
    fn link(&self, i: usize, state: &str) {
        ip(&["-n", &self.ns[i], "link", "set", &self.dev[i], state]).expect("link state");
    }

    fn tc(&self, i: usize, args: &[&str]) -> Result<String, String> {
        let mut full = vec!["netns", "exec", &self.ns[i], "tc"];
        full.extend(args);
        let o = Command::new("ip").args(&full).output().map_err(|e| format!("tc: {e}"))?;
        if o.status.success() {
            Ok(String::from_utf8_lossy(&o.stdout).to_string())
        } else {
            Err(format!("tc {}: {}", args.join(" "), String::from_utf8_lossy(&o.stderr).trim()))
        }
    }
}

impl Drop for Nodes {
    fn drop(&mut self) {
        // Stopping the wire closes the TAP devices' files, which removes the devices.
        self.wire = None;
        // Deleting a namespace deletes its end of the veth pair, and with it the other end.
        for ns in &self.ns {
            let _ = ip(&["netns", "del", ns]);
        }
    }
}

/// A worker that is killed (and woken, if frozen) when the test ends, however it ends.
struct Proc(Child);

impl Proc {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(s)) = self.0.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        signal(self.0.id(), "-CONT");
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill").args([sig, &pid.to_string()]).stderr(Stdio::null()).status();
}

/// The nodes (joined by a wire of `shape`, if given), or None after printing why the test is
/// skipped.
fn nodes_or_skip(test: &str, net: u8, shape: Option<Shape>) -> Option<Nodes> {
    match Nodes::new(net, shape) {
        Ok(n) => Some(n),
        Err(why) => {
            println!("SKIPPED: {test}: {why}");
            eprintln!("SKIPPED: {test}: {why}");
            None
        }
    }
}

/// Flags of rank `rank` of a 2-rank tiny CPU run whose rank 0 is on node 0.
fn rank_args(nodes: &Nodes, rank: usize, out: &Path, steps: u64, extra: &[&str]) -> Vec<String> {
    let mut a: Vec<String> = TINY_RUN.iter().map(|s| s.to_string()).collect();
    a.extend(
        [
            "--device",
            "cpu",
            "--epochs",
            "100",
            "--checkpoint-every",
            "1",
            "--log-every",
            "1",
            "--threads",
            "1",
            "--join-timeout",
            "30",
        ]
        .map(String::from),
    );
    a.extend(["--rank".into(), rank.to_string(), "--world-size".into(), "2".into()]);
    a.extend(["--master".into(), format!("{}:29500", nodes.addr[0]), "--run-id".into(), "netns".into()]);
    a.extend(["--steps".into(), steps.to_string(), "--out".into(), out.to_str().unwrap().into()]);
    a.extend(extra.iter().map(|s| s.to_string()));
    a
}

fn drain(rx: &Receiver<String>, seen: &mut Vec<String>) -> String {
    while let Ok(l) = rx.recv_timeout(Duration::from_millis(200)) {
        seen.push(l);
    }
    seen.join("\n")
}

fn latest_step(out: &Path) -> u64 {
    let name = std::fs::read_to_string(out.join("checkpoints/latest")).expect("a checkpoint was saved");
    name.trim().trim_start_matches("step-").parse().unwrap_or_else(|_| panic!("latest names {name:?}"))
}

/// Start both ranks, wait until rank 0 is past its first checkpoint (step 8: 128 tiles, 8 per
/// rank, 2 ranks), inject `fault`, and check that rank 0 stops within the peer timeout naming
/// rank 1 and node 1's address, then that the run resumes from its newest checkpoint.
fn fault_stops_and_resumes(test: &str, net: u8, fault: &str) {
    // A stall needs the userspace wire; a short delay keeps the run before it quick.
    let shape = (fault == "stall").then_some(Shape {
        delay: Duration::from_millis(2),
        jitter: Duration::ZERO,
        loss: 0.0,
    });
    let Some(nodes) = nodes_or_skip(test, net, shape) else { return };
    let dir = TempDir::new(test);
    let out = dir.path().join("run");
    let timeout = PEER_TIMEOUT.to_string();
    let extra = ["--peer-timeout", timeout.as_str()];
    let (mut r0, rx0) = nodes.spawn(0, &rank_args(&nodes, 0, &out, 100_000, &extra));
    let (mut r1, rx1) = nodes.spawn(1, &rank_args(&nodes, 1, &out, 100_000, &extra));
    let mut seen0 = Vec::new();
    let ok = wait_for_line(&rx0, "step     10/", Duration::from_secs(45), &mut seen0);
    assert!(ok, "rank 0 never reached step 10:\n{}", drain(&rx0, &mut seen0));
    let t0 = Instant::now();
    match fault {
        "cut" => nodes.link(1, "down"),
        "freeze" => signal(r1.pid(), "-STOP"),
        // A delay spike twice the peer timeout: every frame from now on waits that long.
        "stall" => nodes.wire.as_ref().unwrap().stall(Duration::from_secs(2 * PEER_TIMEOUT)),
        other => panic!("unknown fault {other}"),
    }
    let status = r0.wait(Duration::from_secs(PEER_TIMEOUT + 20));
    let detected = t0.elapsed();
    let text0 = drain(&rx0, &mut seen0);
    let status = status.unwrap_or_else(|| panic!("rank 0 did not stop after the {fault}:\n{text0}"));
    // 3: stopped because its group broke.
    assert_eq!(status.code(), Some(3), "{text0}");
    assert_contains(&text0, &["rank 1", &format!("rank 1 at {}:", nodes.addr[1])]);
    println!(
        "{test}: {fault} -> rank 0 stopped after {:.1} s; its last words: {}",
        detected.as_secs_f64(),
        { seen0.iter().rev().take(2).cloned().collect::<Vec<_>>().join(" | ") }
    );
    // Rank 1 ends too once the link is back (or it is woken, or the stall is over): nothing
    // keeps running.
    match fault {
        "cut" => nodes.link(1, "up"),
        "freeze" => signal(r1.pid(), "-CONT"),
        _ => {}
    }
    let s1 = r1.wait(Duration::from_secs(PEER_TIMEOUT + 20));
    let mut seen1 = Vec::new();
    let text1 = drain(&rx1, &mut seen1);
    let s1 = s1.unwrap_or_else(|| panic!("rank 1 did not stop after the {fault}:\n{text1}"));
    assert!(!s1.success(), "{text1}");
    println!("{test}: rank 1 {s1}; last: {}", seen1.last().cloned().unwrap_or_default());

    // Nothing saved is lost: the same ranks resume from the newest checkpoint.
    let step = latest_step(&out);
    assert!(step >= 8, "step {step}");
    let (mut r0, rx0) = nodes.spawn(0, &rank_args(&nodes, 0, &out, step + 2, &extra));
    let (mut r1, _rx1) = nodes.spawn(1, &rank_args(&nodes, 1, &out, step + 2, &extra));
    let (s0, s1) = (r0.wait(Duration::from_secs(45)), r1.wait(Duration::from_secs(10)));
    let mut seen = Vec::new();
    let text = drain(&rx0, &mut seen);
    assert!(s0.is_some_and(|s| s.success()) && s1.is_some_and(|s| s.success()), "{text}");
    assert_contains(&text, &[&format!("(step {step},"), &format!("step {:>6}/", step + 2)]);
    println!("{test}: resumed from step {step} and finished step {}", step + 2);
}

#[test]
fn a_link_cut_mid_step_stops_the_group_naming_the_lost_node_and_it_resumes() {
    fault_stops_and_resumes("netns-cut", 1, "cut");
}

#[test]
fn a_frozen_node_stops_the_group_naming_it_and_it_resumes() {
    fault_stops_and_resumes("netns-freeze", 2, "freeze");
}

/// The last loss a rank printed.
fn last_loss(text: &str) -> String {
    text.lines()
        .rfind(|l| l.starts_with("step"))
        .and_then(|l| l.split("loss ").nth(1))
        .map(|s| s.split_whitespace().next().unwrap_or("").to_string())
        .unwrap_or_default()
}

/// Run 3 steps across the nodes; rank 0's stderr.
fn three_steps(nodes: &Nodes, out: &Path) -> String {
    let extra = ["--peer-timeout", "30"];
    let (mut r0, rx0) = nodes.spawn(0, &rank_args(nodes, 0, out, 3, &extra));
    let (mut r1, rx1) = nodes.spawn(1, &rank_args(nodes, 1, out, 3, &extra));
    let (s0, s1) = (r0.wait(Duration::from_secs(50)), r1.wait(Duration::from_secs(10)));
    let (mut seen0, mut seen1) = (Vec::new(), Vec::new());
    let (text0, text1) = (drain(&rx0, &mut seen0), drain(&rx1, &mut seen1));
    assert!(s0.is_some_and(|s| s.success()), "rank 0: {s0:?}\n{text0}");
    assert!(s1.is_some_and(|s| s.success()), "rank 1: {s1:?}\n{text1}");
    text0
}

#[test]
fn a_slow_lossy_link_only_slows_the_run_down() {
    let test = "netns-lossy";
    let Some(nodes) = nodes_or_skip(test, 3, None) else { return };
    let dir = TempDir::new(test);
    let (clean_out, slow_out) = (dir.path().join("clean"), dir.path().join("slow"));
    let t = Instant::now();
    let clean = three_steps(&nodes, &clean_out);
    let clean_s = t.elapsed().as_secs_f64();
    // 20 Mbit/s with a 16 KiB queue on both ends: queueing delay, and TCP's bursts overflow
    // the queue, so packets are dropped and retransmitted.
    for i in 0..2 {
        let tbf = ["qdisc", "add", "dev", nodes.dev[i].as_str(), "root", "tbf", "rate", "20mbit"];
        if let Err(why) = nodes.tc(i, &[&tbf[..], &["burst", "16kb", "limit", "16kb"]].concat()) {
            println!("SKIPPED: {test}: tc tbf is unavailable ({why})");
            return;
        }
    }
    let t = Instant::now();
    let slow = three_steps(&nodes, &slow_out);
    let slow_s = t.elapsed().as_secs_f64();
    let stats = format!(
        "{}{}",
        nodes.tc(0, &["-s", "qdisc", "show"]).unwrap(),
        nodes.tc(1, &["-s", "qdisc", "show"]).unwrap()
    );
    let dropped: u64 = stats
        .split("dropped ")
        .skip(1)
        .filter_map(|s| s.split(|c: char| !c.is_ascii_digit()).next()?.parse::<u64>().ok())
        .sum();
    println!("{test}: clean {clean_s:.1} s, slow+lossy {slow_s:.1} s, {dropped} packets dropped by tbf");
    assert!(dropped > 0, "the link dropped nothing, so loss was not tested:\n{stats}");
    // Same data, seeds and config: the same result, only later.
    assert_eq!(last_loss(&slow), last_loss(&clean), "clean:\n{clean}\nslow:\n{slow}");
    assert!(!last_loss(&clean).is_empty(), "{clean}");
    // And bit-identical state: weights, optimiser, BN statistics, queue of both ranks.
    assert_eq!(checkpoint_hashes(&slow_out, 3), checkpoint_hashes(&clean_out, 3));
}

#[test]
fn a_delay_spike_longer_than_the_peer_timeout_stops_the_group_naming_the_node_and_it_resumes() {
    fault_stops_and_resumes("netns-stall", 5, "stall");
}

/// The loss of every step rank 0 printed, in order.
fn losses(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("step"))
        .filter_map(|l| Some(l.split("loss ").nth(1)?.split_whitespace().next()?.to_string()))
        .collect()
}

#[test]
fn a_delayed_jittery_lossy_link_only_slows_the_run_down() {
    let test = "netns-delay";
    // 25-35 ms each way (a round trip of 50-70 ms, as between distant sites), 1 % of frames
    // lost: a userspace wire, as this kernel has no netem.
    let delay = Duration::from_millis(25);
    let shape = Shape { delay, jitter: Duration::from_millis(10), loss: 0.01 };
    let Some(clean_nodes) = nodes_or_skip(test, 6, None) else { return };
    let Some(nodes) = nodes_or_skip(test, 4, Some(shape)) else { return };
    let dir = TempDir::new(test);
    let (clean_out, slow_out) = (dir.path().join("clean"), dir.path().join("slow"));
    let t = Instant::now();
    let clean = three_steps(&clean_nodes, &clean_out);
    let clean_s = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let slow = three_steps(&nodes, &slow_out);
    let slow_s = t.elapsed().as_secs_f64();
    let wire = nodes.wire.as_ref().unwrap();
    println!(
        "{test}: clean (veth) {clean_s:.1} s, through the wire {slow_s:.1} s; the wire: {}",
        wire.summary()
    );
    let stats = wire.stats();
    let (forwarded, dropped) = (stats.forwarded.load(Relaxed), stats.dropped.load(Relaxed));
    // The run went through the wire, every frame it carried waited the delay, and it lost some.
    assert!(forwarded > 100, "{}", wire.summary());
    assert_eq!(stats.held_short.load(Relaxed), 0, "{}", wire.summary());
    assert!(dropped > 0, "nothing was dropped, so loss was not tested: {}", wire.summary());
    // Same data, seeds and config: the same losses at every step, only later.
    let (clean_losses, slow_losses) = (losses(&clean), losses(&slow));
    assert_eq!(clean_losses.len(), 3, "{clean}");
    assert_eq!(slow_losses, clean_losses, "clean:\n{clean}\nslow:\n{slow}");
    // And bit-identical state: weights, optimiser, BN statistics, queue of both ranks.
    let hashes = checkpoint_hashes(&clean_out, 3);
    assert_eq!(hashes.len(), 2, "one file per rank: {hashes:?}");
    assert_eq!(checkpoint_hashes(&slow_out, 3), hashes);
}
