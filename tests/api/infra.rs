//! Real infrastructure for the connection tests, started and stopped by the
//! tests themselves: a private Postgres cluster (password auth, optional TLS
//! with a CA made here), PgBouncer in transaction mode, a TCP proxy that can
//! cut the line, and a client of the local Secrets Manager (`moto_server`,
//! started around the test run by `scripts/with-moto.sh`).

use std::net::TcpListener as StdListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use uuid::Uuid;

pub const SUPERUSER_PASSWORD: &str = "cluster-superuser-pw";

/// The port of a Postgres URL (5432 when it names none).
pub fn port_of(url: &str) -> u16 {
    let config: tokio_postgres::Config = url.parse().expect("a Postgres URL");
    config.get_ports().first().copied().unwrap_or(5432)
}

pub fn free_port() -> u16 {
    StdListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Runs a Postgres tool as the `postgres` user when we are root (initdb refuses root).
fn pg_command(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut c: Command, what: &str) {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn give_to_postgres(path: &Path) {
    if is_root() {
        let mut c = Command::new("chown");
        c.args(["-R", "postgres"]).arg(path);
        run(c, "chown");
    }
}

/// The directory of `initdb` and `pg_ctl`: `PG_BINDIR`, else next to `initdb`
/// on PATH, else the newest `/usr/lib/postgresql/*/bin`.
pub fn pg_bindir() -> PathBuf {
    if let Ok(dir) = std::env::var("PG_BINDIR") {
        return PathBuf::from(dir);
    }
    if let Ok(out) = Command::new("sh")
        .args(["-c", "command -v initdb"])
        .output()
    {
        let path = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !path.is_empty() {
            return Path::new(&path).parent().expect("bin dir").to_path_buf();
        }
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries (initdb) are needed: install postgresql")
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    dirs.pop().expect("initdb not found")
}

fn temp_dir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A CA and a server certificate for `localhost` / `127.0.0.1`, made with openssl.
pub struct Certs {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Certs {
    pub fn make() -> Self {
        let dir = temp_dir("bp-certs");
        let p = |n: &str| dir.join(n);
        let openssl = |args: &[&str]| {
            let mut c = Command::new("openssl");
            c.args(args).current_dir(&dir);
            run(c, "openssl");
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=batch-processor test CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ]);
        std::fs::write(
            p("ext.cnf"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\nbasicConstraints=CA:FALSE\n",
        )
        .expect("ext");
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "server.crt",
            "-days",
            "2",
            "-extfile",
            "ext.cnf",
        ]);
        Certs {
            ca: p("ca.crt"),
            cert: p("server.crt"),
            key: p("server.key"),
            dir,
        }
    }
}

impl Drop for Certs {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A private Postgres cluster on a free port: password (SCRAM) auth on TCP,
/// TLS when certificates are given. Stopped and removed on drop.
pub struct Cluster {
    dir: PathBuf,
    bindir: PathBuf,
    pub port: u16,
}

impl Cluster {
    pub fn start(certs: Option<&Certs>) -> Self {
        let bindir = pg_bindir();
        let dir = temp_dir("bp-cluster");
        let data = dir.join("data");
        let pwfile = dir.join("pw");
        std::fs::write(&pwfile, SUPERUSER_PASSWORD).expect("pwfile");
        let mut ssl_opts = String::new();
        if let Some(c) = certs {
            for (from, to) in [(&c.cert, "server.crt"), (&c.key, "server.key")] {
                std::fs::copy(from, dir.join(to)).expect("copy cert");
            }
            ssl_opts = format!(
                " -c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
                dir.join("server.crt").display(),
                dir.join("server.key").display()
            );
        }
        give_to_postgres(&dir);
        if certs.is_some() {
            let mut c = Command::new("chmod");
            c.arg("600").arg(dir.join("server.key"));
            run(c, "chmod key");
        }
        let mut initdb = pg_command(&bindir.join("initdb"));
        initdb
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()));
        run(initdb, "initdb");
        let port = free_port();
        let mut start = pg_command(&bindir.join("pg_ctl"));
        start.arg("-D").arg(&data).arg("-l").arg(dir.join("log")).args(["-w", "-o"]).arg(format!(
            "-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={} -c fsync=off{ssl_opts}",
            dir.display()
        ));
        start.arg("start");
        run(start, "pg_ctl start");
        Cluster { dir, bindir, port }
    }

    pub fn url(&self, user: &str, password: &str, db: &str) -> String {
        format!("postgres://{user}:{password}@127.0.0.1:{}/{db}", self.port)
    }

    pub fn superuser_url(&self, db: &str) -> String {
        self.url("postgres", SUPERUSER_PASSWORD, db)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = pg_command(&self.bindir.join("pg_ctl"));
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let _ = stop.status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// PgBouncer in transaction mode in front of the test server, as Supabase's
/// Supavisor (port 6543) or an RDS user's PgBouncer would stand.
pub struct Pgbouncer {
    child: Child,
    dir: PathBuf,
    pub port: u16,
}

impl Pgbouncer {
    pub async fn start(upstream_port: u16) -> Self {
        Self::start_at(upstream_port, "127.0.0.1", free_port()).await
    }

    /// Listening on `addr:port` (any 127.x.y.z is this machine: Supavisor's
    /// port 6543 on an address of its own does not collide).
    pub async fn start_at(upstream_port: u16, addr: &str, port: u16) -> Self {
        let dir = temp_dir("bp-pgbouncer");
        std::fs::write(dir.join("users.txt"), "\"postgres\" \"\"\n").expect("userlist");
        std::fs::write(
            dir.join("pgbouncer.ini"),
            format!(
                "[databases]\n* = host=127.0.0.1 port={upstream_port}\n\n[pgbouncer]\n\
                 listen_addr = {addr}\nlisten_port = {port}\nunix_socket_dir =\n\
                 auth_type = trust\nauth_file = {users}\npool_mode = transaction\n\
                 default_pool_size = 4\nmax_client_conn = 200\n\
                 logfile = {log}\npidfile = {pid}\n",
                users = dir.join("users.txt").display(),
                log = dir.join("pgbouncer.log").display(),
                pid = dir.join("pgbouncer.pid").display(),
            ),
        )
        .expect("ini");
        give_to_postgres(&dir);
        let bin = ["/usr/sbin/pgbouncer", "/usr/bin/pgbouncer"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("pgbouncer");
        let mut cmd = Command::new(bin);
        if is_root() {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd
            .arg(dir.join("pgbouncer.ini"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("pgbouncer starts (make tools installs it)");
        for _ in 0..100 {
            if TcpStream::connect((addr, port)).await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Pgbouncer { child, dir, port }
    }
}

impl Drop for Pgbouncer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A TCP proxy in front of Postgres whose line the test can cut and restore.
/// Cut: open connections are dropped and new ones are accepted and closed at once.
pub struct Proxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    links: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream_port: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let port = listener.local_addr().expect("addr").port();
        let cut = Arc::new(AtomicBool::new(false));
        let links: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (cut2, links2) = (cut.clone(), links.clone());
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                if cut2.load(Ordering::SeqCst) {
                    drop(client);
                    continue;
                }
                let link = tokio::spawn(async move {
                    if let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream_port)).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                links2.lock().expect("links").push(link.abort_handle());
            }
        });
        Proxy {
            port,
            cut,
            links,
            accept,
        }
    }

    pub fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for link in self.links.lock().expect("links").drain(..) {
            link.abort();
        }
    }

    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.cut();
    }
}

/// A client of the local Secrets Manager that `scripts/with-moto.sh` started.
pub async fn secrets_client() -> aws_sdk_secretsmanager::Client {
    assert!(
        std::env::var("AWS_ENDPOINT_URL").is_ok(),
        "AWS_ENDPOINT_URL is not set: run the suite with `make test` (it starts moto_server)"
    );
    let config = aws_config::load_defaults(aws_config::BehaviorVersion::latest()).await;
    aws_sdk_secretsmanager::Client::new(&config)
}
