//! etcd's native gRPC API (`etcdserverpb.KV`): one `Put`, or one `Txn` of puts, per
//! request, over one HTTP/2 connection per member. The messages are the few fields of
//! etcd's `rpc.proto` this workload needs, encoded with prost before the clock starts; a
//! request is answered only after it is committed and applied.

use std::time::Duration;

use anyhow::Context;
use bytes::{Buf, BufMut, Bytes};
use prost::Message;
use tonic::Status;
use tonic::client::Grpc;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Channel, Endpoint};

use super::{EtcdLoad, Request, Sent, member_urls, wait_healthy};

/// `etcdserverpb.PutRequest`: key (1) and value (2); the other fields keep their defaults.
#[derive(Clone, PartialEq, Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// `etcdserverpb.RequestOp` holding a put: its `request` oneof's `request_put` (2), which
/// is encoded as an optional message field is.
#[derive(Clone, PartialEq, Message)]
struct RequestOp {
    #[prost(message, optional, tag = "2")]
    request_put: Option<PutRequest>,
}

/// `etcdserverpb.TxnRequest` with no comparisons, so its `success` ops (2) always apply.
#[derive(Clone, PartialEq, Message)]
struct TxnRequest {
    #[prost(message, repeated, tag = "2")]
    success: Vec<RequestOp>,
}

const PUT: &str = "/etcdserverpb.KV/Put";
const TXN: &str = "/etcdserverpb.KV/Txn";

/// Encodes puts as one request: a plain put for one, a transaction for several.
pub(super) fn encode_request(pairs: &[(Vec<u8>, Vec<u8>)]) -> Request {
    let put = |(k, v): &(Vec<u8>, Vec<u8>)| PutRequest {
        key: k.clone(),
        value: v.clone(),
    };
    let (path, body) = match pairs {
        [one] => (PUT, put(one).encode_to_vec()),
        _ => {
            let txn = TxnRequest {
                success: pairs
                    .iter()
                    .map(|p| RequestOp {
                        request_put: Some(put(p)),
                    })
                    .collect(),
            };
            (TXN, txn.encode_to_vec())
        }
    };
    Request {
        path,
        body: body.into(),
        puts: pairs.len(),
    }
}

/// Sends encoded messages as they are, and skips the answer's message: a unary call that
/// returns `Ok` was answered with status OK, which is all the workload needs.
#[derive(Clone, Copy, Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = ();
    type Encoder = Raw;
    type Decoder = Raw;

    fn encoder(&mut self) -> Raw {
        Raw
    }

    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = ();
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<()>, Status> {
        src.advance(src.remaining());
        Ok(Some(()))
    }
}

/// A channel per member.
pub(super) struct Driver {
    members: Vec<Grpc<Channel>>,
    urls: Vec<String>,
}

impl Driver {
    /// Waits for every member to be healthy, and connects to each.
    pub(super) async fn connect(load: &EtcdLoad) -> anyhow::Result<Driver> {
        let urls = member_urls(load);
        let http = reqwest::Client::new();
        wait_healthy(&urls, |i| super::json::healthy(&http, &urls[i])).await?;
        let mut members = Vec::new();
        for url in &urls {
            let channel = Endpoint::from_shared(url.clone())
                .with_context(|| format!("--etcd {url}"))?
                .connect_timeout(Duration::from_secs(5))
                .connect()
                .await
                .with_context(|| format!("cannot connect to etcd's gRPC API at {url}"))?;
            members.push(Grpc::new(channel));
        }
        Ok(Driver { members, urls })
    }

    pub(super) fn members(&self) -> usize {
        self.members.len()
    }

    /// Sends `req` to `member` once. `Unavailable` (no leader, a connection that broke)
    /// and `ResourceExhausted` (too many requests) may pass later; anything else, a
    /// timeout included, fails.
    pub(super) async fn send(&self, m: usize, req: &Request, timeout: Duration) -> Sent {
        let mut grpc = self.members[m].clone();
        let call = async {
            grpc.ready()
                .await
                .map_err(|e| Status::unavailable(e.to_string()))?;
            let mut request = tonic::Request::new(req.body.clone());
            request.set_timeout(timeout);
            grpc.unary(request, PathAndQuery::from_static(req.path), Raw)
                .await
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(_)) => Sent::Acked,
            Ok(Err(s)) => {
                let e = format!(
                    "{}{}: {}: {}",
                    self.urls[m],
                    req.path,
                    s.code(),
                    s.message()
                );
                match s.code() {
                    tonic::Code::Unavailable | tonic::Code::ResourceExhausted => Sent::Retry(e),
                    _ => Sent::Failed(e),
                }
            }
            Err(_) => Sent::Failed(format!(
                "{}{}: no answer within {} s",
                self.urls[m],
                req.path,
                timeout.as_secs()
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::put_pair;
    use super::*;

    #[test]
    fn a_put_is_etcds_put_request_on_the_wire() {
        let req = encode_request(&[(b"k".to_vec(), b"v".to_vec())]);
        assert_eq!(req.path, PUT);
        // Field 1 (key), length 1, 'k'; field 2 (value), length 1, 'v'.
        assert_eq!(&req.body[..], [0x0a, 1, b'k', 0x12, 1, b'v']);
    }

    #[test]
    fn several_puts_are_one_txn_with_every_put_in_success() {
        let pairs: Vec<_> = (0..5).map(|i| put_pair(0xab, i, 12)).collect();
        let req = encode_request(&pairs);
        assert_eq!((req.path, req.puts), (TXN, 5));
        let txn = TxnRequest::decode(&req.body[..]).expect("decodes");
        assert_eq!(txn.success.len(), 5);
        for (op, (k, v)) in txn.success.iter().zip(&pairs) {
            let put = op.request_put.as_ref().expect("a put");
            assert_eq!((&put.key, &put.value), (k, v));
        }
        // Each op is field 2 of the txn, holding field 2 (request_put) of RequestOp.
        assert_eq!(req.body[0], 0x12);
        assert_eq!(req.body[2], 0x12);
    }
}
