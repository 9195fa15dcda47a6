//! [`Moto`]: the moto AWS API emulator as a child process on 127.0.0.1.
//!
//! Invariants: the server only ever listens on loopback; the process is
//! killed when the handle drops; every SDK client and child process the
//! tests make points at it through an explicit endpoint and fake `testing`
//! credentials, with the instance metadata credential and region providers
//! turned off and no shared AWS config files, so nothing can reach real AWS.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use aws_config::{BehaviorVersion, Region, SdkConfig};
use tempfile::TempDir;
use tokio::process::{Child, Command};

use crate::{free_port, python_tool};

/// How long moto may take to answer after it starts: it imports boto and
/// every service model, a few seconds on a loaded two-core machine.
pub const MOTO_READY: Duration = Duration::from_secs(45);

/// The region every test resource lives in (moto's default).
pub const REGION: &str = "us-east-1";

/// The fake credentials moto accepts.
const FAKE_KEY: &str = "testing";

/// Environment variables that could steer an SDK client elsewhere (a
/// profile, a role, a container credential endpoint); removed from children.
pub const STRAY_AWS_ENV: &[&str] = &[
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SESSION_TOKEN",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_EC2_METADATA_SERVICE_ENDPOINT",
    "AWS_ENDPOINT_URL_AUTO_SCALING",
    "AWS_ENDPOINT_URL_EC2",
    "AWS_ENDPOINT_URL_CLOUDWATCH",
];

/// A running moto server.
pub struct Moto {
    endpoint: String,
    child: Child,
    dir: TempDir,
}

impl std::fmt::Debug for Moto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Moto")
            .field("endpoint", &self.endpoint)
            .finish()
    }
}

impl Moto {
    /// Starts moto on a free loopback port and waits until it answers. Not
    /// installed is an error saying how to install it: the tests that need
    /// moto are `#[ignore]`d, so they run only when asked for, and then
    /// they must not pass without it.
    pub async fn start() -> Result<Moto> {
        let binary = python_tool("moto_server");
        let dir = tempfile::Builder::new().prefix("chord-moto-").tempdir()?;
        let log = dir.path().join("moto.log");
        let port = free_port()?;
        let spawned = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::fs::File::create(&log)?))
            .stderr(Stdio::from(std::fs::File::create(
                dir.path().join("moto.err"),
            )?))
            .kill_on_drop(true)
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "moto_server not found ({}); bash tests/setup.sh installs it into target/venv",
                binary.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("starting {}", binary.display())),
        };
        let mut moto = Moto {
            endpoint: format!("http://127.0.0.1:{port}"),
            child,
            dir,
        };
        moto.wait_ready(SocketAddr::from(([127, 0, 0, 1], port)))
            .await?;
        Ok(moto)
    }

    async fn wait_ready(&mut self, addr: SocketAddr) -> Result<()> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "moto_server exited with {status}: {}",
                    chord_console::fleet::last_line(&self.dir.path().join("moto.err"))
                );
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                // Listening is not serving: ask it something real.
                let asg = aws_sdk_autoscaling::Client::new(&self.sdk_config().await);
                if asg.describe_auto_scaling_groups().send().await.is_ok() {
                    return Ok(());
                }
            }
            if start.elapsed() >= MOTO_READY {
                bail!("moto_server did not answer on {addr} within {MOTO_READY:?}");
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Where moto's own output goes (for failure messages).
    pub fn log_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// An SDK configuration for in-process clients: everything explicit, so
    /// nothing is read from the environment or from instance metadata.
    pub async fn sdk_config(&self) -> SdkConfig {
        aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&self.endpoint)
            .region(Region::new(REGION))
            .credentials_provider(aws_sdk_autoscaling::config::Credentials::new(
                FAKE_KEY, FAKE_KEY, None, None, "moto",
            ))
            .load()
            .await
    }

    /// The environment a child process (a node, the console) needs for its
    /// SDK to talk to moto and to nothing else.
    pub fn sdk_env(&self) -> Vec<(String, String)> {
        let nowhere = self.dir.path().join("no-aws-config");
        [
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_ACCESS_KEY_ID", FAKE_KEY.to_string()),
            ("AWS_SECRET_ACCESS_KEY", FAKE_KEY.to_string()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_DEFAULT_REGION", REGION.to_string()),
            // The metadata service is reached only through an explicit
            // endpoint (the node's --imds-endpoint); the SDK's own credential
            // and region lookups must never try 169.254.169.254.
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
            ("AWS_CONFIG_FILE", nowhere.display().to_string()),
            ("AWS_SHARED_CREDENTIALS_FILE", nowhere.display().to_string()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// Applies [`Moto::sdk_env`] to `cmd` and removes stray AWS settings.
    pub fn apply_env(&self, cmd: &mut Command) {
        for key in STRAY_AWS_ENV {
            cmd.env_remove(key);
        }
        cmd.envs(self.sdk_env());
    }
}
