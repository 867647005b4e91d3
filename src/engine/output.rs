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
    let mut w = TrajectoryWriter::new(out, compiled);
    w.write(0, ensemble, compiled, params)?;
    Ok(w.flush()?)
}

/// Writes the trajectories CSV batch by batch (see [`Ensemble::run_in_batches`]): the header with
/// the first batch, then the rows of each batch as it comes.
///
/// Rows are formatted on the ensemble's threads, trajectories side by side, and written in
/// order: formatting, not simulating, is most of the time of a run that writes its trajectories
/// (two thirds of it on one thread for `examples/telegraph.rxn`). Names are identifiers and
/// numbers need no quoting, so rows are plain bytes; the time column, the same for every
/// trajectory, is formatted once.
pub struct TrajectoryWriter<W: Write> {
    out: W,
    /// The header, until it is written with the first rows (so that a run that fails before
    /// its first batch writes nothing).
    header: Option<Vec<u8>>,
    /// The texts of the sampling times, one after another, and where each ends.
    time_text: TimeText,
    observables: usize,
    /// Per observable, the rows written where it is infinite or NaN.
    non_finite: Vec<NonFiniteRows>,
}

/// The rows of the trajectories CSV in which one observable is infinite or NaN.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NonFiniteRows {
    /// How many.
    pub rows: usize,
    /// The first: its trajectory and time.
    pub first: Option<(usize, f64)>,
}

impl NonFiniteRows {
    fn merge(&mut self, other: &NonFiniteRows) {
        self.rows += other.rows;
        self.first = self.first.or(other.first);
    }
}

/// The sampling times as text, formatted once (on grids of up to [`CACHED_TIMES`] times; longer
/// ones are written by batches of one trajectory, and formatted as they are written).
#[derive(Default)]
struct TimeText {
    text: Vec<u8>,
    ends: Vec<usize>,
    /// [`TimeText::fingerprint`] of the times, and their number.
    grid: Option<u64>,
    len: usize,
}

impl TimeText {
    /// A hash of the times (FNV-1a over their bits).
    fn fingerprint(times: &[f64]) -> Option<u64> {
        let fold = |h: u64, bits: u64| (h ^ bits).wrapping_mul(0x0000_0100_0000_01b3);
        Some(
            times
                .iter()
                .fold(fold(0xcbf2_9ce4_8422_2325, times.len() as u64), |h, t| {
                    fold(h, t.to_bits())
                }),
        )
    }

    fn new(times: &[f64]) -> Self {
        if times.len() > CACHED_TIMES {
            return TimeText {
                grid: Self::fingerprint(times),
                len: times.len(),
                ..TimeText::default()
            };
        }
        let mut f = NumberFormat::new();
        let mut text = Vec::with_capacity(times.len() * 4);
        let ends = times
            .iter()
            .map(|&t| {
                text.extend_from_slice(f.float(t));
                text.len()
            })
            .collect();
        TimeText {
            text,
            ends,
            grid: Self::fingerprint(times),
            len: times.len(),
        }
    }

    /// The text of time `k` (`t`), from the cache or `f`.
    fn get<'f>(&'f self, k: usize, t: f64, f: &'f mut NumberFormat) -> &'f [u8] {
        if self.ends.is_empty() {
            return f.float(t);
        }
        let start = if k == 0 { 0 } else { self.ends[k - 1] };
        &self.text[start..self.ends[k]]
    }
}

/// Text is formatted in pieces of about this many bytes (a trajectory on a long grid in several),
/// and written a group of pieces of about [`TEXT_GROUP_BYTES`] at a time.
const TEXT_PIECE_BYTES: usize = 1 << 20;
/// The longest grid whose times are formatted once and kept.
const CACHED_TIMES: usize = 1 << 20;
const TEXT_GROUP_BYTES: usize = 8 << 20;
/// Groups of at least this much text are formatted on several threads.
const PARALLEL_TEXT_BYTES: usize = 256 << 10;

impl<W: Write> TrajectoryWriter<W> {
    /// A writer whose output starts with the header `trajectory,time,<species...>,
    /// <observables...>` (written with the first batch, or by [`TrajectoryWriter::flush`]).
    pub fn new(out: W, compiled: &CompiledModel) -> Self {
        let mut header = b"trajectory,time".to_vec();
        for name in value_names(compiled) {
            header.push(b',');
            header.extend_from_slice(name.as_bytes());
        }
        header.push(b'\n');
        TrajectoryWriter {
            out,
            header: Some(header),
            time_text: TimeText::default(),
            observables: compiled.model.observables.len(),
            non_finite: vec![NonFiniteRows::default(); compiled.model.observables.len()],
        }
    }

    /// Per observable (in declaration order), the rows written so far that hold an infinite or
    /// NaN value of it.
    pub fn non_finite_observables(&self) -> &[NonFiniteRows] {
        &self.non_finite
    }

    fn write_header(&mut self) -> std::io::Result<()> {
        if let Some(header) = self.header.take() {
            self.out.write_all(&header)?;
        }
        Ok(())
    }

    /// Writes the rows of `batch`, whose first trajectory is trajectory `first` of the ensemble.
    pub fn write(
        &mut self,
        first: usize,
        batch: &Ensemble,
        compiled: &CompiledModel,
        params: &[f64],
    ) -> std::io::Result<()> {
        self.write_header()?;
        let nt = batch.times.len();
        // Every batch of an ensemble has the same times; formatted again only for another grid.
        if self.time_text.grid != TimeText::fingerprint(&batch.times)
            || self.time_text.len != batch.times.len()
        {
            self.time_text = TimeText::new(&batch.times);
        }
        // Work in pieces: rows k0..k1 of one trajectory, about TEXT_PIECE_BYTES of text each.
        let row_bytes = (batch.species.len() + self.observables + 2) * 8;
        let rows_per_piece = (TEXT_PIECE_BYTES / row_bytes).clamp(1, nt.max(1));
        let pieces_per_trajectory = nt.div_ceil(rows_per_piece).max(1);
        let pieces = batch.trajectories * pieces_per_trajectory;
        let piece_bytes = rows_per_piece * row_bytes;
        let group = (TEXT_GROUP_BYTES / piece_bytes).max(1);
        let (time_text, observables) = (&self.time_text, self.observables);
        let piece = |p: usize| {
            let (n, part) = (p / pieces_per_trajectory, p % pieces_per_trajectory);
            let k0 = part * rows_per_piece;
            let k1 = (k0 + rows_per_piece).min(nt);
            let place = Rows {
                index: first + n,
                batch,
                n,
                times: k0..k1,
            };
            place.text(time_text, observables, compiled, params)
        };
        for start in (0..pieces).step_by(group) {
            let end = (start + group).min(pieces);
            // Starting a thread costs more than formatting a few hundred kilobytes.
            let threads = if (end - start) * piece_bytes >= PARALLEL_TEXT_BYTES {
                super::thread_budget()
            } else {
                super::ThreadBudget::exactly(1)
            };
            for (text, non_finite) in super::map_range_on(threads, start..end, piece, |_| false) {
                self.out.write_all(&text)?;
                for (total, seen) in self.non_finite.iter_mut().zip(&non_finite) {
                    total.merge(seen);
                }
            }
        }
        Ok(())
    }

    /// The destination, with everything written to it.
    pub fn into_inner(mut self) -> std::io::Result<W> {
        self.flush()?;
        Ok(self.out)
    }

    /// Writes out what is buffered (the header, if no batch came).
    pub fn flush(&mut self) -> std::io::Result<()> {
        self.write_header()?;
        self.out.flush()
    }
}

/// Rows of the trajectories CSV: trajectory `n` of `batch`, numbered `index`, at time indices
/// `times`.
struct Rows<'b> {
    index: usize,
    batch: &'b Ensemble,
    n: usize,
    times: std::ops::Range<usize>,
}

impl Rows<'_> {
    fn text(
        &self,
        time_text: &TimeText,
        observables: usize,
        compiled: &CompiledModel,
        params: &[f64],
    ) -> (Vec<u8>, Vec<NonFiniteRows>) {
        let (mut f, mut for_time) = (NumberFormat::new(), NumberFormat::new());
        let mut obs = vec![0.0; observables];
        let mut non_finite = vec![NonFiniteRows::default(); observables];
        let mut text = Vec::new();
        let mut label = f.int(self.index as i64).to_vec();
        label.push(b',');
        for k in self.times.clone() {
            let x = self.batch.state(self.n, k);
            text.extend_from_slice(&label);
            text.extend_from_slice(time_text.get(k, self.batch.times[k], &mut for_time));
            for &v in x {
                text.push(b',');
                text.extend_from_slice(f.int(v));
            }
            if !obs.is_empty() {
                let t = self.batch.times[k];
                compiled.observables(x, params, t, &mut obs);
                for (&v, seen) in obs.iter().zip(&mut non_finite) {
                    text.push(b',');
                    text.extend_from_slice(f.float(v));
                    if !v.is_finite() {
                        seen.merge(&NonFiniteRows {
                            rows: 1,
                            first: Some((self.index, t)),
                        });
                    }
                }
            }
            text.push(b'\n');
        }
        (text, non_finite)
    }
}

/// Means and standard deviations of every species and observable at every sampling time,
/// accumulated over trajectories added in order, a batch at a time (so that an ensemble need not
/// be kept in memory to summarise it): one set of accumulators per time and value.
///
/// Copy numbers are integers, so their sums and sums of squares are kept exactly (in 128 and 256
/// bits, which no count or number of trajectories can overflow): the mean S/n and the variance
/// (nQ - S²)/(n(n - 1)) are then computed from exact integers (rounded once below 2^53, a few
/// times beyond), do not depend on the order of the trajectories, and repeat across times,
/// which lets the writer reuse their text. Observables use Welford's
/// recurrence in trajectory order; where an observable is infinite or NaN in some trajectory,
/// its mean is the sum's (inf, -inf, or NaN) and its sd NaN.
///
/// ```
/// use rxnc::engine::{Ensemble, EnsembleMoments, SimOptions};
///
/// let model = rxnc::Model::parse("bd.rxn", "species X\n0 -> X @ 10\nX -> 0 @ 1\n").unwrap();
/// let compiled = rxnc::jit::CompiledModel::new(&model.ir).unwrap();
/// let options = SimOptions { t_end: 5.0, every: 1.0, trajectories: 1000, ..SimOptions::default() };
/// let mut moments = EnsembleMoments::new(&compiled, &options.grid());
/// Ensemble::run_in_batches(&compiled, &[], &options, 100, &|| {}, |_, batch| {
///     moments.add(batch, &compiled, &[]);
///     Ok::<(), ()>(())
/// })
/// .unwrap();
/// let at_5 = &moments.rows()[5];
/// // X(5) is Poisson with mean 10 (1 - e^-5) = 9.93, so its sd is about 3.2.
/// assert!((at_5.mean - 9.93).abs() < 0.5 && (at_5.sd.unwrap() - 3.15).abs() < 0.5);
/// ```
#[derive(Debug, Clone)]
pub struct EnsembleMoments {
    times: Vec<f64>,
    names: Vec<std::sync::Arc<str>>,
    /// Species, and species and observables, per time.
    ns: usize,
    nv: usize,
    /// Trajectories added so far.
    n: usize,
    /// Exact sums and sums of squares of counts, `[time][species]`, in 64 bits (a table of
    /// them is a large part of a short run's memory traffic)...
    counts: Vec<NarrowSums>,
    /// ...until a sum at a time would overflow: from then on that time's sums are kept here.
    wide: std::collections::BTreeMap<usize, Box<[CountSums]>>,
    /// Welford means and sums of squared deviations of observables, `[time][observable]`.
    mean: Vec<f64>,
    m2: Vec<f64>,
}

/// The sum S and the sum of squares Q of one species' counts at one time.
#[derive(Debug, Clone, Copy, Default)]
struct CountSums {
    sum: i128,
    squares: U256,
}

impl CountSums {
    fn add(&mut self, v: i64) {
        self.sum += v as i128;
        self.squares
            .add((v.unsigned_abs() as u128) * (v.unsigned_abs() as u128));
    }
}

/// [`CountSums`] while they fit in 64 bits.
#[derive(Debug, Clone, Copy, Default)]
struct NarrowSums {
    sum: i64,
    squares: u64,
}

impl NarrowSums {
    /// Adds `v`, or leaves the sums as they were if they would overflow.
    fn add(&mut self, v: i64) -> Option<()> {
        let sum = self.sum.checked_add(v)?;
        let squares = (v.unsigned_abs())
            .checked_mul(v.unsigned_abs())
            .and_then(|q| self.squares.checked_add(q))?;
        *self = NarrowSums { sum, squares };
        Some(())
    }

    fn wide(self) -> CountSums {
        CountSums {
            sum: self.sum as i128,
            squares: U256 {
                hi: 0,
                lo: self.squares as u128,
            },
        }
    }
}

/// An unsigned 256-bit integer, for sums of squares of counts (each below 2^126) over up to 2^64
/// trajectories, and n Q - S².
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct U256 {
    hi: u128,
    lo: u128,
}

impl U256 {
    fn add(&mut self, x: u128) {
        let (lo, carry) = self.lo.overflowing_add(x);
        self.lo = lo;
        self.hi += carry as u128;
    }

    /// `self × n`, for products below 2^256.
    fn times(self, n: u64) -> U256 {
        let n = n as u128;
        let low = (self.lo as u64 as u128) * n;
        let high = (self.lo >> 64) * n;
        let (lo, carry) = low.overflowing_add(high << 64);
        U256 {
            hi: self.hi * n + (high >> 64) + carry as u128,
            lo,
        }
    }

    fn square(a: u128) -> U256 {
        let (a0, a1) = (a as u64 as u128, a >> 64);
        // a² = a1² 2^128 + 2 a0 a1 2^64 + a0².
        let middle = a0 * a1;
        let (lo, carry) = (a0 * a0).overflowing_add(middle << 65);
        U256 {
            hi: a1 * a1 + (middle >> 63) + carry as u128,
            lo,
        }
    }

    fn checked_sub(self, other: U256) -> Option<U256> {
        let (lo, borrow) = self.lo.overflowing_sub(other.lo);
        let hi = self.hi.checked_sub(other.hi)?.checked_sub(borrow as u128)?;
        Some(U256 { hi, lo })
    }

    /// The nearest f64 (ties to even), as `as` rounds: from the top 64 significant bits with
    /// a sticky bit for those below, so that the value is rounded once.
    fn to_f64(self) -> f64 {
        if self.hi == 0 {
            return self.lo as f64;
        }
        // Bits below the top 64: at least 65, as the value has more than 128 bits.
        let shift = 192 - self.hi.leading_zeros();
        let (top, below) = if shift >= 128 {
            let s = shift - 128;
            (
                (self.hi >> s) as u64,
                self.hi & ((1 << s) - 1) != 0 || self.lo != 0,
            )
        } else {
            let top = (self.hi << (128 - shift)) | (self.lo >> shift);
            (top as u64, self.lo & ((1 << shift) - 1) != 0)
        };
        (top | below as u64) as f64 * 2f64.powi(shift as i32)
    }
}

/// Batches of at least this many cells (trajectories × times × values) are summarised on
/// several threads; starting one costs 0.05–2 ms on the development machine.
const PARALLEL_CELLS: usize = 1 << 20;

/// The accumulators of a run of consecutive sampling times, from time index `first`.
struct TimeSlab<'a> {
    first: usize,
    len: usize,
    counts: &'a mut [NarrowSums],
    mean: &'a mut [f64],
    m2: &'a mut [f64],
    wide: std::collections::BTreeMap<usize, Box<[CountSums]>>,
}

impl TimeSlab<'_> {
    /// Adds the trajectories of `batch` at this slab's times.
    fn add(
        &mut self,
        batch: &Ensemble,
        times: &[f64],
        weights: &[f64],
        (ns, no): (usize, usize),
        compiled: &CompiledModel,
        params: &[f64],
    ) {
        let mut values = vec![0.0; no];
        // Time by time, so that one time's accumulators stay in cache over the trajectories.
        for j in 0..self.len {
            let k = self.first + j;
            let narrow = &mut self.counts[j * ns..(j + 1) * ns];
            let mean = &mut self.mean[j * no..(j + 1) * no];
            let m2 = &mut self.m2[j * no..(j + 1) * no];
            let mut wide = self.wide.get_mut(&k);
            for traj in 0..batch.trajectories {
                let x = batch.state(traj, k);
                let mut i = 0;
                if wide.is_none() {
                    while i < ns && narrow[i].add(x[i]).is_some() {
                        i += 1;
                    }
                    if i < ns {
                        // Species before i have this trajectory's count, the others not yet.
                        let cells = narrow.iter().map(|c| c.wide()).collect();
                        wide = Some(self.wide.entry(k).or_insert(cells));
                    }
                }
                if let Some(cells) = wide.as_deref_mut() {
                    for (c, &v) in cells[i..].iter_mut().zip(&x[i..]) {
                        c.add(v);
                    }
                }
                if no > 0 {
                    compiled.observables(x, params, times[k], &mut values);
                    let weight = weights[traj];
                    for i in 0..no {
                        let v = values[i];
                        if v.is_finite() && mean[i].is_finite() {
                            let d = v - mean[i];
                            mean[i] += d * weight;
                            m2[i] += d * (v - mean[i]);
                        } else {
                            // Welford would turn inf into NaN (inf - inf): the mean is the sum's
                            // (inf, -inf, or NaN for both or a NaN value), the sd undefined.
                            mean[i] = non_finite_mean(mean[i], v);
                            m2[i] = f64::NAN;
                        }
                    }
                }
            }
        }
    }
}

/// The mean of values whose mean so far is `mean` and next is `v`, one of them not finite.
fn non_finite_mean(mean: f64, v: f64) -> f64 {
    match (mean.is_finite(), v.is_finite()) {
        (true, _) => v,
        (false, true) => mean,
        (false, false) if mean == v => mean,
        (false, false) => f64::NAN,
    }
}

/// A moment as the writer sees it: the value, and for exact moments the integer that determines
/// it (so equal keys print the same text).
#[derive(Clone, Copy)]
struct Moment {
    value: f64,
    key: Option<u128>,
}

impl EnsembleMoments {
    /// No trajectories yet, at the sampling times `times` (those of the ensembles to be added).
    pub fn new(compiled: &CompiledModel, times: &[f64]) -> Self {
        let ns = compiled.model.species.len();
        let nv = ns + compiled.model.observables.len();
        let nt = times.len();
        EnsembleMoments {
            times: times.to_vec(),
            names: value_names(compiled).into_iter().map(Into::into).collect(),
            ns,
            nv,
            n: 0,
            counts: vec![NarrowSums::default(); nt * ns],
            wide: std::collections::BTreeMap::new(),
            mean: vec![0.0; nt * (nv - ns)],
            m2: vec![0.0; nt * (nv - ns)],
        }
    }

    /// The moments of a whole ensemble.
    pub fn of(ensemble: &Ensemble, compiled: &CompiledModel, params: &[f64]) -> Self {
        let mut moments = Self::new(compiled, &ensemble.times);
        moments.add(ensemble, compiled, params);
        moments
    }

    /// Adds the trajectories of `batch` (sampled at this accumulator's times), after those
    /// added before.
    pub fn add(&mut self, batch: &Ensemble, compiled: &CompiledModel, params: &[f64]) {
        assert_eq!(
            batch.times, self.times,
            "an ensemble sampled at other times"
        );
        let (ns, no, nt) = (self.ns, self.nv - self.ns, self.times.len());
        let weights: Vec<f64> = (0..batch.trajectories)
            .map(|traj| 1.0 / (self.n + traj + 1) as f64)
            .collect();
        // Times are independent: large batches are summarised on the ensemble's threads, a run
        // of consecutive times each (every accumulator still adds the trajectories in order).
        let parallel = batch.trajectories * nt * self.nv >= PARALLEL_CELLS;
        let parts = if parallel { nt.min(64) } else { 1 };
        let per = nt.div_ceil(parts.max(1)).max(1);
        let mut wide = std::mem::take(&mut self.wide);
        let (mut counts, mut mean, mut m2) = (
            self.counts.as_mut_slice(),
            self.mean.as_mut_slice(),
            self.m2.as_mut_slice(),
        );
        let mut slabs = Vec::with_capacity(parts);
        for first in (0..nt).step_by(per) {
            let times = per.min(nt - first);
            let (c, rest) = std::mem::take(&mut counts).split_at_mut(times * ns);
            counts = rest;
            let (m, rest) = std::mem::take(&mut mean).split_at_mut(times * no);
            mean = rest;
            let (q, rest) = std::mem::take(&mut m2).split_at_mut(times * no);
            m2 = rest;
            let later = wide.split_off(&(first + times));
            slabs.push(std::sync::Mutex::new(TimeSlab {
                first,
                len: times,
                counts: c,
                mean: m,
                m2: q,
                wide: std::mem::replace(&mut wide, later),
            }));
        }
        let (times, weights) = (&self.times, &weights);
        let summarise = |s: usize| {
            let mut slab = slabs[s].lock().unwrap_or_else(|e| e.into_inner());
            slab.add(batch, times, weights, (ns, no), compiled, params);
        };
        let threads = if parallel {
            super::thread_budget()
        } else {
            super::ThreadBudget::exactly(1)
        };
        super::map_range_on(threads, 0..slabs.len(), summarise, |_| false);
        for slab in slabs {
            let slab = slab.into_inner().unwrap_or_else(|e| e.into_inner());
            self.wide.extend(slab.wide);
        }
        self.n += batch.trajectories;
    }

    /// The number of trajectories added.
    pub fn trajectories(&self) -> usize {
        self.n
    }

    /// The sampling times.
    pub fn times(&self) -> &[f64] {
        &self.times
    }

    /// The mean of value `i` (species, then observables) at time index `k`.
    pub fn mean(&self, k: usize, i: usize) -> f64 {
        self.mean_moment(k, i).value
    }

    /// The sample standard deviation (n - 1 denominator) of value `i` at time index `k`; `None`
    /// below two trajectories.
    pub fn sd(&self, k: usize, i: usize) -> Option<f64> {
        self.sd_moment(k, i).map(|m| m.value)
    }

    fn count_sums(&self, k: usize, i: usize) -> CountSums {
        match self.wide.get(&k) {
            Some(cells) => cells[i],
            None => self.counts[k * self.ns + i].wide(),
        }
    }

    fn mean_moment(&self, k: usize, i: usize) -> Moment {
        if i < self.ns {
            let s = self.count_sums(k, i).sum;
            Moment {
                value: s as f64 / self.n as f64,
                key: u128::try_from(s).ok(),
            }
        } else {
            Moment {
                value: self.mean[k * (self.nv - self.ns) + i - self.ns],
                key: None,
            }
        }
    }

    fn sd_moment(&self, k: usize, i: usize) -> Option<Moment> {
        let n = self.n;
        if n < 2 {
            return None;
        }
        let scale = (n as f64) * (n as f64 - 1.0);
        if i >= self.ns {
            let m2 = self.m2[k * (self.nv - self.ns) + i - self.ns];
            return Some(Moment {
                value: (m2 / (n as f64 - 1.0)).sqrt(),
                key: None,
            });
        }
        let CountSums { sum, squares } = self.count_sums(k, i);
        // n Q - S², exact and non-negative (Cauchy-Schwarz).
        let spread = squares
            .times(n as u64)
            .checked_sub(U256::square(sum.unsigned_abs()))
            .unwrap_or_default();
        Some(if spread.hi == 0 {
            Moment {
                value: (spread.lo as f64 / scale).sqrt(),
                key: Some(spread.lo),
            }
        } else {
            Moment {
                value: (spread.to_f64() / scale).sqrt(),
                key: None,
            }
        })
    }

    /// The observables whose mean is not finite at some sampling time (a value that is infinite
    /// or NaN in some trajectory): per observable, its name, the first such time and how many
    /// such times there are.
    pub fn non_finite_observables(&self) -> Vec<(&str, f64, usize)> {
        let no = self.nv - self.ns;
        (0..no)
            .filter_map(|o| {
                let mut at = (0..self.times.len()).filter(|&k| !self.mean[k * no + o].is_finite());
                let first = at.next()?;
                Some((&*self.names[self.ns + o], self.times[first], 1 + at.count()))
            })
            .collect()
    }

    /// One row per time and value, time-major.
    pub fn rows(&self) -> Vec<StatRow> {
        let mut rows = Vec::with_capacity(self.times.len() * self.nv);
        for (k, &t) in self.times.iter().enumerate() {
            for (i, name) in self.names.iter().enumerate() {
                rows.push(StatRow {
                    time: t,
                    name: std::sync::Arc::clone(name),
                    mean: self.mean(k, i),
                    sd: self.sd(k, i),
                });
            }
        }
        rows
    }

    /// Writes the tidy statistics table `time,name,mean,sd`, the same bytes as [`write_stats`]
    /// of [`EnsembleMoments::rows`] without building the rows. Names are identifiers, so no field
    /// needs quoting.
    pub fn write_csv(&self, mut out: impl Write) -> std::io::Result<()> {
        let mut f = NumberFormat::new();
        let (mut means, mut sds) = (MomentText::new(), MomentText::new());
        // Written in chunks of 64 KiB: a larger buffer costs more in fresh pages than it saves in
        // system calls.
        const CHUNK: usize = 1 << 16;
        let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 1024);
        buf.extend_from_slice(b"time,name,mean,sd\n");
        for (k, &t) in self.times.iter().enumerate() {
            for (i, name) in self.names.iter().enumerate() {
                buf.extend_from_slice(f.float(t));
                buf.push(b',');
                buf.extend_from_slice(name.as_bytes());
                buf.push(b',');
                means.write(self.mean_moment(k, i), &mut f, &mut buf);
                buf.push(b',');
                if let Some(sd) = self.sd_moment(k, i) {
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
        EnsembleMoments::of(self, compiled, params).rows()
    }

    /// Writes the tidy statistics table `time,name,mean,sd` straight from the ensemble, the same
    /// bytes as [`write_stats`] of [`Ensemble::stats`].
    pub fn write_stats_csv(
        &self,
        out: impl Write,
        compiled: &CompiledModel,
        params: &[f64],
    ) -> std::io::Result<()> {
        EnsembleMoments::of(self, compiled, params).write_csv(out)
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

    /// A -> B -> 0 fed by 0 -> A, with the observable `definition`; compiled, and its parameters.
    fn conversion(definition: &str) -> (crate::jit::CompiledModel, Vec<f64>) {
        let text = format!(
            "species A = 5, B\nparam k = 2\nobservable {definition}\nA -> B @ k\nB -> 0 @ 1\n0 -> A @ 3\n"
        );
        let model = crate::Model::parse("m.rxn", &text).unwrap();
        let compiled = crate::jit::CompiledModel::new(&model.ir).unwrap();
        (compiled, model.ir.param_values())
    }

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
    /// order of the trajectories, whatever the counts.
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
        // Sums of squares beyond 128 bits stay exact: n Q - S² = 4 here, the variance 4/20.
        let big = i64::MAX - 1;
        let (mean, sd) = mean_and_sd(&[big, big, big, big, big - 1]);
        assert_eq!(mean, big as f64);
        assert_eq!(sd, Some(0.2f64.sqrt()));
        let (mean, sd) = mean_and_sd(&[i64::MIN, i64::MAX, i64::MIN, i64::MAX]);
        assert_eq!(mean, -0.5);
        assert_eq!(sd, Some(((u64::MAX as f64 + 1.0).powi(2) / 3.0).sqrt()));
    }

    /// 256-bit values convert to the nearest f64, rounded once (ties to even).
    #[test]
    fn wide_integers_round_once() {
        use super::U256;
        let two = |e: i32| 2f64.powi(e);
        // 2^200 + 2^147 is half-way between 2^200 and its next f64, 2^200 + 2^148: to even.
        let half = U256 {
            hi: (1 << 72) | (1 << 19),
            lo: 0,
        };
        assert_eq!(half.to_f64(), two(200));
        // One more, and it is nearer the next: rounding hi first would give 2^200.
        let above = U256 {
            hi: (1 << 72) | (1 << 19),
            lo: 1,
        };
        assert_eq!(above.to_f64(), two(200) + two(148));
        // Exact values, and the largest.
        assert_eq!(U256 { hi: 1, lo: 0 }.to_f64(), two(128));
        assert_eq!(
            U256 {
                hi: 3,
                lo: 1 << 127
            }
            .to_f64(),
            two(129) + two(128) + two(127)
        );
        assert_eq!(
            U256 {
                hi: u128::MAX,
                lo: u128::MAX
            }
            .to_f64(),
            two(256)
        );
        assert_eq!(U256 { hi: 0, lo: 12345 }.to_f64(), 12345.0);
        // Products and squares, within and beyond 128 bits.
        assert_eq!(
            U256::square(u64::MAX as u128),
            U256 {
                hi: 0,
                lo: (u64::MAX as u128).pow(2)
            }
        );
        let a = (1u128 << 100) + 7;
        assert_eq!(
            U256::square(a),
            U256 {
                hi: 1 << 72,
                lo: (14 << 100) + 49
            }
        );
        assert_eq!(U256 { hi: 0, lo: 12 }.times(5), U256 { hi: 0, lo: 60 });
        assert_eq!(
            U256 {
                hi: 0,
                lo: u128::MAX
            }
            .times(2),
            U256 {
                hi: 1,
                lo: u128::MAX - 1
            }
        );
        assert_eq!(
            U256 {
                hi: 3,
                lo: 1 << 127
            }
            .times(4),
            U256 { hi: 14, lo: 0 }
        );
    }

    /// Sums that outgrow 64 bits part-way (at one time, for one species, in the middle of a
    /// batch) continue exactly in wider integers, whatever the batches.
    #[test]
    fn sums_outgrowing_64_bits_stay_exact() {
        use crate::engine::EnsembleMoments;
        let model = crate::Model::parse("m.rxn", "species X, Y\nX -> Y @ 1\n").unwrap();
        let compiled = crate::jit::CompiledModel::new(&model.ir).unwrap();
        // Y's squares (9e18 each) pass 2^64 at the third trajectory, at the second time only.
        let pairs: Vec<[i64; 2]> = (0..7).map(|n| [n, 3_000_000_000 + n]).collect();
        let data: Vec<i64> = pairs.iter().flat_map(|&[x, y]| [x, 1, x, y]).collect();
        let batch = |from: usize, to: usize| Ensemble {
            times: vec![0.0, 1.0],
            species: vec!["X".into(), "Y".into()],
            trajectories: to - from,
            data: data[from * 4..to * 4].to_vec(),
            events: 0,
        };
        // The variance from exact sums, rounded once.
        let n = pairs.len() as u128;
        let (s, q) = pairs.iter().fold((0u128, 0u128), |(s, q), &[_, y]| {
            (s + y as u128, q + (y as u128) * (y as u128))
        });
        let sd = (((n * q - s * s) as f64) / (7.0 * 6.0)).sqrt();
        for size in 1..=7 {
            let mut moments = EnsembleMoments::new(&compiled, &[0.0, 1.0]);
            for from in (0..7).step_by(size) {
                moments.add(&batch(from, (from + size).min(7)), &compiled, &[]);
            }
            assert_eq!(moments.mean(1, 1), (s as f64) / 7.0, "batches of {size}");
            assert_eq!(moments.sd(1, 1), Some(sd), "batches of {size}");
            assert_eq!(moments.mean(1, 0), 3.0);
            assert_eq!(moments.sd(1, 0), Some((28.0f64 / 6.0).sqrt()));
            assert_eq!((moments.mean(0, 1), moments.sd(0, 1)), (1.0, Some(0.0)));
        }
    }

    /// An ensemble written and summarised batch by batch gives the same bytes as the whole
    /// ensemble at once, whatever the batch size (trajectory indices, streams, moment order).
    #[test]
    fn batches_write_what_the_whole_ensemble_writes() {
        use crate::engine::{EnsembleMoments, TrajectoryWriter, write_trajectories};
        let (compiled, params) = conversion("total = A + 2 * B");
        let options = SimOptions {
            t_end: 4.0,
            every: 0.5,
            trajectories: 7,
            seed: 11,
            ..SimOptions::default()
        };
        let whole = Ensemble::run(&compiled, &params, &options).unwrap();
        let (mut rows, mut stats) = (Vec::new(), Vec::new());
        write_trajectories(&mut rows, &whole, &compiled, &params).unwrap();
        whole
            .write_stats_csv(&mut stats, &compiled, &params)
            .unwrap();
        for batch in [1, 2, 3, 7, 100] {
            let mut writer = TrajectoryWriter::new(Vec::new(), &compiled);
            let mut moments = EnsembleMoments::new(&compiled, &options.grid());
            let events = Ensemble::run_in_batches(
                &compiled,
                &params,
                &options,
                batch,
                &|| {},
                |first, b| {
                    writer.write(first, b, &compiled, &params)?;
                    moments.add(b, &compiled, &params);
                    Ok::<(), std::io::Error>(())
                },
            )
            .unwrap();
            assert_eq!(events, whole.events, "batches of {batch}");
            writer.flush().unwrap();
            let (mut batched_stats, batched_rows) = (Vec::new(), writer.into_inner().unwrap());
            moments.write_csv(&mut batched_stats).unwrap();
            assert_eq!(batched_rows, rows, "batches of {batch}");
            assert_eq!(batched_stats, stats, "batches of {batch}");
        }
    }

    /// Batches large enough to be summarised on several threads give the same bytes as
    /// trajectories added one at a time on this thread.
    #[test]
    fn parallel_summaries_match_serial_ones() {
        use crate::engine::EnsembleMoments;
        let (compiled, params) = conversion("total = A + 2 * B");
        let options = SimOptions {
            t_end: 20.0,
            every: 0.01,
            trajectories: 400,
            seed: 5,
            threads: Some(2),
            ..SimOptions::default()
        };
        // 400 × 2001 × 3 values: above the parallel threshold; one trajectory is below it.
        const { assert!(400 * 2001 * 3 >= super::PARALLEL_CELLS && 2001 * 3 < super::PARALLEL_CELLS) };
        crate::engine::set_worker_threads(3);
        let whole = Ensemble::run(&compiled, &params, &options).unwrap();
        let mut parallel = Vec::new();
        whole
            .write_stats_csv(&mut parallel, &compiled, &params)
            .unwrap();
        let mut serial = EnsembleMoments::new(&compiled, &options.grid());
        Ensemble::run_in_batches(&compiled, &params, &options, 1, &|| {}, |_, b| {
            serial.add(b, &compiled, &params);
            Ok::<(), ()>(())
        })
        .unwrap();
        let mut one_by_one = Vec::new();
        serial.write_csv(&mut one_by_one).unwrap();
        assert!(parallel == one_by_one);
    }

    /// The trajectories CSV reads back, with a CSV reader, as the ensemble's exact values: one
    /// row per trajectory and time, in order, observables included, numbers that round-trip.
    #[test]
    fn trajectories_read_back_exactly() {
        let (compiled, params) = conversion("ratio = A / (B + 3)");
        let options = SimOptions {
            t_end: 3.0,
            every: 0.1,
            trajectories: 400,
            seed: 2,
            ..SimOptions::default()
        };
        // 400 trajectories × 31 rows × 5 fields: formatted on several threads.
        const { assert!(400 * 31 * 5 * 8 >= super::PARALLEL_TEXT_BYTES) };
        crate::engine::set_worker_threads(3);
        let ensemble = Ensemble::run(&compiled, &params, &options).unwrap();
        let mut bytes = Vec::new();
        crate::engine::write_trajectories(&mut bytes, &ensemble, &compiled, &params).unwrap();
        let mut reader = csv::Reader::from_reader(bytes.as_slice());
        assert_eq!(
            reader.headers().unwrap(),
            vec!["trajectory", "time", "A", "B", "ratio"]
        );
        let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
        let nt = ensemble.times.len();
        assert_eq!(rows.len(), 400 * nt);
        let mut obs = [0.0];
        for (r, row) in rows.iter().enumerate() {
            let (n, k) = (r / nt, r % nt);
            let x = ensemble.state(n, k);
            compiled.observables(x, &params, ensemble.times[k], &mut obs);
            assert_eq!(row[0].parse::<usize>().unwrap(), n);
            assert_eq!(row[1].parse::<f64>().unwrap(), ensemble.times[k]);
            assert_eq!(row[2].parse::<i64>().unwrap(), x[0]);
            assert_eq!(row[3].parse::<i64>().unwrap(), x[1]);
            assert_eq!(row[4].parse::<f64>().unwrap(), obs[0]);
        }
    }

    /// The streaming statistics writer writes the same bytes as the rows-based one.
    #[test]
    fn streaming_stats_match_rows() {
        let (compiled, params) = conversion("total = A + 2 * B");
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
