//! Prompt-complexity classification and model selection.
