//! Everything the supervisor hears about, as one stream of events: worker exits, messages on
//! the control connections, and lost connections.

use moco_proto::wire::{decode_header, decode_payload, write_frame, Msg, HEADER_LEN};
use std::process::ExitStatus;
use std::sync::{Arc, Mutex};
use tokio::io::AsyncReadExt;
use tokio::net::tcp::OwnedReadHalf;
use tokio::process::Child;
use tokio::sync::{mpsc, watch};

#[derive(Debug)]
pub enum Event {
    Exited {
        rank: usize,
        status: std::io::Result<ExitStatus>,
    },
    Msg {
        rank: usize,
        msg: Msg,
    },
    /// The control connection closed or spoke garbage.
    Lost {
        rank: usize,
        why: String,
    },
}

/// Own a child: report its exit, kill it when `kill` turns true. `exits[rank]` records how it
/// ended, for code that cannot wait on the channel (the rendezvous' poll).
pub fn watch_child(
    rank: usize,
    mut child: Child,
    mut kill: watch::Receiver<bool>,
    events: mpsc::UnboundedSender<Event>,
    exits: Arc<Mutex<Vec<Option<String>>>>,
) {
    tokio::spawn(async move {
        let status = loop {
            tokio::select! {
                s = child.wait() => break s,
                changed = kill.changed() => {
                    if changed.is_err() || *kill.borrow() {
                        let _ = child.start_kill();
                        break child.wait().await;
                    }
                }
            }
        };
        if let Ok(mut e) = exits.lock() {
            e[rank] = Some(describe_exit(&status));
        }
        let _ = events.send(Event::Exited { rank, status });
    });
}

/// "exited with code 1", "killed by signal 9 (SIGKILL)".
pub fn describe_exit(status: &std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(c), _) => format!("exited with code {c}"),
            (None, Some(sig)) => format!("killed by signal {sig}{}", signal_name(sig)),
            _ => "ended".into(),
        },
        Err(e) => format!("could not be waited for: {e}"),
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        9 => " (SIGKILL: out of memory, or killed by hand)",
        11 => " (SIGSEGV)",
        6 => " (SIGABRT)",
        15 => " (SIGTERM)",
        2 => " (SIGINT)",
        _ => "",
    }
}

/// Read frames from one worker's control connection into the event stream.
pub fn read_control(rank: usize, mut rd: OwnedReadHalf, token: u64, events: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        loop {
            let mut h = [0u8; HEADER_LEN];
            if let Err(e) = rd.read_exact(&mut h).await {
                let _ = events.send(Event::Lost { rank, why: format!("control connection closed ({e})") });
                return;
            }
            let len = match decode_header(&h, token) {
                Ok(l) => l as usize,
                Err(e) => {
                    let _ = events.send(Event::Lost { rank, why: e.to_string() });
                    return;
                }
            };
            let mut payload = vec![0u8; len];
            if let Err(e) = rd.read_exact(&mut payload).await {
                let _ = events
                    .send(Event::Lost { rank, why: format!("control connection closed mid-message ({e})") });
                return;
            }
            match decode_payload(&payload) {
                Ok(msg) => {
                    if events.send(Event::Msg { rank, msg }).is_err() {
                        return;
                    }
                }
                Err(e) => {
                    let _ = events.send(Event::Lost { rank, why: e.to_string() });
                    return;
                }
            }
        }
    });
}

/// Send one message to a worker (best effort: a worker that is gone is handled by its exit).
pub async fn send(wr: &mut tokio::net::tcp::OwnedWriteHalf, token: u64, msg: &Msg) {
    use tokio::io::AsyncWriteExt;
    let mut buf = Vec::new();
    if write_frame(&mut buf, token, msg).is_ok() {
        let _ = wr.write_all(&buf).await;
    }
}
