//! A scenario's figures, each with its unit, baseline, ratio and targets; printed as a
//! summary and written as `<out>/<scenario>.json`.

use std::path::Path;

use anyhow::{Context, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value, json};

#[derive(Debug, Clone, Serialize)]
pub struct Baseline {
    pub name: String,
    pub value: f64,
    pub unit: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// e.g. `>= 50000 records/s`, `ratio >= 0.5`, `< 10 ms`.
    pub description: String,
    /// `value` or `ratio`: what the threshold applies to.
    pub on: &'static str,
    /// `>=`, `<=`, `<`.
    pub op: &'static str,
    pub threshold: f64,
    pub passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline: Option<Baseline>,
    /// value / baseline.
    pub ratio: Option<f64>,
    pub targets: Vec<Target>,
}

impl Figure {
    pub fn baseline(&mut self, name: &str, value: f64, unit: &str) -> &mut Self {
        self.ratio = (value > 0.0).then(|| self.value / value);
        self.baseline = Some(Baseline {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
        });
        self
    }

    fn target(&mut self, on: &'static str, op: &'static str, threshold: f64) -> &mut Self {
        let actual = match on {
            "ratio" => self.ratio,
            _ => Some(self.value),
        };
        let passed = actual.is_some_and(|v| match op {
            ">=" => v >= threshold,
            "<=" => v <= threshold,
            _ => v < threshold,
        });
        let description = match on {
            "ratio" => format!("{op} {threshold} of baseline"),
            _ => format!("{op} {} {}", fmt_num(threshold), self.unit),
        };
        self.targets.push(Target {
            description,
            on,
            op,
            threshold,
            passed,
        });
        self
    }

    pub fn at_least(&mut self, threshold: f64) -> &mut Self {
        self.target("value", ">=", threshold)
    }

    pub fn below(&mut self, threshold: f64) -> &mut Self {
        self.target("value", "<", threshold)
    }

    pub fn ratio_at_least(&mut self, threshold: f64) -> &mut Self {
        self.target("ratio", ">=", threshold)
    }

    pub fn ratio_at_most(&mut self, threshold: f64) -> &mut Self {
        self.target("ratio", "<=", threshold)
    }
}

#[derive(Debug, Serialize)]
pub struct Report {
    pub scenario: String,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub duration_s: f64,
    pub environment: Value,
    pub params: Value,
    pub figures: Vec<Figure>,
    /// Supporting data: distributions, per-kind tables, series.
    pub details: Map<String, Value>,
    /// RSS of the watched processes during the scenario.
    pub memory: Value,
    pub notes: Vec<String>,
    /// Every target passed (true when there is none).
    pub passed: bool,
}

impl Report {
    pub fn new(scenario: &str, environment: Value, params: Value) -> Self {
        Self {
            scenario: scenario.to_owned(),
            started_at: Utc::now(),
            finished_at: None,
            duration_s: 0.0,
            environment,
            params,
            figures: Vec::new(),
            details: Map::new(),
            memory: Value::Null,
            notes: Vec::new(),
            passed: true,
        }
    }

    pub fn figure(&mut self, name: &str, value: f64, unit: &str) -> &mut Figure {
        self.figures.push(Figure {
            name: name.to_owned(),
            value,
            unit: unit.to_owned(),
            baseline: None,
            ratio: None,
            targets: Vec::new(),
        });
        self.figures.last_mut().expect("just pushed")
    }

    pub fn detail(&mut self, key: &str, value: impl Serialize) {
        self.details.insert(
            key.to_owned(),
            serde_json::to_value(value).unwrap_or(Value::Null),
        );
    }

    pub fn note(&mut self, note: impl Into<String>) {
        let note = note.into();
        println!("  note: {note}");
        self.notes.push(note);
    }

    /// Stamps the end, prints the summary and writes `<out>/<scenario>.json`.
    pub fn finish(mut self, out: &Path) -> Result<Self> {
        let now = Utc::now();
        self.duration_s = (now - self.started_at).num_milliseconds() as f64 / 1000.0;
        self.finished_at = Some(now);
        self.passed = self
            .figures
            .iter()
            .all(|f| f.targets.iter().all(|t| t.passed));
        self.print();
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        let path = out.join(format!("{}.json", self.scenario));
        std::fs::write(&path, serde_json::to_vec_pretty(&self)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("  -> {}", path.display());
        Ok(self)
    }

    fn print(&self) {
        println!(
            "== {} ({:.1} s) {}",
            self.scenario,
            self.duration_s,
            if self.figures.iter().any(|f| !f.targets.is_empty()) {
                if self.passed {
                    "all targets met"
                } else {
                    "SOME TARGETS MISSED"
                }
            } else {
                ""
            }
        );
        for f in &self.figures {
            println!("{}", summary_line(&self.scenario, f));
        }
        if let Some(procs) = self.memory.as_object() {
            for (name, m) in procs {
                println!(
                    "  {}/rss.{name}: start {} MiB, end {} MiB, peak {} MiB, growth {}%",
                    self.scenario,
                    opt(&m["start_mib"]),
                    opt(&m["end_mib"]),
                    opt(&m["peak_mib"]),
                    opt(&m["growth_pct"]),
                );
            }
        }
    }
}

fn opt(v: &Value) -> String {
    v.as_f64()
        .map(|x| format!("{x:.1}"))
        .unwrap_or_else(|| "-".into())
}

pub fn summary_line(scenario: &str, f: &Figure) -> String {
    let mut line = format!("  {scenario}/{}: {} {}", f.name, fmt_num(f.value), f.unit);
    if let Some(b) = &f.baseline {
        line += &format!(" | baseline {}: {} {}", b.name, fmt_num(b.value), b.unit);
        if let Some(r) = f.ratio {
            line += &format!(" | ratio {r:.3}");
        }
    }
    for t in &f.targets {
        line += &format!(
            " | target {}: {}",
            t.description,
            if t.passed { "PASS" } else { "FAIL" }
        );
    }
    line
}

/// Numbers for people: thousands separated, two decimals below 100.
pub fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        return format!("{x}");
    }
    if x.abs() < 100.0 {
        return format!("{x:.2}");
    }
    let n = x.round() as i64;
    let s = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// Distribution of a sample (nearest-rank percentiles), in the sample's unit.
#[derive(Debug, Clone, Copy, Serialize, Default)]
pub struct Dist {
    pub n: usize,
    pub min: f64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Dist {
    pub fn of(sample: &[f64]) -> Self {
        if sample.is_empty() {
            return Self::default();
        }
        let mut v = sample.to_vec();
        v.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
            v[rank.clamp(1, v.len()) - 1]
        };
        Self {
            n: v.len(),
            min: v[0],
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p50: pct(50.0),
            p90: pct(90.0),
            p99: pct(99.0),
            p999: pct(99.9),
            max: v[v.len() - 1],
        }
    }
}

/// Latencies, kept exactly (microseconds) and sorted when read; read back in
/// milliseconds. A 20 s phase at 10,000 requests/s is 200,000 samples: 800 KB.
#[derive(Default)]
pub struct Latency {
    us: Vec<u32>,
    sorted: bool,
}

impl Latency {
    pub fn record(&mut self, d: std::time::Duration) {
        self.us.push(d.as_micros().min(u32::MAX as u128) as u32);
        self.sorted = false;
    }

    pub fn add(&mut self, other: &Latency) {
        self.us.extend_from_slice(&other.us);
        self.sorted = false;
    }

    pub fn count(&self) -> u64 {
        self.us.len() as u64
    }

    fn sort(&mut self) {
        if !self.sorted {
            self.us.sort_unstable();
            self.sorted = true;
        }
    }

    /// The `q` quantile (nearest rank), in ms.
    pub fn ms(&mut self, q: f64) -> f64 {
        self.sort();
        if self.us.is_empty() {
            return 0.0;
        }
        let rank = (q * self.us.len() as f64).ceil() as usize;
        self.us[rank.clamp(1, self.us.len()) - 1] as f64 / 1000.0
    }

    pub fn summary(&mut self) -> Value {
        let mean = if self.us.is_empty() {
            0.0
        } else {
            self.us.iter().map(|&u| u as f64).sum::<f64>() / self.us.len() as f64 / 1000.0
        };
        json!({
            "count": self.count(),
            "unit": "ms",
            "mean": mean,
            "p50": self.ms(0.50),
            "p90": self.ms(0.90),
            "p99": self.ms(0.99),
            "p999": self.ms(0.999),
            "max": self.ms(1.0),
        })
    }
}
