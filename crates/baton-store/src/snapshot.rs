//! Snapshots: a conversation's state at a point of its journal, so that a
//! resume reads the latest snapshot and the records after it instead of the
//! whole journal.
//!
//! A snapshot is itself a list of [`JournalRecord`]s: the shortest this
//! module knows whose replay is the replay of the journal up to that point
//! ([`compact`]). So `Replay::from_records(snapshot ++ later records)` is the
//! replay of the whole journal, and `baton_core` needs nothing new. What a
//! snapshot drops: duplicate completions, a finished task's separate
//! `TaskFinished` (its record carries the outcome), superseded records of a
//! task created again, and the text of inputs already in history.
//!
//! A snapshot holds the conversation's state, so it grows with the history;
//! what it bounds is the part of a resume that grows with the *log*: the
//! number of rows read, and records that no longer matter.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use baton_core::{JournalRecord, Message, Replay, TaskId, TaskStatus};

use crate::error::{StoreError, StoreLocation};

/// How often a journal snapshots its conversation unless told otherwise:
/// every this many records appended through it.
pub const DEFAULT_SNAPSHOT_EVERY: u64 = 100_000;

/// A conversation's latest snapshot (the sequence number it covers and its
/// records, none for `0`) and the records after it, with the sequence
/// number of the last one.
#[derive(Debug, Default)]
pub(crate) struct Stored {
    pub(crate) snapshot_seq: i64,
    pub(crate) snapshot: Vec<JournalRecord>,
    pub(crate) tail: Vec<JournalRecord>,
    pub(crate) last_seq: i64,
}

impl Stored {
    /// The conversation's replay.
    pub(crate) fn replay(self) -> Replay {
        Replay::from_records(self.snapshot.into_iter().chain(self.tail))
    }

    /// The snapshot to write, if there are records after the latest one:
    /// the sequence number it covers, its JSON text and its length.
    pub(crate) fn next_snapshot(
        self,
        location: &StoreLocation,
        conversation: &str,
    ) -> Result<Option<(i64, String, u64)>, StoreError> {
        if self.last_seq <= self.snapshot_seq {
            return Ok(None);
        }
        let seq = self.last_seq;
        let records = compact(&self.replay());
        let text = serde_json::to_string(&records).map_err(|e| StoreError::Unencodable {
            location: location.clone(),
            conversation: conversation.to_owned(),
            message: e.to_string(),
        })?;
        Ok(Some((seq, text, records.len() as u64)))
    }
}

/// The most JSON an `events` row holds, in bytes (1 MiB): an append whose
/// records encode to more is split over several rows, so however many
/// records a burst of task results holds, its rows stay far under what one
/// value may hold (PostgreSQL 1 GiB, SQLite 10⁹ bytes). A single record
/// larger than this is a row of its own (refused if it passes the
/// backend's limit: see `Backend::max_row_bytes`).
pub const MAX_ROW_BYTES: usize = 1 << 20;

/// One `events` row as encoded: its JSON text and how many records it
/// holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Row {
    pub(crate) count: usize,
    pub(crate) text: String,
}

/// Encodes one append's records as the text of `events` rows, in order:
/// one row unless they pass `max` bytes, then as many as needed, each
/// holding the next records that fit (at least one). A row's text is a JSON
/// object for one record (as rows were before appends shared a row), a
/// JSON array for more. Each row's `seq` is its last record's number, so
/// sequence numbers still count records.
pub(crate) fn encode_rows(
    records: &[JournalRecord],
    max: usize,
) -> Result<Vec<Row>, serde_json::Error> {
    match records {
        [] => return Ok(Vec::new()),
        [one] => {
            return Ok(vec![Row {
                count: 1,
                text: serde_json::to_string(one)?,
            }])
        }
        _ => {}
    }
    let mut rows = Vec::new();
    let mut json = Vec::with_capacity(records.len().saturating_mul(128).min(max) + 2);
    json.push(b'[');
    let mut count = 0;
    for record in records {
        let start = json.len();
        if count > 0 {
            json.push(b',');
        }
        serde_json::to_writer(&mut json, record)?;
        count += 1;
        // With its closing bracket, the row would pass the limit: it ends
        // before this record, which starts the next one.
        if count > 1 && json.len() + 1 > max {
            let mut next = Vec::with_capacity(json.len() - start + 1);
            next.push(b'[');
            next.extend_from_slice(&json[start + 1..]);
            json.truncate(start);
            rows.push(finish_row(json, count - 1));
            json = next;
            count = 1;
        }
    }
    rows.push(finish_row(json, count));
    Ok(rows)
}

/// Closes a row's JSON array: an object instead for a single record.
fn finish_row(mut json: Vec<u8>, count: usize) -> Row {
    if count == 1 {
        json.remove(0);
    } else {
        json.push(b']');
    }
    Row {
        count,
        // serde_json writes UTF-8 only.
        text: String::from_utf8(json)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    }
}

/// Decodes one `events` row (see [`encode_rows`]) onto `out`.
pub(crate) fn decode_row(
    location: &StoreLocation,
    conversation: &str,
    seq: i64,
    text: &str,
    out: &mut Vec<JournalRecord>,
) -> Result<(), StoreError> {
    let malformed = |e: serde_json::Error| StoreError::Malformed {
        location: location.clone(),
        conversation: conversation.to_owned(),
        seq,
        message: e.to_string(),
    };
    if text.trim_start().starts_with('[') {
        let records: Vec<JournalRecord> = serde_json::from_str(text).map_err(malformed)?;
        out.extend(records);
    } else {
        out.push(serde_json::from_str(text).map_err(malformed)?);
    }
    Ok(())
}

/// Decodes a stored snapshot (a JSON array of records).
pub(crate) fn decode_snapshot(
    location: &StoreLocation,
    conversation: &str,
    seq: i64,
    text: &str,
) -> Result<Vec<JournalRecord>, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Malformed {
        location: location.clone(),
        conversation: conversation.to_owned(),
        seq,
        message: format!("its snapshot does not parse: {e}"),
    })
}

/// When a journal takes its snapshots: once at least `every` records
/// *and* as many records as its latest snapshot holds have been appended
/// since it, one at a time. So the records after a snapshot never
/// outnumber the larger of the two (a resume reads at most about twice the
/// conversation's state), and writing snapshots costs, all told, a constant
/// times the records appended rather than growing with the square of them.
#[derive(Debug, Default)]
pub(crate) struct Trigger {
    since: AtomicU64,
    last_size: AtomicU64,
    running: AtomicBool,
}

impl Trigger {
    /// Counts `n` more records; whether a snapshot is due now (`every` 0:
    /// never). A due snapshot must be followed by [`Trigger::taken`].
    pub(crate) fn count(&self, n: u64, every: u64) -> bool {
        let since = self.since.fetch_add(n, Ordering::Relaxed) + n;
        let needed = every.max(self.last_size.load(Ordering::Relaxed));
        if every == 0 || since < needed || self.running.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.since.store(0, Ordering::Relaxed);
        true
    }

    /// The snapshot is written (`Some(its length)`) or was not.
    pub(crate) fn taken(&self, size: Option<u64>) {
        if let Some(size) = size {
            self.last_size.store(size, Ordering::Relaxed);
        }
        self.running.store(false, Ordering::Release);
    }
}

/// A snapshot taken: the sequence number it covers and its size in records.
pub(crate) type Taken = Option<(i64, u64)>;

/// What a backend's journal needs to append and snapshot: the store (to take
/// snapshots with), its writer, its place and its threshold.
pub(crate) struct JournalTarget<'a, S> {
    /// The store, cloned into the snapshot thread when one is due.
    pub store: &'a S,
    /// Takes a snapshot of a conversation in `store`.
    pub take: fn(&S, &str) -> Result<Taken, StoreError>,
    /// The store's group-commit writer.
    pub writer: &'a crate::writer::GroupWriter,
    /// Where the store lives, for messages.
    pub location: &'a StoreLocation,
    /// Snapshot every this many records (0: never).
    pub every: u64,
}

/// Appends `records` to `conversation` through the store's writer and, when
/// `trigger` says one is due, snapshots the conversation on a thread of its
/// own. The one `Journal::append` of every backend.
pub(crate) fn append_journaled<S: Clone + Send + 'static>(
    target: JournalTarget<'_, S>,
    trigger: &Arc<Trigger>,
    conversation: &str,
    records: Vec<JournalRecord>,
) -> futures::future::BoxFuture<'static, Result<(), baton_core::JournalError>> {
    let due = trigger.count(records.len() as u64, target.every);
    let done = target.writer.journal_append(conversation, records);
    if due {
        let (store, owned, take) = (target.store.clone(), conversation.to_owned(), target.take);
        spawn_snapshot(trigger, target.location, conversation, move || {
            take(&store, &owned)
        });
    }
    done
}

/// Takes a snapshot on a thread of its own, so the appender does not wait;
/// a failure is logged (the journal is complete without it).
pub(crate) fn spawn_snapshot(
    trigger: &Arc<Trigger>,
    location: &StoreLocation,
    conversation: &str,
    take: impl FnOnce() -> Result<Option<(i64, u64)>, StoreError> + Send + 'static,
) {
    let done = Arc::clone(trigger);
    let spawned = std::thread::Builder::new()
        .name("baton-store-snapshot".into())
        .spawn(move || match take() {
            Ok(taken) => done.taken(taken.map(|(_, size)| size)),
            Err(error) => {
                tracing::warn!(%error, "snapshot failed");
                done.taken(None);
            }
        });
    if let Err(error) = spawned {
        trigger.taken(None);
        tracing::warn!(%error, store = %location, conversation, "cannot start a snapshot thread");
    }
}

/// Records whose replay equals `replay`, and which replay, followed by any
/// later records of the same journal, as the whole journal would.
///
/// It assumes what the runtime guarantees: every user message in history
/// came from a `UserInput` record.
pub fn compact(replay: &Replay) -> Vec<JournalRecord> {
    let mut out = Vec::with_capacity(replay.history.len() * 2 + replay.tasks.len());
    // Inputs already folded count (the replay skips that many), but their
    // text is in history: an empty placeholder each. Then the pending ones.
    let folded_users = replay
        .history
        .iter()
        .filter(|m| matches!(m, Message::User { .. }))
        .count();
    out.extend((0..folded_users).map(|_| JournalRecord::UserInput {
        text: String::new(),
    }));
    for message in &replay.pending_inputs {
        if let Message::User { content } = message {
            out.push(JournalRecord::UserInput {
                text: content.clone(),
            });
        }
    }
    out.extend(
        replay
            .history
            .iter()
            .map(|m| JournalRecord::Appended { message: m.clone() }),
    );
    // Results not yet in history must be finished again, in their order, on
    // a task that is not finished yet; every other task is its last record.
    let pending_results: Vec<(TaskId, &baton_core::TaskOutcome)> = replay
        .pending_inputs
        .iter()
        .filter_map(|m| match m {
            Message::TaskResult {
                task_id, outcome, ..
            } => Some((*task_id, outcome)),
            _ => None,
        })
        .collect();
    let last_of: HashMap<TaskId, usize> = replay
        .tasks
        .iter()
        .enumerate()
        .map(|(i, (t, _))| (t.id, i))
        .collect();
    for (i, (task, arguments)) in replay.tasks.iter().enumerate() {
        let reopen = last_of.get(&task.id) == Some(&i)
            && pending_results.iter().any(|(id, _)| *id == task.id);
        let mut task = task.clone();
        if reopen {
            task.status = TaskStatus::Running;
            task.outcome = None;
        }
        out.push(JournalRecord::TaskCreated {
            task,
            arguments: arguments.clone(),
        });
    }
    out.extend(
        pending_results
            .into_iter()
            .map(|(task_id, outcome)| JournalRecord::TaskFinished {
                task_id,
                outcome: outcome.clone(),
                attempts: None,
            }),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{TaskKind, TaskOutcome, TaskRecord};
    use proptest::prelude::*;

    fn task(id: u64, parent: Option<u64>) -> TaskRecord {
        TaskRecord {
            id: TaskId::new(id),
            parent: parent.map(TaskId::new),
            owner: "lead".into(),
            kind: TaskKind::Tool {
                tool: format!("tool{}", id % 3),
            },
            status: TaskStatus::Running,
            created_ms: id,
            finished_ms: None,
            outcome: None,
            attempts: 1,
            tokens: 0,
            call: None,
        }
    }

    /// One step of a run, as the runtime could journal it.
    #[derive(Debug, Clone)]
    enum Step {
        /// The user says something.
        Input,
        /// The oldest accepted input enters history.
        FoldInput,
        /// The model answers.
        Answer,
        /// A task is created (a sub-task of an earlier one, or not).
        Create { parent: Option<usize> },
        /// A task is created again (a resume restarting it).
        Recreate(usize),
        /// A task finishes (perhaps a second time).
        Finish(usize, bool),
        /// The oldest finished root task's result enters history.
        FoldResult,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Input),
            Just(Step::FoldInput),
            Just(Step::Answer),
            proptest::option::of(0usize..8).prop_map(|parent| Step::Create { parent }),
            (0usize..8).prop_map(Step::Recreate),
            ((0usize..8), any::<bool>()).prop_map(|(t, ok)| Step::Finish(t, ok)),
            Just(Step::FoldResult),
        ]
    }

    /// Turns steps into a journal a runtime could have written: user
    /// messages only for inputs accepted, results folded only once known.
    fn journal(steps: &[Step]) -> Vec<JournalRecord> {
        let mut out = Vec::new();
        let mut inputs = 0usize;
        let mut folded = 0usize;
        let mut tasks: Vec<TaskRecord> = Vec::new();
        let mut finished: Vec<usize> = Vec::new();
        for s in steps {
            match s {
                Step::Input => {
                    inputs += 1;
                    out.push(JournalRecord::UserInput {
                        text: format!("input {inputs}"),
                    });
                }
                Step::FoldInput if folded < inputs => {
                    folded += 1;
                    out.push(JournalRecord::Appended {
                        message: Message::user(format!("input {folded}")),
                    });
                }
                Step::Answer => out.push(JournalRecord::Appended {
                    message: Message::assistant(format!("answer {}", out.len())),
                }),
                Step::Create { parent } => {
                    let id = tasks.len() as u64 + 1;
                    let parent = parent.and_then(|p| tasks.get(p)).map(|t| t.id.get());
                    let t = task(id, parent);
                    tasks.push(t.clone());
                    out.push(JournalRecord::TaskCreated {
                        task: t,
                        arguments: Some(format!("{{\"n\":{id}}}")),
                    });
                }
                Step::Recreate(i) => {
                    if let Some(t) = tasks.get(*i) {
                        if !finished.contains(i) {
                            let mut again = t.clone();
                            again.attempts += 1;
                            out.push(JournalRecord::TaskStarted {
                                task_id: t.id,
                                attempt: again.attempts + 1,
                            });
                            out.push(JournalRecord::TaskCreated {
                                task: again,
                                arguments: None,
                            });
                        }
                    }
                }
                Step::Finish(i, ok) => {
                    if let Some(t) = tasks.get(*i) {
                        if !finished.contains(i) {
                            finished.push(*i);
                        }
                        let outcome = if *ok {
                            TaskOutcome::Succeeded {
                                output: format!("result {i} {}", out.len()),
                            }
                        } else {
                            TaskOutcome::Failed { error: "no".into() }
                        };
                        out.push(JournalRecord::TaskFinished {
                            task_id: t.id,
                            outcome,
                            attempts: Some(*i as u32 % 3 + 1),
                        });
                    }
                }
                Step::FoldResult => {
                    // Fold what a replay says is pending, oldest first.
                    let replay = Replay::from_records(out.clone());
                    if let Some(m) = replay
                        .pending_inputs
                        .into_iter()
                        .find(|m| matches!(m, Message::TaskResult { .. }))
                    {
                        out.push(JournalRecord::Appended { message: m });
                    }
                }
                Step::FoldInput => {}
            }
        }
        out
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        /// Cut anywhere, snapshot the prefix: snapshot + the rest replays
        /// as the whole journal, and the snapshot alone as the prefix.
        #[test]
        fn a_snapshot_and_the_rest_replay_as_the_whole(
            steps in proptest::collection::vec(step(), 0..80),
            cut in any::<proptest::sample::Index>(),
        ) {
            let records = journal(&steps);
            let at = cut.index(records.len() + 1);
            let prefix = Replay::from_records(records[..at].to_vec());
            let snapshot = compact(&prefix);
            prop_assert!(snapshot.len() <= at, "{} records for {}", snapshot.len(), at);
            prop_assert_eq!(&Replay::from_records(snapshot.clone()), &prefix);
            let mut resumed = snapshot;
            resumed.extend_from_slice(&records[at..]);
            prop_assert_eq!(
                Replay::from_records(resumed),
                Replay::from_records(records)
            );
        }
    }

    proptest! {
        /// However an append's records are sized, its rows hold them all,
        /// in order, each within the limit unless it holds one record (an
        /// object then, as a one-record row always was), and a row ends
        /// only where the next record would not have fit.
        #[test]
        fn rows_hold_an_append_in_order_within_the_limit(
            sizes in proptest::collection::vec(0usize..300, 0..40),
            max in 1usize..1200,
        ) {
            let records: Vec<JournalRecord> = sizes
                .iter()
                .map(|n| JournalRecord::UserInput { text: "é".repeat(*n) })
                .collect();
            let rows = encode_rows(&records, max).unwrap();
            let location = StoreLocation::File("rows.db".into());
            let mut back = Vec::new();
            let mut seq = 0;
            for (i, row) in rows.iter().enumerate() {
                prop_assert!(row.count >= 1);
                seq += row.count;
                let before = back.len();
                decode_row(&location, "c", seq as i64, &row.text, &mut back).unwrap();
                prop_assert_eq!(back.len() - before, row.count);
                prop_assert!(row.count == 1 || row.text.len() <= max, "{} > {}", row.text.len(), max);
                prop_assert_eq!(row.count == 1, row.text.starts_with('{'));
                if let Some(next) = rows.get(i + 1) {
                    let first = serde_json::to_string(&records[seq]).unwrap();
                    // As an array (brackets added to a lone record's
                    // object), with a comma and the next record.
                    let array = row.text.len() + if row.count == 1 { 2 } else { 0 };
                    prop_assert!(array + 1 + first.len() > max);
                    prop_assert!(next.count >= 1);
                }
            }
            prop_assert_eq!(back, records.clone());
            if let [one] = records.as_slice() {
                prop_assert_eq!(&rows[0].text, &serde_json::to_string(one).unwrap());
            }
            prop_assert_eq!(
                rows.len() == 1 && rows[0].count > 1,
                records.len() > 1 && serde_json::to_string(&records).unwrap().len() <= max
            );
            if rows.len() == 1 && rows[0].count > 1 {
                prop_assert_eq!(&rows[0].text, &serde_json::to_string(&records).unwrap());
            }
        }
    }

    #[test]
    fn snapshots_come_every_so_many_records_and_no_more_often_than_their_size() {
        let t = Trigger::default();
        assert!(!t.count(99, 100));
        assert!(t.count(1, 100), "100 records");
        assert!(!t.count(500, 100), "one at a time");
        t.taken(Some(300));
        assert!(t.count(1, 100), "500 records came while it ran");
        t.taken(Some(300));
        assert!(
            !t.count(299, 100),
            "not before as many as the last one held"
        );
        assert!(t.count(1, 100));
        t.taken(None);
        assert!(!t.count(10_000, 0), "0: never");
    }

    #[test]
    fn duplicates_and_finished_tasks_shrink() {
        let records = vec![
            JournalRecord::UserInput { text: "go".into() },
            JournalRecord::Appended {
                message: Message::user("go"),
            },
            JournalRecord::TaskCreated {
                task: task(1, None),
                arguments: None,
            },
            JournalRecord::TaskFinished {
                task_id: TaskId::new(1),
                outcome: TaskOutcome::Succeeded { output: "r".into() },
                attempts: Some(2),
            },
            JournalRecord::TaskFinished {
                task_id: TaskId::new(1),
                outcome: TaskOutcome::Succeeded {
                    output: "dup".into(),
                },
                attempts: Some(3),
            },
            JournalRecord::Appended {
                message: Message::TaskResult {
                    task_id: TaskId::new(1),
                    source: "tool1".into(),
                    outcome: TaskOutcome::Succeeded { output: "r".into() },
                },
            },
        ];
        let replay = Replay::from_records(records.clone());
        let snapshot = compact(&replay);
        assert_eq!(snapshot.len(), 4, "{snapshot:?}");
        assert_eq!(Replay::from_records(snapshot), replay);
    }
}
