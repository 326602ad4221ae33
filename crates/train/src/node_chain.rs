//! [`Chain`] over a node's RPC: what `pazar train worker` uses as a separate process. Reads the
//! job, its members and the live round (typed, `pazar_client::Rpc`); signs each message with
//! the worker's key at the account's current sequence and waits for it to be committed.

use pazar_api::node::{RoundStatus, TxState};
use pazar_api::request::SubmitMode;
use pazar_client::Rpc;
use pazar_types::{Msg, SigningKey};

use crate::worker::{Chain, JobView, WorkerError};

pub struct NodeChain {
    rpc: Rpc,
    key: SigningKey,
    chain_id: String,
    /// The node's block time (`GET /status`), if it answered.
    block_time: Option<std::time::Duration>,
}

fn chain_err(e: impl std::fmt::Display) -> WorkerError {
    WorkerError::Chain(e.to_string())
}

impl NodeChain {
    pub fn new(rpc: Rpc, key: SigningKey) -> Result<NodeChain, WorkerError> {
        let chain_id = rpc.chain_id().map_err(chain_err)?;
        let block_time = rpc
            .status()
            .ok()
            .map(|s| std::time::Duration::from_millis(s.block_time_ms))
            .filter(|t| !t.is_zero());
        Ok(NodeChain {
            rpc,
            key,
            chain_id,
            block_time,
        })
    }

    pub fn rpc(&self) -> &Rpc {
        &self.rpc
    }
}

impl Chain for NodeChain {
    fn view(&mut self, job: u64) -> Result<JobView, WorkerError> {
        let j = self.rpc.train_job(job, false).map_err(chain_err)?.item.job;
        let members = self.rpc.train_members(job).map_err(chain_err)?;
        let round = self.rpc.train_round(job, j.round).map_err(chain_err)?;
        let (works, audits) = match round.status {
            RoundStatus::Live { workers, audits, .. } => (
                workers.into_iter().map(|w| (w.address, w.work)).collect(),
                audits.into_iter().map(|a| (a.target, a.audit)).collect(),
            ),
            RoundStatus::Settled { .. } => (Vec::new(), Vec::new()),
        };
        let previous = match j.round.checked_sub(1) {
            Some(r) => match self.rpc.train_round(job, r).map_err(chain_err)?.status {
                RoundStatus::Settled { record } => record,
                RoundStatus::Live { .. } => None,
            },
            None => None,
        };
        // Read one after the other, these may straddle a block: the worker acts on what it
        // read and reads again next poll; the ledger refuses a step the new state no longer
        // allows.
        Ok(JobView {
            id: job,
            job: j,
            members: members.members.into_iter().map(|m| (m.address, m.member)).collect(),
            works,
            audits,
            height: round.height,
            previous,
        })
    }

    fn block_time(&self) -> Option<std::time::Duration> {
        self.block_time
    }

    fn submit(&mut self, msg: Msg) -> Result<(), WorkerError> {
        let fee = pazar_client::min_fee(&self.rpc, 1).map_err(chain_err)?;
        let bytes = pazar_client::sign(&self.rpc, &self.chain_id, &self.key, vec![msg], fee, "").map_err(chain_err)?;
        let r = self.rpc.submit(&bytes, SubmitMode::Commit).map_err(chain_err)?;
        match r.state {
            TxState::Committed { receipt, .. } if receipt.code == 0 => Ok(()),
            TxState::Committed { receipt, .. } => Err(WorkerError::Chain(format!(
                "{}/{}: {}",
                receipt.codespace, receipt.code, receipt.log
            ))),
            TxState::Pending => Err(WorkerError::Chain("still pending".into())),
            TxState::Dropped { reason } => Err(WorkerError::Chain(format!("dropped: {reason}"))),
            TxState::Refused { error } => Err(WorkerError::Chain(error.message)),
        }
    }
}
