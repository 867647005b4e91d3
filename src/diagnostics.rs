//! Diagnostics: what is wrong, where, and how to fix it.
//!
//! Every problem found in a model file is a [`Diagnostic`] with a code (its class, listed in
//! `docs/language.md`), a message, labels under the offending text and a help line. The checker
//! collects all of them in one pass and returns them together as a [`ModelError`].

use crate::syntax::ast::Span;
use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource, SourceCode};
use std::fmt;
use std::sync::Arc;

/// A model file's name and text, shared by all diagnostics about it.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// The name shown in diagnostics (usually the path as given).
    pub name: String,
    /// The full text.
    pub text: Arc<str>,
}

impl SourceFile {
    /// A source file from a name and its text.
    pub fn new(name: impl Into<String>, text: impl Into<Arc<str>>) -> Self {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }
    /// 1-based line and column (in characters) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let before = &self.text[..offset.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        (line, col)
    }
}

/// One problem, with where it is and how to fix it.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// The class of problem, e.g. `rxn::undeclared`.
    pub code: &'static str,
    /// What is wrong, in one sentence.
    pub message: String,
    /// The primary place (first label) and any secondary places.
    pub labels: Vec<(Span, String)>,
    /// How to fix it.
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic of class `code` with a message and a primary label.
    pub fn new(
        code: &'static str,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Self {
        Diagnostic {
            code,
            message: message.into(),
            labels: vec![(span, label.into())],
            help: None,
        }
    }
    /// Adds a help line.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
    /// Adds a secondary label.
    pub fn with_label(mut self, span: Span, label: impl Into<String>) -> Self {
        self.labels.push((span, label.into()));
        self
    }
    /// Where the problem is (the primary label's span).
    pub fn span(&self) -> Span {
        self.labels.first().map(|l| l.0).unwrap_or_default()
    }
}

/// A diagnostic bound to its source, so that miette can render it.
struct Located<'a> {
    diagnostic: &'a Diagnostic,
    source: NamedSource<Arc<str>>,
}

impl fmt::Debug for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.diagnostic, f)
    }
}
impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.diagnostic.message)
    }
}
impl std::error::Error for Located<'_> {}
impl miette::Diagnostic for Located<'_> {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        Some(Box::new(self.diagnostic.code))
    }
    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.diagnostic
            .help
            .as_ref()
            .map(|h| Box::new(h) as Box<dyn fmt::Display>)
    }
    fn source_code(&self) -> Option<&dyn SourceCode> {
        Some(&self.source)
    }
    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.diagnostic.labels.iter().enumerate().map(
            |(i, (span, text))| {
                let text = (!text.is_empty()).then(|| text.clone());
                if i == 0 {
                    LabeledSpan::new_primary_with_span(text, *span)
                } else {
                    LabeledSpan::new_with_span(text, *span)
                }
            },
        )))
    }
}

/// How diagnostics are drawn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// Unicode boxes and colours, for a terminal.
    Fancy,
    /// Plain ASCII without colour, for logs, files and snapshot tests.
    Plain,
}

/// Everything wrong with a model file, found in one pass.
#[derive(Debug, Clone)]
pub struct ModelError {
    /// The file the diagnostics point into.
    pub source: SourceFile,
    /// The problems, in the order of the text.
    pub diagnostics: Vec<Diagnostic>,
}

impl ModelError {
    /// Renders every diagnostic, one after another, as miette draws them.
    pub fn render(&self, style: Style) -> String {
        let theme = match style {
            Style::Fancy => GraphicalTheme::unicode(),
            Style::Plain => GraphicalTheme::none(),
        };
        let handler = GraphicalReportHandler::new_themed(theme).with_width(100);
        let source = NamedSource::new(self.source.name.clone(), self.source.text.clone());
        let mut out = String::new();
        for d in &self.diagnostics {
            let located = Located {
                diagnostic: d,
                source: source.clone(),
            };
            if handler.render_report(&mut out, &located).is_err() {
                out.push_str(&d.message);
            }
            out.push('\n');
        }
        let n = self.diagnostics.len();
        if n > 1 {
            out.push_str(&format!("{n} problems found in {}\n", self.source.name));
        }
        out
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            let (line, col) = self.source.line_col(d.span().start);
            write!(
                f,
                "{}:{}:{}: {} [{}]",
                self.source.name, line, col, d.message, d.code
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for ModelError {}

/// Edit distance, for "did you mean" suggestions.
pub fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, &cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Edit distance counting a swap of two adjacent characters as one edit (optimal string
/// alignment), so that `mRAN` is one slip away from `mRNA`.
fn typo_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = v;
        }
    }
    d[a.len()][b.len()]
}

/// The closest of `candidates` to `name`, if it is close enough to be a plausible typo: a
/// difference of case only, or one slip (a wrong, missing, extra or swapped character) per three
/// characters of `name`. Names of one or two characters get suggestions for case only, since any
/// other short name would be "close".
pub fn closest<'a>(name: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = name.chars().count() / 3;
    let lower = name.to_lowercase();
    candidates
        .into_iter()
        .filter(|c| *c != name)
        .map(|c| (typo_distance(&lower, &c.to_lowercase()), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, c)| (*d, *c))
        .map(|(_, c)| c)
}
