//! The worker group as one unit (DESIGN.md contract 9): spawn W workers, host their
//! rendezvous, watch them (exits, heartbeats, errors), show one progress display, and treat
//! them all-or-nothing: when one dies or hangs, all stop and the cause is reported with the dead
//! worker's output; SIGINT/SIGTERM/SIGUSR1 ask every worker to finish its step and exit.
//!
//! - `spawn`: starting workers, their logs.
//! - `events`: exits, control messages and lost connections as one event stream.
//! - `progress`: the progress bar / lines.

pub mod events;
pub mod progress;
pub mod spawn;

use crate::error::{LauncherError, Result};
use events::{describe_exit, read_control, send, watch_child, Event};
use moco_proto::wire::{FailureKind, Msg, StopReason};
use moco_worker::rendezvous::host::{host, HostSpec};
use progress::Progress;
use spawn::{spawn, tail_text, WorkerSpec};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

/// How long a cleanly exited worker's control line may take to deliver its last messages.
const DRAIN_WAIT: Duration = Duration::from_secs(2);

/// How the group is watched.
pub struct Watch {
    /// A worker that sends no heartbeat for this long is considered hung.
    pub heartbeat_timeout: Duration,
    /// How long the workers have to start and join.
    pub join_timeout: Duration,
    /// After a stop request or a failure: how long workers get before they are killed.
    pub grace: Duration,
}

/// Why one attempt of the group ended badly.
#[derive(Debug, Clone)]
pub struct Failure {
    pub rank: usize,
    pub pid: u32,
    pub cause: String,
    pub tail: String,
    /// False for failures a restart cannot fix (bad config, bad data).
    pub restartable: bool,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "rank {} (pid {}) failed: {}", self.rank, self.pid, self.cause)?;
        if !self.tail.is_empty() {
            write!(f, "\n  last lines of its output:\n{}", self.tail)?;
        }
        Ok(())
    }
}

pub enum Outcome {
    Finished,
    /// Stopped on a signal after the workers finished their step.
    Interrupted,
    /// A second signal: the workers were killed at once, without saving.
    Killed,
    Failed(Failure),
}

/// How much a failure explains: the rank that really failed beats ranks that only lost their
/// peers (collective errors, exit code 3) and ranks the launcher stopped.
fn blame(f: &Failure, kind: Option<FailureKind>) -> u8 {
    match kind {
        Some(FailureKind::Collective) => 1,
        Some(_) => 3,
        None if f.cause.contains("code 3") => 1,
        None => 2,
    }
}

/// Run the group once. `restart_count` is passed to the workers (RESTART_COUNT).
pub async fn run_once(
    base: &WorkerSpec,
    bind: &str,
    config_json: &str,
    watch_cfg: &Watch,
    progress: &mut Progress,
) -> Result<Outcome> {
    let world = base.world;
    let listener = TcpListener::bind(bind).map_err(|e| {
        LauncherError::Spawn(format!(
            "cannot host the rendezvous on {bind}: {e}{}",
            if e.kind() == std::io::ErrorKind::AddrInUse {
                " (the port is in use, perhaps by another run: pass another --master-port, or 0 for any free port)"
            } else {
                ""
            }
        ))
    })?;
    let addr = listener.local_addr().map_err(|e| LauncherError::Spawn(format!("rendezvous address: {e}")))?;
    let spec = WorkerSpec { master: addr.to_string(), ..base.clone() };

    let (ev_tx, mut ev_rx) = mpsc::unbounded_channel::<Event>();
    let (kill_tx, kill_rx) = watch::channel(false);
    let exits = Arc::new(Mutex::new(vec![None::<String>; world]));
    let mut tails = Vec::with_capacity(world);
    let mut pids = Vec::with_capacity(world);
    for rank in 0..world {
        let s = spawn(&spec, rank)?;
        progress.println(&format!("rank {rank}: pid {}", s.pid));
        pids.push(s.pid);
        tails.push(s.tail.clone());
        watch_child(rank, s.child, kill_rx.clone(), ev_tx.clone(), exits.clone());
    }
    let pid_of = |r: usize| pids.get(r).copied().unwrap_or(0);

    // Rendezvous (blocking accept loop) while watching for workers that die before joining.
    let joined = {
        let (run_id, cfg) = (spec.run_id.clone(), config_json.to_string());
        let exits = exits.clone();
        let deadline = Instant::now() + watch_cfg.join_timeout;
        let restart = spec.restart_count;
        tokio::task::spawn_blocking(move || {
            let hs = HostSpec {
                world,
                run_id: &run_id,
                config_json: &cfg,
                restart_count: restart,
                nccl_id: None,
                deadline,
            };
            let mut warn = |m: String| eprintln!("warning: rendezvous {m}");
            let mut poll = || {
                exits.lock().ok().and_then(|e| {
                    e.iter()
                        .enumerate()
                        .find_map(|(r, x)| x.as_ref().map(|why| format!("rank {r} {why} before joining")))
                })
            };
            host(&listener, &hs, &mut warn, &mut poll)
        })
        .await
        .map_err(|e| LauncherError::Spawn(format!("rendezvous task: {e}")))?
    };
    let joined = match joined {
        Ok(j) => j,
        Err(e) => {
            let _ = kill_tx.send(true);
            // Let the exit events arrive so the report names the rank that died.
            let failure = first_exit_failure(&mut ev_rx, &tails, &pids, Duration::from_secs(2)).await;
            return Ok(Outcome::Failed(failure.unwrap_or(Failure {
                rank: 0,
                pid: pid_of(0),
                cause: e.to_string(),
                tail: tail_text(&tails[0]),
                restartable: true,
            })));
        }
    };

    let token = moco_proto::wire::run_token(&spec.run_id);
    let mut writers = Vec::with_capacity(world);
    for j in joined {
        let rank = j.rank as usize;
        j.stream.set_nonblocking(true).map_err(|e| LauncherError::Spawn(format!("control socket: {e}")))?;
        let stream = tokio::net::TcpStream::from_std(j.stream)
            .map_err(|e| LauncherError::Spawn(format!("control socket: {e}")))?;
        let (rd, wr) = stream.into_split();
        read_control(rank, rd, token, ev_tx.clone());
        writers.push(wr);
    }

    let mut last_beat = vec![Instant::now(); world];
    let mut done = vec![false; world];
    let mut exited = vec![false; world];
    let mut reported: Vec<Option<FailureKind>> = vec![None; world];
    let mut reported_msg: Vec<Option<String>> = vec![None; world];
    let mut lost: Vec<Option<String>> = vec![None; world];
    // A worker's exit and its last control messages (Done above all) reach this loop from two
    // tasks, so the exit can arrive first. A clean exit without Done is therefore judged only
    // once that worker's control line has been read to its end (or after DRAIN_WAIT).
    let mut drained = vec![false; world];
    let mut deferred: Vec<Option<(Instant, std::io::Result<std::process::ExitStatus>)>> =
        (0..world).map(|_| None).collect();
    let mut failure: Option<(Failure, u8)> = None;
    let mut stopping_since: Option<Instant> = None;
    let mut interrupted = false;
    // A second signal kills the workers at once: their exits are the user's doing, not failures.
    let mut killed = false;
    let mut workers_stopped = false;
    let mut sigint =
        signal(SignalKind::interrupt()).map_err(|e| LauncherError::Spawn(format!("signals: {e}")))?;
    let mut sigterm =
        signal(SignalKind::terminate()).map_err(|e| LauncherError::Spawn(format!("signals: {e}")))?;
    let mut sigusr1 =
        signal(SignalKind::user_defined1()).map_err(|e| LauncherError::Spawn(format!("signals: {e}")))?;
    let mut tick = tokio::time::interval(Duration::from_millis(250));

    loop {
        if exited.iter().all(|&e| e) {
            break;
        }
        tokio::select! {
            ev = ev_rx.recv() => {
                let Some(ev) = ev else { break };
                match ev {
                    Event::Msg { rank, msg } => match msg {
                        Msg::Heartbeat { .. } => last_beat[rank] = Instant::now(),
                        Msg::Metrics(m) => {
                            last_beat[rank] = Instant::now();
                            progress.update(m);
                        }
                        Msg::Error { kind, message, .. } => {
                            reported[rank] = Some(kind);
                            reported_msg[rank] = Some(message);
                        }
                        Msg::Done { .. } => done[rank] = true,
                        Msg::Notice { text, .. } => progress.println(&text),
                        _ => {}
                    },
                    // The exit (or the heartbeat check) tells what happened; keep the why.
                    Event::Lost { rank, why } => {
                        lost[rank] = Some(why);
                        drained[rank] = true;
                        if let Some((_, status)) = deferred[rank].take() {
                            let _ = ev_tx.send(Event::Exited { rank, status });
                        }
                    }
                    Event::Exited { rank, status } => {
                        let clean = status.as_ref().is_ok_and(|s| s.success());
                        if clean && !done[rank] && !interrupted && !drained[rank] {
                            deferred[rank] = Some((Instant::now(), status));
                            continue;
                        }
                        exited[rank] = true;
                        if killed {
                            continue;
                        }
                        // A worker that stopped on a signal (Ctrl-C reaches the whole process
                        // group) saved its checkpoint and says so with EXIT_STOPPED.
                        let stopped =
                            status.as_ref().is_ok_and(|s| s.code() == Some(moco_worker::rendezvous::control::EXIT_STOPPED));
                        // A signal sent to a worker alone (SLURM's USR1 to the job's processes)
                        // stops the whole group too: the run ended early, not finished.
                        workers_stopped |= stopped;
                        let ok = stopped || status.as_ref().is_ok_and(|s| s.success());
                        if !(ok && (done[rank] || interrupted)) {
                            let cause = match &reported_msg[rank] {
                                Some(m) => format!("{m} ({})", describe_exit(&status)),
                                None if ok => format!(
                                    "exited without finishing its run{}",
                                    lost[rank].as_ref().map(|w| format!(" (control line: {w})")).unwrap_or_default()
                                ),
                                None => describe_exit(&status),
                            };
                            let f = Failure {
                                rank,
                                pid: pid_of(rank),
                                cause,
                                tail: tail_text(&tails[rank]),
                                restartable: !matches!(
                                    reported[rank],
                                    // A diverged run diverges again from the same checkpoint.
                                    Some(FailureKind::Config | FailureKind::Data | FailureKind::Numeric)
                                ),
                            };
                            let score = blame(&f, reported[rank]);
                            if failure.as_ref().is_none_or(|(_, s)| score > *s) {
                                failure = Some((f, score));
                            }
                            if stopping_since.is_none() {
                                stopping_since = Some(Instant::now());
                                let reason = StopReason::PeerFailed { rank: rank as u32, detail: describe_exit(&status) };
                                for (r, w) in writers.iter_mut().enumerate() {
                                    if !exited[r] {
                                        send(w, token, &Msg::Stop { reason: reason.clone() }).await;
                                    }
                                }
                            }
                        }
                    }
                }
            }
            _ = tick.tick() => {
                for (rank, d) in deferred.iter_mut().enumerate() {
                    if d.as_ref().is_some_and(|(at, _)| at.elapsed() > DRAIN_WAIT) {
                        drained[rank] = true;
                        if let Some((_, status)) = d.take() {
                            let _ = ev_tx.send(Event::Exited { rank, status });
                        }
                    }
                }
                if let Some(since) = stopping_since {
                    if since.elapsed() > watch_cfg.grace {
                        let _ = kill_tx.send(true);
                    }
                } else if !killed {
                    for r in 0..world {
                        if !exited[r] && !done[r] && last_beat[r].elapsed() > watch_cfg.heartbeat_timeout {
                            let f = Failure {
                                rank: r,
                                pid: pid_of(r),
                                cause: format!("sent no heartbeat for {} s (hung?)", watch_cfg.heartbeat_timeout.as_secs()),
                                tail: tail_text(&tails[r]),
                                restartable: true,
                            };
                            failure = Some((f, 4));
                            stopping_since = Some(Instant::now() - watch_cfg.grace);
                            let _ = kill_tx.send(true);
                            break;
                        }
                    }
                }
            }
            _ = sigint.recv() => interrupt(&mut interrupted, &mut killed, &mut writers, &exited, token, &kill_tx, progress).await,
            _ = sigterm.recv() => interrupt(&mut interrupted, &mut killed, &mut writers, &exited, token, &kill_tx, progress).await,
            _ = sigusr1.recv() => interrupt(&mut interrupted, &mut killed, &mut writers, &exited, token, &kill_tx, progress).await,
        }
    }
    Ok(match failure {
        // Whatever failed before the second signal is still the news.
        Some((f, _)) => Outcome::Failed(f),
        None if killed => Outcome::Killed,
        None if interrupted || workers_stopped => Outcome::Interrupted,
        None => Outcome::Finished,
    })
}

/// First signal: ask every worker to finish its step and exit. A second: kill them at once
/// (a step of a full-size preset on the CPU can take many minutes); their checkpoints were
/// written atomically, so the newest one on disk is whole.
async fn interrupt(
    interrupted: &mut bool,
    killed: &mut bool,
    writers: &mut [tokio::net::tcp::OwnedWriteHalf],
    exited: &[bool],
    token: u64,
    kill: &watch::Sender<bool>,
    progress: &Progress,
) {
    if *interrupted {
        if !*killed {
            progress.println("second interrupt: stopping the workers at once, without saving");
        }
        *killed = true;
        let _ = kill.send(true);
        return;
    }
    *interrupted = true;
    progress.println("interrupt: the workers finish their step, save and stop (interrupt again to stop at once, without saving)");
    for (r, w) in writers.iter_mut().enumerate() {
        if !exited[r] {
            send(w, token, &Msg::Stop { reason: StopReason::Interrupted }).await;
        }
    }
}

/// After a failed rendezvous: the first worker that exited, if any did within `wait`.
async fn first_exit_failure(
    ev_rx: &mut mpsc::UnboundedReceiver<Event>,
    tails: &[Arc<Mutex<std::collections::VecDeque<String>>>],
    pids: &[u32],
    wait: Duration,
) -> Option<Failure> {
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, ev_rx.recv()).await {
        if let Event::Exited { rank, status } = ev {
            // Give the pump a moment to flush the last lines.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Some(Failure {
                rank,
                pid: pids.get(rank).copied().unwrap_or(0),
                cause: format!("{} before joining the run", describe_exit(&status)),
                tail: tail_text(&tails[rank]),
                restartable: false,
            });
        }
    }
    None
}
