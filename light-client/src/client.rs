//! The light client of one chain: verification, fork choice and the checkpoint store
//! tied together.

use alloy::{consensus::Header, primitives::B256};
use tracing::{debug, warn};

use crate::{
    CheckpointStore, Event, Finality, ForkChoice, HeaderRules, LightClientError, SafetyFault, SealedHeader,
    fork_choice::Placement,
    verify::{self, Position},
};

/// How one chain's light client behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LightClientConfig {
    /// The chain's EIP-155 id.
    pub chain_id: u64,
    /// Header rules.
    pub rules: HeaderRules,
    /// When headers become final.
    pub finality: Finality,
    /// Most non-final headers held.
    pub window: usize,
    /// Final headers kept in memory and in the store (for conflict detection).
    pub history: usize,
}

impl LightClientConfig {
    /// Ethereum's rules, `confirmations` deep finality, a 1024-header window and 256
    /// headers of history.
    pub fn new(chain_id: u64, confirmations: u64) -> Self {
        Self {
            chain_id,
            rules: HeaderRules::ethereum(),
            finality: Finality::Confirmations(confirmations),
            window: 1024,
            history: 256,
        }
    }
}

/// One chain's light client.
#[derive(Debug)]
pub struct LightClient {
    config: LightClientConfig,
    fork: ForkChoice,
    store: Option<CheckpointStore>,
    halted: Option<SafetyFault>,
}

impl LightClient {
    /// A client that trusts `checkpoint` (genesis, or a header checked out of band) and
    /// keeps its state in memory only.
    pub fn new(config: LightClientConfig, checkpoint: SealedHeader) -> Self {
        let fork = ForkChoice::new(checkpoint, [], config.finality, config.window, config.history);
        Self { config, fork, store: None, halted: None }
    }

    /// A client backed by `store`: it resumes from the stored final headers and halted
    /// state if there are any, and otherwise starts from `checkpoint` and stores it.
    pub fn open(
        config: LightClientConfig,
        store: CheckpointStore,
        checkpoint: SealedHeader,
    ) -> Result<Self, LightClientError> {
        let (fork, halted) = match store.load(config.chain_id, config.history)? {
            Some(mut saved) => {
                let Some(cursor) = saved.finals.pop() else {
                    return Err(crate::StoreError::Corrupt { what: "checkpoint", reason: "no headers".into() }.into());
                };
                debug!(chain_id = config.chain_id, number = cursor.number, "resuming light client from store");
                (ForkChoice::new(cursor, saved.finals, config.finality, config.window, config.history), saved.halted)
            }
            None => {
                store.commit_finalized(config.chain_id, std::slice::from_ref(&checkpoint), config.history as u64)?;
                (ForkChoice::new(checkpoint, [], config.finality, config.window, config.history), None)
            }
        };
        Ok(Self { config, fork, store: Some(store), halted })
    }

    /// The chain id.
    pub fn chain_id(&self) -> u64 {
        self.config.chain_id
    }

    /// The configuration.
    pub fn config(&self) -> &LightClientConfig {
        &self.config
    }

    /// The canonical head.
    pub fn head(&self) -> &SealedHeader {
        self.fork.head()
    }

    /// The newest final header.
    pub fn finalized(&self) -> &SealedHeader {
        self.fork.finalized()
    }

    /// A header the client holds (non-final or recent final).
    pub fn header(&self, hash: &B256) -> Option<&SealedHeader> {
        self.fork.get(hash)
    }

    /// Whether `hash` is a final header (among those in memory).
    pub fn is_final(&self, hash: &B256) -> bool {
        self.fork.is_final(hash)
    }

    /// The fork choice, for questions about the window.
    pub fn fork_choice(&self) -> &ForkChoice {
        &self.fork
    }

    /// The fault that halted the chain, if any.
    pub fn halted(&self) -> Option<&SafetyFault> {
        self.halted.as_ref()
    }

    /// Verifies `header` (claimed to hash to `hash`) and adds it; returns what changed.
    pub fn insert(&mut self, header: Header, hash: B256) -> Result<Vec<Event>, LightClientError> {
        if let Some(fault) = &self.halted {
            return Err(LightClientError::Halted { chain_id: self.config.chain_id, fault: fault.clone() });
        }
        let sealed = verify::seal(header, hash)?;
        let events = match self.fork.locate(&sealed)? {
            Placement::Known => return Ok(vec![]),
            Placement::Extends { parent, starts_branch } => {
                verify::check_against_parent(parent, &sealed, &self.config.rules, Position { starts_branch })?;
                self.fork.attach(sealed)?
            }
            Placement::ConflictsWithFinal { parent, final_hash } => {
                // Only a header that is valid on top of the final chain proves a conflict.
                let position = Position { starts_branch: true };
                verify::check_against_parent(parent, &sealed, &self.config.rules, position)?;
                let fault = SafetyFault {
                    chain_id: self.config.chain_id,
                    number: sealed.number,
                    final_hash,
                    conflicting_hash: sealed.hash(),
                };
                return Err(self.halt(fault));
            }
        };
        self.persist(&events)?;
        Ok(events)
    }

    /// Marks `hash` (a canonical header) and its ancestors final: for chains whose
    /// finality is the `finalized` tag.
    pub fn finalize(&mut self, hash: B256) -> Result<Vec<Event>, LightClientError> {
        if let Some(fault) = &self.halted {
            return Err(LightClientError::Halted { chain_id: self.config.chain_id, fault: fault.clone() });
        }
        let events = self.fork.finalize_hash(hash)?;
        self.persist(&events)?;
        Ok(events)
    }

    fn persist(&self, events: &[Event]) -> Result<(), LightClientError> {
        let finals: Vec<SealedHeader> =
            events.iter().filter_map(|e| if let Event::Finalized(h) = e { Some(h.clone()) } else { None }).collect();
        if let Some(store) = &self.store {
            store.commit_finalized(self.config.chain_id, &finals, self.config.history as u64)?;
        }
        Ok(())
    }

    fn halt(&mut self, fault: SafetyFault) -> LightClientError {
        warn!(chain_id = fault.chain_id, number = fault.number, final_hash = %fault.final_hash, conflicting = %fault.conflicting_hash, "safety fault: halting chain");
        if let Some(store) = &self.store
            && let Err(e) = store.halt(&fault)
        {
            warn!(error = %e, "could not persist the halt");
        }
        self.halted = Some(fault.clone());
        LightClientError::SafetyFault(fault)
    }
}
