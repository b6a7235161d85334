//! Catalogues held in memory (the Python package's DataFrames, astropy Tables and numpy
//! arrays): named f64 columns streamed through the same row checks as files.

use std::path::Path;

use crate::error::{CatalogError, Result};
use crate::source::RowSource;

/// Named f64 columns of equal length and optional ids (rows are numbered from 1 without
/// them). Read with [`crate::CatalogueReader::from_memory`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MemoryTable {
    /// Galaxy ids, one per row (`None`: rows are numbered from 1).
    pub ids: Option<Vec<String>>,
    /// `(name, values)` pairs, every column as long as the table.
    pub columns: Vec<(String, Vec<f64>)>,
}

impl MemoryTable {
    /// Rows (of the ids, else of the first column).
    pub fn len(&self) -> usize {
        match (&self.ids, self.columns.first()) {
            (Some(ids), _) => ids.len(),
            (None, Some((_, c))) => c.len(),
            (None, None) => 0,
        }
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A source over `wanted` (errors name `name` as the file, like a file source's).
    pub(crate) fn into_source(
        mut self,
        name: &Path,
        id_column: &str,
        wanted: &[String],
    ) -> Result<Box<dyn RowSource>> {
        let n = self.len();
        let available: Vec<String> = self
            .ids
            .iter()
            .map(|_| id_column.to_string())
            .chain(self.columns.iter().map(|(c, _)| c.clone()))
            .collect();
        for (c, values) in &self.columns {
            if values.len() != n {
                return Err(CatalogError::format(
                    name,
                    format!("column '{c}' has {} rows, the table has {n}", values.len()),
                ));
            }
        }
        let indices = wanted
            .iter()
            .map(|w| {
                self.columns
                    .iter()
                    .position(|(c, _)| c == w)
                    .ok_or_else(|| CatalogError::missing_column(name, w, &available))
            })
            .collect::<Result<Vec<usize>>>()?;
        // Moved, not copied, unless wanted again later (a truth column that is also a band's).
        let picked = indices
            .iter()
            .enumerate()
            .map(|(k, &i)| {
                if indices[k + 1..].contains(&i) {
                    self.columns[i].1.clone()
                } else {
                    std::mem::take(&mut self.columns[i].1)
                }
            })
            .collect();
        Ok(Box::new(MemorySource {
            ids: self.ids,
            columns: picked,
            row: 0,
            n,
        }))
    }
}

struct MemorySource {
    ids: Option<Vec<String>>,
    columns: Vec<Vec<f64>>,
    row: usize,
    n: usize,
}

impl RowSource for MemorySource {
    fn next_row(&mut self, id: &mut String, values: &mut [f64]) -> Result<bool> {
        if self.row >= self.n {
            return Ok(false);
        }
        let r = self.row;
        self.row += 1;
        id.clear();
        match &self.ids {
            Some(ids) => id.push_str(&ids[r]),
            None => id.push_str(&self.row.to_string()),
        }
        for (v, c) in values.iter_mut().zip(&self.columns) {
            *v = c[r];
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{CatalogueReader, CatalogueSpec};

    fn spec() -> CatalogueSpec {
        serde_json::from_str(
            r#"{"path": "DataFrame", "units": "nmgy", "flux_pattern": "f_{band}",
                "error_pattern": "e_{band}", "truth_columns": ["f_g"]}"#,
        )
        .unwrap()
    }

    #[test]
    fn memory_rows_pass_the_file_checks() {
        let table = MemoryTable {
            ids: Some(vec!["a".into(), "b".into()]),
            columns: vec![
                ("f_g".into(), vec![1.0, 2.0]),
                ("e_g".into(), vec![0.1, f64::NAN]),
            ],
        };
        let err = CatalogueReader::from_memory(&spec(), &["g".into()], table)
            .and_then(|mut r| r.read_all())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("DataFrame: row 2, column 'e_g'") && err.contains("NaN"),
            "{err}"
        );
    }

    #[test]
    fn memory_table_reads_like_a_file() {
        let table = MemoryTable {
            ids: None,
            columns: vec![
                ("e_g".into(), vec![0.5, 0.25]),
                ("f_g".into(), vec![3.0, 4.0]),
            ],
        };
        let c = CatalogueReader::from_memory(&spec(), &["g".into()], table)
            .and_then(|mut r| r.read_all())
            .unwrap();
        assert_eq!(c.ids, ["1", "2"]);
        assert_eq!(c.flux_nmgy, [3.0, 4.0]);
        assert_eq!(c.flux_err_nmgy, [0.5, 0.25]);
        assert_eq!(c.truth["f_g"], [3.0, 4.0]);
    }

    #[test]
    fn missing_memory_column_is_named() {
        let table = MemoryTable {
            ids: None,
            columns: vec![("f_g".into(), vec![3.0])],
        };
        let err = CatalogueReader::from_memory(&spec(), &["g".into()], table)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("no column 'e_g'"), "{err}");
    }
}
