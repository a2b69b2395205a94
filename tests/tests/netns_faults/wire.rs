//! A wire with added delay and loss made in userspace, for kernels without tc's `netem`
//! (`sch_netem`): each end is a TAP device (an Ethernet interface whose frames this process
//! reads and writes through a /dev/net/tun file), and a pair of threads per direction moves
//! every frame from one end to the other after holding it for the delay plus a random jitter,
//! or drops it with a set probability. ARP crosses it like any frame, so the ends are ordinary
//! interfaces with addresses, movable into network namespaces (the file stays attached).
//!
//! Frames keep their order (a frame is never let out before the one read before it), like a
//! netem queue whose jitter does not reorder. Only /dev/net/tun and CAP_NET_ADMIN are needed.

use rand::{rngs::StdRng, Rng, SeedableRng};
use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How the wire treats each frame, in each direction.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// Every frame is held at least this long.
    pub delay: Duration,
    /// Plus a uniform random extra in [0, jitter).
    pub jitter: Duration,
    /// Probability of dropping a frame.
    pub loss: f64,
}

/// What the wire did, both directions together.
#[derive(Default)]
pub struct Stats {
    /// Frames written to the far end.
    pub forwarded: AtomicU64,
    /// Frames dropped on purpose (`Shape::loss`).
    pub dropped: AtomicU64,
    /// Forwarded frames held for less than `Shape::delay` (must stay 0).
    pub held_short: AtomicU64,
    /// Sum and maximum of the time frames were held, in microseconds.
    pub held_us_sum: AtomicU64,
    pub held_us_max: AtomicU64,
}

/// One end of the wire: a TAP device, alive as long as its file is open.
struct Tap(File);

impl Tap {
    /// Create the TAP device `name` (at most 15 bytes) in this process's namespace.
    fn create(name: &str) -> Result<Tap, String> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/net/tun")
            .map_err(|e| format!("/dev/net/tun: {e} (no TUN/TAP support here)"))?;
        // SAFETY: ifreq is plain old data (arrays, integers, a union of them); all zeroes is a
        // valid value (an empty name, no flags).
        let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
        if name.len() >= req.ifr_name.len() {
            return Err(format!("TAP name {name:?} is longer than 15 bytes"));
        }
        for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
            *dst = src as libc::c_char;
        }
        req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
        // SAFETY: TUNSETIFF reads (and writes back the name into) the ifreq it is given, which
        // lives for the call; the fd is the open /dev/net/tun file.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
        if rc != 0 {
            return Err(format!("TUNSETIFF {name}: {}", std::io::Error::last_os_error()));
        }
        Ok(Tap(file))
    }

    /// Whether a frame is waiting, after at most `ms` milliseconds.
    fn readable(&self, ms: i32) -> bool {
        let mut fd = libc::pollfd { fd: self.0.as_raw_fd(), events: libc::POLLIN, revents: 0 };
        // SAFETY: one valid pollfd, for the duration of the call.
        let n = unsafe { libc::poll(&mut fd, 1, ms) };
        n > 0 && fd.revents & libc::POLLIN != 0
    }
}

/// Two TAP devices joined through this process, with a delay; stopped on drop (which also
/// removes the devices, as their files close).
pub struct Wire {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// What the wire's threads share with it.
#[derive(Default)]
struct Shared {
    stats: Stats,
    /// Frames read while this instant is ahead are held until it at least (a stall).
    stall_until: Mutex<Option<Instant>>,
    stop: AtomicBool,
}

/// A frame on its way: when it was read, when it may leave, and the bytes.
type Held = (Instant, Instant, Vec<u8>);

impl Wire {
    /// The TAP devices `names[0]` and `names[1]` in this namespace, joined with `shape`.
    pub fn new(names: [&str; 2], shape: Shape, seed: u64) -> Result<Wire, String> {
        let taps = [Arc::new(Tap::create(names[0])?), Arc::new(Tap::create(names[1])?)];
        let shared = Arc::new(Shared::default());
        let mut threads = Vec::new();
        for from in 0..2 {
            let (tx, rx) = channel();
            let (src, dst) = (taps[from].clone(), taps[1 - from].clone());
            let rng = StdRng::seed_from_u64(seed + from as u64);
            let shared_r = shared.clone();
            threads.push(std::thread::spawn(move || read_side(&src, tx, shape, rng, &shared_r)));
            let shared_w = shared.clone();
            threads.push(std::thread::spawn(move || write_side(&dst, rx, shape, &shared_w)));
        }
        Ok(Wire { shared, threads })
    }

    /// Hold every frame read from now on until `for_` from now (a delay spike).
    pub fn stall(&self, for_: Duration) {
        *self.shared.stall_until.lock().unwrap() = Some(Instant::now() + for_);
    }

    pub fn stats(&self) -> &Stats {
        &self.shared.stats
    }

    pub fn summary(&self) -> String {
        let s = &self.shared.stats;
        let n = s.forwarded.load(Ordering::Relaxed);
        format!(
            "{n} frames forwarded (held {:.1} ms on average, {:.1} ms at most), {} dropped, {} held under the delay",
            s.held_us_sum.load(Ordering::Relaxed) as f64 / n.max(1) as f64 / 1e3,
            s.held_us_max.load(Ordering::Relaxed) as f64 / 1e3,
            s.dropped.load(Ordering::Relaxed),
            s.held_short.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// Read frames from `src`, drop some, and queue the rest with the instant each may leave.
fn read_side(src: &Tap, tx: Sender<Held>, shape: Shape, mut rng: StdRng, wire: &Shared) {
    let Shared { stats, stall_until: stall, stop } = wire;
    let mut buf = vec![0u8; 65_536];
    let mut last_out = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        if !src.readable(50) {
            continue;
        }
        let n = match (&src.0).read(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            // The device is gone (its namespace deleted): nothing more to carry.
            Err(_) => return,
        };
        let now = Instant::now();
        if rng.gen::<f64>() < shape.loss {
            stats.dropped.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        let mut out = now + shape.delay + shape.jitter.mul_f64(rng.gen::<f64>());
        if let Some(until) = *stall.lock().unwrap() {
            out = out.max(until);
        }
        // Never ahead of the frame read before it: jitter delays, it does not reorder.
        out = out.max(last_out);
        last_out = out;
        if tx.send((now, out, buf[..n].to_vec())).is_err() {
            return;
        }
    }
}

/// Write each queued frame to `dst` once its time has come.
fn write_side(dst: &Tap, rx: Receiver<Held>, shape: Shape, wire: &Shared) {
    let Shared { stats, stop, .. } = wire;
    loop {
        let (read_at, out, frame) = match rx.recv_timeout(Duration::from_millis(50)) {
            Ok(held) => held,
            Err(RecvTimeoutError::Timeout) if !stop.load(Ordering::Relaxed) => continue,
            Err(_) => return,
        };
        // Sleep in short slices so that a long stall does not hold up the wire's drop.
        loop {
            let now = Instant::now();
            if now >= out {
                break;
            }
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep((out - now).min(Duration::from_millis(50)));
        }
        // A write error means the far end is down or gone: the frame is lost, as on a cable.
        if (&dst.0).write(&frame).is_err() {
            continue;
        }
        let held = read_at.elapsed();
        if held < shape.delay {
            stats.held_short.fetch_add(1, Ordering::Relaxed);
        }
        let us = held.as_micros() as u64;
        stats.forwarded.fetch_add(1, Ordering::Relaxed);
        stats.held_us_sum.fetch_add(us, Ordering::Relaxed);
        stats.held_us_max.fetch_max(us, Ordering::Relaxed);
    }
}
