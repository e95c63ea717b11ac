//! The result table: one row per figure, with its baseline, the ratio and the target.

use std::fmt::Write;

/// Whether a figure meets its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Met {
    Yes,
    No,
    /// No target, or no baseline to compare with.
    NotApplicable,
}

impl Met {
    pub fn from_bool(met: bool) -> Met {
        if met {
            Met::Yes
        } else {
            Met::No
        }
    }

    fn label(self) -> &'static str {
        match self {
            Met::Yes => "yes",
            Met::No => "NO",
            Met::NotApplicable => "-",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Row {
    pub id: String,
    pub metric: String,
    pub sluice: String,
    pub baseline: String,
    pub ratio: String,
    pub target: String,
    pub met: Met,
}

impl Row {
    pub fn new(id: &str, metric: impl Into<String>) -> Row {
        Row {
            id: id.to_string(),
            metric: metric.into(),
            sluice: "-".into(),
            baseline: "-".into(),
            ratio: "-".into(),
            target: "-".into(),
            met: Met::NotApplicable,
        }
    }

    pub fn sluice(mut self, value: impl Into<String>) -> Row {
        self.sluice = value.into();
        self
    }

    pub fn baseline(mut self, value: impl Into<String>) -> Row {
        self.baseline = value.into();
        self
    }

    pub fn ratio(mut self, ratio: Option<f64>) -> Row {
        self.ratio = ratio.map_or("n/a".into(), |r| format!("{r:.2}x"));
        self
    }

    pub fn ratio_text(mut self, text: impl Into<String>) -> Row {
        self.ratio = text.into();
        self
    }

    /// Baseline, ratio and an "at least `minimum`×" target in one go; `measured` is `None` when
    /// the baseline could not run (`why_not` says why), and the target is then not applicable.
    pub fn against_minimum(self, measured: Result<(String, f64), &str>, minimum: f64) -> Row {
        let target = format!(">= {minimum:.2}x");
        match measured {
            Ok((baseline, ratio)) => self
                .baseline(baseline)
                .ratio(Some(ratio))
                .target(target, Met::from_bool(ratio >= minimum)),
            Err(why_not) => self
                .baseline(why_not)
                .ratio(None)
                .target(target, Met::NotApplicable),
        }
    }

    pub fn target(mut self, target: impl Into<String>, met: Met) -> Row {
        self.target = target.into();
        self.met = met;
        self
    }
}

/// The table as Markdown, columns padded for reading in a terminal, rows in the order of their
/// ids (the phases measure them in another order).
pub fn table(rows: &[Row]) -> String {
    let header = [
        "#", "metric", "Sluice", "baseline", "ratio", "target", "met",
    ];
    let mut rows: Vec<&Row> = rows.iter().collect();
    rows.sort_by(|a, b| a.id.cmp(&b.id));
    let cells: Vec<[String; 7]> = rows
        .iter()
        .map(|r| {
            [
                r.id.clone(),
                r.metric.clone(),
                r.sluice.clone(),
                r.baseline.clone(),
                r.ratio.clone(),
                r.target.clone(),
                r.met.label().to_string(),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row.iter()) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: &[String]| {
        let mut out = String::from("|");
        for (cell, width) in cells.iter().zip(&widths) {
            let pad = width - cell.chars().count();
            let _ = write!(out, " {cell}{} |", " ".repeat(pad));
        }
        out.push('\n');
        out
    };
    let mut out = line(&header.map(String::from));
    out += &line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>());
    for row in &cells {
        out += &line(row);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_aligned_markdown() {
        let rows = vec![
            Row::new("1a", "backup")
                .sluice("100 MB/s")
                .baseline("50 MB/s")
                .ratio(Some(2.0))
                .target(">= 1.5x", Met::Yes),
            Row::new("6", "standalone").sluice("1,000 cmd/s"),
        ];
        let text = table(&rows);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4);
        assert!(lines[2].contains("2.00x") && lines[2].contains("yes"));
        let widths: Vec<usize> = lines.iter().map(|l| l.chars().count()).collect();
        assert!(widths.iter().all(|w| *w == widths[0]), "{text}");
    }
}
