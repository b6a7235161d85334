//! [`read_torch_module`]: the pickle of a `torch.save(module)` zip, walked into state-dict
//! named tensors and plain attributes.

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use candle_core::pickle::{Object, Stack};
use candle_core::{DType, Device, Tensor};

use crate::error::{ImportError, Result};
use crate::scan;

/// A plain (non-tensor) attribute of a pickled module, or an element of one.
#[derive(Debug, Clone, PartialEq)]
pub enum AttrValue {
    /// Python `None`.
    None,
    /// A Python bool.
    Bool(bool),
    /// A Python int.
    Int(i64),
    /// A Python float.
    Float(f64),
    /// A Python str.
    Str(String),
    /// A Python list, tuple or set.
    List(Vec<AttrValue>),
    /// A Python dict with string (or integer, stringified) keys, in insertion order.
    Dict(Vec<(String, AttrValue)>),
    /// An instance (a submodule or any other object): its fully qualified class name, e.g.
    /// `torch.nn.modules.activation.Tanh`. Its own attributes and tensors are listed under
    /// `<name>.<attribute>`.
    Object(String),
    /// A reference to a class or function, e.g. `torch.tanh`.
    Global(String),
    /// A tensor inside a container attribute; the tensor itself is in
    /// [`TorchModule::tensors`] under the element's name (`<name>.<index>`).
    Tensor {
        /// Its dtype as stored.
        dtype: DType,
        /// Its shape.
        shape: Vec<usize>,
    },
    /// Something this reader does not decode (described).
    Unsupported(String),
}

impl AttrValue {
    /// The value as f64 (Python int or float).
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            AttrValue::Float(x) => Some(x),
            AttrValue::Int(i) => Some(i as f64),
            _ => None,
        }
    }

    /// The value as i64 (Python int).
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            AttrValue::Int(i) => Some(i),
            _ => None,
        }
    }

    /// The value as bool (Python bool).
    pub fn as_bool(&self) -> Option<bool> {
        match *self {
            AttrValue::Bool(b) => Some(b),
            _ => None,
        }
    }

    /// The value as str (Python str).
    pub fn as_str(&self) -> Option<&str> {
        match self {
            AttrValue::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements of a Python list, tuple or set.
    pub fn as_list(&self) -> Option<&[AttrValue]> {
        match self {
            AttrValue::List(l) => Some(l),
            _ => None,
        }
    }

    /// The class name of an [`AttrValue::Object`].
    pub fn class_name(&self) -> Option<&str> {
        match self {
            AttrValue::Object(c) => Some(c),
            _ => None,
        }
    }

    /// JSON form. Non-finite floats become the strings `"inf"`, `"-inf"`, `"nan"`; objects,
    /// globals and tensors become `{"object": CLASS}`, `{"global": NAME}`,
    /// `{"tensor": DTYPE, "shape": [...]}`.
    pub fn to_json(&self) -> serde_json::Value {
        use serde_json::{Value, json};
        match self {
            AttrValue::None => Value::Null,
            AttrValue::Bool(b) => Value::Bool(*b),
            AttrValue::Int(i) => json!(i),
            AttrValue::Float(x) => match serde_json::Number::from_f64(*x) {
                Some(n) => Value::Number(n),
                None if x.is_nan() => json!("nan"),
                None if *x > 0.0 => json!("inf"),
                None => json!("-inf"),
            },
            AttrValue::Str(s) => json!(s),
            AttrValue::List(l) => Value::Array(l.iter().map(|v| v.to_json()).collect()),
            AttrValue::Dict(d) => {
                Value::Object(d.iter().map(|(k, v)| (k.clone(), v.to_json())).collect())
            }
            AttrValue::Object(c) => json!({ "object": c }),
            AttrValue::Global(g) => json!({ "global": g }),
            AttrValue::Tensor { dtype, shape } => {
                json!({ "tensor": dtype.as_str(), "shape": shape })
            }
            AttrValue::Unsupported(s) => json!({ "unsupported": s }),
        }
    }
}

/// Everything [`read_torch_module`] could read from one checkpoint.
#[derive(Debug, Clone)]
pub struct TorchModule {
    /// The file it came from.
    pub path: PathBuf,
    /// Fully qualified class of the top-level object (`dict` for a plain dict / state dict).
    pub class_name: String,
    /// Tensors with state-dict names (`model.NN.0.weight`), on CPU, dtype as stored; in
    /// state-dict order. Includes tensors held as plain attributes or inside lists/dicts.
    pub tensors: Vec<(String, Tensor)>,
    /// Plain attributes by dotted name: numbers, strings, lists, dicts, and the class name of
    /// every submodule/instance (`model.sde` → `Object("flowfusion.diffusion.VPSDE")`).
    pub attributes: BTreeMap<String, AttrValue>,
    /// Tensors that were found but not loaded (storage type candle lacks, e.g. bool): name, why.
    pub skipped: Vec<(String, String)>,
}

impl TorchModule {
    /// The tensor with this state-dict name.
    pub fn tensor(&self, name: &str) -> Option<&Tensor> {
        self.tensors.iter().find(|(n, _)| n == name).map(|(_, t)| t)
    }

    /// The plain attribute with this dotted name.
    pub fn attr(&self, name: &str) -> Option<&AttrValue> {
        self.attributes.get(name)
    }

    /// The class of the instance at `name` (`""` = the top-level object).
    pub fn class_of(&self, name: &str) -> Option<&str> {
        if name.is_empty() {
            Some(&self.class_name)
        } else {
            self.attr(name).and_then(AttrValue::class_name)
        }
    }
}

/// Reads a `torch.save(module)` zip checkpoint (see the crate docs).
pub fn read_torch_module(path: impl AsRef<Path>) -> Result<TorchModule> {
    let path = path.as_ref();
    let file = std::fs::File::open(path).map_err(|source| ImportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    guarded(path, || read_archive(path, std::io::BufReader::new(file)))
}

/// [`read_torch_module`] for a checkpoint already in memory; `label` names it in errors.
pub fn read_torch_module_from_bytes(label: impl AsRef<Path>, bytes: &[u8]) -> Result<TorchModule> {
    let label = label.as_ref();
    guarded(label, || read_archive(label, std::io::Cursor::new(bytes)))
}

/// Runs `f`, turning a panic inside a dependency into [`ImportError::Internal`].
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T>) -> Result<T> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let reason = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        Err(ImportError::Internal {
            path: path.to_path_buf(),
            reason,
        })
    })
}

fn read_archive<R: Read + Seek>(path: &Path, reader: R) -> Result<TorchModule> {
    let archive_err = |reason: String| ImportError::Archive {
        path: path.to_path_buf(),
        reason,
    };
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| archive_err(e.to_string()))?;

    // `<root>/data.pkl` with a single-level root (torch's archive name).
    let mut pickle_name = None;
    for name in zip.file_names() {
        let name = name.map_err(|e| archive_err(e.to_string()))?;
        if let Some(root) = name.strip_suffix("/data.pkl")
            && !root.is_empty()
            && !root.contains('/')
        {
            pickle_name = Some(name.to_string());
            break;
        }
    }
    let Some(pickle_name) = pickle_name else {
        return Err(ImportError::MissingPickle {
            path: path.to_path_buf(),
        });
    };
    let root = pickle_name.trim_end_matches("/data.pkl").to_string();

    if let Some(order) = read_entry_opt(&mut zip, path, &format!("{root}/byteorder"))? {
        let order = String::from_utf8_lossy(&order);
        if order.trim() != "little" {
            return Err(archive_err(format!(
                "byte order `{}` is not supported (only little-endian)",
                order.trim()
            )));
        }
    }

    let pickle = read_entry_opt(&mut zip, path, &pickle_name)?.ok_or_else(|| {
        ImportError::MissingPickle {
            path: path.to_path_buf(),
        }
    })?;
    let pickle_err = |reason: String| ImportError::Pickle {
        path: path.to_path_buf(),
        entry: pickle_name.clone(),
        reason,
    };
    scan::scan(&pickle).map_err(pickle_err)?;
    let mut stack = Stack::empty();
    stack
        .read_loop(&mut &pickle[..])
        .map_err(|e| pickle_err(e.to_string()))?;
    let top = stack.finalize().map_err(|e| pickle_err(e.to_string()))?;

    let mut walker = Walker {
        path,
        specs: Vec::new(),
        attributes: BTreeMap::new(),
    };
    let class_name = match &top {
        Object::Build { callable, args } => {
            walker.state(args, "", 0)?;
            class_name(callable)
        }
        Object::Dict(items) => {
            walker.module(items, "", 0)?;
            "dict".to_string()
        }
        other => {
            return Err(ImportError::UnsupportedTopObject {
                path: path.to_path_buf(),
                found: describe(other),
            });
        }
    };

    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut tensors = Vec::with_capacity(walker.specs.len());
    let mut skipped = Vec::new();
    for spec in walker.specs {
        let Some(dtype) = storage_dtype(&spec.storage_class) else {
            skipped.push((
                spec.name,
                format!("unsupported storage type {}", spec.storage_class),
            ));
            continue;
        };
        let tensor_err = |reason: String| ImportError::Tensor {
            path: path.to_path_buf(),
            tensor: spec.name.clone(),
            reason,
        };
        if !storages.contains_key(&spec.key) {
            let entry = format!("{root}/data/{}", spec.key);
            let bytes = read_entry_opt(&mut zip, path, &entry)?
                .ok_or_else(|| tensor_err(format!("storage entry `{entry}` is missing")))?;
            storages.insert(spec.key.clone(), bytes);
        }
        let storage = &storages[&spec.key];
        let tensor = materialise(&spec, dtype, storage).map_err(tensor_err)?;
        tensors.push((spec.name, tensor));
    }

    Ok(TorchModule {
        path: path.to_path_buf(),
        class_name,
        tensors,
        attributes: walker.attributes,
        skipped,
    })
}

/// The bytes of a zip entry, `None` if there is no such entry.
fn read_entry_opt<R: Read + Seek>(
    zip: &mut zip::ZipArchive<R>,
    path: &Path,
    name: &str,
) -> Result<Option<Vec<u8>>> {
    let mut entry = match zip.by_name(name) {
        Ok(e) => e,
        Err(zip::result::ZipError::FileNotFound) => return Ok(None),
        Err(e) => {
            return Err(ImportError::Archive {
                path: path.to_path_buf(),
                reason: format!("entry `{name}`: {e}"),
            });
        }
    };
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| ImportError::Archive {
            path: path.to_path_buf(),
            reason: format!("entry `{name}`: {e}"),
        })?;
    Ok(Some(bytes))
}

/// `_rebuild_tensor_v2` arguments with the storage's persistent id.
struct TensorSpec {
    name: String,
    storage_class: String,
    key: String,
    storage_numel: usize,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class.rsplit('.').next().unwrap_or(class) {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "ByteStorage" => DType::U8,
        "ShortStorage" => DType::I16,
        "IntStorage" => DType::I32,
        "LongStorage" => DType::I64,
        _ => return None,
    })
}

/// Largest tensor (bytes) materialised from an expanded (zero-stride) view.
const MAX_EXPANDED_BYTES: usize = 1 << 28;

/// Copies the (possibly strided) view `spec` out of its storage bytes.
fn materialise(spec: &TensorSpec, dtype: DType, storage: &[u8]) -> Result<Tensor, String> {
    let esz = dtype.size_in_bytes();
    let expected = spec
        .storage_numel
        .checked_mul(esz)
        .ok_or("storage size overflows")?;
    if storage.len() != expected {
        return Err(format!(
            "storage `{}` holds {} bytes, the pickle says {} elements of {esz} bytes",
            spec.key,
            storage.len(),
            spec.storage_numel
        ));
    }
    let n = spec
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("element count overflows")?;
    let mut data = Vec::new();
    if n > 0 {
        // Highest element index the view touches.
        let mut last = spec.offset;
        for (&d, &s) in spec.shape.iter().zip(&spec.stride) {
            last = (d - 1)
                .checked_mul(s)
                .and_then(|x| x.checked_add(last))
                .ok_or("view extent overflows")?;
        }
        if last >= spec.storage_numel {
            return Err(format!(
                "view (offset {}, shape {:?}, stride {:?}) reaches element {last} of a storage of {}",
                spec.offset, spec.shape, spec.stride, spec.storage_numel
            ));
        }
        let byte_len = n.checked_mul(esz).ok_or("byte size overflows")?;
        // A view can exceed its storage only through zero strides (expanded tensors); bound
        // what such a view may allocate.
        if n > spec.storage_numel && byte_len > MAX_EXPANDED_BYTES {
            return Err(format!(
                "view of {n} elements over a storage of {} exceeds {MAX_EXPANDED_BYTES} bytes",
                spec.storage_numel
            ));
        }
        if is_contiguous(&spec.shape, &spec.stride) {
            let start = spec.offset * esz;
            data.extend_from_slice(&storage[start..start + byte_len]);
        } else {
            // Row-major walk over the multi-index.
            data.reserve(byte_len);
            let mut idx = vec![0usize; spec.shape.len()];
            for _ in 0..n {
                let el = spec.offset
                    + idx
                        .iter()
                        .zip(&spec.stride)
                        .map(|(i, s)| i * s)
                        .sum::<usize>();
                data.extend_from_slice(&storage[el * esz..(el + 1) * esz]);
                for k in (0..idx.len()).rev() {
                    idx[k] += 1;
                    if idx[k] < spec.shape[k] {
                        break;
                    }
                    idx[k] = 0;
                }
            }
        }
    }
    Tensor::from_raw_buffer(&data, dtype, &spec.shape, &Device::Cpu).map_err(|e| e.to_string())
}

fn is_contiguous(shape: &[usize], stride: &[usize]) -> bool {
    let mut expected = 1usize;
    for (&d, &s) in shape.iter().zip(stride).rev() {
        if d != 1 && s != expected {
            return false;
        }
        expected = expected.saturating_mul(d);
    }
    true
}

struct Walker<'a> {
    path: &'a Path,
    specs: Vec<TensorSpec>,
    attributes: BTreeMap<String, AttrValue>,
}

fn join(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_string()
    } else {
        format!("{prefix}.{key}")
    }
}

fn key_of(k: &Object) -> Option<String> {
    match k {
        Object::Unicode(s) => Some(s.clone()),
        Object::Int(i) => Some(i.to_string()),
        Object::Long(i) => Some(i.to_string()),
        _ => None,
    }
}

fn class_name(o: &Object) -> String {
    match o {
        Object::Class {
            module_name,
            class_name,
        } => format!("{module_name}.{class_name}"),
        Object::Reduce { callable, .. } => class_name(callable),
        _ => "?".into(),
    }
}

fn describe(o: &Object) -> String {
    match o {
        Object::Class { .. } => format!("global {}", class_name(o)),
        Object::Int(i) => format!("int {i}"),
        Object::Long(i) => format!("int {i}"),
        Object::Float(x) => format!("float {x}"),
        Object::Unicode(_) => "str".into(),
        Object::Bool(_) => "bool".into(),
        Object::None => "None".into(),
        Object::Tuple(_) => "tuple".into(),
        Object::List(_) => "list".into(),
        Object::Mark => "mark".into(),
        Object::Dict(_) => "dict".into(),
        Object::Reduce { callable, .. } => format!("object of {}", class_name(callable)),
        Object::Build { callable, .. } => format!("instance of {}", class_name(callable)),
        Object::PersistentLoad(_) => "persistent id".into(),
    }
}

fn non_negative(o: &Object) -> Option<usize> {
    match *o {
        Object::Int(i) if i >= 0 => Some(i as usize),
        Object::Long(i) if i >= 0 => usize::try_from(i).ok(),
        _ => None,
    }
}

fn usize_tuple(o: &Object) -> Option<Vec<usize>> {
    match o {
        Object::Tuple(v) | Object::List(v) => v.iter().map(non_negative).collect(),
        _ => None,
    }
}

/// `Some` if `o` is a tensor (`_rebuild_tensor_v2`, possibly inside `_rebuild_parameter` or
/// `_rebuild_from_type_v2`); `Err` if it is one but malformed.
fn tensor_spec(o: &Object, name: &str) -> Result<Option<TensorSpec>, String> {
    let Object::Reduce { callable, args } = o else {
        return Ok(None);
    };
    let Object::Class {
        module_name,
        class_name,
    } = callable.as_ref()
    else {
        return Ok(None);
    };
    match (module_name.as_str(), class_name.as_str()) {
        ("torch._utils", "_rebuild_tensor_v2") => rebuild_v2(args, name).map(Some),
        ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
            match args.as_ref() {
                Object::Tuple(a) if !a.is_empty() => match tensor_spec(&a[0], name)? {
                    Some(s) => Ok(Some(s)),
                    None => Err(format!("{class_name} without tensor data")),
                },
                _ => Err(format!("{class_name}: malformed arguments")),
            }
        }
        ("torch._tensor", "_rebuild_from_type_v2") => match args.as_ref() {
            Object::Tuple(a) if a.len() >= 3 => match &a[0] {
                Object::Class {
                    module_name,
                    class_name,
                } if module_name == "torch._utils" && class_name == "_rebuild_tensor_v2" => {
                    rebuild_v2(&a[2], name).map(Some)
                }
                other => Err(format!(
                    "_rebuild_from_type_v2 of {} is not supported",
                    describe(other)
                )),
            },
            _ => Err("_rebuild_from_type_v2: malformed arguments".into()),
        },
        _ => Ok(None),
    }
}

/// `_rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad, hooks)` with
/// storage = persistent id `('storage', StorageClass, key, location, numel)`.
fn rebuild_v2(args: &Object, name: &str) -> Result<TensorSpec, String> {
    let Object::Tuple(a) = args else {
        return Err("_rebuild_tensor_v2: arguments are not a tuple".into());
    };
    if a.len() < 4 {
        return Err(format!(
            "_rebuild_tensor_v2: {} arguments, expected ≥ 4",
            a.len()
        ));
    }
    let Object::PersistentLoad(pid) = &a[0] else {
        return Err("_rebuild_tensor_v2: storage is not a persistent id".into());
    };
    let p = match pid.as_ref() {
        Object::Tuple(p) if p.len() >= 5 && p[0] == Object::Unicode("storage".into()) => p,
        _ => return Err("malformed storage persistent id".into()),
    };
    let storage_class = match &p[1] {
        c @ Object::Class { .. } => class_name(c),
        _ => return Err("storage type is not a class".into()),
    };
    let key = match &p[2] {
        Object::Unicode(k) if !k.is_empty() && !k.contains("..") => k.clone(),
        _ => return Err("storage key is not a plain string".into()),
    };
    let storage_numel = non_negative(&p[4]).ok_or("storage size is not a non-negative int")?;
    let offset = non_negative(&a[1]).ok_or("storage offset is not a non-negative int")?;
    let shape = usize_tuple(&a[2]).ok_or("size is not a tuple of non-negative ints")?;
    let stride = usize_tuple(&a[3]).ok_or("stride is not a tuple of non-negative ints")?;
    if shape.len() != stride.len() {
        return Err(format!(
            "size {shape:?} and stride {stride:?} differ in rank"
        ));
    }
    Ok(TensorSpec {
        name: name.to_string(),
        storage_class,
        key,
        storage_numel,
        offset,
        shape,
        stride,
    })
}

impl Walker<'_> {
    fn too_deep(&self, name: &str) -> ImportError {
        ImportError::Pickle {
            path: self.path.to_path_buf(),
            entry: "data.pkl".into(),
            reason: format!("`{name}`: objects nested too deeply"),
        }
    }

    /// The state of an instance (`BUILD` argument): its `__dict__`, or `(dict, slots)`.
    fn state(&mut self, state: &Object, prefix: &str, depth: u32) -> Result<()> {
        match state {
            Object::Dict(items) => self.module(items, prefix, depth + 1),
            Object::Tuple(parts) => {
                for p in parts {
                    if let Object::Dict(items) = p {
                        self.module(items, prefix, depth + 1)?;
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    /// A module's `__dict__`: `_parameters`, `_buffers`, `_modules` are transparent, other
    /// private keys (hooks, …) are skipped, the rest are attributes.
    fn module(&mut self, items: &[(Object, Object)], prefix: &str, depth: u32) -> Result<()> {
        if depth > scan::MAX_DEPTH {
            return Err(self.too_deep(prefix));
        }
        // candle's SETITEMS pushes a batch in reverse; undo it to get insertion order.
        for (k, v) in items.iter().rev() {
            let Some(k) = key_of(k) else { continue };
            if matches!(k.as_str(), "_parameters" | "_buffers" | "_modules") {
                if let Object::Dict(inner) = v {
                    for (k2, v2) in inner.iter().rev() {
                        if let Some(k2) = key_of(k2) {
                            self.entry(prefix, &k2, v2, depth + 1)?;
                        }
                    }
                }
            } else if !k.starts_with('_') {
                self.entry(prefix, &k, v, depth)?;
            }
        }
        Ok(())
    }

    fn entry(&mut self, prefix: &str, key: &str, v: &Object, depth: u32) -> Result<()> {
        let name = join(prefix, key);
        let value = self.value(v, &name, depth + 1)?;
        if !matches!(value, AttrValue::Tensor { .. }) {
            self.attributes.insert(name, value);
        }
        Ok(())
    }

    fn value(&mut self, v: &Object, name: &str, depth: u32) -> Result<AttrValue> {
        if depth > scan::MAX_DEPTH {
            return Err(self.too_deep(name));
        }
        match tensor_spec(v, name) {
            Ok(Some(spec)) => {
                let dtype = storage_dtype(&spec.storage_class);
                let value = AttrValue::Tensor {
                    dtype: dtype.unwrap_or(DType::U8),
                    shape: spec.shape.clone(),
                };
                self.specs.push(spec);
                return Ok(value);
            }
            Ok(None) => {}
            Err(reason) => {
                return Err(ImportError::Tensor {
                    path: self.path.to_path_buf(),
                    tensor: name.to_string(),
                    reason,
                });
            }
        }
        Ok(match v {
            Object::Int(i) => AttrValue::Int(*i as i64),
            Object::Long(i) => AttrValue::Int(*i),
            Object::Float(x) => AttrValue::Float(*x),
            Object::Bool(b) => AttrValue::Bool(*b),
            Object::None => AttrValue::None,
            Object::Unicode(s) => AttrValue::Str(s.clone()),
            Object::List(items) | Object::Tuple(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (i, x) in items.iter().enumerate() {
                    out.push(self.value(x, &join(name, &i.to_string()), depth + 1)?);
                }
                AttrValue::List(out)
            }
            Object::Dict(items) => {
                let mut out = Vec::with_capacity(items.len());
                for (k, x) in items.iter().rev() {
                    if let Some(k) = key_of(k) {
                        let value = self.value(x, &join(name, &k), depth + 1)?;
                        out.push((k, value));
                    }
                }
                AttrValue::Dict(out)
            }
            Object::Build { callable, args } => {
                self.state(args, name, depth)?;
                AttrValue::Object(class_name(callable))
            }
            Object::Reduce { callable, args } => {
                let class = class_name(callable);
                match (class.as_str(), args.as_ref()) {
                    (
                        "__builtin__.set" | "builtins.set" | "builtins.frozenset",
                        Object::Tuple(a),
                    ) if a.len() == 1 => self.value(&a[0], name, depth + 1)?,
                    _ => AttrValue::Object(class),
                }
            }
            c @ Object::Class { .. } => AttrValue::Global(class_name(c)),
            other => AttrValue::Unsupported(describe(other)),
        })
    }
}
