//! `ordo devnet`: a local multi-validator chain, each validator its own process
//! (`ordo-harness`), watched through `ordo-client`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use ordo_client::api::Status;
use ordo_client::{Client, RetryPolicy, Signer, SubmitOptions, TxTemplate};
use ordo_harness::{Net, NodeProcess, Spec};

use crate::failure::{CmdResult, Failure};

/// How long a validator gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// How often the status lines are refreshed.
const REFRESH: Duration = Duration::from_millis(500);

#[derive(Args)]
pub struct DevnetArgs {
    /// Directory for the devnet's keys, genesis, configurations, data and logs. Re-running
    /// on the same directory resumes the same chain.
    #[arg(long, default_value = "ordo-devnet", value_name = "DIR")]
    dir: PathBuf,
    /// Number of validators, when creating the devnet (default 3).
    #[arg(long, value_name = "N")]
    validators: Option<usize>,
    /// Chain id, when creating the devnet (default "devnet").
    #[arg(long)]
    chain_id: Option<String>,
    /// Submit this many demo transactions per second, so the chain moves.
    #[arg(long, default_value_t = 0, value_name = "TPS")]
    load: u32,
    /// Stop after this many seconds instead of waiting for Ctrl-C.
    #[arg(long, value_name = "SECS")]
    duration: Option<u64>,
}

fn line(name: &str, status: Option<&Status>) -> String {
    match status {
        None => format!("{name:<13} starting…"),
        Some(s) => format!(
            "{name:<13} {:<9} term {:<4} tip {:<8} mempool {:<7} peers {}",
            s.role.as_str(),
            s.term,
            s.tip.height,
            s.mempool.txs,
            s.peers.len(),
        ),
    }
}

/// The devnet in `a.dir`, created first if it is not there.
fn open_or_create(a: &DevnetArgs) -> anyhow::Result<(Net, bool)> {
    if Net::exists(&a.dir) {
        if a.validators.is_some() || a.chain_id.is_some() {
            eprintln!(
                "note: {} already holds a devnet; --validators and --chain-id apply only when creating one",
                a.dir.display()
            );
        }
        return Ok((Net::open(&a.dir)?, false));
    }
    let chain_id = a.chain_id.as_deref().unwrap_or("devnet");
    let spec = Spec::new(chain_id, a.validators.unwrap_or(3), 1);
    Ok((Net::create(&a.dir, &spec)?, true))
}

pub fn run(a: DevnetArgs) -> CmdResult {
    let (mut net, created) = open_or_create(&a).map_err(Failure::Usage)?;
    net.check_ports_free()
        .map_err(|e| Failure::Usage(e.into()))?;
    let bin = std::env::current_exe().context("cannot find the ordo executable")?;
    crate::remote::block_on(async move {
        // Handlers first, so a Ctrl-C at any moment stops the validators it started.
        let signal = crate::node::wait_for_signal()?;
        net.start_all(&bin).map_err(anyhow::Error::from)?;
        let dir = a.dir.display();
        let api0 = net.nodes[0].url();
        println!(
            "ordo devnet: {} validators of chain '{}' in {dir} ({})",
            net.nodes.len(),
            net.genesis.chain_id,
            if created { "new" } else { "resumed" }
        );
        println!("  (ordo is {})", bin.display());
        println!(
            "  submit  ordo tx submit --node {api0} --key {} --payload hello --wait",
            Net::client_key_path(&a.dir, 0).display()
        );
        println!("  follow  ordo blocks follow --node {api0}");
        println!(
            "  audit   ordo audit --data-dir {dir}/validator-0/data --genesis {dir}/genesis.toml"
        );
        println!("  logs    {dir}/validator-*/node.log");
        println!("Ctrl-C stops the validators; run the same command again to resume the chain.");
        let result = watch(&mut net, &a, signal).await;
        let again = async {
            match crate::node::wait_for_signal() {
                Ok(f) => {
                    let _ = f.await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        for name in ordo_harness::stop_all(&mut net.nodes, STOP_GRACE, again).await {
            eprintln!("{name} did not stop; killed it");
        }
        println!("devnet stopped; its chain is in {dir}");
        result
    })
}

/// Shows each validator's role and tip until Ctrl-C / SIGTERM / `--duration`; submits demo
/// load if asked.
async fn watch(
    net: &mut Net,
    a: &DevnetArgs,
    signal: impl std::future::Future<Output = anyhow::Result<()>>,
) -> CmdResult {
    let clients: Vec<Client> = net
        .nodes
        .iter()
        .map(|n| Client::new(&n.url()))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::from)?;
    let multi = MultiProgress::new();
    let tty = std::io::IsTerminal::is_terminal(&std::io::stdout());
    if !tty {
        multi.set_draw_target(ProgressDrawTarget::hidden());
    }
    let style = ProgressStyle::with_template("{spinner} {msg}").expect("valid template");
    let bars: Vec<ProgressBar> = net
        .nodes
        .iter()
        .map(|n| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style.clone());
            bar.set_message(line(&n.name, None));
            bar
        })
        .collect();
    let load = if a.load > 0 {
        let key = ordo_crypto::load_key_file(&Net::client_key_path(&a.dir, 0))?;
        let urls = net.nodes.iter().map(NodeProcess::url).collect();
        Some(tokio::spawn(demo_load(urls, key, a.load)))
    } else {
        None
    };
    let deadline = a
        .duration
        .map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    tokio::pin!(signal);
    let mut last_summary = String::new();
    let outcome = loop {
        let statuses = refresh(&mut net.nodes, &clients, &bars, tty).await;
        if net.nodes.iter().all(|n| !n.is_running()) {
            break Err(Failure::Negative("every validator has exited".into()));
        }
        let summary = summary(&net.nodes, &statuses);
        if !tty && summary != last_summary {
            println!("{summary}");
            last_summary = summary;
        }
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break Ok(());
        }
        tokio::select! {
            r = &mut signal => { r?; break Ok(()); }
            () = tokio::time::sleep(REFRESH) => {}
        }
    };
    if let Some(load) = load {
        load.abort();
    }
    for bar in bars {
        bar.finish();
    }
    outcome
}

/// Reads every node's status into its line, and notes nodes that exited.
async fn refresh(
    nodes: &mut [NodeProcess],
    clients: &[Client],
    bars: &[ProgressBar],
    tty: bool,
) -> Vec<Option<Status>> {
    let mut statuses = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        let st = tokio::time::timeout(REFRESH, c.status())
            .await
            .ok()
            .and_then(Result::ok);
        bars[i].set_message(line(&nodes[i].name, st.as_ref()));
        bars[i].tick();
        statuses.push(st);
    }
    for (i, n) in nodes.iter_mut().enumerate() {
        if let Some(status) = n.exited() {
            let msg = format!("{} exited ({status}); see {}", n.name, n.log.display());
            bars[i].set_message(msg.clone());
            if !tty {
                println!("{msg}");
            }
        }
    }
    statuses
}

fn summary(nodes: &[NodeProcess], statuses: &[Option<Status>]) -> String {
    let up = statuses.iter().filter(|s| s.is_some()).count();
    let leader = statuses
        .iter()
        .flatten()
        .find_map(|s| s.leader.as_ref().map(|l| l.name.clone()))
        .unwrap_or_else(|| "(electing)".into());
    let tip = statuses
        .iter()
        .flatten()
        .map(|s| s.tip.height)
        .max()
        .unwrap_or(0);
    format!("{up}/{} up  leader {leader}  tip {tip}", nodes.len())
}

/// Submits `tps` demo transactions per second, spread over the nodes at `urls`, without
/// waiting for commits or retrying (the next tick sends more).
async fn demo_load(urls: Vec<String>, key: ordo_crypto::Keypair, tps: u32) {
    let Ok(clients) = urls
        .iter()
        .map(|u| {
            Client::builder(u)
                .retry(RetryPolicy::none())
                .request_timeout(Duration::from_secs(5))
                .build()
        })
        .collect::<Result<Vec<_>, _>>()
    else {
        return;
    };
    let per_tick = tps.div_ceil(10).max(1) as usize;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut n: u64 = 0;
    loop {
        tick.tick().await;
        let c = &clients[(n as usize / per_tick) % clients.len()];
        // The expiry window moves with the tip: read it again for each batch.
        let Ok(template) = TxTemplate::fetch(c).await else {
            continue;
        };
        let signer = Signer::new(key.clone(), template);
        let txs: Vec<_> = (0..per_tick)
            .map(|_| {
                n += 1;
                signer.sign(format!("devnet demo {n}").into_bytes())
            })
            .collect();
        if let Err(e) = c.submit_batch(&txs, &SubmitOptions::default()).await {
            tracing::debug!(error = %e, "demo load submission failed");
        }
    }
}
