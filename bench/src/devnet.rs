//! `--devnet`: a local cluster of validator processes to measure (`ordo-harness`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use ordo_crypto::Keypair;
use ordo_harness::{Net, Spec};

/// How long a validator gets to stop after SIGTERM before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(15);

/// A devnet started for a run, and the keys of its clients.
pub(crate) struct Devnet {
    pub(crate) net: Net,
    pub(crate) keys: Vec<Keypair>,
    /// The temporary directory holding it, when no `--dir` was given.
    _tmp: Option<tempfile::TempDir>,
}

impl Devnet {
    /// Starts the devnet in `dir` (created with `validators` validators and `clients`
    /// clients if it is not there; a temporary directory when `dir` is `None`).
    pub(crate) fn start(
        dir: Option<PathBuf>,
        validators: usize,
        clients: usize,
    ) -> anyhow::Result<Devnet> {
        let (tmp, dir) = match dir {
            Some(d) => (None, d),
            None => {
                let tmp = tempfile::tempdir().context("cannot create a temporary directory")?;
                let dir = tmp.path().join("devnet");
                (Some(tmp), dir)
            }
        };
        let mut net = if Net::exists(&dir) {
            Net::open(&dir)?
        } else {
            Net::create(&dir, &Spec::new("bench", validators, clients))?
        };
        net.check_ports_free()?;
        net.start_all(&ordo_harness::ordo_bin()?)?;
        let keys = (0..clients.max(1))
            .map(|i| ordo_crypto::load_key_file(&Net::client_key_path(&dir, i)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Devnet {
            net,
            keys,
            _tmp: tmp,
        })
    }

    /// Stops every validator (SIGTERM, then SIGKILL after a grace period).
    pub(crate) async fn stop(&mut self) {
        for name in
            ordo_harness::stop_all(&mut self.net.nodes, STOP_GRACE, std::future::pending()).await
        {
            eprintln!("{name} did not stop; killed it");
        }
    }
}
