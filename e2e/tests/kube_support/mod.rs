//! Support for `kube_e2e.rs`: a real Kubernetes API server to test against (given through
//! `KUBECONFIG`, or started here envtest-style from `KUBE_APISERVER` + `ETCD`), a test
//! namespace holding the chart's ServiceAccount and RBAC, a kubeconfig with that account's
//! token, `pitstop controller` processes running with it, and polling with upper bounds.
//!
//! Everything a test starts is torn down when it ends, also when it fails: child processes
//! are killed on drop (and by the kernel if the test process dies: `PR_SET_PDEATHSIG`), and
//! [`run`] deletes the test namespace after the scenario, whatever its outcome.

#![allow(dead_code)] // Each scenario uses a different subset.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::future::Future;
use std::net::{Ipv4Addr, SocketAddr};
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use futures::FutureExt;
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Client, Config, Resource, ResourceExt};
use pitstop::api::{InstancePhase, MaintenancePlan, MaintenancePolicy, PlanPhase};
use pitstop_e2e::experiment::default_pitstop_binary;
use pitstop_e2e::sandbox::{Sandbox, SandboxConfig, TargetState, check_haproxy_binary, http_get, tie_to_parent};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

/// Field manager of everything the test applies.
pub const FIELD_MANAGER: &str = "e2e";
/// Label on the test namespaces, so a run that was killed can be cleaned up by hand:
/// `kubectl delete ns -l pitstop.dev/e2e`.
pub const NAMESPACE_LABEL: &str = "pitstop.dev/e2e";
/// Name of the chart release the RBAC is rendered for.
pub const RELEASE: &str = "pitstop";
/// How often the tests look at the cluster and the sandbox.
const POLL: Duration = Duration::from_millis(200);
/// Upper bound on every wait for the API server or a controller to come up.
const STARTUP_LIMIT: Duration = Duration::from_secs(90);
/// Upper bound on the clean-up of a test namespace on a long-lived cluster.
const NAMESPACE_DELETE_LIMIT: Duration = Duration::from_secs(120);

/// One fleet (sandbox, controllers, maybe an API server) at a time: the machine has 2 cores.
static ONE_FLEET_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The repository root (the parent of `e2e/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from(".."))
}

// ----------------------------------------------------------------------------- running a scenario

/// Runs `scenario` against the cluster the environment names, or prints a `SKIPPED:` banner
/// and returns when it names none. The scenario gets a [`Harness`]: a fresh namespace with
/// the CRD installed and the chart's ServiceAccount and RBAC in it. The namespace is deleted
/// afterwards, also when the scenario panics (the panic is then passed on).
pub async fn run<F, Fut>(test: &str, scenario: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    run_with(test, Install::Namespaced, scenario).await;
}

/// Which of the chart's installs a scenario runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Install {
    /// `watchNamespace` = the test namespace: Roles there, the controller `--namespace`d.
    Namespaced,
    /// No `watchNamespace`: ClusterRoles, the controller watching every namespace (what a
    /// platform team runs for several tenants).
    ClusterWide,
}

/// [`run`], under the given install.
pub async fn run_with<F, Fut>(test: &str, install: Install, scenario: F)
where
    F: FnOnce(Harness) -> Fut,
    Fut: Future<Output = ()>,
{
    let _one = ONE_FLEET_AT_A_TIME.lock().await;
    let Some(cluster) = Cluster::connect(test).await else {
        return;
    };
    let namespace = cluster.create_namespace(test).await;
    let outcome = AssertUnwindSafe(async {
        let harness = Harness::setup(&cluster, &namespace, install).await;
        scenario(harness).await;
    })
    .catch_unwind()
    .await;
    cluster.delete_namespace(&namespace).await;
    cluster.stop().await;
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}

/// Prints the banner of a test that did not run.
pub fn skip_banner(test: &str, reason: &str) {
    eprintln!(
        "\nSKIPPED: {test}: no Kubernetes API server to run against ({reason}).\n\
         SKIPPED: this test did NOT run. To run it (see e2e/KUBE_E2E.md), one of:\n\
         SKIPPED:   KUBECONFIG=/path/to/a-test-cluster.kubeconfig make e2e-kube\n\
         SKIPPED:   PITSTOP_E2E_KUBE=1 make e2e-kube      # the current context of ~/.kube/config\n\
         SKIPPED:   KUBE_APISERVER=/path/to/kube-apiserver ETCD=/path/to/etcd make e2e-kube"
    );
}

// ----------------------------------------------------------------------------- the cluster

/// Where the API server comes from; `Err` is the reason to skip.
enum Source {
    /// Binaries to start here, envtest-style.
    Envtest { apiserver: PathBuf, etcd: PathBuf },
    /// A cluster some kubeconfig points at.
    Kubeconfig { config: Box<Kubeconfig>, origin: String },
}

fn env_path(var: &str) -> Option<PathBuf> {
    std::env::var_os(var).filter(|v| !v.is_empty()).map(PathBuf::from)
}

/// Finds `program` on `PATH`.
pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

/// Reads the files of a `KUBECONFIG` list that exist, merged as kubectl does.
fn read_kubeconfigs(paths: &[PathBuf]) -> Kubeconfig {
    paths
        .iter()
        .filter(|p| p.is_file())
        .try_fold(Kubeconfig::default(), |merged, path| {
            Kubeconfig::read_from(path).and_then(|next| merged.merge(next))
        })
        .unwrap_or_else(|err| panic!("cannot read the kubeconfig {paths:?}: {err}"))
}

/// The API server the environment asks for. A setting that is given but unusable (a binary
/// that does not exist, a kubeconfig that does not parse) fails the test rather than
/// skipping it: whoever set it meant the test to run.
fn source_from_env() -> Result<Source, String> {
    match (env_path("KUBE_APISERVER"), env_path("ETCD")) {
        (Some(apiserver), Some(etcd)) => {
            for (var, path) in [("KUBE_APISERVER", &apiserver), ("ETCD", &etcd)] {
                assert!(path.is_file(), "{var}={} is not a file", path.display());
            }
            if find_on_path("openssl").is_none() {
                return Err(
                    "KUBE_APISERVER and ETCD are set, but `openssl`, needed for the service-account signing key, \
                     is not on PATH"
                        .to_owned(),
                );
            }
            return Ok(Source::Envtest { apiserver, etcd });
        }
        (Some(_), None) => panic!("KUBE_APISERVER is set but ETCD is not: the test starts both (envtest-style)"),
        (None, Some(_)) => panic!("ETCD is set but KUBE_APISERVER is not: the test starts both (envtest-style)"),
        (None, None) => {}
    }
    if let Some(value) = std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
        let paths: Vec<PathBuf> = std::env::split_paths(&value)
            .filter(|p| !p.as_os_str().is_empty())
            .collect();
        if !paths.iter().any(|p| p.is_file()) {
            return Err(format!("KUBECONFIG={} names no existing file", value.to_string_lossy()));
        }
        return Ok(Source::Kubeconfig {
            config: Box::new(read_kubeconfigs(&paths)),
            origin: format!("KUBECONFIG={}", value.to_string_lossy()),
        });
    }
    let default_path = std::env::var_os("HOME").map(|home| Path::new(&home).join(".kube").join("config"));
    if std::env::var("PITSTOP_E2E_KUBE").is_ok_and(|v| v == "1") {
        let Some(path) = default_path.filter(|p| p.is_file()) else {
            return Err("PITSTOP_E2E_KUBE=1 but there is no ~/.kube/config".to_owned());
        };
        return Ok(Source::Kubeconfig {
            config: Box::new(read_kubeconfigs(std::slice::from_ref(&path))),
            origin: path.display().to_string(),
        });
    }
    Err(if default_path.is_some_and(|p| p.is_file()) {
        "KUBECONFIG is not set and KUBE_APISERVER + ETCD are not given; ~/.kube/config is used only with \
         PITSTOP_E2E_KUBE=1, so that a default context is never touched by accident"
            .to_owned()
    } else {
        "KUBECONFIG is not set and KUBE_APISERVER + ETCD are not given".to_owned()
    })
}

/// Picks rustls' process-wide crypto provider, ring, as the controller does: if a dependency
/// ever turns on a second one, rustls refuses to guess and a kube client built without a
/// chosen provider panics. Installing twice is harmless.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A client for the current context of `config`.
pub async fn client_for(config: &Kubeconfig) -> Client {
    let config = Config::from_custom_kubeconfig(config.clone(), &KubeConfigOptions::default())
        .await
        .unwrap_or_else(|err| panic!("unusable kubeconfig: {err}"));
    Client::try_from(config).unwrap_or_else(|err| panic!("cannot build a Kubernetes client: {err}"))
}

/// The API server the test runs against, with an admin client.
pub struct Cluster {
    /// A client with the rights to install the CRD and RBAC (the kubeconfig's user, or the
    /// local API server's static admin token).
    pub client: Client,
    /// The kubeconfig `client` was made from, for the ServiceAccount's kubeconfig.
    admin: Kubeconfig,
    /// For messages: which server this is.
    pub description: String,
    /// The local API server and etcd, when the test started them.
    envtest: Option<Envtest>,
}

impl Cluster {
    /// Connects to (or starts) the API server the environment names; `None` after printing
    /// the `SKIPPED:` banner when it names none.
    pub async fn connect(test: &str) -> Option<Cluster> {
        install_crypto_provider();
        let source = match source_from_env() {
            Ok(source) => source,
            Err(reason) => {
                skip_banner(test, &reason);
                return None;
            }
        };
        let cluster = match source {
            Source::Envtest { apiserver, etcd } => {
                let mut envtest = Envtest::start(&apiserver, &etcd).await;
                let admin = envtest.kubeconfig();
                let client = client_for(&admin).await;
                envtest.wait_ready(&client).await;
                Cluster {
                    client,
                    admin,
                    description: format!("a kube-apiserver started here on {}", envtest.url),
                    envtest: Some(envtest),
                }
            }
            Source::Kubeconfig { config, origin } => {
                let client = client_for(&config).await;
                let context = config.current_context.clone().unwrap_or_default();
                Cluster {
                    client,
                    admin: *config,
                    description: format!("context {context:?} of {origin}"),
                    envtest: None,
                }
            }
        };
        let version = cluster
            .client
            .apiserver_version()
            .await
            .unwrap_or_else(|err| panic!("cannot reach the API server ({}): {err}", cluster.description));
        eprintln!(
            "RUNNING: {test} against {} (Kubernetes {})",
            cluster.description, version.git_version
        );
        Some(cluster)
    }

    /// Whether the API server was started by the test (and goes away with it).
    pub fn is_local(&self) -> bool {
        self.envtest.is_some()
    }

    /// The API server process, when the test started it (so a test can stop and start it).
    pub fn local_apiserver(&self) -> Option<LocalApiserver> {
        self.envtest.as_ref().map(|envtest| envtest.apiserver.clone())
    }

    /// Creates a fresh namespace for one test.
    pub async fn create_namespace(&self, test: &str) -> String {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("pitstop-e2e-{}", &suffix[..10]);
        let namespace: Namespace = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {
                "name": name,
                "labels": { NAMESPACE_LABEL: "true" },
                "annotations": { "pitstop.dev/e2e-test": test },
            },
        }))
        .expect("a Namespace");
        Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &namespace)
            .await
            .unwrap_or_else(|err| panic!("cannot create the test namespace {name}: {err}"));
        eprintln!("namespace {name} created");
        name
    }

    /// Deletes a test namespace: first every MaintenancePlan in it, with its finalizer
    /// removed (the controllers are gone by now, and nobody would ever remove it), then the
    /// namespace. On a long-lived cluster, waits until it is gone. Errors are reported, not
    /// raised: this runs after the test, whatever its outcome.
    pub async fn delete_namespace(&self, namespace: &str) {
        let plans: Api<MaintenancePlan> = Api::namespaced(self.client.clone(), namespace);
        if let Ok(list) = plans.list_metadata(&ListParams::default()).await {
            for plan in list.items {
                let name = plan.name_any();
                if !plan.finalizers().is_empty() {
                    let patch = json!({ "metadata": { "finalizers": null } });
                    if let Err(err) = plans
                        .patch_metadata(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        eprintln!("clean-up: cannot remove the finalizer of plan {name}: {err}");
                    }
                }
                if let Err(err) = plans.delete(&name, &DeleteParams::default()).await {
                    eprintln!("clean-up: cannot delete plan {name}: {err}");
                }
            }
        }
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        if let Err(err) = namespaces.delete(namespace, &DeleteParams::background()).await {
            eprintln!("clean-up: cannot delete namespace {namespace}: {err}");
            return;
        }
        if self.is_local() {
            // No namespace controller runs next to a bare API server; it goes away with it.
            return;
        }
        let started = Instant::now();
        loop {
            match namespaces.get_opt(namespace).await {
                Ok(None) => {
                    eprintln!("namespace {namespace} deleted");
                    return;
                }
                Ok(Some(_)) if started.elapsed() < NAMESPACE_DELETE_LIMIT => tokio::time::sleep(POLL).await,
                Ok(Some(_)) => {
                    eprintln!(
                        "clean-up: namespace {namespace} is still terminating after {NAMESPACE_DELETE_LIMIT:?}; \
                         it will go on its own (or: kubectl delete ns -l {NAMESPACE_LABEL})"
                    );
                    return;
                }
                Err(err) => {
                    eprintln!("clean-up: cannot read namespace {namespace}: {err}");
                    return;
                }
            }
        }
    }

    /// Stops the local API server and etcd, if the test started them.
    pub async fn stop(self) {
        if let Some(envtest) = self.envtest {
            envtest.stop().await;
        }
    }
}

// ----------------------------------------------------------------------------- envtest

/// A free TCP port on 127.0.0.1 (free when asked; taken by whoever binds it first).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port on 127.0.0.1")
}

/// The last `max` bytes of a log file.
fn log_tail(path: &Path, max: usize) -> String {
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(max);
            String::from_utf8_lossy(&bytes[start..]).trim().to_owned()
        }
        Err(err) => format!("(no log at {}: {err})", path.display()),
    }
}

/// etcd and kube-apiserver started here on 127.0.0.1, as controller-runtime's envtest does:
/// etcd with a temporary data dir, the API server with a static admin token, RBAC, and a
/// fresh RSA key for service-account tokens.
struct Envtest {
    // Children first: fields drop in order, so they are killed before their directory goes.
    apiserver: LocalApiserver,
    etcd: Child,
    url: String,
    token: String,
    dir: tempfile::TempDir,
}

impl Envtest {
    async fn start(apiserver_binary: &Path, etcd_binary: &Path) -> Envtest {
        let dir = tempfile::Builder::new()
            .prefix("pitstop-envtest-")
            .tempdir()
            .expect("a temporary directory");
        let etcd_log = dir.path().join("etcd.log");
        let apiserver_log = dir.path().join("kube-apiserver.log");

        let client_port = free_port();
        let peer_port = free_port();
        let client_url = format!("http://127.0.0.1:{client_port}");
        let peer_url = format!("http://127.0.0.1:{peer_port}");
        let mut etcd = spawn_logged(
            etcd_binary,
            &etcd_args(&dir.path().join("etcd"), &client_url, &peer_url),
            &etcd_log,
        );
        let etcd_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, client_port));
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = etcd.try_wait() {
                panic!("etcd exited with {status}:\n{}", log_tail(&etcd_log, 4000));
            }
            if let Ok(response) = http_get(etcd_addr, "/health").await
                && response.status == 200
                && response.body.contains("true")
            {
                break;
            }
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "etcd not healthy after {STARTUP_LIMIT:?}:\n{}",
                log_tail(&etcd_log, 4000)
            );
            tokio::time::sleep(POLL).await;
        }

        let key = dir.path().join("service-account.key");
        let openssl = Command::new("openssl")
            .arg("genrsa")
            .arg("-out")
            .arg(&key)
            .arg("2048")
            .stdin(Stdio::null())
            .output()
            .await
            .expect("run openssl");
        assert!(
            openssl.status.success(),
            "openssl genrsa failed: {}",
            String::from_utf8_lossy(&openssl.stderr)
        );
        let token = uuid::Uuid::new_v4().simple().to_string();
        let tokens = dir.path().join("tokens.csv");
        std::fs::write(
            &tokens,
            format!("{token},pitstop-e2e-admin,pitstop-e2e-admin,\"system:masters\"\n"),
        )
        .expect("write the token file");

        let port = free_port();
        let url = format!("https://127.0.0.1:{port}");
        let args = apiserver_args(port, &client_url, &dir.path().join("certs"), &tokens, &key);
        let apiserver = LocalApiserver::spawn(apiserver_binary, args, apiserver_log);
        Envtest {
            apiserver,
            etcd,
            url,
            token,
            dir,
        }
    }

    /// A kubeconfig for the static admin token. The API server's certificate is one it made
    /// up itself in its `--cert-dir`, so it is not verified.
    fn kubeconfig(&self) -> Kubeconfig {
        let config = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{ "name": "envtest", "cluster": { "server": self.url, "insecure-skip-tls-verify": true } }],
            "users": [{ "name": "admin", "user": { "token": self.token } }],
            "contexts": [{ "name": "envtest", "context": { "cluster": "envtest", "user": "admin", "namespace": "default" } }],
            "current-context": "envtest",
        });
        Kubeconfig::from_yaml(&config.to_string()).expect("the envtest kubeconfig parses")
    }

    /// Waits until `/readyz` answers 200 (etcd reached, RBAC bootstrapped, CRD support up).
    async fn wait_ready(&mut self, client: &Client) {
        if let Ok(Some(status)) = self.etcd.try_wait() {
            let etcd_log = self.dir.path().join("etcd.log");
            panic!("etcd exited with {status}:\n{}", log_tail(&etcd_log, 4000));
        }
        self.apiserver.wait_ready(client).await;
    }

    async fn stop(mut self) {
        self.apiserver.stop().await;
        let _ = self.etcd.start_kill();
        let _ = self.etcd.wait().await;
    }
}

/// The kube-apiserver process of an envtest-style cluster, which a test can stop and start
/// again (same flags, same port, same etcd data) to play an apiserver outage. Clones share
/// the process.
#[derive(Clone)]
pub struct LocalApiserver {
    inner: Arc<LocalApiserverInner>,
}

struct LocalApiserverInner {
    binary: PathBuf,
    args: Vec<String>,
    log: PathBuf,
    child: tokio::sync::Mutex<Option<Child>>,
}

impl LocalApiserver {
    fn spawn(binary: &Path, args: Vec<String>, log: PathBuf) -> Self {
        let child = spawn_logged(binary, &args, &log);
        Self {
            inner: Arc::new(LocalApiserverInner {
                binary: binary.to_owned(),
                args,
                log,
                child: tokio::sync::Mutex::new(Some(child)),
            }),
        }
    }

    /// Stops the apiserver (SIGKILL: it gets no chance to answer anything more). etcd and
    /// its data stay.
    pub async fn stop(&self) {
        if let Some(mut child) = self.inner.child.lock().await.take() {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
    }

    /// Starts the apiserver again with the same flags (port, certificates, keys) on the same
    /// etcd data, and waits until it is ready for `client`. Its log goes on in the same file.
    pub async fn start(&self, client: &Client) {
        {
            let mut child = self.inner.child.lock().await;
            if child.is_none() {
                *child = Some(spawn_appending(&self.inner.binary, &self.inner.args, &self.inner.log));
            }
        }
        self.wait_ready(client).await;
    }

    /// Waits until `/readyz` answers 200, failing with the log if the process exits.
    pub async fn wait_ready(&self, client: &Client) {
        let started = Instant::now();
        loop {
            if let Some(child) = self.inner.child.lock().await.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!(
                    "kube-apiserver exited with {status}:\n{}",
                    log_tail(&self.inner.log, 6000)
                );
            }
            let request = http::Request::get("/readyz").body(Vec::new()).expect("a request");
            let last = match client.request_text(request).await {
                Ok(_) => return,
                Err(err) => err.to_string(),
            };
            assert!(
                started.elapsed() < STARTUP_LIMIT,
                "kube-apiserver not ready after {STARTUP_LIMIT:?} (last: {last}):\n{}",
                log_tail(&self.inner.log, 6000)
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// etcd's flags: one member on 127.0.0.1, data in `data_dir`.
pub fn etcd_args(data_dir: &Path, client_url: &str, peer_url: &str) -> Vec<String> {
    vec![
        "--name=pitstop-e2e".to_owned(),
        format!("--data-dir={}", data_dir.display()),
        format!("--listen-client-urls={client_url}"),
        format!("--advertise-client-urls={client_url}"),
        format!("--listen-peer-urls={peer_url}"),
        format!("--initial-advertise-peer-urls={peer_url}"),
        format!("--initial-cluster=pitstop-e2e={peer_url}"),
    ]
}

/// kube-apiserver's flags, after controller-runtime's envtest defaults.
pub fn apiserver_args(port: u16, etcd_url: &str, cert_dir: &Path, tokens: &Path, key: &Path) -> Vec<String> {
    vec![
        format!("--etcd-servers={etcd_url}"),
        format!("--secure-port={port}"),
        "--bind-address=127.0.0.1".to_owned(),
        "--advertise-address=127.0.0.1".to_owned(),
        // Nobody can reach 127.0.0.1 through the `kubernetes` Service anyway; do not try.
        "--endpoint-reconciler-type=none".to_owned(),
        format!("--cert-dir={}", cert_dir.display()),
        format!("--token-auth-file={}", tokens.display()),
        "--authorization-mode=RBAC".to_owned(),
        format!("--service-account-issuer=https://127.0.0.1:{port}"),
        format!("--service-account-key-file={}", key.display()),
        format!("--service-account-signing-key-file={}", key.display()),
        "--service-cluster-ip-range=10.0.0.0/24".to_owned(),
        "--allow-privileged=true".to_owned(),
        // No controller-manager creates the `default` ServiceAccounts (and no pods run).
        "--disable-admission-plugins=ServiceAccount".to_owned(),
    ]
}

/// Starts `binary` with `args`, its output going to `log`, tied to the test.
fn spawn_logged(binary: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::File::create(log).unwrap_or_else(|err| panic!("create {}: {err}", log.display()));
    spawn_with_output(binary, args, out)
}

/// Starts `binary` again with `args`, its output appended to `log`.
fn spawn_appending(binary: &Path, args: &[String], log: &Path) -> Child {
    let out = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(log)
        .unwrap_or_else(|err| panic!("open {}: {err}", log.display()));
    spawn_with_output(binary, args, out)
}

fn spawn_with_output(binary: &Path, args: &[String], out: std::fs::File) -> Child {
    let err = out.try_clone().expect("clone a file handle");
    let mut cmd = Command::new(binary);
    cmd.args(args).stdin(Stdio::null()).stdout(out).stderr(err);
    tie_to_parent(&mut cmd);
    cmd.spawn()
        .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()))
}

// ----------------------------------------------------------------------------- the namespace and its RBAC

/// A namespace with the CRD installed and the chart's ServiceAccount and RBAC in it.
pub struct Harness {
    /// Admin client.
    pub client: Client,
    /// A client with the ServiceAccount's token: exactly what the controller may do.
    pub sa_client: Client,
    /// The test namespace (also the release namespace, and the watched namespace of a
    /// namespaced install).
    pub namespace: String,
    /// The chart's install: namespaced or cluster-wide.
    pub install: Install,
    /// The ServiceAccount's kubeconfig, for the controller processes.
    pub sa_kubeconfig: PathBuf,
    /// Holds the kubeconfig (and the controllers' HOME).
    pub dir: tempfile::TempDir,
    /// The API server process, when the test started it: a test may stop and start it to
    /// play an outage. None on a cluster from a kubeconfig.
    pub apiserver: Option<LocalApiserver>,
}

impl Harness {
    /// Installs the CRD, applies the chart's ServiceAccount and RBAC to `namespace`, and
    /// writes a kubeconfig with a token of that ServiceAccount.
    pub async fn setup(cluster: &Cluster, namespace: &str, install: Install) -> Harness {
        install_crd(&cluster.client, crd_from_repo()).await;
        install_crd(&cluster.client, crd_file("maintenancepolicy.yaml")).await;
        let service_account = apply_chart_rbac(&cluster.client, namespace, install).await;
        let token = service_account_token(&cluster.client, namespace, &service_account).await;
        let dir = tempfile::Builder::new()
            .prefix("pitstop-kube-e2e-")
            .tempdir()
            .expect("a temporary directory");
        let kubeconfig = service_account_kubeconfig(&cluster.admin, namespace, &service_account, &token);
        let sa_kubeconfig = dir.path().join("pitstop.kubeconfig");
        std::fs::write(&sa_kubeconfig, kubeconfig.to_string()).expect("write the ServiceAccount's kubeconfig");
        let parsed = Kubeconfig::read_from(&sa_kubeconfig).expect("the ServiceAccount's kubeconfig parses");
        let sa_client = client_for(&parsed).await;
        wait_for_rbac(&sa_client, namespace, install).await;
        Harness {
            client: cluster.client.clone(),
            sa_client,
            namespace: namespace.to_owned(),
            install,
            sa_kubeconfig,
            dir,
            apiserver: cluster.local_apiserver(),
        }
    }

    /// The plans of the test namespace, as the admin sees them.
    pub fn plans(&self) -> Api<MaintenancePlan> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The Leases of the test namespace.
    pub fn leases(&self) -> Api<Lease> {
        Api::namespaced(self.client.clone(), &self.namespace)
    }

    /// The MaintenancePolicies (cluster-scoped), as the admin sees them.
    pub fn policies(&self) -> Api<MaintenancePolicy> {
        Api::all(self.client.clone())
    }

    /// A client authenticated as ServiceAccount `account` of the test namespace (created
    /// here, with a token from the TokenRequest API), on the same server.
    pub async fn client_as(&self, account: &str) -> Client {
        let service_account: ServiceAccount =
            serde_json::from_value(json!({ "metadata": { "name": account, "namespace": self.namespace } }))
                .expect("a ServiceAccount");
        apply_namespaced(&self.client, &self.namespace, &service_account).await;
        let token = service_account_token(&self.client, &self.namespace, account).await;
        let mut config = Kubeconfig::read_from(&self.sa_kubeconfig).expect("the ServiceAccount's kubeconfig parses");
        for user in &mut config.auth_infos {
            user.name = account.to_owned();
            if let Some(auth) = user.auth_info.as_mut() {
                auth.token = Some(token.clone().into());
            }
        }
        for context in config.contexts.iter_mut().filter_map(|c| c.context.as_mut()) {
            context.user = Some(account.to_owned());
        }
        client_for(&config).await
    }
}

/// The CRD as checked in (`crds/maintenanceplan.yaml`).
pub fn crd_from_repo() -> CustomResourceDefinition {
    crd_file("maintenanceplan.yaml")
}

/// A CRD as checked in under `crds/`.
pub fn crd_file(file: &str) -> CustomResourceDefinition {
    let path = repo_root().join("crds").join(file);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|err| panic!("read {}: {err}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|err| panic!("{} is not a CRD: {err}", path.display()))
}

/// Applies the CRD (server-side, taking over its fields) and waits until it is Established.
/// It is left installed: on a shared cluster it may have been there before, and deleting a
/// CRD deletes every object of its kind.
async fn install_crd(client: &Client, crd: CustomResourceDefinition) {
    let name = crd.name_any();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&crd))
        .await
        .unwrap_or_else(|err| panic!("cannot apply the CRD {name}: {err}"));
    let established = tokio::time::timeout(
        STARTUP_LIMIT,
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await;
    match established {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => panic!("watching the CRD {name}: {err}"),
        Err(_) => panic!("the CRD {name} was not Established within {STARTUP_LIMIT:?}"),
    }
}

/// The chart's ServiceAccount and RBAC for `namespace`, rendered by the Helm engine through
/// `e2e/scripts/render-chart.py` (watchNamespace and release namespace both `namespace`).
pub async fn render_chart_rbac(namespace: &str) -> Vec<serde_json::Value> {
    render_chart_rbac_for(namespace, Install::Namespaced).await
}

/// The chart's ServiceAccount and RBAC for release namespace `namespace`, under `install`.
pub async fn render_chart_rbac_for(namespace: &str, install: Install) -> Vec<serde_json::Value> {
    let python = env_path("PITSTOP_E2E_PYTHON").unwrap_or_else(|| repo_root().join(".venv").join("bin").join("python"));
    assert!(
        python.is_file(),
        "{} not found: the chart is rendered with helm-python-sdk from the project's venv (`make venv`), \
         or set PITSTOP_E2E_PYTHON",
        python.display()
    );
    let script = repo_root().join("e2e").join("scripts").join("render-chart.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg("--namespace")
        .arg(namespace)
        .arg("--release")
        .arg(RELEASE)
        .args(match install {
            Install::Namespaced => Vec::new(),
            Install::ClusterWide => vec!["--watch-namespace", ""],
        })
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", python.display()));
    assert!(
        output.status.success(),
        "{} failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("the rendered chart is UTF-8");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|err| panic!("the rendered chart does not parse: {err}\n{text}"));
    docs.into_iter().filter(|doc| !doc.is_null()).collect()
}

/// The chart's RBAC, typed.
pub struct ChartRbac {
    /// The one ServiceAccount.
    pub account: ServiceAccount,
    /// Roles, all in the release (or watched) namespace.
    pub roles: Vec<Role>,
    /// RoleBindings, likewise.
    pub bindings: Vec<RoleBinding>,
    /// ClusterRoles.
    pub cluster_roles: Vec<ClusterRole>,
    /// ClusterRoleBindings.
    pub cluster_bindings: Vec<ClusterRoleBinding>,
}

/// ClusterRoles a namespaced install still renders: reading MaintenancePolicies and
/// namespaces (cluster-scoped by nature), and the tenants' aggregated plan rights.
pub const TENANCY_CLUSTER_ROLES: [&str; 3] = ["pitstop-plans-edit", "pitstop-plans-view", "pitstop-policy-reader"];

/// The rendered objects, typed: the one ServiceAccount, the Roles and the RoleBindings, all
/// in `namespace`, and the cluster-scoped ones. A namespaced install may only render the
/// [`TENANCY_CLUSTER_ROLES`] cluster-wide: plan rights there would mean the chart ignored
/// watchNamespace.
pub fn typed_chart_rbac(namespace: &str, install: Install, docs: Vec<serde_json::Value>) -> ChartRbac {
    fn typed<K: DeserializeOwned>(doc: serde_json::Value) -> K {
        serde_json::from_value(doc).unwrap_or_else(|err| panic!("a rendered object does not parse: {err}"))
    }
    let mut accounts = Vec::new();
    let mut rbac = ChartRbac {
        account: ServiceAccount::default(),
        roles: Vec::new(),
        bindings: Vec::new(),
        cluster_roles: Vec::new(),
        cluster_bindings: Vec::new(),
    };
    for doc in docs {
        let kind = doc.get("kind").and_then(|k| k.as_str()).unwrap_or_default().to_owned();
        let name = doc
            .pointer("/metadata/name")
            .and_then(|n| n.as_str())
            .unwrap_or_default()
            .to_owned();
        let doc_namespace = doc.pointer("/metadata/namespace").and_then(|n| n.as_str());
        if kind.starts_with("Cluster") {
            assert!(
                install == Install::ClusterWide || TENANCY_CLUSTER_ROLES.contains(&name.as_str()),
                "the chart rendered {kind} {name} although watchNamespace is set: {doc}"
            );
        } else {
            assert_eq!(
                doc_namespace,
                Some(namespace),
                "a rendered {kind} is not in the test namespace: {doc}"
            );
        }
        match kind.as_str() {
            "ServiceAccount" => accounts.push(typed::<ServiceAccount>(doc)),
            "Role" => rbac.roles.push(typed::<Role>(doc)),
            "RoleBinding" => rbac.bindings.push(typed::<RoleBinding>(doc)),
            "ClusterRole" => rbac.cluster_roles.push(typed::<ClusterRole>(doc)),
            "ClusterRoleBinding" => rbac.cluster_bindings.push(typed::<ClusterRoleBinding>(doc)),
            other => panic!("the chart rendered an unexpected {other}: {doc}"),
        }
    }
    assert_eq!(accounts.len(), 1, "the chart renders one ServiceAccount");
    assert!(
        !rbac.roles.is_empty() && !rbac.bindings.is_empty(),
        "the chart renders Roles and RoleBindings"
    );
    rbac.account = accounts.remove(0);
    rbac
}

async fn apply_cluster<K>(client: &Client, object: &K)
where
    K: Resource<Scope = k8s_openapi::ClusterResourceScope, DynamicType = ()>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let name = object.name_any();
    Api::<K>::all(client.clone())
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|err| panic!("cannot apply {} {name}: {err}", K::kind(&())));
}

async fn apply_namespaced<K>(client: &Client, namespace: &str, object: &K)
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = object.name_any();
    Api::<K>::namespaced(client.clone(), namespace)
        .patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(object))
        .await
        .unwrap_or_else(|err| panic!("cannot apply {} {name}: {err}", K::kind(&())));
}

/// Applies the chart's ServiceAccount and RBAC to `namespace` (and the cluster-scoped part
/// of it, which the last test to apply it owns: tests run one at a time); returns the
/// account's name.
async fn apply_chart_rbac(client: &Client, namespace: &str, install: Install) -> String {
    let rbac = typed_chart_rbac(namespace, install, render_chart_rbac_for(namespace, install).await);
    apply_namespaced(client, namespace, &rbac.account).await;
    for role in &rbac.roles {
        apply_namespaced(client, namespace, role).await;
    }
    for binding in &rbac.bindings {
        apply_namespaced(client, namespace, binding).await;
    }
    for role in &rbac.cluster_roles {
        apply_cluster(client, role).await;
    }
    for binding in &rbac.cluster_bindings {
        apply_cluster(client, binding).await;
    }
    rbac.account.name_any()
}

/// A token for the ServiceAccount from the TokenRequest API, valid for an hour.
async fn service_account_token(client: &Client, namespace: &str, account: &str) -> String {
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: Vec::new(),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    let response = Api::<ServiceAccount>::namespaced(client.clone(), namespace)
        .create_token_request(account, &PostParams::default(), &request)
        .await
        .unwrap_or_else(|err| panic!("TokenRequest for ServiceAccount {namespace}/{account}: {err}"));
    let token = response.status.map(|s| s.token).unwrap_or_default();
    assert!(!token.is_empty(), "the TokenRequest returned no token");
    token
}

/// A kubeconfig for the same server as `admin`'s current context (same CA or TLS
/// settings) that authenticates with `token` and defaults to `namespace`.
pub fn service_account_kubeconfig(
    admin: &Kubeconfig,
    namespace: &str,
    account: &str,
    token: &str,
) -> serde_json::Value {
    let context_name = admin
        .current_context
        .as_deref()
        .expect("the kubeconfig has a current-context");
    let context = admin
        .contexts
        .iter()
        .find(|c| c.name == context_name)
        .and_then(|c| c.context.as_ref())
        .unwrap_or_else(|| panic!("the kubeconfig has no context {context_name:?}"));
    let cluster = admin
        .clusters
        .iter()
        .find(|c| c.name == context.cluster)
        .and_then(|c| c.cluster.as_ref())
        .unwrap_or_else(|| panic!("the kubeconfig has no cluster {:?}", context.cluster));
    let cluster = serde_json::to_value(cluster).expect("a cluster entry serializes");
    json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{ "name": "pitstop-e2e", "cluster": cluster }],
        "users": [{ "name": account, "user": { "token": token } }],
        "contexts": [{ "name": "pitstop-e2e", "context": { "cluster": "pitstop-e2e", "user": account, "namespace": namespace } }],
        "current-context": "pitstop-e2e",
    })
}

/// Waits until the ServiceAccount's token is accepted and its Roles are in force (the
/// authenticator and the RBAC authorizer work from caches), then checks that it may not read
/// plans outside the namespace: the controller runs with the namespaced install's rights.
async fn wait_for_rbac(sa_client: &Client, namespace: &str, install: Install) {
    let plans: Api<MaintenancePlan> = Api::namespaced(sa_client.clone(), namespace);
    let leases: Api<Lease> = Api::namespaced(sa_client.clone(), namespace);
    let policies: Api<MaintenancePolicy> = Api::all(sa_client.clone());
    let namespaces: Api<Namespace> = Api::all(sa_client.clone());
    let started = Instant::now();
    loop {
        let plans_ok = plans.list_metadata(&ListParams::default().limit(1)).await;
        let leases_ok = leases.list_metadata(&ListParams::default().limit(1)).await;
        let policies_ok = policies.list_metadata(&ListParams::default().limit(1)).await;
        let namespaces_ok = namespaces.list_metadata(&ListParams::default().limit(1)).await;
        match (plans_ok, leases_ok, policies_ok, namespaces_ok) {
            (Ok(_), Ok(_), Ok(_), Ok(_)) => break,
            (plans_result, leases_result, policies_result, namespaces_result) => assert!(
                started.elapsed() < STARTUP_LIMIT,
                "the ServiceAccount cannot list plans and leases in {namespace}, policies and namespaces \
                 after {STARTUP_LIMIT:?}: plans: {:?}, leases: {:?}, policies: {:?}, namespaces: {:?}",
                plans_result.err(),
                leases_result.err(),
                policies_result.err(),
                namespaces_result.err()
            ),
        }
        tokio::time::sleep(POLL).await;
    }
    if install == Install::ClusterWide {
        return;
    }
    let everywhere: Api<MaintenancePlan> = Api::all(sa_client.clone());
    match everywhere.list_metadata(&ListParams::default().limit(1)).await {
        Err(kube::Error::Api(status)) if status.is_forbidden() => {}
        other => panic!("a namespaced install must not list plans cluster-wide, got {other:?}"),
    }
}

// ----------------------------------------------------------------------------- controller processes

/// A `pitstop controller` process; killed when dropped, its output printed if the test fails.
pub struct ControllerProcess {
    /// Its name in the test (and its `--identity` with leader election).
    pub name: String,
    /// Where it serves `/metrics`, `/healthz` and `/readyz`.
    pub http_addr: SocketAddr,
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
}

impl ControllerProcess {
    /// Starts `pitstop controller` for `harness`'s namespace with its ServiceAccount's
    /// kubeconfig, the sandbox's AWS environment and `extra` arguments. The environment is
    /// cleared first, so nothing of the developer's (AWS profiles, POD_NAME, PITSTOP_*) leaks in.
    pub fn spawn(name: &str, harness: &Harness, aws_env: &BTreeMap<String, String>, extra: &[String]) -> Self {
        let binary = default_pitstop_binary();
        assert!(
            binary.is_file(),
            "{} not found: build it first (`make build`, or `cargo build -p pitstop`) or set PITSTOP_BIN",
            binary.display()
        );
        let http_addr = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
        let mut cmd = Command::new(&binary);
        cmd.arg("controller");
        if harness.install == Install::Namespaced {
            cmd.arg("--namespace").arg(&harness.namespace);
        }
        cmd.arg("--http-addr").arg(http_addr.to_string());
        // Fast for the tests, unless the caller sets its own (the scale bench runs the default).
        if !extra.iter().any(|arg| arg == "--poll-interval") {
            cmd.arg("--poll-interval").arg("500ms");
        }
        cmd.arg("--log-format")
            .arg("text")
            .args(extra)
            .env_clear()
            .env("KUBECONFIG", &harness.sa_kubeconfig)
            .env("HOME", harness.dir.path())
            .env("RUST_LOG", "info")
            .envs(aws_env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(path) = std::env::var_os("PATH") {
            cmd.env("PATH", path);
        }
        tie_to_parent(&mut cmd);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|err| panic!("cannot start {}: {err}", binary.display()));
        let log = Arc::new(Mutex::new(Vec::new()));
        if let Some(stdout) = child.stdout.take() {
            tokio::spawn(collect_lines(stdout, Arc::clone(&log)));
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(collect_lines(stderr, Arc::clone(&log)));
        }
        ControllerProcess {
            name: name.to_owned(),
            http_addr,
            child,
            log,
        }
    }

    /// Its process ID, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Everything it printed so far.
    pub fn logs(&self) -> String {
        self.log.lock().unwrap_or_else(PoisonError::into_inner).join("\n")
    }

    /// Fails the test, with its output, if it has exited.
    pub fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            // Its output follows the panic message: the drop of a process prints it when the test fails.
            panic!("controller {} exited with {status}", self.name);
        }
    }

    /// Waits until it answers `/readyz` (a standby is ready too).
    pub async fn wait_ready(&mut self) {
        let deadline = Deadline::new(format!("controller {} to answer /readyz", self.name), STARTUP_LIMIT);
        loop {
            self.assert_running();
            if http_get(self.http_addr, "/readyz").await.is_ok_and(|r| r.status == 200) {
                return;
            }
            deadline.tick(&self.logs()).await;
        }
    }

    /// What it serves on `/metrics` now.
    pub async fn metrics(&self) -> String {
        let response = http_get(self.http_addr, "/metrics")
            .await
            .unwrap_or_else(|err| panic!("cannot read the metrics of controller {}: {err}", self.name));
        assert_eq!(response.status, 200, "/metrics of controller {}", self.name);
        response.body
    }

    /// SIGKILL: no chance to give up its Lease or finish a round.
    pub async fn kill(&mut self) {
        self.child.start_kill().expect("SIGKILL the controller");
        let status = self.child.wait().await.expect("wait for the controller");
        eprintln!("controller {} killed ({status})", self.name);
    }
}

impl Drop for ControllerProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- output of controller {} -----\n{}\n----- end of controller {} -----",
                self.name,
                self.logs(),
                self.name
            );
        }
    }
}

async fn collect_lines(stream: impl AsyncRead + Unpin, log: Arc<Mutex<Vec<String>>>) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.lock().unwrap_or_else(PoisonError::into_inner).push(line);
    }
}

// ----------------------------------------------------------------------------- the fleet

/// A sandbox fleet of three instances and the controllers that maintain it.
pub struct Fleet {
    /// The AWS stand-in.
    pub sandbox: Sandbox,
    /// The running controllers.
    pub controllers: Vec<ControllerProcess>,
    /// Controllers the test killed, kept for their output.
    pub killed: Vec<ControllerProcess>,
    /// The plans of the test namespace (admin client).
    pub plans: Api<MaintenancePlan>,
    /// The test namespace.
    pub namespace: String,
    /// Admin client.
    pub client: Client,
}

impl Fleet {
    /// Starts a three-instance sandbox and one controller per name, with `extra(name)` as
    /// additional arguments, and waits until each answers `/readyz`.
    pub async fn start(harness: &Harness, names: &[&str], extra: impl Fn(&str) -> Vec<String>) -> Fleet {
        Self::start_with_instances(harness, 3, names, extra).await
    }

    /// [`Fleet::start`] with a sandbox of `instances` instances.
    pub async fn start_with_instances(
        harness: &Harness,
        instances: usize,
        names: &[&str],
        extra: impl Fn(&str) -> Vec<String>,
    ) -> Fleet {
        let config = SandboxConfig::default()
            .with_instances(instances)
            .with_backend_binary(env!("CARGO_BIN_EXE_pitstop-backend"));
        if let Err(err) = check_haproxy_binary(&config.haproxy_binary) {
            panic!("{err} (`make haproxy` installs it)");
        }
        let sandbox = Sandbox::start(config)
            .await
            .unwrap_or_else(|err| panic!("the sandbox did not start: {err:#}"));
        let aws_env = sandbox.aws_env();
        let mut controllers: Vec<ControllerProcess> = names
            .iter()
            .map(|name| ControllerProcess::spawn(name, harness, &aws_env, &extra(name)))
            .collect();
        for controller in &mut controllers {
            controller.wait_ready().await;
        }
        Fleet {
            sandbox,
            controllers,
            killed: Vec::new(),
            plans: harness.plans(),
            namespace: harness.namespace.clone(),
            client: harness.client.clone(),
        }
    }

    /// Fails the test if a controller that should run has exited.
    pub fn assert_running(&mut self) {
        for controller in &mut self.controllers {
            controller.assert_running();
        }
    }

    /// Starts one more controller, `name`, with `extra` arguments, and waits until it is ready (a restart after a
    /// [`Fleet::kill`]).
    pub async fn spawn_controller(&mut self, harness: &Harness, name: &str, extra: &[String]) {
        let mut controller = ControllerProcess::spawn(name, harness, &self.sandbox.aws_env(), extra);
        controller.wait_ready().await;
        self.controllers.push(controller);
    }

    /// SIGKILLs the controller `name`.
    pub async fn kill(&mut self, name: &str) {
        let index = self
            .controllers
            .iter()
            .position(|c| c.name == name)
            .unwrap_or_else(|| panic!("no running controller {name}"));
        let mut controller = self.controllers.remove(index);
        controller.kill().await;
        self.killed.push(controller);
    }

    /// Applies (server-side, field manager `e2e`) a plan that reboots every instance of the
    /// sandbox, in order, with `timeouts.healthySeconds: 60`.
    pub async fn apply_plan(&self, name: &str) -> MaintenancePlan {
        self.apply_plan_of(name, &self.sandbox.instance_ids()).await
    }

    /// [`Fleet::apply_plan`] for some of the sandbox's instances.
    pub async fn apply_plan_of(&self, name: &str, instances: &[String]) -> MaintenancePlan {
        self.apply_plan_with(name, instances, json!({})).await
    }

    /// [`Fleet::apply_plan_of`] with `extra` merged into the spec.
    pub async fn apply_plan_with(&self, name: &str, instances: &[String], extra: serde_json::Value) -> MaintenancePlan {
        let mut plan = json!({
            "apiVersion": "pitstop.dev/v1alpha1",
            "kind": "MaintenancePlan",
            "metadata": { "name": name },
            "spec": {
                "targetGroupArn": self.sandbox.target_group_arn(),
                "instances": instances,
                "timeouts": { "healthySeconds": 60 },
                // These tests check pitstop's own target-group calls; every sandbox instance is
                // in the Auto Scaling group (the modes are compared in auto_scaling_modes.rs).
                "autoScaling": { "mode": "Ignore" },
            },
        });
        if let (Some(spec), Some(extra)) = (plan["spec"].as_object_mut(), extra.as_object()) {
            spec.extend(extra.clone());
        }
        self.plans
            .patch(name, &PatchParams::apply(FIELD_MANAGER), &Patch::Apply(&plan))
            .await
            .unwrap_or_else(|err| panic!("cannot apply plan {name}: {err}"))
    }

    /// Reads plan `name` until `accept` takes it; fails if the plan ends (Succeeded or
    /// Failed) without `accept` taking it, if a controller dies, or after `limit`.
    pub async fn wait_for_plan(
        &mut self,
        name: &str,
        what: &str,
        limit: Duration,
        accept: impl Fn(&MaintenancePlan) -> bool,
    ) -> MaintenancePlan {
        let deadline = Deadline::new(format!("plan {name}: {what}"), limit);
        loop {
            self.assert_running();
            let plan = self
                .plans
                .get_opt(name)
                .await
                .unwrap_or_else(|err| panic!("cannot read plan {name}: {err}"));
            let status = plan.as_ref().and_then(|p| p.status.clone());
            if let Some(plan) = plan {
                if accept(&plan) {
                    return plan;
                }
                if let Some(finished) = phase(&plan).filter(|p| p.is_finished()) {
                    panic!("plan {name} ended {finished:?} while waiting for {what}: {status:#?}");
                }
            }
            deadline.tick(&format!("{status:#?}")).await;
        }
    }

    /// Boot counts of the instances now, in instance order.
    pub fn boots(&self) -> Vec<u64> {
        let counts = self.sandbox.boot_counts();
        self.sandbox
            .instance_ids()
            .iter()
            .map(|id| counts.get(id).copied().unwrap_or_default())
            .collect()
    }

    /// Whether the target `id` is out of the target group (deregistered: draining or unused).
    pub async fn is_out(&self, id: &str) -> bool {
        let health = self.sandbox.target_health().await.expect("the sandbox's target health");
        health
            .get(id)
            .is_some_and(|h| matches!(h.state, TargetState::Draining | TargetState::Unused))
    }

    /// Waits until HAProxy sends traffic to every instance again.
    pub async fn wait_all_in_rotation(&mut self, limit: Duration) {
        let deadline = Deadline::new("every instance back in rotation", limit);
        loop {
            self.assert_running();
            let states = self.sandbox.rotation_states().await.expect("HAProxy's server states");
            if states.values().all(|s| s.in_rotation()) {
                return;
            }
            deadline.tick(&format!("{states:#?}")).await;
        }
    }

    /// The events.k8s.io Events about plan `name`.
    pub async fn events_for(&self, name: &str) -> Vec<Event> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.namespace);
        let list = events
            .list(&ListParams::default())
            .await
            .unwrap_or_else(|err| panic!("cannot list Events: {err}"));
        list.items
            .into_iter()
            .filter(|e| {
                e.regarding
                    .as_ref()
                    .is_some_and(|r| r.kind.as_deref() == Some("MaintenancePlan") && r.name.as_deref() == Some(name))
            })
            .collect()
    }

    /// Waits until the Events about plan `name` satisfy `accept`.
    pub async fn wait_for_events(&mut self, name: &str, what: &str, accept: impl Fn(&[Event]) -> bool) -> Vec<Event> {
        let deadline = Deadline::new(format!("Events of plan {name}: {what}"), Duration::from_secs(60));
        loop {
            self.assert_running();
            let events = self.events_for(name).await;
            if accept(&events) {
                return events;
            }
            let seen: Vec<String> = events.iter().map(describe_event).collect();
            deadline.tick(&format!("{seen:#?}")).await;
        }
    }

    /// Kills the controllers, then stops the sandbox.
    pub async fn shutdown(mut self) {
        for controller in &mut self.controllers {
            controller.kill().await;
        }
        self.sandbox.shutdown().await.expect("the sandbox stops");
    }
}

/// `reason (action): note` of an Event.
pub fn describe_event(event: &Event) -> String {
    format!(
        "{} ({}): {}",
        event.reason.as_deref().unwrap_or_default(),
        event.action.as_deref().unwrap_or_default(),
        event.note.as_deref().unwrap_or_default()
    )
}

/// The plan's phase, once it has a status.
pub fn phase(plan: &MaintenancePlan) -> Option<PlanPhase> {
    plan.status.as_ref().map(|s| s.phase)
}

/// The first instance of the plan in one of `phases`.
pub fn instance_in(plan: &MaintenancePlan, phases: &[InstancePhase]) -> Option<String> {
    plan.status
        .as_ref()?
        .instances
        .iter()
        .find(|i| phases.contains(&i.phase))
        .map(|i| i.instance_id.clone())
}

// ----------------------------------------------------------------------------- waiting

/// An upper bound on a wait, so that a broken run fails instead of hanging. Not an
/// assertion about timing: the limits are far above what the waits take.
pub struct Deadline {
    what: String,
    limit: Duration,
    until: Instant,
}

impl Deadline {
    /// A bound of `limit` from now on waiting for `what`.
    pub fn new(what: impl Into<String>, limit: Duration) -> Self {
        Self {
            what: what.into(),
            limit,
            until: Instant::now() + limit,
        }
    }

    /// Fails the test, showing `last` (what was seen last), once the limit has passed;
    /// otherwise waits a little before the next look.
    pub async fn tick(&self, last: &str) {
        assert!(
            Instant::now() < self.until,
            "gave up after {:?} waiting for {}; last seen:\n{last}",
            self.limit,
            self.what
        );
        tokio::time::sleep(POLL).await;
    }
}
