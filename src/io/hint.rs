//! The words of the errors that say what was found where a model was
//! expected, and the way out: the layouts a folder is searched for, the
//! names seen in it, what a file that is not safetensors looks like, what
//! to do about PyTorch's pre-1.6 pickles, how to fill the hub cache (`pull`,
//! the download switch, the hub's own command).
//!
//! Imports nothing of the crate: every module that reads input may use it.

#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::arithmetic_side_effects
)]

/// The most names an error lists; the rest are counted.
const MAX_NAMES: usize = 8;

/// The layouts a model folder is searched for, in order.
pub(crate) const LAYOUTS: &str = "a diffusers pipeline's model_index.json, \
     model.safetensors or diffusion_pytorch_model.safetensors (or their sharded \
     .safetensors.index.json), a single .safetensors file, PyTorch's \
     pytorch_model.bin or diffusion_pytorch_model.bin (or their .bin.index.json), \
     or a single .bin, .pt or .pth file";

/// The files a pipeline component's folder is searched for.
pub(crate) const COMPONENT_LAYOUTS: &str = "model.safetensors or \
     diffusion_pytorch_model.safetensors (or their sharded .safetensors.index.json) \
     or a single .safetensors file, or PyTorch's pytorch_model.bin or \
     diffusion_pytorch_model.bin (or their .bin.index.json) or a single .bin, .pt \
     or .pth file";

/// Whether a file name is a safetensors file's.
pub(crate) fn is_safetensors_name(name: &str) -> bool {
    name.ends_with(".safetensors")
}

/// `a, b, c` or `a, b, c and 3 more`, at most [`MAX_NAMES`] names.
pub(crate) fn names(list: &[String]) -> String {
    let shown: Vec<&str> = list.iter().take(MAX_NAMES).map(String::as_str).collect();
    let mut text = shown.join(", ");
    let more = list.len().saturating_sub(MAX_NAMES);
    if more > 0 {
        text.push_str(&format!(" and {more} more"));
    }
    text
}

/// Whether a file name is one PyTorch saves its weights under (a pickle,
/// or the zip archive of pickles PyTorch writes since 1.6).
pub(crate) fn is_pytorch_name(name: &str) -> bool {
    [".bin", ".pt", ".pth"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// What to do about a pickle PyTorch wrote before 1.6 (or with
/// `_use_new_zipfile_serialization=False`): re-save it in the zip format
/// PyTorch writes since 1.6, which model-manager reads.
pub(crate) fn legacy_pickle(name: &str) -> String {
    format!(
        "model-manager reads the zip archives PyTorch writes since 1.6, not this older \
         format (PyTorch before 1.6, or torch.save with _use_new_zipfile_serialization=False); \
         re-save it in Python with `torch.save(torch.load(\"{name}\"), \"{name}\")`"
    )
}

/// Why a folder holding `entries` (folders end with `/`) has nothing to
/// load: the layouts looked for, the names seen, and what to do.
pub(crate) fn no_weights(entries: &[String]) -> String {
    let seen = if entries.is_empty() {
        "the folder is empty".to_string()
    } else {
        format!("the folder holds {}", names(entries))
    };
    let mut text = format!("no weights found: looked for {LAYOUTS}; {seen}");
    let several = |kind: fn(&str) -> bool| entries.iter().filter(|n| kind(n)).count() > 1;
    if several(is_safetensors_name) {
        text.push_str(
            "; with several .safetensors files and no model.safetensors.index.json \
             to list them, give the path of the one to load",
        );
    } else if several(is_pytorch_name) {
        text.push_str(
            "; with several PyTorch weights files and no pytorch_model.bin.index.json \
             to list them, give the path of the one to load",
        );
    }
    text
}

/// What the first bytes of a file that cannot be safetensors look like
/// (`name` is the file's name, for the PyTorch advice).
pub(crate) fn looks_like(name: &str, head: &[u8]) -> String {
    let pickle = head.first() == Some(&0x80) && head.get(1).is_some_and(|v| (2..=5).contains(v));
    if head.starts_with(b"PK\x03\x04") {
        return "it is a zip archive, as PyTorch saves weights (.bin, .pt, .pth): those load \
                from a file, a folder or bytes, not from a stream"
            .into();
    }
    if pickle {
        return format!(
            "it is a bare Python pickle, as PyTorch before 1.6 saves weights: {}",
            legacy_pickle(name)
        );
    }
    if head.starts_with(b"GGUF") {
        return "it is a GGUF file (llama.cpp's format), which model-manager does not read".into();
    }
    if let Some(text) = text_of(head) {
        return format!("it begins with text: {text:?}");
    }
    let hex: Vec<String> = head.iter().take(8).map(|b| format!("{b:02x}")).collect();
    format!("its first bytes are {}", hex.join(" "))
}

/// `head` as text, if it reads as text (a multi-byte character cut at the
/// end allowed), at most 24 characters of it.
fn text_of(head: &[u8]) -> Option<String> {
    let valid = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(e) if head.len().saturating_sub(e.valid_up_to()) < 4 && e.error_len().is_none() => {
            std::str::from_utf8(head.get(..e.valid_up_to())?).ok()?
        }
        Err(_) => return None,
    };
    let plain = |c: char| !c.is_control() || matches!(c, '\n' | '\r' | '\t');
    if valid.is_empty() || !valid.chars().all(plain) {
        return None;
    }
    let mut text: String = valid.chars().take(24).collect();
    if valid.chars().nth(24).is_some() {
        text.push('…');
    }
    Some(text)
}

/// The ways to fill the hub cache with `repo` (at `revision`, when not
/// `main`): model-manager's own command and download switch, and the hub's
/// command line.
pub(crate) fn download(repo: &str, revision: &str) -> String {
    let (at, rev, hub) = if revision == "main" {
        (
            String::new(),
            String::new(),
            format!("ModelSource::hub({repo:?})"),
        )
    } else {
        (
            format!("@{revision}"),
            format!(" --revision {revision}"),
            format!("ModelSource::hub_revision({repo:?}, {revision:?})"),
        )
    };
    format!(
        "`model-manager pull {repo}{at}`, or load {hub}.download(), or \
         `hf download {repo}{rev}` (or `huggingface-cli download {repo}{rev}`)"
    )
}

#[cfg(test)]
#[allow(clippy::indexing_slicing, clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_capped() {
        let list: Vec<String> = (0..10).map(|i| format!("f{i}")).collect();
        assert_eq!(names(&list[..2]), "f0, f1");
        assert_eq!(names(&list), "f0, f1, f2, f3, f4, f5, f6, f7 and 2 more");
    }

    #[test]
    fn first_bytes_are_described() {
        assert!(looks_like("a.bin", b"PK\x03\x04rest").contains("zip archive"));
        assert!(looks_like("a.pt", b"\x80\x02}q\x00").contains("pickle"));
        assert!(looks_like("a.pt", b"\x80\x02}q\x00")
            .contains("torch.save(torch.load(\"a.pt\"), \"a.pt\")"));
        assert!(looks_like("m.gguf", b"GGUF\x03\x00").contains("GGUF"));
        assert_eq!(
            looks_like("n.txt", b"These are not the weights you are looking for."),
            "it begins with text: \"These are not the weight…\""
        );
        // A character cut at the end of what was read is still text.
        assert!(
            looks_like("n.txt", &"héllo wörld".as_bytes()[..9]).starts_with("it begins with text")
        );
        assert_eq!(
            looks_like("x", &[0, 1, 2, 0xff, 4, 5, 6, 7, 8, 9]),
            "its first bytes are 00 01 02 ff 04 05 06 07"
        );
    }

    #[test]
    fn a_folder_without_weights_is_explained() {
        let empty = no_weights(&[]);
        assert!(empty.contains("the folder is empty"), "{empty}");
        assert!(empty.contains("model_index.json"), "{empty}");
        assert!(empty.contains("pytorch_model.bin"), "{empty}");
        let two = no_weights(&["a.safetensors".into(), "b.safetensors".into()]);
        assert!(two.contains("give the path of the one to load"), "{two}");
        let bins = no_weights(&["a.pt".into(), "b.bin".into()]);
        assert!(bins.contains("several PyTorch weights files"), "{bins}");
    }

    #[test]
    fn the_download_command() {
        assert_eq!(
            download("acme/tiny", "main"),
            "`model-manager pull acme/tiny`, or load ModelSource::hub(\"acme/tiny\").download(), \
             or `hf download acme/tiny` (or `huggingface-cli download acme/tiny`)"
        );
        let v2 = download("acme/tiny", "v2");
        assert!(v2.contains("`model-manager pull acme/tiny@v2`"), "{v2}");
        assert!(
            v2.contains("ModelSource::hub_revision(\"acme/tiny\", \"v2\").download()"),
            "{v2}"
        );
        assert!(v2.contains("hf download acme/tiny --revision v2"), "{v2}");
    }
}
