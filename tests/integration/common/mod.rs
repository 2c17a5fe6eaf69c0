//! Support for the integration tests that run real processes on loopback: free ports, detcd and
//! etcd members in temporary data dirs, etcdctl.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Where test ports come from: below the kernel's ephemeral range (32768 and up on Linux), so
/// that no outgoing connection takes a port between our check and the member's bind, as one can
/// when a port is picked by binding port 0.
const TEST_PORTS: std::ops::Range<u16> = 21_000..32_000;

/// A port nobody listens on right now, with the one above it free too (the member's peer
/// port). Each call moves on from the last in this process, so the members of one test, and of
/// tests running side by side, never get the same or adjacent ports; the start depends on the
/// process id, so test binaries run one after the other rarely meet a port still lingering.
pub fn free_port() -> u16 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let span = (TEST_PORTS.end - TEST_PORTS.start) as u32 / 2;
    let start = std::process::id() % span;
    loop {
        let n = (start + NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)) % span;
        let port = TEST_PORTS.start + 2 * n as u16;
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if free(port) && free(port + 1) {
            return port;
        }
    }
}

pub fn temp_dir(tag: &str) -> PathBuf {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("detcd-test-{}-{tag}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a temp dir");
    dir
}

/// Which server binary a member runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    Detcd,
    Etcd,
}

impl Flavor {
    fn binary(self) -> &'static str {
        match self {
            Flavor::Detcd => env!("CARGO_BIN_EXE_detcd"),
            Flavor::Etcd => "etcd",
        }
    }
}

/// One member of a test cluster, as its command line describes it.
pub struct MemberSpec {
    pub name: String,
    pub client_port: u16,
    pub peer_port: u16,
    pub data_dir: PathBuf,
}

impl MemberSpec {
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }
}

/// A running (or stopped) member process.
pub struct Member {
    pub spec: MemberSpec,
    pub flavor: Flavor,
    pub initial_cluster: String,
    pub extra_args: Vec<String>,
    child: Option<Child>,
    pub log: Arc<Mutex<Vec<String>>>,
    /// The thread copying stderr into `log`; joined once the process has exited, so the log
    /// holds the last lines (a member refusing to start writes its reason just before exiting).
    log_reader: Option<JoinHandle<()>>,
}

impl Member {
    pub fn args(&self) -> Vec<String> {
        let s = &self.spec;
        let mut args = vec![
            format!("--name={}", s.name),
            format!("--data-dir={}", s.data_dir.display()),
            format!("--listen-client-urls=http://127.0.0.1:{}", s.client_port),
            format!("--advertise-client-urls=http://127.0.0.1:{}", s.client_port),
            format!("--listen-peer-urls=http://127.0.0.1:{}", s.peer_port),
            format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{}",
                s.peer_port
            ),
            format!("--initial-cluster={}", self.initial_cluster),
            "--initial-cluster-token=test-cluster".to_string(),
        ];
        args.extend(self.extra_args.iter().cloned());
        args
    }

    /// Starts the process; its stderr is collected into `log`.
    pub fn start(&mut self) {
        let mut command = Command::new(self.flavor.binary());
        command.args(self.args());
        self.spawn(command);
    }

    /// Starts the process with no flags, each of them given as etcd's environment variable
    /// (`--data-dir=D` as `ETCD_DATA_DIR=D`).
    pub fn start_from_environment(&mut self) {
        let mut command = Command::new(self.flavor.binary());
        for arg in self.args() {
            let (flag, value) = arg[2..].split_once('=').expect("--flag=value");
            command.env(
                format!("ETCD_{}", flag.to_uppercase().replace('-', "_")),
                value,
            );
        }
        self.spawn(command);
    }

    fn spawn(&mut self, mut command: Command) {
        assert!(
            self.child.is_none(),
            "member {} already running",
            self.spec.name
        );
        let mut child = command
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting {:?}: {e}", self.flavor));
        let stderr = child.stderr.take().expect("piped stderr");
        let log = self.log.clone();
        self.log_reader = Some(std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                log.lock().unwrap().push(line);
            }
        }));
        self.child = Some(child);
    }

    /// After the process has exited: waits until its last stderr lines are in `log`.
    fn finish_log(&mut self) {
        if let Some(reader) = self.log_reader.take() {
            let _ = reader.join();
        }
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
            self.finish_log();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status code.
    pub fn terminate(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.finish_log();
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let code = child.wait().ok().and_then(|s| s.code());
        self.finish_log();
        code
    }

    /// Waits for the process to exit by itself (e.g. refusing to start); returns its code.
    pub fn wait_exit(&mut self, max: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + max;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                self.finish_log();
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// The process id of the running member.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    pub fn etcdctl(&self, args: &[&str]) -> Output {
        etcdctl(&self.spec.endpoint(), args, None)
    }

    pub fn etcdctl_stdin(&self, args: &[&str], stdin: &str) -> Output {
        etcdctl(&self.spec.endpoint(), args, Some(stdin))
    }
}

impl Drop for Member {
    /// Kills the process and removes its temp dir, unless the test is failing (then the data
    /// dir stays for a look).
    fn drop(&mut self) {
        self.kill();
        if !std::thread::panicking() {
            if let Some(dir) = self.spec.data_dir.parent() {
                let _ = std::fs::remove_dir_all(dir);
            }
        }
    }
}

/// A cluster of `size` members of one flavor on fresh ports and data dirs.
pub fn cluster(flavor: Flavor, size: usize, tag: &str, extra_args: &[&str]) -> Vec<Member> {
    let specs: Vec<MemberSpec> = (0..size)
        .map(|i| {
            let client_port = free_port();
            MemberSpec {
                name: format!("m{i}"),
                client_port,
                peer_port: client_port + 1,
                data_dir: temp_dir(&format!("{tag}-m{i}")).join("data"),
            }
        })
        .collect();
    let initial_cluster = specs
        .iter()
        .map(|s| format!("{}=http://127.0.0.1:{}", s.name, s.peer_port))
        .collect::<Vec<_>>()
        .join(",");
    specs
        .into_iter()
        .map(|spec| Member {
            spec,
            flavor,
            initial_cluster: initial_cluster.clone(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            child: None,
            log: Arc::new(Mutex::new(Vec::new())),
            log_reader: None,
        })
        .collect()
}

/// Runs `check`; if it panics, prints every member's log before passing the panic on, since a
/// member's trouble often shows in another's log (the leader's, say).
pub fn with_logs_on_failure<T>(members: &[Member], check: impl FnOnce() -> T) -> T {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(check)) {
        Ok(value) => value,
        Err(panic) => {
            for m in members {
                eprintln!("--- log of {} ---\n{}", m.spec.name, m.log_text());
            }
            std::panic::resume_unwind(panic)
        }
    }
}

/// Starts every member and waits until a write through the first one succeeds.
pub fn start_all(members: &mut [Member]) {
    for m in members.iter_mut() {
        m.start();
    }
    wait_until_writable(&members[0], Duration::from_secs(30));
}

pub fn wait_until_writable(member: &Member, max: Duration) {
    let deadline = Instant::now() + max;
    loop {
        let out = member.etcdctl(&["put", "__ready_probe", "1", "--command-timeout=2s"]);
        if out.status.success() {
            let del = member.etcdctl(&["del", "__ready_probe"]);
            assert!(
                del.status.success(),
                "{}",
                String::from_utf8_lossy(&del.stderr)
            );
            return;
        }
        if Instant::now() > deadline {
            panic!(
                "{} never became writable: {}\n--- log ---\n{}",
                member.spec.name,
                String::from_utf8_lossy(&out.stderr),
                member.log_text()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs etcdctl (API v3) against one endpoint.
pub fn etcdctl(endpoint: &str, args: &[&str], stdin: Option<&str>) -> Output {
    let mut cmd = Command::new("etcdctl");
    cmd.env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={endpoint}"))
        .args(args);
    match stdin {
        None => cmd
            .stdin(Stdio::null())
            .output()
            .expect("etcdctl runs (make test installs etcd-client)"),
        Some(input) => {
            use std::io::Write;
            let mut child = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("etcdctl runs");
            child
                .stdin
                .take()
                .unwrap()
                .write_all(input.as_bytes())
                .unwrap();
            child.wait_with_output().unwrap()
        }
    }
}

pub fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// etcdctl's error line ("Error: ...") without the client's retry log noise.
pub fn error_line(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a real etcd binary is installed to compare against.
pub fn etcd_available() -> bool {
    Command::new("etcd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `f` on a thread and fails the test if it does not finish in time.
pub fn within<T: Send + 'static>(max: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(max).expect("finished in time")
}

pub fn data_dir_of(member: &Member) -> &Path {
    &member.spec.data_dir
}

/// A gRPC KV client for one member.
pub async fn kv_client(
    member: &Member,
) -> detcd::proto::etcdserverpb::kv_client::KvClient<tonic::transport::Channel> {
    let url = format!("http://{}", member.spec.endpoint());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match detcd::proto::etcdserverpb::kv_client::KvClient::connect(url.clone()).await {
            Ok(c) => return c.max_decoding_message_size(usize::MAX),
            Err(e) if Instant::now() > deadline => panic!("connecting to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The member ids each member's log says are leader, latest last.
pub fn leader_of(members: &[Member]) -> Option<usize> {
    let mut best: Option<(u64, usize)> = None;
    for (i, m) in members.iter().enumerate() {
        let log = m.log.lock().unwrap();
        for line in log.iter() {
            if let Some(rest) = line.strip_prefix("detcd: became leader at term ") {
                let term: u64 = rest.trim().parse().unwrap_or(0);
                if best.is_none_or(|(t, _)| term > t) {
                    best = Some((term, i));
                }
            }
        }
    }
    best.map(|(_, i)| i)
}

/// A gRPC Lease client for one member.
pub async fn lease_client(
    member: &Member,
) -> detcd::proto::etcdserverpb::lease_client::LeaseClient<tonic::transport::Channel> {
    let url = format!("http://{}", member.spec.endpoint());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match detcd::proto::etcdserverpb::lease_client::LeaseClient::connect(url.clone()).await {
            Ok(c) => return c.max_decoding_message_size(usize::MAX),
            Err(e) if Instant::now() > deadline => panic!("connecting to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// A gRPC Watch client for one member.
pub async fn watch_client(
    member: &Member,
) -> detcd::proto::etcdserverpb::watch_client::WatchClient<tonic::transport::Channel> {
    let url = format!("http://{}", member.spec.endpoint());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match detcd::proto::etcdserverpb::watch_client::WatchClient::connect(url.clone()).await {
            Ok(c) => return c.max_decoding_message_size(usize::MAX),
            Err(e) if Instant::now() > deadline => panic!("connecting to {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// The watch stream a Watch call opens: the sender of its requests (the client's side stays
/// open while it lives) and the server's responses.
pub type WatchStream = (
    tokio::sync::mpsc::Sender<detcd::proto::etcdserverpb::WatchRequest>,
    tonic::Streaming<detcd::proto::etcdserverpb::WatchResponse>,
);

/// A Watch call on `client` whose first request is `first`, with the gRPC metadata
/// `hasleader=true` (clientv3's `WithRequireLeader`) if asked; the status if it is refused. It
/// returns once the server answered, which it may only do after a request.
pub async fn watch_call(
    client: &mut detcd::proto::etcdserverpb::watch_client::WatchClient<tonic::transport::Channel>,
    first: detcd::proto::etcdserverpb::WatchRequest,
    has_leader: bool,
) -> Result<WatchStream, tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(1024);
    tx.send(first).await.expect("the channel is open");
    let requests = tokio_stream::wrappers::ReceiverStream::new(rx);
    let mut request = tonic::Request::new(requests);
    if has_leader {
        let metadata = request.metadata_mut();
        metadata.insert("hasleader", "true".parse().unwrap());
    }
    let responses = client.watch(request).await?.into_inner();
    Ok((tx, responses))
}

/// The resident set size of a process, in KiB (`VmRSS` of /proc/<pid>/status).
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Sends one plain HTTP/1.0 request (so that neither side chunks a body) and returns the
/// connection, to read the answer from.
pub fn http_send(endpoint: &str, method: &str, path: &str, body: &str) -> std::net::TcpStream {
    let mut stream = std::net::TcpStream::connect(endpoint).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nHost: {endpoint}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_whole(&mut stream, &request);
    stream
}

/// Sends a request in one write, as HTTP clients do: `write!` on a socket sends each piece of
/// its format in a segment of its own, and a server that closes the connection with a late
/// piece unread resets it, which can discard the answer before it is read.
pub fn send_whole(stream: &mut std::net::TcpStream, request: &str) {
    use std::io::Write;
    stream.write_all(request.as_bytes()).unwrap();
}

/// One plain HTTP/1.0 request: the answer's status and its body, read to its end.
pub fn http(endpoint: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    use std::io::Read;
    let mut answer = String::new();
    http_send(endpoint, method, path, body)
        .read_to_string(&mut answer)
        .unwrap();
    let status = answer[9..12].parse().expect("a status code");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_string())
}

/// One gateway call with the token in the `Authorization` header, as etcd's gateway takes it:
/// its JSON answer with what names a particular member taken out.
pub fn gateway_call(member: &Member, path: &str, body: &str, token: &str) -> serde_json::Value {
    use std::io::Read;
    let endpoint = member.spec.endpoint();
    let mut stream = std::net::TcpStream::connect(&endpoint).expect("connect");
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .unwrap();
    let request = format!(
        "POST {path} HTTP/1.0\r\nHost: {endpoint}\r\nAuthorization: {token}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    send_whole(&mut stream, &request);
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let mut value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {body:?}: {e}"));
    if let Some(header) = value
        .get_mut("header")
        .and_then(serde_json::Value::as_object_mut)
    {
        header.retain(|key, _| key == "revision");
    }
    value
}

/// A token for `user`, through the gateway's Authenticate (no token needed for it).
pub fn gateway_login(member: &Member, user: &str, password: &str) -> String {
    let body = format!(r#"{{"name":"{user}","password":"{password}"}}"#);
    let mut answer = String::new();
    std::io::Read::read_to_string(
        &mut http_send(
            &member.spec.endpoint(),
            "POST",
            "/v3/auth/authenticate",
            &body,
        ),
        &mut answer,
    )
    .unwrap();
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let value: serde_json::Value =
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{body:?}: {e}"));
    value["token"]
        .as_str()
        .unwrap_or_else(|| panic!("no token in {value}"))
        .to_string()
}

/// The answers of etcd (`expected`) and detcd (`got`) to the same named steps: equal step by
/// step, or a failure listing every step that differs. `AUTH_TEST_DUMP=1` prints them all.
pub fn assert_same_steps(
    expected: &[(String, serde_json::Value)],
    got: &[(String, serde_json::Value)],
) {
    let shown = |step: &str, e: &serde_json::Value, g: &serde_json::Value| {
        format!("{step}\n  etcd:  {e}\n  detcd: {g}")
    };
    let pairs = expected.iter().zip(got);
    if std::env::var_os("AUTH_TEST_DUMP").is_some() {
        for ((step, e), (_, g)) in pairs.clone() {
            println!("{}", shown(step, e, g));
        }
    }
    let mismatches: Vec<String> = pairs
        .filter(|(e, g)| e != g)
        .map(|((step, e), (_, g))| shown(step, e, g))
        .collect();
    assert!(
        mismatches.is_empty() && expected.len() == got.len(),
        "{} of {} steps differ:\n{}",
        mismatches.len(),
        expected.len(),
        mismatches.join("\n")
    );
}
