//! Samples the resident set size (`VmRSS` in `/proc/PID/status`) of watched processes
//! once a second while a scenario runs.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::{Map, Value, json};
use tokio::task::JoinHandle;

#[derive(Debug, Clone)]
pub struct Watched {
    pub name: String,
    pub pid: u32,
}

/// Parses `name=PID`.
pub fn parse_watch(s: &str) -> Result<Watched, String> {
    let (name, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected name=PID, got `{s}`"))?;
    let pid = pid
        .parse()
        .map_err(|_| format!("`{pid}` is not a process id"))?;
    Ok(Watched {
        name: name.to_owned(),
        pid,
    })
}

pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

type Samples = Arc<Mutex<Vec<Vec<(f64, u64)>>>>;

pub struct RssWatcher {
    procs: Vec<Watched>,
    samples: Samples,
    started: Instant,
    task: Option<JoinHandle<()>>,
}

impl RssWatcher {
    pub fn start(procs: &[Watched]) -> Self {
        let samples: Samples = Arc::new(Mutex::new(vec![Vec::new(); procs.len()]));
        let started = Instant::now();
        let task = (!procs.is_empty()).then(|| {
            let (procs, samples) = (procs.to_vec(), samples.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tick.tick().await;
                    let t = started.elapsed().as_secs_f64();
                    let mut s = samples.lock().expect("not poisoned");
                    for (i, p) in procs.iter().enumerate() {
                        if let Some(kib) = rss_kib(p.pid) {
                            s[i].push((t, kib));
                        }
                    }
                }
            })
        });
        Self {
            procs: procs.to_vec(),
            samples,
            started,
            task,
        }
    }

    /// Stops sampling (taking one last sample) and summarises each process. With a
    /// warm-up, `start` is the first sample after it, so growth excludes start-up.
    pub fn stop(mut self, warmup: Duration) -> Value {
        if let Some(task) = self.task.take() {
            task.abort();
        }
        let t = self.started.elapsed().as_secs_f64();
        let mut samples = self.samples.lock().expect("not poisoned");
        let mut out = Map::new();
        for (i, p) in self.procs.iter().enumerate() {
            if let Some(kib) = rss_kib(p.pid) {
                samples[i].push((t, kib));
            }
            let all = &samples[i];
            let after: Vec<&(f64, u64)> = all
                .iter()
                .filter(|(t, _)| *t >= warmup.as_secs_f64())
                .collect();
            let mib = |kib: u64| kib as f64 / 1024.0;
            let start = after.first().map(|s| mib(s.1));
            let end = after.last().map(|s| mib(s.1));
            let peak = all.iter().map(|s| s.1).max().map(mib);
            let growth = match (start, end) {
                (Some(s), Some(e)) if s > 0.0 => Some((e - s) / s * 100.0),
                _ => None,
            };
            // Keep the series short: at most ~120 points.
            let step = (all.len() / 120).max(1);
            let series: Vec<Value> = all
                .iter()
                .step_by(step)
                .map(|(t, k)| json!([(*t * 10.0).round() / 10.0, (mib(*k) * 10.0).round() / 10.0]))
                .collect();
            out.insert(
                p.name.clone(),
                json!({
                    "pid": p.pid,
                    "unit": "MiB",
                    "warmup_s": warmup.as_secs_f64(),
                    "samples": all.len(),
                    "start_mib": start,
                    "end_mib": end,
                    "peak_mib": peak,
                    "growth_pct": growth,
                    "alive_at_end": rss_kib(p.pid).is_some(),
                    "series_s_mib": series,
                }),
            );
        }
        Value::Object(out)
    }
}
