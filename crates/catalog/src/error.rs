//! Typed errors: every variant names the file, and the row and/or column where it can.

use std::path::Path;

/// Rows are counted from 1 over *data* rows (the CSV header, FITS header cards and
/// comment lines are not rows), so "row 17" is the 17th galaxy of the file.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The file (or directory) could not be read or written.
    #[error("{file}: {source}")]
    Io {
        file: String,
        #[source]
        source: std::io::Error,
    },
    /// A column named in the spec (or needed by a helper) is not in the file.
    #[error("{file}: no column '{column}' (available: {available})")]
    MissingColumn {
        file: String,
        column: String,
        available: String,
    },
    /// One cell is invalid: unparseable, NaN / negative / zero uncertainty, …
    #[error("{file}: row {row}, column '{column}': {message}")]
    Value {
        file: String,
        row: usize,
        column: String,
        message: String,
    },
    /// A whole row is invalid (wrong field count, empty id, …).
    #[error("{file}: row {row}: {message}")]
    Row {
        file: String,
        row: usize,
        message: String,
    },
    /// The same id appears twice.
    #[error("{file}: column '{column}': duplicate id '{id}' (rows {first_row} and {row})")]
    DuplicateId {
        file: String,
        column: String,
        id: String,
        first_row: usize,
        row: usize,
    },
    /// The catalogue has a header but no data rows.
    #[error("{file}: catalogue is empty (no data rows)")]
    Empty { file: String },
    /// The file is not a valid CSV / Parquet / FITS table, or a results part does not
    /// match the schema.
    #[error("{file}: {message}")]
    Format { file: String, message: String },
    /// The catalogue spec (manifest section) is inconsistent.
    #[error("catalogue spec: {0}")]
    Spec(String),
}

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
