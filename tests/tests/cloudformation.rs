//! The CloudFormation stack (`cloudformation/chord-dfs.yaml`) and the AL2023
//! build script, checked without AWS:
//! - `cfn-lint` passes on the template (and fails on a broken copy, so the
//!   pass means something);
//! - the stack creates in a local moto server, yielding a launch template
//!   whose user data installs the systemd unit that starts
//!   `chord-node --discovery aws`, a group sized from the parameters, and an
//!   IAM role (with only the calls the node makes) only when no existing
//!   instance profile is given;
//! - moto skips lifecycle hooks and scaling policies, so those are checked in
//!   the template as written;
//! - `build-node.sh --check` judges a binary's glibc needs correctly.
//!
//! Python tools come from the project's virtualenv ([`chord_tests::python_tool`]);
//! the tests that need them are `#[ignore]`d, so a run without the set-up
//! counts them as skipped, and fail when run without them. Every process is
//! killed on drop and every wait is bounded.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::process::{Child, Command};

/// cfn-lint loads its whole resource-schema set on start: seconds, not minutes.
const LINT_TIMEOUT: Duration = Duration::from_secs(120);

/// moto_server imports every service's models before it listens.
const MOTO_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Creating two stacks in moto takes a few seconds; the script bounds its own
/// wait for CREATE_COMPLETE at 60 s.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(120);

/// The build script's check runs objdump once.
const CHECK_TIMEOUT: Duration = Duration::from_secs(30);

/// The unit's command line: the contract with chord-node's AWS mode. The
/// TLS flags come from the environment file, empty without a CA.
const EXEC_START: &str = "ExecStart=/usr/local/bin/chord-node --discovery aws \
     --listen 0.0.0.0:5057 --http 0.0.0.0:5058 --data-dir /var/lib/chord-dfs \
     --metrics-namespace ChordDFS $CHORD_TLS_FLAGS";

fn repo_file(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel)
}

fn template_path() -> PathBuf {
    repo_file("cloudformation/chord-dfs.yaml")
}

/// A tool that is not there fails the test, saying how to get it.
fn missing(what: &str) -> ! {
    panic!("{what} is not installed (bash tests/setup.sh installs tests/requirements.txt into target/venv)");
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program` to completion within `limit` (killed if it overruns).
async fn run(program: &Path, args: &[&str], envs: &[(&str, &str)], limit: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
    let out = tokio::time::timeout(limit, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{} {args:?} ran longer than {limit:?}", program.display()))
        .unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A tool from the virtualenv that can be executed, or `None`.
fn venv_tool(name: &str) -> Option<PathBuf> {
    let path = chord_tests::python_tool(name);
    if path.is_absolute() {
        return path.is_file().then_some(path);
    }
    // Not in the venv: fall back to PATH, as python_tool intends.
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

#[tokio::test]
#[ignore = "needs cfn-lint (tests/setup.sh); run with --run-ignored all"]
async fn cfn_lint_passes_and_catches_a_broken_template() {
    let lint = venv_tool("cfn-lint").unwrap_or_else(|| missing("cfn-lint"));
    let template = template_path();
    // Informational findings included: the template should be clean of all.
    let out = run(
        &lint,
        &["--include-checks", "I", "--", template.to_str().unwrap()],
        &[],
        LINT_TIMEOUT,
    )
    .await;
    assert!(
        out.ok,
        "cfn-lint found problems in {}:\n{}{}",
        template.display(),
        out.stdout,
        out.stderr
    );

    // The same linter must reject a metadata option AWS does not have (the
    // node needs IMDSv2), so a pass above is not a linter that checks nothing.
    // (cfn-lint 1.x does not check DefaultResult's values: check_template does.)
    let text = std::fs::read_to_string(&template).unwrap();
    assert!(text.contains("HttpTokens: required"));
    let broken = text.replace("HttpTokens: required", "HttpTokens: sometimes");
    let dir = tempfile::tempdir().unwrap();
    let broken_path = dir.path().join("broken.yaml");
    std::fs::write(&broken_path, broken).unwrap();
    let out = run(
        &lint,
        &["--", broken_path.to_str().unwrap()],
        &[],
        LINT_TIMEOUT,
    )
    .await;
    assert!(!out.ok, "cfn-lint accepted HttpTokens: sometimes");
    assert!(
        out.stdout.contains("'sometimes' is not one of"),
        "cfn-lint's complaint does not name the bad value: {}",
        out.stdout
    );
}

/// `moto_server` on a free loopback port, killed on drop.
struct Moto {
    _child: Child,
    endpoint: String,
}

impl Moto {
    async fn start(bin: &Path) -> Moto {
        let port = chord_tests::free_port().unwrap();
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        while tokio::net::TcpStream::connect(&addr).await.is_err() {
            assert!(
                started.elapsed() < MOTO_START_TIMEOUT,
                "moto_server did not listen on {addr} within {MOTO_START_TIMEOUT:?}"
            );
            tokio::time::sleep(chord_tests::POLL).await;
        }
        Moto {
            _child: child,
            endpoint: format!("http://{addr}"),
        }
    }
}

/// Creates a stack in moto with `tests/cfn_moto.py` and returns its report.
async fn create_stack(python: &Path, moto: &Moto, stack: &str, profile: Option<&str>) -> Value {
    let script = repo_file("tests/cfn_moto.py");
    let template = template_path();
    let mut args = vec![
        script.to_str().unwrap(),
        moto.endpoint.as_str(),
        template.to_str().unwrap(),
        stack,
    ];
    args.extend(profile);
    // Dummy credentials and no config file: nothing can reach a real account.
    let envs = [
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_CONFIG_FILE", "/dev/null"),
        ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
    ];
    let out = run(python, &args, &envs, SCRIPT_TIMEOUT).await;
    assert!(
        out.ok,
        "cfn_moto.py failed for stack {stack}: {}{}",
        out.stdout, out.stderr
    );
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("cfn_moto.py printed no JSON ({e}): {}", out.stdout))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("not an array: {v}"))
        .iter()
        .map(|s| s.as_str().unwrap().to_string())
        .collect()
}

/// The user data installs the binary, writes the token root-only, and starts
/// the unit with the agreed command line; and it is valid bash.
async fn check_user_data(user_data: &str, params: &Value) {
    assert!(user_data.starts_with("#!/bin/bash\n"), "{user_data}");
    let lines: Vec<&str> = user_data.lines().collect();
    assert!(
        lines.contains(&EXEC_START),
        "no `{EXEC_START}` line in the user data:\n{user_data}"
    );
    for needle in [
        "[Service]",
        "EnvironmentFile=/etc/chord-dfs/node.env",
        "StateDirectory=chord-dfs",
        "install -m 0755 \"$tmp\" /usr/local/bin/chord-node",
        "chmod 0600 /etc/chord-dfs/node.env",
        "echo \"CHORD_TLS_FLAGS=$tls_flags\" >> /etc/chord-dfs/node.env",
        "ca_cert=''",
        "systemctl enable --now chord-node.service",
    ] {
        assert!(
            user_data.contains(needle),
            "user data lacks `{needle}`:\n{user_data}"
        );
    }
    let url = params["NodeBinaryUrl"].as_str().unwrap();
    assert!(user_data.contains(&format!("url='{url}'")), "{user_data}");
    let token = params["ClusterToken"].as_str().unwrap();
    assert!(
        lines.contains(&format!("CHORD_TOKEN={token}").as_str()),
        "the token is not in the env file:\n{user_data}"
    );
    // No `${...}` left unsubstituted by Fn::Sub.
    assert!(!user_data.contains("${"), "{user_data}");

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("user-data.sh");
    std::fs::write(&script, user_data).unwrap();
    let out = run(
        Path::new("bash"),
        &["-n", script.to_str().unwrap()],
        &[],
        CHECK_TIMEOUT,
    )
    .await;
    assert!(out.ok, "user data is not valid bash: {}", out.stderr);
}

/// The hook and the scaling policy, which moto skips, as the template writes them.
fn check_template(template: &Value) {
    let resources = &template["Resources"];
    let group = &resources["NodeGroup"]["Properties"];
    let hooks = group["LifecycleHookSpecificationList"].as_array().unwrap();
    assert_eq!(hooks.len(), 1, "{hooks:?}");
    let hook = &hooks[0];
    assert_eq!(
        hook["LifecycleTransition"],
        "autoscaling:EC2_INSTANCE_TERMINATING"
    );
    assert_eq!(hook["DefaultResult"], "ABANDON");
    assert_eq!(hook["HeartbeatTimeout"]["Ref"], "HeartbeatTimeout");
    let timeout = &template["Parameters"]["HeartbeatTimeout"];
    assert_eq!(timeout["MinValue"], 30);
    assert_eq!(timeout["MaxValue"], 7200);
    // The node completes the hook by this name (its --lifecycle-hook default).
    assert_eq!(
        template["Mappings"]["Cluster"]["Node"]["LifecycleHook"],
        "chord-drain"
    );
    assert_eq!(
        group["InstanceLifecyclePolicy"]["RetentionTriggers"]["TerminateHookAbandon"],
        "retain"
    );
    assert_eq!(group["MetricsCollection"][0]["Granularity"], "1Minute");

    let policy = &resources["RequestRatePolicy"]["Properties"];
    assert_eq!(policy["PolicyType"], "TargetTrackingScaling");
    let tracking = &policy["TargetTrackingConfiguration"];
    assert_eq!(tracking["TargetValue"]["Ref"], "TargetRequestRate");
    assert_eq!(tracking["DisableScaleIn"], false);
    let metric = &tracking["CustomizedMetricSpecification"];
    assert_eq!(metric["MetricName"], "NodeRequestRate");
    assert_eq!(metric["Statistic"], "Average");
    assert_eq!(
        template["Mappings"]["Cluster"]["Node"]["MetricsNamespace"],
        "ChordDFS"
    );
    let dims = metric["Dimensions"].as_array().unwrap();
    assert_eq!(dims.len(), 1);
    assert_eq!(dims[0]["Name"], "AutoScalingGroupName");

    // moto skips AWS::IAM::RolePolicy: the binary's read grant as written.
    let read = &resources["NodeBinaryReadPolicy"];
    assert_eq!(read["Condition"], "CreateRoleWithS3");
    let statements = read["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(actions(&statements[0]), ["s3:GetObject"]);

    assert_eq!(template["Parameters"]["ClusterToken"]["NoEcho"], true);
    assert_eq!(
        template["Parameters"]["LatestAmiId"]["Default"],
        "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-x86_64"
    );
}

fn check_group(report: &Value, stack: &str) {
    let params = &report["parameters"];
    let group = &report["group"];
    assert_eq!(group["name"], format!("{stack}-nodes"));
    for (field, param) in [
        ("min", "MinSize"),
        ("max", "MaxSize"),
        ("desired", "DesiredCapacity"),
    ] {
        assert_eq!(
            group[field].as_u64().unwrap().to_string(),
            params[param].as_str().unwrap(),
            "{field} of the group"
        );
    }
    assert_eq!(group["launch_template_id"], report["launch_template"]["id"]);
    assert_eq!(group["subnets"], report["subnets"]);
    // moto 5.x skips LifecycleHookSpecificationList; should it ever create
    // the hook, it must be ours.
    for hook in group["hooks"].as_array().unwrap() {
        assert_eq!(
            hook["LifecycleTransition"],
            "autoscaling:EC2_INSTANCE_TERMINATING"
        );
        assert_eq!(hook["DefaultResult"], "ABANDON");
        assert_eq!(
            hook["HeartbeatTimeout"].as_u64().unwrap().to_string(),
            params["HeartbeatTimeout"].as_str().unwrap()
        );
    }
    let lt = &report["launch_template"];
    assert_eq!(
        lt["metadata_options"]["HttpTokens"], "required",
        "IMDSv2 only"
    );
    assert!(
        lt["image_id"].as_str().unwrap().starts_with("ami-"),
        "the AMI parameter did not resolve: {lt}"
    );
    let outputs = &report["outputs"];
    assert_eq!(outputs["GroupName"], group["name"]);
    assert_eq!(outputs["LaunchTemplateId"], lt["id"]);
    assert_eq!(
        outputs["ConsoleStatusCommand"],
        format!("chord-console aws status --asg {stack}-nodes")
    );
}

/// The `Action` of a policy statement as a sorted list.
fn actions(statement: &Value) -> Vec<String> {
    let mut list = match &statement["Action"] {
        Value::String(one) => vec![one.clone()],
        many => strings(many),
    };
    list.sort();
    list
}

/// The role's inline policy as IAM (moto) stores it: what the node calls, no
/// more, with the lifecycle calls scoped to the group and metrics to the
/// namespace.
fn check_role_policy(report: &Value, stack: &str) {
    let policies = report["role_policies"].as_object().unwrap();
    assert_eq!(policies.len(), 1, "{policies:?}");
    let statements = policies["chord-node"]["Statement"].as_array().unwrap();
    let by_sid = |sid: &str| {
        statements
            .iter()
            .find(|s| s["Sid"] == sid)
            .unwrap_or_else(|| panic!("no statement {sid}: {statements:?}"))
    };
    for s in statements {
        assert_eq!(s["Effect"], "Allow");
        assert!(
            actions(s).iter().all(|a| !a.contains('*')),
            "wildcard action: {s}"
        );
    }
    assert_eq!(statements.len(), 3, "{statements:?}");
    assert_eq!(
        actions(by_sid("Discover")),
        [
            "autoscaling:DescribeAutoScalingGroups",
            "autoscaling:DescribeAutoScalingInstances",
            "autoscaling:DescribeLifecycleHooks",
            "ec2:DescribeInstances",
        ]
    );
    let lifecycle = by_sid("Lifecycle");
    assert_eq!(
        actions(lifecycle),
        [
            "autoscaling:CompleteLifecycleAction",
            "autoscaling:RecordLifecycleActionHeartbeat",
        ]
    );
    let resource = lifecycle["Resource"].as_str().unwrap();
    assert!(
        resource.starts_with("arn:aws:autoscaling:us-east-1:")
            && resource.ends_with(&format!(":autoScalingGroupName/{stack}-nodes")),
        "lifecycle calls not scoped to the group: {resource}"
    );
    let metrics = by_sid("Metrics");
    assert_eq!(actions(metrics), ["cloudwatch:PutMetricData"]);
    assert_eq!(
        metrics["Condition"]["StringEquals"]["cloudwatch:namespace"],
        "ChordDFS"
    );
}

#[tokio::test]
#[ignore = "needs moto and python3 (tests/setup.sh); run with --run-ignored all"]
async fn stack_creates_in_moto() {
    let (Some(moto_bin), Some(python)) = (venv_tool("moto_server"), venv_tool("python3")) else {
        missing("moto_server (moto[server]) and python3");
    };
    let moto = Moto::start(&moto_bin).await;

    // A new role and instance profile when none is given.
    let own = create_stack(&python, &moto, "chord-own", None).await;
    assert_eq!(own["status"], "CREATE_COMPLETE", "{}", own["status_reason"]);
    let types = strings(&own["resource_types"]);
    for t in [
        "AWS::AutoScaling::AutoScalingGroup",
        "AWS::EC2::LaunchTemplate",
        "AWS::EC2::SecurityGroup",
        "AWS::IAM::Role",
        "AWS::IAM::InstanceProfile",
    ] {
        assert!(types.contains(&t.to_string()), "{t} not created: {types:?}");
    }
    assert!(strings(&own["roles_before"]).is_empty());
    let roles = strings(&own["roles_after"]);
    assert_eq!(roles.len(), 1, "{roles:?}");
    let profiles = strings(&own["profiles_after"]);
    assert_eq!(profiles.len(), 1, "{profiles:?}");
    assert_eq!(
        own["launch_template"]["instance_profile"]["Name"],
        profiles[0]
    );
    assert_eq!(own["outputs"]["InstanceProfile"], profiles[0]);
    check_group(&own, "chord-own");
    check_role_policy(&own, "chord-own");
    check_user_data(
        own["launch_template"]["user_data"].as_str().unwrap(),
        &own["parameters"],
    )
    .await;
    check_template(&own["template"]);

    // AWS Academy: an existing profile, and no IAM resource at all.
    let academy = create_stack(&python, &moto, "chord-academy", Some("LabInstanceProfile")).await;
    assert_eq!(
        academy["status"], "CREATE_COMPLETE",
        "{}",
        academy["status_reason"]
    );
    let types = strings(&academy["resource_types"]);
    assert!(
        !types.iter().any(|t| t.starts_with("AWS::IAM::")),
        "IAM resources created despite ExistingInstanceProfile: {types:?}"
    );
    assert_eq!(academy["roles_before"], academy["roles_after"]);
    assert_eq!(academy["profiles_before"], academy["profiles_after"]);
    assert_eq!(
        academy["launch_template"]["instance_profile"]["Name"],
        "LabInstanceProfile"
    );
    assert_eq!(academy["outputs"]["InstanceProfile"], "LabInstanceProfile");
    check_group(&academy, "chord-academy");
}

/// The highest `GLIBC_x.y[.z]` version `readelf -V` lists for `bin`: found
/// independently of the script under test (which uses objdump).
async fn readelf_highest_glibc(readelf: &Path, bin: &Path) -> (u32, u32) {
    let out = run(readelf, &["-V", bin.to_str().unwrap()], &[], CHECK_TIMEOUT).await;
    assert!(out.ok, "readelf -V failed: {}", out.stderr);
    out.stdout
        .split(|c: char| c.is_whitespace())
        .filter_map(|w| w.strip_prefix("GLIBC_"))
        .filter_map(|v| {
            let mut parts = v.split('.');
            Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
        })
        .max()
        .expect("the binary needs no versioned glibc symbol")
}

#[tokio::test]
async fn build_script_checks_glibc_needs() {
    let which = |name: &str| {
        std::env::var_os("PATH").and_then(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join(name))
                .find(|p| p.is_file())
        })
    };
    // binutils come with the C toolchain that links this workspace.
    let (Some(readelf), Some(_)) = (which("readelf"), which("objdump")) else {
        panic!("readelf and objdump (binutils) are not installed");
    };
    let script = repo_file("cloudformation/build-node.sh");
    // A dynamically linked binary this build made: the node beside the tests.
    let bin = chord_console::fleet::locate_node_binary().unwrap();
    let bin_arg = bin.to_str().unwrap();
    let (major, minor) = readelf_highest_glibc(&readelf, &bin).await;
    let check = |limit: String| {
        let script = script.clone();
        async move {
            run(
                &script,
                &["--check", bin_arg],
                &[("MAX_GLIBC", &limit)],
                CHECK_TIMEOUT,
            )
            .await
        }
    };

    // The limit itself is allowed.
    let out = check(format!("{major}.{minor}")).await;
    assert!(out.ok, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout
            .contains(&format!("needs at most GLIBC_{major}.{minor} ")),
        "{}",
        out.stdout
    );
    // One below it is not.
    assert!(minor > 0, "GLIBC_{major}.0 is not a version x86_64 uses");
    let out = check(format!("{major}.{}", minor - 1)).await;
    assert!(!out.ok, "passed a binary that needs GLIBC_{major}.{minor}");
    assert!(out.stderr.contains("would not start"), "{}", out.stderr);
    // Versions compare as numbers, not strings: 2.4 < 2.34.
    if minor >= 10 {
        let out = check(format!("{major}.{}", minor / 10)).await;
        assert!(
            !out.ok,
            "took {major}.{} for more than {major}.{minor}",
            minor / 10
        );
    }
    // A file that is not a binary is a clear error, not a pass.
    let not_elf = run(
        &script,
        &["--check", template_path().to_str().unwrap()],
        &[],
        CHECK_TIMEOUT,
    )
    .await;
    assert!(!not_elf.ok);
    assert!(
        not_elf.stderr.contains("not an ELF binary"),
        "{}",
        not_elf.stderr
    );
}
