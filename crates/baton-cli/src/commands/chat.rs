//! `baton chat --agents FILE`: talk to an agent while its tasks run.
//!
//! On a terminal the line editor (reedline) keeps the line being typed
//! intact while answers and task results are printed above it; with a pipe
//! on stdin each line is sent once the agent has answered the one before,
//! and at the end of input the chat waits for running tasks, so a script
//! of inputs gives a complete transcript.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use baton_core::{Event, EventEnvelope, TaskId};
use baton_runtime::{Conversation, Orchestrator};
use baton_scenario::EventCollector;
use reedline::{DefaultPrompt, DefaultPromptSegment, ExternalPrinter, Reedline, Signal};
use tokio::sync::mpsc;

use super::conversation_store;
use super::scenario_files;

/// Arguments of `baton chat`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The agent file (a scenario file's `[agents]` and `[tools]`).
    #[arg(long, value_name = "FILE")]
    pub agents: PathBuf,
    /// The agent to talk to (default: the file's root agent).
    #[arg(long, value_name = "NAME")]
    pub agent: Option<String>,
    /// Use this model for every agent (`openai:gpt-4o-mini`, ...).
    #[arg(long, value_name = "SPEC")]
    pub model: Option<String>,
    /// Keep the conversation under this name and resume it next time.
    #[arg(long, value_name = "NAME")]
    pub session: Option<String>,
    /// The store for `--session`: a SQLite file or a `postgres://` URL
    /// (default: ~/.local/share/baton/sessions.db).
    #[arg(long, value_name = "PATH|URL", requires = "session")]
    pub store: Option<String>,
}

/// What one line of input asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatLine {
    /// Say this to the agent.
    Say(String),
    /// List the tasks.
    Tasks,
    /// Show the task tree.
    Tree,
    /// Cancel a task and its subtree.
    Cancel(TaskId),
    /// Approve a task waiting for approval.
    Approve(TaskId),
    /// Reject a task waiting for approval.
    Reject(TaskId),
    /// List the commands.
    Help,
    /// Leave (a stored session is suspended: its running tasks start again
    /// when it is resumed; otherwise they are cancelled).
    Quit,
    /// Nothing (an empty line).
    Nothing,
    /// A command that is not one, or misused; the text says why.
    Invalid(String),
}

/// Reads one line of input.
pub fn parse_line(line: &str) -> ChatLine {
    let line = line.trim();
    if line.is_empty() {
        return ChatLine::Nothing;
    }
    let Some(command) = line.strip_prefix('/') else {
        return ChatLine::Say(line.to_owned());
    };
    let mut words = command.split_whitespace();
    let name = words.next().unwrap_or_default();
    let task = |words: &mut std::str::SplitWhitespace<'_>, make: fn(TaskId) -> ChatLine| match words
        .next()
        .map(str::parse::<TaskId>)
    {
        Some(Ok(id)) => make(id),
        Some(Err(_)) | None => {
            ChatLine::Invalid(format!("/{name} needs a task id, like /{name} task-3"))
        }
    };
    match name {
        "tasks" => ChatLine::Tasks,
        "tree" => ChatLine::Tree,
        "cancel" => task(&mut words, ChatLine::Cancel),
        "approve" => task(&mut words, ChatLine::Approve),
        "reject" => task(&mut words, ChatLine::Reject),
        "help" => ChatLine::Help,
        "quit" | "exit" => ChatLine::Quit,
        other => ChatLine::Invalid(format!("unknown command /{other}; /help lists them")),
    }
}

const HELP: &str = "commands: /tasks  /tree  /cancel ID  /approve ID  /reject ID  /quit  (anything else is said to the agent)";

type Printer = Box<dyn FnMut(String) + Send>;

/// Starts the chat.
pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let scenario = scenario_files::load(&args.agents)?;
    let name = args.agent.clone().unwrap_or_else(|| scenario.root.clone());
    scenario_files::require_agent(&scenario, &name)?;
    let models = scenario_files::models(args.model.as_deref())?;
    let agent = baton_scenario::agent(&scenario, &name, &models)?;
    let stored = match &args.session {
        Some(session) => {
            let spec = match &args.store {
                Some(spec) => spec.clone(),
                None => conversation_store::default_sessions_path()?
                    .display()
                    .to_string(),
            };
            Some(conversation_store::open(&spec, session)?)
        }
        None => None,
    };

    let interactive = std::io::stdin().is_terminal();
    let running = Arc::new(AtomicUsize::new(0));
    let (lines_tx, lines_rx) = mpsc::unbounded_channel::<String>();
    let printer: Printer = if interactive {
        let external = ExternalPrinter::<String>::default();
        let sender = external.sender();
        let running = running.clone();
        std::thread::spawn(move || {
            let mut editor = Reedline::create().with_external_printer(external);
            loop {
                let label = match running.load(Ordering::Relaxed) {
                    0 => "you".to_owned(),
                    n => format!("you ({n} running)"),
                };
                let prompt = DefaultPrompt::new(
                    DefaultPromptSegment::Basic(label),
                    DefaultPromptSegment::Empty,
                );
                match editor.read_line(&prompt) {
                    Ok(Signal::Success(line)) => {
                        if lines_tx.send(line).is_err() {
                            break;
                        }
                    }
                    // Ctrl-C, Ctrl-D or a closed terminal.
                    Ok(_) | Err(_) => break,
                }
            }
        });
        Box::new(move |text| {
            let _ = sender.send(text);
        })
    } else {
        std::thread::spawn(move || {
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        Box::new(|text| println!("{text}"))
    };

    actix_rt::System::new().block_on(async move {
        let mut builder = Orchestrator::builder(agent);
        let mut _store = None;
        let session = args.session.clone().filter(|_| stored.is_some());
        if let Some(stored) = stored {
            builder = builder.journal(stored.journal);
            if let Some(replay) = stored.resume {
                builder = builder.resume(replay);
            }
            _store = Some(stored.store);
        }
        let convo = builder.spawn();
        let session = Session {
            convo,
            interactive,
            session,
        };
        session.chat(lines_rx, printer, running).await
    })
}

struct Session {
    convo: Conversation,
    interactive: bool,
    /// The stored session's name, if the chat is kept in a store: then
    /// leaving the chat suspends it rather than cancelling its tasks.
    session: Option<String>,
}

impl Session {
    async fn chat(
        self,
        mut lines: mpsc::UnboundedReceiver<String>,
        mut printer: Printer,
        running: Arc<AtomicUsize>,
    ) -> anyhow::Result<ExitCode> {
        let (answered_tx, mut answered) = mpsc::unbounded_channel::<()>();
        let (say_tx, mut say) = mpsc::unbounded_channel::<String>();
        let mut transcript = Transcript::resuming(&self.convo.tasks(), &running);
        let printer_say = say_tx.clone();
        let collector = EventCollector::start(
            self.convo.subscribe(),
            Some(Box::new(move |event: &EventEnvelope| {
                for line in transcript.lines(event, &running) {
                    let _ = printer_say.send(line);
                }
                if transcript.answered(event) {
                    let _ = answered_tx.send(());
                }
            })),
        );
        // All printing goes through one place, in order.
        let print_task = tokio::spawn(async move {
            while let Some(line) = say.recv().await {
                printer(line);
            }
        });

        let mut quit = false;
        while let Some(line) = lines.recv().await {
            match parse_line(&line) {
                ChatLine::Nothing => {}
                ChatLine::Quit => {
                    quit = true;
                    break;
                }
                ChatLine::Help => {
                    let _ = say_tx.send(HELP.to_owned());
                }
                ChatLine::Invalid(why) => {
                    let _ = say_tx.send(why);
                }
                ChatLine::Tasks => {
                    let _ = say_tx.send(self.task_list());
                }
                ChatLine::Tree => {
                    let _ = say_tx.send(self.convo.tree().render().trim_end().to_owned());
                }
                ChatLine::Cancel(id) => {
                    let _ = say_tx.send(outcome(id, "cancel", self.convo.cancel_task(id).await));
                }
                ChatLine::Approve(id) => {
                    let _ = say_tx.send(outcome(id, "approve", self.convo.approve(id).await));
                }
                ChatLine::Reject(id) => {
                    let result = self.convo.reject(id, "rejected in baton chat").await;
                    let _ = say_tx.send(outcome(id, "reject", result));
                }
                ChatLine::Say(text) => {
                    if !self.interactive {
                        let _ = say_tx.send(format!("> {text}"));
                    }
                    while answered.try_recv().is_ok() {}
                    self.convo.send_user(text).await?;
                    if !self.interactive {
                        // A script of inputs: answer each before the next.
                        let _ = answered.recv().await;
                    }
                }
            }
        }
        if !quit && !self.interactive {
            let open = self.convo.registry().running_count();
            if open > 0 {
                let _ = say_tx.send(format!(
                    "(end of input: waiting for {open} running task(s))"
                ));
            }
            self.convo.settled().await?;
        }
        match &self.session {
            // Leaving a stored session keeps its work: running tasks start
            // again when it is resumed.
            Some(session) => {
                // The conversation's own: those below start over with them.
                let open = self
                    .convo
                    .tasks()
                    .iter()
                    .filter(|t| t.parent.is_none() && !t.status.is_terminal())
                    .count();
                self.convo.suspend().await?;
                if open > 0 {
                    let _ = say_tx.send(format!(
                        "({open} running task(s) kept: they start again when you resume with --session {session})"
                    ));
                }
            }
            None => self.convo.shutdown().await?,
        }
        let _ = collector.finish().await;
        drop(say_tx);
        let _ = print_task.await;
        Ok(ExitCode::SUCCESS)
    }

    fn task_list(&self) -> String {
        let tasks = self.convo.tasks();
        if tasks.is_empty() {
            return "no tasks".to_owned();
        }
        tasks
            .iter()
            .map(|t| {
                format!(
                    "{} {} {} (attempt {})",
                    t.id,
                    t.kind.source(),
                    t.status.as_str(),
                    t.attempts
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

fn outcome(
    id: TaskId,
    verb: &str,
    result: Result<baton_core::TaskStatus, baton_runtime::RuntimeError>,
) -> String {
    match result {
        Ok(status) => format!("{id}: {}", status.as_str()),
        Err(e) => format!("cannot {verb} {id}: {e}"),
    }
}

/// Turns the conversation's events into the lines a person reads, and
/// tells when the agent has answered a user message.
#[derive(Default)]
struct Transcript {
    /// Tasks the conversation's own agent started, which it reports on.
    top_level: std::collections::HashSet<TaskId>,
    /// Whether a user message arrived since the agent last went idle.
    heard: bool,
}

impl Transcript {
    /// A transcript that also reports on the conversation's own tasks still
    /// running from an earlier session (they started again on resume,
    /// before this transcript listened).
    fn resuming(tasks: &[baton_core::TaskRecord], running: &AtomicUsize) -> Self {
        let open = tasks.iter().filter(|t| !t.status.is_terminal());
        running.fetch_add(open.clone().count(), Ordering::Relaxed);
        let top_level: std::collections::HashSet<TaskId> =
            open.filter(|t| t.parent.is_none()).map(|t| t.id).collect();
        Self {
            top_level,
            heard: false,
        }
    }

    fn lines(&mut self, envelope: &EventEnvelope, running: &AtomicUsize) -> Vec<String> {
        match &envelope.event {
            Event::AssistantMessage {
                task: None, text, ..
            } => vec![format!("assistant: {text}")],
            Event::TurnFailed {
                task: None, error, ..
            } => vec![format!("(the model failed: {error})")],
            Event::TaskCreated {
                task_id,
                parent,
                kind,
                ..
            } => {
                running.fetch_add(1, Ordering::Relaxed);
                if parent.is_none() {
                    self.top_level.insert(*task_id);
                    vec![format!("[{task_id} {} started]", kind.source())]
                } else {
                    Vec::new()
                }
            }
            Event::ApprovalRequested { task_id } => vec![format!(
                "[{task_id} waits for approval: /approve {task_id} or /reject {task_id}]"
            )],
            Event::TaskFinished { task_id, outcome } => {
                let _ = running
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
                if self.top_level.contains(task_id) {
                    vec![format!(
                        "[{task_id} {}: {}]",
                        outcome.status_word(),
                        outcome.detail()
                    )]
                } else {
                    Vec::new()
                }
            }
            _ => Vec::new(),
        }
    }

    fn answered(&mut self, envelope: &EventEnvelope) -> bool {
        match &envelope.event {
            Event::UserMessage { .. } => {
                self.heard = true;
                false
            }
            Event::Idle { task: None, .. } if self.heard => {
                self.heard = false;
                true
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u64) -> TaskId {
        format!("task-{n}")
            .parse()
            .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn lines_are_messages_or_commands() {
        assert_eq!(parse_line("  hello "), ChatLine::Say("hello".into()));
        assert_eq!(parse_line(""), ChatLine::Nothing);
        assert_eq!(parse_line("/tasks"), ChatLine::Tasks);
        assert_eq!(parse_line("/tree"), ChatLine::Tree);
        assert_eq!(parse_line("/cancel task-3"), ChatLine::Cancel(id(3)));
        assert_eq!(parse_line("/approve task-1"), ChatLine::Approve(id(1)));
        assert_eq!(parse_line("/reject task-2"), ChatLine::Reject(id(2)));
        assert_eq!(parse_line("/quit"), ChatLine::Quit);
        assert!(
            matches!(parse_line("/cancel"), ChatLine::Invalid(why) if why.contains("needs a task id"))
        );
        assert_eq!(
            parse_line("/cancel 3"),
            ChatLine::Cancel(id(3)),
            "a bare number is a task id"
        );
        assert!(matches!(parse_line("/cancel three"), ChatLine::Invalid(_)));
        assert!(
            matches!(parse_line("/dance"), ChatLine::Invalid(why) if why.contains("unknown command /dance"))
        );
    }
}
