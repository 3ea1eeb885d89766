//! The simulation's scenarios: small ones that run in seconds, and issue 9's 1,000 nodes and
//! 10,000 jobs (`#[ignore]`d: about a minute in release).

use super::*;
use std::time::Duration;

fn scenario(name: &'static str, nodes: usize, jobs: usize, seed: u64) -> [Scenario; 3] {
    let base = Scenario {
        name,
        nodes,
        jobs,
        hardware: Hardware::Mixed,
        start: Start::Arrivals { over: 60 },
        seed,
        work: (60.0, 120.0),
        policy: Policy::default(),
    };
    [
        Scenario {
            name: "arrivals at random homes",
            ..base.clone()
        },
        Scenario {
            name: "burst on 10 % of the nodes",
            start: Start::Burst { percent: 10 },
            ..base.clone()
        },
        Scenario {
            name: "unequal speeds, random homes",
            hardware: Hardware::Unequal,
            start: Start::Everywhere,
            ..base
        },
    ]
}

fn print(scenario: &Scenario, report: &Report) {
    println!(
        "{:<32} nodes {:>5} jobs {:>6}: makespan {:>7.1} s, ideal {:>7.1} s, ratio {:.3}, \
         moves/job mean {:.2} max {}, returns within 30 s {}, mean view age {:.2} s",
        scenario.name,
        scenario.nodes,
        scenario.jobs,
        report.makespan,
        report.ideal,
        report.ratio(),
        report.moves_mean,
        report.moves_max,
        report.returns,
        report.mean_view_age,
    );
}

#[test]
fn small_cluster_scenarios() {
    for s in scenario("small", 20, 200, 7) {
        let report = simulate(&s);
        print(&s, &report);
        assert!(report.all_done, "{report:?}");
    }
}

#[test]
#[ignore = "issue 9's scale: run in release, about a minute"]
fn sim_1000_nodes_10000_jobs() {
    for s in scenario("full", 1000, 10_000, 9) {
        let started = std::time::Instant::now();
        let report = simulate(&s);
        print(&s, &report);
        println!("  (simulated in {:.1} s)", started.elapsed().as_secs_f64());
        assert!(report.all_done, "{report:?}");
    }
}

#[test]
fn tmp_experiment() {
    let nodes: usize = std::env::var("SIM_NODES").map_or(20, |v| v.parse().unwrap());
    for mut s in scenario("small", nodes, nodes * 10, 7) {
        if let Ok(v) = std::env::var("SIM_STAB") {
            s.policy.stability_percent = v.parse().unwrap();
        }
        if let Ok(v) = std::env::var("SIM_DIFF") {
            s.policy.min_load_difference = v.parse().unwrap();
        }
        if let Ok(v) = std::env::var("SIM_RES") {
            s.policy.min_residence = Duration::from_secs(v.parse().unwrap());
        }
        if let Ok(w) = std::env::var("SIM_WORK") {
            let (a, b) = w.split_once(',').unwrap();
            s.work = (a.parse().unwrap(), b.parse().unwrap());
        }
        let started = std::time::Instant::now();
        let report = simulate(&s);
        print(&s, &report);
        println!("  {:.1} s", started.elapsed().as_secs_f64());
    }
}
