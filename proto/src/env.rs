//! The environment-variable contract between the launcher (or SLURM, or a user starting ranks
//! by hand) and a worker (DESIGN.md, "Parts": proto).
//!
//! Explicit variables win over SLURM's: RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT,
//! RUN_ID, RESTART_COUNT. Under `srun`, SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_ID,
//! SLURM_RESTART_COUNT (set when a job was requeued) and the first host of SLURM_NODELIST fill
//! whatever is missing, so `srun worker ...` needs no wrapper script.

use crate::error::ProtoError;

pub const RANK: &str = "RANK";
pub const WORLD_SIZE: &str = "WORLD_SIZE";
pub const LOCAL_RANK: &str = "LOCAL_RANK";
pub const MASTER_ADDR: &str = "MASTER_ADDR";
pub const MASTER_PORT: &str = "MASTER_PORT";
pub const RUN_ID: &str = "RUN_ID";
pub const RESTART_COUNT: &str = "RESTART_COUNT";
pub const SLURM_PROCID: &str = "SLURM_PROCID";
pub const SLURM_NTASKS: &str = "SLURM_NTASKS";
pub const SLURM_LOCALID: &str = "SLURM_LOCALID";
pub const SLURM_JOB_ID: &str = "SLURM_JOB_ID";
pub const SLURM_NODELIST: &str = "SLURM_NODELIST";
pub const SLURM_RESTART_COUNT: &str = "SLURM_RESTART_COUNT";

/// Where the rank information came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnvSource {
    /// RANK/WORLD_SIZE (set by the launcher or by hand).
    Explicit,
    /// SLURM_* from srun.
    Slurm,
    /// Nothing set: a single worker started by hand.
    None,
}

/// A worker's place in the group, as its environment describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaunchEnv {
    pub rank: u32,
    pub world_size: u32,
    pub local_rank: u32,
    /// Host and port of the rendezvous (the launcher, or rank 0's worker).
    pub master_addr: Option<String>,
    pub master_port: Option<u16>,
    pub run_id: Option<String>,
    pub restart_count: u32,
    pub source: EnvSource,
}

/// Port derived from the SLURM job id when MASTER_PORT is not set, so every task of a job
/// agrees on it without communication (and two jobs on one node rarely collide).
pub fn slurm_port(job_id: u64) -> u16 {
    (20_000 + job_id % 20_000) as u16
}

fn parse_num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ProtoError> {
    v.trim().parse().map_err(|_| ProtoError::Env(format!("{name}={v:?} is not a non-negative integer")))
}

impl LaunchEnv {
    /// Read the contract from the process environment.
    pub fn from_process() -> Result<LaunchEnv, ProtoError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Read the contract through `get` (tests pass a map).
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<LaunchEnv, ProtoError> {
        let num = |name: &str| -> Result<Option<u64>, ProtoError> {
            get(name).filter(|v| !v.trim().is_empty()).map(|v| parse_num::<u64>(name, &v)).transpose()
        };
        let (rank, world, local, source) = match (num(RANK)?, num(WORLD_SIZE)?) {
            (Some(r), Some(w)) => (r, w, num(LOCAL_RANK)?.unwrap_or(r), EnvSource::Explicit),
            (Some(_), None) | (None, Some(_)) => {
                return Err(ProtoError::Env(format!("{RANK} and {WORLD_SIZE} must be set together")));
            }
            (None, None) => match (num(SLURM_PROCID)?, num(SLURM_NTASKS)?) {
                (Some(r), Some(w)) => (r, w, num(SLURM_LOCALID)?.unwrap_or(0), EnvSource::Slurm),
                _ => (0, 1, 0, EnvSource::None),
            },
        };
        if world == 0 {
            return Err(ProtoError::Env("the world size is 0: at least one worker is needed".into()));
        }
        if rank >= world {
            return Err(ProtoError::Env(format!(
                "rank {rank} is not below the world size {world} (ranks are 0-based)"
            )));
        }
        let job = num(SLURM_JOB_ID)?;
        let master_addr = get(MASTER_ADDR)
            .filter(|v| !v.is_empty())
            .or_else(|| get(SLURM_NODELIST).and_then(|l| first_host(&l)));
        let master_port = match get(MASTER_PORT).filter(|v| !v.is_empty()) {
            Some(p) => {
                let p: u16 = p
                    .trim()
                    .parse()
                    .map_err(|_| ProtoError::Env(format!("{MASTER_PORT}={p:?} is not a port number")))?;
                Some(p)
            }
            None => job.map(slurm_port),
        };
        let run_id = get(RUN_ID).filter(|v| !v.is_empty()).or_else(|| job.map(|j| format!("slurm-{j}")));
        // A requeued job starts again as a restart: it continues from the run's newest
        // checkpoint, not from a `--resume .../step-N` given to its first start.
        let restart_count = num(RESTART_COUNT)?.or(num(SLURM_RESTART_COUNT)?).unwrap_or(0) as u32;
        Ok(LaunchEnv {
            rank: rank as u32,
            world_size: world as u32,
            local_rank: local as u32,
            master_addr,
            master_port,
            run_id,
            restart_count,
            source,
        })
    }
}

/// The first host of a SLURM node list: `gpu[03-05,9],cpu1` -> `gpu03`; `a,b` -> `a`.
pub fn first_host(list: &str) -> Option<String> {
    let list = list.trim();
    if list.is_empty() {
        return None;
    }
    // The first entry ends at the first comma outside brackets.
    let mut depth = 0;
    let mut end = list.len();
    for (i, ch) in list.char_indices() {
        match ch {
            '[' => depth += 1,
            ']' => depth -= 1,
            ',' if depth == 0 => {
                end = i;
                break;
            }
            _ => {}
        }
    }
    let entry = &list[..end];
    match (entry.find('['), entry.find(']')) {
        (Some(open), Some(close)) if close > open => {
            let prefix = &entry[..open];
            let suffix = &entry[close + 1..];
            let first = entry[open + 1..close].split(',').next()?.split('-').next()?;
            // Later bracket groups (`rack[1-2]-n[3-4]`) expand the same way.
            first_host(&format!("{prefix}{first}{suffix}"))
        }
        _ => Some(entry.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<LaunchEnv, ProtoError> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        LaunchEnv::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn nothing_set_is_a_single_worker() {
        let e = env(&[]).unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank, e.source), (0, 1, 0, EnvSource::None));
    }

    #[test]
    fn explicit_wins_over_slurm() {
        let e = env(&[(RANK, "1"), (WORLD_SIZE, "2"), (SLURM_PROCID, "5"), (SLURM_NTASKS, "8")]).unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank, e.source), (1, 2, 1, EnvSource::Explicit));
    }

    #[test]
    fn slurm_fills_everything() {
        let e = env(&[
            (SLURM_PROCID, "3"),
            (SLURM_NTASKS, "4"),
            (SLURM_LOCALID, "1"),
            (SLURM_JOB_ID, "123456"),
            (SLURM_NODELIST, "gpu[07-08],login1"),
        ])
        .unwrap();
        assert_eq!((e.rank, e.world_size, e.local_rank, e.source), (3, 4, 1, EnvSource::Slurm));
        assert_eq!(e.master_addr.as_deref(), Some("gpu07"));
        assert_eq!(e.master_port, Some(slurm_port(123456)));
        assert_eq!(e.run_id.as_deref(), Some("slurm-123456"));
        assert_eq!(e.restart_count, 0);
    }

    #[test]
    fn a_requeued_job_is_a_restart() {
        let slurm =
            [(SLURM_PROCID, "0"), (SLURM_NTASKS, "2"), (SLURM_JOB_ID, "9"), (SLURM_RESTART_COUNT, "2")];
        assert_eq!(env(&slurm).unwrap().restart_count, 2);
        // The launcher's own count wins.
        let both = [&slurm[..], &[(RESTART_COUNT, "1")]].concat();
        assert_eq!(env(&both).unwrap().restart_count, 1);
    }

    #[test]
    fn bad_values_are_named() {
        let err = env(&[(RANK, "x"), (WORLD_SIZE, "2")]).unwrap_err().to_string();
        assert!(err.contains("RANK=\"x\""), "{err}");
        let err = env(&[(RANK, "2"), (WORLD_SIZE, "2")]).unwrap_err().to_string();
        assert!(err.contains("not below the world size"), "{err}");
        let err = env(&[(RANK, "0")]).unwrap_err().to_string();
        assert!(err.contains("set together"), "{err}");
        let err = env(&[(RANK, "0"), (WORLD_SIZE, "1"), (MASTER_PORT, "99999")]).unwrap_err().to_string();
        assert!(err.contains("not a port"), "{err}");
    }

    #[test]
    fn node_lists() {
        assert_eq!(first_host("node1").as_deref(), Some("node1"));
        assert_eq!(first_host("a,b").as_deref(), Some("a"));
        assert_eq!(first_host("gpu[03-05,9],cpu1").as_deref(), Some("gpu03"));
        assert_eq!(first_host("rack[2,4]-n[1-3]").as_deref(), Some("rack2-n1"));
        assert_eq!(first_host("").as_deref(), None);
    }
}
