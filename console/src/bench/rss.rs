//! Memory of other processes, read from `/proc/<pid>/status` (Linux only).
//!
//! An [`RssSampler`] task polls `VmRSS` of a set of processes on a fixed
//! interval and owns the highest value it saw per process; when stopped it
//! adds each process's `VmHWM` (the kernel's own high-water mark), which
//! also catches spikes shorter than the interval. It only reads: it never
//! signals or otherwise touches the processes it watches.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, Result};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Time between two samples: frequent enough to follow a transfer of a few
/// seconds, rare enough that reading a few small /proc files costs nothing.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(100);

/// How long stopping the sampler may take; it only has to leave a sleep.
const STOP_TIMEOUT: Duration = Duration::from_secs(5);

/// Peak memory of one watched process, in bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Peak {
    /// Highest `VmRSS` seen by the periodic samples.
    pub sampled: u64,
    /// `VmHWM` when the sampler stopped (0 if the process was already gone).
    pub high_water: u64,
}

impl Peak {
    /// The larger of the two readings.
    pub fn bytes(&self) -> u64 {
        self.sampled.max(self.high_water)
    }
}

#[derive(Debug)]
pub struct RssSampler {
    pids: Vec<u32>,
    stop_tx: oneshot::Sender<()>,
    task: JoinHandle<BTreeMap<u32, u64>>,
}

impl RssSampler {
    /// Starts sampling `pids` in a background task.
    pub fn start(pids: Vec<u32>) -> RssSampler {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        let watched = pids.clone();
        let task = tokio::spawn(async move {
            let mut peaks: BTreeMap<u32, u64> = BTreeMap::new();
            let mut ticks = tokio::time::interval(SAMPLE_INTERVAL);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = &mut stop_rx => break,
                    _ = ticks.tick() => {}
                }
                for &pid in &watched {
                    if let Some(rss) = status_bytes(pid, "VmRSS") {
                        let peak = peaks.entry(pid).or_default();
                        *peak = (*peak).max(rss);
                    }
                }
            }
            peaks
        });
        RssSampler {
            pids,
            stop_tx,
            task,
        }
    }

    /// Stops sampling and returns each process's peak. Call it while the
    /// processes still run, or their `VmHWM` is lost.
    pub async fn finish(self) -> Result<BTreeMap<u32, Peak>> {
        // The task may have ended already; then the send fails harmlessly.
        let _ = self.stop_tx.send(());
        let sampled = tokio::time::timeout(STOP_TIMEOUT, self.task)
            .await
            .map_err(|_| anyhow!("the memory sampler did not stop within {STOP_TIMEOUT:?}"))?
            .map_err(|e| anyhow!("the memory sampler failed: {e}"))?;
        Ok(self
            .pids
            .iter()
            .map(|&pid| {
                let peak = Peak {
                    sampled: sampled.get(&pid).copied().unwrap_or(0),
                    high_water: status_bytes(pid, "VmHWM").unwrap_or(0),
                };
                (pid, peak)
            })
            .collect())
    }
}

/// One `kB` field of `/proc/<pid>/status`, in bytes; `None` if the process
/// is gone or the field is missing.
pub fn status_bytes(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_field(&status, field)
}

/// Finds `field:   1234 kB` in the text of a status file.
fn parse_status_field(status: &str, field: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let rest = line.strip_prefix(field)?.strip_prefix(':')?;
        let kib: u64 = rest.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_status_fields() {
        let status = "Name:\tchord-node\nVmHWM:\t   20480 kB\nVmRSS:\t   10240 kB\nThreads:\t5\n";
        assert_eq!(parse_status_field(status, "VmRSS"), Some(10240 * 1024));
        assert_eq!(parse_status_field(status, "VmHWM"), Some(20480 * 1024));
        assert_eq!(parse_status_field(status, "VmSwap"), None);
        assert_eq!(parse_status_field(status, "Threads"), None);
    }

    #[test]
    fn reads_own_memory() {
        let rss = status_bytes(std::process::id(), "VmRSS");
        assert!(rss.is_some_and(|b| b > 0), "{rss:?}");
    }
}
