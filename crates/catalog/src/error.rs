//! Typed errors: every variant names the file, and the row and/or column where it can.

use std::path::Path;

/// Rows are counted from 1 over *data* rows (the CSV header, FITS header cards and
/// comment lines are not rows), so "row 17" is the 17th galaxy of the file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file (or directory) could not be read or written.
    #[error("{file}: {source}")]
    Io {
        /// The file or directory.
        file: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A column named in the spec (or needed by a helper) is not in the file.
    #[error("{file}: no column '{column}' (available: {available})")]
    MissingColumn {
        /// The catalogue file.
        file: String,
        /// The column that was looked for.
        column: String,
        /// The file's columns, comma-separated.
        available: String,
    },
    /// One cell is invalid: unparseable, NaN / negative / zero uncertainty, …
    #[error("{file}: row {row}, column '{column}': {message}")]
    Value {
        /// The catalogue file.
        file: String,
        /// 1-based data row.
        row: usize,
        /// The column of the bad cell.
        column: String,
        /// What is wrong with the value.
        message: String,
    },
    /// A whole row is invalid (wrong field count, empty id, …).
    #[error("{file}: row {row}: {message}")]
    Row {
        /// The catalogue file.
        file: String,
        /// 1-based data row.
        row: usize,
        /// What is wrong with the row.
        message: String,
    },
    /// The same id appears twice.
    #[error("{file}: column '{column}': duplicate id '{id}' (rows {first_row} and {row})")]
    DuplicateId {
        /// The catalogue file.
        file: String,
        /// The id column.
        column: String,
        /// The repeated id.
        id: String,
        /// 1-based data row of its first occurrence.
        first_row: usize,
        /// 1-based data row of the repeat.
        row: usize,
    },
    /// The catalogue has a header but no data rows.
    #[error("{file}: catalogue is empty (no data rows)")]
    Empty {
        /// The catalogue file.
        file: String,
    },
    /// The file is not a valid CSV / Parquet / FITS table, or a results part does not
    /// match the schema.
    #[error("{file}: {message}")]
    Format {
        /// The file.
        file: String,
        /// What is malformed.
        message: String,
    },
    /// The catalogue spec (manifest section) is inconsistent.
    #[error("catalogue spec: {0}")]
    Spec(String),
}

/// `Result` with [`CatalogError`] as the default error.
pub type Result<T, E = CatalogError> = std::result::Result<T, E>;

impl CatalogError {
    pub(crate) fn io(path: impl AsRef<Path>, source: std::io::Error) -> Self {
        CatalogError::Io {
            file: display(path),
            source,
        }
    }

    pub(crate) fn format(path: impl AsRef<Path>, message: impl std::fmt::Display) -> Self {
        CatalogError::Format {
            file: display(path),
            message: message.to_string(),
        }
    }

    pub(crate) fn missing_column(
        path: impl AsRef<Path>,
        column: &str,
        available: &[String],
    ) -> Self {
        // Long catalogues (COSMOS2020 has ~75 columns) get a truncated list.
        const SHOWN: usize = 60;
        let mut list: Vec<String> = available
            .iter()
            .take(SHOWN)
            .map(|c| format!("'{c}'"))
            .collect();
        if available.len() > SHOWN {
            list.push(format!("… {} more", available.len() - SHOWN));
        }
        CatalogError::MissingColumn {
            file: display(path),
            column: column.to_string(),
            available: list.join(", "),
        }
    }
}

pub(crate) fn display(path: impl AsRef<Path>) -> String {
    path.as_ref().display().to_string()
}

impl From<CatalogError> for popcosmos_api::Error {
    fn from(e: CatalogError) -> Self {
        match e {
            CatalogError::Io { file, source } => popcosmos_api::Error::Io { path: file, source },
            CatalogError::Format { file, message } => {
                popcosmos_api::Error::Format { file, message }
            }
            other => popcosmos_api::Error::Invalid(other.to_string()),
        }
    }
}
