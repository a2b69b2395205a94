//! The self-test's result: one row per compared output, printed as a table.

use std::fmt;

/// The error metric of one compared output.
///
/// For reference values `r` and candidate values `c`:
/// - `max_abs` = max |c - r|;
/// - `max_rel` = max |c - r| / max(|r|, rms(r)): relative to each element, except that
///   elements much smaller than the output's RMS are measured against the RMS (a sum that
///   cancels to almost zero must not count as a huge relative error);
/// - a non-finite value must be matched by the same non-finite value (inf of the same sign,
///   or NaN), else the row fails with an infinite error.
///
/// A row passes when `max_rel <= tol`.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// "fp16" or "fp32": the candidate's activation precision for this run.
    pub precision: &'static str,
    /// The op (a `Backend` method name) and the case, e.g. "conv2d_fwd 7x7/2 3->64 64x64".
    pub op: String,
    pub max_abs: f64,
    pub max_rel: f64,
    pub tol: f64,
    pub pass: bool,
    /// Why a row failed beyond its numbers (length mismatch, an error), else empty.
    pub note: String,
}

impl Row {
    /// The backend name of the op this row tests (the first word of `op`).
    pub fn op_name(&self) -> &str {
        self.op.split_whitespace().next().unwrap_or("")
    }
}

/// All rows of one or more self-test runs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// Free-form lines printed above the table (device, driver, memory).
    pub header: Vec<String>,
    pub rows: Vec<Row>,
}

impl Report {
    /// True when there is at least one row and every row passed.
    pub fn passed(&self) -> bool {
        !self.rows.is_empty() && self.rows.iter().all(|r| r.pass)
    }

    pub fn failures(&self) -> impl Iterator<Item = &Row> {
        self.rows.iter().filter(|r| !r.pass)
    }

    /// Appends another run's rows and header lines.
    pub fn extend(&mut self, other: Report) {
        self.header.extend(other.header);
        self.rows.extend(other.rows);
    }

    /// Prints the table to stdout.
    pub fn print(&self) {
        println!("{self}");
    }
}

fn num(v: f64) -> String {
    if v == 0.0 {
        "0".to_string()
    } else if v.is_finite() {
        format!("{v:.2e}")
    } else {
        format!("{v}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for line in &self.header {
            writeln!(f, "{line}")?;
        }
        let width = self.rows.iter().map(|r| r.op.len()).max().unwrap_or(2).max(2);
        writeln!(f, "| prec | {:width$} | max abs err | max rel err | tolerance | result |", "op")?;
        writeln!(f, "|------|{}|-------------|-------------|-----------|--------|", "-".repeat(width + 2))?;
        for r in &self.rows {
            let verdict = if r.pass { "pass" } else { "FAIL" };
            write!(
                f,
                "| {:4} | {:width$} | {:>11} | {:>11} | {:>9} | {:6} |",
                r.precision,
                r.op,
                num(r.max_abs),
                num(r.max_rel),
                num(r.tol),
                verdict
            )?;
            if !r.note.is_empty() {
                write!(f, " {}", r.note)?;
            }
            writeln!(f)?;
        }
        let failed = self.failures().count();
        if self.rows.is_empty() {
            write!(f, "self-test: no rows (nothing was compared)")
        } else if failed == 0 {
            write!(f, "self-test: all {} comparisons passed", self.rows.len())
        } else {
            write!(f, "self-test: {failed} of {} comparisons FAILED", self.rows.len())
        }
    }
}
