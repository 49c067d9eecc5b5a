//! Recruiter: the run's door to worker nodes. It starts the run's cluster node, watches the
//! rollout and verifier process groups that `ractor_cluster` mirrors from joined nodes, and
//! gives each remote worker that appears a proxy in the matching pool — so a node that joins
//! mid-run takes jobs from the next one on. Rollout workers of launched engine ranks join a
//! group of their own: their proxies have them load each version from the run's weight group. When a node leaves or dies its workers leave the
//! groups; their proxies are stopped and the pool re-queues whatever they held.

use std::collections::HashMap;
use std::time::Duration;

use ractor::pg::GroupChangeMessage;
use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};

use super::broadcast::BroadcastMsg;
use super::pool::PoolMsg;
use super::proxy::{ProxyArgs, RolloutProxy, VerifierProxy};
use super::rollout::RolloutWorker;
use super::verifier::VerifierWorker;
use super::wire::{RemoteMsg, ROLLOUT_GROUP, SYNCED_ROLLOUT_GROUP, VERIFIER_GROUP};
use crate::cluster::{start_node, Listen};

/// Start-up arguments of the recruiter.
pub struct RecruiterArgs {
    /// Where to listen, and the secret.
    pub listen: Listen,
    /// The rollout pool remote rollout workers join.
    pub rollout: ActorRef<PoolMsg<RolloutWorker>>,
    /// The verifier pool remote verifier workers join.
    pub verifiers: ActorRef<PoolMsg<VerifierWorker>>,
    /// Where remote rollout workers get weights.
    pub broadcaster: ActorRef<BroadcastMsg>,
    /// A remote rollout worker's set-up message.
    pub rollout_setup: Vec<u8>,
    /// A remote verifier worker's set-up message.
    pub verifier_setup: Vec<u8>,
    /// Longest one verify call may take, for jobs a verifier proxy scores itself.
    pub verifier_timeout: Duration,
    /// The run's weights go only to its launched engine ranks (a ZeRO-3 learner sends them as
    /// it gathers them): rollout workers of plain worker nodes are turned away.
    pub weights_only_at_engine_ranks: bool,
}

/// State of the recruiter.
pub struct RecruiterState {
    args: RecruiterArgs,
    /// Proxy of each remote worker, by the remote worker's id.
    proxies: HashMap<ActorId, ActorCell>,
}

/// The recruiter takes no messages: it acts on process-group changes.
#[derive(ractor_cluster::RactorMessage)]
pub enum RecruiterMsg {}

/// The recruiter actor.
pub struct Recruiter;

impl RecruiterState {
    async fn adopt(&mut self, group: &str, remote: ActorCell) {
        if remote.get_id().is_local() || self.proxies.contains_key(&remote.get_id()) {
            return;
        }
        let id = remote.get_id();
        let remote: ActorRef<RemoteMsg> = remote.into();
        let a = &self.args;
        if group == ROLLOUT_GROUP && a.weights_only_at_engine_ranks {
            tracing::warn!(
                "{group}: remote worker {id} not adopted: this run's ZeRO-3 learner sends its weights only to the run's launched engine ranks (`rlvr.vllm_num_engines`), as it gathers them"
            );
            return;
        }
        let proxy = if group == ROLLOUT_GROUP || group == SYNCED_ROLLOUT_GROUP {
            let proxy = RolloutProxy {
                broadcaster: a.broadcaster.clone(),
                synced: group == SYNCED_ROLLOUT_GROUP,
            };
            let args = ProxyArgs {
                remote,
                setup: a.rollout_setup.clone(),
                pool: a.rollout.clone(),
            };
            Actor::spawn_linked(None, proxy, args, a.rollout.get_cell())
                .await
                .map(|(p, _)| {
                    let cell = p.get_cell();
                    a.rollout
                        .send_message(PoolMsg::Adopt(p))
                        .map(|_| cell)
                        .map_err(|e| e.to_string())
                })
        } else {
            let args = ProxyArgs {
                remote,
                setup: a.verifier_setup.clone(),
                pool: a.verifiers.clone(),
            };
            let proxy = VerifierProxy {
                timeout: a.verifier_timeout,
            };
            Actor::spawn_linked(None, proxy, args, a.verifiers.get_cell())
                .await
                .map(|(p, _)| {
                    let cell = p.get_cell();
                    a.verifiers
                        .send_message(PoolMsg::Adopt(p))
                        .map(|_| cell)
                        .map_err(|e| e.to_string())
                })
        };
        match proxy {
            Ok(Ok(cell)) => {
                tracing::info!("{group}: remote worker {id} takes jobs");
                self.proxies.insert(id, cell);
            }
            Ok(Err(e)) => tracing::info!("{group}: remote worker {id} not adopted: {e}"),
            Err(e) => tracing::info!("{group}: remote worker {id} could not be set up: {e}"),
        }
    }
}

impl Actor for Recruiter {
    type Msg = RecruiterMsg;
    type State = RecruiterState;
    type Arguments = RecruiterArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<RecruiterMsg>,
        args: RecruiterArgs,
    ) -> Result<RecruiterState, ActorProcessingErr> {
        let (addr, cookie) = (args.listen.addr, args.listen.cookie.clone());
        let name = format!("rlvr-run-{}", std::process::id());
        start_node(name, addr, cookie, "run", Some(myself.get_cell()))
            .await
            .map_err(|e| format!("{e:#}"))?;
        tracing::info!("run: worker nodes can join at {addr} (rlvr worker --join {addr})");
        let mut state = RecruiterState {
            args,
            proxies: HashMap::new(),
        };
        for group in [ROLLOUT_GROUP, SYNCED_ROLLOUT_GROUP, VERIFIER_GROUP] {
            ractor::pg::monitor(group.to_string(), myself.get_cell());
            for member in ractor::pg::get_members(&group.to_string()) {
                state.adopt(group, member).await;
            }
        }
        Ok(state)
    }

    async fn handle_supervisor_evt(
        &self,
        _myself: ActorRef<RecruiterMsg>,
        event: SupervisionEvent,
        state: &mut RecruiterState,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Join(_, group, members)) => {
                for member in members {
                    state.adopt(&group, member).await;
                }
            }
            SupervisionEvent::ProcessGroupChanged(GroupChangeMessage::Leave(_, group, members)) => {
                for member in members {
                    if let Some(proxy) = state.proxies.remove(&member.get_id()) {
                        tracing::info!("{group}: remote worker {} left", member.get_id());
                        // Kill, not stop: a proxy waiting on its dead worker's reply must
                        // not finish that wait first.
                        proxy.kill();
                    }
                }
            }
            // The cluster node is the only child: without it no worker can join.
            SupervisionEvent::ActorFailed(_, e) => return Err(format!("cluster node failed: {e}").into()),
            SupervisionEvent::ActorTerminated(_, _, why) => {
                return Err(format!("cluster node stopped: {}", why.unwrap_or_default()).into())
            }
            _ => {}
        }
        Ok(())
    }
}
