//! Helpers shared by the integration tests (tests/tests/*.rs), which start the real `launcher`
//! and `worker` binaries as a user would.
//!
//! Finding the binaries: an integration test runs from `target/<profile>/deps/<test>-<hash>`;
//! cargo puts the workspace's binaries in `target/<profile>/`, i.e. the test executable's
//! parent's parent. Setting `MOCO_LAUNCHER` / `MOCO_WORKER` overrides the lookup.
//!
//! Making sure they are built, and fresh: cargo only builds another package's binaries for a
//! test run when that package itself has an integration test. `launcher/tests/` and
//! `worker/tests/` therefore each hold one, so `cargo test --workspace` (what scripts/test.sh
//! runs) rebuilds both binaries from the current sources before any test starts. Running this
//! crate alone (`cargo test -p moco-tests`) does not; the helpers then fail with a message
//! saying to run scripts/test.sh (or `cargo build --bins` first) instead of testing a stale or
//! missing binary silently.

use std::path::PathBuf;
use std::process::{Command, Output};

/// `target/<profile>/`, where cargo puts the binaries of the profile the tests were built with.
fn bin_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test executable has a path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(PathBuf::from)
        .expect("test executable inside target/<profile>/deps")
}

fn binary(name: &str, env_override: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env_override) {
        return PathBuf::from(p);
    }
    let path = bin_dir().join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.is_file(),
        "{} is missing: run scripts/test.sh (or `cargo test --workspace`), which builds the binaries \
         before the tests, or set {env_override}",
        path.display()
    );
    path
}

/// The `launcher` binary of this build.
/// The smallest real training config of these tests: `tiny` at 32 px on 128 generated 64 px
/// tiles, batch 8, a queue of 64 keys (valid on 1, 2 or 4 ranks). Device and ranks are the
/// caller's.
pub const TINY_RUN: &[&str] = &[
    "--preset",
    "tiny",
    "--data",
    "synthetic:128:64",
    "--batch",
    "8",
    "--queue-size",
    "64",
    "--image-size",
    "32",
];

/// Removes the rank environment contract (torchrun's and SLURM's variables) from `c`, so a
/// hand-started worker takes its rank, world and rendezvous from its flags only, whatever the
/// test runner's own environment holds.
pub fn clear_rank_env(c: &mut Command) -> &mut Command {
    for v in [
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "RUN_ID",
        "SLURM_PROCID",
        "SLURM_NTASKS",
    ] {
        c.env_remove(v);
    }
    c
}

pub fn launcher() -> PathBuf {
    binary("launcher", "MOCO_LAUNCHER")
}

/// The `worker` binary of this build.
pub fn worker() -> PathBuf {
    binary("worker", "MOCO_WORKER")
}

/// What a finished process said.
#[derive(Debug)]
pub struct Ran {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn from(out: Output) -> Ran {
        Ran {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }
    /// Panic with both streams unless the process succeeded.
    pub fn expect_ok(self) -> Ran {
        assert!(self.ok(), "exit {:?}\nstdout:\n{}\nstderr:\n{}", self.code, self.stdout, self.stderr);
        self
    }
    /// Panic unless the process failed; returns stderr for checking the message.
    pub fn expect_err(self) -> String {
        assert!(
            !self.ok() && self.code.is_some(),
            "expected a failure, got exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self.stderr
    }
}

/// Run `launcher ARGS...` to completion (no stdin).
pub fn run_launcher(args: &[&str]) -> Ran {
    let out = Command::new(launcher())
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("the launcher binary starts");
    Ran::from(out)
}

/// Assert that `text` contains every one of `needles`, showing the text when not.
pub fn assert_contains(text: &str, needles: &[&str]) {
    for n in needles {
        assert!(text.contains(n), "expected {n:?} in:\n{text}");
    }
}

/// A fresh, empty temporary folder for one test (removed when dropped).
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("moco-test-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("create a temp folder");
        TempDir(p)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The plan table's rows as (component, MiB), and the printed total in MiB.
pub fn plan_rows(stdout: &str) -> (Vec<(String, f64)>, f64) {
    let mut rows = Vec::new();
    let mut total = f64::NAN;
    let mut in_table = false;
    for line in stdout.lines() {
        let t = line.trim();
        if t.starts_with("component") {
            in_table = true;
            continue;
        }
        if !in_table || t.starts_with("---") {
            continue;
        }
        // "<name>   <MiB>  <how>": the name ends where a run of 2+ spaces before a number starts.
        let Some((name, rest)) = t.split_once("  ") else { break };
        let Some(mib) = rest.split_whitespace().next().and_then(|v| v.parse::<f64>().ok()) else { break };
        if name.trim() == "total" {
            total = mib;
            break;
        }
        rows.push((name.trim().to_string(), mib));
    }
    (rows, total)
}

/// The environment that puts the emulated CUDA device (kernels/emu) in front of the dynamic
/// loader for a child process: a folder of links named like the CUDA libraries, all to this
/// build's `libmoco_emu.so`, first on `LD_LIBRARY_PATH`, then NVRTC from NVIDIA's wheels
/// (`MOCO_NVRTC_LIB`, set by scripts/test.sh). The loader reads `LD_LIBRARY_PATH` only when a
/// process starts, so the emulator can only be given to child processes, never to the test
/// process itself.
///
/// `cargo test --workspace` builds `deps/libmoco_emu.so` before any test runs, because the
/// `moco-emu` package has integration tests of its own (the same trick as for the binaries).
pub fn emu_env() -> Vec<(String, String)> {
    // `cargo test` leaves the cdylib in deps/ (only `cargo build` also copies it up a level,
    // and that copy may be older): deps/ is this build's.
    let so = bin_dir().join("deps").join("libmoco_emu.so");
    assert!(
        so.is_file(),
        "{} is missing: run scripts/test.sh (or `cargo test --workspace`), which builds the emulated device",
        so.display()
    );
    let links = bin_dir().join("emu-lib");
    std::fs::create_dir_all(&links).expect("create the emulator's link folder");
    for name in ["libcuda.so", "libcuda.so.1", "libcublas.so", "libcudnn.so", "libnccl.so"] {
        let link = links.join(name);
        // Made under a temporary name and renamed over the old link: a child process that
        // another test starts meanwhile never finds the name missing.
        let tmp = links.join(format!("{name}.{}.{:?}.tmp", std::process::id(), std::thread::current().id()));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&so, &tmp).expect("make a link to the emulator");
        std::fs::rename(&tmp, &link).expect("put the emulator's link in place");
    }
    let nvrtc = std::env::var("MOCO_NVRTC_LIB").expect(
        "MOCO_NVRTC_LIB is not set: run the tests through scripts/test.sh, which installs NVRTC \
         from NVIDIA's wheels and exports it",
    );
    let mut path = format!("{}:{nvrtc}", links.display());
    if let Ok(old) = std::env::var("LD_LIBRARY_PATH") {
        if !old.is_empty() {
            path = format!("{path}:{old}");
        }
    }
    vec![("LD_LIBRARY_PATH".to_string(), path)]
}

/// Starts `exe ARGS` in the background with stdout discarded; its stderr lines arrive on the
/// returned channel (a thread forwards them until the process closes its stderr).
pub fn spawn_stderr_lines<S: AsRef<std::ffi::OsStr>>(
    exe: &std::path::Path,
    args: &[S],
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(exe)
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{} starts: {e}", exe.display()));
    let err = child.stderr.take().expect("stderr is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, rx)
}

/// Collects lines from `rx` into `seen` until one contains `needle` (true) or the stream
/// closes or `timeout` passes (false).
pub fn wait_for_line(
    rx: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    timeout: std::time::Duration,
    seen: &mut Vec<String>,
) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(l) => {
                let hit = l.contains(needle);
                seen.push(l);
                if hit {
                    return true;
                }
            }
            Err(_) => return false,
        }
    }
    false
}

/// (file, xxh3) of every rank file of a run's checkpoint at `step`: equal lists mean
/// bit-identical state (weights, momentum encoder, optimiser, BN statistics, queue).
pub fn checkpoint_hashes(run: &std::path::Path, step: u64) -> Vec<(String, String)> {
    let meta = run.join(format!("checkpoints/step-{step:06}/meta.json"));
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&meta).expect("the run wrote a checkpoint")).unwrap();
    meta["files"]
        .as_array()
        .expect("meta.json lists the rank files")
        .iter()
        .map(|f| (f["file"].as_str().unwrap().to_string(), f["xxh3"].as_str().unwrap().to_string()))
        .collect()
}
