//! Data files for `rxnc run --fit`: CSV with a header row naming species or observables, an
//! optional `time` column, one row per observed cell or trajectory. Every problem is a diagnostic
//! with the line and column it is on, collected in one pass.

use crate::diagnostics::{Diagnostic, ModelError, SourceFile, closest};
use crate::ir::{self, Expr};
use crate::syntax::ast::Span;

/// Observations grouped by time.
#[derive(Debug, Clone, PartialEq)]
pub struct Data {
    /// The data file's name as given.
    pub name: String,
    /// Column names, without `time` (and without an ignored `trajectory` column).
    pub columns: Vec<String>,
    /// The expression each column observes (a species or an observable's definition).
    pub leaves: Vec<Expr>,
    /// Whether each column is a species count (integer-valued).
    pub counts: Vec<bool>,
    /// The distinct observation times, ascending; `None` when the file has no `time` column
    /// (the rows are samples of the stationary distribution).
    pub times: Option<Vec<f64>>,
    /// Samples, `[time][column]`: all values observed at that time (one group when stationary).
    pub samples: Vec<Vec<Vec<f64>>>,
    /// Number of data rows.
    pub rows: usize,
}

impl Data {
    /// Number of time groups (1 when stationary).
    pub fn groups(&self) -> usize {
        self.samples.len()
    }
    /// The smallest number of rows at any time.
    pub fn min_rows_per_time(&self) -> usize {
        self.samples
            .iter()
            .map(|g| g.first().map_or(0, Vec::len))
            .min()
            .unwrap_or(0)
    }
}

const MAX_DIAGNOSTICS: usize = 10;

/// The fields of one CSV line as (start, end, text): byte offsets in the line of the field as
/// written (for diagnostics) and its text without surrounding spaces and quotes. A field in double
/// quotes may hold commas, and `""` for a quote (RFC 4180; a quoted field does not span lines).
/// By hand rather than with the csv crate, which does not report where in the source a field is.
fn split_fields(line: &str) -> Vec<(usize, usize, String)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        // The separating comma: the first outside quotes (`""` toggles twice).
        let mut quoted = false;
        let to = line[from..]
            .char_indices()
            .find(|&(_, c)| {
                quoted ^= c == '"';
                c == ',' && !quoted
            })
            .map_or(line.len(), |(k, _)| from + k);
        let raw = &line[from..to];
        let lead = raw.len() - raw.trim_start().len();
        let written = raw.trim();
        let text = match written.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
            Some(inner) => inner.replace("\"\"", "\""),
            None => written.to_string(),
        };
        out.push((from + lead, from + lead + written.len(), text));
        if to >= line.len() {
            return out;
        }
        from = to + 1;
    }
}

/// Parses a data file's text against a model. `name` is shown in diagnostics.
pub fn parse(name: &str, text: &str, model: &ir::Model) -> Result<Data, ModelError> {
    let source = SourceFile::new(name, text);
    let fail = |diagnostics: Vec<Diagnostic>| ModelError {
        source: source.clone(),
        diagnostics,
    };
    // Lines with their byte offsets; blank lines are skipped, a trailing '\r' is dropped.
    let mut lines: Vec<(usize, &str)> = Vec::new();
    // A byte-order mark (spreadsheets write one) is not part of the first column's name.
    let bom = if text.starts_with('\u{feff}') {
        '\u{feff}'.len_utf8()
    } else {
        0
    };
    let mut offset = bom;
    for raw in text[bom..].split_inclusive('\n') {
        let line = raw.trim_end_matches('\n').trim_end_matches('\r');
        if !line.trim().is_empty() {
            lines.push((offset, line));
        }
        offset += raw.len();
    }
    let Some(&(header_at, header)) = lines.first() else {
        return Err(fail(vec![
            Diagnostic::new(
                "data::empty",
                "the data file is empty",
                Span::new(0, text.len()),
                "no header row",
            )
            .with_help(
                "write a header naming species or observables (and optionally `time`), then one row per observed cell, e.g.\ntime,M\n10,4\n10,7",
            ),
        ]));
    };
    let fields = |at: usize, line: &str| -> Vec<(Span, String)> {
        split_fields(line)
            .into_iter()
            .map(|(from, to, text)| (Span::new(at + from, at + to), text))
            .collect()
    };
    let mut diags = Vec::new();
    let header_fields = fields(header_at, header);
    let mut time_col = None;
    let mut ignored = Vec::new();
    let mut columns: Vec<(usize, String, Expr, bool)> = Vec::new();
    let known: Vec<&str> = model
        .species
        .iter()
        .map(|s| s.name.as_str())
        .chain(model.observables.iter().map(|o| o.name.as_str()))
        .chain(["time"])
        .collect();
    for (i, (span, field)) in header_fields.iter().enumerate() {
        let duplicate = header_fields[..i].iter().position(|(_, f)| f == field);
        if let Some(j) = duplicate {
            diags.push(
                Diagnostic::new(
                    "data::duplicate-column",
                    format!("column `{field}` appears twice in the header"),
                    *span,
                    "second time",
                )
                .with_label(header_fields[j].0, "first time")
                .with_help("keep one column per species or observable"),
            );
            continue;
        }
        if field == "time" {
            time_col = Some(i);
        } else if field == "trajectory" {
            ignored.push(i);
        } else if let Some(s) = model.species_index(field) {
            columns.push((i, field.to_string(), Expr::Species(s), true));
        } else if let Some(o) = model.observables.iter().find(|o| o.name == *field) {
            columns.push((i, field.to_string(), o.expr.clone(), false));
        } else if field.is_empty() {
            diags.push(
                Diagnostic::new(
                    "data::unknown-column",
                    format!("column {} of the header has no name", i + 1),
                    *span,
                    "empty name",
                )
                .with_help(
                    "name every column after a species or observable of the model, or `time`",
                ),
            );
        } else {
            let mut help = match closest(field, known.iter().copied()) {
                Some(c) => format!("did you mean `{c}`? "),
                None => String::new(),
            };
            help.push_str(&format!(
                "columns are named after species or observables of the model ({}), or `time`; a `trajectory` column is ignored",
                known[..known.len() - 1].join(", ")
            ));
            diags.push(
                Diagnostic::new(
                    "data::unknown-column",
                    format!("unknown column `{field}`: the model has no species or observable of that name"),
                    *span,
                    "not in the model",
                )
                .with_help(help),
            );
        }
    }
    if diags.is_empty() && columns.is_empty() {
        // A data file's `time` and `trajectory` columns are its own, whatever the model names.
        let clash = (model.species.iter().map(|s| s.name.as_str()))
            .chain(model.observables.iter().map(|o| o.name.as_str()))
            .find(|n| *n == "time" || *n == "trajectory");
        let help = match clash {
            Some(name) => format!(
                "a data column named `{name}` is the data's own `{name}` column, not the model's \
                 `{name}`: rename it in the model (and the column) to fit it"
            ),
            None => "add a column named after a species or observable of the model".to_string(),
        };
        diags.push(
            Diagnostic::new(
                "data::no-columns",
                "the header names no species or observable to fit",
                header_fields.first().map_or(Span::new(0, 0), |f| {
                    Span::new(f.0.start, header_at + header.len())
                }),
                "header",
            )
            .with_help(help),
        );
    }
    if !diags.is_empty() {
        return Err(fail(diags));
    }
    let data_lines = &lines[1..];
    if data_lines.len() < 2 {
        let end = text.trim_end().len();
        return Err(fail(vec![
            Diagnostic::new(
                "data::too-few-rows",
                format!(
                    "the data file has {} data row{}; at least two are needed",
                    data_lines.len(),
                    if data_lines.len() == 1 { "" } else { "s" }
                ),
                Span::new(header_at, end.max(header_at)),
                "all the data",
            )
            .with_help("add one row per observed cell (or trajectory) below the header"),
        ]));
    }
    let mut rows: Vec<(f64, Vec<f64>)> = Vec::with_capacity(data_lines.len());
    for &(at, line) in data_lines {
        if diags.len() >= MAX_DIAGNOSTICS {
            break;
        }
        let fs = fields(at, line);
        if fs.len() != header_fields.len() {
            diags.push(
                Diagnostic::new(
                    "data::row-length",
                    format!(
                        "this row has {} field{}, the header has {}",
                        fs.len(),
                        if fs.len() == 1 { "" } else { "s" },
                        header_fields.len()
                    ),
                    Span::new(at, at + line.len()),
                    "this row",
                )
                .with_label(Span::new(header_at, header_at + header.len()), "header")
                .with_help("give one value per column, separated by commas"),
            );
            continue;
        }
        let mut number = |i: usize, column: &str, count: bool| -> Option<f64> {
            let (span, field) = &fs[i];
            let problem = match field.parse::<f64>() {
                Err(_) if field.is_empty() => Some((
                    "data::not-a-number",
                    "a missing value".to_string(),
                    "fill in the value or remove the row".to_string(),
                )),
                Err(_) => Some((
                    "data::not-a-number",
                    format!("`{field}`, which is not a number"),
                    "write a plain number such as 3 or 2.5e3".to_string(),
                )),
                Ok(v) if !v.is_finite() => Some((
                    "data::not-finite",
                    format!("`{field}`, which is not a finite number"),
                    "remove the row, or replace the value by a measured number".to_string(),
                )),
                Ok(v) if count && v < 0.0 => Some((
                    "data::negative",
                    format!("the negative count {field}"),
                    format!("`{column}` is a species: its counts are whole numbers ≥ 0"),
                )),
                Ok(v) if count && (v.fract() != 0.0 || v >= 9_223_372_036_854_775_808.0) => Some((
                    "data::count",
                    format!("{field}, which is not a count (a whole number below 2^63)"),
                    format!(
                        "`{column}` is a species: its counts are whole numbers; for a measured \
                         quantity define an observable and name it in the header"
                    ),
                )),
                // Losses square values (variances): beyond this they overflow to infinity.
                Ok(v) if column != "time" && v.abs() > 1e150 => Some((
                    "data::too-large",
                    format!("{field}, too large to compare (its square overflows)"),
                    "measure the quantity in larger units (an observable can rescale a species)"
                        .to_string(),
                )),
                Ok(v) if column == "time" && v < 0.0 => Some((
                    "data::negative",
                    format!("the negative time {field}"),
                    "simulations start at time 0; observation times are ≥ 0".to_string(),
                )),
                Ok(v) => return Some(v),
            };
            let (code, what, help) = problem?;
            diags.push(
                Diagnostic::new(
                    code,
                    format!("column `{column}` has {what}"),
                    if span.start == span.end {
                        Span::new(span.start, span.start + 1.min(text.len() - span.start))
                    } else {
                        *span
                    },
                    "here",
                )
                .with_help(help),
            );
            None
        };
        let t = match time_col {
            Some(i) => number(i, "time", false),
            None => Some(0.0),
        };
        let values: Vec<Option<f64>> = columns
            .iter()
            .map(|(i, name, _, count)| number(*i, name, *count))
            .collect();
        if let (Some(t), Some(values)) = (t, values.into_iter().collect::<Option<Vec<f64>>>()) {
            rows.push((t, values));
        }
    }
    if !diags.is_empty() {
        return Err(fail(diags));
    }
    let n_rows = rows.len();
    let mut times: Vec<f64> = rows.iter().map(|r| r.0).collect();
    times.sort_by(f64::total_cmp);
    times.dedup();
    let mut samples = vec![vec![Vec::new(); columns.len()]; times.len()];
    for (t, values) in rows {
        let k = times.partition_point(|&x| x < t);
        for (m, v) in values.into_iter().enumerate() {
            samples[k][m].push(v);
        }
    }
    Ok(Data {
        name: name.to_string(),
        columns: columns.iter().map(|c| c.1.clone()).collect(),
        leaves: columns.iter().map(|c| c.2.clone()).collect(),
        counts: columns.iter().map(|c| c.3).collect(),
        times: time_col.map(|_| times),
        samples,
        rows: n_rows,
    })
}
