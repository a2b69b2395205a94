//! The NCCL stand-in between processes: each test starts one `nccl_rank` process per rank
//! (rank 0 makes the id, as in the worker), and in-process tests for what needs threads of
//! one process (abort from another thread, join errors). Every child is killed and reaped
//! when a test ends, however it ends.

use cudarc::nccl::sys::{ncclComm_t, ncclResult_t, ncclUniqueId};
use moco_emu::nccl::{api, collectives};
use std::ffi::CStr;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A rank process whose output is collected by threads (so a full pipe never blocks it).
struct RankProc {
    child: Child,
    stdout: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Mutex<String>>,
    status: Option<ExitStatus>,
}

fn collect(src: impl Read + Send + 'static, into: Arc<Mutex<String>>) -> JoinHandle<()> {
    std::thread::spawn(move || {
        for line in BufReader::new(src).lines().map_while(Result::ok) {
            let mut s = into.lock().unwrap();
            s.push_str(&line);
            s.push('\n');
        }
    })
}

impl RankProc {
    fn spawn(scenario: &str, rank: usize, n: usize, env: &[(&str, String)]) -> Self {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_nccl_rank"));
        cmd.args([scenario, &rank.to_string(), &n.to_string()]).stdout(Stdio::piped()).stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start nccl_rank");
        let (stdout, stderr) = (Arc::default(), Arc::default());
        let readers = vec![
            collect(child.stdout.take().unwrap(), Arc::clone(&stdout)),
            collect(child.stderr.take().unwrap(), Arc::clone(&stderr)),
        ];
        RankProc { child, stdout, stderr, readers, status: None }
    }

    fn out(&self) -> String {
        self.stdout.lock().unwrap().clone()
    }

    fn err(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }
}

/// All ranks of one run; dropping it kills and reaps whatever still runs.
struct World(Vec<RankProc>);

impl Drop for World {
    fn drop(&mut self) {
        for p in &mut self.0 {
            if p.status.is_none() {
                let _ = p.child.kill();
                let _ = p.child.wait();
            }
        }
    }
}

impl World {
    /// Starts rank 0, reads its id, starts the others with it.
    fn start(scenario: &str, n: usize, env: &[(&str, String)]) -> World {
        let mut w = World(vec![RankProc::spawn(scenario, 0, n, env)]);
        let t = Instant::now();
        let id = loop {
            if let Some(line) = w.0[0].out().lines().find_map(|l| l.strip_prefix("id ").map(str::to_string)) {
                break line;
            }
            assert!(t.elapsed() < Duration::from_secs(10), "rank 0 printed no id; stderr:\n{}", w.0[0].err());
            std::thread::sleep(Duration::from_millis(10));
        };
        for rank in 1..n {
            let mut env = env.to_vec();
            env.push(("MOCO_EMU_NCCL_ID", id.clone()));
            w.0.push(RankProc::spawn(scenario, rank, n, &env));
        }
        w
    }

    /// Waits for every rank (at most `limit`, then fails the test) and returns the world.
    fn wait(mut self, limit: Duration) -> World {
        let t = Instant::now();
        while self.0.iter().any(|p| p.status.is_none()) {
            for p in &mut self.0 {
                if p.status.is_none() {
                    p.status = p.child.try_wait().unwrap();
                }
            }
            if t.elapsed() > limit {
                panic!("ranks still running after {limit:?}:\n{}", self.report());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        for p in &mut self.0 {
            for r in p.readers.drain(..) {
                r.join().unwrap();
            }
        }
        self
    }

    fn report(&self) -> String {
        let mut s = String::new();
        for (r, p) in self.0.iter().enumerate() {
            s += &format!("--- rank {r}: {:?}\nstdout:\n{}stderr:\n{}", p.status, p.out(), p.err());
        }
        s
    }

    /// Every rank passed its checks; `dying` ranks exited on purpose, mid-call.
    fn assert_all_ok(&self, dying: &[usize]) {
        for (r, p) in self.0.iter().enumerate() {
            let last = if dying.contains(&r) { "dying\n" } else { "ok\n" };
            assert!(
                p.status.is_some_and(|s| s.success()) && p.out().ends_with(last),
                "rank {r} failed:\n{}",
                self.report()
            );
        }
    }
}

fn collectives(n: usize) {
    let w = World::start("collectives", n, &[]).wait(Duration::from_secs(20));
    w.assert_all_ok(&[]);
}

#[test]
fn world_2_collectives_match_the_rank_order_results() {
    collectives(2);
}

#[test]
fn world_3_collectives_match_the_rank_order_results() {
    collectives(3);
}

/// Parses "rc CODE after MS ms: MESSAGE" from a rank's output.
fn failure(p: &RankProc) -> (String, u128, String) {
    let out = p.out();
    let line = out.lines().find(|l| l.starts_with("rc ")).unwrap_or_else(|| panic!("no rc line in {out}"));
    let (code, rest) = line[3..].split_once(" after ").unwrap();
    let (ms, msg) = rest.split_once(" ms: ").unwrap();
    (code.to_string(), ms.parse().unwrap(), msg.to_string())
}

#[test]
fn a_rank_that_exits_mid_collective_fails_the_others_promptly() {
    let env = [("DIE_RANK", "1".to_string()), ("LATE_RANK", "2".to_string())];
    let w = World::start("die", 3, &env).wait(Duration::from_secs(15));
    w.assert_all_ok(&[1]);
    // Rank 0 was blocked in the collective when rank 1 died; rank 2 called it afterwards.
    let (code, ms, msg) = failure(&w.0[0]);
    assert_eq!(code, "ncclRemoteError", "{}", w.report());
    assert!(ms < 5000, "rank 0 waited {ms} ms");
    assert!(msg.contains("rank 1 closed its connection during ncclAllReduce (collective #2)"), "{msg}");
    let (code, ms, msg) = failure(&w.0[2]);
    assert_eq!(code, "ncclRemoteError");
    assert!(ms < 1000, "the late rank waited {ms} ms");
    assert!(msg.contains("rank 1 closed its connection"), "{msg}");
}

#[test]
fn the_death_of_the_hubs_process_fails_the_others_promptly() {
    // Rank 0 dies while rank 1 is blocked in the collective, waiting for it.
    let env = [("DIE_RANK", "0".to_string()), ("LATE_RANK", "0".to_string())];
    let w = World::start("die", 2, &env).wait(Duration::from_secs(15));
    w.assert_all_ok(&[0]);
    let (code, ms, msg) = failure(&w.0[1]);
    assert_eq!(code, "ncclRemoteError", "{}", w.report());
    assert!(ms < 5000, "rank 1 waited {ms} ms");
    assert!(msg.contains("lost the connection to the communicator's hub during ncclAllReduce"), "{msg}");
}

#[test]
fn a_rank_that_does_not_come_times_out_with_its_name() {
    let env = [("MOCO_EMU_NCCL_TIMEOUT", "2".to_string())];
    let w = World::start("timeout", 2, &env).wait(Duration::from_secs(15));
    w.assert_all_ok(&[]);
    let (code, ms, msg) = failure(&w.0[0]);
    assert_eq!(code, "ncclSystemError");
    assert!((1900..4000).contains(&ms), "rank 0 gave up after {ms} ms, not the 2 s timeout");
    assert!(msg.contains("ranks [1] did not call ncclAllReduce(count 3, float32, sum)"), "{msg}");
    let (_, ms, msg) = failure(&w.0[1]);
    assert!(ms < 1000 && msg.contains("failed earlier"), "{ms} ms: {msg}");
}

#[test]
fn ranks_that_disagree_on_a_collective_are_told_how() {
    let w = World::start("mismatch", 2, &[]).wait(Duration::from_secs(15));
    w.assert_all_ok(&[]);
    for p in &w.0 {
        let out = p.out();
        assert!(out.contains("ncclInvalidUsage") && out.contains("ranks disagree on collective #1"), "{out}");
        assert!(out.contains("count 10") && out.contains("count 11"), "{out}");
    }
}

// In-process: two ranks of one communicator as two threads of this process.

fn unique_id() -> ncclUniqueId {
    let mut id = ncclUniqueId { internal: [0; 128] };
    // SAFETY: writes one id to a local.
    assert_eq!(unsafe { api::ncclGetUniqueId(&mut id) }, ncclResult_t::ncclSuccess);
    id
}

/// Joins `(rank, nranks)` pairs concurrently; returns each join's result and handle.
fn join_all(id: ncclUniqueId, who: &[(i32, i32)]) -> Vec<(ncclResult_t, usize)> {
    let threads: Vec<_> = who
        .iter()
        .map(|&(rank, n)| {
            std::thread::spawn(move || {
                let mut comm: ncclComm_t = std::ptr::null_mut();
                // SAFETY: writes one handle to a local.
                let rc = unsafe { api::ncclCommInitRank(&mut comm, n, id, rank) };
                (rc, comm as usize)
            })
        })
        .collect();
    threads.into_iter().map(|t| t.join().unwrap()).collect()
}

fn last_error() -> String {
    // SAFETY: ncclGetLastError returns a NUL-terminated static buffer.
    unsafe { CStr::from_ptr(api::ncclGetLastError(std::ptr::null_mut())) }.to_string_lossy().into_owned()
}

#[test]
fn abort_from_another_thread_unblocks_a_call_and_fails_the_peer() {
    let joined = join_all(unique_id(), &[(0, 2), (1, 2)]);
    assert!(joined.iter().all(|(rc, _)| *rc == ncclResult_t::ncclSuccess), "{joined:?}");
    let (c0, c1) = (joined[0].1, joined[1].1);
    let buf = moco_emu::memory::alloc_device(16).unwrap();
    // Rank 0 enters an all-reduce that rank 1 never joins.
    let blocked = std::thread::spawn(move || {
        let t = Instant::now();
        // SAFETY: a 16-byte device buffer, 4 floats in place.
        let rc = unsafe {
            collectives::ncclAllReduce(buf as _, buf as _, 4, 7, 0, c0 as ncclComm_t, std::ptr::null_mut())
        };
        (rc, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: rank 0's live communicator, aborted once.
    assert_eq!(unsafe { api::ncclCommAbort(c0 as ncclComm_t) }, ncclResult_t::ncclSuccess);
    let (rc, took) = blocked.join().unwrap();
    assert_eq!(rc, ncclResult_t::ncclSystemError);
    assert!(took < Duration::from_secs(2), "the aborted call returned after {took:?}");
    // The handle is gone; rank 1's next call fails instead of waiting for rank 0.
    let mut n = 0;
    // SAFETY: writes one int to a local (the handle is refused first).
    assert_eq!(unsafe { api::ncclCommCount(c0 as ncclComm_t, &mut n) }, ncclResult_t::ncclInvalidArgument);
    let t = Instant::now();
    // SAFETY: as above, on rank 1's communicator.
    let rc = unsafe {
        collectives::ncclAllReduce(buf as _, buf as _, 4, 7, 0, c1 as ncclComm_t, std::ptr::null_mut())
    };
    assert_eq!(rc, ncclResult_t::ncclRemoteError, "{}", last_error());
    assert!(t.elapsed() < Duration::from_secs(2));
    // SAFETY: rank 1's live communicator, destroyed once.
    assert_eq!(unsafe { api::ncclCommDestroy(c1 as ncclComm_t) }, ncclResult_t::ncclSuccess);
}

#[test]
fn a_rank_claimed_twice_or_a_wrong_world_size_fails_the_join() {
    let twice = join_all(unique_id(), &[(0, 2), (0, 2)]);
    assert!(twice.iter().all(|(rc, _)| *rc == ncclResult_t::ncclInvalidUsage), "{twice:?}");
    let sizes = join_all(unique_id(), &[(0, 2), (1, 3)]);
    assert!(sizes.iter().all(|(rc, _)| *rc == ncclResult_t::ncclInvalidUsage), "{sizes:?}");
    // Refused before connecting: a rank outside the world.
    let bad = join_all(unique_id(), &[(2, 2)]);
    assert_eq!(bad[0].0, ncclResult_t::ncclInvalidArgument);
}

#[test]
fn groups_nest_and_unknown_handles_are_refused() {
    // SAFETY: the group calls take no pointers.
    unsafe {
        assert_eq!(api::ncclGroupStart(), ncclResult_t::ncclSuccess);
        assert_eq!(api::ncclGroupStart(), ncclResult_t::ncclSuccess);
        assert_eq!(api::ncclGroupEnd(), ncclResult_t::ncclSuccess);
        assert_eq!(api::ncclGroupEnd(), ncclResult_t::ncclSuccess);
        assert_eq!(api::ncclGroupEnd(), ncclResult_t::ncclInvalidUsage);
    }
    let mut n = 0;
    // SAFETY: a made-up handle is refused before anything is dereferenced.
    assert_eq!(
        unsafe { api::ncclCommCount(0x1234 as ncclComm_t, &mut n) },
        ncclResult_t::ncclInvalidArgument
    );
    // SAFETY: ncclGetErrorString accepts any code and returns a static string.
    let text = unsafe { CStr::from_ptr(api::ncclGetErrorString(6)) }.to_str().unwrap();
    assert_eq!(text, "remote process exited or there was a network error");
}
