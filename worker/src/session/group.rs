//! Finding the rest of the group: flags and the environment contract say who this worker is;
//! the rendezvous (the launcher's, or one rank 0 hosts when started by srun or by hand) hands
//! out ranks and ring addresses; the ring connects; a supervised worker keeps a control line to
//! the launcher.

use super::args::GroupArgs;
use crate::collective::{Collective, LocalCollective, RingCollective, RingOptions};
use crate::error::{Result, WorkerError};
use crate::rendezvous::client::{join, resolve, Hello};
use crate::rendezvous::control::Control;
use crate::rendezvous::host::{host, HostSpec};
use moco_proto::env::{EnvSource, LaunchEnv};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Set by the launcher on the workers it spawns: it hosts the rendezvous and supervises them.
pub const SUPERVISED_ENV: &str = "MOCO_SUPERVISED";

/// Token salt of the gradient ring (distinct from the main ring's handshake token).
const GRAD_RING_SALT: u64 = 0x6772_6164_7269_6e67;

/// One worker's place in its run.
pub struct Group {
    pub rank: usize,
    pub world: usize,
    pub local_rank: usize,
    pub run_id: String,
    pub restart_count: u32,
    pub collective: Box<dyn Collective>,
    /// A second ring for gradient buckets, so their all-reduce can run during the backward
    /// without interleaving with the main ring's SyncBN and gather traffic (None at world 1).
    pub grad_collective: Option<std::sync::Arc<dyn Collective>>,
    /// The line to the launcher (supervised workers only).
    pub control: Option<Control>,
    /// Each rank's ring address (host:port), in rank order: the node a lost rank was on.
    pub peers: Vec<String>,
}

impl Group {
    /// "ranks' nodes: rank 0 at 10.0.0.1:40001, rank 1 at 10.0.0.2:40002", for error messages.
    pub fn where_ranks(&self) -> String {
        if self.peers.is_empty() {
            return "ranks' nodes: all on this machine".into();
        }
        let list: Vec<String> =
            self.peers.iter().enumerate().map(|(r, a)| format!("rank {r} at {a}")).collect();
        format!("ranks' nodes: {}", list.join(", "))
    }
}

/// Join the group this worker belongs to. `config_json` is this worker's resolved config; every
/// worker must have the same one.
pub fn join_group(args: &GroupArgs, config_json: &str, device: &str, stop: Arc<AtomicBool>) -> Result<Group> {
    let env = LaunchEnv::from_process()?;
    let from_env = env.source != EnvSource::None;
    let world = args.world_size.map(|w| w as usize).unwrap_or(env.world_size as usize);
    let rank = args.rank.or(from_env.then_some(env.rank));
    let local_rank = args.local_rank.or(from_env.then_some(env.local_rank));
    let run_id = args.run_id.clone().or(env.run_id.clone()).unwrap_or_else(|| "manual".into());
    let master = match (&args.master, &env.master_addr, env.master_port) {
        (Some(m), _, _) => Some(m.clone()),
        (None, Some(a), Some(p)) => Some(format!("{a}:{p}")),
        _ => None,
    };
    if world == 0 {
        return Err(WorkerError::Collective("--world-size must be at least 1".into()));
    }
    if world == 1 && master.is_none() {
        return Ok(Group {
            rank: 0,
            world: 1,
            local_rank: local_rank.unwrap_or(0) as usize,
            run_id,
            restart_count: env.restart_count,
            collective: Box::new(LocalCollective),
            grad_collective: None,
            control: None,
            peers: Vec::new(),
        });
    }
    let master = master.ok_or_else(|| {
        WorkerError::Collective(format!(
            "a run of {world} workers needs the rendezvous address: pass --master HOST:PORT (the same on every \
             worker; rank 0 hosts it) or set MASTER_ADDR and MASTER_PORT"
        ))
    })?;
    if let Some(r) = rank {
        if r as usize >= world {
            return Err(WorkerError::Collective(format!("--rank {r} is not below --world-size {world}")));
        }
    }
    let supervised = std::env::var(SUPERVISED_ENV).is_ok_and(|v| v == "1");
    let deadline = Instant::now() + Duration::from_secs(args.join_timeout);
    let master_addr = resolve(&master)?;
    let host_thread = if !supervised && rank == Some(0) {
        Some(spawn_host(master_addr, world, &run_id, config_json, env.restart_count, deadline)?)
    } else if !supervised && rank.is_none() {
        return Err(WorkerError::Collective(
            "workers started by hand need --rank (or RANK / SLURM_PROCID): rank 0 hosts the rendezvous"
                .into(),
        ));
    } else {
        None
    };

    let hello = Hello {
        rank,
        local_rank,
        device: device.to_string(),
        world_size: world as u32,
        config: config_json.to_string(),
    };
    let member = join(master_addr, &run_id, &hello, deadline)?;
    if let Some(h) = host_thread {
        h.join().map_err(|_| WorkerError::Collective("the rendezvous thread panicked".into()))??;
    }
    let setup = &member.setup;
    if setup.world_size as usize != world {
        return Err(WorkerError::Collective(format!(
            "this worker expects {world} workers but the rendezvous was set up for {}",
            setup.world_size
        )));
    }
    check_same_config(config_json, &setup.config, setup.rank)?;
    let peers: Vec<SocketAddr> = setup
        .ring_peers
        .iter()
        .map(|p| p.parse().map_err(|_| WorkerError::Collective(format!("bad ring address {p:?} in Setup"))))
        .collect::<Result<_>>()?;
    let opts = RingOptions {
        timeout: Duration::from_secs(args.peer_timeout),
        connect_timeout: Duration::from_secs(args.join_timeout.max(60)),
        ..RingOptions::default()
    };
    let grad_listener =
        member.ring_listener.try_clone().map_err(|e| WorkerError::io("cloning the ring listener", e))?;
    let rank = setup.rank as usize;
    let ring =
        RingCollective::connect_with(rank, world, member.ring_listener, &peers, member.token, opts.clone())?;
    // Every rank has accepted its ring connection before any opens the gradient ring on the
    // same listener (a different token keeps the two apart).
    ring.barrier()?;
    let grad_ring = RingCollective::connect_with(
        rank,
        world,
        grad_listener,
        &peers,
        member.token ^ GRAD_RING_SALT,
        opts,
    )?;
    let control = if supervised {
        Some(
            Control::start(member.control, member.token, setup.rank, stop)
                .map_err(|e| WorkerError::io("starting the control threads", e))?,
        )
    } else {
        None
    };
    Ok(Group {
        rank: setup.rank as usize,
        world,
        local_rank: setup.local_rank as usize,
        run_id: setup.run_id.clone(),
        restart_count: setup.restart_count,
        collective: Box::new(ring),
        grad_collective: Some(std::sync::Arc::new(grad_ring)),
        control,
        peers: setup.ring_peers.clone(),
    })
}

type HostThread = std::thread::JoinHandle<Result<()>>;

/// Rank 0 of an unsupervised run hosts the rendezvous on the master port.
fn spawn_host(
    addr: SocketAddr,
    world: usize,
    run_id: &str,
    config_json: &str,
    restart_count: u32,
    deadline: Instant,
) -> Result<HostThread> {
    let bind = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), addr.port());
    let listener = TcpListener::bind(bind).map_err(|e| {
        WorkerError::io(
            format!("rank 0 cannot host the rendezvous on port {} (another run may be using it: pick another --master port)", addr.port()),
            e,
        )
    })?;
    let (run_id, config) = (run_id.to_string(), config_json.to_string());
    std::thread::Builder::new()
        .name("rendezvous".into())
        .spawn(move || {
            let spec = HostSpec {
                world,
                run_id: &run_id,
                config_json: &config,
                restart_count,
                nccl_id: None,
                deadline,
            };
            let mut warn = |m: String| eprintln!("rendezvous: {m}");
            // Connections close when the host returns: unsupervised workers need no control line.
            host(&listener, &spec, &mut warn, &mut || None).map(|_| ())
        })
        .map_err(|e| WorkerError::io("starting the rendezvous thread", e))
}

/// Every worker must train with the same config: name the first field that differs.
fn check_same_config(ours: &str, host: &str, rank: u32) -> Result<()> {
    match crate::rendezvous::config_difference(ours, host) {
        None => Ok(()),
        Some(field) => Err(WorkerError::Config(moco_proto::ProtoError::Config(format!(
            "rank {rank} was started with a different config than the rendezvous host ({field}); start every worker with the same flags"
        )))),
    }
}
