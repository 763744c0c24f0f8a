//! Finding binaries and running them as children that die with us.

use std::{
    fs::File,
    io::Read,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use crate::DevnetError;

/// Where `npm install @foundry-rs/anvil` puts the native binary (not the node wrapper,
/// whose PID is not anvil's).
const ANVIL_NATIVE: &str = "node_modules/@foundry-rs/anvil-linux-amd64/bin/anvil";

/// The anvil binary: `$ANVIL_BIN`, else the native binary in a `node_modules` above the
/// current directory or the workspace, else a native `anvil` on `PATH`.
pub fn find_anvil() -> Result<PathBuf, DevnetError> {
    if let Some(path) = std::env::var_os("ANVIL_BIN") {
        return Ok(PathBuf::from(path));
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut roots: Vec<PathBuf> =
        std::env::current_dir().map(|d| d.ancestors().map(Path::to_path_buf).collect()).unwrap_or_default();
    roots.push(workspace);
    if let Some(found) = roots.iter().map(|root| root.join(ANVIL_NATIVE)).find(|p| p.is_file()) {
        return Ok(found);
    }
    search_path("anvil", &[]).filter(|p| !is_script(p)).ok_or_else(|| DevnetError::BinaryNotFound {
        binary: "anvil",
        hint: format!("set ANVIL_BIN, or run `npm ci` in the workspace to get {ANVIL_NATIVE}"),
    })
}

/// The nats-server binary: `$NATS_SERVER_BIN`, else `PATH`, else Debian's `/usr/sbin`.
pub fn find_nats_server() -> Result<PathBuf, DevnetError> {
    if let Some(path) = std::env::var_os("NATS_SERVER_BIN") {
        return Ok(PathBuf::from(path));
    }
    search_path("nats-server", &["/usr/sbin", "/usr/local/bin", "/usr/bin"]).ok_or_else(|| {
        DevnetError::BinaryNotFound {
            binary: "nats-server",
            hint: "set NATS_SERVER_BIN, or `apt-get install nats-server`".into(),
        }
    })
}

fn search_path(name: &str, extra: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).chain(extra.iter().map(PathBuf::from)).map(|dir| dir.join(name)).find(|p| p.is_file())
}

fn is_script(path: &Path) -> bool {
    let mut head = [0u8; 2];
    File::open(path).and_then(|mut f| f.read_exact(&mut head)).map(|_| &head == b"#!").unwrap_or(false)
}

/// A child process whose output goes straight to a log file (no thread of ours copies
/// it: a chatty anvil would otherwise cost this process CPU per line) and which is
/// killed (SIGKILL) and reaped when dropped. On Linux it also dies if the thread that
/// started it exits, so a test killed by its runner leaves nothing behind.
#[derive(Debug)]
pub(crate) struct ChildProcess {
    child: Child,
    binary: &'static str,
    log: PathBuf,
    ready: fn(&str) -> Option<u16>,
}

/// How often [`ChildProcess::ready`] looks at the log for the announcing line.
const READY_POLL: Duration = Duration::from_millis(20);

impl ChildProcess {
    /// Starts `path args` with stdout and stderr appended to `log`; `ready` extracts the
    /// announced value (a port) from one of its lines.
    pub(crate) fn spawn(
        binary: &'static str,
        path: &Path,
        args: &[String],
        log: PathBuf,
        ready: fn(&str) -> Option<u16>,
    ) -> Result<Self, DevnetError> {
        let file = File::create(&log).map_err(|e| DevnetError::io(&log, e))?;
        let err = file.try_clone().map_err(|e| DevnetError::io(&log, e))?;
        let mut command = Command::new(path);
        command.args(args).stdin(Stdio::null()).stdout(Stdio::from(file)).stderr(Stdio::from(err));
        // SAFETY: prctl is async-signal-safe and touches only the child's own state.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child =
            command.spawn().map_err(|source| DevnetError::Spawn { binary, path: path.to_path_buf(), source })?;
        Ok(Self { child, binary, log, ready })
    }

    /// Waits up to `timeout` for the value announced by the `ready` line, reading the log
    /// as it grows.
    pub(crate) async fn ready(&mut self, timeout: Duration) -> Result<u16, DevnetError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = 0;
        loop {
            let text = std::fs::read(&self.log).map_err(|e| DevnetError::io(&self.log, e))?;
            // Only whole lines: the last one may still be being written.
            let complete = text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
            let lines = String::from_utf8_lossy(&text[seen.min(complete)..complete]).into_owned();
            if let Some(port) = lines.lines().find_map(self.ready) {
                return Ok(port);
            }
            seen = complete;
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.not_ready(&format!("it exited ({status}) before announcing its port")));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(self.not_ready(&format!("no port announced within {timeout:?}")));
            }
            tokio::time::sleep(READY_POLL).await;
        }
    }

    pub(crate) fn not_ready(&self, reason: &str) -> DevnetError {
        DevnetError::NotReady { binary: self.binary, reason: reason.to_string(), log: self.log.clone() }
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn signal(&self, signal: libc::c_int) -> std::io::Result<()> {
        let pid = libc::pid_t::try_from(self.pid()).map_err(std::io::Error::other)?;
        // SAFETY: kill(2) on the PID of a child we have not reaped yet.
        if unsafe { libc::kill(pid, signal) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    /// Kills the process and reaps it.
    pub(crate) fn kill(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SIGCONT first: a stopped process still dies of SIGKILL, but be explicit.
            let _ = self.signal(libc::SIGCONT);
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A TCP port that was free a moment ago, for servers that cannot pick their own.
pub fn free_port() -> Result<u16, DevnetError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| DevnetError::io("127.0.0.1:0", e))?;
    listener.local_addr().map(|a| a.port()).map_err(|e| DevnetError::io("127.0.0.1:0", e))
}

/// Whether `pid` is a live process (not gone, not a zombie awaiting its parent).
pub fn is_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
        .unwrap_or(false)
}

/// The processes whose parent is `pid`, from `/proc`.
pub fn child_pids(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return vec![] };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|child| {
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            // Fields after the parenthesised command: state, then the parent's PID.
            stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)) == Some(&pid.to_string())
        })
        .collect()
}
