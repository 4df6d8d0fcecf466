//! `approval: Manual` against the mock apiserver (tower-test) and the in-memory AWS: a run
//! waits with reason `AwaitingApproval` and makes no AWS call until the plan carries
//! `pitstop.dev/approve=<status.runId>`; another value approves nothing; a new run (a new
//! generation of the finished plan) gets a new ID, so the old annotation, still on the plan
//! as it would be in Git, does not approve it.

mod reconcile_support;

use pitstop::api::{MaintenancePlanStatus, PlanPhase};
use pitstop::machine::{ANNOTATION_APPROVE, AWAITING_APPROVAL};
use reconcile_support::*;
use serde_json::json;

fn awaiting(status: &MaintenancePlanStatus) -> bool {
    !status.phase.is_finished()
        && status
            .conditions
            .iter()
            .any(|c| c.type_ == "Progressing" && c.reason == AWAITING_APPROVAL)
}

/// The plan as stored, with its approve annotation set to `value`.
fn annotate(server: &ApiServer, name: &str, value: &str) {
    let mut plan = server.raw(name).expect("the plan");
    plan["metadata"]["annotations"] = json!({ ANNOTATION_APPROVE: value });
    server.insert(plan);
}

#[tokio::test]
async fn a_manual_run_waits_for_its_own_run_id_and_a_new_run_for_a_new_one() {
    tokio::time::timeout(TEST_TIMEOUT, async {
        let (fake, mut server, ctx) = scenario();
        server.insert(with_finalizer(plan_json("web", &IDS, json!({ "approval": "Manual" }))));
        drive(&mut server, &ctx, &fake, "web", |s| {
            s.status("web").is_some_and(|s| awaiting(&s))
        })
        .await;
        let status = server.status("web").expect("a status");
        assert!(awaiting(&status), "{status:#?}");
        let run_id = status.run_id.clone().expect("a run ID");
        assert_eq!(
            status.message.as_deref(),
            Some(
                format!(
                    "awaiting approval of run {run_id}: annotate the plan with pitstop.dev/approve={run_id} to start it"
                )
                .as_str()
            )
        );
        assert_eq!(fake.call_count(), 0, "no AWS call while waiting");
        assert!(server.take_lease_calls().is_empty(), "nor a target group lease");

        // Another value approves nothing.
        annotate(&server, "web", "run-0");
        server.take_calls();
        server.reconcile(&ctx, "web").await.expect("still waiting");
        assert!(
            server
                .status("web")
                .is_some_and(|s| awaiting(&s) && s.approved_run.is_none())
        );
        assert_eq!(fake.call_count(), 0);

        annotate(&server, "web", &run_id);
        drive(&mut server, &ctx, &fake, "web", |_| false).await;
        let done = server.status("web").expect("a status");
        assert_eq!(done.phase, PlanPhase::Succeeded, "{done:#?}");
        assert_eq!(done.approved_run.as_deref(), Some(run_id.as_str()));
        assert_eq!(aws_writes(&fake).len(), 9);

        // A new generation of the finished plan is a new run (here with one more instance to
        // do): the old approval, still on the plan as it would be in Git, does not start it.
        fake.set_now(fake.now() + std::time::Duration::from_secs(3600));
        fake.add_group(ARN, &[IDS[0], IDS[1], IDS[2], "i-0000000000000000d"], 8080);
        let mut plan = server.raw("web").expect("the plan");
        plan["metadata"]["generation"] = json!(2);
        plan["spec"]["instances"] = json!([IDS[0], IDS[1], IDS[2], "i-0000000000000000d"]);
        server.insert(plan);
        let writes_before = aws_writes(&fake).len();
        drive(&mut server, &ctx, &fake, "web", |s| {
            s.status("web").is_some_and(|s| awaiting(&s))
        })
        .await;
        let again = server.status("web").expect("a status");
        assert!(awaiting(&again), "{again:#?}");
        assert_ne!(again.run_id.as_deref(), Some(run_id.as_str()), "a new run, a new ID");
        assert_eq!(aws_writes(&fake).len(), writes_before, "nothing started");
        server.stop(ctx).await;
    })
    .await
    .expect("test timed out");
}
