//! Where headers come from: the [`HeaderSource`] seam, its JSON-RPC implementation, and
//! [`sync`], which walks a light client up to a block, across reorgs.

use std::future::Future;

use alloy::{consensus::Header, eips::BlockNumberOrTag, primitives::B256, providers::Provider};

use crate::{Event, HeaderError, LightClient, LightClientError, SourceError};

/// A chain's headers, by number or hash, as a node serves them (unverified).
pub trait HeaderSource {
    /// The newest block number.
    fn latest_number(&self) -> impl Future<Output = Result<u64, SourceError>> + Send;
    /// The canonical header at `number` and the hash the source claims for it.
    fn header_by_number(&self, number: u64) -> impl Future<Output = Result<(Header, B256), SourceError>> + Send;
    /// The header with `hash` and the hash the source claims for it.
    fn header_by_hash(&self, hash: B256) -> impl Future<Output = Result<(Header, B256), SourceError>> + Send;
    /// The number and hash of the block the source calls `finalized`, if it has one.
    fn finalized(&self) -> impl Future<Output = Result<Option<(u64, B256)>, SourceError>> + Send;
}

/// Headers over JSON-RPC through an alloy provider.
#[derive(Debug, Clone)]
pub struct RpcHeaderSource<P> {
    provider: P,
}

impl<P> RpcHeaderSource<P> {
    /// Wraps a provider.
    pub fn new(provider: P) -> Self {
        Self { provider }
    }
}

impl<P: Provider + Send + Sync> HeaderSource for RpcHeaderSource<P> {
    async fn latest_number(&self) -> Result<u64, SourceError> {
        self.provider.get_block_number().await.map_err(|e| request("eth_blockNumber", e))
    }

    async fn header_by_number(&self, number: u64) -> Result<(Header, B256), SourceError> {
        let block = self
            .provider
            .get_block_by_number(number.into())
            .await
            .map_err(|e| request("eth_getBlockByNumber", e))?
            .ok_or_else(|| SourceError::NotFound(format!("block {number}")))?;
        Ok((block.header.inner, block.header.hash))
    }

    async fn header_by_hash(&self, hash: B256) -> Result<(Header, B256), SourceError> {
        let block = self
            .provider
            .get_block_by_hash(hash)
            .await
            .map_err(|e| request("eth_getBlockByHash", e))?
            .ok_or_else(|| SourceError::NotFound(format!("block {hash}")))?;
        Ok((block.header.inner, block.header.hash))
    }

    async fn finalized(&self) -> Result<Option<(u64, B256)>, SourceError> {
        let block = self
            .provider
            .get_block_by_number(BlockNumberOrTag::Finalized)
            .await
            .map_err(|e| request("eth_getBlockByNumber(finalized)", e))?;
        Ok(block.map(|b| (b.header.inner.number, b.header.hash)))
    }
}

fn request(what: &str, e: alloy::transports::TransportError) -> SourceError {
    // An answer that does not parse is the node's fault, not the network's: told apart
    // so that it can be counted as bad input.
    if e.is_deser_error() {
        SourceError::Malformed { what: what.into(), reason: e.to_string() }
    } else {
        SourceError::Request { what: what.into(), reason: e.to_string() }
    }
}

/// Feeds `client` the source's headers until its head reaches `target`. When a header
/// does not link to anything the client holds (a reorg), walks back through its
/// ancestors to one it does and inserts that branch oldest first. Returns every event.
pub async fn sync<S: HeaderSource>(
    client: &mut LightClient,
    source: &S,
    target: u64,
) -> Result<Vec<Event>, SourceError> {
    let mut events = Vec::new();
    while client.head().number < target {
        let next = client.head().number + 1;
        let (header, hash) = source.header_by_number(next).await?;
        match client.insert(header.clone(), hash) {
            Ok(new) => events.extend(new),
            Err(LightClientError::Header(HeaderError::UnknownParent { .. })) => {
                let before = client.head().hash();
                events.extend(insert_branch(client, source, header, hash).await?);
                if client.head().hash() == before {
                    // The other branch is not longer (yet): nothing more to do now.
                    break;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(events)
}

/// Walks back from `tip` to a header the client holds, then inserts the branch.
async fn insert_branch<S: HeaderSource>(
    client: &mut LightClient,
    source: &S,
    tip: Header,
    tip_hash: B256,
) -> Result<Vec<Event>, SourceError> {
    let limit = client.config().window;
    let (mut parent, mut number) = (tip.parent_hash, tip.number);
    let mut branch = vec![(tip, tip_hash)];
    loop {
        let known = client.header(&parent).is_some();
        // Stop at a held ancestor. Below finality keep walking while final headers are
        // held, so that a branch forking off the final chain reaches its fork point and
        // shows as the conflict it is rather than as a header that links to nothing.
        let oldest_final = client.fork_choice().final_headers().next().map_or(0, |h| h.number);
        if known || number <= oldest_final || branch.len() > limit {
            break;
        }
        let (header, hash) = source.header_by_hash(parent).await?;
        (parent, number) = (header.parent_hash, header.number);
        branch.push((header, hash));
    }
    let mut events = Vec::new();
    for (header, hash) in branch.into_iter().rev() {
        events.extend(client.insert(header, hash)?);
    }
    Ok(events)
}
