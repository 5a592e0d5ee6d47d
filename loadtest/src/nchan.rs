//! nginx + nchan as the comparison: installed when missing, configured in a temp dir,
//! run as a child process (master + workers) on loopback.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MODULE: &str = "/usr/lib/nginx/modules/ngx_nchan_module.so";

fn nginx_bin() -> Option<PathBuf> {
    ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// Installs `nginx` and `libnginx-mod-nchan` with apt-get when either is missing.
pub fn ensure_installed() -> Result<PathBuf> {
    if let Some(bin) = nginx_bin() {
        if Path::new(MODULE).exists() {
            return Ok(bin);
        }
    }
    eprintln!("loadtest: installing nginx and libnginx-mod-nchan with apt-get");
    let ok = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    let install = ["install", "-y", "-qq", "nginx", "libnginx-mod-nchan"];
    let installed = ok(&install) || (ok(&["update", "-qq"]) && ok(&install));
    if !installed {
        bail!(
            "nginx + nchan are needed for the side-by-side figures and could not be installed \
             (apt-get install -y nginx libnginx-mod-nchan failed: not root, or no Debian \
             repository?); install them, or pass --targets gateway"
        );
    }
    match nginx_bin() {
        Some(bin) if Path::new(MODULE).exists() => Ok(bin),
        _ => bail!("apt-get installed nginx, but {MODULE} or the nginx binary is missing"),
    }
}

/// A running nginx; stopped (by its own PID) when dropped.
pub struct Nginx {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM to the master: a fast shutdown of its workers too.
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

pub fn config(port: u16, workers: usize, connections: usize) -> String {
    let per_worker = connections.div_ceil(workers.max(1)) + 1024;
    // A process may hold at most 20,000 open files here.
    let nofile = (per_worker * 2).min(20_000);
    let reuseport = if workers > 1 { " reuseport" } else { "" };
    format!(
        r#"load_module {MODULE};
daemon off;
master_process on;
worker_processes {workers};
worker_rlimit_nofile {nofile};
error_log logs/error.log warn;
pid logs/nginx.pid;
events {{
    worker_connections {conns};
    multi_accept on;
}}
http {{
    access_log off;
    client_body_temp_path tmp/body;
    proxy_temp_path tmp/proxy;
    fastcgi_temp_path tmp/fastcgi;
    uwsgi_temp_path tmp/uwsgi;
    scgi_temp_path tmp/scgi;
    keepalive_timeout 600s;
    keepalive_requests 1000000;
    server {{
        listen 127.0.0.1:{port}{reuseport};
        location = /pub {{
            nchan_publisher;
            nchan_channel_id loco;
            nchan_message_buffer_length 16;
        }}
        location = /sub {{
            nchan_subscriber eventsource websocket;
            nchan_channel_id loco;
            nchan_subscriber_first_message newest;
        }}
    }}
}}
"#,
        conns = per_worker.min(nofile)
    )
}

/// Starts nginx with `workers` worker processes sized for `connections` subscribers and
/// waits until it accepts connections.
pub fn start(bin: &Path, workers: usize, connections: usize) -> Result<Nginx> {
    let dir = tempfile::tempdir()?;
    for sub in ["logs", "tmp"] {
        std::fs::create_dir_all(dir.path().join(sub))?;
    }
    let port = free_port()?;
    let conf = dir.path().join("nginx.conf");
    std::fs::write(&conf, config(port, workers, connections))?;
    let child = Command::new(bin)
        .arg("-p")
        .arg(dir.path())
        .arg("-c")
        .arg(&conf)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut nginx = Nginx {
        child,
        port,
        _dir: dir,
    };
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
            && nginx.worker_pids().len() >= workers
        {
            return Ok(nginx);
        }
        if let Ok(Some(status)) = nginx.child.try_wait() {
            let log = std::fs::read_to_string(nginx._dir.path().join("logs/error.log"))
                .unwrap_or_default();
            bail!("nginx exited ({status}): {log}");
        }
        if Instant::now() > until {
            bail!("nginx did not start listening on 127.0.0.1:{port}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Nginx {
    pub fn master_pid(&self) -> u32 {
        self.child.id()
    }

    pub fn worker_pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Master and workers.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids = vec![self.master_pid()];
        pids.extend(self.worker_pids());
        pids
    }
}

/// A JSON delta of about `bytes` bytes carrying `marker` (the gateway's InstanceAdded
/// delta for a 2-port pod is about this size; the run prints both sizes).
pub fn payload(marker: &str, bytes: usize) -> String {
    let head = format!(
        r#"{{"type":"InstanceAdded","id":"{marker}","ts":"{}","instance":{{"id":"{marker}","podName":"{marker}","pad":""#,
        chrono::Utc::now().to_rfc3339()
    );
    let tail = r#""}}"#;
    let pad = bytes.saturating_sub(head.len() + tail.len());
    format!("{head}{}{tail}", "x".repeat(pad))
}
