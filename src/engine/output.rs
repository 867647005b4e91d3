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

impl Ensemble {
    /// Welford means and sums of squared deviations of every species and observable at every
    /// time, indexed `[time][value]`. Trajectories are the outer loop so that the ensemble is read
    /// in memory order; each accumulator still sees the trajectories in order, so the result does
    /// not depend on the loop order.
    fn moments(&self, compiled: &CompiledModel, params: &[f64]) -> (Vec<f64>, Vec<f64>, usize) {
        let ns = self.species.len();
        let nv = ns + compiled.model.observables.len();
        let mut obs = vec![0.0; nv - ns];
        let mut mean = vec![0.0; self.times.len() * nv];
        let mut m2 = vec![0.0; self.times.len() * nv];
        for traj in 0..self.trajectories {
            let weight = 1.0 / (traj + 1) as f64;
            for (k, &t) in self.times.iter().enumerate() {
                let x = self.state(traj, k);
                if !obs.is_empty() {
                    compiled.observables(x, params, t, &mut obs);
                }
                let values = x.iter().map(|&v| v as f64).chain(obs.iter().copied());
                let (mean, m2) = (
                    &mut mean[k * nv..(k + 1) * nv],
                    &mut m2[k * nv..(k + 1) * nv],
                );
                for (i, v) in values.enumerate() {
                    let d = v - mean[i];
                    mean[i] += d * weight;
                    m2[i] += d * (v - mean[i]);
                }
            }
        }
        (mean, m2, nv)
    }

    fn sd(&self, m2: f64) -> Option<f64> {
        (self.trajectories > 1).then(|| (m2 / (self.trajectories as f64 - 1.0)).sqrt())
    }

    /// Mean and standard deviation of every species and observable at every time.
    pub fn stats(&self, compiled: &CompiledModel, params: &[f64]) -> Vec<StatRow> {
        let names: Vec<std::sync::Arc<str>> =
            value_names(compiled).into_iter().map(Into::into).collect();
        let (mean, m2, nv) = self.moments(compiled, params);
        let mut rows = Vec::with_capacity(self.times.len() * nv);
        for (k, &t) in self.times.iter().enumerate() {
            for i in 0..nv {
                rows.push(StatRow {
                    time: t,
                    name: std::sync::Arc::clone(&names[i]),
                    mean: mean[k * nv + i],
                    sd: self.sd(m2[k * nv + i]),
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
        let (mean, m2, nv) = self.moments(compiled, params);
        let mut f = NumberFormat::new();
        let mut buf: Vec<u8> = Vec::with_capacity(self.times.len() * nv * 32 + 16);
        buf.extend_from_slice(b"time,name,mean,sd\n");
        for (k, &t) in self.times.iter().enumerate() {
            for i in 0..nv {
                buf.extend_from_slice(f.float(t));
                buf.push(b',');
                buf.extend_from_slice(names[i].as_bytes());
                buf.push(b',');
                buf.extend_from_slice(f.float(mean[k * nv + i]));
                buf.push(b',');
                if let Some(sd) = self.sd(m2[k * nv + i]) {
                    buf.extend_from_slice(f.float(sd));
                }
                buf.push(b'\n');
            }
            if buf.len() > 1 << 20 {
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
