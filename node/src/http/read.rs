//! `GET /v1/transactions/{id}`, `GET /v1/transactions/{id}/receipt` and
//! `GET /v1/blocks/{height | hash | latest}`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use ordo_api::{
    BlockId, BlockJson, BlockQuery, CommittedTx, ErrorCode, ReceiptStatus, SignedTxJson, TxStatus,
};
use ordo_crypto::Hash;
use ordo_ledger::{Damage, ReceiptLookup};

use super::{Api, ApiError};

fn parse_id(text: &str) -> Result<Hash, ApiError> {
    text.parse::<Hash>()
        .map_err(|_| ApiError::malformed(format!("'{text}' is not a 64-digit hex id")))
}

/// `GET /v1/transactions/{id}`: committed with its proof, or pending here.
pub(super) async fn transaction(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<TxStatus>, ApiError> {
    let id = parse_id(&id)?;
    let store = api.shared.store().clone();
    let found = crate::tasks::spawn_blocking(move || store.tx_with_proof(&id))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::store(&e))?;
    if let Some(inc) = found {
        return Ok(Json(TxStatus::Committed(Box::new(CommittedTx {
            id: inc.id,
            height: inc.height,
            index: inc.index,
            block_hash: inc.block_hash,
            tx_root: inc.tx_root,
            proof: inc.proof,
            transaction: SignedTxJson::from(&inc.tx),
        }))));
    }
    if api.shared.is_pending(&id) {
        return Ok(Json(TxStatus::Pending { id }));
    }
    Err(ApiError::new(
        ErrorCode::NotFound,
        format!("transaction {id} is neither committed nor pending on this node"),
    ))
}

/// `GET /v1/transactions/{id}/receipt`: the receipt once the block is certified.
pub(super) async fn receipt(
    State(api): State<Api>,
    Path(id): Path<String>,
) -> Result<Json<ReceiptStatus>, ApiError> {
    let id = parse_id(&id)?;
    let store = api.shared.store().clone();
    let found = crate::tasks::spawn_blocking(move || store.receipt(&id))
        .await
        .map_err(ApiError::internal)?
        .map_err(|e| ApiError::store(&e))?;
    match found {
        Some(ReceiptLookup::Certified(r)) => Ok(Json(ReceiptStatus::Certified {
            id,
            height: r.header.height,
            receipt: r.to_bytes(),
        })),
        Some(ReceiptLookup::Uncertified { height, certified }) => {
            Ok(Json(ReceiptStatus::Uncertified {
                id,
                height,
                certified,
            }))
        }
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("transaction {id} is not committed on this node"),
        )),
    }
}

/// `GET /v1/blocks/{id}[?txs=false]`.
pub(super) async fn block(
    State(api): State<Api>,
    Path(id): Path<String>,
    query: Result<Query<BlockQuery>, QueryRejection>,
) -> Result<Json<BlockJson>, ApiError> {
    let Query(q) = query?;
    let which: BlockId = id.parse().map_err(ApiError::malformed)?;
    let store = api.shared.store().clone();
    let height = match which {
        BlockId::Latest => Some(api.shared.tip().height),
        BlockId::Height(height) => Some(height),
        BlockId::Hash(_) => None,
    };
    let found = match which {
        BlockId::Hash(hash) => {
            crate::tasks::spawn_blocking(move || store.block_by_hash(&hash)).await
        }
        _ => {
            let height = height.unwrap_or(0);
            crate::tasks::spawn_blocking(move || store.block(height)).await
        }
    }
    .map_err(ApiError::internal)?
    .map_err(|e| {
        if let Some(height) = height.filter(|_| e.is_damage()) {
            api.shared.storage().report([Damage::Block {
                height,
                what: e.to_string(),
            }]);
        }
        ApiError::store(&e)
    })?;
    match found {
        Some(b) => Ok(Json(BlockJson::new(
            &b,
            &b.hash(),
            &b.tx_ids(),
            q.txs.unwrap_or(true),
        ))),
        None => Err(ApiError::new(
            ErrorCode::NotFound,
            format!("no block {id} on this node"),
        )),
    }
}
