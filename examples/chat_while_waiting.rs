//! The user asks for a long research task, keeps chatting while it runs,
//! and gets answers at once; the research result joins the conversation
//! when it lands. Prints the transcript as it happens.
//!
//! ```text
//! cargo run --example chat_while_waiting
//! BATON_MODEL=openai:gpt-4o-mini cargo run --example chat_while_waiting   # a real model
//! ```
//!
//! With `BATON_MODEL` set (any model string, e.g. pointed at
//! `baton mock-llm --script crates/baton-testkit/scripts/chat_while_waiting.json`),
//! the agent talks to that model instead of the scripted one.

use std::time::{Duration, Instant};

use baton::{
    Agent, Event, Message, Orchestrator, ScriptedModel, ScriptedTurn, Tool, ToolError, ToolOutput,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct ResearchArgs {
    /// What to research.
    topic: String,
}

/// A research job that takes three seconds.
struct DeepResearch;

impl Tool for DeepResearch {
    type Args = ResearchArgs;

    fn name(&self) -> &str {
        "deep_research"
    }

    fn description(&self) -> &str {
        "Researches a topic in depth. Slow: runs in the background."
    }

    async fn call(&self, args: ResearchArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_secs(3)).await;
        Ok(format!(
            "{}: honeybees visit about 2 million flowers to make 1 lb of honey.",
            args.topic
        )
        .into())
    }
}

#[actix::main]
async fn main() -> anyhow::Result<()> {
    let model = baton::llm::model_from_env_or(ScriptedModel::new().script(
        "assistant",
        [
            ScriptedTurn::call("deep_research", json!({"topic": "honeybees"})),
            ScriptedTurn::text("I've started the research; I'll tell you when it's in."),
            ScriptedTurn::text("Paris is about 20°C and sunny right now."),
            ScriptedTurn::text("2 + 2 = 4."),
            ScriptedTurn::text(
                "The research is in: honeybees visit about 2 million flowers per pound of honey.",
            ),
        ],
    ))?;
    let agent = Agent::builder("assistant")
        .shared_model(model)
        .system_prompt("You are helpful. Use deep_research for research questions.")
        .background_tool(DeepResearch)
        .build();
    let convo = Orchestrator::start(agent);

    let start = Instant::now();
    let mut events = convo.subscribe();
    let printer = actix::spawn(async move {
        while let Ok(envelope) = events.recv().await {
            let t = start.elapsed().as_secs_f64();
            match envelope.event {
                Event::UserMessage { text } => println!("[{t:4.1}s] user:      {text}"),
                Event::AssistantMessage { text, .. } => println!("[{t:4.1}s] assistant: {text}"),
                Event::TaskCreated { task_id, kind, .. } => {
                    println!("[{t:4.1}s]   · {task_id} started ({})", kind.source())
                }
                Event::TaskFinished { task_id, outcome } => {
                    println!("[{t:4.1}s]   · {task_id} {}", outcome.status_word())
                }
                _ => {}
            }
        }
    });

    convo
        .send_user("Research honeybees for me, please.")
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    convo
        .send_user("Meanwhile: what's the weather in Paris?")
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    convo.send_user("And what is 2 + 2?").await?;
    convo.settled().await?;
    let history = convo.history().await?;
    convo.shutdown().await?;
    // Let the printer drain the last events.
    tokio::time::sleep(Duration::from_millis(50)).await;
    printer.abort();

    println!("\nThe conversation's history, as the model sees it:");
    for message in history.messages() {
        let role = match message {
            Message::System { .. } => "system",
            Message::User { .. } => "user",
            Message::Assistant { .. } => "assistant",
            Message::Tool { .. } => "tool",
            Message::TaskResult { .. } => "task result",
        };
        let calls: Vec<String> = message
            .tool_calls()
            .iter()
            .map(|c| format!("{}({})", c.name, c.arguments))
            .collect();
        let text = message
            .text()
            .unwrap_or_else(|| format!("calls {}", calls.join(", ")));
        println!("  {role:>11}: {}", text.replace('\n', " "));
    }
    Ok(())
}
