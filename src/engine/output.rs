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
    /// Mean and standard deviation of every species and observable at every time.
    pub fn stats(&self, compiled: &CompiledModel, params: &[f64]) -> Vec<StatRow> {
        let names: Vec<std::sync::Arc<str>> =
            value_names(compiled).into_iter().map(Into::into).collect();
        let ns = self.species.len();
        let nv = names.len();
        let mut obs = vec![0.0; nv - ns];
        let mut rows = Vec::with_capacity(self.times.len() * nv);
        let n = self.trajectories as f64;
        let mut mean = vec![0.0; nv];
        let mut m2 = vec![0.0; nv];
        for (k, &t) in self.times.iter().enumerate() {
            // Welford's update: stable for large counts.
            mean.iter_mut().for_each(|v| *v = 0.0);
            m2.iter_mut().for_each(|v| *v = 0.0);
            for traj in 0..self.trajectories {
                let weight = 1.0 / (traj + 1) as f64;
                let x = self.state(traj, k);
                if !obs.is_empty() {
                    compiled.observables(x, params, t, &mut obs);
                }
                let values = x.iter().map(|&v| v as f64).chain(obs.iter().copied());
                for (i, v) in values.enumerate() {
                    let d = v - mean[i];
                    mean[i] += d * weight;
                    m2[i] += d * (v - mean[i]);
                }
            }
            for i in 0..nv {
                let sd = (self.trajectories > 1).then(|| (m2[i] / (n - 1.0)).sqrt());
                rows.push(StatRow {
                    time: t,
                    name: std::sync::Arc::clone(&names[i]),
                    mean: mean[i],
                    sd,
                });
            }
        }
        rows
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
