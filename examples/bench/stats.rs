//! Summaries of repeated measurements.

use serde::Serialize;

/// min / median / p90 / max of a sample, in the sample's unit.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    pub n: usize,
    pub min: f64,
    pub median: f64,
    pub p90: f64,
    pub max: f64,
}

impl Summary {
    pub fn of(values: &[f64]) -> Summary {
        let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Summary::default();
        }
        v.sort_by(f64::total_cmp);
        // Nearest-rank percentiles: a reported value is always one that was measured.
        let rank = |p: f64| v[((p * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1];
        Summary {
            n: v.len(),
            min: v[0],
            median: rank(0.5),
            p90: rank(0.9),
            max: v[v.len() - 1],
        }
    }

    /// `min / median / p90 / max` with `digits` decimals.
    pub fn cells(&self, digits: usize) -> String {
        format!(
            "{:.d$} / {:.d$} / {:.d$} / {:.d$}",
            self.min,
            self.median,
            self.p90,
            self.max,
            d = digits
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Summary::of(&[5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0, 8.0, 9.0, 10.0]);
        assert_eq!((s.min, s.median, s.p90, s.max), (1.0, 5.0, 9.0, 10.0));
        assert_eq!(Summary::of(&[]).n, 0);
    }
}
