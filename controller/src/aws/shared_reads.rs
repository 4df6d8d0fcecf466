//! One DescribeTargetHealth per target group per poll tick, however many plans look at the group.
//!
//! Every plan with an instance in flight, or about to start one, reads its groups' health each
//! round. Ten plans on one group would make ten identical calls per tick, out of an ELB
//! Describe budget (a bucket of 40, refilled at 10/s) the whole account shares. So a group's
//! health is read once and shared for up to one tick (the controller's poll interval): a plan
//! then decides on a view at most one tick old, which is what polling once a tick gives it
//! anyway. Concurrent misses of one group wait for a single call instead of each making one.
//!
//! A view always shows pitstop's own changes to the group: a DeregisterTargets or
//! RegisterTargets through these APIs that succeeds writes its effect into the view, as AWS
//! shows it at once (the target `draining`, or `initial` once registered again), so a wave of
//! instances going out costs no extra reads; the next tick reads the group again. A call that
//! fails drops the view (its effect is unknown), and a read that was under way while a change
//! was made is not kept (a generation count per group). Failed reads are not kept either.
//! The written states are the ones that make the state machine wait (for `unused`, for
//! `healthy`), never ones that let it go on.
//!
//! The whole-group read and the deregistration delay (read before each instance starts) are
//! shared; the single-target read and the tags go straight through.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use jiff::Timestamp;

use super::{AwsApis, AwsError, Target, TargetGroups, TargetHealth, TargetState};

/// The shared views of every target group of every region, kept across rounds and plans.
#[derive(Clone, Debug)]
pub struct SharedGroupReads {
    max_age: Duration,
    groups: Arc<Mutex<GroupEntries>>,
}

/// Each group's entry, by region and ARN.
type GroupEntries = HashMap<(String, String), Arc<GroupEntry>>;

#[derive(Debug, Default)]
struct GroupEntry {
    /// Held while the group is read, so that concurrent misses make one call.
    reading: tokio::sync::Mutex<()>,
    state: Mutex<GroupState>,
}

#[derive(Debug, Default)]
struct GroupState {
    /// Bumped by every change pitstop makes to the group.
    generation: u64,
    view: Option<(Timestamp, Vec<TargetHealth>)>,
    /// The group's deregistration delay, when it was read (an attribute pitstop never
    /// changes, read before each instance starts).
    delay: Option<(Timestamp, Duration)>,
}

/// The time source of the views' age: the reconcile's clock (tests pass their fake AWS's).
pub type Clock = Arc<dyn Fn() -> Timestamp + Send + Sync>;

impl SharedGroupReads {
    /// Views shared for at most `max_age` (one poll tick).
    pub fn new(max_age: Duration) -> Self {
        Self {
            max_age,
            groups: Arc::new(Mutex::new(HashMap::new())),
        }
    }

    /// `apis` of `region`, their whole-group target health read through the shared views, aged
    /// by `clock`.
    pub fn wrap(&self, region: &str, apis: AwsApis, clock: Clock) -> AwsApis {
        AwsApis {
            target_groups: Arc::new(SharedTargetGroups {
                inner: apis.target_groups,
                reads: self.clone(),
                region: region.to_owned(),
                clock,
            }),
            ..apis
        }
    }

    fn entry(&self, region: &str, arn: &str) -> Arc<GroupEntry> {
        let mut groups = self.groups.lock().unwrap_or_else(PoisonError::into_inner);
        Arc::clone(groups.entry((region.to_owned(), arn.to_owned())).or_default())
    }
}

impl GroupState {
    fn fresh(&self, max_age: Duration, now: Timestamp) -> Option<Vec<TargetHealth>> {
        self.view
            .as_ref()
            .filter(|(read_at, _)| young(*read_at, max_age, now))
            .map(|(_, view)| view.clone())
    }

    fn fresh_delay(&self, max_age: Duration, now: Timestamp) -> Option<Duration> {
        self.delay
            .filter(|(read_at, _)| young(*read_at, max_age, now))
            .map(|(_, delay)| delay)
    }
}

/// Whether something read at `read_at` is younger than `max_age`. A clock that went back makes
/// it stale, never fresher.
fn young(read_at: Timestamp, max_age: Duration, now: Timestamp) -> bool {
    let age = now.duration_since(read_at);
    !age.is_negative() && age.unsigned_abs() < max_age
}

fn lock(state: &Mutex<GroupState>) -> std::sync::MutexGuard<'_, GroupState> {
    state.lock().unwrap_or_else(PoisonError::into_inner)
}

struct SharedTargetGroups {
    inner: Arc<dyn TargetGroups>,
    reads: SharedGroupReads,
    region: String,
    clock: Clock,
}

impl SharedTargetGroups {
    /// A change is under way: a read racing it is not kept.
    fn changing(&self, arn: &str) {
        let entry = self.reads.entry(&self.region, arn);
        lock(&entry.state).generation += 1;
    }

    /// A change is made (`Some`: the target's state AWS now shows) or its outcome is unknown
    /// (`None`: the view is dropped).
    fn changed(&self, arn: &str, target: &Target, now_shows: Option<(TargetState, &str)>) {
        let entry = self.reads.entry(&self.region, arn);
        let mut state = lock(&entry.state);
        state.generation += 1;
        let (Some((target_state, reason)), Some((_, view))) = (now_shows, state.view.as_mut()) else {
            state.view = None;
            return;
        };
        let listed = view
            .iter_mut()
            .find(|t| t.target.instance_id == target.instance_id && t.target.port == target.port);
        match (listed, target_state) {
            (Some(listed), _) => {
                listed.state = target_state;
                listed.reason = Some(reason.to_owned());
                listed.description = None;
            }
            // Deregistering a target the group no longer lists changes nothing it shows.
            (None, TargetState::Draining) => {}
            (None, _) => view.push(TargetHealth {
                target: target.clone(),
                state: target_state,
                reason: Some(reason.to_owned()),
                description: None,
            }),
        }
    }
}

#[async_trait]
impl TargetGroups for SharedTargetGroups {
    async fn target_health(&self, arn: &str) -> Result<Vec<TargetHealth>, AwsError> {
        let entry = self.reads.entry(&self.region, arn);
        if let Some(view) = lock(&entry.state).fresh(self.reads.max_age, (self.clock)()) {
            return Ok(view);
        }
        let _reading = entry.reading.lock().await;
        // Another plan may have read it while this one waited.
        let generation = {
            let state = lock(&entry.state);
            if let Some(view) = state.fresh(self.reads.max_age, (self.clock)()) {
                return Ok(view);
            }
            state.generation
        };
        let view = self.inner.target_health(arn).await?;
        let mut state = lock(&entry.state);
        if state.generation == generation {
            state.view = Some(((self.clock)(), view.clone()));
        }
        Ok(view)
    }

    async fn instance_health(&self, arn: &str, target: &Target) -> Result<TargetHealth, AwsError> {
        self.inner.instance_health(arn, target).await
    }

    async fn deregistration_delay(&self, arn: &str) -> Result<Duration, AwsError> {
        let entry = self.reads.entry(&self.region, arn);
        let now = (self.clock)();
        if let Some(delay) = lock(&entry.state).fresh_delay(self.reads.max_age, now) {
            return Ok(delay);
        }
        let delay = self.inner.deregistration_delay(arn).await?;
        lock(&entry.state).delay = Some((now, delay));
        Ok(delay)
    }

    async fn deregister(&self, arn: &str, target: &Target) -> Result<(), AwsError> {
        self.changing(arn);
        let result = self.inner.deregister(arn, target).await;
        let shows = result
            .is_ok()
            .then_some((TargetState::Draining, "Target.DeregistrationInProgress"));
        self.changed(arn, target, shows);
        result
    }

    async fn register(&self, arn: &str, target: &Target) -> Result<(), AwsError> {
        self.changing(arn);
        let result = self.inner.register(arn, target).await;
        let shows = result
            .is_ok()
            .then_some((TargetState::Initial, "Elb.RegistrationInProgress"));
        self.changed(arn, target, shows);
        result
    }

    async fn tags(&self, arns: &[String]) -> Result<BTreeMap<String, BTreeMap<String, String>>, AwsError> {
        self.inner.tags(arns).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aws::fake::FakeAws;

    const ARN: &str = "arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/web/0123456789abcdef";
    const A: &str = "i-0000000000000000a";

    const REGION: &str = "eu-west-1";

    fn world() -> (FakeAws, SharedGroupReads) {
        let now = Timestamp::now();
        (
            FakeAws::new(ARN, &[A, "i-0000000000000000b"], now),
            SharedGroupReads::new(Duration::from_secs(5)),
        )
    }

    /// A plan's view of the APIs, on the fake's clock.
    fn plan(fake: &FakeAws, reads: &SharedGroupReads, region: &str) -> AwsApis {
        let clock = fake.clone();
        reads.wrap(region, fake.apis(), Arc::new(move || clock.now()))
    }

    #[tokio::test]
    async fn plans_share_one_read_per_group_per_tick() {
        let (fake, reads) = world();
        let plan_a = plan(&fake, &reads, REGION);
        let plan_b = plan(&fake, &reads, REGION);
        for _ in 0..3 {
            plan_a.target_groups.target_health(ARN).await.expect("read");
            plan_b.target_groups.target_health(ARN).await.expect("read");
        }
        assert_eq!(fake.calls_of("DescribeTargetHealth"), 1);
        fake.set_now(fake.now() + jiff::SignedDuration::from_secs(5));
        plan_b.target_groups.target_health(ARN).await.expect("read");
        assert_eq!(fake.calls_of("DescribeTargetHealth"), 2, "a new tick reads again");
        // Another region's group of the same ARN is another group.
        plan(&fake, &reads, "us-east-1")
            .target_groups
            .target_health(ARN)
            .await
            .expect("read");
        assert_eq!(fake.calls_of("DescribeTargetHealth"), 3);
    }

    #[tokio::test]
    async fn concurrent_misses_make_one_call() {
        let (fake, reads) = world();
        let apis: Vec<AwsApis> = (0..10).map(|_| plan(&fake, &reads, REGION)).collect();
        let views = futures::future::join_all(apis.iter().map(|a| a.target_groups.target_health(ARN))).await;
        assert!(views.iter().all(Result::is_ok));
        assert_eq!(fake.calls_of("DescribeTargetHealth"), 1);
    }

    #[tokio::test]
    async fn a_change_through_these_apis_is_seen_at_once() {
        let (fake, reads) = world();
        let plan_a = plan(&fake, &reads, REGION);
        let plan_b = plan(&fake, &reads, REGION);
        let before = plan_b.target_groups.target_health(ARN).await.expect("read");
        assert!(
            before
                .iter()
                .any(|t| t.target.instance_id == A && t.state == TargetState::Healthy)
        );
        let target = Target {
            instance_id: A.into(),
            port: Some(8080),
        };
        plan_a.target_groups.deregister(ARN, &target).await.expect("deregister");
        let after = plan_b.target_groups.target_health(ARN).await.expect("read");
        let a = after.iter().find(|t| t.target.instance_id == A).expect("still listed");
        assert_eq!(a.state, TargetState::Draining, "{after:?}");
        plan_a.target_groups.register(ARN, &target).await.expect("register");
        let back = plan_b.target_groups.target_health(ARN).await.expect("read");
        let a = back.iter().find(|t| t.target.instance_id == A).expect("listed");
        assert_eq!(a.state, TargetState::Initial, "{back:?}");
        assert_eq!(fake.calls_of("DescribeTargetHealth"), 1, "the changes cost no read");
        fake.set_now(fake.now() + jiff::SignedDuration::from_secs(5));
        plan_b.target_groups.target_health(ARN).await.expect("read");
        assert_eq!(
            fake.calls_of("DescribeTargetHealth"),
            2,
            "the next tick reads AWS again"
        );
    }

    #[tokio::test]
    async fn a_failed_change_drops_the_view() {
        let (fake, reads) = world();
        let apis = plan(&fake, &reads, REGION);
        apis.target_groups.target_health(ARN).await.expect("read");
        let target = Target {
            instance_id: A.into(),
            port: Some(8080),
        };
        fake.behave(|b| b.fail_next = Some((1, crate::aws::AwsErrorKind::Throttled)));
        assert!(apis.target_groups.deregister(ARN, &target).await.is_err());
        apis.target_groups.target_health(ARN).await.expect("read");
        assert_eq!(
            fake.calls_of("DescribeTargetHealth"),
            2,
            "read again after the unknown outcome"
        );
    }

    #[tokio::test]
    async fn the_deregistration_delay_is_read_once_per_tick() {
        let (fake, reads) = world();
        let apis = plan(&fake, &reads, REGION);
        for _ in 0..3 {
            apis.target_groups.deregistration_delay(ARN).await.expect("read");
        }
        assert_eq!(fake.calls_of("DescribeTargetGroupAttributes"), 1);
        fake.set_now(fake.now() + jiff::SignedDuration::from_secs(5));
        apis.target_groups.deregistration_delay(ARN).await.expect("read");
        assert_eq!(fake.calls_of("DescribeTargetGroupAttributes"), 2);
    }

    #[tokio::test]
    async fn a_failed_read_is_not_kept() {
        let (fake, reads) = world();
        let apis = plan(&fake, &reads, REGION);
        fake.behave(|b| b.fail_next = Some((1, crate::aws::AwsErrorKind::Throttled)));
        assert!(apis.target_groups.target_health(ARN).await.is_err());
        assert!(apis.target_groups.target_health(ARN).await.is_ok());
        assert_eq!(fake.calls_of("DescribeTargetHealth"), 2);
    }
}
