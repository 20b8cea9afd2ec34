//! What `load` does with a terminal and with Ctrl-C: a progress bar drawn
//! on a terminal only (pipes get the plain lines), and a Ctrl-C in the
//! middle of a load ends it with `cancelled` and status 130, leaving
//! nothing behind.

#![cfg(unix)] // a pseudo-terminal through `script`, signals, /proc (Linux)

mod common;

use common::{safetensors_header, wait_bounded, Sandbox};
use std::path::{Path, PathBuf};
use std::process::Stdio;

/// A model of `tensors` F32 tensors of `mib` MiB in all, written to disk a
/// tensor at a time, its bytes a pattern (no zero pages, nothing sparse):
/// a load reads every byte.
fn big_model(dir: &Path, name: &str, mib: usize, tensors: usize) -> PathBuf {
    use std::io::Write;
    let per = mib * (1 << 20) / tensors;
    let names: Vec<String> = (0..tensors).map(|i| format!("blocks.{i}.weight")).collect();
    let shape = [(per / 4) as u64];
    let entries: Vec<(&str, &str, &[u64], usize)> = names
        .iter()
        .map(|n| (n.as_str(), "F32", &shape[..], per))
        .collect();
    let path = dir.join(name);
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    file.write_all(&safetensors_header(&entries)).unwrap();
    let mut data: Vec<u8> = (0..per).map(|j| (j * 7 + 1) as u8).collect();
    for i in 0..tensors {
        // Each tensor its own first bytes.
        data[..8].copy_from_slice(&(i as u64).to_le_bytes());
        file.write_all(&data).unwrap();
    }
    file.flush().unwrap();
    path
}

/// Escape codes and carriage returns: what a progress bar draws with.
fn drawing(bytes: &[u8]) -> bool {
    bytes.contains(&b'\r') || bytes.windows(2).any(|w| w == b"\x1b[")
}

#[test]
fn no_progress_bar_on_pipes() {
    let s = Sandbox::new();
    let model = big_model(s.path(), "model.safetensors", 16, 64);
    let run = s.run(["load".as_ref(), model.as_os_str()]);
    run.success();
    assert!(
        !drawing(&run.output.stdout) && !drawing(&run.output.stderr),
        "a progress bar drawn on a pipe:\n{:?}\n{:?}",
        run.stdout,
        run.stderr
    );
    assert!(run.stdout.starts_with("loaded "), "{}", run.stdout);
    run.says("  tensors     64");
}

/// `script` (util-linux) runs the command on a pseudo-terminal; without
/// it, or without a pseudo-terminal to open, this half of the test has
/// nothing to run on and says so.
#[test]
fn a_progress_bar_on_a_terminal() {
    let has_a_terminal = std::process::Command::new("script")
        .args(["-q", "-e", "-c", "true", "/dev/null"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !has_a_terminal {
        eprintln!(
            "skipped: `script -qec true /dev/null` did not run (no util-linux `script`, \
             or no pseudo-terminal to open), so there is no terminal to draw a bar on"
        );
        return;
    }
    let s = Sandbox::new();
    let model = big_model(s.path(), "model.safetensors", 16, 64);
    let command = format!(
        "'{}' load '{}'; echo \"status $?\"",
        common::binary().display(),
        model.display()
    );
    let mut script = std::process::Command::new("script");
    script
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .current_dir(s.path())
        .env("HF_HUB_CACHE", s.hub())
        .env("TMPDIR", s.tmp())
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = script.spawn().expect("script starts");
    let output = wait_bounded(child, "model-manager load on a terminal");
    common::assert_no_panic("model-manager load on a terminal", &output);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{}\n{text}", output.status);
    assert!(text.contains("status 0"), "{text:?}");
    assert!(text.contains("loaded "), "{text:?}");
    assert!(
        drawing(&output.stdout),
        "no progress bar drawn on a terminal: {text:?}"
    );
}

/// Ctrl-C in the middle of a load, watched through /proc.
#[cfg(target_os = "linux")]
mod ctrl_c {
    use super::*;
    use std::time::{Duration, Instant};

    /// Whether `pid` catches SIGINT (its handler is installed): bit 2 of
    /// `SigCgt` in `/proc/PID/status`.
    fn catches_sigint(pid: u32) -> bool {
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigCgt:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| mask & (1 << (libc::SIGINT - 1)) != 0)
    }

    /// Whether `pid` has `file` open.
    fn has_open(pid: u32, file: &Path) -> bool {
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            return false;
        };
        fds.flatten()
            .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target == file))
    }

    /// Every file and folder under `dir`, sorted.
    fn tree(dir: &Path) -> Vec<PathBuf> {
        let mut all = Vec::new();
        let mut todo = vec![dir.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let path = e.path();
                if e.file_type().unwrap().is_dir() {
                    todo.push(path.clone());
                }
                all.push(path);
            }
        }
        all.sort();
        all
    }

    #[test]
    fn ctrl_c_cancels_a_load() {
        let s = Sandbox::new();
        // Large enough that the load is still reading when the signal comes,
        // which is as soon as the command has the file open.
        let model = big_model(s.path(), "big.safetensors", 1024, 256);
        let model = model.canonicalize().unwrap();
        let before = tree(s.path());

        let mut child = s
            .std_cmd(["load".as_ref(), model.as_os_str()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the binary starts");
        let pid = child.id();
        let started = Instant::now();
        // Ready for Ctrl-C and loading: the handler is installed and the model
        // file is open.
        while !(catches_sigint(pid) && has_open(pid, &model)) {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("the load ended ({status}) before it could be interrupted");
            }
            assert!(
                started.elapsed() < common::TIMEOUT,
                "the load never started"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        // SAFETY: `kill` only sends a signal, to our own child.
        let sent = unsafe { libc::kill(pid as libc::pid_t, libc::SIGINT) };
        assert_eq!(sent, 0, "kill -INT {pid}");
        let output = wait_bounded(child, "model-manager load, interrupted");
        common::assert_no_panic("model-manager load, interrupted", &output);
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stdout.contains("loaded "),
            "the load finished before the Ctrl-C; this test needs a larger model on this machine\n{stdout}"
        );
        assert_eq!(
            output.status.code(),
            Some(130),
            "{}\n--- stdout ---\n{stdout}--- stderr ---\n{stderr}",
            output.status
        );
        assert_eq!(stderr, "cancelled\n");
        assert_eq!(stdout, "");
        // The process is gone, and nothing is left behind: no temp files, the
        // sandbox exactly as it was.
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} still there"
        );
        assert_eq!(tree(s.path()), before, "files left behind");
        assert!(tree(&s.tmp()).is_empty());
    }
}
