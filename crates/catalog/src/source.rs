//! Row-streaming sources over CSV, Parquet and FITS tables: each yields, per row, an id
//! and the f64 values of a fixed list of columns (missing / null / empty → NaN).

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};

use crate::error::{CatalogError, Result, display};
use crate::fits::{BinTableReader, FitsCell};
use crate::spec::CatalogueFormat;

/// Parquet rows decoded at a time (bounds memory independently of the chunk size).
const PARQUET_BATCH_ROWS: usize = 4096;

pub(crate) trait RowSource {
    /// Read the next row into `id` and `values` (one per requested column); false at the end.
    fn next_row(&mut self, id: &mut String, values: &mut [f64]) -> Result<bool>;
}

/// Parse a numeric cell; empty / NaN / NA / null → NaN; `None` if unparseable.
pub(crate) fn parse_number(cell: &str) -> Option<f64> {
    let t = cell.trim();
    if t.is_empty() {
        return Some(f64::NAN);
    }
    if let Ok(v) = t.parse::<f64>() {
        return Some(v);
    }
    match t.to_ascii_lowercase().as_str() {
        "na" | "n/a" | "null" | "none" | "--" | "nan" | "-nan" | "+nan" => Some(f64::NAN),
        // Fortran-style exponents (1.0D-3).
        _ => t.replace(['D', 'd'], "E").parse::<f64>().ok(),
    }
}

fn unparseable(file: &str, row: usize, column: &str, cell: &str) -> CatalogError {
    CatalogError::Value {
        file: file.to_string(),
        row,
        column: column.to_string(),
        message: format!("cannot parse '{cell}' as a number"),
    }
}

fn find_columns(path: &Path, available: &[String], wanted: &[&str]) -> Result<Vec<usize>> {
    wanted
        .iter()
        .map(|w| {
            available
                .iter()
                .position(|a| a == w)
                .ok_or_else(|| CatalogError::missing_column(path, w, available))
        })
        .collect()
}

/// Open a source; `id_column = None` numbers the rows from 1 instead.
pub(crate) fn open_source(
    path: &Path,
    format: CatalogueFormat,
    id_column: Option<&str>,
    columns: &[String],
) -> Result<Box<dyn RowSource>> {
    Ok(match format {
        CatalogueFormat::Csv => Box::new(CsvSource::open(path, id_column, columns)?),
        CatalogueFormat::Parquet => Box::new(ParquetSource::open(path, id_column, columns)?),
        CatalogueFormat::Fits => Box::new(FitsSource::open(path, id_column, columns)?),
    })
}

// ---------------------------------------------------------------- CSV

struct CsvSource {
    file: String,
    reader: csv::Reader<File>,
    record: csv::StringRecord,
    id_index: Option<usize>,
    indices: Vec<usize>,
    names: Vec<String>,
    row: usize,
}

impl CsvSource {
    fn open(path: &Path, id_column: Option<&str>, columns: &[String]) -> Result<Self> {
        let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
        let tab = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
        let mut reader = csv::ReaderBuilder::new()
            .delimiter(if tab { b'\t' } else { b',' })
            .comment(Some(b'#'))
            .trim(csv::Trim::All)
            .from_reader(file);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| CatalogError::format(path, format!("cannot read the CSV header: {e}")))?
            .iter()
            .map(str::to_string)
            .collect();
        if headers.is_empty() || headers.iter().all(|h| h.is_empty()) {
            return Err(CatalogError::Empty {
                file: display(path),
            });
        }
        let id_index = id_column
            .map(|c| find_columns(path, &headers, &[c]).map(|v| v[0]))
            .transpose()?;
        let wanted: Vec<&str> = columns.iter().map(String::as_str).collect();
        let indices = find_columns(path, &headers, &wanted)?;
        Ok(Self {
            file: display(path),
            reader,
            record: csv::StringRecord::new(),
            id_index,
            indices,
            names: columns.to_vec(),
            row: 0,
        })
    }
}

impl RowSource for CsvSource {
    fn next_row(&mut self, id: &mut String, values: &mut [f64]) -> Result<bool> {
        let more = self
            .reader
            .read_record(&mut self.record)
            .map_err(|e| CatalogError::Row {
                file: self.file.clone(),
                row: self.row + 1,
                message: match e.kind() {
                    csv::ErrorKind::UnequalLengths {
                        expected_len, len, ..
                    } => {
                        format!("has {len} fields but the header has {expected_len}")
                    }
                    _ => e.to_string(),
                },
            })?;
        if !more {
            return Ok(false);
        }
        self.row += 1;
        id.clear();
        match self.id_index {
            Some(i) => id.push_str(&self.record[i]),
            None => id.push_str(&self.row.to_string()),
        }
        for ((v, &i), name) in values.iter_mut().zip(&self.indices).zip(&self.names) {
            let cell = &self.record[i];
            *v = parse_number(cell).ok_or_else(|| unparseable(&self.file, self.row, name, cell))?;
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------- Parquet

enum NumericColumn {
    Float(Float64Array),
    Text(StringArray),
}

struct ParquetSource {
    path: PathBuf,
    file: String,
    reader: ParquetRecordBatchReader,
    id_column: Option<String>,
    names: Vec<String>,
    ids: Option<StringArray>,
    numeric: Vec<NumericColumn>,
    pos: usize,
    len: usize,
    row: usize,
}

fn is_text(dt: &DataType) -> bool {
    matches!(
        dt,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
    )
}

impl ParquetSource {
    fn open(path: &Path, id_column: Option<&str>, columns: &[String]) -> Result<Self> {
        let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
        let builder = ParquetRecordBatchReaderBuilder::try_new(file)
            .map_err(|e| CatalogError::format(path, format!("not a readable Parquet file: {e}")))?;
        let available: Vec<String> = builder
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut wanted: Vec<&str> = columns.iter().map(String::as_str).collect();
        if let Some(id) = id_column {
            wanted.push(id);
        }
        let mut indices = find_columns(path, &available, &wanted)?;
        indices.sort_unstable();
        indices.dedup();
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        let reader = builder
            .with_projection(mask)
            .with_batch_size(PARQUET_BATCH_ROWS)
            .build()
            .map_err(|e| CatalogError::format(path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            file: display(path),
            reader,
            id_column: id_column.map(str::to_string),
            names: columns.to_vec(),
            ids: None,
            numeric: Vec::new(),
            pos: 0,
            len: 0,
            row: 0,
        })
    }

    fn load_batch(&mut self) -> Result<bool> {
        let Some(batch) = self.reader.next() else {
            return Ok(false);
        };
        let batch = batch.map_err(|e| CatalogError::format(&self.path, e))?;
        let get = |name: &str| -> Result<&ArrayRef> {
            batch
                .column_by_name(name)
                .ok_or_else(|| CatalogError::missing_column(&self.path, name, &[]))
        };
        let as_utf8 = |name: &str, a: &ArrayRef| -> Result<StringArray> {
            let c = cast(a, &DataType::Utf8)
                .map_err(|e| CatalogError::format(&self.path, format!("column '{name}': {e}")))?;
            Ok(c.as_string::<i32>().clone())
        };
        self.ids = match &self.id_column {
            Some(name) => Some(as_utf8(name, get(name)?)?),
            None => None,
        };
        self.numeric = self
            .names
            .iter()
            .map(|name| {
                let a = get(name)?;
                if is_text(a.data_type()) {
                    Ok(NumericColumn::Text(as_utf8(name, a)?))
                } else {
                    let c = cast(a, &DataType::Float64).map_err(|e| {
                        CatalogError::format(
                            &self.path,
                            format!("column '{name}' is not numeric: {e}"),
                        )
                    })?;
                    Ok(NumericColumn::Float(c.as_primitive().clone()))
                }
            })
            .collect::<Result<_>>()?;
        self.pos = 0;
        self.len = batch.num_rows();
        Ok(true)
    }
}

impl RowSource for ParquetSource {
    fn next_row(&mut self, id: &mut String, values: &mut [f64]) -> Result<bool> {
        while self.pos >= self.len {
            if !self.load_batch()? {
                return Ok(false);
            }
        }
        let i = self.pos;
        self.pos += 1;
        self.row += 1;
        id.clear();
        match &self.ids {
            Some(ids) if ids.is_valid(i) => id.push_str(ids.value(i)),
            Some(_) => {}
            None => id.push_str(&self.row.to_string()),
        }
        for ((v, col), name) in values.iter_mut().zip(&self.numeric).zip(&self.names) {
            *v = match col {
                NumericColumn::Float(a) if a.is_valid(i) => a.value(i),
                NumericColumn::Text(a) if a.is_valid(i) => {
                    let cell = a.value(i);
                    parse_number(cell)
                        .ok_or_else(|| unparseable(&self.file, self.row, name, cell))?
                }
                _ => f64::NAN,
            };
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------- FITS

struct FitsSource {
    file: String,
    table: BinTableReader,
    id_index: Option<usize>,
    indices: Vec<usize>,
    row: usize,
}

impl FitsSource {
    fn open(path: &Path, id_column: Option<&str>, columns: &[String]) -> Result<Self> {
        let table = BinTableReader::open(path)?;
        let available = table.column_names();
        let id_index = id_column
            .map(|c| find_columns(path, &available, &[c]).map(|v| v[0]))
            .transpose()?;
        let wanted: Vec<&str> = columns.iter().map(String::as_str).collect();
        let indices = find_columns(path, &available, &wanted)?;
        for &i in indices.iter().chain(id_index.iter()) {
            table.check_readable(i)?;
        }
        Ok(Self {
            file: display(path),
            table,
            id_index,
            indices,
            row: 0,
        })
    }
}

impl RowSource for FitsSource {
    fn next_row(&mut self, id: &mut String, values: &mut [f64]) -> Result<bool> {
        if !self.table.next_row()? {
            return Ok(false);
        }
        self.row += 1;
        id.clear();
        match self.id_index.map(|i| self.table.cell(i)) {
            Some(FitsCell::Text(s)) => id.push_str(s),
            Some(FitsCell::Integer(v)) => id.push_str(&v.to_string()),
            Some(FitsCell::Number(v)) if v.fract() == 0.0 && v.abs() < 9e15 => {
                id.push_str(&(v as i64).to_string())
            }
            Some(FitsCell::Number(v)) => id.push_str(&v.to_string()),
            None => id.push_str(&self.row.to_string()),
        }
        for (v, &i) in values.iter_mut().zip(&self.indices) {
            *v = match self.table.cell(i) {
                FitsCell::Number(x) => x,
                FitsCell::Integer(x) => x as f64,
                FitsCell::Text(s) => parse_number(s).ok_or_else(|| {
                    unparseable(&self.file, self.row, &self.table.columns[i].name, s)
                })?,
            };
        }
        Ok(true)
    }
}

// ---------------------------------------------------------------- helpers

/// Read one numeric column of a CSV / Parquet / FITS table (format from the extension);
/// empty, null and NaN cells become NaN. For truth columns such as `zspec`.
pub fn read_column_f64(path: impl AsRef<Path>, column: &str) -> Result<Vec<f64>> {
    let path = path.as_ref();
    let mut source = open_source(
        path,
        CatalogueFormat::from_path(path)?,
        None,
        &[column.to_string()],
    )?;
    let (mut id, mut value, mut out) = (String::new(), [0.0], Vec::new());
    while source.next_row(&mut id, &mut value)? {
        out.push(value[0]);
    }
    Ok(out)
}

/// Read the id column of a CSV / Parquet / FITS table as strings.
pub fn read_ids(path: impl AsRef<Path>, id_column: &str) -> Result<Vec<String>> {
    let path = path.as_ref();
    let mut source = open_source(
        path,
        CatalogueFormat::from_path(path)?,
        Some(id_column),
        &[],
    )?;
    let (mut id, mut out) = (String::new(), Vec::new());
    while source.next_row(&mut id, &mut [])? {
        out.push(id.clone());
    }
    Ok(out)
}
