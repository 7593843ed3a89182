//! Tools a model can call.
//!
//! Implement [`Tool`] with a typed argument struct; its JSON schema is derived
//! from the type with `schemars`, never written by hand. The runtime holds
//! tools as [`DynTool`] trait objects, which parse the model's JSON text
//! into the typed arguments and turn a parse failure into a
//! [`ToolError::InvalidArguments`] the model sees.

use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::FutureExt;
use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// What a model is offered for one tool: name, description and the JSON
/// schema of its parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ToolSpec {
    /// The name the model calls it by.
    pub name: String,
    /// What it does, for the model.
    pub description: String,
    /// The JSON schema (an object schema) of its arguments.
    pub parameters: serde_json::Value,
}

impl ToolSpec {
    /// A spec whose parameter schema is derived from `A`.
    pub fn for_args<A: JsonSchema>(
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters: schema_for::<A>(),
        }
    }
}

/// The JSON schema of `A`, inlined (no `$ref`s) and without the `$schema`
/// and `title` keys that providers do not want in tool parameters.
pub fn schema_for<A: JsonSchema>() -> serde_json::Value {
    let schema = schemars::generate::SchemaSettings::draft07()
        .with(|s| s.inline_subschemas = true)
        .into_generator()
        .into_root_schema_for::<A>();
    let mut value = schema.to_value();
    if let Some(obj) = value.as_object_mut() {
        obj.remove("$schema");
        obj.remove("title");
    }
    value
}

/// A tool's result, as the text the model will read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ToolOutput(pub String);

impl ToolOutput {
    /// A result serialized as JSON text.
    pub fn json<T: Serialize>(value: &T) -> Result<Self, ToolError> {
        serde_json::to_string(value)
            .map(ToolOutput)
            .map_err(|e| ToolError::Failed(format!("result is not serializable: {e}")))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<String> for ToolOutput {
    fn from(s: String) -> Self {
        ToolOutput(s)
    }
}

impl From<&str> for ToolOutput {
    fn from(s: &str) -> Self {
        ToolOutput(s.to_owned())
    }
}

/// Why a tool call produced no result. The `Display` text is what the model
/// reads in the error tool message, so it says what to do differently.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ToolError {
    /// The model called a tool this agent does not have.
    #[error("unknown tool `{name}`; available tools: {available}")]
    UnknownTool {
        /// The name the model used.
        name: String,
        /// The tools it could have called, comma-separated.
        available: String,
    },
    /// The arguments did not parse into the tool's argument type.
    #[error("invalid arguments for `{tool}`: {reason}")]
    InvalidArguments {
        /// The tool called.
        tool: String,
        /// The parser's message.
        reason: String,
    },
    /// The tool ran and failed.
    #[error("{0}")]
    Failed(String),
    /// The tool did not finish within its time limit.
    #[error("`{tool}` timed out after {after_ms} ms")]
    TimedOut {
        /// The tool called.
        tool: String,
        /// The limit, in milliseconds.
        after_ms: u64,
    },
    /// The tool panicked; the panic was caught.
    #[error("`{tool}` panicked: {message}")]
    Panicked {
        /// The tool called.
        tool: String,
        /// The panic payload, if it was text.
        message: String,
    },
    /// The call was abandoned (the user interrupted the turn).
    #[error("`{tool}` was interrupted: {reason}")]
    Interrupted {
        /// The tool called.
        tool: String,
        /// Why.
        reason: String,
    },
}

/// An async tool with typed arguments.
///
/// ```
/// use baton_core::{Tool, ToolError, ToolOutput};
/// use schemars::JsonSchema;
/// use serde::Deserialize;
///
/// #[derive(Deserialize, JsonSchema)]
/// struct Args { city: String }
///
/// struct GetWeather;
///
/// impl Tool for GetWeather {
///     type Args = Args;
///     fn name(&self) -> &str { "get_weather" }
///     fn description(&self) -> &str { "Current weather in a city." }
///     async fn call(&self, args: Args) -> Result<ToolOutput, ToolError> {
///         Ok(format!("sunny in {}", args.city).into())
///     }
/// }
/// ```
pub trait Tool: Send + Sync + 'static {
    /// The argument type; its JSON schema is what the model is offered.
    type Args: DeserializeOwned + JsonSchema + Send + 'static;

    /// The name the model calls it by.
    fn name(&self) -> &str;

    /// What the tool does, for the model.
    fn description(&self) -> &str;

    /// Runs the tool.
    fn call(&self, args: Self::Args) -> impl Future<Output = Result<ToolOutput, ToolError>> + Send;

    /// Whether running the tool twice with the same arguments is harmless.
    /// A background call that was running when the process stopped is
    /// started again on resume only if its tool is idempotent; otherwise it
    /// ends as `Interrupted` and the model is told. Default: `true`.
    fn idempotent(&self) -> bool {
        true
    }
}

/// The object-safe form of [`Tool`] that the runtime stores and calls.
pub trait DynTool: Send + Sync + 'static {
    /// The spec offered to the model.
    fn spec(&self) -> ToolSpec;

    /// The tool's name.
    fn tool_name(&self) -> &str;

    /// Whether the tool may safely run twice (see [`Tool::idempotent`]).
    fn is_idempotent(&self) -> bool;

    /// Parses `arguments` (the model's JSON text) and, if they parse, returns
    /// the future that runs the tool.
    fn prepare(
        self: Arc<Self>,
        arguments: &str,
    ) -> Result<BoxFuture<'static, Result<ToolOutput, ToolError>>, ToolError>;
}

impl<T: Tool> DynTool for T {
    fn spec(&self) -> ToolSpec {
        ToolSpec::for_args::<T::Args>(self.name(), self.description())
    }

    fn tool_name(&self) -> &str {
        self.name()
    }

    fn is_idempotent(&self) -> bool {
        self.idempotent()
    }

    fn prepare(
        self: Arc<Self>,
        arguments: &str,
    ) -> Result<BoxFuture<'static, Result<ToolOutput, ToolError>>, ToolError> {
        // Models send "" for a call without arguments; treat it as `{}`.
        let text = if arguments.trim().is_empty() {
            "{}"
        } else {
            arguments
        };
        let args: T::Args =
            serde_json::from_str(text).map_err(|e| ToolError::InvalidArguments {
                tool: self.name().to_owned(),
                reason: e.to_string(),
            })?;
        Ok(async move { self.call(args).await }.boxed())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize, JsonSchema)]
    struct EchoArgs {
        /// What to echo.
        text: String,
    }

    struct Echo;

    impl Tool for Echo {
        type Args = EchoArgs;
        fn name(&self) -> &str {
            "echo"
        }
        fn description(&self) -> &str {
            "Echoes its input."
        }
        async fn call(&self, args: EchoArgs) -> Result<ToolOutput, ToolError> {
            Ok(args.text.into())
        }
    }

    #[test]
    fn spec_schema_is_derived_from_the_args_type() {
        let spec = Echo.spec();
        assert_eq!(spec.name, "echo");
        assert_eq!(spec.parameters["type"], "object");
        assert_eq!(spec.parameters["properties"]["text"]["type"], "string");
        assert_eq!(spec.parameters["required"], serde_json::json!(["text"]));
        assert!(spec.parameters.get("$schema").is_none());
    }

    #[tokio::test]
    async fn prepare_runs_with_valid_arguments() {
        let fut = Arc::new(Echo).prepare(r#"{"text":"hi"}"#).unwrap();
        assert_eq!(fut.await.unwrap().as_str(), "hi");
    }

    #[test]
    fn invalid_arguments_become_a_tool_error() {
        let err = match Arc::new(Echo).prepare(r#"{"txt": 1"#) {
            Err(e) => e,
            Ok(_) => panic!("should not parse"),
        };
        assert!(matches!(err, ToolError::InvalidArguments { ref tool, .. } if tool == "echo"));
        assert!(err.to_string().starts_with("invalid arguments for `echo`"));
    }
}
