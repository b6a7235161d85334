//! Incremental, crash-safe results output: one part file per `write_chunk`, written to a
//! temporary name, fsynced, then renamed, so a killed run never leaves half a part.

use std::collections::{BTreeMap, HashSet};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};

use crate::error::{CatalogError, Result, display};

/// The id column every results table starts with.
pub const ID_COLUMN: &str = "id";

/// File format of results and chain parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TableFormat {
    /// Apache Parquet (`.parquet`).
    Parquet,
    /// Comma-separated values with a header row (`.csv`).
    Csv,
}

impl TableFormat {
    /// File extension without the dot (`parquet`, `csv`).
    pub fn extension(self) -> &'static str {
        match self {
            TableFormat::Parquet => "parquet",
            TableFormat::Csv => "csv",
        }
    }

    fn from_path(path: &Path) -> Option<Self> {
        match path.extension()?.to_str()? {
            "parquet" | "pq" => Some(Self::Parquet),
            "csv" => Some(Self::Csv),
            _ => None,
        }
    }
}

/// Column layout of a results (or chains) table. Files hold, in order: `id` (string),
/// `int_columns` (i64), `columns` (f64), `string_columns`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResultSchema {
    /// f64 columns (percentiles, MAP, diagnostics, …).
    pub columns: Vec<String>,
    /// i64 columns (e.g. `step`, `walker` of chains).
    pub int_columns: Vec<String>,
    /// String columns (e.g. `flags`).
    pub string_columns: Vec<String>,
}

impl ResultSchema {
    /// f64 `columns` plus the string column `flags`.
    pub fn new(columns: Vec<String>) -> Self {
        Self {
            columns,
            int_columns: Vec::new(),
            string_columns: vec!["flags".into()],
        }
    }

    /// Thinned chains in long format: id, step, walker, the 16 parameters, log_prob.
    pub fn chains() -> Self {
        let mut columns: Vec<String> = popcosmos_api::PARAM_NAMES
            .iter()
            .map(|s| s.to_string())
            .collect();
        columns.push("log_prob".into());
        Self {
            columns,
            int_columns: vec!["step".into(), "walker".into()],
            string_columns: Vec::new(),
        }
    }

    /// The Arrow schema of the files: `id`, then the int, f64 and string columns, all
    /// nullable.
    pub fn arrow_schema(&self) -> SchemaRef {
        let mut fields = vec![Field::new(ID_COLUMN, DataType::Utf8, true)];
        fields.extend(
            self.int_columns
                .iter()
                .map(|c| Field::new(c, DataType::Int64, true)),
        );
        fields.extend(
            self.columns
                .iter()
                .map(|c| Field::new(c, DataType::Float64, true)),
        );
        fields.extend(
            self.string_columns
                .iter()
                .map(|c| Field::new(c, DataType::Utf8, true)),
        );
        Arc::new(Schema::new(fields))
    }
}

/// A results table in memory (also the input of [`ResultsWriter::write_chunk`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ResultTable {
    /// Row ids (the `id` column).
    pub ids: Vec<String>,
    /// f64 columns by name, each as long as `ids`.
    pub columns: BTreeMap<String, Vec<f64>>,
    /// i64 columns by name.
    pub ints: BTreeMap<String, Vec<i64>>,
    /// String columns by name.
    pub strings: BTreeMap<String, Vec<String>>,
}

impl ResultTable {
    /// Rows in the table.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True when the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// An f64 column by name.
    pub fn column(&self, name: &str) -> Option<&[f64]> {
        self.columns.get(name).map(Vec::as_slice)
    }

    fn to_batch(&self, schema: &ResultSchema, file: &Path) -> Result<RecordBatch> {
        let n = self.len();
        let fail = |m: String| CatalogError::format(file, m);
        let known: HashSet<&str> = schema
            .columns
            .iter()
            .chain(&schema.int_columns)
            .chain(&schema.string_columns)
            .map(String::as_str)
            .collect();
        for name in self
            .columns
            .keys()
            .chain(self.ints.keys())
            .chain(self.strings.keys())
        {
            if !known.contains(name.as_str()) {
                return Err(fail(format!(
                    "column '{name}' is not in the results schema"
                )));
            }
        }
        let check = |name: &str, len: Option<usize>| -> Result<()> {
            match len {
                None => Err(fail(format!("column '{name}' is missing from the chunk"))),
                Some(l) if l != n => {
                    Err(fail(format!("column '{name}' has {l} rows, expected {n}")))
                }
                Some(_) => Ok(()),
            }
        };
        let mut arrays: Vec<ArrayRef> = vec![Arc::new(StringArray::from(self.ids.clone()))];
        for c in &schema.int_columns {
            check(c, self.ints.get(c).map(Vec::len))?;
            arrays.push(Arc::new(Int64Array::from(self.ints[c].clone())));
        }
        for c in &schema.columns {
            check(c, self.columns.get(c).map(Vec::len))?;
            arrays.push(Arc::new(Float64Array::from(self.columns[c].clone())));
        }
        for c in &schema.string_columns {
            check(c, self.strings.get(c).map(Vec::len))?;
            arrays.push(Arc::new(StringArray::from(self.strings[c].clone())));
        }
        RecordBatch::try_new(schema.arrow_schema(), arrays).map_err(|e| fail(e.to_string()))
    }

    fn append_batch(&mut self, batch: &RecordBatch, file: &Path) -> Result<()> {
        let n_before = self.len();
        let n = batch.num_rows();
        let fail = |m: String| CatalogError::format(file, m);
        let mut has_id = false;
        for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
            let name = field.name();
            let dt = array.data_type();
            let text = matches!(
                dt,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
            );
            if name == ID_COLUMN || text {
                let a = cast(array, &DataType::Utf8)
                    .map_err(|e| fail(format!("column '{name}': {e}")))?;
                let a = a.as_string::<i32>();
                let values = (0..n).map(|i| {
                    if a.is_valid(i) {
                        a.value(i).to_string()
                    } else {
                        String::new()
                    }
                });
                if name == ID_COLUMN {
                    has_id = true;
                    self.ids.extend(values);
                } else {
                    pad(
                        self.strings.entry(name.clone()).or_default(),
                        n_before,
                        String::new(),
                    )
                    .extend(values);
                }
            } else if dt.is_integer() && array.null_count() == 0 {
                let a = cast(array, &DataType::Int64)
                    .map_err(|e| fail(format!("column '{name}': {e}")))?;
                let a = a.as_primitive::<arrow::datatypes::Int64Type>();
                pad(self.ints.entry(name.clone()).or_default(), n_before, 0)
                    .extend(a.values().iter().copied());
            } else {
                let a = cast(array, &DataType::Float64).map_err(|e| {
                    fail(format!("column '{name}' is neither numeric nor text: {e}"))
                })?;
                let a = a.as_primitive::<arrow::datatypes::Float64Type>();
                pad(
                    self.columns.entry(name.clone()).or_default(),
                    n_before,
                    f64::NAN,
                )
                .extend((0..n).map(|i| if a.is_valid(i) { a.value(i) } else { f64::NAN }));
            }
        }
        if !has_id {
            let available: Vec<String> = batch
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            return Err(CatalogError::missing_column(file, ID_COLUMN, &available));
        }
        // Columns absent from this part are padded so every column stays aligned with ids.
        let total = self.len();
        self.columns
            .values_mut()
            .for_each(|v| v.resize(total, f64::NAN));
        self.ints.values_mut().for_each(|v| v.resize(total, 0));
        self.strings
            .values_mut()
            .for_each(|v| v.resize(total, String::new()));
        Ok(())
    }
}

fn pad<T: Clone>(v: &mut Vec<T>, len: usize, fill: T) -> &mut Vec<T> {
    v.resize(len.max(v.len()), fill);
    v
}

/// Writes `part-00000.<ext>`, `part-00001.<ext>`, … into a directory.
#[derive(Debug)]
pub struct ResultsWriter {
    dir: PathBuf,
    schema: ResultSchema,
    format: TableFormat,
    next_part: usize,
}

impl ResultsWriter {
    /// Create (or, with `resume`, continue) a results directory. Without `resume` a
    /// directory that already holds parts is refused rather than overwritten. Leftover
    /// temporary files from a crashed run are deleted.
    pub fn create(
        dir: impl AsRef<Path>,
        schema: ResultSchema,
        format: TableFormat,
        resume: bool,
    ) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| CatalogError::io(&dir, e))?;
        for entry in fs::read_dir(&dir).map_err(|e| CatalogError::io(&dir, e))? {
            let path = entry.map_err(|e| CatalogError::io(&dir, e))?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with(".part-") && name.ends_with(".tmp") {
                fs::remove_file(&path).map_err(|e| CatalogError::io(&path, e))?;
            }
        }
        let parts = list_parts(&dir)?;
        if !resume && !parts.is_empty() {
            return Err(CatalogError::format(
                &dir,
                format!(
                    "already holds {} result part(s); resume the run or choose another directory",
                    parts.len()
                ),
            ));
        }
        // Parts written with other columns (another popcosmos version) must not be mixed
        // with this run's.
        if let Some(first) = parts.first() {
            let have = part_column_names(first)?;
            let want: Vec<String> = schema
                .arrow_schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .collect();
            let missing: Vec<&String> = want.iter().filter(|c| !have.contains(c)).collect();
            let extra: Vec<&String> = have.iter().filter(|c| !want.contains(c)).collect();
            if !missing.is_empty() || !extra.is_empty() {
                return Err(CatalogError::format(
                    first,
                    format!(
                        "holds results with other columns than this run writes (missing \
                         {missing:?}, extra {extra:?}; written by another popcosmos version?): \
                         resuming would mix the two; resume with the version that wrote them, \
                         or run into a new output.dir"
                    ),
                ));
            }
        }
        let next_part = Self::next_part_index(&dir)?;
        Ok(Self {
            dir,
            schema,
            format,
            next_part,
        })
    }

    /// The output folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The column layout every part is written with.
    pub fn schema(&self) -> &ResultSchema {
        &self.schema
    }

    /// Index of the part the next `write_chunk` will create.
    pub fn next_part(&self) -> usize {
        self.next_part
    }

    /// Write `rows` (which must hold exactly the schema's columns) as one new part;
    /// returns its path, or `None` for an empty table (no part is written).
    pub fn write_chunk(&mut self, rows: &ResultTable) -> Result<Option<PathBuf>> {
        if rows.is_empty() {
            return Ok(None);
        }
        let name = format!("part-{:05}.{}", self.next_part, self.format.extension());
        let path = self.dir.join(&name);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let batch = rows.to_batch(&self.schema, &path)?;
        let mut file = File::create(&tmp).map_err(|e| CatalogError::io(&tmp, e))?;
        match self.format {
            TableFormat::Parquet => write_parquet(&mut file, &[batch], &tmp)?,
            TableFormat::Csv => write_csv(&mut file, &batch, &tmp)?,
        }
        file.sync_all().map_err(|e| CatalogError::io(&tmp, e))?;
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| CatalogError::io(&path, e))?;
        sync_dir(&self.dir);
        self.next_part += 1;
        Ok(Some(path))
    }

    /// Ids in every part of `dir`, committed or not. Runs resume through
    /// [`crate::RunOutput::open`], which counts only committed batches.
    pub fn completed_ids(dir: impl AsRef<Path>) -> Result<HashSet<String>> {
        let mut ids = HashSet::new();
        for part in list_parts(dir.as_ref())? {
            for batch in read_part(&part, true)? {
                let mut t = ResultTable::default();
                t.append_batch(&batch, &part)?;
                ids.extend(t.ids);
            }
        }
        Ok(ids)
    }

    /// One more than the largest existing part index (0 for an empty or absent directory).
    pub fn next_part_index(dir: impl AsRef<Path>) -> Result<usize> {
        Ok(list_parts(dir.as_ref())?
            .iter()
            .filter_map(|p| part_index(p))
            .max()
            .map_or(0, |i| i + 1))
    }
}

/// Best-effort fsync of a directory so the rename itself is durable (a no-op where
/// directories cannot be opened, e.g. Windows).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

fn part_index(path: &Path) -> Option<usize> {
    let name = path.file_name()?.to_str()?;
    let rest = name.strip_prefix("part-")?;
    let (digits, ext) = rest.split_once('.')?;
    if !digits.is_empty()
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(ext, "parquet" | "csv")
    {
        digits.parse().ok()
    } else {
        None
    }
}

/// Completed part files of a results directory in part order (temporary files and other
/// names are ignored); empty if the directory does not exist.
pub fn list_parts(dir: impl AsRef<Path>) -> Result<Vec<PathBuf>> {
    let dir = dir.as_ref();
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut parts: Vec<(usize, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| CatalogError::io(dir, e))? {
        let path = entry.map_err(|e| CatalogError::io(dir, e))?.path();
        if let Some(i) = part_index(&path) {
            parts.push((i, path));
        }
    }
    parts.sort();
    Ok(parts.into_iter().map(|(_, p)| p).collect())
}

fn write_parquet(file: &mut File, batches: &[RecordBatch], path: &Path) -> Result<()> {
    let Some(first) = batches.first() else {
        return Ok(());
    };
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    let mut writer = ArrowWriter::try_new(file, first.schema(), Some(props))
        .map_err(|e| CatalogError::format(path, e))?;
    for b in batches {
        writer.write(b).map_err(|e| CatalogError::format(path, e))?;
    }
    writer.close().map_err(|e| CatalogError::format(path, e))?;
    Ok(())
}

fn write_csv(file: &mut File, batch: &RecordBatch, path: &Path) -> Result<()> {
    let csv_err = |e: csv::Error| CatalogError::format(path, e);
    let mut w = csv::Writer::from_writer(file);
    w.write_record(batch.schema().fields().iter().map(|f| f.name().as_str()))
        .map_err(csv_err)?;
    let mut record: Vec<String> = Vec::with_capacity(batch.num_columns());
    for i in 0..batch.num_rows() {
        record.clear();
        for a in batch.columns() {
            record.push(match a.data_type() {
                DataType::Int64 => a
                    .as_primitive::<arrow::datatypes::Int64Type>()
                    .value(i)
                    .to_string(),
                // Debug keeps a '.' or exponent (1.0, 1e-7, NaN), so f64 columns never read back as ints.
                DataType::Float64 => format!(
                    "{:?}",
                    a.as_primitive::<arrow::datatypes::Float64Type>().value(i)
                ),
                _ => a.as_string::<i32>().value(i).to_string(),
            });
        }
        w.write_record(&record).map_err(csv_err)?;
    }
    w.flush().map_err(|e| CatalogError::io(path, e))?;
    Ok(())
}

/// Read one part (or any single results file) as record batches; `ids_only` projects
/// the `id` column (Parquet).
/// Column names of a result part, from its Parquet schema or CSV header.
fn part_column_names(path: &Path) -> Result<Vec<String>> {
    let schema = match TableFormat::from_path(path) {
        Some(TableFormat::Parquet) => {
            let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
            ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| CatalogError::format(path, e))?
                .schema()
                .clone()
        }
        _ => read_part(path, false)?
            .first()
            .map(|b| b.schema())
            .unwrap_or_else(|| Arc::new(Schema::empty())),
    };
    Ok(schema.fields().iter().map(|f| f.name().clone()).collect())
}

fn read_part(path: &Path, ids_only: bool) -> Result<Vec<RecordBatch>> {
    match TableFormat::from_path(path) {
        Some(TableFormat::Parquet) => {
            let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
            let mut builder = ParquetRecordBatchReaderBuilder::try_new(file)
                .map_err(|e| CatalogError::format(path, e))?;
            if ids_only {
                let fields = builder.schema().fields().clone();
                let i = fields
                    .iter()
                    .position(|f| f.name() == ID_COLUMN)
                    .ok_or_else(|| {
                        let names: Vec<String> = fields.iter().map(|f| f.name().clone()).collect();
                        CatalogError::missing_column(path, ID_COLUMN, &names)
                    })?;
                let mask = ProjectionMask::roots(builder.parquet_schema(), [i]);
                builder = builder.with_projection(mask);
            }
            let reader = builder.build().map_err(|e| CatalogError::format(path, e))?;
            reader
                .map(|b| b.map_err(|e| CatalogError::format(path, e)))
                .collect()
        }
        Some(TableFormat::Csv) => Ok(vec![read_csv_batch(path)?]),
        None => Err(CatalogError::format(
            path,
            "results file must be .parquet or .csv",
        )),
    }
}

/// CSV column types are inferred: `id` and `flags` are strings; a column whose cells all
/// parse as integers is i64; all numbers (empty = NaN) is f64; anything else a string.
fn read_csv_batch(path: &Path) -> Result<RecordBatch> {
    let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
    let mut reader = csv::Reader::from_reader(file);
    let headers: Vec<String> = reader
        .headers()
        .map_err(|e| CatalogError::format(path, e))?
        .iter()
        .map(str::to_string)
        .collect();
    let mut cells: Vec<Vec<String>> = vec![Vec::new(); headers.len()];
    for (row, record) in reader.records().enumerate() {
        let record = record.map_err(|e| CatalogError::Row {
            file: display(path),
            row: row + 1,
            message: e.to_string(),
        })?;
        for (c, v) in cells.iter_mut().zip(record.iter()) {
            c.push(v.to_string());
        }
    }
    let mut fields = Vec::new();
    let mut arrays: Vec<ArrayRef> = Vec::new();
    for (name, col) in headers.iter().zip(cells) {
        let forced_text = name == ID_COLUMN || name == "flags" || col.iter().all(String::is_empty);
        let ints: Option<Vec<i64>> = if forced_text {
            None
        } else {
            col.iter().map(|s| s.parse::<i64>().ok()).collect()
        };
        let floats: Option<Vec<f64>> = if forced_text || ints.is_some() {
            None
        } else {
            col.iter().map(|s| crate::source::parse_number(s)).collect()
        };
        let (dt, array): (DataType, ArrayRef) = match (ints, floats) {
            (Some(v), _) => (DataType::Int64, Arc::new(Int64Array::from(v))),
            (None, Some(v)) => (DataType::Float64, Arc::new(Float64Array::from(v))),
            _ => (DataType::Utf8, Arc::new(StringArray::from(col))),
        };
        fields.push(Field::new(name, dt, true));
        arrays.push(array);
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)
        .map_err(|e| CatalogError::format(path, e))
}

/// Read a results directory (all parts, in part order) or a single `.parquet`/`.csv` file.
pub fn read_results(path: impl AsRef<Path>) -> Result<ResultTable> {
    let path = path.as_ref();
    let files = if path.is_dir() {
        let parts = list_parts(path)?;
        if parts.is_empty() {
            return Err(CatalogError::format(
                path,
                "no result parts (part-NNNNN.parquet / .csv) in this directory",
            ));
        }
        parts
    } else {
        vec![path.to_path_buf()]
    };
    let mut table = ResultTable::default();
    for file in &files {
        for batch in read_part(file, false)? {
            table.append_batch(&batch, file)?;
        }
    }
    Ok(table)
}

/// Write one table as a single `.parquet` or `.csv` file (format from the extension),
/// atomically (temporary file + rename).
pub fn write_table(
    path: impl AsRef<Path>,
    schema: &ResultSchema,
    table: &ResultTable,
) -> Result<()> {
    let path = path.as_ref();
    let format = match path.extension().and_then(|e| e.to_str()) {
        Some("parquet") => TableFormat::Parquet,
        Some("csv") => TableFormat::Csv,
        _ => {
            return Err(CatalogError::format(
                path,
                "output must end in .parquet or .csv",
            ));
        }
    };
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("table");
    let tmp = path.with_file_name(format!(".{name}.tmp"));
    let batch = table.to_batch(schema, path)?;
    let mut file = File::create(&tmp).map_err(|e| CatalogError::io(&tmp, e))?;
    match format {
        TableFormat::Parquet => write_parquet(&mut file, &[batch], &tmp)?,
        TableFormat::Csv => write_csv(&mut file, &batch, &tmp)?,
    }
    file.sync_all().map_err(|e| CatalogError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, path).map_err(|e| CatalogError::io(path, e))?;
    Ok(())
}

/// Concatenate all parts of `dir` into one Parquet file (written atomically); parts are
/// streamed one at a time. Every part must have the first part's columns and types.
/// Returns the number of rows.
pub fn merge_parts(dir: impl AsRef<Path>, out_file: impl AsRef<Path>) -> Result<usize> {
    merge_parts_tagged(dir, out_file, None)
}

/// The ids of one part file (or any single results file), in row order, duplicates kept.
pub fn part_ids(path: impl AsRef<Path>) -> Result<Vec<String>> {
    let path = path.as_ref();
    let mut t = ResultTable::default();
    for batch in read_part(path, true)? {
        t.append_batch(&batch, path)?;
    }
    Ok(t.ids)
}

/// [`merge_parts`], optionally inserting a constant Int64 column `tag = (name, value)` right
/// after `id` (sharded runs tag every row with its shard index this way).
pub fn merge_parts_tagged(
    dir: impl AsRef<Path>,
    out_file: impl AsRef<Path>,
    tag: Option<(&str, i64)>,
) -> Result<usize> {
    let (dir, out) = (dir.as_ref(), out_file.as_ref());
    let parts = list_parts(dir)?;
    if parts.is_empty() {
        return Err(CatalogError::format(dir, "no result parts to merge"));
    }
    let name = out.file_name().and_then(|n| n.to_str()).unwrap_or("merged");
    let tmp = out.with_file_name(format!(".{name}.tmp"));
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .build();
    // (writer, schema of the parts, schema written with the tag column)
    let mut writer: Option<(ArrowWriter<File>, SchemaRef, SchemaRef)> = None;
    let mut rows = 0;
    for part in &parts {
        for batch in read_part(part, false)? {
            if writer.is_none() {
                let schema = batch.schema();
                let out_schema = match tag {
                    None => schema.clone(),
                    Some((tag_name, _)) => {
                        if schema.fields().iter().any(|f| f.name() == tag_name) {
                            return Err(CatalogError::format(
                                part,
                                format!("already has a column '{tag_name}'"),
                            ));
                        }
                        let mut fields: Vec<Field> =
                            schema.fields().iter().map(|f| f.as_ref().clone()).collect();
                        fields.insert(
                            1.min(fields.len()),
                            Field::new(tag_name, DataType::Int64, false),
                        );
                        Arc::new(Schema::new(fields))
                    }
                };
                let file = File::create(&tmp).map_err(|e| CatalogError::io(&tmp, e))?;
                let w = ArrowWriter::try_new(file, out_schema.clone(), Some(props.clone()))
                    .map_err(|e| CatalogError::format(out, e))?;
                writer = Some((w, schema, out_schema));
            }
            let (w, schema, out_schema) = writer.as_mut().expect("writer initialised");
            let same = schema.fields().len() == batch.num_columns()
                && schema
                    .fields()
                    .iter()
                    .zip(batch.schema().fields())
                    .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
            if !same {
                return Err(CatalogError::format(
                    part,
                    "columns differ from the first part; cannot merge",
                ));
            }
            let mut columns = batch.columns().to_vec();
            if let Some((_, value)) = tag {
                let constant: ArrayRef = Arc::new(Int64Array::from(vec![value; batch.num_rows()]));
                columns.insert(1.min(columns.len()), constant);
            }
            let batch = RecordBatch::try_new(out_schema.clone(), columns)
                .map_err(|e| CatalogError::format(part, e))?;
            rows += batch.num_rows();
            w.write(&batch).map_err(|e| CatalogError::format(out, e))?;
        }
    }
    let (w, _, _) = writer.ok_or_else(|| CatalogError::format(dir, "result parts hold no rows"))?;
    // into_inner writes the footer and hands the file back for the fsync.
    let file = w.into_inner().map_err(|e| CatalogError::format(out, e))?;
    file.sync_all().map_err(|e| CatalogError::io(&tmp, e))?;
    drop(file);
    fs::rename(&tmp, out).map_err(|e| CatalogError::io(out, e))?;
    if let Some(parent) = out.parent() {
        sync_dir(parent);
    }
    Ok(rows)
}
