//! pitstop's SDK implementation of the AWS traits against a real `moto_server`: the unmodified
//! SDK, real HTTP, real request and response serialisation.
//!
//! One moto_server is shared by the tests that run at the same time and killed when the last of
//! them finishes; each test works in its own region, which moto keeps fully separate, so the
//! tests cannot see each other's resources.
//!
//! moto is an emulator, and where it differs from AWS these tests assert what moto does and say
//! so (search for "moto:"). Draining, health checks and reboots as AWS does them are covered by
//! the sandbox end-to-end tests; the error answers moto cannot give by `aws_error_paths.rs`.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use aws_sdk_elasticloadbalancingv2 as elbv2;
use aws_sdk_ssm::config::{Credentials, SharedCredentialsProvider};
use pitstop::aws::sdk::{ApiOperation, OperationCounts, SdkProvider, SdkSettings};
use pitstop::aws::{AwsErrorKind, AwsProvider, CommandRequest, CommandStatus, Target, TargetState};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ---------------------------------------------------------------------------------------------
// moto_server harness
// ---------------------------------------------------------------------------------------------

/// A running moto_server, killed on drop.
struct MotoServer {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

/// The moto_server binary: `$MOTO_SERVER`, else the workspace's `.venv`.
fn moto_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MOTO_SERVER") {
        return PathBuf::from(path);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/moto_server")
}

impl MotoServer {
    fn start() -> Self {
        let binary = moto_binary();
        assert!(
            binary.is_file(),
            "moto_server not found at {} (set MOTO_SERVER, or run `make venv` in the workspace root to install it)",
            binary.display()
        );
        // Let the OS pick a free port, then hand it to moto. Another process could take it in
        // between; the start then fails loudly below rather than talking to a stranger.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let log = std::env::temp_dir().join(format!("pitstop-moto-{}-{port}.log", std::process::id()));
        let log_file = std::fs::File::create(&log).expect("moto log file");
        let child = Command::new(&binary)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log handle"))
            .stderr(log_file)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", binary.display()));
        let mut server = MotoServer { child, addr, log };
        server.wait_until_ready();
        server
    }

    fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("moto_server exited ({status}) before answering:\n{}", self.log_text());
            }
            if TcpStream::connect_timeout(&self.addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {} within 60 s:\n{}",
                self.addr,
                self.log_text()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut f) = std::fs::File::open(&self.log) {
            let _ = f.read_to_string(&mut text);
        }
        text
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The shared moto_server: started by the first test that needs it, stopped when the last test
/// holding it is done (a static would never be dropped, leaving an orphan process).
fn moto() -> Arc<MotoServer> {
    static SHARED: Mutex<Weak<MotoServer>> = Mutex::new(Weak::new());
    let mut shared = SHARED.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(server) = shared.upgrade() {
        return server;
    }
    let server = Arc::new(MotoServer::start());
    *shared = Arc::downgrade(&server);
    server
}

/// Max attempts for the moto tests: 2, so that retries happen (and are counted) on moto's
/// 500 answers without making each of them slow.
const MAX_ATTEMPTS: u32 = 2;

/// A provider pointed at moto the way a user points pitstop at any endpoint.
fn provider(moto: &MotoServer) -> SdkProvider {
    SdkProvider::new(SdkSettings {
        max_attempts: MAX_ATTEMPTS,
        endpoint_url: Some(moto.url()),
        credentials: Some(SharedCredentialsProvider::new(Credentials::new(
            "AKIDPITSTOPTESTS",
            "pitstop-test-secret",
            None,
            None,
            "pitstop-tests",
        ))),
        ..SdkSettings::default()
    })
}

// ---------------------------------------------------------------------------------------------
// Test fleet: VPC, subnets, instances, target group, ALB, listener
// ---------------------------------------------------------------------------------------------

/// One EC2 Query API call to moto, for set-up (VPC, subnets, RunInstances, CreateTags,
/// StopInstances): pitstop's own EC2 client only reads, so the set-up speaks the Query
/// protocol directly. moto routes the request by the signing scope in `Authorization`; it
/// does not check signatures.
async fn ec2(moto: &MotoServer, region: &str, params: &[(&str, &str)]) -> String {
    fn enc(s: &str) -> String {
        s.bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
                _ => format!("%{b:02X}"),
            })
            .collect()
    }
    let mut body = String::from("Version=2016-11-15");
    for (k, v) in params {
        body.push_str(&format!("&{}={}", enc(k), enc(v)));
    }
    let request = format!(
        "POST / HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/x-www-form-urlencoded; charset=utf-8\r\n\
         Authorization: AWS4-HMAC-SHA256 Credential=AKIDPITSTOPTESTS/20250101/{region}/ec2/aws4_request, \
         SignedHeaders=host, Signature=0\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
        addr = moto.addr,
        len = body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(moto.addr)
        .await
        .expect("connect to moto");
    stream.write_all(request.as_bytes()).await.expect("send EC2 request");
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.expect("read EC2 response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    assert!(
        head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
        "EC2 {params:?} failed: {response}"
    );
    body.to_owned()
}

/// Every `<tag>value</tag>` in an XML text.
fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let re = regex::Regex::new(&format!("<{tag}>([^<]+)</{tag}>")).expect("regex");
    re.captures_iter(xml).map(|c| c[1].to_owned()).collect()
}

fn first_xml_value(xml: &str, tag: &str) -> String {
    xml_values(xml, tag)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no <{tag}> in {xml}"))
}

/// What [`fleet`] built.
struct Fleet {
    region: &'static str,
    target_group_arn: String,
    /// Registered in the target group.
    registered: Vec<String>,
    /// Running, in the VPC, never registered.
    spare: String,
    /// A client made from the provider's own SDK config, for set-up and for looking behind
    /// pitstop's back.
    elb: elbv2::Client,
}

const PORT: i32 = 8080;

/// A VPC with two subnets, four instances, a target group (instance type, port 8080) with
/// three of them registered, and an ALB whose listener forwards to the group.
async fn fleet(moto: &MotoServer, provider: &SdkProvider, region: &'static str) -> Fleet {
    let vpc = first_xml_value(
        &ec2(moto, region, &[("Action", "CreateVpc"), ("CidrBlock", "10.42.0.0/16")]).await,
        "vpcId",
    );
    let mut subnets = Vec::new();
    for (cidr, zone) in [("10.42.1.0/24", "a"), ("10.42.2.0/24", "b")] {
        let az = format!("{region}{zone}");
        let xml = ec2(
            moto,
            region,
            &[
                ("Action", "CreateSubnet"),
                ("VpcId", &vpc),
                ("CidrBlock", cidr),
                ("AvailabilityZone", &az),
            ],
        )
        .await;
        subnets.push(first_xml_value(&xml, "subnetId"));
    }
    let xml = ec2(
        moto,
        region,
        &[
            ("Action", "RunInstances"),
            // moto does not validate AMI IDs unless told to.
            ("ImageId", "ami-12c6146b"),
            ("InstanceType", "t3.micro"),
            ("MinCount", "4"),
            ("MaxCount", "4"),
            ("SubnetId", &subnets[0]),
        ],
    )
    .await;
    let mut instances = xml_values(&xml, "instanceId");
    instances.dedup();
    assert_eq!(instances.len(), 4, "RunInstances answered {xml}");
    let spare = instances.pop().expect("four instances");

    let elb = elbv2::Client::new(&provider.sdk_config(region).await);
    let group = elb
        .create_target_group()
        .name(format!("pitstop-{region}"))
        .protocol(elbv2::types::ProtocolEnum::Http)
        .port(PORT)
        .vpc_id(&vpc)
        .target_type(elbv2::types::TargetTypeEnum::Instance)
        .health_check_path("/healthz")
        .send()
        .await
        .expect("CreateTargetGroup");
    let target_group_arn = group
        .target_groups()
        .first()
        .and_then(|g| g.target_group_arn())
        .expect("target group ARN")
        .to_owned();
    let lb = elb
        .create_load_balancer()
        .name(format!("pitstop-{region}"))
        .set_subnets(Some(subnets.clone()))
        .r#type(elbv2::types::LoadBalancerTypeEnum::Application)
        .scheme(elbv2::types::LoadBalancerSchemeEnum::Internal)
        .send()
        .await
        .expect("CreateLoadBalancer");
    let lb_arn = lb
        .load_balancers()
        .first()
        .and_then(|l| l.load_balancer_arn())
        .expect("load balancer ARN")
        .to_owned();
    elb.create_listener()
        .load_balancer_arn(&lb_arn)
        .protocol(elbv2::types::ProtocolEnum::Http)
        .port(80)
        .default_actions(
            elbv2::types::Action::builder()
                .r#type(elbv2::types::ActionTypeEnum::Forward)
                .target_group_arn(&target_group_arn)
                .build(),
        )
        .send()
        .await
        .expect("CreateListener");
    let mut register = elb.register_targets().target_group_arn(&target_group_arn);
    for id in &instances {
        register = register.targets(elbv2::types::TargetDescription::builder().id(id).build());
    }
    register.send().await.expect("RegisterTargets");

    Fleet {
        region,
        target_group_arn,
        registered: instances,
        spare,
        elb,
    }
}

fn target(instance_id: &str) -> Target {
    Target {
        instance_id: instance_id.to_owned(),
        port: Some(PORT),
    }
}

// ---------------------------------------------------------------------------------------------
// TargetGroups
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn target_health_of_group_and_of_single_instances() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "us-east-1").await;
    let apis = provider.for_region(fleet.region).await;

    let mut rows = apis
        .target_groups
        .target_health(&fleet.target_group_arn)
        .await
        .expect("target_health");
    rows.sort_by(|a, b| a.target.instance_id.cmp(&b.target.instance_id));
    let mut expected_ids = fleet.registered.clone();
    expected_ids.sort();
    assert_eq!(
        rows.iter().map(|r| r.target.instance_id.clone()).collect::<Vec<_>>(),
        expected_ids
    );
    for row in &rows {
        // moto: registered targets are `healthy` at once; AWS starts them at `initial` and
        // waits for the health checks.
        assert_eq!(row.state, TargetState::Healthy, "{row:?}");
        assert_eq!(row.target.port, Some(PORT), "{row:?}");
    }

    let one = apis
        .target_groups
        .instance_health(&fleet.target_group_arn, &target(&fleet.registered[1]))
        .await
        .expect("instance_health of a registered instance");
    assert_eq!(one.target, target(&fleet.registered[1]));
    assert_eq!(one.state, TargetState::Healthy);

    let spare = apis
        .target_groups
        .instance_health(&fleet.target_group_arn, &target(&fleet.spare))
        .await
        .expect("instance_health of an unregistered instance");
    // As on AWS: a row with state `unused` and reason Target.NotRegistered.
    assert_eq!(spare.target.instance_id, fleet.spare);
    assert_eq!(spare.state, TargetState::Unused);
    assert_eq!(spare.reason.as_deref(), Some("Target.NotRegistered"));
    assert!(spare.description.is_some());

    let stats = provider.stats().snapshot();
    assert_eq!(
        stats.get(ApiOperation::DescribeTargetHealth),
        OperationCounts {
            calls: 3,
            errors: 0,
            throttled: 0
        }
    );
    // The set-up client is not the provider's, so its calls are not counted.
    assert_eq!(stats.get(ApiOperation::Other).calls, 0);
}

#[tokio::test]
async fn deregistration_delay_reads_the_attribute() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "eu-west-1").await;
    let apis = provider.for_region(fleet.region).await;

    let delay = apis
        .target_groups
        .deregistration_delay(&fleet.target_group_arn)
        .await
        .expect("delay");
    assert_eq!(delay, Duration::from_secs(300), "AWS's default");

    fleet
        .elb
        .modify_target_group_attributes()
        .target_group_arn(&fleet.target_group_arn)
        .attributes(
            elbv2::types::TargetGroupAttribute::builder()
                .key("deregistration_delay.timeout_seconds")
                .value("45")
                .build(),
        )
        .send()
        .await
        .expect("ModifyTargetGroupAttributes");
    let delay = apis
        .target_groups
        .deregistration_delay(&fleet.target_group_arn)
        .await
        .expect("delay");
    assert_eq!(delay, Duration::from_secs(45));
}

#[tokio::test]
async fn deregister_and_register_round_trip() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "eu-central-1").await;
    let apis = provider.for_region(fleet.region).await;
    let tg = &fleet.target_group_arn;
    let leaving = target(&fleet.registered[0]);

    apis.target_groups.deregister(tg, &leaving).await.expect("deregister");
    let health = apis.target_groups.instance_health(tg, &leaving).await.expect("health");
    // moto: straight to `unused`. AWS reports `draining` for the group's deregistration delay
    // first; the sandbox tests cover that.
    assert_eq!(health.state, TargetState::Unused);
    assert_eq!(health.reason.as_deref(), Some("Target.NotRegistered"));
    let rows = apis.target_groups.target_health(tg).await.expect("target_health");
    assert_eq!(rows.len(), 2);
    assert!(rows.iter().all(|r| r.target.instance_id != leaving.instance_id));

    // Idempotent. moto answers a second DeregisterTargets with InvalidTarget (AWS accepts it);
    // the implementation sees that the target is out of the group and succeeds.
    apis.target_groups
        .deregister(tg, &leaving)
        .await
        .expect("deregister again");

    apis.target_groups.register(tg, &leaving).await.expect("register");
    let health = apis.target_groups.instance_health(tg, &leaving).await.expect("health");
    assert_eq!(
        health.state,
        TargetState::Healthy,
        "moto: healthy at once, AWS: initial first"
    );
    apis.target_groups.register(tg, &leaving).await.expect("register again");
    let rows = apis.target_groups.target_health(tg).await.expect("target_health");
    assert_eq!(rows.len(), 3);

    let stats = provider.stats().snapshot();
    assert_eq!(
        stats.get(ApiOperation::DeregisterTargets),
        OperationCounts {
            calls: 2,
            errors: 1,
            throttled: 0
        },
        "the second deregister is one refused call"
    );
    assert_eq!(stats.get(ApiOperation::RegisterTargets).calls, 2);
}

#[tokio::test]
async fn missing_target_group_is_not_found() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "us-west-2").await;
    let apis = provider.for_region(fleet.region).await;
    let missing = fleet.target_group_arn.replace("pitstop-us-west-2", "pitstop-gone");
    assert_ne!(missing, fleet.target_group_arn);
    let t = target(&fleet.registered[0]);

    let errors = [
        apis.target_groups.target_health(&missing).await.err(),
        apis.target_groups.instance_health(&missing, &t).await.err(),
        apis.target_groups.deregistration_delay(&missing).await.err(),
        apis.target_groups.deregister(&missing, &t).await.err(),
        apis.target_groups.register(&missing, &t).await.err(),
    ];
    for error in errors {
        let error = error.expect("an error for a target group that does not exist");
        assert_eq!(error.kind, AwsErrorKind::NotFound, "{error}");
        assert_eq!(error.code.as_deref(), Some("TargetGroupNotFound"), "{error}");
    }
}

#[tokio::test]
async fn a_missing_target_group_reads_as_one_line_with_the_fix() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "eu-north-1").await;
    let apis = provider.for_region(fleet.region).await;
    let missing = fleet.target_group_arn.replace("pitstop-eu-north-1", "pitstop-gone");
    let error = apis
        .target_groups
        .target_health(&missing)
        .await
        .expect_err("no such group");
    let line = pitstop::aws::problem::describe(&error, fleet.region);
    println!("{line}");
    assert!(
        line.starts_with(
            "DescribeTargetHealth in eu-north-1 found nothing to work on (TargetGroupNotFound (HTTP 400): "
        ),
        "{line}"
    );
    assert!(
        line.ends_with(": check the plan's target group ARN, instance IDs and SSM document names"),
        "{line}"
    );

    assert!(error.kind.is_permanent());
    // moto accepts SendCommand with any document name; `InvalidDocument` is covered with
    // SSM's own answer in aws_error_paths.rs.
}

// ---------------------------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn running_instances_with_every_tag_in_id_order_with_their_zones() {
    let moto = moto();
    let provider = provider(&moto);
    let region = "ap-south-1";
    let fleet = fleet(&moto, &provider, region).await;
    let tag = |ids: &[&String], tags: &[(&str, &str)]| {
        let mut params: Vec<(String, String)> = vec![("Action".into(), "CreateTags".into())];
        for (n, id) in ids.iter().enumerate() {
            params.push((format!("ResourceId.{}", n + 1), (*id).clone()));
        }
        for (n, (k, v)) in tags.iter().enumerate() {
            params.push((format!("Tag.{}.Key", n + 1), (*k).to_owned()));
            params.push((format!("Tag.{}.Value", n + 1), (*v).to_owned()));
        }
        params
    };
    let r = &fleet.registered;
    for (ids, tags) in [
        (vec![&r[0], &r[1], &fleet.spare], vec![("app", "web"), ("env", "prod")]),
        (vec![&r[2]], vec![("app", "web"), ("env", "test")]),
    ] {
        let params = tag(&ids, &tags);
        let params: Vec<(&str, &str)> = params.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        ec2(&moto, region, &params).await;
    }
    // A stopped instance with the tags is not selected.
    ec2(
        &moto,
        region,
        &[("Action", "StopInstances"), ("InstanceId.1", &fleet.spare)],
    )
    .await;

    let apis = provider.for_region(region).await;
    let wanted = [
        ("app".to_owned(), "web".to_owned()),
        ("env".to_owned(), "prod".to_owned()),
    ]
    .into();
    let found = apis
        .instances
        .running_with_tags(&wanted)
        .await
        .expect("DescribeInstances");
    let mut expected = vec![r[0].clone(), r[1].clone()];
    expected.sort();
    assert_eq!(
        found.iter().map(|i| i.instance_id.clone()).collect::<Vec<_>>(),
        expected,
        "running, both tags, in ID order"
    );
    let zone = format!("{region}a");
    assert!(
        found
            .iter()
            .all(|i| i.availability_zone.as_deref() == Some(zone.as_str())),
        "{found:?}"
    );
    let none = apis
        .instances
        .running_with_tags(&[("app".to_owned(), "nothing".to_owned())].into())
        .await
        .expect("DescribeInstances");
    assert!(none.is_empty(), "{none:?}");
    // Zones by ID (order: ByZone): an ID EC2 does not know is left out, not an error.
    let zones = apis
        .instances
        .zones(&[r[0].clone(), r[2].clone(), "i-0123456789abcdef9".to_owned()])
        .await
        .expect("DescribeInstances");
    assert_eq!(
        zones,
        [(r[0].clone(), zone.clone()), (r[2].clone(), zone.clone())].into()
    );
    assert_eq!(
        provider.stats().snapshot().get(ApiOperation::DescribeInstances),
        OperationCounts {
            calls: 3,
            errors: 0,
            throttled: 0
        }
    );
}

#[tokio::test]
async fn the_tags_a_policy_asks_for_are_read_for_groups_and_instances() {
    let moto = moto();
    let provider = provider(&moto);
    let region = "ca-central-1";
    let fleet = fleet(&moto, &provider, region).await;
    let r = &fleet.registered;
    fleet
        .elb
        .add_tags()
        .resource_arns(&fleet.target_group_arn)
        .tags(
            elbv2::types::Tag::builder()
                .key("pitstop.dev/managed")
                .value("true")
                .build(),
        )
        .send()
        .await
        .expect("AddTags");
    ec2(
        &moto,
        region,
        &[
            ("Action", "CreateTags"),
            ("ResourceId.1", &r[0]),
            ("Tag.1.Key", "pitstop.dev/managed"),
            ("Tag.1.Value", "true"),
        ],
    )
    .await;
    ec2(
        &moto,
        region,
        &[("Action", "TerminateInstances"), ("InstanceId.1", &r[2])],
    )
    .await;

    let apis = provider.for_region(region).await;
    let groups = apis
        .target_groups
        .tags(std::slice::from_ref(&fleet.target_group_arn))
        .await
        .expect("DescribeTags");
    assert_eq!(
        groups
            .get(&fleet.target_group_arn)
            .and_then(|t| t.get("pitstop.dev/managed")),
        Some(&"true".to_owned()),
        "{groups:?}"
    );
    let unknown = "i-0123456789abcdef9".to_owned();
    let instances = apis
        .instances
        .tags(&[r[0].clone(), r[1].clone(), r[2].clone(), unknown])
        .await
        .expect("DescribeInstances");
    assert_eq!(
        instances,
        [
            (
                r[0].clone(),
                [("pitstop.dev/managed".to_owned(), "true".to_owned())].into()
            ),
            (r[1].clone(), Default::default()),
        ]
        .into(),
        "untagged ones read with no tags; terminated and unknown ones are left out"
    );
    let snapshot = provider.stats().snapshot();
    assert_eq!(snapshot.get(ApiOperation::DescribeTags).calls, 1);
    assert_eq!(snapshot.get(ApiOperation::DescribeInstances).calls, 1);
}

// ---------------------------------------------------------------------------------------------
// Auto Scaling
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn an_auto_scaling_group_with_its_sizes_members_zones_and_lifecycle_states() {
    let moto = moto();
    let provider = provider(&moto);
    let region = "ca-central-1";
    // Set-up through the SDK itself, from the provider's configuration but without its call
    // counters, so only pitstop's own reads are counted.
    let asg = aws_sdk_autoscaling::Client::new(&provider.sdk_config(region).await);
    asg.create_launch_configuration()
        .launch_configuration_name("web")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .expect("CreateLaunchConfiguration");
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("web-asg")
        .launch_configuration_name("web")
        .min_size(2)
        .max_size(4)
        .desired_capacity(3)
        .availability_zones(format!("{region}a"))
        .send()
        .await
        .expect("CreateAutoScalingGroup");
    let apis = provider.for_region(region).await;
    let group = apis
        .auto_scaling
        .group("web-asg")
        .await
        .expect("DescribeAutoScalingGroups");
    assert_eq!(group.name, "web-asg");
    assert_eq!((group.min_size, group.max_size, group.desired_capacity), (2, 4, 3));
    assert_eq!(group.instances.len(), 3, "{group:?}");
    assert!(group.instances.iter().all(|i| i.in_service()), "{group:?}");
    let zone = format!("{region}a");
    assert!(
        group
            .instances
            .iter()
            .all(|i| i.availability_zone.as_deref() == Some(zone.as_str()) && i.health_status == "Healthy"),
        "{group:?}"
    );
    let mut ids: Vec<String> = group.instances.iter().map(|i| i.instance_id.clone()).collect();
    let sorted = {
        let mut s = ids.clone();
        s.sort();
        s
    };
    assert_eq!(ids, sorted, "in ID order");

    // A member in Standby is listed with its state, and is not InService.
    asg.enter_standby()
        .auto_scaling_group_name("web-asg")
        .instance_ids(&ids[1])
        .should_decrement_desired_capacity(true)
        .send()
        .await
        .expect("EnterStandby");
    let group = apis
        .auto_scaling
        .group("web-asg")
        .await
        .expect("DescribeAutoScalingGroups");
    let standby = ids.remove(1);
    assert_eq!(
        group
            .instances
            .iter()
            .filter(|i| i.in_service())
            .map(|i| i.instance_id.clone())
            .collect::<Vec<_>>(),
        ids
    );
    assert_eq!(
        group
            .instances
            .iter()
            .find(|i| i.instance_id == standby)
            .map(|i| i.lifecycle_state.as_str()),
        Some("Standby")
    );
    assert_eq!(group.desired_capacity, 2, "ShouldDecrementDesiredCapacity");

    // AWS answers an unknown name with an empty list; pitstop reads it as NotFound.
    let missing = apis.auto_scaling.group("no-such-asg").await.expect_err("no such group");
    assert_eq!(missing.kind, AwsErrorKind::NotFound, "{missing}");
    assert_eq!(missing.iam_action(), "autoscaling:DescribeAutoScalingGroups");
    assert_eq!(
        provider.stats().snapshot().get(ApiOperation::DescribeAutoScalingGroups),
        OperationCounts {
            calls: 3,
            errors: 0,
            throttled: 0
        }
    );
}

#[tokio::test]
async fn auto_scaling_memberships_standby_min_size_and_processes() {
    let moto = moto();
    let provider = provider(&moto);
    let region = "sa-east-1";
    let setup = aws_sdk_autoscaling::Client::new(&provider.sdk_config(region).await);
    setup
        .create_launch_configuration()
        .launch_configuration_name("api")
        .image_id("ami-12c6146b")
        .instance_type("t3.micro")
        .send()
        .await
        .expect("CreateLaunchConfiguration");
    setup
        .create_auto_scaling_group()
        .auto_scaling_group_name("api-asg")
        .launch_configuration_name("api")
        .min_size(2)
        .max_size(3)
        .desired_capacity(2)
        .availability_zones(format!("{region}a"))
        .send()
        .await
        .expect("CreateAutoScalingGroup");
    let apis = provider.for_region(region).await;
    let asg = &apis.auto_scaling;
    let ids: Vec<String> = asg
        .group("api-asg")
        .await
        .expect("group")
        .instances
        .into_iter()
        .map(|i| i.instance_id)
        .collect();
    assert_eq!(ids.len(), 2);

    let stranger = "i-0fffffffffffffff0".to_owned();
    let found = asg
        .memberships(&[ids[0].clone(), stranger])
        .await
        .expect("DescribeAutoScalingInstances");
    assert_eq!(
        found.keys().collect::<Vec<_>>(),
        [&ids[0]],
        "an instance in no group is left out"
    );
    assert_eq!(found[&ids[0]].group_name, "api-asg");
    assert_eq!(found[&ids[0]].lifecycle_state, "InService");

    // moto: EnterStandby is not refused below MinSize (AWS refuses it; the sandbox pins AWS's side),
    // so MinSize is lowered first, as pitstop will.
    asg.set_min_size("api-asg", 1).await.expect("UpdateAutoScalingGroup");
    asg.enter_standby("api-asg", &ids[0]).await.expect("EnterStandby");
    let group = asg.group("api-asg").await.expect("group");
    assert_eq!((group.min_size, group.desired_capacity), (1, 1));
    let state = asg.memberships(&ids[..1]).await.expect("memberships")[&ids[0]]
        .lifecycle_state
        .clone();
    assert_eq!(state, "Standby");
    asg.exit_standby("api-asg", &ids[0]).await.expect("ExitStandby");
    asg.set_min_size("api-asg", 2).await.expect("MinSize restored");
    let group = asg.group("api-asg").await.expect("group");
    assert_eq!((group.min_size, group.desired_capacity), (2, 2));
    assert!(group.instances.iter().all(|i| i.in_service()), "{group:?}");

    let processes = ["AZRebalance".to_owned(), "HealthCheck".to_owned()];
    asg.suspend_processes("api-asg", &processes)
        .await
        .expect("SuspendProcesses");
    assert_eq!(
        asg.group("api-asg").await.expect("group").suspended_processes,
        processes
    );
    asg.resume_processes("api-asg", &processes[1..])
        .await
        .expect("ResumeProcesses");
    assert_eq!(
        asg.group("api-asg").await.expect("group").suspended_processes,
        ["AZRebalance"]
    );
    let stats = provider.stats().snapshot();
    for (op, calls) in [
        (ApiOperation::DescribeAutoScalingInstances, 2),
        (ApiOperation::EnterStandby, 1),
        (ApiOperation::ExitStandby, 1),
        (ApiOperation::UpdateAutoScalingGroup, 2),
        (ApiOperation::SuspendProcesses, 1),
        (ApiOperation::ResumeProcesses, 1),
    ] {
        assert_eq!(
            stats.get(op),
            OperationCounts {
                calls,
                errors: 0,
                throttled: 0
            },
            "{op}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Commands
// ---------------------------------------------------------------------------------------------

fn command(instance_id: &str, comment: &str) -> CommandRequest {
    CommandRequest {
        instance_id: instance_id.to_owned(),
        document_name: "AWS-RunShellScript".to_owned(),
        document_version: Some("$LATEST".to_owned()),
        parameters: [("commands".to_owned(), vec!["echo maintenance".to_owned()])].into(),
        timeout: Duration::from_secs(1200),
        comment: comment.to_owned(),
        alarms: Vec::new(),
        ignore_alarm_read_failures: false,
    }
}

/// The maintenance command of a plan with `cloudWatchAlarms.abortInFlight` carries the alarms
/// as SSM's `AlarmConfiguration`: moto accepts the request (the SDK serializes it in SSM's
/// shape) and runs the command. moto: it drops the configuration (ListCommands shows none);
/// the sandbox keeps and shows it (`sdk_conformance.rs`).
#[tokio::test]
async fn send_command_takes_an_alarm_configuration() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "eu-west-3").await;
    let apis = provider.for_region(fleet.region).await;
    let instance = &fleet.registered[0];
    let mut request = command(instance, "pitstop/uid-2/maintenance/1");
    request.alarms = vec!["web-5xx".to_owned()];
    let id = apis.commands.send(&request).await.expect("send with alarms");
    let ssm = aws_sdk_ssm::Client::new(&provider.sdk_config(fleet.region).await);
    let listed = ssm.list_commands().command_id(&id).send().await.expect("ListCommands");
    let sent = listed.commands().first().expect("the command");
    assert_eq!(sent.comment(), Some("pitstop/uid-2/maintenance/1"));
    assert_eq!(
        sent.alarm_configuration(),
        None,
        "moto: the alarm configuration is dropped (if moto keeps it now, check its alarms here)"
    );
}

#[tokio::test]
async fn send_then_find_and_read_commands() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "ap-southeast-2").await;
    let apis = provider.for_region(fleet.region).await;
    let instance = &fleet.registered[0];

    let maintenance = apis
        .commands
        .send(&command(instance, "pitstop/uid-1/maintenance/1"))
        .await
        .expect("send maintenance");
    let verify = apis
        .commands
        .send(&command(instance, "pitstop/uid-1/verify/1"))
        .await
        .expect("send verify");
    assert_ne!(maintenance, verify);

    // What reached SSM: the delivery timeout and the script's executionTimeout both from the
    // request's timeout, the comment untouched.
    let ssm = aws_sdk_ssm::Client::new(&provider.sdk_config(fleet.region).await);
    let listed = ssm
        .list_commands()
        .command_id(&maintenance)
        .send()
        .await
        .expect("ListCommands");
    let sent = listed.commands().first().expect("the command");
    assert_eq!(sent.comment(), Some("pitstop/uid-1/maintenance/1"));
    assert_eq!(sent.document_name(), Some("AWS-RunShellScript"));
    assert_eq!(sent.timeout_seconds(), Some(1200));
    let parameters = sent.parameters().expect("parameters");
    assert_eq!(parameters.get("executionTimeout"), Some(&vec!["1200".to_owned()]));
    assert_eq!(parameters.get("commands"), Some(&vec!["echo maintenance".to_owned()]));

    let found = apis
        .commands
        .find_by_comment(instance, "pitstop/uid-1/maintenance/1")
        .await
        .expect("find");
    assert_eq!(found.map(|f| f.command_id), Some(maintenance.clone()));
    let found = apis
        .commands
        .find_by_comment(instance, "pitstop/uid-1/verify/1")
        .await
        .expect("find");
    assert_eq!(found.map(|f| f.command_id), Some(verify.clone()));
    let found = apis
        .commands
        .find_by_comment(instance, "pitstop/uid-1/maintenance/2")
        .await
        .expect("find");
    assert_eq!(found, None);

    // moto: every command finishes at once with `Success` and exit code 0.
    let invocation = apis
        .commands
        .invocation(&maintenance, instance)
        .await
        .expect("invocation")
        .expect("an invocation");
    assert_eq!(invocation.status, CommandStatus::Success);
    assert_eq!(invocation.response_code, Some(0));
    assert_eq!(invocation.stderr_tail, None);

    // moto never answers InvocationDoesNotExist for the moment after SendCommand (its
    // invocations exist at once); it does for an instance the command was not sent to, which
    // takes the same path.
    let none = apis
        .commands
        .invocation(&maintenance, "i-0123456789abcdef0")
        .await
        .expect("invocation of an instance outside the command");
    assert_eq!(none, None);

    // moto: an unknown command ID is `InvalidCommandId` (AWS answers InvocationDoesNotExist).
    let error = apis
        .commands
        .invocation("00000000-0000-4000-8000-000000000000", instance)
        .await
        .expect_err("unknown command");
    assert_eq!(error.kind, AwsErrorKind::NotFound, "{error}");
    assert_eq!(error.code.as_deref(), Some("InvalidCommandId"));

    // A comment SSM would refuse is refused before any call.
    let before = provider.stats().snapshot().get(ApiOperation::SendCommand).calls;
    let error = apis
        .commands
        .send(&command(instance, &"x".repeat(101)))
        .await
        .expect_err("a 101-character comment");
    assert_eq!(error.kind, AwsErrorKind::Rejected);
    assert_eq!(provider.stats().snapshot().get(ApiOperation::SendCommand).calls, before);
}

#[tokio::test]
async fn cancel_and_agent_ping_are_not_implemented_by_moto() {
    let moto = moto();
    let provider = provider(&moto);
    let fleet = fleet(&moto, &provider, "sa-east-1").await;
    let apis = provider.for_region(fleet.region).await;
    let instance = &fleet.registered[0];
    let id = apis
        .commands
        .send(&command(instance, "pitstop/uid-2/maintenance/1"))
        .await
        .expect("send");

    // moto: CancelCommand and DescribeInstanceInformation are not implemented and answer
    // HTTP 500, which is Transient and retried. Their real answers (cancel of a finished
    // command, each ping status, an unmanaged instance) are covered in aws_error_paths.rs.
    let error = apis
        .commands
        .cancel(&id, instance)
        .await
        .expect_err("moto has no CancelCommand");
    assert_eq!(error.kind, AwsErrorKind::Transient, "{error}");
    let error = apis
        .commands
        .agent_ping(instance)
        .await
        .expect_err("moto has no DescribeInstanceInformation");
    assert_eq!(error.kind, AwsErrorKind::Transient, "{error}");
    // Let a newer moto that implements them fail this test loudly, not pass for the wrong
    // reason: the answers must have been server errors, retried.
    let stats = provider.stats().snapshot();
    for op in [ApiOperation::CancelCommand, ApiOperation::DescribeInstanceInformation] {
        assert_eq!(
            stats.get(op),
            OperationCounts {
                calls: u64::from(MAX_ATTEMPTS),
                errors: u64::from(MAX_ATTEMPTS),
                throttled: 0
            },
            "{op}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Configuration from the environment
// ---------------------------------------------------------------------------------------------

const CHILD_MARKER: &str = "PITSTOP_AWS_MOTO_ENV_CHILD";

/// The endpoint and credentials a user gives through the environment reach the SDK: runs this
/// test again in a child process with only `AWS_ENDPOINT_URL` and keys in the environment (a
/// test cannot safely set environment variables in its own, multi-threaded process).
#[tokio::test]
async fn endpoint_url_and_credentials_from_the_environment() {
    if std::env::var_os(CHILD_MARKER).is_some() {
        return endpoint_from_environment_child().await;
    }
    let moto = moto();
    let exe = std::env::current_exe().expect("test binary");
    let output = tokio::process::Command::new(exe)
        .args([
            "endpoint_url_and_credentials_from_the_environment",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MARKER, "1")
        .env("AWS_ENDPOINT_URL", moto.url())
        .env("AWS_ACCESS_KEY_ID", "AKIDPITSTOPTESTS")
        .env("AWS_SECRET_ACCESS_KEY", "pitstop-test-secret")
        // Keep whatever the developer has configured out of the child.
        .env("AWS_CONFIG_FILE", "/nonexistent/pitstop/config")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/pitstop/credentials")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_SESSION_TOKEN")
        .env_remove("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS")
        .env_remove("AWS_ENDPOINT_URL_SSM")
        .env_remove("AWS_ENDPOINT_URL_ELASTIC_LOAD_BALANCING_V2")
        .output()
        .await
        .expect("run the child test");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "child failed:\n{stdout}\n{stderr}");
    assert!(
        stdout.contains("1 passed"),
        "the child ran no test:\n{stdout}\n{stderr}"
    );
}

async fn endpoint_from_environment_child() {
    let provider = SdkProvider::new(SdkSettings {
        max_attempts: 1,
        ..SdkSettings::default()
    });
    let expected = std::env::var("AWS_ENDPOINT_URL").expect("set by the parent");
    let config = provider.sdk_config("us-east-1").await;
    assert_eq!(config.endpoint_url(), Some(expected.as_str()));

    let apis = provider.for_region("us-east-1").await;
    // Only moto (or AWS with valid keys) can say TargetGroupNotFound; without the endpoint the
    // call would go to AWS and fail on the test keys.
    let missing = "arn:aws:elasticloadbalancing:us-east-1:123456789012:targetgroup/pitstop-none/0123456789abcdef";
    let error = apis
        .target_groups
        .target_health(missing)
        .await
        .expect_err("no such group");
    assert_eq!(error.code.as_deref(), Some("TargetGroupNotFound"), "{error}");
    // And SSM goes to the same place.
    let id = apis
        .commands
        .send(&command("i-0123456789abcdef0", "pitstop/env/maintenance/1"))
        .await
        .expect("send through the environment's endpoint");
    assert!(!id.is_empty());
}
