//! A supervised worker's line to the launcher: heartbeats every second (so a hung worker is
//! noticed), metrics after every step, an Error before exiting on a failure, Done at the end;
//! and from the launcher, Stop. If the launcher goes away the worker exits at once: no orphans.

use moco_proto::wire::{read_frame, write_frame, FailureKind, Metrics, Msg, StopReason};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Exit code of a worker stopped because its group broke (peer failure, launcher gone).
pub const EXIT_GROUP_BROKEN: i32 = 3;

/// Exit code of a run stopped on request (SIGINT/SIGTERM/SIGUSR1) after saving its checkpoint:
/// resume it later. 75 is sysexits' EX_TEMPFAIL, "try again later", which is what it means to a
/// job script (e.g. requeue on preemption); the launcher exits with it too.
pub const EXIT_STOPPED: i32 = 75;

pub struct Control {
    writer: Arc<Mutex<TcpStream>>,
    token: u64,
    rank: u32,
    step: Arc<AtomicU64>,
    finished: Arc<AtomicBool>,
}

impl Control {
    /// Start the heartbeat and the listener threads. `stop` is set when the launcher asks for a
    /// graceful stop (finish the step, checkpoint, exit).
    pub fn start(
        stream: TcpStream,
        token: u64,
        rank: u32,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Control> {
        let reader = stream.try_clone()?;
        let writer = Arc::new(Mutex::new(stream));
        let step = Arc::new(AtomicU64::new(0));
        let finished = Arc::new(AtomicBool::new(false));
        {
            let (writer, step, finished) = (writer.clone(), step.clone(), finished.clone());
            std::thread::Builder::new().name("heartbeat".into()).spawn(move || {
                while !finished.load(Ordering::SeqCst) {
                    let msg = Msg::Heartbeat { rank, step: step.load(Ordering::SeqCst) };
                    if let Ok(mut w) = writer.lock() {
                        if write_frame(&mut *w, token, &msg).is_err() {
                            return;
                        }
                    }
                    std::thread::sleep(Duration::from_secs(1));
                }
            })?;
        }
        {
            let finished = finished.clone();
            std::thread::Builder::new().name("control".into()).spawn(move || {
                let mut reader = reader;
                loop {
                    match read_frame(&mut reader, token) {
                        Ok(Msg::Stop { reason: StopReason::Interrupted }) => {
                            eprintln!("rank {rank}: stop requested; finishing the current step");
                            stop.store(true, Ordering::SeqCst);
                        }
                        Ok(Msg::Stop { reason }) => {
                            eprintln!("rank {rank}: the launcher stopped the group: {reason:?}");
                            std::process::exit(EXIT_GROUP_BROKEN);
                        }
                        Ok(_) => {}
                        Err(_) if finished.load(Ordering::SeqCst) => return,
                        Err(e) => {
                            eprintln!("rank {rank}: lost the launcher ({e}); exiting");
                            std::process::exit(EXIT_GROUP_BROKEN);
                        }
                    }
                }
            })?;
        }
        Ok(Control { writer, token, rank, step, finished })
    }

    fn send(&self, msg: &Msg) {
        if let Ok(mut w) = self.writer.lock() {
            // A launcher that cannot be reached is handled by the listener thread.
            let _ = write_frame(&mut *w, self.token, msg);
        }
    }

    pub fn set_step(&self, step: u64) {
        self.step.store(step, Ordering::SeqCst);
    }

    pub fn metrics(&self, m: Metrics) {
        self.send(&Msg::Metrics(m));
    }

    /// Report a failure (before exiting non-zero).
    pub fn error(&self, kind: FailureKind, message: &str) {
        self.finished.store(true, Ordering::SeqCst);
        self.send(&Msg::Error { rank: self.rank, kind, message: message.to_string() });
    }

    /// A line for the user's terminal.
    pub fn notice(&self, text: &str) {
        self.send(&Msg::Notice { rank: self.rank, text: text.to_string() });
    }

    /// Training finished and everything is written.
    pub fn done(&self) {
        self.finished.store(true, Ordering::SeqCst);
        self.send(&Msg::Done { rank: self.rank });
    }
}
