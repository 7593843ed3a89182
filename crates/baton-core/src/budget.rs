//! Budgets that keep a delegation tree from running away.

use serde::{Deserialize, Serialize};

/// The limits of one conversation's tree. Set them on the conversation's
/// agent; they apply to the whole tree.
///
/// The default limits depth to 8 and leaves the rest unbounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// How deep the tree may grow: the conversation is depth 0, its
    /// sub-agents depth 1, and so on.
    pub max_depth: u32,
    /// How many tasks one agent may create.
    pub max_children: u32,
    /// How many tasks of the tree may run at once; the rest wait as
    /// `Pending`, first come first served.
    pub max_concurrent: u32,
    /// How many tokens the whole tree may use.
    pub max_tokens: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_depth: 8,
            max_children: u32::MAX,
            max_concurrent: u32::MAX,
            max_tokens: u64::MAX,
        }
    }
}

/// Which budget refused something, with its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "budget", rename_all = "snake_case")]
pub enum BudgetExceeded {
    /// A delegation would make the tree deeper than allowed.
    #[error("the delegation depth budget is {limit}: this agent may not delegate further")]
    Depth {
        /// The limit.
        limit: u32,
    },
    /// The agent has created as many tasks as it may.
    #[error("the budget of {limit} tasks per agent is used up")]
    Children {
        /// The limit.
        limit: u32,
    },
    /// The tree has used its tokens.
    #[error("the tree's token budget of {limit} is used up ({used} used)")]
    Tokens {
        /// The limit.
        limit: u64,
        /// Tokens used so far.
        used: u64,
    },
}

impl Limits {
    /// Whether an agent at `depth` may delegate (its child would be at
    /// `depth + 1`).
    pub fn check_depth(&self, depth: u32) -> Result<(), BudgetExceeded> {
        if depth + 1 > self.max_depth {
            Err(BudgetExceeded::Depth {
                limit: self.max_depth,
            })
        } else {
            Ok(())
        }
    }

    /// Whether an agent that has created `created` tasks may create another.
    pub fn check_children(&self, created: u32) -> Result<(), BudgetExceeded> {
        if created >= self.max_children {
            Err(BudgetExceeded::Children {
                limit: self.max_children,
            })
        } else {
            Ok(())
        }
    }

    /// Whether the tree, having used `used` tokens, may send another request.
    pub fn check_tokens(&self, used: u64) -> Result<(), BudgetExceeded> {
        if used >= self.max_tokens {
            Err(BudgetExceeded::Tokens {
                limit: self.max_tokens,
                used,
            })
        } else {
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_budget_refuses_at_its_limit() {
        let l = Limits {
            max_depth: 2,
            max_children: 3,
            max_concurrent: 1,
            max_tokens: 100,
        };
        assert!(l.check_depth(1).is_ok());
        assert_eq!(l.check_depth(2), Err(BudgetExceeded::Depth { limit: 2 }));
        assert!(l.check_children(2).is_ok());
        assert_eq!(
            l.check_children(3),
            Err(BudgetExceeded::Children { limit: 3 })
        );
        assert!(l.check_tokens(99).is_ok());
        assert_eq!(
            l.check_tokens(120).unwrap_err().to_string(),
            "the tree's token budget of 100 is used up (120 used)"
        );
    }
}
