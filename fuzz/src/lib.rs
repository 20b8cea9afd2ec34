//! Shared by the fuzz targets: decoding fuzzer input into a model folder
//! (relative file names -> contents), and the manager every target loads
//! through, created once per process.
//!
//! A folder comes from the input in one of two ways:
//! - input starting with [`ARCHIVE_MAGIC`] is a plain archive of files
//!   (`[u8 name length][name][u32 LE length][contents]`, repeated): the seed
//!   corpus is written this way (`gen_corpus.py`), so that libFuzzer mutates
//!   real model folders byte by byte;
//! - anything else is decoded with `arbitrary` into [`Folder`], a structure
//!   biased towards the names and contents real models have (configs,
//!   indexes, shards, diffusers components, safetensors files built from a
//!   list of tensors and then damaged in one chosen way).

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use model_manager::{ErrorCode, ModelManager, ModelSource, PageCache, State};

/// Marks input that is a plain archive of files (see the crate docs).
pub const ARCHIVE_MAGIC: &[u8; 4] = b"MMF1";

/// The memory budget of the fuzzing managers: a fuzzed header cannot make a
/// load allocate more than this.
pub const BUDGET: u64 = 64 << 20;

/// A folder: relative names (with `/`) to contents.
pub type Files = BTreeMap<String, Vec<u8>>;

/// Decode fuzzer input into a folder.
pub fn decode(data: &[u8]) -> Files {
    match data.strip_prefix(ARCHIVE_MAGIC) {
        Some(rest) => unarchive(rest),
        None => Folder::arbitrary_take_rest(Unstructured::new(data))
            .map(Folder::build)
            .unwrap_or_default(),
    }
}

/// Parse the plain archive format; a short or cut entry ends it.
pub fn unarchive(mut data: &[u8]) -> Files {
    let mut files = Files::new();
    while let Some((&name_len, rest)) = data.split_first() {
        let Some((name, rest)) = split(rest, usize::from(name_len)) else {
            break;
        };
        let Some((len, rest)) = split(rest, 4) else {
            break;
        };
        let len = u32::from_le_bytes(len.try_into().unwrap_or_default()) as usize;
        let (contents, rest) = split(rest, len).unwrap_or((rest, &[]));
        files.insert(
            String::from_utf8_lossy(name).into_owned(),
            contents.to_vec(),
        );
        data = rest;
    }
    files
}

fn split(data: &[u8], n: usize) -> Option<(&[u8], &[u8])> {
    (n <= data.len()).then(|| data.split_at(n))
}

/// Write `files` in the archive format (for corpus tools).
pub fn archive(files: &Files) -> Vec<u8> {
    let mut out = ARCHIVE_MAGIC.to_vec();
    for (name, contents) in files {
        let name = &name.as_bytes()[..name.len().min(255)];
        out.push(name.len() as u8);
        out.extend_from_slice(name);
        out.extend_from_slice(&(contents.len() as u32).to_le_bytes());
        out.extend_from_slice(contents);
    }
    out
}

/// A folder, as `arbitrary` decodes it.
#[derive(Arbitrary, Debug)]
pub struct Folder {
    pub entries: Vec<Entry>,
}

impl Folder {
    pub fn build(self) -> Files {
        self.entries
            .into_iter()
            .map(|e| (e.dir.join(&e.name.to_string()), e.contents.build()))
            .collect()
    }
}

#[derive(Arbitrary, Debug)]
pub struct Entry {
    pub dir: Dir,
    pub name: FileName,
    pub contents: Contents,
}

/// The folder a file is in.
#[derive(Arbitrary, Debug)]
pub enum Dir {
    Root,
    Unet,
    Transformer,
    Vae,
    TextEncoder,
    Scheduler,
    Other(String),
}

impl Dir {
    fn name(&self) -> &str {
        match self {
            Dir::Root => "",
            Dir::Unet => "unet",
            Dir::Transformer => "transformer",
            Dir::Vae => "vae",
            Dir::TextEncoder => "text_encoder",
            Dir::Scheduler => "scheduler",
            Dir::Other(name) => name,
        }
    }

    fn join(&self, file: &str) -> String {
        match self.name() {
            "" => file.to_string(),
            dir => format!("{dir}/{file}"),
        }
    }
}

/// A file name: mostly the ones real models use.
#[derive(Arbitrary, Debug)]
pub enum FileName {
    ModelIndex,
    Config,
    SchedulerConfig,
    Index,
    DiffusersIndex,
    Weights,
    DiffusersWeights,
    Shard(Shard),
    Other(String),
}

impl std::fmt::Display for FileName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FileName::ModelIndex => f.write_str("model_index.json"),
            FileName::Config => f.write_str("config.json"),
            FileName::SchedulerConfig => f.write_str("scheduler_config.json"),
            FileName::Index => f.write_str("model.safetensors.index.json"),
            FileName::DiffusersIndex => {
                f.write_str("diffusion_pytorch_model.safetensors.index.json")
            }
            FileName::Weights => f.write_str("model.safetensors"),
            FileName::DiffusersWeights => f.write_str("diffusion_pytorch_model.safetensors"),
            FileName::Shard(s) => write!(f, "{s}"),
            FileName::Other(name) => f.write_str(name),
        }
    }
}

/// `model-0000I-of-0000N.safetensors` (or the diffusers stem).
#[derive(Arbitrary, Debug)]
pub struct Shard {
    pub i: u8,
    pub n: u8,
    pub diffusers: bool,
}

impl std::fmt::Display for Shard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let stem = if self.diffusers {
            "diffusion_pytorch_model"
        } else {
            "model"
        };
        write!(
            f,
            "{stem}-{:05}-of-{:05}.safetensors",
            self.i % 4 + 1,
            self.n % 4 + 1
        )
    }
}

/// What a file holds.
#[derive(Arbitrary, Debug)]
pub enum Contents {
    Safetensors(Safetensors),
    ShardIndex(ShardIndex),
    ModelIndex(ModelIndex),
    Config(Config),
    Json(Json),
    Raw(Vec<u8>),
}

impl Contents {
    pub fn build(self) -> Vec<u8> {
        match self {
            Contents::Safetensors(s) => s.build(),
            Contents::ShardIndex(i) => i.build().into_bytes(),
            Contents::ModelIndex(i) => i.build().into_bytes(),
            Contents::Config(c) => c.build().into_bytes(),
            Contents::Json(j) => j.to_string().into_bytes(),
            Contents::Raw(bytes) => bytes,
        }
    }
}

/// A tensor name: mostly a few shared ones, so indexes and files agree.
#[derive(Arbitrary, Debug)]
pub enum TensorName {
    W(u8),
    Other(String),
}

impl std::fmt::Display for TensorName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TensorName::W(n) => write!(f, "w{}", n % 8),
            TensorName::Other(name) => f.write_str(name),
        }
    }
}

/// The dtypes a header may name, the unloadable and unknown included.
const DTYPES: &[(&str, usize)] = &[
    ("F32", 4),
    ("F16", 2),
    ("BF16", 2),
    ("F64", 8),
    ("I64", 8),
    ("I32", 4),
    ("I16", 2),
    ("U32", 4),
    ("U8", 1),
    ("I8", 1),
    ("BOOL", 1),
    ("F8_E4M3", 1),
    ("F8_E5M2", 1),
    ("U16", 2),
    ("U64", 8),
    ("F4", 1),
    ("Q4", 1),
    ("", 1),
];

#[derive(Arbitrary, Debug)]
pub struct TensorSpec {
    pub name: TensorName,
    pub dtype: u8,
    /// Up to 4 dimensions of up to 8.
    pub shape: Vec<u8>,
}

/// One way to damage a well-formed file.
#[derive(Arbitrary, Debug)]
pub enum Damage {
    None,
    /// Cut the file to this many bytes.
    Truncate(u16),
    /// Append bytes.
    Extra(u8),
    /// Replace the 8-byte header length.
    HeaderLength(u64),
    /// Shift one tensor's offsets.
    Shift {
        tensor: u8,
        start: i32,
        end: i32,
    },
    /// Replace one tensor's shape with these (huge) dimensions.
    Shape {
        tensor: u8,
        dims: Vec<u64>,
    },
    /// Overwrite a byte of the header.
    Poke {
        at: u16,
        byte: u8,
    },
    /// Pad the header with spaces (as writers align it).
    Pad(u8),
}

/// A safetensors file built from a list of tensors, then damaged.
#[derive(Arbitrary, Debug)]
pub struct Safetensors {
    pub tensors: Vec<TensorSpec>,
    pub metadata: Option<Vec<(String, String)>>,
    pub damage: Damage,
}

impl Safetensors {
    pub fn build(self) -> Vec<u8> {
        let mut entries = Vec::new();
        let mut offset = 0u64;
        for (i, t) in self.tensors.iter().enumerate() {
            let (dtype, size) = DTYPES[usize::from(t.dtype) % DTYPES.len()];
            let mut shape: Vec<u64> = t.shape.iter().take(4).map(|d| u64::from(d % 9)).collect();
            let elems: u64 = shape.iter().product();
            let len = elems * size as u64;
            let (mut start, mut end) = (offset, offset + len);
            offset = end;
            match &self.damage {
                Damage::Shift {
                    tensor,
                    start: ds,
                    end: de,
                } if usize::from(*tensor) % self.tensors.len().max(1) == i => {
                    start = start.wrapping_add_signed(i64::from(*ds));
                    end = end.wrapping_add_signed(i64::from(*de));
                }
                Damage::Shape { tensor, dims }
                    if usize::from(*tensor) % self.tensors.len().max(1) == i =>
                {
                    shape = dims.iter().take(6).copied().collect();
                }
                _ => {}
            }
            entries.push(format!(
                "{}:{{\"dtype\":{},\"shape\":{:?},\"data_offsets\":[{start},{end}]}}",
                json_string(&t.name.to_string()),
                json_string(dtype),
                shape
            ));
        }
        if let Some(metadata) = &self.metadata {
            let pairs: Vec<String> = metadata
                .iter()
                .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
                .collect();
            entries.push(format!("\"__metadata__\":{{{}}}", pairs.join(",")));
        }
        let mut header = format!("{{{}}}", entries.join(",")).into_bytes();
        if let Damage::Pad(n) = self.damage {
            header.extend(std::iter::repeat_n(b' ', usize::from(n)));
        }
        if let Damage::Poke { at, byte } = self.damage {
            if !header.is_empty() {
                let at = usize::from(at) % header.len();
                header[at] = byte;
            }
        }
        let mut file = match self.damage {
            Damage::HeaderLength(n) => n,
            _ => header.len() as u64,
        }
        .to_le_bytes()
        .to_vec();
        file.extend_from_slice(&header);
        file.extend((0..offset.min(1 << 20)).map(|i| i as u8));
        match self.damage {
            Damage::Truncate(n) => file.truncate(usize::from(n)),
            Damage::Extra(n) => file.extend(std::iter::repeat_n(0xee, usize::from(n))),
            _ => {}
        }
        file
    }
}

/// A shard name as an index writes it.
#[derive(Arbitrary, Debug)]
pub enum ShardName {
    Shard(Shard),
    DotSlash(Shard),
    Weights,
    Other(String),
}

impl std::fmt::Display for ShardName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ShardName::Shard(s) => write!(f, "{s}"),
            ShardName::DotSlash(s) => write!(f, "./{s}"),
            ShardName::Weights => f.write_str("model.safetensors"),
            ShardName::Other(name) => f.write_str(name),
        }
    }
}

/// `*.safetensors.index.json`.
#[derive(Arbitrary, Debug)]
pub struct ShardIndex {
    pub weight_map: Vec<(TensorName, ShardName)>,
    /// Replaces the map with this value.
    pub not_a_map: Option<Json>,
}

impl ShardIndex {
    pub fn build(self) -> String {
        let map = match self.not_a_map {
            Some(json) => json.to_string(),
            None => {
                let pairs: Vec<String> = self
                    .weight_map
                    .iter()
                    .map(|(t, s)| {
                        format!(
                            "{}:{}",
                            json_string(&t.to_string()),
                            json_string(&s.to_string())
                        )
                    })
                    .collect();
                format!("{{{}}}", pairs.join(","))
            }
        };
        format!("{{\"metadata\":{{\"total_size\":0}},\"weight_map\":{map}}}")
    }
}

/// `model_index.json`.
#[derive(Arbitrary, Debug)]
pub struct ModelIndex {
    pub components: Vec<(Dir, Presence)>,
}

/// How `model_index.json` lists a component.
#[derive(Arbitrary, Debug)]
pub enum Presence {
    Present,
    Null,
    NullPair,
    Other(Json),
}

impl ModelIndex {
    pub fn build(self) -> String {
        let mut pairs = vec![
            "\"_class_name\":\"StableDiffusionPipeline\"".to_string(),
            "\"_diffusers_version\":\"0.30.0\"".to_string(),
        ];
        for (dir, presence) in &self.components {
            let value = match presence {
                Presence::Present => "[\"diffusers\",\"Module\"]".to_string(),
                Presence::Null => "null".to_string(),
                Presence::NullPair => "[null,null]".to_string(),
                Presence::Other(json) => json.to_string(),
            };
            pairs.push(format!("{}:{value}", json_string(dir.name())));
        }
        format!("{{{}}}", pairs.join(","))
    }
}

/// A `config.json`.
#[derive(Arbitrary, Debug)]
pub struct Config {
    pub sample_size: Option<Json>,
    pub extra: Vec<(String, Json)>,
}

impl Config {
    pub fn build(self) -> String {
        let mut pairs = Vec::new();
        if let Some(s) = self.sample_size {
            pairs.push(format!("\"sample_size\":{s}"));
        }
        for (k, v) in &self.extra {
            pairs.push(format!("{}:{v}", json_string(k)));
        }
        format!("{{{}}}", pairs.join(","))
    }
}

/// Any JSON value.
#[derive(Arbitrary, Debug)]
pub enum Json {
    Null,
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
    /// Not JSON at all.
    Text(String),
}

impl std::fmt::Display for Json {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Json::Null => f.write_str("null"),
            Json::Bool(b) => write!(f, "{b}"),
            Json::Int(n) => write!(f, "{n}"),
            Json::Uint(n) => write!(f, "{n}"),
            Json::Float(x) if x.is_finite() => write!(f, "{x:?}"),
            Json::Float(_) => f.write_str("1e999"),
            Json::Str(s) => f.write_str(&json_string(s)),
            Json::Array(items) => {
                f.write_str("[")?;
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{item}")?;
                }
                f.write_str("]")
            }
            Json::Object(pairs) => {
                f.write_str("{")?;
                for (i, (k, v)) in pairs.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{}:{v}", json_string(k))?;
                }
                f.write_str("}")
            }
            Json::Text(s) => f.write_str(s),
        }
    }
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The runtime the fuzzing manager's tasks run on (current-thread: driven
/// by the fuzzing thread while it waits for a load; reads go to its
/// blocking pool, whose threads are reused).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime")
    })
}

/// One manager per process, with a small budget and one read thread.
pub fn manager() -> &'static ModelManager {
    manager_with(PageCache::Auto)
}

/// The manager for loads with `policy`: `Auto` (buffered reads) or
/// `Bypass` (direct I/O, for files on disk); one per policy per process.
pub fn manager_with(policy: PageCache) -> &'static ModelManager {
    static BUFFERED: OnceLock<ModelManager> = OnceLock::new();
    static DIRECT: OnceLock<ModelManager> = OnceLock::new();
    let cell = if policy == PageCache::Bypass {
        &DIRECT
    } else {
        &BUFFERED
    };
    cell.get_or_init(|| {
        ModelManager::builder()
            .memory_budget(BUDGET)
            .read_threads(1)
            .return_memory_to_os(false)
            .drain_timeout(Duration::from_secs(1))
            .runtime(runtime().handle().clone())
            .page_cache(policy)
            .build()
            .expect("a manager")
    })
}

/// Which inputs [`inspect_and_load`] loads besides those `inspect` accepts.
#[derive(Clone, Copy, Debug)]
pub enum LoadRefused {
    /// None: `inspect` already ran the same resolution.
    Never,
    /// One in `n`, chosen by the input's contents (so a reproducer replays
    /// the same way): enough to check that a load fails as `inspect` did
    /// and recovers, without paying a thread hand-off for every refusal.
    OneIn(u32),
}

/// Inspect `source`, then load it through the shared manager if `inspect`
/// accepted it (or as `refused` says): the load must end Ready or Failed
/// (never panic, never hang), fail with `inspect`'s error when that failed,
/// and leave nothing resident when it failed.
pub fn inspect_and_load(source: ModelSource, refused: LoadRefused, seed: &[u8]) {
    inspect_and_load_with(source, refused, seed, PageCache::Auto);
}

/// [`inspect_and_load`], loading with the page-cache `policy`.
pub fn inspect_and_load_with(
    source: ModelSource,
    refused: LoadRefused,
    seed: &[u8],
    policy: PageCache,
) {
    let inspected = model_manager::inspect(&source);
    if inspected.is_err() {
        let sampled = match refused {
            LoadRefused::Never => false,
            LoadRefused::OneIn(n) => {
                let hash = seed.iter().fold(0x811c_9dc5u32, |h, &b| {
                    (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
                });
                hash % n.max(1) == 0
            }
        };
        if !sampled {
            return;
        }
    }
    let manager = manager_with(policy);
    // A path is the same source for every input (`inspect_path` writes each
    // one to the same folder): a load of it while its model is ready would
    // return that model instead of reading the new files.
    let same_each_time = matches!(source, ModelSource::Path(_));
    let handle = match manager.load(source) {
        Ok(handle) => handle,
        Err(e) => panic!("load refused: {e}"),
    };
    let outcome = runtime().block_on(std::future::IntoFuture::into_future(handle));
    let state = manager.current_state();
    match (&inspected, &outcome) {
        (_, Ok(_)) => {
            assert_eq!(state, State::Ready);
            assert!(
                inspected.is_ok(),
                "loaded what inspect refused: {inspected:?}"
            );
            // The next input's load of the same path reads its own files.
            if same_each_time {
                if let Err(e) = runtime().block_on(manager.unload()) {
                    panic!("unload after a load: {e}");
                }
            }
        }
        (Err(i), Err(l)) => {
            assert_eq!(state, State::Failed, "{l}");
            assert_eq!(i.code(), l.code(), "inspect: {i}; load: {l}");
            assert_eq!(manager.resident_bytes(), 0);
        }
        (Ok(_), Err(l)) => {
            assert_eq!(state, State::Failed, "{l}");
            assert!(
                matches!(
                    l.code(),
                    ErrorCode::UnsupportedDtype | ErrorCode::InsufficientMemory | ErrorCode::Device
                ),
                "inspect passed, load failed: {l}"
            );
            assert_eq!(manager.resident_bytes(), 0);
        }
    }
}

/// A file name safe to create under a folder: relative, no `..`, no NUL,
/// not too long. `None` if `name` is not one.
pub fn safe_relative(name: &str) -> Option<PathBuf> {
    if name.is_empty() || name.len() > 200 || name.contains('\0') {
        return None;
    }
    let path = Path::new(name);
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(part) if part.len() < 100 => out.push(part),
            Component::CurDir => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}
