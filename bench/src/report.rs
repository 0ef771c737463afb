//! Results of a run: medians and raw samples per (workload, allocator), plus where they were
//! measured. Printed as a Markdown table (for BENCHMARKS.md) or JSON (for scripts).

use serde::Serialize;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub meta: Meta,
    pub rounds: usize,
    pub smoke: bool,
    pub rows: Vec<Row>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Meta {
    /// UTC, `YYYY-MM-DD HH:MM`.
    pub date: String,
    pub cpu: String,
    /// Cores seen by the process; also the thread count of `mt-churn`.
    pub cores: usize,
    pub rustc: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub workload: String,
    /// One per allocator, in [`crate::ALLOCATORS`] order.
    pub cells: Vec<Cell>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub allocator: String,
    pub median_ms: f64,
    /// Wall time of each round, in run order.
    pub samples_ms: Vec<f64>,
}

impl Row {
    pub fn median(&self, allocator: &str) -> Option<f64> {
        self.cells.iter().find(|c| c.allocator == allocator).map(|c| c.median_ms)
    }
}

impl Meta {
    pub fn collect() -> Meta {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        Meta { date: utc_now(), cpu, cores: crate::threads(), rustc: env!("MALLARD_BENCH_RUSTC").to_string() }
    }
}

/// Current UTC time as `YYYY-MM-DD HH:MM`, without a date crate (Hinnant's civil_from_days).
pub(crate) fn utc_now() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {:02}:{:02} UTC", rem / 3600, rem % 3600 / 60)
}

pub(crate) fn geomean(xs: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = xs.fold((0.0, 0), |(s, n), x| (s + x.ln(), n + 1));
    (sum / n.max(1) as f64).exp()
}

impl Report {
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("report serializes")
    }

    /// Header lines and a table: medians in ms, then mallard's time divided by the others'
    /// (< 1 means mallard is faster), and a geomean row.
    pub fn to_markdown(&self) -> String {
        let m = &self.meta;
        let mut out = String::new();
        let _ = writeln!(out, "mallard bench — {} — {} ({} cores) — {}", m.date, m.cpu, m.cores, m.rustc);
        let mode = if self.smoke { "smoke mode, not a measurement" } else { "median" };
        let _ = writeln!(out, "{} round(s), interleaved, wall time in ms ({mode})\n", self.rounds);
        out += "| workload | system | mallard | mimalloc | mallard/system | mallard/mimalloc |\n";
        out += "|---|--:|--:|--:|--:|--:|\n";
        let get = |r: &Row, a| r.median(a).unwrap_or(f64::NAN);
        let line = |out: &mut String, name: &str, s: f64, ma: f64, mi: f64, rs: f64, rm: f64| {
            let _ = writeln!(out, "| {name} | {s:.1} | {ma:.1} | {mi:.1} | {rs:.2} | {rm:.2} |");
        };
        for r in &self.rows {
            let (s, ma, mi) = (get(r, "system"), get(r, "mallard"), get(r, "mimalloc"));
            line(&mut out, &r.workload, s, ma, mi, ma / s, ma / mi);
        }
        let g = |f: &dyn Fn(&Row) -> f64| geomean(self.rows.iter().map(f));
        line(
            &mut out,
            "**geomean**",
            g(&|r| get(r, "system")),
            g(&|r| get(r, "mallard")),
            g(&|r| get(r, "mimalloc")),
            g(&|r| get(r, "mallard") / get(r, "system")),
            g(&|r| get(r, "mallard") / get(r, "mimalloc")),
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn geomean_of_ratios() {
        assert!((geomean([0.5, 2.0].into_iter()) - 1.0).abs() < 1e-12);
        assert!((geomean([4.0, 9.0].into_iter()) - 6.0).abs() < 1e-12);
    }

    #[test]
    fn utc_now_is_well_formed() {
        let d = utc_now();
        assert_eq!(d.len(), "2026-01-01 00:00 UTC".len(), "{d}");
        assert!(d.starts_with("20"), "{d}");
    }
}
