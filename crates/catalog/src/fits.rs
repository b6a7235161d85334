//! A minimal streaming FITS binary-table (BINTABLE) reader.
//!
//! fitsrs 0.4 targets images; reading a table row by row is simple enough to do here:
//! 2880-byte blocks of 80-character header cards, then `NAXIS2` rows of `NAXIS1`
//! big-endian bytes. Supported cell types: L, B, I, J, K, E, D (repeat 1) and A (strings);
//! other types may be present in the file as long as they are not read.

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use crate::error::{CatalogError, Result};

const BLOCK: u64 = 2880;

#[derive(Debug, Clone)]
pub(crate) struct FitsColumn {
    pub name: String,
    offset: usize,
    code: char,
    repeat: usize,
    scale: f64,
    zero: f64,
    null: Option<i64>,
}

/// A cell value as read from the table.
pub(crate) enum FitsCell<'a> {
    Number(f64),
    /// Integer cell without scaling, kept exact (ids).
    Integer(i64),
    Text(&'a str),
}

pub(crate) struct BinTableReader {
    path: PathBuf,
    reader: BufReader<File>,
    pub columns: Vec<FitsColumn>,
    pub n_rows: usize,
    rows_read: usize,
    row: Vec<u8>,
}

type Cards = Vec<(String, String)>;

fn read_header(path: &Path, reader: &mut impl Read) -> Result<Option<Cards>> {
    let mut cards = Vec::new();
    let mut block = [0u8; BLOCK as usize];
    let mut first = true;
    loop {
        match reader.read_exact(&mut block) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && first => return Ok(None),
            Err(e) => return Err(CatalogError::io(path, e)),
        }
        first = false;
        for card in block.chunks(80) {
            let card = std::str::from_utf8(card)
                .map_err(|_| CatalogError::format(path, "non-ASCII FITS header card"))?;
            let key = card[..8].trim_end().to_string();
            if key == "END" {
                return Ok(Some(cards));
            }
            if &card[8..10] == "= " {
                cards.push((key, parse_card_value(&card[10..])));
            }
        }
    }
}

fn parse_card_value(raw: &str) -> String {
    let raw = raw.trim_start();
    if let Some(rest) = raw.strip_prefix('\'') {
        // Quoted string; '' is an escaped quote.
        let mut out = String::new();
        let mut chars = rest.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\'' {
                if chars.peek() == Some(&'\'') {
                    out.push('\'');
                    chars.next();
                } else {
                    break;
                }
            } else {
                out.push(c);
            }
        }
        out.trim_end().to_string()
    } else {
        raw.split('/').next().unwrap_or("").trim().to_string()
    }
}

fn card<'a>(cards: &'a Cards, key: &str) -> Option<&'a str> {
    cards
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

fn card_int(path: &Path, cards: &Cards, key: &str) -> Result<Option<i64>> {
    card(cards, key)
        .map(|v| {
            v.parse::<i64>().map_err(|_| {
                CatalogError::format(path, format!("header {key} = '{v}' is not an integer"))
            })
        })
        .transpose()
}

fn card_f64(path: &Path, cards: &Cards, key: &str) -> Result<Option<f64>> {
    card(cards, key)
        .map(|v| {
            v.replace(['D', 'd'], "E").parse::<f64>().map_err(|_| {
                CatalogError::format(path, format!("header {key} = '{v}' is not a number"))
            })
        })
        .transpose()
}

/// Bytes of the data unit following a header (padded to whole blocks).
fn data_bytes(path: &Path, cards: &Cards) -> Result<u64> {
    let bitpix = card_int(path, cards, "BITPIX")?.unwrap_or(8).unsigned_abs();
    let naxis = card_int(path, cards, "NAXIS")?.unwrap_or(0);
    if naxis == 0 {
        return Ok(0);
    }
    let mut n: u64 = 1;
    for i in 1..=naxis {
        n *= card_int(path, cards, &format!("NAXIS{i}"))?.unwrap_or(0) as u64;
    }
    let pcount = card_int(path, cards, "PCOUNT")?.unwrap_or(0) as u64;
    let gcount = card_int(path, cards, "GCOUNT")?.unwrap_or(1) as u64;
    let bytes = bitpix / 8 * gcount * (pcount + n);
    Ok(bytes.div_ceil(BLOCK) * BLOCK)
}

fn parse_tform(tform: &str) -> Option<(usize, char)> {
    let t = tform.trim();
    let digits: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
    let repeat = if digits.is_empty() {
        1
    } else {
        digits.parse().ok()?
    };
    let code = t[digits.len()..].chars().next()?;
    Some((repeat, code.to_ascii_uppercase()))
}

fn cell_width(repeat: usize, code: char) -> Option<usize> {
    Some(match code {
        'L' | 'B' | 'A' => repeat,
        'X' => repeat.div_ceil(8),
        'I' => 2 * repeat,
        'J' | 'E' => 4 * repeat,
        'K' | 'D' | 'C' | 'P' => 8 * repeat,
        'M' | 'Q' => 16 * repeat,
        _ => return None,
    })
}

impl BinTableReader {
    /// Open the first BINTABLE extension of `path`.
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| CatalogError::io(path, e))?;
        let mut reader = BufReader::new(file);
        let mut hdu = 0;
        loop {
            let cards = read_header(path, &mut reader)?.ok_or_else(|| {
                CatalogError::format(path, "no BINTABLE extension in the FITS file")
            })?;
            if hdu == 0 && card(&cards, "SIMPLE") != Some("T") {
                return Err(CatalogError::format(
                    path,
                    "not a FITS file (no SIMPLE = T card)",
                ));
            }
            if hdu > 0 && card(&cards, "XTENSION") == Some("BINTABLE") {
                return Self::from_header(path, reader, &cards);
            }
            let skip = data_bytes(path, &cards)?;
            reader
                .seek(SeekFrom::Current(skip as i64))
                .map_err(|e| CatalogError::io(path, e))?;
            hdu += 1;
        }
    }

    fn from_header(path: &Path, reader: BufReader<File>, cards: &Cards) -> Result<Self> {
        let need = |key: &str| -> Result<i64> {
            card_int(path, cards, key)?
                .ok_or_else(|| CatalogError::format(path, format!("BINTABLE header lacks {key}")))
        };
        let row_bytes = need("NAXIS1")? as usize;
        let n_rows = need("NAXIS2")? as usize;
        let tfields = need("TFIELDS")? as usize;
        let mut columns = Vec::with_capacity(tfields);
        let mut offset = 0;
        for i in 1..=tfields {
            let tform = card(cards, &format!("TFORM{i}")).ok_or_else(|| {
                CatalogError::format(path, format!("BINTABLE header lacks TFORM{i}"))
            })?;
            let (repeat, code) = parse_tform(tform).ok_or_else(|| {
                CatalogError::format(path, format!("TFORM{i} = '{tform}' not understood"))
            })?;
            let width = cell_width(repeat, code).ok_or_else(|| {
                CatalogError::format(path, format!("TFORM{i} = '{tform}': unknown type '{code}'"))
            })?;
            let name = card(cards, &format!("TTYPE{i}"))
                .map(str::to_string)
                .unwrap_or_else(|| format!("col{i}"));
            columns.push(FitsColumn {
                name,
                offset,
                code,
                repeat,
                scale: card_f64(path, cards, &format!("TSCAL{i}"))?.unwrap_or(1.0),
                zero: card_f64(path, cards, &format!("TZERO{i}"))?.unwrap_or(0.0),
                null: card_int(path, cards, &format!("TNULL{i}"))?,
            });
            offset += width;
        }
        if offset != row_bytes {
            return Err(CatalogError::format(
                path,
                format!("column widths add up to {offset} bytes but NAXIS1 = {row_bytes}"),
            ));
        }
        Ok(Self {
            path: path.to_path_buf(),
            reader,
            columns,
            n_rows,
            rows_read: 0,
            row: vec![0; row_bytes],
        })
    }

    pub fn column_names(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }

    /// Check a column can be read as a scalar or string.
    pub fn check_readable(&self, index: usize) -> Result<()> {
        let c = &self.columns[index];
        let ok = matches!(c.code, 'A')
            || (c.repeat == 1 && matches!(c.code, 'L' | 'B' | 'I' | 'J' | 'K' | 'E' | 'D'));
        if ok {
            Ok(())
        } else {
            Err(CatalogError::format(
                &self.path,
                format!(
                    "column '{}': FITS type {}{} is not supported (need a scalar L/B/I/J/K/E/D or A)",
                    c.name, c.repeat, c.code
                ),
            ))
        }
    }

    /// Load the next row; false at the end of the table.
    pub fn next_row(&mut self) -> Result<bool> {
        if self.rows_read >= self.n_rows {
            return Ok(false);
        }
        self.reader.read_exact(&mut self.row).map_err(|e| {
            CatalogError::format(
                &self.path,
                format!("row {}: truncated table data ({e})", self.rows_read + 1),
            )
        })?;
        self.rows_read += 1;
        Ok(true)
    }

    /// A cell of the current row.
    pub fn cell(&self, index: usize) -> FitsCell<'_> {
        let c = &self.columns[index];
        let b = &self.row[c.offset..c.offset + cell_width(c.repeat, c.code).unwrap_or(0)];
        let int = |v: i64| -> FitsCell<'_> {
            if c.null == Some(v) {
                FitsCell::Number(f64::NAN)
            } else if c.scale == 1.0 && c.zero == 0.0 {
                FitsCell::Integer(v)
            } else {
                FitsCell::Number(v as f64 * c.scale + c.zero)
            }
        };
        match c.code {
            'A' => {
                let s = std::str::from_utf8(b).unwrap_or("");
                FitsCell::Text(s.trim_end_matches(['\0', ' ']).trim_start())
            }
            'L' => match b[0] {
                b'T' => FitsCell::Integer(1),
                b'F' => FitsCell::Integer(0),
                _ => FitsCell::Number(f64::NAN),
            },
            'B' => int(b[0] as i64),
            'I' => int(i16::from_be_bytes([b[0], b[1]]) as i64),
            'J' => int(i32::from_be_bytes(b[..4].try_into().unwrap()) as i64),
            'K' => int(i64::from_be_bytes(b[..8].try_into().unwrap())),
            'E' => FitsCell::Number(
                f32::from_be_bytes(b[..4].try_into().unwrap()) as f64 * c.scale + c.zero,
            ),
            'D' => {
                FitsCell::Number(f64::from_be_bytes(b[..8].try_into().unwrap()) * c.scale + c.zero)
            }
            _ => FitsCell::Number(f64::NAN),
        }
    }
}
