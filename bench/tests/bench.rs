//! `ordo bench --devnet` (the `ordo` binary handing over to `ordo-bench`) runs end to end
//! on a tiny workload and reports sane JSON.

/// Runs `ordo` with `args`, with this package's `ordo-bench` as the one it runs.
fn ordo(args: &[&str]) -> (i32, String, String) {
    let ordo = ordo_harness::ordo_bin().expect("the ordo binary (cargo build --release)");
    let out = std::process::Command::new(ordo)
        .args(args)
        .env("ORDO_BENCH_BIN", env!("CARGO_BIN_EXE_ordo-bench"))
        .output()
        .expect("run ordo");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn bench_on_a_devnet_reports_throughput_latency_resources_and_the_bound() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path().join("result.json");
    let (code, stdout, stderr) = ordo(&[
        "bench",
        "--devnet",
        "--txs",
        "3000",
        "--batch",
        "100",
        "--concurrency",
        "4",
        "--clients",
        "4",
        "--json",
        out.to_str().expect("utf-8"),
    ]);
    assert_eq!(code, 0, "{stdout}\n{stderr}");
    assert!(stdout.contains("throughput"), "{stdout}");
    let r: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&out).expect("result file")).expect("JSON");
    assert_eq!(r["committed"], 3000, "{r}");
    assert_eq!(r["rejected"], 0, "{r}");
    assert_eq!(r["resubmitted"], 0, "{r}");
    assert_eq!(r["validators"], 3);
    assert!(r["committed_tps"].as_f64().expect("tps") > 0.0, "{r}");
    let lat = &r["latency_ms"];
    let (p50, p99, max) = (
        lat["p50"].as_f64().expect("p50"),
        lat["p99"].as_f64().expect("p99"),
        lat["max"].as_f64().expect("max"),
    );
    assert!(0.0 < p50 && p50 <= p99 && p99 <= max, "{lat}");
    // Answering a submission is part of its latency, never more.
    let answer = &r["answer_ms"];
    let (a50, amax) = (
        answer["p50"].as_f64().expect("answer p50"),
        answer["max"].as_f64().expect("answer max"),
    );
    assert!(0.0 < a50 && a50 <= amax && a50 <= max, "{answer}");
    let nodes = r["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3);
    for n in nodes {
        assert!(n["peak_rss_bytes"].as_u64().expect("rss") > 0, "{n}");
        assert!(n["disk_bytes"].as_u64().expect("disk") > 0, "{n}");
    }
    assert!(
        r["disk_bytes_per_tx"].as_f64().expect("disk per tx") > 100.0,
        "{r}"
    );
    // The seconds add up to the commits, and the nodes' stage histograms were read.
    let seconds = r["seconds"].as_array().expect("seconds");
    let per_second: u64 = seconds
        .iter()
        .map(|s| s["committed"].as_u64().expect("committed"))
        .sum();
    assert_eq!(per_second, 3000, "{r}");
    let stages = r["stages"].as_array().expect("stages");
    for name in ["queue", "verify", "log append", "commit", "apply"] {
        let stage = stages
            .iter()
            .find(|s| s["stage"] == name)
            .unwrap_or_else(|| panic!("stage {name} in {r}"));
        assert!(stage["count"].as_u64().expect("count") > 0, "{stage}");
        assert!(stage["mean_ms"].as_f64().expect("mean") > 0.0, "{stage}");
    }
    assert!(stdout.contains("stages"), "{stdout}");
    // Batches go to every node, so followers forwarded some to the leader.
    let prechecks = &r["prechecks"];
    assert!(
        prechecks["forwarded"].as_u64().expect("forwarded") > 0,
        "{prechecks}"
    );
    let bound = &r["bound"];
    assert!(
        bound["batch_verify_per_core"].as_f64().expect("rate") > 1000.0,
        "{bound}"
    );
    let fraction = bound["fraction"].as_f64().expect("fraction");
    assert!(fraction > 0.0 && fraction < 2.0, "{bound}");
}
