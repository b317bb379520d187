//! `ordo keygen` and `ordo key`.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use ordo_crypto::{Keypair, load_key_file, write_key_file};

use crate::failure::CmdResult;

#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the key file (created with mode 0600).
    #[arg(long, value_name = "FILE")]
    out: PathBuf,
    /// Overwrite an existing key file (the old key is lost).
    #[arg(long)]
    force: bool,
}

#[derive(Subcommand)]
pub enum KeyCommand {
    /// Print the public key of a key file.
    Show {
        /// The key file.
        #[arg(long, value_name = "FILE")]
        key: PathBuf,
    },
}

pub fn keygen(args: KeygenArgs) -> CmdResult {
    let key = Keypair::generate();
    write_key_file(&args.out, &key, args.force).context("cannot write the key")?;
    eprintln!("wrote {} (keep it secret); public key:", args.out.display());
    println!("{}", key.public());
    Ok(())
}

pub fn run(cmd: KeyCommand) -> CmdResult {
    match cmd {
        KeyCommand::Show { key } => {
            let key = load_key_file(&key).context("cannot read the key")?;
            println!("{}", key.public());
            Ok(())
        }
    }
}
