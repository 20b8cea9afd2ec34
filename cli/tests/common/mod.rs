//! What the command-line tests share: the built `model-manager` binary run
//! as a user runs it (with a bounded wait and no real hub cache), checks
//! that it never panics, and small models written byte by byte.

#![allow(dead_code)] // each test file uses its own part of this

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

/// Longer than any command here takes; a command still running then is
/// killed and its test fails instead of hanging.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The binary under test.
pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_model-manager"))
}

/// An empty folder for a test, with an empty hub cache of its own in
/// `hub/`: the commands run under it never see the user's hub cache, nor
/// reach a real hub (`HF_ENDPOINT` is a closed port on 127.0.0.1 unless a
/// test gives its own).
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a temp folder");
        std::fs::create_dir_all(dir.path().join("hub")).expect("the hub cache folder");
        std::fs::create_dir_all(dir.path().join("tmp")).expect("the temp folder");
        Sandbox { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// The hub cache the commands see (`HF_HUB_CACHE`).
    pub fn hub(&self) -> PathBuf {
        self.path().join("hub")
    }

    /// The temp folder the commands see (`TMPDIR`).
    pub fn tmp(&self) -> PathBuf {
        self.path().join("tmp")
    }

    /// `model-manager ARGS` with this sandbox's environment, run from its
    /// folder, and [`TIMEOUT`] on the wait.
    pub fn cmd<I, S>(&self, args: I) -> assert_cmd::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = assert_cmd::Command::from_std(self.std_cmd(args));
        cmd.timeout(TIMEOUT);
        cmd
    }

    /// The same command as a plain `std::process::Command` (for the tests
    /// that signal the child or read it while it runs), stdin closed.
    pub fn std_cmd<I, S>(&self, args: I) -> std::process::Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = std::process::Command::new(binary());
        cmd.args(args)
            .current_dir(self.path())
            .env("HF_HUB_CACHE", self.hub())
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env_remove("HF_TOKEN")
            .env_remove("HF_HUB_OFFLINE")
            .env("HF_HOME", self.path().join("hf-home"))
            .env("XDG_CACHE_HOME", self.path().join("xdg-cache"))
            .env("TMPDIR", self.tmp())
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(std::process::Stdio::null());
        cmd
    }

    /// Runs `model-manager ARGS` to its end and checks that it did not
    /// panic.
    pub fn run<I, S>(&self, args: I) -> Run
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let args: Vec<std::ffi::OsString> =
            args.into_iter().map(|a| a.as_ref().to_owned()).collect();
        let what = format!("model-manager {}", shown(&args));
        let output = self
            .cmd(&args)
            .output()
            .unwrap_or_else(|e| panic!("{what}: could not run it: {e}"));
        Run::new(what, output)
    }
}

/// The end of one command: its status, stdout and stderr.
pub struct Run {
    pub what: String,
    pub output: Output,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Checks what must hold of every run: it ended by itself (not killed
    /// at [`TIMEOUT`], not by a signal) and did not panic.
    pub fn new(what: String, output: Output) -> Run {
        let run = Run {
            what,
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            output,
        };
        run.assert_no_panic();
        assert!(
            run.output.status.code().is_some(),
            "{}: killed ({}; after {TIMEOUT:?} it is killed as hung)\n{}",
            run.what,
            run.output.status,
            run.both()
        );
        run
    }

    /// Fails with a clear message if the command panicked: status 101, or
    /// `panicked` on stderr.
    pub fn assert_no_panic(&self) {
        assert_no_panic(&self.what, &self.output);
    }

    pub fn code(&self) -> Option<i32> {
        self.output.status.code()
    }

    fn both(&self) -> String {
        format!(
            "--- stdout ---\n{}--- stderr ---\n{}--------------",
            self.stdout, self.stderr
        )
    }

    /// Exit status 0 and nothing on stderr.
    pub fn success(&self) -> &Self {
        assert!(
            self.output.status.success(),
            "{}: {}\n{}",
            self.what,
            self.output.status,
            self.both()
        );
        assert_eq!(self.stderr, "", "{}: stderr on success", self.what);
        self
    }

    /// A failure as users see one: a non-zero exit status and exactly one
    /// line on stderr, starting `error:`. Returns that line.
    pub fn error_line(&self) -> &str {
        assert!(
            !self.output.status.success(),
            "{}: succeeded where it must fail\n{}",
            self.what,
            self.both()
        );
        let lines: Vec<&str> = self.stderr.lines().collect();
        assert!(
            lines.len() == 1 && lines[0].starts_with("error: ") && self.stderr.ends_with('\n'),
            "{}: stderr must be one line starting `error: `\n{}",
            self.what,
            self.both()
        );
        lines[0]
    }

    /// The stdout line that starts with `prefix` (after its indent).
    pub fn line(&self, prefix: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.trim_start().starts_with(prefix))
            .unwrap_or_else(|| panic!("{}: no line `{prefix}...`\n{}", self.what, self.both()))
    }

    /// Asserts that stdout contains `text`.
    pub fn says(&self, text: &str) -> &Self {
        assert!(
            self.stdout.contains(text),
            "{}: stdout should say {text:?}\n{}",
            self.what,
            self.both()
        );
        self
    }
}

/// Fails with a clear message if the output is that of a panic: status
/// 101, or `panicked` on stderr.
pub fn assert_no_panic(what: &str, output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(101) && !stderr.contains("panicked"),
        "{what}: PANICKED ({}); a user must never see this\n--- stderr ---\n{stderr}",
        output.status
    );
}

fn shown(args: &[std::ffi::OsString]) -> String {
    args.iter()
        .map(|a| {
            let a = a.to_string_lossy();
            if a.contains(' ') || a.is_empty() {
                format!("{a:?}")
            } else {
                a.into_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// One tensor of a safetensors file.
pub struct Tensor {
    pub name: String,
    pub dtype: &'static str,
    pub shape: Vec<u64>,
    pub data: Vec<u8>,
}

/// An F32 tensor of `shape` holding 0.0, 0.5, 1.0, ... (little-endian).
pub fn f32_tensor(name: &str, shape: &[u64]) -> Tensor {
    let count: u64 = shape.iter().product();
    let data = (0..count)
        .flat_map(|i| (i as f32 * 0.5).to_le_bytes())
        .collect();
    Tensor {
        name: name.into(),
        dtype: "F32",
        shape: shape.to_vec(),
        data,
    }
}

/// An F16 tensor of `shape`, every value 1.0.
pub fn f16_tensor(name: &str, shape: &[u64]) -> Tensor {
    let count: u64 = shape.iter().product();
    let one = 0x3c00u16.to_le_bytes();
    Tensor {
        name: name.into(),
        dtype: "F16",
        shape: shape.to_vec(),
        data: (0..count).flat_map(|_| one).collect(),
    }
}

/// The start of a safetensors file, written by hand: an 8-byte
/// little-endian header length, then the JSON header (`{"name":{"dtype":..,
/// "shape":[..],"data_offsets":[a,b]},..}`) padded with spaces to a
/// multiple of 8. The tensors' bytes follow it, in the order given, each
/// `(name, dtype, shape, byte length)`.
pub fn safetensors_header(tensors: &[(&str, &str, &[u64], usize)]) -> Vec<u8> {
    let mut entries = Vec::new();
    let mut offset = 0usize;
    for (name, dtype, shape, len) in tensors {
        let shape: Vec<String> = shape.iter().map(u64::to_string).collect();
        entries.push(format!(
            r#""{name}":{{"dtype":"{dtype}","shape":[{}],"data_offsets":[{offset},{}]}}"#,
            shape.join(","),
            offset + len
        ));
        offset += len;
    }
    let mut header = format!("{{{}}}", entries.join(","));
    while header.len() % 8 != 0 {
        header.push(' ');
    }
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes
}

/// A whole safetensors file: [`safetensors_header`], then the bytes.
pub fn safetensors(tensors: &[Tensor]) -> Vec<u8> {
    let entries: Vec<(&str, &str, &[u64], usize)> = tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dtype, t.shape.as_slice(), t.data.len()))
        .collect();
    let mut bytes = safetensors_header(&entries);
    for t in tensors {
        bytes.extend_from_slice(&t.data);
    }
    bytes
}

/// A safetensors file from a header given as text and `data` bytes of 7s,
/// with no padding: for files that are wrong on purpose.
pub fn raw(header: &str, data: usize) -> Vec<u8> {
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend(std::iter::repeat_n(7u8, data));
    bytes
}

/// Writes `bytes` at `path`, creating its folders; returns the path.
pub fn write(path: &Path, bytes: impl AsRef<[u8]>) -> PathBuf {
    std::fs::create_dir_all(path.parent().expect("a file in a folder")).expect("a folder");
    std::fs::write(path, bytes).expect("a file written");
    path.to_path_buf()
}

/// `DIR/tiny.safetensors`: 3 F32 tensors (`embed.weight` [8,4],
/// `layers.0.weight` [4,4], `layers.0.bias` [4]): 52 values, 208 bytes.
pub fn model_file(dir: &Path) -> PathBuf {
    write(
        &dir.join("tiny.safetensors"),
        safetensors(&[
            f32_tensor("embed.weight", &[8, 4]),
            f32_tensor("layers.0.weight", &[4, 4]),
            f32_tensor("layers.0.bias", &[4]),
        ]),
    )
}

/// A model folder `DIR/NAME/`: `model.safetensors` (the tensors of
/// [`model_file`] and an F16 `head.weight` [4,2]) and a `config.json` with
/// `sample_size`.
pub fn model_folder(dir: &Path, name: &str, sample_size: u64) -> PathBuf {
    let root = dir.join(name);
    write(
        &root.join("model.safetensors"),
        safetensors(&[
            f32_tensor("embed.weight", &[8, 4]),
            f32_tensor("layers.0.weight", &[4, 4]),
            f32_tensor("layers.0.bias", &[4]),
            f16_tensor("head.weight", &[4, 2]),
        ]),
    );
    write(
        &root.join("config.json"),
        format!(r#"{{"sample_size": {sample_size}, "hidden_size": 4}}"#),
    );
    root
}

/// A sharded model folder `DIR/NAME/`: two shards listed in
/// `model.safetensors.index.json`, 2 tensors each, and a `config.json`.
pub fn sharded_folder(dir: &Path, name: &str) -> PathBuf {
    let root = dir.join(name);
    write(
        &root.join("model-00001-of-00002.safetensors"),
        safetensors(&[f32_tensor("a.weight", &[4, 4]), f32_tensor("a.bias", &[4])]),
    );
    write(
        &root.join("model-00002-of-00002.safetensors"),
        safetensors(&[f32_tensor("b.weight", &[4, 4]), f32_tensor("b.bias", &[4])]),
    );
    write(
        &root.join("model.safetensors.index.json"),
        r#"{"metadata": {"total_size": 160}, "weight_map": {
            "a.weight": "model-00001-of-00002.safetensors",
            "a.bias": "model-00001-of-00002.safetensors",
            "b.weight": "model-00002-of-00002.safetensors",
            "b.bias": "model-00002-of-00002.safetensors"}}"#,
    );
    write(&root.join("config.json"), r#"{"hidden_size": 4}"#);
    root
}

/// A diffusers pipeline `DIR/NAME/` laid out as the demo writes one:
/// `model_index.json`; `unet/` (config with `sample_size`, 5 tensors);
/// `vae/` (1 tensor); a sharded `text_encoder/` (2 tensors); `scheduler/`
/// and `tokenizer/` without weights. Every matrix is `width` x `width` F32
/// (or width x 4), so the pipeline holds `(6 * width + 8) * width * 4`
/// bytes.
pub fn pipeline(dir: &Path, name: &str, width: u64, sample_size: u64) -> PathBuf {
    let root = dir.join(name);
    write(
        &root.join("model_index.json"),
        r#"{"_class_name": "StableDiffusionPipeline", "_diffusers_version": "0.30.0",
            "unet": ["diffusers", "UNet2DConditionModel"],
            "vae": ["diffusers", "AutoencoderKL"],
            "text_encoder": ["transformers", "CLIPTextModel"],
            "tokenizer": ["transformers", "CLIPTokenizer"],
            "scheduler": ["diffusers", "EulerDiscreteScheduler"],
            "safety_checker": [null, null]}"#,
    );
    write(
        &root.join("unet/config.json"),
        format!(r#"{{"sample_size": {sample_size}, "in_channels": 4}}"#),
    );
    write(
        &root.join("unet/diffusion_pytorch_model.safetensors"),
        safetensors(&[
            f32_tensor("conv_in.weight", &[width, 4]),
            f32_tensor("down_blocks.0.proj.weight", &[width, width]),
            f32_tensor("mid_block.proj.weight", &[width, width]),
            f32_tensor("up_blocks.0.proj.weight", &[width, width]),
            f32_tensor("conv_out.weight", &[4, width]),
        ]),
    );
    write(
        &root.join("vae/config.json"),
        format!(
            r#"{{"sample_size": {}, "latent_channels": 4}}"#,
            sample_size * 8
        ),
    );
    write(
        &root.join("vae/diffusion_pytorch_model.safetensors"),
        safetensors(&[f32_tensor("decoder.proj.weight", &[width, width])]),
    );
    write(
        &root.join("text_encoder/config.json"),
        format!(r#"{{"hidden_size": {width}, "num_hidden_layers": 2}}"#),
    );
    write(
        &root.join("text_encoder/model-00001-of-00002.safetensors"),
        safetensors(&[f32_tensor("layers.0.weight", &[width, width])]),
    );
    write(
        &root.join("text_encoder/model-00002-of-00002.safetensors"),
        safetensors(&[f32_tensor("layers.1.weight", &[width, width])]),
    );
    write(
        &root.join("text_encoder/model.safetensors.index.json"),
        r#"{"metadata": {}, "weight_map": {
            "layers.0.weight": "model-00001-of-00002.safetensors",
            "layers.1.weight": "model-00002-of-00002.safetensors"}}"#,
    );
    write(
        &root.join("scheduler/scheduler_config.json"),
        r#"{"num_train_timesteps": 1000}"#,
    );
    write(
        &root.join("tokenizer/vocab.json"),
        r#"{"<|endoftext|>": 0}"#,
    );
    root
}

/// The bytes of [`pipeline`] at `width`.
pub fn pipeline_bytes(width: u64) -> u64 {
    (6 * width + 8) * width * 4
}

/// A hub cache entry `ORG/NAME` under `hub`, as the hub client lays one
/// out: `models--ORG--NAME/refs/main` holding a commit hash, and the model
/// folder of [`model_folder`] in `snapshots/HASH/`. Also a tag `v1` naming
/// the same commit.
pub fn hub_entry(hub: &Path, repo: &str) -> PathBuf {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let entry = hub.join(format!("models--{}", repo.replace('/', "--")));
    write(&entry.join("refs/main"), commit);
    write(&entry.join("refs/v1"), commit);
    model_folder(&entry.join("snapshots"), commit, 16)
}

/// Waits for `child` at most [`TIMEOUT`] (then kills it and fails), while
/// reading whatever of its stdout and stderr is piped.
pub fn wait_bounded(mut child: std::process::Child, what: &str) -> Output {
    use std::io::Read;
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("the child's status") {
            break status;
        }
        if started.elapsed() > TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what}: still running after {TIMEOUT:?}; killed");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout read"),
        stderr: stderr.join().expect("stderr read"),
    }
}
