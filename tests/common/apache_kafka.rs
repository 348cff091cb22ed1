//! Apache Kafka itself for the tests: KRaft nodes run as JVM processes from the broker's Maven
//! jars (`tests/apache-kafka/pom.xml`), one node or a three-node cluster on 127.0.0.1, each node
//! with its own ports and log directory. Nodes can be stopped with SIGTERM or SIGKILL and
//! started again on the same directory; everything is killed and removed when the cluster is
//! dropped (also when a test fails), and a watchdog kills a node's JVM if the test process
//! itself dies.
//!
//! The jars are gathered once into `.tools/apache-kafka/<version>/libs` (ignored by git) with
//! `mvn dependency:copy-dependencies`; `.ci/run` does it before the tests, and the harness does
//! it itself when they are missing. `CREDIT_SENTINEL_KAFKA_LIBS` points at another folder.
#![allow(dead_code)]

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const POM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/apache-kafka/pom.xml");
/// How long a node may take to answer after it is started (measured here: 6 to 10 s).
const START_TIMEOUT: Duration = Duration::from_secs(90);

/// The Kafka version the pom names.
pub fn kafka_version() -> String {
    let pom = std::fs::read_to_string(POM).expect("tests/apache-kafka/pom.xml");
    let start = pom
        .find("<kafka.version>")
        .expect("kafka.version in the pom")
        + 15;
    let end = start + pom[start..].find('<').expect("closing tag");
    pom[start..end].trim().to_string()
}

static FETCH: Mutex<()> = Mutex::new(());

/// The folder of the broker's jars, gathered with Maven if it is not there yet.
pub fn libs() -> PathBuf {
    if let Some(dir) = std::env::var_os("CREDIT_SENTINEL_KAFKA_LIBS") {
        return PathBuf::from(dir);
    }
    let _one_at_a_time = FETCH.lock().unwrap_or_else(|p| p.into_inner());
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(".tools/apache-kafka")
        .join(kafka_version());
    let libs = root.join("libs");
    if libs.join(".complete").is_file() {
        return libs;
    }
    // Into a scratch folder first, renamed when complete: an interrupted fetch leaves nothing
    // that looks usable.
    let scratch = root.join(format!("libs.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    std::fs::create_dir_all(&scratch).expect("jar folder");
    let out = Command::new("mvn")
        .args(["-B", "-q", "-Dstyle.color=never", "-f", POM, "dependency:copy-dependencies"])
        .arg("-DincludeScope=runtime")
        .arg(format!("-DoutputDirectory={}", scratch.display()))
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run mvn ({e}): the Apache Kafka tests need Java 17 and Maven (apt-get install -y openjdk-17-jre-headless maven)")
        });
    assert!(
        out.status.success(),
        "mvn could not gather the Apache Kafka jars ({}); try: mvn -B -f tests/apache-kafka/pom.xml dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory=DIR\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::write(scratch.join(".complete"), kafka_version()).expect("stamp");
    let _ = std::fs::remove_dir_all(&libs);
    std::fs::rename(&scratch, &libs).expect("jar folder in place");
    libs
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("free port")
        .local_addr()
        .expect("addr")
        .port()
}

fn java(libs: &Path) -> Command {
    let mut cmd = Command::new("java");
    cmd.arg("-cp").arg(format!("{}/*", libs.display()));
    cmd
}

/// One KRaft node (broker and controller in one process).
pub struct Node {
    pub id: u32,
    pub port: u16,
    pub controller_port: u16,
    pub dir: PathBuf,
    /// The `sh` that runs the JVM and its watchdog; its stdin is a pipe that, when this test
    /// process dies, closes and makes the watchdog kill the JVM.
    shell: Option<Child>,
    /// The JVM's process id.
    pid: Option<u32>,
    starts: u32,
}

impl Node {
    pub fn properties(&self) -> PathBuf {
        self.dir.join("server.properties")
    }

    pub fn data(&self) -> PathBuf {
        self.dir.join("data")
    }

    pub fn log(&self) -> PathBuf {
        self.dir.join("broker.log")
    }

    pub fn is_running(&self) -> bool {
        self.pid.is_some()
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    /// The node's view of the metadata quorum: (leader id, leader epoch), from the
    /// `quorum-state` file it writes at every election.
    pub fn quorum_state(&self) -> Option<(i64, i64)> {
        let text =
            std::fs::read_to_string(self.data().join("__cluster_metadata-0/quorum-state")).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        Some((v["leaderId"].as_i64()?, v["leaderEpoch"].as_i64()?))
    }
}

/// A running Apache Kafka cluster of one or three KRaft nodes.
pub struct ApacheKafka {
    pub nodes: Vec<Node>,
    libs: PathBuf,
    root: PathBuf,
}

/// Broker settings common to every node (the test suite's: short waits, small segments so
/// compaction runs within a test, a quick log cleaner).
const COMMON: &str = "\
process.roles=broker,controller
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=3000
auto.create.topics.enable=false
log.cleaner.backoff.ms=500
log.cleaner.dedupe.buffer.size=16777216
log.cleaner.threads=1
num.network.threads=2
num.io.threads=4
num.recovery.threads.per.data.dir=1
transaction.abort.timed.out.transaction.cleanup.interval.ms=1000
transaction.remove.expired.transaction.cleanup.interval.ms=60000
";

impl ApacheKafka {
    /// One node: broker and controller, replication factors 1.
    pub fn single() -> ApacheKafka {
        ApacheKafka::start_cluster(1)
    }

    /// Three nodes, each broker and controller (a three-voter quorum); internal topics with
    /// replication factor 3 and `min.insync.replicas` 2.
    pub fn three() -> ApacheKafka {
        ApacheKafka::start_cluster(3)
    }

    fn start_cluster(n: u32) -> ApacheKafka {
        let libs = libs();
        let root = std::env::temp_dir().join(format!(
            "cs-apache-kafka-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&root);
        let nodes: Vec<Node> = (1..=n)
            .map(|id| Node {
                id,
                port: free_port(),
                controller_port: free_port(),
                dir: root.join(format!("node-{id}")),
                shell: None,
                pid: None,
                starts: 0,
            })
            .collect();
        let voters: Vec<String> = nodes
            .iter()
            .map(|node| format!("{}@127.0.0.1:{}", node.id, node.controller_port))
            .collect();
        let rf = if n >= 3 { 3 } else { 1 };
        let isr = if n >= 3 { 2 } else { 1 };
        let cluster_id = {
            let out = java(&libs)
                .args(["kafka.tools.StorageTool", "random-uuid"])
                .output()
                .expect("java runs");
            assert!(out.status.success(), "StorageTool random-uuid failed");
            String::from_utf8_lossy(&out.stdout).trim().to_string()
        };
        for node in &nodes {
            std::fs::create_dir_all(node.data()).expect("node folder");
            let quorum = if n == 1 {
                format!(
                    "controller.quorum.bootstrap.servers=127.0.0.1:{}\n",
                    node.controller_port
                )
            } else {
                format!("controller.quorum.voters={}\n", voters.join(","))
            };
            let text = format!(
                "{COMMON}{quorum}node.id={id}\n\
                 listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
                 advertised.listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n\
                 log.dirs={data}\n\
                 offsets.topic.replication.factor={rf}\n\
                 transaction.state.log.replication.factor={rf}\n\
                 transaction.state.log.min.isr={isr}\n\
                 min.insync.replicas={isr}\n\
                 default.replication.factor={rf}\n",
                id = node.id,
                port = node.port,
                cport = node.controller_port,
                data = node.data().display(),
            );
            std::fs::write(node.properties(), text).expect("server.properties");
            std::fs::write(
                node.dir.join("log4j2.properties"),
                "rootLogger.level=WARN\nrootLogger.appenderRef.out.ref=OUT\n\
                 appender.out.type=Console\nappender.out.name=OUT\n\
                 appender.out.layout.type=PatternLayout\n\
                 appender.out.layout.pattern=[%d] %p %m (%c)%n\n",
            )
            .expect("log4j2.properties");
            let mut format = java(&libs);
            format.args(["kafka.tools.StorageTool", "format", "-t", &cluster_id, "-c"]);
            format.arg(node.properties());
            if n == 1 {
                format.arg("--standalone");
            }
            let out = format.output().expect("java runs");
            assert!(
                out.status.success(),
                "StorageTool format failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut cluster = ApacheKafka { nodes, libs, root };
        let started = Instant::now();
        for i in 0..cluster.nodes.len() {
            cluster.spawn(i);
        }
        cluster.wait_until_serving();
        eprintln!(
            "Apache Kafka {} ({n} node(s)) serving after {:.1} s",
            kafka_version(),
            started.elapsed().as_secs_f64()
        );
        cluster
    }

    fn index(&self, id: u32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn spawn(&mut self, i: usize) {
        let libs = self.libs.clone();
        let node = &mut self.nodes[i];
        assert!(node.pid.is_none(), "node {} is already running", node.id);
        node.starts += 1;
        let pid_file = node.dir.join("pid");
        let _ = std::fs::remove_file(&pid_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(node.log())
            .expect("broker log");
        // The JVM runs in the background of a shell whose watchdog reads this process's pipe:
        // when the pipe closes (this process ended, however), the JVM is killed.
        let script = r#"exec 3<&0
java "$@" </dev/null &
j=$!
echo "$j" > "$PIDFILE"
( cat <&3 >/dev/null; kill -9 "$j" 2>/dev/null ) &
wait "$j""#;
        let shell = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg("kafka-node")
            .arg("-Xmx512m")
            .arg("-Xms128m")
            .arg("-XX:+UseSerialGC")
            .arg(format!(
                "-Dlog4j2.configurationFile={}",
                node.dir.join("log4j2.properties").display()
            ))
            .arg("-cp")
            .arg(format!("{}/*", libs.display()))
            .arg("kafka.Kafka")
            .arg(node.properties())
            .env("PIDFILE", &pid_file)
            .stdin(Stdio::piped())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("sh runs");
        let started = Instant::now();
        let pid = loop {
            if let Some(pid) = std::fs::read_to_string(&pid_file)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "node {} did not start",
                node.id
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        node.shell = Some(shell);
        node.pid = Some(pid);
    }

    /// The bootstrap servers of the running nodes.
    pub fn bootstrap(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn client(&self) -> ClientConfig {
        let mut cfg = ClientConfig::new();
        cfg.set("bootstrap.servers", self.bootstrap())
            .set("log_level", "3");
        cfg
    }

    /// Waits until every running node is a broker of the cluster's metadata.
    pub fn wait_until_serving(&self) {
        let want: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.is_running())
            .map(|n| n.id as i32)
            .collect();
        let consumer: BaseConsumer = self.client().create().expect("metadata client");
        let started = Instant::now();
        loop {
            if let Ok(md) = consumer.fetch_metadata(None, Duration::from_secs(2)) {
                let mut have: Vec<i32> = md.brokers().iter().map(|b| b.id()).collect();
                have.sort();
                if want.iter().all(|id| have.contains(id)) {
                    return;
                }
            }
            for n in &self.nodes {
                assert!(
                    !n.is_running() || process_alive(n.pid.unwrap_or(0)),
                    "node {} exited; its log:\n{}",
                    n.id,
                    tail(&n.log(), 40)
                );
            }
            assert!(
                started.elapsed() < START_TIMEOUT,
                "the cluster did not serve nodes {want:?} in {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Sets a topic's configuration to `configs` (the whole set: what is not named returns to
    /// the broker's default).
    pub fn alter_topic(&self, name: &str, configs: &[(&str, &str)]) {
        use rdkafka::admin::{AlterConfig, ResourceSpecifier};
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().expect("admin client");
        let config = configs.iter().fold(
            AlterConfig::new(ResourceSpecifier::Topic(name)),
            |c, (k, v)| c.set(k, v),
        );
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let options = AdminOptions::new().request_timeout(Some(Duration::from_secs(30)));
        let results = rt
            .block_on(admin.alter_configs(&[config], &options))
            .expect("alter configs");
        for r in results {
            if let Err((resource, code)) = r {
                panic!("cannot alter {resource:?}: {code:?}");
            }
        }
    }

    /// Creates topics with `partitions` each, the cluster's replication factor, and `configs`.
    pub fn create_topics(&self, names: &[&str], partitions: i32, configs: &[(&str, &str)]) {
        let rf = if self.nodes.len() >= 3 { 3 } else { 1 };
        let admin: AdminClient<DefaultClientContext> =
            self.client().create().expect("admin client");
        let topics: Vec<NewTopic<'_>> = names
            .iter()
            .map(|name| {
                configs.iter().fold(
                    NewTopic::new(name, partitions, TopicReplication::Fixed(rf)),
                    |t, (k, v)| t.set(k, v),
                )
            })
            .collect();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let results = rt
            .block_on(admin.create_topics(&topics, &options))
            .expect("create topics");
        for r in results {
            if let Err((name, code)) = r {
                panic!("cannot create topic {name}: {code:?}");
            }
        }
        // Every partition has a leader before anyone produces.
        let consumer: BaseConsumer = self.client().create().expect("metadata client");
        let started = Instant::now();
        while !names.iter().all(|name| {
            consumer
                .fetch_metadata(Some(name), Duration::from_secs(2))
                .ok()
                .and_then(|md| {
                    md.topics().first().map(|t| {
                        t.partitions().len() == partitions as usize
                            && t.partitions().iter().all(|p| p.leader() >= 0)
                    })
                })
                .unwrap_or(false)
        }) {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "topics have no leaders"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The leader of a topic partition as the cluster reports it now.
    pub fn leader_of(&self, topic: &str, partition: i32) -> Option<u32> {
        let consumer: BaseConsumer = self.client().create().expect("metadata client");
        let md = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(5))
            .ok()?;
        let t = md.topics().first()?;
        let p = t.partitions().iter().find(|p| p.id() == partition)?;
        (p.leader() >= 0).then_some(p.leader() as u32)
    }

    /// The active controller (the metadata quorum's leader) and its epoch, as the running
    /// nodes last wrote it.
    pub fn controller(&self) -> Option<(u32, i64)> {
        self.nodes
            .iter()
            .filter(|n| n.is_running())
            .filter_map(|n| n.quorum_state())
            .filter(|(leader, _)| *leader >= 0)
            .max_by_key(|(_, epoch)| *epoch)
            .map(|(leader, epoch)| (leader as u32, epoch))
    }

    /// SIGKILL: the node dies at once, as in a crash or a power loss.
    pub fn kill(&mut self, id: u32) {
        let i = self.index(id);
        self.signal_and_reap(i, "-KILL");
    }

    /// SIGTERM: a controlled shutdown (leadership moved away, logs closed cleanly).
    pub fn terminate(&mut self, id: u32) {
        let i = self.index(id);
        self.signal_and_reap(i, "-TERM");
    }

    fn signal_and_reap(&mut self, i: usize, signal: &str) {
        let node = &mut self.nodes[i];
        let Some(pid) = node.pid.take() else {
            return;
        };
        let _ = Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        if let Some(mut shell) = node.shell.take() {
            let started = Instant::now();
            loop {
                match shell.try_wait() {
                    Ok(Some(_)) | Err(_) => break,
                    Ok(None) if started.elapsed() > Duration::from_secs(60) => {
                        let _ = Command::new("kill")
                            .args(["-KILL", &pid.to_string()])
                            .status();
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
            // Closing the pipe ends the watchdog.
            drop(shell.stdin.take());
        }
    }

    /// Starts a stopped node again on its log directory and waits until it serves.
    pub fn restart(&mut self, id: u32) {
        let i = self.index(id);
        self.spawn(i);
        self.wait_until_serving();
    }

    /// Resident memory of each running node's JVM, in MiB (from /proc).
    pub fn memory_mib(&self) -> Vec<(u32, u64)> {
        self.nodes
            .iter()
            .filter_map(|n| {
                let status = std::fs::read_to_string(format!("/proc/{}/status", n.pid?)).ok()?;
                let kb: u64 = status
                    .lines()
                    .find(|l| l.starts_with("VmRSS:"))?
                    .split_whitespace()
                    .nth(1)?
                    .parse()
                    .ok()?;
                Some((n.id, kb / 1024))
            })
            .collect()
    }

    /// The end of a node's log, for a failure message.
    pub fn log_tail(&self, id: u32, lines: usize) -> String {
        tail(&self.nodes[self.index(id)].log(), lines)
    }
}

static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

impl Drop for ApacheKafka {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.signal_and_reap(i, "-KILL");
        }
        if std::env::var_os("CREDIT_SENTINEL_KEEP_KAFKA_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.root);
        } else {
            eprintln!("Apache Kafka logs kept in {}", self.root.display());
        }
    }
}

fn process_alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
