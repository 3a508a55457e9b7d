//! The task that supervises one guest instance: start it, forward its
//! output, apply its restart policy, and obey the control verbs (`stop`,
//! `restart`, `swap`) sent to its [`Slot`].

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use wasmproc_manifest::{GuestDef, RestartPolicy};

use super::live::{Live, Slot, State};
use super::{Event, Stream, command_for, forward_lines};
use wasmproc_protocol::InboxItem;

use crate::child::Child;
use crate::cluster::HandedOver;
use crate::host::Swapped;
use crate::status::ExitStatus;

/// How long a swap's standby may take to become ready.
pub const SWAP_READY: Duration = Duration::from_secs(10);

/// A control verb for one instance, with where its answer goes.
#[derive(Debug)]
pub enum Control {
    /// Stop it (`shutdown`, then a kill after its grace); it stays stopped
    /// until `restart`.
    Stop(oneshot::Sender<Result<String, String>>),
    /// Stop it if it runs, then start it again at once.
    Restart(oneshot::Sender<Result<String, String>>),
    /// Replace its module, losing no message.
    Swap {
        module: PathBuf,
        drain: Duration,
        reply: oneshot::Sender<Result<Swapped, String>>,
    },
    /// Stop it and start it again with new settings (`reload`).
    Replace {
        def: Box<GuestDef>,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// Stop it and supervise it no more (`reload` without it).
    Remove(oneshot::Sender<Result<String, String>>),
    /// Hand it over to its new instance, guest `id` of node `node` (a
    /// standby there, ready), then let it drain and supervise it no more.
    MoveOut {
        node: String,
        id: u64,
        drain: Duration,
        reply: oneshot::Sender<Result<(Swapped, HandedOver), String>>,
    },
}

/// How one run ended.
enum Ended {
    /// By itself (the restart policy decides what follows).
    Exited(ExitStatus),
    /// The app is shutting down.
    Shutdown(ExitStatus),
    /// A `stop` verb: wait for `restart`.
    Stopped,
    /// A `restart` verb: start again at once.
    Restart,
    /// A `remove`: supervise it no more.
    Removed,
}

/// What a stopped instance does next.
enum Resume {
    /// Start again (with these settings, if they changed).
    Start(Option<Box<GuestDef>>),
    /// Supervise it no more: the app shuts down, or it was removed.
    End,
}

/// Supervise instance `slot` of `def`, started as `first` (or started here
/// when `None`); returns whether its last run exited with code 0.
pub async fn supervise(
    live: Arc<Live>,
    mut def: GuestDef,
    slot: Arc<Slot>,
    first: Option<Child>,
    mut control: mpsc::Receiver<Control>,
) -> bool {
    let name = slot.name.clone();
    let shutdown = live.shutdown.clone();
    let mut short_runs: VecDeque<Instant> = VecDeque::new();
    let mut consecutive_short: u32 = 0;
    let mut attempt: u32 = 0;
    let mut first = first;
    let mut success = false;
    loop {
        let started = Instant::now();
        let child = match first.take() {
            Some(child) => Ok(child),
            None => command_for(&live.host, &def, &name).fork().await,
        };
        let ended = match child {
            Ok(child) => run(&live, &mut def, &slot, child, &mut control, started).await,
            Err(err) => {
                let status = ExitStatus::Failed {
                    reason: format!("{err}"),
                };
                live.emit(Event::Exited {
                    guest: name.clone(),
                    status: status.clone(),
                    uptime: Duration::ZERO,
                })
                .await;
                Ended::Exited(status)
            }
        };
        let status = match ended {
            Ended::Shutdown(status) => {
                slot.set_ended(&status, State::Exited);
                return status.success();
            }
            Ended::Restart => {
                attempt += 1;
                slot.restarted();
                continue;
            }
            Ended::Removed => return success,
            Ended::Stopped => {
                // Stopped on request: wait for `restart` or the app's end.
                match wait_stopped(&live, &name, &mut control).await {
                    Resume::End => return success,
                    Resume::Start(new) => def = new.map_or(def, |d| *d),
                }
                attempt += 1;
                slot.restarted();
                continue;
            }
            Ended::Exited(status) => status,
        };
        let uptime = started.elapsed();
        success = status.success();
        let again = !shutdown.is_cancelled()
            && match def.restart {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => !success,
                RestartPolicy::Always => true,
            };
        if !again {
            slot.set_ended(&status, State::Exited);
            if live.stay_up {
                // A long-lived app keeps the slot: `restart` starts it again.
                match wait_stopped(&live, &name, &mut control).await {
                    Resume::End => return success,
                    Resume::Start(new) => def = new.map_or(def, |d| *d),
                }
                slot.restarted();
                continue;
            }
            return success;
        }
        let now = Instant::now();
        if uptime < def.min_uptime {
            consecutive_short += 1;
            short_runs.push_back(now);
            while short_runs
                .front()
                .is_some_and(|t| now.duration_since(*t) > def.restart_window)
            {
                short_runs.pop_front();
            }
            if short_runs.len() as u32 > def.max_restarts {
                slot.set_ended(&status, State::GaveUp);
                live.emit(Event::GaveUp {
                    guest: name.clone(),
                    restarts: attempt,
                    window: def.restart_window,
                })
                .await;
                if live.stay_up
                    && let Resume::Start(new) = wait_stopped(&live, &name, &mut control).await
                {
                    def = new.map_or(def, |d| *d);
                    short_runs.clear();
                    consecutive_short = 0;
                    slot.restarted();
                    continue;
                }
                return false;
            }
        } else {
            consecutive_short = 0;
        }
        attempt += 1;
        slot.set_ended(&status, State::Restarting);
        let delay = backoff(def.backoff, def.backoff_max, consecutive_short);
        live.emit(Event::Restarting {
            guest: name.clone(),
            attempt,
            delay,
        })
        .await;
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shutdown.cancelled() => return success,
        }
        slot.restarted();
    }
}

/// One run of `child`, until it ends, the app shuts down, or a verb ends it.
async fn run(
    live: &Arc<Live>,
    def: &mut GuestDef,
    slot: &Slot,
    mut child: Child,
    control: &mut mpsc::Receiver<Control>,
    started: Instant,
) -> Ended {
    let name = &slot.name;
    let mut outputs = Vec::new();
    announce(live, slot, &mut child, &mut outputs, def).await;
    let ended = loop {
        tokio::select! {
            status = child.wait() => break Ended::Exited(status),
            Some(item) = child.recv() => live.emit(to_parent(name, item)).await,
            () = live.shutdown.cancelled() => break Ended::Shutdown(child.stop(def.grace).await),
            Some(verb) = control.recv() => match verb {
                Control::Stop(reply) => {
                    let status = stop_run(live, slot, &child, &mut outputs, def.grace, started, State::Stopped).await;
                    let _ = reply.send(Ok(format!("stopped {name}: {status}")));
                    break Ended::Stopped;
                }
                Control::Restart(reply) => {
                    stop_run(live, slot, &child, &mut outputs, def.grace, started, State::Restarting).await;
                    let _ = reply.send(Ok(format!("restarted {name}")));
                    break Ended::Restart;
                }
                Control::Replace { def: new, reply } => {
                    stop_run(live, slot, &child, &mut outputs, def.grace, started, State::Restarting).await;
                    *def = *new;
                    let _ = reply.send(Ok(format!("restarted {name} with its new settings")));
                    break Ended::Restart;
                }
                Control::Remove(reply) => {
                    stop_run(live, slot, &child, &mut outputs, def.grace, started, State::Exited).await;
                    let _ = reply.send(Ok(format!("removed {name}")));
                    break Ended::Removed;
                }
                Control::MoveOut { node, id, drain, reply } => {
                    let Some(cluster) = live.cluster() else {
                        let _ = reply.send(Err("this app is not in a cluster".to_owned()));
                        continue;
                    };
                    let handed = match cluster.hand_over(child.entry(), &node, id).await {
                        Ok(handed) => handed,
                        Err(err) => {
                            let _ = reply.send(Err(err));
                            continue;
                        }
                    };
                    // It finishes what it was delivered; what it does not
                    // take goes back to its senders.
                    let counters = &child.entry().counters;
                    let outstanding = counters.outstanding.load(std::sync::atomic::Ordering::Relaxed);
                    let status = stop_run(live, slot, &child, &mut outputs, drain, started, State::Exited).await;
                    let returned = counters.returned.load(std::sync::atomic::Ordering::Relaxed);
                    live.emit(Event::MovedAway { guest: name.clone(), node: node.clone() }).await;
                    let swapped = Swapped {
                        moved: handed.moved,
                        drained: outstanding.saturating_sub(returned),
                        returned,
                        old_status: status,
                    };
                    let _ = reply.send(Ok((swapped, handed)));
                    break Ended::Removed;
                }
                Control::Swap { module, drain, reply } => {
                    let mut new_def = def.clone();
                    new_def.module = module;
                    let standby = command_for(&live.host, &new_def, name).standby().fork().await;
                    let mut standby = match standby {
                        Ok(standby) => standby,
                        Err(err) => {
                            let _ = reply.send(Err(format!("the new module did not start: {err}")));
                            continue;
                        }
                    };
                    // The standby's output is the guest's from its start.
                    let out = forward_lines(standby.stdout.take(), name, Stream::Stdout, live);
                    let err = forward_lines(standby.stderr.take(), name, Stream::Stderr, live);
                    match live.host.swap(&child, &standby, SWAP_READY, drain).await {
                        Ok(swapped) => {
                            to_parent_left(live, name, &child).await;
                            *def = new_def;
                            child = standby;
                            outputs.extend([out, err]);
                            slot.swapped(&child, def).await;
                            live.emit(Event::Swapped {
                                guest: name.clone(),
                                moved: swapped.moved,
                                drained: swapped.drained,
                                returned: swapped.returned,
                            })
                            .await;
                            let _ = reply.send(Ok(swapped));
                        }
                        Err(error) => {
                            let _ = tokio::join!(out, err);
                            let _ = reply.send(Err(error.to_string()));
                        }
                    }
                }
            },
        }
    };
    if let Ended::Exited(status) | Ended::Shutdown(status) = &ended {
        to_parent_left(live, name, &child).await;
        drain(&mut outputs).await;
        exited(live, name, status, started).await;
    }
    drain(&mut outputs).await;
    ended
}

/// Wait for the readers of an ended instance's stdout and stderr to reach
/// the end of its pipes, so that its last lines come before its end is
/// announced; a reader still going after two seconds (the pipe held open
/// by something else) is left to finish on its own.
async fn drain(outputs: &mut Vec<tokio::task::JoinHandle<()>>) {
    for output in outputs.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(2), output).await;
    }
}

/// Stop a run for a verb: its status, recorded (the instance is now
/// `state`) and announced.
async fn stop_run(
    live: &Live,
    slot: &Slot,
    child: &Child,
    outputs: &mut Vec<tokio::task::JoinHandle<()>>,
    grace: Duration,
    started: Instant,
    state: State,
) -> ExitStatus {
    let status = child.stop(grace).await;
    to_parent_left(live, &slot.name, child).await;
    slot.set_ended(&status, state);
    drain(outputs).await;
    exited(live, &slot.name, &status, started).await;
    status
}

/// Announce what an instance that has ended sent its parent and nobody
/// read yet.
async fn to_parent_left(live: &Live, name: &str, child: &Child) {
    while let Some(item) = child.try_recv() {
        live.emit(to_parent(name, item)).await;
    }
}

/// Record and announce a run that has started.
async fn announce(
    live: &Arc<Live>,
    slot: &Slot,
    child: &mut Child,
    outputs: &mut Vec<tokio::task::JoinHandle<()>>,
    def: &GuestDef,
) {
    slot.running(child, def).await;
    live.emit(Event::Started {
        guest: slot.name.clone(),
        id: child.id().0,
        pid: child.pid(),
    })
    .await;
    outputs.push(forward_lines(
        child.stdout.take(),
        &slot.name,
        Stream::Stdout,
        live,
    ));
    outputs.push(forward_lines(
        child.stderr.take(),
        &slot.name,
        Stream::Stderr,
        live,
    ));
}

/// The event for an item a guest sent its parent.
pub fn to_parent(guest: &str, item: InboxItem) -> Event {
    match item {
        InboxItem::Message {
            request, payload, ..
        } => Event::ToParent {
            guest: guest.to_owned(),
            payload: super::encode_bytes(&payload),
            call: request.is_some(),
        },
        InboxItem::Undeliverable {
            reason,
            payload_len,
            ..
        } => Event::Returned {
            guest: guest.to_owned(),
            reason: reason.to_string(),
            bytes: payload_len,
        },
        other => Event::Returned {
            guest: guest.to_owned(),
            reason: format!("{other:?}"),
            bytes: 0,
        },
    }
}

async fn exited(live: &Live, name: &str, status: &ExitStatus, started: Instant) {
    live.emit(Event::Exited {
        guest: name.to_owned(),
        status: status.clone(),
        uptime: started.elapsed(),
    })
    .await;
}

/// A stopped (or ended) instance waits for `restart` (or new settings, or
/// its removal, or the app's end).
async fn wait_stopped(live: &Live, name: &str, control: &mut mpsc::Receiver<Control>) -> Resume {
    loop {
        tokio::select! {
            () = live.shutdown.cancelled() => return Resume::End,
            verb = control.recv() => match verb {
                None => return Resume::End,
                Some(Control::Restart(reply)) => {
                    let _ = reply.send(Ok(format!("restarted {name}")));
                    return Resume::Start(None);
                }
                Some(Control::Replace { def, reply }) => {
                    let _ = reply.send(Ok(format!("restarted {name} with its new settings")));
                    return Resume::Start(Some(def));
                }
                Some(Control::Remove(reply)) => {
                    let _ = reply.send(Ok(format!("removed {name}")));
                    return Resume::End;
                }
                Some(Control::Stop(reply)) => {
                    let _ = reply.send(Err("it is not running".to_owned()));
                }
                Some(Control::Swap { reply, .. }) => {
                    let _ = reply.send(Err("it is not running: restart it first".to_owned()));
                }
                Some(Control::MoveOut { reply, .. }) => {
                    let _ = reply.send(Err("it is not running: restart it first".to_owned()));
                }
            },
        }
    }
}

/// The delay before a restart: `base` after a stable run, doubling with each
/// consecutive short run, never above `max`.
pub fn backoff(base: Duration, max: Duration, consecutive_short: u32) -> Duration {
    let factor = 2u32.saturating_pow(consecutive_short.saturating_sub(1).min(20));
    base.saturating_mul(factor).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_per_short_run_and_is_capped() {
        let ms = Duration::from_millis;
        let delays: Vec<_> = (0..8).map(|n| backoff(ms(100), ms(1500), n)).collect();
        assert_eq!(
            delays,
            vec![
                ms(100),
                ms(100),
                ms(200),
                ms(400),
                ms(800),
                ms(1500),
                ms(1500),
                ms(1500)
            ]
        );
    }
}
