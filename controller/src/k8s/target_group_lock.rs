//! One instance out of a target group at a time, across plans and controller restarts: a
//! `coordination.k8s.io/v1` Lease per target group in the controller's namespace, held by
//! the plan (`namespace/name`) that has an instance out of the group.
//!
//! A plan takes the lease before an instance is deregistered ([`crate::machine::needs_turn`])
//! and keeps it until that instance is back (Registered, or Failed and registered again);
//! see [`crate::machine::holds_turn`]. Because the Lease lives in the apiserver, the lock
//! survives a controller restart or a leader change with an instance out.
//!
//! The lease rules are leader election's ([`crate::leader::decide`]: optimistic concurrency
//! on every write, a holder renews), with one difference: an expired lease is not enough to
//! take a group over. The holder plan is looked up first, and
//! - a holder plan that was deleted (or recreated under the same name), or that finished, is
//!   stale at once, whatever the lease says;
//! - a holder plan whose status shows an instance out is never stale, even when its lease
//!   ran out (the controller was down for a while): taking over would put two out;
//! - otherwise the lease decides: expired means stale.
//!
//! Turns are fair: a plan turned away records on the lease that it waits (the annotation
//! [`ANNOTATION_WAITING`], a [`TurnQueue`] written with the same optimistic concurrency), and
//! a plan that finds the group free takes it only when no live waiter is ahead of it. So the
//! plan that just gave the group back does not win it again for its next instance while
//! another plan waits. A plan with an instance out is never held back by the queue: it must
//! hold the lease. The controller watches these leases and wakes the first waiter when the
//! group is given back ([`next_waiter`]).

use std::collections::HashSet;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use jiff::{SignedDuration, Timestamp};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::core::DeserializeGuard;
use kube::runtime::reflector::ObjectRef;

use crate::api::MaintenancePlan;
use crate::leader::{LeaseDecision, decide, held_until, is_conflict, leading_spec, released_spec};
use crate::machine::{TurnQueue, Waiter, in_flight};

/// How long a target group lease stays valid after the holder's last renewal. Only a holder
/// that is not seen with an instance out can lose the group by expiry (see the module
/// documentation), so this can be generous: it covers a holder's round that is slow between
/// taking the lease and recording its deregistration (AWS throttling, retries).
pub const TARGET_GROUP_LEASE: Duration = Duration::from_secs(300);

/// Annotation naming the target group a lease locks (lease names are shortened from it).
pub const ANNOTATION_TARGET_GROUP: &str = "pitstop.dev/target-group-arn";
/// Annotation with the holder plan's `metadata.uid`, so a plan recreated under the same name
/// is not taken for the holder.
pub const ANNOTATION_PLAN_UID: &str = "pitstop.dev/plan-uid";

/// Annotation with the plans waiting for the group, first in line first: a JSON list of
/// [`Waiter`]s (`plan`, `uid`, `asked`).
pub const ANNOTATION_WAITING: &str = "pitstop.dev/waiting";

/// The label selector of the target group leases (set on every lease pitstop creates).
pub const LEASE_LABEL: &str = "app.kubernetes.io/managed-by=pitstop";

/// Least time after which a waiter that stopped asking no longer holds the group back
/// (longer with a long poll interval: a waiter asks at every poll).
pub const WAITER_STALE_AFTER: Duration = Duration::from_secs(60);

/// The plan asking for a turn.
#[derive(Clone, Copy, Debug)]
pub struct Asker<'a> {
    /// `namespace/name`: the holder identity written on the lease.
    pub key: &'a str,
    /// `metadata.uid`.
    pub uid: &'a str,
    /// The plan has an instance out of the group: it must hold the lease, whoever waits.
    pub instance_out: bool,
}

/// The answer to [`TargetGroupLocks::take`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Turn {
    /// The plan holds the target group's lease (it was free, ours already, or stale).
    Ours {
        /// Set when a stale holder's lease was taken over.
        took_over: Option<Takeover>,
        /// Another live plan waits in the lease's line: the holder starts no new instance
        /// (see [`crate::machine::TurnView::wanted`]).
        wanted: bool,
    },
    /// Another plan holds it.
    HeldBy {
        /// The holder (`namespace/name`).
        holder: String,
        /// True the first time this plan is turned away in this wait (for a single Event).
        first: bool,
    },
}

/// A stale holder whose lease was taken over.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    /// The former holder (`namespace/name`).
    pub holder: String,
    /// Why it no longer counted.
    pub why: Stale,
}

/// Why a holder no longer blocks its target group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stale {
    /// The holder plan no longer exists (or another plan now has its name).
    Deleted,
    /// The holder plan has finished and has nothing out.
    Finished,
    /// The holder plan has nothing out and stopped renewing its lease.
    Expired,
}

impl std::fmt::Display for Stale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Deleted => "was deleted",
            Self::Finished => "has finished",
            Self::Expired => "has nothing out and let its lease expire",
        })
    }
}

/// What the apiserver shows of the plan a lease names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolderPlan {
    /// No such plan, or a different one (another uid) under that name.
    Gone,
    /// Finished, nothing out.
    Finished,
    /// Its status shows an instance out of the group (or on its way back).
    InstanceOut,
    /// Exists and has nothing out (between instances, at a gate, about to deregister).
    Idle,
    /// Cannot be told (unreadable, not visible to this controller, or not a plan key).
    Unknown,
}

/// Whether a holder in this state, on a lease that has (or has not) run out, still blocks
/// its group: None when it does, the reason when it is stale.
pub fn judge(holder: HolderPlan, expired: bool) -> Option<Stale> {
    match holder {
        HolderPlan::InstanceOut => None,
        HolderPlan::Gone => Some(Stale::Deleted),
        HolderPlan::Finished => Some(Stale::Finished),
        HolderPlan::Idle | HolderPlan::Unknown => expired.then_some(Stale::Expired),
    }
}

/// The Lease name of a target group: `pitstop-tg-<name>-<id>` from its ARN
/// (`…:targetgroup/<name>/<id>`), lower-cased to a valid object name. An ARN of another
/// shape (none passes validation) falls back to a hash of the whole ARN.
pub fn lease_name(target_group_arn: &str) -> String {
    let tail = target_group_arn
        .rsplit_once(":targetgroup/")
        .map(|(_, tail)| tail.replace('/', "-").to_ascii_lowercase())
        .filter(|tail| !tail.is_empty() && tail.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    match tail {
        Some(tail) => format!("pitstop-tg-{}", tail.trim_matches('-')),
        None => format!("pitstop-tg-{:016x}", fnv1a(target_group_arn.as_bytes())),
    }
}

/// FNV-1a, a stable hash (std's `DefaultHasher` may change between Rust releases, and a
/// lease name must not).
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// The queue of plans waiting for the group a lease locks. An annotation that cannot be
/// read (written by hand) counts as an empty queue: waiters add themselves again.
pub fn waiting_queue(lease: &Lease) -> TurnQueue {
    let raw = lease
        .metadata
        .annotations
        .as_ref()
        .and_then(|annotations| annotations.get(ANNOTATION_WAITING));
    let Some(raw) = raw else {
        return TurnQueue::default();
    };
    match serde_json::from_str::<Vec<Waiter>>(raw) {
        Ok(waiters) => TurnQueue::new(waiters),
        Err(error) => {
            tracing::warn!(lease = lease.metadata.name.as_deref().unwrap_or_default(), %error, "unreadable waiting queue on a target group lease; starting a new one");
            TurnQueue::default()
        }
    }
}

fn set_waiting_queue(lease: &mut Lease, queue: &TurnQueue) {
    let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
    if queue.is_empty() {
        annotations.remove(ANNOTATION_WAITING);
        return;
    }
    // A list of plain structs always serializes.
    if let Ok(raw) = serde_json::to_string(queue.waiters()) {
        annotations.insert(ANNOTATION_WAITING.to_owned(), raw);
    }
}

/// The plan to wake (`namespace/name`) when a lease changes: the first live waiter of a
/// group that nobody holds. None while the group is held, or when nobody waits.
pub fn next_waiter(lease: &Lease, now: Timestamp, stale_after: Duration) -> Option<String> {
    let held = lease
        .spec
        .as_ref()
        .and_then(|spec| spec.holder_identity.as_deref())
        .is_some_and(|holder| !holder.is_empty());
    if held {
        return None;
    }
    waiting_queue(lease)
        .next(now, stale_after)
        .map(|waiter| waiter.plan.clone())
}

/// [`next_waiter`] as the reference of the plan the controller reconciles at once.
pub fn plan_to_wake(
    lease: &Lease,
    now: Timestamp,
    stale_after: Duration,
) -> Option<ObjectRef<DeserializeGuard<MaintenancePlan>>> {
    let plan = next_waiter(lease, now, stale_after)?;
    let (namespace, name) = plan.split_once('/')?;
    Some(ObjectRef::new(name).within(namespace))
}

/// The target group leases of one controller.
#[derive(Debug)]
pub struct TargetGroupLocks {
    namespace: String,
    duration: Duration,
    /// After how long without asking a waiter no longer counts.
    waiter_stale_after: Duration,
    /// Plans told they are waiting, so the Event is published once per wait, and so that a
    /// plan that stops asking leaves the queue.
    waiting: Mutex<HashSet<String>>,
    /// `(lease, plan)` pairs this process took, so rounds without an instance out do not
    /// have to read the lease to know there is nothing to give back.
    held: Mutex<HashSet<(String, String)>>,
}

impl TargetGroupLocks {
    /// Leases in `namespace` (the controller's own), of [`TARGET_GROUP_LEASE`], for plans
    /// that poll every `poll_interval` while they wait.
    pub fn new(namespace: impl Into<String>, poll_interval: Duration) -> Self {
        Self {
            namespace: namespace.into(),
            duration: TARGET_GROUP_LEASE,
            waiter_stale_after: WAITER_STALE_AFTER.max(poll_interval.saturating_mul(6)),
            waiting: Mutex::default(),
            held: Mutex::default(),
        }
    }

    /// The namespace of the leases.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// After how long without asking a waiter no longer holds the group back.
    pub fn waiter_stale_after(&self) -> Duration {
        self.waiter_stale_after
    }

    /// How old a waiter's time may get before it is written again: a third of the bound, so
    /// a waiting plan writes the lease every few polls, not at each.
    fn waiter_refresh_after(&self) -> Duration {
        self.waiter_stale_after / 3
    }

    fn waiting(&self) -> MutexGuard<'_, HashSet<String>> {
        self.waiting.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn held(&self) -> MutexGuard<'_, HashSet<(String, String)>> {
        self.held.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Takes (or renews) the lease of `target_group_arn` for `asker` unless a live plan
    /// holds it, or (for a plan with nothing out) a live plan waits ahead of it; turned
    /// away, the plan joins the lease's queue. Writes carry the resourceVersion read, so of
    /// two plans racing for a free group exactly one wins; the loser reads again and finds
    /// the winner.
    pub async fn take(
        &self,
        client: &kube::Client,
        target_group_arn: &str,
        asker: Asker<'_>,
        now: Timestamp,
    ) -> Result<Turn, kube::Error> {
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let name = lease_name(target_group_arn);
        let mut holder = String::new();
        for _ in 0..3 {
            let current = api.get_opt(&name).await?;
            let spec = current.as_ref().and_then(|lease| lease.spec.as_ref());
            let recorded_uid = current
                .as_ref()
                .and_then(|lease| lease.metadata.annotations.as_ref()?.get(ANNOTATION_PLAN_UID).cloned());
            let mut queue = current.as_ref().map(waiting_queue).unwrap_or_default();
            let other = spec
                .and_then(|s| s.holder_identity.clone())
                .filter(|h| !h.is_empty() && h != asker.key);
            let (decision, took_over) = match other {
                Some(other) => {
                    let expired = spec
                        .and_then(|s| held_until(s, self.duration))
                        .is_none_or(|until| now > until);
                    let state = holder_plan(client, &other, recorded_uid.as_deref()).await?;
                    let Some(why) = judge(state, expired) else {
                        // Held: wait in line (a plan with an instance out does not queue).
                        if let Some(lease) = current
                            && !asker.instance_out
                            && self.queue_up(&mut queue, asker, now)
                            && !self.write_queue(&api, lease, &queue).await?
                        {
                            continue;
                        }
                        return Ok(self.turned_away(asker.key, &other));
                    };
                    let transitions = spec.and_then(|s| s.lease_transitions).unwrap_or(0).max(0);
                    holder.clone_from(&other);
                    let decision = LeaseDecision::Acquire {
                        transitions: transitions.saturating_add(1),
                    };
                    (decision, Some(Takeover { holder: other, why }))
                }
                None => {
                    // Free, or ours: by this plan object (its uid), or by an earlier plan of
                    // the same name, which is adopted with a write.
                    let decision = decide(spec, now, asker.key, self.duration);
                    let same_object = recorded_uid.as_deref().is_none_or(|uid| uid == asker.uid);
                    if decision == LeaseDecision::Renew && same_object && spec.is_some_and(|s| self.fresh(s, now)) {
                        self.holding(&name, asker.key);
                        let wanted = !queue.ahead_of(asker.key, now, self.waiter_stale_after).is_empty();
                        return Ok(Turn::Ours {
                            took_over: None,
                            wanted,
                        });
                    }
                    (decision, None)
                }
            };
            // A group up for grabs goes to the first plan in line, not to whoever asks first.
            if matches!(decision, LeaseDecision::Acquire { .. })
                && !asker.instance_out
                && let Some(lease) = current.as_ref()
            {
                let (next, gone) = self.first_live_waiter(client, &queue, asker.key, now).await?;
                if let Some(next) = next {
                    let mut changed = false;
                    for plan in &gone {
                        changed |= queue.leave(plan);
                    }
                    changed |= self.queue_up(&mut queue, asker, now);
                    if changed && !self.write_queue(&api, lease.clone(), &queue).await? {
                        continue;
                    }
                    return Ok(self.turned_away(asker.key, &format!("{next} (next in line)")));
                }
                for plan in &gone {
                    queue.leave(plan);
                }
            }
            // Never None: only a Follow writes nothing, and another holder was judged above.
            let Some(spec) = leading_spec(spec, &decision, now, asker.key, self.duration) else {
                continue;
            };
            queue.leave(asker.key);
            queue.drop_stale(now, self.waiter_stale_after);
            let written = match current {
                None => {
                    api.create(
                        &PostParams::default(),
                        &self.lease(&name, target_group_arn, asker, spec),
                    )
                    .await
                }
                Some(mut lease) => {
                    let annotations = lease.metadata.annotations.get_or_insert_with(Default::default);
                    annotations.insert(ANNOTATION_PLAN_UID.to_owned(), asker.uid.to_owned());
                    annotations.insert(ANNOTATION_TARGET_GROUP.to_owned(), target_group_arn.to_owned());
                    set_waiting_queue(&mut lease, &queue);
                    lease.spec = Some(spec);
                    api.replace(&name, &PostParams::default(), &lease).await
                }
            };
            match written {
                Ok(_) => {
                    self.holding(&name, asker.key);
                    let wanted = !queue.ahead_of(asker.key, now, self.waiter_stale_after).is_empty();
                    return Ok(Turn::Ours { took_over, wanted });
                }
                // Someone wrote in between: read again.
                Err(error) if is_conflict(&error) => {}
                Err(error) => return Err(error),
            }
        }
        // Lost every race: someone else is busy with this lease right now.
        let holder = if holder.is_empty() {
            "another plan".to_owned()
        } else {
            holder
        };
        Ok(self.turned_away(asker.key, &holder))
    }

    /// The first waiter ahead of `plan` whose plan still exists and has not finished, and
    /// the waiters ahead of it found gone or finished (to be dropped from the line).
    async fn first_live_waiter(
        &self,
        client: &kube::Client,
        queue: &TurnQueue,
        plan: &str,
        now: Timestamp,
    ) -> Result<(Option<String>, Vec<String>), kube::Error> {
        let mut gone = Vec::new();
        for waiter in queue.ahead_of(plan, now, self.waiter_stale_after) {
            let uid = Some(waiter.uid.as_str()).filter(|uid| !uid.is_empty());
            match holder_plan(client, &waiter.plan, uid).await? {
                HolderPlan::Gone | HolderPlan::Finished => gone.push(waiter.plan.clone()),
                HolderPlan::InstanceOut | HolderPlan::Idle | HolderPlan::Unknown => {
                    return Ok((Some(waiter.plan.clone()), gone));
                }
            }
        }
        Ok((None, gone))
    }

    /// Puts `asker` in line (or refreshes its place). Returns whether the queue changed.
    fn queue_up(&self, queue: &mut TurnQueue, asker: Asker<'_>, now: Timestamp) -> bool {
        let asked = queue.ask(asker.key, asker.uid, now, self.waiter_refresh_after());
        let dropped = queue.drop_stale(now, self.waiter_stale_after);
        asked || dropped
    }

    /// Writes `queue` onto `lease` as read. Returns false on a conflict (read again).
    async fn write_queue(&self, api: &Api<Lease>, mut lease: Lease, queue: &TurnQueue) -> Result<bool, kube::Error> {
        let name = lease.metadata.name.clone().unwrap_or_default();
        set_waiting_queue(&mut lease, queue);
        match api.replace(&name, &PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(error) if is_conflict(&error) => Ok(false),
            Err(error) => Err(error),
        }
    }

    /// Takes the turn of every one of `target_group_arns` for `asker`, in the order given,
    /// which callers make the fixed sorted order
    /// ([`crate::api::MaintenancePlanSpec::target_groups_in_lock_order`]): two plans that
    /// share groups then ask for them in the same order, so neither can hold one the other
    /// waits for while waiting for one the other holds. A plan with nothing out stops at the
    /// first group held by another plan (the ones it took before are given back at the end
    /// of its round, as it then holds no turn); a plan with an instance out takes every
    /// group it can, whoever holds the others.
    pub async fn take_all(
        &self,
        client: &kube::Client,
        target_group_arns: &[&str],
        asker: Asker<'_>,
        now: Timestamp,
    ) -> Result<Turn, kube::Error> {
        let was_waiting = self.waiting().contains(asker.key);
        let mut took_over = None;
        let mut held_by = None;
        let mut wanted = false;
        for arn in target_group_arns {
            match self.take(client, arn, asker, now).await? {
                Turn::Ours {
                    took_over: taken,
                    wanted: waited_for,
                } => {
                    wanted |= waited_for;
                    if let Some(t) = taken {
                        took_over.get_or_insert(t);
                    }
                }
                Turn::HeldBy { holder, .. } => {
                    held_by.get_or_insert(holder);
                    if !asker.instance_out {
                        break;
                    }
                }
            }
        }
        Ok(match held_by {
            Some(holder) => {
                // Taking an earlier group may have cleared the wait; it goes on.
                self.waiting().insert(asker.key.to_owned());
                Turn::HeldBy {
                    holder,
                    first: !was_waiting,
                }
            }
            None => Turn::Ours { took_over, wanted },
        })
    }

    /// [`Self::release`] of every one of `target_group_arns`; true if any was given back.
    pub async fn release_all(
        &self,
        client: &kube::Client,
        target_group_arns: &[&str],
        plan: &str,
        check: bool,
        now: Timestamp,
    ) -> Result<bool, kube::Error> {
        let mut released = false;
        for arn in target_group_arns {
            released |= self.release(client, arn, plan, check, now).await?;
        }
        Ok(released)
    }

    /// [`Self::stop_waiting`] for every one of `target_group_arns`: the plan leaves each
    /// group's queue it may be in.
    pub async fn stop_waiting_all(
        &self,
        client: &kube::Client,
        target_group_arns: &[&str],
        plan: &str,
        check: bool,
    ) -> Result<(), kube::Error> {
        // Whether this process saw it waiting is known once, before the first group clears it.
        let check = check || self.waiting().contains(plan);
        for arn in target_group_arns {
            self.stop_waiting(client, arn, plan, check).await?;
        }
        Ok(())
    }

    /// Gives the lease of `target_group_arn` back if `plan` holds it. Without `check`, only
    /// a lease this process took is looked at; with it, the lease is read in any case (a
    /// plan that had an instance out may hold it from before a restart).
    pub async fn release(
        &self,
        client: &kube::Client,
        target_group_arn: &str,
        plan: &str,
        check: bool,
        now: Timestamp,
    ) -> Result<bool, kube::Error> {
        let name = lease_name(target_group_arn);
        let known = self.held().remove(&(name.clone(), plan.to_owned()));
        if !known && !check {
            return Ok(false);
        }
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        // Waiters write the lease too (joining the queue): a conflict is read again, not
        // taken for a takeover, or the group would stay with a plan that has nothing out.
        for _ in 0..5 {
            let Some(mut lease) = api.get_opt(&name).await? else {
                return Ok(false);
            };
            let holder = lease.spec.as_ref().and_then(|spec| spec.holder_identity.as_deref());
            if holder != Some(plan) {
                return Ok(false);
            }
            lease.spec = Some(released_spec(lease.spec.as_ref(), now));
            if let Some(annotations) = lease.metadata.annotations.as_mut() {
                annotations.remove(ANNOTATION_PLAN_UID);
            }
            match api.replace(&name, &PostParams::default(), &lease).await {
                Ok(_) => return Ok(true),
                Err(error) if is_conflict(&error) => {}
                Err(error) => return Err(error),
            }
        }
        // Still ours: the next round gives it back (it reads the lease when told to check).
        self.held().insert((name, plan.to_owned()));
        Ok(false)
    }

    /// `plan` stopped asking for the group (deleted, suspended, between windows, finished):
    /// it leaves the lease's queue, so that it does not hold others back, and a later wait
    /// is told again. Without `check`, only a plan this process saw waiting is looked up;
    /// with it, the lease is read in any case (a deleted plan may wait from before a restart).
    pub async fn stop_waiting(
        &self,
        client: &kube::Client,
        target_group_arn: &str,
        plan: &str,
        check: bool,
    ) -> Result<(), kube::Error> {
        let was_waiting = self.waiting().remove(plan);
        if !was_waiting && !check {
            return Ok(());
        }
        let api: Api<Lease> = Api::namespaced(client.clone(), &self.namespace);
        let name = lease_name(target_group_arn);
        for _ in 0..5 {
            let Some(lease) = api.get_opt(&name).await? else {
                return Ok(());
            };
            let mut queue = waiting_queue(&lease);
            if !queue.leave(plan) || self.write_queue(&api, lease, &queue).await? {
                return Ok(());
            }
        }
        // Left behind after repeated conflicts: it goes stale by itself.
        Ok(())
    }

    fn turned_away(&self, plan: &str, holder: &str) -> Turn {
        let first = self.waiting().insert(plan.to_owned());
        Turn::HeldBy {
            holder: holder.to_owned(),
            first,
        }
    }

    fn holding(&self, lease: &str, plan: &str) {
        self.waiting().remove(plan);
        self.held().insert((lease.to_owned(), plan.to_owned()));
    }

    /// Renewed recently enough that this round need not write: a third of the duration.
    fn fresh(&self, spec: &LeaseSpec, now: Timestamp) -> bool {
        let third = SignedDuration::try_from(self.duration / 3).unwrap_or(SignedDuration::ZERO);
        spec.renew_time
            .as_ref()
            .is_some_and(|renewed| renewed.0 <= now && now.duration_since(renewed.0) < third)
            && spec.lease_duration_seconds == Some(crate::leader::duration_seconds(self.duration))
    }

    fn lease(&self, name: &str, target_group_arn: &str, asker: Asker<'_>, spec: LeaseSpec) -> Lease {
        Lease {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(self.namespace.clone()),
                labels: Some(
                    [("app.kubernetes.io/managed-by".to_owned(), "pitstop".to_owned())]
                        .into_iter()
                        .collect(),
                ),
                annotations: Some(
                    [
                        (ANNOTATION_TARGET_GROUP.to_owned(), target_group_arn.to_owned()),
                        (ANNOTATION_PLAN_UID.to_owned(), asker.uid.to_owned()),
                    ]
                    .into_iter()
                    .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(spec),
        }
    }
}

/// Looks up the plan a lease names (`namespace/name`), checking its uid when the lease
/// recorded one.
async fn holder_plan(client: &kube::Client, holder: &str, uid: Option<&str>) -> Result<HolderPlan, kube::Error> {
    let Some((namespace, name)) = holder.split_once('/') else {
        return Ok(HolderPlan::Unknown);
    };
    let api: Api<DeserializeGuard<MaintenancePlan>> = Api::namespaced(client.clone(), namespace);
    let object = match api.get_opt(name).await {
        Ok(object) => object,
        // Not ours to see (a plan outside the namespaces this controller may read).
        Err(kube::Error::Api(status)) if status.code == 403 => return Ok(HolderPlan::Unknown),
        Err(error) => return Err(error),
    };
    let Some(object) = object else {
        return Ok(HolderPlan::Gone);
    };
    let plan = match &object.0 {
        Ok(plan) => plan,
        Err(_) => return Ok(HolderPlan::Unknown),
    };
    if uid.is_some_and(|uid| plan.metadata.uid.as_deref() != Some(uid)) {
        return Ok(HolderPlan::Gone);
    }
    let Some(status) = plan.status.as_ref() else {
        return Ok(HolderPlan::Idle);
    };
    Ok(if in_flight(&plan.spec, status).is_some() {
        HolderPlan::InstanceOut
    } else if status.phase.is_finished() {
        HolderPlan::Finished
    } else {
        HolderPlan::Idle
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_names_come_from_the_target_group() {
        assert_eq!(
            lease_name("arn:aws:elasticloadbalancing:eu-west-1:123456789012:targetgroup/Web-Blue/0123456789abcdef"),
            "pitstop-tg-web-blue-0123456789abcdef"
        );
        let odd = lease_name("not an arn");
        assert!(
            odd.starts_with("pitstop-tg-") && odd.len() == "pitstop-tg-".len() + 16,
            "{odd}"
        );
        assert_eq!(odd, lease_name("not an arn"), "stable");
        assert_ne!(odd, lease_name("not an arn either"));
    }

    fn lease_with(holder: &str, waiting: &str) -> Lease {
        Lease {
            metadata: ObjectMeta {
                annotations: Some(
                    [(ANNOTATION_WAITING.to_owned(), waiting.to_owned())]
                        .into_iter()
                        .collect(),
                ),
                ..ObjectMeta::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(holder.to_owned()),
                ..LeaseSpec::default()
            }),
        }
    }

    #[test]
    fn the_first_live_waiter_of_a_free_group_is_woken() {
        let now: Timestamp = "2026-11-22T22:00:00Z".parse().expect("valid timestamp");
        let stale = Duration::from_secs(60);
        let queue = r#"[{"plan":"ns/old","uid":"1","asked":"2026-11-22T21:00:00Z"},
                        {"plan":"ns/next","uid":"2","asked":"2026-11-22T21:59:50Z"},
                        {"plan":"ns/last","uid":"3","asked":"2026-11-22T21:59:55Z"}]"#;
        assert_eq!(
            next_waiter(&lease_with("", queue), now, stale).as_deref(),
            Some("ns/next")
        );
        assert_eq!(next_waiter(&lease_with("ns/holder", queue), now, stale), None, "held");
        assert_eq!(next_waiter(&lease_with("", "[]"), now, stale), None);
        assert_eq!(
            next_waiter(&lease_with("", "not json"), now, stale),
            None,
            "unreadable: nobody"
        );
        let mut unannotated = lease_with("", "[]");
        unannotated.metadata.annotations = None;
        assert_eq!(next_waiter(&unannotated, now, stale), None);
    }

    #[test]
    fn a_holder_with_an_instance_out_always_blocks() {
        assert_eq!(judge(HolderPlan::InstanceOut, false), None);
        assert_eq!(
            judge(HolderPlan::InstanceOut, true),
            None,
            "even when its lease ran out"
        );
    }

    #[test]
    fn deleted_or_finished_holders_are_stale_at_once() {
        assert_eq!(judge(HolderPlan::Gone, false), Some(Stale::Deleted));
        assert_eq!(judge(HolderPlan::Finished, false), Some(Stale::Finished));
    }

    #[test]
    fn other_holders_are_stale_once_their_lease_expired() {
        for holder in [HolderPlan::Idle, HolderPlan::Unknown] {
            assert_eq!(judge(holder, false), None);
            assert_eq!(judge(holder, true), Some(Stale::Expired));
        }
    }
}
