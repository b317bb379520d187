//! Damage done on disk to a stopped validator's ledger, for the `corrupt-random` fault:
//! a few bytes flipped in one of its ledger's table files, or that file cut short.
//!
//! Only the table files of the ledger's column families (`docs/format.md` §9) are
//! damaged: the node finds such damage (at open, in its start check, by its scrub, on a
//! read), sets the file aside and fetches what it held from its peers. The Raft state
//! (`raft_log`, `raft_state`) shares the database but is left alone: it cannot be rebuilt
//! from the chain, and a validator that forgot what it voted or acknowledged could break
//! Raft's guarantees, so a damaged Raft state file stops the node by design, naming the
//! file (`tests/heal.rs`). The write-ahead log is left alone too (`docs/reliability.md`).

use std::fmt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::Context;
use rocksdb::{DB, Options};

use crate::schedule::Rng;

/// The ledger's column families, whose table files may be damaged.
pub use ordo_ledger::LEDGER_COLUMN_FAMILIES;

/// Most bytes flipped at once (in a row, from a random offset).
const FLIP_BYTES_MAX: u64 = 4;

/// One table file of a database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFile {
    /// Where it is.
    pub path: PathBuf,
    /// Its column family.
    pub cf: String,
    /// Its length in bytes.
    pub len: u64,
}

impl fmt::Display for TableFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        write!(f, "{name} ({}, {} bytes)", self.cf, self.len)
    }
}

/// What was done to a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Damage {
    /// `bytes` bytes from `offset` on, each XORed with a random non-zero mask.
    Flipped {
        /// The file.
        file: TableFile,
        /// The first byte flipped.
        offset: u64,
        /// How many, in a row.
        bytes: u64,
    },
    /// Cut to `len` bytes.
    Truncated {
        /// The file, with its length before.
        file: TableFile,
        /// Its length now.
        len: u64,
    },
}

impl fmt::Display for Damage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Damage::Flipped {
                file,
                offset,
                bytes,
            } => write!(f, "{bytes} byte(s) flipped at offset {offset} of {file}"),
            Damage::Truncated { file, len } => write!(f, "{file} cut to {len} bytes"),
        }
    }
}

/// The table files of the ledger's column families in the database of `data_dir`, by
/// name, read from a read-only open that tolerates damaged files (an earlier fault's
/// damage may still be there, waiting for a scrub to find it).
///
/// # Errors
/// When the database cannot be opened or its files listed.
pub fn ledger_table_files(data_dir: &Path) -> anyhow::Result<Vec<TableFile>> {
    let path = data_dir.join(ordo_ledger::LEDGER_DIR);
    let mut opts = Options::default();
    opts.set_paranoid_checks(false);
    let cfs = DB::list_cf(&opts, &path)
        .with_context(|| format!("cannot list the column families of {}", path.display()))?;
    let db = DB::open_cf_for_read_only(&opts, &path, &cfs, false)
        .with_context(|| format!("cannot open {} read-only", path.display()))?;
    let live = db
        .live_files()
        .with_context(|| format!("cannot list the files of {}", path.display()))?;
    let mut files: Vec<TableFile> = live
        .into_iter()
        .filter(|f| LEDGER_COLUMN_FAMILIES.contains(&f.column_family_name.as_str()))
        .map(|f| TableFile {
            path: path.join(f.name.trim_start_matches('/')),
            cf: f.column_family_name,
            len: f.size as u64,
        })
        .collect();
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(files)
}

/// Damages one of the ledger's table files in `data_dir`, chosen by `rng`, as `rng`
/// chooses: flips a few bytes at a random offset, or cuts the file to a random length
/// (shorter than it was). The node must not be running. `None` when the ledger has no
/// table file yet (everything still in the write-ahead log).
///
/// # Errors
/// When the files cannot be listed, read or written.
#[cfg(test)]
pub fn damage(data_dir: &Path, rng: &mut Rng) -> anyhow::Result<Option<Damage>> {
    damage_one(ledger_table_files(data_dir)?, rng)
}

/// As [`ledger_table_files`], in a child process (`ordo-nemesis --list-table-files`):
/// the database may still hold an earlier fault's damage, and RocksDB meeting it must not
/// take the nemesis down with it (and with it the cleanup of its namespaces and mounts).
///
/// # Errors
/// When the child fails, or its output is not a list of files.
pub fn ledger_table_files_apart(data_dir: &Path) -> anyhow::Result<Vec<TableFile>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .arg("--list-table-files")
        .arg(data_dir)
        .output()
        .context("cannot run ordo-nemesis --list-table-files")?;
    if !out.status.success() {
        anyhow::bail!(
            "listing the table files failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let mut parts = line.splitn(3, '\t');
            let (cf, len, path) = (parts.next(), parts.next(), parts.next());
            match (cf, len.and_then(|l| l.parse().ok()), path) {
                (Some(cf), Some(len), Some(path)) => Ok(TableFile {
                    path: PathBuf::from(path),
                    cf: cf.to_owned(),
                    len,
                }),
                _ => Err(anyhow::anyhow!("not a table file: {line:?}")),
            }
        })
        .collect()
}

/// Prints the table files of the ledger in `data_dir`, one a line (`cf`, length, path,
/// tab-separated): what [`ledger_table_files_apart`] reads.
///
/// # Errors
/// As [`ledger_table_files`].
pub fn print_ledger_table_files(data_dir: &Path) -> anyhow::Result<()> {
    for f in ledger_table_files(data_dir)? {
        println!("{}\t{}\t{}", f.cf, f.len, f.path.display());
    }
    Ok(())
}

/// As [`damage`], choosing among `files`.
///
/// # Errors
/// When the chosen file cannot be read or written.
pub fn damage_one(files: Vec<TableFile>, rng: &mut Rng) -> anyhow::Result<Option<Damage>> {
    let files: Vec<TableFile> = files.into_iter().filter(|f| f.len > 0).collect();
    if files.is_empty() {
        return Ok(None);
    }
    let file = files[rng.below(files.len() as u64) as usize].clone();
    let done = if rng.below(2) == 0 {
        let offset = rng.below(file.len);
        let bytes = (1 + rng.below(FLIP_BYTES_MAX)).min(file.len - offset);
        let masks: Vec<u8> = (0..bytes).map(|_| 1 + rng.below(255) as u8).collect();
        flip(&file.path, offset, &masks)?;
        Damage::Flipped {
            file,
            offset,
            bytes,
        }
    } else {
        let len = rng.below(file.len);
        truncate(&file.path, len)?;
        Damage::Truncated { file, len }
    };
    Ok(Some(done))
}

/// XORs the bytes of `path` from `offset` on with `masks`, and syncs the file.
fn flip(path: &Path, offset: u64, masks: &[u8]) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut bytes = vec![0; masks.len()];
    file.read_exact_at(&mut bytes, offset)
        .with_context(|| format!("cannot read {}", path.display()))?;
    for (b, m) in bytes.iter_mut().zip(masks) {
        *b ^= m;
    }
    file.write_all_at(&bytes, offset)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}

/// Cuts `path` to `len` bytes, and syncs it.
fn truncate(path: &Path, len: u64) -> anyhow::Result<()> {
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.set_len(len)
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot truncate {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    use ordo_crypto::{Hash, Keypair};
    use ordo_ledger::{
        Attestation, ChainIdentity, Durability, Store, StoreTuning, Transaction, ValidatorSet,
        build_block, certificate,
    };

    /// The Raft state's column families, as the node names them (`docs/format.md` §9).
    const RAFT: [&str; 2] = ["raft_log", "raft_state"];

    /// A validator's database in `dir` as the node lays it out: a few blocks in the
    /// ledger (each certifying the one before), the last one's attestation, a record of
    /// evidence, a record per block in the Raft log, all flushed to table files.
    fn database(dir: &Path) {
        let identity = ChainIdentity {
            chain_id: "damage".into(),
            genesis_hash: Hash([7; 32]),
        };
        let store =
            Store::open_with_column_families(dir, &identity, &RAFT, &StoreTuning::default())
                .expect("store");
        let key = Keypair::from_secret(&[1; 32]);
        for nonce in 1..=20 {
            let tip = store.tip();
            let tx = Transaction {
                chain_id: identity.chain_id.clone(),
                sender: key.public(),
                nonce,
                expires_at: tip.height + 10,
                payload: vec![nonce as u8; 100],
            }
            .sign(&key);
            let certs = if tip.height == 0 {
                vec![]
            } else {
                let a = Attestation::sign(&identity.chain_id, tip.height, tip.hash, &key);
                let sigs = [(a.signer, a.signature)].into_iter().collect();
                let set = ValidatorSet::from([key.public()]);
                vec![certificate(&set, tip.height, tip.hash, &sigs)]
            };
            let block = build_block(&tip, &identity.chain_id, certs, vec![tx], &key, 1, 1);
            let raft_entry = |batch: &mut rocksdb::WriteBatch, db: &DB| {
                let cf = db.cf_handle(RAFT[0]).expect("raft_log");
                batch.put_cf(cf, nonce.to_be_bytes(), b"entry");
            };
            let ids = block.tx_ids();
            store
                .append_with(&block, &ids, Durability::Synced, raft_entry)
                .expect("append");
        }
        let tip = store.tip();
        let last = Attestation::sign(&identity.chain_id, tip.height, tip.hash, &key);
        store.put_attestations(&[last]).expect("attestation");
        let other = Attestation::sign(&identity.chain_id, 3, Hash([9; 32]), &key);
        store.put_evidence(&other).expect("evidence");
        store.flush_all().expect("flush");
    }

    #[test]
    fn the_ledger_column_families_are_the_stores_and_only_their_files_are_listed() {
        let dir = tempfile::tempdir().expect("tempdir");
        database(dir.path());
        let ledger = dir.path().join(ordo_ledger::LEDGER_DIR);
        let mut cfs = DB::list_cf(&Options::default(), &ledger).expect("list");
        cfs.retain(|cf| cf != "default" && !RAFT.contains(&cf.as_str()));
        cfs.sort();
        let mut expected = LEDGER_COLUMN_FAMILIES.map(str::to_owned).to_vec();
        expected.sort();
        assert_eq!(cfs, expected, "the store's own column families");

        let files = ledger_table_files(dir.path()).expect("files");
        for cf in LEDGER_COLUMN_FAMILIES {
            assert!(files.iter().any(|f| f.cf == cf), "a table file of {cf}");
        }
        for f in &files {
            assert_eq!(std::fs::metadata(&f.path).expect("stat").len(), f.len);
            assert!(f.path.extension().is_some_and(|e| e == "sst"), "{f}");
        }
        let db = DB::open_cf_for_read_only(&Options::default(), &ledger, RAFT, false)
            .expect("read-only");
        let raft = db.live_files().expect("live files");
        assert!(
            raft.iter().any(|f| f.column_family_name == RAFT[0]),
            "the Raft log has a table file too"
        );
        assert!(files.iter().all(|f| !RAFT.contains(&f.cf.as_str())));
    }

    #[test]
    fn flips_change_a_few_bytes_in_place_and_cuts_shorten_the_file() {
        let (mut flips, mut cuts) = (0, 0);
        for seed in 0..16 {
            let dir = tempfile::tempdir().expect("tempdir");
            database(dir.path());
            let before: Vec<(TableFile, Vec<u8>)> = ledger_table_files(dir.path())
                .expect("files")
                .into_iter()
                .map(|f| {
                    let bytes = std::fs::read(&f.path).expect("read");
                    (f, bytes)
                })
                .collect();
            let done = damage(dir.path(), &mut Rng::new(seed))
                .expect("damage")
                .expect("there are table files");
            for (f, old) in &before {
                let new = std::fs::read(&f.path).expect("read");
                match &done {
                    Damage::Flipped {
                        file,
                        offset,
                        bytes,
                    } if file == f => {
                        assert_eq!(new.len(), old.len());
                        let changed: Vec<usize> =
                            (0..old.len()).filter(|&i| old[i] != new[i]).collect();
                        let (at, n) = (*offset as usize, *bytes as usize);
                        assert_eq!(changed, (at..at + n).collect::<Vec<_>>(), "{done}");
                        assert!((1..=FLIP_BYTES_MAX as usize).contains(&n));
                        flips += 1;
                    }
                    Damage::Truncated { file, len } if file == f => {
                        assert!(*len < f.len, "{done}");
                        assert_eq!(new, old[..*len as usize], "{done}");
                        cuts += 1;
                    }
                    _ => assert_eq!(&new, old, "{f} untouched"),
                }
            }
        }
        assert!(
            flips > 0 && cuts > 0,
            "both kinds: {flips} flips, {cuts} cuts"
        );
    }

    #[test]
    fn a_ledger_without_table_files_is_left_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let identity = ChainIdentity {
            chain_id: "damage".into(),
            genesis_hash: Hash([7; 32]),
        };
        drop(Store::open(dir.path(), &identity).expect("store"));
        let done = damage(dir.path(), &mut Rng::new(1)).expect("damage");
        assert_eq!(done, None);
    }
}
