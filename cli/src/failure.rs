//! How a command fails, and the exit code that says so: 0 success; 1 the command ran and
//! found a problem (an audit that fails, a transaction refused); 2 bad usage,
//! configuration or input.

/// A failure that maps to an exit code.
#[derive(Debug)]
pub(crate) enum Failure {
    /// The command ran and the answer is "no" (exit 1).
    Negative(String),
    /// Bad usage, configuration or input (exit 2).
    Usage(anyhow::Error),
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Failure {
        Failure::Usage(e)
    }
}

impl From<ordo_crypto::KeyFileError> for Failure {
    fn from(e: ordo_crypto::KeyFileError) -> Failure {
        Failure::Usage(e.into())
    }
}

impl From<ordo_genesis::GenesisError> for Failure {
    fn from(e: ordo_genesis::GenesisError) -> Failure {
        Failure::Usage(e.into())
    }
}

/// What a command returns.
pub(crate) type CmdResult = Result<(), Failure>;
