//! Writing ensembles: the trajectories CSV and the tidy statistics CSV of the CLI contract.

use super::Ensemble;
use crate::jit::CompiledModel;
use std::io::Write;

/// One row of the statistics table: mean and sample standard deviation of one species or
/// observable at one time over the ensemble.
#[derive(Debug, Clone, PartialEq)]
pub struct StatRow {
    /// The sampling time.
    pub time: f64,
    /// Species or observable name.
    pub name: std::sync::Arc<str>,
    /// Mean over trajectories.
    pub mean: f64,
    /// Sample standard deviation (n - 1 denominator); `None` for a single trajectory.
    pub sd: Option<f64>,
}

/// Names of the output columns after `trajectory,time`: species then observables.
fn value_names(compiled: &CompiledModel) -> Vec<String> {
    let m = &compiled.model;
    m.species
        .iter()
        .map(|s| s.name.clone())
        .chain(m.observables.iter().map(|o| o.name.clone()))
        .collect()
}

/// Formats numbers for CSV without allocating: whole numbers as integers (as `Display` does),
/// others in the shortest form that reads back exactly (ryu).
struct NumberFormat {
    int: itoa::Buffer,
    float: ryu::Buffer,
}

impl NumberFormat {
    fn new() -> Self {
        NumberFormat {
            int: itoa::Buffer::new(),
            float: ryu::Buffer::new(),
        }
    }
    fn int(&mut self, v: i64) -> &[u8] {
        self.int.format(v).as_bytes()
    }
    fn float(&mut self, v: f64) -> &[u8] {
        if v.fract() == 0.0 && v.abs() < 1e15 {
            self.int.format(v as i64).as_bytes()
        } else {
            self.float.format(v).as_bytes()
        }
    }
}

/// Writes `trajectory,time,<species...>,<observables...>`, one row per trajectory and time.
pub fn write_trajectories(
    out: impl Write,
    ensemble: &Ensemble,
    compiled: &CompiledModel,
    params: &[f64],
) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    let mut header = vec!["trajectory".to_string(), "time".to_string()];
    header.extend(value_names(compiled));
    w.write_record(&header)?;
    let mut obs = vec![0.0; compiled.model.observables.len()];
    let mut f = NumberFormat::new();
    for n in 0..ensemble.trajectories {
        for (k, &t) in ensemble.times.iter().enumerate() {
            let x = ensemble.state(n, k);
            w.write_field(f.int(n as i64))?;
            w.write_field(f.float(t))?;
            for &v in x {
                w.write_field(f.int(v))?;
            }
            if !obs.is_empty() {
                compiled.observables(x, params, t, &mut obs);
                for &v in &obs {
                    w.write_field(f.float(v))?;
                }
            }
            w.write_record(None::<&[u8]>)?;
        }
    }
    w.flush()?;
    Ok(())
}

/// Means and standard deviations of every species and observable at one time, computed time by
/// time so that no table of accumulators is allocated (fresh pages cost more than the arithmetic).
///
/// Copy numbers are integers, so their sums and sums of squares are kept exactly (in 128 bits):
/// the mean S/n and the variance (nQ - S²)/(n(n - 1)) are then rounded once, do not depend on
/// the order of the trajectories, and repeat across times, which lets the writer reuse their text.
/// Observables, and counts in the (astronomical) case where the sums would overflow, use Welford's
/// recurrence in trajectory order.
struct Moments<'e> {
    ensemble: &'e Ensemble,
    compiled: &'e CompiledModel,
    params: &'e [f64],
    /// Number of values per time: species, then observables.
    nv: usize,
    /// Number of values (from the first) with exact sums at the current time.
    exact: usize,
    /// Sums and sums of squares of counts at the current time.
    sum: Vec<i128>,
    sum_sq: Vec<u128>,
    /// Welford means and sums of squared deviations at the current time, for values past `exact`.
    mean: Vec<f64>,
    m2: Vec<f64>,
    values: Vec<f64>,
}

/// A moment as the writer sees it: the value, and for exact moments the integer that determines
/// it (so equal keys print the same text).
#[derive(Clone, Copy)]
struct Moment {
    value: f64,
    key: Option<u128>,
}

impl<'e> Moments<'e> {
    fn new(ensemble: &'e Ensemble, compiled: &'e CompiledModel, params: &'e [f64]) -> Self {
        let ns = ensemble.species.len();
        let nv = ns + compiled.model.observables.len();
        Moments {
            ensemble,
            compiled,
            params,
            nv,
            exact: ns,
            sum: vec![0; ns],
            sum_sq: vec![0; ns],
            mean: vec![0.0; nv],
            m2: vec![0.0; nv],
            values: vec![0.0; nv],
        }
    }

    /// Accumulates the moments at time index `k`.
    fn at(&mut self, k: usize) {
        let (e, ns) = (self.ensemble, self.ensemble.species.len());
        self.sum.iter_mut().for_each(|v| *v = 0);
        self.sum_sq.iter_mut().for_each(|v| *v = 0);
        self.exact = ns;
        for traj in 0..e.trajectories {
            let x = e.state(traj, k);
            let cells = x
                .iter()
                .zip(self.sum.iter_mut())
                .zip(self.sum_sq.iter_mut());
            for ((&v, s), q) in cells {
                *s += v as i128;
                let square = (v.unsigned_abs() as u128) * (v.unsigned_abs() as u128);
                match q.checked_add(square) {
                    Some(total) => *q = total,
                    None => self.exact = 0,
                }
            }
        }
        if self.exact == self.nv {
            return;
        }
        let t = e.times[k];
        self.mean.iter_mut().for_each(|v| *v = 0.0);
        self.m2.iter_mut().for_each(|v| *v = 0.0);
        for traj in 0..e.trajectories {
            let weight = 1.0 / (traj + 1) as f64;
            let x = e.state(traj, k);
            for (v, &c) in self.values.iter_mut().zip(x) {
                *v = c as f64;
            }
            if self.nv > ns {
                (self.compiled).observables(x, self.params, t, &mut self.values[ns..]);
            }
            for i in self.exact..self.nv {
                let d = self.values[i] - self.mean[i];
                self.mean[i] += d * weight;
                self.m2[i] += d * (self.values[i] - self.mean[i]);
            }
        }
    }

    fn mean(&self, i: usize) -> Moment {
        if i < self.exact {
            let s = self.sum[i];
            Moment {
                value: s as f64 / self.ensemble.trajectories as f64,
                key: u128::try_from(s).ok(),
            }
        } else {
            Moment {
                value: self.mean[i],
                key: None,
            }
        }
    }

    /// The sample standard deviation (n - 1 denominator); `None` for a single trajectory.
    fn sd(&self, i: usize) -> Option<Moment> {
        let n = self.ensemble.trajectories;
        if n < 2 {
            return None;
        }
        if i >= self.exact {
            return Some(Moment {
                value: (self.m2[i] / (n as f64 - 1.0)).sqrt(),
                key: None,
            });
        }
        let (s, q) = (self.sum[i], self.sum_sq[i]);
        // n Q - S² is exact and non-negative (Cauchy-Schwarz) when it fits in 128 bits.
        let spread = (q.checked_mul(n as u128))
            .and_then(|nq| nq.checked_sub(s.unsigned_abs().checked_mul(s.unsigned_abs())?));
        Some(match spread {
            Some(spread) => Moment {
                value: (spread as f64 / ((n as f64) * (n as f64 - 1.0))).sqrt(),
                key: Some(spread),
            },
            // Beyond 128 bits: S/n and Q/n in floating point.
            None => {
                let (s, q, n) = (s as f64, q as f64, n as f64);
                Moment {
                    value: ((q - s * s / n).max(0.0) / (n - 1.0)).sqrt(),
                    key: None,
                }
            }
        })
    }
}

/// The text of moments with small integer keys, formatted once: an ensemble of counts repeats
/// the same sums at many times, and the shortest round-trip formatting of a square root is
/// the most expensive part of writing the statistics.
struct MomentText {
    text: Vec<u8>,
    /// For keys below `slots.len()`: (offset in `text`, length), length 0 while not formatted.
    slots: Vec<(u32, u8)>,
}

impl MomentText {
    const KEYS: usize = 1 << 16;

    fn new() -> Self {
        MomentText {
            text: Vec::new(),
            slots: Vec::new(),
        }
    }

    fn write(&mut self, m: Moment, f: &mut NumberFormat, out: &mut Vec<u8>) {
        let Some(key) = m.key.filter(|&k| k < Self::KEYS as u128) else {
            out.extend_from_slice(f.float(m.value));
            return;
        };
        if self.slots.is_empty() {
            self.slots = vec![(0, 0); Self::KEYS];
        }
        let (start, len) = &mut self.slots[key as usize];
        if *len == 0 {
            let text = f.float(m.value);
            *start = self.text.len() as u32;
            *len = text.len() as u8;
            self.text.extend_from_slice(text);
        }
        out.extend_from_slice(&self.text[*start as usize..*start as usize + *len as usize]);
    }
}

impl Ensemble {
    /// Mean and standard deviation of every species and observable at every time.
    pub fn stats(&self, compiled: &CompiledModel, params: &[f64]) -> Vec<StatRow> {
        let names: Vec<std::sync::Arc<str>> =
            value_names(compiled).into_iter().map(Into::into).collect();
        let mut moments = Moments::new(self, compiled, params);
        let mut rows = Vec::with_capacity(self.times.len() * moments.nv);
        for (k, &t) in self.times.iter().enumerate() {
            moments.at(k);
            for (i, name) in names.iter().enumerate() {
                rows.push(StatRow {
                    time: t,
                    name: std::sync::Arc::clone(name),
                    mean: moments.mean(i).value,
                    sd: moments.sd(i).map(|m| m.value),
                });
            }
        }
        rows
    }

    /// Writes the tidy statistics table `time,name,mean,sd` straight from the ensemble, the same
    /// bytes as [`write_stats`] of [`Ensemble::stats`] without building the rows. Names are
    /// identifiers, so no field needs quoting.
    pub fn write_stats_csv(
        &self,
        mut out: impl Write,
        compiled: &CompiledModel,
        params: &[f64],
    ) -> std::io::Result<()> {
        let names = value_names(compiled);
        let mut moments = Moments::new(self, compiled, params);
        let mut f = NumberFormat::new();
        let (mut means, mut sds) = (MomentText::new(), MomentText::new());
        // Written in chunks of 64 KiB: a larger buffer costs more in fresh pages than it saves in
        // system calls.
        const CHUNK: usize = 1 << 16;
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 1024);
        buf.extend_from_slice(b"time,name,mean,sd\n");
        for (k, &t) in self.times.iter().enumerate() {
            moments.at(k);
            for (i, name) in names.iter().enumerate() {
                buf.extend_from_slice(f.float(t));
                buf.push(b',');
                buf.extend_from_slice(name.as_bytes());
                buf.push(b',');
                means.write(moments.mean(i), &mut f, &mut buf);
                buf.push(b',');
                if let Some(sd) = moments.sd(i) {
                    sds.write(sd, &mut f, &mut buf);
                }
                buf.push(b'\n');
            }
            if buf.len() > CHUNK {
                out.write_all(&buf)?;
                buf.clear();
            }
        }
        out.write_all(&buf)?;
        out.flush()
    }
}

/// Writes the tidy statistics table `time,name,mean,sd` (sd empty for a single trajectory).
pub fn write_stats(out: impl Write, rows: &[StatRow]) -> csv::Result<()> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(["time", "name", "mean", "sd"])?;
    let mut f = NumberFormat::new();
    for r in rows {
        w.write_field(f.float(r.time))?;
        w.write_field(r.name.as_bytes())?;
        w.write_field(f.float(r.mean))?;
        match r.sd {
            Some(sd) => w.write_field(f.float(sd))?,
            None => w.write_field("")?,
        }
        w.write_record(None::<&[u8]>)?;
    }
    w.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::engine::{Ensemble, SimOptions, write_stats};

    fn one_species(counts: &[i64]) -> (Ensemble, crate::jit::CompiledModel) {
        let model = crate::Model::parse("m.rxn", "species X\nX -> 0 @ 1\n").unwrap();
        let compiled = crate::jit::CompiledModel::new(&model.ir).unwrap();
        let ensemble = Ensemble {
            times: vec![0.0],
            species: vec!["X".into()],
            trajectories: counts.len(),
            data: counts.to_vec(),
            events: 0,
        };
        (ensemble, compiled)
    }

    fn mean_and_sd(counts: &[i64]) -> (f64, Option<f64>) {
        let (ensemble, compiled) = one_species(counts);
        let row = &ensemble.stats(&compiled, &[])[0];
        (row.mean, row.sd)
    }

    /// Counts are summed exactly, so the statistics are rounded once and do not depend on the
    /// order of the trajectories; sums beyond 128 bits fall back to floating point.
    #[test]
    fn count_statistics_are_exact() {
        assert_eq!(
            mean_and_sd(&[1, 2, 3, 4]),
            (2.5, Some((20.0f64 / 12.0).sqrt()))
        );
        assert_eq!(mean_and_sd(&[4, 1, 3, 2]), mean_and_sd(&[1, 2, 3, 4]));
        assert_eq!(mean_and_sd(&[7, 7, 7]), (7.0, Some(0.0)));
        assert_eq!(mean_and_sd(&[5]), (5.0, None));
        // Welford's recurrence gives 5.199999999999999 here.
        assert_eq!(mean_and_sd(&[2, 4, 8, 2, 10]).0, 5.2);
        let big = i64::MAX - 1;
        let (mean, sd) = mean_and_sd(&[big, big, big, big, big - 1]);
        assert_eq!(mean, big as f64);
        assert!(sd.unwrap().is_finite());
    }

    /// The streaming statistics writer writes the same bytes as the rows-based one.
    #[test]
    fn streaming_stats_match_rows() {
        let text = "species A = 5, B\nparam k = 2\nobservable total = A + 2 * B\nA -> B @ k\nB -> 0 @ 1\n0 -> A @ 3\n";
        let model = crate::Model::parse("m.rxn", text).unwrap();
        let compiled = crate::jit::CompiledModel::new(&model.ir).unwrap();
        let params = model.ir.param_values();
        for trajectories in [1, 7] {
            let options = SimOptions {
                t_end: 10.0,
                every: 0.3,
                trajectories,
                seed: 3,
                ..SimOptions::default()
            };
            let ensemble = Ensemble::run(&compiled, &params, &options).unwrap();
            let (mut rows, mut streamed) = (Vec::new(), Vec::new());
            write_stats(&mut rows, &ensemble.stats(&compiled, &params)).unwrap();
            ensemble
                .write_stats_csv(&mut streamed, &compiled, &params)
                .unwrap();
            assert_eq!(
                String::from_utf8(rows).unwrap(),
                String::from_utf8(streamed).unwrap()
            );
        }
    }
}
