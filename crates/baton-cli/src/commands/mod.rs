//! One module per subcommand, and the pieces they share.

pub mod chat;
pub mod conversation_store;
pub mod live_tree;
pub mod log;
pub mod mock_llm;
pub mod run;
pub mod scenario_files;
pub mod serve;
pub mod test_scenarios;
pub mod validate;
pub mod worker;
pub mod workers;
