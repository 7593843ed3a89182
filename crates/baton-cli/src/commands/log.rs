//! `baton log STORE [--conversation ID]`: print a stored conversation, its
//! history as readable lines and its task tree, rebuilt from the journal the
//! way a resume rebuilds it (`Replay`).
//!
//! The store is opened for reading only where one exists: a missing file is
//! an error and is not created, and a file or schema that is not a baton
//! store is refused untouched.

use std::fmt::Write as _;

use baton_core::{AgentName, JournalRecord, Message, Replay, TaskTree};
use baton_store::Store;

/// Arguments of `baton log`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The store: an SQLite file (or `sqlite:PATH`), or a PostgreSQL URL
    /// (`postgres://host/db`, optionally `?schema=NAME`).
    #[arg(value_name = "FILE|URL")]
    pub store: String,
    /// The conversation to print. Without it, a store holding one
    /// conversation prints it, and one holding several lists them.
    #[arg(long, value_name = "ID")]
    pub conversation: Option<String>,
    /// Print whole messages instead of one shortened line each.
    #[arg(long)]
    pub full: bool,
    /// Print only the conversation's task table (one line per task, as the
    /// store keeps it), without replaying its log.
    #[arg(long)]
    pub tasks: bool,
}

/// How long a message's line may get before it is shortened.
const LINE_CHARS: usize = 160;

/// Runs the command.
pub async fn run(args: Args) -> anyhow::Result<()> {
    // The store's reads block; keep them off the async workers.
    let text = tokio::task::spawn_blocking(move || render(&args)).await??;
    print!("{text}");
    Ok(())
}

/// Opens the store and renders what `args` asks for.
fn render(args: &Args) -> anyhow::Result<String> {
    // The store's errors name it (a file, or a database and schema).
    let store = baton_store::open_existing(&args.store)?;
    let conversations = store.conversations()?;
    let id = match (&args.conversation, conversations.as_slice()) {
        (Some(id), _) if conversations.contains(id) => id.clone(),
        (Some(id), []) => {
            anyhow::bail!(
                "no conversation `{id}` in {}: it holds none",
                store.location()
            )
        }
        (Some(id), _) => anyhow::bail!(
            "no conversation `{id}` in {}; it holds: {}",
            store.location(),
            conversations.join(", ")
        ),
        (None, []) => return Ok(format!("{}: no conversations yet\n", store.location())),
        (None, [only]) => only.clone(),
        (None, _) => return list(store.as_ref(), &conversations),
    };
    if args.tasks {
        return task_table(store.as_ref(), &id);
    }
    let records = store.read(&id)?;
    Ok(conversation(store.as_ref(), &id, records, args.full))
}

/// A conversation's task table, one task a line: id, parent, owner, what it
/// runs, status, attempts, how long it took, and its outcome's summary.
fn task_table(store: &dyn Store, id: &str) -> anyhow::Result<String> {
    let tasks = store.tasks(id)?;
    let mut out = format!("tasks of {id} in {}: {}\n", store.location(), tasks.len());
    for t in tasks {
        let parent = t.parent.map_or_else(|| "-".to_owned(), |p| p.to_string());
        let took = t
            .finished_at_ms
            .map(|end| format!(" took={} ms", end - t.created_at_ms))
            .unwrap_or_default();
        let outcome = t
            .outcome
            .map(|o| format!(": {}", shorten(&o)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {} parent={parent} owner={} {} {} [{}] attempts={}{took}{outcome}",
            t.id,
            t.owner,
            t.kind,
            t.source,
            t.status.as_str(),
            t.attempts
        );
    }
    Ok(out)
}

/// The conversations of a store, one a line with its record count and its
/// tasks (from the task table).
fn list(store: &dyn Store, conversations: &[String]) -> anyhow::Result<String> {
    let mut out = format!(
        "{}: {} conversations (pick one with --conversation ID)\n",
        store.location(),
        conversations.len()
    );
    for id in conversations {
        let records = store.read(id)?.len();
        let tasks = store.tasks(id)?;
        let open = tasks.iter().filter(|t| !t.status.is_terminal()).count();
        let _ = writeln!(
            out,
            "  {id}  {records} records, {} tasks ({open} not ended)",
            tasks.len()
        );
    }
    Ok(out)
}

/// One conversation: a header, its history, what was accepted but not yet
/// in history, and its task tree.
fn conversation(store: &dyn Store, id: &str, records: Vec<JournalRecord>, full: bool) -> String {
    let count = records.len();
    let replay = Replay::from_records(records);
    let mut out = format!(
        "conversation {id} in {}: {count} records, {} messages, {} tasks\n",
        store.location(),
        replay.history.len(),
        replay.tasks.len()
    );
    out.push_str("\nhistory:\n");
    if replay.history.is_empty() {
        out.push_str("  (empty)\n");
    }
    let width = replay.history.len().to_string().len();
    for (i, message) in replay.history.iter().enumerate() {
        let _ = writeln!(out, "  {:>width$} {}", i + 1, line(message, full));
    }
    if !replay.pending_inputs.is_empty() {
        out.push_str("\naccepted, not yet in history:\n");
        for message in &replay.pending_inputs {
            let _ = writeln!(out, "  - {}", line(message, full));
        }
    }
    out.push_str("\ntasks:\n");
    if replay.tasks.is_empty() {
        out.push_str("  (none)\n");
    } else {
        let root = replay
            .tasks
            .iter()
            .find(|(t, _)| t.parent.is_none())
            .map_or_else(|| AgentName::new(id), |(t, _)| t.owner.clone());
        let tree = TaskTree::from_records(root, replay.tasks.into_iter().map(|(t, _)| t).collect());
        for row in tree.render().lines() {
            let _ = writeln!(out, "  {row}");
        }
    }
    out
}

/// One message as a line: its role, then its text (tool calls as
/// `name(arguments)`).
fn line(message: &Message, full: bool) -> String {
    let (role, body) = match message {
        Message::System { content } => ("system", content.clone()),
        Message::User { content } => ("user", content.clone()),
        Message::Assistant {
            content,
            tool_calls,
        } => {
            let mut parts: Vec<String> = content.iter().cloned().collect();
            parts.extend(
                tool_calls
                    .iter()
                    .map(|c| format!("→ {}({}) [{}]", c.name, c.arguments, c.id)),
            );
            ("assistant", parts.join(" "))
        }
        Message::Tool {
            call_id,
            name,
            content,
            is_error,
        } => {
            let error = if *is_error { " error" } else { "" };
            ("tool", format!("{name} [{call_id}]{error}: {content}"))
        }
        Message::TaskResult {
            task_id,
            source,
            outcome,
        } => (
            "task",
            format!(
                "{task_id} from {source} {}: {}",
                outcome.status_word(),
                outcome.detail()
            ),
        ),
    };
    if full {
        let body = body.replace('\n', "\n              ");
        return format!("{role:<9}  {body}");
    }
    format!("{role:<9}  {}", shorten(&body))
}

/// The text on one line, cut at [`LINE_CHARS`] characters.
fn shorten(text: &str) -> String {
    let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() <= LINE_CHARS {
        return flat;
    }
    let cut: String = flat.chars().take(LINE_CHARS - 1).collect();
    format!("{cut}…")
}

#[cfg(test)]
mod tests {
    use super::*;
    use baton_core::{TaskId, TaskOutcome, ToolCall};

    #[test]
    fn messages_read_as_one_line_each() {
        let call = Message::Assistant {
            content: None,
            tool_calls: vec![ToolCall::new(
                "c1",
                "research",
                serde_json::json!({"topic": "x"}),
            )],
        };
        assert_eq!(
            line(&call, false),
            r#"assistant  → research({"topic":"x"}) [c1]"#
        );
        let result = Message::TaskResult {
            task_id: TaskId::new(2),
            source: "research".into(),
            outcome: TaskOutcome::Succeeded {
                output: "two\nlines".into(),
            },
        };
        assert_eq!(
            line(&result, false),
            "task       task-2 from research succeeded: two lines"
        );
        let long = Message::user("x".repeat(500));
        assert_eq!(line(&long, false).chars().count(), 11 + LINE_CHARS);
        assert_eq!(line(&long, true).chars().count(), 11 + 500);
    }
}
