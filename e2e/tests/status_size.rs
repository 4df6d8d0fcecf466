//! The largest plan the API accepts fits in one etcd write, with room to spare (at least half
//! the limit free): its status (as pitstop writes it, ten target groups, verification, every
//! instance failed with as much stderr as pitstop keeps) is measured, not guessed.

use pitstop::api::MAX_INSTANCES;
use pitstop_e2e::largest_plan::{ETCD_REQUEST_LIMIT, largest_plan};

#[tokio::test]
async fn the_largest_plan_and_its_status_stay_under_half_the_etcd_limit() {
    let plan = largest_plan().await;
    let status = plan.status.as_ref().expect("a status");
    assert!(status.phase.is_finished(), "{:?}", status.phase);
    assert_eq!(status.instances.len(), MAX_INSTANCES);
    let size = serde_json::to_vec(&plan).expect("JSON").len();
    let entry = status
        .instances
        .iter()
        .map(|i| serde_json::to_vec(i).map(|j| j.len()).unwrap_or_default())
        .max()
        .unwrap_or_default();
    eprintln!(
        "plan of {MAX_INSTANCES} instances in 10 target groups: {size} bytes ({:.0} % of etcd's limit), largest instance entry {entry} bytes",
        size as f64 * 100.0 / ETCD_REQUEST_LIMIT as f64
    );
    assert!(
        size < ETCD_REQUEST_LIMIT / 2,
        "{size} bytes leaves too little room below {ETCD_REQUEST_LIMIT}"
    );
}
