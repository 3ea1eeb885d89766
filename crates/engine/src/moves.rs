//! One process's moves as home sees them: where it is, what move is under way, and what each
//! event makes of that. Pure: the transitions decide, the home supervisor carries out the
//! actions (freezing, streaming, restoring) and reports how each step ended as a new event.
//! The states, with the steps between them, are drawn in docs/engine.md ("A process's
//! moves").
//!
//! Two rules hold in every state. An order is answered exactly once: when its move is done,
//! when it fails, at once if another move is under way (`Busy`) or the process is already
//! there, and with `Ended` if the process ends first. And a failure leaves the process where it
//! was: only a broken remote or link loses it.

use rmosix_wire::MoveError;

/// Where a process is and what move is under way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoveState {
    /// It runs at home.
    Home,
    /// It runs at home while its image goes to node `to` for order `order`.
    Leaving {
        /// The order being carried out.
        order: u64,
        /// The target.
        to: u16,
    },
    /// It runs at node `at`.
    Away {
        /// Its node.
        at: u16,
    },
    /// It runs at node `at`, which was asked for its image, to bring it home (`to` None) or
    /// to pass it on to node `to`; for `order`, or by itself for a call only home can run.
    Called {
        /// Its node.
        at: u16,
        /// The order being carried out, if any.
        order: Option<u64>,
        /// Where it goes.
        to: Option<u16>,
        /// Its first round is in place (in the shell, or at the next node).
        placed: bool,
    },
    /// It ended, or was lost; no event changes that.
    Gone,
}

/// What happened to the process, or how a step the supervisor took for it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An order to move it to node `to` (None: home).
    Order {
        /// The daemon's id of the order.
        order: u64,
        /// Where to.
        to: Option<u16>,
    },
    /// A step of [`Action`] is over.
    Done(Step, Result<(), MoveError>),
    /// Its remote sends a pre-copy first round.
    FirstRound,
    /// Its remote sends its image; `needs_home` when it goes for a call only home can run.
    Going {
        /// Whatever the order said, it must be restored at home.
        needs_home: bool,
    },
    /// Its remote, or the link to it, is gone; or its shell cannot serve it any more.
    Broken(String),
    /// A signal killed its remote; its shell dies the same way.
    Died,
    /// It exited or was killed at home.
    Ended,
}

/// A step the supervisor takes for a move, which reports how it ended with [`Event::Done`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Check the process can move, greet the target and ask the process to stop, in which
    /// the first round starts.
    Leave,
    /// The first round went out (or was skipped, where writes cannot be tracked), and the
    /// process is stopped for its final round; or it did not stop within the bound.
    FirstRoundOut,
    /// The final round (or the whole image) went out and the target runs the process.
    FinalOut,
    /// Greet the next node (if any) and ask the remote for its image.
    Recall,
    /// The remote's first round is in the shell, or at the next node.
    FirstRoundIn,
    /// The image is restored at home.
    Restore,
    /// The image went on to the next node, which runs the process.
    Relay,
}

/// What the supervisor must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Answer an order.
    Answer {
        /// Its id.
        order: u64,
        /// The outcome.
        result: Result<(), MoveError>,
    },
    /// Tell the daemon where the process runs now (None: home).
    Moved(Option<u16>),
    /// Start moving it out to `to` ([`Step::Leave`], then [`Step::FirstRoundOut`]).
    Leave {
        /// The target.
        to: u16,
    },
    /// Freeze it and send the rest of its image to `to` ([`Step::FinalOut`]).
    SendFinal {
        /// The target.
        to: u16,
    },
    /// Ask its remote for its image, greeting `to` first if it moves on ([`Step::Recall`]).
    Recall {
        /// The next node; None: home.
        to: Option<u16>,
    },
    /// Place the remote's first round in the shell ([`Step::FirstRoundIn`]).
    PlaceFirstRound,
    /// Pass the remote's first round on to `to` ([`Step::FirstRoundIn`]).
    RelayFirstRound {
        /// The next node.
        to: u16,
    },
    /// Restore the remote's image into the shell ([`Step::Restore`]).
    Restore,
    /// Pass the remote's image on to `to` ([`Step::Relay`]).
    Relay {
        /// The next node.
        to: u16,
    },
    /// The move failed after the remote was asked: it runs on there. Undo what the shell
    /// took of its image, if anything, and tell the remote.
    Stay {
        /// Why, for the remote's log.
        why: MoveError,
    },
    /// Tell the remote the process ended at home.
    Dismiss,
    /// The process cannot go on: kill its shell, with the reason.
    Lose {
        /// Why.
        why: String,
    },
}

impl MoveState {
    /// The state after `event`, and what to do.
    pub fn on(self, event: Event) -> (MoveState, Vec<Action>) {
        use Action::*;
        use MoveState::*;
        let answer = |order, result| Answer { order, result };
        let answer_if = |order: Option<u64>, result: Result<(), MoveError>| {
            order.map(|order| Answer { order, result })
        };
        match (self, event) {
            (Gone, Event::Order { order, .. }) => {
                (Gone, vec![answer(order, Err(MoveError::Ended))])
            }
            (Gone, _) => (Gone, vec![]),

            // Orders.
            (Home, Event::Order { order, to: None }) => (Home, vec![answer(order, Ok(()))]),
            (
                Home,
                Event::Order {
                    order,
                    to: Some(to),
                },
            ) => (Leaving { order, to }, vec![Leave { to }]),
            (Away { at }, Event::Order { order, to }) if to == Some(at) => {
                (self, vec![answer(order, Ok(()))])
            }
            (Away { at }, Event::Order { order, to }) => (
                Called {
                    at,
                    order: Some(order),
                    to,
                    placed: false,
                },
                vec![Recall { to }],
            ),
            (Leaving { .. } | Called { .. }, Event::Order { order, .. }) => {
                (self, vec![answer(order, Err(MoveError::Busy))])
            }

            // Leaving home.
            (
                Leaving { order, .. },
                Event::Done(Step::Leave | Step::FirstRoundOut | Step::FinalOut, Err(why)),
            ) => (Home, vec![answer(order, Err(why))]),
            (Leaving { .. }, Event::Done(Step::Leave, Ok(()))) => (self, vec![]),
            (Leaving { to, .. }, Event::Done(Step::FirstRoundOut, Ok(()))) => {
                (self, vec![SendFinal { to }])
            }
            (Leaving { order, to }, Event::Done(Step::FinalOut, Ok(()))) => (
                Away { at: to },
                vec![Moved(Some(to)), answer(order, Ok(()))],
            ),
            (Leaving { order, .. }, Event::Ended) => {
                (Gone, vec![answer(order, Err(MoveError::Ended))])
            }

            // Away.
            (Away { at }, Event::Going { .. }) => (
                Called {
                    at,
                    order: None,
                    to: None,
                    placed: false,
                },
                vec![Restore],
            ),
            (Away { .. }, Event::FirstRound) => (
                Gone,
                vec![Lose {
                    why: "its remote sent a first round with no move ordered".to_owned(),
                }],
            ),

            // Called away from its remote.
            (Called { at, order, .. }, Event::Done(Step::Recall, Err(why))) => (
                Away { at },
                answer_if(order, Err(why)).into_iter().collect(),
            ),
            (Called { .. }, Event::Done(Step::Recall, Ok(()))) => (self, vec![]),
            (
                Called {
                    to: None,
                    placed: false,
                    ..
                },
                Event::FirstRound,
            ) => (self, vec![PlaceFirstRound]),
            (
                Called {
                    to: Some(to),
                    placed: false,
                    ..
                },
                Event::FirstRound,
            ) => (self, vec![RelayFirstRound { to }]),
            (Called { at, order, to, .. }, Event::Done(Step::FirstRoundIn, Ok(()))) => (
                Called {
                    at,
                    order,
                    to,
                    placed: true,
                },
                vec![],
            ),
            (
                Called { at, order, to, .. },
                Event::Done(Step::FirstRoundIn | Step::Relay, Err(why)),
            ) => {
                // Only a move on relays; coming home, the shell could not take the round.
                let why = match to {
                    Some(_) => MoveError::RunsOn {
                        at,
                        why: Box::new(why),
                    },
                    None => why,
                };
                let mut actions = vec![Stay { why: why.clone() }];
                actions.extend(answer_if(order, Err(why)));
                (Away { at }, actions)
            }
            (Called { to: Some(to), .. }, Event::Going { needs_home: false }) => {
                (self, vec![Relay { to }])
            }
            (Called { .. }, Event::Going { .. }) => (self, vec![Restore]),
            (Called { order, to, .. }, Event::Done(Step::Restore, Ok(()))) => match (order, to) {
                // It came home for a call that needed home on its way on: it goes on now.
                (Some(order), Some(to)) => (Leaving { order, to }, vec![Moved(None), Leave { to }]),
                (order, _) => (
                    Home,
                    [Moved(None)]
                        .into_iter()
                        .chain(answer_if(order, Ok(())))
                        .collect(),
                ),
            },
            (Called { at, order, .. }, Event::Done(Step::Restore, Err(why))) => {
                let mut actions = vec![Stay { why: why.clone() }];
                actions.extend(answer_if(order, Err(why)));
                (Away { at }, actions)
            }
            (
                Called {
                    order,
                    to: Some(to),
                    ..
                },
                Event::Done(Step::Relay, Ok(())),
            ) => (
                Away { at: to },
                [Moved(Some(to))]
                    .into_iter()
                    .chain(answer_if(order, Ok(())))
                    .collect(),
            ),

            // The end of a remote, whatever was under way.
            (Away { .. } | Called { .. }, Event::Broken(why)) => {
                let order = match self {
                    Called { order, .. } => order,
                    _ => None,
                };
                let mut actions = vec![Lose { why: why.clone() }];
                actions.extend(answer_if(order, Err(MoveError::Lost(why))));
                (Gone, actions)
            }
            (Away { .. } | Called { .. }, Event::Died) => {
                let order = match self {
                    Called { order, .. } => order,
                    _ => None,
                };
                (
                    Home,
                    answer_if(order, Err(MoveError::Ended))
                        .into_iter()
                        .collect(),
                )
            }
            (Away { .. } | Called { .. }, Event::Ended) => {
                let order = match self {
                    Called { order, .. } => order,
                    _ => None,
                };
                let mut actions = vec![Dismiss];
                actions.extend(answer_if(order, Err(MoveError::Ended)));
                (Gone, actions)
            }
            (Home, Event::Ended) => (Gone, vec![]),

            // Anything else cannot happen in this state: a step that no longer matters (its
            // move failed meanwhile), or a remote that broke the protocol.
            (Home | Leaving { .. }, _) | (Away { .. } | Called { .. }, Event::Done(..)) => {
                (self, vec![])
            }
            (Called { .. }, event) => (
                Gone,
                vec![Lose {
                    why: format!("its remote broke the protocol ({event:?} while {self:?})"),
                }],
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;
    use MoveState::*;

    /// Runs `events` from `state`; returns the final state and every action in order.
    fn run(mut state: MoveState, events: Vec<Event>) -> (MoveState, Vec<Action>) {
        let mut all = Vec::new();
        for event in events {
            let (next, actions) = state.on(event);
            state = next;
            all.extend(actions);
        }
        (state, all)
    }

    fn order(order: u64, to: Option<u16>) -> Event {
        Event::Order { order, to }
    }

    fn ok(step: Step) -> Event {
        Event::Done(step, Ok(()))
    }

    fn down(node: u16) -> MoveError {
        MoveError::TargetDown {
            node,
            reason: "no route".into(),
        }
    }

    #[test]
    fn a_move_out_goes_in_two_rounds_and_answers_once() {
        let (state, actions) = run(
            Home,
            vec![
                order(1, Some(2)),
                ok(Step::Leave),
                ok(Step::FirstRoundOut),
                ok(Step::FinalOut),
            ],
        );
        assert_eq!(state, Away { at: 2 });
        assert_eq!(
            actions,
            [
                Leave { to: 2 },
                SendFinal { to: 2 },
                Moved(Some(2)),
                Answer {
                    order: 1,
                    result: Ok(())
                }
            ]
        );
    }

    #[test]
    fn a_failed_move_out_leaves_it_home_with_the_reason() {
        for step in [Step::Leave, Step::FirstRoundOut, Step::FinalOut] {
            let (state, actions) = run(
                Leaving { order: 7, to: 3 },
                vec![Event::Done(step, Err(down(3)))],
            );
            assert_eq!(state, Home, "{step:?}");
            assert_eq!(
                actions,
                [Answer {
                    order: 7,
                    result: Err(down(3))
                }]
            );
        }
    }

    #[test]
    fn a_second_order_during_a_move_is_answered_at_once() {
        for state in [
            Leaving { order: 1, to: 2 },
            Called {
                at: 2,
                order: Some(1),
                to: None,
                placed: false,
            },
        ] {
            let (next, actions) = state.on(order(9, Some(3)));
            assert_eq!(next, state);
            assert_eq!(
                actions,
                [Answer {
                    order: 9,
                    result: Err(MoveError::Busy)
                }]
            );
        }
    }

    #[test]
    fn an_order_to_where_it_runs_is_done_at_once() {
        assert_eq!(
            Home.on(order(1, None)),
            (
                Home,
                vec![Answer {
                    order: 1,
                    result: Ok(())
                }]
            )
        );
        assert_eq!(
            Away { at: 4 }.on(order(2, Some(4))),
            (
                Away { at: 4 },
                vec![Answer {
                    order: 2,
                    result: Ok(())
                }]
            )
        );
    }

    #[test]
    fn coming_home_places_the_first_round_then_restores() {
        let (state, actions) = run(
            Away { at: 2 },
            vec![
                order(5, None),
                ok(Step::Recall),
                Event::FirstRound,
                ok(Step::FirstRoundIn),
                Event::Going { needs_home: false },
                ok(Step::Restore),
            ],
        );
        assert_eq!(state, Home);
        assert_eq!(
            actions,
            [
                Recall { to: None },
                PlaceFirstRound,
                Restore,
                Moved(None),
                Answer {
                    order: 5,
                    result: Ok(())
                }
            ]
        );
    }

    #[test]
    fn a_move_on_relays_and_a_failing_next_node_leaves_it_where_it_was() {
        let (state, actions) = run(
            Away { at: 2 },
            vec![
                order(5, Some(3)),
                ok(Step::Recall),
                Event::FirstRound,
                ok(Step::FirstRoundIn),
                Event::Going { needs_home: false },
                ok(Step::Relay),
            ],
        );
        assert_eq!(state, Away { at: 3 });
        assert_eq!(actions[2], Relay { to: 3 });
        let failed = MoveError::RestoreFailed {
            node: 3,
            reason: "no memory".into(),
        };
        let (state, actions) = run(
            Away { at: 2 },
            vec![
                order(5, Some(3)),
                ok(Step::Recall),
                Event::FirstRound,
                Event::Done(Step::FirstRoundIn, Err(failed.clone())),
            ],
        );
        assert_eq!(state, Away { at: 2 });
        let runs_on = MoveError::RunsOn {
            at: 2,
            why: Box::new(failed),
        };
        assert_eq!(
            actions[2..],
            [
                Stay {
                    why: runs_on.clone()
                },
                Answer {
                    order: 5,
                    result: Err(runs_on)
                }
            ]
        );
    }

    #[test]
    fn a_call_only_home_can_run_brings_it_home_whatever_the_order_then_on() {
        // By itself: restored, no order to answer.
        let (state, actions) = run(
            Away { at: 2 },
            vec![Event::Going { needs_home: true }, ok(Step::Restore)],
        );
        assert_eq!((state, actions), (Home, vec![Restore, Moved(None)]));
        // Ordered on meanwhile: restored at home, then sent on for the same order.
        let (state, actions) = run(
            Away { at: 2 },
            vec![
                order(8, Some(3)),
                ok(Step::Recall),
                Event::Going { needs_home: true },
                ok(Step::Restore),
            ],
        );
        assert_eq!(state, Leaving { order: 8, to: 3 });
        assert_eq!(
            actions,
            [
                Recall { to: Some(3) },
                Restore,
                Moved(None),
                Leave { to: 3 }
            ]
        );
    }

    #[test]
    fn home_that_cannot_restore_leaves_it_at_its_remote() {
        let why = MoveError::HomeCannotHold {
            node: 2,
            reason: "out of memory".into(),
        };
        let (state, actions) = run(
            Away { at: 2 },
            vec![
                order(3, None),
                ok(Step::Recall),
                Event::Going { needs_home: false },
                Event::Done(Step::Restore, Err(why.clone())),
            ],
        );
        assert_eq!(state, Away { at: 2 });
        assert_eq!(
            actions[2..],
            [
                Stay { why: why.clone() },
                Answer {
                    order: 3,
                    result: Err(why)
                }
            ]
        );
    }

    #[test]
    fn an_end_or_a_loss_during_a_move_answers_the_order() {
        let (state, actions) = run(Leaving { order: 1, to: 2 }, vec![Event::Ended]);
        assert_eq!(state, Gone);
        assert_eq!(
            actions,
            [Answer {
                order: 1,
                result: Err(MoveError::Ended)
            }]
        );
        let called = Called {
            at: 2,
            order: Some(4),
            to: None,
            placed: true,
        };
        let (state, actions) = called.on(Event::Broken("link lost".into()));
        assert_eq!(state, Gone);
        assert_eq!(
            actions,
            [
                Lose {
                    why: "link lost".into()
                },
                Answer {
                    order: 4,
                    result: Err(MoveError::Lost("link lost".into()))
                }
            ]
        );
        let (state, actions) = called.on(Event::Ended);
        assert_eq!(state, Gone);
        assert_eq!(actions[0], Dismiss);
        // A gone process answers whatever still comes.
        assert_eq!(
            Gone.on(order(6, None)).1,
            [Answer {
                order: 6,
                result: Err(MoveError::Ended)
            }]
        );
    }

    #[test]
    fn a_remote_that_breaks_the_protocol_loses_only_its_process() {
        let (state, actions) = Away { at: 2 }.on(Event::FirstRound);
        assert_eq!(state, Gone);
        assert!(matches!(actions[..], [Lose { .. }]));
        // A second first round.
        let (state, actions) = run(
            Away { at: 2 },
            vec![
                order(1, None),
                ok(Step::Recall),
                Event::FirstRound,
                ok(Step::FirstRoundIn),
                Event::FirstRound,
            ],
        );
        assert_eq!(state, Gone);
        assert!(matches!(actions.last(), Some(Lose { .. })), "{actions:?}");
        // A step that ended after its move failed changes nothing.
        assert_eq!(Away { at: 2 }.on(ok(Step::Relay)), (Away { at: 2 }, vec![]));
    }
}
