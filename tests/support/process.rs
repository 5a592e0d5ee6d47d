//! The shipped binary as a child process.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A child process killed (by its own PID) when dropped.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the binary and returns it with the first URL it prints on stdout.
pub fn start(args: &[&str], env: &[(&str, &Path)]) -> (Running, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loco-discovery"));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (key, value) in env {
        command.env(key, value);
    }
    let mut child = command.spawn().expect("start loco-discovery");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines
            .next()
            .expect("the process printed its address")
            .unwrap();
        if let Some(at) = line.find("http://") {
            break line[at..].trim().to_owned();
        }
    };
    drain(lines);
    (Running(child), url)
}

/// Starts the binary and returns it with the URL on the first stdout line containing `marker`.
pub fn start_marked(args: &[&str], marker: &str) -> (Running, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loco-discovery"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start loco-discovery");
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let url = loop {
        let line = lines.next().expect("the marker line").unwrap();
        if line.contains(marker) {
            let at = line.find("http://").expect("a URL on the marker line");
            break line[at..].split_whitespace().next().unwrap().to_owned();
        }
    };
    drain(lines);
    (Running(child), url)
}

/// Keeps reading the rest of a child's stdout, so its later lines never meet a closed pipe.
fn drain(lines: std::io::Lines<BufReader<std::process::ChildStdout>>) {
    std::thread::spawn(move || lines.for_each(drop));
}

/// Runs the binary to completion; returns its exit status and stderr.
pub fn run_to_end(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_loco-discovery"));
    command.args(args).env_remove("KUBERNETES_SERVICE_HOST");
    for (k, v) in env {
        command.env(k, v);
    }
    let output = command.output().expect("run loco-discovery");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Sends SIGTERM to the child and waits up to `limit` for it to exit.
pub fn terminate(running: &mut Running, limit: Duration) -> Option<ExitStatus> {
    let pid = running.0.id().to_string();
    Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = running.0.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    None
}
