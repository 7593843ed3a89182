//! A research tree: the lead splits a question into three subtopics, each
//! researcher delegates page fetches to fetchers, and the lead writes the
//! report from what comes back. Prints the events as they happen, then the
//! finished tree.
//!
//! ```text
//! cargo run --example research                                  # scripted, no key
//! cargo run --example research -- --model openai:gpt-4o-mini    # a real model
//! ```
//!
//! By default the scripted model plays every agent, so no API key is
//! needed; `--model` takes any model string `baton_llm::model_from_str`
//! knows (`openai:…`, `anthropic:…`, `ollama:…`, `MODEL@URL`), with keys
//! from the environment.

use std::sync::Arc;
use std::time::{Duration, Instant};

use baton::core::Limits;
use baton::runtime::Supervision;
use baton::{
    Agent, ChatRequest, Event, Message, Orchestrator, ScriptedModel, ScriptedTurn, Tool, ToolError,
    ToolOutput,
};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::json;

const SUBTOPICS: [&str; 3] = ["sun compass", "waggle dance", "magnetic sense"];

#[derive(Deserialize, JsonSchema)]
struct FetchArgs {
    /// The page to fetch.
    url: String,
}

/// Fetches a web page (simulated: 300 ms, canned text).
struct FetchPage;

impl Tool for FetchPage {
    type Args = FetchArgs;

    fn name(&self) -> &str {
        "fetch_page"
    }

    fn description(&self) -> &str {
        "Fetches a web page and returns its text."
    }

    async fn call(&self, args: FetchArgs) -> Result<ToolOutput, ToolError> {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(format!("text of {}", args.url).into())
    }
}

/// The first user message of a request: an agent's task prompt.
fn prompt_of(req: &ChatRequest) -> String {
    req.messages
        .iter()
        .find_map(|m| match m {
            Message::User { content } => Some(content.clone()),
            _ => None,
        })
        .unwrap_or_default()
}

fn results_of(req: &ChatRequest) -> Vec<String> {
    req.messages
        .iter()
        .filter_map(|m| match m {
            Message::TaskResult { outcome, .. } => Some(outcome.detail()),
            _ => None,
        })
        .collect()
}

/// The scripted behaviour of every agent in the tree.
fn script(req: &ChatRequest) -> ScriptedTurn {
    let last = req.messages.last();
    match req.agent.as_str() {
        "lead" => match last {
            Some(Message::User { .. }) => {
                let mut turn = ScriptedTurn::call(
                    "create_task",
                    json!({"agent": "researcher", "prompt": SUBTOPICS[0]}),
                );
                for topic in &SUBTOPICS[1..] {
                    turn = turn.and_call(
                        "create_task",
                        json!({"agent": "researcher", "prompt": topic}),
                    );
                }
                turn.with_text("I'll research three angles in parallel.")
            }
            _ => {
                let results = results_of(req);
                if results.len() < SUBTOPICS.len() {
                    ScriptedTurn::text(format!("{} of 3 findings in.", results.len()))
                } else {
                    ScriptedTurn::text(format!("Report: bees navigate by {}.", results.join("; ")))
                        .after(Duration::from_millis(200))
                }
            }
        },
        "researcher" => {
            let topic = prompt_of(req);
            match last {
                Some(Message::User { .. }) => {
                    let slug = topic.replace(' ', "-");
                    ScriptedTurn::call(
                        "create_task",
                        json!({"agent": "fetcher", "prompt": format!("https://en.example/{slug}")}),
                    )
                    .and_call(
                        "create_task",
                        json!({"agent": "fetcher", "prompt": format!("https://papers.example/{slug}")}),
                    )
                    .after(Duration::from_millis(100))
                }
                _ if results_of(req).len() == 2 => {
                    ScriptedTurn::text(format!("{topic} (2 sources)"))
                        .after(Duration::from_millis(100))
                }
                _ => ScriptedTurn::text("waiting for pages"),
            }
        }
        _ => match last {
            Some(Message::User { content }) => {
                ScriptedTurn::call("fetch_page", json!({ "url": content }))
            }
            Some(Message::Tool { content, .. }) => {
                ScriptedTurn::text(format!("summary of {content}"))
            }
            _ => ScriptedTurn::text("nothing to fetch"),
        },
    }
}

/// The model every agent uses: `--model SPEC`, else the scripted one.
fn chosen_model() -> anyhow::Result<Arc<dyn baton::ChatModel>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().position(|a| a == "--model") {
        Some(i) => {
            let spec = args.get(i + 1).ok_or_else(|| {
                anyhow::anyhow!("--model needs a model string, e.g. openai:gpt-4o-mini")
            })?;
            Ok(baton::llm::model_from_str(spec)?)
        }
        None if args.is_empty() => Ok(Arc::new(ScriptedModel::from_fn(script))),
        None => anyhow::bail!("usage: research [--model PROVIDER:MODEL]"),
    }
}

#[actix::main]
async fn main() -> anyhow::Result<()> {
    let model = chosen_model()?;
    let fetcher = Agent::builder("fetcher")
        .shared_model(model.clone())
        .system_prompt("Fetch the page you are given and summarise it.")
        .tool(FetchPage)
        .build();
    let researcher = Agent::builder("researcher")
        .shared_model(model.clone())
        .system_prompt("Research your subtopic; delegate page fetches to fetchers.")
        .delegates_to([fetcher])
        .supervision(Supervision::retry(2).backoff_ms(200).timeout_s(30))
        .build();
    let lead = Agent::builder("lead")
        .shared_model(model)
        .system_prompt("Split the question into subtopics, delegate them, write the report.")
        .delegates_to([researcher])
        .limits(Limits {
            max_depth: 3,
            max_children: 8,
            max_concurrent: 64,
            max_tokens: 200_000,
        })
        .supervision(Supervision::retry(3).backoff_ms(200).timeout_s(120))
        .build();

    let convo = Orchestrator::start(lead);
    let mut events = convo.subscribe();
    let start = Instant::now();
    let printer = actix::spawn(async move {
        while let Ok(envelope) = events.recv().await {
            let t = start.elapsed().as_secs_f64();
            match envelope.event {
                Event::TaskCreated {
                    task_id,
                    owner,
                    kind,
                    ..
                } => println!("[{t:4.2}s] {owner} → {task_id} {}", kind.source()),
                Event::TaskFinished { task_id, outcome } => {
                    println!("[{t:4.2}s] {task_id} {}", outcome.status_word())
                }
                Event::AssistantMessage {
                    agent,
                    task: None,
                    text,
                    ..
                } => println!("[{t:4.2}s] {agent}: {text}"),
                _ => {}
            }
        }
    });

    convo.send_user("How do honeybees find their way?").await?;
    convo.settled().await?;
    println!(
        "\nThe tree, {:.2} s:\n{}",
        start.elapsed().as_secs_f64(),
        convo.tree().render()
    );
    convo.shutdown().await?;
    printer.abort();
    Ok(())
}
