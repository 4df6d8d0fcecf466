//! End-to-end tooling for pitstop: a sandbox fleet, a load generator and its reports.

/// Finding the workspace's own binaries.
pub mod binaries;
/// `make chaos`: kills and lost answers, repeated, and a report of what they did.
pub mod chaos;
/// The seed's before/after experiment: the sandbox under load, maintained by pitstop or naively.
pub mod experiment;
/// The largest plan the API accepts, with the status pitstop writes for it.
pub mod largest_plan;
/// Open-loop HTTP load generator used to measure failed requests during maintenance.
pub mod load;
/// A process's memory and CPU time, read from `/proc`.
pub mod proc_stats;
/// A real Prometheus server with an alert the test fires, for the alert gate.
pub mod prometheus;
/// Load results, phase bands and their JSON, SVG chart and terminal summary.
pub mod report;
/// Local sandbox fleet: real HAProxy and backends behind an AWS-compatible ELBv2 + SSM endpoint.
pub mod sandbox;
