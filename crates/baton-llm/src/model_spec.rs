//! [`ModelSpec`]: model strings (`openai:gpt-4o-mini`, `anthropic:…`,
//! `ollama:llama3.1`, `scripted`), parsed in one place and turned into a
//! [`ChatModel`].
//!
//! ```
//! use baton_llm::model_spec::{ModelSpec, Provider};
//! let spec: ModelSpec = "ollama:llama3.1".parse().expect("valid");
//! assert_eq!(spec.provider, Provider::Ollama);
//! assert_eq!(spec.base_url(), Some("http://127.0.0.1:11434/v1".to_string()));
//! let custom: ModelSpec = "openai:qwen2@http://10.0.0.5:8000/v1".parse().expect("valid");
//! assert_eq!(custom.base_url().as_deref(), Some("http://10.0.0.5:8000/v1"));
//! let err = "gemini:pro".parse::<ModelSpec>().expect_err("unknown");
//! assert!(err.to_string().contains("openai, anthropic, ollama"));
//! ```

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::anthropic::AnthropicMessages;
use crate::chat_model::{ChatModel, LlmError};
use crate::http::HttpSettings;
use crate::openai::OpenAiChat;
use crate::secret::ApiKey;

/// A provider a model string may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// OpenAI Chat Completions (`OPENAI_API_KEY`, optional
    /// `OPENAI_BASE_URL`).
    OpenAi,
    /// Anthropic Messages (`ANTHROPIC_API_KEY`, optional
    /// `ANTHROPIC_BASE_URL`).
    Anthropic,
    /// Ollama's OpenAI-compatible API, `http://127.0.0.1:11434/v1`.
    Ollama,
    /// vLLM's OpenAI-compatible server, `http://127.0.0.1:8000/v1`.
    Vllm,
    /// llama.cpp's server, `http://127.0.0.1:8080/v1`.
    LlamaCpp,
    /// LM Studio, `http://127.0.0.1:1234/v1`.
    LmStudio,
    /// The in-process [`ScriptedModel`](crate::ScriptedModel).
    Scripted,
}

impl Provider {
    /// Every provider, in the order error messages list them.
    pub const ALL: [Provider; 7] = [
        Provider::OpenAi,
        Provider::Anthropic,
        Provider::Ollama,
        Provider::Vllm,
        Provider::LlamaCpp,
        Provider::LmStudio,
        Provider::Scripted,
    ];

    /// The prefix in model strings.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::OpenAi => "openai",
            Provider::Anthropic => "anthropic",
            Provider::Ollama => "ollama",
            Provider::Vllm => "vllm",
            Provider::LlamaCpp => "llamacpp",
            Provider::LmStudio => "lmstudio",
            Provider::Scripted => "scripted",
        }
    }

    /// The local server's default base URL, for OpenAI-compatible local
    /// servers.
    pub fn default_local_url(self) -> Option<&'static str> {
        match self {
            Provider::Ollama => Some("http://127.0.0.1:11434/v1"),
            Provider::Vllm => Some("http://127.0.0.1:8000/v1"),
            Provider::LlamaCpp => Some("http://127.0.0.1:8080/v1"),
            Provider::LmStudio => Some("http://127.0.0.1:1234/v1"),
            _ => None,
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

fn known() -> String {
    Provider::ALL
        .iter()
        .map(|p| p.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A parsed model string: `provider:model`, optionally
/// `provider:model@http://host:port/v1` for any OpenAI-compatible server,
/// or `scripted`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelSpec {
    /// The provider.
    pub provider: Provider,
    /// The model name as the provider knows it (empty for `scripted`).
    pub model: String,
    /// A base URL given in the string (`@http…`).
    pub url: Option<String>,
}

/// Why a model string or its model is not usable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModelSpecError {
    /// The provider prefix is not known.
    #[error("unknown model provider `{given}` in `{spec}`; known providers: {known} (e.g. `openai:gpt-4o-mini`, `ollama:llama3.1`, `openai:MODEL@http://host:port/v1`)")]
    UnknownProvider {
        /// The whole string.
        spec: String,
        /// The prefix given.
        given: String,
        /// The known prefixes, comma-separated.
        known: String,
    },
    /// The string is not `provider:model`.
    #[error("invalid model string `{spec}`: {reason}; expected `provider:model` with provider one of {known}")]
    Malformed {
        /// The string.
        spec: String,
        /// What is wrong.
        reason: String,
        /// The known prefixes, comma-separated.
        known: String,
    },
    /// A hosted provider with no key in the environment.
    #[error("{provider} needs an API key: set {var}")]
    MissingApiKey {
        /// The provider.
        provider: Provider,
        /// The environment variable to set.
        var: &'static str,
    },
    /// `scripted` cannot be built from a string alone.
    #[error("the scripted model needs a script: build a ScriptedModel in code")]
    NeedsScript,
    /// The client could not be built.
    #[error(transparent)]
    Client(#[from] LlmError),
}

impl FromStr for ModelSpec {
    type Err = ModelSpecError;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let spec = spec.trim();
        let malformed = |reason: &str| ModelSpecError::Malformed {
            spec: spec.to_string(),
            reason: reason.to_string(),
            known: known(),
        };
        if spec == "scripted" {
            return Ok(ModelSpec {
                provider: Provider::Scripted,
                model: String::new(),
                url: None,
            });
        }
        let (prefix, rest) = spec
            .split_once(':')
            .ok_or_else(|| malformed("no `:` between provider and model"))?;
        let provider = Provider::ALL
            .into_iter()
            .find(|p| p.as_str().eq_ignore_ascii_case(prefix))
            .ok_or_else(|| ModelSpecError::UnknownProvider {
                spec: spec.to_string(),
                given: prefix.to_string(),
                known: known(),
            })?;
        let (model, url) = match rest.split_once("@http") {
            Some((model, url)) => (model, Some(format!("http{url}"))),
            None => (rest, None),
        };
        if model.is_empty() {
            return Err(malformed("the model name is empty"));
        }
        if url.is_some() && matches!(provider, Provider::Scripted) {
            return Err(malformed("a scripted model has no URL"));
        }
        Ok(ModelSpec {
            provider,
            model: model.to_string(),
            url,
        })
    }
}

impl fmt::Display for ModelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.provider == Provider::Scripted {
            return f.write_str("scripted");
        }
        write!(f, "{}:{}", self.provider, self.model)?;
        if let Some(url) = &self.url {
            write!(f, "@{url}")?;
        }
        Ok(())
    }
}

impl ModelSpec {
    /// Parses a model string (same as `str::parse`).
    pub fn parse(spec: &str) -> Result<Self, ModelSpecError> {
        spec.parse()
    }

    /// The base URL this spec will use, before environment overrides
    /// (`None` for the hosted default and `scripted`).
    pub fn base_url(&self) -> Option<String> {
        self.url
            .clone()
            .or_else(|| self.provider.default_local_url().map(str::to_string))
    }

    /// Builds the model with default settings, keys and URLs from the
    /// environment. Streaming is on when `BATON_STREAM=1`.
    pub fn build(&self) -> Result<Arc<dyn ChatModel>, ModelSpecError> {
        let stream = std::env::var("BATON_STREAM").is_ok_and(|v| v == "1" || v == "true");
        self.build_with(HttpSettings::default(), stream)
    }

    /// Builds the model with these settings. Clients of one provider, base
    /// URL and settings share one connection pool and concurrency limit.
    pub fn build_with(
        &self,
        settings: HttpSettings,
        stream: bool,
    ) -> Result<Arc<dyn ChatModel>, ModelSpecError> {
        match self.provider {
            Provider::Scripted => Err(ModelSpecError::NeedsScript),
            Provider::Anthropic => {
                let mut b = AnthropicMessages::builder_from_env(&self.model)
                    .settings(settings)
                    .shared_pool(true)
                    .stream(stream);
                if let Some(url) = &self.url {
                    b = b.base_url(url);
                } else if ApiKey::from_env("ANTHROPIC_API_KEY").is_none()
                    && std::env::var("ANTHROPIC_BASE_URL").is_err()
                {
                    return Err(ModelSpecError::MissingApiKey {
                        provider: Provider::Anthropic,
                        var: "ANTHROPIC_API_KEY",
                    });
                }
                Ok(Arc::new(b.build()?))
            }
            Provider::OpenAi => {
                let mut b = OpenAiChat::builder_from_env(&self.model)
                    .settings(settings)
                    .shared_pool(true)
                    .stream(stream);
                if let Some(url) = &self.url {
                    b = b.base_url(url);
                } else if ApiKey::from_env("OPENAI_API_KEY").is_none()
                    && std::env::var("OPENAI_BASE_URL").is_err()
                {
                    return Err(ModelSpecError::MissingApiKey {
                        provider: Provider::OpenAi,
                        var: "OPENAI_API_KEY",
                    });
                }
                Ok(Arc::new(b.build()?))
            }
            local => {
                let url = self.base_url().unwrap_or_default();
                let mut b = OpenAiChat::builder(&self.model)
                    .provider(local.as_str())
                    .base_url(url)
                    .settings(settings)
                    .shared_pool(true)
                    .stream(stream);
                if let Some(key) = ApiKey::from_env("OPENAI_API_KEY") {
                    b = b.api_key(key);
                }
                Ok(Arc::new(b.build()?))
            }
        }
    }
}

/// Parses `spec` and builds the model from the environment: the one call
/// the runtime and CLI need.
///
/// ```
/// let model = baton_llm::model_from_str("ollama:llama3.1").expect("no key needed");
/// assert_eq!(model.name(), "ollama:llama3.1");
/// ```
pub fn model_from_str(spec: &str) -> Result<Arc<dyn ChatModel>, ModelSpecError> {
    ModelSpec::parse(spec)?.build()
}

/// The model named by `BATON_MODEL` (e.g. `openai:gpt-4o-mini`, with
/// `OPENAI_BASE_URL` pointing at `baton mock-llm`), or `fallback` when it
/// is unset, empty or `scripted`. Examples use this so one binary runs
/// scripted or against a real server.
///
/// ```
/// use baton_llm::{model_from_env_or, ScriptedModel};
/// // With BATON_MODEL unset, the scripted fallback is used.
/// let model = model_from_env_or(ScriptedModel::new());
/// # let _ = model;
/// ```
pub fn model_from_env_or(fallback: impl ChatModel) -> Result<Arc<dyn ChatModel>, ModelSpecError> {
    match std::env::var("BATON_MODEL") {
        Ok(spec) if !spec.trim().is_empty() && spec.trim() != "scripted" => model_from_str(&spec),
        _ => Ok(Arc::new(fallback)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_form() {
        let s = ModelSpec::parse("openai:gpt-4o-mini").expect("valid");
        assert_eq!(
            (s.provider, s.model.as_str(), s.url.as_deref()),
            (Provider::OpenAi, "gpt-4o-mini", None)
        );
        let s = ModelSpec::parse("anthropic:claude-sonnet-4-5").expect("valid");
        assert_eq!(s.provider, Provider::Anthropic);
        let s = ModelSpec::parse("ollama:llama3.1:8b").expect("valid");
        assert_eq!(s.model, "llama3.1:8b");
        assert_eq!(s.base_url().as_deref(), Some("http://127.0.0.1:11434/v1"));
        let s = ModelSpec::parse("openai:m@https://h.example/v1").expect("valid");
        assert_eq!(s.url.as_deref(), Some("https://h.example/v1"));
        assert_eq!(s.to_string(), "openai:m@https://h.example/v1");
        assert_eq!(
            ModelSpec::parse("scripted").expect("valid").provider,
            Provider::Scripted
        );
    }

    #[test]
    fn errors_list_the_known_providers() {
        for bad in ["gpt-4o", "gemini:pro", "openai:"] {
            let err = ModelSpec::parse(bad).expect_err(bad).to_string();
            assert!(
                err.contains("openai, anthropic, ollama, vllm, llamacpp, lmstudio, scripted"),
                "{err}"
            );
        }
        assert!(matches!(
            ModelSpec::parse("scripted").expect("valid").build(),
            Err(ModelSpecError::NeedsScript)
        ));
    }
}
